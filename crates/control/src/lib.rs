//! Trellis control plane: `trellis control`.
//!
//! * [`store`]: the config directory, watched; changes validated whole and applied
//!   atomically, the last good revision serving otherwise;
//! * [`registry`]: workloads whose proxies are connected;
//! * [`compile`]: config + registry → the snapshot pushed to proxies;
//! * the CA (from `trellis-identity`), serving certificates to proxies that prove themselves
//!   with a join token or their current certificate;
//! * [`service`]: the gRPC API on port 15012, over TLS ([`incoming`]).
//!
//! Snapshots are compiled by one publisher task outside any lock and handed to every stream
//! through a `watch` channel.
#![forbid(unsafe_code)]

pub mod compile;
pub mod incoming;
pub mod registry;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use trellis_api::proto;
use trellis_identity::{tls, CertificateAuthority, SpiffeId, TokenStore};

/// The namespace and service account the control plane's own certificate names.
pub const CONTROL_NAMESPACE: &str = "trellis-system";
pub const CONTROL_SERVICE_ACCOUNT: &str = "trellis-control";

/// The control plane's identity in `trust_domain`; proxies check it on every connection.
pub fn control_identity(trust_domain: &str) -> SpiffeId {
    SpiffeId::new(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
}

/// Static settings of `trellis control`.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub config_dir: PathBuf,
    /// CA root, join tokens.
    pub data_dir: PathBuf,
    /// gRPC API (port 15012).
    pub listen: SocketAddr,
    pub trust_domain: String,
    pub svid_ttl: Duration,
    /// How often the config directory is checked for changes.
    pub poll_interval: Duration,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("certificate authority: {0}")]
    Ca(#[from] trellis_identity::CaError),
    #[error("join tokens: {0}")]
    Tokens(#[from] trellis_identity::TokenError),
    #[error("TLS: {0}")]
    Tls(#[from] trellis_identity::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the control plane until `shutdown` resolves.
pub async fn run(
    config: ControlConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ControlError> {
    let ca = Arc::new(CertificateAuthority::load_or_create(
        &config.data_dir,
        &config.trust_domain,
    )?);
    let tokens = Arc::new(TokenStore::open(&config.data_dir)?);
    let first = store::initial(&config.config_dir)?;
    tracing::info!(
        resources = first.config.resources.len(),
        dir = %config.config_dir.display(),
        "config revision 1 applied"
    );
    let (rev_tx, rev_rx) = watch::channel(Arc::new(first));
    tokio::spawn(store::watch_dir(
        config.config_dir.clone(),
        config.poll_interval,
        rev_tx,
    ));

    let registry = registry::Registry::new();
    let snapshots = compile::publisher(
        rev_rx,
        registry.clone(),
        config.trust_domain.clone(),
        ca.trust_bundle_pem(),
    );

    // The control plane's own serving certificate: its key never leaves this process.
    // Reissued at every start, so a year is plenty.
    let own = ca.issue_with_local_key(
        &control_identity(&config.trust_domain),
        Duration::from_secs(365 * 24 * 3600),
    )?;
    let server_tls = tls::server_config(&own, &ca.trust_bundle(), tls::ClientAuth::Optional)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ControlError::Bind {
            addr: config.listen,
            source,
        })?;
    let (conn_tx, conn_rx) = mpsc::channel(64);
    tokio::spawn(incoming::accept_loop(listener, server_tls, conn_tx));

    let svc = service::ControlService {
        ca: ca.clone(),
        tokens,
        registry,
        snapshots,
        svid_ttl: config.svid_ttl,
    };
    tracing::info!(
        listen = %config.listen,
        trust_domain = %config.trust_domain,
        root = %config.data_dir.join("ca").join("root.pem").display(),
        "control plane serving"
    );
    tonic::transport::Server::builder()
        .add_service(proto::control_server::ControlServer::new(svc))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), shutdown)
        .await?;
    Ok(())
}
