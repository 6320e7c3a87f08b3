//! Outbound, explicit mode: the app sends its requests to this listener as to an HTTP proxy
//! (`http_proxy=http://ADDR`), in absolute form or with a `Host` header (transparent mode
//! hands its HTTP requests to [`forward`] the same way). The authority picks the service; the
//! port's route table picks a rule and a weighted destination ([`crate::route`]); the
//! destination's traffic policy picks an endpoint ([`crate::destination`]); the request goes
//! over the pooled mTLS connection to that endpoint's proxy, with the rule's timeout and
//! retries (on other endpoints), under the destination's limits.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::sync::watch;
use trellis_api::destination::{LoadBalancer, Policy as DestinationPolicy};
use trellis_api::snapshot::{authority_port, Endpoint, Service, Snapshot};

use crate::body::{boxed, error_response, full, guarded, Body, BoxError};
use crate::destination::DestinationState;
use crate::headers::{
    strip_hop_by_hop, strip_trellis_headers, DESTINATION_SERVICE, SOURCE_WORKLOAD, TARGET_PORT,
};
use crate::pool::Pool;
use crate::pool::PoolError;
use crate::resilience::OutlierDetector;
use crate::route::{self, Routed};
use crate::state::ProxyState;
use crate::telemetry::{count_request_body, flag_response, Exchange, Flag, Recorded, Telemetry};

/// Accepts app connections until `stop` turns true.
pub async fn serve(
    mut listener: crate::listener::Listener,
    state: Arc<ProxyState>,
    pool: Arc<Pool>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let server = crate::listener::http1(&listener.limits());
    loop {
        let tcp = tokio::select! {
            c = listener.accept() => c,
            _ = stop.changed() => break,
        };
        let peer = tcp.peer();
        let _ = tcp.get_ref().set_nodelay(true);
        let (state2, pool) = (state.clone(), pool.clone());
        let svc = hyper::service::service_fn(move |req| {
            let (state, pool) = (state2.clone(), pool.clone());
            async move { Ok::<_, Infallible>(handle(req, &state, &pool).await) }
        });
        let conn = server.serve_connection(TokioIo::new(tcp), svc);
        let conn = graceful.watch(conn);
        let open = state.metrics.connection_open("outbound");
        tokio::spawn(async move {
            let _open = open;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "outbound connection ended");
            }
        });
    }
    drop(listener);
    crate::drain::finish(graceful, state.config.drain_timeout, "outbound").await;
}

/// A destination chosen for one request or connection.
pub struct Target<'a> {
    pub service: &'a Service,
    pub endpoint: &'a Endpoint,
    /// The workload port on the endpoint.
    pub port: u16,
    /// The DestinationRule traffic policy for the destination (service, port, subset).
    pub policy: &'a DestinationPolicy,
    /// The destination's limits and outlier state, when its policy has any.
    pub destination: Option<Arc<DestinationState>>,
    /// How many endpoints the destination has (ejected ones included).
    pub endpoints: usize,
}

/// What the balancer of a request needs beyond the destination: the proxy's state and the
/// parts of the request a consistent hash may read.
pub struct Balance<'r> {
    pub state: &'r ProxyState,
    pub headers: &'r http::HeaderMap,
    pub query: Option<&'r str>,
    /// Endpoints (by proxy address) not to pick: those a retry already tried.
    pub avoid: &'r [std::net::SocketAddr],
}

async fn handle(req: Request<Incoming>, state: &ProxyState, pool: &Arc<Pool>) -> Response<Body> {
    let Some(snapshot) = state.snapshot.load_full() else {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "proxy has no snapshot yet");
    };
    let authority = match &state.config.front {
        Some(front) => front.clone(),
        None => match request_authority(&req) {
            Some(a) => a,
            None => return error_response(StatusCode::BAD_REQUEST, "request names no host"),
        },
    };
    let Some(service) = snapshot.resolve(&authority, state.config.namespace()) else {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no service in the mesh for {authority:?}"),
        );
    };
    forward(
        req,
        state,
        pool,
        &snapshot,
        service,
        authority_port(&authority),
        &authority,
    )
    .await
}

