//! The Gateway API `GRPCRoute`: for gRPC calls to its parents (Services, for the mesh), rules
//! of matches (service, method, metadata), filters and weighted backends.

use serde::{Deserialize, Serialize};

use super::common::{
    check_filter_fields, check_filter_repeats, check_rule_name, default_filters_and_backends,
    route_notices, validate_filtered_backends, validate_header_matches, validate_route_spec,
    FilteredBackendRef, HeaderMatch, HeaderMatchType, HeaderModifier, LocalObjectReference,
    ParentReference, RequestMirror, RouteFilter, RouteRule, SharedFilterConfig,
};
use super::http_filter::MAX_FILTERS;
use super::http_route::MAX_MATCHES;
use super::validate::{check_max_items, check_string, push, GatewayError, Rule, MAX_PATH_LEN};
use crate::resources::notice::Notice;
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;
use crate::resources::ObjectMeta;

/// Filter types that may appear at most once in a GRPCRoute filter list.
const UNREPEATABLE: [&str; 2] = ["RequestHeaderModifier", "ResponseHeaderModifier"];

/// A Gateway API `GRPCRoute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRoute {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Parents, hostnames and rules.
    pub spec: GrpcRouteSpec,
}

/// The spec of a [`GrpcRoute`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    /// What the route attaches to: Services for the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host (`:authority`) values the route applies to; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The rules; unlike HTTPRoute's, they have no default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GrpcRouteRule>,
}

/// One rule: calls matching any of `matches` (every call when there are none) go through
/// `filters` to `backendRefs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    /// A name for status and policies; a DNS subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    /// Processing for every call of the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GrpcRouteFilter>,
    /// Where calls go, by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<GrpcBackendRef>,
}

/// Conditions that must all hold for a call to match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    /// The service and method condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Metadata (header) conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A condition on the called service and/or method.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// How to compare; defaults to [`HeaderMatchType::Exact`].
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HeaderMatchType>,
    /// The fully qualified service (`grpc.health.v1.Health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method (`Check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// One GRPCRoute filter: its type, and the configuration field of that type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteFilter {
    /// Which filter this is; the field of the same name must be set, and no other.
    #[serde(rename = "type")]
    pub type_: GrpcRouteFilterType,
    /// For [`GrpcRouteFilterType::RequestHeaderModifier`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For [`GrpcRouteFilterType::ResponseHeaderModifier`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For [`GrpcRouteFilterType::RequestMirror`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// For [`GrpcRouteFilterType::ExtensionRef`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

/// The kinds of GRPCRoute filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GrpcRouteFilterType {
    /// Set, add or remove response metadata.
    ResponseHeaderModifier,
    /// Set, add or remove request metadata.
    RequestHeaderModifier,
    /// Copy calls to another backend.
    RequestMirror,
    /// An implementation-specific filter.
    ExtensionRef,
}

impl GrpcRouteFilterType {
    /// The name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            GrpcRouteFilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
            GrpcRouteFilterType::RequestHeaderModifier => "RequestHeaderModifier",
            GrpcRouteFilterType::RequestMirror => "RequestMirror",
            GrpcRouteFilterType::ExtensionRef => "ExtensionRef",
        }
    }
}

/// A weighted backend of a rule, with filters for the calls sent to it.
pub type GrpcBackendRef = FilteredBackendRef<GrpcRouteFilter>;

