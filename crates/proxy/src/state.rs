//! The proxy's dynamic state: current credentials, current snapshot and the inbound policy
//! chosen from it, each replaced whole and atomically ([`ArcSwapOption`]) so that no lock is
//! held on the request path and a request in flight finishes on the version it started with.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Notify};
use trellis_api::snapshot::Snapshot;
use trellis_identity::{Svid, TrustBundle};

use crate::authz::InboundPolicy;
use crate::config::{Mode, ProxyConfig};
use crate::metrics::ProxyMetrics;
use crate::telemetry::{AccessLog, Telemetry};
use crate::trace::Tracer;

/// What the proxy proves itself with and whom it trusts.
pub struct Credentials {
    pub svid: Svid,
    pub bundle: TrustBundle,
    /// SHA-256 (hex) of the root the SVID chains up to, as the CA said.
    pub issuer_root: String,
    /// Built once per SVID or bundle change, not per connection.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Changes the log filter of the running process, e.g. `info,trellis_proxy=debug`.
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Shared by every listener and task of one proxy.
pub struct ProxyState {
    pub config: ProxyConfig,
    pub creds: ArcSwapOption<Credentials>,
    pub snapshot: ArcSwapOption<Snapshot>,
    /// What the workload enforces on inbound traffic, chosen from the snapshot when it is
    /// set; `None` until the first one (inbound traffic is refused meanwhile).
    pub inbound_policy: ArcSwapOption<InboundPolicy>,
    /// Wakes the renewal task early (the control plane moved to another root).
    pub renew_now: Notify,
    /// Bumped whenever the credentials change, so the snapshot stream can report them.
    pub creds_changed: watch::Sender<u64>,
    pub metrics: Arc<ProxyMetrics>,
    pub telemetry: Arc<Telemetry>,
    /// Retry budgets of the destinations this proxy calls.
    pub budgets: crate::route::Budgets,
    /// What the balancer knows of every endpoint this proxy sends to.
    pub balancer: crate::balance::Balancer,
    /// Limits and outlier detection of the destinations with a traffic policy.
    pub destinations: crate::destination::Destinations,
    /// Call chains the app is serving: deadlines and retry marks by trace id.
    pub chains: Arc<crate::chain::Chains>,
    /// Changes the process's log filter (the admin `/logging` endpoint).
    pub log_control: Option<LogControl>,
    /// Set on shutdown: readiness turns false while requests in flight finish.
    pub draining: std::sync::atomic::AtomicBool,
    /// Set once the capture rules are in (only asked for with `capture`).
    capturing: std::sync::atomic::AtomicBool,
    /// Plaintext inbound connections per source since the last report to the control plane
    /// (at most [`MAX_PLAINTEXT_SOURCES`] sources between two reports).
    plaintext: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
}

/// Distinct plaintext sources remembered between two reports; more are not counted (a
/// workload with that many plaintext clients is not near ready for STRICT anyway).
pub const MAX_PLAINTEXT_SOURCES: usize = 256;

impl ProxyState {
    pub fn new(config: ProxyConfig, log_control: Option<LogControl>) -> Self {
        Self::with_telemetry(config, log_control, None, Tracer::propagate_only())
    }

    /// As [`ProxyState::new`], writing access logs to `access_log` and spans to `tracer`.
    pub fn with_telemetry(
        config: ProxyConfig,
        log_control: Option<LogControl>,
        access_log: Option<AccessLog>,
        tracer: Tracer,
    ) -> Self {
        let metrics = Arc::new(ProxyMetrics::default());
        let telemetry = Arc::new(Telemetry::new(
            metrics.clone(),
            config.telemetry.enabled,
            &config.workload_name,
            config.namespace(),
            &config.identity.to_string(),
            access_log,
            tracer,
        ));
        Self {
            budgets: Default::default(),
            balancer: Default::default(),
            destinations: Default::default(),
            chains: Default::default(),
            telemetry,
            log_control,
            config,
            creds: ArcSwapOption::empty(),
            snapshot: ArcSwapOption::empty(),
            inbound_policy: ArcSwapOption::empty(),
            renew_now: Notify::new(),
            creds_changed: watch::channel(0).0,
            metrics,
            draining: std::sync::atomic::AtomicBool::new(false),
            capturing: std::sync::atomic::AtomicBool::new(false),
            plaintext: Default::default(),
        }
    }

