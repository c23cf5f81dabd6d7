//! The single writer. Sources, health checks and drains send updates here; the publisher merges
//! them and stores one new snapshot per burst (debounced), so queries always see catalog and
//! health from the same moment.
//!
//! Sources hand over fragments by source id (`source::Fragment`): the whole of it, or the
//! objects that changed. The publisher knows no source by name: it keeps each source's
//! fragment, and on a change redoes only the changed objects against the kept build
//! (`incremental`), or merges every fragment and builds and compiles the catalog whole when an
//! update needs it. An object the catalog rejects is logged and counted once (by the source it
//! came from), left out, and the rest is served. The configuration (settings, GeoIP) comes with
//! the file source's fragment (`Update::Files`).

use crate::model::{from_unix, to_unix};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::compile::{Compiled, EndpointKey};
use super::incremental::{Engine, ObjectChange};
use super::{HealthView, Shared, Snapshot};
use crate::config::Settings;
use crate::events::EventLog;
use crate::geo::GeoDb;
use crate::health::ledger::Ledger;
pub use crate::health::ledger::QuorumConfig;
use crate::health::quorum::Obs;
use crate::metrics;
use crate::model::Object;
use crate::source::file::ZoneFile;
use crate::source::{self, Change, Fragment, Located, ObjectKey, SourceId};

// Heavy work and freeing replaced catalogs happen off the query path, in the reaper's threads.
use super::reaper::{Retired, off_path, retire};

/// (name index, cluster index) pairs out of answers by record-scoped drains, sorted.
type ScopedPairs = Arc<Vec<(u32, u32)>>;

/// Burst window: updates arriving within it share one publication.
const DEBOUNCE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub cluster: String,
    /// The records it is scoped to (`namespace/name` of a ServiceDNSRecord or
    /// IngressDNSRecord), sorted; empty: the whole cluster.
    pub records: Vec<String>,
    pub until: Option<SystemTime>,
    pub since: SystemTime,
    /// Why, as the operator said it (shown by `state` and the status page).
    pub reason: Option<String>,
    /// Who asked for it (`user@host`, or what a Drain object says).
    pub requested_by: Option<String>,
    /// The Drain object it comes from (`namespace/name`); None for an in-process drain.
    pub object: Option<String>,
}

impl Drain {
    /// The key this drain is served under (see [`drain_key`]).
    pub fn key(&self) -> String {
        drain_key(&self.cluster, &self.records)
    }

    pub fn whole_cluster(&self) -> bool {
        self.records.is_empty()
    }
}

/// A drain's key in the drains maps and in `state`: the cluster's name for a whole-cluster
/// drain (so `drains["east"]` keeps meaning "east is drained"), `cluster [ns/a,ns/b]` for one
/// scoped to records. One drain per key: a second one for the same key replaces it.
pub fn drain_key(cluster: &str, records: &[String]) -> String {
    if records.is_empty() {
        cluster.to_string()
    } else {
        format!("{cluster} [{}]", records.join(","))
    }
}

/// A drain's record scope, checked and normalised: each `namespace/name`, trimmed, sorted,
/// without duplicates. The error names the offending entry.
pub fn normalise_records(records: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let r = r.trim();
        let ok = r.split_once('/').is_some_and(|(ns, name)| {
            let label = |s: &str| {
                !s.is_empty()
                    && s.len() <= 253
                    && s.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    })
            };
            label(ns) && label(name)
        });
        if !ok {
            return Err(format!(
                "records[{i}]: {r:?} is not namespace/name of a ServiceDNSRecord or IngressDNSRecord"
            ));
        }
        out.push(r.to_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The file source's fragment, already validated on its own (`app::load`).
#[derive(Clone, Default)]
pub struct FileInputs {
    pub zone_files: Vec<ZoneFile>,
    pub objects: Vec<Located<Object>>,
    pub settings: Settings,
    pub geo: Option<Arc<GeoDb>>,
}

pub enum Update {
    /// The configuration and the file source changed (SIGHUP reload), with the catalog
    /// compiled from the files alone (served as it is while no other source contributes: no
    /// second compile).
    Files(Box<FileInputs>, Arc<Compiled>),
    /// A source's fragment changed.
    Source(SourceId, Box<Change>),
    /// An endpoint's health changed: its id in the catalog whose `ProbeSet` has `generation`.
    Health {
        generation: u64,
        endpoint: u32,
        up: bool,
    },
    /// Drain a cluster, or only some records' targets in it (until a time, or until
    /// undrained).
    Drain {
        cluster: String,
        records: Vec<String>,
        until: Option<SystemTime>,
        reason: Option<String>,
        requested_by: Option<String>,
        reply: Option<oneshot::Sender<Drain>>,
    },
    /// The drains every replica shares (the Kubernetes source's valid, unexpired Drain
    /// objects), by [`drain_key`], replacing the previous set. Served together with the in-process
    /// drains.
    SharedDrains(HashMap<String, Drain>),
    /// Keep in-process drains in this file (file mode): load what it holds now, write it on
    /// every change, so a restart does not forget a drain.
    DrainsFile(PathBuf),
    /// End a cluster's drains (every one of them; with `records`, those scoped to any of
    /// them); replies whether there was one.
    Undrain {
        cluster: String,
        records: Vec<String>,
        reply: Option<oneshot::Sender<bool>>,
    },
    /// Replies once every update sent before it is applied and published (start-up waits for
    /// the initial health round to be in the snapshot before answering queries).
    Flush(oneshot::Sender<()>),
    /// Combine health with peers' observations by quorum (`--peer`): from now on health is the
    /// combined view, not this replica's alone.
    Quorum(QuorumConfig),
    /// A peer's observations (None: the exchange failed; its last view ages out).
    Peer {
        peer: String,
        view: Option<crate::health::exchange::WireView>,
    },
    /// A peer left (`--peers-dns` no longer resolves to it).
    PeerGone(String),
    /// This replica's own observations in wire form, for `GET /api/v1/observations`.
    Observations(oneshot::Sender<crate::health::exchange::WireView>),
    /// Every vantage point's view of every endpoint (own first), for the state document.
    Vantage(oneshot::Sender<HashMap<EndpointKey, Vec<(String, Obs)>>>),
}

#[derive(Clone)]
pub struct PublisherHandle {
    tx: mpsc::UnboundedSender<Update>,
    /// Current drains, for the admin API.
    pub drains: watch::Receiver<HashMap<String, Drain>>,
    /// Recent health transitions and drains, for the admin API's status page.
    pub events: EventLog,
    /// The compiled catalog currently served: the health scheduler follows it to start and
    /// stop probes.
    pub catalogs: watch::Receiver<Arc<Compiled>>,
}

impl PublisherHandle {
    pub fn send(&self, u: Update) {
        // The publisher only stops at exit.
        let _ = self.tx.send(u);
    }

    pub async fn drain(
        &self,
        cluster: String,
        records: Vec<String>,
        until: Option<SystemTime>,
        reason: Option<String>,
        requested_by: Option<String>,
    ) -> Option<Drain> {
        let (reply, rx) = oneshot::channel();
        self.send(Update::Drain {
            cluster,
            records,
            until,
            reason,
            requested_by,
            reply: Some(reply),
        });
        rx.await.ok()
    }

    pub async fn undrain(&self, cluster: String, records: Vec<String>) -> bool {
        let (reply, rx) = oneshot::channel();
        self.send(Update::Undrain {
            cluster,
            records,
            reply: Some(reply),
        });
        rx.await.unwrap_or(false)
    }

    /// Waits until every update sent before this call is published.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        self.send(Update::Flush(reply));
        let _ = rx.await;
    }
}

