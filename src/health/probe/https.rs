//! HTTPS probe, through reqwest (rustls): the TLS handshake dominates a probe's cost anyway.
//!
//! Clients are reused — one per distinct TLS setting — so TLS configuration and root stores
//! are built once, not per probe; none keeps idle connections (`pool_max_idle_per_host(0)`),
//! so every probe still connects afresh. A probe with `probe-host` connects to the VIP but
//! presents the host name (SNI, certificate name and Host header); reqwest can only pin a name
//! to an address per client, so such an endpoint gets a client of its own, built once when its
//! probing starts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reqwest::header::{HOST, HeaderValue};

use super::http::{Expect, host_header, probe_host};
use super::{Kind, PROBE_USER_AGENT, Probe, ProbeError, error_chain};
use crate::health::spec::ProbeSpec;
use crate::snapshot::compile::EndpointKey;

pub struct Https;

impl Kind for Https {
    const NAME: &'static str = "https";
    const DEFAULT_PORT: u16 = 443;
    type Shared = Clients;
    type Probe = HttpsProbe;

    fn build(clients: &Clients, key: &EndpointKey) -> Result<HttpsProbe, ProbeError> {
        let spec: &ProbeSpec = &key.probe;
        let addr = SocketAddr::new(key.addr, spec.port);
        let tls = TlsKey {
            insecure: spec.insecure,
            ca: spec.ca.clone(),
        };
        let named_host = probe_host(spec).filter(|h| h.parse::<IpAddr>().is_err());
        let (url, client, host_header) = match named_host {
            // A host name: it goes in the URL (SNI, certificate check, Host) and the client is
            // pinned to resolve it to this endpoint's address.
            Some(h) => (
                format!("https://{h}:{}{}", spec.port, spec.path),
                client(&tls, Some((h, addr)))?,
                None,
            ),
            // Otherwise the URL holds the address; an IP literal host only changes the Host
            // header.
            None => {
                let header = host_header(spec, Self::DEFAULT_PORT)?;
                (
                    format!("https://{addr}{}", spec.path),
                    clients.shared(&tls)?,
                    header,
                )
            }
        };
        let url = reqwest::Url::parse(&url)
            .map_err(|e| ProbeError::Invalid(format!("URL {url:?}: {e}")))?;
        Ok(HttpsProbe {
            client,
            url,
            addr,
            host_header,
            expect: Expect::of(spec),
        })
    }
}

pub struct HttpsProbe {
    client: reqwest::Client,
    url: reqwest::Url,
    addr: SocketAddr,
    host_header: Option<HeaderValue>,
    expect: Expect,
}

impl Probe for HttpsProbe {
    async fn check(&self) -> Result<String, ProbeError> {
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
        let mut judge = self.expect.judge(got)?;
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

/// What makes two HTTPS clients differ.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TlsKey {
    insecure: bool,
    ca: Option<PathBuf>,
}

/// The HTTPS clients probes share, one per TLS setting.
#[derive(Default)]
pub struct Clients(Mutex<HashMap<TlsKey, reqwest::Client>>);

impl Clients {
    fn shared(&self, tls: &TlsKey) -> Result<reqwest::Client, ProbeError> {
        // A poisoned lock only means another probe panicked while inserting; the map is
        // still usable.
        let mut clients = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(tls) {
            return Ok(c.clone());
        }
        let c = client(tls, None)?;
        clients.insert(tls.clone(), c.clone());
        Ok(c)
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
