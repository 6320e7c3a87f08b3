//! Golden signals of the mesh over a rolling window: what `GET /api/v1/stat` answers, and so
//! `trellis stat` and `trellis top`.
//!
//! Every proxy sends a `Report` on its snapshot stream every 2 s, always, with one
//! `EdgeStats` per (source, destination, protocol) of the traffic it served inbound in that
//! period: requests, failures and a latency histogram over the shared bounds of
//! [`trellis_api::telemetry`]. The window keeps those reports, as they arrived, for
//! [`RETENTION`] (and at most [`MAX_ENTRIES`] edges' worth, dropping the oldest first).
//!
//! A query over a window W sums, per reporting proxy, the counts of its reports that arrived
//! within W, and divides them by the sum of those same reports' periods, not by W: a proxy up
//! for 5 s of a 30 s window covered 5 s, and dividing by 30 would report a sixth of its real
//! rate. The rates of different proxies are then added (they served different requests).
//! Success is exact (`1 - failures / requests` over the summed counts) and the latency
//! percentiles come from the merged histograms, so they are as good as the buckets (within a
//! fifth).
//!
//! Results are aggregated per destination service (host and namespace) and per edge (source
//! workload, or its principal, or "unmeshed"; destination service and workload).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use trellis_api::proto;
use trellis_api::telemetry::{LatencyHistogram, LATENCY_BOUNDS_MICROS};

/// How long reports are kept, and so the longest window a query can ask about.
pub const RETENTION: Duration = Duration::from_secs(600);

/// The window of a query that names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// Edges kept over all stored reports, at most (a report without edges counts as one). Ten
/// minutes of a proxy reporting three edges every 2 s is 900 edges, so this holds the whole
/// retention for a few hundred proxies; past that the oldest reports go first and long
/// windows cover less. An edge stores only its non-empty latency buckets (a few dozen bytes
/// each, typically under 300 bytes an edge), so the cap is tens of megabytes at worst.
pub const MAX_ENTRIES: usize = 200_000;

/// Edges of one report, at most: a proxy sends one per distinct (source, destination,
/// protocol), so thousands in 2 s is a misbehaving proxy, not traffic.
pub const MAX_EDGES_PER_REPORT: usize = 1024;

/// The longest period one report may claim. Proxies report every 2 s; a report claiming
/// more (a stalled proxy catching up, a bug) would dilute its proxy's rate for the whole
/// window.
const MAX_PERIOD: Duration = Duration::from_secs(60);

/// Why a window given to a query is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("invalid window {0:?}: expected a duration like 30s, 5m or 1500ms")]
    Invalid(String),
    #[error("window {0:?} is shorter than a second")]
    TooShort(String),
    #[error("window {0:?} is longer than the 10m of reports the control plane keeps")]
    TooLong(String),
}

/// Parses a query's window: a number with `ms`, `s` or `m`, or bare seconds; between one
/// second and [`RETENTION`], truncated to whole seconds (the API answers in seconds).
pub fn parse_window(s: &str) -> Result<Duration, WindowError> {
    let invalid = || WindowError::Invalid(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| invalid())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(invalid()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid());
    }
    if secs < 1.0 {
        return Err(WindowError::TooShort(s.to_string()));
    }
    if secs > RETENTION.as_secs_f64() {
        return Err(WindowError::TooLong(s.to_string()));
    }
    Ok(Duration::from_secs(secs as u64))
}

/// The proxy a report came from. A proxy that reconnects is the same reporter (same
/// workload, namespace and address), so its periods before and after add up instead of
/// counting as two proxies serving at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reporter {
    pub namespace: String,
    pub workload: String,
    pub address: IpAddr,
}

/// Who called, as an edge names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The caller's proxy stated its workload.
    Workload { namespace: String, name: String },
    /// Only the caller's certificate is known.
    Principal(String),
    /// Neither: plaintext from outside the mesh.
    Unmeshed,
}

impl Source {
    fn of(e: &proto::EdgeStats) -> Self {
        if !e.source_workload.is_empty() {
            Source::Workload {
                namespace: e.source_namespace.clone(),
                name: e.source_workload.clone(),
            }
        } else if !e.source_principal.is_empty() {
            Source::Principal(e.source_principal.clone())
        } else {
            Source::Unmeshed
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Workload { namespace, name } => write!(f, "{namespace}/{name}"),
            Source::Principal(p) => f.write_str(p),
            Source::Unmeshed => f.write_str("unmeshed"),
        }
    }
}

