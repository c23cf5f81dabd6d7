//! Test harness: starts the real `meridian` binary on loopback with OS-assigned ports (read back
//! from its JSON log), and talks to it with a real DNS client over real sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

pub const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// The repository's `zones/` directory.
pub fn repo_zones() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("zones")
}

pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// A copy of `zones/` in a temporary directory, with files added or replaced.
pub fn zones_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(repo_zones()).expect("zones/") {
        let e = e.expect("entry");
        // Not the drains file a demo run may have left: each copy starts undrained.
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if e.path().is_file() && !hidden {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
        }
    }
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

static DRAINS_FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct Server {
    child: Child,
    pub dns: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(zones: &Path) -> Server {
        Server::start_with(zones, &[])
    }

    pub fn start_with(zones: &Path, extra: &[&str]) -> Server {
        Server::try_start(zones, extra)
            .unwrap_or_else(|logs| panic!("meridian did not start:\n{logs}"))
    }

    /// Starts meridian; Err carries its output if it exits before serving.
    pub fn try_start(zones: &Path, extra: &[&str]) -> Result<Server, String> {
        demo_targets();
        // Servers of the repository's own zones/ keep drains in a file of their own: tests run
        // in parallel and must not leave drains there for each other (or for the demo).
        let private_drains = (zones == repo_zones().as_path() && !extra.contains(&"--drains-file"))
            .then(|| {
                std::env::temp_dir().join(format!(
                    "meridian-test-drains-{}-{}.json",
                    std::process::id(),
                    DRAINS_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ))
            });
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--zones",
        ])
        .arg(zones)
        .args(extra)
        .args(
            private_drains
                .iter()
                .flat_map(|p| [std::ffi::OsStr::new("--drains-file"), p.as_os_str()]),
        )
        .env("MERIDIAN_LOG", "info,meridian=debug")
        // Inside a pod this would switch the Kubernetes source on (in-cluster config):
        // tests choose their sources explicitly.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        Server::launch(cmd)
    }

    /// Starts meridian inside network namespace `ns` (`ip netns exec NS meridian serve ...`)
    /// with the DNS and admin addresses given.
    pub fn try_start_in(
        ns: &str,
        listen: &str,
        admin: &str,
        zones: &Path,
        extra: &[&str],
    ) -> Result<Server, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, BIN]);
        Server::start_cmd(cmd, listen, admin, zones, extra)
    }

    /// Starts meridian with the DNS and admin addresses given (no drains-file default).
    pub fn try_start_at(
        listen: &str,
        admin: &str,
        zones: &Path,
        extra: &[&str],
    ) -> Result<Server, String> {
        Server::start_cmd(Command::new(BIN), listen, admin, zones, extra)
    }

    fn start_cmd(
        mut cmd: Command,
        listen: &str,
        admin: &str,
        zones: &Path,
        extra: &[&str],
    ) -> Result<Server, String> {
        cmd.args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            listen,
            "--admin",
            admin,
        ])
        .arg("--zones")
        .arg(zones)
        .args(extra)
        .env("MERIDIAN_LOG", "info,meridian=debug")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        Server::launch(cmd)
    }

    fn launch(mut cmd: Command) -> Result<Server, String> {
        let mut child = cmd.spawn().expect("spawn meridian");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("\"serving\"") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
                let dns = v["dns"]
                    .as_str()
                    .expect("dns field")
                    .parse()
                    .expect("dns addr");
                let admin = v["admin"]
                    .as_str()
                    .expect("admin field")
                    .parse()
                    .expect("admin addr");
                return Ok(Server {
                    child,
                    dns,
                    admin,
                    logs,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(logs.lock().expect("logs").join("\n"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "timed out; logs:\n{}",
                    logs.lock().expect("logs").join("\n")
                ));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin, method, path, None)
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.http("GET", "/metrics");
        assert_eq!(code, 200);
        body
    }

    pub fn q(&self) -> Q {
        Q::new(self.dns)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo clusters' VIPs: zones/demo.yaml probes http://VIP:8080/ for its web record.
pub const DEMO_VIPS: [&str; 3] = ["127.10.0.1", "127.20.0.1", "127.30.0.1"];

/// Serves HTTP 200 on the demo VIPs, once per test process, as `zones/demo-targets.sh start`
/// does by hand. Every server started from the demo zones then finds the demo clusters healthy,
/// as the demo scenario expects, whatever else runs on this machine; tests that exercise
/// failures use targets of their own. A VIP already served (demo-targets.sh running) is left
/// alone.
pub fn demo_targets() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        for ip in DEMO_VIPS {
            let Ok(l) = TcpListener::bind((ip, 8080)) else {
                continue;
            };
            std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    std::thread::spawn(move || http_ok(s));
                }
            });
        }
    });
}

