//! Types the route kinds share: references to parents and backends, header matches and
//! header modifiers, request mirroring, and the checks and defaults that go with them.

use serde::{Deserialize, Serialize};

use super::validate::{
    check_len, check_max_items, check_port, check_range, check_string, check_unique, push,
    subdomain, GatewayError, GROUP, HEADER_NAME, HOSTNAME, KIND, MAX_HEADER_VALUE_LEN, NAMESPACE,
    OBJECT_NAME,
};
use super::GATEWAY_API_GROUP;
use crate::resources::notice::{Notice, NoticeReason};
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;

/// Most hostnames a route may list.
const MAX_HOSTNAMES: usize = 16;
/// Most parentRefs a route may list.
const MAX_PARENT_REFS: usize = 32;
/// Most entries in each of a header modifier's lists, and in a match's header list.
pub(crate) const MAX_HEADERS: usize = 16;
/// Most rules in an HTTPRoute or GRPCRoute.
pub(crate) const MAX_RULES: usize = 16;
/// Most matches across all rules of an HTTPRoute or GRPCRoute.
pub(crate) const MAX_TOTAL_MATCHES: usize = 128;
/// Most backends in a rule.
pub(crate) const MAX_BACKENDS: usize = 16;
/// Highest backend weight.
const MAX_WEIGHT: i32 = 1_000_000;

/// Default parentRef kind: routes attach to Gateways unless told otherwise.
pub const DEFAULT_PARENT_KIND: &str = "Gateway";
/// Default backendRef group: the core group.
pub const DEFAULT_BACKEND_GROUP: &str = "";
/// Default backendRef kind.
pub const DEFAULT_BACKEND_KIND: &str = "Service";
/// Default backendRef weight.
pub const DEFAULT_WEIGHT: i32 = 1;
/// Default mirror fraction denominator (the numerator is then a percentage).
pub const DEFAULT_DENOMINATOR: i32 = 100;

/// What a route attaches to: for the mesh (GAMMA) a Service (group `""` or `core`, kind
/// `Service`), for ingress a Gateway (the default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// API group; defaults to [`GATEWAY_API_GROUP`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; defaults to [`DEFAULT_PARENT_KIND`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace; the route's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// A named part of the parent (a Gateway listener, a Service port name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A port of the parent; absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl ParentReference {
    /// The group, defaulted.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(GATEWAY_API_GROUP)
    }

    /// The kind, defaulted.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or(DEFAULT_PARENT_KIND)
    }

    /// Whether the parent is a Service, which is what the mesh routes for.
    pub fn is_service(&self) -> bool {
        self.kind() == "Service" && matches!(self.group(), "" | "core")
    }

    /// Whether the parent is a Gateway (ingress, outside the mesh).
    pub fn is_gateway(&self) -> bool {
        self.kind() == DEFAULT_PARENT_KIND && self.group() == GATEWAY_API_GROUP
    }

    /// Fills in the schema defaults for `group` and `kind`.
    pub fn apply_defaults(&mut self) {
        self.group
            .get_or_insert_with(|| GATEWAY_API_GROUP.to_owned());
        self.kind
            .get_or_insert_with(|| DEFAULT_PARENT_KIND.to_owned());
    }

    /// The parent itself, without the section: what the sectionName rules compare. An
    /// absent and an empty namespace are the same parent, as in the CRD's rule.
    fn parent_key(&self) -> (&str, &str, &str, &str) {
        let namespace = self.namespace.as_deref().unwrap_or("");
        (self.group(), self.kind(), &self.name, namespace)
    }
}

/// Checks `spec.hostnames` (at `path`).
fn validate_hostnames(hostnames: &[String], path: &FieldPath, out: &mut Vec<Violation>) {
    check_max_items("hostnames", hostnames.len(), MAX_HOSTNAMES, path, out);
    for (i, hostname) in hostnames.iter().enumerate() {
        check_string(HOSTNAME, hostname, &path.index(i), out);
    }
}

