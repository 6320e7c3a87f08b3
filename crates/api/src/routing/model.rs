//! The route table's types: what one Service's ports do with the requests and connections
//! addressed to them. Built by [`super::compile`], carried in snapshots as JSON, checked
//! again on decode ([`RouteTable::validate`]) and read by [`super::select`] on every request.
//!
//! The types say what to do, not how: they are the same whichever resource a rule came from
//! (a VirtualService, an HTTPRoute, a GRPCRoute, a TCPRoute), with each source's defaults
//! already filled in by its compiler, so the proxy never needs to know Istio from Gateway
//! API. Nothing here holds a `HashMap`, so the JSON (and the snapshot version hashed over
//! it) is the same for the same config.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::header::{HeaderKey, HeaderText};
use super::pattern::{Pattern, RewritePattern};

// === the table ===

/// The routes of one Service, per port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// One entry per Service port that has routes, sorted by port. A port without an entry
    /// forwards to the Service as addressed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRoutes>,
}

/// The routes of one Service port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRoutes {
    /// The Service port (the port clients dial), not the workload port.
    pub port: u16,
    /// HTTP (and gRPC) rules for every client. `None`: no HTTP route is attached, requests
    /// go to the Service as addressed. `Some`: a request no rule matches is answered 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoutes>,
    /// Rules for opaque TCP connections; `None` forwards to the Service as addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpRoutes>,
    /// Gateway API consumer routes (routes in another namespace than the Service's), sorted
    /// by namespace: for a client in that namespace they replace `http` and `tcp` (each one
    /// that is set), and clients elsewhere never see them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerRoutes>,
}

/// The routes clients of one namespace get in place of a port's own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerRoutes {
    /// The clients' (and the routes') namespace.
    pub namespace: String,
    /// Replaces [`PortRoutes::http`] when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoutes>,
    /// Replaces [`PortRoutes::tcp`] when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpRoutes>,
}

/// HTTP rules in match order. Every condition of every rule is one [`MatchEntry`], so that
/// precedence can order conditions rather than rules (Gateway API ranks each match of a rule
/// on its own), and selecting is a first-match scan of `matches`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoutes {
    /// The conditions, strongest first; the first that holds selects its rule.
    pub matches: Vec<MatchEntry>,
    /// The rules the entries point into.
    pub rules: Vec<HttpRule>,
}

/// One condition of a rule, at its place in the match order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchEntry {
    /// Index into [`HttpRoutes::rules`].
    pub rule: usize,
    /// What must hold.
    #[serde(rename = "match")]
    pub conditions: RequestMatch,
}

/// One rule: what happens to a request one of its conditions selected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// Where the rule comes from, for access logs and metrics.
    pub name: RuleName,
    /// Forward, redirect or answer.
    pub action: Action,
    /// What happens on the way.
    #[serde(default, skip_serializing_if = "Filters::is_empty")]
    pub filters: Filters,
}

/// The kind of resource a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RouteKind {
    /// An Istio VirtualService (`http` or `tcp` route).
    VirtualService,
    /// A Gateway API HTTPRoute.
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// A Gateway API GRPCRoute.
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
    /// A Gateway API TCPRoute.
    #[serde(rename = "TCPRoute")]
    TcpRoute,
}

impl RouteKind {
    /// The kind as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::VirtualService => "VirtualService",
            RouteKind::HttpRoute => "HTTPRoute",
            RouteKind::GrpcRoute => "GRPCRoute",
            RouteKind::TcpRoute => "TCPRoute",
        }
    }
}

/// Which rule of which resource: `namespace/name/rule`, where `rule` is the rule's own name
/// (an Istio route `name`, a Gateway API rule `name`) or else its index. Bounded by the
/// config, so fit for a metric label.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleName {
    /// The resource's kind.
    pub kind: RouteKind,
    /// The resource's namespace.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
    /// The rule's name, or its index in the resource's list.
    pub rule: String,
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.name, self.rule)
    }
}

// === conditions ===

