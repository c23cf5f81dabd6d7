//! The scheduler: follows the served catalog, runs one task per probed endpoint (the catalog's
//! `ProbeSet`, computed at compile), and reports state changes to the snapshot publisher as
//! (catalog generation, endpoint id, up).
//!
//! - Probes start when an endpoint appears in a published catalog and stop when it leaves
//!   (never on first query). Identical targets (same address and probe) are one endpoint, so
//!   they are probed once.
//! - One task per endpoint, so a slow target never delays another; at most
//!   `health.maxConcurrentProbes` probes are in flight at once (a semaphore), and each probe is
//!   cut off at its `timeout`.
//! - The endpoints of the catalog served at start-up are probed at once, in one round the server
//!   waits for (bounded) before it answers its first query — gdnsd's "initial round of
//!   monitoring": the first answers then come from probe results, not from assumptions about
//!   some targets mixed with results for others. Their next probe, and the first probe of every
//!   endpoint that appears later, waits a random part of the interval, so endpoints are not
//!   probed in lockstep.
//! - Every result updates `HealthStatus` (admin API) and the metrics; transitions from the state
//!   machine go to the publisher, which republishes the snapshot. The task of an endpoint is the
//!   only sender for that endpoint, so its reports arrive in order. A task outlives catalogs
//!   that keep its endpoint, whose id may change: each new catalog reaches it with its new id,
//!   and it re-reports its state under that id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::HealthStatus;
use super::probe::{Probe, ProbeError, ProbeFactory, Probes, endpoint_label};
use super::state::Machine;
use crate::metrics;
use crate::snapshot::compile::{Compiled, EndpointKey};
use crate::snapshot::publisher::{PublisherHandle, Update};

/// Where transitions go: the publisher in the server, a recorder in tests. `endpoint` is an id
/// of the catalog whose `ProbeSet` has `generation`.
pub trait Reporter: Send + Sync + 'static {
    fn report(&self, generation: u64, endpoint: u32, up: bool);
}

impl Reporter for PublisherHandle {
    fn report(&self, generation: u64, endpoint: u32, up: bool) {
        self.send(Update::Health {
            generation,
            endpoint,
            up,
        });
    }
}

/// What an endpoint task learns from each catalog.
#[derive(Clone)]
struct Meta {
    /// The catalog's `ProbeSet` generation and the endpoint's id in it: what reports name.
    generation: u64,
    id: u32,
    /// Cluster(s) whose records use the address, joined with ",": the `cluster` label.
    cluster: Arc<str>,
    /// `health.upUntilFirstResult` of the catalog.
    assume_up: bool,
    /// Bound on probes in flight (replaced when `maxConcurrentProbes` changes).
    limit: Arc<Semaphore>,
}

struct Running {
    cancel: CancellationToken,
    meta: watch::Sender<Meta>,
    task: JoinHandle<()>,
}

/// The running scheduler.
pub struct Scheduler {
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// Endpoints of the start-up catalog still without a first result.
    initial: watch::Receiver<usize>,
    /// Longest probe timeout among them: the initial round's natural bound.
    initial_timeout: Duration,
}

/// How long start-up waits for the initial round beyond the longest probe timeout.
const INITIAL_ROUND_SLACK: Duration = Duration::from_millis(500);

/// How the initial round went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialRound {
    pub endpoints: usize,
    pub reported: usize,
    pub elapsed: Duration,
}

impl Scheduler {
    /// Waits until every endpoint of the start-up catalog has its first result, or until the
    /// longest probe timeout plus `slack` has passed (probes queued behind
    /// `maxConcurrentProbes`, or a target slower than its timeout, must not hold start-up for
    /// long: those endpoints keep counting as `upUntilFirstResult`).
    pub async fn initial_round(&self, slack: Duration) -> InitialRound {
        let started = Instant::now();
        let endpoints = *self.initial.borrow();
        let mut rx = self.initial.clone();
        let _ = tokio::time::timeout(self.initial_timeout + slack, rx.wait_for(|n| *n == 0)).await;
        let left = *rx.borrow();
        InitialRound {
            endpoints,
            reported: endpoints.saturating_sub(left),
            elapsed: started.elapsed(),
        }
    }