/// Checks `spec.parentRefs` (at `path`): each reference's fields, and the CRD's rules for
/// several references to the same parent (all or none name a section, and sections differ).
pub(crate) fn validate_parent_refs(
    refs: &[ParentReference],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    check_max_items("parentRefs", refs.len(), MAX_PARENT_REFS, path, out);
    for (i, parent) in refs.iter().enumerate() {
        let at = path.index(i);
        if let Some(group) = &parent.group {
            check_string(GROUP, group, &at.field("group"), out);
        }
        if let Some(kind) = &parent.kind {
            check_string(KIND, kind, &at.field("kind"), out);
        }
        if let Some(namespace) = &parent.namespace {
            check_string(NAMESPACE, namespace, &at.field("namespace"), out);
        }
        check_string(OBJECT_NAME, &parent.name, &at.field("name"), out);
        if let Some(section) = &parent.section_name {
            check_string(
                subdomain("sectionName"),
                section,
                &at.field("sectionName"),
                out,
            );
        }
        check_port(parent.port, &at.field("port"), out);
    }
    // Reported once, at the later of two clashing references; an empty sectionName counts
    // as none, as in the CRD's rule.
    for (j, later) in refs.iter().enumerate() {
        let section = |p: &ParentReference| p.section_name.clone().filter(|s| !s.is_empty());
        let same_parent = refs[..j]
            .iter()
            .enumerate()
            .filter(|(_, earlier)| earlier.parent_key() == later.parent_key());
        for (i, earlier) in same_parent {
            let error = match (section(earlier), section(later)) {
                (None, None) => GatewayError::SectionNameNotUnique { first: i },
                (Some(a), Some(b)) if a == b => GatewayError::SectionNameNotUnique { first: i },
                (Some(_), Some(_)) => continue,
                _ => GatewayError::SectionNameRequired { other: i },
            };
            push(out, path.index(j), error);
            break;
        }
    }
}

/// The mesh's view of a route: parents other than Services are outside the mesh
/// altogether.
pub(crate) fn route_notices(refs: &[ParentReference], out: &mut Vec<Notice>) {
    let parents = FieldPath::root().field("spec").field("parentRefs");
    parent_notices(refs, &parents, out);
}

/// A notice for each parent that is not a Service.
fn parent_notices(refs: &[ParentReference], path: &FieldPath, out: &mut Vec<Notice>) {
    for (i, parent) in refs.iter().enumerate() {
        let reason = if parent.is_service() {
            continue;
        } else if parent.is_gateway() {
            NoticeReason::GatewayParent
        } else {
            NoticeReason::UnsupportedParent {
                group: parent.group().to_owned(),
                kind: parent.kind().to_owned(),
            }
        };
        out.push(Notice::new(path.index(i), reason));
    }
}

/// A backend without weight or filters: the target of a request mirror.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// API group; defaults to [`DEFAULT_BACKEND_GROUP`] (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; defaults to [`DEFAULT_BACKEND_KIND`].
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
}

/// A weighted backend of a TCPRoute rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// API group; defaults to [`DEFAULT_BACKEND_GROUP`] (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; defaults to [`DEFAULT_BACKEND_KIND`].
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
    /// Share of the traffic relative to the rule's other backends; defaults to
    /// [`DEFAULT_WEIGHT`]. 0 means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// Fills in the schema defaults every kind of backend reference shares: core group, kind
/// Service. (serde's `flatten` cannot be combined with `deny_unknown_fields`, so each
/// reference type spells its fields out and shares this and [`BackendView`] instead.)
pub(crate) fn default_backend(group: &mut Option<String>, kind: &mut Option<String>) {
    group.get_or_insert_with(|| DEFAULT_BACKEND_GROUP.to_owned());
    kind.get_or_insert_with(|| DEFAULT_BACKEND_KIND.to_owned());
}

/// The fields every kind of backend reference has, borrowed, so one function checks them.
pub(crate) struct BackendView<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

impl BackendView<'_> {
    /// Checks the fields (at `path`).
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let Some(group) = self.group {
            check_string(GROUP, group, &path.field("group"), out);
        }
        if let Some(kind) = self.kind {
            check_string(KIND, kind, &path.field("kind"), out);
        }
        check_string(OBJECT_NAME, self.name, &path.field("name"), out);
        if let Some(namespace) = self.namespace {
            check_string(NAMESPACE, namespace, &path.field("namespace"), out);
        }
        check_port(self.port, &path.field("port"), out);
        if let Some(weight) = self.weight {
            check_range(
                "weight",
                weight,
                (0, MAX_WEIGHT),
                &path.field("weight"),
                out,
            );
        }
        let group = self.group.unwrap_or(DEFAULT_BACKEND_GROUP);
        let kind = self.kind.unwrap_or(DEFAULT_BACKEND_KIND);
        // The CRD's rule compares the group with "" only; `core` is not special here.
        if group.is_empty() && kind == DEFAULT_BACKEND_KIND && self.port.is_none() {
            push(out, path.clone(), GatewayError::ServicePortRequired);
        }
    }
}

