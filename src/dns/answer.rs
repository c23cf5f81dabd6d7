//! Packet in, packet out: the authoritative answer for one query, written straight into a
//! reused buffer from the snapshot's pre-encoded records. The same function serves UDP and
//! TCP, so both transports give identical answers by construction.
//!
//! Names are written uncompressed except owners, which point back at the question (case
//! preserved, RFC 1034 §4.1 / 0x20) or at the CNAME target they continue from.

use std::net::IpAddr;
use std::sync::OnceLock;

use super::wire::{self, Edns, NameBuf, Query, Reject};
use crate::routing::{self, Family, Selection};
use crate::snapshot::Snapshot;
use crate::snapshot::compile::{CDyn, CTarget, Merged, Node, RRset};

// The answer's summary types are the metrics' (which import nothing of dns).
pub use crate::metrics::{Answered, Routed, Transport};

/// This replica's identity, for NSID (RFC 5001) and CHAOS `id.server`.
#[derive(Debug)]
pub struct Identity {
    /// `--nsid` / `MERIDIAN_NSID`: wins over the configuration.
    explicit: Option<Box<str>>,
    /// The pod name (`POD_NAME`), else the host name.
    default: Box<str>,
}

static IDENTITY: OnceLock<Identity> = OnceLock::new();

/// Longest identity sent: one TXT character-string.
const MAX_IDENTITY: usize = 255;

fn clip(s: &str) -> Box<str> {
    let mut n = s.len().min(MAX_IDENTITY);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s[..n].into()
}

fn default_identity() -> Box<str> {
    let pod = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.trim().is_empty());
    let name = pod.or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    });
    clip(name.as_deref().unwrap_or("meridian"))
}

/// Sets the process identity once, at start (`explicit`: the `--nsid` flag). Later calls and
/// calls after the first query have no effect.
pub fn init_identity(explicit: Option<&str>) {
    let _ = IDENTITY.set(Identity {
        explicit: explicit.map(clip),
        default: default_identity(),
    });
}

fn identity() -> &'static Identity {
    IDENTITY.get_or_init(|| Identity {
        explicit: None,
        default: default_identity(),
    })
}

/// The NSID this replica sends, if any: `--nsid`, else the configured `nsid`, else (unless
/// `identity: false`) the pod or host name.
pub fn nsid(settings: &crate::config::Settings) -> Option<&str> {
    let id = identity();
    id.explicit
        .as_deref()
        .or(settings.nsid.as_deref())
        .or(settings.identity.then_some(&*id.default))
}

const MAX_CHAIN: usize = 8;
const HEADER_LEN: usize = 12;
/// UDP answers without EDNS are limited to 512 octets (RFC 1035 §4.2.1).
const CLASSIC_UDP: usize = 512;

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn set16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Length of the uncompressed name written at `at` in `out`.
fn name_len_at(out: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < out.len() && out[i] != 0 {
        i += out[i] as usize + 1;
    }
    i + 1 - at
}

/// Writes an owner name as a pointer to an uncompressed copy already in the message.
fn put_owner(out: &mut Vec<u8>, at: usize) {
    if at < 0x3FFF {
        put16(out, 0xC000 | at as u16);
    } else {
        let len = name_len_at(out, at);
        out.extend_from_within(at..at + len);
    }
}

/// Writes one RR; returns the offset of its RDATA.
fn put_rr(
    out: &mut Vec<u8>,
    owner: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: &[u8],
) -> usize {
    put_owner(out, owner);
    put16(out, rtype);
    put16(out, class);
    put32(out, ttl);
    put16(out, rdata.len() as u16);
    let at = out.len();
    out.extend_from_slice(rdata);
    at
}

/// Offset of the suffix `apex` within the name written at `at` (the name ends with it).
fn suffix_at(out: &[u8], at: usize, name_len: usize, apex_len: usize) -> usize {
    let mut i = at;
    while at + name_len - i > apex_len && i < out.len() {
        i += out[i] as usize + 1;
    }
    i
}

struct Builder<'s> {
    snap: &'s Snapshot,
    src: IpAddr,
    rand: u32,
    ecs: Option<wire::Ecs>,
    /// Client location, looked up once and only if a geo name needs it.
    located: Option<(Option<[f64; 3]>, u8)>,
    /// ECS scope for the reply: the widest location dependence seen.
    scope: Option<u8>,
    an: u16,
    ns: u16,
    ar: u16,
    aa: bool,
    rcode: u16,
    routed: Option<Routed>,
    /// Largest message the transport carries, less the OPT record still to come.
    room: usize,
    transport: Transport,
    /// A UDP answer stopped short: the records did not fit, the reply goes out with TC.
    overflow: bool,
    zone: Option<u32>,
    /// NSID to return: the client asked and this replica has one.
    nsid: Option<&'s [u8]>,
}

