//! HTTP/1.1 `Upgrade` (WebSocket and the like) across the mesh.
//!
//! Between proxies every request is HTTP/2, which has no `Upgrade`. An upgrade travels the
//! way RFC 8441 carries WebSocket over HTTP/2: as an extended `CONNECT` stream whose
//! `:protocol` is the upgrade token, on the pooled mTLS connection like any request.
//!
//! * Client side ([`forward`]): an app's `GET` offering one protocol (`Connection: upgrade`,
//!   `Upgrade: websocket`) is routed like any request, then sent as `CONNECT` with
//!   `:protocol`, the app's path and end-to-end headers, and `x-trellis-target-port`. A 2xx
//!   answer means the server's app switched: the app gets `101 Switching Protocols` with the
//!   server app's headers (`Sec-WebSocket-Accept`, …) and its connection is spliced with the
//!   stream. Any other answer goes back to the app as it is, body included.
//! * Server side ([`serve_inbound`]): the same checks as any inbound request (declared port,
//!   authorization of the `GET` with its normalized path), the same headers to the app
//!   (`Host` from `:authority`, `x-forwarded-client-cert` from the TLS session), then the
//!   `GET` with `Upgrade` on a fresh HTTP/1.1 connection to the app. The app's `101` becomes `200` on the stream (its headers kept) and the two are
//!   spliced; a refusal (4xx, 5xx) is passed back with its body.
//!
//! Unlike an opaque tunnel ([`crate::tunnel`]) the server proxy sees the request, so the app
//! learns the caller's verified identity exactly as for a plain request.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderMap, CONNECTION, CONTENT_LENGTH, HOST, UPGRADE};
use http::response::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use trellis_api::snapshot::{Service, Snapshot};
use trellis_identity::SpiffeId;

use crate::authz::Peer;
use crate::body::{boxed, error_response, full, Body};
use crate::headers::{strip_hop_by_hop, strip_trellis_headers, xfcc_value, TARGET_PORT, XFCC};
use crate::pool::{Pool, PoolError};
use crate::state::ProxyState;

