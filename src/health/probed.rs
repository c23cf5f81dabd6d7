//! The endpoints a catalog probes, computed once when it is compiled: what the scheduler runs a
//! task for, and the numbering the scheduler's reports and the publisher's health vector share.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smallvec::SmallVec;

use crate::snapshot::compile::{CCluster, CDyn, EndpointKey};

/// One probed endpoint of a compiled catalog.
#[derive(Debug, Clone)]
pub struct Probed {
    /// Endpoint id: index into `Compiled::endpoints` and the health vector.
    pub id: u32,
    pub key: EndpointKey,
    /// Cluster(s) whose records use the address, joined with ",": the `cluster` label.
    pub cluster: Arc<str>,
}

/// Every probed endpoint of one compiled catalog.
#[derive(Debug, Default)]
pub struct ProbeSet {
    /// Which compile numbered these ids (a process-wide count, not the snapshot generation):
    /// a health report names it, so that one made against an earlier catalog's ids is never
    /// applied to the wrong endpoint.
    pub generation: u64,
    /// By id.
    pub probed: Vec<Probed>,
    /// Longest probe interval and timeout among them.
    pub longest_interval: Duration,
    pub longest_timeout: Duration,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl ProbeSet {
    /// From the compiled endpoint table (`endpoints[id]`) and the names that use the ids.
    pub fn build(endpoints: &[EndpointKey], dyns: &[CDyn], clusters: &[CCluster]) -> ProbeSet {
        // Clusters of each id, deduplicated (most addresses belong to one cluster).
        let mut of: Vec<SmallVec<[u32; 2]>> = vec![SmallVec::new(); endpoints.len()];
        for d in dyns {
            for t in &d.targets {
                if clusters.get(t.cluster as usize).is_none() {
                    continue;
                }
                let ids = t.v4.iter().map(|a| a.endpoint);
                for id in ids.chain(t.v6.iter().map(|a| a.endpoint)) {
                    if let Some(list) = of.get_mut(id as usize)
                        && !list.contains(&t.cluster)
                    {
                        list.push(t.cluster);
                    }
                }
            }
        }
        // Few distinct cluster sets: one label string each.
        let mut labels: HashMap<SmallVec<[u32; 2]>, Arc<str>> = HashMap::new();
        let mut set = ProbeSet {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            ..ProbeSet::default()
        };
        for (id, key) in endpoints.iter().enumerate() {
            if !key.probed() {
                continue;
            }
            let mut cl = std::mem::take(&mut of[id]);
            cl.sort_unstable_by(|a, b| clusters[*a as usize].name.cmp(&clusters[*b as usize].name));
            let cluster = labels
                .entry(cl)
                .or_insert_with_key(|cl| {
                    let names: Vec<&str> = cl
                        .iter()
                        .map(|c| clusters[*c as usize].name.as_str())
                        .collect();
                    names.join(",").into()
                })
                .clone();
            set.longest_interval = set.longest_interval.max(key.probe.interval);
            set.longest_timeout = set.longest_timeout.max(key.probe.timeout);
            set.probed.push(Probed {
                id: id as u32,
                key: key.clone(),
                cluster,
            });
        }
        set
    }
}
