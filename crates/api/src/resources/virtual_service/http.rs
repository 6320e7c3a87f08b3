//! HTTP routes of a VirtualService: the match conditions, the weighted destinations, and the
//! validation that ties a route's parts together (which actions may be combined, weights).
//! The alternatives to forwarding are in [`super::http_actions`], the per-request policies
//! (retries, faults, CORS, ...) in [`super::http_policy`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::http_actions::{Delegate, HttpDirectResponse, HttpRedirect, HttpRewrite};
use super::http_policy::{CorsPolicy, Headers, HttpFaultInjection, HttpMirrorPolicy, HttpRetry};
use super::{Destination, VirtualServiceError};
use crate::resources::istio::{
    check_exclusive, check_gateway_name, check_header_name, check_label_map, check_min_1ms,
    check_port, check_range, push, Duration, HeaderValueMatch, LabelRule, Percent, StringMatch,
};
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};

/// What the weights of a multi-destination route must add up to.
const TOTAL_WEIGHT: i64 = 100;

/// One HTTP route: conditions, then where matching requests go (weighted destinations, a
/// redirect, a direct response or a delegate) and what happens on the way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// A name for logs and debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not implemented: match conditions (uri, headers, port, ...); any one matching selects
    /// the route.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    /// The destinations, with weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Not implemented: answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Not implemented: answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Not implemented: hand the request to the routes of another VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Not implemented: rewrite the path or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Not implemented: request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Not implemented: retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Not implemented: fault injection (delays, aborts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Not implemented: copy requests to this destination too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Not implemented: copy requests to these destinations too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Not implemented: share of requests mirrored, in percent (deprecated upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    /// Not implemented. Istio's schema still carries this snake_case spelling of
    /// `mirrorPercent` as a field of its own, so it is kept apart here too.
    #[serde(
        default,
        rename = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent_legacy: Option<u32>,
    /// Not implemented: share of requests mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// Not implemented: CORS policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Not implemented: request/response header manipulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Conditions on a request; all that are set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// A name, appended to the route's name in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// The URI scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// The authority (`Host` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Request headers, by lowercase name; `{}` matches presence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValueMatch>,
    /// The destination port of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels the calling workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways the match applies to, overriding the VirtualService's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Query parameters; `{}` matches presence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, HeaderValueMatch>,
    /// Whether `uri` is compared case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    /// Headers that must not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, HeaderValueMatch>,
    /// The namespace the calling workload must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// A prefix for the route's statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A destination of an [`HttpRoute`] and its share of the traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Share of the traffic, in percent. Optional with a single destination; with several,
    /// they must add up to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Not implemented: header manipulation for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Reports a weight below zero.
pub(super) fn check_weight(weight: Option<i32>, path: &FieldPath, out: &mut Vec<Violation>) {
    if let Some(weight) = weight {
        if weight < 0 {
            push(
                out,
                path.clone(),
                ValidationError::NegativeWeight { weight },
            );
        }
    }
}

/// Istio's rule for a route's weights: a lone destination takes all traffic whatever its
/// weight says, but several must spell out a split that adds up to 100. Summed in i64 so
/// that huge weights cannot overflow into a sum that happens to look right.
pub(super) fn check_weight_sum(
    weights: &[Option<i32>],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if weights.len() > 1 {
        let total: i64 = weights.iter().map(|w| i64::from(w.unwrap_or(0))).sum();
        if total != TOTAL_WEIGHT {
            push(out, path.clone(), ValidationError::WeightSum { total });
        }
    }
}

