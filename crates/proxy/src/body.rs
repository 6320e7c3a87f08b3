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
