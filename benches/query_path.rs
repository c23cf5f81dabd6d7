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
//! - `many_clusters/{udp_tc,tcp_full}`: a name over 10,000 clusters, policy `all`;
//! - `parts/*`: pieces of the geo answer alone (wire parse, GeoIP lookup, routing select, the
//!   snapshot's name lookup), to attribute the time; `parts/geoip_lookup_unit` is what the query
//!   path calls (tree walk, then the client's unit vector from a per-thread cache keyed by the
//!   record's data offset), for comparison with `parts/geoip_lookup` (tree walk, serde decode of
//!   the record) plus `parts/unit_vector` (sin/cos).

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian::dns::answer::{self, Transport};
use meridian::dns::wire;
use meridian::metrics::QueryCounters;
use meridian::routing::{self, Family};

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

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

    // What the UDP worker adds per answered query: the Prometheus counters (qtype × rcode,
    // zone, the routed answer's cluster) and histograms (sizes, latency).
    let mut counters = QueryCounters::new(Transport::Udp);
    let now = std::time::Instant::now();
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
                counters.count(&a, &snap, case.packet.len(), out.len());
                counters.answered_in(std::time::Duration::from_micros(40));
                // As the UDP worker: flushed every 64 answers (or second).
                counters.maybe_flush(now);
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
    assert_eq!(geo.lookup_unit(client).0, unit, "cached lookup agrees");
    g.bench_function("geoip_lookup_unit", |b| {
        b.iter(|| geo.lookup_unit(black_box(client)))
    });
    // 1024 clients in turn, from the networks load.sh draws them from (the demo database's
    // documentation prefixes, several cities).
    let clients: Vec<IpAddr> = (0..1024u32)
        .map(|i| match i % 4 {
            0 => IpAddr::from([192, 0, 2, i as u8]),
            1 => IpAddr::from([198, 51, 100, i as u8]),
            2 => IpAddr::from([203, 0, 113, i as u8]),
            _ => IpAddr::from([0x2001, 0xdb8, 1 + (i as u16 >> 2) % 3, i as u16, 0, 0, 0, 1]),
        })
        .collect();
    assert!(
        clients.iter().all(|c| geo.lookup_unit(*c).0.is_some()),
        "all placed"
    );
    let mut i = 0;
    g.bench_function("geoip_lookup_unit_1024_clients", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            geo.lookup_unit(black_box(clients[i]))
        })
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
            routing::select(&routing::Ctx {
                d,
                fam: Family::V4,
                clusters: &snap.compiled.clusters,
                health: &snap.health,
                client: black_box(unit),
                default_client: None,
                rand: 7,
            })
        })
    });
    g.finish();

    // A name over 10,000 clusters (every tenth sharing an address, no probes): the whole
    // multi-cluster answer, cut off at the UDP payload (TC) or at 65,535 bytes over TCP.
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
    for i in 0..10_000usize {
        let a = i - usize::from(i % 10 == 9);
        y.push_str(&format!(
            "  - cluster: c{i}\n    loadBalancer:\n      ingress:\n      - ip: 10.{}.{}.{}\n",
            a >> 16,
            (a >> 8) & 255,
            a & 255
        ));
    }
    std::fs::write(dir.path().join("big.yaml"), y).expect("write");
    let loaded = meridian::app::load(&meridian::app::SourceArgs {
        zones: dir.path().to_path_buf(),
        geoip: None,
    })
    .unwrap_or_else(|e| panic!("many clusters: {e:?}"));
    let big = meridian::snapshot::Snapshot::new(std::sync::Arc::new(loaded.compiled), None);
    let packet = common::query(
        0x2222,
        "big.shop.demo.svc.gslb.example.com",
        common::TYPE_A,
        true,
        None,
    );
    let mut g = c.benchmark_group("many_clusters");
    for (name, transport) in [("udp_tc", Transport::Udp), ("tcp_full", Transport::Tcp)] {
        g.bench_function(name, |b| {
            b.iter(|| answer::respond(&big, black_box(&packet), SRC, transport, 7, &mut out))
        });
    }
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
