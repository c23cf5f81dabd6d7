//! The publisher's health bookkeeping: every endpoint's state by id of the served catalog, so a
//! transition flips one entry (gdnsd's `gdnsd_mon_state_updater(idx, bool)`) and a publication
//! copies one vector, instead of hashing every endpoint key.
//!
//! Ids belong to one compile (`ProbeSet::generation`). When a catalog replaces another, the
//! states of the endpoints both serve move to their new ids (an identical endpoint keeps its
//! state across recompiles), and the old ids' mapping is kept for a few generations so that a
//! report the scheduler made against an earlier catalog still lands on its endpoint; older ones
//! are dropped, and the scheduler re-reports every known state under the new ids anyway.
//!
//! With peers (`--peer`), the own view is combined with theirs by quorum (`quorum::combine`).
//! Observations cross replicas keyed by the stable wire key (`quorum::wire_key`); only this
//! replica's bookkeeping goes by id.

use crate::model::{from_unix, to_unix};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use super::exchange::WireView;
use super::quorum::{self, Obs, PeerView};
use crate::catalog::names::NameHasher;
use crate::events::EventLog;
use crate::metrics;
use crate::snapshot::compile::{Compiled, EndpointKey};

/// An old id whose endpoint the served catalog does not have.
const GONE: u32 = u32::MAX;

/// How many earlier catalogs' ids are still mapped.
const MAPPED_GENERATIONS: usize = 4;

/// How health is shared between replicas.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This replica's name as a vantage point.
    pub name: String,
    /// How often peers are polled.
    pub poll: Duration,
    /// A peer votes while heard within this many times the longer of the poll interval and the
    /// catalog's longest probe interval.
    pub stale_intervals: u32,
}

struct Quorum {
    cfg: QuorumConfig,
    /// Wire key to endpoint id, for the served catalog.
    keys: HashMap<String, u32>,
    peers: HashMap<String, PeerView<u32>>,
    /// Whether the last combination had no fresh peer (None before the first).
    fallback: Option<bool>,
}

impl Quorum {
    fn index(&mut self, c: &Compiled) {
        self.keys = c
            .probes
            .probed
            .iter()
            .filter_map(|p| Some((quorum::wire_key(c.endpoints.get(p.id as usize)?), p.id)))
            .collect();
    }

    fn fresh_for(&self, c: &Compiled) -> Duration {
        c.probes.longest_interval.max(self.cfg.poll) * self.cfg.stale_intervals.max(1)
    }
}

pub struct Ledger {
    /// The served catalog's `ProbeSet::generation`: the ids below are its.
    generation: u64,
    /// Served state by id: combined with peers by quorum, else the own view. None: no result
    /// yet (`upUntilFirstResult` decides). Unprobed endpoints are always up.
    up: Vec<Option<bool>>,
    /// This replica's own view by id (its state machines), with when each state began.
    own: Vec<Option<Obs>>,
    /// Earlier catalogs' ids mapped to the served ones, newest first.
    earlier: VecDeque<(u64, Vec<u32>)>,
    /// Set with `--peer`: health is combined from several vantage points.
    quorum: Option<Quorum>,
    /// Set when the combined view needs recomputing before the next publication.
    requorum: bool,
}

impl Ledger {
    /// Nothing known yet about the catalog's endpoints.
    pub fn new(c: &Compiled) -> Ledger {
        Ledger {
            generation: c.probes.generation,
            up: c
                .endpoints
                .iter()
                .map(|k| (!k.probed()).then_some(true))
                .collect(),
            own: vec![None; c.endpoints.len()],
            earlier: VecDeque::new(),
            quorum: None,
            requorum: false,
        }
    }

