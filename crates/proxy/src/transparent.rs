//! Transparent mode: the workload's traffic, captured by nftables ([`crate::capture`]),
//! arrives here without the app knowing.
//!
//! * Outbound (15001): the original destination (`SO_ORIGINAL_DST`) says where the app meant
//!   to go — a service's virtual IP, a workload's own address, or somewhere outside the
//!   mesh. The protocol is detected ([`crate::detect`]) unless the service port declares it:
//!   HTTP/1.1 and h2c are served as HTTP and routed like explicit mode; TLS from the app and
//!   anything else travel as opaque TCP in a tunnel ([`crate::tunnel`]). Destinations outside
//!   the mesh go direct under `ALLOW_ANY` and are refused under `REGISTRY_ONLY`.
//! * Inbound plaintext (15006): connections from outside the mesh to the workload's ports.
//!   Under a STRICT PeerAuthentication for the port they are closed; under PERMISSIVE (the
//!   default) or DISABLE they are authorized as TCP connections without a principal
//!   ([`crate::authz`]) and passed to the app: HTTP as HTTP, without any
//!   `x-forwarded-client-cert` (the client proved no identity), anything else spliced
//!   ([`crate::app_stream`]). A connection whose original destination is one of the proxy's
//!   own listeners (it was not captured: someone dialled 15006 itself) is closed.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;
use trellis_api::authz::PeerMode;

use http::StatusCode;

use crate::config::OutboundPolicy;
use crate::detect::{detect, Protocol};
use crate::listener::{Listener, TcpConnection};
use crate::outbound::UNKNOWN;
use crate::pool::Pool;
use crate::state::ProxyState;
use crate::telemetry::{Edge, Flag};
use crate::tunnel::TunnelError;

/// How long protocol detection waits for the client's first bytes: past it the connection
/// is opaque TCP, so a server-speaks-first protocol on an undeclared port waits this long for
/// its banner at most. Declared `tcp` ports wait not at all.
pub const DETECT_TIMEOUT: Duration = Duration::from_millis(50);

/// The `destination_service` of connections to destinations outside the mesh (Istio's
/// `PassthroughCluster`).
pub const PASSTHROUGH: &str = "passthrough";

/// Where a captured connection was going.
enum Destination {
    /// A service's virtual IP.
    Service { host: String },
    /// A workload's own address: straight to that endpoint, through its proxy.
    Endpoint { host: String, index: usize },
    /// Not in the mesh.
    External,
}

fn classify(state: &ProxyState, orig: SocketAddr) -> Destination {
    let Some(snap) = state.snapshot.load_full() else {
        return Destination::External;
    };
    if let Some(host) = snap.by_vip.get(&orig.ip()) {
        return Destination::Service { host: host.clone() };
    }
    if let Some((host, index)) = snap.by_endpoint.get(&orig.ip()) {
        return Destination::Endpoint {
            host: host.clone(),
            index: *index,
        };
    }
    Destination::External
}

/// Accepts captured outbound connections until `stop` turns true.
pub async fn serve_outbound(
    mut listener: Listener,
    state: Arc<ProxyState>,
    pool: Arc<Pool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return,
        };
        let peer = tcp.peer();
        let _ = tcp.get_ref().set_nodelay(true);
        let (state, pool) = (state.clone(), pool.clone());
        tokio::spawn(async move {
            let _open = state.metrics.connection_open("outbound");
            if let Err(e) = outbound(tcp, &state, &pool).await {
                tracing::debug!(%peer, error = %e, "outbound connection ended");
            }
        });
    }
}

/// Whether the app declared the port's protocol as plain TCP (or a TCP protocol Trellis does
/// not parse), so detection is skipped.
fn declared_opaque(protocol: &str) -> bool {
    matches!(
        protocol,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "opaque"
    )
}

