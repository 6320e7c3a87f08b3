//! The Gateway API `HTTPRoute`: for HTTP requests to its parents (Services, for the mesh),
//! rules of matches (path, headers, query parameters, method), filters and weighted backends.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::common::{
    check_rule_name, default_filters_and_backends, route_notices, validate_filtered_backends,
    validate_header_matches, validate_route_spec, FilteredBackendRef, HeaderMatch, HeaderMatchType,
    ParentReference, RouteFilter, RouteRule, MAX_HEADERS,
};
use super::http_filter::{HttpRouteFilter, HttpRouteFilterType};
use super::validate::{
    check_len, check_max_items, check_string, check_unique, parse_duration_ms, path_problem, push,
    GatewayError, Rule, HEADER_NAME, MAX_PATH_LEN,
};
use crate::resources::notice::Notice;
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;
use crate::resources::ObjectMeta;

/// Most matches in a rule.
pub(crate) const MAX_MATCHES: usize = 64;
/// The path a match without a path (or a route without rules) matches: every path.
pub const DEFAULT_PATH: &str = "/";

/// A Gateway API `HTTPRoute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Parents, hostnames and rules.
    pub spec: HttpRouteSpec,
}

/// The spec of an [`HttpRoute`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// What the route attaches to: Services for the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host header values the route applies to; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules. Absent means one rule matching every request (with no backends); an
    /// explicit empty list is rejected, as by the CRD (`minItems: 1`).
    #[serde(
        default,
        deserialize_with = "non_empty_rules",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub rules: Vec<HttpRouteRule>,
}

/// One rule: requests matching any of `matches` go through `filters` to `backendRefs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// A name for status and policies; a DNS subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects the rule. Defaults to one match of every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Processing for every request of the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Where requests go, by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    /// Request timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
}

/// Conditions that must all hold for a request to match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// The path condition; defaults to a prefix match of `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    /// The method condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// A path condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// How to compare; defaults to [`PathMatchType::PathPrefix`].
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<PathMatchType>,
    /// The path; defaults to [`DEFAULT_PATH`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The whole path, exactly.
    Exact,
    /// A prefix of whole `/`-separated segments (the default).
    #[default]
    PathPrefix,
    /// A regular expression (dialect left to the implementation).
    RegularExpression,
}

/// A condition on one query parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamMatch {
    /// How to compare; defaults to [`HeaderMatchType::Exact`].
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HeaderMatchType>,
    /// The parameter name, compared exactly.
    pub name: String,
    /// The value to compare with.
    pub value: String,
}

/// An HTTP method a match can require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
    /// OPTIONS.
    Options,
    /// TRACE.
    Trace,
    /// PATCH.
    Patch,
}

impl HttpMethod {
    /// The method as written (`GET`).
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// A weighted backend of a rule, with filters for the requests sent to it.
pub type HttpBackendRef = FilteredBackendRef<HttpRouteFilter>;

/// Timeouts of a rule, as Gateway API durations (`10s`, `1h30m`, `500ms`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// For the whole request, retries included; `0s` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// For one request to a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// Deserializes `rules`, rejecting an empty list (an absent one is defaulted instead).
fn non_empty_rules<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<HttpRouteRule>, D::Error> {
    struct Rules;
    impl<'de> Visitor<'de> for Rules {
        type Value = Vec<HttpRouteRule>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("at least one rule")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut rules = Vec::new();
            while let Some(rule) = seq.next_element()? {
                rules.push(rule);
            }
            if rules.is_empty() {
                return Err(de::Error::invalid_length(0, &self));
            }
            Ok(rules)
        }
    }
    deserializer.deserialize_seq(Rules)
}

impl HttpPathMatch {
    /// The match type, defaulted.
    pub fn match_type(&self) -> PathMatchType {
        self.type_.unwrap_or_default()
    }

    /// The path, defaulted.
    pub fn value(&self) -> &str {
        self.value.as_deref().unwrap_or(DEFAULT_PATH)
    }
}

