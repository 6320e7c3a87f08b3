//! The proxy's own metrics, served on the admin port's `/metrics` in Prometheus text format.
//!
//! Only bounded labels: a result is `ok`/`error` or `ack`/`nack`, never a message; a policy
//! is one of the config's (`ns/name`) or `none`; a source address is one of the first
//! [`MAX_SOURCE_LABELS`] seen, then `other`.
//!
//! The traffic series are Istio's standard ones under the `trellis_` prefix:
//! `trellis_requests_total`, `trellis_request_duration_seconds` (a histogram, in seconds),
//! `trellis_tcp_connections_opened_total`, `trellis_tcp_connections_closed_total`,
//! `trellis_tcp_sent_bytes_total` and `trellis_tcp_received_bytes_total`, with Istio's label
//! set ([`RequestLabels`]). Every label value comes from the mesh's config (workloads,
//! services, identities) or a small fixed set (codes, flags): never a path, an ID or a port,
//! so the number of series depends on the mesh, not on its traffic. Beside them,
//! `trellis_authz_decisions_total` and `trellis_inbound_connections_total`.
//!
//! What a peer or an app can choose is bounded where it enters
//! ([`crate::telemetry`]'s edges): a service a caller names must be one of the snapshot's,
//! else it reads `unknown`; a caller's workload name and principal get labels of their own
//! up to a cap, then read `other`; a response code HTTP does not define reads `other`
//! ([`CodeLabel`]), a gRPC status past 16 too, and one edge keeps at most
//! [`MAX_OUTCOMES_PER_EDGE`] code and status pairs before the rest are counted together.
//!
//! The proxy's health series are `trellis_proxy_*`: readiness, certificate expiry and
//! renewals, snapshots, open connections, resident memory.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{
    text::encode, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use prometheus_client::registry::Registry;

use crate::telemetry::{flag_label, EdgeData, Flag};

/// Request duration buckets, in seconds: Istio's (0.5 ms to an hour), so dashboards and
/// alerts written for Istio's histogram read this one the same way.
const DURATION_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// gRPC status codes as label values; anything else reads `other`.
const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// Distinct (response code, gRPC status) pairs one edge labels per protocol and flag; past
/// it, further pairs are counted under `other`. An app or a peer picks the codes it answers
/// with, and every pair is a histogram of 22 series.
pub const MAX_OUTCOMES_PER_EDGE: usize = 32;

/// A response code as a label value: the code when HTTP defines it (or `0`, no response);
/// any other number an app or a peer answered with (`599`, `987`) reads `other`, so that
/// cycling through 100–999 cannot multiply the series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CodeLabel {
    Code(u16),
    Other,
}

impl CodeLabel {
    pub fn of(status: u16) -> Self {
        let defined = status == 0
            || http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .is_some();
        if defined {
            CodeLabel::Code(status)
        } else {
            CodeLabel::Other
        }
    }
}

impl EncodeLabelValue for CodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            CodeLabel::Code(c) => EncodeLabelValue::encode(c, encoder),
            CodeLabel::Other => EncodeLabelValue::encode(&"other", encoder),
        }
    }
}

/// A gRPC status as a label value: the code (0–16), `other` beyond, empty for plain HTTP.
pub fn grpc_label(status: Option<u8>) -> &'static str {
    match status {
        Some(c) => GRPC_CODES.get(usize::from(c)).copied().unwrap_or("other"),
        None => "",
    }
}

/// Who called whom, as Istio labels it: the part of every traffic series' labels that one
/// edge fixes ([`crate::telemetry::EdgeData`] holds one, made once).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeLabels {
    /// `source` (the caller's proxy) or `destination` (the callee's).
    pub reporter: &'static str,
    pub source_workload: Arc<str>,
    pub source_namespace: Arc<str>,
    pub source_principal: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_namespace: Arc<str>,
    pub destination_principal: Arc<str>,
    /// `mutual_tls` or `none`.
    pub connection_security_policy: &'static str,
}

/// Istio's standard label set for `trellis_requests_total` and
/// `trellis_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub edge: EdgeLabels,
    /// `http` or `grpc`.
    pub request_protocol: &'static str,
    pub response_code: CodeLabel,
    /// The gRPC status code, or empty for plain HTTP.
    pub grpc_response_status: &'static str,
    pub response_flags: &'static str,
}

impl RequestLabels {
    pub fn new(
        edge: &EdgeData,
        protocol: &'static str,
        code: CodeLabel,
        grpc: &'static str,
        flag: Option<Flag>,
    ) -> Self {
        RequestLabels {
            edge: edge.labels.clone(),
            request_protocol: protocol,
            response_code: code,
            grpc_response_status: grpc,
            response_flags: flag_label(flag),
        }
    }
}

