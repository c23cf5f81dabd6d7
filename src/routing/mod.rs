//! Which cluster answers: pure functions of a compiled name, health, the client's position and a
//! random number. No tokio, no clock, no allocation on the query path.
//!
//! One policy per file, each registered once in [`POLICIES`]; [`select`] runs the part every
//! policy shares (no address of the family, nothing healthy, the all-down policies in
//! `all_down.rs`) and hands the rest to the name's policy. The [`Decision`] it returns carries
//! its [`Reason`], which `explain` prints as is.

mod all_down;

use std::fmt;

use crate::snapshot::HealthView;
use crate::snapshot::compile::{CCluster, CDyn, CTarget};

pub use all_down::AllDown;

/// One routing policy: its annotation value and how it picks among healthy targets.
pub struct PolicyDef {
    /// The `meridian.io/policy` value, metric label and explain text.
    pub name: &'static str,
    /// The answer depends on where the client is: the query path looks the client up (and
    /// scopes the ECS answer), and the all-down policy `nearest` means nearest to the client.
    pub needs_location: bool,
    /// Called only when some eligible target is healthy.
    pub select: fn(&Ctx<'_>) -> Decision,
}

/// Declares each policy's module (`<name>.rs`, holding `pub const DEF: PolicyDef`) and lists
/// its `DEF` in [`POLICIES`].
macro_rules! policies {
    ($($m:ident),+ $(,)?) => {
        $(mod $m;)+
        /// Every policy, in metric and error-message order; the first is the default.
        pub const POLICIES: &[PolicyDef] = &[$($m::DEF),+];
    };
}

// The registry: a new policy is a new file and its name here.
policies!(geo, failover, weighted, all);

// `Policy` indexes the registry with a u8.
const _: () = assert!(POLICIES.len() <= u8::MAX as usize);

/// How a name picks among its clusters (`meridian.io/policy`): an index into [`POLICIES`]
/// (the default, 0, is the first registered).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Policy(u8);

// Named like the enum variants they replace, so code that names one policy reads the same.
#[allow(non_upper_case_globals)]
impl Policy {
    pub const Geo: Policy = Policy::named("geo");
    pub const Failover: Policy = Policy::named("failover");
    pub const Weighted: Policy = Policy::named("weighted");
    pub const All: Policy = Policy::named("all");

    /// Every policy, for per-policy metrics.
    pub const ALL: [Policy; POLICIES.len()] = {
        let mut all = [Policy(0); POLICIES.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = Policy(i as u8);
            i += 1;
        }
        all
    };

    /// The registered policy called `name`; a typo fails the build.
    const fn named(name: &str) -> Policy {
        let mut i = 0;
        while i < POLICIES.len() {
            let n = POLICIES[i].name.as_bytes();
            let w = name.as_bytes();
            if n.len() == w.len() {
                let mut j = 0;
                while j < n.len() && n[j] == w[j] {
                    j += 1;
                }
                if j == n.len() {
                    return Policy(i as u8);
                }
            }
            i += 1;
        }
        panic!("no such policy")
    }

    #[inline]
    pub fn def(self) -> &'static PolicyDef {
        &POLICIES[self.0 as usize]
    }

    /// Position in [`Policy::ALL`], for metric arrays.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn as_str(self) -> &'static str {
        self.def().name
    }

    #[inline]
    pub fn needs_location(self) -> bool {
        self.def().needs_location
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match POLICIES.iter().position(|p| p.name == s) {
            Some(i) => Ok(Policy(i as u8)),
            None => {
                let names: Vec<&str> = POLICIES.iter().map(|p| p.name).collect();
                Err(format!(
                    "unknown policy {s:?} (expected {})",
                    one_of(&names)
                ))
            }
        }
    }
}

/// "a, b or c", for error messages.
fn one_of(names: &[&str]) -> String {
    match names.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Everything a policy may look at for one name and one query.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub d: &'a CDyn,
    pub fam: Family,
    pub clusters: &'a [CCluster],
    pub health: &'a HealthView,
    /// The client's unit vector (None: unplaceable, or the policy needs no location).
    pub client: Option<[f64; 3]>,
    /// The stand-in position for unplaceable clients (`defaultCluster`).
    pub default_client: Option<[f64; 3]>,
    /// A uniform random number (weighted policy).
    pub rand: u32,
}

