//! Probes: one check of one target, success (with a short detail) or a typed failure. A probe
//! knows nothing about thresholds, intervals or timeouts — the scheduler times it and the state
//! machine decides what a result means.
//!
//! Plain HTTP is one hyper HTTP/1.1 exchange over a fresh tokio `TcpStream`: no connection
//! pool, connector stack or spawned connection task, which more than halves the CPU of a probe
//! (10k targets at a 1 s interval is the scale to hold). HTTPS goes through reqwest (rustls),
//! where the TLS handshake dominates anyway. Every probe opens a fresh connection
//! (`pool_max_idle_per_host(0)`): a probe that rides on an idle keep-alive connection proves
//! nothing about the target accepting new ones. Clients are still reused — one per distinct TLS
//! setting — so TLS configuration and root stores are built once, not per probe. An HTTPS probe
//! with `probe-host` connects to the VIP but presents the host name (SNI, certificate name and
//! Host header); reqwest can only pin a name to an address per client, so such an endpoint gets
//! a client of its own, built once when its probing starts.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use reqwest::header::{CONNECTION, HOST, HeaderValue, USER_AGENT};
use thiserror::Error;

use crate::catalog::{ProbeKind, ProbeSpec};
use crate::snapshot::compile::EndpointKey;

/// Most body bytes read looking for `probe-body`: a health page is small, and a target
/// streaming an endless body must not hold a probe (or memory) forever.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a probe failed. The text is what the admin API shows as `lastResult.error` and what the
/// transition log line gives as `reason`.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProbeError {
    /// TCP connect (or, for HTTPS, the TLS handshake) failed.
    #[error("connect to {addr} failed: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("no result within {}ms", .0.as_millis())]
    Timeout(Duration),
    /// The request failed after connecting (reset, malformed response, ...).
    #[error("HTTP request failed: {0}")]
    Request(String),
    #[error("HTTP status {got} outside the expected {lo}-{hi}")]
    Status { got: u16, lo: u16, hi: u16 },
    #[error("HTTP body (first {MAX_BODY} bytes) does not contain {expected:?}")]
    Body { expected: String },
    #[error("cannot use CA file {}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
    /// The probe cannot be built from its specification (e.g. a host that is not a valid
    /// header value). It fails every time, so the target shows down with this reason.
    #[error("invalid probe: {0}")]
    Invalid(String),
    #[error("endpoint is not probed")]
    NotProbed,
}

/// One target's check.
pub trait Probe: Send + Sync + 'static {
    /// Runs one check. Ok carries a short description of the success (e.g. `HTTP 200`).
    fn check(&self) -> impl Future<Output = Result<String, ProbeError>> + Send;
}

/// Makes the probe for an endpoint; the scheduler calls it once when probing starts.
pub trait ProbeFactory: Send + Sync + 'static {
    type Probe: Probe;
    fn make(&self, key: &EndpointKey) -> Self::Probe;
}

/// The real probes.
pub enum Target {
    Tcp(SocketAddr),
    Http(Box<HttpProbe>),
    /// A probe that could not be built: every check fails with this error.
    Broken(ProbeError),
}

pub struct HttpProbe {
    client: reqwest::Client,
    /// Plain HTTP: the request target and Host header of the hyper exchange (None: HTTPS,
    /// through `client`).
    plain: Option<(String, HeaderValue)>,
    url: reqwest::Url,
    addr: SocketAddr,
    host_header: Option<HeaderValue>,
    expect_status: (u16, u16),
    expect_body: Option<String>,
}

impl Probe for Target {
    async fn check(&self) -> Result<String, ProbeError> {
        match self {
            Target::Tcp(addr) => tcp_check(*addr).await,
            Target::Http(h) => h.check().await,
            Target::Broken(e) => Err(e.clone()),
        }
    }
}

async fn tcp_check(addr: SocketAddr) -> Result<String, ProbeError> {
    // Connect and close: the target accepted a connection, which is all a TCP probe asks.
    tokio::net::TcpStream::connect(addr)
        .await
        .map(|_| "TCP connect".to_string())
        .map_err(|e| ProbeError::Connect {
            addr,
            message: e.to_string(),
        })
}

const PROBE_USER_AGENT: &str = concat!("meridian-health/", env!("CARGO_PKG_VERSION"));

impl HttpProbe {
    async fn check(&self) -> Result<String, ProbeError> {
        match &self.plain {
            Some((target, host)) => self.check_plain(target, host).await,
            None => self.check_reqwest().await,
        }
    }

