//! A gRPC echo service for end-to-end tests (`proto/echo.proto`, package
//! `trellis.testing.v1`), served by tonic: unary calls that answer or fail with the status
//! the request asks for, and bidirectional streams that answer each message as it arrives.
//! The generated client is here too.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Generated protobuf and gRPC types.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("trellis.testing.v1");
}

pub use proto::echo_client::EchoClient;
pub use proto::{EchoReply, EchoRequest};

/// The echo service; it keeps no state.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoService;

/// The `x-forwarded-client-cert` a call arrived with, empty without one.
fn client_cert<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn answer(req: EchoRequest, sequence: u64, client_cert: &str) -> Result<EchoReply, Status> {
    if req.fail_with != 0 {
        return Err(Status::new(tonic::Code::from(req.fail_with), req.message));
    }
    Ok(EchoReply {
        message: req.message,
        sequence,
        client_cert: client_cert.to_string(),
    })
}

#[tonic::async_trait]
impl proto::echo_server::Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let cert = client_cert(&req);
        answer(req.into_inner(), 0, &cert).map(Response::new)
    }

    type BidiStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let cert = client_cert(&req);
        // Mapped lazily: reply N exists only once request N has arrived, and a failure ends
        // the stream with its status in the trailers.
        let replies = req
            .into_inner()
            .enumerate()
            .map(move |(i, r)| r.and_then(|r| answer(r, i as u64 + 1, &cert)));
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Serves the echo service on `listener` until the future is dropped or serving fails.
pub async fn serve(listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(proto::echo_server::EchoServer::new(EchoService))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}