/// Conditions on a request, all of which must hold. Empty matches every request.
///
/// The destination port is not a condition: rules are compiled per port, so a rule that is
/// only for some ports (Istio's `match.port`, a Gateway API `parentRef.port`) is simply not
/// in the other ports' tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// The match's own name (Istio `match[].name`), appended to the rule's in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The path (without the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// The method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StrMatch>,
    /// The authority (`Host`) as the request carries it, port included if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StrMatch>,
    /// The scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StrMatch>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryMatch>,
    /// Labels the calling workload must carry (Istio `sourceLabels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// The calling workload's namespace (Istio `sourceNamespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// A condition on the request path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathMatch {
    /// The whole path (Istio `uri.exact`, Gateway API `Exact`, a gRPC service and method).
    Exact {
        /// The path.
        value: String,
        /// Compared without ASCII case (Istio `ignoreUriCase`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ignore_case: bool,
    },
    /// A string prefix (Istio `uri.prefix`, and a gRPC service alone as `/service/`):
    /// `/api` matches `/api`, `/api/x` and `/apix`.
    Prefix {
        /// The prefix.
        value: String,
        /// Compared without ASCII case (Istio `ignoreUriCase`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ignore_case: bool,
    },
    /// A prefix of whole `/`-separated segments (Gateway API `PathPrefix`): `/v2` matches
    /// `/v2`, `/v2/` and `/v2/x`, not `/v2x`. Held without its trailing `/`, so `/` is the
    /// empty string and matches every path.
    Segments {
        /// The prefix, without a trailing `/`.
        value: String,
    },
    /// A regular expression over the whole path.
    Regex {
        /// The expression.
        pattern: Pattern,
    },
}

/// A condition on a string (method, authority, scheme).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// A regular expression over the whole value.
    Regex(Pattern),
}

/// A condition on a request header. Several values of one header are compared as one
/// value joined with `,`, as Envoy does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// The header, compared without case.
    pub name: HeaderKey,
    /// What its value must be.
    pub condition: ValueMatch,
    /// The result is inverted (Istio `withoutHeaders`): the condition holds when the header
    /// is absent or does not satisfy `condition`. `Present` inverted means "absent".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// A condition on a query parameter: its first occurrence, percent-decoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryMatch {
    /// The parameter name, compared exactly (after percent-decoding).
    pub name: String,
    /// What its value must be.
    pub condition: ValueMatch,
}

/// What a header or query parameter value must be. Every variant but `Present` fails when
/// the header or parameter is absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// A regular expression over the whole value.
    Regex(Pattern),
    /// Present, with any value (Istio's `{}`).
    Present,
}

// === actions ===

/// What a selected rule does with the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward to one of the destinations, chosen by weight per request
    /// ([`super::pick_weighted`]).
    Forward(Vec<WeightedDestination>),
    /// Answer with a redirect ([`super::redirect_location`]).
    Redirect(Redirect),
    /// Answer without forwarding.
    Respond(DirectResponse),
}

/// A destination of a rule and its share of the requests (or connections).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedDestination {
    /// Relative to the other destinations' weights; always positive (a weight of 0 is left
    /// out when compiling).
    pub weight: u32,
    /// Where to.
    pub backend: Backend,
    /// Request header changes when this destination is chosen, after the rule's.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Response header changes when this destination is chosen, after the rule's.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A Service of the snapshot, optionally narrowed to a DestinationRule subset and a
    /// Service port.
    Service {
        /// Fully qualified host (`NAME.NS.svc.cluster.local`). A VirtualService may name a
        /// host the snapshot does not know; the proxy answers 503 for it, as Envoy answers a
        /// route to a missing cluster.
        host: String,
        /// A subset of the host's DestinationRule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subset: Option<String>,
        /// The Service port; `None` keeps the port the request was addressed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// A Gateway API backendRef the mesh cannot send to (a Service that does not exist, a
    /// port it does not have, a kind other than Service). Requests that pick it are answered
    /// 500, as the Gateway API requires; the others of the rule are unaffected.
    Invalid {
        /// Why, for the 500's log line.
        reason: String,
    },
}

/// Answer with a redirect. Every part left `None` keeps the request's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// The scheme of the `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host of the `Location` (Istio's `authority` may carry a port too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Which port the `Location` names.
    pub port: RedirectPort,
    /// How the path changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// 301, 302, 303, 307 or 308 (or any 3xx from a VirtualService).
    pub status: u16,
}

/// Which port a redirect's `Location` names. A port that is the scheme's default (80 for
/// `http`, 443 for `https`) is always left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    /// Istio without `port`/`derivePort`, as Envoy: the port the request's authority named,
    /// if any; none when the redirect replaces the host; none when it changes the scheme
    /// and the port was the old scheme's default.
    Authority,
    /// Gateway API without `port`: the redirect scheme's well-known port when the redirect
    /// sets a scheme, else the port the request came in on (the Service port).
    Listener,
    /// This port.
    Fixed(u16),
    /// Istio `derivePort: FROM_PROTOCOL_DEFAULT`: the scheme's default (so none).
    SchemeDefault,
    /// Istio `derivePort: FROM_REQUEST_PORT`: the port the request came in on.
    RequestPort,
}

