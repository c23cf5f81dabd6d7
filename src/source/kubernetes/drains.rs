//! Drains as shared, durable state: `Drain` objects (`meridian.io/v1alpha1`) in the KubeFed
//! namespace. Every replica watches them and hands the valid, unexpired ones to its publisher
//! (which also ends each at its `expiresAt` by itself); the admin API creates and deletes them;
//! the elected leader alone writes their conditions, emits `DrainExpired` and deletes them
//! some time past their expiry (`--drain-keep-expired`, default [`DELETE_AFTER`]; until then
//! `state` lists them as recently expired).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{Notify, watch as tokio_watch};

use super::watch;
use crate::metrics;
use crate::snapshot::publisher::{Drain, PublisherHandle, Update, normalise_records};

/// Set by the admin API on the Drain objects it creates, whose `Drained` Event it records
/// itself; the leader records one for every other Drain (made with kubectl or GitOps).
const ANNOUNCED: &str = "meridian.io/drained-event";

/// The longest a Drain may last, counted from its creation (as Route 53 ARC zonal shifts, a
/// drain must end by itself).
pub const MAX_EXPIRY: Duration = crate::model::MAX_DRAIN;
/// How long the leader keeps an expired Drain before deleting it, so `state` can list it
/// (default of `--drain-keep-expired`).
pub const DELETE_AFTER: Duration = Duration::from_secs(3600);
const TICK: Duration = Duration::from_secs(1);
/// Allowed beyond [`MAX_EXPIRY`] for clock skew between a replica and the API server.
const CLOCK_SLACK: Duration = Duration::from_secs(60);
/// Bound on each API call the admin API or the leader makes here.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("meridian.io", "v1alpha1", "Drain"),
        "drains",
    )
}

/// Why a Drain object is not applied.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DrainError {
    #[error("spec.cluster is missing or empty")]
    NoCluster,
    #[error(
        "spec.expiresAt is missing (a Drain must end by itself, at most 7 days after creation)"
    )]
    NoExpiry,
    #[error("spec.expiresAt {0:?} is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)")]
    BadExpiry(String),
    #[error("spec.expiresAt {0} is not after the object's creation")]
    BeforeCreation(String),
    #[error("spec.expiresAt {0} is more than 7 days after the object's creation")]
    TooFar(String),
    #[error("spec.{0}")]
    Records(String),
    #[error("spec is not an object: {0}")]
    Spec(String),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub records: Vec<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// RFC 3339 to system time.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let t: k8s_openapi::jiff::Timestamp = s.trim().parse().ok()?;
    Some(SystemTime::from(t))
}

/// RFC 3339, whole seconds, UTC.
pub fn format_time(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The expiry of a well-formed Drain, or why it is refused. `created` is the object's
/// creation time (the 7-day bound counts from it). An expired but well-formed Drain is valid:
/// whether it applies is a matter of `now`, not of validity.
pub fn validate(spec: &DrainSpec, created: SystemTime) -> Result<SystemTime, DrainError> {
    if spec.cluster.trim().is_empty() {
        return Err(DrainError::NoCluster);
    }
    normalise_records(&spec.records).map_err(DrainError::Records)?;
    let raw = spec.expires_at.as_deref().ok_or(DrainError::NoExpiry)?;
    let at = parse_time(raw).ok_or_else(|| DrainError::BadExpiry(raw.to_string()))?;
    if at <= created {
        return Err(DrainError::BeforeCreation(raw.to_string()));
    }
    // Slack: creationTimestamp is whole seconds on the API server's clock, the expiry computed
    // on a replica's, so a 7-day drain from the admin API must not be refused for a skew.
    if at.duration_since(created).unwrap_or_default() > MAX_EXPIRY + CLOCK_SLACK {
        return Err(DrainError::TooFar(raw.to_string()));
    }
    Ok(at)
}

/// One Drain object as `state` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainView {
    pub object: String,
    pub cluster: String,
    pub records: Vec<String>,
    pub expires_at: Option<String>,
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    pub created: Option<String>,
    /// `active`, `expired` or `invalid`.
    pub state: &'static str,
    pub error: Option<String>,
}

