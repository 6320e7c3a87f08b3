//! Opaque TCP between proxies: an HTTP/2 `CONNECT` stream on the pooled mTLS connection, whose
//! authority is the destination workload's address and port (the HBONE framing of Istio
//! ambient). Bytes flow both ways unchanged; a half-close on either side ends that direction
//! of the stream (`END_STREAM`) and is passed on as a TCP half-close.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{full, Body};
use crate::pool::{Pool, PoolError};

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("the peer proxy refused the tunnel to {target}: {status}")]
    Refused {
        target: SocketAddr,
        status: StatusCode,
    },
    #[error("tunnel to {target}: {source}")]
    Upgrade {
        target: SocketAddr,
        source: hyper::Error,
    },
    #[error("invalid tunnel target {0}")]
    Target(SocketAddr),
}

/// A byte stream to `target` through the proxy at `peer` (which must prove `identity`).
pub async fn open(
    pool: &Pool,
    peer: SocketAddr,
    identity: &str,
    target: SocketAddr,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, TunnelError> {
    let req: Request<Body> = Request::builder()
        .method(Method::CONNECT)
        .uri(target.to_string())
        .version(Version::HTTP_2)
        .body(full(bytes::Bytes::new()))
        .map_err(|_| TunnelError::Target(target))?;
    let resp = pool.send(peer, identity, req).await?;
    if resp.status() != StatusCode::OK {
        return Err(TunnelError::Refused {
            target,
            status: resp.status(),
        });
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|source| TunnelError::Upgrade { target, source })?;
    Ok(TokioIo::new(upgraded))
}

/// Copies both ways until both directions are closed, passing half-closes on. Returns the
/// bytes sent from `a` to `b` and from `b` to `a`.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(a, b).await
}

/// Bytes read from a [`Counted`] stream and written to it. Shared, so they can still be read
/// once the stream itself is owned by someone else (hyper, when an opaque-looking stream
/// turns out to be HTTP).
#[derive(Debug, Default)]
pub struct Totals {
    read: AtomicU64,
    written: AtomicU64,
}

impl Totals {
    /// Bytes read from the stream, then bytes written to it.
    pub fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

/// A stream that counts the bytes read from it and written to it, so a tunnel's byte counts
/// survive a connection that ends in an error (a reset is how many TCP connections end).
/// `S` may be a `&mut` to a stream the caller keeps.
pub struct Counted<S> {
    inner: S,
    totals: Arc<Totals>,
}

impl<S> Counted<S> {
    pub fn new(inner: S) -> Self {
        Self::with_totals(inner, Arc::default())
    }

    /// Counting into `totals`, which the caller keeps.
    pub fn with_totals(inner: S, totals: Arc<Totals>) -> Self {
        Counted { inner, totals }
    }

    /// Bytes read from the stream, then bytes written to it.
    pub fn totals(&self) -> (u64, u64) {
        self.totals.get()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.totals.read.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.totals.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
