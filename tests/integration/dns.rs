//! The authoritative server on the demo zones: geo answers, ECS, RFC behaviour, malformed input,
//! the CLI (`check`, `explain`) and reloads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;

const WEB: &str = "web.shop.demo.svc.gslb.example.com.";
const API: &str = "api.shop.demo.svc.gslb.example.com.";
const NY: &str = "127.10.0.1";
const HOU: &str = "127.20.0.1";
const LA: &str = "127.30.0.1";

fn demo() -> Server {
    Server::start(&repo_zones())
}

#[test]
fn nearest_cluster_by_ecs_over_udp_and_tcp() {
    let s = demo();
    // (ECS prefix, where the demo GeoIP database puts it, expected VIP, expected ECS scope)
    let cases = [
        ("192.0.2.0", 24, "San Francisco", LA, 25),
        ("192.0.2.128", 25, "San Diego", LA, 25),
        ("198.51.100.0", 24, "New York", NY, 24),
        ("203.0.113.0", 25, "Dallas", HOU, 25),
        ("203.0.113.128", 25, "Miami", HOU, 25),
        ("2001:db8:1::", 48, "San Jose", LA, 48),
        ("2001:db8:2::", 56, "Boston", NY, 48),
        ("2001:db8:3::", 48, "Austin", HOU, 48),
    ];
    for tcp in [false, true] {
        for (prefix, len, place, want, scope) in cases {
            let mut q = s.q().ecs(prefix, len);
            if tcp {
                q = q.tcp();
            }
            let m = q.ask(WEB, RecordType::A);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(addrs(&m), vec![want.to_string()], "{place} over tcp={tcp}");
            assert!(m.metadata.authoritative, "AA set");
            assert!(!m.metadata.recursion_available, "RA clear");
            assert_eq!(
                ecs_of(&m),
                Some((len, scope)),
                "{place}: ECS echoed with scope"
            );
        }
    }
}

#[test]
fn source_address_locates_clients_without_ecs() {
    let s = demo();
    // 127.0.1.0/24 is San Francisco in the demo GeoIP database, 127.0.2.0/24 New York.
    let m = s.q().from("127.0.1.7").ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![LA]);
    assert_eq!(
        ecs_of(&m),
        None,
        "no ECS in the reply when the query had none"
    );
    let m = s.q().from("127.0.2.7").ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![NY]);
    let m = s.q().from("127.0.3.7").no_edns().ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![HOU]);
    // ECS with source prefix 0: the resolver asks us not to use its client's address; the
    // packet's source decides and the scope is 0 (RFC 7871 §7.1.2).
    let m = s
        .q()
        .from("127.0.2.7")
        .ecs("0.0.0.0", 0)
        .ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![NY]);
    assert_eq!(ecs_of(&m), Some((0, 0)));
}

#[test]
fn unplaceable_clients_get_every_cluster_or_the_default_cluster() {
    let s = demo();
    // 127.0.0.1 and 100.64.0.0/24 are not in the demo database.
    let m = s.q().ecs("100.64.0.0", 24).ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![NY, HOU, LA]);
    let (_, scope) = ecs_of(&m).expect("ecs");
    assert!(
        scope > 0 && scope <= 24,
        "scope is the unmapped network's prefix, got {scope}"
    );
    let config = std::fs::read_to_string(repo_zones().join("demo.yaml"))
        .expect("demo.yaml")
        .replace(
            "maxDynamicTTL: 30",
            "maxDynamicTTL: 30\n  defaultCluster: houston",
        );
    let dir = zones_with(&[("demo.yaml", &config)]);
    let s = Server::start(dir.path());
    let m = s.q().ecs("100.64.0.0", 24).ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![HOU]);
}

#[test]
fn country_only_database_uses_country_centroids() {
    let s = Server::start_with(
        &repo_zones(),
        &["--geoip", data("country.mmdb").to_str().expect("path")],
    );
    // 203.0.113.0/24 is Japan in the country fixture: Los Angeles is nearest.
    assert_eq!(
        addrs(&s.q().ecs("203.0.113.0", 24).ask(WEB, RecordType::A)),
        vec![LA]
    );
    // 198.51.100.0/24 is Germany: New York is nearest.
    assert_eq!(
        addrs(&s.q().ecs("198.51.100.0", 24).ask(WEB, RecordType::A)),
        vec![NY]
    );
}

