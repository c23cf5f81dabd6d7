//! Shared by the query-path benchmarks: the demo snapshot, and query packets built byte by byte
//! (what a resolver sends: RD clear, EDNS with a 1232 payload, optionally an ECS option).
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meridian::app::{self, SourceArgs};
use meridian::snapshot::Snapshot;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

/// The demo zones directory (`zones/`), as `meridian serve` reads it.
pub fn zones_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones")
}

/// The demo snapshot: zones/ compiled, the demo GeoIP database, every endpoint up (health
/// checks have not run; the routing decision is the nearest cluster, as with healthy targets).
pub fn demo_snapshot() -> Snapshot {
    let dir = zones_dir();
    let loaded = app::load(&SourceArgs {
        zones: dir.clone(),
        geoip: Some(dir.join("demo-geoip.mmdb")),
    })
    .unwrap_or_else(|e| panic!("cannot load {}: {e:?}", dir.display()));
    Snapshot::new(Arc::new(loaded.compiled), loaded.geo)
}

/// A name in wire form.
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.') {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v
}

/// An EDNS client-subnet option payload (RFC 7871 §6): address truncated to the prefix.
pub fn ecs_option(addr: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, octets): (u16, Vec<u8>) = match addr {
        IpAddr::V4(a) => (1, a.octets().to_vec()),
        IpAddr::V6(a) => (2, a.octets().to_vec()),
    };
    let n = (prefix as usize).div_ceil(8);
    let mut bytes = octets[..n].to_vec();
    if !prefix.is_multiple_of(8) {
        let mask = 0xFFu8 << (8 - prefix % 8);
        if let Some(last) = bytes.last_mut() {
            *last &= mask;
        }
    }
    let mut o = Vec::with_capacity(8 + n);
    o.extend_from_slice(&8u16.to_be_bytes());
    o.extend_from_slice(&((4 + n) as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.push(prefix);
    o.push(0);
    o.extend_from_slice(&bytes);
    o
}

/// A query packet: one question, EDNS (payload 1232) when `edns`, ECS when `ecs` is set.
pub fn query(id: u16, name: &str, qtype: u16, edns: bool, ecs: Option<(IpAddr, u8)>) -> Vec<u8> {
    let edns = edns || ecs.is_some();
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // flags: QUERY, RD clear (as resolvers ask authorities)
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&u16::from(edns).to_be_bytes());
    p.extend_from_slice(&wire_name(name));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        let opt = ecs.map(|(a, n)| ecs_option(a, n)).unwrap_or_default();
        p.push(0); // root owner
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&1232u16.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&(opt.len() as u16).to_be_bytes());
        p.extend_from_slice(&opt);
    }
    p
}

/// The benchmarked cases, each one query of the demo zone (see zones/).
pub struct Case {
    pub name: &'static str,
    pub packet: Vec<u8>,
    /// Expected RCODE and answer count, checked before measuring.
    pub rcode: u16,
    pub answers: u16,
}

pub fn cases() -> Vec<Case> {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    vec![
        // A static record from the zone file, EDNS without ECS.
        Case {
            name: "static",
            packet: query(0x1111, "static.gslb.example.com", TYPE_A, true, None),
            rcode: 0,
            answers: 1,
        },
        // The geo name, ECS from San Francisco: GeoIP lookup, distance ordering, scope /25.
        Case {
            name: "geo_ecs",
            packet: query(
                0x2222,
                "web.shop.demo.svc.gslb.example.com",
                TYPE_A,
                true,
                Some((ip("192.0.2.0"), 24)),
            ),
            rcode: 0,
            answers: 1,
        },
        // docs → CNAME www → CNAME web.shop.demo.svc (dnsPrefix) → geo answer, ECS from New York.
        Case {
            name: "cname_chain",
            packet: query(
                0x3333,
                "docs.gslb.example.com",
                TYPE_A,
                true,
                Some((ip("198.51.100.0"), 24)),
            ),
            rcode: 0,
            answers: 3,
        },
        // A name that does not exist: NXDOMAIN with the SOA.
        Case {
            name: "nxdomain",
            packet: query(0x4444, "nope.gslb.example.com", TYPE_A, true, None),
            rcode: 3,
            answers: 0,
        },
    ]
}

/// RCODE and ANCOUNT of a response.
pub fn rcode_and_answers(resp: &[u8]) -> (u16, u16) {
    (
        u16::from(resp[3] & 0x0F),
        u16::from_be_bytes([resp[6], resp[7]]),
    )
}