/// Sends an app's HTTP request to `service` (already resolved, by authority in explicit mode
/// or by virtual IP in transparent mode): the port's route table chooses a rule
/// ([`crate::route`]), an endpoint of the chosen destination is picked, and the request goes
/// over the pool with the rule's faults, header changes, rewrites, timeout and retries. It
/// is recorded as the source side of its edge ([`crate::telemetry`]).
pub async fn forward(
    req: Request<Incoming>,
    state: &ProxyState,
    pool: &Arc<Pool>,
    snapshot: &Snapshot,
    service: &Service,
    port: Option<u16>,
    authority: &str,
) -> Response<Body> {
    let telemetry = &state.telemetry;
    let (mut parts, body) = req.into_parts();
    // The chain this call is part of, if the app serves one here (`crate::chain`): named by
    // the context the app sent, read before the client span below replaces it. Most proxies
    // serve no chain with a deadline or a retry mark: no header to parse then.
    let chain_key = (!state.chains.is_empty())
        .then(|| crate::trace::extract(&parts.headers))
        .flatten()
        .map(|ctx| crate::chain::ChainKey::of(&ctx));
    let grpc = is_grpc(&parts.headers);
    let routed = {
        let view = route::view(
            &parts,
            authority,
            state.config.namespace(),
            &state.config.labels,
        );
        route::decide(service, port, &view)
    };
    let (host, subset, dest_port, rule, destination, matched) = match routed {
        Routed::Answer {
            response,
            flag,
            rule,
        } => {
            let edge = unknown_edge(telemetry, service);
            let mut exchange = start(telemetry, edge, &mut parts, authority, grpc);
            if let Some(ex) = &mut exchange {
                ex.route = rule.map(|r| r.name.to_string());
            }
            let response = match flag {
                Some(flag) => flag_response(response, flag),
                None => response,
            };
            return Recorded::wrap(response, exchange);
        }
        Routed::Forward {
            host,
            subset,
            port,
            rule,
            destination,
            matched,
        } => (host, subset, port, rule, destination, matched),
    };
    let target = match route::destination(snapshot, host)
        .ok_or_else(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("route destination {host} is not a known service"),
            )
        })
        .and_then(|dest| {
            let balance = Balance {
                state,
                headers: &parts.headers,
                query: parts.uri.query(),
                avoid: &[],
            };
            endpoint_of(dest, subset, dest_port, Some(balance))
        }) {
        Ok(t) => t,
        Err((status, msg)) => {
            let edge = unknown_edge(telemetry, service);
            let exchange = start(telemetry, edge, &mut parts, authority, grpc);
            let flag = if status == StatusCode::NOT_FOUND {
                Flag::NoRoute
            } else {
                Flag::NoHealthyUpstream
            };
            return Recorded::wrap(flag_response(error_response(status, msg), flag), exchange);
        }
    };
    let peer_addr = target.endpoint.proxy_addr();
    let mut exchange = start(
        telemetry,
        telemetry.outbound_edge(
            &target.service.host,
            &target.endpoint.workload_name,
            &target.service.namespace,
            &target.endpoint.identity,
            true,
        ),
        &mut parts,
        authority,
        grpc,
    );
    if let Some(ex) = &mut exchange {
        ex.upstream = Some(peer_addr);
        ex.route = rule.map(|r| r.name.to_string());
    }
    // The chain this call is part of: the caller's deadline and whether a proxy above
    // retries it, remembered by the server side for the request the app serves.
    let now = Instant::now();
    let inherited = chain_key
        .map(|key| state.chains.lookup(&key))
        .unwrap_or_default();
    let timeout = rule.and_then(|r| r.filters.timeout);
    let chain = inherited.with_timeout(timeout, now);
    if chain.remaining(now) == Some(Duration::ZERO) {
        // The caller has given up: the work is not started.
        return Recorded::wrap(route::timed_out(None), exchange);
    }
    if let Some((resp, flag)) = route::inject_fault(rule).await {
        return Recorded::wrap(flag_response(resp, flag), exchange);
    }
    let authority = match route::rewrite_request(&mut parts, authority, rule, destination, matched)
    {
        Ok(a) => a,
        Err(msg) => {
            let resp = error_response(StatusCode::BAD_REQUEST, msg);
            return Recorded::wrap(flag_response(resp, Flag::DownstreamProtocolError), exchange);
        }
    };
    // A request that may be sent more than once (retried, mirrored) needs its body kept:
    // one of known size up to REPLAY_LIMIT is read whole first, as Envoy buffers for
    // retries. A larger or streamed one goes once, unmirrored.
    let copies = rule.is_some_and(|r| r.filters.retries.is_some() || !r.filters.mirrors.is_empty());
    let (body, replay) = match replayable(body, copies).await {
        Ok(b) => b,
        Err(e) => {
            let resp = error_response(StatusCode::BAD_REQUEST, format!("reading the body: {e}"));
            return Recorded::wrap(flag_response(resp, Flag::DownstreamProtocolError), exchange);
        }
    };
    if let (Some(rule), Some(replay)) = (rule, &replay) {
        mirror(pool, snapshot, rule, &parts, &authority, replay);
    }
    let retries = rule
        .and_then(|r| r.filters.retries.as_ref())
        .filter(|_| replay.is_some() && !inherited.retried_above);
    let per_try = rule.and_then(|r| r.filters.per_try_timeout);
    let req = Request::from_parts(parts, body);
    let mut req = match to_upstream(req, &authority, &target, state, exchange.as_mut()) {
        Ok(r) => r,
        Err(msg) => {
            let resp = error_response(StatusCode::BAD_REQUEST, msg);
            return Recorded::wrap(flag_response(resp, Flag::DownstreamProtocolError), exchange);
        }
    };
    chain.to_headers(req.headers_mut(), retries.is_some(), now);
    tracing::debug!(%authority, service = %target.service.host, endpoint = %target.endpoint.workload_name, "routing");
    // The budget counts the requests that may be retried, and only those take from it.
    let budget = retries.map(|_| {
        let percent = target.policy.retry_budget.as_ref().map(|b| b.percent);
        let b = state.budgets.get(&target.service.host, percent);
        b.deposit(now);
        b
    });
    let retry = retries
        .zip(budget.as_deref())
        .map(|(policy, budget)| Retry {
            policy,
            budget,
            body: replay.unwrap_or_default(),
        });
    // Retries go to another endpoint than the ones tried, when the destination has one and
    // the policy says so (Istio's default): picked as the first was, but without a hash key.
    let dest_service = target.service;
    let others = move |tried: &[std::net::SocketAddr]| {
        let headers = http::HeaderMap::new();
        let balance = Balance {
            state,
            headers: &headers,
            query: None,
            avoid: tried,
        };
        endpoint_of(dest_service, subset, dest_port, Some(balance))
            .ok()
            .map(|t| Hop::of(&t))
    };
    let upstream = Upstream {
        first: Hop::of(&target),
        others: (target.endpoints > 1).then_some(&others),
        connections: target
            .policy
            .pool
            .as_ref()
            .map(|p| crate::pool::ConnectionLimits {
                per_connection: p.max_requests_per_connection,
                idle: p.idle_timeout_ms.map(Duration::from_millis),
            })
            .unwrap_or_default(),
        outlier: target
            .destination
            .as_deref()
            .and_then(|d| Some((d.outlier.as_ref()?, target.endpoints, d.error_codes()))),
    };
    let limit = target.destination.as_deref().and_then(|d| d.limit.as_ref());
    let send = async {
        // The destination's place is taken before anything is sent (waiting, if the
        // pool's queue has room, within the deadline) and held until the response ends.
        let slot = match limit.map(|l| l.acquire()) {
            Some(acquire) => match acquire.await {
                Ok(slot) => Some(slot),
                Err(overflow) => {
                    let resp = error_response(StatusCode::SERVICE_UNAVAILABLE, overflow);
                    return (flag_response(resp, Flag::Overflow), None);
                }
            },
            None => None,
        };
        // In flight at the endpoint until the response head: the balancer's cost and
        // latency.
        let in_flight = state.balancer.start(peer_addr);
        let Sent {
            response: resp,
            moved: last,
            client_fault,
        } = send_with_retries(pool, &upstream, req, retry, per_try).await;
        if !client_fault {
            in_flight.observe();
        }
        let resp = match slot {
            Some(slot) => resp.map(|body| guarded(body, slot)),
            None => resp,
        };
        (resp, last)
    };
    let (resp, last) = match chain.deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), send).await {
            Ok(r) => r,
            Err(_) => (route::timed_out(timeout), None),
        },
        None => send.await,
    };
    // A retry answered by another endpoint: the record names the one that answered.
    if let (Some(hop), Some(ex)) = (last, exchange.as_mut()) {
        ex.edge = telemetry.outbound_edge(
            &target.service.host,
            &hop.endpoint.workload_name,
            &target.service.namespace,
            &hop.endpoint.identity,
            true,
        );
        ex.upstream = Some(hop.endpoint.proxy_addr());
    }
    let mut resp = match resp {
        resp if resp.extensions().get::<Flag>().is_some() => resp,
        resp => {
            let (mut head, body) = resp.into_parts();
            strip_hop_by_hop(&mut head.headers);
            head.version = Version::HTTP_11;
            Response::from_parts(head, body)
        }
    };
    route::rewrite_response(&mut resp, rule, destination);
    Recorded::wrap(resp, exchange)
}