impl BackendObjectReference {
    /// Fills in the schema defaults.
    pub(crate) fn apply_defaults(&mut self) {
        default_backend(&mut self.group, &mut self.kind);
    }

    fn view(&self) -> BackendView<'_> {
        BackendView {
            group: self.group.as_deref(),
            kind: self.kind.as_deref(),
            name: &self.name,
            namespace: self.namespace.as_deref(),
            port: self.port,
            weight: None,
        }
    }
}

impl BackendRef {
    /// The weight, defaulted.
    pub fn weight(&self) -> i32 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }

    /// Fills in the schema defaults.
    pub(crate) fn apply_defaults(&mut self) {
        default_backend(&mut self.group, &mut self.kind);
        self.weight.get_or_insert(DEFAULT_WEIGHT);
    }

    /// Checks the reference (at `path`).
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        BackendView {
            group: self.group.as_deref(),
            kind: self.kind.as_deref(),
            name: &self.name,
            namespace: self.namespace.as_deref(),
            port: self.port,
            weight: self.weight,
        }
        .validate(path, out);
    }
}

/// What the route kinds with filters (HTTPRoute, GRPCRoute) need of their filter type, so
/// that [`FilteredBackendRef`] and [`validate_route_spec`] serve both.
pub(crate) trait RouteFilter: Sized {
    /// Fills in the filter's schema defaults.
    fn apply_defaults(&mut self);

    /// Checks a filter list of a rule or a backend (at `path`).
    fn validate_list(filters: &[Self], path: &FieldPath, out: &mut Vec<Violation>);
}

/// A weighted backend of an HTTPRoute or GRPCRoute rule, with filters (of the route kind's
/// filter type `F`) that apply only when it is chosen.
///
/// The deserialize bound is spelled out because serde would otherwise require `F: Default`
/// for the defaulted `filters` (a `Vec` defaults without it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    bound(deserialize = "F: Deserialize<'de>")
)]
pub struct FilteredBackendRef<F> {
    /// API group; defaults to [`DEFAULT_BACKEND_GROUP`] (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; defaults to [`DEFAULT_BACKEND_KIND`].
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
    /// Share of the traffic relative to the rule's other backends; defaults to
    /// [`DEFAULT_WEIGHT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Filters for requests (calls) sent to this backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<F>,
}

// Written out rather than derived: the derive would require `F: Default`, which filters,
// having no sensible default type, do not implement.
impl<F> Default for FilteredBackendRef<F> {
    fn default() -> Self {
        Self {
            group: None,
            kind: None,
            name: String::new(),
            namespace: None,
            port: None,
            weight: None,
            filters: Vec::new(),
        }
    }
}

impl<F> FilteredBackendRef<F> {
    /// The weight, defaulted.
    pub fn weight(&self) -> i32 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }
}

/// Fills in the schema defaults of a rule's filters and of its backends and their filters.
pub(crate) fn default_filters_and_backends<F: RouteFilter>(
    filters: &mut [F],
    backends: &mut [FilteredBackendRef<F>],
) {
    filters.iter_mut().for_each(F::apply_defaults);
    for backend in backends {
        default_backend(&mut backend.group, &mut backend.kind);
        backend.weight.get_or_insert(DEFAULT_WEIGHT);
        backend.filters.iter_mut().for_each(F::apply_defaults);
    }
}

/// Checks a rule's `backendRefs` (at `path`): how many, and each with its filters.
pub(crate) fn validate_filtered_backends<F: RouteFilter>(
    backends: &[FilteredBackendRef<F>],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    check_max_items("backendRefs", backends.len(), MAX_BACKENDS, path, out);
    for (i, backend) in backends.iter().enumerate() {
        let at = path.index(i);
        let view = BackendView {
            group: backend.group.as_deref(),
            kind: backend.kind.as_deref(),
            name: &backend.name,
            namespace: backend.namespace.as_deref(),
            port: backend.port,
            weight: backend.weight,
        };
        view.validate(&at, out);
        F::validate_list(&backend.filters, &at.field("filters"), out);
    }
}

/// What [`validate_route_spec`] needs of an HTTPRoute or GRPCRoute rule.
pub(crate) trait RouteRule {
    /// How many matches the rule lists.
    fn match_count(&self) -> usize;

    /// Checks the rule (at `path`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>);
}

