//! The proxy's static settings, read once at start (from flags) and never changed after.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use trellis_identity::SpiffeId;

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
}

impl ProxyConfig {
    /// The namespace short service names resolve in.
    pub fn namespace(&self) -> &str {
        &self.identity.namespace
    }
}
