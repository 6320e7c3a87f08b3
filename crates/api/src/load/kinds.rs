//! Which `apiVersion`/`kind` pairs the loader parses, which it knows but ignores (Istio and
//! Gateway API kinds the mesh does not support yet, Kubernetes workload kinds that live in the
//! same files), and which it rejects as unknown, so that a typo in `kind` is an error rather
//! than a silently skipped document.

use crate::resources::gateway::{
    GRPC_ROUTE_API_VERSIONS, HTTP_ROUTE_API_VERSIONS, REFERENCE_GRANT_API_VERSIONS,
    TCP_ROUTE_API_VERSIONS,
};
use crate::resources::{
    ISTIO_NETWORKING_API_VERSIONS, ISTIO_NETWORKING_GROUP, ISTIO_SECURITY_API_VERSIONS,
    SERVICE_API_VERSION,
};

/// Kinds of Istio and the Gateway API that the mesh recognises but does not implement yet,
/// by group.
const NOT_SUPPORTED_YET: &[(&str, &[&str])] = &[
    (
        ISTIO_NETWORKING_GROUP,
        &["Gateway", "Sidecar", "EnvoyFilter", "ProxyConfig"],
    ),
    ("telemetry.istio.io", &["Telemetry"]),
    ("extensions.istio.io", &["WasmPlugin", "TrafficExtension"]),
    (
        "gateway.networking.k8s.io",
        &[
            "Gateway",
            "GatewayClass",
            "TLSRoute",
            "UDPRoute",
            "BackendTLSPolicy",
            "ListenerSet",
        ],
    ),
];

/// Kubernetes kinds that sit next to Services in users' YAML (Bookinfo's `bookinfo.yaml` has
/// Deployments and ServiceAccounts) and that the mesh has no use for, by group ("" is core).
const KUBERNETES_SKIPPED: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "Pod",
            "ServiceAccount",
            "ConfigMap",
            "Secret",
            "Namespace",
            "Endpoints",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "ReplicationController",
            "LimitRange",
            "ResourceQuota",
        ],
    ),
    (
        "apps",
        &["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"],
    ),
    ("batch", &["Job", "CronJob"]),
    ("policy", &["PodDisruptionBudget"]),
    ("autoscaling", &["HorizontalPodAutoscaler"]),
    (
        "rbac.authorization.k8s.io",
        &["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"],
    ),
    (
        "networking.k8s.io",
        &["Ingress", "IngressClass", "NetworkPolicy"],
    ),
    ("discovery.k8s.io", &["EndpointSlice"]),
    ("apiextensions.k8s.io", &["CustomResourceDefinition"]),
    ("scheduling.k8s.io", &["PriorityClass"]),
];

/// A kind the loader parses into a [`crate::resources::Resource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Supported {
    Service,
    WorkloadEntry,
    DestinationRule,
    VirtualService,
    ServiceEntry,
    WorkloadGroup,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    ReferenceGrant,
}

impl Supported {
    fn name(self) -> &'static str {
        match self {
            Supported::Service => "Service",
            Supported::WorkloadEntry => "WorkloadEntry",
            Supported::DestinationRule => "DestinationRule",
            Supported::VirtualService => "VirtualService",
            Supported::ServiceEntry => "ServiceEntry",
            Supported::WorkloadGroup => "WorkloadGroup",
            Supported::PeerAuthentication => "PeerAuthentication",
            Supported::AuthorizationPolicy => "AuthorizationPolicy",
            Supported::RequestAuthentication => "RequestAuthentication",
            Supported::HttpRoute => "HTTPRoute",
            Supported::GrpcRoute => "GRPCRoute",
            Supported::TcpRoute => "TCPRoute",
            Supported::ReferenceGrant => "ReferenceGrant",
        }
    }

    fn api_versions(self) -> &'static [&'static str] {
        match self {
            Supported::Service => &[SERVICE_API_VERSION],
            Supported::PeerAuthentication
            | Supported::AuthorizationPolicy
            | Supported::RequestAuthentication => &ISTIO_SECURITY_API_VERSIONS,
            Supported::HttpRoute => &HTTP_ROUTE_API_VERSIONS,
            Supported::GrpcRoute => &GRPC_ROUTE_API_VERSIONS,
            Supported::TcpRoute => &TCP_ROUTE_API_VERSIONS,
            Supported::ReferenceGrant => &REFERENCE_GRANT_API_VERSIONS,
            _ => &ISTIO_NETWORKING_API_VERSIONS,
        }
    }

    const ALL: [Supported; 13] = [
        Supported::Service,
        Supported::WorkloadEntry,
        Supported::DestinationRule,
        Supported::VirtualService,
        Supported::ServiceEntry,
        Supported::WorkloadGroup,
        Supported::PeerAuthentication,
        Supported::AuthorizationPolicy,
        Supported::RequestAuthentication,
        Supported::HttpRoute,
        Supported::GrpcRoute,
        Supported::TcpRoute,
        Supported::ReferenceGrant,
    ];
}

