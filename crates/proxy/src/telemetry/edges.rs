//! Edges, interned: one shared [`EdgeData`] per distinct (reporter, source, destination), made
//! the first time that edge carries traffic and found again by a cheap hash of its names.
//!
//! Each edge keeps the metric handles it has used (one per response code, gRPC status and
//! flag seen) and, on the destination side, its summary for the next report. In the steady
//! state a request therefore builds no label set and hashes no label values: it finds its
//! edge (a hash over a few short strings, then string comparisons) and its handles (a short
//! linear scan), and increments them. Without this, recording cost a proxy about a sixth more
//! CPU per request; the per-request figures are in `bench/RESULTS.md`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use trellis_api::snapshot::{strip_port, Snapshot};
use trellis_api::telemetry::LatencyHistogram;

use super::{Flag, Outcome, Reporter};
use crate::metrics::{
    grpc_label, security_policy, CodeLabel, EdgeLabels, ProxyMetrics, RequestLabels, TcpLabels,
    MAX_OUTCOMES_PER_EDGE,
};
use crate::outbound::UNKNOWN;

/// Distinct caller workload names a proxy labels its inbound traffic with; past it, a name
/// reads `other`. The name comes from the caller's proxy (its identity is the TLS session's),
/// so a peer sending a new name per request must not grow the series without bound.
pub const MAX_SOURCE_WORKLOADS: usize = 256;

/// Distinct caller principals a proxy labels its inbound traffic with; past it, a principal
/// reads `other`. Principals are proven by the TLS session, but a join token for every
/// service account of a namespace lets its holder have a certificate issued for any name.
pub const MAX_SOURCE_PRINCIPALS: usize = 256;

/// Who called whom. Every field is bounded by the mesh's config (workloads, services,
/// identities), never by traffic; `unknown` stands for what the reporter cannot know.
pub struct EdgeData {
    pub reporter: Reporter,
    /// Whether the call crossed the mesh over mutual TLS.
    pub mutual_tls: bool,
    /// The edge's names, as its series label them.
    pub labels: EdgeLabels,
    /// Request series handles, per outcome seen.
    requests: Mutex<Vec<RequestHandles>>,
    /// TCP series handles without a flag (opened, sent, received, closed).
    tcp: OnceLock<TcpHandles>,
    /// Closed-connection counters per failure flag seen.
    tcp_failed: Mutex<Vec<(Flag, Counter)>>,
    /// Destination side: this period's summary per protocol (http, grpc, tcp).
    summaries: Mutex<[Summary; 3]>,
}

impl std::fmt::Debug for EdgeData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} -> {} ({}/{})",
            self.reporter.as_str(),
            self.labels.source_namespace,
            self.labels.source_workload,
            self.labels.destination_service,
            self.labels.destination_namespace,
            self.labels.destination_workload
        )
    }
}

/// An interned edge: cloning it is a reference count.
pub type Edge = Arc<EdgeData>;

struct RequestHandles {
    protocol: &'static str,
    code: CodeLabel,
    grpc: &'static str,
    flag: Option<Flag>,
    requests: Counter,
    duration: Histogram,
}

struct TcpHandles {
    opened: Counter,
    sent: Counter,
    received: Counter,
    closed: Counter,
}

/// What one edge did over a report period, for one protocol.
#[derive(Default)]
pub struct Summary {
    pub requests: u64,
    pub failures: u64,
    pub latency: LatencyHistogram,
}

/// The protocols a summary is kept for, in the order of [`EdgeData`]'s summaries.
pub const PROTOCOLS: [&str; 3] = ["http", "grpc", "tcp"];

impl EdgeData {
    /// Counts a finished request and observes its duration.
    pub fn count_request(
        &self,
        metrics: &ProxyMetrics,
        protocol: &'static str,
        outcome: &Outcome,
        seconds: f64,
    ) {
        let mut handles = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let (mut code, mut grpc, flag) = (
            CodeLabel::of(outcome.status),
            grpc_label(outcome.grpc_status),
            outcome.flag,
        );
        let find = |handles: &[RequestHandles], code: CodeLabel, grpc: &str| {
            handles.iter().position(|h| {
                h.code == code && h.grpc == grpc && h.flag == flag && h.protocol == protocol
            })
        };
        let mut found = find(&handles, code, grpc);
        if found.is_none() && handles.len() >= MAX_OUTCOMES_PER_EDGE {
            // The edge has seen enough distinct answers: the rest count together, by flag.
            code = CodeLabel::Other;
            if !grpc.is_empty() {
                grpc = "other";
            }
            found = find(&handles, code, grpc);
        }
        let h = match found {
            Some(i) => &handles[i],
            None => {
                let labels = RequestLabels::new(self, protocol, code, grpc, flag);
                handles.push(RequestHandles {
                    protocol,
                    code,
                    grpc,
                    flag,
                    requests: metrics.requests.get_or_create(&labels).clone(),
                    duration: metrics.request_duration.get_or_create(&labels).clone(),
                });
                &handles[handles.len() - 1]
            }
        };
        h.requests.inc();
        h.duration.observe(seconds);
    }