    /// The server's start-up step: the initial round (see `initial_round`), then a publisher
    /// flush so that the snapshot the first query reads holds its results.
    pub async fn initial_round_published(&self, publisher: &PublisherHandle) {
        let round = self.initial_round(INITIAL_ROUND_SLACK).await;
        publisher.flush().await;
        if round.reported < round.endpoints {
            tracing::warn!(
                endpoints = round.endpoints,
                reported = round.reported,
                elapsed_ms = round.elapsed.as_millis() as u64,
                "initial health checks incomplete: the rest count as upUntilFirstResult until their first result"
            );
        } else {
            tracing::info!(
                endpoints = round.endpoints,
                elapsed_ms = round.elapsed.as_millis() as u64,
                "initial health checks done"
            );
        }
    }

    /// Stops every probe and waits for the tasks to end.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Counts one endpoint of the initial round as done: on its first result, or when its task
/// ends without one (so the round never waits for a task that is gone).
struct FirstResult(Option<Arc<watch::Sender<usize>>>);

impl FirstResult {
    fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            tx.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    fn initial(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for FirstResult {
    fn drop(&mut self) {
        self.done();
    }
}

/// Starts the scheduler of the server: real probes, transitions to the publisher.
pub fn start_with_publisher(publisher: &PublisherHandle, status: HealthStatus) -> Scheduler {
    start(
        publisher.catalogs.clone(),
        Arc::new(Probes::new()),
        Arc::new(publisher.clone()),
        status,
    )
}

/// Starts the scheduler over a stream of catalogs (the current one is taken at once).
pub fn start<F: ProbeFactory, R: Reporter>(
    mut catalogs: watch::Receiver<Arc<Compiled>>,
    factory: Arc<F>,
    reporter: Arc<R>,
    status: HealthStatus,
) -> Scheduler {
    let cancel = CancellationToken::new();
    // The round is this catalog's endpoints, whatever arrives before the task runs.
    let first = catalogs.borrow_and_update().clone();
    let count = first.probes.probed.len();
    let initial_timeout = first.probes.longest_timeout;
    let (round_tx, initial) = watch::channel(count);
    let task = tokio::spawn(run(
        first,
        catalogs,
        factory,
        reporter,
        status,
        Arc::new(round_tx),
        cancel.clone(),
    ));
    Scheduler {
        cancel,
        task,
        initial,
        initial_timeout,
    }
}

async fn run<F: ProbeFactory, R: Reporter>(
    first: Arc<Compiled>,
    mut catalogs: watch::Receiver<Arc<Compiled>>,
    factory: Arc<F>,
    reporter: Arc<R>,
    status: HealthStatus,
    round: Arc<watch::Sender<usize>>,
    cancel: CancellationToken,
) {
    let mut running: HashMap<EndpointKey, Running> = HashMap::new();
    let mut limit: Option<(usize, Arc<Semaphore>)> = None;
    // Only the endpoints of the first catalog make up the initial round.
    let mut round = Some(round);
    let mut compiled = first;
    loop {
        let max = compiled.settings.health.max_concurrent_probes.max(1);
        let sem = match &limit {
            Some((n, s)) if *n == max => s.clone(),
            _ => {
                let s = Arc::new(Semaphore::new(max));
                limit = Some((max, s.clone()));
                s
            }
        };
        let assume_up = compiled.settings.health.up_until_first_result;
        let set = &compiled.probes;
        let probed = || {
            set.probed
                .iter()
                .filter_map(|p| Some((p, compiled.endpoints.get(p.id as usize)?)))
        };
        let wanted: HashSet<&EndpointKey> = probed().map(|(_, k)| k).collect();
        // Stop what left; wait for those tasks (every await in them races the cancellation, so
        // this is prompt) so that none writes status after it is cleared.
        let gone: Vec<EndpointKey> = running
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        let mut stopped = Vec::with_capacity(gone.len());
        for k in &gone {
            if let Some(r) = running.remove(k) {
                r.cancel.cancel();
                stopped.push(r.task);
            }
        }
        for t in stopped {
            let _ = t.await;
        }
        if !gone.is_empty() {
            status.retain(|k| wanted.contains(k));
            tracing::debug!(stopped = gone.len(), "probes stopped");
        }
        let mut started = 0usize;
        for (p, key) in probed() {
            let meta = Meta {
                generation: set.generation,
                id: p.id,
                cluster: set.cluster(p).clone(),
                assume_up,
                limit: sem.clone(),
            };
            match running.get(key) {
                // Every catalog reaches every task, even unchanged: the task then re-reports
                // its known state under the new id, because the publisher may not have it
                // (an endpoint that left and came back between two catalogs this loop saw, or
                // a report it dropped as made against an older catalog).
                Some(r) => {
                    r.meta.send_replace(meta);
                }
                None => {
                    let (meta_tx, meta_rx) = watch::channel(meta);
                    let token = cancel.child_token();
                    let task = tokio::spawn(probe_loop(
                        key.clone(),
                        factory.clone(),
                        reporter.clone(),
                        status.clone(),
                        meta_rx,
                        FirstResult(round.clone()),
                        token.clone(),
                    ));
                    running.insert(
                        key.clone(),
                        Running {
                            cancel: token,
                            meta: meta_tx,
                            task,
                        },
                    );
                    started += 1;
                }
            }
        }
        if started > 0 {
            tracing::debug!(started, probing = running.len(), "probes started");
        }
        round = None;
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = catalogs.changed() => if changed.is_err() { break },
        }
        compiled = catalogs.borrow_and_update().clone();
    }
    for (_, r) in running.drain() {
        r.cancel.cancel();
        let _ = r.task.await;
    }
}

/// The `meridian_endpoint_up` series of one endpoint; it follows cluster label changes.
struct Gauge {
    labels: [String; 3],
}

impl Gauge {
    fn set(&mut self, cluster: &str, up: bool) {
        let m = &metrics::get().endpoint_up;
        if self.labels[0] != cluster {
            let [c, e, p] = &self.labels;
            let _ = m.remove_label_values(&[c, e, p]);
            self.labels[0] = cluster.to_string();
        }
        let [c, e, p] = &self.labels;
        m.with_label_values(&[c, e, p]).set(i64::from(up));
    }

