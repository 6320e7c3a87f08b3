//! The resource kinds Trellis reads from its config directory, typed after the Kubernetes and
//! Istio schemas so that users' existing YAML loads unchanged: `Service` (core `v1`) and
//! Istio's `WorkloadEntry`, `DestinationRule` and `VirtualService` (`networking.istio.io`).
//!
//! Field names are the camelCase ones of the upstream schemas. Every spec struct rejects
//! unknown fields, so a typo is an error rather than a silently dropped setting. Fields that
//! exist upstream but that the mesh does not act on yet are still accepted, typed and
//! validated; [`Resource::unimplemented_fields`] lists the ones present so the loader can warn
//! about each of them. The Istio kinds the mesh validates but does not act on at all
//! (`ServiceEntry`, `WorkloadGroup` and the `security.istio.io` kinds) get one notice each.
//!
//! The Gateway API kinds (`HTTPRoute`, `GRPCRoute`, `TCPRoute`, `ReferenceGrant`) live in
//! [`gateway`], typed after their CRDs; the loader applies their schema defaults
//! ([`Resource::apply_defaults`]) before validating them, and reports what the mesh does not
//! act on through [`Resource::notices`].
//!
//! Parsing with source positions lives in [`crate::load`]; this module only knows the shapes
//! and the semantic rules ([`Resource::validate`]).

mod destination_rule;
pub mod gateway;
mod istio;
mod notice;
mod path;
mod security;
mod service;
mod service_entry;
mod validate;
mod virtual_service;
mod workload_entry;
mod workload_group;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use destination_rule::{
    BackendUtilization, ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb,
    CookieAttribute, DestinationRule, DestinationRuleError, DestinationRuleSpec, H2UpgradePolicy,
    Http2KeepAlive, HttpCookie, HttpSettings, LoadBalancerSettings, LocalityDistribute,
    LocalityFailover, LocalityLbSetting, Maglev, OutlierDetection, PortTrafficPolicy,
    ProxyProtocol, ProxyProtocolVersion, RetryBudget, RingHash, SimpleLb, Subset, TcpKeepalive,
    TcpSettings, TrafficPolicy, TunnelSettings, WarmupConfiguration, WorkloadSelector,
    ZoneAwareLbSetting,
};
pub use istio::{
    Duration, DurationError, HeaderValueMatch, IstioError, Percent, PolicyTargetReference,
    StringMatch,
};
pub use notice::{Notice, NoticeReason};
pub use path::{FieldPath, PathSegment};
pub use security::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationPolicySpec, AuthorizationRule,
    ClaimToHeader, Condition, ExtensionProvider, JwtHeader, JwtPresence, JwtRule, MtlsMode,
    Operation, PeerAuthentication, PeerAuthenticationMtls, PeerAuthenticationSpec,
    RequestAuthentication, RequestAuthenticationSpec, RuleFrom, RuleTo, SecurityError, Source,
    ISTIO_SECURITY_API_VERSIONS, ISTIO_SECURITY_GROUP,
};
pub use service::{IntOrString, Service, ServicePort, ServiceSpec};
pub use service_entry::{
    Location, Resolution, ServiceEntry, ServiceEntryError, ServiceEntryPort, ServiceEntrySelector,
    ServiceEntrySpec,
};
pub use validate::{is_dns1123_label, is_dns1123_subdomain, ValidationError, Violation};
pub use virtual_service::{
    CorsPolicy, Delegate, Destination, HeaderOperations, Headers, HttpAbort, HttpBody, HttpDelay,
    HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpMirrorPolicy, HttpRedirect,
    HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, L4MatchAttributes, PortSelector,
    RedirectPortSelection, RegexRewrite, RouteDestination, TcpRoute, TlsMatchAttributes, TlsRoute,
    UnmatchedPreflights, VirtualService, VirtualServiceError, VirtualServiceSpec,
};
pub use workload_entry::{WorkloadEntry, WorkloadEntrySpec};
pub use workload_group::{
    ExecHealthCheck, GrpcHealthCheck, HttpHealthCheck, ProbeHeader, ReadinessProbe, TcpHealthCheck,
    WorkloadGroup, WorkloadGroupError, WorkloadGroupMetadata, WorkloadGroupSpec,
};

/// Namespace of a resource whose metadata names none, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The group of the Istio networking kinds.
pub const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";

/// The `apiVersion`s accepted for the Istio kinds. `v1` is current; the beta and alpha
/// versions are still served by Istio with the same schema, and old configs use them.
pub const ISTIO_NETWORKING_API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The `apiVersion` of a Kubernetes `Service`.
pub const SERVICE_API_VERSION: &str = "v1";

