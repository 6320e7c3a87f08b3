//! Opaque TCP between proxies: an HTTP/2 `CONNECT` stream on the pooled mTLS connection, whose
//! authority is the destination workload's address and port (the HBONE framing of Istio
//! ambient). Bytes flow both ways unchanged; a half-close on either side ends that direction
//! of the stream (`END_STREAM`) and is passed on as a TCP half-close.

use std::net::SocketAddr;

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

/// A stream that counts the bytes read from it and written to it, so a tunnel's byte counts
/// survive a connection that ends in an error (a reset is how many TCP connections end).
pub struct Counted<'a, S: ?Sized> {
    inner: &'a mut S,
    read: u64,
    written: u64,
}

impl<'a, S: ?Sized> Counted<'a, S> {
    pub fn new(inner: &'a mut S) -> Self {
        Counted {
            inner,
            read: 0,
            written: 0,
        }
    }

    /// Bytes read from the stream, then bytes written to it.
    pub fn totals(&self) -> (u64, u64) {
        (self.read, self.written)
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.written += *n as u64;
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
