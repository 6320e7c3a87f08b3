//! Inbound: the mTLS listener (port 15008) that other proxies connect to.
//!
//! The TLS handshake requires a client certificate that chains to the mesh's roots and
//! carries a SPIFFE ID; that ID, read from the session and never from a header, is the
//! caller's identity. Each HTTP/2 request is authorized ([`crate::authz`]: its path
//! normalized, the workload's AuthorizationPolicies evaluated, `403 RBAC: access denied` when
//! denied) and forwarded to the local app over HTTP/1.1 with the normalized path and
//! `x-forwarded-client-cert` set to `By=<own ID>;URI=<caller ID>` after any XFCC that came
//! from elsewhere has been removed. `CONNECT` tunnels are authorized as TCP connections; a
//! tunnel whose payload is HTTP is served as HTTP, so its requests reach the app with the
//! same XFCC and never with one the caller wrote ([`crate::app_stream`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::watch;
use trellis_identity::tls;

use crate::app_stream::AppTarget;
use crate::authz::{Peer, Refusal};
use crate::body::{boxed, error_response, Body};
use crate::headers::{
    strip_hop_by_hop, strip_trellis_headers, xfcc_value, DESTINATION_SERVICE, SOURCE_WORKLOAD,
    TARGET_PORT, XFCC,
};
use crate::listener::{Listener, TcpConnection};
use crate::state::ProxyState;
use crate::telemetry::{count_request_body, flag_response, Edge, Exchange, Flag, Recorded};
use crate::tunnel::Totals;

/// A handshake that has not finished by then is dropped, so a stalled peer holds no task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams one peer connection may have open at once; a client proxy past it waits for one
/// to end. Bounds what a single peer can make this proxy hold (tasks, buffers).
const MAX_STREAMS: u32 = 1000;

/// HTTP/1.1 and HTTP/2 (prior knowledge) clients of the local app: the client proxy says
/// which one the app spoke.
#[derive(Clone)]
struct AppClient {
    h1: Client<HttpConnector, Body>,
    h2: Client<HttpConnector, Body>,
}

/// Accepts peer proxies until `stop` turns true.
pub async fn serve(
    mut listener: Listener,
    state: Arc<ProxyState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // Connections are tracked so that a drain lets requests in flight finish (HTTP/2 GOAWAY:
    // no new streams, running ones complete).
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let app = AppClient {
        h1: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector.clone()),
        h2: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_only(true)
            .build(connector),
    };
    loop {
        let tcp = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => break,
        };
        let _ = tcp.get_ref().set_nodelay(true);
        tokio::spawn(serve_connection(
            tcp,
            state.clone(),
            app.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    crate::drain::finish(graceful, state.config.drain_timeout, "inbound").await;
}

async fn serve_connection(
    tcp: TcpConnection,
    state: Arc<ProxyState>,
    app: AppClient,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let peer = tcp.peer();
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
    let session = stream.get_ref().1;
    let caller = match tls::peer_identity(session.peer_certificates()) {
        Ok(id) => Arc::new(Peer::new(
            id,
            peer,
            session.server_name().map(str::to_owned),
        )),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "inbound connection without a usable identity");
            return;
        }
    };
    state.metrics.count_inbound(true, peer.ip());
    let _open = state.metrics.connection_open("inbound");
    tracing::debug!(%peer, caller = %caller.principal, "inbound mTLS connection");
    let labels = Arc::new(CallerLabels::new(&state, &caller));
    let svc = hyper::service::service_fn(move |req| {
        let (state, app, caller, labels) =
            (state.clone(), app.clone(), caller.clone(), labels.clone());
        async move { Ok::<_, Infallible>(handle(req, &state, &app, &caller, &labels).await) }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        // Extended CONNECT (RFC 8441) carries HTTP/1.1 upgrades: see crate::upgrade.
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_STREAMS)
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "inbound connection ended");
    }
}

/// The caller's part of every edge on one connection, made once per connection: its
/// principal and namespace come from the TLS session and do not change.
struct CallerLabels {
    /// The principal, or `other` past the telemetry's cap of distinct callers.
    principal: Arc<str>,
    namespace: Arc<str>,
}

impl CallerLabels {
    fn new(state: &ProxyState, caller: &Peer) -> Self {
        CallerLabels {
            principal: state.telemetry.source_principal(&caller.principal).into(),
            namespace: caller.id.namespace.as_str().into(),
        }
    }

