//! Active health checks end to end: real HTTP, HTTPS and TCP targets on loopback, started and
//! stopped by the tests; failover and recovery observed through DNS answers; drains through the
//! admin API and the CLI; all-down policies; region/zone CNAME fallbacks; metrics, state and
//! logs. Every wait is on an observable state, never on a fixed sleep.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;

/// Where the demo GeoIP database puts these ECS prefixes.
const SAN_FRANCISCO: &str = "192.0.2.0";
const NEW_YORK: &str = "198.51.100.0";
const DALLAS: &str = "203.0.113.0";

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Targets

/// Three loopback addresses no other test uses (the demo VIPs are left alone), for the
/// new-york, houston and los-angeles clusters of a fixture.
fn addresses() -> [Ipv4Addr; 3] {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The second octet from the process id keeps two concurrent test runs apart.
    let b = 100 + (std::process::id() % 100) as u8;
    let c = (n % 250) as u8;
    [1, 2, 3].map(|d| Ipv4Addr::new(127, b, c, d))
}

#[derive(Clone, Debug, PartialEq)]
enum Reply {
    /// 200 with this body.
    Ok(&'static str),
    /// This status, empty body.
    Status(u16),
    /// Accept, read the request, never answer.
    Hang,
}

/// A small HTTP/1.1 server on one address; stopping it closes the port (connection refused).
struct Target {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Target {
    fn bind(addr: SocketAddr) -> std::io::Result<Target> {
        let mut t = Target {
            addr,
            reply: Arc::new(Mutex::new(Reply::Ok("ok"))),
            hits: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        t.listen()?;
        Ok(t)
    }

    fn listen(&mut self) -> std::io::Result<()> {
        let l = TcpListener::bind(self.addr)?;
        l.set_nonblocking(true)?;
        self.stop = Arc::new(AtomicBool::new(false));
        let (stop, reply, hits) = (self.stop.clone(), self.reply.clone(), self.hits.clone());
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        hits.fetch_add(1, Ordering::Relaxed);
                        let reply = reply.lock().expect("reply").clone();
                        let stop = stop.clone();
                        std::thread::spawn(move || answer(s, reply, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        Ok(())
    }

    /// Closes the port; returns once nothing listens any more.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("target thread");
        }
    }

    /// Listens again on the same address.
    fn start(&mut self) {
        self.listen().expect("rebind the target's address");
    }

    fn set(&self, r: Reply) {
        *self.reply.lock().expect("reply") = r;
    }

    fn ip(&self) -> String {
        self.addr.ip().to_string()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut s: TcpStream, reply: Reply, stop: Arc<AtomicBool>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return, // a TCP probe: connect and close
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = match reply {
        Reply::Ok(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        Reply::Status(code) => {
            format!("HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::Hang => {
            for _ in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
    };
    let _ = s.write_all(text.as_bytes());
}

/// new-york, houston and los-angeles targets sharing one port (a record has one probe port).
struct Trio {
    ny: Target,
    hou: Target,
    la: Target,
}

impl Trio {
    fn start() -> Trio {
        let ips = addresses();
        for _ in 0..20 {
            let first = TcpListener::bind((ips[0], 0)).expect("bind");
            let port = first.local_addr().expect("addr").port();
            drop(first);
            let bound: Vec<std::io::Result<Target>> = ips
                .iter()
                .map(|ip| Target::bind(SocketAddr::new(IpAddr::V4(*ip), port)))
                .collect();
            if bound.iter().all(|b| b.is_ok()) {
                let mut it = bound.into_iter().map(|b| b.expect("checked"));
                let (ny, hou, la) = (
                    it.next().expect("ny"),
                    it.next().expect("hou"),
                    it.next().expect("la"),
                );
                return Trio { ny, hou, la };
            }
        }
        panic!("no common free port on {ips:?}");
    }

    fn port(&self) -> u16 {
        self.ny.addr.port()
    }

    fn targets(&self) -> Vec<(&'static str, String)> {
        vec![
            ("los-angeles", self.la.ip()),
            ("houston", self.hou.ip()),
            ("new-york", self.ny.ip()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn region_zone(cluster: &str) -> (&'static str, &'static str) {
    match cluster {
        "los-angeles" => ("us-west", "lax1"),
        "houston" => ("us-central", "hou1"),
        _ => ("us-east", "nyc1"),
    }
}

/// A ServiceDNSRecord `NAME.hc.demo.svc.gslb.example.com` over the demo clusters.
fn record(name: &str, annotations: &[(&str, String)], targets: &[(&str, String)]) -> String {
    let mut y = format!(
        "---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata:\n  name: {name}\n  namespace: hc\n  annotations:\n"
    );
    for (k, v) in annotations {
        y.push_str(&format!("    meridian.io/{k}: \"{v}\"\n"));
    }
    y.push_str("spec:\n  domainRef: demo\n  recordTTL: 60\nstatus:\n  dns:\n");
    for (cluster, ip) in targets {
        let (region, zone) = region_zone(cluster);
        y.push_str(&format!(
            "  - cluster: {cluster}\n    region: {region}\n    zones: [{zone}]\n    \
             loadBalancer:\n      ingress:\n      - ip: {ip}\n"
        ));
    }
    y
}

/// Fast probe settings: 100ms apart, two results to change state. The timeout is generous so
/// that a loaded machine (CI) does not fail a healthy target; refusals and statuses are instant.
fn fast(kind: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("probe", kind.to_string()),
        ("probe-port", port.to_string()),
        ("probe-path", "/healthz".to_string()),
        ("probe-interval", "100ms".to_string()),
        ("probe-timeout", "2s".to_string()),
        ("rise", "2".to_string()),
        ("fall", "2".to_string()),
    ]
}

fn with(
    mut base: Vec<(&'static str, String)>,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    for (k, v) in extra {
        base.retain(|(b, _)| b != k);
        base.push((k, v.to_string()));
    }
    base
}

fn name(record: &str) -> String {
    format!("{record}.hc.demo.svc.gslb.example.com.")
}

fn region_name(record: &str, region: &str) -> String {
    format!("{record}.hc.demo.svc.{region}.gslb.example.com.")
}

fn zone_name(record: &str, zone: &str, region: &str) -> String {
    format!("{record}.hc.demo.svc.{zone}.{region}.gslb.example.com.")
}

fn serve(yaml: &str) -> (tempfile::TempDir, Server) {
    let dir = zones_with(&[("health-test.yaml", yaml)]);
    let s = Server::start(dir.path());
    (dir, s)
}

// ---------------------------------------------------------------------------------------------
// Observations

fn ask(s: &Server, name: &str, client: &str) -> Message {
    s.q().ecs(client, 24).ask(name, RecordType::A)
}

fn answer_ips(s: &Server, name: &str, client: &str) -> Vec<String> {
    addrs(&ask(s, name, client))
}

/// Waits until `client` is answered exactly `want` for `name`; returns that answer.
fn wait_answer(s: &Server, name: &str, client: &str, want: &[&str]) -> Message {
    let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
    let mut last = Vec::new();
    wait_for(WAIT, &format!("{name} for {client} to be {want:?}"), || {
        let m = ask(s, name, client);
        last = addrs(&m);
        (last == want).then_some(m)
    })
}

fn state(s: &Server) -> serde_json::Value {
    let (code, body) = s.http("GET", "/api/v1/state");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("state is JSON")
}

/// The probed endpoints of the state document for an address (one per distinct probe).
fn endpoints_at(st: &serde_json::Value, ip: &str) -> Vec<serde_json::Value> {
    st["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["address"] == ip && e["probe"]["kind"] != "none")
        .cloned()
        .collect()
}

fn endpoint(s: &Server, ip: &str) -> serde_json::Value {
    let mut e = endpoints_at(&state(s), ip);
    assert_eq!(e.len(), 1, "one probed endpoint at {ip}");
    e.remove(0)
}

/// Waits until the endpoint at `ip` has a result and `pred` holds for it.
fn wait_endpoint(
    s: &Server,
    ip: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(WAIT, &format!("{ip}: {what}"), || {
        let e = endpoints_at(&state(s), ip).pop()?;
        (!e["lastResult"].is_null() && pred(&e)).then_some(e)
    })
}

/// JSON log lines with this message.
fn log_events(s: &Server, message: &str) -> Vec<serde_json::Value> {
    s.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn http_failover_and_recovery_follow_the_probes() {
    let mut t = Trio::start();
    let yaml = record("app", &fast("http", t.port()), &t.targets());
    let (_dir, s) = serve(&yaml);
    let app = name("app");
    let (la, hou, ny) = (t.la.ip(), t.hou.ip(), t.ny.ip());
    // Every target answers: nearest cluster, full TTL.
    wait_endpoint(&s, &la, "probed ok", |e| e["lastResult"]["ok"] == true);
    let m = wait_answer(&s, &app, SAN_FRANCISCO, &[&la]);
    assert_eq!(
        m.answers[0].ttl, 30,
        "recordTTL 60 capped at maxDynamicTTL 30"
    );
    assert_eq!(answer_ips(&s, &app, NEW_YORK), vec![ny.clone()]);
    assert_eq!(answer_ips(&s, &app, DALLAS), vec![hou.clone()]);

    // Los Angeles stops: San Francisco fails over to the next nearest, Houston.
    t.la.stop();
    let m = wait_answer(&s, &app, SAN_FRANCISCO, &[&hou]);
    assert_eq!(
        m.answers[0].ttl, 1,
        "degraded answers live no longer than one probe interval (100ms, rounded up to 1s)"
    );
    assert_eq!(
        answer_ips(&s, &app, NEW_YORK),
        vec![ny.clone()],
        "others unaffected"
    );
    let e = endpoint(&s, &la);
    assert_eq!(e["up"], false);
    assert_eq!(e["clusters"], serde_json::json!(["los-angeles"]));
    assert_eq!(e["lastResult"]["ok"], false);
    assert!(
        e["lastResult"]["consecutive"]
            .as_u64()
            .expect("consecutive")
            >= 2
    );
    let err = e["lastResult"]["error"].as_str().expect("error text");
    assert!(
        err.contains("connect to") && err.contains("refused"),
        "{err}"
    );
    assert!(e["since"].as_f64().is_some());
    let metrics = s.metrics();
    let port = t.port().to_string();
    let la_ep = format!("{la}:{port}");
    assert_eq!(
        metric(
            &metrics,
            "meridian_endpoint_up",
            &[
                ("cluster", "los-angeles"),
                ("endpoint", &la_ep),
                ("probe", "http")
            ]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "meridian_endpoint_up",
            &[
                ("cluster", "houston"),
                ("endpoint", &format!("{hou}:{port}"))
            ]
        ),
        1.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_health_transitions_total",
            &[("to", "down")]
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_probe_duration_seconds_count",
            &[("probe", "http"), ("result", "fail")]
        ) >= 2.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_probe_duration_seconds_count",
            &[("probe", "http"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            "meridian_failover_answers_total",
            &[("policy", "geo")]
        ) >= 1.0
    );
    // One log line for the transition, with the fields an operator needs.
    let down = log_events(&s, "endpoint down");
    let down: Vec<&serde_json::Value> = down
        .iter()
        .filter(|l| l["endpoint"] == la_ep.as_str())
        .collect();
    assert_eq!(down.len(), 1, "exactly one line per transition");
    assert_eq!(down[0]["cluster"], "los-angeles");
    assert_eq!(down[0]["probe"], "http");
    assert_eq!(down[0]["level"], "WARN");
    assert_eq!(down[0]["fall"], 2);
    assert!(
        down[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("refused")
    );

    // It comes back: after `rise` successes San Francisco is answered by Los Angeles again.
    t.la.start();
    let m = wait_answer(&s, &app, SAN_FRANCISCO, &[&la]);
    assert_eq!(m.answers[0].ttl, 30);
    let e = endpoint(&s, &la);
    assert_eq!(e["up"], true);
    assert_eq!(e["lastResult"]["error"], serde_json::Value::Null);
    assert!(e["lastResult"]["latencyMs"].as_f64().expect("latency") >= 0.0);
    let up = log_events(&s, "endpoint up");
    assert!(
        up.iter().any(|l| l["endpoint"] == la_ep.as_str()
            && l["rise"] == 2
            && l["reason"] == "HTTP 200")
    );
    assert!(
        metric(
            &s.metrics(),
            "meridian_health_transitions_total",
            &[("to", "up")]
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &s.metrics(),
            "meridian_endpoint_up",
            &[("endpoint", &la_ep)]
        ),
        1.0
    );
}

#[test]
fn tcp_probes_and_shared_endpoints() {
    let mut t = Trio::start();
    let (la, hou, ny) = (t.la.ip(), t.hou.ip(), t.ny.ip());
    // "pair" uses the New York address for houston too, with the same probe: one endpoint,
    // probed once, labelled with both clusters.
    let yaml = record("db", &fast("tcp", t.port()), &t.targets())
        + &record(
            "pair",
            &fast("tcp", t.port()),
            &[("houston", ny.clone()), ("new-york", ny.clone())],
        );
    let (_dir, s) = serve(&yaml);
    let db = name("db");
    wait_endpoint(&s, &ny, "probed ok", |e| e["lastResult"]["ok"] == true);
    let e = endpoint(&s, &ny);
    assert_eq!(e["clusters"], serde_json::json!(["new-york", "houston"]));
    let ep = format!("{ny}:{}", t.port());
    assert_eq!(
        metric(
            &s.metrics(),
            "meridian_endpoint_up",
            &[
                ("cluster", "houston,new-york"),
                ("endpoint", &ep),
                ("probe", "tcp")
            ]
        ),
        1.0
    );
    assert_eq!(wait_answer(&s, &db, NEW_YORK, &[&ny]).answers.len(), 1);

    // New York's port closes: New York clients go to Houston, the next nearest.
    t.ny.stop();
    wait_answer(&s, &db, NEW_YORK, &[&hou]);
    let e = endpoint(&s, &ny);
    assert_eq!(e["up"], false);
    assert!(
        e["lastResult"]["error"]
            .as_str()
            .expect("error")
            .contains("refused")
    );
    // "pair" has no healthy address left: all-down policy "all" (the default) answers with its
    // addresses rather than none. (Both of its clusters use the one address; whether the
    // answer repeats it is the answer writer's business, not health's.)
    let mut got = addrs(&ask(&s, &name("pair"), NEW_YORK));
    got.dedup();
    assert_eq!(got, vec![ny.clone()]);
    assert!(
        metric(
            &s.metrics(),
            "meridian_all_down_answers_total",
            &[("mode", "all")]
        ) >= 1.0
    );
    t.ny.start();
    wait_answer(&s, &db, NEW_YORK, &[&ny]);
    assert_eq!(answer_ips(&s, &db, SAN_FRANCISCO), vec![la]);
}

#[test]
fn http_status_body_and_timeouts_are_checked() {
    let t = Trio::start();
    let ann = with(
        fast("http", t.port()),
        &[
            ("probe-body", "all good"),
            ("probe-expect-status", "200-204"),
            ("probe-timeout", "300ms"),
        ],
    );
    t.la.set(Reply::Ok("all good here"));
    t.hou.set(Reply::Ok("all good"));
    t.ny.set(Reply::Ok("all good"));
    let yaml = record("web", &ann, &t.targets());
    let (_dir, s) = serve(&yaml);
    let web = name("web");
    let (la, hou) = (t.la.ip(), t.hou.ip());
    let e = wait_endpoint(&s, &la, "ok", |e| e["lastResult"]["ok"] == true);
    assert_eq!(e["up"], true);
    wait_answer(&s, &web, SAN_FRANCISCO, &[&la]);

    // A status outside the expected range.
    t.la.set(Reply::Status(503));
    wait_answer(&s, &web, SAN_FRANCISCO, &[&hou]);
    let e = endpoint(&s, &la);
    assert_eq!(
        e["lastResult"]["error"],
        "HTTP status 503 outside the expected 200-204"
    );
    // 301 is fine by default but not within 200-204 (and redirects are not followed).
    t.la.set(Reply::Status(301));
    wait_endpoint(&s, &la, "301 refused", |e| {
        e["lastResult"]["error"] == "HTTP status 301 outside the expected 200-204"
    });
    // The body lacks the expected text.
    t.la.set(Reply::Ok("degraded"));
    let e = wait_endpoint(&s, &la, "body mismatch", |e| {
        e["lastResult"]["error"]
            .as_str()
            .is_some_and(|t| t.contains("does not contain \"all good\""))
    });
    assert_eq!(e["up"], false);
    // No answer within the timeout.
    t.la.set(Reply::Hang);
    let e = wait_endpoint(&s, &la, "timeout", |e| {
        e["lastResult"]["error"] == "no result within 300ms"
    });
    assert_eq!(e["up"], false);
    assert!(
        metric(
            &s.metrics(),
            "meridian_probe_duration_seconds_count",
            &[("probe", "http"), ("result", "timeout")]
        ) >= 1.0
    );
    // Healthy again.
    t.la.set(Reply::Ok("all good"));
    wait_answer(&s, &web, SAN_FRANCISCO, &[&la]);
}

#[test]
fn all_down_policies_decide_when_every_cluster_is_down() {
    let mut t = Trio::start();
    let policies = ["all", "nearest", "empty", "servfail"];
    let mut yaml = String::new();
    for p in policies {
        let ann = with(fast("http", t.port()), &[("all-down", p)]);
        yaml += &record(&format!("down-{p}"), &ann, &t.targets());
    }
    let (_dir, s) = serve(&yaml);
    let (la, hou, ny) = (t.la.ip(), t.hou.ip(), t.ny.ip());
    // Four records, one probe spec: each address is one endpoint, probed once.
    let st = state(&s);
    for ip in [&la, &hou, &ny] {
        assert_eq!(
            endpoints_at(&st, ip).len(),
            1,
            "{ip} probed once for four records"
        );
    }
    wait_answer(&s, &name("down-servfail"), SAN_FRANCISCO, &[&la]);

    t.la.stop();
    t.hou.stop();
    t.ny.stop();
    wait_for(WAIT, "servfail once everything is down", || {
        let m = ask(&s, &name("down-servfail"), SAN_FRANCISCO);
        (m.metadata.response_code == ResponseCode::ServFail).then_some(())
    });
    for ip in [&la, &hou, &ny] {
        wait_endpoint(&s, ip, "down", |e| e["up"] == false);
    }
    // all: every address, as if all were up.
    let m = ask(&s, &name("down-all"), SAN_FRANCISCO);
    assert_eq!(addrs(&m), {
        let mut v = vec![la.clone(), hou.clone(), ny.clone()];
        v.sort();
        v
    });
    // nearest: the client's nearest cluster, health ignored.
    assert_eq!(
        answer_ips(&s, &name("down-nearest"), SAN_FRANCISCO),
        vec![la.clone()]
    );
    assert_eq!(
        answer_ips(&s, &name("down-nearest"), NEW_YORK),
        vec![ny.clone()]
    );
    // empty: NOERROR, no address, the SOA for negative caching.
    let m = ask(&s, &name("down-empty"), SAN_FRANCISCO);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // servfail: resolvers retry later.
    let m = ask(&s, &name("down-servfail"), SAN_FRANCISCO);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    let metrics = s.metrics();
    for p in policies {
        assert!(
            metric(&metrics, "meridian_all_down_answers_total", &[("mode", p)]) >= 1.0,
            "all-down answers counted for {p}"
        );
    }

    // One cluster back: every policy answers with it.
    t.hou.start();
    wait_answer(&s, &name("down-servfail"), SAN_FRANCISCO, &[&hou]);
    for p in ["all", "nearest", "empty"] {
        assert_eq!(
            answer_ips(&s, &name(&format!("down-{p}")), SAN_FRANCISCO),
            vec![hou.clone()],
            "{p}"
        );
    }
}

#[test]
fn region_and_zone_names_fall_back_by_cname_when_their_cluster_is_down() {
    let mut t = Trio::start();
    let yaml = record("shop", &fast("http", t.port()), &t.targets());
    let (_dir, s) = serve(&yaml);
    let (la, hou) = (t.la.ip(), t.hou.ip());
    let region = region_name("shop", "us-west");
    let zone = zone_name("shop", "lax1", "us-west");
    wait_endpoint(&s, &la, "ok", |e| e["lastResult"]["ok"] == true);
    // Up: the region and zone names answer with their own cluster, wherever the client is.
    assert_eq!(answer_ips(&s, &region, NEW_YORK), vec![la.clone()]);
    assert_eq!(answer_ips(&s, &zone, NEW_YORK), vec![la.clone()]);

    t.la.stop();
    // The region's only cluster is down: CNAME to the global name, followed in the same answer
    // (San Francisco's nearest healthy cluster is Houston).
    let m = wait_answer(&s, &region, SAN_FRANCISCO, &[&hou]);
    match &m.answers[0].data {
        RData::CNAME(c) => assert_eq!(c.0.to_string(), name("shop")),
        other => panic!("expected a CNAME to the global name, got {other:?}"),
    }
    // The zone name: CNAME to the region name, CNAME to the global name, then the address.
    let m = ask(&s, &zone, SAN_FRANCISCO);
    let chain: Vec<String> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::CNAME(c) => c.0.to_string(),
            RData::A(a) => a.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(chain, vec![region.clone(), name("shop"), hou.clone()]);

    t.la.start();
    wait_answer(&s, &region, SAN_FRANCISCO, &[&la]);
    assert_eq!(answer_ips(&s, &zone, SAN_FRANCISCO), vec![la]);
}

#[test]
fn drains_via_the_api_and_the_cli_and_their_expiry() {
    // Unprobed targets: only drains change the answers here.
    let t = Trio::start();
    let yaml = record("drill", &[("probe", "none".to_string())], &t.targets());
    let (_dir, s) = serve(&yaml);
    let drill = name("drill");
    let (la, hou) = (t.la.ip(), t.hou.ip());
    let admin = format!("http://{}", s.admin);
    assert_eq!(answer_ips(&s, &drill, SAN_FRANCISCO), vec![la.clone()]);

    // API: drain until undrained.
    let (code, body) = s.http("POST", "/api/v1/clusters/los-angeles/drain");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["drained"], true);
    assert_eq!(v["until"], serde_json::Value::Null);
    wait_answer(&s, &drill, SAN_FRANCISCO, &[&hou]);
    let st = state(&s);
    let cl = st["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["name"] == "los-angeles")
        .expect("los-angeles")
        .clone();
    assert_eq!(cl["drained"], true);
    assert!(st["drains"]["los-angeles"]["since"].as_f64().is_some());
    assert_eq!(
        metric(
            &s.metrics(),
            "meridian_cluster_drained",
            &[("cluster", "los-angeles")]
        ),
        1.0
    );
    let (code, _) = s.http("DELETE", "/api/v1/clusters/los-angeles/drain");
    assert_eq!(code, 200);
    wait_answer(&s, &drill, SAN_FRANCISCO, &[&la]);
    assert_eq!(
        metric(
            &s.metrics(),
            "meridian_cluster_drained",
            &[("cluster", "los-angeles")]
        ),
        0.0
    );
    // Undraining what is not drained, draining what does not exist, a bad duration.
    assert_eq!(
        s.http("DELETE", "/api/v1/clusters/los-angeles/drain").0,
        404
    );
    assert_eq!(s.http("POST", "/api/v1/clusters/atlantis/drain").0, 404);
    let bad_for = |d: &str| {
        s.http(
            "POST",
            &format!("/api/v1/clusters/los-angeles/drain?for={d}"),
        )
    };
    assert_eq!(bad_for("soon").0, 400);
    let (code, body) = bad_for("0s");
    assert_eq!(
        code, 400,
        "a zero-length drain is refused, not made permanent: {body}"
    );
    assert!(state(&s)["drains"]["los-angeles"].is_null());

    // CLI: a drill that ends by itself.
    let (code, out, err) = run(&[
        "drain",
        "los-angeles",
        "--for",
        "1s",
        "--json",
        "--admin",
        &admin,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("the CLI prints the JSON reply");
    assert_eq!(v["cluster"], "los-angeles");
    assert!(v["until"].as_f64().is_some());
    wait_answer(&s, &drill, SAN_FRANCISCO, &[&hou]);
    let (code, out, _) = run(&["state", "--json", "--admin", &admin]);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).expect("state JSON");
    let expiring = st["drains"]["los-angeles"]["until"].as_f64().is_some();
    // The drain may already have expired by the time `state` ran; if not, it says when it ends.
    assert!(expiring || st["drains"]["los-angeles"].is_null());
    // Expiry: Los Angeles comes back without an undrain.
    wait_answer(&s, &drill, SAN_FRANCISCO, &[&la]);
    assert!(
        metric(
            &s.metrics(),
            "meridian_drain_events_total",
            &[("event", "expire")]
        ) >= 1.0
    );
    assert!(
        log_events(&s, "drain expired")
            .iter()
            .any(|l| l["cluster"] == "los-angeles")
    );

    // CLI: drain and undrain by hand; undraining twice fails.
    let (code, _, _) = run(&["drain", "houston", "--admin", &admin]);
    assert_eq!(code, 0);
    wait_answer(&s, &drill, DALLAS, &[&la]);
    let (code, _, _) = run(&["undrain", "houston", "--admin", &admin]);
    assert_eq!(code, 0);
    wait_answer(&s, &drill, DALLAS, &[&hou]);
    let (code, _, err) = run(&["undrain", "houston", "--admin", &admin]);
    assert_eq!(code, 1);
    assert!(err.contains("not drained"), "{err}");
    let (code, _, err) = run(&["drain", "houston", "--for", "soon", "--admin", &admin]);
    assert_ne!(code, 0);
    assert!(err.contains("--for"), "{err}");
}

#[test]
fn drained_and_down_clusters_combine() {
    let mut t = Trio::start();
    let yaml = record("combo", &fast("http", t.port()), &t.targets());
    let (_dir, s) = serve(&yaml);
    let combo = name("combo");
    let (la, hou, ny) = (t.la.ip(), t.hou.ip(), t.ny.ip());
    wait_endpoint(&s, &la, "ok", |e| e["lastResult"]["ok"] == true);
    // Houston drained, Los Angeles down: San Francisco is left with New York.
    assert_eq!(s.http("POST", "/api/v1/clusters/houston/drain").0, 200);
    t.la.stop();
    wait_answer(&s, &combo, SAN_FRANCISCO, &[&ny]);
    // A drain wins over a healthy probe; health comes back under it unseen, then shows.
    t.la.start();
    wait_answer(&s, &combo, SAN_FRANCISCO, &[&la]);
    assert_eq!(
        answer_ips(&s, &combo, DALLAS),
        vec![la.clone()],
        "Houston still drained"
    );
    assert_eq!(s.http("DELETE", "/api/v1/clusters/houston/drain").0, 200);
    wait_answer(&s, &combo, DALLAS, &[&hou]);
}

#[test]
fn probes_follow_reloads() {
    let t = Trio::start();
    let (la, hou, ny) = (t.la.ip(), t.hou.ip(), t.ny.ip());
    let two = record(
        "moving",
        &fast("http", t.port()),
        &[("los-angeles", la.clone()), ("houston", hou.clone())],
    );
    let dir = zones_with(&[("health-test.yaml", &two)]);
    let s = Server::start(dir.path());
    let port = t.port();
    wait_endpoint(&s, &la, "probed", |_| true);
    wait_endpoint(&s, &hou, "probed", |_| true);
    assert!(endpoints_at(&state(&s), &ny).is_empty());
    let before = t.ny.hits.load(Ordering::Relaxed);
    assert_eq!(before, 0, "New York is not in the catalog: never probed");

    // Reload: Houston leaves, New York arrives.
    let next = record(
        "moving",
        &fast("http", port),
        &[("los-angeles", la.clone()), ("new-york", ny.clone())],
    );
    // Atomically (the file watcher must not read a half-written file), then SIGHUP.
    let tmp = dir.path().join("health-test.tmp");
    std::fs::write(&tmp, next).expect("write");
    std::fs::rename(&tmp, dir.path().join("health-test.yaml")).expect("rename");
    s.signal("HUP");
    wait_endpoint(&s, &ny, "probed after the reload", |e| {
        e["lastResult"]["ok"] == true
    });
    wait_for(
        WAIT,
        "houston's endpoint gone from state and metrics",
        || {
            let gone = endpoints_at(&state(&s), &hou).is_empty()
                && metric(
                    &s.metrics(),
                    "meridian_endpoint_up",
                    &[("endpoint", &format!("{hou}:{port}"))],
                ) == 0.0
                && !s.metrics().contains(&format!("endpoint=\"{hou}:{port}\""));
            gone.then_some(())
        },
    );
    // Houston is no longer probed.
    let hits = t.hou.hits.load(Ordering::Relaxed);
    wait_for(WAIT, "a few more New York probes", || {
        (t.ny.hits.load(Ordering::Relaxed) >= before + 5).then_some(())
    });
    assert!(
        t.hou.hits.load(Ordering::Relaxed) <= hits + 1,
        "at most a probe already in flight reaches a removed target"
    );
    assert_eq!(answer_ips(&s, &name("moving"), NEW_YORK), vec![ny]);
}

// ---------------------------------------------------------------------------------------------
// HTTPS

/// A test CA and a certificate for `app.test` (and nothing else) signed by it.
struct Pki {
    ca_pem: String,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
}

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types as rustls_pki_types;

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "meridian test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["app.test".to_string()]).expect("leaf params");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf_cert.der().clone()],
        key: rustls_pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    }
}

/// An HTTPS server on `addr` presenting `pki`'s certificate; records the SNI and Host headers
/// it sees. Runs until the returned flag is set.
struct TlsTarget {
    addr: SocketAddr,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    hosts: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for TlsTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn tls_target(ip: Ipv4Addr, pki: &Pki) -> TlsTarget {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let t = TlsTarget {
        addr,
        sni: Arc::default(),
        hosts: Arc::default(),
        stop: Arc::default(),
    };
    let (sni, hosts, stop) = (t.sni.clone(), t.hosts.clone(), t.stop.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while !stop.load(Ordering::Relaxed) {
                let accepted =
                    tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
                let Ok(Ok((tcp, _))) = accepted else { continue };
                let (acceptor, sni, hosts) = (acceptor.clone(), sni.clone(), hosts.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    // A failed handshake (the probe refused our certificate) just ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    sni.lock()
                        .expect("sni")
                        .push(tls.get_ref().1.server_name().map(str::to_string));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                    if let Some(h) = text.lines().find_map(|l| l.strip_prefix("host: ")) {
                        hosts.lock().expect("hosts").push(h.trim().to_string());
                    }
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    t
}

#[test]
fn https_probes_verify_certificates_unless_told_not_to() {
    let pki = pki();
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), &pki.ca_pem).expect("write CA");
    let ca_path = ca_file.path().to_str().expect("utf-8 path").to_string();
    let [ip, ..] = addresses();
    let tls = tls_target(ip, &pki);
    let port = tls.addr.port();
    let base = |extra: &[(&'static str, &str)]| {
        with(
            with(
                fast("https", port),
                &[("probe-path", "/"), ("all-down", "empty")],
            ),
            extra,
        )
    };
    let target = [("los-angeles", ip.to_string())];
    // One record per TLS setting, same address: four endpoints.
    let yaml = record("strict", &base(&[("probe-host", "app.test")]), &target)
        + &record(
            "insecure",
            &base(&[("probe-host", "app.test"), ("probe-insecure", "true")]),
            &target,
        )
        + &record(
            "private-ca",
            &base(&[("probe-host", "app.test"), ("probe-ca", &ca_path)]),
            &target,
        )
        + &record(
            "wrong-name",
            &base(&[("probe-host", "other.test"), ("probe-ca", &ca_path)]),
            &target,
        );
    let (_dir, s) = serve(&yaml);
    let ips = ip.to_string();
    let probed = |pred: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        wait_for(WAIT, "the HTTPS endpoint's result", || {
            endpoints_at(&state(&s), &ips)
                .into_iter()
                .find(|e| pred(&e["probe"]) && !e["lastResult"].is_null())
        })
    };
    // Verification is on by default: a certificate from an unknown CA fails.
    let strict =
        probed(&|p| p["host"] == "app.test" && p["insecure"] == false && p["ca"].is_null());
    assert_eq!(strict["lastResult"]["ok"], false, "{strict}");
    let err = strict["lastResult"]["error"].as_str().expect("error");
    assert!(err.contains("certificate"), "{err}");
    // probe-insecure: accepted.
    let insecure = probed(&|p| p["insecure"] == true);
    assert_eq!(insecure["lastResult"]["ok"], true, "{insecure}");
    // probe-ca: verified against the private CA, with the host name as SNI.
    let ca = probed(&|p| p["host"] == "app.test" && p["ca"] == ca_path.as_str());
    assert_eq!(ca["lastResult"]["ok"], true, "{ca}");
    // ... but the name must still match.
    let wrong = probed(&|p| p["host"] == "other.test");
    assert_eq!(wrong["lastResult"]["ok"], false, "{wrong}");
    let err = wrong["lastResult"]["error"].as_str().expect("error");
    assert!(err.contains("certificate"), "{err}");

    // Through DNS: up records answer, down ones are empty (all-down policy "empty").
    wait_answer(&s, &name("private-ca"), SAN_FRANCISCO, &[&ips]);
    wait_answer(&s, &name("insecure"), SAN_FRANCISCO, &[&ips]);
    wait_answer(&s, &name("strict"), SAN_FRANCISCO, &[]);
    wait_answer(&s, &name("wrong-name"), SAN_FRANCISCO, &[]);
    // The probes connected to the address but presented the host name.
    assert!(
        tls.sni
            .lock()
            .expect("sni")
            .iter()
            .any(|n| n.as_deref() == Some("app.test"))
    );
    let hosts = tls.hosts.lock().expect("hosts").clone();
    assert!(
        hosts.iter().any(|h| h == &format!("app.test:{port}")),
        "{hosts:?}"
    );
}

#[test]
fn check_refuses_a_relative_probe_ca() {
    let yaml = record(
        "relative",
        &[
            ("probe", "https".to_string()),
            ("probe-ca", "ca.pem".to_string()),
        ],
        &[("los-angeles", "127.0.0.1".to_string())],
    );
    let dir = zones_with(&[("health-test.yaml", &yaml)]);
    let zones = dir.path().to_str().expect("utf-8 path");
    let (code, _, err) = run(&["check", "--zones", zones]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "ServiceDNSRecord hc/relative): metadata.annotations[\"meridian.io/probe-ca\"]: \"ca.pem\" must be an absolute path"
        ),
        "{err}"
    );
}