    async fn check_plain(&self, target: &str, host: &HeaderValue) -> Result<String, ProbeError> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| ProbeError::Connect {
                addr: self.addr,
                message: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let request_error = |e: hyper::Error| ProbeError::Request(error_chain(&e));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(request_error)?;
        let req = hyper::Request::get(target)
            .header(HOST, host)
            .header(USER_AGENT, PROBE_USER_AGENT)
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeError::Invalid(format!("request: {e}")))?;
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(request_error)?;
            let got = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut judge = Judge::new(self, got)?;
            loop {
                if let Some(verdict) = judge.verdict() {
                    return verdict;
                }
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            judge.feed(&data);
                        }
                    }
                    Some(Err(e)) => return Err(request_error(e)),
                    None => return judge.finish(),
                }
            }
        };
        // The connection future does the I/O; it is driven here, in the probe's own task.
        let mut conn = std::pin::pin!(conn);
        let mut exchange = std::pin::pin!(exchange);
        let mut conn_open = true;
        loop {
            tokio::select! {
                r = &mut exchange => return r,
                c = &mut conn, if conn_open => {
                    conn_open = false;
                    c.map_err(request_error)?;
                }
            }
        }
    }

    async fn check_reqwest(&self) -> Result<String, ProbeError> {
        let mut req = self.client.get(self.url.clone());
        if let Some(h) = &self.host_header {
            req = req.header(HOST, h.clone());
        }
        let mut resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                // reqwest's own top line ("error sending request for url ...") says nothing
                // the variant does not; the causes say why (refused, certificate, ...).
                let message = match std::error::Error::source(&e) {
                    Some(cause) => error_chain(cause),
                    None => e.to_string(),
                };
                ProbeError::Connect {
                    addr: self.addr,
                    message,
                }
            } else {
                ProbeError::Request(error_chain(&e))
            }
        })?;
        let got = resp.status().as_u16();
        let mut judge = Judge::new(self, got)?;
        loop {
            if let Some(verdict) = judge.verdict() {
                return verdict;
            }
            match resp.chunk().await {
                Ok(Some(chunk)) => judge.feed(&chunk),
                Ok(None) => return judge.finish(),
                Err(e) => return Err(ProbeError::Request(error_chain(&e))),
            }
        }
    }
}

/// Status and body expectations over a response read chunk by chunk.
struct Judge<'a> {
    got: u16,
    needle: Option<&'a str>,
    body: Vec<u8>,
}

