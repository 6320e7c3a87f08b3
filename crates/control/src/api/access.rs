//! Who may call which endpoint of the HTTP API, and how much of it anyone may use at once.
//!
//! [`access`] is the whole policy: `/healthz` and `/metrics` are open; `apply`, `rollback`,
//! `ca/rotate` and `tap` need the admin token; everything else needs the read token or the
//! admin token. [`guard`] applies it to every request before a handler, and so before any
//! request body is read: an unauthenticated caller costs a header comparison. It also sheds
//! load instead of queueing it: past [`MAX_IN_FLIGHT`] requests, or [`MAX_CHANGES_IN_FLIGHT`]
//! change sets being validated, the answer is 503 at once.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tokio::sync::Semaphore;
use trellis_api::load::Limits;

/// Requests served at once; more are answered 503. Operators and scrapers make a handful.
pub const MAX_IN_FLIGHT: usize = 64;
/// Change sets (`diff`, `apply`, `rollback`) validated at once: each may parse and compile
/// a config of the loader's maximum size on a blocking thread.
pub const MAX_CHANGES_IN_FLIGHT: usize = 2;
/// Request body size, except change sets.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// Request body size of a change set: the loader's total limit as JSON, where escaping may
/// double the text, and room for the names.
pub const MAX_CHANGE_BODY_BYTES: usize = 2 * Limits::DEFAULT.max_total_bytes as usize + (1 << 20);

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes and scrapers.
    Open,
    /// The read token or the admin token.
    Read,
    /// The admin token.
    Admin,
}

/// Who may call `path`: the API's whole access policy. A path not listed needs the read
/// token, so a new endpoint is never open by mistake.
pub fn access(path: &str) -> Access {
    match path {
        "/healthz" | "/metrics" => Access::Open,
        "/api/v1/ca/rotate" | "/api/v1/apply" | "/api/v1/rollback" | "/api/v1/tap" => Access::Admin,
        _ => Access::Read,
    }
}

/// Whether `path` validates a change set (the costly requests).
fn is_change(path: &str) -> bool {
    matches!(path, "/api/v1/diff" | "/api/v1/apply" | "/api/v1/rollback")
}

/// Puts `routes` behind [`guard`], with [`MAX_BODY_BYTES`] as the body limit of every route
/// that sets none of its own.
pub(super) fn guarded(routes: Router, gate: Arc<Gate>) -> Router {
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost, so it runs before anything reads the body.
        .layer(middleware::from_fn_with_state(gate, guard))
}

/// What [`guard`] checks requests against.
pub(super) struct Gate {
    admin_token: String,
    read_token: String,
    in_flight: Semaphore,
    changes: Semaphore,
}

impl Gate {
    pub(super) fn new(admin_token: &str, read_token: &str) -> Self {
        Gate {
            admin_token: admin_token.to_owned(),
            read_token: read_token.to_owned(),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            changes: Semaphore::new(MAX_CHANGES_IN_FLIGHT),
        }
    }
}

/// Answers 401 unless the request carries the token its path needs ([`access`]), and 503
/// when the API is busy; otherwise passes it on, holding its share of the capacity until
/// the answer is ready.
async fn guard(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let allowed = match access(path) {
        Access::Open => true,
        Access::Read => {
            bearer_is(&gate.read_token, req.headers())
                || bearer_is(&gate.admin_token, req.headers())
        }
        Access::Admin => bearer_is(&gate.admin_token, req.headers()),
    };
    if !allowed {
        return match access(path) {
            Access::Read => token_required("read or admin token"),
            _ => unauthorized(),
        };
    }
    // Health answers even when busy: a probe must not restart a control plane for load.
    if path == "/healthz" {
        return next.run(req).await;
    }
    let Ok(_request) = gate.in_flight.try_acquire() else {
        return busy();
    };
    let _change = if is_change(path) {
        match gate.changes.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => return busy(),
        }
    } else {
        None
    };
    next.run(req).await
}

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(serde_json::json!({"error": "the control plane API is busy; retry shortly"})),
    )
        .into_response()
}

fn token_required(which: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({
            "error": format!("{which} required (Authorization: Bearer ...)")
        })),
    )
        .into_response()
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` with `token`.
pub(super) fn bearer_is(token: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant-time comparison: the token must not leak through timing.
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn unauthorized() -> Response {
    token_required("admin token")
}

#[cfg(test)]
mod tests;
