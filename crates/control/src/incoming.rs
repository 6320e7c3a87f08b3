//! TLS for the gRPC listener: handshakes run in their own tasks (a slow client never delays
//! another), and each finished connection carries the caller's verified identity, if it
//! presented a certificate, into the request extensions as [`PeerInfo`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::accept::CappedListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use trellis_identity::{tls, SpiffeId};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a control connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The SPIFFE ID of a verified client certificate; `None` before a proxy has one (it
    /// then may only ask for its first certificate, with a join token).
    pub identity: Option<SpiffeId>,
}

/// A TLS connection with its peer information.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
    /// The connection's place under the listener's cap, given back when it is dropped.
    _permit: OwnedSemaphorePermit,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections (under [`crate::accept`]'s cap and back-off) and hands finished
/// TLS connections to `tx`.
pub async fn accept_loop(
    mut listener: CappedListener,
    config: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    tx: mpsc::Sender<io::Result<TlsConn>>,
) {
    loop {
        let (tcp, remote, permit) = listener.accept().await;
        let _ = tcp.set_nodelay(true);
        // The current config for each connection: a rotation swaps in a new certificate.
        let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
        let conn_tx = tx.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                // A connection closed before saying anything is a port probe, not an attack.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(%remote, error = %e, "control connection closed during handshake");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "control TLS handshake rejected");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, "control TLS handshake timed out");
                    return;
                }
            };
            let certs = stream.get_ref().1.peer_certificates();
            let identity = match certs {
                Some(c) if !c.is_empty() => match tls::peer_identity(Some(c)) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::warn!(%remote, error = %e, "control client certificate unusable");
                        return;
                    }
                },
                _ => None,
            };
            let conn = TlsConn {
                inner: stream,
                info: PeerInfo { remote, identity },
                _permit: permit,
            };
            let _ = conn_tx.send(Ok(conn)).await;
        });
        if tx.is_closed() {
            return;
        }
    }
}