    fn remove(&self) {
        let [c, e, p] = &self.labels;
        let _ = metrics::get().endpoint_up.remove_label_values(&[c, e, p]);
    }
}

async fn probe_loop<F: ProbeFactory, R: Reporter>(
    key: EndpointKey,
    factory: Arc<F>,
    reporter: Arc<R>,
    status: HealthStatus,
    mut meta: watch::Receiver<Meta>,
    mut first: FirstResult,
    cancel: CancellationToken,
) {
    let spec = key.probe.clone();
    let kind = spec.kind.name();
    let endpoint = endpoint_label(&key);
    let mut current = meta.borrow_and_update().clone();
    let probe = factory.make(&key);
    let mut machine: Machine<SystemTime> = Machine::new(spec.rise, spec.fall, current.assume_up);
    let mut gauge = Gauge {
        labels: [
            current.cluster.to_string(),
            endpoint.clone(),
            kind.to_string(),
        ],
    };
    gauge.set(&current.cluster, machine.up());
    let m = metrics::get();
    let durations = [
        m.probe_duration.with_label_values(&[kind, "ok"]),
        m.probe_duration.with_label_values(&[kind, "fail"]),
        m.probe_duration.with_label_values(&[kind, "timeout"]),
    ];

    let interval = spec.interval.max(Duration::from_millis(1));
    let jitter = || Duration::from_millis(fastrand::u64(0..interval.as_millis().max(1) as u64));
    // See the module comment: the initial round probes at once, everything else is spread.
    let mut next = if first.initial() {
        Instant::now()
    } else {
        Instant::now() + jitter()
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = meta.changed() => {
                if changed.is_err() {
                    break;
                }
                current = meta.borrow_and_update().clone();
                if machine.known() {
                    reporter.report(current.generation, current.id, machine.up());
                }
                gauge.set(&current.cluster, machine.up());
                continue;
            }
            _ = tokio::time::sleep_until(next) => {}
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = current.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // closed: only at shutdown
            },
        };
        let started = Instant::now();
        let lag = started.saturating_duration_since(next);
        m.probe_lag.observe(lag.as_secs_f64());
        if !first.initial() && lag >= interval {
            m.probe_missed
                .inc_by((lag.as_nanos() / interval.as_nanos().max(1)) as u64);
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = tokio::time::timeout(spec.timeout, probe.check()) => {
                r.unwrap_or(Err(ProbeError::Timeout(spec.timeout)))
            }
        };
        let latency = started.elapsed();
        drop(permit);
        let after = Instant::now();
        next = if first.initial() {
            // Leave the initial round's lockstep.
            after + jitter()
        } else if next + interval > after {
            next + interval
        } else {
            // A probe slower than the interval pushes the next one back rather than firing
            // them back to back.
            m.probe_missed.inc();
            after + interval
        };
        let now = SystemTime::now();
        let ok = result.is_ok();
        durations[match &result {
            Ok(_) => 0,
            Err(ProbeError::Timeout(_)) => 2,
            Err(_) => 1,
        }]
        .observe(latency.as_secs_f64());
        let transition = machine.observe(ok, now);
        let reason = match &result {
            Ok(detail) => detail.clone(),
            Err(e) => e.to_string(),
        };
        status.update(&key, |s| {
            s.up = machine.up();
            s.last_ok = ok;
            s.last_at = Some(now);
            s.last_latency = Some(latency);
            s.last_error = result.as_ref().err().map(|e| e.to_string());
            s.consecutive = machine.consecutive();
            s.since = machine.since();
        });
        gauge.set(&current.cluster, machine.up());
        let Some(t) = transition else { continue };
        reporter.report(current.generation, current.id, t.up);
        // After the report: the round is over only once the publisher has every result.
        first.done();
        if !t.changed() {
            tracing::debug!(
                cluster = %current.cluster,
                endpoint = %endpoint,
                probe = kind,
                reason = %reason,
                up = t.up,
                "first probe result confirms the assumed state"
            );
            continue;
        }
        let to = if t.up { "up" } else { "down" };
        m.health_transitions.with_label_values(&[to]).inc();
        if t.up {
            tracing::info!(
                cluster = %current.cluster,
                endpoint = %endpoint,
                probe = kind,
                reason = %reason,
                consecutive = t.consecutive,
                rise = machine.rise(),
                fall = machine.fall(),
                "endpoint up"
            );
        } else {
            tracing::warn!(
                cluster = %current.cluster,
                endpoint = %endpoint,
                probe = kind,
                reason = %reason,
                consecutive = t.consecutive,
                rise = machine.rise(),
                fall = machine.fall(),
                "endpoint down"
            );
        }
    }
    gauge.remove();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::config::Settings;
    use crate::health::probed::ProbeSet;
    use crate::health::spec::{ProbeKind, ProbeSpec};
    use std::collections::VecDeque;
    use std::net::IpAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(last: u8, interval_ms: u64) -> EndpointKey {
        EndpointKey {
            addr: IpAddr::from([127, 0, 0, last]),
            probe: std::sync::Arc::new(ProbeSpec {
                kind: ProbeKind::Tcp,
                port: 80,
                path: "/".into(),
                host: None,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(50),
                rise: 2,
                fall: 2,
                expect_status: (200, 399),
                expect_body: None,
                insecure: false,
                ca: None,
            }),
        }
    }

