//! The per-target health state machine: probe results in, transitions out. Pure — no clock, no
//! I/O: the caller passes the time of each result, so it is tested without sleeping
//! (quinn-proto's style).
//!
//! Thresholds are the usual pair (gdnsd `mon.c`, Cloudflare `consecutive_up/down`, HAProxy
//! `rise/fall`): `rise` consecutive successes take a down target up, `fall` consecutive
//! failures take an up target down; anything else leaves the state alone.
//!
//! Before its first result a target is *assumed* up or down (`up_until_first_result`). The
//! first result then decides the state directly, as in gdnsd's initial monitoring round: at
//! start-up there is no history to protect against flapping, and waiting `fall` probes before
//! believing a dead target would serve it for `fall × interval` after every restart.

/// Why `observe` reported a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The first result after start: the state is now known. `changed` says whether it differs
    /// from the assumption the target was counted with until now.
    First { changed: bool },
    /// `rise` or `fall` consecutive results crossed the threshold.
    Threshold,
}

/// A change of state, to be reported to the publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition<T> {
    pub up: bool,
    pub at: T,
    /// Consecutive results (equal to this one) that led here.
    pub consecutive: u32,
    pub cause: Cause,
}

impl<T> Transition<T> {
    /// Whether the target's state as counted by routing really changed (a first result that
    /// confirms the assumption is reported, but is not a change).
    pub fn changed(&self) -> bool {
        match self.cause {
            Cause::First { changed } => changed,
            Cause::Threshold => true,
        }
    }
}

/// One target's state.
#[derive(Clone, Debug)]
pub struct Machine<T> {
    rise: u32,
    fall: u32,
    up: bool,
    known: bool,
    /// The last result, and how many results in a row were equal to it.
    last_ok: bool,
    consecutive: u32,
    since: Option<T>,
}

impl<T: Copy> Machine<T> {
    /// `rise` and `fall` below 1 are taken as 1 (the catalog already refuses them).
    pub fn new(rise: u32, fall: u32, assume_up: bool) -> Machine<T> {
        Machine {
            rise: rise.max(1),
            fall: fall.max(1),
            up: assume_up,
            known: false,
            last_ok: assume_up,
            consecutive: 0,
            since: None,
        }
    }

    /// Records one probe result taken at `now`; returns the transition it causes, if any.
    pub fn observe(&mut self, ok: bool, now: T) -> Option<Transition<T>> {
        if self.consecutive > 0 && self.last_ok == ok {
            self.consecutive = self.consecutive.saturating_add(1);
        } else {
            self.last_ok = ok;
            self.consecutive = 1;
        }
        if !self.known {
            self.known = true;
            let changed = self.up != ok;
            self.up = ok;
            self.since = Some(now);
            return Some(Transition {
                up: ok,
                at: now,
                consecutive: self.consecutive,
                cause: Cause::First { changed },
            });
        }
        if ok == self.up {
            return None;
        }
        let threshold = if ok { self.rise } else { self.fall };
        if self.consecutive < threshold {
            return None;
        }
        self.up = ok;
        self.since = Some(now);
        Some(Transition {
            up: ok,
            at: now,
            consecutive: self.consecutive,
            cause: Cause::Threshold,
        })
    }

    /// The state routing should use: the assumption until the first result, then the result of
    /// the thresholds.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Whether any result has been seen.
    pub fn known(&self) -> bool {
        self.known
    }

    pub fn last_ok(&self) -> Option<bool> {
        (self.consecutive > 0).then_some(self.last_ok)
    }

    /// Results in a row equal to the last one.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// When the current state began (None until the first result).
    pub fn since(&self) -> Option<T> {
        self.since
    }

    pub fn rise(&self) -> u32 {
        self.rise
    }

    pub fn fall(&self) -> u32 {
        self.fall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds results at t = 1, 2, 3, ...; returns (t, up) for every changing transition.
    fn run(m: &mut Machine<u32>, results: &str) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let t = i as u32 + 1;
            if let Some(tr) = m.observe(c == '+', t)
                && tr.changed()
            {
                out.push((t, tr.up));
            }
        }
        out
    }

    #[test]
    fn fall_consecutive_failures_take_it_down() {
        let mut m = Machine::new(2, 3, true);
        // Two failures are not enough; the success in between resets the count.
        assert_eq!(run(&mut m, "+--+---"), vec![(7, false)]);
        assert!(!m.up());
        assert_eq!(m.since(), Some(7));
        assert_eq!(m.consecutive(), 3);
    }

    #[test]
    fn rise_consecutive_successes_bring_it_back() {
        let mut m = Machine::new(2, 1, true);
        assert_eq!(run(&mut m, "+-+-++"), vec![(2, false), (6, true)]);
        assert_eq!(m.since(), Some(6));
    }

    #[test]
    fn results_agreeing_with_the_state_change_nothing() {
        let mut m = Machine::new(3, 3, true);
        assert_eq!(run(&mut m, "++++++-+-+-+"), vec![]);
        assert!(m.up());
        assert_eq!(m.since(), Some(1));
    }

    #[test]
    fn first_result_decides_and_is_always_reported() {
        // Assumed up, first result down: a change, straight away (not after `fall` results).
        let mut m: Machine<u32> = Machine::new(2, 3, true);
        assert!(m.up());
        assert!(!m.known());
        let t = m.observe(false, 10).expect("first result is reported");
        assert_eq!(
            t,
            Transition {
                up: false,
                at: 10,
                consecutive: 1,
                cause: Cause::First { changed: true }
            }
        );
        assert!(m.known());
        // Assumed up, first result up: reported (so a publisher that forgot the endpoint, or
        // counts unknown endpoints differently, learns the state) but not a change.
        let mut m: Machine<u32> = Machine::new(2, 3, true);
        let t = m.observe(true, 10).expect("first result is reported");
        assert!(t.up && !t.changed());
        // Assumed down (upUntilFirstResult: false), first result up.
        let mut m: Machine<u32> = Machine::new(2, 3, false);
        assert!(!m.up());
        assert_eq!(run(&mut m, "+"), vec![(1, true)]);
    }

    #[test]
    fn thresholds_of_one_follow_every_result() {
        let mut m = Machine::new(1, 1, true);
        assert_eq!(run(&mut m, "+-+-"), vec![(2, false), (3, true), (4, false)]);
    }

    #[test]
    fn zero_thresholds_are_taken_as_one() {
        let mut m = Machine::new(0, 0, true);
        assert_eq!(m.rise(), 1);
        assert_eq!(m.fall(), 1);
        assert_eq!(run(&mut m, "+-"), vec![(2, false)]);
    }

    #[test]
    fn consecutive_counts_the_current_streak() {
        let mut m: Machine<u32> = Machine::new(2, 2, true);
        assert_eq!(m.last_ok(), None);
        for (i, ok) in [true, true, false].into_iter().enumerate() {
            m.observe(ok, i as u32);
        }
        assert_eq!(m.last_ok(), Some(false));
        assert_eq!(m.consecutive(), 1);
        m.observe(false, 3);
        assert_eq!(m.consecutive(), 2);
        assert!(!m.up());
    }
}
