//! Admin HTTP API: metrics, liveness and readiness, state, explain and drains. Reads the same
//! snapshot as the DNS front; writes only through the publisher.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::health::HealthStatus;
use crate::metrics;
use crate::model::{MAX_DRAIN, MIN_DRAIN, format_duration, parse_duration_within};
use crate::snapshot::Shared;
use crate::snapshot::publisher::PublisherHandle;

#[derive(Clone)]
pub struct AdminState {
    pub shared: Shared,
    pub publisher: PublisherHandle,
    pub ready: Arc<AtomicBool>,
    /// Set on SIGTERM: not ready from then on, whatever the sources say.
    pub stopping: Arc<AtomicBool>,
    pub token: Option<String>,
    pub health: HealthStatus,
    /// With a Kubernetes source: drains are Drain objects, created and deleted through this.
    pub kube_drains: Option<crate::source::kubernetes::drains::DrainApi>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/state", get(state_json))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/events", get(events_json))
        .route("/api/v1/observations", get(observations))
        .route("/api/v1/clusters/{name}/drain", post(drain).delete(undrain))
        .with_state(state)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let app = router(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// Loopback binds need no token; anything else must have one (checked at start-up).
pub fn needs_token(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

fn authorized(st: &AdminState, headers: &HeaderMap) -> bool {
    let Some(token) = &st.token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|t| token_eq(t.as_bytes(), token.as_bytes()))
}

/// The credentials of a `Bearer` Authorization header. The scheme is case-insensitive
/// (RFC 7235 §2.1), so `bearer x` and `BEARER x` are the same as `Bearer x`.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// Compares a presented token with the configured one without leaking the configured one's
/// length or content through timing: the loop runs over the presented bytes only (known to the
/// caller), comparing each with the secret cycled, and never returns early; a length difference
/// is folded into the same accumulator.
pub fn token_eq(presented: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        // Refused at start-up; never let an empty secret match an empty presentation.
        return false;
    }
    let mut diff = (presented.len() ^ secret.len()) as u64;
    for (i, b) in presented.iter().enumerate() {
        diff |= u64::from(b ^ secret[i % secret.len()]);
    }
    diff == 0
}

/// Why a configured admin token cannot be used, if it cannot. An empty token is refused: as a
/// configured token it would stand for "protected" while any `Bearer` prefix opened the API.
pub fn token_problem(addr: &SocketAddr, token: Option<&str>) -> Option<String> {
    match token {
        Some(t) if t.trim().is_empty() => Some(
            "--admin-token (or MERIDIAN_ADMIN_TOKEN) is empty: set a real token or leave it out"
                .to_string(),
        ),
        None if needs_token(addr) => Some(format!(
            "--admin {addr} is not a loopback address: set --admin-token (or MERIDIAN_ADMIN_TOKEN)"
        )),
        _ => None,
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "missing or wrong bearer token"})),
    )
        .into_response()
}

/// The status page: one self-contained HTML file (no CDN, no build step), reading the JSON API
/// with the bearer token the operator types in. The page itself holds no data, so it needs none.
async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("status_page.html"),
    )
        .into_response()
}

/// Recent health transitions and drains, newest first.
async fn events_json(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    Json(json!({"events": st.publisher.events.recent()})).into_response()
}