impl HttpRouteSpec {
    /// Fills in every default the CRD schema declares, as the Kubernetes API server does on
    /// admission (conformance manifests rely on them):
    ///
    /// * no `rules`: one rule; a rule with no `matches`: one match; a match with no `path`:
    ///   `{type: PathPrefix, value: "/"}`, and a path's missing `type`/`value` likewise;
    /// * header and query parameter match `type`: `Exact`;
    /// * parentRef `group`/`kind`: `gateway.networking.k8s.io`/`Gateway`;
    /// * backendRef (and mirror backendRef) `group`/`kind`: `""`/`Service`; `weight`: 1;
    /// * `requestRedirect.statusCode`: 302; mirror `fraction.denominator`: 100; CORS
    ///   `maxAge`: 5.
    ///
    /// An explicit empty `matches: []` is treated like an absent one: both mean "match every
    /// request" to implementations.
    pub fn apply_defaults(&mut self) {
        for parent in &mut self.parent_refs {
            parent.apply_defaults();
        }
        if self.rules.is_empty() {
            self.rules.push(HttpRouteRule::default());
        }
        for rule in &mut self.rules {
            if rule.matches.is_empty() {
                rule.matches.push(HttpRouteMatch::default());
            }
            for m in &mut rule.matches {
                let path = m.path.get_or_insert_with(HttpPathMatch::default);
                path.type_.get_or_insert(PathMatchType::PathPrefix);
                path.value.get_or_insert_with(|| DEFAULT_PATH.to_owned());
                for header in &mut m.headers {
                    header.type_.get_or_insert(HeaderMatchType::Exact);
                }
                for param in &mut m.query_params {
                    param.type_.get_or_insert(HeaderMatchType::Exact);
                }
            }
            default_filters_and_backends(&mut rule.filters, &mut rule.backend_refs);
        }
    }

    /// Adds the problems of this spec to `out`: the CRD's schema and CEL rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        validate_route_spec(&self.parent_refs, &self.hostnames, &self.rules, out);
    }

    /// The mesh does not route with HTTPRoutes yet; parents other than Services are outside
    /// the mesh altogether.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        route_notices(&self.parent_refs, out);
    }
}

/// Query parameter names follow the header name rules, under their own name in messages.
const QUERY_NAME: Rule = Rule {
    what: "query parameter name",
    ..HEADER_NAME
};

impl RouteRule for HttpRouteRule {
    fn match_count(&self) -> usize {
        self.matches.len()
    }

    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_rule_name(self.name.as_deref(), &path.field("name"), out);
        let matches = path.field("matches");
        check_max_items("matches", self.matches.len(), MAX_MATCHES, &matches, out);
        for (i, m) in self.matches.iter().enumerate() {
            m.validate(&matches.index(i), out);
        }
        let filters = path.field("filters");
        HttpRouteFilter::validate_list(&self.filters, &filters, out);
        validate_filtered_backends(&self.backend_refs, &path.field("backendRefs"), out);
        if !self.backend_refs.is_empty() {
            for (j, filter) in self.filters.iter().enumerate() {
                if filter.type_ == HttpRouteFilterType::RequestRedirect {
                    push(out, filters.index(j), GatewayError::RedirectWithBackends);
                }
            }
        }
        self.check_prefix_replacements(path, out);
        if let Some(timeouts) = &self.timeouts {
            timeouts.validate(&path.field("timeouts"), out);
        }
    }
}