#[test]
fn region_zone_prefix_and_ingress_names() {
    let s = demo();
    let q = s.q().ecs("198.51.100.0", 24);
    // Region and zone names answer with their own clusters, wherever the client is.
    let m = q.ask("web.shop.demo.svc.us-west.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec![LA]);
    let m = q.ask(
        "web.shop.demo.svc.hou1.us-central.gslb.example.com.",
        RecordType::A,
    );
    assert_eq!(addrs(&m), vec![HOU]);
    // dnsPrefix: www → CNAME to the global name, followed in the same answer.
    let m = s
        .q()
        .ecs("192.0.2.0", 24)
        .ask("www.gslb.example.com.", RecordType::A);
    assert_eq!(m.answers.len(), 2);
    match &m.answers[0].data {
        RData::CNAME(c) => assert_eq!(c.0.to_string(), WEB),
        other => panic!("expected CNAME, got {other:?}"),
    }
    assert_eq!(addrs(&m), vec![LA]);
    // A chain of two CNAMEs in the zone file and the record: docs → www → web.
    let m = s
        .q()
        .ecs("192.0.2.0", 24)
        .ask("docs.gslb.example.com.", RecordType::A);
    assert_eq!(m.answers.len(), 3);
    assert_eq!(addrs(&m), vec![LA]);
    assert_eq!(
        ecs_of(&m),
        Some((24, 25)),
        "the chain ended in a geo answer"
    );
    // IngressDNSRecord host.
    let m = s
        .q()
        .ecs("203.0.113.0", 25)
        .ask("shop.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec!["127.20.0.2"]);
}

#[test]
fn ipv6_addresses_are_aaaa_and_ttls_are_capped() {
    let s = demo();
    let m = s.q().ecs("192.0.2.0", 24).ask(API, RecordType::AAAA);
    assert_eq!(addrs(&m), vec!["2001:db8:30::1"]);
    let m = s.q().ecs("198.51.100.0", 24).ask(API, RecordType::A);
    assert_eq!(addrs(&m), vec!["198.51.100.10"]);
    // recordTTL 120, capped at maxDynamicTTL 30 for health-dependent answers.
    assert_eq!(m.answers[0].ttl, 30);
    // web has no IPv6 address: NODATA with the SOA.
    let m = s.q().ask(WEB, RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn static_records_and_negative_answers() {
    let s = demo();
    let q = s.q().ecs("192.0.2.0", 24);
    let m = q.ask("static.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec!["192.0.2.10"]);
    assert_eq!(m.answers[0].ttl, 300);
    assert_eq!(
        ecs_of(&m),
        Some((24, 0)),
        "static answers do not depend on location"
    );
    let m = q.ask("gslb.example.com.", RecordType::MX);
    assert_eq!(m.answers.len(), 1);
    let m = q.ask("status.gslb.example.com.", RecordType::A);
    assert_eq!(
        addrs(&m),
        vec!["192.0.2.80", "192.0.2.81"],
        "DNSEndpoint served as written"
    );
    assert_eq!(m.answers[0].ttl, 120);
    let m = q.ask("status.gslb.example.com.", RecordType::TXT);
    assert_eq!(m.answers.len(), 1);
    // NXDOMAIN: SOA in authority, TTL = min(SOA TTL, MINIMUM) (RFC 2308).
    let m = q.ask("nope.gslb.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].name.to_string(), "gslb.example.com.");
    assert_eq!(m.authorities[0].ttl, 60);
    // NODATA: the name exists, the type does not.
    let m = q.ask("ns1.gslb.example.com.", RecordType::AAAA);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // Empty non-terminal (RFC 8020): NODATA, not NXDOMAIN.
    let m = q.ask("shop.demo.svc.gslb.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // Wildcard (RFC 4592).
    let m = q.ask("anything.apps.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec!["192.0.2.20"]);
    assert_eq!(
        m.answers[0].name.to_string(),
        "anything.apps.gslb.example.com."
    );
}

#[test]
fn refused_outside_the_zone_and_for_transfers() {
    let s = demo();
    for name in ["example.org.", "example.com.", "."] {
        let m = s.q().ask(name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!m.metadata.authoritative);
        assert!(
            m.answers.is_empty() && m.authorities.is_empty(),
            "no upward referral"
        );
    }
    let m = s.q().tcp().ask("gslb.example.com.", RecordType::AXFR);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn delegation_gets_a_referral_with_glue() {
    let s = demo();
    let m = s.q().ask("host.lab.gslb.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        !m.metadata.authoritative,
        "not authoritative below a zone cut"
    );
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::NS);
    assert_eq!(m.authorities[0].name.to_string(), "lab.gslb.example.com.");
    let glue: Vec<String> = m
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(glue, vec!["192.0.2.54"]);
}

#[test]
fn query_case_is_preserved() {
    let s = demo();
    let name = "WeB.sHoP.DeMo.SvC.GsLb.ExAmPlE.CoM.";
    let m = s.q().ecs("192.0.2.0", 24).ask(name, RecordType::A);
    assert_eq!(m.queries[0].name().to_string(), name);
    assert_eq!(m.answers[0].name.to_string(), name);
    assert_eq!(addrs(&m), vec![LA]);
}

#[test]
fn edns_behaviour() {
    let s = demo();
    let m = s.q().ask("static.gslb.example.com.", RecordType::A);
    let e = m.edns.as_ref().expect("OPT echoed");
    assert_eq!(e.max_payload(), 1232);
    let m = s
        .q()
        .no_edns()
        .ask("static.gslb.example.com.", RecordType::A);
    assert!(m.edns.is_none(), "no OPT without one in the query");
    let mut q = s.q();
    q.dnssec_ok = true;
    let m = q.ask("static.gslb.example.com.", RecordType::A);
    assert!(
        m.edns.as_ref().expect("OPT").flags().dnssec_ok,
        "DO bit echoed"
    );
    // EDNS version 1: BADVERS (extended RCODE 16), no answer.
    let mut p = s.q().packet("static.gslb.example.com.", RecordType::A);
    let n = p.len();
    // OPT is last: name(1) type(2) class(2) then TTL = ext-rcode, version, flags.
    let ttl_at = n - 11 + 5;
    p[ttl_at + 1] = 1;
    let raw = s.q().raw(&p).expect("answer");
    let m = Message::from_vec(&raw).expect("decode");
    // Extended RCODE 16 is BADVERS for OPT (hickory names the shared value BADSIG).
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.answers.is_empty());
}

fn big_zone() -> String {
    let mut z = String::from(
        "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
    );
    for i in 0..30 {
        z.push_str(&format!("big IN TXT \"{i:02} {}\"\n", "x".repeat(90)));
    }
    z
}

#[test]
fn truncation_over_udp_then_full_answer_over_tcp() {
    let dir = zones_with(&[("big.test.zone", &big_zone())]);
    let s = Server::start(dir.path());
    for q in [s.q().no_edns(), s.q().payload(1232)] {
        let m = q.ask("big.big.test.", RecordType::TXT);
        assert!(m.metadata.truncation, "TC set");
        assert!(m.answers.is_empty(), "incomplete RRsets are not sent");
        assert_eq!(m.queries.len(), 1);
    }
    let m = s.q().tcp().ask("big.big.test.", RecordType::TXT);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 30);
    // A client offering 4096 gets it over UDP too (our limit: 1232 by default): still TC.
    let m = s.q().payload(4096).ask("big.big.test.", RecordType::TXT);
    assert!(m.metadata.truncation);
}

#[test]
fn any_and_chaos_and_unknown_types() {
    let s = demo();
    // RFC 8482: one RRset answers ANY.
    let m = s.q().ask("gslb.example.com.", RecordType::ANY);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let types: std::collections::BTreeSet<_> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 1, "{types:?}");
    // Unknown types get NODATA, not silence (RFC 8906).
    let m = s
        .q()
        .ask("static.gslb.example.com.", RecordType::Unknown(65333));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // CHAOS version.bind: REFUSED unless configured.
    let out = dig(s.dns, &["version.bind", "TXT", "CH"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn malformed_packets_get_formerr_or_are_dropped_and_the_server_survives() {
    let s = demo();
    let q = s.q();
    // Too short for a header: dropped.
    assert_eq!(q.raw(&[1, 2, 3]), None);
    // A response (QR set): dropped, never answered.
    let mut p = q.packet("static.gslb.example.com.", RecordType::A);
    p[2] |= 0x80;
    assert_eq!(q.raw(&p), None);
    // Two questions: FORMERR.
    let mut p = q.packet("static.gslb.example.com.", RecordType::A);
    p[5] = 2;
    let m = Message::from_vec(&q.raw(&p).expect("answer")).expect("decode");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // ECS with address bits beyond the source prefix: FORMERR (RFC 7871 §6).
    let mut p = q
        .clone()
        .ecs("192.0.2.0", 24)
        .packet("static.gslb.example.com.", RecordType::A);
    let n = p.len();
    p[n - 1] = 0xff; // last address octet of a /24 carries the third octet; poke a /23-style bit
    p[n - 5] = 23; // source prefix 23 with a non-zero last bit
    let m = Message::from_vec(&q.raw(&p).expect("answer")).expect("decode");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // NOTIFY: NOTIMP (RFC 8906: never silence).
    let mut p = q.packet("gslb.example.com.", RecordType::SOA);
    p[2] = (p[2] & 0x87) | (4 << 3);
    let m = Message::from_vec(&q.raw(&p).expect("answer")).expect("decode");
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    // Compression loop in the question, label past the end, random bytes: no crash.
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let header = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut garbage: Vec<Vec<u8>> = vec![
        [&header[..], &[0xc0, 0x0c, 0, 1, 0, 1]].concat(),
        [&header[..], &[0x3f, b'a']].concat(),
        [&header[..], &[0x05, b'a', b'b', 0xc0]].concat(),
    ];
    for _ in 0..300 {
        let len = (next() % 600) as usize;
        garbage.push((0..len).map(|_| next() as u8).collect());
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for g in &garbage {
        sock.send_to(g, s.dns).expect("send");
    }
    // Garbage over TCP, including a length prefix longer than what follows.
    if let Ok(mut t) = TcpStream::connect(s.dns) {
        let _ = t.write_all(&[0x01, 0x00, 0xde, 0xad]);
    }
    let m = s.q().ecs("192.0.2.0", 24).ask(WEB, RecordType::A);
    assert_eq!(addrs(&m), vec![LA], "still serving");
}

#[test]
fn tcp_pipelined_queries_on_one_connection() {
    let s = demo();
    let mut t = TcpStream::connect(s.dns).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let names = [
        "static.gslb.example.com.",
        "ns1.gslb.example.com.",
        "nope.gslb.example.com.",
    ];
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut q = s.q();
        q.id = 100 + i as u16;
        let p = q.packet(n, RecordType::A);
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(&p);
    }
    t.write_all(&out).expect("write all three at once");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut len = [0u8; 2];
        t.read_exact(&mut len).expect("length");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        t.read_exact(&mut buf).expect("message");
        ids.push(Message::from_vec(&buf).expect("decode").metadata.id);
    }
    ids.sort();
    assert_eq!(ids, vec![100, 101, 102]);
}

#[test]
fn the_readme_dig_commands() {
    let s = demo();
    let la = dig(s.dns, &[WEB, "A", "+subnet=192.0.2.0/24", "+short"]);
    assert_eq!(la.trim(), LA);
    let ny = dig(s.dns, &[WEB, "A", "+subnet=198.51.100.0/24", "+short"]);
    assert_eq!(ny.trim(), NY);
    let tx = dig(
        s.dns,
        &[WEB, "A", "+subnet=203.0.113.0/24", "+short", "+tcp"],
    );
    assert_eq!(tx.trim(), HOU);
}

#[test]
fn admin_endpoints_and_metrics() {
    let s = demo();
    assert_eq!(s.http("GET", "/healthz").0, 200);
    assert_eq!(s.http("GET", "/readyz").0, 200);
    s.q().ecs("192.0.2.0", 24).ask(WEB, RecordType::A);
    s.q().ask("nope.gslb.example.com.", RecordType::A);
    s.q().tcp().ask("example.org.", RecordType::A);
    let text = s.metrics();
    assert!(
        metric(
            &text,
            "meridian_dns_queries_total",
            &[("transport", "udp"), ("rcode", "NOERROR"), ("qtype", "A")]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "meridian_dns_queries_total",
            &[("rcode", "NXDOMAIN")]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "meridian_dns_queries_total",
            &[("transport", "tcp"), ("rcode", "REFUSED")]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "meridian_answers_total",
            &[("policy", "geo"), ("cluster", "los-angeles")]
        ) >= 1.0
    );
    assert!(metric(&text, "meridian_snapshot_generation", &[]) >= 1.0);
    let (code, body) = s.http("GET", "/api/v1/state");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("state JSON");
    let clusters: Vec<&str> = v["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(clusters, ["new-york", "houston", "los-angeles"]);
}

#[test]
fn check_accepts_the_demo_and_names_file_line_object_and_field() {
    let (code, out, err) = run(&["check", "--zones", repo_zones().to_str().expect("path")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
    let cases: [(&str, &str, &str); 5] = [
        (
            "bad.test.zone",
            "$TTL 300\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.300\n",
            "bad.test.zone:4: ",
        ),
        (
            "nosoa.test.zone",
            "$TTL 300\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
            "zone nosoa.test. has no SOA record at its apex",
        ),
        (
            "bad.yaml",
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\nmetadata: {name: x, namespace: y}\nspec:\n  domainRef: demo\n  recordTTL: -5\n",
            "bad.yaml:6 (ServiceDNSRecord y/x): spec.recordTTL: invalid value",
        ),
        (
            "ref.yaml",
            "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\nmetadata: {name: x, namespace: y}\nspec:\n  domainRef: nowhere\n",
            "ref.yaml:5 (ServiceDNSRecord y/x): spec.domainRef: no Domain named \"nowhere\"",
        ),
        (
            "ann.yaml",
            "# comment\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\nmetadata:\n  name: x\n  namespace: y\n  annotations: {meridian.io/fall: \"0\"}\nspec:\n  domainRef: demo\n",
            "ann.yaml:7 (ServiceDNSRecord y/x): metadata.annotations[\"meridian.io/fall\"]: \"0\" is not a number in 1..=100",
        ),
    ];
    for (file, text, want) in cases {
        let dir = zones_with(&[(file, text)]);
        let (code, _, err) = run(&["check", "--zones", dir.path().to_str().expect("path")]);
        assert_eq!(code, 1, "{file}: {err}");
        assert!(err.contains(want), "{file}: expected {want:?} in:\n{err}");
        // serve refuses to start with the same message.
        let started = Server::try_start(dir.path(), &[]);
        let Err(logs) = started else {
            panic!("{file}: serve started despite errors")
        };
        assert!(
            logs.contains(want),
            "{file}: serve output lacks {want:?}:\n{logs}"
        );
    }
    let (code, _, err) = run(&["check", "--zones", "/nonexistent/zones"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/zones: cannot read directory"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "check",
        "--zones",
        repo_zones().to_str().expect("path"),
        "--geoip",
        "/nonexistent.mmdb",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--geoip: GeoIP database /nonexistent.mmdb does not exist"),
        "{err}"
    );
}

#[test]
fn explain_shows_location_candidates_and_choice() {
    let zones = repo_zones();
    let (code, out, err) = run(&[
        "explain",
        WEB,
        "--client",
        "192.0.2.10",
        "--zones",
        zones.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("San Francisco, CA, US"), "{out}");
    assert!(out.contains("decision:  los-angeles (geo policy)"), "{out}");
    let la = out.find("los-angeles").expect("la");
    let hou = out.find("houston").expect("houston");
    let ny = out.rfind("new-york").expect("ny");
    assert!(la < hou && hou < ny, "candidates nearest first:\n{out}");
    assert!(out.contains(&format!("IN A {LA}")), "{out}");
    let (code, out, _) = run(&[
        "explain",
        "nope.gslb.example.com",
        "--client",
        "192.0.2.10",
        "--zones",
        zones.to_str().expect("path"),
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["rcode"], "Non-Existent Domain");
}

#[test]
fn sighup_reloads_and_a_bad_reload_keeps_the_old_state() {
    let dir = zones_with(&[]);
    let zone = dir.path().join("gslb.example.com.zone");
    let s = Server::start(dir.path());
    assert_eq!(
        addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
    let text = std::fs::read_to_string(&zone)
        .expect("zone")
        .replace("static  IN A    192.0.2.10", "static  IN A    192.0.2.11");
    std::fs::write(&zone, &text).expect("write");
    s.signal("HUP");
    wait_for(Duration::from_secs(10), "reloaded answer", || {
        (addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)) == vec!["192.0.2.11"])
            .then_some(())
    });
    // A broken file: the reload is refused, the previous state keeps serving, and it says why.
    std::fs::write(&zone, text.replace("192.0.2.11", "192.0.2.999")).expect("write");
    s.signal("HUP");
    wait_for(Duration::from_secs(10), "failed reload metric", || {
        (metric(
            &s.metrics(),
            "meridian_reloads_total",
            &[("result", "failed")],
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(
        addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.11"]
    );
    assert!(
        s.log_text().contains("gslb.example.com.zone:"),
        "log names the file"
    );
}

#[test]
fn sigterm_exits_cleanly() {
    let mut s = demo();
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn file_changes_reload_without_a_signal() {
    let dir = zones_with(&[]);
    let zone = dir.path().join("gslb.example.com.zone");
    let s = Server::start_with(dir.path(), &["--watch-interval", "100ms"]);
    assert_eq!(
        addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)),
        vec!["192.0.2.10"]
    );
    let text = std::fs::read_to_string(&zone)
        .expect("zone")
        .replace("static  IN A    192.0.2.10", "static  IN A    192.0.2.12");
    let tmp = dir.path().join("zone.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &zone).expect("rename");
    wait_for(Duration::from_secs(10), "reload on file change", || {
        (addrs(&s.q().ask("static.gslb.example.com.", RecordType::A)) == vec!["192.0.2.12"])
            .then_some(())
    });
    assert!(s.log_text().contains("files changed"));
}

#[test]
fn shared_addresses_appear_once_and_chain_fallbacks_are_counted() {
    let shared = r#"apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata:
  name: shared
  namespace: shop
  annotations: {meridian.io/policy: all}
spec: {domainRef: demo}
status:
  dns:
  - {cluster: new-york, region: us-east, zones: [nyc1], loadBalancer: {ingress: [{ip: 198.51.100.77}]}}
  - {cluster: houston, region: us-central, zones: [hou1], loadBalancer: {ingress: [{ip: 198.51.100.77}]}}
  - {cluster: los-angeles, region: us-west, zones: [lax1], loadBalancer: {ingress: [{ip: 198.51.100.78}]}}
"#;
    let dir = zones_with(&[("shared.yaml", shared)]);
    let s = Server::start(dir.path());
    let m = s
        .q()
        .ask("shared.shop.demo.svc.gslb.example.com.", RecordType::A);
    assert_eq!(addrs(&m), vec!["198.51.100.77", "198.51.100.78"]);
    // The zone name has no IPv6 address: CNAME to the region, then the global name (NODATA).
    let m = s.q().ask(
        "web.shop.demo.svc.lax1.us-west.gslb.example.com.",
        RecordType::AAAA,
    );
    assert_eq!(m.answers.len(), 2, "two CNAMEs");
    assert!(
        m.answers
            .iter()
            .all(|r| r.record_type() == RecordType::CNAME)
    );
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert!(metric(&s.metrics(), "meridian_cname_fallback_answers_total", &[]) >= 1.0);
}

#[test]
fn chaos_answers_when_configured() {
    let config = std::fs::read_to_string(repo_zones().join("demo.yaml"))
        .expect("demo.yaml")
        .replace(
            "maxDynamicTTL: 30",
            "maxDynamicTTL: 30\n  versionBind: \"meridian test\"\n  idServer: \"ns-a\"",
        );
    let dir = zones_with(&[("demo.yaml", &config)]);
    let s = Server::start(dir.path());
    let out = dig(s.dns, &["version.bind", "TXT", "CH", "+short"]);
    assert_eq!(out.trim(), "\"meridian test\"");
    let out = dig(s.dns, &["id.server", "TXT", "CH", "+short"]);
    assert_eq!(out.trim(), "\"ns-a\"");
    let out = dig(s.dns, &["other.bind", "TXT", "CH"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}