struct State {
    shared: Shared,
    compiled: Arc<Compiled>,
    geo: Option<Arc<GeoDb>>,
    /// Health by endpoint id of `compiled`, own and (with peers) combined.
    health: Ledger,
    /// In-process drains (the admin API without Kubernetes), by [`drain_key`].
    drains: HashMap<String, Drain>,
    /// Drains shared through Kubernetes Drain objects, by [`drain_key`].
    shared_drains: HashMap<String, Drain>,
    /// (name index, cluster index) pairs drained by a record-scoped drain, sorted, for the
    /// compiled catalog they were computed against; recomputed when either changes.
    scoped: Option<(Arc<Compiled>, ScopedPairs)>,
    drains_tx: watch::Sender<HashMap<String, Drain>>,
    /// Where in-process drains are kept (file mode), and whether writing it failed already.
    drains_file: Option<PathBuf>,
    drains_file_failed: bool,
    events: EventLog,
    catalogs_tx: watch::Sender<Arc<Compiled>>,
    generation: u64,
    /// The configuration's settings and GeoIP database (with the file source).
    settings: Settings,
    config_geo: Option<Arc<GeoDb>>,
    /// Each source's fragment. Shared with the rebuild thread, never copied: at 100k records a
    /// copy is a quarter of a gigabyte, made on a runtime thread the UDP workers share cores
    /// with.
    sources: BTreeMap<SourceId, Arc<Fragment>>,
    /// The last build, kept to redo single objects (None: the next rebuild is whole).
    engine: Option<Box<Engine>>,
    /// Set when a fragment changed: the catalog is rebuilt before the next publication.
    pending: Option<Pending>,
    /// Kubernetes-attributed catalog errors already reported, so each is logged and counted once.
    reported: HashSet<String>,
    /// Flushes to answer after this burst is published.
    flushed: Vec<oneshot::Sender<()>>,
}

/// Starts the publisher over an already-published first snapshot, compiled from `files` alone.
pub fn start(shared: Shared, files: FileInputs) -> PublisherHandle {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (drains_tx, drains) = watch::channel(HashMap::new());
    let first = shared.load_full();
    let (catalogs_tx, catalogs) = watch::channel(first.compiled.clone());
    let events = EventLog::default();
    let mut st = State {
        events: events.clone(),
        catalogs_tx,
        compiled: first.compiled.clone(),
        geo: first.geo.clone(),
        generation: first.generation,
        shared,
        health: Ledger::new(&first.compiled),
        drains: HashMap::new(),
        shared_drains: HashMap::new(),
        scoped: None,
        drains_tx,
        drains_file: None,
        drains_file_failed: false,
        settings: files.settings.clone(),
        config_geo: files.geo.clone(),
        sources: BTreeMap::from([(source::FILE, Arc::new(file_fragment(files)))]),
        engine: None,
        pending: None,
        reported: HashSet::new(),
        flushed: Vec::new(),
    };
    metrics::get().snapshot_generation.set(st.generation as i64);
    tokio::spawn(async move {
        loop {
            let next_expiry = st
                .drains
                .values()
                .chain(st.shared_drains.values())
                .filter_map(|d| d.until)
                .min()
                .and_then(|t| t.duration_since(SystemTime::now()).ok());
            let first = match next_expiry {
                Some(wait) => match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(u)) => Some(u),
                    Ok(None) => return,
                    Err(_) => None, // a drain expired
                },
                None => match rx.recv().await {
                    Some(u) => Some(u),
                    None => return,
                },
            };
            let mut changed = st.expire_drains();
            if let Some(u) = first {
                changed |= st.apply(u);
                let deadline = Instant::now() + DEBOUNCE;
                while let Ok(Some(u)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    changed |= st.apply(u);
                }
            }
            if let Some(p) = st.pending.take() {
                changed |= st.rebuild_catalog(p).await;
            }
            if st.health.take_requorum() {
                changed |= st.health.recombine(&st.compiled, &st.events);
            }
            if changed {
                st.publish();
            }
            for reply in st.flushed.drain(..) {
                let _ = reply.send(());
            }
        }
    });
    PublisherHandle {
        tx,
        drains,
        events,
        catalogs,
    }
}