/// Istio's label set for the `trellis_tcp_*` series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    #[prometheus(flatten)]
    pub edge: EdgeLabels,
    pub response_flags: &'static str,
}

impl TcpLabels {
    pub fn new(edge: &EdgeData, flag: Option<Flag>) -> Self {
        TcpLabels {
            edge: edge.labels.clone(),
            response_flags: flag_label(flag),
        }
    }
}

pub fn security_policy(mutual_tls: bool) -> &'static str {
    if mutual_tls {
        "mutual_tls"
    } else {
        "none"
    }
}

/// Makes each request-duration histogram with [`DURATION_BUCKETS`].
#[derive(Clone)]
pub struct DurationHistogram;

impl MetricConstructor<Histogram> for DurationHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(DURATION_BUCKETS)
    }
}

/// Connection direction, for the open-connections gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `inbound` (peers on 15008, plaintext on 15006) or `outbound` (the app's).
    pub direction: &'static str,
}

/// The snapshot being served, as an info series (value 1).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

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
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RequestLabels, Histogram, DurationHistogram>,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    pub tcp_sent: Family<TcpLabels, Counter>,
    pub tcp_received: Family<TcpLabels, Counter>,
    pub open_connections: Family<DirectionLabel, Gauge>,
    /// One series, the current snapshot version, value 1.
    pub snapshot_version: Family<VersionLabel, Gauge>,
    pub resident_memory: Gauge,
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
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests completed, by Istio's standard labels (reporter, source and destination \
             workload, service, principal, response code, gRPC status, flags, mTLS)",
            requests.clone(),
        );
        let request_duration =
            Family::<RequestLabels, Histogram, DurationHistogram>::new_with_constructor(
                DurationHistogram,
            );
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival until its response was sent to the end, seconds",
            request_duration.clone(),
        );
        let tcp = registry.sub_registry_with_prefix("tcp");
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        tcp.register(
            "connections_opened",
            "TCP connections opened (tunnels, plaintext inbound, passthrough)",
            tcp_opened.clone(),
        );
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        tcp.register(
            "connections_closed",
            "TCP connections closed, with a response flag when they failed",
            tcp_closed.clone(),
        );
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        tcp.register(
            "sent_bytes",
            "Bytes sent back to the client on TCP connections (the response direction), counted at \
             close",
            tcp_sent.clone(),
        );
        let tcp_received = Family::<TcpLabels, Counter>::default();
        tcp.register(
            "received_bytes",
            "Bytes received from the client on TCP connections (the request direction), counted \
             at close",
            tcp_received.clone(),
        );
        let proxy = registry.sub_registry_with_prefix("proxy");
        let open_connections = Family::<DirectionLabel, Gauge>::default();
        proxy.register(
            "open_connections",
            "Connections open now, inbound (from peers and plaintext clients) and outbound \
             (from the app)",
            open_connections.clone(),
        );
        let snapshot_version = Family::<VersionLabel, Gauge>::default();
        proxy.register(
            "snapshot_info",
            "The snapshot version being served (value 1)",
            snapshot_version.clone(),
        );
        let resident_memory = Gauge::default();
        proxy.register(
            "resident_memory_bytes",
            "The proxy's resident memory, read at scrape time",
            resident_memory.clone(),
        );
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
            requests,
            request_duration,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            open_connections,
            snapshot_version,
            resident_memory,
            sources: Mutex::new(HashSet::new()),
        }
    }
}

impl ProxyMetrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.resident_memory.set(rss);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Marks `version` as the snapshot being served (the previous one's series goes).
    pub fn set_snapshot_version(&self, version: &str) {
        self.snapshot_version.clear();
        self.snapshot_version
            .get_or_create(&VersionLabel {
                version: version.to_owned(),
            })
            .set(1);
    }

    /// Counts a connection open until the guard is dropped.
    pub fn connection_open(self: &Arc<Self>, direction: &'static str) -> OpenConnection {
        self.open_connections
            .get_or_create(&DirectionLabel { direction })
            .inc();
        OpenConnection {
            metrics: self.clone(),
            direction,
        }
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

/// An open connection, counted in `trellis_proxy_open_connections` while it lives.
pub struct OpenConnection {
    metrics: Arc<ProxyMetrics>,
    direction: &'static str,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics
            .open_connections
            .get_or_create(&DirectionLabel {
                direction: self.direction,
            })
            .dec();
    }
}

/// The process's resident set size, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on every platform the proxy runs on (x86-64, aarch64 Linux
    // with 4K pages); a 64K-page kernel would under-report, not misbehave.
    Some(pages * 4096)
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