/// This replica's own health observations, for its peers (see `health::exchange`).
async fn observations(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let (reply, rx) = tokio::sync::oneshot::channel();
    st.publisher
        .send(crate::snapshot::publisher::Update::Observations(reply));
    match rx.await {
        Ok(v) => Json(v).into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// This replica's name for operators: the pod name in Kubernetes, else the host name.
pub fn instance_name() -> String {
    if let Some(n) = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()) {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this replica".to_string())
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::get().encode(),
    )
        .into_response()
}

async fn readyz(State(st): State<AdminState>) -> Response {
    if st.stopping.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[derive(Serialize)]
struct ClusterState {
    name: String,
    region: Option<String>,
    zones: Vec<String>,
    location: Option<crate::geo::GeoPoint>,
    location_source: Option<String>,
    drained: bool,
    drained_until: Option<f64>,
}

async fn state_json(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let snap = st.shared.load_full();
    let c = &snap.compiled;
    let drains = st.publisher.drains.borrow().clone();
    let clusters: Vec<ClusterState> = c
        .catalog
        .clusters
        .iter()
        .map(|cl| {
            let d = drains.get(&cl.name);
            ClusterState {
                name: cl.name.clone(),
                region: cl.region.clone(),
                zones: cl.zones.clone(),
                location: cl.location,
                location_source: cl.location_source.clone(),
                drained: d.is_some(),
                drained_until: d.and_then(|d| d.until).map(unix),
            }
        })
        .collect();
    // Per vantage point views (empty without peers).
    let (reply, rx) = tokio::sync::oneshot::channel();
    st.publisher
        .send(crate::snapshot::publisher::Update::Vantage(reply));
    let vantage = rx.await.unwrap_or_default();
    let endpoints: Vec<serde_json::Value> = c
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let status = st.health.get(k);
            let points = vantage.get(k).map(|v| {
                v.iter()
                    .map(|(name, o)| json!({"name": name, "up": o.up, "at": unix(o.at)}))
                    .collect::<Vec<_>>()
            });
            json!({
                "vantagePoints": points,
                "address": k.addr.to_string(),
                "probe": k.probe,
                "up": snap.health.up(i as u32),
                "clusters": clusters_of(c, i as u32),
                "lastResult": status.as_ref().map(|s| json!({
                    "ok": s.last_ok,
                    "at": s.last_at.map(unix),
                    "latencyMs": s.last_latency.map(|d| d.as_secs_f64() * 1000.0),
                    "error": s.last_error,
                    "consecutive": s.consecutive,
                })),
                "since": status.as_ref().and_then(|s| s.since).map(unix),
            })
        })
        .collect();
    let names: Vec<serde_json::Value> = c
        .catalog
        .dyn_names
        .iter()
        .map(|d| json!({"name": d.display_name().to_string(), "object": d.object, "scope": d.scope, "policy": d.options.policy, "ttl": d.ttl}))
        .collect();
    Json(json!({
        "instance": instance_name(),
        "generation": snap.generation,
        "published": unix(snap.published),
        "zones": c.zones.iter().map(|z| z.name.to_string()).collect::<Vec<_>>(),
        "clusters": clusters,
        "endpoints": endpoints,
        "names": names,
        "drains": drains.iter().map(|(k, d)| (k.clone(), json!({"cluster": d.cluster, "records": d.records, "since": unix(d.since), "until": d.until.map(unix), "reason": d.reason, "requestedBy": d.requested_by, "object": d.object}))).collect::<serde_json::Map<_, _>>(),
        // Every Drain object (Kubernetes mode): active, recently expired (deleted by the
        // leader an hour after expiry) and invalid ones, with why.
        "drainObjects": st.kube_drains.as_ref().map(|k| k.views()),
        "geoip": snap.geo.as_ref().map(|g| json!({"path": g.path().display().to_string(), "type": g.database_type(), "buildEpoch": g.build_epoch()})),
    }))
    .into_response()
}

