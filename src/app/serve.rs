//! `meridian serve`, in three phases: [`build`] (load, publish, probe, bind, start every task;
//! nothing answers before the first snapshot and its first probe round), [`Server::run`]
//! (serve until SIGTERM or Ctrl-C, reloading the file source meanwhile) and [`Server::drain`]
//! (lame duck, then stop every task in order).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use super::cli::ServeArgs;
use crate::admin::{self, AdminState};
use crate::dns::server::{self, TcpLimits};
use crate::geo::GeoDb;
use crate::health::HealthStatus;
use crate::health::scheduler::Scheduler;
use crate::metrics;
use crate::snapshot::publisher;
use crate::snapshot::{Shared, Snapshot};
use crate::source::file::load::{error_summary, load_watched};
use crate::source::file::reload::Watcher;
use crate::source::kubernetes;

pub async fn serve(args: ServeArgs) -> Result<()> {
    let mut server = build(args).await?;
    server.run().await;
    server.drain().await;
    Ok(())
}

/// A started server: what [`Server::run`] waits on and [`Server::drain`] stops.
pub struct Server {
    lameduck: Duration,
    term: Signal,
    watcher: Watcher,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    /// Tells the UDP workers to stop.
    stop: Arc<AtomicBool>,
    /// Tells the async tasks (TCP, admin, peers, Kubernetes) to stop.
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    kube_handle: Option<kubernetes::KubeHandle>,
    scheduler: Scheduler,
    peer_task: Option<JoinHandle<()>>,
    tcp_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
}

/// Loads, publishes the first snapshot, runs the first probe round, binds and starts every
/// task; returns once the server says "serving".
pub async fn build(args: ServeArgs) -> Result<Server> {
    let watch = args.watch_interval;
    let idle = args.tcp_idle_timeout;
    // Before anything binds: a misconfigured admin API must not come up even briefly.
    if let Some(problem) = admin::token_problem(&args.admin, args.admin_token.as_deref()) {
        bail!(problem);
    }
    if let Some(n) = &args.nsid
        && (n.is_empty() || n.len() > 255)
    {
        bail!("--nsid: {} octets is outside 1..=255", n.len());
    }
    crate::dns::answer::init_identity(args.nsid.as_deref());
    raise_fd_limit();
    let kube = args.kube.options()?;
    let reload_timeout = args.reload_timeout;
    let started = Instant::now();
    let paths = args.source.paths();
    let (loaded, watched) = load_watched(&paths, kube.is_some());
    let loaded = match loaded {
        Ok(l) => l,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            bail!("{}", error_summary(&errs, &args.source.zones));
        }
    };
    tracing::info!(
        zones = loaded.compiled.zones.len(),
        names = loaded.compiled.dyns.len(),
        clusters = loaded.compiled.clusters.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded {}",
        args.source.zones.display()
    );
    match &loaded.geo {
        Some(g) => g.announce(),
        None => GeoDb::announce_none(),
    }
    metrics::get()
        .snapshot_names
        .set(loaded.compiled.nodes.len() as i64);
    let shared: Shared = Arc::new(ArcSwap::from_pointee(Snapshot::new(
        Arc::new(loaded.compiled),
        loaded.geo,
    )));
    let publisher = publisher::start(shared.clone(), loaded.inputs);
    let sharing = !args.peers.is_empty() || args.peers_dns.is_some();
    if sharing {
        publisher.send(publisher::Update::Quorum(publisher::QuorumConfig {
            name: args.nsid.clone().unwrap_or_else(admin::instance_name),
            poll: args.peer_interval,
            stale_intervals: args.peer_stale_intervals,
        }));
    }
    if kube.is_none() {
        // Without Kubernetes, drains are kept in a file; they are in the snapshot before the
        // first query, or a restart would answer with a drained cluster for a moment.
        publisher.send(publisher::Update::DrainsFile(
            args.drains_file
                .clone()
                .unwrap_or_else(|| args.source.zones.join(".meridian-drains.json")),
        ));
        publisher.flush().await;
    }
    let health = HealthStatus::default();
    // Probing starts with the first catalog, before the first query (DESIGN §3).
    let scheduler = crate::health::scheduler::start_with_publisher(&publisher, health.clone());
    scheduler.initial_round_published(&publisher).await;
    let ready = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));

    let workers = args.udp_workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let (udp, tcp) = server::bind_dns(args.listen, workers)
        .with_context(|| format!("cannot bind DNS on {}", args.listen))?;
    let udp_addr = udp[0].local_addr()?;
    let tcp = tokio::net::TcpListener::from_std(tcp)?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot bind admin API on {}", args.admin))?;
    let admin_addr = admin_listener.local_addr()?;

    let stop = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let udp_threads = server::spawn_udp_workers(udp, shared.clone(), stop.clone());
    let tcp_task = tokio::spawn(server::serve_tcp(
        tcp,
        shared.clone(),
        TcpLimits {
            max_connections: args.tcp_max_connections,
            max_per_source: args.tcp_max_per_source,
            idle_timeout: idle,
        },
        shutdown_rx.clone(),
    ));
    // Drains: Drain objects with Kubernetes, else in-process, kept in a file in the zones
    // directory so a restart does not forget them.
    let kube_drains = match &kube {
        Some(opts) => Some(
            kubernetes::drains::DrainApi::new(
                kubernetes::client(opts).await?,
                opts.kubefed_namespace.clone(),
                opts.lease.identity.clone(),
            )
            .keep_expired(opts.drain_keep_expired),
        ),
        None => None,
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            shared: shared.clone(),
            publisher: publisher.clone(),
            ready: ready.clone(),
            stopping: stopping.clone(),
            token: args.admin_token.clone(),
            health: health.clone(),
            kube_drains: kube_drains.clone(),
        },
        shutdown_rx.clone(),
    ));
    let peer_task = sharing.then(|| {
        crate::health::exchange::start(
            args.peers.clone(),
            args.peers_dns.clone(),
            args.peer_interval,
            args.admin_token.clone(),
            publisher.clone(),
            shutdown_rx.clone(),
        )
    });
    if sharing {
        tracing::info!(peers = ?args.peers, peers_dns = args.peers_dns.as_deref().unwrap_or(""), interval_ms = args.peer_interval.as_millis() as u64, "exchanging health observations with peers");
    }
    let kube_enabled = kube.is_some();
    let kube_handle = match kube {
        // Ready once the Kubernetes source has handed over its first complete state.
        Some(opts) => {
            tracing::info!(
                kubeconfig = %opts
                    .kubeconfig
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "in-cluster".to_string()),
                kubefed_namespace = %opts.kubefed_namespace,
                identity = %opts.lease.identity,
                "starting the kubernetes source"
            );
            Some(
                kubernetes::start(
                    opts,
                    publisher.clone(),
                    ready.clone(),
                    shutdown_rx.clone(),
                    kube_drains.clone().ok_or_else(|| anyhow!("no Drain API"))?,
                )
                .await?,
            )
        }
        None => {
            ready.store(true, Ordering::Release);
            None
        }
    };
    // Handlers before "serving": SIGHUP's default action is to exit, and a reload may be asked
    // for as soon as the server says it serves.
    let watcher = Watcher::new(
        paths,
        kube_enabled,
        publisher.clone(),
        reload_timeout,
        watch,
        watched,
    )?;
    let term = signal(SignalKind::terminate())?;
    tracing::info!(dns = %udp_addr, admin = %admin_addr, udp_workers = workers, "serving");
    Ok(Server {
        lameduck: args.lameduck,
        term,
        watcher,
        ready,
        stopping,
        stop,
        shutdown_tx,
        kube_handle,
        scheduler,
        peer_task,
        tcp_task,
        admin_task,
        udp_threads,
    })
}