/// The admin API's handle on Drain objects, and what the watch last saw of them.
#[derive(Clone)]
pub struct DrainApi {
    client: kube::Client,
    pub namespace: String,
    /// This replica's name (the Events' reporting instance).
    pub identity: String,
    /// How long past its expiry the leader deletes a Drain.
    keep_expired: Duration,
    views_tx: Arc<tokio_watch::Sender<Vec<DrainView>>>,
}

impl DrainApi {
    pub fn new(client: kube::Client, namespace: String, identity: String) -> DrainApi {
        let (views_tx, _) = tokio_watch::channel(Vec::new());
        DrainApi {
            client,
            namespace,
            identity,
            keep_expired: DELETE_AFTER,
            views_tx: Arc::new(views_tx),
        }
    }

    pub fn keep_expired(mut self, after: Duration) -> DrainApi {
        self.keep_expired = after;
        self
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource())
    }

    /// Every Drain object, as last seen by the watch.
    pub fn views(&self) -> Vec<DrainView> {
        self.views_tx.borrow().clone()
    }

    /// Creates a Drain object (name `<cluster>-<random>`); returns its name.
    pub async fn create(
        &self,
        cluster: &str,
        records: &[String],
        expires: SystemTime,
        reason: Option<&str>,
        requested_by: &str,
    ) -> Result<String, String> {
        let started = std::time::Instant::now();
        let mut obj = DynamicObject::new("", &resource()).within(&self.namespace);
        obj.metadata.name = None;
        obj.metadata.generate_name = Some(format!("{}-", generate_prefix(cluster)));
        obj.metadata.annotations = Some([(ANNOUNCED.to_string(), "recorded".to_string())].into());
        obj.data = serde_json::json!({
            "spec": {
                "cluster": cluster,
                "records": records,
                "expiresAt": format_time(expires),
                "reason": reason,
                "requestedBy": requested_by,
            }
        });
        let created = tokio::time::timeout(
            CALL_TIMEOUT,
            self.api().create(&PostParams::default(), &obj),
        )
        .await
        .map_err(|_| "creating the Drain object timed out".to_string())?
        .map_err(|e| format!("cannot create the Drain object: {e}"))?;
        let name = created.metadata.name.clone().unwrap_or_default();
        tracing::debug!(drain = %name, elapsed_ms = started.elapsed().as_millis() as u64, "Drain object created");
        let message = drained_message(cluster, records, expires, requested_by, reason);
        self.event(&created.metadata, "Drained", &message).await;
        tracing::debug!(drain = %name, elapsed_ms = started.elapsed().as_millis() as u64, "Drained event recorded");
        Ok(name)
    }

    /// Deletes every Drain object of `cluster` (with `records`: those scoped to any of them);
    /// returns their names.
    pub async fn delete_cluster(
        &self,
        cluster: &str,
        records: &[String],
        who: &str,
    ) -> Result<Vec<String>, String> {
        let list = tokio::time::timeout(CALL_TIMEOUT, self.api().list(&ListParams::default()))
            .await
            .map_err(|_| "listing Drain objects timed out".to_string())?
            .map_err(|e| format!("cannot list Drain objects: {e}"))?;
        let mut deleted = Vec::new();
        for o in list.items {
            if spec_of(&o).is_ok_and(|s| {
                s.cluster == cluster
                    && (records.is_empty() || s.records.iter().any(|r| records.contains(r)))
            }) {
                let name = o.metadata.name.clone().unwrap_or_default();
                // The Event first: the leader, seeing the object go, looks for it and records
                // one of its own only for a Drain deleted some other way.
                self.event(
                    &o.metadata,
                    "Undrained",
                    &format!("cluster {cluster} undrained by {who}"),
                )
                .await;
                match tokio::time::timeout(
                    CALL_TIMEOUT,
                    self.api().delete(&name, &DeleteParams::default()),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
                    Ok(Err(e)) => return Err(format!("cannot delete Drain {name}: {e}")),
                    Err(_) => return Err(format!("deleting Drain {name} timed out")),
                }
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    /// Emits a Kubernetes Event about a Drain object; a failure is logged, never fatal.
    async fn event(&self, about: &ObjectMeta, reason: &str, message: &str) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let name = about.name.clone().unwrap_or_default();
        let ev = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("meridian.io/v1alpha1".into()),
                kind: Some("Drain".into()),
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                uid: about.uid.clone(),
                resource_version: about.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            source: Some(EventSource {
                component: Some("meridian".into()),
                host: None,
            }),
            reporting_component: Some("meridian".into()),
            reporting_instance: Some(self.identity.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        match tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), &ev)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(drain = %name, reason, error = %e, "cannot record the Kubernetes Event")
            }
            Err(_) => {
                tracing::warn!(drain = %name, reason, "recording the Kubernetes Event timed out")
            }
        }
    }
}