/// The metadata the mesh reads. Other Kubernetes metadata fields (uid, resourceVersion,
/// creationTimestamp, ...) are dropped by the loader with a warning before this is parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The resource name; must be a DNS-1123 subdomain.
    pub name: String,
    /// The namespace. The loader fills in [`DEFAULT_NAMESPACE`] when absent, so resources
    /// coming out of [`crate::load`] always have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels of the resource itself (not of the workloads it selects).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations; kept for tools, not interpreted by the mesh.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The namespace, [`DEFAULT_NAMESPACE`] when none is set.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// Any resource the mesh understands. Serialized the Kubernetes way, with `kind` next to
/// `apiVersion`, `metadata` and `spec`.
// A Service carries every Kubernetes spec field so that none is dropped unnoticed, which
// makes it several times larger than the other kinds. Configs hold hundreds of resources at
// most, built once per load, so plain variants (simpler to match on) beat boxing here.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Resource {
    /// A Kubernetes `Service`: a name, ports and a workload selector.
    Service(Service),
    /// An Istio `WorkloadEntry`: one workload instance (address, ports, labels).
    WorkloadEntry(WorkloadEntry),
    /// An Istio `DestinationRule`: named subsets of a service's workloads.
    DestinationRule(DestinationRule),
    /// An Istio `VirtualService`: how requests to hosts are routed.
    VirtualService(VirtualService),
    /// An Istio `ServiceEntry`: a service from outside the registry (validated, not acted on).
    ServiceEntry(ServiceEntry),
    /// An Istio `WorkloadGroup`: a template for self-registering workloads (validated, not
    /// acted on).
    WorkloadGroup(WorkloadGroup),
    /// An Istio `PeerAuthentication`: mutual TLS modes (enforced by the proxies).
    PeerAuthentication(PeerAuthentication),
    /// An Istio `AuthorizationPolicy`: access control (enforced by the proxies).
    AuthorizationPolicy(AuthorizationPolicy),
    /// An Istio `RequestAuthentication`: JWT verification (validated, not enforced).
    RequestAuthentication(RequestAuthentication),
    /// A Gateway API `HTTPRoute`: HTTP routing rules attached to Services (mesh) or Gateways.
    #[serde(rename = "HTTPRoute")]
    HttpRoute(gateway::HttpRoute),
    /// A Gateway API `GRPCRoute`: gRPC routing rules.
    #[serde(rename = "GRPCRoute")]
    GrpcRoute(gateway::GrpcRoute),
    /// A Gateway API `TCPRoute`: weighted TCP backends.
    #[serde(rename = "TCPRoute")]
    TcpRoute(gateway::TcpRoute),
    /// A Gateway API `ReferenceGrant`: cross-namespace references allowed into a namespace.
    ReferenceGrant(gateway::ReferenceGrant),
}