    /// Every catalog the tests made, by generation: reports name endpoints by id in one.
    static CATALOGS: Mutex<Vec<(u64, Vec<EndpointKey>)>> = Mutex::new(Vec::new());

    fn compiled(endpoints: Vec<EndpointKey>, settings: Settings) -> Arc<Compiled> {
        let probes = ProbeSet::build(&endpoints, &[], &[]);
        CATALOGS
            .lock()
            .expect("lock")
            .push((probes.generation, endpoints.clone()));
        Arc::new(Compiled {
            settings,
            catalog: Catalog::default(),
            zones: vec![],
            zone_index: Default::default(),
            nodes: Default::default(),
            dyns: Default::default(),
            clusters: vec![],
            endpoints,
            probes,
            default_cluster: None,
        })
    }

    /// A scripted probe per endpoint: `+` ok, `-` fail, `s` slow (never answers); the last step
    /// repeats. Counts calls.
    #[derive(Default)]
    struct Script {
        steps: Mutex<HashMap<IpAddr, VecDeque<char>>>,
        calls: Mutex<HashMap<IpAddr, usize>>,
        in_flight: Arc<AtomicUsize>,
        max_in_flight: Arc<AtomicUsize>,
    }

    impl Script {
        fn set(&self, last: u8, steps: &str) {
            self.steps
                .lock()
                .expect("lock")
                .insert(IpAddr::from([127, 0, 0, last]), steps.chars().collect());
        }
        fn calls(&self, last: u8) -> usize {
            *self
                .calls
                .lock()
                .expect("lock")
                .get(&IpAddr::from([127, 0, 0, last]))
                .unwrap_or(&0)
        }
    }

