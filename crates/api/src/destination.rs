//! DestinationRule traffic policy as the proxy applies it: for each destination — a service,
//! one of its ports, one of its subsets — the load balancer, the connection-pool limits, the
//! outlier detection and the retry budget a client uses towards it.
//!
//! The control plane resolves a rule's layers once ([`DestinationPolicies::compile`]) and ships
//! the result in the snapshot as JSON; the proxy only looks the answer up
//! ([`DestinationPolicies::get`]). Layers override whole settings (a `loadBalancer`, a
//! `connectionPool`, an `outlierDetection`), from the least to the most specific:
//!
//! 1. the rule's `trafficPolicy`;
//! 2. its `portLevelSettings` entry for the port;
//! 3. the subset's `trafficPolicy`;
//! 4. the subset's `portLevelSettings` entry for the port.
//!
//! A setting a layer leaves out is inherited from the layer below, as Istio merges a subset's
//! policy into the rule's. Istio's defaults fill in what a present setting leaves out
//! (`consecutive5xxErrors` 5, `interval` 10 s, `baseEjectionTime` 30 s,
//! `maxEjectionPercent` 10; unlimited connections and requests).
//!
//! Fields the proxy does not act on are listed by [`ignored_fields`], so `trellis validate`
//! and the control plane warn about them instead of pretending.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb,
    DestinationRuleSpec, Duration, FieldPath, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, SimpleLb, TrafficPolicy,
};

/// How a destination's endpoint is chosen for a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Power of two choices by peak-EWMA latency × load: the default, when no rule (or
    /// `UNSPECIFIED`) says otherwise.
    #[default]
    PeakEwma,
    /// `ROUND_ROBIN`.
    RoundRobin,
    /// `LEAST_REQUEST` (and the deprecated `LEAST_CONN`): power of two choices by requests in
    /// flight.
    LeastRequest,
    /// `RANDOM`.
    Random,
    /// `consistentHash`: the same key goes to the same endpoint while the endpoints stay.
    ConsistentHash(HashOn),
}

/// What a consistent hash is computed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// A request header's value (name in lower case).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The address of the client workload.
    SourceIp,
    /// A query parameter's value.
    QueryParameter(String),
}

/// Connection-pool limits, per destination and per client proxy (Envoy's circuit breakers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLimits {
    /// Requests in flight at once: `http.http2MaxRequests` and `tcp.maxConnections`, the
    /// smaller. Between proxies every request to an endpoint shares one multiplexed HTTP/2
    /// connection, so a connection cap bounds what it bounds for an HTTP/1.1 upstream in
    /// Envoy: requests at once. For opaque TCP it caps connections.
    pub max_requests: u32,
    /// Requests that may wait for a place (`http.http1MaxPendingRequests`); past it, 503.
    pub max_pending: u32,
    /// Requests a pooled connection carries before it is replaced
    /// (`http.maxRequestsPerConnection`); 0: no limit.
    pub max_requests_per_connection: u32,
    /// Milliseconds a pooled connection may stay unused before it is closed
    /// (`http.idleTimeout`); `None`: the proxy's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

impl Default for PoolLimits {
    fn default() -> Self {
        // Istio's defaults: 2^32 - 1, "unlimited".
        PoolLimits {
            max_requests: u32::MAX,
            max_pending: u32::MAX,
            max_requests_per_connection: 0,
            idle_timeout_ms: None,
        }
    }
}

/// Outlier detection, with Istio's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outlier {
    /// Consecutive 5xx answers (connection failures included) that eject; 0: not checked.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 answers or connection failures that eject; 0: not checked.
    pub consecutive_gateway_errors: u32,
    /// Milliseconds between sweeps: ejections end on a multiple of it.
    pub interval_ms: u64,
    /// Milliseconds an endpoint stays out the first time (then that times the number of
    /// ejections).
    pub base_ejection_ms: u64,
    /// Most endpoints out at once, in percent (one may always go).
    pub max_ejection_percent: u32,
    /// Below this share of endpoints in, in percent, every endpoint is used again.
    pub min_health_percent: u32,
    /// `splitExternalLocalOriginErrors`: failures to reach the endpoint count apart, against
    /// this many in a row (`consecutiveLocalOriginFailures`, default 5); `None`: as gateway
    /// errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin: Option<u32>,
    /// Statuses below 500 that count as errors too (`outlierDetectionHttpErrorCodes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u16>,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 0,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
            consecutive_local_origin: None,
            error_codes: Vec::new(),
        }
    }
}

/// Retries allowed on top of requests, as a share of them (`retryBudget.percent`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Percent of the requests that may be retried.
    pub percent: f64,
}

