//! Which cluster answers: pure functions of a compiled name, health, the client's position and a
//! random number. No tokio, no clock, no allocation on the query path.

use crate::model::{AllDown, Policy};
use crate::snapshot::HealthView;
use crate::snapshot::compile::{CCluster, CDyn, CTarget};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// One target; `any_health` answers its addresses whatever their health (all-down nearest).
    One { target: u32, any_health: bool },
    /// Every healthy target (policy `all`, or an unplaceable client with no default cluster).
    AllHealthy,
    /// Every target, healthy or not (all-down policy `all`).
    AllTargets,
    /// Nothing healthy here: CNAME to the wider name.
    Fallback,
    /// NOERROR without addresses (no target has this family, or all-down policy `empty`).
    Empty,
    /// All-down policy `servfail`.
    Servfail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub selection: Selection,
    /// The answer depends on where the client is (so the ECS scope matters).
    pub located: bool,
    /// Some eligible target is down or drained.
    pub degraded: bool,
    /// No eligible target is healthy and the all-down policy decided.
    pub all_down: bool,
    /// Nearest eligible target ignoring health (geo policy): differs from the chosen one on a
    /// failover.
    pub nearest: Option<u32>,
}

#[inline]
pub fn eligible(t: &CTarget, fam: Family) -> bool {
    let has = match fam {
        Family::V4 => !t.v4.is_empty(),
        Family::V6 => !t.v6.is_empty(),
    };
    has || (t.v4.is_empty() && t.v6.is_empty() && t.hostname.is_some())
}

/// Eligible, not drained, and with at least one address of the family up (hostname-only
/// targets cannot be probed and count as up).
#[inline]
pub fn healthy(d: &CDyn, t: &CTarget, fam: Family, h: &HealthView) -> bool {
    if !t.ready || h.target_drained(d, t) {
        return false;
    }
    match fam {
        Family::V4 if !t.v4.is_empty() => t.v4.iter().any(|a| h.up(a.endpoint)),
        Family::V6 if !t.v6.is_empty() => t.v6.iter().any(|a| h.up(a.endpoint)),
        _ => t.v4.is_empty() && t.v6.is_empty() && t.hostname.is_some(),
    }
}

#[inline]
fn score(t: &CTarget, clusters: &[CCluster], client: &[f64; 3]) -> f64 {
    match clusters.get(t.cluster as usize).and_then(|c| c.unit) {
        Some(u) => u[0] * client[0] + u[1] * client[1] + u[2] * client[2],
        // Unlocated clusters rank after every located one.
        None => -2.0,
    }
}

