//! What an operator reads on day one: which GeoIP database serves and how old it is.

use std::time::Duration;

use crate::common::*;

/// The demo database's metadata build time (tests/data/geoip writes 2024-01-01T00:00:00Z).
const DEMO_BUILD_EPOCH: f64 = 1_704_067_200.0;

#[test]
fn the_geoip_database_and_its_age_are_logged_and_exported() {
    let server = Server::start(&repo_zones());
    let line = wait_for(Duration::from_secs(10), "the GeoIP log line", || {
        server
            .log_text()
            .lines()
            .find(|l| l.contains("GeoIP database loaded"))
            .map(str::to_string)
    });
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert!(
        v["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("demo-geoip.mmdb")),
        "{line}"
    );
    assert_eq!(v["database_type"], "GeoIP2-City", "{line}");
    assert_eq!(v["built"], "2024-01-01T00:00:00Z", "{line}");
    assert!(v["age_days"].as_u64().is_some_and(|d| d > 300), "{line}");
    let m = server.metrics();
    assert_eq!(
        metric(&m, "meridian_geoip_build_timestamp_seconds", &[]),
        DEMO_BUILD_EPOCH
    );
    assert_eq!(
        metric(&m, "meridian_geoip_database", &[("type", "GeoIP2-City")]),
        1.0
    );
}

#[test]
fn running_without_a_geoip_database_says_so() {
    let zones = zones_with(&[]);
    // The demo config names the database; without the file's setting, there is none.
    let cfg = std::fs::read_to_string(zones.path().join("demo.yaml")).expect("demo.yaml");
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.trim_start().starts_with("geoip:"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(zones.path().join("demo.yaml"), cfg).expect("write");
    let server = Server::start(zones.path());
    wait_for(Duration::from_secs(10), "the no-GeoIP warning", || {
        server
            .log_text()
            .contains("no GeoIP database")
            .then_some(())
    });
    let m = server.metrics();
    assert_eq!(
        metric(&m, "meridian_geoip_build_timestamp_seconds", &[]),
        0.0
    );
}
