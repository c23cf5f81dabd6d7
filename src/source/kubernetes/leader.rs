//! Leader election and the writes only the leader makes. Every replica watches, computes and
//! serves the same state; one, holding a `coordination.k8s.io/v1` Lease (kube-lease-manager:
//! renewal before expiry, takeover after it), writes record status and DNSEndpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube_lease_manager::LeaseManagerBuilder;
use thiserror::Error;
use tokio::sync::watch;

use super::host::Kind;
use crate::metrics;

/// Field manager of every write (server-side apply ownership, `managedFields`).
pub const FIELD_MANAGER: &str = "meridian";

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// One write the leader should make; the plan is recomputed on every change, and holds only
/// what differs from what the API server already has (update only on change).
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Merge-patch the `status` subresource of a record.
    Status {
        kind: Kind,
        namespace: String,
        name: String,
        status: serde_json::Value,
    },
    /// Server-side apply a DNSEndpoint (owned by its record).
    Apply {
        namespace: String,
        name: String,
        body: serde_json::Value,
    },
    /// Delete a DNSEndpoint meridian wrote whose record is gone (garbage collection would, but
    /// meridian must not rely on a controller-manager for names to vanish).
    Delete { namespace: String, name: String },
}

impl Write {
    fn key(&self) -> (&'static str, &str, &str) {
        match self {
            Write::Status {
                kind,
                namespace,
                name,
                ..
            } => (
                if *kind == Kind::ServiceRecord {
                    "ServiceDNSRecord"
                } else {
                    "IngressDNSRecord"
                },
                namespace,
                name,
            ),
            Write::Apply {
                namespace, name, ..
            }
            | Write::Delete { namespace, name } => ("DNSEndpoint", namespace, name),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Write::Status { .. } => "status",
            Write::Apply { .. } => "dnsendpoint",
            Write::Delete { .. } => "dnsendpoint-delete",
        }
    }
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a lease is valid after its last renewal.
    pub duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

/// How often a replica the lease manager calls leader checks the Lease itself.
const CONFIRM_EVERY: Duration = Duration::from_millis(500);

/// Until when (local clock) the Lease, as read from the API server, is held by `identity`:
/// its renewTime plus its duration. None when another holds it, or it has lapsed.
fn held_until(lease: &Lease, identity: &str) -> Option<Instant> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renew: SystemTime = spec.renew_time.as_ref()?.0.into();
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    // The holder wrote renewTime with its own clock, which is the clock compared with here.
    let left = (renew + duration).duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left)
}

/// The field manager of this replica's Lease writes. It must differ between replicas:
/// kube-lease-manager takes an orphaned Lease with a server-side apply *without* force, and
/// only a different manager's apply of `holderIdentity` is refused as a conflict. With one
/// shared manager two replicas starting together both "won" and led at once.
fn lease_field_manager(identity: &str) -> String {
    // Field manager names are limited to 128 bytes.
    let mut s = format!("{FIELD_MANAGER}-lease-{identity}");
    while s.len() > 128 {
        s.pop();
    }
    s
}