impl Server {
    /// Serves until SIGTERM or Ctrl-C; meanwhile the file source reloads on SIGHUP and on
    /// changed files.
    pub async fn run(&mut self) {
        tokio::select! {
            _ = self.watcher.run() => {}
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        self.watcher.stop();
    }

    /// Lame duck (not ready, still answering, until the replica is out of rotation; a second
    /// signal cuts it short), then stops every task: no new queries, in-flight TCP finished.
    pub async fn drain(mut self) {
        self.stopping.store(true, Ordering::Release);
        let lameduck = self.lameduck;
        if !lameduck.is_zero() {
            tracing::info!(
                lameduck_ms = lameduck.as_millis() as u64,
                "lame duck: /readyz fails, DNS still answered"
            );
            tokio::select! {
                _ = tokio::time::sleep(lameduck) => {}
                _ = self.term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        tracing::info!("shutting down: no new queries, finishing in-flight TCP");
        self.ready.store(false, Ordering::Release);
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown_tx.send(true);
        if let Some(k) = self.kube_handle {
            k.stopped().await;
        }
        self.scheduler.stop().await;
        // It stops its pollers on shutdown; a poll in flight is cut off at one interval.
        if let Some(t) = self.peer_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        let _ = self.tcp_task.await;
        // Idle keep-alive admin connections would hold a graceful shutdown open forever.
        if tokio::time::timeout(Duration::from_secs(2), self.admin_task)
            .await
            .is_err()
        {
            tracing::warn!("admin connections still open after 2s; closing them");
        }
        for t in self.udp_threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        tracing::info!("stopped");
    }
}

/// Lifts the soft open-file limit to the hard one: the TCP connection cap (default 1024) plus
/// sockets, files and probes must fit, and many shells start services with a soft limit of 1024.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                let old = lim.rlim_cur;
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    tracing::debug!(from = old, to = lim.rlim_max, "raised the open-file limit");
                }
            }
        }
    }
}