/// What to do with a document of some `apiVersion` and `kind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Parse it.
    Supported(Supported),
    /// Known upstream, not implemented by the mesh: warn and skip.
    NotSupportedYet {
        /// The API group, for the message.
        group: String,
    },
    /// A Kubernetes kind the mesh has no use for: warn and skip.
    Skipped {
        /// The API group ("" for core), for the message.
        group: String,
    },
    /// Not something the loader can place.
    Rejected(KindError),
}

/// Why a document's kind was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KindError {
    /// A kind the mesh supports, with an apiVersion it does not.
    #[error("apiVersion {api_version} is not supported for kind {kind}; use {expected}")]
    WrongVersion {
        /// The kind.
        kind: String,
        /// The apiVersion as written.
        api_version: String,
        /// The accepted apiVersions, comma-separated.
        expected: String,
    },
    /// Neither supported nor known.
    #[error("unknown kind {kind} (apiVersion {api_version}){hint}")]
    Unknown {
        /// The kind.
        kind: String,
        /// The apiVersion as written.
        api_version: String,
        /// A suggestion when the same kind exists in another group, else empty.
        hint: String,
    },
}

/// Splits `group/version`; the core group has no slash (`v1`).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn listed(table: &[(&str, &[&str])], group: &str, kind: &str) -> bool {
    table
        .iter()
        .any(|(g, kinds)| *g == group && kinds.contains(&kind))
}