    struct Scripted {
        addr: IpAddr,
        script: Arc<Script>,
    }

    struct Factory(Arc<Script>);

    impl ProbeFactory for Factory {
        type Probe = Scripted;
        fn make(&self, key: &EndpointKey) -> Scripted {
            Scripted {
                addr: key.addr,
                script: self.0.clone(),
            }
        }
    }

    impl Probe for Scripted {
        async fn check(&self) -> Result<String, ProbeError> {
            let step = {
                *self
                    .script
                    .calls
                    .lock()
                    .expect("lock")
                    .entry(self.addr)
                    .or_default() += 1;
                let mut steps = self.script.steps.lock().expect("lock");
                let q = steps.entry(self.addr).or_default();
                if q.len() > 1 {
                    q.pop_front().unwrap_or('+')
                } else {
                    q.front().copied().unwrap_or('+')
                }
            };
            let n = self.script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.script.max_in_flight.fetch_max(n, Ordering::SeqCst);
            let r = match step {
                '+' => Ok("ok".to_string()),
                's' => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok("late".to_string())
                }
                _ => Err(ProbeError::Request("scripted failure".into())),
            };
            // Hold the slot a little, so concurrency is observable.
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.script.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(IpAddr, bool, Instant)>>);

    impl Reporter for Recorder {
        fn report(&self, generation: u64, endpoint: u32, up: bool) {
            let addr = CATALOGS
                .lock()
                .expect("lock")
                .iter()
                .find(|(g, _)| *g == generation)
                .and_then(|(_, keys)| keys.get(endpoint as usize))
                .map(|k| k.addr)
                .expect("a report names an endpoint of a catalog sent");
            self.0
                .lock()
                .expect("lock")
                .push((addr, up, Instant::now()));
        }
    }

    impl Recorder {
        fn of(&self, last: u8) -> Vec<bool> {
            self.0
                .lock()
                .expect("lock")
                .iter()
                .filter(|(a, _, _)| *a == IpAddr::from([127, 0, 0, last]))
                .map(|(_, up, _)| *up)
                .collect()
        }
    }

    struct Rig {
        tx: watch::Sender<Arc<Compiled>>,
        script: Arc<Script>,
        rec: Arc<Recorder>,
        status: HealthStatus,
        sched: Scheduler,
    }