    /// `new` replaces `old` (the catalog the ledger follows): states move to the new ids.
    pub fn install(&mut self, old: &Compiled, new: &Compiled) {
        if new.probes.generation == self.generation {
            return;
        }
        let map = remap(&old.endpoints, &new.endpoints);
        let mut up: Vec<Option<bool>> = new
            .endpoints
            .iter()
            .map(|k| (!k.probed()).then_some(true))
            .collect();
        let mut own = vec![None; new.endpoints.len()];
        for (i, &j) in map.iter().enumerate() {
            if j != GONE {
                up[j as usize] = self.up.get(i).copied().flatten();
                own[j as usize] = self.own.get(i).copied().flatten();
            }
        }
        self.up = up;
        self.own = own;
        for (_, m) in self.earlier.iter_mut() {
            for x in m.iter_mut().filter(|x| **x != GONE) {
                *x = map.get(*x as usize).copied().unwrap_or(GONE);
            }
        }
        if let Some(q) = &mut self.quorum {
            q.index(new);
            for p in q.peers.values_mut() {
                p.obs = p
                    .obs
                    .drain()
                    .filter_map(|(i, o)| {
                        let j = map.get(i as usize).copied().unwrap_or(GONE);
                        (j != GONE).then_some((j, o))
                    })
                    .collect();
            }
            self.requorum = true;
        }
        self.earlier.push_front((self.generation, map));
        self.earlier.truncate(MAPPED_GENERATIONS);
        self.generation = new.probes.generation;
    }

    /// A report's endpoint in the served catalog: None when it left, or when the report is
    /// older than the mapped generations (the scheduler re-reports it under a newer id).
    fn resolve(&self, generation: u64, id: u32) -> Option<usize> {
        let id = if generation == self.generation {
            id
        } else {
            let (_, m) = self.earlier.iter().find(|(g, _)| *g == generation)?;
            m.get(id as usize).copied().filter(|j| *j != GONE)?
        };
        ((id as usize) < self.up.len()).then_some(id as usize)
    }

    /// An endpoint's own state, from the scheduler; returns whether the served view changed
    /// (with peers it is recombined before the next publication instead).
    pub fn report(
        &mut self,
        c: &Compiled,
        generation: u64,
        id: u32,
        up: bool,
        events: &EventLog,
    ) -> bool {
        let Some(i) = self.resolve(generation, id) else {
            tracing::debug!(
                generation,
                endpoint = id,
                "health report for an endpoint no longer served (or re-reported later)"
            );
            return false;
        };
        if self.own[i].map(|o| o.up) != Some(up) {
            self.own[i] = Some(Obs {
                up,
                at: SystemTime::now(),
            });
        }
        if self.quorum.is_some() {
            // Health is the combined view: recomputed once per burst.
            self.requorum = true;
            return false;
        }
        let before = self.up[i].replace(up);
        if before != Some(up)
            && let Some(k) = c.endpoints.get(i)
        {
            let kind = if up { "up" } else { "down" };
            events.record(
                kind,
                k.addr.to_string(),
                format!("{:?} probe", k.probe.kind),
            );
        }
        before != Some(up)
    }

    /// The health vector of a publication, by endpoint id of `c` (the served catalog).
    pub fn endpoint_up(&self, c: &Compiled) -> Vec<bool> {
        let default_up = c.settings.health.up_until_first_result;
        self.up.iter().map(|s| s.unwrap_or(default_up)).collect()
    }

    /// Combines health with peers' observations from now on.
    pub fn enable_quorum(&mut self, cfg: QuorumConfig, c: &Compiled) {
        let mut q = Quorum {
            cfg,
            keys: HashMap::new(),
            peers: HashMap::new(),
            fallback: None,
        };
        q.index(c);
        self.quorum = Some(q);
        self.requorum = true;
    }