/// Runs the election until `shutdown` turns true; the receiver says whether this replica leads.
/// It leads only while the lease manager says so *and* the Lease, read back from the API server,
/// names it as holder and has not expired: "leading" is never reported before the Lease is
/// really held, and a replica whose renewals stop (or whose Lease was taken) stops writing by
/// the Lease's expiry at the latest, even when the manager has not noticed. A lost API server
/// ends nothing: the manager is rebuilt until it works. On shutdown a held Lease is released,
/// so a follower takes over at once rather than after expiry; the returned task ends when that
/// is done.
pub fn elect(
    client: kube::Client,
    opts: LeaseOptions,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let m = metrics::get();
        let leases: Api<Lease> = Api::namespaced(client.clone(), &opts.namespace);
        let set = |leading: bool| {
            if *tx.borrow() != leading {
                tracing::info!(identity = %opts.identity, leading, "leadership changed");
                m.leader.set(i64::from(leading));
                tx.send_replace(leading);
            }
        };
        loop {
            let built = LeaseManagerBuilder::new(client.clone(), &opts.name)
                .with_namespace(&opts.namespace)
                .with_identity(&opts.identity)
                .with_duration(opts.duration)
                .with_grace(opts.grace)
                .with_field_manager(lease_field_manager(&opts.identity))
                .build()
                .await;
            let manager = match built {
                Ok(mg) => mg,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %opts.name, "cannot set up the leader lease; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            let (mut state, task) = manager.watch().await;
            let mut confirm = tokio::time::interval(CONFIRM_EVERY);
            confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut held: Option<Instant> = None;
            let mut manager_says = false;
            loop {
                let says = *state.borrow_and_update();
                if says && !manager_says {
                    // Read the Lease back at once rather than on the next tick.
                    confirm.reset_immediately();
                }
                manager_says = says;
                if !says {
                    held = None;
                }
                let leading = says && held.is_some_and(|t| Instant::now() < t);
                set(leading);
                // Wakes exactly at the expiry, so writes stop then and not a tick later.
                let expiry = tokio::time::Instant::from_std(held.unwrap_or_else(Instant::now));
                tokio::select! {
                    r = state.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep_until(expiry), if leading => {}
                    _ = confirm.tick(), if manager_says => {
                        match tokio::time::timeout(CONFIRM_EVERY * 2, leases.get(&opts.name)).await {
                            Ok(Ok(lease)) => {
                                held = held_until(&lease, &opts.identity);
                                if held.is_none() && *tx.borrow() {
                                    tracing::warn!(identity = %opts.identity, holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).unwrap_or("none"), "the Lease is no longer ours; stopping writes");
                                }
                            }
                            // Unreadable: the last reading stands, and lapses at its expiry.
                            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the leader Lease"),
                            Err(_) => tracing::debug!("reading the leader Lease timed out"),
                        }
                    }
                    _ = shutdown.changed() => {
                        // Writes stop first; closing the channel makes the manager release.
                        set(false);
                        drop(state);
                        match task.await {
                            Ok(Ok(_)) => tracing::info!(identity = %opts.identity, "leader lease released"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the leader lease; it expires by itself"),
                            Err(e) => tracing::warn!(error = %e, "leader lease task failed"),
                        }
                        return;
                    }
                }
            }
            // The manager's task ended (it only does on errors it cannot retry): start over as
            // a follower.
            let _ = task.await;
            if *tx.borrow() {
                tracing::warn!("leader lease manager stopped; following until re-elected");
            }
            set(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (rx, task)
}

/// A write just made is not repeated for this long while the watch catches up with it.
const RECENT: Duration = Duration::from_secs(5);

/// Applies plans while leading.
pub async fn run_writer(
    client: kube::Client,
    mut plans: watch::Receiver<Arc<Vec<Write>>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut recent: HashMap<(&'static str, String, String), (Write, Instant)> = HashMap::new();
    // Last error per object: a write failing the same way every pass is logged once.
    let mut failing: HashMap<(&'static str, String, String), String> = HashMap::new();
    loop {
        tokio::select! {
            r = plans.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
        }
        if !*leader.borrow_and_update() {
            recent.clear();
            continue;
        }
        let plan = plans.borrow_and_update().clone();
        recent.retain(|_, (_, t)| t.elapsed() < RECENT);
        for w in plan.iter() {
            // Leadership can end mid-plan: the rest is left to the new leader.
            if !*leader.borrow() {
                break;
            }
            let (k, ns, name) = w.key();
            let key = (k, ns.to_string(), name.to_string());
            if recent.get(&key).is_some_and(|(prev, _)| prev == w) {
                continue;
            }
            let started = Instant::now();
            let result = execute(&client, w).await;
            let m = metrics::get();
            match result {
                Ok(()) => {
                    m.kubernetes_writes
                        .with_label_values(&[w.label(), "ok"])
                        .inc();
                    tracing::info!(
                        write = w.label(),
                        kind = k,
                        namespace = ns,
                        name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "wrote"
                    );
                    failing.remove(&key);
                    recent.insert(key, (w.clone(), Instant::now()));
                }
                Err(e) => {
                    m.kubernetes_writes
                        .with_label_values(&[w.label(), "error"])
                        .inc();
                    let text = e.to_string();
                    if failing.get(&key) != Some(&text) {
                        tracing::warn!(write = w.label(), kind = k, namespace = ns, name, error = %text, "write failed; retrying every pass");
                        failing.insert(key, text);
                    } else {
                        tracing::debug!(write = w.label(), kind = k, namespace = ns, name, error = %text, "write still failing");
                    }
                }
            }
        }
    }
}

async fn execute(client: &kube::Client, w: &Write) -> Result<(), WriteError> {
    match w {
        Write::Status {
            kind,
            namespace,
            name,
            status,
        } => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &kind.resource());
            let patch = serde_json::json!({ "status": status });
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Write::Apply {
            namespace,
            name,
            body,
        } => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &Kind::Endpoint.resource());
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await?;
        }
        Write::Delete { namespace, name } => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &Kind::Endpoint.resource());
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
