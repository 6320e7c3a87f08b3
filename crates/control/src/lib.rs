//! Trellis control plane: `trellis control`.
//!
//! * [`store`]: the config directory, watched; changes (from the directory, `apply`,
//!   `rollback`) validated whole and applied atomically as revisions, the last good revision
//!   serving otherwise; [`revisions`]: the history behind a storage trait;
//!   [`diff`]: what a change set would change, in resources and in snapshots;
//! * [`admission`]: what a proxy's registration may claim, checked against its certificate
//!   and the config; [`registry`]: workloads whose proxies are connected;
//! * [`compile`]: config + registry → the snapshot pushed to proxies; [`policies`]: the
//!   AuthorizationPolicies and PeerAuthentications in it, checked when a change is validated;
//! * the CA (from `trellis-identity`), serving certificates to proxies that prove themselves
//!   with a join token or their current certificate;
//! * [`service`]: the gRPC API on port 15012, over TLS ([`incoming`]);
//! * [`trust`]: the CA's state in snapshots, the control plane's own certificate, root
//!   rotation; [`certs`]: what was issued to whom;
//! * [`api`]: the HTTP API on port 15014 (status, certificates, metrics, golden signals,
//!   taps, admin operations), behind a read token and an admin token;
//! * [`plaintext`]: plaintext connections the proxies report, for the strict-readiness check;
//! * [`golden`]: the golden signals the proxies report (rate, success, latency), over a
//!   rolling window, for `trellis stat` and `trellis top`;
//! * [`tap`]: open `trellis tap` sessions and the proxies that serve them.
//!
//! Snapshots are compiled by one publisher task outside any lock and handed to every stream
//! through a `watch` channel.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admission;
pub mod api;
pub mod certs;
pub mod compile;
pub mod diff;
pub mod golden;
pub mod incoming;
pub mod metrics;
pub mod plaintext;
pub mod policies;
pub mod registry;
pub mod revisions;
pub mod service;
pub mod store;
pub mod tap;
pub mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use trellis_api::proto;
use trellis_identity::{CaSource, CertificateAuthority, SpiffeId, TokenStore};

