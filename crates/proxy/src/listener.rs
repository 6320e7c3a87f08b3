//! Accepting connections, the same way for every listener of the proxy (outbound, inbound
//! mTLS, captured plaintext, admin): at most `max_connections` open at once, back-off when
//! `accept` fails for lack of resources, and every accepted connection closed once it has
//! been silent for the idle timeout.
//!
//! * **The cap** is a semaphore taken *before* `accept`: past it the listener stops
//!   accepting and new connections wait in the kernel's backlog (then the kernel drops their
//!   SYNs and clients retransmit) until one of ours closes. Closing the excess instead would
//!   cost a descriptor, two syscalls and a task per rejected connection — work an attacker
//!   controls — and turn an overload that clears in a second into errors; waiting costs the
//!   proxy nothing and serves everyone as soon as there is room. A connection's permit
//!   travels with it ([`Connection`]) and is returned when it is dropped, whatever the code
//!   path.
//! * **Back-off**: `EMFILE`, `ENFILE`, `ENOBUFS` and `ENOMEM` leave the pending connection
//!   in the backlog, so retrying at once fails again at once (a spinning loop at 100 % CPU).
//!   The loop sleeps 5 ms, doubling to 1 s, and starts over after the next success. Errors of
//!   one connection (reset or aborted before it was accepted) are retried at once.
//! * **Logging** of accept errors is throttled to one line per listener every 5 s, saying how
//!   many were not logged.
//! * **Idle timeout**: no byte read or written for that long and the connection fails with
//!   `TimedOut`, which ends whatever serves it (hyper, a splice).
//!
//! * **Backlog**: every listener is bound by [`bind`] with a listen backlog of
//!   [`LISTEN_BACKLOG`], not the 128 that `std` and tokio use. A backlog is the burst of new
//!   connections the kernel holds while the accept loop is busy; past it the kernel drops
//!   the SYN and the client waits a full second (then 3, then 7) to send it again.
//!
//! HTTP servers add their own header-read timeout ([`Limits::header_read_timeout`], see
//! [`http1`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::backoff::Backoff;

/// Limits every listener applies to its connections (flags of `trellis proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections one listener holds open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long an HTTP/1 client may take to send a request's headers, counted from the
    /// first byte, and how long a keep-alive connection may wait for its next request.
    pub header_read_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A sidecar carries one workload's traffic; each proxied connection costs two
            // descriptors, so four listeners at the cap stay within a 65,536 descriptor limit.
            max_connections: 8192,
            // Envoy's default is none and nginx's 60 s; a browser or a service client sends
            // its headers in one segment, and 10 s is long for a person typing into telnet.
            header_read_timeout: Duration::from_secs(10),
            // Envoy's default idle timeout for HTTP and TCP proxying.
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// The shortest and longest pause after an accept error that leaves the connection pending.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The listen backlog of every listener (the kernel caps it at `net.core.somaxconn`, 4096 by
/// default since Linux 5.4). tokio's and std's 128 is 32 ms of a 4,000 connections/s burst:
/// a captured listener whose accept loop was off the CPU that long on a busy host dropped
/// SYNs, and each dropped SYN cost its client a one-second retransmission timeout
/// (`bench/RESULTS.md`, new connections per request). Nginx uses 511 and Envoy somaxconn;
/// a queued connection costs the kernel a socket, nothing of ours, and the cap on accepted
/// connections ([`Limits::max_connections`]) is separate.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP listener on `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (as tokio's
/// own `bind` sets it: a restarted proxy binds again at once, beside connections of the
/// previous one still in `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// At most one log line per listener this often about accept errors.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Where connections come from: a TCP listener, or a fake in tests.
pub trait Accept {
    type Io: AsyncRead + AsyncWrite + Unpin;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// A TCP connection accepted by a [`Listener`].
pub type TcpConnection = Connection<TcpStream>;

/// A listener with the proxy's accept policy (see the module docs).
pub struct Listener<L = TcpListener> {
    inner: L,
    name: &'static str,
    limits: Limits,
    permits: Arc<Semaphore>,
    backoff: Backoff,
    log: Throttle,
}

impl<L: Accept> Listener<L> {
    /// `name` says which listener in logs (`outbound`, `inbound`, …).
    pub fn new(inner: L, name: &'static str, limits: Limits) -> Self {
        Listener {
            inner,
            name,
            limits,
            // A cap of 0 would never accept anything: at least one.
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            log: Throttle::new(LOG_EVERY),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The next connection, once there is room for it. Cancel-safe: nothing is lost when
    /// the future is dropped (a connection not yet accepted stays in the backlog).
    pub async fn accept(&mut self) -> Connection<L::Io> {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; should it be, serving without the cap beats
            // serving nothing.
            Err(_) => return self.accept_unlimited().await,
        };
        loop {
            match self.inner.accept().await {
                Ok((io, peer)) => {
                    self.backoff.reset();
                    return Connection::new(io, peer, Some(permit), self.limits.idle_timeout);
                }
                Err(e) => self.failed(e).await,
            }
        }
    }

    async fn accept_unlimited(&mut self) -> Connection<L::Io> {
        loop {
            match self.inner.accept().await {
                Ok((io, peer)) => return Connection::new(io, peer, None, self.limits.idle_timeout),
                Err(e) => self.failed(e).await,
            }
        }
    }

    /// Logs (throttled) and, unless only that one connection failed, waits.
    async fn failed(&mut self, e: io::Error) {
        if let Some(suppressed) = self.log.allow(Instant::now()) {
            tracing::warn!(listener = self.name, error = %e, suppressed, "accept failed");
        }
        if !one_connection(&e) {
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
    }
}

/// Errors about the connection being accepted, not about the listener or the process:
/// the next one may well succeed.
fn one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Says when a line may be logged: at most once per period, with the number of lines held
/// back since the last one.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log now, `n` lines were held back since the last one.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

// === impl Connection ===

/// An accepted connection: the stream, where it came from, its place under the listener's
/// cap (given back on drop), and its idle timer.
pub struct Connection<S> {
    io: S,
    peer: SocketAddr,
    _permit: Option<OwnedSemaphorePermit>,
    idle: Duration,
    /// When a byte last moved; checked only when `timer` fires, so a read or write costs a
    /// clock read, not a timer update.
    last_active: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> Connection<S> {
    fn new(io: S, peer: SocketAddr, permit: Option<OwnedSemaphorePermit>, idle: Duration) -> Self {
        let now = Instant::now();
        Connection {
            io,
            peer,
            _permit: permit,
            idle,
            last_active: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The stream itself, to peek at or ask the socket about; bytes read through it do not
    /// count as activity.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Fails with `TimedOut` once nothing has moved for the idle timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last_active + self.idle;
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no traffic for {:?}", self.idle),
                ));
            }
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last_active = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.poll_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            if *n > 0 {
                this.last_active = Instant::now();
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            if *n > 0 {
                this.last_active = Instant::now();
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// An HTTP/1 server connection builder with the listener's header-read timeout (which hyper
/// also applies to a keep-alive connection waiting for its next request).
pub fn http1(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    b
}

#[cfg(test)]
mod tests;