impl HttpRoute {
    /// Adds the semantic problems of this route (at `path`) to `out`. `in_delegate` says
    /// whether the route belongs to a delegate VirtualService, which cannot delegate again.
    pub(super) fn validate(&self, path: &FieldPath, in_delegate: bool, out: &mut Vec<Violation>) {
        let actions = [
            ("route", !self.route.is_empty()),
            ("redirect", self.redirect.is_some()),
            ("directResponse", self.direct_response.is_some()),
            ("delegate", self.delegate.is_some()),
        ];
        let found: Vec<&str> = actions
            .iter()
            .filter_map(|(name, set)| set.then_some(*name))
            .collect();
        match found.len() {
            0 => push(out, path.clone(), ValidationError::NoHttpAction),
            1 => {}
            _ => push(
                out,
                path.clone(),
                VirtualServiceError::ConflictingActions {
                    fields: "route, redirect, directResponse or delegate",
                    found: found.join(" and "),
                },
            ),
        }
        if in_delegate && self.delegate.is_some() {
            push(
                out,
                path.field("delegate"),
                VirtualServiceError::DelegateField { field: "delegate" },
            );
        }
        if self.rewrite.is_some() && self.redirect.is_some() {
            push(
                out,
                path.clone(),
                VirtualServiceError::ConflictingActions {
                    fields: "rewrite or redirect",
                    found: "rewrite and redirect".into(),
                },
            );
        }
        check_exclusive(
            "mirror or mirrors",
            &[
                ("mirror", self.mirror.is_some()),
                ("mirrors", !self.mirrors.is_empty()),
            ],
            path,
            out,
        );
        for (k, m) in self.match_.iter().enumerate() {
            m.validate(&path.field("match").index(k), out);
        }
        let route_path = path.field("route");
        for (j, dest) in self.route.iter().enumerate() {
            let at = route_path.index(j);
            dest.destination.validate(&at.field("destination"), out);
            check_weight(dest.weight, &at.field("weight"), out);
            if let Some(headers) = &dest.headers {
                headers.validate(&at.field("headers"), out);
            }
        }
        let weights: Vec<Option<i32>> = self.route.iter().map(|d| d.weight).collect();
        check_weight_sum(&weights, &route_path, out);
        self.validate_policies(path, out);
    }

    /// Checks the optional per-request policies.
    fn validate_policies(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let Some(redirect) = &self.redirect {
            redirect.validate(&path.field("redirect"), out);
        }
        if let Some(response) = &self.direct_response {
            response.validate(&path.field("directResponse"), out);
        }
        if let Some(delegate) = &self.delegate {
            delegate.validate(&path.field("delegate"), out);
        }
        if let Some(rewrite) = &self.rewrite {
            rewrite.validate(&path.field("rewrite"), out);
        }
        check_min_1ms(self.timeout.as_ref(), &path.field("timeout"), out);
        if let Some(retries) = &self.retries {
            retries.validate(&path.field("retries"), out);
        }
        if let Some(fault) = &self.fault {
            fault.validate(&path.field("fault"), out);
        }
        if let Some(mirror) = &self.mirror {
            mirror.validate(&path.field("mirror"), out);
        }
        for (i, mirror) in self.mirrors.iter().enumerate() {
            mirror.validate(&path.field("mirrors").index(i), out);
        }
        for (name, value) in [
            ("mirrorPercent", self.mirror_percent),
            ("mirror_percent", self.mirror_percent_legacy),
        ] {
            check_range(
                value.map(i64::from),
                "mirror percent",
                0,
                100,
                &path.field(name),
                out,
            );
        }
        if let Some(percentage) = &self.mirror_percentage {
            percentage.validate("mirrorPercentage", &path.field("mirrorPercentage"), out);
        }
        if let Some(cors) = &self.cors_policy {
            cors.validate(&path.field("corsPolicy"), out);
        }
        if let Some(headers) = &self.headers {
            headers.validate(&path.field("headers"), out);
        }
    }
}

impl HttpMatchRequest {
    /// Checks the conditions at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let strings = [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ];
        for (name, m) in strings {
            if let Some(m) = m {
                m.validate(&path.field(name), out);
            }
        }
        for (field, map) in [
            ("headers", &self.headers),
            ("withoutHeaders", &self.without_headers),
        ] {
            for (name, value) in map {
                let at = path.field(field).field(name);
                check_header_name(name, &at, out);
                value.validate(&at, out);
            }
        }
        for (name, value) in &self.query_params {
            let at = path.field("queryParams").field(name);
            if name.is_empty() {
                push(
                    out,
                    at.clone(),
                    ValidationError::Empty {
                        what: "query parameter name",
                    },
                );
            }
            value.validate(&at, out);
        }
        check_port(self.port, &path.field("port"), out);
        check_label_map(
            &self.source_labels,
            LabelRule::Labels,
            &path.field("sourceLabels"),
            out,
        );
        for (i, gateway) in self.gateways.iter().enumerate() {
            check_gateway_name(gateway, &path.field("gateways").index(i), out);
        }
    }
}
