//! The proxy's own metrics, served on the admin port's `/metrics` in Prometheus text format.
//!
//! Only bounded labels: a result is `ok`/`error` or `ack`/`nack`, never a message.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// The proxy's metrics and the registry that encodes them.
pub struct ProxyMetrics {
    registry: Registry,
    /// When the current SVID expires, seconds since the Unix epoch.
    pub svid_expiry: Gauge,
    pub svid_renewals: Family<ResultLabel, Counter>,
    pub snapshot_updates: Family<ResultLabel, Counter>,
    pub ready: Gauge,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("trellis_proxy");
        let svid_expiry = Gauge::default();
        registry.register(
            "svid_expiry_timestamp_seconds",
            "When the proxy's current workload certificate expires (Unix time)",
            svid_expiry.clone(),
        );
        let svid_renewals = Family::<ResultLabel, Counter>::default();
        registry.register(
            "svid_renewals",
            "Certificate requests to the control plane, by result",
            svid_renewals.clone(),
        );
        let snapshot_updates = Family::<ResultLabel, Counter>::default();
        registry.register(
            "snapshot_updates",
            "Snapshots received, by whether they were applied (ack) or rejected (nack)",
            snapshot_updates.clone(),
        );
        let ready = Gauge::default();
        registry.register(
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
}
