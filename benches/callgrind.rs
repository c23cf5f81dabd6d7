//! A deterministic regression counter for the query path: answers N fixed queries and exits.
//! `benches/callgrind.sh` runs it under `valgrind --tool=callgrind` twice per case (N and 0
//! queries) and divides the difference in instructions by N, so start-up (loading the zones and
//! the GeoIP database) cancels out.
//!
//!   target/release/deps/callgrind-* CASE N [count]
//!
//! CASE is one of the query-path cases (static, geo_ecs, cname_chain, nxdomain; see
//! benches/common/mod.rs) or `geo_ecs_many` (the geo name with ECS from 256 client prefixes, as
//! the load benchmark sends). With `count`, each answer is also counted in the Prometheus
//! metrics as the UDP worker does.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meridian::dns::answer::{self, Transport};
use meridian::metrics::QueryCounters;

fn many_geo_packets() -> Vec<Vec<u8>> {
    // Prefixes the demo database places (San Francisco, San Diego, New York, Dallas, Miami,
    // San Jose, Boston, Austin) and some it cannot.
    let mut v = Vec::new();
    for i in 0..256u32 {
        let ecs: (IpAddr, u8) = match i % 8 {
            0 => (IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i & 0x7F) as u8)), 32),
            1 => (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 128 | (i & 0x7F) as u8)),
                32,
            ),
            2 => (IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)), 32),
            3 => (IpAddr::V4(Ipv4Addr::new(203, 0, 113, (i & 0x7F) as u8)), 32),
            4 => (
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 128 | (i & 0x7F) as u8)),
                32,
            ),
            5 => (
                IpAddr::V4(Ipv4Addr::new(100, 64 + (i as u8 & 63), 0, 0)),
                24,
            ),
            6 => (
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    1 + (i as u16 % 3),
                    i as u16,
                    0,
                    0,
                    0,
                    0,
                )),
                56,
            ),
            _ => (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24),
        };
        v.push(common::query(
            i as u16,
            "web.shop.demo.svc.gslb.example.com",
            common::TYPE_A,
            true,
            Some(ecs),
        ));
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` without arguments (e.g. `cargo bench` of every bench): nothing to measure.
    if args.is_empty() || args.iter().any(|a| a.starts_with("--")) {
        eprintln!("usage: callgrind CASE N [count]  (run by benches/callgrind.sh)");
        return;
    }
    let case = args[0].as_str();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let count = args.get(2).is_some_and(|s| s == "count");
    let snap = common::demo_snapshot();
    let packets: Vec<Vec<u8>> = if case == "geo_ecs_many" {
        many_geo_packets()
    } else {
        let c = common::cases()
            .into_iter()
            .find(|c| c.name == case)
            .unwrap_or_else(|| panic!("unknown case {case}"));
        vec![c.packet]
    };
    let mut counters = QueryCounters::new(Transport::Udp);
    let now = std::time::Instant::now();
    let src = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut out = Vec::with_capacity(4096);
    let mut sum = 0usize;
    // One warm-up answer per packet outside the measured loop would still be counted; the
    // N=0 run does the same warm-up, so it cancels.
    for p in &packets {
        answer::respond(&snap, p, src, Transport::Udp, 7, &mut out);
    }
    for i in 0..n {
        let p = &packets[i % packets.len()];
        let a = answer::respond(&snap, black_box(p), src, Transport::Udp, 7, &mut out)
            .expect("answered");
        if count {
            counters.count(&a, &snap, p.len(), out.len());
            // The UDP worker also records each answer's latency (its clock read is per batch).
            counters.answered_in(std::time::Duration::from_micros(40));
            // As the UDP worker: flushed every 64 answers (or second).
            counters.maybe_flush(now);
        }
        sum += out.len();
    }
    println!("{case}: {n} queries, {sum} bytes");
}