impl State {
    fn apply(&mut self, u: Update) -> bool {
        let m = metrics::get();
        match u {
            Update::Files(f, compiled) => {
                self.settings = f.settings.clone();
                self.config_geo = f.geo.clone();
                self.sources
                    .insert(source::FILE, Arc::new(file_fragment(*f)));
                // The kept build is of the old files and settings.
                self.engine = None;
                if self.sources.values().skip(1).any(|f| !f.is_empty()) {
                    self.pending = Some(Pending::whole());
                    return false;
                }
                self.pending = None;
                let geo = self.config_geo.clone();
                self.install(compiled, geo);
                true
            }
            Update::Source(id, change) => {
                if self.sources.get(&id).is_some_and(|f| change.is_noop(f)) {
                    return false;
                }
                let pending = self.pending.get_or_insert_with(Pending::default);
                if pending.unready.is_none() {
                    // Every source's, as the last build saw them.
                    pending.unready = Some(
                        self.sources
                            .values()
                            .flat_map(|f| f.unready.iter().cloned())
                            .collect(),
                    );
                }
                let fragment = Arc::make_mut(self.sources.entry(id).or_default());
                match &*change {
                    Change::Replace(_) => pending.whole = true,
                    Change::Patch {
                        upserts, removed, ..
                    } => {
                        // The version before the burst: what the kept build holds.
                        for key in upserts.iter().map(|(k, _)| k).chain(removed) {
                            pending
                                .old
                                .entry((id, key.clone()))
                                .or_insert_with(|| fragment.objects.get(key).cloned());
                        }
                    }
                }
                fragment.apply(*change);
                false
            }
            Update::Health {
                generation,
                endpoint,
                up,
            } => self
                .health
                .report(&self.compiled, generation, endpoint, up, &self.events),
            Update::Drain {
                cluster,
                records,
                until,
                reason,
                requested_by,
                reply,
            } => {
                let d = Drain {
                    cluster: cluster.clone(),
                    records,
                    until,
                    since: SystemTime::now(),
                    reason,
                    requested_by,
                    object: None,
                };
                let key = d.key();
                tracing::info!(
                    cluster = %cluster,
                    records = %d.records.join(","),
                    until = %until.map(humantime_like).unwrap_or_else(|| "undrained".into()),
                    reason = d.reason.as_deref().unwrap_or(""),
                    requested_by = d.requested_by.as_deref().unwrap_or(""),
                    "cluster drained"
                );
                let mut detail = match until {
                    Some(u) => format!(
                        "for {}",
                        // Whole seconds: the request's own precision, not the
                        // microseconds spent getting here.
                        crate::model::format_duration(Duration::from_secs(
                            u.duration_since(SystemTime::now())
                                .unwrap_or_default()
                                .as_secs_f64()
                                .round() as u64
                        ))
                    ),
                    None => "until undrained".to_string(),
                };
                if let Some(r) = &d.reason {
                    detail.push_str(": ");
                    detail.push_str(r);
                }
                if let Some(w) = &d.requested_by {
                    detail.push_str(&format!(" (by {w})"));
                }
                self.events.record("drain", key.clone(), detail);
                m.drains.with_label_values(&["drain"]).inc();
                self.drains.insert(key, d.clone());
                self.drained_gauge(&cluster);
                self.drains_changed(true);
                if let Some(r) = reply {
                    let _ = r.send(d);
                }
                true
            }
            Update::SharedDrains(next) => self.set_shared_drains(next),
            Update::DrainsFile(path) => {
                let (loaded, dropped) = load_drains_file(&path);
                let any = !loaded.is_empty();
                for (key, d) in loaded {
                    tracing::info!(
                        cluster = %d.cluster,
                        records = %d.records.join(","),
                        until = %d.until.map(humantime_like).unwrap_or_else(|| "undrained".into()),
                        reason = d.reason.as_deref().unwrap_or(""),
                        requested_by = d.requested_by.as_deref().unwrap_or(""),
                        file = %path.display(),
                        "drain restored"
                    );
                    let cluster = d.cluster.clone();
                    self.drains.insert(key, d);
                    self.drained_gauge(&cluster);
                }
                self.drains_file = Some(path);
                // Written back at once (expired entries leave the file); no file is created
                // while there is nothing to keep.
                self.drains_changed(dropped);
                any
            }
            Update::Flush(reply) => {
                self.flushed.push(reply);
                false
            }
            Update::Quorum(cfg) => {
                self.health.enable_quorum(cfg, &self.compiled);
                false
            }
            Update::Peer { peer, view } => {
                self.health.peer(peer, view);
                false
            }
            Update::PeerGone(peer) => {
                self.health.peer_gone(&peer);
                false
            }
            Update::Observations(reply) => {
                let _ = reply.send(self.health.observations(&self.compiled, self.generation));
                false
            }
            Update::Vantage(reply) => {
                let _ = reply.send(self.health.vantage(&self.compiled));
                false
            }
            Update::Undrain {
                cluster,
                records,
                reply,
            } => {
                let ended: Vec<String> = self
                    .drains
                    .iter()
                    .filter(|(_, d)| {
                        d.cluster == cluster
                            && (records.is_empty() || d.records.iter().any(|r| records.contains(r)))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let had = !ended.is_empty();
                for key in &ended {
                    self.drains.remove(key);
                    tracing::info!(cluster = %cluster, drain = %key, "cluster undrained");
                    self.events.record("undrain", key.clone(), "");
                    m.drains.with_label_values(&["undrain"]).inc();
                }
                if had {
                    self.drained_gauge(&cluster);
                    self.drains_changed(true);
                }
                if let Some(r) = reply {
                    let _ = r.send(had);
                }
                had
            }
        }
    }

    fn install(&mut self, compiled: Arc<Compiled>, geo: Option<Arc<GeoDb>>) {
        // Endpoints both catalogs serve keep their state; the rest is forgotten.
        self.health.install(&self.compiled, &compiled);
        metrics::get()
            .snapshot_names
            .set(compiled.nodes.len() as i64);
        let old = std::mem::replace(&mut self.compiled, compiled.clone());
        self.geo = geo;
        // The same catalog as `old`: dropping this reference only counts down while the
        // reaper holds `old`.
        drop(self.catalogs_tx.send_replace(compiled));
        retire(Retired::Compiled(old));
    }

    /// Redoes the changed objects against the kept build, or merges the fragments and builds
    /// and compiles them whole, off the query path's core time (see [`off_path`]); on failure
    /// the served catalog stays. Updates arriving meanwhile wait in the channel: this is still
    /// the only writer.
    async fn rebuild_catalog(&mut self, pending: Pending) -> bool {
        let started = Instant::now();
        let sources: Vec<(SourceId, Arc<Fragment>)> = self
            .sources
            .iter()
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        let settings = self.settings.clone();
        let engine = self.engine.take();
        let Some((errors, result, engine, whole)) = off_path("meridian-compile", move || {
            rebuild(&sources, &settings, engine, pending)
        })
        .await
        else {
            tracing::error!("catalog build thread failed; still serving the previous catalog");
            return false;
        };
        self.engine = engine;
        let m = metrics::get();
        let mut now_reported = HashSet::new();
        for e in &errors {
            let text = e.to_string();
            let source = self.source_of(&e.location);
            if !self.reported.contains(&text) {
                tracing::warn!(source, error = %text, "object left out of the catalog");
                m.source_errors.with_label_values(&[source]).inc();
            }
            now_reported.insert(text);
        }
        self.reported = now_reported;
        match result {
            Ok(c) => {
                let geo = self.config_geo.clone();
                tracing::debug!(
                    names = c.dyns.len(),
                    zones = c.zones.len(),
                    whole,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "catalog rebuilt"
                );
                self.install(c, geo);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "catalog does not compile; still serving the previous one");
                false
            }
        }
    }

    /// The source an error is attributed to: the one whose objects' locations it starts
    /// with, else the first (the file source validated its fragment on its own: the error is
    /// a clash with another source's objects).
    fn source_of(&self, location: &str) -> &'static str {
        self.sources
            .keys()
            .find(|id| id.location_prefix.is_some_and(|p| location.starts_with(p)))
            .or_else(|| self.sources.keys().next())
            .map_or(source::FILE.name, |id| id.name)
    }

