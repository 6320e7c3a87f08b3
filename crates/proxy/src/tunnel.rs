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