    /// The edge of one request or tunnel: the caller's workload and the service it addressed
    /// come from the client proxy's headers (read before they are stripped), else `unknown`
    /// and the service the authority names. Neither is trusted: the workload name is capped
    /// ([`crate::telemetry::MAX_SOURCE_WORKLOADS`]), and the service must be the snapshot's
    /// ([`crate::telemetry::destination_service`]).
    fn edge(&self, state: &ProxyState, headers: &http::HeaderMap, authority: &str) -> Edge {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        let workload = header(SOURCE_WORKLOAD).unwrap_or(crate::outbound::UNKNOWN);
        let snapshot = state.snapshot.load();
        let service = crate::telemetry::destination_service(
            snapshot.as_deref(),
            header(DESTINATION_SERVICE),
            authority,
            &self.namespace,
        );
        state
            .telemetry
            .inbound_edge(workload, &self.namespace, &self.principal, &service, true)
    }
}

async fn handle(
    req: Request<Incoming>,
    state: &ProxyState,
    app: &AppClient,
    caller: &Peer,
    labels: &CallerLabels,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        if let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>().cloned() {
            return crate::upgrade::serve_inbound(req, protocol, state, caller).await;
        }
        return tunnel(req, state, caller, labels).await;
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let edge = labels.edge(state, &parts.headers, &authority);
    let grpc = crate::outbound::is_grpc(&parts.headers);
    let mut exchange = state.telemetry.start(
        edge,
        &parts.method,
        &authority,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        grpc,
        &mut parts.headers,
    );
    // The caller's deadline and retry mark, kept while the app works on the request, for the
    // calls it makes onward: bound to the trace context this proxy hands the app with this
    // request, never to a trace id alone (see `crate::chain`).
    let inherited =
        crate::chain::Inherited::from_headers(&parts.headers, std::time::Instant::now());
    let _chain = (inherited != Default::default())
        .then(|| crate::chain::bind(&mut parts.headers, exchange.is_some()))
        .flatten()
        .map(|key| state.chains.enter(key, inherited));
    let req = Request::from_parts(parts, body);
    let resp = forward_to_app(req, state, app, caller, exchange.as_mut(), authority).await;
    Recorded::wrap(resp, exchange)
}

/// Authorizes the request and sends it to the app.
async fn forward_to_app(
    req: Request<Incoming>,
    state: &ProxyState,
    app: &AppClient,
    caller: &Peer,
    mut exchange: Option<&mut Exchange>,
    authority: String,
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
    let h2 = parts
        .headers
        .get(crate::headers::APP_PROTOCOL)
        .is_some_and(|v| v == "h2c");
    // Policies see the headers the app will see, not the ones only proxies set.
    strip_hop_by_hop(&mut parts.headers);
    strip_trellis_headers(&mut parts.headers);
    parts.headers.remove(XFCC);
    let path = match crate::authz::authorize_request(
        state,
        caller,
        port,
        &parts.method,
        &parts.uri,
        &parts.headers,
    ) {
        Ok(allowed) => {
            if let Some(ex) = exchange.as_deref_mut() {
                ex.policy = Some(allowed.policy);
            }
            allowed.path
        }
        Err(refusal) => {
            let flag = match &refusal {
                Refusal::Denied { policy } => {
                    if let Some(ex) = exchange.as_deref_mut() {
                        ex.policy = Some(policy.clone());
                    }
                    Flag::Denied
                }
                Refusal::Path(_) | Refusal::Method(_) => Flag::DownstreamProtocolError,
                Refusal::NoPolicy => Flag::NoRoute,
            };
            return flag_response(refusal.into_response(), flag);
        }
    };
    let app_addr = SocketAddr::new(state.config.address, port);
    if let Some(ex) = exchange.as_deref_mut() {
        ex.upstream = Some(app_addr);
    }
    // The normalized path: the app must act on the path the policies were checked against.
    parts.uri = match Uri::builder()
        .scheme("http")
        .authority(app_addr.to_string())
        .path_and_query(path.as_str())
        .build()
    {
        Ok(u) => u,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, format!("invalid path: {e}")),
    };
    let xfcc = xfcc_value(&state.config.identity.to_string(), &caller.principal);
    match HeaderValue::from_str(&xfcc) {
        Ok(v) => {
            parts.headers.insert(XFCC, v);
        }
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
    if let Ok(host) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, host);
    }
    let client = if h2 {
        parts.version = Version::HTTP_2;
        // HTTP/2 carries the authority in the URI, not in a Host header.
        parts.headers.remove(header::HOST);
        &app.h2
    } else {
        parts.version = Version::HTTP_11;
        &app.h1
    };
    match client
        .request(Request::from_parts(
            parts,
            count_request_body(body, exchange),
        ))
        .await
    {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_2;
            Response::from_parts(parts, boxed(body))
        }
        Err(e) => {
            tracing::warn!(app = %app_addr, error = %e, "local app request failed");
            flag_response(
                error_response(
                    StatusCode::BAD_GATEWAY,
                    format!("local app at {app_addr}: {e}"),
                ),
                Flag::UpstreamConnectFailure,
            )
        }
    }
}

