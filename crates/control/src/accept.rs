//! How the control plane's two listeners (gRPC on 15012, the HTTP API on 15014) accept
//! connections when someone floods them: at most [`MAX_CONNECTIONS`] open at once per listener
//! (a permit is taken *before* `accept`, so the rest wait in the kernel's backlog and cost the
//! control plane nothing), and when `accept` itself fails for want of descriptors or memory
//! (EMFILE, ENFILE, ENOBUFS, ENOMEM) the loop backs off instead of spinning, with one log line
//! per listener every few seconds rather than one per failure.
//!
//! The HTTP API is served by [`serve_http`] rather than `axum::serve`, which has no way to
//! bound how long a client may take to send a request's headers: here a connection that has
//! not finished its headers within [`HEADER_READ_TIMEOUT`] (the first request's, or the next
//! one's on a kept-alive connection) is closed, so half-sent requests cannot pile up to the
//! connection cap.
//!
//! The proxy has the same policy for its own listeners (`trellis_proxy::listener`); the
//! control plane cannot depend on the proxy crate, and the two differ in what a connection
//! is handed to (tonic's stream, axum's server).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections open at once on one listener. Thousands of proxies each hold one stream to
/// 15012; far more than that is a flood.
pub const MAX_CONNECTIONS: usize = 16_384;
/// The first pause after a resource error; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per listener per this long about failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// How long an API client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping API waits for requests in flight (a `tap` stream never ends by itself).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listen queue of both listeners: thousands of proxies reconnect at once after a
/// restart of the control plane, and tokio's `bind` queues only 128 (the kernel caps this at
/// `net.core.somaxconn`). A queued connection costs the kernel a socket and nothing of ours.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (as tokio's own
/// `bind` sets it: a restarted control plane binds again beside its old connections'
/// `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A listener under the accept policy.
pub struct CappedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    /// Which listener, for the log.
    name: &'static str,
    backoff: Duration,
    last_log: Option<Instant>,
    held_back: u64,
}

impl CappedListener {
    pub fn new(listener: TcpListener, name: &'static str, max_connections: usize) -> Self {
        CappedListener {
            listener,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            name,
            backoff: FIRST_BACKOFF,
            last_log: None,
            held_back: 0,
        }
    }

    /// The next connection, with the permit it holds while open. Never fails: errors of one
    /// connection are skipped, resource errors waited out.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            // Only a closed semaphore refuses, and this one is never closed.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            };
            match self.listener.accept().await {
                Ok((tcp, remote)) => {
                    self.backoff = FIRST_BACKOFF;
                    return (tcp, remote, permit);
                }
                Err(e) if one_connection(&e) => continue,
                Err(e) => {
                    self.log(&e);
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn log(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            self.held_back += 1;
            return;
        }
        tracing::warn!(
            listener = self.name,
            error = %e,
            held_back = self.held_back,
            backoff_ms = self.backoff.as_millis() as u64,
            "accept failed; backing off"
        );
        self.last_log = Some(now);
        self.held_back = 0;
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Errors that end one connection before it was handed over; the next accept is fine.
fn one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Serves `router` over HTTP/1.1 on `listener` until `stop` resolves, then lets requests in
/// flight finish for a few seconds. Each connection must send a request's headers within
/// `header_read_timeout`.
pub async fn serve_http(
    mut listener: CappedListener,
    router: axum::Router,
    header_read_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    tokio::pin!(stop);
    loop {
        let (tcp, _remote, permit) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(tcp);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            // The connection's place under the cap, given back when it ends.
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP API connection ended");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP API requests still open at shutdown were cut");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the cap, a new connection is not accepted (it waits in the backlog) until one of
    /// the open ones closes.
    #[tokio::test]
    async fn the_cap_holds_until_a_connection_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut capped = CappedListener::new(listener, "test", 2);
        let _c1 = TcpStream::connect(addr).await.expect("connect");
        let _c2 = TcpStream::connect(addr).await.expect("connect");
        let _c3 = TcpStream::connect(addr).await.expect("connect (backlog)");
        let (s1, _, p1) = capped.accept().await;
        let (_s2, _, _p2) = capped.accept().await;
        let third = tokio::time::timeout(Duration::from_millis(300), capped.accept()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted past the cap"
        );
        drop((s1, p1));
        let third = tokio::time::timeout(Duration::from_secs(5), capped.accept()).await;
        assert!(
            third.is_ok(),
            "the waiting connection was not accepted after one closed"
        );
    }

    /// A client that does not finish its headers in time is disconnected; one that does is
    /// answered.
    #[tokio::test]
    async fn half_sent_headers_are_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_http(
            CappedListener::new(listener, "test", 16),
            router,
            Duration::from_millis(300),
            async move {
                let _ = stop_rx.await;
            },
        ));

        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a half-sent request was kept open past the timeout"
        );

        let mut quick = TcpStream::connect(addr).await.expect("connect");
        quick
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        quick.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");

        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .expect("no panic");
    }

    /// The listen queue takes far more than tokio's 128 connections nobody accepted yet (a
    /// proxy whose SYN finds the queue full waits a second to try again).
    #[tokio::test]
    async fn the_listen_queue_outgrows_128() {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        // One at a time, so each is queued before the next SYN; nothing accepts.
        let filled = tokio::time::timeout(Duration::from_secs(10), async {
            while queued.len() < 400 {
                queued.push(TcpStream::connect(addr).await.expect("connect"));
            }
        })
        .await;
        assert!(filled.is_ok(), "the queue took only {}", queued.len());
    }

    /// Resource errors are told apart from one connection's errors.
    #[test]
    fn resource_errors_back_off_connection_errors_do_not() {
        assert!(one_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!one_connection(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!one_connection(&io::Error::from_raw_os_error(libc::ENFILE)));
    }

    /// A listener that keeps failing logs once per period, not once per failure.
    #[test]
    fn failures_are_logged_once_per_period() {
        let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std.set_nonblocking(true).expect("nonblocking");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut capped =
                CappedListener::new(TcpListener::from_std(std).expect("listener"), "test", 4);
            let e = io::Error::from_raw_os_error(libc::EMFILE);
            for _ in 0..1000 {
                capped.log(&e);
            }
            assert!(capped.last_log.is_some());
            assert_eq!(capped.held_back, 999);
        });
    }
}