impl Builder<'_> {
    /// The client's unit vector and the prefix length of the GeoIP network that placed it.
    fn locate(&mut self) -> (Option<[f64; 3]>, u8) {
        if let Some(l) = self.located {
            return l;
        }
        let ip = match self.ecs {
            Some(e) if e.source_prefix > 0 => e.addr,
            _ => match self.src {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            },
        };
        let l = match &self.snap.geo {
            Some(db) => db.lookup_unit(ip),
            None => (None, 0),
        };
        self.located = Some(l);
        l
    }
}

fn put_opt(out: &mut Vec<u8>, b: &Builder<'_>, edns: &Edns, payload: u16) {
    out.push(0);
    put16(out, wire::TYPE_OPT);
    put16(out, payload);
    let ext = ((b.rcode >> 4) & 0xFF) as u32;
    let ttl = (ext << 24) | if edns.dnssec_ok { 0x8000 } else { 0 };
    put32(out, ttl);
    let rdlen_at = out.len();
    put16(out, 0);
    if let Some(e) = &b.ecs {
        let addr_len = (e.source_prefix as usize).div_ceil(8);
        put16(out, wire::OPT_ECS);
        put16(out, (4 + addr_len) as u16);
        put16(out, e.family);
        out.push(e.source_prefix);
        // RFC 7871 §7.2.1: scope 0 for answers that do not depend on location and
        // whenever the query's source prefix was 0.
        let scope = if e.source_prefix == 0 {
            0
        } else {
            b.scope.unwrap_or(0)
        };
        out.push(scope);
        match e.addr {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..addr_len]),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..addr_len]),
        }
    }
    if let Some(id) = b.nsid {
        put_nsid(out, id);
    }
    let rdlen = out.len() - rdlen_at - 2;
    set16(out, rdlen_at, rdlen as u16);
}

/// The NSID option (RFC 5001 §2.3): code 3, the identity's octets.
fn put_nsid(out: &mut Vec<u8>, id: &[u8]) {
    put16(out, wire::OPT_NSID);
    put16(out, id.len() as u16);
    out.extend_from_slice(id);
}

/// Answers one packet into `out`. Returns None when the packet must be dropped.
pub fn respond(
    snap: &Snapshot,
    packet: &[u8],
    src: IpAddr,
    transport: Transport,
    rand: u32,
    out: &mut Vec<u8>,
) -> Option<Answered> {
    out.clear();
    let payload = snap.compiled.settings.udp_payload_size;
    let q = match wire::parse(packet) {
        Ok(q) => q,
        Err(Reject::Drop) => return None,
        Err(Reject::FormErr {
            id,
            flags,
            question_end,
            opt,
        }) => {
            error_reply(
                out,
                packet,
                id,
                flags,
                question_end,
                wire::RCODE_FORMERR,
                opt,
                payload,
            );
            return Some(Answered {
                rcode: u16::from(wire::RCODE_FORMERR),
                qtype: 0,
                truncated: false,
                routed: None,
                question_end: 0,
                zone: None,
            });
        }
        Err(Reject::NotImp {
            id,
            flags,
            question_end,
        }) => {
            error_reply(
                out,
                packet,
                id,
                flags,
                question_end,
                wire::RCODE_NOTIMP,
                false,
                payload,
            );
            return Some(Answered {
                rcode: u16::from(wire::RCODE_NOTIMP),
                qtype: 0,
                truncated: false,
                routed: None,
                question_end: 0,
                zone: None,
            });
        }
    };
    let mut b = Builder {
        snap,
        src,
        rand,
        ecs: q.edns.and_then(|e| e.ecs),
        located: None,
        scope: None,
        an: 0,
        ns: 0,
        ar: 0,
        aa: false,
        rcode: 0,
        routed: None,
        room: 0,
        transport,
        overflow: false,
        zone: None,
        nsid: match q.edns {
            Some(e) if e.nsid => nsid(&snap.compiled.settings).map(str::as_bytes),
            _ => None,
        },
    };
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(e)) => usize::from(e.payload.min(payload)).max(CLASSIC_UDP),
        (Transport::Udp, None) => CLASSIC_UDP,
    };
    let opt_len = if q.edns.is_some() {
        11 + b
            .ecs
            .map_or(0, |e| 8 + (e.source_prefix as usize).div_ceil(8))
            + b.nsid.map_or(0, |n| 4 + n.len())
    } else {
        0
    };
    b.room = limit.saturating_sub(opt_len);
    // Header placeholder and the question exactly as received.
    out.extend_from_slice(&packet[..HEADER_LEN]);
    out.extend_from_slice(&packet[HEADER_LEN..q.question_end]);
    let question_end = out.len();
    match q.edns {
        Some(e) if e.version > 0 => {
            // RFC 6891 §6.1.3: BADVERS, no answer.
            b.rcode = wire::RCODE_BADVERS;
            b.ecs = None;
            b.nsid = None;
        }
        _ => resolve(&mut b, &q, out),
    }
    let mut truncated = false;
    if b.overflow || out.len() + opt_len > limit {
        // RFC 2181 §9: drop the incomplete sections and set TC; the client retries over TCP.
        out.truncate(question_end);
        b.an = 0;
        b.ns = 0;
        b.ar = 0;
        truncated = true;
    }
    if let Some(e) = &q.edns {
        put_opt(out, &b, e, payload);
        b.ar += 1;
    }
    // Header: QR, opcode copied, AA, TC, RD and CD copied, RCODE low bits.
    let mut flags = 0x8000 | (q.flags & 0x7800) | (q.flags & 0x0100) | (q.flags & 0x0010);
    if b.aa {
        flags |= 0x0400;
    }
    if truncated {
        flags |= 0x0200;
    }
    flags |= b.rcode & 0xF;
    set16(out, 2, flags);
    set16(out, 4, 1);
    set16(out, 6, b.an);
    set16(out, 8, b.ns);
    set16(out, 10, b.ar);
    Some(Answered {
        rcode: b.rcode,
        qtype: q.qtype,
        truncated,
        routed: b.routed,
        question_end,
        zone: b.zone,
    })
}