/// An edge as the window aggregates it: protocols are merged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct EdgeKey {
    // Field order is the sort order of the answer: by destination, then source.
    destination_namespace: String,
    destination_service: String,
    destination_workload: String,
    source: Source,
}

/// One edge of one report, as stored.
#[derive(Debug)]
struct StoredEdge {
    key: Arc<EdgeKey>,
    protocol: String,
    requests: u64,
    failures: u64,
    /// Non-empty buckets only (index, count); `None` when the proxy's bucket layout was not
    /// ours, so the edge counts for rates and success but not for latency.
    latency: Option<Vec<(u16, u64)>>,
    latency_sum_micros: u64,
}

#[derive(Debug)]
struct StoredReport {
    at: Instant,
    reporter: Arc<Reporter>,
    period: Duration,
    edges: Vec<StoredEdge>,
}

/// What [`GoldenWindow::record`] did with a report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Edges stored.
    pub edges: usize,
    /// Of which with a histogram of another bucket layout: counted without latency.
    pub foreign_layout: usize,
    /// Edges beyond [`MAX_EDGES_PER_REPORT`], dropped.
    pub dropped: usize,
}

/// What a query asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// How far back, at most [`RETENTION`]; [`DEFAULT_WINDOW`] when `None`.
    pub window: Option<Duration>,
    /// Only traffic to this destination namespace.
    pub namespace: Option<String>,
    /// Only traffic to this service: its name, a name with namespace (`reviews.default`) or
    /// its host.
    pub service: Option<String>,
}

/// Rates, success and latency of an aggregate over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signals {
    /// Requests per second: per reporting proxy, its requests over the time its reports
    /// covered, added over proxies.
    pub rps: f64,
    /// `1 - failures / requests`; `None` without requests.
    pub success_rate: Option<f64>,
    pub requests: u64,
    pub failures: u64,
    /// Latency percentiles in milliseconds; `None` without latency data.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Signals {
    /// No traffic seen.
    pub fn none() -> Self {
        Signals {
            rps: 0.0,
            success_rate: None,
            requests: 0,
            failures: 0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        }
    }
}

/// Traffic to one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSignals {
    /// The host callers addressed, e.g. `reviews.default.svc.cluster.local`; empty for
    /// traffic that named no service (a workload's address).
    pub service: String,
    /// The host's first label: `reviews`.
    pub name: String,
    pub namespace: String,
    #[serde(flatten)]
    pub signals: Signals,
}

/// Traffic from one source to one destination workload through one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeSignals {
    /// `namespace/workload`, the caller's SPIFFE ID, or `unmeshed`.
    pub source: String,
    pub source_workload: String,
    pub source_namespace: String,
    pub source_principal: String,
    pub destination_service: String,
    pub destination_name: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    /// Protocols seen on this edge ("http", "grpc", "tcp").
    pub protocols: Vec<String>,
    #[serde(flatten)]
    pub signals: Signals,
}

/// The answer to a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub window_secs: u64,
    /// Sorted by namespace and host.
    pub services: Vec<ServiceSignals>,
    /// Sorted by destination (namespace, service, workload), then source.
    pub edges: Vec<EdgeSignals>,
}

/// How much the window holds, for the control plane's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub reports: usize,
    pub edges: usize,
}

/// The rolling window of reports.
#[derive(Default)]
pub struct GoldenWindow {
    // Held to push and prune, or to read out a query's sums; never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// In arrival order, so expiry pops from the front and a query walks back from the end.
    reports: VecDeque<StoredReport>,
    /// Edges over all reports (a report without edges counts one), against [`MAX_ENTRIES`].
    entries: usize,
    /// Edge keys in use, shared by every report naming them: a proxy repeats the same few
    /// keys every 2 s, and storing them once keeps a report's edges small.
    keys: HashMap<Arc<EdgeKey>, usize>,
}

