//! One watched kind: a kube-runtime watcher feeding a reflector store, plus the state the
//! source reports (synced, failing since when, kind not installed). The watcher relists by
//! itself after a dropped connection or a `410 Gone`; the store keeps the last complete list
//! until the relist is done, which is what lets meridian keep serving while the API is away.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt, reflector as reflect};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Retry quickly (the API server coming back must show within seconds), but back off to a few
/// seconds so a server that stays away is not hammered.
pub struct QuickBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

impl Default for QuickBackoff {
    fn default() -> Self {
        QuickBackoff { next: BACKOFF_MIN }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // Jitter keeps many watchers from retrying in lockstep.
        Some(d + Duration::from_millis(fastrand::u64(0..50)))
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[derive(Debug, Default)]
struct Inner {
    synced: bool,
    /// Start of the current run of errors; None while the watch is healthy.
    failing_since: Option<Instant>,
    /// The kind is not served by the API server (CRD not installed): an empty set, not an
    /// outage.
    absent: bool,
    last_error: Option<String>,
}

/// What the source knows about one watch.
#[derive(Debug, Clone, Default)]
pub struct WatchState(Arc<Mutex<Inner>>);

impl WatchState {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the data is still usable.
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Listed completely at least once (or known to be absent).
    pub fn synced(&self) -> bool {
        self.with(|i| i.synced || i.absent)
    }

    /// Failing now, and since when.
    pub fn failing_since(&self) -> Option<Instant> {
        self.with(|i| i.failing_since)
    }

    pub fn last_error(&self) -> Option<String> {
        self.with(|i| i.last_error.clone())
    }
}

/// A running watch: its store, its state and its task (aborted on drop).
pub struct Watch<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub store: Store<K>,
    pub state: WatchState,
    task: JoinHandle<()>,
}

impl<K: Resource + 'static> Drop for Watch<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

/// Starts watching `api` with `config`; `dirty` is notified whenever the store or the state
/// changes. `what` names the watch in logs (`host ServiceDNSRecord`, `member east Service`).
pub fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    what: String,
    dirty: Arc<Notify>,
) -> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    spawn_trimmed(api, config, dyntype, what, dirty, |_| {})
}

/// As [`spawn`], with `trim` applied to each object before it is stored: member clusters hold
/// many objects of which meridian needs a few fields, so the rest is not kept in memory.
pub fn spawn_trimmed<K>(
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    what: String,
    dirty: Arc<Notify>,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> Watch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let state = WatchState::default();
    let st = state.clone();
    let probe = api.clone();
    let stream =
        reflect(writer, watcher(api, config).modify(trim)).backoff(QuickBackoff::default());
    let task = tokio::spawn(run(stream, probe, st, what, dirty));
    Watch { store, state, task }
}

/// How often a failing watch checks whether its kind is readable again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Clears the failing state; returns since when it was failing, if it was.
fn recovered(st: &WatchState, what: &str, dirty: &Notify) -> Option<Instant> {
    let was = st.with(|i| {
        let was = i.failing_since.take();
        i.absent = false;
        i.last_error = None;
        was
    });
    if let Some(since) = was {
        tracing::info!(
            watch = %what,
            after_ms = since.elapsed().as_millis() as u64,
            "watch recovered"
        );
        dirty.notify_one();
    }
    was
}

async fn run<K, S>(stream: S, probe: Api<K>, st: WatchState, what: String, dirty: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ev = tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = tick.tick() => {
                // A watch that resumes from a still-valid resourceVersion yields nothing until
                // something changes, so recovery would go unnoticed: ask the server directly
                // whether the kind is readable again (bounded, so the stream is not starved).
                if st.failing_since().is_some() {
                    let lp = ListParams::default().limit(1);
                    if let Ok(Ok(_)) = tokio::time::timeout(BACKOFF_MAX, probe.list(&lp)).await {
                        recovered(&st, &what, &dirty);
                    }
                }
                continue;
            }
        };
        match ev {
            Ok(ev) => {
                recovered(&st, &what, &dirty);
                match ev {
                    // Objects of an initial list are buffered by the reflector until InitDone.
                    Event::Init | Event::InitApply(_) => {}
                    Event::InitDone => {
                        st.with(|i| i.synced = true);
                        dirty.notify_one();
                    }
                    Event::Apply(_) | Event::Delete(_) => dirty.notify_one(),
                }
            }
            Err(e) if is_not_found(&e) => {
                let first = st.with(|i| {
                    let first = !i.absent;
                    i.absent = true;
                    i.failing_since = None;
                    first
                });
                if first {
                    tracing::info!(watch = %what, "kind not served by the API server (CRD not installed?); treated as empty, retrying");
                    dirty.notify_one();
                }
            }
            Err(e) => {
                let text = e.to_string();
                let first = st.with(|i| {
                    let first = i.failing_since.is_none();
                    if first {
                        i.failing_since = Some(Instant::now());
                    }
                    i.last_error = Some(text.clone());
                    first
                });
                if first {
                    tracing::warn!(watch = %what, error = %text, "watch failing; serving the last known state and retrying");
                    dirty.notify_one();
                } else {
                    tracing::debug!(watch = %what, error = %text, "watch still failing");
                }
            }
        }
    }
}
