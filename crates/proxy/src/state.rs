//! The proxy's dynamic state: current credentials and current snapshot, each replaced
//! whole and atomically ([`ArcSwapOption`]) so that no lock is held on the request path and a
//! request in flight finishes on the version it started with.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use trellis_api::snapshot::Snapshot;
use trellis_identity::{Svid, TrustBundle};

use crate::config::ProxyConfig;

/// What the proxy proves itself with and whom it trusts.
pub struct Credentials {
    pub svid: Svid,
    pub bundle: TrustBundle,
    /// Built once per SVID or bundle change, not per connection.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Shared by every listener and task of one proxy.
pub struct ProxyState {
    pub config: ProxyConfig,
    pub creds: ArcSwapOption<Credentials>,
    pub snapshot: ArcSwapOption<Snapshot>,
}

impl ProxyState {
    pub fn new(config: ProxyConfig) -> Self {
        Self {
            config,
            creds: ArcSwapOption::empty(),
            snapshot: ArcSwapOption::empty(),
        }
    }

    /// Ready once it has both an identity and a snapshot to route with.
    pub fn is_ready(&self) -> bool {
        self.creds.load().is_some() && self.snapshot.load().is_some()
    }
}