    fn tcp(&self, metrics: &ProxyMetrics) -> &TcpHandles {
        self.tcp.get_or_init(|| {
            let labels = TcpLabels::new(self, None);
            TcpHandles {
                opened: metrics.tcp_opened.get_or_create(&labels).clone(),
                sent: metrics.tcp_sent.get_or_create(&labels).clone(),
                received: metrics.tcp_received.get_or_create(&labels).clone(),
                closed: metrics.tcp_closed.get_or_create(&labels).clone(),
            }
        })
    }

    pub fn count_tcp_open(&self, metrics: &ProxyMetrics) {
        self.tcp(metrics).opened.inc();
    }

    pub fn count_tcp_close(
        &self,
        metrics: &ProxyMetrics,
        sent: u64,
        received: u64,
        flag: Option<Flag>,
    ) {
        let tcp = self.tcp(metrics);
        tcp.sent.inc_by(sent);
        tcp.received.inc_by(received);
        let Some(flag) = flag else {
            tcp.closed.inc();
            return;
        };
        let mut failed = self.tcp_failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.iter().find(|(f, _)| *f == flag) {
            Some((_, c)) => {
                c.inc();
            }
            None => {
                let c = metrics
                    .tcp_closed
                    .get_or_create(&TcpLabels::new(self, Some(flag)))
                    .clone();
                c.inc();
                failed.push((flag, c));
            }
        }
    }

    /// Adds a finished request (or connection) to this period's summary (destination side
    /// only: a call between two proxies is summarized once).
    pub fn summarize(&self, protocol: &'static str, failed: bool, micros: u64) {
        if self.reporter != Reporter::Destination {
            return;
        }
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        let mut summaries = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut summaries[i];
        s.requests += 1;
        s.failures += u64::from(failed);
        s.latency.observe(micros);
    }

    /// This period's summaries, per protocol with traffic; the next period starts empty.
    pub fn take_summaries(&self) -> Vec<(&'static str, Summary)> {
        let mut summaries = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        PROTOCOLS
            .iter()
            .zip(summaries.iter_mut())
            .filter(|(_, s)| s.requests > 0)
            .map(|(p, s)| (*p, std::mem::take(s)))
            .collect()
    }
}

/// The names that tell edges apart.
pub struct EdgeKey<'a> {
    pub reporter: Reporter,
    pub source_workload: &'a str,
    pub source_namespace: &'a str,
    pub source_principal: &'a str,
    pub destination_service: &'a str,
    pub destination_workload: &'a str,
    pub destination_namespace: &'a str,
    pub destination_principal: &'a str,
    pub mutual_tls: bool,
}

impl EdgeKey<'_> {
    /// FNV-1a over the names. Not a defence against chosen collisions — it needs none: the
    /// table holds only names the config and the workload-name cap allow, and a collision
    /// only means one more string comparison.
    fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes.iter().chain(std::iter::once(&0xff)) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&[self.reporter as u8, u8::from(self.mutual_tls)]);
        for s in [
            self.source_workload,
            self.source_namespace,
            self.source_principal,
            self.destination_service,
            self.destination_workload,
            self.destination_namespace,
            self.destination_principal,
        ] {
            eat(s.as_bytes());
        }
        h
    }

    fn matches(&self, e: &EdgeData) -> bool {
        let l = &e.labels;
        self.reporter == e.reporter
            && self.mutual_tls == e.mutual_tls
            && *self.destination_service == *l.destination_service
            && *self.destination_workload == *l.destination_workload
            && *self.source_workload == *l.source_workload
            && *self.source_principal == *l.source_principal
            && *self.destination_principal == *l.destination_principal
            && *self.source_namespace == *l.source_namespace
            && *self.destination_namespace == *l.destination_namespace
    }
}

