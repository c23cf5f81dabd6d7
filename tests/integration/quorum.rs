//! Health by quorum across replicas, with real network partitions: three meridian processes,
//! each in a network namespace of its own on a bridge, probing HTTP targets this test serves in
//! the root namespace. Paths are cut with blackhole routes inside one namespace. Addresses are
//! from 198.18.0.0/15 (the benchmarking range) only. Skipped (with a message) where network
//! namespaces cannot be made (not root, no `ip`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::common::*;

/// Where the demo GeoIP database puts this ECS prefix (nearest cluster: los-angeles).
const SAN_FRANCISCO: &str = "192.0.2.0";
const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "quorum-test-token";
const REPLICAS: usize = 3;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

/// The test network: a bridge in the root namespace holding the targets' addresses, and one
/// namespace per replica joined to it by a veth pair. Dropping it removes all of it.
struct Net {
    prefix: String,
    /// 198.18.N.0/24 of this run.
    net: String,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Net {
    fn new() -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            prefix: format!("mq{}", pid % 10_000_000),
            // The third octet from the pid keeps concurrent runs apart.
            net: format!("198.18.{}", 1 + pid % 250),
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        let bridge = format!("{}b", net.prefix);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.links.push(bridge.clone());
        for host in [1, 2, 3] {
            ip(&[
                "addr",
                "add",
                &format!("{}.{host}/24", net.net),
                "dev",
                &bridge,
            ])?;
        }
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=REPLICAS {
            let ns = net.ns(i);
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let outer = format!("{}v{i}", net.prefix);
            let inner = format!("{}p{i}", net.prefix);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            net.links.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            ip_in(
                &ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", net.replica(i)),
                    "dev",
                    &inner,
                ],
            )?;
            ip_in(&ns, &["link", "set", &inner, "up"])?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}r{i}", self.prefix)
    }

    /// Replica i's address (in its namespace).
    fn replica(&self, i: usize) -> String {
        format!("{}.{}", self.net, 10 + i)
    }

    /// The root namespace's address on the bridge: where the test queries from.
    fn host(&self) -> String {
        format!("{}.1", self.net)
    }

    /// Target addresses, also in the root namespace: los-angeles, houston.
    fn target(&self, n: usize) -> String {
        format!("{}.{}", self.net, 2 + n)
    }

    fn blackhole(&self, i: usize, addr: &str) {
        ip_in(
            &self.ns(i),
            &["route", "add", "blackhole", &format!("{addr}/32")],
        )
        .expect("blackhole route");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        for l in &self.links {
            let _ = ip(&["link", "del", l]);
        }
    }
}

