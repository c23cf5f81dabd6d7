//! Health by quorum (a measurement, not a test): `cargo bench --bench quorum`.
//!
//! 1. Failover time: R replicas (3 and 5) of the real `meridian` binary on loopback, each with
//!    every other as `--peer`, probing two HTTP targets this process serves; the nearest target
//!    fails, and the time until EVERY replica answers without it is reported (a few runs each).
//!    Probes: `QUORUM_INTERVAL` (default 1s), fall 2; `--peer-interval` `QUORUM_PEER_INTERVAL`
//!    (default 500ms).
//! 2. Exchange cost at 1,000 and 10,000 endpoints: the bytes of one `/api/v1/observations`
//!    answer, and the CPU of one exchange on the real code paths (serialize on the serving side,
//!    parse on the polling side, and one `quorum::combine` of the own view with the peers'),
//!    turned into bytes/s and cores per replica at the poll interval.
//!
//! Without `--bench` (cargo test --all-targets) a small smoke version runs. Traffic stays on
//! 127.0.0.0/8.

#[path = "../tests/integration/common.rs"]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::rr::RecordType;
use meridian::catalog::{ProbeKind, ProbeSpec};
use meridian::health::exchange::WireView;
use meridian::health::quorum::{self, Obs, PeerView};
use meridian::snapshot::compile::EndpointKey;

use common::{Q, Server, addrs, metric, zones_with};

const SAN_FRANCISCO: &str = "192.0.2.0";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An HTTP target: 200 until failed, then connections closed unanswered.
fn target(addr: SocketAddr) -> Arc<AtomicBool> {
    let l = TcpListener::bind(addr).expect("bind target");
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut s = s;
                if f.load(Ordering::Relaxed) {
                    return;
                }
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    failed
}