/// Sends a copy of a request (head and kept body) to each of the rule's mirrors its percentage
/// picks, and forgets it: the answer is dropped, a failure only logged, and the request
/// being served never waits. As Envoy does, the copy's authority gets `-shadow` appended so
/// the mirror can tell copies from its own traffic.
fn mirror(
    pool: &Arc<Pool>,
    snapshot: &Snapshot,
    rule: &trellis_api::routing::HttpRule,
    parts: &http::request::Parts,
    authority: &str,
    body: &Bytes,
) {
    for m in &rule.filters.mirrors {
        if !trellis_api::routing::chance(m.percent, rand::rng().random()) {
            continue;
        }
        let Some(dest) = route::destination(snapshot, &m.host) else {
            tracing::debug!(mirror = %m.host, "mirror destination is not a known service");
            continue;
        };
        let Ok(target) = endpoint_of(dest, m.subset.as_deref(), m.port, None) else {
            continue;
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let shadow = match port {
            Some(p) => format!("{host}-shadow:{p}"),
            None => format!("{host}-shadow"),
        };
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(shadow.as_str())
            .path_and_query(pq)
            .build()
        else {
            continue;
        };
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        strip_trellis_headers(&mut headers);
        headers.remove(header::HOST);
        headers.insert(TARGET_PORT, target.port.into());
        let copy = route::Replayable {
            method: parts.method.clone(),
            uri,
            headers,
            body: body.clone(),
        }
        .request();
        let (pool, peer, identity) = (
            pool.clone(),
            target.endpoint.proxy_addr(),
            target.endpoint.identity.clone(),
        );
        tokio::spawn(async move {
            match pool.send(peer, &identity, copy).await {
                Ok(resp) => drop(resp),
                Err(e) => tracing::debug!(%peer, error = %e, "mirrored request failed"),
            }
        });
    }
}

/// One endpoint an attempt goes to (from the snapshot) and the workload port there.
#[derive(Clone, Copy, Debug)]
struct Hop<'s> {
    endpoint: &'s Endpoint,
    port: u16,
}

