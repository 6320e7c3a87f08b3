//! Trellis data plane: the `trellis proxy` that runs beside each workload.
//!
//! A proxy gets its identity from the control plane (it makes its own key and sends a CSR),
//! receives versioned snapshots over the control stream, and carries the workload's traffic:
//!
//! * [`outbound`]: the app's requests (explicit HTTP proxy mode), routed by authority,
//!   balanced across the chosen destination's endpoints and sent over the [`pool`] of mTLS
//!   HTTP/2 connections to the destination's proxy;
//! * [`inbound`]: the mTLS listener other proxies connect to; it learns the caller's identity
//!   from the TLS session and forwards to the local app over HTTP/1.1;
//! * [`control_client`]: certificate requests and the snapshot stream, with back-off;
//! * [`admin`]: health endpoints and metrics.
//!
//! Shared state lives in [`ProxyState`]: the current snapshot and credentials, each swapped
//! atomically so requests in flight keep the version they started with.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod body;
pub mod config;
pub mod control_client;
pub mod headers;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod pool;
pub mod state;

use std::sync::Arc;

pub use config::ProxyConfig;
pub use state::ProxyState;

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] control_client::ControlError),
}

/// Runs the proxy until `shutdown` resolves.
///
/// Start-up order matters: the SVID comes first (without it the inbound listener cannot
/// serve and no outbound connection can be made), then the listeners, then the snapshot
/// stream. The outbound listener answers 503 until the first snapshot arrives, and the
/// readiness endpoint says so.
pub async fn run(
    mut config: ProxyConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ProxyError> {
    // Bind everything first: a port given as 0 gets its real number before the workload is
    // registered, and peers' connections queue in the backlog until the certificate is in.
    let admin = bind(&mut config.admin_addr).await?;
    let outbound = bind(&mut config.outbound_addr).await?;
    let inbound = bind(&mut config.inbound_addr).await?;
    let state = Arc::new(ProxyState::new(config));
    let client = control_client::ControlClient::new(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(admin::serve(admin, state.clone(), stop_rx.clone()));

    client.bootstrap().await?;

    let pool = Arc::new(pool::Pool::new(state.clone()));
    tokio::spawn(outbound::serve(
        outbound,
        state.clone(),
        pool,
        stop_rx.clone(),
    ));
    tokio::spawn(inbound::serve(inbound, state.clone(), stop_rx.clone()));
    tokio::spawn(client.clone().subscribe_forever(stop_rx.clone()));
    tokio::spawn(client.renew_forever(stop_rx));
    tracing::info!(
        identity = %state.config.identity,
        outbound = %state.config.outbound_addr,
        inbound = %state.config.inbound_addr,
        admin = %state.config.admin_addr,
        "proxy started"
    );

    shutdown.await;
    tracing::info!("proxy stopping");
    let _ = stop_tx.send(true);
    Ok(())
}

/// Binds `addr` and replaces it with the bound address (the real port when it was 0).
async fn bind(addr: &mut std::net::SocketAddr) -> Result<tokio::net::TcpListener, ProxyError> {
    let l = tokio::net::TcpListener::bind(*addr)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: *addr,
            source,
        })?;
    *addr = l.local_addr().map_err(|source| ProxyError::Bind {
        addr: *addr,
        source,
    })?;
    Ok(l)
}
