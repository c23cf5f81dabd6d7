//! Reloading the file source: on SIGHUP, and when polling sees a served file change. A reload
//! loads the whole directory again off the async runtime ([`reload`]); on success the publisher
//! gets the new fragment, on any error the running state keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use super::load::{Paths, load_watched};
use super::poll::fingerprint;
use crate::geo::GeoDb;
use crate::metrics;
use crate::snapshot::publisher::{PublisherHandle, Update};
use crate::snapshot::reaper::off_path;

/// Reload threads still running, abandoned ones included: a thread stuck in a read cannot be
/// stopped, so after a few are stuck no more are started (each would likely stick too).
static RELOAD_THREADS: AtomicUsize = AtomicUsize::new(0);
const MAX_RELOAD_THREADS: usize = 4;

struct ReloadThread;

impl Drop for ReloadThread {
    fn drop(&mut self) {
        RELOAD_THREADS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reloads zones, configuration and GeoIP; on any error, or when the reload misses `deadline`,
/// the running state stays. Returns the files the reload read or tried to (for the watcher),
/// None when it did not finish.
pub async fn reload(
    paths: Paths,
    other_sources: bool,
    publisher: PublisherHandle,
    deadline: Duration,
) -> Option<Vec<PathBuf>> {
    let m = metrics::get();
    let failed = || {
        m.reloads.with_label_values(&["failed"]).inc();
        m.source_errors.with_label_values(&["file"]).inc();
    };
    if RELOAD_THREADS.fetch_add(1, Ordering::AcqRel) >= MAX_RELOAD_THREADS {
        RELOAD_THREADS.fetch_sub(1, Ordering::AcqRel);
        failed();
        tracing::error!(
            stuck = MAX_RELOAD_THREADS,
            "reload refused: earlier reloads are still stuck reading files; still serving the \
             previous state"
        );
        return None;
    }
    // Made here and moved in, so the count drops also when no thread could be started.
    let guard = ReloadThread;
    let paths2 = paths.clone();
    let work = off_path("meridian-reload", move || {
        let _guard = guard;
        load_watched(&paths2, other_sources)
    });
    let (result, watched) = match tokio::time::timeout(deadline, work).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            failed();
            tracing::error!("reload failed: no thread for it; still serving the previous state");
            return None;
        }
        Err(_) => {
            failed();
            tracing::error!(
                timeout_ms = deadline.as_millis() as u64,
                "reload abandoned: not finished within --reload-timeout {deadline:?} (a file that \
                 never ends, a hung file system?); still serving the previous state"
            );
            return None;
        }
    };
    match result {
        Ok(l) => {
            m.reloads.with_label_values(&["ok"]).inc();
            m.snapshot_names.set(l.compiled.nodes.len() as i64);
            tracing::info!(
                zones = l.compiled.zones.len(),
                names = l.compiled.dyns.len(),
                "reloaded {}",
                paths.zones.display()
            );
            match &l.inputs.geo {
                Some(g) => g.announce(),
                None => GeoDb::announce_none(),
            }
            // The publisher serves this compile as it is, or, with other sources, merges the
            // new fragment with theirs and recompiles.
            publisher.send(Update::Files(Box::new(l.inputs), Arc::new(l.compiled)));
        }
        Err(errs) => {
            m.reloads.with_label_values(&["failed"]).inc();
            m.source_errors
                .with_label_values(&["file"])
                .inc_by(errs.len() as u64);
            for e in &errs {
                tracing::error!(error = %e, "reload rejected; still serving the previous state");
            }
        }
    }
    Some(watched)
}

/// What asks for reloads: SIGHUP, and every `interval` a fingerprint of the watched files
/// (polled, so atomic renames and network mounts work; a zero interval turns polling off).
pub struct Watcher {
    paths: Paths,
    other_sources: bool,
    publisher: PublisherHandle,
    timeout: Duration,
    interval: Duration,
    hup: Signal,
    watched: Vec<PathBuf>,
    seen: u64,
    running: Option<JoinHandle<Option<Vec<PathBuf>>>>,
    again: bool,
}

impl Watcher {
    /// Installs the SIGHUP handler at once: SIGHUP's default action is to exit, and a reload
    /// may be asked for as soon as the server says it serves. `watched` is what the first load
    /// read.
    pub fn new(
        paths: Paths,
        other_sources: bool,
        publisher: PublisherHandle,
        timeout: Duration,
        interval: Duration,
        watched: Vec<PathBuf>,
    ) -> std::io::Result<Watcher> {
        let hup = signal(SignalKind::hangup())?;
        let seen = fingerprint(&paths.zones, &watched);
        Ok(Watcher {
            paths,
            other_sources,
            publisher,
            timeout,
            interval,
            hup,
            watched,
            seen,
            running: None,
            again: false,
        })
    }

    fn fingerprint(&self) -> u64 {
        fingerprint(&self.paths.zones, &self.watched)
    }

    // Reloads run as a task beside the watcher's loop, never inside it: a reload stuck on a
    // file must not keep SIGTERM, SIGHUP or the poll waiting. One runs at a time; what asks
    // for another meanwhile (SIGHUP, a change) is folded into one more reload after it.
    fn start_reload(&mut self) {
        self.running = Some(tokio::spawn(reload(
            self.paths.clone(),
            self.other_sources,
            self.publisher.clone(),
            self.timeout,
        )));
    }

    /// Serves SIGHUP and the poll until the future is dropped (the server stopping); the
    /// state lives in `self`, so dropping it between events loses nothing. Then call
    /// [`Watcher::stop`].
    pub async fn run(&mut self) {
        let mut tick = tokio::time::interval(if self.interval.is_zero() {
            Duration::from_secs(3600)
        } else {
            self.interval
        });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let polling = !self.interval.is_zero();
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    if self.running.is_some() {
                        self.again = true;
                        tracing::info!("SIGHUP during a reload: another reload follows it");
                    } else {
                        self.seen = self.fingerprint();
                        self.start_reload();
                    }
                }
                _ = tick.tick(), if polling => {
                    let now = self.fingerprint();
                    if now != self.seen {
                        self.seen = now;
                        tracing::info!("files changed in {}", self.paths.zones.display());
                        if self.running.is_some() {
                            self.again = true;
                        } else {
                            self.start_reload();
                        }
                    }
                }
                done = async {
                    match self.running.as_mut() {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                }, if self.running.is_some() => {
                    self.running = None;
                    if let Ok(Some(files)) = done {
                        // Watch what this reload read (included files come and go). Unless
                        // something changed meanwhile, the new set's fingerprint is the baseline.
                        let unchanged = self.fingerprint() == self.seen;
                        self.watched = files;
                        if unchanged {
                            self.seen = self.fingerprint();
                        }
                    }
                    if std::mem::take(&mut self.again) {
                        self.seen = self.fingerprint();
                        self.start_reload();
                    }
                }
            }
        }
    }

    /// Abandons a reload in flight: its thread may be stuck in a read; nothing waits for it,
    /// and exit ends it. The SIGHUP handler stays installed, so a SIGHUP while stopping is
    /// ignored rather than fatal.
    pub fn stop(&mut self) {
        if let Some(task) = self.running.take() {
            task.abort();
        }
    }
}
