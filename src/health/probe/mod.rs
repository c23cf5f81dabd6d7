//! Probes: one check of one endpoint, success (with a short detail) or a typed failure. A probe
//! knows nothing about thresholds, intervals or timeouts — the scheduler times it and the state
//! machine decides what a result means.
//!
//! One file per probe kind (`http.rs`, `https.rs`, `tcp.rs`), each a [`Kind`]; the
//! [`probe_kinds!`] line below registers it, which makes its `ProbeKind` variant, its name in
//! annotations and labels, and its arm of the dispatch. Dispatch is a plain enum `match`
//! ([`BuiltProbe`]), no trait object: a probe costs what its own check costs.
//!
//! Every probe opens a fresh connection: a probe that rides on an idle keep-alive connection
//! proves nothing about the target accepting new ones.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

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

/// One endpoint's check.
pub trait Probe: Send + Sync + 'static {
    /// Runs one check. Ok carries a short description of the success (e.g. `HTTP 200`).
    fn check(&self) -> impl Future<Output = Result<String, ProbeError>> + Send;
}

/// Makes the probe for an endpoint; the scheduler calls it once when probing starts.
pub trait ProbeFactory: Send + Sync + 'static {
    type Probe: Probe;
    fn make(&self, key: &EndpointKey) -> Self::Probe;
}

/// One probe kind: a file of its own under `probe/`, registered in [`probe_kinds!`].
pub trait Kind {
    /// Its name in `meridian.io/probe` and `spec.health.probe`, the API and metric labels.
    const NAME: &'static str;
    /// The port probed when neither the record nor the defaults name one.
    const DEFAULT_PORT: u16;
    /// What every probe of the kind shares (e.g. HTTP clients), made once per [`Probes`].
    type Shared: Default + Send + Sync + 'static;
    /// The probe of one endpoint.
    type Probe: Probe;
    /// Builds the probe of one endpoint, once when its probing starts. An error makes a probe
    /// that fails with it every time.
    fn build(shared: &Self::Shared, key: &EndpointKey) -> Result<Self::Probe, ProbeError>;
}

/// The registry: `Variant => module::Kind`, one line per probe kind. Generates the module
/// declarations, [`ProbeKind`] (with `None`: not probed), the dispatch enum [`BuiltProbe`] and
/// the state the kinds share.
macro_rules! probe_kinds {
    ($($variant:ident => $module:ident :: $kind:ident,)+) => {
        $(pub mod $module;)+

        /// A probe kind, named as in `meridian.io/probe` (`none`: not probed).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ProbeKind {
            $($variant,)+
            None,
        }

        impl ProbeKind {
            /// Every kind, `None` last.
            pub const ALL: &[ProbeKind] = &[$(ProbeKind::$variant,)+ ProbeKind::None];

            pub fn name(self) -> &'static str {
                match self {
                    $(ProbeKind::$variant => <$module::$kind as Kind>::NAME,)+
                    ProbeKind::None => "none",
                }
            }

            /// The port probed when neither the record nor the defaults name one.
            pub fn default_port(self) -> u16 {
                match self {
                    $(ProbeKind::$variant => <$module::$kind as Kind>::DEFAULT_PORT,)+
                    ProbeKind::None => 80,
                }
            }
        }

        /// The probe built for one endpoint: its kind's, or one that cannot be built.
        pub enum BuiltProbe {
            $($variant(Box<<$module::$kind as Kind>::Probe>),)+
            /// A probe that could not be built: every check fails with this error.
            Broken(ProbeError),
        }

        impl Probe for BuiltProbe {
            async fn check(&self) -> Result<String, ProbeError> {
                match self {
                    $(BuiltProbe::$variant(p) => p.check().await,)+
                    BuiltProbe::Broken(e) => Err(e.clone()),
                }
            }
        }

        /// What each kind's probes share.
        #[derive(Default)]
        #[allow(non_snake_case)]
        struct SharedByKind {
            $($variant: <$module::$kind as Kind>::Shared,)+
        }

        impl ProbeFactory for Probes {
            type Probe = BuiltProbe;

            fn make(&self, key: &EndpointKey) -> BuiltProbe {
                let built = match key.probe.kind {
                    $(ProbeKind::$variant => {
                        <$module::$kind as Kind>::build(&self.shared.$variant, key)
                            .map(|p| BuiltProbe::$variant(Box::new(p)))
                    })+
                    ProbeKind::None => Err(ProbeError::NotProbed),
                };
                built.unwrap_or_else(BuiltProbe::Broken)
            }
        }
    };
}

probe_kinds! {
    Http => http::Http,
    Https => https::Https,
    Tcp => tcp::Tcp,
}

impl FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(k) = ProbeKind::ALL.iter().find(|k| k.name() == s) {
            return Ok(*k);
        }
        // "expected http, https, tcp or none"
        let names: Vec<&str> = ProbeKind::ALL.iter().map(|k| k.name()).collect();
        let (last, rest) = names.split_last().unwrap_or((&"none", &[]));
        Err(format!(
            "unknown probe {s:?} (expected {} or {last})",
            rest.join(", ")
        ))
    }
}

impl serde::Serialize for ProbeKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As a derived unit variant would be: the name as a string in JSON.
        let index = ProbeKind::ALL.iter().position(|k| k == self).unwrap_or(0);
        s.serialize_unit_variant("ProbeKind", index as u32, self.name())
    }
}

/// Builds the real probes; each kind's shared state (e.g. HTTPS clients) is made once here.
#[derive(Default)]
pub struct Probes {
    shared: SharedByKind,
}

impl Probes {
    pub fn new() -> Probes {
        Probes::default()
    }
}

const PROBE_USER_AGENT: &str = concat!("meridian-health/", env!("CARGO_PKG_VERSION"));

/// Error display with its whole cause chain: reqwest's and hyper's top-level messages ("error
/// sending request for url ...") hide the cause the operator needs (e.g. "... invalid peer
/// certificate: UnknownIssuer").
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

/// The `endpoint` metric label and log field: address and port probed.
pub fn endpoint_label(key: &EndpointKey) -> String {
    SocketAddr::new(key.addr, key.probe.port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::ProbeSpec;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    pub(super) fn key(
        kind: ProbeKind,
        addr: SocketAddr,
        f: impl FnOnce(&mut ProbeSpec),
    ) -> EndpointKey {
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
            BuiltProbe::Broken(ProbeError::Ca { path, .. }) => {
                assert_eq!(path, PathBuf::from("/nonexistent/ca.pem"))
            }
            _ => panic!("expected a broken probe"),
        }
        let bad_host = key(ProbeKind::Http, addr, |p| p.host = Some("a\nb".into()));
        assert!(matches!(
            probes.make(&bad_host),
            BuiltProbe::Broken(ProbeError::Invalid(_))
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
        assert_eq!(k.probe.kind.name(), "tcp");
    }

    #[test]
    fn kinds_by_name() {
        for k in ProbeKind::ALL {
            assert_eq!(k.name().parse::<ProbeKind>(), Ok(*k));
            // The wire key of every endpoint hashes this form: it must not change.
            assert_eq!(
                serde_json::to_string(k).expect("json"),
                format!("\"{}\"", k.name())
            );
        }
        assert_eq!(
            "udp".parse::<ProbeKind>(),
            Err("unknown probe \"udp\" (expected http, https, tcp or none)".to_string())
        );
        assert_eq!(ProbeKind::Https.default_port(), 443);
        assert_eq!(ProbeKind::Http.default_port(), 80);
    }
}
