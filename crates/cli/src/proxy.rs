//! `trellis proxy`: the data plane beside one workload.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use trellis_identity::SpiffeId;

#[derive(Args)]
pub struct ProxyArgs {
    /// The control plane's gRPC API.
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub control: SocketAddr,
    /// PEM file of the roots that sign the control plane's certificate.
    #[arg(long)]
    pub ca_bundle: PathBuf,
    /// Join token for the first certificate.
    #[arg(long, env = "TRELLIS_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// The workload's name: its WorkloadEntry's, which puts it behind the Services selecting
    /// that entry. A name no entry has makes the proxy a client only.
    #[arg(long)]
    pub workload_name: String,
    /// The workload's address: its app listens there, so do the proxy's listeners.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// A workload label, KEY=VALUE (repeatable). The control plane refuses a label the
    /// workload's WorkloadEntry does not give it; Services select on the entry's labels.
    #[arg(long = "label", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// A named app port, NAME=PORT (repeatable).
    #[arg(long = "port", value_parser = key_value)]
    pub ports: Vec<(String, String)>,
    /// Outbound listener (explicit HTTP proxy for the app); default ADDRESS:15001.
    #[arg(long)]
    pub outbound: Option<SocketAddr>,
    /// mTLS listener for other proxies; default ADDRESS:15008.
    #[arg(long)]
    pub inbound: Option<SocketAddr>,
    /// Health endpoints; default ADDRESS:15020.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// How the app's traffic reaches the proxy: `explicit` (the app uses it as its HTTP
    /// proxy) or `transparent` (captured with nftables in the workload's network namespace;
    /// needs root there).
    #[arg(long, value_parser = ["explicit", "transparent"], default_value = "explicit")]
    pub mode: String,
    /// Transparent mode: install the nftables capture rules at start and remove them on exit.
    #[arg(long)]
    pub capture: bool,
    /// Transparent mode: inbound ports not captured (comma-separated), e.g. a metrics port
    /// scraped from outside the mesh.
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Transparent mode: outbound ports not captured (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Transparent mode: outbound networks not captured (comma-separated CIDRs).
    #[arg(long, value_delimiter = ',', value_parser = cidr)]
    pub exclude_outbound_cidrs: Vec<trellis_proxy::capture::Cidr>,
    /// Transparent mode: plaintext inbound listener for captured connections.
    #[arg(long, default_value = "0.0.0.0:15006")]
    pub inbound_plain: SocketAddr,
    /// Destinations outside the mesh: `allow-any` (connect directly) or `registry-only`.
    #[arg(long, value_parser = ["allow-any", "registry-only"], default_value = "allow-any")]
    pub outbound_policy: String,
    /// Local admin endpoint (config dump, log level, telemetry switch): anyone who reaches
    /// it can read the proxy's configuration and change its logging, so it stays on
    /// loopback unless given here: default ADDRESS:15000 when ADDRESS is a loopback address,
    /// 127.0.0.1:15000 otherwise (in transparent mode the namespace's own loopback).
    #[arg(long)]
    pub admin_local: Option<SocketAddr>,
    /// Keep the last good certificate and snapshot here, to serve after a restart while the
    /// control plane is unreachable.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// On SIGTERM, how long requests in flight get to finish (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse)]
    pub drain_timeout: Duration,
    /// Close a pooled connection to another proxy once it has gone this long unused.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    pub pool_idle_timeout: Duration,
    /// Connections each listener holds open at once; past it, new ones wait in the kernel's
    /// backlog until one closes.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// How long an HTTP/1 client may take to send a request's headers, and a keep-alive
    /// connection may wait for its next request.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub header_read_timeout: Duration,
    /// Close a connection that has moved no byte either way for this long.
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse)]
    pub idle_timeout: Duration,
    /// Threads serving traffic. One suits a sidecar; a proxy shared by many workloads may
    /// want one per core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Send every outbound request to this service authority (e.g. `productpage:9080`),
    /// whatever its Host: the proxy becomes the mesh's front door.
    #[arg(long)]
    pub front: Option<String>,
    /// Request and TCP metrics, edge summaries, access logs and spans: `on` or `off`. Off
    /// leaves the health metrics and passes trace headers through untouched.
    #[arg(long, value_parser = ["on", "off"], default_value = "on")]
    pub telemetry: String,
    /// JSON access log, one line per request or TCP connection: `off`, `stdout`, or a file
    /// path (appended to).
    #[arg(long, default_value = "off")]
    pub access_log: String,
    /// Fraction of requests and connections written to the access log (0 to 1).
    #[arg(long, default_value_t = 1.0, value_parser = fraction)]
    pub access_log_sampling: f64,
    /// Export spans with OTLP over gRPC to this collector, e.g. `http://127.0.0.1:4317`.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled (0 to 1). A caller's decision, in its `traceparent`
    /// or B3 headers, is always kept.
    #[arg(long, default_value_t = 0.01, value_parser = fraction)]
    pub trace_sampling: f64,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

