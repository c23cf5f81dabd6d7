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

use crate::client::{AdminClient, ClientError};
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

/// Starts polling every peer: the static ones, and with `dns` (NAME:PORT, e.g. a headless
/// Service) every address it resolves to, re-resolved every few intervals (pods come and go).
/// The task ends with `shutdown`.
pub fn start(
    peers: Vec<String>,
    dns: Option<String>,
    interval: Duration,
    token: Option<String>,
    publisher: PublisherHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // A request may take an interval, at least 2 s: a blackholed peer holds only its own
        // poller, and a merely slow one (a loaded node) is still heard; freshness counts from
        // the last answer, so a long timeout never makes a peer look fresher than it is.
        let timeout = interval.max(Duration::from_secs(2));
        let client = match reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the peer HTTP client: no health exchange");
                return;
            }
        };
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        let resolve_every = (interval * 5).max(Duration::from_secs(5));
        loop {
            let mut wanted: Vec<String> = peers.clone();
            if let Some(name) = &dns {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => wanted.extend(addrs.map(|a| a.to_string())),
                    // Keep polling the peers already known: their views age out by themselves.
                    Err(e) => {
                        tracing::warn!(peers_dns = %name, error = %e, "cannot resolve peers");
                        wanted.extend(running.keys().cloned());
                    }
                }
            }
            wanted.sort();
            wanted.dedup();
            let gone: Vec<String> = running
                .keys()
                .filter(|p| !wanted.contains(p))
                .cloned()
                .collect();
            for p in gone {
                if let Some(t) = running.remove(&p) {
                    t.abort();
                }
                tracing::info!(peer = %p, "peer gone");
                publisher.send(Update::PeerGone(p));
            }
            for p in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(p) {
                    let p = slot.key().clone();
                    tracing::info!(peer = %p, "polling peer observations");
                    let peer = AdminClient::with_http(&p, token.as_deref(), client.clone());
                    slot.insert(tokio::spawn(poll(p, peer, interval, publisher.clone())));
                }
            }
            if dns.is_none() {
                let _ = shutdown.changed().await;
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(resolve_every) => {}
                _ = shutdown.changed() => break,
            }
        }
        for (_, t) in running {
            t.abort();
        }
    })
}

/// Polls one peer every interval and hands every result, answered or not, to the publisher
/// (a peer named wrongly fails every poll, as an unreachable one does).
async fn poll(
    peer: String,
    client: Result<AdminClient, ClientError>,
    interval: Duration,
    publisher: PublisherHandle,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        tick.tick().await;
        let view = match &client {
            Ok(c) => c.observations().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
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
}