impl<'a> Judge<'a> {
    fn new(p: &'a HttpProbe, got: u16) -> Result<Judge<'a>, ProbeError> {
        let (lo, hi) = p.expect_status;
        if !(lo..=hi).contains(&got) {
            return Err(ProbeError::Status { got, lo, hi });
        }
        Ok(Judge {
            got,
            needle: p.expect_body.as_deref(),
            body: Vec::new(),
        })
    }

    fn feed(&mut self, chunk: &[u8]) {
        let room = (MAX_BODY + 1).saturating_sub(self.body.len());
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Decided before the body ends: no body expected, a match, or the read limit reached.
    fn verdict(&self) -> Option<Result<String, ProbeError>> {
        let Some(needle) = self.needle else {
            return Some(Ok(format!("HTTP {}", self.got)));
        };
        if !self.body.is_empty() && contains(&self.body, needle.as_bytes()) {
            return Some(Ok(format!("HTTP {}, body matches", self.got)));
        }
        (self.body.len() > MAX_BODY).then(|| self.finish())
    }

    fn finish(&self) -> Result<String, ProbeError> {
        match self.needle {
            // An empty body still matches an empty needle.
            Some(n) if !contains(&self.body[..self.body.len().min(MAX_BODY)], n.as_bytes()) => {
                Err(ProbeError::Body {
                    expected: n.to_string(),
                })
            }
            Some(_) => Ok(format!("HTTP {}, body matches", self.got)),
            None => Ok(format!("HTTP {}", self.got)),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// reqwest's top-level message ("error sending request for url ...") hides the cause; the
/// operator needs the whole chain (e.g. "... invalid peer certificate: UnknownIssuer").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let t = cause.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = cause.source();
    }
    s
}

/// What makes two HTTP(S) clients differ.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TlsKey {
    insecure: bool,
    ca: Option<PathBuf>,
}

/// Builds the real probes, sharing one HTTP client per TLS setting.
#[derive(Default)]
pub struct Probes {
    clients: Mutex<HashMap<TlsKey, reqwest::Client>>,
}

impl Probes {
    pub fn new() -> Probes {
        Probes::default()
    }

    fn shared_client(&self, tls: &TlsKey) -> Result<reqwest::Client, ProbeError> {
        // A poisoned lock only means another probe panicked while inserting; the map is
        // still usable.
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(tls) {
            return Ok(c.clone());
        }
        let c = client(tls, None)?;
        clients.insert(tls.clone(), c.clone());
        Ok(c)
    }

    fn http(&self, key: &EndpointKey) -> Result<HttpProbe, ProbeError> {
        let spec: &ProbeSpec = &key.probe;
        let https = spec.kind == ProbeKind::Https;
        let addr = SocketAddr::new(key.addr, spec.port);
        let tls = TlsKey {
            insecure: spec.insecure,
            ca: if https { spec.ca.clone() } else { None },
        };
        // A host name (not an IP literal) in `probe-host`.
        let host = spec
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_end_matches('.'));
        let named_host = host.filter(|h| h.parse::<IpAddr>().is_err());
        let scheme = if https { "https" } else { "http" };
        let default_port = if https { 443 } else { 80 };
        let (url, client, host_header) = match (https, named_host) {
            // HTTPS to a name: the name goes in the URL (SNI, certificate check, Host) and the
            // client is pinned to resolve it to this endpoint's address.
            (true, Some(h)) => (
                format!("https://{h}:{}{}", spec.port, spec.path),
                client(&tls, Some((h, addr)))?,
                None,
            ),
            // Everything else connects to the address in the URL; a host only changes the
            // Host header.
            _ => {
                let header = match host {
                    Some(h) => {
                        let v = if spec.port == default_port {
                            h.to_string()
                        } else {
                            format!("{h}:{}", spec.port)
                        };
                        Some(HeaderValue::from_str(&v).map_err(|_| {
                            ProbeError::Invalid(format!("host {h:?} is not a valid Host header"))
                        })?)
                    }
                    None => None,
                };
                (
                    format!("{scheme}://{addr}{}", spec.path),
                    self.shared_client(&tls)?,
                    header,
                )
            }
        };
        let url = reqwest::Url::parse(&url)
            .map_err(|e| ProbeError::Invalid(format!("URL {url:?}: {e}")))?;
        let plain = if https {
            None
        } else {
            let mut target = url.path().to_string();
            if let Some(q) = url.query() {
                target.push('?');
                target.push_str(q);
            }
            // What reqwest would send: the URL's authority, the default port left out.
            let host = match &host_header {
                Some(h) => h.clone(),
                None => {
                    let h = url.host_str().unwrap_or_default();
                    let v = match url.port() {
                        Some(p) => format!("{h}:{p}"),
                        None => h.to_string(),
                    };
                    HeaderValue::from_str(&v).map_err(|_| {
                        ProbeError::Invalid(format!("{v:?} is not a valid Host header"))
                    })?
                }
            };
            Some((target, host))
        };
        Ok(HttpProbe {
            client,
            plain,
            url,
            addr,
            host_header,
            expect_status: spec.expect_status,
            expect_body: spec.expect_body.clone(),
        })
    }
}

impl ProbeFactory for Probes {
    type Probe = Target;