async fn outbound(
    tcp: TcpConnection,
    state: &Arc<ProxyState>,
    pool: &Arc<Pool>,
) -> std::io::Result<()> {
    let orig = crate::capture::original_dst(tcp.get_ref())?;
    let own = state.config.outbound_addr;
    if state.config.is_own_listener(orig)
        || (orig.port() == own.port()
            && (orig.ip().is_loopback() || orig.ip() == state.config.address))
    {
        // Something connected to one of the proxy's own ports: routing it would loop.
        tracing::debug!(destination = %orig, "outbound connection to the proxy itself dropped");
        return Ok(());
    }
    match classify(state, orig) {
        Destination::External => external(tcp, orig, state).await,
        Destination::Endpoint { host, index } => {
            let Some(snap) = state.snapshot.load_full() else {
                return Ok(());
            };
            let Some(svc) = snap.services.get(&host) else {
                return Ok(());
            };
            let Some(ep) = svc.endpoints.get(index) else {
                return Ok(());
            };
            let edge = state.telemetry.outbound_edge(
                &host,
                &ep.workload_name,
                &svc.namespace,
                &ep.identity,
                true,
            );
            tunnel(
                tcp,
                state,
                pool,
                edge,
                ep.proxy_addr(),
                &ep.identity,
                SocketAddr::new(ep.address, orig.port()),
            )
            .await
        }
        Destination::Service { host } => {
            let Some(snap) = state.snapshot.load_full() else {
                return Ok(());
            };
            let Some(service) = snap.services.get(&host).cloned() else {
                return Ok(());
            };
            let declared = service
                .port(Some(orig.port()))
                .map(|p| p.protocol.as_str())
                .unwrap_or("");
            let protocol = if declared_opaque(declared) {
                Protocol::Opaque
            } else {
                detect(tcp.get_ref(), DETECT_TIMEOUT).await?
            };
            match protocol {
                Protocol::Http1 | Protocol::Http2 => {
                    serve_http(tcp, protocol, state.clone(), pool.clone(), host, orig).await;
                    Ok(())
                }
                Protocol::Tls | Protocol::Opaque => {
                    // Only a port with TLS rules waits for the server name; on a port
                    // declared opaque it may not be TLS at all, and then nothing is known
                    // until the timeout.
                    let sni = if crate::outbound::routes_by_sni(
                        &service,
                        Some(orig.port()),
                        state.config.namespace(),
                    ) {
                        crate::detect::sni(tcp.get_ref(), DETECT_TIMEOUT).await
                    } else {
                        None
                    };
                    let (peer, identity, target, edge) = {
                        let source = trellis_api::routing::Source {
                            namespace: state.config.namespace(),
                            labels: &state.config.labels,
                        };
                        let chosen = crate::outbound::choose_tcp(
                            &snap,
                            &service,
                            Some(orig.port()),
                            &source,
                            sni.as_deref(),
                        );
                        let t = match chosen {
                            Ok(t) => t,
                            Err((_, msg)) => {
                                let edge = state.telemetry.outbound_edge(
                                    &service.host,
                                    UNKNOWN,
                                    &service.namespace,
                                    UNKNOWN,
                                    true,
                                );
                                if let Some(ex) = state.telemetry.start_tcp(edge) {
                                    ex.finish(0, 0, Some(Flag::NoHealthyUpstream));
                                }
                                return Err(std::io::Error::other(msg));
                            }
                        };
                        let edge = state.telemetry.outbound_edge(
                            &t.service.host,
                            &t.endpoint.workload_name,
                            &t.service.namespace,
                            &t.endpoint.identity,
                            true,
                        );
                        (
                            t.endpoint.proxy_addr(),
                            t.endpoint.identity.clone(),
                            SocketAddr::new(t.endpoint.address, t.port),
                            edge,
                        )
                    };
                    tunnel(tcp, state, pool, edge, peer, &identity, target).await
                }
            }
        }
    }
}