/// Nearest target passing `keep`; ties go to the earlier target (stable).
fn nearest(
    d: &CDyn,
    clusters: &[CCluster],
    client: &[f64; 3],
    mut keep: impl FnMut(&CTarget) -> bool,
) -> Option<u32> {
    let mut best: Option<(u32, f64)> = None;
    for (i, t) in d.targets.iter().enumerate() {
        if !keep(t) {
            continue;
        }
        let s = score(t, clusters, client);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i as u32, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Picks the answer for one name. `client` is the client's unit vector (None: unplaceable),
/// `default_client` the stand-in position for unplaceable clients, `rand` a uniform random
/// number for the weighted policy.
pub fn select(
    d: &CDyn,
    fam: Family,
    clusters: &[CCluster],
    health: &HealthView,
    client: Option<[f64; 3]>,
    default_client: Option<[f64; 3]>,
    rand: u32,
) -> Outcome {
    let mut n_eligible = 0usize;
    let mut n_healthy = 0usize;
    for t in &d.targets {
        if eligible(t, fam) {
            n_eligible += 1;
            if healthy(d, t, fam, health) {
                n_healthy += 1;
            }
        }
    }
    let degraded = n_healthy < n_eligible;
    let geo = d.policy == Policy::Geo;
    let position = client.or(default_client);
    let mut out = Outcome {
        selection: Selection::Empty,
        located: false,
        degraded,
        all_down: false,
        nearest: None,
    };
    if geo {
        out.located = true;
        if let Some(p) = &position {
            out.nearest = nearest(d, clusters, p, |t| eligible(t, fam));
        }
    }
    if n_eligible == 0 {
        out.selection = if d.fallback.is_some() {
            Selection::Fallback
        } else {
            Selection::Empty
        };
        return out;
    }
    if n_healthy == 0 {
        if d.fallback.is_some() {
            out.selection = Selection::Fallback;
            return out;
        }
        out.all_down = true;
        // A drained cluster stays out even now: a drill must not be undone by an outage
        // elsewhere. Only when every cluster is drained do drains give way.
        let keep_drained = only_drained_left(d, fam, health);
        let candidate =
            |t: &CTarget| eligible(t, fam) && (keep_drained || !health.target_drained(d, t));
        out.selection = match d.all_down {
            AllDown::All => Selection::AllTargets,
            AllDown::Empty => Selection::Empty,
            AllDown::Servfail => Selection::Servfail,
            AllDown::Nearest => match (geo, &position) {
                (true, Some(p)) => match nearest(d, clusters, p, candidate) {
                    Some(target) => Selection::One {
                        target,
                        any_health: true,
                    },
                    None => Selection::AllTargets,
                },
                _ => match d
                    .failover
                    .iter()
                    .find(|&&i| candidate(&d.targets[i as usize]))
                {
                    Some(&target) => Selection::One {
                        target,
                        any_health: true,
                    },
                    None => Selection::AllTargets,
                },
            },
        };
        return out;
    }
    let ok = |t: &CTarget| eligible(t, fam) && healthy(d, t, fam, health);
    out.selection = match d.policy {
        Policy::All => Selection::AllHealthy,
        Policy::Geo => match position {
            Some(p) => match nearest(d, clusters, &p, ok) {
                Some(target) => Selection::One {
                    target,
                    any_health: false,
                },
                None => Selection::AllHealthy,
            },
            None => Selection::AllHealthy,
        },
        Policy::Failover => match d.failover.iter().find(|&&i| ok(&d.targets[i as usize])) {
            Some(&target) => Selection::One {
                target,
                any_health: false,
            },
            None => Selection::AllHealthy,
        },
        Policy::Weighted => {
            let total: u64 = d
                .targets
                .iter()
                .filter(|t| ok(t))
                .map(|t| u64::from(t.weight))
                .sum();
            if total == 0 {
                // Every healthy cluster has weight 0: fall back to the failover order.
                match d.failover.iter().find(|&&i| ok(&d.targets[i as usize])) {
                    Some(&target) => Selection::One {
                        target,
                        any_health: false,
                    },
                    None => Selection::AllHealthy,
                }
            } else {
                let mut pick = u64::from(rand) % total;
                let mut chosen = 0;
                for (i, t) in d.targets.iter().enumerate() {
                    if !ok(t) {
                        continue;
                    }
                    let w = u64::from(t.weight);
                    if pick < w {
                        chosen = i as u32;
                        break;
                    }
                    pick -= w;
                }
                Selection::One {
                    target: chosen,
                    any_health: false,
                }
            }
        }
    };
    out
}

/// True when every eligible target is drained: all-down answers may then use drained clusters.
pub fn only_drained_left(d: &CDyn, fam: Family, health: &HealthView) -> bool {
    d.targets
        .iter()
        .filter(|t| eligible(t, fam))
        .all(|t| health.target_drained(d, t))
}

/// One row of `explain`: a candidate with its distance and state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub target: u32,
    pub cluster: String,
    pub distance_km: Option<f64>,
    pub eligible: bool,
    pub healthy: bool,
    pub drained: bool,
}

/// Every candidate, nearest first (explain and the admin API; allocation is fine here).
pub fn candidates(
    d: &CDyn,
    fam: Family,
    clusters: &[CCluster],
    health: &HealthView,
    position: Option<[f64; 3]>,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = d
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let c = &clusters[t.cluster as usize];
            let distance_km = match (position, c.unit) {
                (Some(p), Some(u)) => Some(crate::geo::distance_from_dot(
                    p[0] * u[0] + p[1] * u[1] + p[2] * u[2],
                )),
                _ => None,
            };
            Candidate {
                target: i as u32,
                cluster: c.name.clone(),
                distance_km,
                eligible: eligible(t, fam),
                healthy: healthy(d, t, fam, health),
                drained: health.target_drained(d, t),
            }
        })
        .collect();
    out.sort_by(|a, b| match (a.distance_km, b.distance_km) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.target.cmp(&b.target),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoPoint;
    use crate::snapshot::compile::Addr;
    use std::net::Ipv4Addr;

    const NY: (f64, f64) = (40.71, -74.01);
    const HOU: (f64, f64) = (29.76, -95.37);
    const LA: (f64, f64) = (34.05, -118.24);
    const SF: (f64, f64) = (37.77, -122.42);
    const MIAMI: (f64, f64) = (25.76, -80.19);

    fn unit(p: (f64, f64)) -> [f64; 3] {
        GeoPoint::new(p.0, p.1).expect("valid").unit()
    }

    fn clusters() -> Vec<CCluster> {
        [
            ("new-york", Some(NY)),
            ("houston", Some(HOU)),
            ("los-angeles", Some(LA)),
            ("nowhere", None),
        ]
        .into_iter()
        .map(|(n, p)| CCluster {
            name: n.into(),
            unit: p.map(unit),
        })
        .collect()
    }

    fn dyn_name(policy: Policy, all_down: AllDown, fallback: bool) -> CDyn {
        let targets = (0..4)
            .map(|i| CTarget {
                cluster: i,
                v4: [Addr {
                    ip: Ipv4Addr::new(127, 0, 0, i as u8 + 1),
                    endpoint: i,
                }]
                .into(),
                v6: Default::default(),
                hostname: None,
                weight: [0, 1, 3, 0][i as usize],
                ready: true,
            })
            .collect();
        CDyn {
            ttl: 60,
            policy,
            all_down,
            targets,
            failover: [2, 0, 1, 3].into(),
            fallback: fallback.then(|| b"\x01x\x00"[..].into()),
            source: 0,
            merged: None,
            probe_interval_ms: 0,
        }
    }

    fn health(up: [bool; 4]) -> HealthView {
        HealthView {
            endpoint_up: up.to_vec(),
            cluster_drained: vec![false; 4],
            scoped_drains: Default::default(),
        }
    }

    fn pick(d: &CDyn, h: &HealthView, client: Option<(f64, f64)>) -> Selection {
        select(d, Family::V4, &clusters(), h, client.map(unit), None, 7).selection
    }

    fn one(target: u32) -> Selection {
        Selection::One {
            target,
            any_health: false,
        }
    }

    #[test]
    fn geo_picks_nearest_then_next_nearest() {
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        assert_eq!(pick(&d, &health([true; 4]), Some(SF)), one(2));
        assert_eq!(pick(&d, &health([true; 4]), Some(MIAMI)), one(1));
        assert_eq!(pick(&d, &health([true; 4]), Some((42.36, -71.06))), one(0));
        // Los Angeles down: San Francisco goes to Houston, the next nearest.
        let out = select(
            &d,
            Family::V4,
            &clusters(),
            &health([true, true, false, true]),
            Some(unit(SF)),
            None,
            0,
        );
        assert_eq!(out.selection, one(1));
        assert!(out.degraded);
        assert_eq!(out.nearest, Some(2));
        // Only the unlocated cluster is up: it is still chosen.
        assert_eq!(
            pick(&d, &health([false, false, false, true]), Some(SF)),
            one(3)
        );
    }

    #[test]
    fn drained_clusters_are_skipped() {
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        let mut h = health([true; 4]);
        h.cluster_drained[2] = true;
        assert_eq!(pick(&d, &h, Some(SF)), one(1));
    }

    #[test]
    fn unready_targets_are_down_for_their_name() {
        // Kubernetes readiness: Los Angeles has no ready endpoints for this record.
        let mut d = dyn_name(Policy::Geo, AllDown::All, false);
        d.targets[2].ready = false;
        assert_eq!(pick(&d, &health([true; 4]), Some(SF)), one(1));
        // A region name whose only target is unready falls back to the wider name.
        let mut d = dyn_name(Policy::Geo, AllDown::All, true);
        for t in &mut d.targets {
            t.ready = false;
        }
        assert_eq!(pick(&d, &health([true; 4]), Some(SF)), Selection::Fallback);
    }

    #[test]
    fn unplaceable_clients() {
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        assert_eq!(pick(&d, &health([true; 4]), None), Selection::AllHealthy);
        let out = select(
            &d,
            Family::V4,
            &clusters(),
            &health([true; 4]),
            None,
            Some(unit(NY)),
            0,
        );
        assert_eq!(out.selection, one(0));
    }

    #[test]
    fn all_down_policies() {
        let down = health([false; 4]);
        for (policy, want) in [
            (AllDown::All, Selection::AllTargets),
            (AllDown::Empty, Selection::Empty),
            (AllDown::Servfail, Selection::Servfail),
            (
                AllDown::Nearest,
                Selection::One {
                    target: 2,
                    any_health: true,
                },
            ),
        ] {
            let d = dyn_name(Policy::Geo, policy, false);
            let out = select(&d, Family::V4, &clusters(), &down, Some(unit(SF)), None, 0);
            assert_eq!(out.selection, want, "{policy:?}");
            assert!(out.all_down);
        }
        // A drained cluster stays out of all-down answers while another is merely down.
        let mut h = down.clone();
        h.cluster_drained[2] = true;
        let d = dyn_name(Policy::Geo, AllDown::Nearest, false);
        let out = select(&d, Family::V4, &clusters(), &h, Some(unit(SF)), None, 0);
        assert_eq!(
            out.selection,
            Selection::One {
                target: 1,
                any_health: true
            }
        );
        h.cluster_drained = vec![true; 4];
        let out = select(&d, Family::V4, &clusters(), &h, Some(unit(SF)), None, 0);
        assert_eq!(
            out.selection,
            Selection::One {
                target: 2,
                any_health: true
            },
            "every cluster drained: drains give way"
        );
        // Region/zone names fall back instead.
        let d = dyn_name(Policy::Geo, AllDown::All, true);
        assert_eq!(pick(&d, &down, Some(SF)), Selection::Fallback);
    }

    #[test]
    fn failover_weighted_all() {
        let d = dyn_name(Policy::Failover, AllDown::All, false);
        assert_eq!(pick(&d, &health([true; 4]), Some(SF)), one(2));
        assert_eq!(
            pick(&d, &health([true, true, false, true]), Some(SF)),
            one(0)
        );
        let d = dyn_name(Policy::Weighted, AllDown::All, false);
        // Weights 0,1,3,0: only targets 1 and 2 are ever chosen, 2 three times as often.
        let mut counts = [0u32; 4];
        for r in 0..400u32 {
            match select(
                &d,
                Family::V4,
                &clusters(),
                &health([true; 4]),
                None,
                None,
                r,
            )
            .selection
            {
                Selection::One { target, .. } => counts[target as usize] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts, [0, 100, 300, 0]);
        let d = dyn_name(Policy::All, AllDown::All, false);
        assert_eq!(
            pick(&d, &health([true; 4]), Some(SF)),
            Selection::AllHealthy
        );
    }

    #[test]
    fn family_without_addresses_is_empty_or_fallback() {
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        let out = select(
            &d,
            Family::V6,
            &clusters(),
            &health([true; 4]),
            None,
            None,
            0,
        );
        assert_eq!(out.selection, Selection::Empty);
        let d = dyn_name(Policy::Geo, AllDown::All, true);
        let out = select(
            &d,
            Family::V6,
            &clusters(),
            &health([true; 4]),
            None,
            None,
            0,
        );
        assert_eq!(out.selection, Selection::Fallback);
    }

    #[test]
    fn candidates_are_sorted_by_distance() {
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        let c = candidates(
            &d,
            Family::V4,
            &clusters(),
            &health([true; 4]),
            Some(unit(SF)),
        );
        let order: Vec<&str> = c.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(order, ["los-angeles", "houston", "new-york", "nowhere"]);
        assert!(c[0].distance_km.expect("located") < 600.0);
    }
}
