//! `GET /api/v1/stat` and `GET /api/v1/tap`: the mesh's traffic as the proxies report it.
//!
//! * `/api/v1/stat?namespace=NS&service=SVC&window=30s` answers
//!   `{window_secs, services: [...], edges: [...]}`, each entry with `rps`, `success_rate`,
//!   `requests`, `failures`, `p50_ms`, `p95_ms`, `p99_ms` (`null` without data) over the
//!   window (default 30 s, at most 10 m). Every service of the published snapshot that the
//!   filters select is listed, with no traffic if none was reported. Read token, like
//!   `/api/v1/status` (checked by [`super::access()`]).
//! * `/api/v1/tap?workload=NAME&namespace=NS&path=PREFIX&method=M` (admin token) answers 200
//!   with a body that never ends by itself: one JSON object per line
//!   ([`crate::tap::TapEventJson`]) for each request the workload's proxies see and the tap
//!   selects. It answers 404 when no proxy of the workload is connected. The tap closes when
//!   the client goes away.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;
use trellis_api::proto;

use crate::golden::{self, GoldenWindow, ServiceSignals, Signals};
use crate::plaintext::WorkloadKey;
use crate::tap::{TapError, TapEventJson, TapFilter, TapRegistry};

/// What the telemetry endpoints read.
pub struct TelemetryState {
    pub golden: Arc<GoldenWindow>,
    pub taps: Arc<TapRegistry>,
    /// For the services that had no traffic.
    pub snapshots: watch::Receiver<Arc<proto::SnapshotMessage>>,
    pub admin_token: String,
}

/// The two routes, merged into the API's router by [`super::router`].
pub fn router(state: Arc<TelemetryState>) -> Router {
    Router::new()
        .route("/api/v1/stat", get(stat))
        .route("/api/v1/tap", get(tap))
        .with_state(state)
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({"error": msg.to_string()}))).into_response()
}

/// `GET /api/v1/stat` parameters; empty means absent.
#[derive(Debug, Default, serde::Deserialize)]
struct StatQuery {
    namespace: Option<String>,
    service: Option<String>,
    /// `30s`, `5m`, `1500ms` or bare seconds.
    window: Option<String>,
}

async fn stat(State(state): State<Arc<TelemetryState>>, Query(q): Query<StatQuery>) -> Response {
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let window = match non_empty(q.window).as_deref().map(golden::parse_window) {
        None => golden::DEFAULT_WINDOW,
        Some(Ok(w)) => w,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let query = golden::Query {
        window: Some(window),
        namespace: non_empty(q.namespace),
        service: non_empty(q.service),
    };
    let mut summary = state.golden.query(Instant::now(), &query);
    // A service nobody called is worth seeing as such, rather than missing.
    {
        let snap = state.snapshots.borrow();
        for s in &snap.services {
            let listed = summary
                .services
                .iter()
                .any(|t| t.service == s.host && t.namespace == s.namespace);
            if !listed && query.matches(&s.namespace, &s.host) {
                summary.services.push(ServiceSignals {
                    service: s.host.clone(),
                    name: s.name.clone(),
                    namespace: s.namespace.clone(),
                    signals: Signals::none(),
                });
            }
        }
    }
    summary
        .services
        .sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
    Json(summary).into_response()
}

/// `GET /api/v1/tap` parameters.
#[derive(Debug, Default, serde::Deserialize)]
struct TapQuery {
    workload: Option<String>,
    /// `default` when absent.
    namespace: Option<String>,
    path: Option<String>,
    method: Option<String>,
}

async fn tap(
    State(state): State<Arc<TelemetryState>>,
    headers: HeaderMap,
    Query(q): Query<TapQuery>,
) -> Response {
    if !super::bearer_is(&state.admin_token, &headers) {
        return super::unauthorized();
    }
    let Some(name) = q.workload.filter(|w| !w.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "workload= is required");
    };
    let path_prefix = q.path.unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        return error(
            StatusCode::BAD_REQUEST,
            format!("path {path_prefix:?} must start with /"),
        );
    }
    let workload = WorkloadKey {
        namespace: q
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        name,
    };
    let filter = TapFilter {
        path_prefix,
        method: q.method.unwrap_or_default().to_ascii_uppercase(),
    };
    let tap = match state.taps.open(workload, filter) {
        Ok(t) => t,
        Err(e @ TapError::NoProxy(_)) => return error(StatusCode::NOT_FOUND, e),
        Err(e @ TapError::TooMany) => return error(StatusCode::TOO_MANY_REQUESTS, e),
    };
    // The stream owns the tap: when the client goes away, hyper drops the body, and with it
    // the tap, which the registry then withdraws from the proxies.
    let lines = futures_util::stream::unfold(tap, |mut tap| async move {
        let event = tap.next().await?;
        // Serializing a struct of strings and numbers cannot fail.
        let mut line = serde_json::to_vec(&TapEventJson::from(event)).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), tap))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
