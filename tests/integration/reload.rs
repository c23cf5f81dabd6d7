//! Reloads that must not hang or mislead: `$INCLUDE` of a FIFO or of a file outside the zones
//! directory, included files edited, deep YAML, reloads past their deadline, corrupt GeoIP
//! databases.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::common::*;

const ZONE: &str = "gslb.example.com.zone";

/// `zones_with`, with `$INCLUDE <include>` appended to the demo zone file; returns the
/// directory and the directive's line.
fn zones_including(include: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, usize) {
    let dir = zones_with(files);
    let zone = dir.path().join(ZONE);
    let mut text = std::fs::read_to_string(&zone).expect("zone");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let line = text.lines().count() + 1;
    text.push_str(&format!("$INCLUDE {include}\n"));
    std::fs::write(&zone, text).expect("write");
    (dir, line)
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(ok.success());
}

fn failed_reloads(s: &Server) -> f64 {
    metric(
        &s.metrics(),
        "meridian_reloads_total",
        &[("result", "failed")],
    )
}

fn a(s: &Server, name: &str) -> Vec<String> {
    addrs(&s.q().ask(name, RecordType::A))
}

#[test]
fn an_included_fifo_fails_the_reload_and_sigterm_still_exits() {
    let (dir, line) = zones_including("extra.inc", &[("extra.inc", "extra IN A 192.0.2.77\n")]);
    let mut s = Server::start(dir.path());
    assert_eq!(a(&s, "extra.gslb.example.com."), vec!["192.0.2.77"]);
    // Before: reading the FIFO blocked the reload, inside the signal loop, for ever.
    let inc = dir.path().join("extra.inc");
    std::fs::remove_file(&inc).expect("remove");
    mkfifo(&inc);
    s.signal("HUP");
    wait_for(Duration::from_secs(20), "the failed reload", || {
        (failed_reloads(&s) >= 1.0).then_some(())
    });
    assert_eq!(a(&s, "extra.gslb.example.com."), vec!["192.0.2.77"]);
    assert_eq!(a(&s, "static.gslb.example.com."), vec!["192.0.2.10"]);
    let logs = s.log_text();
    assert!(
        logs.contains(&format!("{ZONE}:{line}: $INCLUDE extra.inc: "))
            && logs.contains("not a regular file (a FIFO)"),
        "{logs}"
    );
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn check_refuses_an_include_outside_the_zones_directory() {
    let outer = tempfile::tempdir().expect("tempdir");
    std::fs::write(outer.path().join("outside.zone"), "x IN A 192.0.2.9\n").expect("write");
    let (dir, line) = zones_including("../outside.zone", &[]);
    let zones = outer.path().join("zones");
    std::fs::rename(dir.path(), &zones).expect("move the zones under outer");
    let (code, _, err) = run(&["check", "--zones", zones.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{ZONE}:{line}: $INCLUDE ../outside.zone: "))
            && err.contains("outside the zones directory"),
        "{err}"
    );
}

#[test]
fn an_edited_include_is_reloaded() {
    let (dir, _) = zones_including("sub/extra.inc", &[]);
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let inc = dir.path().join("sub/extra.inc");
    std::fs::write(&inc, "extra IN A 192.0.2.77\n").expect("write");
    let s = Server::start_with(dir.path(), &["--watch-interval", "100ms"]);
    assert_eq!(a(&s, "extra.gslb.example.com."), vec!["192.0.2.77"]);
    let tmp = dir.path().join("sub/extra.tmp");
    std::fs::write(&tmp, "extra IN A 192.0.2.78\n").expect("write");
    std::fs::rename(&tmp, &inc).expect("rename");
    wait_for(
        Duration::from_secs(20),
        "the included file reloaded",
        || (a(&s, "extra.gslb.example.com.") == vec!["192.0.2.78"]).then_some(()),
    );
}

#[test]
fn deep_yaml_is_refused_with_a_clear_error() {
    let deep = format!("a: 1\nb: {}\n", "[".repeat(100_000));
    let dir = zones_with(&[("deep.yaml", &deep)]);
    let (code, _, err) = run(&["check", "--zones", dir.path().to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("deep.yaml:2: invalid YAML: nested deeper than 128 levels"),
        "{err}"
    );
}

#[test]
fn a_reload_past_its_deadline_is_abandoned_and_signals_are_not_kept_waiting() {
    let dir = zones_with(&[]);
    let mut s = Server::start_with(
        dir.path(),
        &["--reload-timeout", "1ms", "--watch-interval", "0"],
    );
    // Megabytes of YAML take far longer than 1 ms to parse.
    let mut big = String::from("kind: Bulk\nitems: [");
    big.push_str(&"1,".repeat(3_000_000));
    big.push_str("1]\n");
    std::fs::write(dir.path().join("big.yaml"), big).expect("write");
    s.signal("HUP");
    wait_for(Duration::from_secs(20), "the abandoned reload", || {
        (failed_reloads(&s) >= 1.0).then_some(())
    });
    assert!(
        s.log_text()
            .contains("reload abandoned: not finished within"),
        "{}",
        s.log_text()
    );
    assert_eq!(a(&s, "static.gslb.example.com."), vec!["192.0.2.10"]);
    // The abandoned reload's thread is still parsing; neither SIGHUP nor SIGTERM waits for it.
    s.signal("HUP");
    wait_for(Duration::from_secs(20), "the second failed reload", || {
        (failed_reloads(&s) >= 2.0).then_some(())
    });
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
}

/// A copy of the demo GeoIP database whose data section is overwritten: the file opens (its
/// metadata and search tree are intact) but no record decodes.
fn corrupt_demo_geoip() -> Vec<u8> {
    let mut buf = std::fs::read(repo_zones().join("demo-geoip.mmdb")).expect("demo mmdb");
    let r = maxminddb::Reader::from_source(buf.clone()).expect("demo mmdb");
    let m = r.metadata();
    let data = m.node_count as usize * m.record_size as usize / 4 + 16;
    let marker = b"\xab\xcd\xefMaxMind.com";
    let meta = buf
        .windows(marker.len())
        .rposition(|w| w == marker)
        .expect("metadata marker");
    buf[data..meta].fill(0xFF);
    buf
}

const WEB: &str = "web.shop.demo.svc.gslb.example.com.";

/// An answer's addresses and ECS (source, scope) prefix lengths.
type Answer = (Vec<String>, Option<(u8, u8)>);

/// The web name's answer and ECS scope for clients of each demo GeoIP region.
fn geo_answers(s: &Server) -> Vec<Answer> {
    [
        "192.0.2.0",
        "192.0.2.128",
        "198.51.100.0",
        "203.0.113.0",
        "203.0.113.128",
    ]
    .iter()
    .map(|net| {
        let m = s.q().ecs(net, 24).ask(WEB, RecordType::A);
        (addrs(&m), ecs_of(&m))
    })
    .collect()
}

#[test]
fn serve_refuses_a_corrupt_geoip_database() {
    let dir = zones_with(&[]);
    std::fs::write(dir.path().join("demo-geoip.mmdb"), corrupt_demo_geoip()).expect("write");
    let logs = match Server::try_start(dir.path(), &[]) {
        Ok(_) => panic!("served a corrupt GeoIP database"),
        Err(logs) => logs,
    };
    assert!(
        logs.contains("demo-geoip.mmdb: corrupt GeoIP database"),
        "{logs}"
    );
}

#[test]
fn a_reload_to_a_corrupt_geoip_database_keeps_the_old_answers() {
    let dir = zones_with(&[]);
    let s = Server::start(dir.path());
    let before = geo_answers(&s);
    let tmp = dir.path().join("geo.tmp");
    std::fs::write(&tmp, corrupt_demo_geoip()).expect("write");
    std::fs::rename(&tmp, dir.path().join("demo-geoip.mmdb")).expect("rename");
    s.signal("HUP");
    wait_for(Duration::from_secs(20), "the failed reload", || {
        (failed_reloads(&s) >= 1.0).then_some(())
    });
    assert_eq!(geo_answers(&s), before);
    assert!(
        s.log_text()
            .contains("demo-geoip.mmdb: corrupt GeoIP database"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        metric(&s.metrics(), "meridian_geoip_lookup_errors_total", &[]),
        0.0
    );
}

#[test]
fn a_sighup_during_a_reload_is_folded_into_one_more_reload() {
    let dir = zones_with(&[]);
    let s = Server::start_with(dir.path(), &["--watch-interval", "0"]);
    // Megabytes of YAML: the first reload is still parsing when the second SIGHUP arrives.
    let mut big = String::from("kind: Bulk\nitems: [");
    big.push_str(&"1,".repeat(400_000));
    big.push_str("1]\n");
    std::fs::write(dir.path().join("big.yaml"), big).expect("write");
    s.signal("HUP");
    s.signal("HUP");
    s.signal("HUP");
    wait_for(Duration::from_secs(120), "two reloads", || {
        (failed_reloads(&s) >= 2.0).then_some(())
    });
    assert!(
        s.log_text()
            .contains("SIGHUP during a reload: another reload follows it"),
        "{}",
        s.log_text()
    );
    assert_eq!(a(&s, "static.gslb.example.com."), vec!["192.0.2.10"]);
}
