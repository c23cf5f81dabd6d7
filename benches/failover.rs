//! Failover drill timing (a measurement, not a test): `cargo bench --bench failover`.
//!
//! Runs the real `meridian` binary with one federated record over three local HTTP targets
//! (new-york, houston, los-angeles on 127.60.x.{1,2,3}), then repeatedly stops the target the
//! client's nearest cluster answers with and measures:
//! - failover: from stopping the target to the first DNS answer without it;
//! - recovery: from starting it again to the first answer with it.
//!
//! Each is reported as median and max over the drills, beside what the configuration predicts:
//! a dead target is seen within `fall` probes (`interval × fall`, plus the probe timeout when it
//! hangs instead of refusing), a revived one within `rise` probes (`interval × rise`).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs one short drill only.
//!
//! Environment: `FAILOVER_DRILLS` (drills per configuration, default per row below),
//! `FAILOVER_CONFIGS` (e.g. `100ms:2:2:refuse,1s:3:2:hang` — interval:fall:rise:mode).
//! Traffic stays on 127.0.0.0/8.

#[path = "../tests/integration/common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use common::{Server, addrs, zones_with};

/// San Francisco in the demo GeoIP database: nearest is los-angeles, then houston.
const CLIENT: &str = "192.0.2.0";
/// Give up on one drill after this long (the run then reports the failure).
const DRILL_LIMIT: Duration = Duration::from_secs(60);
/// Answers are polled this often: the resolution of the figures.
const POLL: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// The target's port closes: probes are refused at once.
    Refuse,
    /// The target accepts and never answers: probes time out.
    Hang,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    interval: Duration,
    fall: u32,
    rise: u32,
    mode: Mode,
    drills: usize,
}

impl Config {
    fn timeout(&self) -> Duration {
        self.interval / 2
    }
    fn failover_bound(&self) -> Duration {
        let t = self.interval * self.fall;
        match self.mode {
            Mode::Refuse => t,
            Mode::Hang => t + self.timeout(),
        }
    }
    fn recovery_bound(&self) -> Duration {
        self.interval * self.rise
    }
}

/// An HTTP target that can stop listening (Refuse) or stop answering (Hang).
struct Target {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Target {
    fn bind(addr: SocketAddr) -> std::io::Result<Target> {
        let mut t = Target {
            addr,
            stop: Arc::default(),
            hang: Arc::default(),
            thread: None,
        };
        t.listen()?;
        Ok(t)
    }

    fn listen(&mut self) -> std::io::Result<()> {
        let l = TcpListener::bind(self.addr)?;
        l.set_nonblocking(true)?;
        self.stop = Arc::default();
        let (stop, hang) = (self.stop.clone(), self.hang.clone());
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (hang, stop) = (hang.clone(), stop.clone());
                        std::thread::spawn(move || serve(s, &hang, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }));
        Ok(())
    }