/// Checks the spec of an HTTPRoute or GRPCRoute, whose parents, hostnames and rule limits
/// are the same: the CRD's schema and CEL rules.
pub(crate) fn validate_route_spec<R: RouteRule>(
    parent_refs: &[ParentReference],
    hostnames: &[String],
    rules: &[R],
    out: &mut Vec<Violation>,
) {
    let spec = FieldPath::root().field("spec");
    validate_parent_refs(parent_refs, &spec.field("parentRefs"), out);
    validate_hostnames(hostnames, &spec.field("hostnames"), out);
    let path = spec.field("rules");
    check_max_items("rules", rules.len(), MAX_RULES, &path, out);
    let total: usize = rules.iter().map(R::match_count).sum();
    if total > MAX_TOTAL_MATCHES {
        let error = GatewayError::TooManyMatches {
            max: MAX_TOTAL_MATCHES,
            total,
        };
        push(out, path.clone(), error);
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.validate(&path.index(i), out);
    }
}

/// An object of an implementation-specific kind that configures a filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// API group; may be empty (core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name, in the route's namespace.
    pub name: String,
}

impl LocalObjectReference {
    /// Checks the fields (at `path`).
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_string(GROUP, &self.group, &path.field("group"), out);
        check_string(KIND, &self.kind, &path.field("kind"), out);
        check_string(OBJECT_NAME, &self.name, &path.field("name"), out);
    }
}

/// How a header (or query parameter) value is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HeaderMatchType {
    /// Equal to the value (the default).
    #[default]
    Exact,
    /// Matches the value as a regular expression (dialect left to the implementation).
    RegularExpression,
}

/// A condition on one request header (HTTPRoute) or metadata entry (GRPCRoute).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// How to compare; defaults to [`HeaderMatchType::Exact`].
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HeaderMatchType>,
    /// The header name, compared without case.
    pub name: String,
    /// The value to compare with.
    pub value: String,
}

impl HeaderMatch {
    /// Checks the entry (at `path`).
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_string(HEADER_NAME, &self.name, &path.field("name"), out);
        check_len(
            "header value",
            &self.value,
            MAX_HEADER_VALUE_LEN,
            &path.field("value"),
            out,
        );
    }
}

/// Checks a list of header matches (at `path`): size, entries, and names unique.
pub(crate) fn validate_header_matches(
    headers: &[HeaderMatch],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    check_max_items("headers", headers.len(), MAX_HEADERS, path, out);
    for (i, header) in headers.iter().enumerate() {
        header.validate(&path.index(i), out);
    }
    let names = headers.iter().map(|h| h.name.as_str()).enumerate();
    check_unique("header name", names, |i| path.index(i).field("name"), out);
}

/// A header name and value to set or add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// The header name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// Changes to request or response headers: the RequestHeaderModifier and
/// ResponseHeaderModifier filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers to set, replacing any value they had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    /// Headers to add to any values they had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    /// Names of headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderModifier {
    /// Checks the modifier (at `path`): list sizes, names and values, no repeats within a
    /// list.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        for (list, headers) in [("set", &self.set), ("add", &self.add)] {
            let at = path.field(list);
            check_max_items("headers", headers.len(), MAX_HEADERS, &at, out);
            for (i, header) in headers.iter().enumerate() {
                let item = at.index(i);
                check_string(HEADER_NAME, &header.name, &item.field("name"), out);
                let value = &item.field("value");
                check_len(
                    "header value",
                    &header.value,
                    MAX_HEADER_VALUE_LEN,
                    value,
                    out,
                );
            }
            let names = headers.iter().map(|h| h.name.as_str()).enumerate();
            check_unique("header name", names, |i| at.index(i).field("name"), out);
        }
        let at = path.field("remove");
        check_max_items("headers", self.remove.len(), MAX_HEADERS, &at, out);
        let names = self.remove.iter().map(String::as_str).enumerate();
        check_unique("header name", names, |i| at.index(i), out);
    }
}

/// Mirror a share of requests to another backend, ignoring its responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMirror {
    /// Where to send the copies.
    pub backend_ref: BackendObjectReference,
    /// Share of requests to mirror, in percent (all when neither this nor `fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    /// Share of requests to mirror, as a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// At least 0, at most the denominator.
    pub numerator: i32,
    /// At least 1; defaults to [`DEFAULT_DENOMINATOR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<i32>,
}

