//! The demo app's echo mode (`--echo`) and its gRPC echo service (`--grpc-listen`): answers
//! in the `Key=Value` line format of the echo app Istio and the Gateway API conformance tests
//! run, so that what a request looked like on arrival (every header value, the path and
//! query after any rewrite, which workload of which namespace served it) can be checked by
//! the same rules those tests use.
//!
//! The lines, one per field, in this order: `ServiceVersion`, `ServicePort`, `Host`, `URL`,
//! `Method`, `Proto`, `IP` (the peer), `Namespace`, one `RequestHeader=Name:value` per header
//! value received (the `Host` header is the `Host` field), and `Hostname` (the workload's
//! name). The gRPC answer starts with `StatusCode=200`, lists the call's metadata the same
//! way with `:authority` first, and carries the message sent as `Echo`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// Generated protobuf and gRPC types of `proto/echo_test.proto`.
#[allow(clippy::all, dead_code)]
pub mod proto {
    tonic::include_proto!("proto");
}

/// Who answers: the fields that name the serving workload.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The workload's name, reported as `Hostname` (a pod's name in Kubernetes).
    pub hostname: String,
    pub namespace: String,
    pub version: String,
}

/// One `Key=Value` line.
fn field(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

/// One line per value of every header but `Host`, a name's values together and in the order
/// they came.
fn header_lines(out: &mut String, headers: &http::HeaderMap) {
    for (name, value) in headers {
        if name == http::header::HOST {
            continue;
        }
        field(
            out,
            "RequestHeader",
            format_args!("{name}:{}", String::from_utf8_lossy(value.as_bytes())),
        );
    }
}

/// The answer to an HTTP request in echo mode: 200 with the lines as a text body. The
/// request's body is read to its end (so the connection can be reused) and not reported.
pub async fn http_answer(
    req: Request<Incoming>,
    who: &Identity,
    local: SocketAddr,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    while let Some(frame) = body.frame().await {
        if let Err(e) = frame {
            let mut r = Response::new(Full::new(Bytes::from(format!("reading the body: {e}\n"))));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    }
    // HTTP/2 carries the authority in the URI, HTTP/1.1 in the Host header.
    let host = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let mut out = String::new();
    field(&mut out, "ServiceVersion", &who.version);
    field(&mut out, "ServicePort", local.port());
    field(&mut out, "Host", host);
    field(
        &mut out,
        "URL",
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
    );
    field(&mut out, "Method", &parts.method);
    field(&mut out, "Proto", format_args!("{:?}", parts.version));
    field(&mut out, "IP", peer.ip());
    field(&mut out, "Namespace", &who.namespace);
    header_lines(&mut out, &parts.headers);
    field(&mut out, "Hostname", &who.hostname);
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

// === gRPC ===

/// The `:authority` of a call, which tonic does not keep: recorded by [`remember_authority`]
/// before the call reaches the service.
#[derive(Debug, Clone)]
struct Authority(String);

fn remember_authority(
    mut req: http::Request<tonic::body::Body>,
) -> http::Request<tonic::body::Body> {
    if let Some(a) = req.uri().authority().map(|a| Authority(a.to_string())) {
        req.extensions_mut().insert(a);
    }
    req
}

/// `proto.EchoTestService`.
struct EchoTestService {
    who: Arc<Identity>,
    port: u16,
}

#[tonic::async_trait]
impl proto::echo_test_service_server::EchoTestService for EchoTestService {
    async fn echo(
        &self,
        req: tonic::Request<proto::EchoRequest>,
    ) -> Result<tonic::Response<proto::EchoResponse>, tonic::Status> {
        let authority = req
            .extensions()
            .get::<Authority>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let peer = req.remote_addr();
        let mut out = String::new();
        field(&mut out, "StatusCode", 200);
        field(&mut out, "ServiceVersion", &self.who.version);
        field(&mut out, "ServicePort", self.port);
        field(&mut out, "Host", &authority);
        field(&mut out, "Proto", "GRPC");
        if let Some(peer) = peer {
            field(&mut out, "IP", peer.ip());
        }
        field(&mut out, "Namespace", &self.who.namespace);
        field(
            &mut out,
            "RequestHeader",
            format_args!(":authority:{authority}"),
        );
        header_lines(&mut out, &req.metadata().clone().into_headers());
        field(&mut out, "Hostname", &self.who.hostname);
        field(&mut out, "Echo", &req.get_ref().message);
        Ok(tonic::Response::new(proto::EchoResponse { message: out }))
    }
}

/// Serves `proto.EchoTestService` on `listen` (plaintext HTTP/2); returns only on failure.
pub async fn serve_grpc(listen: SocketAddr, who: Arc<Identity>) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} (gRPC)"))?;
    tracing::info!(%listen, "demo app serving gRPC (proto.EchoTestService)");
    let service = EchoTestService {
        who,
        port: listen.port(),
    };
    tonic::transport::Server::builder()
        .layer(tower::util::MapRequestLayer::new(remember_authority))
        .add_service(proto::echo_test_service_server::EchoTestServiceServer::new(
            service,
        ))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .context("serving gRPC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_value_is_a_line_and_host_is_left_out() {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", http::HeaderValue::from_static("echo"));
        headers.append("x-add", http::HeaderValue::from_static("a"));
        headers.append("x-add", http::HeaderValue::from_static("b"));
        let mut out = String::new();
        header_lines(&mut out, &headers);
        assert_eq!(out, "RequestHeader=x-add:a\nRequestHeader=x-add:b\n");
    }
}