    fn fail(&mut self, mode: Mode) {
        match mode {
            Mode::Refuse => {
                self.stop.store(true, Ordering::Relaxed);
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Mode::Hang => self.hang.store(true, Ordering::Relaxed),
        }
    }

    fn heal(&mut self, mode: Mode) {
        match mode {
            Mode::Refuse => self.listen().expect("rebind the target"),
            Mode::Hang => self.hang.store(false, Ordering::Relaxed),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.hang.store(false, Ordering::Relaxed);
        self.fail(Mode::Refuse);
    }
}

fn serve(mut s: TcpStream, hang: &AtomicBool, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    if hang.load(Ordering::Relaxed) {
        // Hold the connection open without answering, until the probe gives up.
        for _ in 0..1000 {
            if stop.load(Ordering::Relaxed) || !hang.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        return;
    }
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// Three targets on one port (a record has one probe port).
fn targets(c: u8) -> [Target; 3] {
    let ips = [1, 2, 3].map(|d| Ipv4Addr::new(127, 60, c, d));
    for _ in 0..20 {
        let port = TcpListener::bind((ips[0], 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let bound: Vec<_> = ips
            .iter()
            .map(|ip| Target::bind(SocketAddr::new(IpAddr::V4(*ip), port)))
            .collect();
        if bound.iter().all(|b| b.is_ok()) {
            let mut it = bound.into_iter().map(|b| b.expect("checked"));
            return [0, 1, 2].map(|_| it.next().expect("three"));
        }
    }
    panic!("no common free port on {ips:?}");
}

fn fixture(cfg: &Config, t: &[Target; 3]) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut y = format!(
        "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: ServiceDNSRecord\n\
         metadata:\n  name: drill\n  namespace: bench\n  annotations:\n\
         \x20   meridian.io/probe: http\n    meridian.io/probe-port: \"{}\"\n\
         \x20   meridian.io/probe-interval: {}\n    meridian.io/probe-timeout: {}\n\
         \x20   meridian.io/fall: \"{}\"\n    meridian.io/rise: \"{}\"\n\
         spec:\n  domainRef: demo\nstatus:\n  dns:\n",
        t[0].addr.port(),
        ms(cfg.interval),
        ms(cfg.timeout()),
        cfg.fall,
        cfg.rise
    );
    for (cluster, target) in ["new-york", "houston", "los-angeles"].iter().zip(t) {
        y.push_str(&format!(
            "  - cluster: {cluster}\n    loadBalancer:\n      ingress:\n      - ip: {}\n",
            target.addr.ip()
        ));
    }
    y
}

/// Polls until `pred` holds for the answer; returns when it first did, None past the limit.
fn until(s: &Server, pred: impl Fn(&[String]) -> bool) -> Option<Instant> {
    let name = "drill.bench.demo.svc.gslb.example.com.";
    let q = s.q().ecs(CLIENT, 24);
    let start = Instant::now();
    while start.elapsed() < DRILL_LIMIT {
        if pred(&addrs(&q.ask(name, RecordType::A))) {
            return Some(Instant::now());
        }
        std::thread::sleep(POLL);
    }
    None
}

struct Figures {
    failover: Vec<Duration>,
    recovery: Vec<Duration>,
}

fn run_drills(cfg: &Config, c: u8) -> Figures {
    let mut t = targets(c);
    let dir = zones_with(&[("drill.yaml", &fixture(cfg, &t))]);
    let s = Server::start(dir.path());
    let la = t[2].addr.ip().to_string();
    let mut f = Figures {
        failover: Vec::new(),
        recovery: Vec::new(),
    };
    // Settle: the record answers with Los Angeles and its probes have run.
    until(&s, |a| a == [la.clone()]).expect("los-angeles answers at first");
    std::thread::sleep(cfg.interval * (cfg.rise + 1));
    for i in 0..cfg.drills {
        // Start each drill at a random point of the probe cycle, as a real outage would.
        std::thread::sleep(Duration::from_millis(fastrand::u64(
            0..cfg.interval.as_millis() as u64,
        )));
        let started = Instant::now();
        t[2].fail(cfg.mode);
        let gone = until(&s, |a| !a.contains(&la) && !a.is_empty());
        let Some(gone) = gone else {
            eprintln!("drill {i}: no failover within {DRILL_LIMIT:?}");
            break;
        };
        f.failover.push(gone - started);
        std::thread::sleep(Duration::from_millis(fastrand::u64(
            0..cfg.interval.as_millis() as u64,
        )));
        let healed = Instant::now();
        t[2].heal(cfg.mode);
        let Some(back) = until(&s, |a| a == [la.clone()]) else {
            eprintln!("drill {i}: no recovery within {DRILL_LIMIT:?}");
            break;
        };
        f.recovery.push(back - healed);
    }
    f
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}ms", d.as_secs_f64() * 1000.0)
}

fn parse_configs(spec: &str, drills: Option<usize>) -> Vec<Config> {
    fn bad(s: &str) -> ! {
        eprintln!("FAILOVER_CONFIGS: {s:?} is not interval:fall:rise:mode (e.g. 250ms:3:2:refuse)");
        std::process::exit(2)
    }
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let p: Vec<&str> = s.split(':').collect();
            let [interval, fall, rise, mode] = p[..] else {
                bad(s)
            };
            Config {
                interval: meridian::model::parse_duration(interval).unwrap_or_else(|_| bad(s)),
                fall: fall.parse().unwrap_or_else(|_| bad(s)),
                rise: rise.parse().unwrap_or_else(|_| bad(s)),
                mode: match mode {
                    "refuse" => Mode::Refuse,
                    "hang" => Mode::Hang,
                    _ => bad(s),
                },
                drills: drills.unwrap_or(10),
            }
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`. Without it this is `cargo test --all-targets` (CI): one
    // short drill, so the benchmark is known to work, without a minute of drills in every run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let drills = std::env::var("FAILOVER_DRILLS")
        .ok()
        .map(|v| match v.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("FAILOVER_DRILLS: {v:?} is not a positive number");
                std::process::exit(2)
            }
        });
    let configs = match std::env::var("FAILOVER_CONFIGS") {
        Ok(spec) => parse_configs(&spec, drills),
        Err(_) if smoke => parse_configs("100ms:2:2:refuse", Some(1)),
        Err(_) => {
            let row = |ms, fall, rise, mode, n| Config {
                interval: Duration::from_millis(ms),
                fall,
                rise,
                mode,
                drills: drills.unwrap_or(n),
            };
            vec![
                row(100, 2, 2, Mode::Refuse, 20),
                row(250, 3, 2, Mode::Refuse, 10),
                row(250, 3, 2, Mode::Hang, 10),
                row(1000, 3, 2, Mode::Refuse, 5),
            ]
        }
    };
    println!(
        "failover drills: meridian {}{}, client San Francisco, los-angeles target failed and revived",
        env!("CARGO_PKG_VERSION"),
        if smoke {
            " (smoke run: `cargo bench --bench failover` for figures)"
        } else {
            ""
        }
    );
    println!();
    println!(
        "{:<10} {:>4} {:>4} {:<7} {:>6} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
        "interval",
        "fall",
        "rise",
        "failure",
        "drills",
        "fail p50",
        "fail max",
        "bound",
        "recov p50",
        "recov max",
        "bound"
    );
    let mut all_within = true;
    for (i, cfg) in configs.iter().enumerate() {
        let f = run_drills(cfg, i as u8 + 1);
        let fmax = f.failover.iter().max().copied().unwrap_or_default();
        let rmax = f.recovery.iter().max().copied().unwrap_or_default();
        println!(
            "{:<10} {:>4} {:>4} {:<7} {:>6} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9}",
            ms(cfg.interval),
            cfg.fall,
            cfg.rise,
            format!("{:?}", cfg.mode).to_lowercase(),
            format!("{}/{}", f.failover.len().min(f.recovery.len()), cfg.drills),
            ms(median(&f.failover)),
            ms(fmax),
            ms(cfg.failover_bound()),
            ms(median(&f.recovery)),
            ms(rmax),
            ms(cfg.recovery_bound()),
        );
        all_within &= f.recovery.len() == cfg.drills;
    }
    println!();
    println!(
        "bound: what the configuration predicts, interval × fall (+ timeout when the target hangs) \
         to fail over, interval × rise to recover; figures include probe, publication and a {}ms \
         polling resolution",
        POLL.as_millis()
    );
    if !all_within {
        eprintln!("some drills did not complete");
        std::process::exit(1);
    }
}
