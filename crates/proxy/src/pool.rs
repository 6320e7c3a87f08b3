//! Pooled mTLS HTTP/2 connections to other proxies.
//!
//! One connection per (endpoint proxy address, expected identity), multiplexing every request
//! to that endpoint. The identity is part of the key: if the snapshot says a different
//! workload now lives at an address, the old connection is never reused for it.
//!
//! A connection no request has used for the idle timeout is let go: dropping its handle lets
//! the streams still open on it (a long tunnel) finish, then hyper closes it. How many
//! streams a connection carries at once is the server's to say (SETTINGS_MAX_CONCURRENT_STREAMS,
//! see [`crate::inbound`]); past it, a request waits for a stream to end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use trellis_identity::{tls, SpiffeId};

use crate::body::Body;
use crate::state::ProxyState;

/// How long to wait for TCP and TLS to a peer proxy before giving up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not be sent to a peer proxy.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("proxy has no certificate yet")]
    NoCredentials,
    #[error("endpoint identity {identity:?} is not a SPIFFE ID: {reason}")]
    BadIdentity { identity: String, reason: String },
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out after {CONNECT_TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
    #[error("TLS with {addr} (expecting {expected}): {source}")]
    Tls {
        addr: SocketAddr,
        expected: String,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("HTTP/2 with {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    identity: String,
}

/// The connections of one proxy to its peers.
pub struct Pool {
    state: Arc<ProxyState>,
    // A plain mutex: it guards a map lookup and is never held across an await.
    conns: Mutex<HashMap<PoolKey, Pooled>>,
    /// One TLS client config per expected peer identity, kept across connections: its
    /// session cache is what lets a reconnect resume instead of doing a full handshake.
    /// Tagged with the credentials generation it was built from.
    tls: Mutex<HashMap<String, (u64, Arc<rustls::ClientConfig>)>>,
}

/// A pooled connection's handle, when a request last took it and how many have.
struct Pooled {
    sender: SendRequest<Body>,
    last_used: Instant,
    requests: u32,
    /// The idle timeout the last request's destination asked for (DestinationRule
    /// `http.idleTimeout`), instead of the proxy's.
    idle: Option<Duration>,
}

/// What a destination's connection-pool settings ask of the connection a request takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionLimits {
    /// Requests a connection carries before it is replaced (`maxRequestsPerConnection`); 0:
    /// no limit.
    pub per_connection: u32,
    /// How long the connection may stay unused before it is closed (`idleTimeout`).
    pub idle: Option<Duration>,
}

impl Pool {
    pub fn new(state: Arc<ProxyState>) -> Self {
        Self {
            state,
            conns: Mutex::new(HashMap::new()),
            tls: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to the proxy at `addr`, which must prove `identity`.
    pub async fn send(
        &self,
        addr: SocketAddr,
        identity: &str,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, PoolError> {
        self.send_limited(addr, identity, req, ConnectionLimits::default())
            .await
    }

    /// [`Pool::send`] under a destination's `limits`: on a connection that has carried fewer
    /// than `limits.per_connection` requests (a connection at the limit is let go — the
    /// streams still open on it finish — and the request opens a new one), which is then
    /// kept idle for `limits.idle` rather than the proxy's own timeout.
    pub async fn send_limited(
        &self,
        addr: SocketAddr,
        identity: &str,
        req: http::Request<Body>,
        limits: ConnectionLimits,
    ) -> Result<http::Response<Incoming>, PoolError> {
        let key = PoolKey {
            addr,
            identity: identity.to_string(),
        };
        let mut sender = match self.cached(&key, limits) {
            Some(s) => s,
            None => self.connect(&key, limits.idle).await?,
        };
        sender
            .ready()
            .await
            .map_err(|source| PoolError::Http { addr, source })?;
        sender
            .send_request(req)
            .await
            .map_err(|source| PoolError::Http { addr, source })
    }

    fn cached(&self, key: &PoolKey, limits: ConnectionLimits) -> Option<SendRequest<Body>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let per_connection = limits.per_connection;
        match conns.get_mut(key) {
            Some(p)
                if !p.sender.is_closed()
                    && (per_connection == 0 || p.requests < per_connection) =>
            {
                p.last_used = Instant::now();
                p.requests = p.requests.saturating_add(1);
                p.idle = limits.idle;
                Some(p.sender.clone())
            }
            Some(_) => {
                conns.remove(key);
                None
            }
            None => None,
        }
    }

    /// How many connections the pool holds.
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets go of connections that no request has used for `idle`, and of closed ones;
    /// returns how many went.
    pub fn reap(&self, idle: Duration) -> usize {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let before = conns.len();
        conns.retain(|key, p| {
            let keep = !p.sender.is_closed() && p.last_used.elapsed() < p.idle.unwrap_or(idle);
            if !keep {
                tracing::debug!(peer = %key.addr, identity = %key.identity, "idle connection released");
            }
            keep
        });
        before - conns.len()
    }

    /// Reaps idle connections every second (or a quarter of `idle`, if shorter).
    pub async fn reap_forever(self: Arc<Self>, idle: Duration) {
        // Every second at most: a destination may ask for a shorter idle timeout than ours.
        let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(1));
        loop {
            tokio::time::sleep(every).await;
            self.reap(idle);
        }
    }

    /// The client config for connections to `identity`, rebuilt only when the proxy's own
    /// credentials (certificate or trust bundle) changed.
    fn client_config(&self, identity: &str) -> Result<Arc<rustls::ClientConfig>, PoolError> {
        let generation = *self.state.creds_changed.borrow();
        if let Some((g, cfg)) = self
            .tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(identity)
        {
            if *g == generation {
                return Ok(cfg.clone());
            }
        }
        let creds = self
            .state
            .creds
            .load_full()
            .ok_or(PoolError::NoCredentials)?;
        let expected: SpiffeId = identity
            .parse()
            .map_err(|e: trellis_identity::SpiffeError| PoolError::BadIdentity {
                identity: identity.to_string(),
                reason: e.to_string(),
            })?;
        let config = tls::client_config(
            Some(&creds.svid),
            &creds.bundle,
            tls::ExpectedPeer::OneOf(vec![expected]),
        )
        .map_err(|e| PoolError::Config(e.to_string()))?;
        self.tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(identity.to_string(), (generation, config.clone()));
        Ok(config)
    }

    async fn connect(
        &self,
        key: &PoolKey,
        idle: Option<Duration>,
    ) -> Result<SendRequest<Body>, PoolError> {
        let config = self.client_config(&key.identity)?;
        let addr = key.addr;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = crate::capture::connect_marked(addr, self.state.own_mark())
                .await
                .map_err(|source| PoolError::Connect { addr, source })?;
            let _ = tcp.set_nodelay(true);
            // The name is not checked (the verifier checks the SPIFFE ID); it only has to
            // be well-formed for rustls.
            let name = ServerName::IpAddress(addr.ip().into());
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|source| PoolError::Tls {
                    addr,
                    expected: key.identity.clone(),
                    source,
                })
        })
        .await
        .map_err(|_| PoolError::Timeout { addr })??;

        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|source| PoolError::Http { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %addr, error = %e, "pooled connection ended");
            }
        });
        tracing::debug!(peer = %addr, identity = %key.identity, "opened mTLS connection");
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.clone(),
            Pooled {
                sender: sender.clone(),
                last_used: Instant::now(),
                // The request that opened it.
                requests: 1,
                idle,
            },
        );
        Ok(sender)
    }
}