/// Reads one HTTP request and answers 200.
fn http_ok(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
}

pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://{addr}{path}");
    let mut req = client.request(method.parse().expect("method"), &url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().expect("admin request");
    let code = resp.status().as_u16();
    (code, resp.text().unwrap_or_default())
}

/// Sum of a metric's samples whose labels contain every `k="v"` given.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls until `f` returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A DNS query builder: hickory-proto encodes and decodes; std sockets carry it.
#[derive(Clone)]
pub struct Q {
    server: SocketAddr,
    pub tcp: bool,
    pub edns: bool,
    pub payload: u16,
    pub ecs: Option<(IpAddr, u8)>,
    pub source: Option<IpAddr>,
    pub dnssec_ok: bool,
    pub id: u16,
}

impl Q {
    pub fn new(server: SocketAddr) -> Q {
        Q {
            server,
            tcp: false,
            edns: true,
            payload: 1232,
            ecs: None,
            source: None,
            dnssec_ok: false,
            id: 0x4242,
        }
    }
    pub fn tcp(mut self) -> Q {
        self.tcp = true;
        self
    }
    pub fn no_edns(mut self) -> Q {
        self.edns = false;
        self
    }
    pub fn ecs(mut self, addr: &str, prefix: u8) -> Q {
        self.ecs = Some((addr.parse().expect("ip"), prefix));
        self
    }
    pub fn from(mut self, src: &str) -> Q {
        self.source = Some(src.parse().expect("ip"));
        self
    }
    pub fn payload(mut self, p: u16) -> Q {
        self.payload = p;
        self
    }

    pub fn packet(&self, name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::new(self.id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        if self.edns {
            let mut e = Edns::new();
            e.set_max_payload(self.payload);
            e.set_dnssec_ok(self.dnssec_ok);
            if let Some((addr, prefix)) = self.ecs {
                e.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
            }
            m.set_edns(e);
        }
        m.to_vec().expect("encode")
    }

    /// Sends and returns the decoded answer.
    pub fn ask(&self, name: &str, rtype: RecordType) -> Message {
        let raw = self.raw(&self.packet(name, rtype)).expect("an answer");
        Message::from_vec(&raw).expect("decodable answer")
    }

    /// Sends raw bytes; None on timeout (no answer).
    pub fn raw(&self, packet: &[u8]) -> Option<Vec<u8>> {
        if self.tcp {
            tcp_exchange(self.server, packet)
        } else {
            let bind: SocketAddr =
                SocketAddr::new(self.source.unwrap_or("127.0.0.1".parse().expect("ip")), 0);
            let s = UdpSocket::bind(bind).expect("bind client");
            s.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            s.send_to(packet, self.server).expect("send");
            let mut buf = vec![0u8; 65535];
            match s.recv_from(&mut buf) {
                Ok((n, _)) => Some(buf[..n].to_vec()),
                Err(_) => None,
            }
        }
    }
}

pub fn tcp_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// The answer section's addresses, as strings, sorted.
pub fn addrs(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// The ECS option of an answer: (source prefix, scope prefix).
pub fn ecs_of(m: &Message) -> Option<(u8, u8)> {
    let e = m.edns.as_ref()?;
    match e.options().get(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

/// Runs dig against the server; returns stdout.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(args)
        .output()
        .expect("dig must be installed (the test command installs dnsutils)");
    assert!(
        out.status.success(),
        "dig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the binary with arguments; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run meridian");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