/// Every edge the proxy has recorded, by hash of its names.
#[derive(Default)]
pub struct EdgeTable {
    edges: Mutex<HashMap<u64, Vec<Edge>>>,
    /// Caller workload names given labels of their own (see [`MAX_SOURCE_WORKLOADS`]).
    source_workloads: Mutex<Vec<Arc<str>>>,
    /// Caller principals given labels of their own (see [`MAX_SOURCE_PRINCIPALS`]).
    source_principals: Mutex<Vec<Arc<str>>>,
}

impl EdgeTable {
    /// The edge named by `key`, made on first use.
    pub fn get(&self, key: &EdgeKey<'_>) -> Edge {
        let hash = key.hash();
        let mut edges = self.edges.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = edges.entry(hash).or_default();
        if let Some(e) = bucket.iter().find(|e| key.matches(e)) {
            return e.clone();
        }
        let e = Arc::new(EdgeData {
            reporter: key.reporter,
            mutual_tls: key.mutual_tls,
            labels: EdgeLabels {
                reporter: key.reporter.as_str(),
                source_workload: key.source_workload.into(),
                source_namespace: key.source_namespace.into(),
                source_principal: key.source_principal.into(),
                destination_service: key.destination_service.into(),
                destination_workload: key.destination_workload.into(),
                destination_namespace: key.destination_namespace.into(),
                destination_principal: key.destination_principal.into(),
                connection_security_policy: security_policy(key.mutual_tls),
            },
            requests: Mutex::new(Vec::new()),
            tcp: OnceLock::new(),
            tcp_failed: Mutex::new(Vec::new()),
            summaries: Mutex::new(Default::default()),
        });
        bucket.push(e.clone());
        e
    }

    /// `name` if it has (or may get) a label of its own, else `other`.
    pub fn source_workload<'a>(&self, name: &'a str) -> &'a str {
        capped(&self.source_workloads, MAX_SOURCE_WORKLOADS, name)
    }

    /// `principal` if it has (or may get) a label of its own, else `other`.
    pub fn source_principal<'a>(&self, principal: &'a str) -> &'a str {
        capped(&self.source_principals, MAX_SOURCE_PRINCIPALS, principal)
    }

    /// Every edge, for the period's report.
    pub fn all(&self) -> Vec<Edge> {
        let edges = self.edges.lock().unwrap_or_else(|p| p.into_inner());
        edges.values().flatten().cloned().collect()
    }
}

/// The `destination_service` label of a request a peer sent: the service the caller's proxy
/// named (`x-trellis-destination-service`), else the one the authority names for a client in
/// `client_ns`, always as the snapshot spells its host. Both come from the network — any
/// peer proxy writes the header, and any app the authority — so what the snapshot does not
/// know reads `unknown`: the label can take no more values than the config has services.
/// A mirrored copy, whose authority is the original's with `-shadow` appended (Envoy's
/// convention), reads `HOST-shadow` for a known service `HOST`.
pub fn destination_service<'s>(
    snapshot: Option<&'s Snapshot>,
    named: Option<&str>,
    authority: &str,
    client_ns: &str,
) -> Cow<'s, str> {
    let Some(snapshot) = snapshot else {
        return Cow::Borrowed(UNKNOWN);
    };
    if let Some((host, _)) = named.and_then(|n| snapshot.services.get_key_value(n)) {
        return Cow::Borrowed(host);
    }
    if let Some(svc) = snapshot.resolve(authority, client_ns) {
        return Cow::Borrowed(&svc.host);
    }
    // A tunnel's authority is the workload's own address; a request may name a virtual IP.
    if let Ok(ip) = strip_port(authority).parse::<std::net::IpAddr>() {
        let host = snapshot
            .by_endpoint
            .get(&ip)
            .map(|(host, _)| host)
            .or_else(|| snapshot.by_vip.get(&ip));
        if let Some((host, _)) = host.and_then(|h| snapshot.services.get_key_value(h)) {
            return Cow::Borrowed(host);
        }
    }
    let shadowed = strip_port(authority)
        .strip_suffix("-shadow")
        .and_then(|base| snapshot.resolve(base, client_ns));
    match shadowed {
        Some(svc) => Cow::Owned(format!("{}-shadow", svc.host)),
        None => Cow::Borrowed(UNKNOWN),
    }
}

/// `value` if it is one of the first `max` distinct values seen (for the life of the process,
/// so a series never changes meaning), else `other`.
fn capped<'a>(seen: &Mutex<Vec<Arc<str>>>, max: usize, value: &'a str) -> &'a str {
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if seen.iter().any(|s| **s == *value) {
        return value;
    }
    if seen.len() < max {
        seen.push(value.into());
        return value;
    }
    "other"
}