#[allow(clippy::too_many_arguments)]
fn error_reply(
    out: &mut Vec<u8>,
    packet: &[u8],
    id: u16,
    flags: u16,
    question_end: Option<usize>,
    rcode: u8,
    opt: bool,
    payload: u16,
) {
    put16(out, id);
    let f = 0x8000 | (flags & 0x7800) | (flags & 0x0100) | (flags & 0x0010) | u16::from(rcode);
    put16(out, f);
    put16(out, u16::from(question_end.is_some()));
    put16(out, 0);
    put16(out, 0);
    put16(out, u16::from(opt));
    if let Some(end) = question_end {
        out.extend_from_slice(&packet[HEADER_LEN..end]);
    }
    if opt {
        out.push(0);
        put16(out, wire::TYPE_OPT);
        put16(out, payload);
        put32(out, 0);
        put16(out, 0);
    }
}

fn resolve(b: &mut Builder<'_>, q: &Query<'_>, out: &mut Vec<u8>) {
    let compiled = &b.snap.compiled;
    match q.qclass {
        wire::CLASS_IN | wire::CLASS_ANY => {}
        wire::CLASS_CH => return chaos(b, q, out),
        _ => {
            b.rcode = u16::from(wire::RCODE_REFUSED);
            return;
        }
    }
    let mut key = NameBuf::new();
    key.set_lower(q.qname);
    let Some(zone_idx) = compiled.find_zone(key.as_slice()) else {
        // Not our zone: never recurse, never refer upward.
        b.rcode = u16::from(wire::RCODE_REFUSED);
        return;
    };
    b.zone = Some(zone_idx);
    if matches!(q.qtype, wire::TYPE_AXFR | wire::TYPE_IXFR) {
        // Zone transfers are not offered: meridian's data lives in its sources, not in zones.
        b.rcode = u16::from(wire::RCODE_REFUSED);
        return;
    }
    b.aa = true;
    let zone = &compiled.zones[zone_idx as usize];
    // The name being answered: where its uncompressed copy sits in `out`, and its length.
    let mut cur_at = HEADER_LEN;
    let mut cur_len = q.qname.len();
    for _ in 0..MAX_CHAIN {
        if zone.has_delegations && referral(b, q, out, &key, cur_at, cur_len, zone_idx).is_some() {
            return;
        }
        let node = match compiled.nodes.get(key.as_slice()) {
            Some(n) => Some(n),
            None => wildcard(compiled, &key, zone.apex.len()),
        };
        let Some(node) = node else {
            b.rcode = u16::from(wire::RCODE_NXDOMAIN);
            negative(b, out, cur_at, cur_len, zone_idx);
            return;
        };
        // Static CNAME: write it and continue at its target if that is in this zone.
        if let Some((target, set)) = node.cname.as_deref() {
            if q.qtype == wire::TYPE_CNAME {
                write_set(b, out, cur_at, set);
                return;
            }
            let at = write_set(b, out, cur_at, set);
            if compiled.find_zone(target) != Some(zone_idx) {
                return;
            }
            key.set_lower(target);
            cur_at = at;
            cur_len = target.len();
            continue;
        }
        if let Some(d) = node.dynamic {
            let fam = match q.qtype {
                wire::TYPE_A | wire::TYPE_ANY => Some(Family::V4),
                wire::TYPE_AAAA => Some(Family::V6),
                _ => None,
            };
            if let Some(fam) = fam {
                match answer_dynamic(b, out, cur_at, d, fam) {
                    DynResult::Done => return,
                    DynResult::Nodata => {
                        negative(b, out, cur_at, cur_len, zone_idx);
                        return;
                    }
                    DynResult::Follow(target_at) => {
                        let dd = &compiled.dyns[d as usize];
                        let Some(target) = &dd.fallback else { return };
                        key.set_lower(target);
                        cur_at = target_at;
                        cur_len = target.len();
                        continue;
                    }
                }
            }
        }
        if !answer_static(b, q, out, cur_at, node) {
            negative(b, out, cur_at, cur_len, zone_idx);
        }
        return;
    }
    // A CNAME chain longer than MAX_CHAIN: what was written stands.
}

