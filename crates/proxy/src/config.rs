//! The proxy's static settings, read once at start (from flags) and never changed after.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use trellis_identity::SpiffeId;

/// How the app's traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The app uses the proxy as its HTTP proxy (no root needed).
    Explicit,
    /// nftables in the workload's network namespace sends its TCP traffic to the proxy.
    Transparent,
}

/// What happens to captured traffic for destinations outside the mesh (Istio's
/// `outboundTrafficPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundPolicy {
    /// Connect directly.
    AllowAny,
    /// Refuse: only services in the registry are reachable.
    RegistryOnly,
}

/// Everything a proxy needs to know before it talks to the control plane.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where the control plane's gRPC API listens (port 15012 by default).
    pub control_addr: SocketAddr,
    /// The identity the control plane must present.
    pub control_identity: SpiffeId,
    /// Roots to trust before the first snapshot brings the mesh's bundle, PEM.
    pub ca_bundle_pem: String,
    /// Join token for the first certificate request.
    pub token: String,
    /// The identity this proxy asks for.
    pub identity: SpiffeId,
    pub workload_name: String,
    /// The workload's address: the app listens there, and so do the proxy's listeners.
    pub address: IpAddr,
    pub labels: BTreeMap<String, String>,
    /// Named application ports; inbound requests may only target these.
    pub ports: BTreeMap<String, u16>,
    /// Explicit-mode outbound listener (HTTP proxy).
    pub outbound_addr: SocketAddr,
    /// mTLS listener for other proxies (port 15008).
    pub inbound_addr: SocketAddr,
    /// Health endpoints (port 15020).
    pub admin_addr: SocketAddr,
    /// When set, every outbound request goes to this authority whatever its Host says:
    /// the proxy then acts as the mesh's front door.
    pub front: Option<String>,
    /// How long a connection attempt to the control plane may take.
    pub control_timeout: Duration,
    pub mode: Mode,
    /// Plaintext inbound listener for captured connections (port 15006, transparent mode).
    pub inbound_plain_addr: SocketAddr,
    pub outbound_policy: OutboundPolicy,
    /// Socket mark on the proxy's own outbound connections, so capture rules let them pass.
    pub mark: u32,
    /// Install (and on exit remove) the nftables capture rules in the proxy's namespace.
    pub capture: bool,
    /// Traffic the capture rules leave alone.
    pub capture_exclusions: CaptureExclusions,
    /// On shutdown, how long requests in flight get to finish.
    pub drain_timeout: Duration,
    /// How long a pooled connection to another proxy may go unused before it is closed.
    pub pool_idle_timeout: Duration,
    /// Where the last good certificate and snapshot are kept, to serve after a restart while
    /// the control plane is unreachable.
    pub state_dir: Option<std::path::PathBuf>,
    /// Local admin endpoint: config dump, log level (port 15000, loopback).
    pub admin_local_addr: SocketAddr,
    pub telemetry: TelemetryConfig,
    /// Connection cap, header-read and idle timeouts of every listener.
    pub limits: crate::listener::Limits,
}

/// What the proxy records about traffic, and where it sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// Off: no request or TCP metrics, edge summaries, access logs or spans (health metrics
    /// stay). Trace headers are still passed through untouched.
    pub enabled: bool,
    /// Where access log lines go; `None`: no access log.
    pub access_log: Option<crate::telemetry::AccessLogTarget>,
    /// Fraction of requests and connections logged, 0..=1.
    pub access_log_sampling: f64,
    /// OTLP/gRPC collector (`http://host:4317`); `None`: spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled, 0..=1; a caller's sampling decision is kept.
    pub trace_sampling: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: true,
            access_log: None,
            access_log_sampling: 1.0,
            otlp_endpoint: None,
            // Istio's default: 1 % of new traces.
            trace_sampling: 0.01,
        }
    }
}

/// What transparent capture leaves alone, as Istio's `excludeInboundPorts`,
/// `excludeOutboundPorts` and `excludeOutboundIPRanges` do: the app's traffic on these ports
/// or to these networks bypasses the proxy entirely (no mTLS, no policy, no telemetry).
#[derive(Debug, Clone, Default)]
pub struct CaptureExclusions {
    pub inbound_ports: Vec<u16>,
    pub outbound_ports: Vec<u16>,
    pub outbound_cidrs: Vec<crate::capture::Cidr>,
}

impl ProxyConfig {
    /// The namespace short service names resolve in.
    pub fn namespace(&self) -> &str {
        &self.identity.namespace
    }

    /// Whether a connection to `addr` would reach one of this proxy's own listeners (a
    /// listener on `0.0.0.0` or `::` takes every local address: loopback and the workload's).
    /// A captured connection with such an original destination must not be passed on: the
    /// proxy would connect to itself, and that connection again, without end.
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        let local = ip.is_loopback() || ip.is_unspecified() || ip == self.address;
        [
            self.outbound_addr,
            self.inbound_addr,
            self.inbound_plain_addr,
            self.admin_addr,
            self.admin_local_addr,
        ]
        .iter()
        .any(|l| l.port() == addr.port() && (l.ip() == ip || (l.ip().is_unspecified() && local)))
    }
}

#[cfg(test)]
impl ProxyConfig {
    /// A proxy for workload `web-1` (`spiffe://cluster.local/ns/default/sa/web`) on
    /// 127.0.0.1, every port 0; transparent mode with capture when `capture`.
    pub(crate) fn for_tests(capture: bool) -> ProxyConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ProxyConfig {
            control_addr: any,
            control_identity: SpiffeId::new("cluster.local", "trellis-system", "trellis-control"),
            ca_bundle_pem: String::new(),
            token: String::new(),
            identity: SpiffeId::new("cluster.local", "default", "web"),
            workload_name: "web-1".into(),
            address: any.ip(),
            labels: Default::default(),
            ports: Default::default(),
            outbound_addr: any,
            inbound_addr: any,
            admin_addr: any,
            front: None,
            control_timeout: Duration::from_secs(1),
            mode: if capture {
                Mode::Transparent
            } else {
                Mode::Explicit
            },
            inbound_plain_addr: any,
            outbound_policy: OutboundPolicy::AllowAny,
            mark: 0,
            capture,
            capture_exclusions: Default::default(),
            drain_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(60),
            state_dir: None,
            admin_local_addr: any,
            telemetry: TelemetryConfig::default(),
            limits: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_include_those_on_every_address() {
        let mut c = ProxyConfig::for_tests(true);
        c.address = "198.18.100.3".parse().unwrap();
        c.outbound_addr = "127.0.0.1:15001".parse().unwrap();
        c.inbound_addr = "198.18.100.3:15008".parse().unwrap();
        c.inbound_plain_addr = "0.0.0.0:15006".parse().unwrap();
        c.admin_addr = "198.18.100.3:15020".parse().unwrap();
        c.admin_local_addr = "127.0.0.1:15000".parse().unwrap();
        for own in [
            "198.18.100.3:15006",
            "127.0.0.1:15006",
            "127.0.0.2:15006",
            "198.18.100.3:15008",
            "198.18.100.3:15020",
            "127.0.0.1:15001",
            "127.0.0.1:15000",
        ] {
            assert!(c.is_own_listener(own.parse().unwrap()), "{own}");
        }
        for other in [
            "198.18.100.3:9080",
            "198.18.100.4:15006",
            "198.18.100.4:15008",
            "198.18.100.3:15001",
            "127.0.0.1:15008",
        ] {
            assert!(!c.is_own_listener(other.parse().unwrap()), "{other}");
        }
    }
}
