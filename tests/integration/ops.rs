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

/// Runs meridian with extra environment variables.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run meridian");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn state_is_a_table_for_people_and_json_for_machines_at_addr_port_or_url() {
    let server = Server::start(&repo_zones());
    let bare = server.admin.to_string();
    let url = format!("http://{}/", server.admin);
    let (code, out, err) = run(&[
        "drain", "houston", "--for", "10m", "--reason", "day one", "--admin", &bare,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("drained houston until 20") && out.trim_end().ends_with(": day one"),
        "a line for people: {out}"
    );
    for admin in [&bare, &url] {
        let (code, out, err) = run(&["state", "--admin", admin]);
        assert_eq!(code, 0, "{err}");
        let header = out.lines().find(|l| l.starts_with("CLUSTER")).expect(&out);
        assert!(
            header.contains("HEALTH") && header.contains("DRAINED"),
            "{out}"
        );
        let hou = out.lines().find(|l| l.starts_with("houston ")).expect(&out);
        // RFC 3339, not Unix seconds.
        assert!(
            hou.contains("until 20") && hou.contains('T') && hou.contains('Z'),
            "{hou}"
        );
        assert!(out.contains("day one"), "{out}");
        assert!(
            !out.trim_start().starts_with('{'),
            "not JSON by default: {out}"
        );
    }
    let (code, out, _) = run(&["state", "--json", "--admin", &bare]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["drains"]["houston"]["reason"], "day one");
    // The environment names the server as well as the flag does.
    let (code, out, err) = run_env(&["undrain", "houston"], &[("MERIDIAN_ADMIN", &bare)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "undrained houston");
    let (code, _, err) = run(&["state", "--admin", "ftp://nowhere"]);
    assert_ne!(code, 0);
    assert!(err.contains("ADDR:PORT"), "{err}");
}

#[test]
fn flags_come_from_meridian_environment_variables_too() {
    let bad = tempfile::tempdir().expect("tempdir");
    std::fs::write(bad.path().join("x.yaml"), "kind: Nonsense\n").expect("write");
    let (code, out, _) = run_env(
        &["check"],
        &[("MERIDIAN_ZONES", &repo_zones().to_string_lossy())],
    );
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run_env(
        &["check"],
        &[("MERIDIAN_ZONES", &bad.path().to_string_lossy())],
    );
    assert_eq!(code, 1, "MERIDIAN_ZONES chose the broken directory: {err}");
    assert!(err.contains("x.yaml"), "{err}");
    // The flag wins over the environment.
    let (code, _, _) = run_env(
        &["check", "--zones", &repo_zones().to_string_lossy()],
        &[("MERIDIAN_ZONES", &bad.path().to_string_lossy())],
    );
    assert_eq!(code, 0);
}

#[test]
fn logs_carry_no_debug_options_and_no_colour_when_not_a_terminal() {
    // JSON: a drain without an end and the start-up lines once printed `Some("…")`/`None`.
    let server = Server::start(&repo_zones());
    let (code, _, err) = run(&["drain", "houston", "--admin", &server.admin.to_string()]);
    assert_eq!(code, 0, "{err}");
    wait_for(Duration::from_secs(10), "the drain log line", || {
        server.log_text().contains("cluster drained").then_some(())
    });
    let logs = server.log_text();
    for l in logs.lines() {
        assert!(!l.contains("Some(") && !l.contains("\"None\""), "{l}");
        assert!(!l.contains('\u{1b}'), "{l}");
    }
    // Text format into a pipe: no escape codes.
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--zones",
        ])
        .arg(repo_zones())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("serving") || std::time::Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("serving"), "{seen}");
    assert!(
        !seen.contains('\u{1b}'),
        "escape codes in piped text logs: {seen:?}"
    );
}

#[test]
fn shell_completions_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        for word in ["drain", "undrain", "explain", "lameduck"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
}