/// RFC 4592: the wildcard `*.<closest encloser>` if the closest existing ancestor has one.
fn wildcard<'c>(
    c: &'c crate::snapshot::compile::Compiled,
    key: &NameBuf,
    apex_len: usize,
) -> Option<&'c Node> {
    let name = key.as_slice();
    let mut i = 0;
    while name.len() - i > apex_len {
        i += name[i] as usize + 1;
        let parent = &name[i..];
        if c.nodes.contains_key(parent) || parent.len() == apex_len {
            let mut w = NameBuf::new();
            let n = parent.len() + 2;
            if n > 255 {
                return None;
            }
            w.buf[0] = 1;
            w.buf[1] = b'*';
            w.buf[2..n].copy_from_slice(parent);
            w.len = n as u8;
            return c.nodes.get(w.as_slice());
        }
    }
    None
}

/// Below a zone cut we are not authoritative: NS of the cut in authority, glue in additional.
#[allow(clippy::too_many_arguments)]
fn referral(
    b: &mut Builder<'_>,
    q: &Query<'_>,
    out: &mut Vec<u8>,
    key: &NameBuf,
    cur_at: usize,
    cur_len: usize,
    zone_idx: u32,
) -> Option<()> {
    let compiled = &b.snap.compiled;
    let apex_len = compiled.zones[zone_idx as usize].apex.len();
    let name = key.as_slice();
    // Walk from the top (just below the apex) down to the name itself.
    let mut starts: [usize; 128] = [0; 128];
    let mut n = 0;
    let mut i = 0;
    while name.len() - i > apex_len && n < starts.len() {
        starts[n] = i;
        n += 1;
        i += name[i] as usize + 1;
    }
    for &s in starts[..n].iter().rev() {
        let Some(node) = compiled.nodes.get(&name[s..]) else {
            continue;
        };
        if !node.delegation {
            continue;
        }
        // DS lives on the parent side of the cut (RFC 4035 §3.1.4.1).
        if s == 0 && q.qtype == wire::TYPE_DS {
            return None;
        }
        let owner = cur_at + s;
        debug_assert!(owner < cur_at + cur_len);
        let ns = node.rrsets.iter().find(|r| r.rtype == wire::TYPE_NS)?;
        b.aa = false;
        let mut glue: [Option<&[u8]>; 16] = [None; 16];
        for (k, rd) in ns.rdatas.iter().enumerate() {
            put_rr(out, owner, wire::TYPE_NS, wire::CLASS_IN, ns.ttl, rd);
            b.ns += 1;
            if k < glue.len() {
                glue[k] = Some(rd);
            }
        }
        // Glue: addresses of name servers at or below the cut.
        for target in glue.iter().flatten() {
            let mut t = NameBuf::new();
            t.set_lower(target);
            let cut = &name[s..];
            if !t.as_slice().ends_with(cut) {
                continue;
            }
            if let Some(gn) = compiled.nodes.get(t.as_slice()) {
                for set in gn
                    .rrsets
                    .iter()
                    .filter(|r| r.rtype == wire::TYPE_A || r.rtype == wire::TYPE_AAAA)
                {
                    for rd in &set.rdatas {
                        // Glue owners are written in full: they are not in the message yet.
                        out.extend_from_slice(target);
                        put16(out, set.rtype);
                        put16(out, wire::CLASS_IN);
                        put32(out, set.ttl);
                        put16(out, rd.len() as u16);
                        out.extend_from_slice(rd);
                        b.ar += 1;
                    }
                }
            }
        }
        return Some(());
    }
    None
}

fn write_set(b: &mut Builder<'_>, out: &mut Vec<u8>, owner: usize, set: &RRset) -> usize {
    let mut last = 0;
    for rd in &set.rdatas {
        last = put_rr(out, owner, set.rtype, wire::CLASS_IN, set.ttl, rd);
        b.an += 1;
    }
    last
}

