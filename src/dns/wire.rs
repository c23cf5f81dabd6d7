//! Zero-copy reading of DNS queries (RFC 1035 §4, RFC 6891 OPT, RFC 7871 ECS).
//!
//! The query path reads only what an authoritative answer needs — header, the one question, the
//! OPT record — straight from the packet, without allocating. Anything malformed is classified
//! so the caller can answer FORMERR (RFC 1035, RFC 7871 §7.1.2) or drop it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_HINFO: u16 = 13;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_DS: u16 = 43;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_CH: u16 = 3;
pub const CLASS_ANY: u16 = 255;
pub const OPT_ECS: u16 = 8;
/// RFC 5001 name server identifier.
pub const OPT_NSID: u16 = 3;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// Extended RCODE 16 (RFC 6891): upper bits travel in the OPT TTL.
pub const RCODE_BADVERS: u16 = 16;

/// A lowercased copy of a name in wire form, on the stack.
#[derive(Clone, Copy)]
pub struct NameBuf {
    pub buf: [u8; 255],
    pub len: u8,
}

impl NameBuf {
    pub fn new() -> NameBuf {
        NameBuf {
            buf: [0; 255],
            len: 0,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// Copies a wire-form name, lowercasing it. The input must be a valid uncompressed name.
    pub fn set_lower(&mut self, wire: &[u8]) {
        let n = wire.len().min(255);
        for (d, s) in self.buf[..n].iter_mut().zip(wire) {
            *d = s.to_ascii_lowercase();
        }
        self.len = n as u8;
    }
}

impl Default for NameBuf {
    fn default() -> Self {
        NameBuf::new()
    }
}

/// RFC 7871 client subnet, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecs {
    pub family: u16,
    pub source_prefix: u8,
    pub scope_prefix: u8,
    pub addr: IpAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    pub ecs: Option<Ecs>,
    /// The client asked for the server's NSID (RFC 5001).
    pub nsid: bool,
}

/// A well-formed standard query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// Header flags word as received (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub flags: u16,
    /// The question name exactly as sent (case preserved).
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question.
    pub question_end: usize,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }
    pub fn cd(&self) -> bool {
        self.flags & 0x0010 != 0
    }
}

/// What to do with a packet that is not a well-formed standard query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too short for a header, or a response: never answer (no reflection loops).
    Drop,
    /// Answer FORMERR; `question_end` is set when the question itself was sound and can be
    /// echoed, `opt` when an OPT record was seen (the reply then carries one).
    FormErr {
        id: u16,
        flags: u16,
        question_end: Option<usize>,
        opt: bool,
    },
    /// An opcode other than QUERY: answer NOTIMP (RFC 8906: never a silent drop).
    NotImp {
        id: u16,
        flags: u16,
        question_end: Option<usize>,
    },
}

struct Reader<'a> {
    p: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.p.get(self.i)?;
        self.i += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.p.get(self.i..self.i + 2)?;
        self.i += 2;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.p.get(self.i..self.i + 4)?;
        self.i += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.p.get(self.i..self.i + n)?;
        self.i += n;
        Some(b)
    }
    /// An uncompressed name (the question's): returns its wire bytes.
    fn plain_name(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        loop {
            let len = self.u8()?;
            if len == 0 {
                break;
            }
            // Compression pointers and extended label types have no place in a question name.
            if len > 63 {
                return None;
            }
            self.bytes(len as usize)?;
            if self.i - start > 255 {
                return None;
            }
        }
        if self.i - start > 255 {
            return None;
        }
        Some(&self.p[start..self.i])
    }
    /// Skips a possibly compressed name (records after the question). Only the bytes here are
    /// walked: a pointer ends the name, so loops cannot occur.
    fn skip_name(&mut self) -> Option<()> {
        let start = self.i;
        loop {
            let len = self.u8()?;
            match len & 0xC0 {
                0x00 if len == 0 => return Some(()),
                0x00 => {
                    self.bytes(len as usize)?;
                }
                0xC0 => {
                    self.u8()?;
                    return Some(());
                }
                _ => return None,
            }
            if self.i - start > 255 {
                return None;
            }
        }
    }
}