impl<'s> Hop<'s> {
    fn of(target: &Target<'s>) -> Hop<'s> {
        Hop {
            endpoint: target.endpoint,
            port: target.port,
        }
    }
}

/// Another endpoint of the destination, avoiding the proxies given; `None` when there is
/// none.
type Others<'a, 's> = &'a (dyn Fn(&[std::net::SocketAddr]) -> Option<Hop<'s>> + Sync);

/// Where the attempts of a request go: the first endpoint, where retries may go instead, how
/// many requests a pooled connection may carry, and the outlier detection answers feed.
struct Upstream<'a, 's> {
    first: Hop<'s>,
    others: Option<Others<'a, 's>>,
    connections: crate::pool::ConnectionLimits,
    /// The destination's detector, its number of endpoints and the statuses below 500 that
    /// count as errors.
    outlier: Option<(&'a OutlierDetector, usize, &'a [u16])>,
}

/// A request's retries: the route's policy, the destination's budget, and the request's body
/// to send again.
struct Retry<'a> {
    policy: &'a trellis_api::routing::RetryPolicy,
    budget: &'a crate::resilience::RetryBudget,
    body: Bytes,
}

/// What [`send_with_retries`] ends with.
struct Sent<'s> {
    response: Response<Body>,
    /// The endpoint that gave the answer, if a retry went elsewhere than the first.
    moved: Option<Hop<'s>>,
    /// The last attempt failed by the client's doing ([`route::Attempt::ClientFault`]): the
    /// time it took says nothing about the endpoint.
    client_fault: bool,
}