/// Static RRsets of the node for the query type. Returns false for NODATA.
fn answer_static(
    b: &mut Builder<'_>,
    q: &Query<'_>,
    out: &mut Vec<u8>,
    owner: usize,
    node: &Node,
) -> bool {
    if q.qtype == wire::TYPE_ANY {
        // RFC 8482: one RRset is a complete answer to ANY.
        if let Some(set) = node.rrsets.first() {
            write_set(b, out, owner, set);
            return true;
        }
        return false;
    }
    match node.rrsets.iter().find(|s| s.rtype == q.qtype) {
        Some(set) => {
            write_set(b, out, owner, set);
            true
        }
        None => false,
    }
}

/// RFC 2308 §3: the zone's SOA in authority, TTL = min(SOA TTL, MINIMUM).
fn negative(b: &mut Builder<'_>, out: &mut Vec<u8>, cur_at: usize, cur_len: usize, zone_idx: u32) {
    let zone = &b.snap.compiled.zones[zone_idx as usize];
    let apex_at = suffix_at(out, cur_at, cur_len, zone.apex.len());
    for rd in &zone.soa.rdatas {
        put_rr(
            out,
            apex_at,
            wire::TYPE_SOA,
            wire::CLASS_IN,
            zone.negative_ttl,
            rd,
        );
        b.ns += 1;
    }
}

enum DynResult {
    Done,
    Nodata,
    /// A fallback CNAME was written; its target name sits at this offset.
    Follow(usize),
}

fn answer_dynamic(
    b: &mut Builder<'_>,
    out: &mut Vec<u8>,
    owner: usize,
    di: u32,
    fam: Family,
) -> DynResult {
    let snap = b.snap;
    let c = &snap.compiled;
    let d: &CDyn = &c.dyns[di as usize];
    let health = &*snap.health;
    let (client, prefix) = if d.policy.needs_location() {
        b.locate()
    } else {
        (None, 0)
    };
    let default_client = c
        .default_cluster
        .and_then(|i| c.clusters.get(i as usize))
        .and_then(|cl| cl.unit);
    let cx = routing::Ctx {
        d,
        fam,
        clusters: &c.clusters,
        health,
        client,
        default_client,
        rand: b.rand,
    };
    let decision = routing::select(&cx);
    if decision.located && snap.geo.is_some() {
        b.scope = Some(b.scope.unwrap_or(0).max(prefix));
    }
    let ttl = dynamic_ttl(d, c.settings.max_dynamic_ttl, decision.degraded);
    let mut routed = Routed {
        dyn_index: di,
        policy: d.policy,
        cluster: None,
        away_from_nearest: false,
        all_down: decision.all_down(),
        fallback: false,
    };
    let result = match decision.selection {
        Selection::One { target, any_health } => {
            let t = &d.targets[target as usize];
            routed.cluster = Some(t.cluster);
            routed.away_from_nearest = decision.away_from_nearest();
            if write_target(b, out, owner, d, target, fam, ttl, any_health) {
                DynResult::Done
            } else {
                DynResult::Nodata
            }
        }
        sel @ (Selection::AllHealthy | Selection::AllTargets { .. }) => {
            let any = sel != Selection::AllHealthy;
            let selected = |t: &CTarget| sel.carries(&cx, t);
            let wrote = match &d.merged {
                Some(m) => write_merged(b, out, owner, d, m, fam, ttl, any, selected),
                None => {
                    let mut wrote = false;
                    for (i, t) in d.targets.iter().enumerate() {
                        // Hostname-only targets cannot be merged into an address set.
                        if !selected(t) || (t.v4.is_empty() && t.v6.is_empty()) {
                            continue;
                        }
                        wrote |= write_target(b, out, owner, d, i as u32, fam, ttl, any);
                    }
                    wrote
                }
            };
            if wrote {
                DynResult::Done
            } else {
                DynResult::Nodata
            }
        }
        Selection::Fallback => {
            routed.fallback = true;
            match &d.fallback {
                Some(target) => {
                    put_owner(out, owner);
                    put16(out, wire::TYPE_CNAME);
                    put16(out, wire::CLASS_IN);
                    put32(out, ttl);
                    put16(out, target.len() as u16);
                    let at = out.len();
                    out.extend_from_slice(target);
                    b.an += 1;
                    DynResult::Follow(at)
                }
                None => DynResult::Nodata,
            }
        }
        Selection::Empty => DynResult::Nodata,
        Selection::Servfail => {
            b.rcode = u16::from(wire::RCODE_SERVFAIL);
            b.aa = false;
            DynResult::Done
        }
    };
    // Along a CNAME chain (zone → region → global) the last name decides the cluster; what
    // happened on the way (a fallback, an all-down answer) still counts.
    if let Some(prev) = b.routed {
        routed.fallback |= prev.fallback;
        routed.all_down |= prev.all_down;
        routed.away_from_nearest |= prev.away_from_nearest;
    }
    b.routed = Some(routed);
    result
}