/// Parses a query. `Err` says how to reject it.
pub fn parse(p: &[u8]) -> Result<Query<'_>, Reject> {
    if p.len() < 12 {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let qd = u16::from_be_bytes([p[4], p[5]]);
    let an = u16::from_be_bytes([p[6], p[7]]);
    let ns = u16::from_be_bytes([p[8], p[9]]);
    let ar = u16::from_be_bytes([p[10], p[11]]);
    let opcode = (flags >> 11) & 0xF;
    let formerr = |question_end, opt| Reject::FormErr {
        id,
        flags,
        question_end,
        opt,
    };
    let mut r = Reader { p, i: 12 };
    // The question, if exactly one.
    let question = if qd == 1 {
        match (r.plain_name(), r.u16(), r.u16()) {
            (Some(name), Some(t), Some(c)) => Some((name, t, c, r.i)),
            _ => None,
        }
    } else {
        None
    };
    if opcode != 0 {
        return Err(Reject::NotImp {
            id,
            flags,
            question_end: question.map(|q| q.3),
        });
    }
    let Some((qname, qtype, qclass, question_end)) = question else {
        return Err(formerr(None, false));
    };
    // Records in the answer and authority sections of a query are skipped.
    for _ in 0..(an as u32 + ns as u32) {
        let ok = r.skip_name().and_then(|_| {
            r.bytes(8)?;
            let len = r.u16()?;
            r.bytes(len as usize).map(|_| ())
        });
        if ok.is_none() {
            return Err(formerr(Some(question_end), false));
        }
    }
    let mut edns: Option<Edns> = None;
    for _ in 0..ar {
        let name_start = r.i;
        let Some(()) = r.skip_name() else {
            return Err(formerr(Some(question_end), edns.is_some()));
        };
        let root_owner = r.i - name_start == 1;
        let (Some(rtype), Some(class), Some(ttl), Some(rdlen)) =
            (r.u16(), r.u16(), r.u32(), r.u16())
        else {
            return Err(formerr(Some(question_end), edns.is_some()));
        };
        let Some(rdata) = r.bytes(rdlen as usize) else {
            return Err(formerr(Some(question_end), edns.is_some()));
        };
        if rtype != TYPE_OPT {
            continue;
        }
        // RFC 6891 §6.1.1: one OPT, owned by the root.
        if edns.is_some() || !root_owner {
            return Err(formerr(Some(question_end), true));
        }
        let mut e = Edns {
            payload: class,
            version: ((ttl >> 16) & 0xFF) as u8,
            dnssec_ok: ttl & 0x8000 != 0,
            ecs: None,
            nsid: false,
        };
        let mut o = Reader { p: rdata, i: 0 };
        while o.i < rdata.len() {
            let (Some(code), Some(len)) = (o.u16(), o.u16()) else {
                return Err(formerr(Some(question_end), true));
            };
            let Some(data) = o.bytes(len as usize) else {
                return Err(formerr(Some(question_end), true));
            };
            if code == OPT_ECS {
                if e.ecs.is_some() {
                    return Err(formerr(Some(question_end), true));
                }
                match parse_ecs(data) {
                    Some(ecs) => e.ecs = Some(ecs),
                    None => return Err(formerr(Some(question_end), true)),
                }
            }
            // RFC 5001 §2.1: the request is the option's presence; its payload is ignored.
            if code == OPT_NSID {
                e.nsid = true;
            }
            // Unknown options are ignored (RFC 6891 §6.1.2).
        }
        edns = Some(e);
    }
    Ok(Query {
        id,
        flags,
        qname,
        qtype,
        qclass,
        question_end,
        edns,
    })
}

