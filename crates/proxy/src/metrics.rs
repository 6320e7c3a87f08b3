//! The proxy's own metrics, served on the admin port's `/metrics` in Prometheus text format.
//!
//! Only bounded labels: a result is `ok`/`error` or `ack`/`nack`, never a message; a policy
//! is one of the config's (`ns/name`) or `none`; a source address is one of the first
//! [`MAX_SOURCE_LABELS`] seen, then `other`.
//!
//! The proxy's health series are `trellis_proxy_*`; the traffic series
//! (`trellis_authz_decisions_total`, `trellis_inbound_connections_total`) are named for what
//! they count, like Istio's `istio_requests_total`, not for the process that counts.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

/// Distinct `source_address` values before the rest are counted as `other`. A workload
/// reachable from outside the mesh may see any number of clients; a scrape must stay small.
pub const MAX_SOURCE_LABELS: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// One authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `ns/name` of the deciding policy, or `none` when the default decided.
    pub policy: String,
    /// Its action (`ALLOW`, `DENY`, `AUDIT`), or `none`.
    pub action: &'static str,
    /// `allow`, `deny`; `dry_run_allow`, `dry_run_deny` for what dry-run policies would do;
    /// `audit`.
    pub decision: &'static str,
}

/// One inbound connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InboundLabels {
    /// `mutual_tls` (15008) or `none` (plaintext captured on 15006), as Istio names it.
    pub connection_security_policy: &'static str,
    /// The peer's address, or `other` past [`MAX_SOURCE_LABELS`].
    pub source_address: String,
}

/// The proxy's metrics and the registry that encodes them.
pub struct ProxyMetrics {
    registry: Registry,
    /// When the current SVID expires, seconds since the Unix epoch.
    pub svid_expiry: Gauge,
    pub svid_renewals: Family<ResultLabel, Counter>,
    pub snapshot_updates: Family<ResultLabel, Counter>,
    pub ready: Gauge,
    pub authz_decisions: Family<AuthzLabels, Counter>,
    pub inbound_connections: Family<InboundLabels, Counter>,
    /// Source addresses that have a label of their own.
    sources: Mutex<HashSet<IpAddr>>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let authz_decisions = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Inbound authorization decisions, by deciding policy, its action and the decision",
            authz_decisions.clone(),
        );
        let inbound_connections = Family::<InboundLabels, Counter>::default();
        registry.register(
            "inbound_connections",
            "Inbound connections accepted, by whether they were mutual TLS and by source \
             address",
            inbound_connections.clone(),
        );
        let proxy = registry.sub_registry_with_prefix("proxy");
        let svid_expiry = Gauge::default();
        proxy.register(
            "svid_expiry_timestamp_seconds",
            "When the proxy's current workload certificate expires (Unix time)",
            svid_expiry.clone(),
        );
        let svid_renewals = Family::<ResultLabel, Counter>::default();
        proxy.register(
            "svid_renewals",
            "Certificate requests to the control plane, by result",
            svid_renewals.clone(),
        );
        let snapshot_updates = Family::<ResultLabel, Counter>::default();
        proxy.register(
            "snapshot_updates",
            "Snapshots received, by whether they were applied (ack) or rejected (nack)",
            snapshot_updates.clone(),
        );
        let ready = Gauge::default();
        proxy.register(
            "ready",
            "1 once the proxy has a certificate and a snapshot",
            ready.clone(),
        );
        Self {
            registry,
            svid_expiry,
            svid_renewals,
            snapshot_updates,
            ready,
            authz_decisions,
            inbound_connections,
            sources: Mutex::new(HashSet::new()),
        }
    }
}

impl ProxyMetrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn count_renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.svid_renewals
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn count_snapshot(&self, applied: bool) {
        let result = if applied { "ack" } else { "nack" };
        self.snapshot_updates
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn count_authz(&self, policy: String, action: &'static str, decision: &'static str) {
        self.authz_decisions
            .get_or_create(&AuthzLabels {
                policy,
                action,
                decision,
            })
            .inc();
    }

    /// Counts an inbound connection from `source`, over mutual TLS or not.
    pub fn count_inbound(&self, mutual_tls: bool, source: IpAddr) {
        let connection_security_policy = if mutual_tls { "mutual_tls" } else { "none" };
        self.inbound_connections
            .get_or_create(&InboundLabels {
                connection_security_policy,
                source_address: self.source_label(source),
            })
            .inc();
    }

    /// `source` as a label: its own for the first [`MAX_SOURCE_LABELS`] addresses seen (for
    /// the life of the process, so a series never changes meaning), `other` after.
    fn source_label(&self, source: IpAddr) -> String {
        // Held for one set lookup; never across an await.
        let mut seen = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&source) || seen.len() < MAX_SOURCE_LABELS {
            seen.insert(source);
            source.to_string()
        } else {
            "other".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_capped() {
        let m = ProxyMetrics::default();
        for i in 0..MAX_SOURCE_LABELS + 20 {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            m.count_inbound(false, ip);
        }
        // One already labelled keeps its label after the cap is reached.
        m.count_inbound(true, IpAddr::from([10, 0, 0, 0]));
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("trellis_inbound_connections_total{"))
            .count();
        assert_eq!(series, MAX_SOURCE_LABELS + 2, "{text}");
        assert!(text.contains(
            "trellis_inbound_connections_total{connection_security_policy=\"none\",\
             source_address=\"other\"} 20"
        ));
        assert!(text.contains(
            "trellis_inbound_connections_total{connection_security_policy=\"mutual_tls\",\
             source_address=\"10.0.0.0\"} 1"
        ));
        // The proxy's own series keep their names.
        assert!(text.contains("trellis_proxy_ready "), "{text}");
    }

    #[test]
    fn decisions_are_labelled_by_policy() {
        let m = ProxyMetrics::default();
        m.count_authz("default/deny-admin".into(), "DENY", "deny");
        m.count_authz("default/deny-admin".into(), "DENY", "deny");
        assert!(m.encode().contains(
            "trellis_authz_decisions_total{policy=\"default/deny-admin\",action=\"DENY\",\
             decision=\"deny\"} 2"
        ));
    }
}