/// Carries an app's connection to `target` through the proxy at `peer`, recorded as the
/// source side of `edge`.
async fn tunnel(
    mut tcp: TcpConnection,
    state: &ProxyState,
    pool: &Pool,
    edge: Edge,
    peer: SocketAddr,
    identity: &str,
    target: SocketAddr,
) -> std::io::Result<()> {
    let exchange = state.telemetry.start_tcp(edge).map(|mut ex| {
        ex.upstream = Some(peer);
        ex
    });
    let mut up = match crate::tunnel::open(pool, peer, identity, target).await {
        Ok(up) => up,
        Err(e) => {
            if let Some(ex) = exchange {
                let flag = match &e {
                    TunnelError::Refused { status, .. } if *status == StatusCode::FORBIDDEN => {
                        Flag::Denied
                    }
                    _ => Flag::UpstreamConnectFailure,
                };
                ex.finish(0, 0, Some(flag));
            }
            return Err(std::io::Error::other(e));
        }
    };
    let mut app = crate::tunnel::Counted::new(&mut tcp);
    let result = crate::tunnel::splice(&mut app, &mut up).await;
    // Read from the app: the request direction; written to it: the response.
    let (received, sent) = app.totals();
    if let Some(ex) = exchange {
        let flag = result.as_ref().err().map(|_| Flag::UpstreamReset);
        ex.finish(sent, received, flag);
    }
    tracing::debug!(%target, received, sent, "tunnel closed");
    result.map(|_| ())
}

async fn external(
    mut tcp: TcpConnection,
    orig: SocketAddr,
    state: &ProxyState,
) -> std::io::Result<()> {
    match state.config.outbound_policy {
        OutboundPolicy::RegistryOnly => {
            tracing::info!(destination = %orig, "refused: not in the mesh registry (REGISTRY_ONLY)");
            Ok(())
        }
        OutboundPolicy::AllowAny => {
            // Outside the mesh: one `passthrough` service for every destination, so
            // addresses never become labels.
            let edge = state
                .telemetry
                .outbound_edge(PASSTHROUGH, UNKNOWN, UNKNOWN, UNKNOWN, false);
            let exchange = state.telemetry.start_tcp(edge).map(|mut ex| {
                ex.upstream = Some(orig);
                ex
            });
            let mut out = match crate::capture::connect_marked(orig, Some(state.config.mark)).await
            {
                Ok(out) => out,
                Err(e) => {
                    if let Some(ex) = exchange {
                        ex.finish(0, 0, Some(Flag::UpstreamConnectFailure));
                    }
                    return Err(e);
                }
            };
            let _ = out.set_nodelay(true);
            let mut app = crate::tunnel::Counted::new(&mut tcp);
            let result = tokio::io::copy_bidirectional(&mut app, &mut out).await;
            let (received, sent) = app.totals();
            if let Some(ex) = exchange {
                ex.finish(
                    sent,
                    received,
                    result.as_ref().err().map(|_| Flag::UpstreamReset),
                );
            }
            result.map(|_| ())
        }
    }
}

async fn serve_http(
    tcp: TcpConnection,
    protocol: Protocol,
    state: Arc<ProxyState>,
    pool: Arc<Pool>,
    host: String,
    orig: SocketAddr,
) {
    let h2 = protocol == Protocol::Http2;
    let limits = state.config.limits;
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (state, pool, host) = (state.clone(), pool.clone(), host.clone());
        async move {
            let Some(snap) = state.snapshot.load_full() else {
                return Ok::<_, Infallible>(crate::body::error_response(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "proxy has no snapshot yet",
                ));
            };
            let Some(service) = snap.services.get(&host).cloned() else {
                return Ok(crate::body::error_response(
                    http::StatusCode::NOT_FOUND,
                    format!("service {host} is gone"),
                ));
            };
            // The authority the app wrote, else the address it dialled.
            let authority = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| {
                    req.headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| orig.to_string());
            if let Some(protocol) = crate::upgrade::requested(&req) {
                let port = Some(orig.port());
                let up = crate::upgrade::forward(
                    req, protocol, &state, &pool, &snap, &service, port, &authority,
                );
                return Ok(up.await);
            }
            Ok(crate::outbound::forward(
                req,
                &state,
                &pool,
                &snap,
                &service,
                Some(orig.port()),
                &authority,
            )
            .await)
        }
    });
    let io = TokioIo::new(tcp);
    let result = if h2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await
    } else {
        crate::listener::http1(&limits)
            .serve_connection(io, svc)
            .with_upgrades()
            .await
    };
    if let Err(e) = result {
        tracing::debug!(destination = %orig, error = %e, "captured HTTP connection ended");
    }
}