fn cidr(s: &str) -> Result<trellis_proxy::capture::Cidr, String> {
    s.parse()
        .map_err(|e: trellis_proxy::capture::CaptureError| e.to_string())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Where the local admin endpoint listens unless `--admin-local` says: port 15000 on
/// loopback, the workload's own address when that is a loopback address (so that several
/// explicit-mode proxies on one host each have theirs), else 127.0.0.1. Transparent mode
/// runs in the workload's namespace, whose loopback is its own.
fn default_admin_local(address: IpAddr, transparent: bool) -> SocketAddr {
    if address.is_loopback() && !transparent {
        SocketAddr::new(address, 15000)
    } else {
        SocketAddr::from(([127, 0, 0, 1], 15000))
    }
}

pub async fn run(a: ProxyArgs, reload: crate::logging::Reload) -> anyhow::Result<()> {
    let ca_bundle_pem = std::fs::read_to_string(&a.ca_bundle)
        .with_context(|| format!("reading --ca-bundle {}", a.ca_bundle.display()))?;
    if a.token.is_empty() {
        bail!("a join token is needed (--token or TRELLIS_JOIN_TOKEN)");
    }
    let mut ports = BTreeMap::new();
    for (name, port) in a.ports {
        let p: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .with_context(|| format!("--port {name}={port}: not a port number"))?;
        ports.insert(name, p);
    }
    if let Some(dir) = &a.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating --state-dir {}", dir.display()))?;
    }
    let transparent = a.mode == "transparent";
    let config = trellis_proxy::ProxyConfig {
        control_addr: a.control,
        control_identity: trellis_control::control_identity(&a.trust_domain),
        ca_bundle_pem,
        token: a.token,
        identity: SpiffeId::new(&a.trust_domain, &a.namespace, &a.service_account),
        workload_name: a.workload_name,
        address: a.address,
        labels: a.labels.into_iter().collect(),
        ports,
        // Captured connections arrive at 127.0.0.1:15001 (REDIRECT from the output hook).
        outbound_addr: a.outbound.unwrap_or(if transparent {
            SocketAddr::from(([127, 0, 0, 1], 15001))
        } else {
            SocketAddr::new(a.address, 15001)
        }),
        inbound_addr: a.inbound.unwrap_or(SocketAddr::new(a.address, 15008)),
        admin_addr: a.admin.unwrap_or(SocketAddr::new(a.address, 15020)),
        front: a.front,
        control_timeout: Duration::from_secs(5),
        mode: if transparent {
            trellis_proxy::config::Mode::Transparent
        } else {
            trellis_proxy::config::Mode::Explicit
        },
        inbound_plain_addr: a.inbound_plain,
        outbound_policy: if a.outbound_policy == "registry-only" {
            trellis_proxy::config::OutboundPolicy::RegistryOnly
        } else {
            trellis_proxy::config::OutboundPolicy::AllowAny
        },
        mark: trellis_proxy::capture::PROXY_MARK,
        capture: a.capture,
        capture_exclusions: trellis_proxy::config::CaptureExclusions {
            inbound_ports: a.exclude_inbound_ports,
            outbound_ports: a.exclude_outbound_ports,
            outbound_cidrs: a.exclude_outbound_cidrs,
        },
        drain_timeout: a.drain_timeout,
        pool_idle_timeout: a.pool_idle_timeout,
        state_dir: a.state_dir,
        telemetry: trellis_proxy::config::TelemetryConfig {
            enabled: a.telemetry == "on",
            access_log: match a.access_log.as_str() {
                "off" => None,
                "stdout" => Some(trellis_proxy::telemetry::AccessLogTarget::Stdout),
                path => Some(trellis_proxy::telemetry::AccessLogTarget::File(path.into())),
            },
            access_log_sampling: a.access_log_sampling,
            otlp_endpoint: a.otlp_endpoint,
            trace_sampling: a.trace_sampling,
        },
        admin_local_addr: a
            .admin_local
            .unwrap_or_else(|| default_admin_local(a.address, transparent)),
        limits: trellis_proxy::listener::Limits {
            max_connections: usize::try_from(a.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: a.header_read_timeout,
            idle_timeout: a.idle_timeout,
        },
    };
    if a.header_read_timeout.is_zero() || a.idle_timeout.is_zero() {
        bail!("--header-read-timeout and --idle-timeout must be longer than 0");
    }
    let excludes = !(config.capture_exclusions.inbound_ports.is_empty()
        && config.capture_exclusions.outbound_ports.is_empty()
        && config.capture_exclusions.outbound_cidrs.is_empty());
    if excludes && !a.capture {
        bail!("--exclude-inbound-ports, --exclude-outbound-ports and --exclude-outbound-cidrs need --capture");
    }
    if a.capture && !transparent {
        bail!("--capture needs --mode transparent");
    }
    trellis_proxy::run(config, Some(reload), crate::signal::shutdown())
        .await
        .context("proxy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_admin_port_stays_on_loopback_unless_asked() {
        for (address, transparent, expected) in [
            ("127.0.1.3", false, "127.0.1.3:15000"),
            ("127.0.1.3", true, "127.0.0.1:15000"),
            ("198.18.100.3", true, "127.0.0.1:15000"),
            ("192.0.2.10", false, "127.0.0.1:15000"),
            ("0.0.0.0", false, "127.0.0.1:15000"),
            ("::1", false, "[::1]:15000"),
        ] {
            let got = default_admin_local(address.parse().unwrap(), transparent);
            assert_eq!(
                got.to_string(),
                expected,
                "{address} transparent={transparent}"
            );
            assert!(got.ip().is_loopback());
        }
    }
}
