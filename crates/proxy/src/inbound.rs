//! Inbound: the mTLS listener (port 15008) that other proxies connect to.
//!
//! The TLS handshake requires a client certificate that chains to the mesh's roots and
//! carries a SPIFFE ID; that ID, read from the session and never from a header, is the
//! caller's identity. Each HTTP/2 request is forwarded to the local app over HTTP/1.1 with
//! `x-forwarded-client-cert` set to `By=<own ID>;URI=<caller ID>` after any XFCC that came
//! from elsewhere has been removed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use trellis_identity::{tls, SpiffeId};

use crate::body::{boxed, error_response, Body};
use crate::headers::{strip_hop_by_hop, strip_trellis_headers, xfcc_value, TARGET_PORT, XFCC};
use crate::state::ProxyState;

/// A handshake that has not finished by then is dropped, so a stalled peer holds no task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type AppClient = Client<HttpConnector, Body>;

/// Accepts peer proxies until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<ProxyState>, mut stop: watch::Receiver<bool>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let app: AppClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => { tracing::warn!(error = %e, "inbound accept failed"); continue; }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(tcp, peer, state.clone(), app.clone()));
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<ProxyState>,
    app: AppClient,
) {
    let Some(creds) = state.creds.load_full() else {
        tracing::warn!(%peer, "inbound connection refused: no certificate yet");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(creds.server_config.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "inbound TLS handshake rejected");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "inbound TLS handshake timed out");
            return;
        }
    };
    let caller = match tls::peer_identity(stream.get_ref().1.peer_certificates()) {
        Ok(id) => Arc::new(id),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "inbound connection without a usable identity");
            return;
        }
    };
    tracing::debug!(%peer, caller = %caller, "inbound mTLS connection");
    let svc = hyper::service::service_fn(move |req| {
        let (state, app, caller) = (state.clone(), app.clone(), caller.clone());
        async move { Ok::<_, Infallible>(handle(req, &state, &app, &caller).await) }
    });
    if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!(%peer, error = %e, "inbound connection ended");
    }
}

async fn handle(
    req: Request<Incoming>,
    state: &ProxyState,
    app: &AppClient,
    caller: &SpiffeId,
) -> Response<Body> {
    let port = match req
        .headers()
        .get(TARGET_PORT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
    {
        Some(p) => p,
        None => return error_response(StatusCode::BAD_REQUEST, "missing or invalid target port"),
    };
    let ports = &state.config.ports;
    if !ports.is_empty() && !ports.values().any(|p| *p == port) {
        return error_response(
            StatusCode::FORBIDDEN,
            format!("port {port} is not an application port of this workload"),
        );
    }
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let app_addr = SocketAddr::new(state.config.address, port);
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(app_addr.to_string())
        .path_and_query(path)
        .build()
    {
        Ok(u) => u,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, format!("invalid path: {e}")),
    };
    strip_hop_by_hop(&mut parts.headers);
    strip_trellis_headers(&mut parts.headers);
    parts.headers.remove(XFCC);
    let xfcc = xfcc_value(&state.config.identity.to_string(), &caller.to_string());
    match HeaderValue::from_str(&xfcc) {
        Ok(v) => {
            parts.headers.insert(XFCC, v);
        }
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    if let Ok(host) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = Version::HTTP_11;
    match app.request(Request::from_parts(parts, boxed(body))).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_2;
            Response::from_parts(parts, boxed(body))
        }
        Err(e) => {
            tracing::warn!(app = %app_addr, error = %e, "local app request failed");
            error_response(
                StatusCode::BAD_GATEWAY,
                format!("local app at {app_addr}: {e}"),
            )
        }
    }
}
