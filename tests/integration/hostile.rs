//! What the Internet sends: floods from one prefix, piles of idle or slow TCP connections,
//! amplification attempts, and reloads under load.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::common::*;

fn with_config(extra: &str) -> tempfile::TempDir {
    let config = std::fs::read_to_string(repo_zones().join("demo.yaml"))
        .expect("demo.yaml")
        .replace("maxDynamicTTL: 30", &format!("maxDynamicTTL: 30\n{extra}"));
    zones_with(&[("demo.yaml", &config)])
}

#[test]
fn rate_limiting_drops_and_slips_per_prefix() {
    let dir = with_config("  rateLimit: {responsesPerSecond: 10, slip: 2}");
    let s = Server::start(dir.path());
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    for _ in 0..200 {
        sock.send_to(&p, s.dns).expect("send");
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let m = Message::from_vec(&buf[..n]).expect("decode");
        if m.metadata.truncation {
            assert!(m.answers.is_empty());
            truncated += 1;
        } else {
            assert_eq!(addrs(&m), vec!["192.0.2.10"]);
            full += 1;
        }
    }
    // A bucket of 10 (plus what refills while sending) answers in full; the rest alternate
    // between dropped and truncated (slip 2).
    assert!((10..60).contains(&full), "full answers: {full}");
    assert!(truncated >= 40, "slipped answers: {truncated}");
    assert!(full + truncated < 200, "some were dropped");
    let text = s.metrics();
    assert!(
        metric(
            &text,
            "meridian_rrl_responses_total",
            &[("action", "dropped")]
        ) >= 40.0
    );
    assert!(
        metric(
            &text,
            "meridian_rrl_responses_total",
            &[("action", "slipped")]
        ) >= 40.0
    );
    // Another prefix is unaffected, and TCP (which cannot be spoofed) is never limited.
    let m = s
        .q()
        .from("127.0.2.1")
        .ask("static.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
    let m = s.q().tcp().ask("static.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
}

#[test]
fn refused_answers_are_no_larger_than_the_query() {
    let s = Server::start(&repo_zones());
    for q in [s.q(), s.q().no_edns(), s.q().ecs("192.0.2.0", 24)] {
        for name in [
            "example.org.",
            "a.very.long.name.outside.every.served.zone.example.net.",
            ".",
        ] {
            let p = q.packet(name, RecordType::ANY);
            let raw = q.raw(&p).expect("answer");
            let m = Message::from_vec(&raw).expect("decode");
            assert_eq!(m.metadata.response_code, ResponseCode::Refused);
            assert!(raw.len() <= p.len(), "{name}: {} > {}", raw.len(), p.len());
        }
    }
}

fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let bind: SocketAddr = format!("{src}:0").parse().expect("addr");
    sock.bind(&bind.into()).expect("bind source");
    sock.connect(&dst.into()).expect("connect");
    let t: TcpStream = sock.into();
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    t
}

/// True if the server closed the connection (EOF or reset) without answering.
fn closed_by_server(mut t: impl Read) -> bool {
    let mut b = [0u8; 1];
    matches!(t.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn tcp_connection_caps_per_source_and_in_total() {
    let s = Server::start_with(
        &repo_zones(),
        &[
            "--tcp-max-per-source",
            "3",
            "--tcp-max-connections",
            "5",
            "--tcp-idle-timeout",
            "30s",
        ],
    );
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", s.dns)).collect();
    let mut fourth = connect_from("127.0.0.1", s.dns);
    assert!(
        closed_by_server(&mut fourth),
        "4th connection from one source is refused"
    );
    held.push(connect_from("127.0.0.2", s.dns));
    held.push(connect_from("127.0.0.2", s.dns));
    // At the total cap a new source is served: an idle connection of the source holding the
    // most (127.0.0.1, three) makes room.
    let mut sixth = connect_from("127.0.0.3", s.dns);
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    sixth
        .write_all(&[&(p.len() as u16).to_be_bytes()[..], &p].concat())
        .expect("write");
    let mut len = [0u8; 2];
    sixth
        .read_exact(&mut len)
        .expect("6th connection in total is served");
    let evicted = held.remove(0);
    evicted
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(
        closed_by_server(&mut &evicted),
        "the oldest idle connection of the biggest source is closed"
    );
    let text = s.metrics();
    assert!(
        metric(
            &text,
            "meridian_dns_tcp_refused_total",
            &[("limit", "per_source")]
        ) >= 1.0
    );
    assert_eq!(metric(&text, "meridian_dns_tcp_evicted_total", &[]), 1.0);
    // Held connections still work; UDP is unaffected.
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    let t = &mut held[0];
    t.write_all(&[&(p.len() as u16).to_be_bytes()[..], &p].concat())
        .expect("write");
    t.read_exact(&mut len).expect("answer on a held connection");
    assert_eq!(
        addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
    // Closing frees the slots.
    drop(held);
    drop(sixth);
    wait_for(Duration::from_secs(5), "slots freed", || {
        (metric(&s.metrics(), "meridian_dns_tcp_connections", &[]) == 0.0).then_some(())
    });
    assert_eq!(
        addrs(&s.q().tcp().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
}

#[test]
fn idle_half_open_and_slow_reading_clients_do_not_stop_service() {
    let s = Server::start_with(
        &repo_zones(),
        &["--tcp-idle-timeout", "1s", "--tcp-max-per-source", "1000"],
    );
    // Hundreds of connections that never send a byte.
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(s.dns).expect("connect"))
        .collect();
    // Half a message: a length prefix, then silence.
    let mut half = TcpStream::connect(s.dns).expect("connect");
    half.write_all(&[0x00, 0x40, 0x12]).expect("write");
    // A client that pipelines thousands of queries and never reads its answers.
    let mut slow = TcpStream::connect(s.dns).expect("connect");
    let p = s.q().packet("big.gslb.example.com.", RecordType::TXT);
    let framed = [&(p.len() as u16).to_be_bytes()[..], &p].concat();
    slow.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    for _ in 0..5000 {
        if slow.write_all(&framed).is_err() {
            break;
        }
    }
    // Service goes on over UDP and fresh TCP connections.
    for _ in 0..20 {
        assert_eq!(
            addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
            vec!["192.0.2.10"]
        );
    }
    assert_eq!(
        addrs(&s.q().tcp().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
    // Idle and half-open connections are closed after the idle timeout.
    for t in idle.iter_mut().take(5).chain(std::iter::once(&mut half)) {
        t.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert!(closed_by_server(t), "idle connection closed by the server");
    }
    wait_for(
        Duration::from_secs(15),
        "all idle connections closed",
        || (metric(&s.metrics(), "meridian_dns_tcp_connections", &[]) == 0.0).then_some(()),
    );
}

#[test]
fn reloads_under_load_lose_no_query_and_never_serve_a_half_loaded_state() {
    let dir = zones_with(&[]);
    let zone = dir.path().join("gslb.example.com.zone");
    let yaml = dir.path().join("demo.yaml");
    let zone_a = std::fs::read_to_string(&zone).expect("zone");
    let yaml_a = std::fs::read_to_string(&yaml).expect("yaml");
    // Version B changes both files: a static address and the Los Angeles address of the `api`
    // record (not health-checked, so only the reload decides what is served).
    let zone_b = zone_a.replace("static  IN A    192.0.2.10", "static  IN A    192.0.2.11");
    let yaml_b = yaml_a.replace("ip: 198.51.100.30", "ip: 198.51.100.39");
    let s = Server::start(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut clients = Vec::new();
    for i in 0..2 {
        let q = s.q().ecs("192.0.2.0", 24);
        let stop = stop.clone();
        let answered = answered.clone();
        clients.push(std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let (name, a, b) = if i == 0 {
                    ("static.gslb.example.com.", "192.0.2.10", "192.0.2.11")
                } else {
                    (
                        "api.shop.demo.svc.gslb.example.com.",
                        "198.51.100.30",
                        "198.51.100.39",
                    )
                };
                let raw = q
                    .raw(&q.packet(name, RecordType::A))
                    .expect("no query lost");
                let m = Message::from_vec(&raw).expect("decode");
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
                let got = addrs(&m);
                assert!(
                    got == vec![a] || got == vec![b],
                    "{name}: half-loaded answer {got:?}"
                );
                seen.insert(got);
                answered[i].fetch_add(1, Ordering::Relaxed);
            }
            seen.len()
        }));
    }
    for round in 0..20 {
        let (z, y) = if round % 2 == 0 {
            (&zone_b, &yaml_b)
        } else {
            (&zone_a, &yaml_a)
        };
        // Write each file atomically, as deploy tools do (rename over the old file).
        for (path, text) in [(&zone, z), (&yaml, y)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
        s.signal("HUP");
        // Wait on the observable state: both names answer from the version just written.
        let (want_static, want_api) = if round % 2 == 0 {
            ("192.0.2.11", "198.51.100.39")
        } else {
            ("192.0.2.10", "198.51.100.30")
        };
        let q = s.q().ecs("192.0.2.0", 24);
        wait_for(Duration::from_secs(10), "reload applied", || {
            let st = addrs(&q.ask("static.gslb.example.com.", RecordType::A));
            let api = addrs(&q.ask("api.shop.demo.svc.gslb.example.com.", RecordType::A));
            (st == vec![want_static] && api == vec![want_api]).then_some(())
        });
        // And both load clients have asked again since, so each sees every version.
        let before: Vec<usize> = answered.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        wait_for(Duration::from_secs(10), "clients progressing", || {
            answered
                .iter()
                .zip(&before)
                .all(|(a, b)| a.load(Ordering::Relaxed) > b + 2)
                .then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let versions = c.join().expect("client thread");
        assert_eq!(versions, 2, "both versions were served");
    }
    assert!(
        answered
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<usize>()
            > 100
    );
}

#[test]
fn sigterm_finishes_in_flight_tcp_and_exits() {
    let mut s = Server::start(&repo_zones());
    let mut t = TcpStream::connect(s.dns).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    let framed = [&(p.len() as u16).to_be_bytes()[..], &p].concat();
    t.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    t.read_exact(&mut len).expect("answered before shutdown");
    let mut rest = vec![0u8; u16::from_be_bytes(len) as usize];
    t.read_exact(&mut rest).expect("answer");
    s.signal("TERM");
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exits 0 within the bound"
    );
    assert!(s.log_text().contains("stopped"));
}

#[test]
fn thousands_of_connections_from_one_source_leave_room_for_others() {
    // Defaults: at most 64 connections per source address, 1024 in total.
    let s = Server::start(&repo_zones());
    let mut held = Vec::new();
    let mut failed = 0;
    for _ in 0..2000 {
        match TcpStream::connect(s.dns) {
            Ok(t) => held.push(t),
            Err(_) => failed += 1,
        }
    }
    // The test's own open-file limit may stop it short; what it opened must be accounted for.
    assert!(
        held.len() >= 500,
        "only {} connections opened ({failed} failed): raise the open-file limit",
        held.len()
    );
    let opened = held.len() as f64;
    wait_for(
        Duration::from_secs(30),
        "the per-source cap to apply to every connection beyond 64",
        || {
            let text = s.metrics();
            (metric(&text, "meridian_dns_tcp_connections", &[]) <= 64.0
                && metric(
                    &text,
                    "meridian_dns_tcp_refused_total",
                    &[("limit", "per_source")],
                ) >= opened - 64.0)
                .then_some(())
        },
    );
    // Another source is still served over TCP, and everyone over UDP.
    let mut t = connect_from("127.0.0.2", s.dns);
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    t.write_all(&[&(p.len() as u16).to_be_bytes()[..], &p].concat())
        .expect("write");
    let mut len = [0u8; 2];
    t.read_exact(&mut len).expect("answered despite the flood");
    assert_eq!(
        addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
}

#[test]
fn rate_limit_is_one_per_prefix_across_udp_workers() {
    // Four workers, each source port hashed to one of them: one limit must hold for the
    // prefix, not one per worker.
    const RATE: f64 = 20.0;
    let dir = with_config("  rateLimit: {responsesPerSecond: 20, slip: 0}");
    let s = Server::start_with(dir.path(), &["--udp-workers", "4"]);
    let socks: Vec<UdpSocket> = (0..64)
        .map(|_| {
            let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
            u.set_nonblocking(true).expect("nonblocking");
            u
        })
        .collect();
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    let started = std::time::Instant::now();
    for i in 0..640 {
        socks[i % socks.len()].send_to(&p, s.dns).expect("send");
    }
    let sending = started.elapsed().as_secs_f64();
    // Everything sent has been answered or dropped well before this.
    std::thread::sleep(Duration::from_secs(1));
    let mut answered = 0;
    let mut buf = [0u8; 2048];
    for u in &socks {
        while let Ok((n, _)) = u.recv_from(&mut buf) {
            let m = Message::from_vec(&buf[..n]).expect("decode");
            assert!(!m.metadata.truncation, "slip 0 sends no TC");
            answered += 1;
        }
    }
    // One bucket: its size plus what refills while the queries arrive (the sending time and a
    // generous margin for the server's lag behind it).
    let bound = RATE + RATE * (sending + 0.5) + 2.0;
    assert!(answered >= RATE as usize, "answered {answered}");
    assert!(
        (answered as f64) <= bound,
        "answered {answered} > {bound:.0}: the limit was multiplied by the workers"
    );
    assert!(
        bound < 2.0 * RATE + 20.0,
        "sent too slowly to tell: {sending:.2}s"
    );
}

#[test]
fn sources_filling_the_tcp_cap_do_not_lock_out_a_new_source() {
    let s = Server::start_with(
        &repo_zones(),
        &[
            "--tcp-max-per-source",
            "8",
            "--tcp-max-connections",
            "64",
            "--tcp-idle-timeout",
            "60s",
        ],
    );
    // Eight sources, eight idle connections each: the total cap is full.
    let mut held: Vec<TcpStream> = (2..10)
        .flat_map(|i| (0..8).map(move |_| format!("127.0.0.{i}")))
        .map(|src| connect_from(&src, s.dns))
        .collect();
    wait_for(Duration::from_secs(10), "64 connections open", || {
        (metric(&s.metrics(), "meridian_dns_tcp_connections", &[]) == 64.0).then_some(())
    });
    // Fresh sources are still answered over TCP, each in turn.
    let p = s.q().packet("static.gslb.example.com.", RecordType::A);
    for src in ["127.0.1.1", "127.0.1.2", "127.0.1.3"] {
        let mut t = connect_from(src, s.dns);
        t.write_all(&[&(p.len() as u16).to_be_bytes()[..], &p].concat())
            .expect("write");
        let mut len = [0u8; 2];
        t.read_exact(&mut len)
            .unwrap_or_else(|e| panic!("{src} not answered at the cap: {e}"));
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        t.read_exact(&mut body).expect("answer");
        let m = Message::from_vec(&body).expect("decode");
        assert_eq!(addrs(&m), vec!["192.0.2.10"]);
        held.push(t);
    }
    let text = s.metrics();
    assert_eq!(metric(&text, "meridian_dns_tcp_evicted_total", &[]), 3.0);
    assert_eq!(
        metric(
            &text,
            "meridian_dns_tcp_refused_total",
            &[("limit", "total")]
        ),
        0.0
    );
}

/// A ServiceDNSRecord over `n` clusters (no probes), as `zones/` gets it from a big fleet.
fn many_clusters_zone(n: usize) -> tempfile::TempDir {
    let mut y = String::from(
        "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\nmetadata:\n  \
         name: big\n  namespace: shop\n  annotations:\n    meridian.io/probe: none\n\
         spec:\n  domainRef: demo\nstatus:\n  domain: gslb.example.com\n  dns:\n",
    );
    for i in 0..n {
        // Every tenth cluster shares its neighbour's address.
        let a = i - usize::from(i % 10 == 9);
        y.push_str(&format!(
            "  - cluster: c{i}\n    loadBalancer:\n      ingress:\n      - ip: 10.{}.{}.{}\n",
            a >> 16,
            (a >> 8) & 255,
            a & 255
        ));
    }
    zones_with(&[("big.yaml", &y)])
}

#[test]
fn a_name_with_thousands_of_clusters_does_not_starve_others() {
    const BIG: &str = "big.shop.demo.svc.gslb.example.com.";
    let dir = many_clusters_zone(10_000);
    // One worker: the flood and the other client share it, so a slow answer would starve them.
    let s = Server::start_with(dir.path(), &["--udp-workers", "1"]);
    // Over TCP the answer is a valid message of distinct addresses, as many as fit.
    let m = s.q().tcp().ask(BIG, RecordType::A);
    assert!(!m.metadata.truncation);
    let got = addrs(&m);
    let mut distinct = got.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), got.len(), "no address twice");
    assert!(got.len() > 4000, "{} addresses", got.len());
    // Over UDP it does not fit: TC.
    let m = s.q().ask(BIG, RecordType::A);
    assert!(m.metadata.truncation && m.answers.is_empty());

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicBool::new(false));
    let big_answered = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (q, server) = (s.q(), s.dns);
        let (stop, sent, big_answered) = (stop.clone(), sent.clone(), big_answered.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let p = q.packet(BIG, RecordType::A);
            let mut buf = [0u8; 2048];
            // A bounded burst: 25 rounds of 40 queries in flight.
            for _ in 0..25 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for _ in 0..40 {
                    sock.send_to(&p, server).expect("send");
                }
                sent.store(true, Ordering::Release);
                for _ in 0..40 {
                    if sock.recv_from(&mut buf).is_err() {
                        break;
                    }
                    big_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The static queries go out while the flood is in flight (on a loaded machine the flood
    // thread could otherwise start after they are done, and send nothing).
    wait_for(Duration::from_secs(10), "the flood's first burst", || {
        sent.load(Ordering::Acquire).then_some(())
    });
    let mut answered = 0;
    for _ in 0..50 {
        let p = s.q().packet("static.gslb.example.com.", RecordType::A);
        if let Some(raw) = s.q().raw(&p) {
            let m = Message::from_vec(&raw).expect("decode");
            assert_eq!(addrs(&m), vec!["192.0.2.10"]);
            answered += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    assert_eq!(answered, 50, "static queries answered during the flood");
    assert!(
        big_answered.load(Ordering::Relaxed) >= 40,
        "the big name is answered too: {}",
        big_answered.load(Ordering::Relaxed)
    );
}