fn failover_once(replicas: usize, run: u8, interval: &str, peer_interval: &str) -> Duration {
    // Addresses of this run alone: 127.71.RUN.{1,2}.
    let la_ip = format!("127.71.{}.1", run);
    let hou_ip = format!("127.71.{}.2", run);
    let port = free_port();
    let la = target(format!("{la_ip}:{port}").parse().expect("addr"));
    let _hou = target(format!("{hou_ip}:{port}").parse().expect("addr"));
    let yaml = format!(
        "---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata:\n  name: app\n  namespace: q\n  annotations:\n\
         \x20   meridian.io/probe: \"http\"\n    meridian.io/probe-port: \"{port}\"\n\
         \x20   meridian.io/probe-interval: \"{interval}\"\n    meridian.io/probe-timeout: \"1s\"\n\
         \x20   meridian.io/rise: \"2\"\n    meridian.io/fall: \"2\"\n\
         spec:\n  domainRef: demo\n  recordTTL: 60\nstatus:\n  dns:\n\
         \x20 - cluster: los-angeles\n    region: us-west\n    zones: [lax1]\n    \
         loadBalancer:\n      ingress:\n      - ip: {la_ip}\n\
         \x20 - cluster: houston\n    region: us-central\n    zones: [hou1]\n    \
         loadBalancer:\n      ingress:\n      - ip: {hou_ip}\n"
    );
    let dir = zones_with(&[("quorum-bench.yaml", &yaml)]);
    let admins: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let servers: Vec<Server> = (0..replicas)
        .map(|i| {
            let mut args: Vec<String> = vec![
                "--nsid".into(),
                format!("r{i}"),
                "--drains-file".into(),
                dir.path().join(format!(".d{i}")).display().to_string(),
                "--peer-interval".into(),
                peer_interval.into(),
            ];
            for (j, p) in admins.iter().enumerate() {
                if j != i {
                    args.extend(["--peer".into(), format!("127.0.0.1:{p}")]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::try_start_at(
                "127.0.0.1:0",
                &format!("127.0.0.1:{}", admins[i]),
                dir.path(),
                &args,
            )
            .unwrap_or_else(|l| panic!("replica did not start:\n{l}"))
        })
        .collect();
    let answer = |s: &Server| -> Vec<String> {
        let q = Q::new(s.dns).ecs(SAN_FRANCISCO, 24);
        q.raw(&q.packet("app.q.demo.svc.gslb.example.com.", RecordType::A))
            .and_then(|r| hickory_proto::op::Message::from_vec(&r).ok())
            .map(|m| addrs(&m))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every replica hears every peer, and answers los-angeles.
    while !servers.iter().all(|s| {
        metric(&s.metrics(), "meridian_health_peers", &[("state", "fresh")])
            == (replicas - 1) as f64
            && answer(s) == vec![la_ip.clone()]
    }) {
        assert!(Instant::now() < deadline, "fleet did not settle");
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed = Instant::now();
    la.store(true, Ordering::Relaxed);
    let mut pending: Vec<&Server> = servers.iter().collect();
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "fleet did not fail over");
        pending.retain(|s| answer(s) != vec![hou_ip.clone()]);
        std::thread::sleep(Duration::from_millis(10));
    }
    failed.elapsed()
}

fn keys(n: usize) -> Vec<EndpointKey> {
    let spec = Arc::new(ProbeSpec {
        kind: ProbeKind::Http,
        port: 8080,
        path: "/healthz".into(),
        host: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
        expect_status: (200, 399),
        expect_body: None,
        insecure: false,
        ca: None,
    });
    (0..n)
        .map(|i| EndpointKey {
            addr: IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
            probe: spec.clone(),
        })
        .collect()
}

fn exchange_cost(n: usize, replicas: usize, poll: Duration) {
    let ks = keys(n);
    let now = SystemTime::now();
    let own: HashMap<EndpointKey, Obs> = ks
        .iter()
        .map(|k| (k.clone(), Obs { up: true, at: now }))
        .collect();
    let index: HashMap<String, EndpointKey> = ks
        .iter()
        .map(|k| (quorum::wire_key(k), k.clone()))
        .collect();
    let rounds = 20;
    let mut bytes = 0usize;
    let started = Instant::now();
    let mut peers = Vec::new();
    for r in 0..rounds {
        // Serving side: the wire view of the own observations.
        let view = WireView {
            name: "r".into(),
            at: 0.0,
            generation: r,
            observations: own
                .iter()
                .map(|(k, o)| (quorum::wire_key(k), (o.up, 1.7e9)))
                .collect(),
        };
        let body = serde_json::to_vec(&view).expect("serialize");
        bytes = body.len();
        // Polling side: parse and map to endpoints.
        let v: WireView = serde_json::from_slice(&body).expect("parse");
        let obs: HashMap<EndpointKey, Obs> = v
            .observations
            .into_iter()
            .filter_map(|(k, (up, _))| Some((index.get(&k)?.clone(), Obs { up, at: now })))
            .collect();
        peers = vec![
            PeerView {
                name: "p".into(),
                heard: now,
                obs,
            };
            replicas - 1
        ];
    }
    let per_exchange = started.elapsed() / rounds as u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(quorum::combine(
            &own,
            &peers.iter().collect::<Vec<_>>(),
            now,
            Duration::from_secs(3),
        ));
    }
    let per_combine = started.elapsed() / rounds as u32;
    let polls = (replicas - 1) as f64 / poll.as_secs_f64();
    // Each replica serves its view to (R-1) peers and fetches (R-1) views per interval.
    let cpu = (per_exchange.as_secs_f64() * polls) + per_combine.as_secs_f64() / poll.as_secs_f64();
    println!(
        "{n:>6} endpoints, {replicas} replicas, poll {poll:?}: {:.0} KB per view, \
         {:.0} KB/s in and {:.0} KB/s out per replica; serve+parse {:.1} ms, combine {:.1} ms; \
         ≈ {:.3} cores per replica",
        bytes as f64 / 1024.0,
        bytes as f64 * polls / 1024.0,
        bytes as f64 * polls / 1024.0,
        per_exchange.as_secs_f64() * 1000.0,
        per_combine.as_secs_f64() * 1000.0,
        cpu,
    );
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let interval: String = env_or("QUORUM_INTERVAL", "1s".to_string());
    let peer_interval: String = env_or("QUORUM_PEER_INTERVAL", "500ms".to_string());
    let poll = Duration::from_millis(if peer_interval.ends_with("ms") {
        peer_interval.trim_end_matches("ms").parse().unwrap_or(500)
    } else {
        1000 * peer_interval
            .trim_end_matches('s')
            .parse::<u64>()
            .unwrap_or(1)
    });
    println!("exchange cost (serialize, parse, combine on this machine):");
    for n in if smoke {
        vec![100]
    } else {
        vec![1_000, 10_000]
    } {
        for r in [3, 5] {
            exchange_cost(n, r, poll);
        }
    }
    let runs: u8 = if smoke { 1 } else { env_or("QUORUM_RUNS", 3) };
    println!(
        "failover: probe interval {interval}, fall 2, peer interval {peer_interval}; time from \
         the target's failure to every replica answering without it"
    );
    let mut run = 0u8;
    for replicas in if smoke { vec![3] } else { vec![3, 5] } {
        let mut times = Vec::new();
        for _ in 0..runs {
            run += 1;
            times.push(failover_once(replicas, run, &interval, &peer_interval));
        }
        println!("  {replicas} replicas: {times:.2?}");
    }
}