/// The namespace and service account the control plane's own certificate names, reserved:
/// no workload can be issued them ([`trellis_identity::reserved`]).
pub const CONTROL_NAMESPACE: &str = trellis_identity::reserved::SYSTEM_NAMESPACE;
pub const CONTROL_SERVICE_ACCOUNT: &str = trellis_identity::reserved::CONTROL_SERVICE_ACCOUNT;

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
    /// HTTP API (port 15014).
    pub api_listen: SocketAddr,
    /// Self-signed root in the data directory, or a user-supplied root and intermediate.
    pub ca_source: CaSource,
    /// Alarm when a root or the issuing certificate expires within this window.
    pub expiry_warning: Duration,
    pub trust_domain: String,
    /// Other trust domains the mesh answers to in authorization policies (Istio's
    /// `trustDomainAliases`).
    pub trust_domain_aliases: Vec<String>,
    pub svid_ttl: Duration,
    /// How often the config directory is checked for changes.
    pub poll_interval: Duration,
    /// Where mesh-wide policies live (Istio's `istio-system`), sent to proxies in snapshots.
    pub root_namespace: String,
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
    #[error("{0}")]
    Trust(#[from] trust::RotationError),
    #[error("API token {path}: {source}")]
    ApiToken {
        path: PathBuf,
        source: std::io::Error,
    },
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
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let ca = Arc::new(CertificateAuthority::load(
        &config.data_dir,
        &config.trust_domain,
        config.ca_source.clone(),
    )?);
    let tokens = Arc::new(TokenStore::open(&config.data_dir)?);
    let admin_token = token_file(&config.data_dir, "admin-token")?;
    let read_token = token_file(&config.data_dir, "read-token")?;
    let history =
        revisions::FileRevisionStore::open(&config.data_dir).map_err(store::StoreError::from)?;
    let config_store = store::ConfigStore::open(&config.config_dir, Box::new(history))?;
    let first = config_store.current();
    tracing::info!(
        revision = first.number,
        resources = first.config.resources.len(),
        dir = %config.config_dir.display(),
        "config revision serving"
    );
    let rev_rx = config_store.subscribe();
    let admission_revisions = rev_rx.clone();
    tokio::spawn(config_store.clone().watch_dir(config.poll_interval));

    let trust = trust::Trust::new(ca.clone(), config.trust_domain_aliases.clone())?;
    let registry = registry::Registry::new();
    let snapshots = compile::publisher(
        rev_rx,
        registry.clone(),
        trust.subscribe(),
        config.root_namespace.clone(),
    );
    let ledger = Arc::new(certs::CertLedger::default());
    let metrics = Arc::new(metrics::ControlMetrics::default());
    let plaintext = Arc::new(plaintext::PlaintextLedger::default());
    let golden = Arc::new(golden::GoldenWindow::default());
    let taps = tap::TapRegistry::new();

    let listener = accept::bind(config.listen).map_err(|source| ControlError::Bind {
        addr: config.listen,
        source,
    })?;
    let api_listener = accept::bind(config.api_listen).map_err(|source| ControlError::Bind {
        addr: config.api_listen,
        source,
    })?;
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let listener = accept::CappedListener::new(listener, "grpc", accept::MAX_CONNECTIONS);
    tokio::spawn(incoming::accept_loop(listener, trust.server_tls(), conn_tx));

    let api_state = Arc::new(api::ApiState {
        trust: trust.clone(),
        registry: registry.clone(),
        ledger: ledger.clone(),
        store: config_store,
        snapshots: snapshots.clone(),
        metrics: metrics.clone(),
        admin_token,
        read_token,
        expiry_warning: config.expiry_warning,
        root_namespace: config.root_namespace.clone(),
        plaintext: plaintext.clone(),
        golden: golden.clone(),
        taps: taps.clone(),
    });
    tokio::spawn(log_alarms(api_state.clone()));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let api_listener =
        accept::CappedListener::new(api_listener, "http-api", accept::MAX_CONNECTIONS);
    tokio::spawn(accept::serve_http(
        api_listener,
        api::router(api_state),
        accept::HEADER_READ_TIMEOUT,
        async move {
            let _ = stop_rx.changed().await;
        },
    ));

    let svc = service::ControlService {
        ca,
        tokens,
        registry,
        ledger,
        metrics,
        snapshots,
        revisions: admission_revisions,
        svid_ttl: config.svid_ttl,
        plaintext,
        golden,
        taps,
    };
    tracing::info!(
        listen = %config.listen,
        api = %config.api_listen,
        trust_domain = %config.trust_domain,
        root = %config.data_dir.join("ca").join("root.pem").display(),
        "control plane serving"
    );
    let result = tonic::transport::Server::builder()
        .add_service(proto::control_server::ControlServer::new(svc))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), shutdown)
        .await;
    let _ = stop_tx.send(true);
    result?;
    Ok(())
}

/// A token of the HTTP API in `DATA/NAME` (`admin-token`, `read-token`; see [`api`]):
/// created (mode 0600) on first start, read after.
fn token_file(data_dir: &std::path::Path, name: &str) -> Result<String, ControlError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(name);
    let err = |source| ControlError::ApiToken {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    f.write_all(token.as_bytes()).map_err(err)?;
    Ok(token)
}

/// Logs each alarm when it appears (and once an hour while it lasts), so an expiring root
/// is in the logs weeks before it matters.
async fn log_alarms(state: Arc<api::ApiState>) {
    let mut seen: std::collections::HashMap<String, std::time::Instant> = Default::default();
    loop {
        let now = std::time::Instant::now();
        let current = api::alarms(&state);
        seen.retain(|k, _| current.contains(k));
        for a in current {
            let due = seen
                .get(&a)
                .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(3600));
            if due {
                tracing::warn!(alarm = %a, "certificate alarm");
                seen.insert(a, now);
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}