/// The `Drained` Event's message.
fn drained_message(
    cluster: &str,
    records: &[String],
    expires: SystemTime,
    requested_by: &str,
    reason: Option<&str>,
) -> String {
    let scope = if records.is_empty() {
        String::new()
    } else {
        format!(" for {}", records.join(", "))
    };
    format!(
        "cluster {cluster}{scope} drained until {} by {requested_by}: {}",
        format_time(expires),
        reason.unwrap_or("no reason given")
    )
}

/// Whether an Event with this reason about this object exists already.
async fn has_event(api: &DrainApi, uid: &str, reason: &str) -> bool {
    let events: Api<Event> = Api::namespaced(api.client.clone(), &api.namespace);
    let lp = ListParams::default().fields(&format!("involvedObject.uid={uid},reason={reason}"));
    match tokio::time::timeout(CALL_TIMEOUT, events.list(&lp)).await {
        Ok(Ok(l)) => !l.items.is_empty(),
        // Unknown: say nothing rather than twice.
        Ok(Err(e)) => {
            tracing::warn!(uid, reason, error = %e, "cannot list Events (RBAC: events list)");
            true
        }
        Err(_) => true,
    }
}

/// A valid object-name prefix from a cluster name (generateName adds 5 characters).
fn generate_prefix(cluster: &str) -> String {
    let mut s: String = cluster
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(200);
    let s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    if s.is_empty() { "drain".to_string() } else { s }
}

fn spec_of(o: &DynamicObject) -> Result<DrainSpec, DrainError> {
    serde_json::from_value(o.data.get("spec").cloned().unwrap_or_default())
        .map_err(|e| DrainError::Spec(e.to_string()))
}

fn created_of(o: &DynamicObject) -> SystemTime {
    o.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(t.0))
        .unwrap_or_else(SystemTime::now)
}

/// The conditions a Drain should carry, without times: (type, status, reason, message).
fn wanted_conditions(
    verdict: &Result<SystemTime, DrainError>,
    now: SystemTime,
) -> Vec<(&'static str, &'static str, &'static str, String)> {
    match verdict {
        Err(e) => vec![("Valid", "False", "Invalid", format!("not applied: {e}"))],
        Ok(at) if *at <= now => vec![
            ("Valid", "True", "Valid", String::new()),
            (
                "Expired",
                "True",
                "Expired",
                format!("expired at {}", format_time(*at)),
            ),
        ],
        Ok(_) => vec![("Valid", "True", "Valid", String::new())],
    }
}

fn conditions_match(raw: &serde_json::Value, wanted: &[(&str, &str, &str, String)]) -> bool {
    let have = raw.as_array().map(Vec::as_slice).unwrap_or_default();
    have.len() == wanted.len()
        && wanted.iter().all(|(t, s, r, m)| {
            have.iter().any(|c| {
                c["type"] == *t
                    && c["status"] == *s
                    && c["reason"] == *r
                    && c["message"].as_str().unwrap_or("") == m
            })
        })
}