/// What a client does towards one destination (service, port, subset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// How an endpoint is picked.
    #[serde(default, skip_serializing_if = "is_default")]
    pub load_balancer: LoadBalancer,
    /// Limits; `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolLimits>,
    /// Outlier detection; `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier: Option<Outlier>,
    /// A retry budget other than the proxy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<Budget>,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl Policy {
    /// Whether the policy needs state kept per destination (limits or outlier detection).
    pub fn is_stateful(&self) -> bool {
        self.pool.is_some() || self.outlier.is_some()
    }
}

/// A policy with its port-level overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Layered {
    /// For ports with no entry of their own.
    #[serde(default, skip_serializing_if = "is_default")]
    pub default: Policy,
    /// By service port number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<u16, Policy>,
}

impl Layered {
    fn get(&self, port: u16) -> &Policy {
        self.ports.get(&port).unwrap_or(&self.default)
    }
}

/// Every destination policy of one service, resolved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationPolicies {
    /// The service's own (no subset).
    #[serde(default, skip_serializing_if = "is_default")]
    pub service: Layered,
    /// Subsets with a policy of their own; others use [`Self::service`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subsets: BTreeMap<String, Layered>,
    /// Rules for some clients only (a `workloadSelector`, an `exportTo` that leaves
    /// namespaces out), in load order: the first that takes a client decides for it, whole;
    /// clients none takes get the rest of this value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scoped: Vec<Scoped>,
}

/// A DestinationRule for some clients only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scoped {
    /// The client namespaces it applies to.
    pub namespaces: Vec<String>,
    /// Labels a client must carry (`workloadSelector.matchLabels`); empty: any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The rule, resolved (its own `scoped` is empty).
    pub policies: DestinationPolicies,
}

impl Scoped {
    fn takes(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl DestinationPolicies {
    /// The policy for a request to `port` of `subset` (or of the whole service), for clients
    /// no scoped rule takes.
    pub fn get(&self, port: u16, subset: Option<&str>) -> &Policy {
        subset
            .and_then(|s| self.subsets.get(s))
            .unwrap_or(&self.service)
            .get(port)
    }

    /// [`Self::get`] for a client in `namespace` with `labels`: the first scoped rule that
    /// takes it, if any.
    pub fn get_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        port: u16,
        subset: Option<&str>,
    ) -> &Policy {
        match self.scoped.iter().find(|s| s.takes(namespace, labels)) {
            Some(scoped) => scoped.policies.get(port, subset),
            None => self.get(port, subset),
        }
    }

    /// Whether nothing differs from the defaults.
    pub fn is_empty(&self) -> bool {
        *self == DestinationPolicies::default()
    }

    /// Resolves a DestinationRule's layers (see the module docs).
    pub fn compile(spec: &DestinationRuleSpec) -> DestinationPolicies {
        let base = match &spec.traffic_policy {
            Some(tp) => apply(&Policy::default(), tp),
            None => Policy::default(),
        };
        let service_ports = spec
            .traffic_policy
            .as_ref()
            .map(|tp| tp.port_level_settings.as_slice())
            .unwrap_or_default();
        let service = Layered {
            ports: port_overrides(&base, service_ports),
            default: base.clone(),
        };
        let mut subsets = BTreeMap::new();
        for subset in &spec.subsets {
            let Some(tp) = &subset.traffic_policy else {
                continue;
            };
            let default = apply(&base, tp);
            // A port the rule's own port settings name: the subset's settings go over that
            // port's, not the bare rule's.
            let mut ports: BTreeMap<u16, Policy> = service
                .ports
                .iter()
                .map(|(port, p)| (*port, apply(p, tp)))
                .collect();
            for pls in &tp.port_level_settings {
                let Some(port) = pls.port.and_then(|p| u16::try_from(p.number).ok()) else {
                    continue;
                };
                let below = ports.get(&port).unwrap_or(&default).clone();
                ports.insert(port, apply_port(&below, pls));
            }
            subsets.insert(subset.name.clone(), Layered { default, ports });
        }
        DestinationPolicies {
            service,
            subsets,
            scoped: Vec::new(),
        }
    }
}

/// `below` with the settings of `tp` (not its port-level ones) laid over it.
fn apply(below: &Policy, tp: &TrafficPolicy) -> Policy {
    let layer = Layer {
        load_balancer: tp.load_balancer.as_ref(),
        pool: tp.connection_pool.as_ref(),
        outlier: tp.outlier_detection.as_ref(),
    };
    Policy {
        retry_budget: tp
            .retry_budget
            .as_ref()
            .map_or(below.retry_budget.clone(), |b| {
                Some(Budget {
                    // Istio's default is 20 %.
                    percent: b.percent.unwrap_or(20.0),
                })
            }),
        ..layer.over(below)
    }
}

/// The settings a traffic policy and a port-level policy both have.
struct Layer<'a> {
    load_balancer: Option<&'a LoadBalancerSettings>,
    pool: Option<&'a ConnectionPoolSettings>,
    outlier: Option<&'a OutlierDetection>,
}