/// Why an upgrade could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("invalid authority or path: {0}")]
    Request(#[from] http::Error),
    #[error("invalid header value for the app: {0}")]
    Header(#[from] http::header::InvalidHeaderValue),
    #[error("missing or invalid target port")]
    TargetPort,
    #[error("port {0} is not an application port of this workload")]
    Port(u16),
    #[error("local app at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("local app at {addr}: {source}")]
    App {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("the app answered the upgrade with {0} instead of 101 Switching Protocols")]
    NotSwitched(StatusCode),
    #[error("switching protocols: {0}")]
    Switch(hyper::Error),
}

impl UpgradeError {
    /// The status the proxy answers with: the caller's mistakes are 4xx, failures on the way
    /// to the app 502.
    fn status(&self) -> StatusCode {
        match self {
            UpgradeError::Request(_) | UpgradeError::Header(_) | UpgradeError::TargetPort => {
                StatusCode::BAD_REQUEST
            }
            UpgradeError::Port(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    fn into_response(self) -> Response<Body> {
        error_response(self.status(), self)
    }
}

/// The protocol an app's request asks to switch to, when the mesh can carry it: HTTP/1.1
/// `GET` without a body, `Connection` listing `upgrade`, and one protocol in `Upgrade`
/// other than `h2c`. Anything else takes the plain request path, where the offer is dropped
/// as any HTTP/1.1 intermediary may drop it, and the server answers without switching.
///
/// * Only `GET`: extended `CONNECT` does not carry the original method (WebSocket, the one
///   upgrade in common use, is always `GET`), nor can it carry a request body.
/// * One protocol: the `101` repeats it, so with several offered the proxy would have to
///   guess which one the server chose.
/// * Not `h2c`: the mesh already speaks HTTP/2 end to end for apps that speak it, and the
///   offer's `HTTP2-Settings` header is hop-by-hop.
///
/// A request without `Upgrade` costs one header lookup here.
pub fn requested<B: http_body::Body>(req: &Request<B>) -> Option<Protocol> {
    let offer = req.headers().get(UPGRADE)?;
    if req.version() != Version::HTTP_11
        || req.method() != Method::GET
        || !req.body().is_end_stream()
    {
        return None;
    }
    let connection_upgrade = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let offer = offer.to_str().ok()?.trim();
    let carried = connection_upgrade
        && !offer.is_empty()
        && !offer.contains(',')
        && !offer.eq_ignore_ascii_case("h2c");
    carried.then(|| Protocol::from(offer))
}

// === client side ===

/// Carries an app's upgrade request (see [`requested`]) to an endpoint of `service`, routed
/// like [`crate::outbound::forward`], and answers the app with `101` and a spliced connection
/// or with whatever refused the upgrade.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    req: Request<Incoming>,
    protocol: Protocol,
    state: &ProxyState,
    pool: &Pool,
    snapshot: &Snapshot,
    service: &Service,
    port: Option<u16>,
    authority: &str,
) -> Response<Body> {
    // The port's HTTP rules choose the destination as for any request (a redirect, a direct
    // answer or a 404 is sent as it is); the rule's header changes, rewrites, faults and
    // retries are for requests, not for a connection that changes protocol.
    let (parts, body) = req.into_parts();
    let view = crate::route::view(
        &parts,
        authority,
        state.config.namespace(),
        &state.config.labels,
    );
    let (host, subset, dest_port) = match crate::route::decide(service, port, &view) {
        crate::route::Routed::Answer { response, flag, .. } => {
            return match flag {
                Some(flag) => crate::telemetry::flag_response(response, flag),
                None => response,
            };
        }
        crate::route::Routed::Forward {
            host, subset, port, ..
        } => (host, subset, port),
    };
    let Some(dest) = crate::route::destination(snapshot, host) else {
        let msg = format!("route destination {host} is not a known service");
        return error_response(StatusCode::SERVICE_UNAVAILABLE, msg);
    };
    let balance = crate::outbound::Balance {
        state,
        headers: &parts.headers,
        query: parts.uri.query(),
        avoid: &[],
    };
    let target = match crate::outbound::endpoint_of(dest, subset, dest_port, Some(balance)) {
        Ok(t) => t,
        Err((status, msg)) => return error_response(status, msg),
    };
    let mut req = Request::from_parts(parts, body);
    let peer = target.endpoint.proxy_addr();
    tracing::debug!(%authority, endpoint = %target.endpoint.workload_name, protocol = protocol.as_str(), "upgrade");
    // Taken before the request is consumed: it resolves once the app has our 101.
    let app_side = hyper::upgrade::on(&mut req);
    let switched = async {
        let connect = to_connect(req, &protocol, authority, target.port)?;
        let mut resp = pool.send(peer, &target.endpoint.identity, connect).await?;
        if !resp.status().is_success() {
            // Refused by the server's app or proxy: the app reads why, as without a mesh.
            return Ok(Err(relay(resp, Version::HTTP_11)));
        }
        let upstream = hyper::upgrade::on(&mut resp)
            .await
            .map_err(UpgradeError::Switch)?;
        let mut head = switched_head(resp, StatusCode::SWITCHING_PROTOCOLS, Version::HTTP_11);
        head.headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        head.headers
            .insert(UPGRADE, HeaderValue::from_str(protocol.as_str())?);
        Ok::<_, UpgradeError>(Ok((head, upstream)))
    };
    let (head, upstream) = match switched.await {
        Ok(Ok(switched)) => switched,
        Ok(Err(refusal)) => return refusal,
        Err(e) => {
            tracing::warn!(%authority, endpoint = %peer, error = %e, "upgrade failed");
            return e.into_response();
        }
    };
    let authority = authority.to_string();
    tokio::spawn(async move {
        match app_side.await {
            Ok(app) => splice(app, upstream, &authority).await,
            Err(e) => tracing::debug!(%authority, error = %e, "app connection not upgraded"),
        }
    });
    Response::from_parts(head, full(Bytes::new()))
}

/// The app's upgrade request as the extended `CONNECT` sent to the peer proxy: authority and
/// path in the URI, hop-by-hop and forged Trellis headers gone, the target port added.
fn to_connect(
    req: Request<Incoming>,
    protocol: &Protocol,
    authority: &str,
    port: u16,
) -> Result<Request<Body>, UpgradeError> {
    let (uri, mut headers) = end_to_end(req);
    let mut connect = Request::builder()
        .method(Method::CONNECT)
        .uri(
            Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path(&uri))
                .build()?,
        )
        .version(Version::HTTP_2)
        .body(full(Bytes::new()))?;
    headers.remove(HOST);
    // hyper refuses a CONNECT that announces a body; an upgrade request has none.
    headers.remove(CONTENT_LENGTH);
    headers.insert(TARGET_PORT, port.into());
    *connect.headers_mut() = headers;
    connect.extensions_mut().insert(protocol.clone());
    Ok(connect)
}

// === server side ===

/// Answers an extended `CONNECT` from a peer proxy (the caller, verified by TLS): asks the
/// local app to switch protocols and, if it does, splices the stream with it.
pub async fn serve_inbound(
    req: Request<Incoming>,
    protocol: Protocol,
    state: &ProxyState,
    caller: &Peer,
) -> Response<Body> {
    switch_app(req, protocol, state, caller)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(caller = %caller.principal, error = %e, "inbound upgrade failed");
            e.into_response()
        })
}