impl Ctx<'_> {
    /// Where distances are measured from: the client, else the default cluster.
    #[inline]
    pub fn position(&self) -> Option<[f64; 3]> {
        self.client.or(self.default_client)
    }

    #[inline]
    pub fn eligible(&self, t: &CTarget) -> bool {
        eligible(t, self.fam)
    }

    /// Eligible and healthy.
    #[inline]
    pub fn ok(&self, t: &CTarget) -> bool {
        eligible(t, self.fam) && healthy(self.d, t, self.fam, self.health)
    }

    /// First target in the failover order passing `keep`.
    #[inline]
    pub fn first_in_order(&self, keep: impl Fn(&CTarget) -> bool) -> Option<u32> {
        self.d
            .failover
            .iter()
            .copied()
            .find(|&i| keep(&self.d.targets[i as usize]))
    }

    /// Nearest target to `p` passing `keep`; ties go to the earlier target (stable).
    pub fn nearest(&self, p: &[f64; 3], keep: impl Fn(&CTarget) -> bool) -> Option<u32> {
        let mut best: Option<(u32, f64)> = None;
        for (i, t) in self.d.targets.iter().enumerate() {
            if !keep(t) {
                continue;
            }
            let s = score(t, self.clusters, p);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i as u32, s));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Why an eligible target is not healthy.
    pub fn why_unhealthy(&self, target: u32) -> Unhealthy {
        let t = &self.d.targets[target as usize];
        if self.health.target_drained(self.d, t) {
            Unhealthy::Drained
        } else if !t.ready {
            Unhealthy::Unready
        } else {
            Unhealthy::Down
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// One target; `any_health` answers its addresses whatever their health (all-down nearest).
    One { target: u32, any_health: bool },
    /// Every healthy target.
    AllHealthy,
    /// Every eligible target, healthy or not (all-down policy `all`); drained ones only when
    /// `with_drained` (every eligible target is drained).
    AllTargets { with_drained: bool },
    /// Nothing healthy here: CNAME to the wider name.
    Fallback,
    /// NOERROR without addresses (no target has this family, or all-down policy `empty`).
    Empty,
    /// All-down policy `servfail`.
    Servfail,
}

impl Selection {
    /// Whether `t` is among the answered targets of a multi-target selection.
    #[inline]
    pub fn carries(&self, cx: &Ctx<'_>, t: &CTarget) -> bool {
        match *self {
            Selection::AllHealthy => cx.ok(t),
            Selection::AllTargets { with_drained } => {
                cx.eligible(t) && (with_drained || !cx.health.target_drained(cx.d, t))
            }
            _ => false,
        }
    }
}

/// Why an eligible target is not healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unhealthy {
    Down,
    Drained,
    /// Kubernetes readiness: no ready endpoints for this record.
    Unready,
}

impl Unhealthy {
    pub fn as_str(self) -> &'static str {
        match self {
            Unhealthy::Down => "down",
            Unhealthy::Drained => "drained",
            Unhealthy::Unready => "not ready",
        }
    }
}

/// Why the answer is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The nearest target is healthy and answers (geo).
    NearestHealthy,
    /// The nearest eligible target `from` is `why`; the nearest healthy one answers (geo).
    FailedOver { from: u32, why: Unhealthy },
    /// The first healthy target in the failover order (failover; weighted when every healthy
    /// target weighs 0).
    FirstInOrder,
    /// A random healthy target (weighted: in proportion to the weights).
    RandomPick,
    /// Every healthy target, by policy (all).
    EveryHealthy,
    /// The client can't be placed and no default cluster is configured: every healthy target.
    Unplaced,
    /// The policy found no single target: every healthy one.
    NoPick,
    /// Nothing eligible is healthy and the name has no fallback: the all-down policy decided.
    /// `passed` is a nearer target left out because it is drained (all-down `nearest`).
    AllDown {
        policy: AllDown,
        passed: Option<u32>,
    },
    /// Nothing healthy here (or no address of the family): CNAME to the wider name.
    Fallback,
    /// No target has an address of this family.
    NoFamily,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub selection: Selection,
    pub reason: Reason,
    /// The answer depends on where the client is (so the ECS scope matters).
    pub located: bool,
    /// Some eligible target is down or drained.
    pub degraded: bool,
}

