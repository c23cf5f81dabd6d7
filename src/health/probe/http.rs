//! Plain HTTP probe: one hyper HTTP/1.1 exchange over a fresh tokio `TcpStream` — no
//! connection pool, connector stack or spawned connection task, which more than halves the CPU
//! of a probe (10k targets at a 1 s interval is the scale to hold). Also the status and body
//! expectations HTTPS shares.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use reqwest::header::{CONNECTION, HOST, HeaderValue, USER_AGENT};

use super::{Kind, MAX_BODY, PROBE_USER_AGENT, Probe, ProbeError, error_chain};
use crate::health::spec::ProbeSpec;
use crate::snapshot::compile::EndpointKey;

pub struct Http;

impl Kind for Http {
    const NAME: &'static str = "http";
    const DEFAULT_PORT: u16 = 80;
    type Shared = ();
    type Probe = HttpProbe;

    fn build(_: &(), key: &EndpointKey) -> Result<HttpProbe, ProbeError> {
        let spec: &ProbeSpec = &key.probe;
        let addr = SocketAddr::new(key.addr, spec.port);
        // A host only changes the Host header: plain HTTP always connects to the address.
        let host_header = host_header(spec, Self::DEFAULT_PORT)?;
        let url = format!("http://{addr}{}", spec.path);
        // Parsed as a URL so that the request target is normalised as reqwest would send it.
        let url = reqwest::Url::parse(&url)
            .map_err(|e| ProbeError::Invalid(format!("URL {url:?}: {e}")))?;
        let mut target = url.path().to_string();
        if let Some(q) = url.query() {
            target.push('?');
            target.push_str(q);
        }
        // What reqwest would send: the URL's authority, the default port left out.
        let host = match host_header {
            Some(h) => h,
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
        Ok(HttpProbe {
            addr,
            target,
            host,
            expect: Expect::of(spec),
        })
    }
}

pub struct HttpProbe {
    addr: SocketAddr,
    /// Request target (path and query) and Host header.
    target: String,
    host: HeaderValue,
    expect: Expect,
}

impl Probe for HttpProbe {
    async fn check(&self) -> Result<String, ProbeError> {
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
        let req = hyper::Request::get(&self.target)
            .header(HOST, &self.host)
            .header(USER_AGENT, PROBE_USER_AGENT)
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeError::Invalid(format!("request: {e}")))?;
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(request_error)?;
            let got = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut judge = self.expect.judge(got)?;
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
}

/// The Host header `probe-host` asks for (with the port unless it is the scheme's default),
/// if any.
pub(super) fn host_header(
    spec: &ProbeSpec,
    default_port: u16,
) -> Result<Option<HeaderValue>, ProbeError> {
    let Some(h) = probe_host(spec) else {
        return Ok(None);
    };
    let v = if spec.port == default_port {
        h.to_string()
    } else {
        format!("{h}:{}", spec.port)
    };
    HeaderValue::from_str(&v)
        .map(Some)
        .map_err(|_| ProbeError::Invalid(format!("host {h:?} is not a valid Host header")))
}

/// `probe-host`, trimmed, without a trailing dot; None when unset or blank.
pub(super) fn probe_host(spec: &ProbeSpec) -> Option<&str> {
    spec.host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| h.trim_end_matches('.'))
}

/// What an HTTP(S) response must show: a status in range, and the body needle if set.
pub(super) struct Expect {
    status: (u16, u16),
    body: Option<String>,
}

impl Expect {
    pub(super) fn of(spec: &ProbeSpec) -> Expect {
        Expect {
            status: spec.expect_status,
            body: spec.expect_body.clone(),
        }
    }

    /// Checks the status; the body is then fed to the judge chunk by chunk.
    pub(super) fn judge(&self, got: u16) -> Result<Judge<'_>, ProbeError> {
        let (lo, hi) = self.status;
        if !(lo..=hi).contains(&got) {
            return Err(ProbeError::Status { got, lo, hi });
        }
        Ok(Judge {
            got,
            needle: self.body.as_deref(),
            body: Vec::new(),
        })
    }
}

/// Body expectations over a response read chunk by chunk.
pub(super) struct Judge<'a> {
    got: u16,
    needle: Option<&'a str>,
    body: Vec<u8>,
}

impl Judge<'_> {
    pub(super) fn feed(&mut self, chunk: &[u8]) {
        let room = (MAX_BODY + 1).saturating_sub(self.body.len());
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Decided before the body ends: no body expected, a match, or the read limit reached.
    pub(super) fn verdict(&self) -> Option<Result<String, ProbeError>> {
        let Some(needle) = self.needle else {
            return Some(Ok(format!("HTTP {}", self.got)));
        };
        if !self.body.is_empty() && contains(&self.body, needle.as_bytes()) {
            return Some(Ok(format!("HTTP {}, body matches", self.got)));
        }
        (self.body.len() > MAX_BODY).then(|| self.finish())
    }

    pub(super) fn finish(&self) -> Result<String, ProbeError> {
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
