//! A byte stream on its way to the local app that the proxy did not parse on arrival:
//! plaintext captured on 15006, and the payload of a `CONNECT` tunnel on 15008. If it is
//! HTTP, it is served as HTTP so that the app never sees an `x-forwarded-client-cert` the
//! client wrote; otherwise the bytes are spliced unchanged.
//!
//! Apps take XFCC as the caller's verified identity (Envoy's contract, and the one this
//! mesh's README states). A stream spliced byte for byte would carry whatever XFCC its
//! client put in it — a host outside the mesh on 15006, or any meshed workload that dials a
//! pod's address (its proxy tunnels such connections). So the proxy looks before it splices:
//!
//! * **Who speaks first.** The proxy has already connected to the app. If the app talks
//!   first (a server-speaks-first protocol: MySQL, SMTP), the stream is opaque. If the
//!   client talks first, its first line decides ([`classify`]): the HTTP/2 preface is h2c,
//!   a request line (`TOKEN SP … SP HTTP/…`) is HTTP/1. There is no timeout that turns a
//!   slow client's HTTP into opaque bytes: a client that waits before sending its request
//!   is still classified by that request. Once the client has sent a byte of what may be a
//!   request line, it has the header-read timeout to finish it.
//! * **Leniency points one way.** The rule is looser than any HTTP parser (a method of any
//!   token characters, leading blank lines skipped, any version after `HTTP/`), so whatever
//!   an app could read as a request is served as HTTP; if hyper then refuses it, the client
//!   gets a 400 and the app nothing.
//! * **HTTP**: hyper serves the client (HTTP/1.1 with upgrades, or h2c) and sends every
//!   request to the app on a connection of its own, with every incoming XFCC removed and,
//!   when the client proved an identity (a tunnel from another proxy), the proxy's own
//!   `By=<own ID>;URI=<caller ID>` set, as Istio's sidecars sanitize it. Everything else is
//!   passed as the client sent it: the app sees what it would have seen, minus the forgery.
//!   A WebSocket (or other) upgrade the app accepts is spliced from then on.
//! * **Opaque**: spliced both ways. No HTTP the app could read as such is in it (the app
//!   spoke first, or the client's first line is not a request line).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::UPGRADE;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::body::{boxed, error_response, Body};
use crate::headers::XFCC;
use crate::listener::Limits;
use crate::tunnel::{Counted, Totals};

/// What the client's first bytes say the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    Opaque,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A first line still unfinished past this (every byte so far fitting a request line) is
/// treated as HTTP: hyper refuses it (its limit on a request head is far below) and the app
/// never sees it. Taking it for opaque instead would let a client hide a forged header
/// behind a long method, which lenient parsers (Go's takes a 1 MB head) accept. No real
/// opaque protocol opens with 64 KiB of token characters and no space. It also bounds what
/// one connection can make the proxy buffer before deciding.
const MAX_FIRST_LINE: usize = 64 * 1024;

/// Where the stream goes and what the app is told about the caller.
pub struct AppTarget {
    /// The app's address.
    pub addr: SocketAddr,
    /// Socket mark for connections to the app opened later (see
    /// [`crate::capture::connect_marked`]).
    pub mark: Option<u32>,
    /// The XFCC the app gets on every request: `None` for a client without a verified
    /// identity (plaintext), whose requests reach the app with none.
    pub xfcc: Option<HeaderValue>,
    pub limits: Limits,
}

/// Why serving the stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum AppStreamError {
    #[error("reading the client's first bytes: {0}")]
    Read(#[source] io::Error),
    #[error("the client did not finish its request line within {0:?}")]
    FirstLineTimeout(Duration),
    #[error("splicing: {0}")]
    Splice(#[source] io::Error),
    #[error("serving HTTP: {0}")]
    Http(#[source] hyper::Error),
}

/// Serves `client` towards the app: as HTTP when it is HTTP (sanitizing XFCC), spliced with
/// `app` (already connected) otherwise. Returns how it was classified; `totals` counts the
/// client's bytes either way.
pub async fn serve<C>(
    client: C,
    app: TcpStream,
    target: AppTarget,
    totals: Arc<Totals>,
) -> Result<Kind, AppStreamError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut client = Counted::with_totals(client, totals);
    let (kind, first) = first_flight(&mut client, &app, target.limits.header_read_timeout).await?;
    let mut client = Rewind {
        prefix: first.freeze(),
        inner: client,
    };
    match kind {
        Kind::Opaque => {
            let mut app = app;
            tokio::io::copy_bidirectional(&mut client, &mut app)
                .await
                .map_err(AppStreamError::Splice)?;
        }
        Kind::Http1 | Kind::Http2 => serve_http(client, app, kind, target).await?,
    }
    Ok(kind)
}

/// Reads the client's first bytes until [`classify`] decides, or the app speaks first
/// (then: opaque). Nothing read is lost: the caller replays it.
async fn first_flight<C: AsyncRead + Unpin>(
    client: &mut C,
    app: &TcpStream,
    header_timeout: Duration,
) -> Result<(Kind, BytesMut), AppStreamError> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut one = [0u8; 1];
    // Started by the first byte: a client may be silent for as long as it likes, but one
    // that has begun a request line finishes it in time.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let until = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client.read_buf(&mut buf) => {
                if r.map_err(AppStreamError::Read)? == 0 {
                    // The client closed: whatever it sent (not a full request line) is
                    // passed on with the close.
                    return Ok((Kind::Opaque, buf));
                }
                if let Some(kind) = classify(&buf) {
                    return Ok((kind, buf));
                }
                if buf.len() >= MAX_FIRST_LINE {
                    return Ok((Kind::Http1, buf));
                }
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + header_timeout);
            }
            // The app talks first (or closes): not HTTP, whose servers never do.
            _ = app.peek(&mut one) => return Ok((Kind::Opaque, buf)),
            _ = until => return Err(AppStreamError::FirstLineTimeout(header_timeout)),
        }
    }
}