/// Answer with a fixed response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// 200..=599.
    pub status: u16,
    /// The body; base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "base64_body")]
    pub body: Option<Vec<u8>>,
}

/// A direct response body as base64 text, so any bytes survive JSON.
mod base64_body {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        body: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match body {
            Some(bytes) => {
                serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

// === filters ===

/// What happens to a request on its way, and to its response. Applied in this order:
/// fault (delay, then abort), request header changes (the rule's, then the chosen
/// destination's), rewrite, mirrors; timeout and retries around the forwarding; response
/// header changes (the rule's, then the destination's) on the way back. On a redirect or a
/// direct response only the fault and the response header changes apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Changes to the request headers.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Changes to the response headers.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// Path and authority rewrite before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Copies of the request, responses ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Delays and aborts injected for a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The whole request's deadline, retries included; `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Each attempt's deadline (Istio `retries.perTryTimeout`, Gateway API
    /// `timeouts.backendRequest`); `None`: only `timeout` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// When to try again; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
}

impl Filters {
    /// Whether nothing happens on the way.
    pub fn is_empty(&self) -> bool {
        self == &Filters::default()
    }
}

/// Header changes, applied remove, then set, then add (as Envoy does): `set` replaces every
/// value a header had, `add` appends a value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers to overwrite.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderPair>,
    /// Headers to append to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderPair>,
    /// Headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<HeaderKey>,
}

impl HeaderOps {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A header name and a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPair {
    /// The name.
    pub name: HeaderKey,
    /// The value.
    pub value: HeaderText,
}

/// A rewrite before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// How the path changes ([`super::rewrite_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// The new authority (`Host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// How a path changes, for rewrites and redirects. The query is always kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// Replace the whole path (Gateway API `ReplaceFullPath`, Istio redirect `uri`).
    Full(String),
    /// Replace what the selecting condition matched (Gateway API `ReplacePrefixMatch`, Istio
    /// rewrite `uri` and redirect `prefixRewrite`); see [`super::rewrite_path`] for each
    /// kind of path condition.
    Prefix(String),
    /// Replace every match of `pattern` with `substitution` (`$1` for groups; Istio
    /// `uriRegexRewrite`, whose `\1` is translated when compiling).
    Regex {
        /// The expression, not anchored.
        pattern: RewritePattern,
        /// The replacement.
        substitution: String,
    },
}

/// A copy of the request for another Service; its response is ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Fully qualified host.
    pub host: String,
    /// A subset of the host's DestinationRule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The Service port; `None` keeps the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Share of requests copied, 0..=100.
    pub percent: f64,
}

/// Fault injection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Delay before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    /// Answer with an error instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

/// A fixed delay for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// How long.
    pub duration: Duration,
    /// Share of requests delayed, 0..=100.
    pub percent: f64,
}

/// An error answer for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// What the answer is.
    pub status: AbortStatus,
    /// Share of requests aborted, 0..=100.
    pub percent: f64,
}

/// The error an abort answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortStatus {
    /// This HTTP status, 200..=599.
    Http(u16),
    /// This gRPC status code (`grpc-status`, 0..=16), with HTTP status 200.
    Grpc(u16),
}

/// A retry policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt; at least 1 (no retries is no policy).
    pub attempts: u32,
    /// What failures are retried.
    pub retry_on: Vec<RetryOn>,
    /// HTTP statuses retried under [`RetryOn::RetriableStatusCodes`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// Base interval between attempts; `None`: Envoy's 25 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Retries avoid endpoints already tried.
    pub ignore_previous_hosts: bool,
}

impl RetryPolicy {
    /// Istio's default for routes that do not say (`retries` unset): two retries on
    /// connection failures, refused streams, gRPC `unavailable` and `cancelled`, and HTTP
    /// 503, on other endpoints than the ones tried.
    pub fn mesh_default() -> Self {
        RetryPolicy {
            attempts: 2,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Unavailable,
                RetryOn::Cancelled,
                RetryOn::RetriableStatusCodes,
            ],
            status_codes: vec![503],
            backoff: None,
            ignore_previous_hosts: true,
        }
    }
}

