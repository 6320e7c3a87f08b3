//! The Kubernetes Gateway API kinds the mesh reads (`gateway.networking.k8s.io`):
//! `HTTPRoute`, `GRPCRoute`, `TCPRoute` and `ReferenceGrant`, typed after the standard
//! channel CRDs so that users' YAML, and the Gateway API mesh conformance manifests, load
//! unchanged.
//!
//! In the mesh (the Gateway API's GAMMA profile) a route attaches to a Service through a
//! `parentRef` of kind `Service`; a route attached to a Gateway is valid Gateway API, but
//! ingress, which the mesh does not do, and is reported with a warning.
//!
//! Each kind has three steps, run by the loader in this order:
//!
//! 1. parsing (serde, strict: unknown fields and values outside the CRD's enums are errors);
//! 2. `apply_defaults`, which fills in the defaults the CRD schema declares, as the
//!    Kubernetes API server does on admission, so that consumers see concrete values;
//! 3. validation: the schema's limits and patterns and the CRD's CEL rules, in Rust.
//!
//! Fields that have a schema default are `Option`s, so that a resource serializes back as
//! written before defaulting, and as fully spelled out after it; accessors such as
//! [`BackendRef::weight`] read them with the default applied.

mod common;
mod grpc_route;
mod http_filter;
mod http_route;
mod reference_grant;
mod tcp_route;
mod validate;

pub use common::{
    BackendObjectReference, BackendRef, FilteredBackendRef, Fraction, HeaderMatch, HeaderMatchType,
    HeaderModifier, HttpHeader, LocalObjectReference, ParentReference, RequestMirror,
    DEFAULT_BACKEND_GROUP, DEFAULT_BACKEND_KIND, DEFAULT_DENOMINATOR, DEFAULT_PARENT_KIND,
    DEFAULT_WEIGHT,
};
pub use grpc_route::{
    GrpcBackendRef, GrpcMethodMatch, GrpcRoute, GrpcRouteFilter, GrpcRouteFilterType,
    GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec,
};
pub use http_filter::{
    Cors, CorsMethod, HttpRouteFilter, HttpRouteFilterType, PathModifier, PathModifierType,
    RedirectScheme, RedirectStatusCode, RequestRedirect, UrlRewrite, DEFAULT_CORS_MAX_AGE,
};
pub use http_route::{
    HttpBackendRef, HttpMethod, HttpPathMatch, HttpRoute, HttpRouteMatch, HttpRouteRule,
    HttpRouteSpec, HttpRouteTimeouts, PathMatchType, QueryParamMatch, DEFAULT_PATH,
};
pub use reference_grant::{
    ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
};
pub use tcp_route::{TcpRoute, TcpRouteRule, TcpRouteSpec};
pub use validate::GatewayError;

/// The Gateway API group; also the default group of a parentRef.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The `apiVersion`s served for `HTTPRoute` (the same schema in both).
pub const HTTP_ROUTE_API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];

/// The `apiVersion` served for `GRPCRoute`.
pub const GRPC_ROUTE_API_VERSIONS: [&str; 1] = ["gateway.networking.k8s.io/v1"];

/// The `apiVersion`s accepted for `TCPRoute`. The current CRD serves `v1`, which allows a
/// single rule; `v1alpha2` (up to 16 rules) is what earlier CRDs served and what published
/// samples, Istio's among them, still use.
pub const TCP_ROUTE_API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1alpha2",
];

/// The `apiVersion`s served for `ReferenceGrant` (the same schema in both).
pub const REFERENCE_GRANT_API_VERSIONS: [&str; 2] = [
    "gateway.networking.k8s.io/v1beta1",
    "gateway.networking.k8s.io/v1",
];
