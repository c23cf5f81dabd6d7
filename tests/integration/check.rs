//! `meridian check` and start-up refusals on crafted zone directories (issue 11): typos, huge
//! durations, CNAME loops, duplicate endpoints, a missing GeoIP file, admin tokens; and the
//! admin API's drain bounds.

use std::time::Duration;

use crate::common::*;

fn check(dir: &std::path::Path) -> (i32, String, String) {
    run(&["check", "--zones", dir.to_str().expect("path")])
}

/// Lines of `err` that start with `error: `, without the prefix and the directory.
fn errors(err: &str, dir: &std::path::Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    err.lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .map(|l| l.replace(&prefix, ""))
        .collect()
}

const HUGE: &str = "apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata:
  name: huge
  namespace: shop
  annotations:
    meridian.io/probe: http
    meridian.io/probe-interval: \"99999999999999999999h\"
spec:
  domainRef: demo
";

#[test]
fn a_huge_probe_interval_is_an_error_naming_file_object_and_field_not_a_crash() {
    let dir = zones_with(&[("huge.yaml", HUGE)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    let errs = errors(&err, dir.path());
    assert_eq!(errs.len(), 1, "{err}");
    assert!(
        errs[0].starts_with(
            "huge.yaml:8 (ServiceDNSRecord shop/huge): metadata.annotations[\"meridian.io/probe-interval\"]: invalid duration \"99999999999999999999h\""
        ),
        "{err}"
    );
    // serve refuses to start the same way, and exits 1 rather than panicking.
    let mut cmd = std::process::Command::new(BIN);
    let out = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--zones",
        ])
        .arg(dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("probe-interval"));
}

#[test]
fn configuration_errors_name_the_line_of_their_field() {
    let demo = std::fs::read_to_string(repo_zones().join("demo.yaml")).expect("demo.yaml");
    for (from, to, want) in [
        (
            "interval: 2s",
            "interval: 99999999999999999999h",
            "demo.yaml:16: spec.health.interval: invalid duration",
        ),
        (
            "timeout: 1s",
            "timeout: 2h",
            "demo.yaml:17: spec.health.timeout: duration \"2h\" is longer than the maximum 1m",
        ),
        (
            "maxDynamicTTL: 30",
            "maxDynamicTL: 30",
            "demo.yaml:14 (MeridianConfig meridian): spec.maxDynamicTL: unknown field `maxDynamicTL`",
        ),
        (
            "kind: MeridianConfig\nmetadata:",
            "kind: MeridianConfig\nmetdata:",
            "demo.yaml:10 (MeridianConfig): metdata: unknown field",
        ),
    ] {
        assert!(demo.contains(from), "{from}");
        let dir = zones_with(&[("demo.yaml", &demo.replacen(from, to, 1))]);
        let (code, out, err) = check(dir.path());
        assert_eq!(code, 1, "{out}{err}");
        let errs = errors(&err, dir.path());
        assert!(errs.iter().any(|e| e.starts_with(want)), "{want}:\n{err}");
    }
}

#[test]
fn a_huge_probe_interval_in_a_reload_is_rejected_and_the_server_keeps_serving() {
    let dir = zones_with(&[]);
    let s = Server::start_with(dir.path(), &["--watch-interval", "100ms"]);
    std::fs::write(dir.path().join("huge.yaml"), HUGE).expect("write");
    s.signal("HUP");
    wait_for(Duration::from_secs(30), "the reload to be rejected", || {
        let logs = s.log_text();
        (logs.contains("reload rejected") && logs.contains("probe-interval")).then_some(())
    });
    assert_eq!(s.http("GET", "/healthz").0, 200);
    let m = s
        .q()
        .ask("static.gslb.example.com.", hickory_proto::rr::RecordType::A);
    assert_eq!(addrs(&m), ["192.0.2.10"]);
    assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
}