impl GoldenWindow {
    /// Records what `reporter` sent at `at`.
    pub fn record(
        &self,
        reporter: &Arc<Reporter>,
        at: Instant,
        period_millis: u64,
        edges: Vec<proto::EdgeStats>,
    ) -> Recorded {
        let mut out = Recorded {
            dropped: edges.len().saturating_sub(MAX_EDGES_PER_REPORT),
            ..Default::default()
        };
        let mut inner = self.lock();
        let stored: Vec<StoredEdge> = edges
            .into_iter()
            .take(MAX_EDGES_PER_REPORT)
            .map(|e| {
                let key = EdgeKey {
                    source: Source::of(&e),
                    destination_service: e.destination_service,
                    destination_workload: e.destination_workload,
                    destination_namespace: e.destination_namespace,
                };
                let latency = LatencyHistogram::from_parts(e.latency_counts, e.latency_sum_micros)
                    .map(|h| sparse(h.counts()));
                if latency.is_none() {
                    out.foreign_layout += 1;
                }
                StoredEdge {
                    key: inner.intern(key),
                    protocol: e.protocol,
                    requests: e.requests,
                    // More failures than requests is a proxy bug; it must not make success
                    // negative.
                    failures: e.failures.min(e.requests),
                    latency,
                    latency_sum_micros: e.latency_sum_micros,
                }
            })
            .collect();
        out.edges = stored.len();
        inner.entries += stored.len().max(1);
        inner.reports.push_back(StoredReport {
            at,
            reporter: reporter.clone(),
            period: Duration::from_millis(period_millis).min(MAX_PERIOD),
            edges: stored,
        });
        inner.prune(at);
        out
    }

    /// Reports and edges held now.
    pub fn occupancy(&self) -> Occupancy {
        let inner = self.lock();
        Occupancy {
            reports: inner.reports.len(),
            edges: inner.reports.iter().map(|r| r.edges.len()).sum(),
        }
    }

    /// The golden signals of the reports that arrived in the window before `now`.
    pub fn query(&self, now: Instant, q: &Query) -> Summary {
        let window = q.window.unwrap_or(DEFAULT_WINDOW).min(RETENTION);
        // Early after boot the monotonic clock may not reach back a whole window: then
        // everything kept is inside it.
        let since = now.checked_sub(window);
        let inside = |r: &&StoredReport| r.at <= now && since.is_none_or(|s| r.at > s);

        let inner = self.lock();
        // Reports are in arrival order: walk back from the newest until the window's start.
        let recent: Vec<&StoredReport> = inner
            .reports
            .iter()
            .rev()
            .take_while(|r| since.is_none_or(|s| r.at > s))
            .filter(inside)
            .collect();

        // The time each proxy's reports in the window cover.
        let mut covered: HashMap<&Reporter, Duration> = HashMap::new();
        for r in &recent {
            *covered.entry(&r.reporter).or_default() += r.period;
        }

        let mut services: BTreeMap<(String, String), Acc> = BTreeMap::new();
        let mut edges: BTreeMap<&EdgeKey, Acc> = BTreeMap::new();
        for r in &recent {
            // A proxy whose reports all claim no period (it should never send that) is
            // taken to have covered the whole window: the conservative rate.
            let secs = match covered.get(&*r.reporter) {
                Some(d) if !d.is_zero() => d.as_secs_f64(),
                _ => window.as_secs_f64(),
            };
            for e in &r.edges {
                if !q.matches(&e.key.destination_namespace, &e.key.destination_service) {
                    continue;
                }
                let service = (
                    e.key.destination_namespace.clone(),
                    e.key.destination_service.clone(),
                );
                services.entry(service).or_default().add(e, secs);
                edges.entry(&e.key).or_default().add(e, secs);
            }
        }

        Summary {
            window_secs: window.as_secs(),
            services: services
                .into_iter()
                .map(|((namespace, service), acc)| ServiceSignals {
                    name: short_name(&service).to_string(),
                    service,
                    namespace,
                    signals: acc.signals(),
                })
                .collect(),
            edges: edges
                .into_iter()
                .map(|(k, acc)| {
                    let (source_workload, source_namespace, source_principal) = match &k.source {
                        Source::Workload { namespace, name } => {
                            (name.clone(), namespace.clone(), String::new())
                        }
                        Source::Principal(p) => (String::new(), String::new(), p.clone()),
                        Source::Unmeshed => Default::default(),
                    };
                    EdgeSignals {
                        source: k.source.to_string(),
                        source_workload,
                        source_namespace,
                        source_principal,
                        destination_name: short_name(&k.destination_service).to_string(),
                        destination_service: k.destination_service.clone(),
                        destination_workload: k.destination_workload.clone(),
                        destination_namespace: k.destination_namespace.clone(),
                        protocols: acc.protocols.iter().cloned().collect(),
                        signals: acc.signals(),
                    }
                })
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn intern(&mut self, key: EdgeKey) -> Arc<EdgeKey> {
        if let Some((k, uses)) = self.keys.get_key_value(&key) {
            let k = k.clone();
            let uses = *uses;
            self.keys.insert(k.clone(), uses + 1);
            return k;
        }
        let k = Arc::new(key);
        self.keys.insert(k.clone(), 1);
        k
    }

    /// Drops reports older than [`RETENTION`] before `now`, then the oldest while over
    /// [`MAX_ENTRIES`].
    fn prune(&mut self, now: Instant) {
        let oldest = now.checked_sub(RETENTION);
        while let Some(front) = self.reports.front() {
            let expired = oldest.is_some_and(|o| front.at < o);
            if !expired && self.entries <= MAX_ENTRIES {
                break;
            }
            if let Some(r) = self.reports.pop_front() {
                self.entries -= r.edges.len().max(1);
                for e in r.edges {
                    self.release(&e.key);
                }
            }
        }
    }

    fn release(&mut self, key: &Arc<EdgeKey>) {
        match self.keys.get_mut(key) {
            Some(uses) if *uses > 1 => *uses -= 1,
            _ => {
                self.keys.remove(key);
            }
        }
    }
}

impl Query {
    /// Whether traffic to `host` in `namespace` is asked for.
    pub fn matches(&self, namespace: &str, host: &str) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns.is_empty() || ns == namespace)
            && self
                .service
                .as_deref()
                .is_none_or(|s| service_matches(s, host))
    }
}