    /// A peer's observations (None: the exchange failed; its last view ages out).
    pub fn peer(&mut self, peer: String, view: Option<WireView>) {
        let Some(q) = &mut self.quorum else {
            return;
        };
        // `--peers-dns` may resolve to this replica itself: its own view votes once.
        if let Some(v) = view.filter(|v| v.name != q.cfg.name) {
            let obs = v
                .observations
                .into_iter()
                .filter_map(|(key, (up, at))| {
                    let id = *q.keys.get(&key)?;
                    Some((
                        id,
                        Obs {
                            up,
                            at: from_unix(at).unwrap_or(SystemTime::UNIX_EPOCH),
                        },
                    ))
                })
                .collect();
            let name = if v.name.is_empty() {
                peer.clone()
            } else {
                v.name
            };
            q.peers.insert(
                peer,
                PeerView {
                    name,
                    heard: SystemTime::now(),
                    obs,
                },
            );
        }
        // Also on failure: time passed, a peer may have gone stale.
        self.requorum = true;
    }

    pub fn peer_gone(&mut self, peer: &str) {
        if let Some(q) = &mut self.quorum {
            q.peers.remove(peer);
            self.requorum = true;
        }
    }

    /// Whether the combined view needs recomputing (cleared by asking).
    pub fn take_requorum(&mut self) -> bool {
        std::mem::take(&mut self.requorum)
    }

    /// This replica's own observations in wire form (`generation`: the snapshot's).
    pub fn observations(&self, c: &Compiled, generation: u64) -> WireView {
        let observations = self
            .own
            .iter()
            .zip(&c.endpoints)
            .filter(|(_, k)| k.probed())
            .filter_map(|(o, k)| {
                Some((
                    quorum::wire_key(k),
                    (o.as_ref()?.up, to_unix(o.as_ref()?.at)),
                ))
            })
            .collect();
        let name = self
            .quorum
            .as_ref()
            .map(|q| q.cfg.name.clone())
            .unwrap_or_default();
        WireView {
            name,
            at: to_unix(SystemTime::now()),
            generation,
            observations,
        }
    }

    /// Every vantage point's view of every endpoint (own first), for the state document;
    /// empty without peers.
    pub fn vantage(&self, c: &Compiled) -> HashMap<EndpointKey, Vec<(String, Obs)>> {
        let mut out: HashMap<EndpointKey, Vec<(String, Obs)>> = HashMap::new();
        let Some(q) = &self.quorum else {
            return out;
        };
        let mut add = |id: usize, name: &str, o: Obs| {
            if let Some(k) = c.endpoints.get(id) {
                out.entry(k.clone())
                    .or_default()
                    .push((name.to_string(), o));
            }
        };
        for (i, o) in self.own.iter().enumerate() {
            if let Some(o) = o {
                add(i, &q.cfg.name, *o);
            }
        }
        let mut peers: Vec<&PeerView<u32>> = q.peers.values().collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        for p in peers {
            for (id, o) in &p.obs {
                add(*id as usize, &p.name, *o);
            }
        }
        out
    }

    /// Recomputes health from every vantage point's view (see `health::quorum`); returns
    /// whether any endpoint changed.
    pub fn recombine(&mut self, c: &Compiled, events: &EventLog) -> bool {
        let Some(q) = &mut self.quorum else {
            return false;
        };
        let m = metrics::get();
        let now = SystemTime::now();
        // `own` holds probed endpoints only: the scheduler reports nothing else.
        let own: HashMap<u32, Obs> = self
            .own
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((i as u32, (*o)?)))
            .collect();
        let peers: Vec<&PeerView<u32>> = q.peers.values().collect();
        let combined = quorum::combine(&own, &peers, now, q.fresh_for(c));
        m.health_peers
            .with_label_values(&["fresh"])
            .set(combined.fresh_peers as i64);
        m.health_peers
            .with_label_values(&["stale"])
            .set(combined.stale_peers as i64);
        m.health_quorum_fallback.set(i64::from(combined.fallback));
        if q.fallback != Some(combined.fallback) {
            if combined.fallback {
                tracing::warn!(
                    stale = combined.stale_peers,
                    "no fresh peer: health is this replica's own view alone (quorum fallback)"
                );
            } else {
                tracing::info!(
                    fresh = combined.fresh_peers,
                    stale = combined.stale_peers,
                    "health combined by quorum with peers"
                );
            }
            q.fallback = Some(combined.fallback);
        }
        let mut changed = false;
        for (id, v) in &combined.verdicts {
            let (Some(slot), Some(k)) =
                (self.up.get_mut(*id as usize), c.endpoints.get(*id as usize))
            else {
                continue;
            };
            let before = slot.replace(v.up);
            if before != Some(v.up) {
                changed = true;
                let kind = if v.up { "up" } else { "down" };
                let detail = format!(
                    "{:?} probe, {} of {} vantage points see it down",
                    k.probe.kind, v.down_votes, v.voters
                );
                if before.is_some() {
                    if v.up {
                        tracing::info!(endpoint = %k.addr, down = v.down_votes, voters = v.voters, "endpoint up by quorum");
                    } else {
                        tracing::warn!(endpoint = %k.addr, down = v.down_votes, voters = v.voters, "endpoint down by quorum");
                    }
                }
                events.record(kind, k.addr.to_string(), detail);
            }
        }
        if !combined.isolated.is_empty() {
            tracing::debug!(isolated = ?combined.isolated, "vantage points left out of the vote as isolated");
        }
        changed
    }
}