/// Accepts plaintext inbound connections (captured to 15006) and passes them to the app at
/// the port they were for: HTTP as HTTP, with any `x-forwarded-client-cert` removed (a
/// plaintext client has no verified identity), anything else spliced
/// ([`crate::app_stream`]).
pub async fn serve_inbound_plain(
    mut listener: Listener,
    state: Arc<ProxyState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let peer = tcp.peer();
            let orig = match crate::capture::original_dst(tcp.get_ref()) {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "inbound: no original destination");
                    return;
                }
            };
            if !is_own(&state, orig.ip()) {
                tracing::warn!(%peer, destination = %orig, "inbound connection for another address dropped");
                return;
            }
            let target = SocketAddr::new(state.config.address, orig.port());
            if state.config.is_own_listener(orig) || state.config.is_own_listener(target) {
                // Not captured (the proxy's ports are left alone), so the original
                // destination is this listener or another of the proxy's own: passing it on
                // would connect the proxy to itself, again and again, until it runs out of
                // descriptors.
                tracing::info!(%peer, destination = %orig, "plaintext connection to the proxy's own port closed");
                return;
            }
            state.metrics.count_inbound(false, peer.ip());
            let _open = state.metrics.connection_open("inbound");
            state.note_plaintext(peer.ip());
            // A plaintext client has no identity: its edge is `unknown`, and the service is
            // the workload's own (what it was addressed as is not known below HTTP).
            let own = state.telemetry.own_workload.clone();
            let edge = state
                .telemetry
                .inbound_edge(UNKNOWN, UNKNOWN, UNKNOWN, &own, false);
            let exchange = state.telemetry.start_tcp(edge).map(|mut ex| {
                ex.upstream = Some(target);
                ex
            });
            if let Err(flag) = plaintext_allowed(&state, peer, target) {
                if let Some(ex) = exchange {
                    ex.finish(0, 0, Some(flag));
                }
                return;
            }
            match crate::capture::connect_marked(target, Some(state.config.mark)).await {
                Ok(app) => {
                    let totals = Arc::new(crate::tunnel::Totals::default());
                    let to_app = crate::app_stream::AppTarget {
                        addr: target,
                        mark: Some(state.config.mark),
                        xfcc: None,
                        limits: state.config.limits,
                    };
                    let result = crate::app_stream::serve(tcp, app, to_app, totals.clone()).await;
                    if let Err(e) = &result {
                        tracing::debug!(%peer, %target, error = %e, "plaintext connection ended");
                    }
                    let (received, sent) = totals.get();
                    if let Some(ex) = exchange {
                        ex.finish(sent, received, result.err().map(|_| Flag::UpstreamReset));
                    }
                }
                Err(e) => {
                    if let Some(ex) = exchange {
                        ex.finish(0, 0, Some(Flag::UpstreamConnectFailure));
                    }
                    tracing::debug!(%peer, %target, error = %e, "inbound: app refused");
                }
            }
        });
    }
}

/// Whether a plaintext connection from `peer` to `target` may reach the app: the port's
/// PeerAuthentication mode must accept plain text, then the AuthorizationPolicies must allow
/// a connection without a principal. Logs why not, and says it as a response flag.
fn plaintext_allowed(state: &ProxyState, peer: SocketAddr, target: SocketAddr) -> Result<(), Flag> {
    let Some(policy) = state.inbound_policy.load_full() else {
        tracing::info!(%peer, %target, "plaintext connection closed: no policy yet (no snapshot)");
        return Err(Flag::NoRoute);
    };
    let mtls = policy.mtls(target.port());
    if mtls.mode == PeerMode::Strict {
        tracing::info!(%peer, %target, mtls = %mtls.source, "plaintext connection closed: mutual TLS required");
        return Err(Flag::Denied);
    }
    if crate::authz::authorize_connection(state, None, peer, target, None).allow {
        Ok(())
    } else {
        Err(Flag::Denied)
    }
}

fn is_own(state: &ProxyState, ip: IpAddr) -> bool {
    ip == state.config.address || ip.is_loopback()
}
