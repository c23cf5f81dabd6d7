//! The one immutable snapshot every query reads: compiled catalog, health and GeoIP together,
//! published with a single `ArcSwap::store` by the publisher (the only writer).

pub mod compile;
pub mod incremental;
pub mod publisher;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::geo::GeoDb;
use compile::Compiled;

/// Health as the query path sees it, aligned with the compiled tables' indices.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    /// By endpoint id (`Compiled::endpoints`).
    pub endpoint_up: Vec<bool>,
    /// By cluster index (`Compiled::clusters`).
    pub cluster_drained: Vec<bool>,
}

impl HealthView {
    pub fn all_up(c: &Compiled) -> HealthView {
        HealthView {
            endpoint_up: vec![true; c.endpoints.len()],
            cluster_drained: vec![false; c.clusters.len()],
        }
    }

    #[inline]
    pub fn up(&self, endpoint: u32) -> bool {
        self.endpoint_up
            .get(endpoint as usize)
            .copied()
            .unwrap_or(true)
    }

    #[inline]
    pub fn drained(&self, cluster: u32) -> bool {
        self.cluster_drained
            .get(cluster as usize)
            .copied()
            .unwrap_or(false)
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub published: SystemTime,
    pub compiled: Arc<Compiled>,
    pub health: Arc<HealthView>,
    pub geo: Option<Arc<GeoDb>>,
}

impl Snapshot {
    pub fn new(compiled: Arc<Compiled>, geo: Option<Arc<GeoDb>>) -> Snapshot {
        let health = Arc::new(HealthView::all_up(&compiled));
        Snapshot {
            generation: 1,
            published: SystemTime::now(),
            compiled,
            health,
            geo,
        }
    }
}

/// Where readers find the current snapshot.
pub type Shared = Arc<ArcSwap<Snapshot>>;
