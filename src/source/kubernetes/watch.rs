//! One watched kind: a kube-runtime watcher feeding a reflector store, plus the state the
//! source reports (synced, failing since when, kind not installed). After a failure the watch
//! starts over from a fresh list (see [`run`]); the store keeps the last complete list until
//! that list is done, which is what lets meridian keep serving while the API is away.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Retry quickly (the API server coming back must show within a second), but back off so a
/// server that stays away is not hammered. While failing, each retry is a `limit=1` list, cheap
/// for the server; the watch is restarted (a full relist) only once that list succeeds.
pub struct QuickBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Default for QuickBackoff {
    fn default() -> Self {
        QuickBackoff { next: BACKOFF_MIN }
    }
}

impl QuickBackoff {
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // Jitter keeps many watchers from retrying in lockstep.
        d + Duration::from_millis(fastrand::u64(0..50))
    }

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
    let task = tokio::spawn(run(api, config, writer, trim, state.clone(), what, dirty));
    Watch { store, state, task }
}

/// Bound on one retry list while failing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

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

/// `410 Gone`: the watch's resourceVersion was compacted away; only a relist helps.
fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

/// Records a failure (or the kind's absence) in the state, logging the first of a run.
fn failed(st: &WatchState, what: &str, dirty: &Notify, e: &watcher::Error) {
    if is_not_found(e) {
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
        return;
    }
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

/// The watch loop. A failing watch is not resumed from its old resourceVersion: that either
/// yields nothing until something changes (so recovery could not be told from a connect) or
/// meets `410 Gone` and waits again. Instead it retries with a cheap list on a short backoff and,
/// once the server answers, starts over from a fresh list; the store keeps the last complete
/// list until the new one is done, and the watch counts as recovered only then, when it is
/// really live.
async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: reflector::store::Writer<K>,
    mut trim: impl FnMut(&mut K) + Send,
    st: WatchState,
    what: String,
    dirty: Arc<Notify>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut backoff = QuickBackoff::default();
    loop {
        let mut stream = Box::pin(watcher(api.clone(), config.clone()));
        // A 410 right after another (no event between) is not retried at once again.
        let mut gone_streak = 0u32;
        let failure = loop {
            let Some(ev) = stream.next().await else {
                // The watcher's stream does not end; if it did, start over.
                break None;
            };
            match ev {
                Ok(ev) => {
                    backoff.reset();
                    gone_streak = 0;
                    let ev = ev.modify(&mut trim);
                    writer.apply_watcher_event(&ev);
                    match ev {
                        // Objects of an initial list are buffered by the writer until InitDone.
                        Event::Init | Event::InitApply(_) => {}
                        Event::InitDone => {
                            st.with(|i| {
                                i.synced = true;
                                i.absent = false;
                            });
                            recovered(&st, &what, &dirty);
                            dirty.notify_one();
                        }
                        Event::Apply(_) | Event::Delete(_) => {
                            recovered(&st, &what, &dirty);
                            dirty.notify_one();
                        }
                    }
                }
                // The watcher relists by itself on the next poll: waiting first only delays it.
                Err(e) if is_gone(&e) && gone_streak == 0 => {
                    gone_streak += 1;
                    tracing::debug!(watch = %what, error = %e, "resource version gone; relisting now");
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = &failure {
            failed(&st, &what, &dirty, e);
        }
        drop(stream);
        // Retry with a bounded `limit=1` list until the server answers; then the new watcher
        // relists from scratch.
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            let lp = ListParams::default().limit(1);
            match tokio::time::timeout(PROBE_TIMEOUT, api.list(&lp)).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => failed(&st, &what, &dirty, &watcher::Error::InitialListFailed(e)),
                Err(_) => tracing::debug!(watch = %what, "retry list timed out"),
            }
        }
    }
}