impl Resource {
    /// The kind, as written in YAML (`VirtualService`).
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Service(_) => "Service",
            Resource::WorkloadEntry(_) => "WorkloadEntry",
            Resource::DestinationRule(_) => "DestinationRule",
            Resource::VirtualService(_) => "VirtualService",
            Resource::ServiceEntry(_) => "ServiceEntry",
            Resource::WorkloadGroup(_) => "WorkloadGroup",
            Resource::PeerAuthentication(_) => "PeerAuthentication",
            Resource::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Resource::RequestAuthentication(_) => "RequestAuthentication",
            Resource::HttpRoute(_) => "HTTPRoute",
            Resource::GrpcRoute(_) => "GRPCRoute",
            Resource::TcpRoute(_) => "TCPRoute",
            Resource::ReferenceGrant(_) => "ReferenceGrant",
        }
    }

    /// The `apiVersion` as written.
    pub fn api_version(&self) -> &str {
        match self {
            Resource::Service(r) => &r.api_version,
            Resource::WorkloadEntry(r) => &r.api_version,
            Resource::DestinationRule(r) => &r.api_version,
            Resource::VirtualService(r) => &r.api_version,
            Resource::ServiceEntry(r) => &r.api_version,
            Resource::WorkloadGroup(r) => &r.api_version,
            Resource::PeerAuthentication(r) => &r.api_version,
            Resource::AuthorizationPolicy(r) => &r.api_version,
            Resource::RequestAuthentication(r) => &r.api_version,
            Resource::HttpRoute(r) => &r.api_version,
            Resource::GrpcRoute(r) => &r.api_version,
            Resource::TcpRoute(r) => &r.api_version,
            Resource::ReferenceGrant(r) => &r.api_version,
        }
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Resource::Service(r) => &r.meta,
            Resource::WorkloadEntry(r) => &r.meta,
            Resource::DestinationRule(r) => &r.meta,
            Resource::VirtualService(r) => &r.meta,
            Resource::ServiceEntry(r) => &r.meta,
            Resource::WorkloadGroup(r) => &r.meta,
            Resource::PeerAuthentication(r) => &r.meta,
            Resource::AuthorizationPolicy(r) => &r.meta,
            Resource::RequestAuthentication(r) => &r.meta,
            Resource::HttpRoute(r) => &r.meta,
            Resource::GrpcRoute(r) => &r.meta,
            Resource::TcpRoute(r) => &r.meta,
            Resource::ReferenceGrant(r) => &r.meta,
        }
    }

    /// The metadata, mutably (the loader uses it to apply the default namespace).
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Resource::Service(r) => &mut r.meta,
            Resource::WorkloadEntry(r) => &mut r.meta,
            Resource::DestinationRule(r) => &mut r.meta,
            Resource::VirtualService(r) => &mut r.meta,
            Resource::ServiceEntry(r) => &mut r.meta,
            Resource::WorkloadGroup(r) => &mut r.meta,
            Resource::PeerAuthentication(r) => &mut r.meta,
            Resource::AuthorizationPolicy(r) => &mut r.meta,
            Resource::RequestAuthentication(r) => &mut r.meta,
            Resource::HttpRoute(r) => &mut r.meta,
            Resource::GrpcRoute(r) => &mut r.meta,
            Resource::TcpRoute(r) => &mut r.meta,
            Resource::ReferenceGrant(r) => &mut r.meta,
        }
    }

    /// The namespace, [`DEFAULT_NAMESPACE`] when none is set.
    pub fn namespace(&self) -> &str {
        self.meta().namespace()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// What identifies the resource within a config: kind, namespace and name.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind(),
            namespace: self.namespace().to_owned(),
            name: self.name().to_owned(),
        }
    }

    /// Semantic problems: everything that is well-typed but still wrong (empty hosts, weights
    /// not adding up, invalid names, ports out of range). Empty when the resource is valid.
    pub fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        validate::validate_meta(self.meta(), &mut out);
        match self {
            Resource::Service(r) => r.spec.validate(&mut out),
            Resource::WorkloadEntry(r) => r.spec.validate(&mut out),
            Resource::DestinationRule(r) => r.spec.validate(&mut out),
            Resource::VirtualService(r) => r.spec.validate(&mut out),
            Resource::ServiceEntry(r) => r.spec.validate(&mut out),
            Resource::WorkloadGroup(r) => r.spec.validate(&mut out),
            Resource::PeerAuthentication(r) => r.spec.validate(&mut out),
            Resource::AuthorizationPolicy(r) => r.spec.validate(&mut out),
            Resource::RequestAuthentication(r) => r.spec.validate(&mut out),
            Resource::HttpRoute(r) => r.spec.validate(&mut out),
            Resource::GrpcRoute(r) => r.spec.validate(&mut out),
            Resource::TcpRoute(r) => r.validate(&mut out),
            Resource::ReferenceGrant(r) => r.spec.validate(&mut out),
        }
        out
    }

    /// The fields that are set but that the mesh does not act on yet, from the document root
    /// (`spec.http[0].retries`). The loader turns each into a warning.
    pub fn unimplemented_fields(&self) -> Vec<FieldPath> {
        let mut out = Vec::new();
        let spec = FieldPath::root().field("spec");
        match self {
            Resource::Service(r) => r.spec.unimplemented_fields(&spec, &mut out),
            Resource::WorkloadEntry(r) => r.spec.unimplemented_fields(&spec, &mut out),
            Resource::DestinationRule(r) => r.spec.unimplemented_fields(&spec, &mut out),
            // Routed with the route model: what it cannot do comes from
            // `crate::routing::unsupported`, in `notices`.
            Resource::VirtualService(_) => {}
            // Validated but not acted on at all yet: one notice for the whole resource (see
            // `notices`) instead of a warning per field.
            Resource::ServiceEntry(_)
            | Resource::WorkloadGroup(_)
            | Resource::PeerAuthentication(_)
            | Resource::AuthorizationPolicy(_)
            | Resource::RequestAuthentication(_) => {}
            // The Gateway API kinds are not acted on at all yet: one notice for the whole
            // resource (see `notices`) says more than a warning per field would.
            Resource::HttpRoute(_)
            | Resource::GrpcRoute(_)
            | Resource::TcpRoute(_)
            | Resource::ReferenceGrant(_) => {}
        }
        out
    }

    /// Fills in the defaults the kind's schema declares, as the Kubernetes API server does
    /// on admission (`HTTPRoute` path matches default to `PathPrefix /`, backend weights to
    /// 1, ...), so that consumers see concrete values. The loader calls this after parsing
    /// and before [`Resource::validate`], whose rules assume it; calling it again changes
    /// nothing.
    pub fn apply_defaults(&mut self) {
        match self {
            Resource::HttpRoute(r) => r.spec.apply_defaults(),
            Resource::GrpcRoute(r) => r.spec.apply_defaults(),
            Resource::TcpRoute(r) => r.apply_defaults(),
            // No schema defaults the mesh relies on (the namespace is the loader's job).
            _ => {}
        }
    }

    /// What a user should know about this valid resource beyond unimplemented fields: kinds
    /// accepted but not acted on yet, references to things outside the mesh. The loader
    /// turns each into a warning.
    pub fn notices(&self) -> Vec<Notice> {
        let mut out = Vec::new();
        match self {
            Resource::HttpRoute(r) => r.spec.notices(&mut out),
            Resource::GrpcRoute(r) => r.spec.notices(&mut out),
            Resource::TcpRoute(r) => r.notices(&mut out),
            Resource::VirtualService(r) => r.spec.notices(&mut out),
            Resource::ServiceEntry(r) => r.spec.notices(&mut out),
            Resource::WorkloadGroup(r) => r.spec.notices(&mut out),
            Resource::AuthorizationPolicy(r) => r.spec.notices(&mut out),
            Resource::RequestAuthentication(r) => r.spec.notices(&mut out),
            _ => {}
        }
        // What the route model cannot do of what a route asks.
        if matches!(
            self,
            Resource::HttpRoute(_)
                | Resource::GrpcRoute(_)
                | Resource::TcpRoute(_)
                | Resource::VirtualService(_)
        ) {
            out.extend(crate::routing::unsupported(self));
        }
        out
    }
}

