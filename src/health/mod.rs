//! Health: what a probe is (`spec`), the probes (`probe/`, one file per kind), the endpoints a
//! catalog probes (`probed`), the per-endpoint state machine (`state`), the scheduler that runs
//! probes and reports transitions by endpoint id, the publisher's bookkeeping of them
//! (`ledger`), and the quorum of several replicas' views (`quorum`, `exchange`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::snapshot::compile::EndpointKey;

pub mod exchange;
pub mod ledger;
pub mod probe;
pub mod probed;
pub mod quorum;
pub mod scheduler;
pub mod spec;
pub mod state;

/// What the admin API shows about one endpoint's probing.
#[derive(Debug, Clone, Default)]
pub struct EndpointStatus {
    pub up: bool,
    pub last_ok: bool,
    pub last_at: Option<SystemTime>,
    pub last_latency: Option<Duration>,
    pub last_error: Option<String>,
    /// Consecutive results equal to the last one.
    pub consecutive: u32,
    /// When the current state began.
    pub since: Option<SystemTime>,
}

/// Probe results by endpoint, written by the scheduler, read by the admin API (never by the
/// query path, which sees health only through the snapshot).
#[derive(Debug, Clone, Default)]
pub struct HealthStatus(Arc<RwLock<HashMap<EndpointKey, EndpointStatus>>>);

impl HealthStatus {
    pub fn get(&self, k: &EndpointKey) -> Option<EndpointStatus> {
        self.0.read().ok()?.get(k).cloned()
    }

    pub fn update(&self, k: &EndpointKey, f: impl FnOnce(&mut EndpointStatus)) {
        if let Ok(mut m) = self.0.write() {
            f(m.entry(k.clone()).or_default());
        }
    }

    pub fn retain(&self, keep: impl Fn(&EndpointKey) -> bool) {
        if let Ok(mut m) = self.0.write() {
            m.retain(|k, _| keep(k));
        }
    }
}