/// Watches Drain objects and keeps the publisher's shared drains equal to the valid,
/// unexpired ones; while `leading`, also writes conditions, announces expiries and deletes
/// long-expired objects.
pub async fn run(
    api: DrainApi,
    publisher: PublisherHandle,
    leading: tokio_watch::Receiver<bool>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    let dirty = Arc::new(Notify::new());
    let ar = resource();
    let w = watch::spawn(
        api.api(),
        watcher::Config::default(),
        ar,
        "host Drain".to_string(),
        dirty.clone(),
    );
    // Invalid objects already reported (name → error), so each is logged and counted once.
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut last_sent: Option<HashMap<String, Drain>> = None;
    // While leading: the active Drains of the last pass, to tell when one is deleted.
    let mut known: Option<HashMap<String, (DynamicObject, DrainSpec)>> = None;
    let m = metrics::get();
    loop {
        let _ = tokio::time::timeout(TICK, dirty.notified()).await;
        if !w.state.synced() {
            continue;
        }
        let now = SystemTime::now();
        let lead = *leading.borrow();
        let mut active: HashMap<String, Drain> = HashMap::new();
        let mut views = Vec::new();
        let mut now_reported = HashMap::new();
        // The leader's writes wait until the drains are applied: answers first.
        let mut duties = Vec::new();
        let mut active_objects: HashMap<String, (DynamicObject, DrainSpec)> = HashMap::new();
        let mut objects = w.store.state();
        objects.sort_by_key(|o| o.metadata.name.clone());
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            let object = format!("{}/{name}", api.namespace);
            let spec = spec_of(&o);
            let verdict = spec
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|s| validate(s, created_of(&o)));
            let mut spec = spec.unwrap_or_default();
            if let Ok(r) = normalise_records(&spec.records) {
                spec.records = r;
            }
            if let Err(e) = &verdict {
                let text = e.to_string();
                if reported.get(&name) != Some(&text) {
                    tracing::warn!(drain = %object, cluster = %spec.cluster, error = %text, "Drain object not applied");
                    m.drain_errors.with_label_values(&["kubernetes"]).inc();
                }
                now_reported.insert(name.clone(), text);
            }
            let state = match &verdict {
                Err(_) => "invalid",
                Ok(at) if *at <= now => "expired",
                Ok(_) => "active",
            };
            if let Ok(at) = verdict
                && at > now
            {
                let d = Drain {
                    cluster: spec.cluster.clone(),
                    records: spec.records.clone(),
                    until: Some(at),
                    since: created_of(&o),
                    reason: spec.reason.clone(),
                    requested_by: spec.requested_by.clone(),
                    object: Some(object.clone()),
                };
                // Two objects for one cluster (and scope): the one lasting longer is served.
                let key = d.key();
                let keep = active.get(&key).is_none_or(|p| p.until < d.until);
                if keep {
                    active.insert(key, d);
                }
                if lead {
                    active_objects.insert(name.clone(), ((*o).clone(), spec.clone()));
                }
            }
            views.push(DrainView {
                object: object.clone(),
                cluster: spec.cluster.clone(),
                records: spec.records.clone(),
                expires_at: spec.expires_at.clone(),
                reason: spec.reason.clone(),
                requested_by: spec.requested_by.clone(),
                created: o
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| format_time(SystemTime::from(t.0))),
                state,
                error: verdict.as_ref().err().map(ToString::to_string),
            });
            if lead {
                duties.push((o, name, spec, verdict));
            }
        }
        reported = now_reported;
        // The listing first: `state` must not show a drain applied that it cannot name yet
        // (the leader's duties below may take API round trips).
        api.views_tx.send_if_modified(|v| {
            let changed = *v != views;
            if changed {
                *v = views;
            }
            changed
        });
        if last_sent.as_ref() != Some(&active) {
            publisher.send(Update::SharedDrains(active.clone()));
            last_sent = Some(active);
        }
        if !ready.load(std::sync::atomic::Ordering::Acquire) {
            // In the served snapshot before the replica says it is ready.
            publisher.flush().await;
            ready.store(true, std::sync::atomic::Ordering::Release);
        }
        for (o, name, spec, verdict) in duties {
            leader_duties(&api, &o, &name, &spec, &verdict, now).await;
        }
        if lead {
            // An active Drain gone before its expiry was deleted: say so once, unless the
            // admin API did (it records its Event before deleting).
            if let Some(before) = &known {
                for (name, (o, spec)) in before {
                    if active_objects.contains_key(name) {
                        continue;
                    }
                    let uid = o.metadata.uid.clone().unwrap_or_default();
                    let expired = spec
                        .expires_at
                        .as_deref()
                        .and_then(parse_time)
                        .is_none_or(|at| at <= now);
                    if expired
                        || w.store
                            .state()
                            .iter()
                            .any(|x| x.metadata.uid == o.metadata.uid)
                    {
                        // Expired (announced as such), or still there but no longer active.
                        continue;
                    }
                    if has_event(&api, &uid, "Undrained").await {
                        continue;
                    }
                    tracing::info!(drain = %format!("{}/{name}", api.namespace), cluster = %spec.cluster, records = %spec.records.join(","), "cluster undrained: Drain object deleted");
                    api.event(
                        &o.metadata,
                        "Undrained",
                        &format!("cluster {} undrained: Drain object deleted", spec.cluster),
                    )
                    .await;
                }
            }
            known = Some(active_objects);
        } else {
            known = None;
        }
    }
}