/// TTL of a health-dependent answer: the record's, capped; while degraded, no longer than the
/// time until health could next change (one probe interval), as gdnsd does.
pub fn dynamic_ttl(d: &CDyn, cap: u32, degraded: bool) -> u32 {
    let mut ttl = d.ttl.min(cap);
    if degraded && d.probe_interval_ms > 0 {
        let next = (d.probe_interval_ms.div_ceil(1000)) as u32;
        ttl = ttl.min(next.max(1));
    }
    ttl
}

/// Room for one more record of `rdlen` bytes owned by `owner`? When not, a UDP answer is
/// marked to go out truncated (the client retries over TCP); a TCP answer carries what fits.
fn fits(b: &mut Builder<'_>, out: &[u8], owner: usize, rdlen: usize) -> bool {
    let owner_len = if owner < 0x3FFF {
        2
    } else {
        name_len_at(out, owner)
    };
    if out.len() + owner_len + 10 + rdlen <= b.room {
        return true;
    }
    if b.transport == Transport::Udp {
        b.overflow = true;
    }
    false
}

/// The addresses of the selected targets, each once. Linear in the name's addresses and
/// their owners, and it stops once the message is full: a UDP answer can't carry thousands of
/// records anyway, and over TCP a message ends at 65,535 bytes.
#[allow(clippy::too_many_arguments)]
fn write_merged(
    b: &mut Builder<'_>,
    out: &mut Vec<u8>,
    owner: usize,
    d: &CDyn,
    m: &Merged,
    fam: Family,
    ttl: u32,
    any_health: bool,
    selected: impl Fn(&CTarget) -> bool,
) -> bool {
    let health = &*b.snap.health;
    let carried = |owners: &[u32]| owners.iter().any(|&i| selected(&d.targets[i as usize]));
    let mut wrote = false;
    let (rtype, len, n) = match fam {
        Family::V4 => (wire::TYPE_A, 4, m.v4.len()),
        Family::V6 => (wire::TYPE_AAAA, 16, m.v6.len()),
    };
    for i in 0..n {
        let mut ip = [0u8; 16];
        let (endpoint, owners) = match fam {
            Family::V4 => {
                let a = &m.v4[i];
                ip[..4].copy_from_slice(&a.ip.octets());
                (a.endpoint, m.owners_of(a))
            }
            Family::V6 => {
                let a = &m.v6[i];
                ip = a.ip.octets();
                (a.endpoint, m.owners_of(a))
            }
        };
        if !(any_health || health.up(endpoint)) || !carried(owners) {
            continue;
        }
        if !fits(b, out, owner, len) {
            break;
        }
        put_rr(out, owner, rtype, wire::CLASS_IN, ttl, &ip[..len]);
        b.an += 1;
        wrote = true;
    }
    wrote
}

/// One target's addresses (distinct within a target since compile time).
#[allow(clippy::too_many_arguments)]
fn write_target(
    b: &mut Builder<'_>,
    out: &mut Vec<u8>,
    owner: usize,
    d: &CDyn,
    target: u32,
    fam: Family,
    ttl: u32,
    any_health: bool,
) -> bool {
    let t = &d.targets[target as usize];
    let health = &*b.snap.health;
    let mut wrote = false;
    match fam {
        Family::V4 => {
            for a in &t.v4 {
                if any_health || health.up(a.endpoint) {
                    if !fits(b, out, owner, 4) {
                        break;
                    }
                    put_rr(
                        out,
                        owner,
                        wire::TYPE_A,
                        wire::CLASS_IN,
                        ttl,
                        &a.ip.octets(),
                    );
                    b.an += 1;
                    wrote = true;
                }
            }
        }
        Family::V6 => {
            for a in &t.v6 {
                if any_health || health.up(a.endpoint) {
                    if !fits(b, out, owner, 16) {
                        break;
                    }
                    put_rr(
                        out,
                        owner,
                        wire::TYPE_AAAA,
                        wire::CLASS_IN,
                        ttl,
                        &a.ip.octets(),
                    );
                    b.an += 1;
                    wrote = true;
                }
            }
        }
    }
    if !wrote
        && t.v4.is_empty()
        && t.v6.is_empty()
        && let Some(h) = &t.hostname
    {
        put_rr(out, owner, wire::TYPE_CNAME, wire::CLASS_IN, ttl, h);
        b.an += 1;
        wrote = true;
    }
    wrote
}