/// A failure a retry policy retries (Envoy's `retry_on` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RetryOn {
    /// Any 5xx, or no response (reset, connect failure, timeout of an attempt).
    #[serde(rename = "5xx")]
    FiveXx,
    /// 502, 503 or 504.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The connection was reset or the stream ended without a response.
    #[serde(rename = "reset")]
    Reset,
    /// Like `reset`, but only before any of the request was sent.
    #[serde(rename = "reset-before-request")]
    ResetBeforeRequest,
    /// The connection to the endpoint could not be made.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// 409.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// The endpoint refused the HTTP/2 stream (`REFUSED_STREAM`).
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// A status in [`RetryPolicy::status_codes`].
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    /// Envoy's rate limiter refused the request. Trellis has no rate limiter: never
    /// happens.
    #[serde(rename = "envoy-ratelimited")]
    EnvoyRatelimited,
    /// A response header Envoy was configured to look for. Not configurable in Istio or
    /// Trellis: never happens.
    #[serde(rename = "retriable-headers")]
    RetriableHeaders,
    /// An HTTP/3 failure after connecting. Trellis does not speak HTTP/3: never happens.
    #[serde(rename = "http3-post-connect-failure")]
    Http3PostConnectFailure,
    /// gRPC status `CANCELLED`.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// gRPC status `DEADLINE_EXCEEDED`.
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// gRPC status `INTERNAL`.
    #[serde(rename = "internal")]
    Internal,
    /// gRPC status `RESOURCE_EXHAUSTED`.
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    /// gRPC status `UNAVAILABLE`.
    #[serde(rename = "unavailable")]
    Unavailable,
}

impl RetryOn {
    /// Every condition, for parsing.
    pub const ALL: [RetryOn; 16] = [
        RetryOn::FiveXx,
        RetryOn::GatewayError,
        RetryOn::Reset,
        RetryOn::ResetBeforeRequest,
        RetryOn::ConnectFailure,
        RetryOn::Retriable4xx,
        RetryOn::RefusedStream,
        RetryOn::RetriableStatusCodes,
        RetryOn::EnvoyRatelimited,
        RetryOn::RetriableHeaders,
        RetryOn::Http3PostConnectFailure,
        RetryOn::Cancelled,
        RetryOn::DeadlineExceeded,
        RetryOn::Internal,
        RetryOn::ResourceExhausted,
        RetryOn::Unavailable,
    ];

    /// The Envoy name (`5xx`, `connect-failure`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::FiveXx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::Reset => "reset",
            RetryOn::ResetBeforeRequest => "reset-before-request",
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::Retriable4xx => "retriable-4xx",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::RetriableStatusCodes => "retriable-status-codes",
            RetryOn::EnvoyRatelimited => "envoy-ratelimited",
            RetryOn::RetriableHeaders => "retriable-headers",
            RetryOn::Http3PostConnectFailure => "http3-post-connect-failure",
            RetryOn::Cancelled => "cancelled",
            RetryOn::DeadlineExceeded => "deadline-exceeded",
            RetryOn::Internal => "internal",
            RetryOn::ResourceExhausted => "resource-exhausted",
            RetryOn::Unavailable => "unavailable",
        }
    }

    /// The condition an Envoy name stands for.
    pub fn parse(name: &str) -> Option<RetryOn> {
        RetryOn::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

// === TCP ===

/// TCP rules in order; the first whose conditions hold takes the connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoutes {
    /// The rules.
    pub rules: Vec<TcpRule>,
}

/// One TCP rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRule {
    /// Where it comes from.
    pub name: RuleName,
    /// Any one selects the rule; empty selects every connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<SourceMatch>,
    /// Where connections go, by weight. Never empty.
    pub destinations: Vec<WeightedDestination>,
}

/// Conditions on a connection — the calling workload and, for TLS, the server name it
/// asks for — all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceMatch {
    /// Labels the caller must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// The caller's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Server names (TLS SNI, lower case) of which the connection's must be one; `*.suffix`
    /// matches any name ending in `.suffix`, `*` any name. Empty: no condition. A VirtualService
    /// `tls` rule always has some, so a connection without SNI never matches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
}

impl SourceMatch {
    /// Whether `sni` (the connection's server name, if it sent one) passes the SNI condition.
    pub fn sni_matches(&self, sni: Option<&str>) -> bool {
        if self.sni_hosts.is_empty() {
            return true;
        }
        let Some(sni) = sni else {
            return false;
        };
        let sni = sni.to_ascii_lowercase();
        self.sni_hosts.iter().any(|h| match h.strip_prefix('*') {
            Some("") => true,
            Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
            None => *h == sni,
        })
    }
}
