//! The proxy's health and metrics endpoints (port 15020): `/healthz/live` answers as soon as
//! the process serves, `/healthz/ready` only once the proxy has its certificate and a
//! snapshot, `/metrics` in Prometheus text format.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{error_response, full, Body};
use crate::state::ProxyState;

/// Serves health endpoints until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<ProxyState>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => { tracing::warn!(error = %e, "admin accept failed"); continue; }
            },
            _ = stop.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &state)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
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
            let mut resp = Response::new(full(state.metrics.encode()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
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