/// `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`: a dotted protobuf name.
fn is_grpc_service(value: &str) -> bool {
    let value = value.strip_prefix('.').unwrap_or(value);
    value.split('.').all(is_grpc_identifier)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`
fn is_grpc_identifier(value: &str) -> bool {
    let mut bytes = value.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Exact service names.
const SERVICE: Rule = Rule {
    what: "gRPC service",
    max_len: MAX_PATH_LEN,
    valid: is_grpc_service,
    words: "dot-separated identifiers of letters, digits and '_', optionally after a '.'",
    may_be_empty: false,
};
/// Exact method names.
const METHOD: Rule = Rule {
    what: "gRPC method",
    max_len: MAX_PATH_LEN,
    valid: is_grpc_identifier,
    words: "letters, digits and '_', not starting with a digit",
    may_be_empty: false,
};

impl GrpcRouteSpec {
    /// Fills in every default the CRD schema declares, as the Kubernetes API server does on
    /// admission: parentRef `group`/`kind` (`gateway.networking.k8s.io`/`Gateway`),
    /// backendRef `group`/`kind`/`weight` (`""`/`Service`/1), method and header match
    /// `type` (`Exact`), mirror `fraction.denominator` (100).
    pub fn apply_defaults(&mut self) {
        for parent in &mut self.parent_refs {
            parent.apply_defaults();
        }
        for rule in &mut self.rules {
            for m in &mut rule.matches {
                if let Some(method) = &mut m.method {
                    method.type_.get_or_insert(HeaderMatchType::Exact);
                }
                for header in &mut m.headers {
                    header.type_.get_or_insert(HeaderMatchType::Exact);
                }
            }
            default_filters_and_backends(&mut rule.filters, &mut rule.backend_refs);
        }
    }

    /// Adds the problems of this spec to `out`: the CRD's schema and CEL rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        validate_route_spec(&self.parent_refs, &self.hostnames, &self.rules, out);
    }

    /// The mesh does not route with GRPCRoutes yet; parents other than Services are outside
    /// the mesh altogether.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        route_notices(&self.parent_refs, out);
    }
}

impl RouteRule for GrpcRouteRule {
    fn match_count(&self) -> usize {
        self.matches.len()
    }

    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_rule_name(self.name.as_deref(), &path.field("name"), out);
        let matches = path.field("matches");
        check_max_items("matches", self.matches.len(), MAX_MATCHES, &matches, out);
        for (i, m) in self.matches.iter().enumerate() {
            let at = matches.index(i);
            if let Some(method) = &m.method {
                method.validate(&at.field("method"), out);
            }
            validate_header_matches(&m.headers, &at.field("headers"), out);
        }
        GrpcRouteFilter::validate_list(&self.filters, &path.field("filters"), out);
        validate_filtered_backends(&self.backend_refs, &path.field("backendRefs"), out);
    }
}

impl GrpcMethodMatch {
    /// Checks the match (at `path`): something to match on, and, for exact matches, names
    /// that can be a protobuf service and method. Regular expressions are left to the
    /// implementation, as by the CRD.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if self.service.is_none() && self.method.is_none() {
            push(out, path.clone(), GatewayError::EmptyMethodMatch);
        }
        let exact = self.type_.unwrap_or_default() == HeaderMatchType::Exact;
        for (rule, field, value) in [
            (SERVICE, "service", &self.service),
            (METHOD, "method", &self.method),
        ] {
            let Some(value) = value else { continue };
            let at = path.field(field);
            if exact {
                check_string(rule, value, &at, out);
            } else {
                // The CRD bounds only the length of a regular expression.
                let any = Rule {
                    valid: |_| true,
                    may_be_empty: true,
                    ..rule
                };
                check_string(any, value, &at, out);
            }
        }
    }
}

impl RouteFilter for GrpcRouteFilter {
    /// Fills in the schema defaults of a mirror.
    fn apply_defaults(&mut self) {
        if let Some(mirror) = &mut self.request_mirror {
            mirror.apply_defaults();
        }
    }

    /// Checks a GRPCRoute filter list (at `path`): size, each filter, header modifiers once.
    fn validate_list(filters: &[Self], path: &FieldPath, out: &mut Vec<Violation>) {
        check_max_items("filters", filters.len(), MAX_FILTERS, path, out);
        for (i, filter) in filters.iter().enumerate() {
            filter.validate(&path.index(i), out);
        }
        check_filter_repeats(
            filters.iter().map(|f| f.type_.name()),
            &UNREPEATABLE,
            path,
            out,
        );
    }
}

impl GrpcRouteFilter {
    /// Checks the filter (at `path`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let shared = SharedFilterConfig {
            request_header_modifier: self.request_header_modifier.as_ref(),
            response_header_modifier: self.response_header_modifier.as_ref(),
            request_mirror: self.request_mirror.as_ref(),
        };
        let [request_modifier, response_modifier, mirror] = shared.fields();
        let fields = [
            request_modifier,
            response_modifier,
            mirror,
            ("extensionRef", "ExtensionRef", self.extension_ref.is_some()),
        ];
        check_filter_fields(self.type_.name(), &fields, path, out);
        shared.validate(path, out);
        if let Some(extension) = &self.extension_ref {
            extension.validate(&path.field("extensionRef"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_names() {
        for ok in ["proto.EchoTestService", ".pkg.Svc", "_a", "Health"] {
            assert!(is_grpc_service(ok), "{ok}");
        }
        for bad in ["", "pkg..Svc", "1pkg.Svc", "pkg.Svc/Echo", "pkg.", ".."] {
            assert!(!is_grpc_service(bad), "{bad}");
        }
        assert!(is_grpc_identifier("Echo_2"));
        assert!(!is_grpc_identifier("2Echo"));
        assert!(!is_grpc_identifier("Echo.x"));
    }
}
