//! The Kubernetes source: meridian in a *host* cluster, reading KubeFed's MultiClusterDNS objects
//! there and, with the credentials of each `KubeFedCluster`, the Services, EndpointSlices,
//! Ingresses and node labels of the *member* clusters.
//!
//! Every replica computes the same state — each record's status from what the members say
//! right now — and hands its objects to the snapshot publisher, so answers follow a member
//! change without waiting for a status write to round-trip. The elected leader alone writes
//! that status and the DNSEndpoints back (`leader`). When the host API server goes away the
//! stores keep the last complete list, so meridian keeps answering from it, reports
//! `meridian_source_up{source="kubernetes"} 0`, and relists when the server returns.

pub mod drains;
pub mod host;
pub mod leader;
pub mod member;
pub mod status;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;
use tokio::sync::{Notify, watch as tokio_watch};

use crate::catalog::kubefed;
use crate::metrics;
use crate::model::{self, DNSEndpoint, Object};
use crate::snapshot::publisher::{PublisherHandle, Update};
use crate::source::{Change, Fragment, Located, ObjectKey, SourceId};
use host::{Decoder, Host, Kind};
use leader::{LeaseOptions, Write};
use member::{Member, MemberSpec, MemberState};
use status::ClusterInfo;

/// Prefix of the location of every object from the Kubernetes source (errors are attributed by it).
pub const KUBERNETES_LOCATION: &str = "kubernetes";

/// The Kubernetes source, after the file source: on a name clash its object is left out.
pub const SOURCE: SourceId = SourceId {
    rank: 1,
    name: "kubernetes",
    location_prefix: Some(KUBERNETES_LOCATION),
};

#[derive(Debug, Error)]
pub enum KubeError {
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("in-cluster configuration: {0}")]
    InCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// How to reach the host cluster and behave in it.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Kubeconfig file; None means in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the KubeFedClusters and their Secrets.
    pub kubefed_namespace: String,
    pub lease: LeaseOptions,
    /// A member failing (or never listed) this long is offline.
    pub member_offline_after: Duration,
    /// How long the leader keeps an expired Drain (listed by `state`) before deleting it.
    pub drain_keep_expired: Duration,
}

/// Shortest quiet time before a pass: a burst of watch events becomes one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Passes also run on this tick, so offline timers and write retries advance without events.
const TICK: Duration = Duration::from_secs(1);