#[test]
fn duration_flags_are_checked_by_the_command_line_parser() {
    for args in [
        &["drain", "x", "--for", "99999999999999999999h"][..],
        &["drain", "x", "--for", "0.0001ms"],
        &["drain", "x", "--for", "8760h"],
        &["serve", "--tcp-idle-timeout", "4000000000000000h"],
        &["serve", "--watch-interval", "2 seconds"],
        &["serve", "--member-offline-after", "99999h"],
        &["serve", "--lease-duration", "1.5s"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let flag = args.iter().find(|a| a.starts_with("--")).expect("flag");
        assert!(
            err.contains(&format!(
                "invalid value '{}' for '{flag}",
                args[args.len() - 1]
            )),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn admin_drain_with_a_huge_or_tiny_duration_is_a_400_and_the_server_stays_up() {
    let s = Server::start(&repo_zones());
    for (d, want) in [
        ("4000000000000000h", "invalid duration"),
        ("99999999999999999999h", "invalid duration"),
        ("1000000000000h", "longer than the maximum 168h"),
        ("169h", "longer than the maximum 168h"),
        ("0.0001ms", "shorter than the minimum 1s"),
        ("0", "shorter than the minimum 1s"),
    ] {
        let (code, body) = s.http("POST", &format!("/api/v1/clusters/houston/drain?for={d}"));
        assert_eq!(code, 400, "{d}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        let msg = v["error"].as_str().expect("error message");
        assert!(msg.starts_with("for: ") && msg.contains(want), "{d}: {msg}");
    }
    assert_eq!(s.http("GET", "/healthz").0, 200);
    let (code, body) = s.http("POST", "/api/v1/clusters/houston/drain?for=168h");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["for"], "168h");
    assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
}

#[test]
fn typos_are_errors_every_one_in_file_order_at_its_line() {
    let text = "apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata:
  name: typo
  namespace: shop
  annotations:
    meridian.io/probe-pth: /healthz
spec:
  domainRef: demo
  dnsPrefx: www2
";
    let dir = zones_with(&[("typo.yaml", text)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    let errs = errors(&err, dir.path());
    assert_eq!(errs.len(), 2, "{err}");
    assert!(
        errs[0].starts_with(
            "typo.yaml:7 (ServiceDNSRecord shop/typo): metadata.annotations[\"meridian.io/probe-pth\"]: unknown annotation (expected one of meridian.io/policy,"
        ),
        "{err}"
    );
    assert!(
        errs[1].starts_with(
            "typo.yaml:10 (ServiceDNSRecord shop/typo): spec.dnsPrefx: unknown field (expected domainRef, recordTTL, dnsPrefix,"
        ),
        "{err}"
    );
    assert!(
        err.ends_with(&format!("2 error(s) in {}\n", dir.path().display())),
        "{err}"
    );
}

#[test]
fn every_error_of_a_record_found_while_building_is_reported_at_its_line() {
    let text = "apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata:
  name: two
  namespace: shop
  annotations:
    meridian.io/policy: closest
spec:
  domainRef: demo
  dnsPrefx: www2
status:
  dns:
  - cluster: houston
    loadBalancer:
      ingress:
      - ip: 192.0.2.300
  - cluster: new-york
    region: \"us east\"
";
    let dir = zones_with(&[("two.yaml", text)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    let errs = errors(&err, dir.path());
    let want = [
        "two.yaml:7 (ServiceDNSRecord shop/two): metadata.annotations[\"meridian.io/policy\"]: unknown policy",
        "two.yaml:10 (ServiceDNSRecord shop/two): spec.dnsPrefx: unknown field",
        "two.yaml:16 (ServiceDNSRecord shop/two): status.dns[0].loadBalancer.ingress[0].ip: \"192.0.2.300\" is not an IP address",
        "two.yaml:18 (ServiceDNSRecord shop/two): status.dns[1].region: \"us east\" is not a DNS label",
    ];
    assert_eq!(errs.len(), want.len(), "{err}");
    for (e, w) in errs.iter().zip(want) {
        assert!(e.starts_with(w), "{w}\n{err}");
    }
}

#[test]
fn external_dns_fields_of_a_dns_endpoint_are_accepted() {
    let text = "apiVersion: externaldns.k8s.io/v1alpha1
kind: DNSEndpoint
metadata: {name: ext, namespace: shop}
spec:
  endpoints:
  - dnsName: ext.gslb.example.com
    recordType: A
    targets: [192.0.2.77]
    setIdentifier: eu
    labels: {owner: external-dns}
    providerSpecific:
    - {name: aws/weight, value: \"10\"}
";
    let dir = zones_with(&[("ext.yaml", text)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_missing_geoip_file_is_reported_as_such() {
    let (code, out, err) = run(&[
        "check",
        "--zones",
        repo_zones().to_str().expect("path"),
        "--geoip",
        "/nonexistent/meridian-test.mmdb",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err,
        "error: --geoip: GeoIP database /nonexistent/meridian-test.mmdb does not exist\n\
         the GeoIP database cannot be used\n"
    );
    let dir = zones_with(&[]);
    let demo = std::fs::read_to_string(dir.path().join("demo.yaml")).expect("demo.yaml");
    std::fs::write(
        dir.path().join("demo.yaml"),
        demo.replace("geoip: demo-geoip.mmdb", "geoip: gone.mmdb"),
    )
    .expect("write");
    let Err(logs) = Server::try_start(dir.path(), &[]) else {
        panic!("serve started without its GeoIP database")
    };
    assert!(
        logs.contains("demo.yaml:8: spec.geoip: GeoIP database"),
        "{logs}"
    );
    assert!(logs.contains("gone.mmdb does not exist"), "{logs}");
    assert!(logs.contains("the GeoIP database cannot be used"), "{logs}");
    assert!(!logs.contains("error(s)"), "{logs}");
}

#[test]
fn a_cname_loop_across_a_zone_file_and_a_dns_endpoint_is_reported() {
    let zone = std::fs::read_to_string(repo_zones().join("gslb.example.com.zone")).expect("zone");
    let text = "apiVersion: externaldns.k8s.io/v1alpha1
kind: DNSEndpoint
metadata: {name: loop, namespace: shop}
spec:
  endpoints:
  - dnsName: loopx.gslb.example.com
    recordType: CNAME
    targets: [loopy.gslb.example.com]
";
    let dir = zones_with(&[
        ("loop.yaml", text),
        (
            "gslb.example.com.zone",
            &format!("{zone}loopy IN CNAME loopx.gslb.example.com.\n"),
        ),
    ]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        errors(&err, dir.path()),
        [
            "loop.yaml:1 (DNSEndpoint shop/loop): CNAME loop: loopx.gslb.example.com. \
          (loop.yaml:1 (DNSEndpoint shop/loop)) -> loopy.gslb.example.com. \
          (gslb.example.com.zone) -> loopx.gslb.example.com."
        ],
        "{err}"
    );
}

#[test]
fn a_second_cname_at_a_name_is_reported() {
    // `www` is already the demo record's dnsPrefix alias.
    let text = "apiVersion: externaldns.k8s.io/v1alpha1
kind: DNSEndpoint
metadata: {name: www, namespace: shop}
spec:
  endpoints:
  - dnsName: www.gslb.example.com
    recordType: CNAME
    targets: [docs.gslb.example.com]
";
    let dir = zones_with(&[("www.yaml", text)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        errors(&err, dir.path()),
        ["records: www.gslb.example.com.: more than one CNAME"],
        "{err}"
    );
}

#[test]
fn a_name_defined_by_two_dns_endpoints_is_reported() {
    let text = "apiVersion: externaldns.k8s.io/v1alpha1
kind: DNSEndpoint
metadata: {name: one, namespace: shop}
spec:
  endpoints:
  - {dnsName: twice.gslb.example.com, recordType: A, targets: [192.0.2.1]}
---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: DNSEndpoint
metadata: {name: two, namespace: shop}
spec:
  endpoints:
  - {dnsName: twice.gslb.example.com, recordType: A, targets: [192.0.2.2]}
";
    let dir = zones_with(&[("dup.yaml", text)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        errors(&err, dir.path()),
        [
            "dup.yaml:13 (DNSEndpoint shop/two): spec.endpoints[0]: twice.gslb.example.com. A is \
          already defined by dup.yaml:1 (DNSEndpoint shop/one)"
        ],
        "{err}"
    );
}

#[test]
fn an_empty_admin_token_is_refused_before_anything_binds() {
    // A zones directory that does not exist: the refusal must come first, before loading (and
    // so before binding anything).
    for (extra, want) in [
        (
            &["--admin-token", ""][..],
            "--admin-token (or MERIDIAN_ADMIN_TOKEN) is empty",
        ),
        (&[][..], "--admin 0.0.0.0:0 is not a loopback address"),
    ] {
        let out = std::process::Command::new(BIN)
            .args([
                "serve",
                "--zones",
                "/nonexistent/zones",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--admin", "0.0.0.0:0"])
            .args(extra)
            .env_remove("MERIDIAN_ADMIN_TOKEN")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("zones"), "refused after loading: {err}");
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let s = Server::start_with(&repo_zones(), &["--admin-token", "s3cret-token"]);
    let client = reqwest::blocking::Client::new();
    let status = |auth: Option<&str>| {
        let mut req = client.get(format!("http://{}/api/v1/state", s.admin));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().expect("request").status().as_u16()
    };
    assert_eq!(status(Some("Bearer s3cret-token")), 200);
    assert_eq!(status(Some("bearer s3cret-token")), 200);
    assert_eq!(status(Some("BEARER s3cret-token")), 200);
    assert_eq!(status(Some("Bearer s3cret-toke")), 401);
    assert_eq!(status(Some("Bearer s3cret-token-and-more")), 401);
    assert_eq!(status(Some("Bearer ")), 401);
    assert_eq!(status(Some("Basic s3cret-token")), 401);
    assert_eq!(status(None), 401);
}

#[test]
fn every_error_of_an_ingress_record_and_a_dns_endpoint_is_reported() {
    let text = "apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: IngressDNSRecord
metadata: {name: shop, namespace: shop}
spec:
  hosts:
  - elsewhere.example.org
  - bad..name.gslb.example.com
status:
  dns:
  - cluster: new-york
    loadBalancer: {ingress: [{ip: 999.0.0.1}]}
---
apiVersion: externaldns.k8s.io/v1alpha1
kind: DNSEndpoint
metadata: {name: many, namespace: shop}
spec:
  endpoints:
  - {dnsName: outside.example.org, recordType: A, targets: [192.0.2.1]}
  - {dnsName: fine.gslb.example.com, recordType: BOGUS, targets: [192.0.2.2]}
  - {dnsName: empty.gslb.example.com, recordType: A, targets: []}
  - {dnsName: badip.gslb.example.com, recordType: A, targets: [192.0.2.3, not-an-ip]}
";
    let dir = zones_with(&[("many.yaml", text)]);
    let (code, out, err) = check(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    let errs = errors(&err, dir.path());
    let ingress: Vec<&String> = errs
        .iter()
        .filter(|e| e.contains("IngressDNSRecord"))
        .collect();
    let endpoint: Vec<&String> = errs.iter().filter(|e| e.contains("DNSEndpoint")).collect();
    assert_eq!(ingress.len(), 3, "status address and both hosts: {errs:#?}");
    assert!(
        ingress.iter().any(|e| e.contains("status.dns[0]")),
        "{errs:#?}"
    );
    assert!(
        ingress
            .iter()
            .any(|e| e.contains("spec.hosts[0]") && e.contains("outside")),
        "{errs:#?}"
    );
    assert!(
        ingress.iter().any(|e| e.contains("spec.hosts[1]")),
        "{errs:#?}"
    );
    assert_eq!(endpoint.len(), 4, "one per bad endpoint: {errs:#?}");
    for (i, what) in [
        (0, "dnsName"),
        (1, "recordType"),
        (2, "targets"),
        (3, "targets[1]"),
    ] {
        assert!(
            endpoint
                .iter()
                .any(|e| e.contains(&format!("spec.endpoints[{i}].{what}"))),
            "endpoint {i} {what}: {errs:#?}"
        );
    }
}
