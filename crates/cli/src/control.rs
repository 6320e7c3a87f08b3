//! `trellis control`: the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ControlArgs {
    /// Directory of YAML resources (Service, WorkloadEntry, DestinationRule, VirtualService),
    /// watched for changes.
    #[arg(long = "config", default_value = "config")]
    pub config_dir: PathBuf,
    /// Where the CA root and join tokens are kept.
    #[arg(long, default_value = "trellis-data")]
    pub data_dir: PathBuf,
    /// gRPC API for proxies.
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub listen: SocketAddr,
    /// HTTP API: status, certificates, metrics, admin operations.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub api_listen: SocketAddr,
    /// Lifetime of a self-signed root created on first start, in days.
    #[arg(long, default_value_t = 3650)]
    pub root_lifetime_days: u64,
    /// User-supplied CA: PEM file of the root(s) to trust. Needs --ca-intermediate and
    /// --ca-intermediate-key; leaves are then issued by that intermediate.
    #[arg(long, requires_all = ["ca_intermediate", "ca_intermediate_key"])]
    pub ca_roots: Option<PathBuf>,
    /// User-supplied CA: the intermediate certificate, PEM.
    #[arg(long, requires = "ca_roots")]
    pub ca_intermediate: Option<PathBuf>,
    /// User-supplied CA: the intermediate's private key, PEM.
    #[arg(long, requires = "ca_roots")]
    pub ca_intermediate_key: Option<PathBuf>,
    /// Alarm when a root or the issuing certificate expires within this many days.
    #[arg(long, default_value_t = 30)]
    pub expiry_warning_days: u64,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Another trust domain the mesh answers to (repeatable; Istio's `trustDomainAliases`):
    /// an AuthorizationPolicy principal in the trust domain or any alias also matches the
    /// same namespace and service account in the others, so policies written before a move
    /// to a new trust domain keep working.
    #[arg(long = "trust-domain-alias", value_name = "TRUST_DOMAIN")]
    pub trust_domain_aliases: Vec<String>,
    /// Lifetime of issued workload certificates (e.g. 24h; minutes for tests).
    #[arg(long, default_value = "24h", value_parser = crate::duration::parse)]
    pub svid_ttl: Duration,
    /// How often the config directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
    /// The root namespace: AuthorizationPolicies and PeerAuthentications there without a
    /// selector apply to the whole mesh (Istio's `istio-system`).
    #[arg(long, default_value = trellis_api::authz::DEFAULT_ROOT_NAMESPACE)]
    pub root_namespace: String,
}

pub async fn run(a: ControlArgs) -> anyhow::Result<()> {
    let config = trellis_control::ControlConfig {
        config_dir: a.config_dir,
        data_dir: a.data_dir,
        listen: a.listen,
        api_listen: a.api_listen,
        ca_source: match (a.ca_roots, a.ca_intermediate, a.ca_intermediate_key) {
            (Some(roots_pem), Some(intermediate_pem), Some(intermediate_key_pem)) => {
                trellis_identity::CaSource::Files {
                    roots_pem,
                    intermediate_pem,
                    intermediate_key_pem,
                }
            }
            _ => trellis_identity::CaSource::SelfSigned {
                root_lifetime: Duration::from_secs(a.root_lifetime_days * 86_400),
            },
        },
        expiry_warning: Duration::from_secs(a.expiry_warning_days * 86_400),
        trust_domain: a.trust_domain,
        trust_domain_aliases: a.trust_domain_aliases,
        svid_ttl: a.svid_ttl,
        poll_interval: Duration::from_millis(a.poll_ms),
        root_namespace: a.root_namespace,
    };
    trellis_control::run(config, crate::signal::shutdown())
        .await
        .context("control plane")
}