impl RequestMirror {
    /// Fills in the schema defaults of the backend and the fraction.
    pub(crate) fn apply_defaults(&mut self) {
        self.backend_ref.apply_defaults();
        if let Some(fraction) = &mut self.fraction {
            fraction.denominator.get_or_insert(DEFAULT_DENOMINATOR);
        }
    }

    /// Checks the mirror (at `path`).
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        self.backend_ref
            .view()
            .validate(&path.field("backendRef"), out);
        if let Some(percent) = self.percent {
            check_range("percent", percent, (0, 100), &path.field("percent"), out);
        }
        if let Some(fraction) = &self.fraction {
            let at = path.field("fraction");
            let denominator = fraction.denominator.unwrap_or(DEFAULT_DENOMINATOR);
            if fraction.numerator < 0 {
                let error = GatewayError::TooSmall {
                    what: "numerator",
                    value: fraction.numerator.into(),
                    min: 0,
                };
                push(out, at.field("numerator"), error);
            }
            if denominator < 1 {
                let error = GatewayError::TooSmall {
                    what: "denominator",
                    value: denominator.into(),
                    min: 1,
                };
                push(out, at.field("denominator"), error);
            }
            if fraction.numerator > denominator {
                let error = GatewayError::FractionAboveOne {
                    numerator: fraction.numerator,
                    denominator,
                };
                push(out, at, error);
            }
        }
        if self.percent.is_some() && self.fraction.is_some() {
            push(out, path.clone(), GatewayError::PercentAndFraction);
        }
    }
}

/// The configuration fields HTTPRoute and GRPCRoute filters both have, borrowed: the header
/// modifiers and the mirror.
pub(crate) struct SharedFilterConfig<'a> {
    pub request_header_modifier: Option<&'a HeaderModifier>,
    pub response_header_modifier: Option<&'a HeaderModifier>,
    pub request_mirror: Option<&'a RequestMirror>,
}

impl SharedFilterConfig<'_> {
    /// The first entries of the filter's [`check_filter_fields`] list.
    pub(crate) fn fields(&self) -> [(&'static str, &'static str, bool); 3] {
        [
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
        ]
    }

    /// Checks the configurations that are set (at the filter's `path`).
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let Some(modifier) = self.request_header_modifier {
            modifier.validate(&path.field("requestHeaderModifier"), out);
        }
        if let Some(modifier) = self.response_header_modifier {
            modifier.validate(&path.field("responseHeaderModifier"), out);
        }
        if let Some(mirror) = self.request_mirror {
            mirror.validate(&path.field("requestMirror"), out);
        }
    }
}

/// Checks that a filter carries exactly the configuration its type names: `fields` lists
/// each configuration field with the type it belongs to and whether it is set.
pub(crate) fn check_filter_fields(
    filter_type: &'static str,
    fields: &[(&'static str, &'static str, bool)],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    for &(field, owner, present) in fields {
        if present && owner != filter_type {
            let error = GatewayError::FilterFieldNotAllowed {
                field,
                filter_type: owner,
            };
            push(out, path.field(field), error);
        } else if !present && owner == filter_type {
            let error = GatewayError::FilterFieldMissing { field, filter_type };
            push(out, path.field("type"), error);
        }
    }
}

/// Reports a second use of any filter type in `once` within one filter list (`types` yields
/// each filter's type name in order).
pub(crate) fn check_filter_repeats<'a>(
    types: impl Iterator<Item = &'a str>,
    once: &[&'static str],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    let mut first: Vec<(&'static str, usize)> = Vec::new();
    for (i, filter_type) in types.enumerate() {
        let Some(name) = once.iter().copied().find(|t| *t == filter_type) else {
            continue;
        };
        match first.iter().find(|(t, _)| *t == name) {
            Some(&(_, at)) => {
                let error = GatewayError::FilterRepeated {
                    filter_type: name,
                    first: at,
                };
                push(out, path.index(i).field("type"), error);
            }
            None => first.push((name, i)),
        }
    }
}

/// Checks a hostname used by a redirect or rewrite (at `path`).
pub(crate) fn check_target_hostname(
    hostname: Option<&str>,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(hostname) = hostname {
        check_string(subdomain("hostname"), hostname, path, out);
    }
}

/// Checks a rule name (at `path`).
pub(crate) fn check_rule_name(name: Option<&str>, path: &FieldPath, out: &mut Vec<Violation>) {
    if let Some(name) = name {
        check_string(subdomain("rule name"), name, path, out);
    }
}
