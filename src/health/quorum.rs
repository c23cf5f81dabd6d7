//! Health from several vantage points, combined by quorum (issue 12 part 2).
//!
//! Every replica probes every endpoint and publishes what its own state machines say; every
//! replica combines its own view with its peers' by the same rule, so all answer alike:
//!
//! - Only vantage points heard from recently vote (own view always; a peer when its last
//!   successful exchange is within the freshness window).
//! - A vantage point that sees EVERY endpoint it reports down while the others see some up is
//!   isolated (its own network is broken, not the targets) and is left out of the vote; only a
//!   minority of the voters can be isolated (when most see everything down, the targets are).
//! - An endpoint is down only when a strict majority of the remaining voters that report it see
//!   it down; a tie is up (failing over a healthy cluster costs more than keeping a dead one a
//!   little longer, and the targets' own failure is seen by every vantage point).
//! - No fresh peer: the own view alone (the fallback, reported by metric and log).
//!
//! Pure: no clock, no I/O; the publisher calls it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, SystemTime};

/// One vantage point's view of one endpoint: what its state machine says, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obs {
    pub up: bool,
    pub at: SystemTime,
}

/// A peer's last published observations.
#[derive(Debug, Clone)]
pub struct PeerView<K> {
    pub name: String,
    /// When this replica last received them (its own clock: freshness never compares clocks).
    pub heard: SystemTime,
    pub obs: HashMap<K, Obs>,
}

/// The combined verdict for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub up: bool,
    pub down_votes: u32,
    pub voters: u32,
}

#[derive(Debug, Clone)]
pub struct Combined<K> {
    pub verdicts: HashMap<K, Verdict>,
    /// Peers that vote (fresh), and peers that do not (stale).
    pub fresh_peers: usize,
    pub stale_peers: usize,
    /// No fresh peer: the own view alone decided.
    pub fallback: bool,
    /// Vantage points left out as isolated ("self" for this replica).
    pub isolated: Vec<String>,
}

/// Sees something and sees all of it down.
fn all_down<K>(obs: &HashMap<K, Obs>) -> bool {
    !obs.is_empty() && obs.values().all(|o| !o.up)
}

/// Combines the own view with the peers' at `now`; a peer votes when heard within `fresh_for`.
pub fn combine<K: Hash + Eq + Clone>(
    own: &HashMap<K, Obs>,
    peers: &[&PeerView<K>],
    now: SystemTime,
    fresh_for: Duration,
) -> Combined<K> {
    let fresh: Vec<&PeerView<K>> = peers
        .iter()
        .copied()
        .filter(|p| now.duration_since(p.heard).unwrap_or_default() <= fresh_for)
        .collect();
    let stale_peers = peers.len() - fresh.len();
    let mut voters: Vec<(&str, &HashMap<K, Obs>)> = Vec::with_capacity(fresh.len() + 1);
    voters.push(("self", own));
    voters.extend(fresh.iter().map(|p| (p.name.as_str(), &p.obs)));
    let mut isolated = Vec::new();
    // Only a minority can be isolated: when most vantage points see everything down, that is
    // what the targets do (one endpoint, or every cluster down while one replica lags).
    let blind = voters.iter().filter(|(_, o)| all_down(o)).count();
    if blind * 2 < voters.len() && voters.iter().any(|(_, o)| o.values().any(|x| x.up)) {
        voters.retain(|(name, o)| {
            let out = all_down(o);
            if out {
                isolated.push(name.to_string());
            }
            !out
        });
    }
    let mut tally: HashMap<&K, (u32, u32)> = HashMap::new();
    for (_, obs) in &voters {
        for (k, o) in obs.iter() {
            let t = tally.entry(k).or_default();
            t.1 += 1;
            if !o.up {
                t.0 += 1;
            }
        }
    }
    // An endpoint only isolated vantage points report: their view stands (nothing else to go by).
    for k in own.keys() {
        if !tally.contains_key(k) {
            let down = u32::from(!own[k].up);
            tally.insert(k, (down, 1));
        }
    }
    let verdicts = tally
        .into_iter()
        .map(|(k, (down, n))| {
            (
                k.clone(),
                Verdict {
                    up: down * 2 <= n,
                    down_votes: down,
                    voters: n,
                },
            )
        })
        .collect();
    Combined {
        verdicts,
        fresh_peers: fresh.len(),
        stale_peers,
        fallback: fresh.is_empty(),
        isolated,
    }
}