/// Sends `req`, and again (with the kept body) while the policy, the attempts left and the
/// budget allow.
async fn send_with_retries<'s>(
    pool: &Pool,
    upstream: &Upstream<'_, 's>,
    req: Request<Body>,
    retry: Option<Retry<'_>>,
    per_try: Option<Duration>,
) -> Sent<'s> {
    let policy = retry.as_ref().map(|r| r.policy);
    // Set once a retry goes to another endpoint than the first.
    let mut moved: Option<Hop<'s>> = None;
    let mut tried: Vec<std::net::SocketAddr> = Vec::new();
    let replay = retry.as_ref().map(|r| route::Replayable {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
        body: r.body.clone(),
    });
    let mut req = Some(req);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let hop = moved.unwrap_or(upstream.first);
        let this = match req.take() {
            Some(r) => r,
            None => match &replay {
                Some(r) => {
                    let mut again = r.request();
                    again.headers_mut().insert(TARGET_PORT, hop.port.into());
                    again
                }
                None => {
                    let resp = error_response(StatusCode::BAD_GATEWAY, "nothing to send");
                    return Sent {
                        response: resp,
                        moved,
                        client_fault: false,
                    };
                }
            },
        };
        let peer = hop.endpoint.proxy_addr();
        // Watched, so that a failure can be blamed on the right side (`route::blame`).
        let (this, progress) = {
            let (head, body) = this.into_parts();
            let (body, progress) = crate::body::watched(body);
            (Request::from_parts(head, body), progress)
        };
        let sent = pool.send_limited(peer, &hop.endpoint.identity, this, upstream.connections);
        let result = match per_try {
            Some(t) => tokio::time::timeout(t, sent).await.ok(),
            None => Some(sent.await),
        };
        let (outcome, resp) = match result {
            None => (
                route::blame(route::NoAnswer::Timeout, progress.state()),
                route::timed_out(per_try),
            ),
            Some(Ok(resp)) => {
                let grpc = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                (
                    route::Attempt::Answered {
                        status: resp.status().as_u16(),
                        grpc,
                    },
                    resp.map(boxed),
                )
            }
            Some(Err(e)) => {
                let connect = matches!(
                    e,
                    PoolError::Connect { .. } | PoolError::Timeout { .. } | PoolError::Tls { .. }
                );
                let failure = if connect {
                    route::NoAnswer::ConnectFailure
                } else {
                    route::NoAnswer::Reset
                };
                match route::blame(failure, progress.state()) {
                    route::Attempt::ClientFault => {
                        tracing::debug!(endpoint = %peer, error = %e, "request body from the client failed");
                        let resp = error_response(
                            StatusCode::BAD_REQUEST,
                            "the request body could not be read",
                        );
                        (
                            route::Attempt::ClientFault,
                            flag_response(resp, Flag::DownstreamProtocolError),
                        )
                    }
                    attempt => {
                        tracing::warn!(endpoint = %peer, error = %e, "upstream request failed");
                        let resp = error_response(StatusCode::BAD_GATEWAY, e);
                        (attempt, flag_response(resp, Flag::UpstreamConnectFailure))
                    }
                }
            }
        };
        // Only the endpoint's own answers count against it.
        if let Some((detector, endpoints, codes)) = upstream.outlier {
            if let Some(answer) = crate::destination::answer_of(&outcome, codes) {
                if detector.record(peer, answer, endpoints, Instant::now()) {
                    tracing::info!(endpoint = %peer, "endpoint ejected by outlier detection");
                }
            }
        }
        if matches!(outcome, route::Attempt::ClientFault) {
            return Sent {
                response: resp,
                moved,
                client_fault: true,
            };
        }
        let Some(policy) = policy else {
            return Sent {
                response: resp,
                moved,
                client_fault: false,
            };
        };
        if !route::retryable(policy, &outcome) {
            return Sent {
                response: resp,
                moved,
                client_fault: false,
            };
        }
        // Attempts first: a retry the policy would not make takes nothing from the budget.
        if attempt > policy.attempts
            || !retry
                .as_ref()
                .is_some_and(|r| r.budget.try_withdraw(Instant::now()))
        {
            let (mut head, body) = resp.into_parts();
            head.extensions.insert(Flag::RetriesExhausted);
            return Sent {
                response: Response::from_parts(head, body),
                moved,
                client_fault: false,
            };
        }
        if policy.ignore_previous_hosts {
            if let Some(others) = upstream.others {
                tried.push(peer);
                // None left untried: the last one again.
                if let Some(next) = others(&tried) {
                    moved = Some(next);
                }
            }
        }
        if let Some(backoff) = policy.backoff {
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Starts the source side's record of a request ([`Telemetry::start`]) from its head.
fn start(
    telemetry: &Arc<Telemetry>,
    edge: crate::telemetry::Edge,
    parts: &mut http::request::Parts,
    authority: &str,
    grpc: bool,
) -> Option<Exchange> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    telemetry.start(
        edge,
        &parts.method,
        authority,
        path,
        grpc,
        &mut parts.headers,
    )
}

