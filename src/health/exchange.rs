//! The exchange of health observations between replicas: HTTP pull over the admin API.
//!
//! Each replica serves its own observations at `GET /api/v1/observations` (bearer token like
//! every other admin endpoint) and polls every peer's on an interval, each peer on a task of
//! its own so that one unreachable peer never delays the others. Every poll, answered or not,
//! goes to the publisher, which combines the views (see `quorum`) and ages out the silent.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::snapshot::publisher::{PublisherHandle, Update};

/// One replica's observations as exchanged: per endpoint wire key, (up, since when; Unix
/// seconds). Compact: about 40 bytes an endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireView {
    pub name: String,
    /// When the view was served (the server's clock; shown, never compared).
    pub at: f64,
    pub generation: u64,
    pub observations: HashMap<String, (bool, f64)>,
}

/// Starts polling every peer; the tasks end with `shutdown`.
pub fn start(
    peers: Vec<String>,
    interval: Duration,
    token: Option<String>,
    publisher: PublisherHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    // A request may take the whole interval, no longer: a blackholed peer must not hold a
    // poller past its next turn.
    let client = match reqwest::Client::builder()
        .timeout(interval.max(Duration::from_millis(200)))
        .connect_timeout(interval.max(Duration::from_millis(200)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the peer HTTP client: no health exchange");
            return Vec::new();
        }
    };
    peers
        .into_iter()
        .map(|peer| {
            let client = client.clone();
            let token = token.clone();
            let publisher = publisher.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let url = format!("http://{peer}/api/v1/observations");
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing: Option<String> = None;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = shutdown.changed() => return,
                    }
                    let view = tokio::select! {
                        v = fetch(&client, &url, token.as_deref()) => v,
                        _ = shutdown.changed() => return,
                    };
                    match &view {
                        Ok(_) if failing.is_some() => {
                            tracing::info!(peer = %peer, "peer observations reachable again");
                            failing = None;
                        }
                        Err(e) if failing.as_deref() != Some(e.as_str()) => {
                            tracing::warn!(peer = %peer, error = %e, "cannot fetch peer observations");
                            failing = Some(e.clone());
                        }
                        _ => {}
                    }
                    publisher.send(Update::Peer {
                        peer: peer.clone(),
                        view: view.ok(),
                    });
                }
            })
        })
        .collect()
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<WireView, String> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: bad observations: {e}"))
}