async fn switch_app(
    mut req: Request<Incoming>,
    protocol: Protocol,
    state: &ProxyState,
    caller: &Peer,
) -> Result<Response<Body>, UpgradeError> {
    let port = req
        .headers()
        .get(TARGET_PORT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .ok_or(UpgradeError::TargetPort)?;
    let ports = &state.config.ports;
    if !ports.is_empty() && !ports.values().any(|p| *p == port) {
        return Err(UpgradeError::Port(port));
    }
    let peer_side = hyper::upgrade::on(&mut req);
    let (uri, mut headers) = end_to_end(req);
    headers.remove(XFCC);
    // Authorized as the app will see it: a GET (the only upgrade the mesh carries).
    let path =
        match crate::authz::authorize_request(state, caller, port, &Method::GET, &uri, &headers) {
            Ok(allowed) => allowed.path,
            Err(refusal) => return Ok(refusal.into_response()),
        };
    let app_req = to_app(
        &uri,
        headers,
        path.as_str(),
        &protocol,
        &state.config.identity,
        &caller.principal,
    )?;

    let addr = SocketAddr::new(state.config.address, port);
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| UpgradeError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    // A connection of its own: once switched it belongs to the new protocol, so it could
    // never go back to a pool.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|source| UpgradeError::App { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(app = %addr, error = %e, "upgrade connection to the app ended");
        }
    });
    let mut resp = sender
        .send_request(app_req)
        .await
        .map_err(|source| UpgradeError::App { addr, source })?;

    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // A 2xx would tell the client proxy that the app switched.
        if status.is_success() {
            return Err(UpgradeError::NotSwitched(status));
        }
        return Ok(relay(resp, Version::HTTP_2));
    }
    let app = hyper::upgrade::on(&mut resp)
        .await
        .map_err(UpgradeError::Switch)?;
    let head = switched_head(resp, StatusCode::OK, Version::HTTP_2);
    let caller = caller.principal.clone();
    tokio::spawn(async move {
        match peer_side.await {
            Ok(peer) => splice(peer, app, &caller).await,
            Err(e) => tracing::debug!(%caller, error = %e, "peer stream not upgraded"),
        }
    });
    Ok(Response::from_parts(head, full(Bytes::new())))
}