    fn expire_drains(&mut self) -> bool {
        let now = SystemTime::now();
        let expired: Vec<String> = self
            .drains
            .iter()
            .filter(|(_, d)| d.until.is_some_and(|u| u <= now))
            .map(|(c, _)| c.clone())
            .collect();
        let m = metrics::get();
        for key in &expired {
            let Some(d) = self.drains.remove(key) else {
                continue;
            };
            tracing::info!(cluster = %d.cluster, drain = %key, "drain expired");
            self.events.record("expire", key.clone(), "");
            m.drains.with_label_values(&["expire"]).inc();
            self.drained_gauge(&d.cluster);
        }
        // Shared drains end at their expiry by themselves too, without waiting for the
        // Kubernetes source to say so.
        let mut shared = self.shared_drains.clone();
        shared.retain(|_, d| d.until.is_none_or(|u| u > now));
        let shared_changed = shared.len() != self.shared_drains.len();
        if shared_changed {
            self.set_shared_drains(shared);
        }
        if !expired.is_empty() {
            self.drains_changed(true);
        }
        !expired.is_empty() || shared_changed
    }

    /// Publishes the served drains (in-process ∪ shared) to the admin API and, when
    /// `local` changed, writes the drains file.
    fn drains_changed(&mut self, local: bool) {
        self.scoped = None;
        let mut all = self.drains.clone();
        // A shared drain is the one shown: it names its object and who asked.
        all.extend(
            self.shared_drains
                .iter()
                .map(|(c, d)| (c.clone(), d.clone())),
        );
        self.drains_tx.send_replace(all);
        if local
            && let Some(path) = &self.drains_file
            && (!self.drains.is_empty() || path.exists())
        {
            match save_drains_file(path, &self.drains) {
                Ok(()) => self.drains_file_failed = false,
                Err(e) => {
                    if !self.drains_file_failed {
                        tracing::warn!(file = %path.display(), error = %e, "cannot write the drains file; drains stay in this process only (a restart forgets them)");
                        metrics::get()
                            .drain_errors
                            .with_label_values(&["file"])
                            .inc();
                    }
                    self.drains_file_failed = true;
                }
            }
        }
    }

    /// Replaces the shared drains; logs, records and counts each that starts or ends.
    fn set_shared_drains(&mut self, mut next: HashMap<String, Drain>) -> bool {
        let now = SystemTime::now();
        // Already over (the source computed it a moment before expiry): never installed, so
        // the expiry timer cannot be left pointing at the past.
        next.retain(|_, d| d.until.is_none_or(|u| u > now));
        if next == self.shared_drains {
            return false;
        }
        let m = metrics::get();
        let prev = std::mem::take(&mut self.shared_drains);
        for (c, d) in &next {
            if prev.get(c).is_some_and(|p| p.object == d.object) {
                continue;
            }
            tracing::info!(
                cluster = %d.cluster,
                records = %d.records.join(","),
                object = d.object.as_deref().unwrap_or(""),
                until = %d.until.map(humantime_like).unwrap_or_else(|| "undrained".into()),
                reason = d.reason.as_deref().unwrap_or(""),
                requested_by = d.requested_by.as_deref().unwrap_or(""),
                "cluster drained (Drain object)"
            );
            let mut detail = format!(
                "{} (Drain {})",
                d.reason.as_deref().unwrap_or(""),
                d.object.as_deref().unwrap_or("")
            );
            if let Some(w) = &d.requested_by {
                detail.push_str(&format!(" by {w}"));
            }
            self.events
                .record("drain", c.clone(), detail.trim_start().to_string());
            m.drains.with_label_values(&["drain"]).inc();
        }
        for (c, d) in &prev {
            if next.get(c).is_some_and(|n| n.object == d.object) {
                continue;
            }
            if next.contains_key(c) {
                // Replaced by another object: counted as that one's drain above.
                continue;
            }
            let kind = if d.until.is_some_and(|u| u <= now) {
                "expire"
            } else {
                "undrain"
            };
            tracing::info!(
                cluster = %d.cluster,
                records = %d.records.join(","),
                object = d.object.as_deref().unwrap_or(""),
                "{}",
                if kind == "expire" { "drain expired (Drain object)" } else { "cluster undrained (Drain object gone)" }
            );
            self.events
                .record(kind, c.clone(), d.object.clone().unwrap_or_default());
            m.drains.with_label_values(&[kind]).inc();
        }
        let touched: HashSet<String> = prev
            .values()
            .chain(next.values())
            .map(|d| d.cluster.clone())
            .collect();
        self.shared_drains = next;
        for c in &touched {
            self.drained_gauge(c);
        }
        self.drains_changed(false);
        true
    }