/// The edge of a request that got no endpoint: to the addressed service, peer unknown.
fn unknown_edge(telemetry: &Telemetry, service: &Service) -> crate::telemetry::Edge {
    telemetry.outbound_edge(&service.host, UNKNOWN, &service.namespace, UNKNOWN, true)
}

/// What a reporter writes for a peer it cannot know (no endpoint was chosen).
pub const UNKNOWN: &str = "unknown";

/// Whether a request is gRPC, by its content type (`application/grpc`, `+proto`, `+json`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The authority an app addressed: absolute-form URI first (proxy style), then `Host`.
fn request_authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Whether a connection to `requested_port` of `service` from a client in `namespace` may be
/// routed by its TLS server name (a VirtualService `tls` rule applies to the port): only then
/// is the ClientHello waited for.
pub fn routes_by_sni(service: &Service, requested_port: Option<u16>, namespace: &str) -> bool {
    service
        .port(requested_port)
        .and_then(|sp| service.routes.port(sp.port))
        .and_then(|table| table.tcp_for(namespace))
        .is_some_and(|routes| {
            routes
                .rules
                .iter()
                .any(|r| r.matches.iter().any(|m| !m.sni_hosts.is_empty()))
        })
}

/// The destination of an opaque TCP connection to `requested_port` of `service` from a
/// client in `source`, that asked for TLS server name `sni`: the port's TCP rule for it
/// (VirtualService `tls` by server name, then `tcp`; TCPRoute), a weighted pick among its
/// destinations; without one, the service as addressed.
pub fn choose_tcp<'a>(
    snapshot: &'a Snapshot,
    service: &'a Service,
    requested_port: Option<u16>,
    source: &trellis_api::routing::Source<'_>,
    sni: Option<&str>,
) -> Result<Target<'a>, (StatusCode, String)> {
    let rule = service
        .port(requested_port)
        .and_then(|sp| service.routes.port(sp.port))
        .and_then(|table| trellis_api::routing::select_tcp(table, source, sni));
    let Some(rule) = rule else {
        return endpoint_of(service, None, requested_port, None);
    };
    let picked = trellis_api::routing::pick_weighted(&rule.destinations, rand::rng().random());
    let (host, subset, port) = match picked.map(|d| &d.backend) {
        Some(trellis_api::routing::Backend::Service { host, subset, port }) => {
            (host, subset.as_deref(), port.or(requested_port))
        }
        Some(trellis_api::routing::Backend::Invalid { reason }) => {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, reason.clone()))
        }
        None => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the route has no backend to send to".to_owned(),
            ))
        }
    };
    let dest = route::destination(snapshot, host).ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("route destination {host} is not a known service"),
        )
    })?;
    tracing::debug!(rule = %rule.name, destination = %dest.host, "tcp route");
    endpoint_of(dest, subset, port, None)
}