/// CHAOS `version.bind` (configured text, else REFUSED) and `id.server` / `hostname.bind`
/// (configured text, else this replica's identity as in NSID; REFUSED with `identity: false`).
fn chaos(b: &mut Builder<'_>, q: &Query<'_>, out: &mut Vec<u8>) {
    let mut key = NameBuf::new();
    key.set_lower(q.qname);
    let s = &b.snap.compiled.settings;
    let text = match key.as_slice() {
        b"\x07version\x04bind\x00" | b"\x07version\x06server\x00" => s.version_bind.as_deref(),
        b"\x02id\x06server\x00" | b"\x08hostname\x04bind\x00" => {
            s.id_server.as_deref().or_else(|| nsid(s))
        }
        _ => None,
    };
    let Some(text) = text.filter(|_| matches!(q.qtype, wire::TYPE_TXT | wire::TYPE_ANY)) else {
        b.rcode = u16::from(wire::RCODE_REFUSED);
        return;
    };
    let bytes = text.as_bytes();
    let n = bytes.len().min(255);
    // Written in place (no RDATA buffer): one character-string.
    put_owner(out, HEADER_LEN);
    put16(out, wire::TYPE_TXT);
    put16(out, wire::CLASS_CH);
    put32(out, 0);
    put16(out, (n + 1) as u16);
    out.push(n as u8);
    out.extend_from_slice(&bytes[..n]);
    b.an += 1;
    b.aa = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query as HQuery};
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::sync::Arc;

    /// A ServiceDNSRecord over `clusters` clusters, no probes, policy `all`; clusters share
    /// addresses (`distinct` of them) as clusters behind one load balancer do.
    fn many_clusters(clusters: usize, distinct: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut y = String::from(
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\nmetadata:\n  \
             name: demo\n  namespace: kube-federation-system\ndomain: gslb.example.com\n\
             nameServer: ns1.gslb.example.com\n---\n\
             apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
             metadata:\n  name: big\n  namespace: shop\n  annotations:\n    \
             meridian.io/policy: all\n    meridian.io/probe: none\nspec:\n  domainRef: demo\n\
             status:\n  domain: gslb.example.com\n  dns:\n",
        );
        for i in 0..clusters {
            let a = i % distinct;
            y.push_str(&format!(
                "  - cluster: c{i}\n    loadBalancer:\n      ingress:\n      - ip: 10.{}.{}.1\n      \
                 - ip: fd00::{:x}\n",
                a / 256,
                a % 256,
                a + 1
            ));
        }
        std::fs::write(dir.path().join("big.yaml"), y).expect("write");
        dir
    }

    fn snapshot(dir: &std::path::Path) -> Snapshot {
        let loaded = crate::app::load(&crate::app::SourceArgs {
            zones: dir.to_path_buf(),
            geoip: None,
        })
        .unwrap_or_else(|e| panic!("load: {e:?}"));
        Snapshot::new(Arc::new(loaded.compiled), None)
    }

    fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(HQuery::query(Name::from_ascii(name).expect("name"), rtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().expect("encode")
    }

    fn ask(snap: &Snapshot, rtype: RecordType, t: Transport, edns: bool) -> (Message, usize) {
        let mut out = Vec::new();
        let p = query("big.shop.demo.svc.gslb.example.com.", rtype, edns);
        respond(snap, &p, "127.0.0.1".parse().expect("ip"), t, 1, &mut out).expect("answered");
        assert!(out.len() <= usize::from(u16::MAX));
        (Message::from_vec(&out).expect("a valid message"), out.len())
    }

    #[test]
    fn many_cluster_answers_are_distinct_and_fit_the_transport() {
        let dir = many_clusters(6000, 2500);
        let snap = snapshot(dir.path());
        for (rtype, rr) in [(RecordType::A, 16), (RecordType::AAAA, 28)] {
            // Over TCP: as many distinct addresses as 65,535 bytes hold (all 2,500 A records,
            // as many AAAA as fit), each once, no TC.
            let (m, len) = ask(&snap, rtype, Transport::Tcp, true);
            assert!(!m.metadata.truncation, "{rtype}: no TC over TCP");
            let mut seen = std::collections::HashSet::new();
            for r in &m.answers {
                let ip = match &r.data {
                    RData::A(a) => a.0.to_string(),
                    RData::AAAA(a) => a.0.to_string(),
                    other => panic!("unexpected {other:?}"),
                };
                assert!(seen.insert(ip.clone()), "{rtype}: {ip} answered twice");
            }
            let expect = 2500.min((usize::from(u16::MAX) - 60) / rr);
            assert!(
                m.answers.len() >= expect - 1 && m.answers.len() <= 2500,
                "{rtype}: {} answers, {len} bytes",
                m.answers.len()
            );
            // Over UDP it cannot fit: TC, empty, within the payload size.
            let (m, len) = ask(&snap, rtype, Transport::Udp, true);
            assert!(m.metadata.truncation && m.answers.is_empty());
            assert!(len <= 1232);
            let (m, len) = ask(&snap, rtype, Transport::Udp, false);
            assert!(m.metadata.truncation && m.answers.is_empty());
            assert!(len <= 512);
        }
    }

    #[test]
    fn addresses_shared_by_clusters_are_answered_once() {
        let dir = many_clusters(100, 3);
        let snap = snapshot(dir.path());
        let (m, _) = ask(&snap, RecordType::A, Transport::Udp, true);
        assert!(!m.metadata.truncation);
        let mut ips: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        ips.sort();
        assert_eq!(ips, ["10.0.0.1", "10.0.1.1", "10.0.2.1"]);
    }
}

