//! Admin HTTP API: metrics, liveness and readiness, state, explain and drains. Reads the same
//! snapshot as the DNS front; writes only through the publisher.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::health::HealthStatus;
use crate::metrics;
use crate::model::{format_duration, parse_duration};
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
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/state", get(state_json))
        .route("/api/v1/explain", get(explain))
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "missing or wrong bearer token"})),
    )
        .into_response()
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
    let endpoints: Vec<serde_json::Value> = c
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let status = st.health.get(k);
            json!({
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
        "generation": snap.generation,
        "published": unix(snap.published),
        "zones": c.zones.iter().map(|z| z.name.to_string()).collect::<Vec<_>>(),
        "clusters": clusters,
        "endpoints": endpoints,
        "names": names,
        "drains": drains.iter().map(|(k, d)| (k.clone(), json!({"since": unix(d.since), "until": d.until.map(unix)}))).collect::<serde_json::Map<_, _>>(),
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
        Ok(e) => Json(e).into_response(),
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
}

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
    let until = match q.duration.as_deref() {
        Some(d) => match parse_duration(d) {
            Ok(d) if d > Duration::ZERO => Some(SystemTime::now() + d),
            // `for=0s` would otherwise read as "no end": an operator asking for a zero-length
            // drill must not get a permanent drain.
            Ok(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "for: must be positive (leave it out to drain until undrained)"})),
                )
                    .into_response();
            }
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!("for: {e}")})),
                )
                    .into_response();
            }
        },
        None => None,
    };
    match st.publisher.drain(name.clone(), until).await {
        Some(d) => Json(json!({
            "cluster": name,
            "drained": true,
            "since": unix(d.since),
            "until": d.until.map(unix),
            "for": q.duration.as_deref().and_then(|s| parse_duration(s).ok()).map(format_duration),
        }))
        .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn undrain(
    State(st): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    if st.publisher.undrain(name.clone()).await {
        Json(json!({"cluster": name, "drained": false})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("cluster {name:?} is not drained")})),
        )
            .into_response()
    }
}