/// An endpoint of `dest_service` (of `subset`, if named) for a request to `dest_port`. With
/// `balance`, by the destination's traffic policy ([`crate::destination`]): its balancer
/// (peak-EWMA power of two choices by default, [`crate::balance`]) over the endpoints outlier
/// detection admits. Without, at random over all of them (mirrored copies, TCP).
pub fn endpoint_of<'a>(
    dest_service: &'a Service,
    subset: Option<&str>,
    dest_port: Option<u16>,
    balance: Option<Balance<'_>>,
) -> Result<Target<'a>, (StatusCode, String)> {
    let sp = dest_service.port(dest_port).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("service {} has no port {:?}", dest_service.host, dest_port),
        )
    })?;
    let candidates = dest_service.endpoints_in(subset);
    let which = || subset.map(|s| format!(" subset {s}")).unwrap_or_default();
    if candidates.is_empty() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no healthy upstream: {}{} has no endpoints",
                dest_service.host,
                which()
            ),
        ));
    }
    let (policy, destination, index) = match balance {
        Some(b) => {
            // The rule scoped to this client, if one is (`workloadSelector`, `exportTo`).
            let config = &b.state.config;
            let policy =
                dest_service
                    .policies
                    .get_for(config.namespace(), &config.labels, sp.port, subset);
            let destination = b
                .state
                .destinations
                .get(&dest_service.host, sp.port, subset, policy);
            let addrs: Vec<std::net::SocketAddr> =
                candidates.iter().map(|e| e.proxy_addr()).collect();
            let hash = match &policy.load_balancer {
                LoadBalancer::ConsistentHash(on) => {
                    crate::destination::hash_key(on, b.headers, b.query, config.address)
                }
                _ => None,
            };
            let algorithm = crate::destination::algorithm(&policy.load_balancer);
            let unfiltered =
                b.avoid.is_empty() && destination.as_ref().is_none_or(|d| d.outlier.is_none());
            let index = if unfiltered {
                // Nothing to leave out (the common case): no more lists to build.
                b.state.balancer.pick(algorithm, &addrs, hash).unwrap_or(0)
            } else {
                let mut admitted =
                    crate::destination::admitted(destination.as_deref(), &addrs, Instant::now());
                if !b.avoid.is_empty() {
                    admitted.retain(|i| !b.avoid.contains(&addrs[*i]));
                    if admitted.is_empty() {
                        return Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            "every admitted endpoint was tried".to_owned(),
                        ));
                    }
                }
                if admitted.is_empty() {
                    return Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "no healthy upstream: every endpoint of {}{} is ejected",
                            dest_service.host,
                            which()
                        ),
                    ));
                }
                let open: Vec<std::net::SocketAddr> = admitted.iter().map(|i| addrs[*i]).collect();
                admitted[b.state.balancer.pick(algorithm, &open, hash).unwrap_or(0)]
            };
            (policy, destination, index)
        }
        None => (
            dest_service.policies.get(sp.port, subset),
            None,
            rand::rng().random_range(0..candidates.len()),
        ),
    };
    let endpoint = candidates[index];
    let port = endpoint.target_port(sp).ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "endpoint {} has no port named {:?}",
                endpoint.workload_name, sp.target
            ),
        )
    })?;
    Ok(Target {
        service: dest_service,
        endpoint,
        port,
        policy,
        destination,
        endpoints: candidates.len(),
    })
}