/// Classifies a document by its `apiVersion` and `kind`.
pub(crate) fn classify(api_version: &str, kind: &str) -> Class {
    let group = group_of(api_version);
    for supported in Supported::ALL {
        if supported.name() != kind {
            continue;
        }
        if supported.api_versions().contains(&api_version) {
            return Class::Supported(supported);
        }
        if supported
            .api_versions()
            .iter()
            .any(|v| group_of(v) == group)
        {
            return Class::Rejected(KindError::WrongVersion {
                kind: kind.to_owned(),
                api_version: api_version.to_owned(),
                expected: supported.api_versions().join(", "),
            });
        }
    }
    if listed(NOT_SUPPORTED_YET, group, kind) {
        return Class::NotSupportedYet {
            group: group.to_owned(),
        };
    }
    if listed(KUBERNETES_SKIPPED, group, kind) {
        return Class::Skipped {
            group: group.to_owned(),
        };
    }
    // The kind exists, just not in this group: say where it lives, since a wrong apiVersion
    // (VirtualService under `v1`) is the likely mistake.
    let hint = Supported::ALL
        .iter()
        .find(|s| s.name() == kind)
        .map(|s| format!("; {kind} is served by {}", s.api_versions().join(", ")))
        .unwrap_or_default();
    Class::Rejected(KindError::Unknown {
        kind: kind.to_owned(),
        api_version: api_version.to_owned(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_kinds_validated_but_not_acted_on_are_supported() {
        for kind in ["ServiceEntry", "WorkloadGroup"] {
            for v in ISTIO_NETWORKING_API_VERSIONS {
                assert!(
                    matches!(classify(v, kind), Class::Supported(_)),
                    "{v} {kind}"
                );
            }
        }
        for kind in [
            "PeerAuthentication",
            "AuthorizationPolicy",
            "RequestAuthentication",
        ] {
            for v in ISTIO_SECURITY_API_VERSIONS {
                assert!(
                    matches!(classify(v, kind), Class::Supported(_)),
                    "{v} {kind}"
                );
            }
            assert!(matches!(
                classify("networking.istio.io/v1", kind),
                Class::Rejected(KindError::Unknown { .. })
            ));
        }
        assert!(matches!(
            classify("security.istio.io/v1alpha1", "AuthorizationPolicy"),
            Class::Rejected(KindError::WrongVersion { .. })
        ));
        assert_eq!(
            classify("telemetry.istio.io/v1", "Telemetry"),
            Class::NotSupportedYet {
                group: "telemetry.istio.io".into()
            }
        );
    }

    #[test]
    fn supported_kinds_and_versions() {
        assert_eq!(
            classify("v1", "Service"),
            Class::Supported(Supported::Service)
        );
        for v in ISTIO_NETWORKING_API_VERSIONS {
            assert_eq!(
                classify(v, "VirtualService"),
                Class::Supported(Supported::VirtualService)
            );
        }
        assert_eq!(
            classify("networking.istio.io/v2", "DestinationRule"),
            Class::Rejected(KindError::WrongVersion {
                kind: "DestinationRule".into(),
                api_version: "networking.istio.io/v2".into(),
                expected: "networking.istio.io/v1, networking.istio.io/v1beta1, \
                           networking.istio.io/v1alpha3"
                    .into(),
            })
        );
    }

    #[test]
    fn gateway_api_kinds_and_versions() {
        let group = "gateway.networking.k8s.io";
        for (kind, versions, supported) in [
            ("HTTPRoute", &["v1", "v1beta1"][..], Supported::HttpRoute),
            ("GRPCRoute", &["v1"], Supported::GrpcRoute),
            ("TCPRoute", &["v1", "v1alpha2"], Supported::TcpRoute),
            (
                "ReferenceGrant",
                &["v1", "v1beta1"],
                Supported::ReferenceGrant,
            ),
        ] {
            for version in versions {
                let api_version = format!("{group}/{version}");
                assert_eq!(
                    classify(&api_version, kind),
                    Class::Supported(supported),
                    "{api_version} {kind}"
                );
            }
        }
        assert!(matches!(
            classify("gateway.networking.k8s.io/v1alpha2", "GRPCRoute"),
            Class::Rejected(KindError::WrongVersion { .. })
        ));
    }

    #[test]
    fn known_but_ignored_kinds() {
        assert_eq!(
            classify("networking.istio.io/v1", "Gateway"),
            Class::NotSupportedYet {
                group: "networking.istio.io".into()
            }
        );
        assert_eq!(
            classify("gateway.networking.k8s.io/v1", "Gateway"),
            Class::NotSupportedYet {
                group: "gateway.networking.k8s.io".into()
            }
        );
        assert_eq!(
            classify("gateway.networking.k8s.io/v1alpha2", "TLSRoute"),
            Class::NotSupportedYet {
                group: "gateway.networking.k8s.io".into()
            }
        );
        assert_eq!(
            classify("apps/v1", "Deployment"),
            Class::Skipped {
                group: "apps".into()
            }
        );
        assert_eq!(
            classify("v1", "ServiceAccount"),
            Class::Skipped { group: "".into() }
        );
    }

    #[test]
    fn unknown_kinds_are_rejected_with_a_hint() {
        assert_eq!(
            classify("v1", "Servce").to_owned(),
            Class::Rejected(KindError::Unknown {
                kind: "Servce".into(),
                api_version: "v1".into(),
                hint: String::new(),
            })
        );
        let Class::Rejected(err) = classify("v1", "VirtualService") else {
            panic!("should be rejected");
        };
        assert_eq!(
            err.to_string(),
            "unknown kind VirtualService (apiVersion v1); VirtualService is served by \
             networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"
        );
        // A Deployment outside its group is not a Kubernetes Deployment.
        assert!(matches!(
            classify("example.com/v1", "Deployment"),
            Class::Rejected(KindError::Unknown { .. })
        ));
    }
}