    /// The mark for the proxy's own connections: set in transparent mode, so the capture
    /// rules let them through instead of sending them back to the proxy.
    pub fn own_mark(&self) -> Option<u32> {
        (self.config.mode == Mode::Transparent).then_some(self.config.mark)
    }

    /// Ready once it has both an identity and a snapshot to route with, and, when it
    /// captures, its capture rules in place: whoever holds the app until the proxy is ready
    /// (`trellis up --netns`) must not let it send traffic that would bypass the proxy.
    pub fn is_ready(&self) -> bool {
        self.creds.load().is_some()
            && self.snapshot.load().is_some()
            && self.capture_ready()
            && !self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True unless the proxy is to capture its workload's traffic and has not yet.
    fn capture_ready(&self) -> bool {
        !self.config.capture || self.capturing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that the capture rules are installed.
    pub fn set_capturing(&self) {
        self.capturing
            .store(true, std::sync::atomic::Ordering::Release);
        self.update_ready();
    }

    /// Installs new credentials: new connections use them at once, existing ones keep the
    /// session they have.
    pub fn set_creds(&self, creds: Credentials) {
        let expiry = creds
            .svid
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.metrics.svid_expiry.set(expiry);
        if let Some(dir) = &self.config.state_dir {
            if let Err(e) =
                crate::persist::save_creds(dir, &creds.svid, &creds.bundle, &creds.issuer_root)
            {
                tracing::warn!(error = %e, "could not save the certificate");
            }
        }
        self.creds.store(Some(Arc::new(creds)));
        self.creds_changed.send_modify(|g| *g += 1);
        self.update_ready();
    }

    /// Installs a new snapshot, and the inbound policy chosen from it first: a request that
    /// sees the new routes also sees the new policy.
    /// Counts a plaintext inbound connection from `source`, for the next report.
    pub fn note_plaintext(&self, source: std::net::IpAddr) {
        let mut seen = self.plaintext.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = seen.get_mut(&source) {
            *n += 1;
        } else if seen.len() < MAX_PLAINTEXT_SOURCES {
            seen.insert(source, 1);
        }
    }

    /// The plaintext connections counted since the previous call, per source.
    pub fn take_plaintext(&self) -> Vec<(std::net::IpAddr, u64)> {
        let mut seen = self.plaintext.lock().unwrap_or_else(|p| p.into_inner());
        seen.drain().collect()
    }

    pub fn set_snapshot(&self, snap: Snapshot) {
        let policy = InboundPolicy::select(&snap, &self.config);
        let changed = self
            .inbound_policy
            .load()
            .as_deref()
            .is_none_or(|old| *old != policy);
        if changed {
            tracing::info!(policy = %policy.describe(), "inbound policy");
            if self.config.mode == Mode::Explicit && policy.any_strict() {
                // Nothing stands between a plaintext client and the app in explicit mode.
                tracing::warn!("STRICT mutual TLS cannot be enforced in explicit mode: the app is reachable without the proxy; run the proxy in transparent mode");
            }
        }
        self.inbound_policy.store(Some(Arc::new(policy)));
        self.snapshot.store(Some(Arc::new(snap)));
        self.update_ready();
    }

    fn update_ready(&self) {
        self.metrics.ready.set(i64::from(self.is_ready()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capture: bool) -> ProxyConfig {
        ProxyConfig::for_tests(capture)
    }

    #[test]
    fn a_capturing_proxy_is_not_ready_before_its_rules_are_in() {
        let state = ProxyState::new(config(true), None);
        assert!(!state.capture_ready());
        state.set_capturing();
        assert!(state.capture_ready());
        // Without capture there is nothing to wait for.
        assert!(ProxyState::new(config(false), None).capture_ready());
    }
}