    fn rig(endpoints: Vec<EndpointKey>, settings: Settings) -> Rig {
        let (tx, rx) = watch::channel(compiled(endpoints, settings));
        let script = Arc::new(Script::default());
        let rec = Arc::new(Recorder::default());
        let status = HealthStatus::default();
        let sched = start(
            rx,
            Arc::new(Factory(script.clone())),
            rec.clone(),
            status.clone(),
        );
        Rig {
            tx,
            script,
            rec,
            status,
            sched,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failover_and_recovery_follow_fall_and_rise() {
        let r = rig(vec![key(1, 100)], Settings::default());
        r.script.set(1, "++--++");
        let t0 = Instant::now();
        // Jitter < 100ms, then 100ms apart: six probes well within a second.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // First result confirms "up" (reported, not a change); two failures: down; two
        // successes: up.
        assert_eq!(r.rec.of(1), vec![true, false, true]);
        let times: Vec<Duration> = r
            .rec
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|e| e.2 - t0)
            .collect();
        // Down at the 4th probe, up at the 6th: 200ms apart.
        assert_eq!(times[2] - times[1], Duration::from_millis(200));
        let s = r.status.get(&key(1, 100)).expect("status");
        assert!(s.up && s.last_ok);
        assert!(s.consecutive >= 2);
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn probes_start_and_stop_with_the_catalog() {
        let r = rig(vec![key(1, 100)], Settings::default());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(r.script.calls(1) >= 4);
        assert_eq!(r.script.calls(2), 0);
        // 127.0.0.2 appears, 127.0.0.1 leaves.
        r.tx.send_replace(compiled(vec![key(2, 100)], Settings::default()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let before = r.script.calls(1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            r.script.calls(1),
            before,
            "a removed endpoint is no longer probed"
        );
        assert!(r.script.calls(2) >= 4);
        assert!(r.status.get(&key(1, 100)).is_none(), "its status is gone");
        assert!(r.status.get(&key(2, 100)).is_some());
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_target_does_not_delay_another() {
        let r = rig(vec![key(1, 100), key(2, 100)], Settings::default());
        r.script.set(1, "s");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // The slow one times out (50ms) every time and goes down; the other is probed on
        // schedule all along.
        assert!(r.script.calls(2) >= 9, "{}", r.script.calls(2));
        assert_eq!(r.rec.of(1), vec![false]);
        let s = r.status.get(&key(1, 100)).expect("status");
        assert_eq!(s.last_error.as_deref(), Some("no result within 50ms"));
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let mut settings = Settings::default();
        settings.health.max_concurrent_probes = 2;
        let keys: Vec<EndpointKey> = (1..=8).map(|i| key(i, 100)).collect();
        let r = rig(keys, settings);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(r.script.max_in_flight.load(Ordering::SeqCst) <= 2);
        assert!((1..=8).all(|i| r.script.calls(i) > 0));
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_catalog_makes_known_states_be_reported_again() {
        let r = rig(vec![key(1, 100)], Settings::default());
        r.script.set(1, "-");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.rec.of(1), vec![false]);
        r.tx.send_replace(compiled(vec![key(1, 100)], Settings::default()));
        // Long enough for a probe in flight (5ms) to finish first.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(r.rec.of(1), vec![false, false]);
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn reports_name_the_endpoint_by_its_id_in_the_newest_catalog() {
        let r = rig(vec![key(1, 100), key(2, 100)], Settings::default());
        r.script.set(2, "-");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.rec.of(2), vec![false]);
        // 127.0.0.2 was id 1; now it is id 0 (the recorder resolves ids in the catalog the
        // report names, so a stale id would show as another address).
        r.tx.send_replace(compiled(
            vec![key(2, 100), key(3, 100)],
            Settings::default(),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(r.rec.of(2), vec![false, false]);
        assert!(r.rec.of(1).iter().all(|up| *up), "{:?}", r.rec.of(1));
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_initial_round_probes_at_once_then_spreads() {
        let keys: Vec<EndpointKey> = (1..=20).map(|i| key(i, 1000)).collect();
        let r = rig(keys, Settings::default());
        let round = r.sched.initial_round(Duration::from_millis(100)).await;
        assert_eq!(round.endpoints, 20);
        assert_eq!(round.reported, 20);
        // Every probe at once (each takes 5ms), every result reported before the round ends.
        assert_eq!(round.elapsed, Duration::from_millis(5));
        assert_eq!(r.rec.0.lock().expect("lock").len(), 20);
        // The second probes are spread over the next interval.
        let mut seen = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.push((1..=20).filter(|i| r.script.calls(*i) > 1).count());
        }
        assert!(seen[0] < 20, "{seen:?}");
        assert_eq!(seen[9], 20, "{seen:?}");
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_appearing_later_are_spread_over_the_interval() {
        let r = rig(vec![], Settings::default());
        assert_eq!(r.sched.initial_round(Duration::ZERO).await.endpoints, 0);
        let keys: Vec<EndpointKey> = (1..=20).map(|i| key(i, 1000)).collect();
        r.tx.send_replace(compiled(keys, Settings::default()));
        let mut seen = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.push((1..=20).filter(|i| r.script.calls(*i) > 0).count());
        }
        // Not all at once, all within one interval.
        assert!(seen[0] < 20, "{seen:?}");
        assert_eq!(seen[9], 20, "{seen:?}");
        r.sched.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_initial_round_is_bounded() {
        // One probe at a time, each timing out at 50ms: three take 150ms, the round gives up
        // after 50ms + 20ms with one result.
        let mut settings = Settings::default();
        settings.health.max_concurrent_probes = 1;
        let r = rig((1..=3).map(|i| key(i, 1000)).collect(), settings);
        for i in 1..=3 {
            r.script.set(i, "s");
        }
        let round = r.sched.initial_round(Duration::from_millis(20)).await;
        assert_eq!(round.endpoints, 3);
        assert_eq!(round.reported, 1);
        assert_eq!(round.elapsed, Duration::from_millis(70));
        r.sched.stop().await;
    }

    #[test]
    fn unprobed_endpoints_are_ignored() {
        let mut k = key(1, 100);
        std::sync::Arc::make_mut(&mut k.probe).kind = ProbeKind::None;
        assert!(!k.probed());
    }
}
