//! The one immutable snapshot every query reads: compiled catalog, health and GeoIP together,
//! published with a single `ArcSwap::store` by the publisher (the only writer).

pub mod compile;
pub mod incremental;
pub mod publisher;
pub mod reaper;

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::geo::GeoDb;
use compile::{CDyn, CTarget, Compiled};

/// Health as the query path sees it, aligned with the compiled tables' indices.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    /// By endpoint id (`Compiled::endpoints`).
    pub endpoint_up: Vec<bool>,
    /// By cluster index (`Compiled::clusters`): whole-cluster drains.
    pub cluster_drained: Vec<bool>,
    /// (name index `CDyn::source`, cluster index) pairs taken out by drains scoped to
    /// records, sorted; empty unless such a drain holds, so the usual check is one length test.
    pub scoped_drains: Arc<Vec<(u32, u32)>>,
}

impl HealthView {
    pub fn all_up(c: &Compiled) -> HealthView {
        HealthView {
            endpoint_up: vec![true; c.endpoints.len()],
            cluster_drained: vec![false; c.clusters.len()],
            scoped_drains: Arc::default(),
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

    /// Whether this target of this name is out of answers by a drain: its whole cluster, or a
    /// drain scoped to the record the name comes from.
    #[inline]
    pub fn target_drained(&self, d: &CDyn, t: &CTarget) -> bool {
        self.drained(t.cluster)
            || (!self.scoped_drains.is_empty()
                && self
                    .scoped_drains
                    .binary_search(&(d.source, t.cluster))
                    .is_ok())
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

/// The labels of the query-path series come from the catalog served (metrics knows no
/// snapshot type).
impl crate::metrics::CatalogLabels for Snapshot {
    fn catalog_id(&self) -> usize {
        Arc::as_ptr(&self.compiled) as usize
    }

    fn zone_labels(&self) -> Vec<String> {
        self.compiled
            .zones
            .iter()
            .map(|z| z.name.to_ascii())
            .collect()
    }

    fn cluster_labels(&self) -> Vec<String> {
        self.compiled
            .clusters
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    }

    fn all_down(&self, dyn_index: u32) -> crate::model::AllDown {
        self.compiled
            .dyns
            .get(dyn_index as usize)
            .map(|d| d.all_down)
            .unwrap_or_default()
    }
}
