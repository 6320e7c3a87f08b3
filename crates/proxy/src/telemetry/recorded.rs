//! Bodies that count what passes through them: the response body finishes its request's
//! [`Exchange`] when it ends (or is dropped early), and a request body adds its bytes to a
//! shared counter.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{Exchange, Flag, Outcome};
use crate::body::{boxed, Body, BoxError};

/// A response body that records its exchange once, when it has been sent to the end, failed,
/// or been dropped unfinished (the client went away: `DC`).
pub struct Recorded {
    inner: Body,
    exchange: Option<Exchange>,
    status: u16,
    grpc_status: Option<u8>,
    flag: Option<Flag>,
    bytes: u64,
}

impl Recorded {
    /// Ties `resp` to `exchange`: the exchange is finished when the body ends. Without an
    /// exchange (telemetry off) the response is returned as it is.
    pub fn wrap(resp: http::Response<Body>, exchange: Option<Exchange>) -> http::Response<Body> {
        let Some(exchange) = exchange else {
            return resp;
        };
        let (parts, inner) = resp.into_parts();
        if inner.is_end_stream() {
            // Nothing to stream (a 204, the proxy's own empty answers): finished now.
            exchange.finish(Outcome {
                status: parts.status.as_u16(),
                grpc_status: grpc_status(&parts.headers),
                flag: parts.extensions.get::<Flag>().copied(),
                response_bytes: 0,
            });
            return http::Response::from_parts(parts, inner);
        }
        let body = Recorded {
            status: parts.status.as_u16(),
            // A trailers-only gRPC answer (an error before any message) has its status in
            // the headers.
            grpc_status: grpc_status(&parts.headers),
            flag: parts.extensions.get::<Flag>().copied(),
            bytes: 0,
            exchange: Some(exchange),
            inner,
        };
        http::Response::from_parts(parts, boxed(body))
    }

    fn finish(&mut self) {
        if let Some(exchange) = self.exchange.take() {
            exchange.finish(Outcome {
                status: self.status,
                grpc_status: self.grpc_status,
                flag: self.flag,
                response_bytes: self.bytes,
            });
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok())
}

impl HttpBody for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.grpc_status = grpc_status(trailers).or(this.grpc_status);
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.flag.get_or_insert(Flag::UpstreamReset);
                this.finish();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            self.flag.get_or_insert(Flag::DownstreamDisconnect);
            self.finish();
        }
    }
}

/// A request body that adds the bytes it passes to `count`.
struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body` boxed, counting into the exchange's request byte counter when there is an exchange.
pub fn count_request_body<B>(body: B, exchange: Option<&mut Exchange>) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    match exchange {
        Some(ex) => {
            let count = Arc::new(AtomicU64::new(0));
            ex.request_bytes = Some(count.clone());
            boxed(Counted { inner: body, count })
        }
        None => boxed(body),
    }
}