/// The peer's extended `CONNECT` (its URI, its end-to-end headers) as the HTTP/1.1 upgrade
/// request the app expects: `GET` of `path` (normalized) in origin form, `Host` from
/// `:authority`, the caller's identity in `x-forwarded-client-cert` (any other removed),
/// `Connection` and `Upgrade` restored.
fn to_app(
    uri: &Uri,
    mut headers: HeaderMap,
    path: &str,
    protocol: &Protocol,
    own: &SpiffeId,
    caller: &str,
) -> Result<Request<http_body_util::Empty<Bytes>>, UpgradeError> {
    let mut app_req = Request::builder()
        .method(Method::GET)
        .uri(Uri::builder().path_and_query(path).build()?)
        .version(Version::HTTP_11)
        .body(http_body_util::Empty::new())?;
    headers.insert(
        XFCC,
        HeaderValue::from_str(&xfcc_value(&own.to_string(), caller))?,
    );
    if let Some(authority) = uri.authority() {
        headers.insert(HOST, HeaderValue::from_str(authority.as_str())?);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_str(protocol.as_str())?);
    *app_req.headers_mut() = headers;
    Ok(app_req)
}

// === both sides ===

/// What a hop keeps of an upgrade request: its URI, and its headers without hop-by-hop
/// ones and without `x-trellis-*` (the client's app cannot forge them; the server proxy has
/// read what it needs). The body is empty: [`requested`] admits no other.
fn end_to_end(req: Request<Incoming>) -> (Uri, HeaderMap) {
    let (parts, _empty) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    strip_trellis_headers(&mut headers);
    (parts.uri, headers)
}

fn path(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// A refusal passed back one hop, body included, as it came.
fn relay(resp: Response<Incoming>, version: Version) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = version;
    Response::from_parts(parts, boxed(body))
}

/// The head of a switched answer for the next hop: the app's headers (`Sec-WebSocket-Accept`
/// and the like) without hop-by-hop ones, and no body.
fn switched_head(resp: Response<Incoming>, status: StatusCode, version: Version) -> Parts {
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // hyper refuses a successful CONNECT answer that announces a body, and a 101 has none.
    parts.headers.remove(CONTENT_LENGTH);
    parts.status = status;
    parts.version = version;
    parts
}

/// Copies both ways between the two upgraded connections until both are closed.
async fn splice(a: hyper::upgrade::Upgraded, b: hyper::upgrade::Upgraded, who: &str) {
    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
    match crate::tunnel::splice(&mut a, &mut b).await {
        Ok((tx, rx)) => tracing::debug!(%who, tx, rx, "upgraded connection closed"),
        Err(e) => tracing::debug!(%who, error = %e, "upgraded connection ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    fn get(headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
        let mut req = Request::builder().uri("/chat");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Empty::new()).unwrap()
    }

    #[test]
    fn recognises_upgrades_the_mesh_carries() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert_eq!(requested(&get(&ws)).unwrap().as_str(), "websocket");
        assert!(requested(&get(&[("connection", "upgrade"), ("upgrade", " Foo/2 ")])).is_some());
    }

    #[test]
    fn leaves_everything_else_on_the_plain_path() {
        // No Upgrade, or Upgrade not named by Connection.
        assert!(requested(&get(&[("connection", "upgrade")])).is_none());
        assert!(requested(&get(&[("upgrade", "websocket")])).is_none());
        assert!(requested(&get(&[
            ("connection", "keep-alive"),
            ("upgrade", "websocket")
        ]))
        .is_none());
        // h2c, several protocols, an empty offer.
        for offer in ["h2c", "H2C", "websocket, foo", ""] {
            let req = get(&[("connection", "upgrade"), ("upgrade", offer)]);
            assert!(requested(&req).is_none(), "{offer:?}");
        }
        // Not GET, not HTTP/1.1, or with a body.
        let mut post = get(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        *post.method_mut() = Method::POST;
        assert!(requested(&post).is_none());
        let mut h2 = get(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        *h2.version_mut() = Version::HTTP_2;
        assert!(requested(&h2).is_none());
        let with_body = Request::builder()
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        assert!(requested(&with_body).is_none());
    }
}