impl HttpRouteRule {
    /// `replacePrefixMatch` (in a rule filter or a backend filter) replaces what a PathPrefix
    /// match matched, so the rule must have exactly one match, a PathPrefix one.
    ///
    /// The CRD counts backend filters with `exists_one`, so two backends that both replace a
    /// prefix slip through its rule; this check applies to each of them.
    fn check_prefix_replacements(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let single_prefix = match self.matches.as_slice() {
            [only] => only
                .path
                .as_ref()
                .is_some_and(|p| p.match_type() == PathMatchType::PathPrefix),
            _ => false,
        };
        if single_prefix {
            return;
        }
        let rule_filters = self
            .filters
            .iter()
            .enumerate()
            .map(|(j, f)| (path.field("filters").index(j), f));
        let backend_filters = self.backend_refs.iter().enumerate().flat_map(|(i, b)| {
            let at = path.field("backendRefs").index(i).field("filters");
            b.filters
                .iter()
                .enumerate()
                .map(move |(j, f)| (at.index(j), f))
        });
        for (at, filter) in rule_filters.chain(backend_filters) {
            if let Some(filter_type) = filter.replaces_prefix() {
                push(
                    out,
                    at,
                    GatewayError::PrefixReplaceNeedsOnePrefixMatch { filter_type },
                );
            }
        }
    }
}

impl HttpRouteMatch {
    /// Checks the match (at `path`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let Some(path_match) = &self.path {
            let at = path.field("path").field("value");
            let value = path_match.value();
            let len = value.chars().count();
            if len > MAX_PATH_LEN {
                let error = GatewayError::TooLong {
                    what: "path",
                    max: MAX_PATH_LEN,
                    len,
                };
                push(out, at, error);
            } else if path_match.match_type() != PathMatchType::RegularExpression {
                if let Some(reason) = path_problem(value) {
                    let value = value.to_owned();
                    push(out, at, GatewayError::InvalidPath { value, reason });
                }
            }
        }
        validate_header_matches(&self.headers, &path.field("headers"), out);
        let params = path.field("queryParams");
        check_max_items(
            "queryParams",
            self.query_params.len(),
            MAX_HEADERS,
            &params,
            out,
        );
        for (i, param) in self.query_params.iter().enumerate() {
            let at = params.index(i);
            check_string(QUERY_NAME, &param.name, &at.field("name"), out);
            check_len(
                "query parameter value",
                &param.value,
                MAX_PATH_LEN,
                &at.field("value"),
                out,
            );
        }
        let names = self
            .query_params
            .iter()
            .map(|p| p.name.as_str())
            .enumerate();
        check_unique(
            "query parameter name",
            names,
            |i| params.index(i).field("name"),
            out,
        );
    }
}

impl HttpRouteTimeouts {
    /// The whole request's timeout; `None` when absent, `0s` (none) or malformed (which
    /// validation refuses).
    pub fn request_duration(&self) -> Option<std::time::Duration> {
        nonzero_ms(self.request.as_deref())
    }

    /// Each backend request's timeout, as [`HttpRouteTimeouts::request_duration`].
    pub fn backend_request_duration(&self) -> Option<std::time::Duration> {
        nonzero_ms(self.backend_request.as_deref())
    }

    /// Checks the durations (at `path`) and that a backend request may not outlast the
    /// whole request (unless that has no timeout, `0s`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let parse = |field: &'static str, value: &Option<String>, out: &mut Vec<Violation>| {
            let value = value.as_deref()?;
            let ms = parse_duration_ms(value);
            if ms.is_none() {
                let error = GatewayError::Pattern {
                    what: "duration",
                    value: value.to_owned(),
                    rule: "1 to 4 numbers of at most 5 digits, each followed by h, m, s or ms",
                };
                push(out, path.field(field), error);
            }
            ms
        };
        let request = parse("request", &self.request, out);
        let backend = parse("backendRequest", &self.backend_request, out);
        if let (Some(request), Some(backend)) = (request, backend) {
            if request != 0 && backend > request {
                let error = GatewayError::BackendTimeoutTooLong {
                    backend_request: self.backend_request.clone().unwrap_or_default(),
                    request: self.request.clone().unwrap_or_default(),
                };
                push(out, path.field("backendRequest"), error);
            }
        }
    }
}

/// A Gateway API duration as a `Duration`, `None` for `0s` (which means "no timeout").
fn nonzero_ms(value: Option<&str>) -> Option<std::time::Duration> {
    parse_duration_ms(value?)
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis)
}
