//! Issue 12, part 1, file mode: without Kubernetes a drain lives in the process and in
//! `.meridian-drains.json` in the zones directory, so a restart does not forget it.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::common::{Server, addrs, run, wait_for, zones_with};

const SAN_FRANCISCO: &str = "192.0.2.0";
const NAME: &str = "drill.hc.demo.svc.gslb.example.com.";
const LA: &str = "127.0.0.61";
const HOUSTON: &str = "127.0.0.62";

/// Two clusters, unprobed: only drains change the answers.
fn record() -> String {
    let mut y = "---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
                 metadata:\n  name: drill\n  namespace: hc\n  annotations:\n    \
                 meridian.io/probe: \"none\"\nspec:\n  domainRef: demo\n  recordTTL: 60\n\
                 status:\n  dns:\n"
        .to_string();
    for (cluster, region, ip) in [
        ("los-angeles", "us-west", LA),
        ("houston", "us-central", HOUSTON),
    ] {
        y.push_str(&format!(
            "  - cluster: {cluster}\n    region: {region}\n    loadBalancer:\n      ingress:\n      - ip: {ip}\n"
        ));
    }
    y
}

fn wait_answer(s: &Server, want: &str) {
    let mut last = Vec::new();
    wait_for(
        Duration::from_secs(20),
        &format!("{NAME} -> {want}"),
        || {
            last = addrs(&s.q().ecs(SAN_FRANCISCO, 24).ask(NAME, RecordType::A));
            (last == [want]).then_some(())
        },
    );
}

fn state(s: &Server) -> serde_json::Value {
    let (code, body) = s.http("GET", "/api/v1/state");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("state JSON")
}

