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
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Lifetime of issued workload certificates, in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    pub svid_ttl_secs: u64,
    /// How often the config directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
}

pub async fn run(a: ControlArgs) -> anyhow::Result<()> {
    let config = trellis_control::ControlConfig {
        config_dir: a.config_dir,
        data_dir: a.data_dir,
        listen: a.listen,
        trust_domain: a.trust_domain,
        svid_ttl: Duration::from_secs(a.svid_ttl_secs),
        poll_interval: Duration::from_millis(a.poll_ms),
    };
    trellis_control::run(config, crate::signal::shutdown())
        .await
        .context("control plane")
}