    /// `meridian_drained{cluster}`: 1 while a whole-cluster drain (in-process or shared) holds.
    fn drained_gauge(&self, cluster: &str) {
        let on = self
            .drains
            .values()
            .chain(self.shared_drains.values())
            .any(|d| d.cluster == cluster && d.whole_cluster());
        metrics::get()
            .drained
            .with_label_values(&[cluster])
            .set(i64::from(on));
    }

    /// The (name index, cluster index) pairs record-scoped drains take out of answers, sorted;
    /// cached until the catalog or the drains change.
    fn scoped_pairs(&mut self) -> ScopedPairs {
        if let Some((c, pairs)) = &self.scoped
            && Arc::ptr_eq(c, &self.compiled)
        {
            return pairs.clone();
        }
        let scoped: Vec<&Drain> = self
            .drains
            .values()
            .chain(self.shared_drains.values())
            .filter(|d| !d.whole_cluster())
            .collect();
        let mut pairs = Vec::new();
        if !scoped.is_empty() {
            let c = &self.compiled;
            for (i, dn) in c.catalog.dyn_names.iter().enumerate() {
                // `Kind namespace/name`; DNSEndpoints name no clusters of their own.
                let Some((kind, object)) = dn.object.split_once(' ') else {
                    continue;
                };
                if kind != "ServiceDNSRecord" && kind != "IngressDNSRecord" {
                    continue;
                }
                for d in &scoped {
                    if d.records
                        .binary_search_by(|r| r.as_str().cmp(object))
                        .is_ok()
                        && let Some(cl) = c.clusters.iter().position(|cl| cl.name == d.cluster)
                    {
                        pairs.push((i as u32, cl as u32));
                    }
                }
            }
            pairs.sort_unstable();
            pairs.dedup();
        }
        let pairs = Arc::new(pairs);
        self.scoped = Some((self.compiled.clone(), pairs.clone()));
        pairs
    }

    fn publish(&mut self) {
        let started = Instant::now();
        let c = &self.compiled;
        let health = HealthView {
            endpoint_up: self.health.endpoint_up(c),
            cluster_drained: c
                .clusters
                .iter()
                .map(|cl| {
                    self.drains
                        .get(&cl.name)
                        .or_else(|| self.shared_drains.get(&cl.name))
                        .is_some()
                })
                .collect(),
            scoped_drains: Arc::default(),
        };
        let health = HealthView {
            scoped_drains: self.scoped_pairs(),
            ..health
        };
        self.generation += 1;
        let old = self.shared.swap(Arc::new(Snapshot {
            generation: self.generation,
            published: SystemTime::now(),
            compiled: self.compiled.clone(),
            health: Arc::new(health),
            geo: self.geo.clone(),
        }));
        retire(Retired::Snapshot(old));
        let m = metrics::get();
        m.snapshot_generation.set(self.generation as i64);
        m.snapshot_publish.observe(started.elapsed().as_secs_f64());
    }
}

/// The file source's objects as a fragment, in file order.
fn file_fragment(f: FileInputs) -> Fragment {
    Fragment {
        zone_files: f.zone_files,
        objects: f
            .objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    ObjectKey {
                        group: i as u32,
                        id: String::new(),
                    },
                    o,
                )
            })
            .collect(),
        unready: HashSet::new(),
    }
}

/// What changed since the last build.
#[derive(Default)]
struct Pending {
    /// A fragment was replaced whole (or the configuration changed): build everything.
    whole: bool,
    /// Each changed object's version in the last build, by source and key.
    old: BTreeMap<(SourceId, ObjectKey), Option<Located<Object>>>,
    /// The changed source's readiness pairs in the last build: a record whose pairs changed
    /// is redone too.
    unready: Option<HashSet<(String, String)>>,
}

impl Pending {
    fn whole() -> Pending {
        Pending {
            whole: true,
            ..Default::default()
        }
    }
}

type Rebuilt = (
    Vec<crate::source::SourceError>,
    Result<Arc<Compiled>, super::compile::CompileError>,
    Option<Box<Engine>>,
    bool,
);