impl Layer<'_> {
    /// `below` with each setting this layer has replaced.
    fn over(&self, below: &Policy) -> Policy {
        Policy {
            load_balancer: self
                .load_balancer
                .map_or_else(|| below.load_balancer.clone(), load_balancer),
            pool: self.pool.map_or(below.pool.clone(), |p| Some(pool(p))),
            outlier: self
                .outlier
                .map_or(below.outlier.clone(), |o| Some(outlier(o))),
            retry_budget: below.retry_budget.clone(),
        }
    }
}

fn port_overrides(base: &Policy, settings: &[PortTrafficPolicy]) -> BTreeMap<u16, Policy> {
    let mut ports = BTreeMap::new();
    for pls in settings {
        let Some(port) = pls.port.and_then(|p| u16::try_from(p.number).ok()) else {
            continue;
        };
        ports.insert(port, apply_port(base, pls));
    }
    ports
}

fn apply_port(below: &Policy, pls: &PortTrafficPolicy) -> Policy {
    Layer {
        load_balancer: pls.load_balancer.as_ref(),
        pool: pls.connection_pool.as_ref(),
        outlier: pls.outlier_detection.as_ref(),
    }
    .over(below)
}

fn load_balancer(lb: &LoadBalancerSettings) -> LoadBalancer {
    if let Some(hash) = &lb.consistent_hash {
        if let Some(on) = hash_on(hash) {
            return LoadBalancer::ConsistentHash(on);
        }
    }
    match lb.simple {
        Some(SimpleLb::RoundRobin) => LoadBalancer::RoundRobin,
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => LoadBalancer::LeastRequest,
        Some(SimpleLb::Random) => LoadBalancer::Random,
        // PASSTHROUGH needs the original destination, which a service's endpoints replace:
        // listed as ignored, the default applies.
        Some(SimpleLb::Unspecified | SimpleLb::Passthrough) | None => LoadBalancer::PeakEwma,
    }
}

fn hash_on(hash: &ConsistentHashLb) -> Option<HashOn> {
    if let Some(name) = &hash.http_header_name {
        return Some(HashOn::Header(name.to_ascii_lowercase()));
    }
    if let Some(cookie) = &hash.http_cookie {
        return Some(HashOn::Cookie(cookie.name.clone()));
    }
    if hash.use_source_ip == Some(true) {
        return Some(HashOn::SourceIp);
    }
    hash.http_query_parameter_name
        .as_ref()
        .map(|q| HashOn::QueryParameter(q.clone()))
}

fn clamp(n: Option<i32>) -> Option<u32> {
    n.map(|n| u32::try_from(n).unwrap_or(0))
}

fn pool(p: &ConnectionPoolSettings) -> PoolLimits {
    let http = p.http.as_ref();
    let tcp = p.tcp.as_ref();
    // Istio: 0 means "unset", the default (unlimited).
    let limit = |n: Option<u32>| n.filter(|n| *n > 0).unwrap_or(u32::MAX);
    let max_requests = limit(clamp(http.and_then(|h| h.http2_max_requests)))
        .min(limit(clamp(tcp.and_then(|t| t.max_connections))));
    PoolLimits {
        max_requests,
        max_pending: limit(clamp(http.and_then(|h| h.http1_max_pending_requests))),
        max_requests_per_connection: clamp(http.and_then(|h| h.max_requests_per_connection))
            .unwrap_or(0),
        idle_timeout_ms: http
            .and_then(|h| h.idle_timeout.as_ref())
            .map(|d| millis(Some(d), 0)),
    }
}

fn millis(d: Option<&Duration>, default: u64) -> u64 {
    d.and_then(|d| d.to_std())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(default)
}

fn outlier(o: &OutlierDetection) -> Outlier {
    let d = Outlier::default();
    // The deprecated `consecutiveErrors` counted gateway errors (502, 503, 504).
    let gateway = o
        .consecutive_gateway_errors
        .or(clamp(o.consecutive_errors))
        .unwrap_or(d.consecutive_gateway_errors);
    Outlier {
        consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(
            // Only the deprecated field set: it alone decides, as in Istio.
            if o.consecutive_errors.is_some() && o.consecutive_gateway_errors.is_none() {
                0
            } else {
                d.consecutive_5xx
            },
        ),
        consecutive_gateway_errors: gateway,
        interval_ms: millis(o.interval.as_ref(), d.interval_ms),
        base_ejection_ms: millis(o.base_ejection_time.as_ref(), d.base_ejection_ms),
        max_ejection_percent: clamp(o.max_ejection_percent).unwrap_or(d.max_ejection_percent),
        min_health_percent: clamp(o.min_health_percent).unwrap_or(d.min_health_percent),
        consecutive_local_origin: (o.split_external_local_origin_errors == Some(true))
            .then(|| o.consecutive_local_origin_failures.unwrap_or(5)),
        error_codes: o
            .outlier_detection_http_error_codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
    }
}

