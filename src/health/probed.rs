//! The endpoints a catalog probes, computed once when it is compiled: what the scheduler runs a
//! task for, and the numbering the scheduler's reports and the publisher's health vector share.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smallvec::SmallVec;

use crate::catalog::names::NameHasher;
use crate::snapshot::compile::{CCluster, CDyn, EndpointKey};

/// One probed endpoint of a compiled catalog. Eight bytes: a large catalog has hundreds of
/// thousands (its address and probe are `Compiled::endpoints[id]`).
#[derive(Debug, Clone, Copy)]
pub struct Probed {
    /// Endpoint id: index into `Compiled::endpoints` and the health vector.
    pub id: u32,
    /// Index into `ProbeSet::labels`.
    label: u32,
}

/// Every probed endpoint of one compiled catalog.
#[derive(Debug, Default, Clone)]
pub struct ProbeSet {
    /// Which compile numbered these ids (a process-wide count, not the snapshot generation):
    /// a health report names it, so that one made against an earlier catalog's ids is never
    /// applied to the wrong endpoint.
    pub generation: u64,
    /// By id.
    pub probed: Vec<Probed>,
    /// The distinct `cluster` labels: the cluster(s) whose records use an address, joined
    /// with ",".
    labels: Vec<Arc<str>>,
    /// Longest probe interval and timeout among them.
    pub longest_interval: Duration,
    pub longest_timeout: Duration,
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl ProbeSet {
    /// From the compiled endpoint table (`endpoints[id]`) and the names that use the ids.
    pub fn build<'a>(
        endpoints: &[EndpointKey],
        dyns: impl IntoIterator<Item = &'a CDyn>,
        clusters: &[CCluster],
    ) -> ProbeSet {
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
        let mut labels: HashMap<SmallVec<[u32; 2]>, u32, NameHasher> = HashMap::default();
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
            let label = *labels.entry(cl).or_insert_with_key(|cl| {
                let names: Vec<&str> = cl
                    .iter()
                    .map(|c| clusters[*c as usize].name.as_str())
                    .collect();
                set.labels.push(names.join(",").into());
                (set.labels.len() - 1) as u32
            });
            set.longest_interval = set.longest_interval.max(key.probe.interval);
            set.longest_timeout = set.longest_timeout.max(key.probe.timeout);
            set.probed.push(Probed {
                id: id as u32,
                label,
            });
        }
        set
    }

    /// The `cluster` label of a probed endpoint.
    pub fn cluster(&self, p: &Probed) -> &Arc<str> {
        &self.labels[p.label as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::spec::{ProbeKind, ProbeSpec};
    use crate::snapshot::compile::{Addr, CTarget};
    use std::net::{IpAddr, Ipv4Addr};

    fn key(last: u8, kind: ProbeKind, interval_ms: u64) -> EndpointKey {
        EndpointKey {
            addr: IpAddr::from([192, 0, 2, last]),
            probe: Arc::new(ProbeSpec {
                kind,
                port: 80,
                path: "/".into(),
                host: None,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(interval_ms / 2),
                rise: 1,
                fall: 1,
                expect_status: (200, 399),
                expect_body: None,
                insecure: false,
                ca: None,
            }),
        }
    }

    fn target(cluster: u32, ids: &[u32]) -> CTarget {
        CTarget {
            cluster,
            v4: ids
                .iter()
                .map(|id| Addr {
                    ip: Ipv4Addr::new(192, 0, 2, *id as u8),
                    endpoint: *id,
                })
                .collect(),
            v6: Default::default(),
            hostname: None,
            weight: 1,
            ready: true,
        }
    }

    fn name(targets: Vec<CTarget>) -> CDyn {
        CDyn {
            ttl: 30,
            policy: Default::default(),
            all_down: Default::default(),
            targets: targets.into_iter().collect(),
            failover: Default::default(),
            fallback: None,
            source: 0,
            merged: None,
            probe_interval_ms: 0,
        }
    }

    #[test]
    fn probed_endpoints_with_their_clusters() {
        let endpoints = vec![
            key(0, ProbeKind::Http, 1000),
            key(1, ProbeKind::None, 1000),
            key(2, ProbeKind::Tcp, 3000),
            key(3, ProbeKind::Https, 500),
        ];
        let clusters: Vec<CCluster> = ["west", "east"]
            .into_iter()
            .map(|n| CCluster {
                name: n.into(),
                unit: None,
            })
            .collect();
        // Address 2 is shared by both clusters (and named twice by one); 3 by no name.
        let dyns = vec![
            name(vec![target(0, &[0, 1, 2]), target(1, &[2])]),
            name(vec![target(0, &[2])]),
        ];
        let set = ProbeSet::build(&endpoints, &dyns, &clusters);
        let got: Vec<(u32, &str)> = set
            .probed
            .iter()
            .map(|p| (p.id, &**set.cluster(p)))
            .collect();
        assert_eq!(got, vec![(0, "west"), (2, "east,west"), (3, "")]);
        assert_eq!(set.longest_interval, Duration::from_millis(3000));
        assert_eq!(set.longest_timeout, Duration::from_millis(1500));
        let again = ProbeSet::build(&endpoints, &dyns, &clusters);
        assert_ne!(
            again.generation, set.generation,
            "each compile numbers its ids"
        );
    }
}