pub async fn client(opts: &KubeOptions) -> Result<kube::Client, KubeError> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| KubeError::Kubeconfig {
                path: path.clone(),
                message: e.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path: path.clone(),
                    message: e.to_string(),
                })?
        }
        None => kube::Config::incluster().map_err(|e| KubeError::InCluster(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// The running source, for an orderly shutdown.
pub struct KubeHandle {
    elect: tokio::task::JoinHandle<()>,
}

impl KubeHandle {
    /// Waits (bounded) for the leader Lease to be released after shutdown was signalled.
    pub async fn stopped(self) {
        if tokio::time::timeout(Duration::from_secs(3), self.elect)
            .await
            .is_err()
        {
            tracing::warn!("leader lease not released in time; it expires by itself");
        }
    }
}

/// Starts the source. `synced` is set once the first complete state has been handed to the
/// publisher (readiness); it is never cleared, since meridian serves the last state on an
/// API outage. `shutdown` turning true releases the leader Lease.
pub async fn start(
    opts: KubeOptions,
    publisher: PublisherHandle,
    synced: Arc<AtomicBool>,
    shutdown: tokio_watch::Receiver<bool>,
    drain_api: drains::DrainApi,
) -> Result<KubeHandle, KubeError> {
    let client = client(&opts).await?;
    let dirty = Arc::new(Notify::new());
    let host = Host::start(client.clone(), &opts.kubefed_namespace, dirty.clone());
    let (leading, elect) = leader::elect(client.clone(), opts.lease.clone(), shutdown);
    let drains_ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(drains::run(
        drain_api,
        publisher.clone(),
        leading.clone(),
        drains_ready.clone(),
    ));
    let (plan_tx, plan_rx) = tokio_watch::channel(Arc::new(Vec::new()));
    tokio::spawn(leader::run_writer(client, plan_rx, leading.clone()));
    metrics::get()
        .source_up
        .with_label_values(&["kubernetes"])
        .set(0);
    let mut agg = Aggregator {
        opts,
        host,
        members: HashMap::new(),
        member_errors: HashMap::new(),
        decoder: Decoder::default(),
        dirty,
        publisher,
        synced,
        drains_ready,
        last_sent: None,
        up: None,
        plan_tx,
        first_change: None,
        condition_clock: None,
    };
    tokio::spawn(async move { agg.run().await });
    Ok(KubeHandle { elect })
}

struct Aggregator {
    opts: KubeOptions,
    host: Host,
    members: HashMap<String, Member>,
    /// Last configuration error per cluster, so it is logged once.
    member_errors: HashMap<String, String>,
    decoder: Decoder,
    dirty: Arc<Notify>,
    publisher: PublisherHandle,
    synced: Arc<AtomicBool>,
    /// Drain objects listed and applied: not ready before, so a restarted replica never
    /// answers with a cluster a Drain takes out.
    drains_ready: Arc<AtomicBool>,
    /// The fragment last handed to the publisher: the next pass sends what changed since.
    last_sent: Option<Fragment>,
    up: Option<bool>,
    plan_tx: tokio_watch::Sender<Arc<Vec<Write>>>,
    /// When the first event of the current burst arrived, for the latency log.
    first_change: Option<Instant>,
    /// The last condition timestamp handed out (see [`condition_time`]).
    condition_clock: Option<(Instant, String)>,
}

/// The groups of the objects handed to the publisher, in the catalog's order; within a group,
/// by namespace and name.
const GROUP_DOMAIN: u32 = 0;
const GROUP_CLUSTER: u32 = 1;
const GROUP_SERVICE: u32 = 2;
const GROUP_INGRESS: u32 = 3;
const GROUP_ENDPOINT: u32 = 4;
const GROUP_EXT_ENDPOINT: u32 = 5;

/// Adds an object to a fragment under its key: its group, then namespace and name (NUL apart,
/// so the order is the (namespace, name) order a list sorted by both has).
fn keyed(objects: &mut BTreeMap<ObjectKey, Located<Object>>, group: u32, o: Located<Object>) {
    let m = o.value.metadata();
    let id = format!(
        "{}\0{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    );
    objects.insert(ObjectKey { group, id }, o);
}

/// A record's Domain: the `domain` of the Domain named by `domainRef`, preferring one in the
/// record's namespace (as the catalog does).
fn domain_for<'a>(domains: &'a [(String, String, String)], fed: &str, ns: &str) -> Option<&'a str> {
    domains
        .iter()
        .filter(|(_, name, _)| name == fed)
        .min_by_key(|(dns, _, _)| dns != ns)
        .map(|(_, _, d)| d.as_str())
}

impl Aggregator {
    async fn run(&mut self) {
        loop {
            let notified = tokio::time::timeout(TICK, self.dirty.notified())
                .await
                .is_ok();
            if notified {
                self.first_change.get_or_insert_with(Instant::now);
                tokio::time::sleep(DEBOUNCE).await;
            }
            self.pass().await;
        }
    }

    /// Sets `source_up`. A pass reports "down" at its start but "up" only once it has handed
    /// the state to the publisher (`handed`), so 1 means the answers already follow the live
    /// watches.
    fn report_up(&mut self, handed: bool) {
        let up = self.host.synced() && !self.host.failing();
        if up && !handed {
            return;
        }
        if self.up != Some(up) {
            if up {
                tracing::info!("kubernetes source synced");
            } else if self.up.is_some() {
                let err = self.host.states().iter().find_map(|s| s.last_error());
                tracing::warn!(
                    error = err.as_deref().unwrap_or("unknown"),
                    "kubernetes API unavailable; serving the last known state"
                );
            }
            metrics::get()
                .source_up
                .with_label_values(&["kubernetes"])
                .set(i64::from(up));
            self.up = Some(up);
        }
    }

    /// Starts, restarts and stops member watches to match the KubeFedClusters.
    async fn reconcile_members(&mut self, clusters: &[model::KubeFedCluster]) {
        let secrets = &self.host.secrets.store;
        let ns = self.opts.kubefed_namespace.clone();
        let mut wanted: HashMap<String, MemberSpec> = HashMap::new();
        for c in clusters {
            let name = c.metadata.name.clone().unwrap_or_default();
            let spec = MemberSpec::from_cluster(c, |s| {
                secrets.get(&kube::runtime::reflector::ObjectRef::new(s).within(&ns))
            });
            match spec {
                Ok(s) => {
                    self.member_errors.remove(&name);
                    wanted.insert(name, s);
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.member_errors.get(&name) != Some(&text) {
                        tracing::warn!(cluster = %name, error = %text, "member cluster not reachable: its entries stay empty");
                        metrics::get()
                            .source_errors
                            .with_label_values(&["kubernetes"])
                            .inc();
                        self.member_errors.insert(name.clone(), text);
                    }
                }
            }
        }
        self.member_errors.retain(|n, _| {
            clusters
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some(n))
        });
        let m = metrics::get();
        self.members.retain(|name, member| {
            let keep = wanted.get(name) == Some(&member.spec);
            if !keep {
                tracing::info!(cluster = %name, "member cluster removed or changed; stopping its watches");
                let _ = m.kubernetes_member_up.remove_label_values(&[name]);
            }
            keep
        });
        for (name, spec) in wanted {
            if self.members.contains_key(&name) {
                continue;
            }
            match Member::connect(&name, spec, self.dirty.clone()).await {
                Ok(mem) => {
                    tracing::info!(cluster = %name, endpoint = %mem.spec.api_endpoint, "watching member cluster");
                    self.members.insert(name, mem);
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.member_errors.get(&name) != Some(&text) {
                        tracing::warn!(cluster = %name, error = %text, "cannot build member client");
                        m.source_errors.with_label_values(&["kubernetes"]).inc();
                        self.member_errors.insert(name, text);
                    }
                }
            }
        }
    }

    async fn pass(&mut self) {
        self.report_up(false);
        if !self.host.synced() {
            return;
        }
        // Decode everything the host holds.
        self.decoder.begin_pass();
        let mut decode =
            |kind: Kind, store: &kube::runtime::reflector::Store<kube::api::DynamicObject>| {
                let mut v: Vec<Object> = store
                    .state()
                    .iter()
                    .filter_map(|o| self.decoder.decode(kind, o))
                    .collect();
                // Stable order: the catalog's output (and so answers) must not depend on hash order.
                v.sort_by_key(|o| {
                    let m = o.metadata();
                    (m.namespace.clone(), m.name.clone())
                });
                v
            };
        let domains = decode(Kind::Domain, &self.host.domains.store);
        let srecords = decode(Kind::ServiceRecord, &self.host.service_records.store);
        let irecords = decode(Kind::IngressRecord, &self.host.ingress_records.store);
        let endpoints = decode(Kind::Endpoint, &self.host.endpoints.store);
        let ext_endpoints = decode(Kind::ExternalEndpoint, &self.host.external_endpoints.store);
        let clusters: Vec<model::KubeFedCluster> = decode(Kind::Cluster, &self.host.clusters.store)
            .into_iter()
            .filter_map(|o| match o {
                Object::KubeFedCluster(c) => Some(c),
                _ => None,
            })
            .collect();
        self.decoder.end_pass();

        self.reconcile_members(&clusters).await;
        let offline_after = self.opts.member_offline_after;
        let m = metrics::get();
        let mut pending = false;
        let mut infos: Vec<ClusterInfo> = Vec::new();
        let mut served_clusters: Vec<model::KubeFedCluster> = Vec::new();
        for c in &clusters {
            let name = c.metadata.name.clone().unwrap_or_default();
            let member = self.members.get(&name);
            let state = member
                .map(|mb| mb.state(offline_after))
                .unwrap_or(MemberState::Offline);
            pending |= state == MemberState::Pending;
            m.kubernetes_member_up
                .with_label_values(&[&name])
                .set(i64::from(state == MemberState::Online));
            let mut c = c.clone();
            let mut st = c.status.clone().unwrap_or_default();
            // KubeFed's cluster controller fills region/zones; without it, node labels do.
            if (st.region.is_none() || st.zones.is_empty())
                && let Some(mb) = member
            {
                let (region, zones) = mb.topology();
                if st.region.is_none() {
                    st.region = region;
                }
                if st.zones.is_empty() {
                    st.zones = zones;
                }
            }
            infos.push(ClusterInfo {
                name,
                region: st.region.clone(),
                zones: st.zones.clone(),
                online: state == MemberState::Online,
            });
            c.status = Some(st);
            served_clusters.push(c);
        }
        // Wait (at most the offline grace) for members to list, so a restart does not briefly
        // answer, or write, as if they had nothing.
        if pending {
            return;
        }
        let ready_index: HashMap<&str, HashSet<(String, String)>> = self
            .members
            .iter()
            .map(|(n, mb)| (n.as_str(), mb.ready_services()))
            .collect();
        let domain_list: Vec<(String, String, String)> = domains
            .iter()
            .filter_map(|o| match o {
                Object::Domain(d) => Some((
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                    d.domain.clone(),
                )),
                _ => None,
            })
            .collect();

        let mut objects: BTreeMap<ObjectKey, Located<Object>> = BTreeMap::new();
        let mut unready: HashSet<(String, String)> = HashSet::new();
        let mut plan: Vec<Write> = Vec::new();
        let mut owned: HashSet<String> = HashSet::new();
        let existing = self.existing_endpoints(&endpoints);
        // One timestamp per pass, used only by conditions that change status in it.
        let now = condition_time(&mut self.condition_clock);
        let loc =
            |kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                host::location(
                    kind,
                    meta.namespace.as_deref(),
                    meta.name.as_deref().unwrap_or(""),
                )
            };
        for o in &domains {
            keyed(
                &mut objects,
                GROUP_DOMAIN,
                Located {
                    location: loc("Domain", o.metadata()),
                    value: o.clone(),
                },
            );
        }
        for c in &served_clusters {
            keyed(
                &mut objects,
                GROUP_CLUSTER,
                Located {
                    location: loc("KubeFedCluster", &c.metadata),
                    value: Object::KubeFedCluster(c.clone()),
                },
            );
        }
        for o in &srecords {
            let Object::ServiceDNSRecord(r) = o else {
                continue;
            };
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let name = r.metadata.name.clone().unwrap_or_default();
            let object = kubefed::object_id("ServiceDNSRecord", &ns, &name);
            if let Some(uid) = &r.metadata.uid {
                owned.insert(uid.clone());
            }
            let domain = domain_for(&domain_list, &r.spec.domain_ref, &ns);
            let invalid = record_error(&r.metadata);
            let raw = raw_status(
                &self.host.service_records.store,
                Kind::ServiceRecord,
                &ns,
                &name,
            );
            let conditions = status::with_valid_condition(
                &raw["conditions"],
                invalid.as_deref(),
                r.metadata.generation,
                &now,
            );
            let mut served = r.clone();
            // Without registered clusters there is nothing to compute: the status as written
            // (by hand, or by another controller) is served.
            let written = if infos.is_empty() {
                r.status.clone()
            } else {
                let entries = status::service_entries(r, &infos, |c| {
                    let mb = self.members.get(&c.name)?;
                    let ready = ready_index.get(c.name.as_str())?;
                    mb.service(&ns, &name, ready)
                });
                let (st, down) = status::served_service_status(domain, &entries);
                served.status = Some(st);
                for c in down {
                    unready.insert((object.clone(), c));
                }
                Some(status::written_service_status(domain, &entries))
            };
            let endpoints = match (&written, domain, &invalid) {
                (Some(w), Some(d), None) => Some(status::service_endpoints(r, d, w)),
                _ => None,
            };
            self.plan_record(
                &mut plan,
                &existing,
                RecordWrite {
                    kind: Kind::ServiceRecord,
                    meta: &r.metadata,
                    raw: &raw,
                    conditions,
                    invalid: invalid.is_some(),
                    computed: !infos.is_empty(),
                    status_changed: r.status != written,
                    written: written.as_ref(),
                    endpoints,
                },
            );
            keyed(
                &mut objects,
                GROUP_SERVICE,
                Located {
                    location: loc("ServiceDNSRecord", &r.metadata),
                    value: Object::ServiceDNSRecord(served),
                },
            );
        }
        for o in &irecords {
            let Object::IngressDNSRecord(r) = o else {
                continue;
            };
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let name = r.metadata.name.clone().unwrap_or_default();
            if let Some(uid) = &r.metadata.uid {
                owned.insert(uid.clone());
            }
            let invalid = record_error(&r.metadata);
            let raw = raw_status(
                &self.host.ingress_records.store,
                Kind::IngressRecord,
                &ns,
                &name,
            );
            let conditions = status::with_valid_condition(
                &raw["conditions"],
                invalid.as_deref(),
                r.metadata.generation,
                &now,
            );
            let mut served = r.clone();
            let written = if infos.is_empty() {
                r.status.clone()
            } else {
                let (st, served_st, down) = status::ingress_statuses(&infos, |c| {
                    self.members.get(&c.name)?.ingress(&ns, &name)
                });
                for c in down {
                    unready.insert((kubefed::object_id("IngressDNSRecord", &ns, &name), c));
                }
                served.status = Some(served_st);
                Some(st)
            };
            let endpoints = match (&written, &invalid) {
                (Some(w), None) => Some(status::ingress_endpoints(r, w)),
                _ => None,
            };
            self.plan_record(
                &mut plan,
                &existing,
                RecordWrite {
                    kind: Kind::IngressRecord,
                    meta: &r.metadata,
                    raw: &raw,
                    conditions,
                    invalid: invalid.is_some(),
                    computed: !infos.is_empty(),
                    status_changed: r.status != written,
                    written: written.as_ref(),
                    endpoints,
                },
            );
            keyed(
                &mut objects,
                GROUP_INGRESS,
                Located {
                    location: loc("IngressDNSRecord", &r.metadata),
                    value: Object::IngressDNSRecord(served),
                },
            );
        }
        for (group, list) in [
            (GROUP_ENDPOINT, &endpoints),
            (GROUP_EXT_ENDPOINT, &ext_endpoints),
        ] {
            for o in list.iter() {
                keyed(
                    &mut objects,
                    group,
                    Located {
                        location: loc("DNSEndpoint", o.metadata()),
                        value: o.clone(),
                    },
                );
            }
        }
        // DNSEndpoints meridian wrote for records that no longer exist.
        if !self.host.failing() {
            for (key, e) in &existing {
                let owner_gone = e
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|o| kubefed::is_record_owner(o))
                    .any(|o| !owned.contains(&o.uid));
                if owner_gone && managed_by_us(e) {
                    plan.push(Write::Delete {
                        namespace: key.0.clone(),
                        name: key.1.clone(),
                    });
                }
            }
        }

        let fragment = Fragment {
            zone_files: Vec::new(),
            objects,
            unready,
        };
        // Only what changed since the last pass: the publisher redoes just those objects.
        let change = match &self.last_sent {
            Some(last) => Some(last.diff(&fragment)).filter(|c| !c.is_noop(last)),
            None => Some(Change::Replace(fragment.clone())),
        };
        if let Some(change) = change {
            if let Some(t) = self.first_change.take() {
                m.kubernetes_propagation.observe(t.elapsed().as_secs_f64());
                tracing::debug!(
                    since_event_ms = t.elapsed().as_millis() as u64,
                    objects = fragment.objects.len(),
                    "kubernetes state handed to the publisher"
                );
            }
            self.publisher
                .send(Update::Source(SOURCE, Box::new(change)));
            self.last_sent = Some(fragment);
        }
        self.first_change = None;
        self.report_up(true);
        if self.drains_ready.load(Ordering::Acquire) && !self.synced.swap(true, Ordering::AcqRel) {
            tracing::info!(
                records = srecords.len() + irecords.len(),
                clusters = clusters.len(),
                "kubernetes source ready"
            );
        }
        // Zero in a steady state: what the API server holds is what meridian would write.
        m.kubernetes_planned_writes.set(plan.len() as i64);
        if self.host.failing() {
            // The writes would fail too; they are planned again once the API server is back.
            return;
        }
        // Sent again while not empty, so the writer retries what failed.
        if self.plan_tx.borrow().as_slice() != plan.as_slice() || !plan.is_empty() {
            self.plan_tx.send_replace(Arc::new(plan));
        }
    }

    /// Plans what KubeFed's record controllers wrote for one record: its status and its
    /// DNSEndpoint. A record the catalog refuses gets its conditions only (the computed fields
    /// cleared) and loses its DNSEndpoint, so nothing downstream publishes a name meridian does
    /// not serve; a valid one gets the status computed from the members and its DNSEndpoint.
    fn plan_record<S: serde::Serialize>(
        &self,
        plan: &mut Vec<Write>,
        existing: &BTreeMap<(String, String), DNSEndpoint>,
        w: RecordWrite<'_, S>,
    ) {
        let (owner_kind, prefix, computed_fields): (&str, &str, &[&str]) = match w.kind {
            Kind::ServiceRecord => (
                "ServiceDNSRecord",
                kubefed::SERVICE_ENDPOINT_PREFIX,
                &["domain", "dns"],
            ),
            _ => (
                "IngressDNSRecord",
                kubefed::INGRESS_ENDPOINT_PREFIX,
                &["dns"],
            ),
        };
        let conditions_stale = w.raw["conditions"] != w.conditions;
        let status = if w.invalid {
            let mut st = serde_json::json!({ "conditions": w.conditions });
            let mut stale = conditions_stale;
            if w.computed {
                for f in computed_fields {
                    st[*f] = serde_json::Value::Null;
                    stale |= !w.raw[*f].is_null();
                }
            }
            stale.then_some(st)
        } else {
            let changed = w.computed && w.status_changed;
            (changed || conditions_stale).then(|| {
                let mut st = match (w.written, w.computed) {
                    (Some(s), true) => serde_json::to_value(s).unwrap_or_default(),
                    _ => serde_json::json!({}),
                };
                st["conditions"] = w.conditions;
                st
            })
        };
        if let Some(status) = status {
            plan.push(Write::Status {
                kind: w.kind,
                namespace: w.meta.namespace.clone().unwrap_or_default(),
                name: w.meta.name.clone().unwrap_or_default(),
                status,
            });
        }
        if w.invalid {
            self.plan_endpoint_delete(plan, existing, w.meta, prefix);
        } else if let Some(eps) = w.endpoints {
            self.plan_endpoint(plan, existing, owner_kind, w.meta, prefix, eps);
        }
    }

    /// DNSEndpoints of KubeFed's group by (namespace, name).
    fn existing_endpoints(&self, endpoints: &[Object]) -> BTreeMap<(String, String), DNSEndpoint> {
        endpoints
            .iter()
            .filter_map(|o| match o {
                Object::DNSEndpoint(e) => Some((
                    (
                        e.metadata.namespace.clone().unwrap_or_default(),
                        e.metadata.name.clone().unwrap_or_default(),
                    ),
                    e.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Plans the delete of the DNSEndpoint meridian wrote for a record it now refuses.
    fn plan_endpoint_delete(
        &self,
        plan: &mut Vec<Write>,
        existing: &BTreeMap<(String, String), DNSEndpoint>,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        prefix: &str,
    ) {
        let (Some(ns), Some(name), Some(uid)) = (&owner.namespace, &owner.name, &owner.uid) else {
            return;
        };
        let ep_name = kubefed::endpoint_name(prefix, name);
        if let Some(cur) = existing.get(&(ns.clone(), ep_name.clone())) {
            let owned = cur
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == *uid);
            if owned && managed_by_us(cur) {
                plan.push(Write::Delete {
                    namespace: ns.clone(),
                    name: ep_name,
                });
            }
        }
    }

    /// Plans the apply of a record's DNSEndpoint unless the API server already has it.
    fn plan_endpoint(
        &self,
        plan: &mut Vec<Write>,
        existing: &BTreeMap<(String, String), DNSEndpoint>,
        owner_kind: &str,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        prefix: &str,
        endpoints: Vec<model::Endpoint>,
    ) {
        let (Some(ns), Some(name), Some(uid)) = (&owner.namespace, &owner.name, &owner.uid) else {
            return;
        };
        let ep_name = kubefed::endpoint_name(prefix, name);
        let owner_ref = OwnerReference {
            api_version: model::GROUP_MULTICLUSTERDNS.to_string(),
            kind: owner_kind.to_string(),
            name: name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        if let Some(cur) = existing.get(&(ns.clone(), ep_name.clone())) {
            let owned = cur
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == *uid);
            if owned && cur.spec.endpoints == endpoints && managed_by_us(cur) {
                return;
            }
        }
        let body = serde_json::json!({
            "apiVersion": model::GROUP_MULTICLUSTERDNS,
            "kind": "DNSEndpoint",
            "metadata": {
                "name": ep_name,
                "namespace": ns,
                "labels": { MANAGED_BY: leader::FIELD_MANAGER },
                "ownerReferences": [owner_ref],
            },
            "spec": { "endpoints": endpoints },
        });
        plan.push(Write::Apply {
            namespace: ns.clone(),
            name: ep_name,
            body,
        });
    }
}

/// One record's part in a pass, for [`Aggregator::plan_record`].
struct RecordWrite<'a, S> {
    /// `ServiceRecord` or `IngressRecord`.
    kind: Kind,
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// The status as the API server holds it.
    raw: &'a serde_json::Value,
    /// The conditions it should have.
    conditions: serde_json::Value,
    /// The catalog refuses the record.
    invalid: bool,
    /// The status is computed from registered clusters (else the one written is served).
    computed: bool,
    /// The computed status differs from the record's.
    status_changed: bool,
    /// The computed status.
    written: Option<&'a S>,
    /// Its DNSEndpoint's endpoints, when it has one.
    endpoints: Option<Vec<model::Endpoint>>,
}

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Why the catalog would refuse a record's `meridian.io/*` annotations, if it would: such a
/// record gets a `Valid=False` condition and no DNSEndpoint, so nothing downstream (external-dns)
/// publishes a name meridian does not serve. The probe default does not matter here: only
/// what the record itself says is judged.
fn record_error(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    crate::catalog::record_options(meta, &crate::config::HealthDefaults::default()).err()
}

/// A record's `status` as the API server holds it, fields the model does not know included.
fn raw_status(
    store: &kube::runtime::reflector::Store<kube::api::DynamicObject>,
    kind: Kind,
    ns: &str,
    name: &str,
) -> serde_json::Value {
    store
        .get(&kube::runtime::reflector::ObjectRef::new_with(name, kind.resource()).within(ns))
        .and_then(|o| o.data.get("status").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// RFC 3339 time, whole seconds (metav1.Time), for a condition's lastTransitionTime. The same
/// value is returned within a second, so passes in a burst plan equal writes.
fn condition_time(clock: &mut Option<(Instant, String)>) -> String {
    if let Some((at, s)) = clock
        && at.elapsed() < Duration::from_secs(1)
    {
        return s.clone();
    }
    let t = k8s_openapi::jiff::Timestamp::now();
    let s = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    *clock = Some((Instant::now(), s.clone()));
    s
}

fn managed_by_us(e: &DNSEndpoint) -> bool {
    e.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == leader::FIELD_MANAGER)
}