/// What only the leader does for one Drain object: conditions (with a `DrainExpired` Event
/// when the Expired condition first appears) and the delete `keep_expired` past expiry.
async fn leader_duties(
    api: &DrainApi,
    o: &DynamicObject,
    name: &str,
    spec: &DrainSpec,
    verdict: &Result<SystemTime, DrainError>,
    now: SystemTime,
) {
    if let Ok(at) = verdict
        && now
            .duration_since(*at)
            .is_ok_and(|past| past >= api.keep_expired)
    {
        match tokio::time::timeout(
            CALL_TIMEOUT,
            api.api().delete(name, &DeleteParams::default()),
        )
        .await
        {
            Ok(Ok(_)) => {
                tracing::info!(drain = %name, cluster = %spec.cluster, "expired Drain object deleted")
            }
            Ok(Err(e)) => {
                tracing::warn!(drain = %name, error = %e, "cannot delete the expired Drain object")
            }
            Err(_) => tracing::warn!(drain = %name, "deleting the expired Drain object timed out"),
        }
        return;
    }
    let raw = o
        .data
        .get("status")
        .map(|s| s["conditions"].clone())
        .unwrap_or_default();
    let wanted = wanted_conditions(verdict, now);
    if conditions_match(&raw, &wanted) {
        return;
    }
    let newly_expired = wanted.iter().any(|c| c.0 == "Expired")
        && !raw.as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["type"] == "Expired" && c["status"] == "True")
        });
    // First seen valid and active (no condition yet) and not made by the admin API, which
    // records its own Event: made with kubectl or GitOps, announced here.
    let announce = matches!(verdict, Ok(at) if *at > now)
        && raw.as_array().is_none_or(|a| a.is_empty())
        && !o
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOUNCED));
    let stamp = format_time(now);
    let conditions: Vec<serde_json::Value> = wanted
        .iter()
        .map(|(t, s, r, msg)| {
            serde_json::json!({
                "type": t, "status": s, "reason": r, "message": msg,
                "lastTransitionTime": stamp,
                "observedGeneration": o.metadata.generation,
            })
        })
        .collect();
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    match tokio::time::timeout(
        CALL_TIMEOUT,
        api.api()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(drain = %name, error = %e, "cannot write the Drain's conditions");
            return;
        }
        Err(_) => {
            tracing::warn!(drain = %name, "writing the Drain's conditions timed out");
            return;
        }
    }
    if announce && let Ok(at) = verdict {
        let who = spec.requested_by.as_deref().unwrap_or("unknown");
        tracing::info!(drain = %name, cluster = %spec.cluster, records = %spec.records.join(","), requested_by = %who, reason = spec.reason.as_deref().unwrap_or(""), expires_at = %format_time(*at), "drain requested: Drain object made outside meridian");
        api.event(
            &o.metadata,
            "Drained",
            &drained_message(
                &spec.cluster,
                &spec.records,
                *at,
                who,
                spec.reason.as_deref(),
            ),
        )
        .await;
    }
    if newly_expired {
        tracing::info!(drain = %name, cluster = %spec.cluster, reason = spec.reason.as_deref().unwrap_or(""), requested_by = spec.requested_by.as_deref().unwrap_or(""), "drain expired");
        api.event(
            &o.metadata,
            "DrainExpired",
            &format!("cluster {} drain expired", spec.cluster),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(expires: Option<&str>) -> DrainSpec {
        DrainSpec {
            cluster: "east".into(),
            expires_at: expires.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_is_required_bounded_and_rfc3339() {
        let created = parse_time("2026-01-01T00:00:00Z").expect("time");
        assert_eq!(validate(&spec(None), created), Err(DrainError::NoExpiry));
        assert!(matches!(
            validate(&spec(Some("tomorrow")), created),
            Err(DrainError::BadExpiry(_))
        ));
        assert!(matches!(
            validate(&spec(Some("2025-12-31T23:00:00Z")), created),
            Err(DrainError::BeforeCreation(_))
        ));
        assert!(matches!(
            validate(&spec(Some("2026-01-01T00:00:00Z")), created),
            Err(DrainError::BeforeCreation(_))
        ));
        assert_eq!(
            validate(&spec(Some("2026-01-08T00:00:00Z")), created),
            parse_time("2026-01-08T00:00:00Z").ok_or(DrainError::NoExpiry),
            "exactly 7 days is allowed"
        );
        assert!(matches!(
            validate(&spec(Some("2026-01-08T00:02:00Z")), created),
            Err(DrainError::TooFar(_))
        ));
        assert!(validate(&spec(Some("2026-01-01T00:10:00+01:00")), created).is_err());
        assert!(validate(&spec(Some("2026-01-01T01:10:00+01:00")), created).is_ok());
    }

    #[test]
    fn cluster_required_and_records_checked() {
        let created = parse_time("2026-01-01T00:00:00Z").expect("time");
        let mut s = spec(Some("2026-01-01T01:00:00Z"));
        s.records = vec!["shop/web".into(), " shop/api ".into()];
        assert!(validate(&s, created).is_ok());
        s.records = vec!["shop/web".into(), "web".into()];
        let e = validate(&s, created).expect_err("no namespace");
        assert!(
            matches!(&e, DrainError::Records(m) if m.starts_with("records[1]")),
            "{e}"
        );
        assert!(e.to_string().starts_with("spec.records[1]: \"web\""), "{e}");
        s.records = vec!["Shop/Web".into()];
        assert!(validate(&s, created).is_err(), "object names are lowercase");
        s.records.clear();
        s.cluster = " ".into();
        assert_eq!(validate(&s, created), Err(DrainError::NoCluster));
    }

    #[test]
    fn conditions_say_why() {
        let now = parse_time("2026-01-01T00:00:00Z").expect("time");
        let w = wanted_conditions(&Err(DrainError::NoExpiry), now);
        assert_eq!(w[0].1, "False");
        assert!(w[0].3.contains("expiresAt is missing"));
        let w = wanted_conditions(&Ok(now), now);
        assert!(w.iter().any(|c| c.0 == "Expired"));
        let raw = serde_json::json!([{"type": "Valid", "status": "True", "reason": "Valid", "message": ""}]);
        assert!(conditions_match(
            &raw,
            &wanted_conditions(&Ok(now + Duration::from_secs(5)), now)
        ));
        assert!(!conditions_match(&raw, &w));
    }

    #[test]
    fn generated_names_are_valid() {
        assert_eq!(generate_prefix("East_1"), "east-1");
        assert_eq!(generate_prefix("--"), "drain");
    }
}
