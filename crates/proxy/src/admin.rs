//! The proxy's health and metrics endpoints (port 15020): `/healthz/live` answers as soon as
//! the process serves, `/healthz/ready` only once the proxy has its certificate and a
//! snapshot (and, when it captures, its capture rules in place), `/metrics` in Prometheus
//! text format. The local admin port (15000, loopback) adds `GET /config_dump` (static
//! settings, certificate, snapshot, the inbound policy in force), `POST /logging?level=…` and
//! `POST /telemetry?enabled=on|off` (request telemetry switched at run time, e.g. to measure
//! what it costs).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::body::{error_response, full, Body};
use crate::listener::Listener;
use crate::state::ProxyState;

/// Serves health endpoints until `stop` turns true.
pub async fn serve(
    mut listener: Listener,
    state: Arc<ProxyState>,
    mut stop: watch::Receiver<bool>,
) {
    let server = crate::listener::http1(&listener.limits());
    loop {
        let tcp = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return,
        };
        let (state, server) = (state.clone(), server.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &state)) }
            });
            if let Err(e) = server.serve_connection(TokioIo::new(tcp), svc).await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn handle(req: Request<Incoming>, state: &ProxyState) -> Response<Body> {
    if req.method() != Method::GET {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    match req.uri().path() {
        "/healthz/live" => Response::new(full("live\n")),
        "/metrics" => {
            use trellis_api::telemetry::{
                prometheus_text, wants_openmetrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT,
            };
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let encoded = state.metrics.encode();
            let (body, content_type) = if wants_openmetrics(accept) {
                (encoded, OPENMETRICS_TEXT)
            } else {
                (prometheus_text(&encoded), PROMETHEUS_TEXT)
            };
            let mut resp = Response::new(full(body));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            resp
        }
        "/healthz/ready" if state.is_ready() => Response::new(full("ready\n")),
        "/healthz/ready" => {
            let why = if state.creds.load().is_none() {
                "no certificate yet"
            } else {
                "no snapshot yet"
            };
            error_response(StatusCode::SERVICE_UNAVAILABLE, why)
        }
        _ => error_response(StatusCode::NOT_FOUND, "unknown admin path"),
    }
}

/// Serves the local admin endpoints until `stop` turns true.
pub async fn serve_local(
    mut listener: Listener,
    state: Arc<ProxyState>,
    mut stop: watch::Receiver<bool>,
) {
    let server = crate::listener::http1(&listener.limits());
    loop {
        let tcp = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return,
        };
        let (state, server) = (state.clone(), server.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle_local(req, &state)) }
            });
            let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

fn json(v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(format!("{v:#}\n")));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn handle_local(req: Request<Incoming>, state: &ProxyState) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/config_dump") => json(&config_dump(state)),
        (&Method::POST, "/logging") => {
            let level = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("level="));
            let (Some(level), Some(control)) = (level, &state.log_control) else {
                return error_response(StatusCode::BAD_REQUEST, "use POST /logging?level=FILTER");
            };
            match control(level) {
                Ok(()) => {
                    tracing::info!(%level, "log level changed");
                    Response::new(full(format!("log level: {level}\n")))
                }
                Err(e) => error_response(StatusCode::BAD_REQUEST, e),
            }
        }
        (&Method::POST, "/telemetry") => {
            let enabled = match req.uri().query().unwrap_or("") {
                "enabled=on" => true,
                "enabled=off" => false,
                _ => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "use POST /telemetry?enabled=on or ?enabled=off",
                    )
                }
            };
            state.telemetry.set_enabled(enabled);
            tracing::info!(enabled, "telemetry switched");
            Response::new(full(format!(
                "telemetry: {}\n",
                if enabled { "on" } else { "off" }
            )))
        }
        _ => error_response(
            StatusCode::NOT_FOUND,
            "GET /config_dump, POST /logging?level=, POST /telemetry?enabled=on|off",
        ),
    }
}

/// Everything the proxy runs on, for a person debugging it.
fn config_dump(state: &ProxyState) -> serde_json::Value {
    let c = &state.config;
    let creds = state.creds.load_full();
    let snap = state.snapshot.load_full();
    let services: Vec<serde_json::Value> = snap
        .as_ref()
        .map(|s| {
            let mut v: Vec<_> = s.services.values().collect();
            v.sort_by(|a, b| a.host.cmp(&b.host));
            v.into_iter()
                .map(|svc| {
                    serde_json::json!({
                        "host": svc.host,
                        "vips": svc.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                        "ports": svc.ports.iter().map(|p| serde_json::json!({"name": p.name, "port": p.port, "target": format!("{:?}", p.target), "protocol": p.protocol})).collect::<Vec<_>>(),
                        "subsets": svc.subsets,
                        "endpoints": svc.endpoints.iter().map(|e| serde_json::json!({"workload": e.workload_name, "address": e.address.to_string(), "identity": e.identity, "labels": e.labels})).collect::<Vec<_>>(),
                        // What routing and balancing act on, as the control plane compiled it.
                        "route_table": serde_json::to_value(&svc.routes).unwrap_or_default(),
                        "traffic_policy": serde_json::to_value(&*svc.policies).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "config": {
            "identity": c.identity.to_string(),
            "workload": c.workload_name,
            "address": c.address.to_string(),
            "mode": format!("{:?}", c.mode),
            "outbound": c.outbound_addr.to_string(),
            "inbound": c.inbound_addr.to_string(),
            "inbound_plain": c.inbound_plain_addr.to_string(),
            "admin": c.admin_addr.to_string(),
            "control": c.control_addr.to_string(),
            "outbound_policy": format!("{:?}", c.outbound_policy),
            "labels": c.labels,
            "ports": c.ports,
            "drain_timeout_ms": c.drain_timeout.as_millis() as u64,
            "admin_local": c.admin_local_addr.to_string(),
            "max_connections": c.limits.max_connections,
            "header_read_timeout_ms": c.limits.header_read_timeout.as_millis() as u64,
            "idle_timeout_ms": c.limits.idle_timeout.as_millis() as u64,
        },
        "certificate": creds.as_ref().map(|cr| serde_json::json!({
            "identity": cr.svid.id.to_string(),
            "not_after_unix": cr.svid.not_after.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "issuer_root": cr.issuer_root,
            "trust_bundle_roots": cr.bundle.roots.len(),
        })),
        "snapshot": snap.as_ref().map(|s| serde_json::json!({
            "version": s.version,
            "signing_root": s.signing_root_fingerprint,
            "root_namespace": s.root_namespace,
            "services": services,
        })),
        // What this workload enforces, as chosen from the snapshot.
        "inbound_policy": state.inbound_policy.load().as_ref().map(|p| p.describe()),
        "ready": state.is_ready(),
    })
}