/// Turns the app's HTTP/1.1 request into the HTTP/2 request sent between proxies: the
/// authority moves into the URI, hop-by-hop and forged Trellis headers go, and the target
/// workload port, this workload's name and the addressed service are added.
/// The request's body, and a copy of it to send again when `copies` are wanted and it can be
/// kept: an empty body always, one of known length up to [`REPLAY_LIMIT`] after reading it
/// whole. `None` for the copy: the body streams through, once.
async fn replayable(body: Incoming, copies: bool) -> Result<(Body, Option<Bytes>), BoxError> {
    if http_body::Body::is_end_stream(&body) {
        return Ok((boxed(body), Some(Bytes::new())));
    }
    let small = http_body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n <= REPLAY_LIMIT);
    if !(copies && small) {
        return Ok((boxed(body), None));
    }
    let bytes = body.collect().await?.to_bytes();
    Ok((full(bytes.clone()), Some(bytes)))
}

/// The largest request body kept to be sent again (retries, mirrors).
pub const REPLAY_LIMIT: u64 = 64 * 1024;

fn to_upstream<B>(
    req: Request<B>,
    authority: &str,
    target: &Target<'_>,
    state: &ProxyState,
    exchange: Option<&mut Exchange>,
) -> Result<Request<Body>, String>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| format!("invalid authority or path: {e}"))?;
    strip_hop_by_hop(&mut parts.headers);
    strip_trellis_headers(&mut parts.headers);
    // An app that spoke HTTP/2 (h2c, gRPC) gets HTTP/2 to its peer app too: the server
    // proxy reads this and removes it.
    if parts.version == Version::HTTP_2 {
        parts.headers.insert(
            crate::headers::APP_PROTOCOL,
            http::HeaderValue::from_static("h2c"),
        );
    }
    parts.headers.remove(header::HOST);
    parts.headers.insert(TARGET_PORT, target.port.into());
    if state.telemetry.enabled() {
        if let Ok(v) = HeaderValue::from_str(&state.config.workload_name) {
            parts.headers.insert(SOURCE_WORKLOAD, v);
        }
        if let Ok(v) = HeaderValue::from_str(&target.service.host) {
            parts.headers.insert(DESTINATION_SERVICE, v);
        }
    }
    parts.version = Version::HTTP_2;
    Ok(Request::from_parts(
        parts,
        count_request_body(body, exchange),
    ))
}
