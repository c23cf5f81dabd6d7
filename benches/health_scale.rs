//! Health checks at scale (a measurement, not a test): `cargo bench --bench health_scale`.
//!
//! Serves N probed endpoints (default 10,000: ServiceDNSRecords in three clusters, every VIP its
//! own loopback address 127.70.x.y) from the real `meridian` binary, with real HTTP (or TCP)
//! targets answering on every address, probes every `interval` (default 1 s), and reports over a
//! measurement window after a warm-up:
//! - probes run against probes due (N × window ÷ interval), and the intervals missed
//!   (`meridian_probe_intervals_missed_total`);
//! - how late probes started (`meridian_probe_start_lag_seconds`, p50/p99 from the buckets);
//! - meridian's CPU (user+sys from `/proc/PID/stat`, in cores) and resident memory.
//!
//! The targets run in this process, so their CPU is not counted against meridian's.
//! Environment: `HEALTH_TARGETS` (N), `HEALTH_INTERVAL` (e.g. `1s`), `HEALTH_PROBE` (`http` or
//! `tcp`), `HEALTH_SECONDS` (window, default 20). Without `--bench` (cargo test --all-targets)
//! it runs a small smoke version. Traffic stays on 127.0.0.0/8.

#[path = "../tests/integration/common.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Server, metric, repo_zones};

const CLUSTERS: [(&str, &str); 3] = [
    ("new-york", "40.7128,-74.0060"),
    ("houston", "29.7604,-95.3698"),
    ("los-angeles", "34.0522,-118.2437"),
];

fn target_ip(i: usize) -> Ipv4Addr {
    // 250 hosts per /24 (no .0, no .255), from 127.70.0.1 upwards.
    let net = i / 250;
    Ipv4Addr::new(
        127,
        70 + (net / 256) as u8,
        (net % 256) as u8,
        (i % 250 + 1) as u8,
    )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}: cannot parse {v:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn zones(n: usize, port: u16, interval: &str, probe: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["gslb.example.com.zone", "demo-geoip.mmdb"] {
        std::fs::copy(repo_zones().join(f), dir.path().join(f)).expect("copy from zones/");
    }
    let mut y = format!(
        "apiVersion: meridian.io/v1alpha1\nkind: MeridianConfig\nmetadata:\n  name: meridian\n\
         spec:\n  geoip: demo-geoip.mmdb\n  health:\n    interval: {interval}\n    timeout: 1s\n\
         \x20   rise: 2\n    fall: 3\n\
         ---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\nmetadata:\n\
         \x20 name: demo\n  namespace: kube-federation-system\ndomain: gslb.example.com\n\
         nameServer: ns1.gslb.example.com\n"
    );
    for (c, loc) in CLUSTERS {
        y.push_str(&format!(
            "---\napiVersion: core.kubefed.io/v1beta1\nkind: KubeFedCluster\nmetadata:\n\
             \x20 name: {c}\n  namespace: kube-federation-system\n  annotations:\n\
             \x20   meridian.io/location: \"{loc}\"\nspec:\n  apiEndpoint: https://127.0.0.1:6443\n\
             \x20 secretRef:\n    name: {c}\n"
        ));
    }
    for r in 0..n.div_ceil(3) {
        y.push_str(&format!(
            "---\napiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
             metadata:\n  name: svc{r}\n  namespace: scale\n  annotations:\n\
             \x20   meridian.io/probe: {probe}\n    meridian.io/probe-port: \"{port}\"\n\
             spec:\n  domainRef: demo\nstatus:\n  dns:\n"
        ));
        for (k, (c, _)) in CLUSTERS.iter().enumerate() {
            let i = r * 3 + k;
            if i < n {
                y.push_str(&format!(
                    "  - cluster: {c}\n    loadBalancer:\n      ingress:\n      - ip: {}\n",
                    target_ip(i)
                ));
            }
        }
    }
    std::fs::write(dir.path().join("scale.yaml"), y).expect("write scale.yaml");
    dir
}

/// N listeners on one port, one per address; each connection gets a minimal HTTP 200 (or is
/// closed at once for TCP probes).
fn start_targets(rt: &tokio::runtime::Runtime, n: usize, http: bool) -> u16 {
    'port: for _ in 0..20 {
        let port = std::net::TcpListener::bind((target_ip(0), 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut listeners = Vec::with_capacity(n);
        for i in 0..n {
            let addr = SocketAddr::from((target_ip(i), port));
            match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).expect("nonblocking");
                    listeners.push(l);
                }
                Err(_) => continue 'port,
            }
        }
        for l in listeners {
            rt.spawn(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if !http {
                        continue;
                    }
                    tokio::spawn(async move {
                        let mut req = Vec::with_capacity(512);
                        let mut buf = [0u8; 512];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => req.extend_from_slice(&buf[..k]),
                            }
                        }
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            )
                            .await;
                    });
                }
            });
        }
        return port;
    }
    panic!("no port free on all {n} target addresses");
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |i: usize| f[i].parse::<f64>().expect("ticks");
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / hz
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Sample {
    at: Instant,
    cpu: f64,
    probes: f64,
    failed: f64,
    missed: f64,
    lag: Vec<(f64, f64)>,
}