/// An opaque TCP tunnel (HTTP/2 `CONNECT`): the authority names this workload's address and
/// port; the connection is authorized (a denied one is a 403, and the client proxy closes the
/// app's connection), then the app is connected, so a refused port is reported to the caller
/// as 502.
async fn tunnel(
    mut req: Request<Incoming>,
    state: &ProxyState,
    caller: &Peer,
    labels: &CallerLabels,
) -> Response<Body> {
    let Some(target) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "CONNECT needs an IP:port authority",
        );
    };
    if target.ip() != state.config.address {
        return error_response(
            StatusCode::FORBIDDEN,
            format!("tunnel target {target} is not this workload"),
        );
    }
    let ports = &state.config.ports;
    if !ports.is_empty() && !ports.values().any(|p| *p == target.port()) {
        return error_response(
            StatusCode::FORBIDDEN,
            format!(
                "port {} is not an application port of this workload",
                target.port()
            ),
        );
    }
    let authority = target.to_string();
    let exchange = state
        .telemetry
        .start_tcp(labels.edge(state, req.headers(), &authority))
        .map(|mut ex| {
            ex.upstream = Some(target);
            ex
        });
    if !crate::authz::authorize_connection(
        state,
        Some(&caller.principal),
        caller.addr,
        target,
        caller.sni.as_deref(),
    )
    .allow
    {
        if let Some(ex) = exchange {
            ex.finish(0, 0, Some(Flag::Denied));
        }
        return crate::authz::denied();
    }
    // Should the tunnel carry HTTP, the app is told who called, as for any request.
    let xfcc = match HeaderValue::from_str(&xfcc_value(
        &state.config.identity.to_string(),
        &caller.principal,
    )) {
        Ok(v) => v,
        Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let app = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(ex) = exchange {
                ex.finish(0, 0, Some(Flag::UpstreamConnectFailure));
            }
            tracing::warn!(%target, error = %e, "tunnel: local app refused");
            return error_response(
                StatusCode::BAD_GATEWAY,
                format!("local app at {target}: {e}"),
            );
        }
    };
    let _ = app.set_nodelay(true);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let caller = caller.principal.clone();
    let open = state.metrics.connection_open("inbound");
    let to_app = AppTarget {
        addr: target,
        mark: None,
        xfcc: Some(xfcc),
        limits: state.config.limits,
    };
    tokio::spawn(async move {
        let _open = open;
        let (sent, received, flag) = match on_upgrade.await {
            Ok(up) => {
                // Spliced, unless the payload is HTTP: then served as HTTP, so that the
                // XFCC the app sees is this proxy's (`crate::app_stream`).
                let totals = Arc::new(Totals::default());
                let r =
                    crate::app_stream::serve(TokioIo::new(up), app, to_app, totals.clone()).await;
                // Read from the caller: the request direction; written to it: the response.
                let (received, sent) = totals.get();
                match r {
                    Ok(kind) => {
                        tracing::debug!(%target, %caller, ?kind, received, sent, "tunnel closed");
                        (sent, received, None)
                    }
                    Err(e) => {
                        tracing::debug!(%target, %caller, error = %e, "tunnel ended");
                        (sent, received, Some(Flag::UpstreamReset))
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%target, error = %e, "tunnel upgrade failed");
                (0, 0, Some(Flag::DownstreamDisconnect))
            }
        };
        if let Some(ex) = exchange {
            ex.finish(sent, received, flag);
        }
    });
    Response::new(crate::body::full(bytes::Bytes::new()))
}
