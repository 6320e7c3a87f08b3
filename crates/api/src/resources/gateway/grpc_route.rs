//! The Gateway API `GRPCRoute`: for gRPC calls to its parents (Services, for the mesh), rules
//! of matches (service, method, metadata), filters and weighted backends.

use serde::{Deserialize, Serialize};

use super::common::{
    check_filter_fields, check_filter_repeats, check_rule_name, default_backend, parent_notices,
    validate_header_matches, validate_hostnames, validate_parent_refs, BackendView, HeaderMatch,
    HeaderMatchType, HeaderModifier, LocalObjectReference, ParentReference, RequestMirror,
    DEFAULT_WEIGHT,
};
use super::http_filter::MAX_FILTERS;
use super::http_route::{MAX_BACKENDS, MAX_MATCHES, MAX_RULES, MAX_TOTAL_MATCHES};
use super::validate::{check_max_items, check_string, push, GatewayError, Rule, MAX_PATH_LEN};
use crate::resources::notice::{Notice, NoticeReason};
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

/// A weighted backend of a rule, with filters that apply only when it is chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcBackendRef {
    /// API group; defaults to `""` (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; defaults to `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the backend.
    pub name: String,
    /// Namespace; the route's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the backend; required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Share of the traffic relative to the rule's other backends; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Filters for calls sent to this backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GrpcRouteFilter>,
}

impl GrpcBackendRef {
    /// The weight, defaulted.
    pub fn weight(&self) -> i32 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }
}

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
            rule.filters
                .iter_mut()
                .for_each(GrpcRouteFilter::apply_defaults);
            for backend in &mut rule.backend_refs {
                default_backend(&mut backend.group, &mut backend.kind);
                backend.weight.get_or_insert(DEFAULT_WEIGHT);
                backend
                    .filters
                    .iter_mut()
                    .for_each(GrpcRouteFilter::apply_defaults);
            }
        }
    }

    /// Adds the problems of this spec to `out`: the CRD's schema and CEL rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        validate_parent_refs(&self.parent_refs, &spec.field("parentRefs"), out);
        validate_hostnames(&self.hostnames, &spec.field("hostnames"), out);
        let rules = spec.field("rules");
        check_max_items("rules", self.rules.len(), MAX_RULES, &rules, out);
        let total: usize = self.rules.iter().map(|r| r.matches.len()).sum();
        if total > MAX_TOTAL_MATCHES {
            let error = GatewayError::TooManyMatches {
                max: MAX_TOTAL_MATCHES,
                total,
            };
            push(out, rules.clone(), error);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&rules.index(i), out);
        }
    }

    /// The mesh does not route with GRPCRoutes yet; parents other than Services are outside
    /// the mesh altogether.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        out.push(Notice::new(
            FieldPath::root(),
            NoticeReason::NotActedOn {
                kind: "GRPCRoute",
                action: "routed",
            },
        ));
        let parents = FieldPath::root().field("spec").field("parentRefs");
        parent_notices(&self.parent_refs, &parents, out);
    }
}

impl GrpcRouteRule {
    /// Checks the rule (at `path`).
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
        validate_filters(&self.filters, &path.field("filters"), out);
        let backends = path.field("backendRefs");
        check_max_items(
            "backendRefs",
            self.backend_refs.len(),
            MAX_BACKENDS,
            &backends,
            out,
        );
        for (i, backend) in self.backend_refs.iter().enumerate() {
            let at = backends.index(i);
            let view = BackendView {
                group: backend.group.as_deref(),
                kind: backend.kind.as_deref(),
                name: &backend.name,
                namespace: backend.namespace.as_deref(),
                port: backend.port,
                weight: backend.weight,
            };
            view.validate(&at, out);
            validate_filters(&backend.filters, &at.field("filters"), out);
        }
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

impl GrpcRouteFilter {
    /// Fills in the schema defaults of a mirror.
    fn apply_defaults(&mut self) {
        if let Some(mirror) = &mut self.request_mirror {
            mirror.apply_defaults();
        }
    }

    /// Checks the filter (at `path`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let fields = [
            (
                "requestHeaderModifier",
                "RequestHeaderModifier",
                self.request_header_modifier.is_some(),
            ),
            (
                "responseHeaderModifier",
                "ResponseHeaderModifier",
                self.response_header_modifier.is_some(),
            ),
            (
                "requestMirror",
                "RequestMirror",
                self.request_mirror.is_some(),
            ),
            ("extensionRef", "ExtensionRef", self.extension_ref.is_some()),
        ];
        check_filter_fields(self.type_.name(), &fields, path, out);
        if let Some(modifier) = &self.request_header_modifier {
            modifier.validate(&path.field("requestHeaderModifier"), out);
        }
        if let Some(modifier) = &self.response_header_modifier {
            modifier.validate(&path.field("responseHeaderModifier"), out);
        }
        if let Some(mirror) = &self.request_mirror {
            mirror.validate(&path.field("requestMirror"), out);
        }
        if let Some(extension) = &self.extension_ref {
            extension.validate(&path.field("extensionRef"), out);
        }
    }
}

/// Checks a GRPCRoute filter list (at `path`): size, each filter, header modifiers once.
fn validate_filters(filters: &[GrpcRouteFilter], path: &FieldPath, out: &mut Vec<Violation>) {
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