    fn make(&self, key: &EndpointKey) -> Target {
        let built = match key.probe.kind {
            ProbeKind::Tcp => Ok(Target::Tcp(SocketAddr::new(key.addr, key.probe.port))),
            ProbeKind::Http | ProbeKind::Https => self.http(key).map(|h| Target::Http(Box::new(h))),
            ProbeKind::None => Err(ProbeError::NotProbed),
        };
        built.unwrap_or_else(Target::Broken)
    }
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, ProbeError> {
    let ca_err = |message: String| ProbeError::Ca {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(error_chain(&e)))?;
    if certs.is_empty() {
        return Err(ca_err("no PEM certificate in the file".to_string()));
    }
    Ok(certs)
}

fn client(tls: &TlsKey, pin: Option<(&str, SocketAddr)>) -> Result<reqwest::Client, ProbeError> {
    let mut b = reqwest::Client::builder()
        // See the module comment: every probe makes its own connection.
        .pool_max_idle_per_host(0)
        // A redirect is an answer (3xx is in the default expected range); following it could
        // probe a different host than the VIP.
        .redirect(reqwest::redirect::Policy::none())
        // Probes go straight to the VIP, never through an HTTP(S)_PROXY from the environment.
        .no_proxy()
        .user_agent(PROBE_USER_AGENT)
        .tls_danger_accept_invalid_certs(tls.insecure);
    if let Some(ca) = &tls.ca {
        // A private CA replaces the system roots: the target is expected to chain to it.
        b = b.tls_certs_only(read_ca(ca)?);
    }
    if let Some((host, addr)) = pin {
        b = b.resolve(host, addr);
    }
    b.build()
        .map_err(|e| ProbeError::Invalid(format!("HTTP client: {}", error_chain(&e))))
}

/// The `endpoint` metric label and log field: address and port probed.
pub fn endpoint_label(key: &EndpointKey) -> String {
    SocketAddr::new(key.addr, key.probe.port).to_string()
}

pub fn kind_label(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Http => "http",
        ProbeKind::Https => "https",
        ProbeKind::Tcp => "tcp",
        ProbeKind::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn key(kind: ProbeKind, addr: SocketAddr, f: impl FnOnce(&mut ProbeSpec)) -> EndpointKey {
        let mut probe = ProbeSpec {
            kind,
            port: addr.port(),
            path: "/healthz".into(),
            host: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            expect_status: (200, 399),
            expect_body: None,
            insecure: false,
            ca: None,
        };
        f(&mut probe);
        EndpointKey {
            addr: addr.ip(),
            probe: probe.into(),
        }
    }

    /// A one-shot HTTP server: answers `n` requests with `response`, returns the requests.
    fn serve(
        n: usize,
        response: &'static str,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (mut s, _) = l.accept().expect("accept");
                let mut buf = [0u8; 4096];
                let got = s.read(&mut buf).expect("read");
                seen.push(String::from_utf8_lossy(&buf[..got]).into_owned());
                s.write_all(response.as_bytes()).expect("write");
            }
            seen
        });
        (addr, t)
    }

    #[tokio::test]
    async fn http_status_body_and_host() {
        let (addr, t) = serve(
            4,
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nstatus ok",
        );
        let probes = Probes::new();
        let p = probes.make(&key(ProbeKind::Http, addr, |p| {
            p.host = Some("web.example.com".into())
        }));
        assert_eq!(p.check().await, Ok("HTTP 200".to_string()));
        let p = probes.make(&key(ProbeKind::Http, addr, |p| {
            p.expect_body = Some("ok".into())
        }));
        assert_eq!(p.check().await, Ok("HTTP 200, body matches".to_string()));
        let p = probes.make(&key(ProbeKind::Http, addr, |p| {
            p.expect_body = Some("healthy".into())
        }));
        assert!(matches!(p.check().await, Err(ProbeError::Body { .. })));
        let p = probes.make(&key(ProbeKind::Http, addr, |p| {
            p.expect_status = (204, 204)
        }));
        assert_eq!(
            p.check().await,
            Err(ProbeError::Status {
                got: 200,
                lo: 204,
                hi: 204
            })
        );
        let requests = t.join().expect("server");
        assert!(
            requests[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(
            requests[0]
                .to_ascii_lowercase()
                .contains(&format!("host: web.example.com:{}\r\n", addr.port())),
            "{}",
            requests[0]
        );
    }

    #[tokio::test]
    async fn tcp_and_refused() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let probes = Probes::new();
        let p = probes.make(&key(ProbeKind::Tcp, addr, |_| {}));
        assert!(p.check().await.is_ok());
        drop(l);
        assert!(matches!(p.check().await, Err(ProbeError::Connect { .. })));
        let p = probes.make(&key(ProbeKind::Http, addr, |_| {}));
        assert!(matches!(p.check().await, Err(ProbeError::Connect { .. })));
    }

    #[test]
    fn broken_specs_fail_with_a_reason() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let probes = Probes::new();
        let missing = key(ProbeKind::Https, addr, |p| {
            p.ca = Some("/nonexistent/ca.pem".into())
        });
        match probes.make(&missing) {
            Target::Broken(ProbeError::Ca { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/ca.pem"))
            }
            _ => panic!("expected a broken probe"),
        }
        let bad_host = key(ProbeKind::Http, addr, |p| p.host = Some("a\nb".into()));
        assert!(matches!(
            probes.make(&bad_host),
            Target::Broken(ProbeError::Invalid(_))
        ));
    }

    #[test]
    fn labels() {
        let k = key(
            ProbeKind::Tcp,
            "127.0.0.9:8443".parse().expect("addr"),
            |_| {},
        );
        assert_eq!(endpoint_label(&k), "127.0.0.9:8443");
        assert_eq!(kind_label(k.probe.kind), "tcp");
    }
}