/// Kind, namespace and name: unique within a config.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceKey {
    /// The kind (`VirtualService`).
    pub kind: &'static str,
    /// The namespace, defaulted.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Adds `path` to `out` when `present`: the building block of the per-kind
/// `unimplemented_fields` methods.
pub(crate) fn note_if(out: &mut Vec<FieldPath>, present: bool, path: FieldPath) {
    if present {
        out.push(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviews_vs() -> Resource {
        Resource::VirtualService(VirtualService {
            api_version: "networking.istio.io/v1".into(),
            meta: ObjectMeta::named("reviews"),
            spec: VirtualServiceSpec {
                hosts: vec!["reviews".into()],
                http: vec![HttpRoute {
                    route: vec![HttpRouteDestination {
                        destination: Destination {
                            host: "reviews".into(),
                            subset: Some("v1".into()),
                            port: None,
                        },
                        weight: None,
                        headers: None,
                    }],
                    ..HttpRoute::default()
                }],
                ..VirtualServiceSpec::default()
            },
        })
    }

    #[test]
    fn accessors() {
        let vs = reviews_vs();
        assert_eq!(vs.kind(), "VirtualService");
        assert_eq!(vs.namespace(), "default");
        assert_eq!(vs.name(), "reviews");
        assert_eq!(vs.key().to_string(), "VirtualService default/reviews");
        assert!(vs.validate().is_empty());
        assert!(vs.unimplemented_fields().is_empty());
    }

    #[test]
    fn serializes_with_kind_and_round_trips() {
        let vs = reviews_vs();
        let json = serde_json::to_value(&vs).unwrap();
        assert_eq!(json["kind"], "VirtualService");
        assert_eq!(json["apiVersion"], "networking.istio.io/v1");
        assert_eq!(json["metadata"]["name"], "reviews");
        assert_eq!(
            json["spec"]["http"][0]["route"][0]["destination"]["subset"],
            "v1"
        );
        let back: Resource = serde_json::from_value(json).unwrap();
        assert_eq!(back, vs);
    }

    #[test]
    fn metadata_rejects_unknown_fields() {
        let err = serde_json::from_value::<ObjectMeta>(serde_json::json!({
            "name": "x", "namspace": "y"
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `namspace`"),
            "{err}"
        );
    }
}