/// The rebuild proper (on the build thread): the changed objects redone against `engine`
/// when it can, else a whole build. Returns the catalog's errors, the compiled catalog, the
/// build to keep, and whether it was whole.
fn rebuild(
    sources: &[(SourceId, Arc<Fragment>)],
    settings: &Settings,
    engine: Option<Box<Engine>>,
    pending: Pending,
) -> Rebuilt {
    let mut unready: HashSet<(String, String)> = HashSet::new();
    for (_, f) in sources {
        unready.extend(f.unready.iter().cloned());
    }
    if let Some(mut engine) = engine
        && !pending.whole
    {
        let fragment = |id: SourceId| sources.iter().find(|(s, _)| *s == id).map(|(_, f)| f);
        // Records whose readiness changed, though their objects did not.
        let before = pending.unready.unwrap_or_default();
        let flipped: HashSet<&str> = before
            .symmetric_difference(&unready)
            .map(|(object, _)| object.as_str())
            .collect();
        let mut changes: Vec<ObjectChange> = Vec::new();
        let mut seen: HashSet<(SourceId, ObjectKey)> = HashSet::new();
        for ((id, key), old) in pending.old {
            let new = fragment(id).and_then(|f| f.objects.get(&key).cloned());
            let unready_changed = [&old, &new].into_iter().flatten().any(|o| {
                crate::catalog::Patcher::object_of(&o.value)
                    .is_some_and(|x| flipped.contains(x.as_str()))
            });
            if old != new || unready_changed {
                changes.push(ObjectChange { old, new });
            }
            seen.insert((id, key));
        }
        if !flipped.is_empty() {
            for (id, f) in sources {
                for (key, o) in &f.objects {
                    if !seen.contains(&(*id, key.clone()))
                        && crate::catalog::Patcher::object_of(&o.value)
                            .is_some_and(|x| flipped.contains(x.as_str()))
                    {
                        changes.push(ObjectChange {
                            old: Some(o.clone()),
                            new: Some(o.clone()),
                        });
                    }
                }
            }
        }
        // On refusal the kept build is left half-patched: dropped, and built whole below.
        if let Ok(c) = engine.update(&changes, &unready) {
            return (engine.errors().to_vec(), Ok(c), Some(engine), false);
        }
    }
    let zone_files: Vec<&ZoneFile> = sources.iter().flat_map(|(_, f)| &f.zone_files).collect();
    // In source order: on a name clash the later source's object is the one left out.
    let objects = || sources.iter().flat_map(|(_, f)| f.objects.values());
    let (errors, built) = Engine::build(&zone_files, objects, &unready, settings);
    match built {
        Ok(e) => (errors, Ok(e.compiled().clone()), Some(Box::new(e)), true),
        Err(e) => (errors, Err(e), None, true),
    }
}

/// One drain as the drains file keeps it (times in Unix seconds).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredDrain {
    /// Absent in files written before drains could be scoped: the key is the cluster then.
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    records: Vec<String>,
    since: f64,
    until: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    requested_by: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DrainsFileBody {
    drains: std::collections::BTreeMap<String, StoredDrain>,
}

/// The unexpired drains a drains file holds, and whether any entry was dropped (expired or
/// invalid). A missing file holds none; an unreadable or corrupt one is reported (log,
/// `meridian_drain_errors_total{source="file"}`) and holds none, never fatal; it is left as it
/// is until the next drain change overwrites it.
pub fn load_drains_file(path: &Path) -> (HashMap<String, Drain>, bool) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (HashMap::new(), false),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the drains file; starting without its drains");
            metrics::get()
                .drain_errors
                .with_label_values(&["file"])
                .inc();
            return (HashMap::new(), false);
        }
    };
    let body: DrainsFileBody = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "drains file is corrupt; starting without its drains");
            metrics::get()
                .drain_errors
                .with_label_values(&["file"])
                .inc();
            return (HashMap::new(), false);
        }
    };
    let now = SystemTime::now();
    let mut out = HashMap::new();
    let mut dropped = false;
    for (key, d) in body.drains {
        let cluster = d.cluster.clone().unwrap_or_else(|| key.clone());
        let records = match normalise_records(&d.records) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(cluster = %cluster, file = %path.display(), error = %e, "drain in the drains file has an invalid record scope; dropped");
                metrics::get()
                    .drain_errors
                    .with_label_values(&["file"])
                    .inc();
                dropped = true;
                continue;
            }
        };
        let until = match d.until {
            None => None,
            Some(u) => match from_unix(u) {
                Some(t) if t > now => Some(t),
                Some(_) => {
                    tracing::info!(cluster = %cluster, file = %path.display(), "drain in the drains file has expired; dropped");
                    dropped = true;
                    continue;
                }
                None => {
                    tracing::warn!(cluster = %cluster, file = %path.display(), "drain in the drains file has an invalid `until`; dropped");
                    metrics::get()
                        .drain_errors
                        .with_label_values(&["file"])
                        .inc();
                    dropped = true;
                    continue;
                }
            },
        };
        let d = Drain {
            cluster,
            records,
            until,
            since: from_unix(d.since).unwrap_or(now),
            reason: d.reason,
            requested_by: d.requested_by,
            object: None,
        };
        out.insert(d.key(), d);
    }
    (out, dropped)
}