/// Adds to `out` the fields of the traffic policy at `path` that the proxy does not act on.
pub(crate) fn ignored_fields(tp: &TrafficPolicy, path: &FieldPath, out: &mut Vec<FieldPath>) {
    common_ignored(
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        path,
        out,
    );
    let note = |out: &mut Vec<FieldPath>, present: bool, name: &str| {
        if present {
            out.push(path.field(name));
        }
    };
    // Between proxies the mesh's own mTLS always applies; a rule cannot turn it off or swap
    // it for another TLS set-up. Asking for exactly that (`ISTIO_MUTUAL`) is no news.
    note(out, tp.tls.as_ref().is_some_and(|t| !is_mesh_tls(t)), "tls");
    note(out, tp.tunnel.is_some(), "tunnel");
    note(out, tp.proxy_protocol.is_some(), "proxyProtocol");
    if let Some(b) = &tp.retry_budget {
        let at = path.field("retryBudget");
        if b.min_retry_concurrency.is_some() {
            out.push(at.field("minRetryConcurrency"));
        }
        if b.budget_interval.is_some() {
            out.push(at.field("budgetInterval"));
        }
    }
    let ports = path.field("portLevelSettings");
    for (i, pls) in tp.port_level_settings.iter().enumerate() {
        let at = ports.index(i);
        common_ignored(
            pls.load_balancer.as_ref(),
            pls.connection_pool.as_ref(),
            &at,
            out,
        );
        if pls.tls.as_ref().is_some_and(|t| !is_mesh_tls(t)) {
            out.push(at.field("tls"));
        }
    }
}

/// `tls: {mode: ISTIO_MUTUAL}` and nothing else: what the mesh does anyway.
fn is_mesh_tls(tls: &ClientTlsSettings) -> bool {
    *tls == ClientTlsSettings {
        mode: Some(ClientTlsMode::IstioMutual),
        ..ClientTlsSettings::default()
    }
}

/// The ignored fields of what a policy and a port-level policy share (every outlier
/// detection setting is acted on).
fn common_ignored(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    path: &FieldPath,
    out: &mut Vec<FieldPath>,
) {
    if let Some(lb) = lb {
        let at = path.field("loadBalancer");
        if lb.simple == Some(SimpleLb::Passthrough) {
            out.push(at.field("simple"));
        }
        for (present, name) in [
            (lb.backend_utilization.is_some(), "backendUtilization"),
            (lb.locality_lb_setting.is_some(), "localityLbSetting"),
            (lb.warmup_duration_secs.is_some(), "warmupDurationSecs"),
            (lb.warmup.is_some(), "warmup"),
            (lb.zone_aware_lb_setting.is_some(), "zoneAwareLbSetting"),
        ] {
            if present {
                out.push(at.field(name));
            }
        }
        if let Some(cookie) = lb
            .consistent_hash
            .as_ref()
            .and_then(|h| h.http_cookie.as_ref())
        {
            // Hashing uses the cookie the client sends; the proxy does not mint one.
            if cookie.ttl.is_some() {
                out.push(at.field("consistentHash").field("httpCookie").field("ttl"));
            }
        }
    }
    if let Some(pool) = pool {
        let at = path.field("connectionPool");
        if let Some(tcp) = &pool.tcp {
            let tcp_at = at.field("tcp");
            for (present, name) in [
                (tcp.connect_timeout.is_some(), "connectTimeout"),
                (tcp.tcp_keepalive.is_some(), "tcpKeepalive"),
                (
                    tcp.max_connection_duration.is_some(),
                    "maxConnectionDuration",
                ),
                (tcp.idle_timeout.is_some(), "idleTimeout"),
            ] {
                if present {
                    out.push(tcp_at.field(name));
                }
            }
        }
        if let Some(http) = &pool.http {
            let http_at = at.field("http");
            for (present, name) in [
                (http.max_retries.is_some(), "maxRetries"),
                (http.h2_upgrade_policy.is_some(), "h2UpgradePolicy"),
                (http.use_client_protocol.is_some(), "useClientProtocol"),
                (
                    http.max_concurrent_streams.is_some(),
                    "maxConcurrentStreams",
                ),
                (http.http2_keep_alive.is_some(), "http2KeepAlive"),
            ] {
                if present {
                    out.push(http_at.field(name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
