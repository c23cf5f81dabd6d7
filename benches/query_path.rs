//! Query-path micro-benchmarks: wire bytes in → parse → snapshot lookup → GeoIP (mmdb) →
//! routing → encoded bytes out, through `dns::answer::respond` exactly as the UDP worker calls it,
//! on the demo zone (zones/) and the demo GeoIP database.
//!
//!   cargo bench --bench query_path                       # all
//!   cargo bench --bench query_path -- respond/geo_ecs    # one
//!
//! Groups:
//! - `respond/<case>`: the whole answer for a static name, the geo name with ECS, a CNAME chain
//!   ending at the geo name, and NXDOMAIN (cases in benches/common/mod.rs);
//! - `respond_and_count/<case>`: the same plus the per-query metrics the UDP worker records
//!   (`metrics::QueryCounters::count`), to show what counting costs;
//! - `parts/*`: pieces of the geo answer alone (wire parse, GeoIP lookup, routing select, the
//!   snapshot's name lookup), to attribute the time; `parts/geoip_offset_cache` is a prototype
//!   of a cheaper GeoIP lookup (tree walk, then the client's unit vector from a table built once
//!   per database, keyed by the record's data offset) for comparison with `parts/geoip_lookup`
//!   (tree walk, serde decode of the record, sin/cos) plus `parts/unit_vector`.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian::dns::answer::{self, Transport};
use meridian::dns::wire;
use meridian::metrics::QueryCounters;
use meridian::routing::{self, Family};

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Prototype: the client's unit vector per GeoIP data record, computed once for the whole
/// database (as gdnsd precomputes its map at load); a query walks the tree and reads the table.
struct OffsetCache {
    reader: maxminddb::Reader<Vec<u8>>,
    units: HashMap<usize, [f64; 3], foldhash::fast::RandomState>,
}

#[derive(serde::Deserialize)]
struct Loc {
    location: Option<LatLon>,
}

#[derive(serde::Deserialize)]
struct LatLon {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl OffsetCache {
    fn open() -> OffsetCache {
        let reader = maxminddb::Reader::open_readfile(common::zones_dir().join("demo-geoip.mmdb"))
            .expect("demo mmdb");
        let mut units = HashMap::default();
        for r in reader.networks(Default::default()).expect("networks") {
            let r = r.expect("network");
            let Some(off) = r.offset() else { continue };
            if units.contains_key(&off) {
                continue;
            }
            let loc: Option<Loc> = r.decode().ok().flatten();
            if let Some(p) = loc
                .and_then(|l| l.location)
                .and_then(|l| meridian::geo::GeoPoint::new(l.latitude?, l.longitude?))
            {
                units.insert(off, p.unit());
            }
        }
        OffsetCache { reader, units }
    }

    fn lookup(&self, ip: IpAddr) -> (Option<[f64; 3]>, u8) {
        let Ok(r) = self.reader.lookup(ip) else {
            return (None, 32);
        };
        let prefix = r.network().map(|n| n.prefix()).unwrap_or(32);
        (r.offset().and_then(|o| self.units.get(&o).copied()), prefix)
    }
}

fn bench(c: &mut Criterion) {
    let snap = common::demo_snapshot();
    let cases = common::cases();
    let mut out = Vec::with_capacity(4096);

    // Check every case answers as expected before timing it.
    for case in &cases {
        answer::respond(&snap, &case.packet, SRC, Transport::Udp, 7, &mut out)
            .unwrap_or_else(|| panic!("{}: dropped", case.name));
        assert_eq!(
            common::rcode_and_answers(&out),
            (case.rcode, case.answers),
            "{}: unexpected answer",
            case.name
        );
    }

    let mut g = c.benchmark_group("respond");
    for case in &cases {
        g.bench_function(case.name, |b| {
            b.iter(|| {
                answer::respond(
                    &snap,
                    black_box(&case.packet),
                    SRC,
                    Transport::Udp,
                    7,
                    &mut out,
                )
            })
        });
    }
    g.finish();

    // What the UDP worker adds per answered query: the Prometheus counters, including the
    // per-cluster `answers_total{policy,cluster}` label lookup of routed answers.
    let mut counters = QueryCounters::new(Transport::Udp);
    let mut g = c.benchmark_group("respond_and_count");
    for case in &cases {
        g.bench_function(case.name, |b| {
            b.iter(|| {
                let a = answer::respond(
                    &snap,
                    black_box(&case.packet),
                    SRC,
                    Transport::Udp,
                    7,
                    &mut out,
                )
                .expect("answered");
                counters.count(&a, &snap);
            })
        });
    }
    g.finish();

    let geo_case = cases
        .iter()
        .find(|c| c.name == "geo_ecs")
        .expect("geo case");
    let geo = snap.geo.as_ref().expect("demo GeoIP database");
    let client: IpAddr = "192.0.2.0".parse().expect("ip");
    let key = common::wire_name("web.shop.demo.svc.gslb.example.com");
    let node = snap.compiled.nodes.get(key.as_slice()).expect("geo name");
    let d = &snap.compiled.dyns[node.dynamic.expect("dynamic") as usize];
    let unit = geo.lookup(client).point.map(|p| p.unit());
    assert!(unit.is_some(), "192.0.2.0 is placed by the demo database");

    let mut g = c.benchmark_group("parts");
    g.bench_function("wire_parse", |b| {
        b.iter(|| wire::parse(black_box(&geo_case.packet)).is_ok())
    });
    g.bench_function("geoip_lookup", |b| b.iter(|| geo.lookup(black_box(client))));
    let point = geo.lookup(client).point.expect("placed");
    g.bench_function("unit_vector", |b| b.iter(|| black_box(point).unit()));
    let cache = OffsetCache::open();
    assert_eq!(
        cache.lookup(client).0,
        unit,
        "the prototype agrees with GeoDb::lookup"
    );
    g.bench_function("geoip_offset_cache", |b| {
        b.iter(|| cache.lookup(black_box(client)))
    });
    g.bench_function("name_lookup", |b| {
        b.iter(|| {
            snap.compiled
                .find_zone(black_box(&key))
                .and_then(|_| snap.compiled.nodes.get(black_box(key.as_slice())))
                .is_some()
        })
    });
    g.bench_function("routing_select", |b| {
        b.iter(|| {
            routing::select(
                d,
                Family::V4,
                &snap.compiled.clusters,
                &snap.health,
                black_box(unit),
                None,
                7,
            )
        })
    });
    g.finish();
}

fn config() -> Criterion {
    // Short by default so `bash benches/run.sh` stays quick; criterion's own flags
    // (--measurement-time, --warm-up-time, --sample-size) override these.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
