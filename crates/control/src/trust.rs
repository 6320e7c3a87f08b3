//! The control plane's side of trust: the CA, the trust state it puts in snapshots, the
//! control plane's own serving certificate, and root rotation.
//!
//! Rotation never breaks a connection that works:
//!
//! 1. `rotate_begin`: the CA makes a new root, cross-signed by the old one. The bundle becomes
//!    {old, new} and new certificates chain to the new root through the cross certificate, so
//!    a peer that still trusts only the old root accepts them too. The snapshot carries both
//!    and names the new signing root; every proxy adopts the bundle and renews at once.
//! 2. Once every connected proxy has ACKed that snapshot and reported a certificate under the
//!    new root, `rotate_finish` retires the old root: the bundle becomes {new}.
//! 3. The control plane waits for every proxy to ACK the final bundle.
//!
//! A proxy that is disconnected through a whole rotation keeps a certificate nobody trusts
//! afterwards; it needs a new join token (its certificate is reported by `trellis certs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;
use trellis_api::proto;
use trellis_identity::{tls, CertificateAuthority, RotationState};

use crate::compile::TrustState;
use crate::registry::Registry;

/// Lifetime of the control plane's own serving certificate; it is reissued at every start
/// and at every rotation step.
const OWN_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("certificate authority: {0}")]
    Ca(#[from] trellis_identity::CaError),
    #[error("TLS: {0}")]
    Tls(#[from] trellis_identity::TlsError),
    #[error("timed out after {waited:?} waiting for proxies to {what}: {pending}")]
    Timeout {
        waited: Duration,
        what: &'static str,
        pending: String,
    },
}

/// What a finished rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    pub old_root: String,
    pub new_root: String,
    pub proxies: usize,
    pub duration_ms: u128,
}

/// The CA and everything that follows from its state.
pub struct Trust {
    pub ca: Arc<CertificateAuthority>,
    trust_domain_aliases: Vec<String>,
    state: watch::Sender<TrustState>,
    server_tls: Arc<ArcSwap<rustls::ServerConfig>>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
}

impl Trust {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        trust_domain_aliases: Vec<String>,
    ) -> Result<Arc<Self>, RotationError> {
        let server_tls = Arc::new(ArcSwap::new(own_server_config(&ca)?));
        let state = watch::channel(trust_state(&ca, &trust_domain_aliases)).0;
        Ok(Arc::new(Self {
            ca,
            trust_domain_aliases,
            state,
            server_tls,
            rotating: tokio::sync::Mutex::new(()),
        }))
    }

    /// Trust state for the snapshot publisher.
    pub fn subscribe(&self) -> watch::Receiver<TrustState> {
        self.state.subscribe()
    }

    /// The serving TLS config, swapped whenever the CA moves to another root.
    pub fn server_tls(&self) -> Arc<ArcSwap<rustls::ServerConfig>> {
        self.server_tls.clone()
    }

    /// Re-reads the CA after a change: new serving certificate, new trust state.
    fn refresh(&self) -> Result<(), RotationError> {
        self.server_tls.store(own_server_config(&self.ca)?);
        self.state
            .send_replace(trust_state(&self.ca, &self.trust_domain_aliases));
        Ok(())
    }

    /// Rotates the root (see the module docs), resuming a rotation left in progress.
    pub async fn rotate(
        &self,
        registry: &Registry,
        snapshots: &watch::Receiver<Arc<proto::SnapshotMessage>>,
        timeout: Duration,
    ) -> Result<RotationReport, RotationError> {
        let _one = self.rotating.lock().await;
        let started = Instant::now();
        let old_root = self.ca.signing_root_fingerprint();
        if matches!(self.ca.rotation(), RotationState::Idle) {
            self.ca.rotate_begin()?;
            tracing::info!("root rotation: new root created; distributing the combined bundle");
        } else {
            tracing::info!("root rotation: resuming a rotation in progress");
        }
        self.refresh()?;
        let old_root = match self.ca.rotation() {
            RotationState::InProgress { old, .. } => old.fingerprint_sha256_hex,
            RotationState::Idle => old_root,
        };
        let new_root = self.ca.signing_root_fingerprint();
        wait_converged(
            registry,
            snapshots,
            &self.ca.trust_bundle_pem(),
            Some(&new_root),
            timeout,
            "adopt the new bundle and renew under the new root",
        )
        .await?;
        tracing::info!("root rotation: every proxy is on the new root; retiring the old one");
        self.ca.rotate_finish()?;
        self.refresh()?;
        let proxies = wait_converged(
            registry,
            snapshots,
            &self.ca.trust_bundle_pem(),
            None,
            timeout,
            "adopt the bundle without the old root",
        )
        .await?;
        let report = RotationReport {
            old_root,
            new_root,
            proxies,
            duration_ms: started.elapsed().as_millis(),
        };
        tracing::info!(?report, "root rotation finished");
        Ok(report)
    }
}

fn trust_state(ca: &CertificateAuthority, trust_domain_aliases: &[String]) -> TrustState {
    TrustState {
        trust_domain: ca.trust_domain().to_string(),
        trust_domain_aliases: trust_domain_aliases.to_vec(),
        bundle_pem: ca.trust_bundle_pem(),
        signing_root_fingerprint: ca.signing_root_fingerprint(),
    }
}

fn own_server_config(
    ca: &CertificateAuthority,
) -> Result<Arc<rustls::ServerConfig>, RotationError> {
    let own = ca.issue_with_local_key(
        &crate::control_identity(ca.trust_domain()),
        OWN_CERT_LIFETIME,
    )?;
    Ok(tls::server_config(
        &own,
        &ca.trust_bundle(),
        tls::ClientAuth::Optional,
    )?)
}

/// Waits until the published snapshot carries `bundle_pem` and every connected proxy has
/// ACKed it (and, when `root` is given, reports a certificate under that root). Returns how
/// many proxies that was.
async fn wait_converged(
    registry: &Registry,
    snapshots: &watch::Receiver<Arc<proto::SnapshotMessage>>,
    bundle_pem: &str,
    root: Option<&str>,
    timeout: Duration,
    what: &'static str,
) -> Result<usize, RotationError> {
    let started = Instant::now();
    loop {
        let (version, published) = {
            let snap = snapshots.borrow();
            (snap.version.clone(), snap.trust_bundle_pem == bundle_pem)
        };
        let statuses = registry.statuses();
        let pending: Vec<String> = if !published {
            vec!["(snapshot not yet published)".to_string()]
        } else {
            statuses
                .iter()
                .filter(|(_, s)| {
                    s.acked_version != version || root.is_some_and(|r| s.svid_issuer_root != r)
                })
                .map(|(w, _)| w.name.clone())
                .collect()
        };
        if pending.is_empty() {
            return Ok(statuses.len());
        }
        if started.elapsed() > timeout {
            return Err(RotationError::Timeout {
                waited: timeout,
                what,
                pending: pending.join(", "),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