#[cfg(test)]
mod identity_tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

    use super::*;
    use crate::catalog::Catalog;
    use crate::config::Settings;
    use crate::snapshot::compile;

    fn snapshot(settings: Settings) -> Snapshot {
        let c = compile::compile(Catalog::default(), settings).expect("compile");
        Snapshot::new(Arc::new(c), None)
    }

    /// `id.server. CH TXT` with EDNS; `options` is the OPT RDATA.
    fn id_server_query(options: &[u8]) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(b"\x02id\x06server\x00");
        p.extend_from_slice(&[0, 16, 0, 3]);
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(options);
        p
    }

    const NSID_REQUEST: [u8; 4] = [0, 3, 0, 0];
    const ECS_REQUEST: [u8; 11] = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];

    fn ask(snap: &Snapshot, packet: &[u8]) -> Message {
        let mut out = Vec::new();
        let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
        respond(snap, packet, src, Transport::Udp, 0, &mut out).expect("answered");
        Message::from_vec(&out).expect("decodable")
    }

    fn nsid_of(m: &Message) -> Option<Vec<u8>> {
        match m.edns.as_ref()?.options().get(EdnsCode::NSID)? {
            EdnsOption::NSID(p) => Some(p.as_ref().to_vec()),
            _ => None,
        }
    }

    fn configured(nsid: &str) -> Settings {
        Settings {
            nsid: Some(nsid.to_string()),
            ..Settings::default()
        }
    }

    #[test]
    fn nsid_option_encoding() {
        let mut out = Vec::new();
        put_nsid(&mut out, b"ns-a");
        assert_eq!(out, [0, 3, 0, 4, b'n', b's', b'-', b'a']);
    }

    #[test]
    fn nsid_is_sent_when_asked_beside_ecs() {
        let snap = snapshot(configured("ns-unit"));
        let mut opts = ECS_REQUEST.to_vec();
        opts.extend_from_slice(&NSID_REQUEST);
        let m = ask(&snap, &id_server_query(&opts));
        assert_eq!(nsid_of(&m).as_deref(), Some(&b"ns-unit"[..]));
        assert!(
            m.edns
                .as_ref()
                .expect("edns")
                .options()
                .get(EdnsCode::Subnet)
                .is_some()
        );
        // id.server answers the same identity.
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers[0].data.to_string(), "ns-unit");
    }

    #[test]
    fn nsid_is_not_sent_unless_asked() {
        let snap = snapshot(configured("ns-unit"));
        let m = ask(&snap, &id_server_query(&ECS_REQUEST));
        assert_eq!(nsid_of(&m), None);
        assert!(m.edns.is_some());
    }

    #[test]
    fn identity_false_hides_the_default_identity_only() {
        let hidden = Settings {
            identity: false,
            ..Settings::default()
        };
        let m = ask(&snapshot(hidden.clone()), &id_server_query(&NSID_REQUEST));
        assert_eq!(nsid_of(&m), None);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // An explicitly configured identity is still served.
        let explicit = Settings {
            id_server: Some("ns-x".into()),
            ..hidden
        };
        let m = ask(&snapshot(explicit), &id_server_query(&NSID_REQUEST));
        assert_eq!(m.answers[0].data.to_string(), "ns-x");
        assert_eq!(nsid_of(&m), None);
    }

    #[test]
    fn default_identity_is_the_pod_or_host_name() {
        let m = ask(
            &snapshot(Settings::default()),
            &id_server_query(&NSID_REQUEST),
        );
        let id = nsid_of(&m).expect("nsid");
        assert!(!id.is_empty());
        assert_eq!(m.answers[0].data.to_string(), String::from_utf8_lossy(&id));
    }
}

#[cfg(test)]
mod lookup_tests;