impl Decision {
    /// For a policy: what it picked and why (`select` fills in the rest).
    pub fn new(selection: Selection, reason: Reason) -> Decision {
        Decision {
            selection,
            reason,
            located: false,
            degraded: false,
        }
    }

    /// One target, healthy.
    pub fn one(target: u32, reason: Reason) -> Decision {
        Decision::new(
            Selection::One {
                target,
                any_health: false,
            },
            reason,
        )
    }

    /// No eligible target is healthy and the all-down policy decided.
    #[inline]
    pub fn all_down(&self) -> bool {
        matches!(self.reason, Reason::AllDown { .. })
    }

    /// The chosen target is not the nearest one (a failover is in effect for this client).
    #[inline]
    pub fn away_from_nearest(&self) -> bool {
        matches!(
            self.reason,
            Reason::FailedOver { .. }
                | Reason::AllDown {
                    passed: Some(_),
                    ..
                }
        )
    }
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

/// Picks the answer for one name.
pub fn select(cx: &Ctx<'_>) -> Decision {
    let mut n_eligible = 0usize;
    let mut n_healthy = 0usize;
    for t in &cx.d.targets {
        if cx.eligible(t) {
            n_eligible += 1;
            if healthy(cx.d, t, cx.fam, cx.health) {
                n_healthy += 1;
            }
        }
    }
    let def = cx.d.policy.def();
    let mut out = if n_eligible == 0 {
        match cx.d.fallback {
            Some(_) => Decision::new(Selection::Fallback, Reason::Fallback),
            None => Decision::new(Selection::Empty, Reason::NoFamily),
        }
    } else if n_healthy == 0 {
        match cx.d.fallback {
            Some(_) => Decision::new(Selection::Fallback, Reason::Fallback),
            None => all_down::select(cx),
        }
    } else {
        (def.select)(cx)
    };
    out.located = def.needs_location;
    out.degraded = n_healthy < n_eligible;
    out
}

/// True when every eligible target is drained: all-down answers may then use drained clusters.
fn only_drained_left(cx: &Ctx<'_>) -> bool {
    cx.d.targets
        .iter()
        .filter(|t| cx.eligible(t))
        .all(|t| cx.health.target_drained(cx.d, t))
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

/// Every candidate, nearest to `cx.position()` first (explain and the admin API; allocation
/// is fine here).
pub fn candidates(cx: &Ctx<'_>) -> Vec<Candidate> {
    let position = cx.position();
    let mut out: Vec<Candidate> =
        cx.d.targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let c = &cx.clusters[t.cluster as usize];
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
                    eligible: cx.eligible(t),
                    healthy: healthy(cx.d, t, cx.fam, cx.health),
                    drained: cx.health.target_drained(cx.d, t),
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

    /// `select` with the arguments the query path passes.
    fn sel(
        d: &CDyn,
        fam: Family,
        clusters: &[CCluster],
        health: &HealthView,
        client: Option<[f64; 3]>,
        default_client: Option<[f64; 3]>,
        rand: u32,
    ) -> Decision {
        select(&Ctx {
            d,
            fam,
            clusters,
            health,
            client,
            default_client,
            rand,
        })
    }

    fn pick(d: &CDyn, h: &HealthView, client: Option<(f64, f64)>) -> Selection {
        sel(d, Family::V4, &clusters(), h, client.map(unit), None, 7).selection
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
        let out = sel(
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
        assert_eq!(
            out.reason,
            Reason::FailedOver {
                from: 2,
                why: Unhealthy::Down
            }
        );
        assert!(out.away_from_nearest());
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
        let out = sel(
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
            (
                AllDown::All,
                Selection::AllTargets {
                    with_drained: false,
                },
            ),
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
            let out = sel(&d, Family::V4, &clusters(), &down, Some(unit(SF)), None, 0);
            assert_eq!(out.selection, want, "{policy:?}");
            assert!(out.all_down());
        }
        // A drained cluster stays out of all-down answers while another is merely down.
        let mut h = down.clone();
        h.cluster_drained[2] = true;
        let d = dyn_name(Policy::Geo, AllDown::Nearest, false);
        let out = sel(&d, Family::V4, &clusters(), &h, Some(unit(SF)), None, 0);
        assert_eq!(
            out.selection,
            Selection::One {
                target: 1,
                any_health: true
            }
        );
        h.cluster_drained = vec![true; 4];
        let out = sel(&d, Family::V4, &clusters(), &h, Some(unit(SF)), None, 0);
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
            match sel(
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
        let out = sel(
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
        let out = sel(
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
        let cl = clusters();
        let h = health([true; 4]);
        let c = candidates(&Ctx {
            d: &d,
            fam: Family::V4,
            clusters: &cl,
            health: &h,
            client: Some(unit(SF)),
            default_client: None,
            rand: 0,
        });
        let order: Vec<&str> = c.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(order, ["los-angeles", "houston", "new-york", "nowhere"]);
        assert!(c[0].distance_km.expect("located") < 600.0);
    }

    #[test]
    fn registry_names_parse_and_serialize() {
        let names: Vec<&str> = Policy::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names, ["geo", "failover", "weighted", "all"]);
        assert_eq!(Policy::default(), Policy::Geo);
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
            assert_eq!(Policy::ALL[p.index()], p);
            assert_eq!(p.needs_location(), p == Policy::Geo);
        }
        assert_eq!(
            "nearest".parse::<Policy>(),
            Err("unknown policy \"nearest\" (expected geo, failover, weighted or all)".into())
        );
        assert_eq!(
            serde_json::to_string(&Policy::Weighted).expect("json"),
            "\"weighted\""
        );
        assert_eq!(
            serde_json::to_string(&AllDown::Servfail).expect("json"),
            "\"servfail\""
        );
        for (i, a) in AllDown::ALL.into_iter().enumerate() {
            assert_eq!(a.index(), i);
        }
    }

    #[test]
    fn reasons() {
        let cl = clusters();
        // Drained nearest: the reason names it.
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        let mut h = health([true; 4]);
        h.cluster_drained[2] = true;
        let out = sel(&d, Family::V4, &cl, &h, Some(unit(SF)), None, 0);
        assert_eq!(
            out.reason,
            Reason::FailedOver {
                from: 2,
                why: Unhealthy::Drained
            }
        );
        // Unready nearest.
        let mut d = dyn_name(Policy::Geo, AllDown::All, false);
        d.targets[2].ready = false;
        let out = sel(
            &d,
            Family::V4,
            &cl,
            &health([true; 4]),
            Some(unit(SF)),
            None,
            0,
        );
        assert_eq!(
            out.reason,
            Reason::FailedOver {
                from: 2,
                why: Unhealthy::Unready
            }
        );
        let d = dyn_name(Policy::Geo, AllDown::All, false);
        let out = sel(
            &d,
            Family::V4,
            &cl,
            &health([true; 4]),
            Some(unit(SF)),
            None,
            0,
        );
        assert_eq!(out.reason, Reason::NearestHealthy);
        assert!(out.located && !out.degraded && !out.away_from_nearest());
        let out = sel(&d, Family::V4, &cl, &health([true; 4]), None, None, 0);
        assert_eq!(out.reason, Reason::Unplaced);
        // All-down nearest passing over a drained nearest cluster counts as away from it.
        let d = dyn_name(Policy::Geo, AllDown::Nearest, false);
        let mut h = health([false; 4]);
        h.cluster_drained[2] = true;
        let out = sel(&d, Family::V4, &cl, &h, Some(unit(SF)), None, 0);
        assert_eq!(
            out.reason,
            Reason::AllDown {
                policy: AllDown::Nearest,
                passed: Some(2)
            }
        );
        assert!(out.all_down() && out.away_from_nearest());
        // Failover and weighted place nobody and say why they chose.
        let d = dyn_name(Policy::Failover, AllDown::All, false);
        let out = sel(
            &d,
            Family::V4,
            &cl,
            &health([true; 4]),
            Some(unit(SF)),
            None,
            0,
        );
        assert_eq!(out.reason, Reason::FirstInOrder);
        assert!(!out.located);
        let d = dyn_name(Policy::Weighted, AllDown::All, false);
        let out = sel(&d, Family::V4, &cl, &health([true; 4]), None, None, 0);
        assert_eq!(out.reason, Reason::RandomPick);
        let d = dyn_name(Policy::All, AllDown::All, false);
        let out = sel(&d, Family::V4, &cl, &health([true; 4]), None, None, 0);
        assert_eq!(out.reason, Reason::EveryHealthy);
        let out = sel(&d, Family::V6, &cl, &health([true; 4]), None, None, 0);
        assert_eq!(out.reason, Reason::NoFamily);
    }
}