#[test]
fn file_mode_drains_survive_a_restart_and_expired_ones_are_dropped() {
    let dir = zones_with(&[("drill.yaml", &record())]);
    let file = dir.path().join(".meridian-drains.json");
    let mut s = Server::start(dir.path());
    wait_answer(&s, LA);
    assert!(!file.exists(), "no drains file while nothing is drained");

    let admin = format!("http://{}", s.admin);
    let (code, out, err) = run(&[
        "drain",
        "los-angeles",
        "--for",
        "10m",
        "--reason",
        "drill",
        "--who",
        "ops@test",
        "--admin",
        &admin,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    wait_answer(&s, HOUSTON);
    let st = state(&s);
    assert_eq!(
        st["drains"]["los-angeles"]["requestedBy"], "ops@test",
        "{st}"
    );
    assert!(
        s.log_text().contains("\"requested_by\":\"ops@test\""),
        "the drain's log line names who"
    );
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("drains file")).expect("JSON");
    assert_eq!(kept["drains"]["los-angeles"]["reason"], "drill", "{kept}");

    // Restart over the same zones directory: the drain still applies, with who and why.
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    drop(s);
    let s = Server::start(dir.path());
    wait_answer(&s, HOUSTON);
    let st = state(&s);
    assert_eq!(st["drains"]["los-angeles"]["reason"], "drill", "{st}");
    assert_eq!(st["drains"]["los-angeles"]["requestedBy"], "ops@test");
    assert!(s.log_text().contains("drain restored"));

    // Undrained: the file says so too, and the next start has no drain.
    let (code, out, err) = run(&[
        "undrain",
        "los-angeles",
        "--admin",
        &format!("http://{}", s.admin),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    wait_answer(&s, LA);
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("drains file")).expect("JSON");
    assert!(kept["drains"]["los-angeles"].is_null(), "{kept}");
    drop(s);

    // An expired drain in the file is dropped at start; a live one applies.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    std::fs::write(
        &file,
        serde_json::json!({"drains": {
            "los-angeles": {"since": now - 7200.0, "until": now - 3600.0, "reason": "old"},
            "houston": {"since": now, "until": now + 600.0, "reason": "live"},
        }})
        .to_string(),
    )
    .expect("write");
    let s = Server::start(dir.path());
    wait_answer(&s, LA);
    let st = state(&s);
    assert!(st["drains"]["los-angeles"].is_null(), "{st}");
    assert_eq!(st["drains"]["houston"]["reason"], "live");
    drop(s);

    // A corrupt file is reported and ignored: the server starts and serves.
    std::fs::write(&file, "{ not json").expect("write");
    let s = Server::start(dir.path());
    wait_answer(&s, LA);
    assert!(s.log_text().contains("drains file is corrupt"));
    assert!(
        crate::common::metric(
            &s.metrics(),
            "meridian_drain_errors_total",
            &[("source", "file")]
        ) >= 1.0
    );
}

#[test]
fn file_mode_drains_without_a_writable_file_stay_in_the_process() {
    let dir = zones_with(&[("drill.yaml", &record())]);
    let s = Server::start_with(
        dir.path(),
        &["--drains-file", "/nonexistent-meridian-dir/drains.json"],
    );
    wait_answer(&s, LA);
    let admin = format!("http://{}", s.admin);
    for cluster in ["los-angeles", "houston"] {
        let (code, out, err) = run(&["drain", cluster, "--for", "10m", "--admin", &admin]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = run(&["undrain", "houston", "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    // The drain applies all the same; the failure is said once, not on every change.
    wait_answer(&s, HOUSTON);
    let warnings = s
        .log_text()
        .lines()
        .filter(|l| l.contains("cannot write the drains file"))
        .count();
    assert_eq!(warnings, 1, "{}", s.log_text());
}

/// The same two clusters for a second record, `hc/other`.
fn other_record() -> String {
    record()
        .replace("name: drill", "name: other")
        .replace("127.0.0.61", "127.0.0.63")
        .replace("127.0.0.62", "127.0.0.64")
}

const OTHER: &str = "other.hc.demo.svc.gslb.example.com.";

fn answer_of(s: &Server, name: &str) -> Vec<String> {
    addrs(&s.q().ecs(SAN_FRANCISCO, 24).ask(name, RecordType::A))
}

#[test]
fn a_drain_scoped_to_a_record_takes_the_cluster_out_of_that_record_only() {
    let dir = zones_with(&[("drill.yaml", &record()), ("other.yaml", &other_record())]);
    let mut s = Server::start(dir.path());
    wait_answer(&s, LA);
    assert_eq!(answer_of(&s, OTHER), ["127.0.0.63"]);
    let admin = format!("http://{}", s.admin);

    // A malformed scope is refused, naming the entry; nothing is drained.
    let (code, out, err) = run(&[
        "drain",
        "los-angeles",
        "--record",
        "drill",
        "--admin",
        &admin,
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("records[0]") && err.contains("namespace/name"),
        "{err}"
    );
    assert!(
        state(&s)["drains"]
            .as_object()
            .is_some_and(|d| d.is_empty())
    );

    let (code, out, err) = run(&[
        "drain",
        "los-angeles",
        "--record",
        "hc/drill",
        "--for",
        "10m",
        "--reason",
        "canary",
        "--admin",
        &admin,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("for hc/drill"), "{out}");
    wait_answer(&s, HOUSTON);
    // The other record still answers from the drained cluster, which is not drained as a whole.
    assert_eq!(answer_of(&s, OTHER), ["127.0.0.63"]);
    let st = state(&s);
    let d = &st["drains"]["los-angeles [hc/drill]"];
    assert_eq!(d["cluster"], "los-angeles", "{st}");
    assert_eq!(d["records"], serde_json::json!(["hc/drill"]));
    assert_eq!(d["reason"], "canary");
    assert!(st["drains"]["los-angeles"].is_null(), "{st}");
    let la = st["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "los-angeles"))
        .cloned()
        .expect("cluster in state");
    assert_eq!(la["drained"], false, "{la}");
    assert_eq!(
        crate::common::metric(
            &s.metrics(),
            "meridian_drained",
            &[("cluster", "los-angeles")]
        ),
        0.0,
        "the gauge counts whole-cluster drains"
    );
    // explain shows the scoped drain on that record's candidate.
    let (code, body) = s.http(
        "GET",
        &format!("/api/v1/explain?name={NAME}&client={SAN_FRANCISCO}"),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"drained\":true"), "{body}");

    // Kept across a restart, scope and all.
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    drop(s);
    let s = Server::start(dir.path());
    wait_answer(&s, HOUSTON);
    assert_eq!(answer_of(&s, OTHER), ["127.0.0.63"]);

    // A whole-cluster drain beside it, then undrain of the scoped one only.
    let admin = format!("http://{}", s.admin);
    let (code, out, err) = run(&["drain", "los-angeles", "--for", "10m", "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(Duration::from_secs(5), "other fails over", || {
        (answer_of(&s, OTHER) == ["127.0.0.64"]).then_some(())
    });
    let (code, out, err) = run(&[
        "undrain",
        "los-angeles",
        "--record",
        "hc/drill",
        "--admin",
        &admin,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let st = state(&s);
    assert!(st["drains"]["los-angeles [hc/drill]"].is_null(), "{st}");
    assert!(!st["drains"]["los-angeles"].is_null(), "{st}");
    // Undrain of the cluster ends the rest.
    let (code, out, err) = run(&["undrain", "los-angeles", "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    wait_answer(&s, LA);
    assert_eq!(answer_of(&s, OTHER), ["127.0.0.63"]);
}
