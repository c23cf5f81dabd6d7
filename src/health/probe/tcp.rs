//! TCP probe: the target accepts a connection on the probe port.

use std::net::SocketAddr;

use super::{Kind, Probe, ProbeError};
use crate::snapshot::compile::EndpointKey;

pub struct Tcp;

impl Kind for Tcp {
    const NAME: &'static str = "tcp";
    const DEFAULT_PORT: u16 = 80;
    type Shared = ();
    type Probe = TcpProbe;

    fn build(_: &(), key: &EndpointKey) -> Result<TcpProbe, ProbeError> {
        Ok(TcpProbe(SocketAddr::new(key.addr, key.probe.port)))
    }
}

pub struct TcpProbe(SocketAddr);

impl Probe for TcpProbe {
    async fn check(&self) -> Result<String, ProbeError> {
        let addr = self.0;
        // Connect and close: the target accepted a connection, which is all a TCP probe asks.
        tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| "TCP connect".to_string())
            .map_err(|e| ProbeError::Connect {
                addr,
                message: e.to_string(),
            })
    }
}