/// An HTTP target answering 200 until failed; failed, it closes every connection unanswered.
struct Target {
    failed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Target {
    fn start(addr: SocketAddr) -> Target {
        let l = TcpListener::bind(addr).expect("bind target");
        l.set_nonblocking(true).expect("nonblocking");
        let failed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, st) = (failed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let f = f.clone();
                        std::thread::spawn(move || answer(s, &f));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Target { failed, stop }
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(mut s: TcpStream, failed: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if failed.load(Ordering::Relaxed) {
        return;
    }
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
}

fn record(net: &Net, port: u16) -> String {
    format!(
        "---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata:\n  name: app\n  namespace: q\n  annotations:\n\
         \x20   meridian.io/probe: \"http\"\n\
         \x20   meridian.io/probe-port: \"{port}\"\n\
         \x20   meridian.io/probe-path: \"/healthz\"\n\
         \x20   meridian.io/probe-interval: \"200ms\"\n\
         \x20   meridian.io/probe-timeout: \"2s\"\n\
         \x20   meridian.io/rise: \"2\"\n\
         \x20   meridian.io/fall: \"2\"\n\
         spec:\n  domainRef: demo\n  recordTTL: 60\nstatus:\n  dns:\n\
         \x20 - cluster: los-angeles\n    region: us-west\n    zones: [lax1]\n    \
         loadBalancer:\n      ingress:\n      - ip: {la}\n\
         \x20 - cluster: houston\n    region: us-central\n    zones: [hou1]\n    \
         loadBalancer:\n      ingress:\n      - ip: {hou}\n",
        la = net.target(0),
        hou = net.target(1),
    )
}

const NAME: &str = "app.q.demo.svc.gslb.example.com.";

struct Fleet {
    servers: Vec<Server>,
    dns: Vec<SocketAddr>,
    host: String,
}

impl Fleet {
    /// What replica i answers a San Francisco client; None when it does not answer.
    fn answer(&self, i: usize) -> Option<Vec<String>> {
        let q = Q::new(self.dns[i]).from(&self.host).ecs(SAN_FRANCISCO, 24);
        let raw = q.raw(&q.packet(NAME, RecordType::A))?;
        let m = hickory_proto::op::Message::from_vec(&raw).ok()?;
        Some(addrs(&m))
    }

    fn wait_all(&self, want: &str, what: &str) {
        for i in 0..self.servers.len() {
            wait_for(WAIT, &format!("replica {} {what}", i + 1), || {
                (self.answer(i)? == vec![want.to_string()]).then_some(())
            });
        }
    }

    fn get(&self, i: usize, path: &str) -> String {
        let (code, body) = http(self.servers[i].admin, "GET", path, Some(TOKEN));
        assert_eq!(code, 200, "{path}: {body}");
        body
    }

    /// Replica i's view of one endpoint in its state document: (combined up, vantage points).
    fn endpoint(&self, i: usize, addr: &str) -> (bool, Vec<(String, bool)>) {
        let st: serde_json::Value =
            serde_json::from_str(&self.get(i, "/api/v1/state")).expect("state JSON");
        let e = st["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["address"] == addr)
            .cloned()
            .unwrap_or_else(|| panic!("no endpoint {addr}"));
        let points = e["vantagePoints"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or("").to_string(),
                            p["up"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (e["up"] == true, points)
    }

    fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.get(i, "/metrics"), name, labels)
    }
}

/// Sets up the network, or says why not (the test then skips).
fn network() -> Option<Net> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP quorum: network namespaces need root");
        return None;
    }
    match Net::new() {
        Ok(n) => Some(n),
        Err(e) => {
            println!("SKIP quorum: cannot create network namespaces: {e}");
            None
        }
    }
}

#[test]
fn one_replica_cut_off_from_a_target_fails_nothing_over_a_real_failure_fails_over_everywhere() {
    let Some(net) = network() else { return };
    // One port for both targets (a record has one probe port).
    let port = 18080;
    let la = Target::start(format!("{}:{port}", net.target(0)).parse().expect("addr"));
    let _hou = Target::start(format!("{}:{port}", net.target(1)).parse().expect("addr"));
    let dir = zones_with(&[("quorum-test.yaml", &record(&net, port))]);
    let mut servers = Vec::new();
    let mut dns = Vec::new();
    for i in 1..=REPLICAS {
        let me = net.replica(i);
        let drains = dir.path().join(format!(".drains-{i}.json"));
        let mut args: Vec<String> = vec![
            "--admin-token".into(),
            TOKEN.into(),
            "--nsid".into(),
            format!("r{i}"),
            "--drains-file".into(),
            drains.display().to_string(),
            // Generous freshness (10 × 300 ms): a loaded machine must not make peers stale
            // during the hold below; (c) waits for staleness instead.
            "--peer-interval".into(),
            "300ms".into(),
            "--peer-stale-intervals".into(),
            "10".into(),
        ];
        for j in (1..=REPLICAS).filter(|j| *j != i) {
            args.push("--peer".into());
            args.push(format!("{}:9153", net.replica(j)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = Server::try_start_in(
            &net.ns(i),
            &format!("{me}:5353"),
            &format!("{me}:9153"),
            dir.path(),
            &args,
        )
        .unwrap_or_else(|logs| panic!("replica {i} did not start:\n{logs}"));
        dns.push(s.dns);
        servers.push(s);
    }
    let fleet = Fleet {
        servers,
        dns,
        host: net.host(),
    };
    let la_ip = net.target(0);
    let hou_ip = net.target(1);

    // Every replica hears from both peers and answers the nearest cluster.
    for i in 0..REPLICAS {
        wait_for(
            WAIT,
            &format!("replica {} to hear both peers", i + 1),
            || {
                (fleet.metric(i, "meridian_health_peers", &[("state", "fresh")]) == 2.0)
                    .then_some(())
            },
        );
        assert_eq!(fleet.metric(i, "meridian_health_quorum_fallback", &[]), 0.0);
    }
    fleet.wait_all(&la_ip, "to answer los-angeles");
    let (up, points) = fleet.endpoint(1, &la_ip);
    assert!(up);
    let names: Vec<&str> = points.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["r2", "r1", "r3"], "own view first, then peers");

    // (a) Replica 1 alone loses its path to los-angeles: its own view says down, the fleet's
    // says up, and no replica fails los-angeles over.
    net.blackhole(1, &la_ip);
    wait_for(WAIT, "replica 1 to see los-angeles down itself", || {
        let (_, points) = fleet.endpoint(0, &la_ip);
        points.contains(&("r1".to_string(), false)).then_some(())
    });
    for i in 0..REPLICAS {
        wait_for(WAIT, &format!("replica {} to see r1's view", i + 1), || {
            let (_, points) = fleet.endpoint(i, &la_ip);
            points.contains(&("r1".to_string(), false)).then_some(())
        });
    }
    // Hold for several probe and exchange intervals: nobody fails over.
    let hold = Instant::now() + Duration::from_secs(3);
    while Instant::now() < hold {
        for i in 0..REPLICAS {
            if let Some(a) = fleet.answer(i) {
                assert_eq!(
                    a,
                    vec![la_ip.clone()],
                    "replica {} failed los-angeles over on one vantage point's word",
                    i + 1
                );
            }
            assert!(fleet.endpoint(i, &la_ip).0, "replica {} says down", i + 1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // (b) Los Angeles really fails: every replica fails over to houston.
    let failed_at = Instant::now();
    la.fail();
    fleet.wait_all(&hou_ip, "to fail los-angeles over to houston");
    println!(
        "every replica answered without los-angeles {:?} after it failed",
        failed_at.elapsed()
    );
    for i in 0..REPLICAS {
        assert!(!fleet.endpoint(i, &la_ip).0);
    }

    // (c) Replica 1 is cut off from its peers: it falls back to its own view (which also sees
    // los-angeles down), says so, and keeps answering.
    net.blackhole(1, &net.replica(2));
    net.blackhole(1, &net.replica(3));
    wait_for(WAIT, "replica 1 to fall back to its own view", || {
        (fleet.metric(0, "meridian_health_quorum_fallback", &[]) == 1.0).then_some(())
    });
    assert_eq!(
        fleet.metric(0, "meridian_health_peers", &[("state", "stale")]),
        2.0
    );
    assert_eq!(fleet.answer(0), Some(vec![hou_ip.clone()]));
    // Logged: the last word on the peers is the fallback (start-up falls back too, until the
    // first exchange, and then logs that peers are combined).
    let logs = fleet.servers[0].log_text();
    let last = logs
        .lines()
        .rfind(|l| l.contains("quorum fallback") || l.contains("health combined by quorum"))
        .unwrap_or("");
    assert!(
        last.contains("quorum fallback"),
        "the fallback is logged: {last}"
    );
    // The others see replica 1 stale (their requests to it get no answer back) and keep
    // combining with each other.
    for i in 1..REPLICAS {
        wait_for(
            WAIT,
            &format!("replica {} to see one stale peer", i + 1),
            || {
                (fleet.metric(i, "meridian_health_peers", &[("state", "stale")]) == 1.0)
                    .then_some(())
            },
        );
        assert_eq!(fleet.metric(i, "meridian_health_quorum_fallback", &[]), 0.0);
        assert_eq!(fleet.answer(i), Some(vec![hou_ip.clone()]));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `--peers-dns NAME:PORT` (a headless Service in Kubernetes): every address the name resolves
/// to is polled, and this replica's own answer (recognised by its name) does not vote twice.
/// Loopback only: `localhost` resolves to this machine.
#[test]
fn peers_dns_finds_the_replicas_and_skips_itself() {
    let dir = zones_with(&[]);
    let (pa, pb) = (free_port(), free_port());
    let b = Server::try_start_at(
        "127.0.0.1:0",
        &format!("127.0.0.1:{pb}"),
        dir.path(),
        &[
            "--nsid",
            "b",
            "--drains-file",
            &dir.path().join(".db").display().to_string(),
            "--peer-interval",
            "200ms",
            "--peer",
            &format!("127.0.0.1:{pa}"),
        ],
    )
    .expect("b starts");
    // A's own admin port resolves too: itself, skipped by name.
    let a = Server::try_start_at(
        "127.0.0.1:0",
        &format!("127.0.0.1:{pa}"),
        dir.path(),
        &[
            "--nsid",
            "a",
            "--drains-file",
            &dir.path().join(".da").display().to_string(),
            "--peer-interval",
            "200ms",
            "--peers-dns",
            &format!("localhost:{pb}"),
            "--peer",
            &format!("127.0.0.1:{pa}"),
        ],
    )
    .expect("a starts");
    wait_for(WAIT, "a to hear b", || {
        (metric(&a.metrics(), "meridian_health_peers", &[("state", "fresh")]) == 1.0).then_some(())
    });
    assert_eq!(
        metric(&a.metrics(), "meridian_health_quorum_fallback", &[]),
        0.0
    );
    wait_for(WAIT, "b to hear a", || {
        (metric(&b.metrics(), "meridian_health_peers", &[("state", "fresh")]) == 1.0).then_some(())
    });
    // The demo's probed endpoints carry both views, a's first.
    let (code, body) = a.http("GET", "/api/v1/state");
    assert_eq!(code, 200);
    let st: serde_json::Value = serde_json::from_str(&body).expect("state JSON");
    let probed = st["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["vantagePoints"].is_array())
        .cloned()
        .expect("an endpoint with vantage points");
    let names: Vec<&str> = probed["vantagePoints"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "{probed}");
}