/// Classifies the client's first bytes; `None`: not enough yet.
///
/// Hand-written rather than `httparse`: this must accept at least everything any app's
/// parser could take for a request line (several spaces, tabs, an unusual version), where a
/// parser's job is to refuse what it does not understand.
pub fn classify(prefix: &[u8]) -> Option<Kind> {
    let n = prefix.len().min(H2_PREFACE.len());
    if n > 0 && prefix[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Kind::Http2);
    }
    // Servers ignore blank lines before a request line (RFC 9112 §2.2).
    let start = prefix.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let rest = &prefix[start..];
    let end = rest.iter().position(|b| *b == b'\n');
    let line = &rest[..end.unwrap_or(rest.len())];
    let is_space = |b: &u8| matches!(b, b' ' | b'\t');
    let method_len = line.iter().position(is_space).unwrap_or(line.len());
    if !line[..method_len].iter().all(|b| is_tchar(*b)) {
        return Some(Kind::Opaque);
    }
    // Only a whole line can be judged a request line.
    end?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let words: Vec<&[u8]> = line.split(is_space).filter(|w| !w.is_empty()).collect();
    let version = words.last().copied().unwrap_or_default();
    let request_line = method_len > 0
        && words.len() >= 3
        && version.len() >= 5
        && version[..5].eq_ignore_ascii_case(b"HTTP/");
    Some(if request_line {
        Kind::Http1
    } else {
        Kind::Opaque
    })
}

/// A token character (RFC 9110 §5.6.2), what an HTTP method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// === HTTP ===

async fn serve_http<C>(
    client: C,
    app: TcpStream,
    kind: Kind,
    target: AppTarget,
) -> Result<(), AppStreamError>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = target.limits;
    let to_app = Arc::new(ToApp {
        target,
        h2: kind == Kind::Http2,
        spare: std::sync::Mutex::new(Some(app)),
        sender: Mutex::new(None),
    });
    let svc = hyper::service::service_fn(move |req| {
        let to_app = to_app.clone();
        async move { Ok::<_, Infallible>(to_app.forward(req).await) }
    });
    let io = TokioIo::new(client);
    let served = if kind == Kind::Http2 {
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc)
            .await
    } else {
        crate::listener::http1(&limits)
            .serve_connection(io, svc)
            .with_upgrades()
            .await
    };
    served.map_err(AppStreamError::Http)
}

/// The app's side of one client connection: a connection of its own, HTTP/1.1 or h2c as
/// the client spoke, reopened if the app closed it between requests.
struct ToApp {
    target: AppTarget,
    h2: bool,
    /// The connection opened before the stream was classified, used first.
    spare: std::sync::Mutex<Option<TcpStream>>,
    sender: Mutex<Option<Sender>>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Incoming>),
    H2(hyper::client::conn::http2::SendRequest<Incoming>),
}

impl ToApp {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        // The one change: the caller's identity is the proxy's to state.
        req.headers_mut().remove(XFCC);
        if let Some(v) = &self.target.xfcc {
            req.headers_mut().insert(XFCC, v.clone());
        }
        let client_side = req
            .headers()
            .contains_key(UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let mut resp = match self.send(req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(app = %self.target.addr, error = %e, "request to the local app failed");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    format!("local app at {}: {e}", self.target.addr),
                );
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_side) = client_side {
                let app_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    if let (Ok(a), Ok(b)) = (client_side.await, app_side.await) {
                        let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                        let _ = crate::tunnel::splice(&mut a, &mut b).await;
                    }
                });
            }
        }
        resp.map(boxed)
    }

    async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, SendError> {
        // HTTP/1.1 serves one request at a time per connection anyway, so holding the lock
        // until the app's answer starts costs nothing; an h2 sender is cloned out.
        let mut slot = self.sender.lock().await;
        let usable = match slot.as_mut() {
            Some(Sender::H1(s)) => s.ready().await.is_ok(),
            Some(Sender::H2(s)) => !s.is_closed(),
            None => false,
        };
        if !usable {
            *slot = Some(self.connect().await?);
        }
        match slot.as_mut() {
            Some(Sender::H1(s)) => Ok(s.send_request(req).await?),
            Some(Sender::H2(s)) => {
                let mut s = s.clone();
                drop(slot);
                Ok(s.send_request(req).await?)
            }
            None => Err(SendError::Closed),
        }
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.take());
        let tcp = match spare {
            Some(tcp) => tcp,
            None => crate::capture::connect_marked(self.target.addr, self.target.mark)
                .await
                .map_err(SendError::Connect)?,
        };
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        let addr = self.target.addr;
        if self.h2 {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(app = %addr, error = %e, "h2c connection to the app ended");
                }
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(app = %addr, error = %e, "connection to the app ended");
                }
            });
            Ok(Sender::H1(sender))
        }
    }
}

/// Why a request did not reach the app.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Connect(#[source] io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("connection closed")]
    Closed,
}

// === streams ===

/// A stream whose first bytes, already read, are served again before the rest.
struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