/// Whether `filter` names `host` the way a resolver would: `reviews`, `reviews.default`,
/// `reviews.default.svc` and `reviews.default.svc.cluster.local` all name
/// `reviews.default.svc.cluster.local`.
pub fn service_matches(filter: &str, host: &str) -> bool {
    filter.is_empty()
        || host == filter
        || host
            .strip_prefix(filter)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// A host's first label, the service's name.
pub fn short_name(host: &str) -> &str {
    // An IP address is its own name.
    if host.parse::<IpAddr>().is_ok() {
        return host;
    }
    host.split('.').next().unwrap_or(host)
}

fn sparse(counts: &[u64]) -> Vec<(u16, u64)> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        // The layout was checked: it has about a hundred buckets, far below u16::MAX.
        .map(|(i, c)| (i as u16, *c))
        .collect()
}

/// Sums of an aggregate.
#[derive(Default)]
struct Acc {
    requests: u64,
    failures: u64,
    rps: f64,
    /// Dense, one count per bucket; empty until an edge brings latency.
    latency: Vec<u64>,
    latency_sum_micros: u64,
    protocols: BTreeSet<String>,
}

impl Acc {
    /// Adds an edge of a report whose proxy covered `secs` in the window.
    fn add(&mut self, e: &StoredEdge, secs: f64) {
        self.requests = self.requests.saturating_add(e.requests);
        self.failures = self.failures.saturating_add(e.failures);
        // The proxy's rate is the sum of its counts over the sum of its periods; adding each
        // report's counts divided by that same sum comes to the same, one report at a time.
        self.rps += e.requests as f64 / secs;
        if let Some(buckets) = &e.latency {
            if !buckets.is_empty() {
                if self.latency.is_empty() {
                    self.latency = vec![0; LATENCY_BOUNDS_MICROS.len() + 1];
                }
                for (i, c) in buckets {
                    if let Some(slot) = self.latency.get_mut(usize::from(*i)) {
                        *slot = slot.saturating_add(*c);
                    }
                }
                self.latency_sum_micros =
                    self.latency_sum_micros.saturating_add(e.latency_sum_micros);
            }
        }
        if !e.protocol.is_empty() {
            self.protocols.insert(e.protocol.clone());
        }
    }

    fn signals(self) -> Signals {
        let success_rate =
            (self.requests > 0).then(|| 1.0 - self.failures as f64 / self.requests as f64);
        let hist = LatencyHistogram::from_parts(self.latency, self.latency_sum_micros);
        let q = |q: f64| {
            hist.as_ref()
                .and_then(|h| h.quantile(q))
                .map(|us| us as f64 / 1000.0)
        };
        Signals {
            rps: self.rps,
            success_rate,
            requests: self.requests,
            failures: self.failures,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }
}

#[cfg(test)]
mod tests;