/// Old id → new id (`GONE` when `new` lacks the endpoint). Positions are compared first: ids
/// that stay put (an unchanged catalog, or a compile that keeps ids) cost no hashing.
fn remap(old: &[EndpointKey], new: &[EndpointKey]) -> Vec<u32> {
    let mut map: Vec<u32> = old
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if new.get(i) == Some(k) {
                i as u32
            } else {
                GONE
            }
        })
        .collect();
    if map.contains(&GONE) {
        let index: HashMap<&EndpointKey, u32, NameHasher> =
            new.iter().enumerate().map(|(j, k)| (k, j as u32)).collect();
        for (i, k) in old.iter().enumerate() {
            if map[i] == GONE {
                map[i] = index.get(k).copied().unwrap_or(GONE);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::config::Settings;
    use crate::health::probed::ProbeSet;
    use crate::health::spec::{ProbeKind, ProbeSpec};
    use std::net::IpAddr;
    use std::sync::Arc;

    fn key(last: u8, kind: ProbeKind) -> EndpointKey {
        EndpointKey {
            addr: IpAddr::from([192, 0, 2, last]),
            probe: Arc::new(ProbeSpec {
                kind,
                port: 80,
                path: "/".into(),
                host: None,
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 1,
                fall: 1,
                expect_status: (200, 399),
                expect_body: None,
                insecure: false,
                ca: None,
            }),
        }
    }

    fn tcp(last: u8) -> EndpointKey {
        key(last, ProbeKind::Tcp)
    }

    fn compiled(endpoints: Vec<EndpointKey>, up_until_first_result: bool) -> Compiled {
        let mut settings = Settings::default();
        settings.health.up_until_first_result = up_until_first_result;
        Compiled {
            settings,
            catalog: Catalog::default(),
            zones: vec![],
            zone_index: Default::default(),
            nodes: Default::default(),
            dyns: Default::default(),
            clusters: vec![],
            probes: ProbeSet::build(&endpoints, &[], &[]),
            endpoints,
            default_cluster: None,
        }
    }

    fn generation(c: &Compiled) -> u64 {
        c.probes.generation
    }

    #[test]
    fn a_report_flips_its_entry_and_unprobed_endpoints_stay_up() {
        let events = EventLog::default();
        let c = compiled(vec![tcp(1), key(2, ProbeKind::None), tcp(3)], false);
        let mut l = Ledger::new(&c);
        // No result yet: `upUntilFirstResult` (false here) decides; unprobed is up.
        assert_eq!(l.endpoint_up(&c), vec![false, true, false]);
        assert!(l.report(&c, generation(&c), 0, true, &events));
        assert!(!l.report(&c, generation(&c), 0, true, &events), "no change");
        assert!(
            l.report(&c, generation(&c), 2, false, &events),
            "first result"
        );
        assert_eq!(l.endpoint_up(&c), vec![true, true, false]);
        assert_eq!(events.recent().len(), 2);
        // An id the catalog does not have is ignored.
        assert!(!l.report(&c, generation(&c), 7, true, &events));
    }

    #[test]
    fn states_follow_their_endpoints_across_catalogs() {
        let events = EventLog::default();
        let c1 = compiled(vec![tcp(1), tcp(2), tcp(3)], true);
        let mut l = Ledger::new(&c1);
        let g1 = generation(&c1);
        l.report(&c1, g1, 1, false, &events);
        l.report(&c1, g1, 2, false, &events);
        // Recompiled unchanged: same ids, states kept (positions compared, no index).
        let c2 = compiled(vec![tcp(1), tcp(2), tcp(3)], true);
        l.install(&c1, &c2);
        assert_eq!(l.endpoint_up(&c2), vec![true, false, false]);
        // One endpoint gone, one new, the rest renumbered.
        let c3 = compiled(vec![tcp(4), tcp(3), tcp(1)], true);
        l.install(&c2, &c3);
        assert_eq!(l.endpoint_up(&c3), vec![true, false, true]);
        assert_eq!(l.own[1].map(|o| o.up), Some(false));
        assert_eq!(l.own[2], None, "never reported");
        assert_eq!(l.up[0], None, "new: no result yet");
        // A report made against c1's ids lands on its endpoint in c3: c1's id 2 (.3) is c3's 1,
        // c1's id 1 (.2) is gone.
        assert!(l.report(&c3, g1, 2, true, &events));
        assert!(!l.report(&c3, g1, 1, true, &events));
        assert_eq!(l.endpoint_up(&c3), vec![true, true, true]);
        // A report older than the mapped generations is dropped (the scheduler re-reports).
        let mut c = c3;
        for _ in 0..MAPPED_GENERATIONS {
            let next = compiled(vec![tcp(4), tcp(3), tcp(1)], true);
            l.install(&c, &next);
            c = next;
        }
        assert!(!l.report(&c, g1, 2, false, &events));
        assert_eq!(l.endpoint_up(&c), vec![true, true, true]);
    }

    #[test]
    fn peers_observations_follow_their_endpoints_across_catalogs() {
        let events = EventLog::default();
        let c1 = compiled(vec![tcp(1), tcp(2)], true);
        let mut l = Ledger::new(&c1);
        l.enable_quorum(
            QuorumConfig {
                name: "self".into(),
                poll: Duration::from_secs(10),
                stale_intervals: 3,
            },
            &c1,
        );
        let g1 = generation(&c1);
        l.report(&c1, g1, 0, true, &events);
        l.report(&c1, g1, 1, false, &events);
        for p in ["p1", "p2"] {
            l.peer(
                format!("{p}:9153"),
                Some(WireView {
                    name: p.into(),
                    at: 0.0,
                    generation: 1,
                    observations: [
                        (quorum::wire_key(&tcp(1)), (false, 1.0)),
                        (quorum::wire_key(&tcp(2)), (true, 1.0)),
                    ]
                    .into_iter()
                    .collect(),
                }),
            );
        }
        assert!(l.take_requorum());
        assert!(l.recombine(&c1, &events));
        // Two peers against self: .1 down, .2 up.
        assert_eq!(l.endpoint_up(&c1), vec![false, true]);
        let c2 = compiled(vec![tcp(2), tcp(1)], true);
        l.install(&c1, &c2);
        assert!(l.take_requorum());
        assert!(
            !l.recombine(&c2, &events),
            "same verdicts under the new ids"
        );
        assert_eq!(l.endpoint_up(&c2), vec![true, false]);
        let v = l.vantage(&c2);
        assert_eq!(v[&tcp(1)].len(), 3);
        assert_eq!(v[&tcp(1)][0], ("self".to_string(), l.own[1].expect("own")));
        let own = l.observations(&c2, 9);
        assert!(!own.observations[&quorum::wire_key(&tcp(2))].0);
    }
}
