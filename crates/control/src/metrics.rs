//! Control-plane metrics, served on the HTTP API's `/metrics` in Prometheus text format.
//!
//! Gauges that mirror state (connected proxies, revision, root expiry) are set from that state
//! at scrape time, so they can never drift from it. Labels are bounded: a root's label is its
//! fingerprint prefix, and a mesh has at most a few roots at once.

use std::sync::Mutex;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;

use crate::api::ApiState;
use crate::certs::unix;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RootLabels {
    pub root: String,
    pub status: String,
}

/// The control plane's metrics.
pub struct ControlMetrics {
    registry: Mutex<Registry>,
    pub connected_proxies: Gauge,
    pub config_revision: Gauge,
    pub certificates_issued: Counter,
    pub certificate_requests_refused: Counter,
    /// Registrations refused: a claim the certificate or the config does not back, or an
    /// address or name another identity's live proxy holds.
    pub registrations_refused: Counter,
    pub root_expiry: Family<RootLabels, Gauge>,
    pub alarms: Gauge,
    /// Time from sending a snapshot to a proxy until the proxy acknowledged it.
    pub push_duration: Histogram,
    pub reports_received: Counter,
    pub report_edges_foreign_layout: Counter,
    pub window_reports: Gauge,
    pub window_edges: Gauge,
    pub taps_open: Gauge,
    pub tap_events_dropped: Counter,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("trellis_control");
        let connected_proxies = Gauge::default();
        registry.register(
            "connected_proxies",
            "Proxies with an open snapshot stream",
            connected_proxies.clone(),
        );
        let config_revision = Gauge::default();
        registry.register(
            "config_revision",
            "Number of the config revision being served",
            config_revision.clone(),
        );
        let certificates_issued = Counter::default();
        registry.register(
            "certificates_issued",
            "Workload certificates issued",
            certificates_issued.clone(),
        );
        let certificate_requests_refused = Counter::default();
        registry.register(
            "certificate_requests_refused",
            "Certificate requests refused (bad token, identity not allowed, bad CSR)",
            certificate_requests_refused.clone(),
        );
        let registrations_refused = Counter::default();
        registry.register(
            "registrations_refused",
            "Proxy registrations refused (a workload name, label or address the certificate or \
             the config does not back, or held by another identity's connected proxy)",
            registrations_refused.clone(),
        );
        let root_expiry = Family::<RootLabels, Gauge>::default();
        registry.register(
            "ca_root_expiry_timestamp_seconds",
            "When each root of the trust bundle expires (Unix time)",
            root_expiry.clone(),
        );
        let push_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "push_duration_seconds",
            "Time from sending a snapshot to a proxy until it was acknowledged (applied), seconds",
            push_duration.clone(),
        );
        let alarms = Gauge::default();
        registry.register(
            "alarms",
            "Open alarms: roots or issuer near expiry, overdue renewals, rejected snapshots",
            alarms.clone(),
        );
        let reports_received = Counter::default();
        registry.register(
            "telemetry_reports",
            "Golden-signal reports received from proxies",
            reports_received.clone(),
        );
        let report_edges_foreign_layout = Counter::default();
        registry.register(
            "telemetry_foreign_histograms",
            "Reported edges whose latency histogram has other bucket bounds (counted without latency)",
            report_edges_foreign_layout.clone(),
        );
        let window_reports = Gauge::default();
        registry.register(
            "telemetry_window_reports",
            "Reports held for `trellis stat` (the last 10 minutes, bounded)",
            window_reports.clone(),
        );
        let window_edges = Gauge::default();
        registry.register(
            "telemetry_window_edges",
            "Edges in the reports held for `trellis stat`",
            window_edges.clone(),
        );
        let taps_open = Gauge::default();
        registry.register(
            "taps_open",
            "Open `trellis tap` sessions",
            taps_open.clone(),
        );
        let tap_events_dropped = Counter::default();
        registry.register(
            "tap_events_dropped",
            "Tap events dropped: the reader was too slow, or the tap was already closed",
            tap_events_dropped.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            connected_proxies,
            config_revision,
            certificates_issued,
            certificate_requests_refused,
            registrations_refused,
            root_expiry,
            alarms,
            push_duration,
            reports_received,
            report_edges_foreign_layout,
            window_reports,
            window_edges,
            taps_open,
            tap_events_dropped,
        }
    }
}

impl ControlMetrics {
    /// Sets the state-mirroring gauges from `state`, then encodes everything.
    pub fn encode(&self, state: &ApiState) -> String {
        self.connected_proxies
            .set(state.registry.workloads().len() as i64);
        self.config_revision
            .set(state.store.current().number as i64);
        self.root_expiry.clear();
        for r in state.trust.ca.roots() {
            self.root_expiry
                .get_or_create(&RootLabels {
                    root: r.fingerprint_sha256_hex.chars().take(16).collect(),
                    status: format!("{:?}", r.status).to_lowercase(),
                })
                .set(unix(r.not_after) as i64);
        }
        self.alarms.set(crate::api::alarms(state).len() as i64);
        let window = state.golden.occupancy();
        self.window_reports.set(window.reports as i64);
        self.window_edges.set(window.edges as i64);
        self.taps_open.set(state.taps.len() as i64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