/// RFC 7871 §6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH, ADDRESS truncated to the
/// source prefix with the bits beyond it zero. Anything else is malformed.
fn parse_ecs(d: &[u8]) -> Option<Ecs> {
    if d.len() < 4 {
        return None;
    }
    let family = u16::from_be_bytes([d[0], d[1]]);
    let source = d[2];
    let scope = d[3];
    let addr = &d[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source > max || scope > max || addr.len() != (source as usize).div_ceil(8) {
        return None;
    }
    if !source.is_multiple_of(8)
        && let Some(last) = addr.last()
        && last & (0xFF >> (source % 8)) != 0
    {
        return None;
    }
    let ip = if family == 1 {
        let mut b = [0u8; 4];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let mut b = [0u8; 16];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Some(Ecs {
        family,
        source_prefix: source,
        scope_prefix: scope,
        addr: ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(qname: &[u8], qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            opt.is_some() as u8,
        ];
        p.extend_from_slice(qname);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        if let Some(rdata) = opt {
            p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
            p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            p.extend_from_slice(rdata);
        }
        p
    }

    #[test]
    fn parses_a_query_with_ecs() {
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100];
        let p = query(b"\x03WwW\x07example\x00", TYPE_A, Some(&ecs));
        let q = parse(&p).expect("valid");
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qname, b"\x03WwW\x07example\x00");
        assert!(q.rd());
        let e = q.edns.expect("edns");
        assert_eq!(e.payload, 1232);
        assert!(e.dnssec_ok);
        assert_eq!(
            e.ecs,
            Some(Ecs {
                family: 1,
                source_prefix: 24,
                scope_prefix: 0,
                addr: "198.51.100.0".parse().expect("ip")
            })
        );
    }

    #[test]
    fn rejects() {
        assert_eq!(parse(&[0; 11]), Err(Reject::Drop));
        let mut p = query(b"\x01a\x00", TYPE_A, None);
        p[2] |= 0x80;
        assert_eq!(parse(&p), Err(Reject::Drop), "responses are never answered");
        // Address bits beyond the source prefix.
        let p = query(
            b"\x01a\x00",
            TYPE_A,
            Some(&[0, 8, 0, 7, 0, 1, 20, 0, 198, 51, 100]),
        );
        assert!(matches!(parse(&p), Err(Reject::FormErr { opt: true, .. })));
        // Unknown family.
        let p = query(b"\x01a\x00", TYPE_A, Some(&[0, 8, 0, 4, 0, 3, 0, 0]));
        assert!(matches!(parse(&p), Err(Reject::FormErr { .. })));
        // Address longer than the prefix needs.
        let p = query(
            b"\x01a\x00",
            TYPE_A,
            Some(&[0, 8, 0, 8, 0, 1, 8, 0, 10, 0, 0, 0]),
        );
        assert!(matches!(parse(&p), Err(Reject::FormErr { .. })));
        // Compression pointer in the question.
        let p = query(b"\xc0\x0c", TYPE_A, None);
        assert!(matches!(
            parse(&p),
            Err(Reject::FormErr {
                question_end: None,
                ..
            })
        ));
        // Truncated question.
        let p = query(b"\x05ab", TYPE_A, None);
        assert!(matches!(parse(&p[..16]), Err(Reject::FormErr { .. })));
        // NOTIFY.
        let mut p = query(b"\x01a\x00", TYPE_SOA, None);
        p[2] = 0x20;
        assert!(matches!(
            parse(&p),
            Err(Reject::NotImp {
                question_end: Some(_),
                ..
            })
        ));
        // Two questions.
        let mut p = query(b"\x01a\x00", TYPE_A, None);
        p[5] = 2;
        assert!(matches!(
            parse(&p),
            Err(Reject::FormErr {
                question_end: None,
                ..
            })
        ));
    }

    #[test]
    fn unknown_options_are_ignored_and_source_zero_is_valid() {
        let p = query(
            b"\x00",
            TYPE_SOA,
            Some(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 8, 0, 4, 0, 1, 0, 0]),
        );
        let q = parse(&p).expect("valid");
        let ecs = q.edns.and_then(|e| e.ecs).expect("ecs");
        assert_eq!(ecs.source_prefix, 0);
        assert!(!q.edns.expect("edns").nsid);
    }

    #[test]
    fn nsid_request_is_seen() {
        let p = query(b"\x00", TYPE_SOA, Some(&[0, 3, 0, 0]));
        assert!(parse(&p).expect("valid").edns.expect("edns").nsid);
        // A payload in the request is ignored (RFC 5001 §2.1), not an error.
        let p = query(b"\x00", TYPE_SOA, Some(&[0, 3, 0, 1, 7]));
        assert!(parse(&p).expect("valid").edns.expect("edns").nsid);
    }
}