fn clusters_of(c: &crate::snapshot::compile::Compiled, endpoint: u32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in &c.dyns {
        for t in &d.targets {
            let has = t.v4.iter().any(|a| a.endpoint == endpoint)
                || t.v6.iter().any(|a| a.endpoint == endpoint);
            let name = &c.clusters[t.cluster as usize].name;
            if has && !out.contains(name) {
                out.push(name.clone());
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct ExplainQuery {
    name: String,
    #[serde(rename = "type", default = "default_type")]
    qtype: String,
    client: IpAddr,
}

fn default_type() -> String {
    "A".into()
}

async fn explain(
    State(st): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<ExplainQuery>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let snap = st.shared.load_full();
    match crate::explain::explain(&snap, &q.name, &q.qtype, q.client) {
        Ok(e) => {
            // The same text `meridian explain` prints, for the status page.
            let text = e.to_string();
            let mut v = serde_json::to_value(&e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("text".into(), text.into());
            }
            Json(v).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(Deserialize, Default)]
struct DrainQuery {
    #[serde(rename = "for")]
    duration: Option<String>,
    /// Why, for whoever reads `state` or the status page later.
    reason: Option<String>,
    /// Who asks (`meridian drain --who`, default `$USER@host`).
    who: Option<String>,
    /// Only these records' targets in the cluster: `namespace/name`, comma-separated.
    records: Option<String>,
}

#[derive(Deserialize, Default)]
struct UndrainQuery {
    who: Option<String>,
    /// Only the drains scoped to any of these records (comma-separated); default: every drain
    /// of the cluster.
    records: Option<String>,
}

/// `records=a/b,c/d` → checked, sorted `namespace/name`s (empty when not given).
fn records_param(raw: Option<&str>) -> Result<Vec<String>, Box<Response>> {
    let list: Vec<String> = raw
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    crate::snapshot::publisher::normalise_records(&list).map_err(|e| {
        let r: Response = (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
        Box::new(r)
    })
}

/// The requester as given, bounded; "unknown" when not said.
fn requester(who: Option<&str>) -> String {
    let w = who
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .unwrap_or("unknown");
    w.chars().take(MAX_REASON).collect()
}

/// Waits (bounded) until this replica's publisher shows `pred` about its drains, so a reply
/// means "in this replica's answers already"; other replicas follow through their watch.
async fn await_drains(
    st: &AdminState,
    pred: impl Fn(&std::collections::HashMap<String, crate::snapshot::publisher::Drain>) -> bool,
) -> bool {
    let mut rx = st.publisher.drains.clone();
    let wait = rx.wait_for(|d| pred(d));
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), wait).await,
        Ok(Ok(_))
    )
}

/// Longest drain reason kept: a sentence, not a document.
const MAX_REASON: usize = 256;

async fn drain(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DrainQuery>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let snap = st.shared.load_full();
    if !snap.compiled.clusters.iter().any(|c| c.name == name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no cluster named {name:?}")})),
        )
            .into_response();
    }
    // Bounded: `for=0s` would read as "no end", a sub-second drain is shorter than any TTL,
    // and a huge one overflowed the clock (a handler panic).
    let (until, length) = match q.duration.as_deref() {
        Some(d) => match parse_duration_within(d, MIN_DRAIN, MAX_DRAIN)
            .map(|len| SystemTime::now().checked_add(len).map(|t| (t, len)))
        {
            Ok(Some((t, len))) => (Some(t), Some(len)),
            Ok(None) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!("for: {d:?} ends past the clock's range")})),
                )
                    .into_response();
            }
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!(
                        "for: {e} (leave it out to drain until undrained)"
                    )})),
                )
                    .into_response();
            }
        },
        None => (None, None),
    };
    let reason = q
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("reason: longer than {MAX_REASON} bytes")})),
        )
            .into_response();
    }
    let who = requester(q.who.as_deref());
    let records = match records_param(q.records.as_deref()) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let key = crate::snapshot::publisher::drain_key(&name, &records);
    if let Some(k) = &st.kube_drains {
        // Shared through a Drain object, which must end by itself: the longest allowed when
        // no length is given.
        let length = length.unwrap_or(crate::source::kubernetes::drains::MAX_EXPIRY);
        let Some(expires) = SystemTime::now().checked_add(length) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        return match k
            .create(&name, &records, expires, reason.as_deref(), &who)
            .await
        {
            Ok(object) => {
                let object = format!("{}/{object}", k.namespace);
                tracing::info!(cluster = %name, records = %records.join(","), object = %object, requested_by = %who, reason = reason.as_deref().unwrap_or(""), expires_at = %crate::source::kubernetes::drains::format_time(expires), "drain requested: Drain object created");
                let applied =
                    await_drains(&st, |d| d.get(&key).is_some_and(|d| d.object.is_some())).await;
                Json(json!({
                    "cluster": name,
                    "records": records,
                    "drained": true,
                    "object": object,
                    "appliedHere": applied,
                    "until": unix(expires),
                    "expiresAt": crate::source::kubernetes::drains::format_time(expires),
                    "reason": reason,
                    "requestedBy": who,
                    "for": format_duration(length),
                }))
                .into_response()
            }
            Err(e) => {
                tracing::warn!(cluster = %name, requested_by = %who, error = %e, "drain request failed");
                (StatusCode::BAD_GATEWAY, Json(json!({"error": e}))).into_response()
            }
        };
    }
    match st
        .publisher
        .drain(name.clone(), records.clone(), until, reason, Some(who))
        .await
    {
        Some(d) => Json(json!({
            "cluster": name,
            "records": records,
            "drained": true,
            "since": unix(d.since),
            "until": d.until.map(unix),
            "reason": d.reason,
            "for": length.map(format_duration),
        }))
        .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn undrain(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<UndrainQuery>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let who = requester(q.who.as_deref());
    let records = match records_param(q.records.as_deref()) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    // Whether a served drain is one this request ends.
    let ends = |d: &crate::snapshot::publisher::Drain| {
        d.cluster == name && (records.is_empty() || d.records.iter().any(|r| records.contains(r)))
    };
    if let Some(k) = &st.kube_drains {
        return match k.delete_cluster(&name, &records, &who).await {
            Ok(deleted) if !deleted.is_empty() => {
                let objects: Vec<String> = deleted
                    .iter()
                    .map(|o| format!("{}/{o}", k.namespace))
                    .collect();
                tracing::info!(cluster = %name, objects = ?objects, requested_by = %who, "undrain requested: Drain objects deleted");
                let applied = await_drains(&st, |d| {
                    !d.values().any(|d| d.object.is_some() && ends(d))
                })
                .await;
                Json(json!({"cluster": name, "drained": false, "deleted": objects, "appliedHere": applied}))
                    .into_response()
            }
            Ok(_) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("cluster {name:?} is not drained (no Drain object names it)")})),
            )
                .into_response(),
            Err(e) => {
                tracing::warn!(cluster = %name, requested_by = %who, error = %e, "undrain request failed");
                (StatusCode::BAD_GATEWAY, Json(json!({"error": e}))).into_response()
            }
        };
    }
    tracing::info!(cluster = %name, records = %records.join(","), requested_by = %who, "undrain requested");
    if st.publisher.undrain(name.clone(), records).await {
        Json(json!({"cluster": name, "drained": false})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("cluster {name:?} is not drained")})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn token_compare() {
        assert!(token_eq(b"secret-token", b"secret-token"));
        assert!(!token_eq(b"secret-tokeX", b"secret-token"));
        assert!(!token_eq(b"secret", b"secret-token"));
        assert!(!token_eq(b"secret-tokensecret-token", b"secret-token"));
        // A repeat of the secret is not the secret.
        assert!(!token_eq(b"abab", b"ab"));
        assert!(!token_eq(b"", b""));
        assert!(!token_eq(b"", b"x"));
    }

    #[test]
    fn empty_or_missing_tokens() {
        let lo: SocketAddr = "127.0.0.1:9153".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9153".parse().expect("addr");
        assert_eq!(token_problem(&lo, None), None);
        assert_eq!(token_problem(&any, Some("t")), None);
        assert!(token_problem(&any, None).is_some());
        assert!(
            token_problem(&any, Some(""))
                .expect("refused")
                .contains("empty")
        );
        assert!(
            token_problem(&lo, Some("  "))
                .expect("refused")
                .contains("empty")
        );
    }
}
