//! What operators expect on day one: metrics that CoreDNS-style dashboards understand (series at
//! zero from the start, latency and size histograms, per-zone counts, build and process
//! metrics) and a per-replica identity (NSID, CHAOS id.server).

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};

use crate::common::*;

const WEB: &str = "web.shop.demo.svc.gslb.example.com.";
const ZONE: &str = "gslb.example.com.";

/// The whole sample line of a series, as the text exposition writes it.
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn fresh_server_lists_zero_series_then_counts_what_was_sent() {
    let s = Server::start(&repo_zones());
    let text = s.metrics();
    for line in [
        r#"meridian_dns_queries_total{qtype="SRV",rcode="NOERROR",transport="udp"} 0"#,
        r#"meridian_dns_queries_total{qtype="HTTPS",rcode="NXDOMAIN",transport="tcp"} 0"#,
        r#"meridian_dns_queries_total{qtype="DNSKEY",rcode="REFUSED",transport="udp"} 0"#,
        r#"meridian_dns_queries_total{qtype="other",rcode="SERVFAIL",transport="tcp"} 0"#,
        r#"meridian_dns_request_duration_seconds_count{transport="udp"} 0"#,
        r#"meridian_dns_request_duration_seconds_count{transport="tcp"} 0"#,
        r#"meridian_dns_request_duration_seconds_bucket{transport="udp",le="0.000025"} 0"#,
        r#"meridian_dns_response_size_bytes_bucket{transport="tcp",le="511"} 0"#,
        r#"meridian_dns_request_size_bytes_count{transport="udp"} 0"#,
        r#"meridian_dns_zone_queries_total{rcode="NOERROR",zone="gslb.example.com."} 0"#,
        r#"meridian_dns_zone_queries_total{rcode="REFUSED",zone="."} 0"#,
        r#"meridian_dns_truncated_total{transport="tcp"} 0"#,
        r#"meridian_rrl_responses_total{action="dropped"} 0"#,
    ] {
        assert!(has_line(&text, line), "missing {line} in\n{text}");
    }
    assert!(metric(&text, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(metric(&text, "process_virtual_memory_bytes", &[]) > 0.0);
    assert!(metric(&text, "process_open_fds", &[]) > 0.0);
    assert!(metric(&text, "process_max_fds", &[]) >= metric(&text, "process_open_fds", &[]));
    assert!(metric(&text, "process_start_time_seconds", &[]) > 1.6e9);
    assert!(has_line(&text, "# TYPE process_cpu_seconds_total counter"));

    // UDP: 2 A, 1 AAAA, 1 SRV, 1 HTTPS, 1 CAA, 1 PTR in the zone, 1 A outside (REFUSED).
    let udp = [
        (WEB, RecordType::A),
        (WEB, RecordType::A),
        (WEB, RecordType::AAAA),
        ("_sip._udp.gslb.example.com.", RecordType::SRV),
        (WEB, RecordType::HTTPS),
        (ZONE, RecordType::CAA),
        ("nope.gslb.example.com.", RecordType::PTR),
        ("example.org.", RecordType::A),
    ];
    for (name, t) in udp {
        s.q().ask(name, t);
    }
    // TCP: TXT and SOA in the zone.
    s.q().tcp().ask(ZONE, RecordType::TXT);
    s.q().tcp().ask(ZONE, RecordType::SOA);
    // Latency is recorded once the answer is sent, which may be just after the client has it.
    let text = wait_for(Duration::from_secs(10), "latency of every query", || {
        let t = s.metrics();
        let n = |tr| {
            metric(
                &t,
                "meridian_dns_request_duration_seconds_count",
                &[("transport", tr)],
            )
        };
        (n("udp") == 8.0 && n("tcp") == 2.0).then_some(t)
    });
    let q = |tr: &str, qt: &str| {
        metric(
            &text,
            "meridian_dns_queries_total",
            &[("transport", tr), ("qtype", qt)],
        )
    };
    assert_eq!(q("udp", "A"), 3.0);
    for qt in ["AAAA", "SRV", "HTTPS", "CAA", "PTR"] {
        assert_eq!(q("udp", qt), 1.0, "{qt}");
    }
    assert_eq!(q("tcp", "TXT"), 1.0);
    assert_eq!(q("tcp", "SOA"), 1.0);
    assert_eq!(q("udp", "other") + q("tcp", "other"), 0.0);
    assert_eq!(
        metric(
            &text,
            "meridian_dns_queries_total",
            &[("qtype", "PTR"), ("rcode", "NXDOMAIN")]
        ),
        1.0
    );
    // Per zone: everything but the outside query fell in the demo zone.
    assert_eq!(
        metric(&text, "meridian_dns_zone_queries_total", &[("zone", ZONE)]),
        9.0
    );
    assert_eq!(
        metric(
            &text,
            "meridian_dns_zone_queries_total",
            &[("zone", "."), ("rcode", "REFUSED")]
        ),
        1.0
    );
    for h in [
        "meridian_dns_request_size_bytes",
        "meridian_dns_response_size_bytes",
    ] {
        let count = format!("{h}_count");
        let sum = format!("{h}_sum");
        assert_eq!(metric(&text, &count, &[("transport", "udp")]), 8.0, "{h}");
        assert_eq!(metric(&text, &count, &[("transport", "tcp")]), 2.0, "{h}");
        // Every DNS message is more than a header.
        assert!(
            metric(&text, &sum, &[("transport", "udp")]) > 8.0 * 12.0,
            "{h}"
        );
    }
    assert!(
        metric(
            &text,
            "meridian_dns_request_duration_seconds_sum",
            &[("transport", "udp")]
        ) > 0.0
    );
}

#[test]
fn build_info_and_version_name_the_commit() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    let line = out.trim();
    let commit = line
        .strip_prefix("meridian 0.1.0 (commit ")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version output {line:?}"));
    assert!(!commit.is_empty());
    let s = Server::start(&repo_zones());
    let text = s.metrics();
    let info = text
        .lines()
        .find(|l| l.starts_with("meridian_build_info{"))
        .unwrap_or_else(|| panic!("no meridian_build_info in\n{text}"));
    assert!(info.ends_with(" 1"), "{info}");
    assert!(info.contains(&format!("commit=\"{commit}\"")), "{info}");
    assert!(info.contains("version=\"0.1.0\""), "{info}");
    assert!(!info.contains("rustc=\"\""), "{info}");
}

/// A query asking for the NSID (RFC 5001: an empty option), optionally over TCP.
fn ask_nsid(s: &Server, name: &str, t: RecordType, tcp: bool, with_nsid: bool) -> Message {
    let q = if tcp { s.q().tcp() } else { s.q() };
    let mut m = Message::from_vec(&q.packet(name, t)).expect("packet");
    if with_nsid && let Some(e) = m.edns.as_mut() {
        e.options_mut().insert(EdnsOption::NSID(
            NSIDPayload::new(Vec::new()).expect("empty payload"),
        ));
    }
    let raw = q.raw(&m.to_vec().expect("encode")).expect("an answer");
    Message::from_vec(&raw).expect("decodable answer")
}

fn nsid_of(m: &Message) -> Option<String> {
    match m.edns.as_ref()?.options().get(EdnsCode::NSID)? {
        EdnsOption::NSID(p) => Some(String::from_utf8_lossy(p.as_ref()).into_owned()),
        _ => None,
    }
}

#[test]
fn nsid_and_id_server_name_the_replica() {
    let s = Server::start_with(&repo_zones(), &["--nsid", "replica-7"]);
    // dig +nsid prints the option.
    let out = dig(s.dns, &["+nsid", WEB, "A"]);
    assert!(
        out.contains("NSID: ") && out.contains("(\"replica-7\")"),
        "{out}"
    );
    // Over UDP and TCP, only when asked.
    for tcp in [false, true] {
        let m = ask_nsid(&s, WEB, RecordType::A, tcp, true);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(nsid_of(&m).as_deref(), Some("replica-7"), "tcp={tcp}");
        assert!(!m.answers.is_empty());
        let m = ask_nsid(&s, WEB, RecordType::A, tcp, false);
        assert!(m.edns.is_some());
        assert_eq!(nsid_of(&m), None, "tcp={tcp}");
    }
    // Also on negative and refused answers.
    let m = ask_nsid(&s, "example.org.", RecordType::A, false, true);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert_eq!(nsid_of(&m).as_deref(), Some("replica-7"));
    let out = dig(s.dns, &["+nsid", "+noedns", WEB, "A"]);
    assert!(!out.contains("NSID"), "{out}");
    // CHAOS id.server and hostname.bind answer the same identity.
    for name in ["id.server", "hostname.bind"] {
        let out = dig(s.dns, &["CH", "TXT", name, "+short"]);
        assert_eq!(out.trim(), "\"replica-7\"", "{name}");
    }
}

#[test]
fn identity_defaults_to_the_pod_or_host_name_and_can_be_hidden() {
    let expected = std::env::var("POD_NAME")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .expect("hostname")
                .trim()
                .to_string()
        });
    let s = Server::start(&repo_zones());
    let out = dig(s.dns, &["CH", "TXT", "id.server", "+short"]);
    assert_eq!(out.trim(), format!("\"{expected}\""));
    let m = ask_nsid(&s, WEB, RecordType::A, false, true);
    assert_eq!(nsid_of(&m), Some(expected));
    drop(s);

    // identity: false hides it; a configured idServer is still answered.
    let config = std::fs::read_to_string(repo_zones().join("demo.yaml"))
        .expect("demo.yaml")
        .replace("maxDynamicTTL: 30", "maxDynamicTTL: 30\n  identity: false");
    let dir = zones_with(&[("demo.yaml", &config)]);
    let s = Server::start(dir.path());
    let out = dig(s.dns, &["+nsid", WEB, "A"]);
    assert!(!out.contains("NSID"), "{out}");
    let out = dig(s.dns, &["CH", "TXT", "id.server"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    drop(s);
    let config = config.replace("identity: false", "identity: false\n  idServer: ns-a");
    let dir = zones_with(&[("demo.yaml", &config)]);
    let s = Server::start(dir.path());
    let out = dig(s.dns, &["CH", "TXT", "id.server", "+short"]);
    assert_eq!(out.trim(), "\"ns-a\"");
}
