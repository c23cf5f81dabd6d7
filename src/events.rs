//! Recent operational events (health transitions, drains), kept in a small ring for the admin
//! API and the status page. Written by the publisher, read by the admin server; never touched by
//! the query path, so a plain mutex is enough.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many events are kept: enough for a drill's story, small enough to send on every refresh.
pub const CAPACITY: usize = 200;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// Unix time, seconds.
    pub at: f64,
    /// `up`, `down`, `drain`, `undrain`, `expire`.
    pub kind: &'static str,
    /// The endpoint address or the cluster name.
    pub subject: String,
    /// Free text: the probe, the drain's end and reason.
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<VecDeque<Event>>>);

impl EventLog {
    pub fn record(
        &self,
        kind: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
    ) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let e = Event {
            at,
            kind,
            subject: subject.into(),
            detail: detail.into(),
        };
        // A poisoned lock only means a reader panicked mid-copy; the ring itself is intact.
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Event> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_first_and_bounded() {
        let log = EventLog::default();
        for i in 0..(CAPACITY + 5) {
            log.record("down", format!("e{i}"), "");
        }
        let r = log.recent();
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(r[0].subject, format!("e{}", CAPACITY + 4));
        assert_eq!(r[CAPACITY - 1].subject, "e5");
    }
}