fn sample(s: &Server) -> Sample {
    let text = s.metrics();
    let lag = text
        .lines()
        .filter(|l| l.starts_with("meridian_probe_start_lag_seconds_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    Sample {
        at: Instant::now(),
        cpu: cpu_seconds(s.pid()),
        probes: metric(&text, "meridian_probe_duration_seconds_count", &[]),
        failed: metric(
            &text,
            "meridian_probe_duration_seconds_count",
            &[("result", "fail")],
        ) + metric(
            &text,
            "meridian_probe_duration_seconds_count",
            &[("result", "timeout")],
        ),
        missed: metric(&text, "meridian_probe_intervals_missed_total", &[]),
        lag,
    }
}

/// The bucket bound under which `q` of the window's probes started.
fn quantile(a: &Sample, b: &Sample, q: f64) -> String {
    let d: Vec<(f64, f64)> = b
        .lag
        .iter()
        .map(|(le, n)| {
            let before = a.lag.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
            (*le, n - before)
        })
        .collect();
    let total = d.last().map_or(0.0, |x| x.1);
    match d.iter().find(|(_, n)| *n >= q * total) {
        Some((le, _)) if le.is_finite() => format!("≤ {} ms", le * 1000.0),
        Some(_) => "> 2.5 s".into(),
        None => "n/a".into(),
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = env_or("HEALTH_TARGETS", if smoke { 300 } else { 10_000 });
    let interval: String = env_or("HEALTH_INTERVAL", "1s".to_string());
    let probe: String = env_or("HEALTH_PROBE", "http".to_string());
    let window = Duration::from_secs(env_or("HEALTH_SECONDS", if smoke { 3 } else { 20 }));
    let warmup = if smoke {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let interval_s = meridian::model::parse_duration(&interval)
        .unwrap_or_else(|e| {
            eprintln!("HEALTH_INTERVAL: {e}");
            std::process::exit(2)
        })
        .as_secs_f64();
    let http = match probe.as_str() {
        "http" => true,
        "tcp" => false,
        other => {
            eprintln!("HEALTH_PROBE: {other:?} is neither http nor tcp");
            std::process::exit(2)
        }
    };
    // Targets need an fd each, as the server's sockets to them do.
    meridian::app::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let port = start_targets(&rt, n, http);
    let dir = zones(n, port, &interval, &probe);
    let started = Instant::now();
    let s = Server::start(dir.path());
    println!(
        "health at scale: meridian {}, {n} {probe} targets on 127.70.0.0/14, interval {interval}{}",
        env!("CARGO_PKG_VERSION"),
        if smoke {
            " (smoke run: `cargo bench --bench health_scale` for figures)"
        } else {
            ""
        }
    );
    println!(
        "  start-up (compile + initial round of {n} probes): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(warmup);
    let a = sample(&s);
    std::thread::sleep(window);
    let b = sample(&s);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let due = n as f64 * secs / interval_s;
    let probes = b.probes - a.probes;
    let cores = (b.cpu - a.cpu) / secs;
    println!(
        "  window {secs:.1} s: {probes:.0} probes of {due:.0} due ({:.1} %), {:.0} failed, {:.0} intervals missed",
        100.0 * probes / due,
        b.failed - a.failed,
        b.missed - a.missed
    );
    println!(
        "  start lag: p50 {}, p99 {}",
        quantile(&a, &b, 0.5),
        quantile(&a, &b, 0.99)
    );
    println!(
        "  meridian CPU {cores:.3} cores ({:.1} µs per probe), RSS {:.0} MB",
        (b.cpu - a.cpu) / probes.max(1.0) * 1e6,
        rss_mb(s.pid())
    );
    let ok = b.missed - a.missed == 0.0 && cores < 1.0 && b.failed - a.failed == 0.0;
    println!(
        "  goal (no missed intervals, < 1 core, no failed probe): {}",
        if ok { "met" } else { "missed" }
    );
    drop(s);
    rt.shutdown_timeout(Duration::from_secs(1));
    if smoke && probes == 0.0 {
        eprintln!("no probe ran");
        std::process::exit(1);
    }
}