/// The key of an endpoint across replicas: its address and a digest of its probe (FNV-1a of the
/// probe's JSON form), so replicas whose catalogs differ briefly still match what they share.
pub fn wire_key(k: &crate::snapshot::compile::EndpointKey) -> String {
    let spec = serde_json::to_string(&*k.probe).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{}/{h:016x}", k.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const FRESH: Duration = Duration::from_secs(3);

    fn at(s: u64) -> SystemTime {
        T0 + Duration::from_secs(s)
    }

    fn view(ups: &[(&'static str, bool)]) -> HashMap<&'static str, Obs> {
        ups.iter()
            .map(|(k, up)| (*k, Obs { up: *up, at: T0 }))
            .collect()
    }

    fn refs<K>(p: &[PeerView<K>]) -> Vec<&PeerView<K>> {
        p.iter().collect()
    }

    fn peer(name: &str, heard: u64, ups: &[(&'static str, bool)]) -> PeerView<&'static str> {
        PeerView {
            name: name.into(),
            heard: at(heard),
            obs: view(ups),
        }
    }

    #[test]
    fn no_peers_is_the_own_view() {
        let own = view(&[("a", true), ("b", false)]);
        let c = combine(&own, &[], at(10), FRESH);
        assert!(c.fallback);
        assert!(c.verdicts["a"].up);
        assert!(!c.verdicts["b"].up);
    }

    #[test]
    fn a_strict_majority_fails_an_endpoint() {
        let own = view(&[("a", false), ("b", true)]);
        let peers = [
            peer("p1", 10, &[("a", false), ("b", true)]),
            peer("p2", 10, &[("a", true), ("b", true)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert!(!c.fallback);
        assert_eq!(c.fresh_peers, 2);
        assert_eq!(
            c.verdicts["a"],
            Verdict {
                up: false,
                down_votes: 2,
                voters: 3
            }
        );
        assert!(c.verdicts["b"].up);
    }

    #[test]
    fn a_minority_does_not_fail_an_endpoint() {
        // This replica's own path to `a` is broken; the others see it up.
        let own = view(&[("a", false), ("b", true)]);
        let peers = [
            peer("p1", 10, &[("a", true), ("b", true)]),
            peer("p2", 10, &[("a", true), ("b", true)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert!(c.verdicts["a"].up);
        assert_eq!(c.verdicts["a"].down_votes, 1);
    }

    #[test]
    fn a_tie_is_up() {
        let own = view(&[("a", false), ("b", true)]);
        let peers = [peer("p1", 10, &[("a", true), ("b", true)])];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert!(c.verdicts["a"].up);
    }

    #[test]
    fn stale_peers_do_not_vote() {
        let own = view(&[("a", true)]);
        let peers = [
            peer("p1", 1, &[("a", false)]),
            peer("p2", 2, &[("a", false)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert!(c.fallback);
        assert_eq!((c.fresh_peers, c.stale_peers), (0, 2));
        assert!(c.verdicts["a"].up);
        // The same peers, fresh: 2 of 3 down.
        let c = combine(&own, &refs(&peers), at(4), FRESH);
        assert!(!c.fallback);
        assert!(!c.verdicts["a"].up);
    }

    #[test]
    fn an_isolated_vantage_point_is_left_out() {
        // p2 sees everything down while the others see some up: its own network is cut.
        let own = view(&[("a", true), ("b", false)]);
        let peers = [
            peer("p1", 10, &[("a", true), ("b", true)]),
            peer("p2", 10, &[("a", false), ("b", false)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert_eq!(c.isolated, vec!["p2".to_string()]);
        // Without p2: b is 1 down of 2, a tie, so up; a is up.
        assert!(c.verdicts["a"].up);
        assert!(c.verdicts["b"].up);
        assert_eq!(c.verdicts["b"].voters, 2);
    }

    #[test]
    fn an_isolated_self_is_left_out_too() {
        let own = view(&[("a", false), ("b", false)]);
        let peers = [
            peer("p1", 10, &[("a", true), ("b", false)]),
            peer("p2", 10, &[("a", true), ("b", false)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert_eq!(c.isolated, vec!["self".to_string()]);
        assert!(c.verdicts["a"].up);
        assert!(!c.verdicts["b"].up);
    }

    #[test]
    fn a_majority_seeing_everything_down_is_not_isolated() {
        // One endpoint, really down, and one replica has not noticed yet.
        let own = view(&[("a", true)]);
        let peers = [
            peer("p1", 10, &[("a", false)]),
            peer("p2", 10, &[("a", false)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert!(c.isolated.is_empty());
        assert!(!c.verdicts["a"].up);
    }

    #[test]
    fn everything_down_everywhere_is_down() {
        let own = view(&[("a", false), ("b", false)]);
        let peers = [
            peer("p1", 10, &[("a", false), ("b", false)]),
            peer("p2", 10, &[("a", false), ("b", false)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert!(c.isolated.is_empty());
        assert!(!c.verdicts["a"].up && !c.verdicts["b"].up);
    }

    #[test]
    fn endpoints_only_some_report_are_voted_by_those() {
        // Catalogs differ briefly: p1 does not know `c` yet.
        let own = view(&[("a", true), ("c", false)]);
        let peers = [
            peer("p1", 10, &[("a", true)]),
            peer("p2", 10, &[("a", true), ("c", false)]),
        ];
        let c = combine(&own, &refs(&peers), at(10), FRESH);
        assert_eq!(
            c.verdicts["c"],
            Verdict {
                up: false,
                down_votes: 2,
                voters: 2
            }
        );
    }
}
