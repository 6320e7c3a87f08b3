//! Istio's `VirtualService`: for requests to some hosts, which destinations (service, subset,
//! port) receive them and in what proportion. Every field of Istio's `v1` schema is typed, so
//! a typo anywhere is an error; the mesh acts on the hosts, the route names and the weighted
//! destinations of HTTP routes, and reports every other field that is set as not implemented
//! yet. HTTP routes live in [`http`], [`http_actions`] and [`http_policy`], TCP and TLS
//! routes in [`l4`].

mod http;
mod http_actions;
mod http_policy;
mod l4;

use serde::{Deserialize, Serialize};

use super::istio::{check_export_to, check_gateway_name, check_host, check_port, push};
use super::notice::{Notice, NoticeReason};
use super::path::FieldPath;
use super::validate::{is_dns1123_label, ValidationError, Violation};
use super::ObjectMeta;

pub use http::{HttpMatchRequest, HttpRoute, HttpRouteDestination};
pub use http_actions::{
    Delegate, HttpBody, HttpDirectResponse, HttpRedirect, HttpRewrite, RedirectPortSelection,
    RegexRewrite,
};
pub use http_policy::{
    CorsPolicy, HeaderOperations, Headers, HttpAbort, HttpDelay, HttpFaultInjection,
    HttpMirrorPolicy, HttpRetry, UnmatchedPreflights,
};
pub use l4::{L4MatchAttributes, RouteDestination, TcpRoute, TlsMatchAttributes, TlsRoute};

/// An Istio `VirtualService`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// `networking.istio.io/v1` (or `v1beta1`, `v1alpha3`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Hosts and routes.
    pub spec: VirtualServiceSpec,
}

/// The spec of a [`VirtualService`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// The hosts the routes apply to (service short names, FQDNs, wildcards). Empty only in a
    /// delegate VirtualService, which another one's `delegate` refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Not implemented: gateways and sidecars the routes apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP routes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Not implemented: TCP routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Not implemented: TLS (SNI) routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Not implemented: visibility to other namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// A service, optionally narrowed to a subset and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The service (short name or FQDN).
    pub host: String,
    /// A subset defined by a DestinationRule for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port; may be omitted when the service has a single port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A port of a destination service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number, 1..=65535.
    pub number: u32,
}

/// Why a VirtualService is rejected, for the rules specific to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VirtualServiceError {
    /// Neither HTTP, TCP nor TLS routes.
    #[error("a VirtualService needs at least one http, tcp or tls route")]
    NoRoutes,
    /// A delegate (host-less) VirtualService with something only a root one may have.
    #[error("a VirtualService without hosts is a delegate, and a delegate cannot set {field}")]
    DelegateField {
        /// The field ("gateways", "tcp", "tls", "delegate").
        field: &'static str,
    },
    /// Several of the mutually exclusive HTTP route actions.
    #[error("an HTTP route may set only one of {fields}, found {found}")]
    ConflictingActions {
        /// The group, in words.
        fields: &'static str,
        /// The ones set, in words.
        found: String,
    },
    /// A redirect that changes nothing.
    #[error("a redirect must set at least one of uri, authority, scheme, port or derivePort")]
    EmptyRedirect,
    /// A fault with neither a delay nor an abort.
    #[error("a fault needs a delay, an abort or both")]
    EmptyFault,
    /// A fault kind Istio does not implement.
    #[error("{field} is not supported by Istio; use {instead}")]
    UnsupportedFault {
        /// The field.
        field: &'static str,
        /// What to use.
        instead: &'static str,
    },
    /// A gRPC status that is not one of gRPC's code names.
    #[error("{value:?} is not a gRPC status code name (such as UNAVAILABLE or NOT_FOUND)")]
    GrpcStatus {
        /// The status as written.
        value: String,
    },
    /// A `retryOn` condition that Envoy does not know.
    #[error(
        "{value:?} is not a retry condition (such as 5xx, gateway-error, connect-failure, \
         retriable-4xx, reset, or an HTTP status code)"
    )]
    RetryOn {
        /// The condition as written.
        value: String,
    },
    /// A CORS method that is not an HTTP method.
    #[error("{value:?} is not an HTTP method (GET, POST, PUT, DELETE, ...)")]
    HttpMethod {
        /// The method as written.
        value: String,
    },
    /// A direct response body that is not base64.
    #[error("bytes is not valid base64")]
    Base64,
}

impl From<VirtualServiceError> for ValidationError {
    fn from(error: VirtualServiceError) -> Self {
        ValidationError::VirtualService(error)
    }
}

impl VirtualServiceSpec {
    /// Adds the semantic problems of this spec to `out`, following Istio's rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        // Istio reads a VirtualService without hosts as a delegate: its routes are spliced
        // into the VirtualService whose `delegate` names it, so it may only hold HTTP routes.
        let delegate = self.hosts.is_empty();
        if delegate {
            let root_only = [
                ("gateways", !self.gateways.is_empty()),
                ("tcp", !self.tcp.is_empty()),
                ("tls", !self.tls.is_empty()),
            ];
            for (field, present) in root_only {
                if present {
                    push(
                        out,
                        spec.field(field),
                        VirtualServiceError::DelegateField { field },
                    );
                }
            }
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let at = spec.field("hosts").index(i);
            if host.is_empty() {
                push(out, at, ValidationError::Empty { what: "host" });
            } else {
                check_host(host, &at, out);
            }
        }
        for (i, gateway) in self.gateways.iter().enumerate() {
            check_gateway_name(gateway, &spec.field("gateways").index(i), out);
        }
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            push(out, spec.clone(), VirtualServiceError::NoRoutes);
        }
        for (i, http) in self.http.iter().enumerate() {
            http.validate(&spec.field("http").index(i), delegate, out);
        }
        for (i, tcp) in self.tcp.iter().enumerate() {
            tcp.validate(&spec.field("tcp").index(i), out);
        }
        for (i, tls) in self.tls.iter().enumerate() {
            tls.validate(&spec.field("tls").index(i), out);
        }
        check_export_to(&self.export_to, &spec.field("exportTo"), out);
    }

    /// Notices about the spec as a whole: a delegate VirtualService is valid, but nothing
    /// routes to it until delegation is implemented.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        if self.hosts.is_empty() {
            out.push(Notice::new(
                FieldPath::root().field("spec").field("hosts"),
                NoticeReason::NotActedOn {
                    kind: "a VirtualService without hosts (a delegate)",
                    action: "routed",
                },
            ));
        }
    }
}

impl Destination {
    /// Checks the destination at `path`.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let host = path.field("host");
        if self.host.is_empty() {
            push(out, host, ValidationError::Empty { what: "host" });
        } else {
            check_host(&self.host, &host, out);
        }
        if let Some(subset) = &self.subset {
            if !is_dns1123_label(subset) {
                push(
                    out,
                    path.field("subset"),
                    ValidationError::NotDnsLabel {
                        value: subset.clone(),
                    },
                );
            }
        }
        if let Some(port) = self.port {
            check_port(Some(port.number), &path.field("port").field("number"), out);
        }
    }
}

#[cfg(test)]
mod tests;