/// Writes the drains file atomically (a temporary file beside it, renamed over it).
pub fn save_drains_file(path: &Path, drains: &HashMap<String, Drain>) -> std::io::Result<()> {
    let body = DrainsFileBody {
        drains: drains
            .iter()
            .map(|(c, d)| {
                (
                    c.clone(),
                    StoredDrain {
                        cluster: Some(d.cluster.clone()),
                        records: d.records.clone(),
                        since: to_unix(d.since),
                        until: d.until.map(to_unix),
                        reason: d.reason.clone(),
                        requested_by: d.requested_by.clone(),
                    },
                )
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&body).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn humantime_like(t: SystemTime) -> String {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {}s", d.as_secs()),
        Err(_) => "now".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::model::{DNSEndpoint, DNSEndpointSpec, Domain, Endpoint};
    use crate::snapshot::compile;
    use arc_swap::ArcSwap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        }
    }

    fn kube(objects: Vec<Object>) -> Update {
        use crate::source::kubernetes::{KUBERNETES_LOCATION, SOURCE};
        Update::Source(
            SOURCE,
            Box::new(Change::Replace(Fragment {
                objects: objects
                    .into_iter()
                    .map(|o| {
                        (
                            ObjectKey {
                                group: 0,
                                id: o.display_name(),
                            },
                            Located {
                                location: format!("{KUBERNETES_LOCATION} ({})", o.display_name()),
                                value: o,
                            },
                        )
                    })
                    .collect(),
                ..Default::default()
            })),
        )
    }

    fn endpoint(name: &str, dns_name: &str) -> Object {
        Object::DNSEndpoint(DNSEndpoint {
            metadata: meta(name),
            spec: DNSEndpointSpec {
                endpoints: vec![Endpoint {
                    dns_name: dns_name.into(),
                    targets: vec!["192.0.2.1".into()],
                    record_type: "A".into(),
                    ..Default::default()
                }],
            },
        })
    }

    async fn next(shared: &Shared, after: u64) -> Arc<Snapshot> {
        for _ in 0..500 {
            let s = shared.load_full();
            if s.generation > after {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("no new snapshot");
    }

    fn has(s: &Snapshot, name: &str) -> bool {
        let n = hickory_proto::rr::Name::from_ascii(name).expect("name");
        let key = crate::catalog::name_to_wire(&n).expect("wire");
        s.compiled
            .nodes
            .get(&key)
            .is_some_and(|n| !n.rrsets.is_empty())
    }

    #[tokio::test]
    async fn shared_drains_apply_beside_local_ones_and_expire_by_themselves() {
        let empty = compile::compile(Catalog::default(), Settings::default()).expect("compile");
        let shared: Shared = Arc::new(ArcSwap::from_pointee(Snapshot::new(Arc::new(empty), None)));
        let publisher = start(shared, FileInputs::default());
        let now = SystemTime::now();
        let drain = |cluster: &str, until: SystemTime| Drain {
            cluster: cluster.into(),
            records: Vec::new(),
            until: Some(until),
            since: now,
            reason: Some("drill".into()),
            requested_by: Some("ops@here".into()),
            object: Some("kube-federation-system/east-abcde".into()),
        };
        publisher
            .drain(
                "west".into(),
                Vec::new(),
                None,
                None,
                Some("me@here".into()),
            )
            .await
            .expect("local drain");
        let mut set = HashMap::new();
        set.insert(
            "east".to_string(),
            drain("east", now + Duration::from_millis(300)),
        );
        // Already over: never installed.
        set.insert(
            "north".to_string(),
            drain("north", now - Duration::from_secs(1)),
        );
        publisher.send(Update::SharedDrains(set));
        publisher.flush().await;
        let seen = publisher.drains.borrow().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            seen["east"].object.as_deref(),
            Some("kube-federation-system/east-abcde")
        );
        assert_eq!(seen["west"].requested_by.as_deref(), Some("me@here"));
        // The expiry ends the shared drain without another update; the local one stays.
        let mut rx = publisher.drains.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|d| !d.contains_key("east")),
        )
        .await
        .expect("expired in time")
        .expect("publisher alive");
        assert!(publisher.drains.borrow().contains_key("west"));
        assert!(
            publisher
                .events
                .recent()
                .iter()
                .any(|e| serde_json::to_string(e).is_ok_and(|t| t.contains("expire")))
        );
    }

    #[tokio::test]
    async fn with_peers_health_is_the_quorum_of_every_vantage_point() {
        use crate::health::exchange::WireView;
        use crate::health::probed::ProbeSet;
        use crate::health::quorum;
        use crate::health::spec::{ProbeKind, ProbeSpec};
        let spec = Arc::new(ProbeSpec {
            kind: ProbeKind::Tcp,
            port: 80,
            path: "/".into(),
            host: None,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            rise: 1,
            fall: 1,
            expect_status: (200, 399),
            expect_body: None,
            insecure: false,
            ca: None,
        });
        let key = |last: u8| EndpointKey {
            addr: std::net::IpAddr::from([192, 0, 2, last]),
            probe: spec.clone(),
        };
        let (a, b) = (key(1), key(2));
        let endpoints = vec![a.clone(), b.clone()];
        let probes = ProbeSet::build(&endpoints, &[], &[]);
        let generation = probes.generation;
        let compiled = Compiled {
            settings: Settings::default(),
            catalog: Catalog::default(),
            zones: vec![],
            zone_index: Default::default(),
            nodes: Default::default(),
            dyns: Default::default(),
            clusters: vec![],
            endpoints,
            probes,
            default_cluster: None,
        };
        let shared: Shared = Arc::new(ArcSwap::from_pointee(Snapshot::new(
            Arc::new(compiled),
            None,
        )));
        let publisher = start(shared.clone(), FileInputs::default());
        publisher.send(Update::Quorum(QuorumConfig {
            name: "self".into(),
            poll: Duration::from_secs(10),
            stale_intervals: 3,
        }));
        let up = |i: u32| shared.load_full().health.up(i);
        // No peer heard yet: the own view (fallback).
        publisher.send(Update::Health {
            generation,
            endpoint: 0,
            up: false,
        });
        publisher.send(Update::Health {
            generation,
            endpoint: 1,
            up: true,
        });
        publisher.flush().await;
        assert!(!up(0) && up(1));
        let view = |name: &str, a_up: bool| WireView {
            name: name.into(),
            at: 0.0,
            generation: 1,
            observations: [
                (quorum::wire_key(&a), (a_up, 1.0)),
                (quorum::wire_key(&b), (true, 1.0)),
            ]
            .into_iter()
            .collect(),
        };
        // Two peers see `a` up: one vantage point of three says down, so it is up.
        for (peer, name) in [("p1:9153", "p1"), ("p2:9153", "p2")] {
            publisher.send(Update::Peer {
                peer: peer.into(),
                view: Some(view(name, true)),
            });
        }
        publisher.flush().await;
        assert!(up(0), "a minority does not fail an endpoint");
        // One peer agrees with this replica: two of three, down.
        publisher.send(Update::Peer {
            peer: "p1:9153".into(),
            view: Some(view("p1", false)),
        });
        publisher.flush().await;
        assert!(!up(0), "a majority does");
        assert!(up(1));
        // Its own answer polled back (same name) does not vote.
        publisher.send(Update::Peer {
            peer: "me:9153".into(),
            view: Some(view("self", false)),
        });
        publisher.send(Update::PeerGone("p1:9153".into()));
        publisher.flush().await;
        assert!(up(0), "self and p2 tie: up");
        let (reply, rx) = oneshot::channel();
        publisher.send(Update::Observations(reply));
        let own = rx.await.expect("observations");
        assert_eq!(own.name, "self");
        assert!(!own.observations[&quorum::wire_key(&a)].0);
    }

    #[test]
    fn drains_file_round_trip_drops_expired_and_survives_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".meridian-drains.json");
        assert_eq!(load_drains_file(&path), (HashMap::new(), false));
        let now = SystemTime::now();
        let d = |cluster: &str, until: Option<SystemTime>| Drain {
            cluster: cluster.into(),
            records: Vec::new(),
            until,
            since: now,
            reason: Some("drill".into()),
            requested_by: Some("ops@here".into()),
            object: None,
        };
        let mut drains = HashMap::new();
        drains.insert(
            "east".to_string(),
            d("east", Some(now + Duration::from_secs(600))),
        );
        drains.insert("west".to_string(), d("west", None));
        drains.insert(
            "old".to_string(),
            d("old", Some(now - Duration::from_secs(1))),
        );
        let scoped = Drain {
            records: vec!["shop/api".into(), "shop/web".into()],
            ..d("west", None)
        };
        drains.insert(scoped.key(), scoped.clone());
        save_drains_file(&path, &drains).expect("save");
        let (loaded, dropped) = load_drains_file(&path);
        assert!(dropped, "the expired drain is dropped");
        assert_eq!(loaded.len(), 3);
        // Float seconds in the file: equal but for the sub-microsecond part of `since`.
        let back = &loaded["west [shop/api,shop/web]"];
        assert_eq!(
            (&back.cluster, &back.records),
            (&scoped.cluster, &scoped.records)
        );
        assert_eq!(back.key(), scoped.key());
        assert_eq!(loaded["east"].reason.as_deref(), Some("drill"));
        assert_eq!(loaded["east"].requested_by.as_deref(), Some("ops@here"));
        assert_eq!(loaded["west"].until, None);
        // A file from before scoped drains (no cluster field): the key is the cluster.
        std::fs::write(
            &path,
            r#"{"drains": {"east": {"since": 1.0, "until": null}}}"#,
        )
        .expect("write");
        let (loaded, _) = load_drains_file(&path);
        assert_eq!(loaded["east"].cluster, "east");
        assert!(loaded["east"].whole_cluster());
        // A malformed scope is dropped, not applied to the whole cluster.
        std::fs::write(
            &path,
            r#"{"drains": {"x": {"cluster": "east", "records": ["nonamespace"], "since": 1.0}}}"#,
        )
        .expect("write");
        assert_eq!(load_drains_file(&path), (HashMap::new(), true));
        std::fs::write(&path, "{not json").expect("write");
        assert_eq!(load_drains_file(&path), (HashMap::new(), false));
    }

    #[test]
    fn record_scopes_are_checked_and_keyed() {
        assert_eq!(
            normalise_records(&[" shop/web".into(), "a/b".into(), "shop/web".into()]),
            Ok(vec!["a/b".to_string(), "shop/web".to_string()])
        );
        assert!(normalise_records(&["web".into()]).is_err());
        assert!(normalise_records(&["shop/".into()]).is_err());
        assert!(normalise_records(&["shop/we b".into()]).is_err());
        assert_eq!(drain_key("east", &[]), "east");
        assert_eq!(drain_key("east", &["a/b".into()]), "east [a/b]");
    }

    #[tokio::test]
    async fn kubernetes_fragment_is_merged_and_bad_objects_counted_once() {
        let empty = compile::compile(Catalog::default(), Settings::default()).expect("compile");
        let shared: Shared = Arc::new(ArcSwap::from_pointee(Snapshot::new(Arc::new(empty), None)));
        let publisher = start(shared.clone(), FileInputs::default());
        let errors = || {
            metrics::get()
                .source_errors
                .with_label_values(&["kubernetes"])
                .get()
        };
        let e0 = errors();
        let domain = Object::Domain(Domain {
            metadata: meta("d"),
            domain: "k.example.org".into(),
            name_server: None,
        });
        publisher.send(kube(vec![
            domain.clone(),
            endpoint("good", "a.k.example.org"),
            endpoint("bad", "outside.example.net"),
        ]));
        let s = next(&shared, 1).await;
        assert!(has(&s, "a.k.example.org."));
        assert_eq!(errors(), e0 + 1, "the bad object is counted");
        // Another rebuild with the same bad object does not count it again.
        publisher.send(kube(vec![
            domain,
            endpoint("good", "b.k.example.org"),
            endpoint("bad", "outside.example.net"),
        ]));
        let s = next(&shared, s.generation).await;
        assert!(has(&s, "b.k.example.org."));
        assert!(!has(&s, "a.k.example.org."));
        assert_eq!(errors(), e0 + 1);
        // A patch names the changed objects only; the rest stays.
        let key = |name: &str| ObjectKey {
            group: 0,
            id: endpoint(name, "").display_name(),
        };
        publisher.send(Update::Source(
            crate::source::kubernetes::SOURCE,
            Box::new(Change::Patch {
                upserts: vec![(
                    key("good"),
                    Located {
                        location: "kubernetes (DNSEndpoint ns/good)".into(),
                        value: endpoint("good", "c.k.example.org"),
                    },
                )],
                removed: vec![key("bad")],
                unready: HashSet::new(),
            }),
        ));
        let s = next(&shared, s.generation).await;
        assert!(has(&s, "c.k.example.org."));
        assert!(!has(&s, "b.k.example.org."));
        assert_eq!(errors(), e0 + 1);
        // An empty fragment takes the Kubernetes names away.
        let generation = s.generation;
        publisher.send(kube(vec![]));
        let s = next(&shared, generation).await;
        assert!(
            !has(&s, "b.k.example.org."),
            "names vanish with their objects"
        );
    }
}
