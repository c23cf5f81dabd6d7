//! Keeping heavy work off the query path: [`off_path`] runs a build or a reload on an
//! idle-priority thread, and [`retire`] frees replaced snapshots and catalogs on one, once no
//! reader holds them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Snapshot;
use super::compile::Compiled;

/// Runs `f` on a thread of its own at idle CPU priority and awaits the result. Catalog builds
/// and reloads cost milliseconds to seconds of CPU; on a core the UDP workers share, a
/// normal-priority burst (or a merely niced one: EEVDF lets the running task finish its slice)
/// delays them and shows in the query path's p99. A `SCHED_IDLE` thread is preempted the
/// moment a worker wakes. The price: while the workers saturate every core, rebuilds wait.
/// None if no thread could be started.
pub async fn off_path<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            idle_priority();
            let _ = tx.send(f());
        })
        .ok()?;
    rx.await.ok()
}

/// Puts the calling thread in `SCHED_IDLE` (always allowed for one's own threads).
fn idle_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: pid 0 is the calling thread; the param struct is read only.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        let _ = libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// What the publisher replaces: freed by [`retire`] once no one else holds it.
pub enum Retired {
    Snapshot(Arc<Snapshot>),
    Compiled(Arc<Compiled>),
}

impl Retired {
    fn last_owner(&self) -> bool {
        match self {
            Retired::Snapshot(a) => Arc::strong_count(a) == 1,
            Retired::Compiled(a) => Arc::strong_count(a) == 1,
        }
    }

    fn same(&self, other: &Retired) -> bool {
        match (self, other) {
            (Retired::Snapshot(a), Retired::Snapshot(b)) => Arc::ptr_eq(a, b),
            (Retired::Compiled(a), Retired::Compiled(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Frees a replaced snapshot or catalog on an idle-priority thread once it holds the last
/// reference. Freeing a large catalog takes a while (100k records: ~0.7M names, some 100 ms),
/// and whoever drops the last reference pays it: without this, often a UDP worker whose
/// `load()` guard outlived the swap, or the publisher's task on a core the workers share.
pub fn retire(r: Retired) {
    static REAPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Retired>>> =
        std::sync::OnceLock::new();
    let tx = REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Retired>();
        std::thread::Builder::new()
            .name("meridian-reaper".into())
            .spawn(move || reap(rx))
            .ok()
            .map(|_| tx)
    });
    // No thread (resource exhaustion): dropped here instead.
    if let Some(tx) = tx {
        let _ = tx.send(r);
    }
}

fn reap(rx: std::sync::mpsc::Receiver<Retired>) {
    use std::sync::mpsc::RecvTimeoutError;
    idle_priority();
    let mut held: Vec<Retired> = Vec::new();
    loop {
        // Readers let go within microseconds; poll briefly while something is held.
        let wait = if held.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(2)
        };
        let first = match rx.recv_timeout(wait) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for r in first.into_iter().chain(rx.try_iter()) {
            // Held twice, the count could never fall to one: keep one reference. Dropping the
            // other frees nothing, since the held one remains.
            if !held.iter().any(|h| h.same(&r)) {
                held.push(r);
            }
        }
        // Dropped here, by `retain`, when this thread holds the last reference.
        held.retain(|r| !r.last_owner());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::catalog::Catalog;
    use crate::config::Settings;
    use crate::snapshot::compile;

    #[test]
    fn retired_catalogs_are_freed_only_after_their_last_reader() {
        let compiled =
            Arc::new(compile::compile(Catalog::default(), Settings::default()).expect("compile"));
        let reader = compiled.clone();
        let weak = Arc::downgrade(&compiled);
        // Retired twice (two owners handing over the same catalog): still freed once.
        retire(Retired::Compiled(compiled.clone()));
        retire(Retired::Compiled(compiled));
        std::thread::sleep(Duration::from_millis(50));
        assert!(weak.upgrade().is_some(), "freed while a reader held it");
        drop(reader);
        // The reaper polls every few ms; give it ample time on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(weak.upgrade().is_none(), "never freed");
    }
}
