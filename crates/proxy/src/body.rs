//! The one body type the proxy passes between hyper's servers and clients, and the wrappers
//! the data path puts around it: [`guarded`] (holds a place while a response streams) and
//! [`watched`] (tells whose fault a failed attempt was).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

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

// === request body progress ===

/// How far a request body has got on its way upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyState {
    /// Not asked for yet, or a frame is on its way: the upstream's flow control holds it.
    Sending,
    /// Asked for, and waiting for the client's next bytes.
    WaitingOnClient,
    /// Sent to the end (or empty).
    Ended,
    /// The client's body failed: malformed framing (a bad chunk size), or the client went
    /// away in the middle of it.
    Failed,
}

impl BodyState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BodyState::WaitingOnClient,
            2 => BodyState::Ended,
            3 => BodyState::Failed,
            _ => BodyState::Sending,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            BodyState::Sending => 0,
            BodyState::WaitingOnClient => 1,
            BodyState::Ended => 2,
            BodyState::Failed => 3,
        }
    }
}

/// A request body's [`BodyState`], read by the attempt that sent it. The HTTP/2 client polls
/// the body in a task of its own and, when the body fails, only resets the stream: the
/// attempt then sees the same error as if the upstream had reset it. This is how it tells
/// the two apart.
/// An empty body (most requests) is not watched at all: it is [`BodyState::Ended`] from the
/// start and cannot fail, so it costs the request path nothing.
#[derive(Clone, Debug)]
pub struct BodyProgress(Option<Arc<AtomicU8>>);

impl BodyProgress {
    pub fn state(&self) -> BodyState {
        match &self.0 {
            Some(state) => BodyState::from_u8(state.load(Ordering::Acquire)),
            None => BodyState::Ended,
        }
    }

    fn set(&self, state: BodyState) {
        if let Some(cell) = &self.0 {
            cell.store(state.as_u8(), Ordering::Release);
        }
    }
}

/// `body`, reporting its progress to the [`BodyProgress`] returned with it.
pub fn watched(body: Body) -> (Body, BodyProgress) {
    if http_body::Body::is_end_stream(&body) {
        return (body, BodyProgress(None));
    }
    let progress = BodyProgress(Some(Arc::new(AtomicU8::new(BodyState::Sending.as_u8()))));
    let body = boxed(Watched {
        inner: body,
        progress: progress.clone(),
    });
    (body, progress)
}

struct Watched {
    inner: Body,
    progress: BodyProgress,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Pending => BodyState::WaitingOnClient,
            Poll::Ready(None) => BodyState::Ended,
            Poll::Ready(Some(Err(_))) => BodyState::Failed,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => BodyState::Ended,
            Poll::Ready(Some(Ok(_))) => BodyState::Sending,
        };
        this.progress.set(state);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A body of the given frames, as a client's streamed body would arrive.
    fn streamed(frames: Vec<Result<&'static str, &'static str>>) -> Body {
        let frames = frames.into_iter().map(|f| {
            f.map(|d| http_body::Frame::data(Bytes::from_static(d.as_bytes())))
                .map_err(BoxError::from)
        });
        boxed(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_failing_body_is_seen_as_failed() {
        let (mut body, progress) = watched(streamed(vec![Ok("ab"), Err("invalid chunk size")]));
        assert_eq!(progress.state(), BodyState::Sending);
        assert!(body.frame().await.is_some_and(|f| f.is_ok()));
        assert_eq!(progress.state(), BodyState::Sending);
        assert!(body.frame().await.is_some_and(|f| f.is_err()));
        assert_eq!(progress.state(), BodyState::Failed);
    }

    #[tokio::test]
    async fn a_whole_body_ends() {
        let (body, progress) = watched(streamed(vec![Ok("a"), Ok("b")]));
        let bytes = body.collect().await.map(|b| b.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"ab"[..]));
        assert_eq!(progress.state(), BodyState::Ended);
        let (_, progress) = watched(full(Bytes::new()));
        assert_eq!(
            progress.state(),
            BodyState::Ended,
            "an empty body is never polled"
        );
    }

    #[tokio::test]
    async fn a_body_the_client_has_not_sent_yet_waits_on_it() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        let (mut body, progress) = watched(boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )));
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(http_body::Body::poll_frame(std::pin::Pin::new(&mut body), &mut cx).is_pending());
        assert_eq!(progress.state(), BodyState::WaitingOnClient);
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(progress.state(), BodyState::Ended);
    }
}
