//! The one body type the proxy passes between hyper's servers and clients.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Errors a body can fail with while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body: request and response bodies are never buffered whole.
pub type Body = BoxBody<Bytes, BoxError>;

/// Boxes any body, so the data path deals with one type.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A complete small body, for the proxy's own answers.
pub fn full(data: impl Into<Bytes>) -> Body {
    boxed(Full::new(data.into()))
}

/// The proxy's own error answer: plain text, so that a person reading curl's output sees
/// which hop refused the request and why.
pub fn error_response(
    status: http::StatusCode,
    msg: impl std::fmt::Display,
) -> http::Response<Body> {
    let mut resp = http::Response::new(full(format!("trellis: {msg}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `body` holding `guard` until it ends or is dropped: a response keeps its destination's
/// place ([`crate::resilience::Slot`]) while it streams.
pub fn guarded<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    boxed(Guarded {
        inner: body,
        guard: Some(guard),
    })
}

struct Guarded<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            std::task::Poll::Ready(None | Some(Err(_))) => true,
            std::task::Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            std::task::Poll::Pending => false,
        };
        if ended {
            // The place is free as soon as the last frame is out.
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
