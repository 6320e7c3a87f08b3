//! Istio's `DestinationRule`: named subsets of a service's workloads (by label), which
//! VirtualService routes refer to, plus traffic policies (load balancing, connection pools,
//! outlier detection, TLS, ...) typed after Istio's `v1` schema in [`traffic_policy`],
//! [`load_balancer`] and [`connection_pool`]. The mesh acts on the host and the subsets;
//! every other field that is set is reported as not implemented yet.

mod connection_pool;
mod load_balancer;
mod traffic_policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::istio::{check_export_to, check_host, check_label_map, push, LabelRule};
use super::path::FieldPath;
use super::validate::{check_unique_names, is_dns1123_label, ValidationError, Violation};
use super::ObjectMeta;

pub use super::istio::WorkloadSelector;
pub use connection_pool::{
    ConnectionPoolSettings, H2UpgradePolicy, Http2KeepAlive, HttpSettings, TcpKeepalive,
    TcpSettings,
};
pub use load_balancer::{
    BackendUtilization, ConsistentHashLb, CookieAttribute, HttpCookie, LoadBalancerSettings,
    LocalityDistribute, LocalityFailover, LocalityLbSetting, Maglev, RingHash, SimpleLb,
    WarmupConfiguration, ZoneAwareLbSetting,
};
pub use traffic_policy::{
    ClientTlsMode, ClientTlsSettings, OutlierDetection, PortTrafficPolicy, ProxyProtocol,
    ProxyProtocolVersion, RetryBudget, TrafficPolicy, TunnelSettings,
};

/// An Istio `DestinationRule`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// `networking.istio.io/v1` (or `v1beta1`, `v1alpha3`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Host and subsets.
    pub spec: DestinationRuleSpec,
}

/// The spec of a [`DestinationRule`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// The service the rule applies to (short name or FQDN).
    pub host: String,
    /// Named groups of the service's workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Load balancing, connection pool, outlier detection, retry budget (see
    /// [`crate::destination`]); TLS, tunnel and PROXY protocol are not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// The client namespaces the rule applies to (`.` its own, `*` all; empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// The client workloads of the rule's namespace it applies to; empty: every client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// A named subset of a service's workloads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// The name routes refer to; a DNS-1123 label, unique within the rule.
    pub name: String,
    /// Labels a workload must carry (in addition to the service selector) to be in the subset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The subset's own traffic policy, laid over the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Why a DestinationRule is rejected, for the rules specific to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DestinationRuleError {
    /// A policy object with nothing in it, which Istio rejects as a likely mistake.
    #[error("{what} must set at least one field")]
    EmptyPolicy {
        /// Which policy ("a traffic policy").
        what: &'static str,
    },
    /// A port-level policy without its port.
    #[error("a port-level traffic policy needs port.number")]
    PortRequired,
    /// ISTIO_MUTUAL with certificates of its own.
    #[error(
        "mode ISTIO_MUTUAL uses the mesh's certificates: clientCertificate, privateKey, \
         caCertificates, caCrl and credentialName must not be set"
    )]
    IstioMutualWithCertificates,
    /// A secret and certificate files at once.
    #[error(
        "credentialName cannot be combined with clientCertificate, privateKey, \
         caCertificates or caCrl"
    )]
    CredentialNameWithFiles,
    /// MUTUAL without a client certificate.
    #[error("mode MUTUAL needs clientCertificate and privateKey, or credentialName")]
    MutualWithoutCertificate,
    /// A tunnel protocol other than CONNECT and POST.
    #[error("tunnel protocol {value:?} must be CONNECT or POST")]
    TunnelProtocol {
        /// The protocol as written.
        value: String,
    },
    /// A locality that is not `region/zone/subzone`.
    #[error(
        "{value:?} is not a valid locality (region, region/zone or region/zone/subzone, with \
         '*' only as a whole last part)"
    )]
    Locality {
        /// The locality as written.
        value: String,
    },
    /// Locality distribution weights that do not add up to 100.
    #[error("locality distribution weights add up to {total}, they must add up to 100")]
    DistributeTotal {
        /// The sum as written.
        total: u64,
    },
    /// A failover to the failing region itself.
    #[error("failover from {value:?} to itself")]
    FailoverToSelf {
        /// The region.
        value: String,
    },
}

impl From<DestinationRuleError> for ValidationError {
    fn from(error: DestinationRuleError) -> Self {
        ValidationError::DestinationRule(error)
    }
}

impl DestinationRuleSpec {
    /// Adds the semantic problems of this spec to `out`.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        if self.host.is_empty() {
            push(
                out,
                spec.field("host"),
                ValidationError::Empty { what: "host" },
            );
        } else {
            check_host(&self.host, &spec.field("host"), out);
        }
        let subsets = spec.field("subsets");
        for (i, subset) in self.subsets.iter().enumerate() {
            let at = subsets.index(i);
            if !is_dns1123_label(&subset.name) {
                push(
                    out,
                    at.field("name"),
                    ValidationError::NotDnsLabel {
                        value: subset.name.clone(),
                    },
                );
            }
            check_label_map(&subset.labels, LabelRule::Labels, &at.field("labels"), out);
            if let Some(policy) = &subset.traffic_policy {
                policy.validate(&at.field("trafficPolicy"), out);
            }
        }
        check_unique_names(
            "subset",
            self.subsets
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.name.as_str())),
            |i| subsets.index(i).field("name"),
            out,
        );
        if let Some(policy) = &self.traffic_policy {
            policy.validate(&spec.field("trafficPolicy"), out);
        }
        check_export_to(&self.export_to, &spec.field("exportTo"), out);
        if let Some(selector) = &self.workload_selector {
            selector.validate(&spec.field("workloadSelector"), out);
        }
    }

    /// Adds the set-but-not-acted-on fields of this spec (at `spec`) to `out`.
    pub(crate) fn unimplemented_fields(&self, spec: &FieldPath, out: &mut Vec<FieldPath>) {
        if let Some(tp) = &self.traffic_policy {
            crate::destination::ignored_fields(tp, &spec.field("trafficPolicy"), out);
        }
        for (i, subset) in self.subsets.iter().enumerate() {
            if let Some(tp) = &subset.traffic_policy {
                let at = spec.field("subsets").index(i).field("trafficPolicy");
                crate::destination::ignored_fields(tp, &at, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subset(name: &str) -> Subset {
        Subset {
            name: name.into(),
            ..Subset::default()
        }
    }

    #[test]
    fn host_and_subset_names_are_checked() {
        let spec = DestinationRuleSpec {
            host: String::new(),
            subsets: vec![subset("v1"), subset("V2"), subset("v1")],
            ..DestinationRuleSpec::default()
        };
        let mut out = Vec::new();
        spec.validate(&mut out);
        let got: Vec<String> = out
            .iter()
            .map(|v| format!("{}: {}", v.path, v.error))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "spec.host: host must not be empty");
        assert!(got[1].starts_with("spec.subsets[1].name: \"V2\" is not a valid DNS-1123 label"));
        assert_eq!(
            got[2],
            "spec.subsets[2].name: duplicate subset name \"v1\" (also used at index 0)"
        );
    }

    #[test]
    fn reports_unimplemented_fields() {
        let mut spec = DestinationRuleSpec {
            host: "reviews".into(),
            subsets: vec![subset("v1"), subset("v2")],
            traffic_policy: Some(policy(serde_json::json!({"tls": {"mode": "SIMPLE"}}))),
            ..DestinationRuleSpec::default()
        };
        spec.subsets[0].traffic_policy =
            Some(policy(serde_json::json!({"tls": {"mode": "ISTIO_MUTUAL"}})));
        spec.subsets[1].traffic_policy = Some(policy(serde_json::json!({
            "loadBalancer": {"simple": "ROUND_ROBIN", "warmup": {"duration": "10s"}},
            "connectionPool": {"http": {"http2MaxRequests": 10, "maxRetries": 3}},
            "outlierDetection": {"consecutive5xxErrors": 3},
        })));
        let mut out = Vec::new();
        spec.unimplemented_fields(&FieldPath::root().field("spec"), &mut out);
        let got: Vec<String> = out.iter().map(ToString::to_string).collect();
        // What the proxy acts on (the balancer, the request limit, outlier detection) is
        // not listed; the rest is. `ISTIO_MUTUAL` alone is what the mesh does: not listed.
        assert_eq!(
            got,
            [
                "spec.trafficPolicy.tls",
                "spec.subsets[1].trafficPolicy.loadBalancer.warmup",
                "spec.subsets[1].trafficPolicy.connectionPool.http.maxRetries",
            ]
        );
    }

    fn policy(value: serde_json::Value) -> TrafficPolicy {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    fn policy_paths(value: serde_json::Value) -> Vec<String> {
        let spec = DestinationRuleSpec {
            host: "reviews".into(),
            traffic_policy: Some(policy(value)),
            ..DestinationRuleSpec::default()
        };
        let mut out = Vec::new();
        spec.validate(&mut out);
        out.iter().map(|v| v.path.to_string()).collect()
    }

    #[test]
    fn warmup_follows_istio() {
        assert!(policy_paths(serde_json::json!({
            "loadBalancer": {"warmup": {"duration": "300s", "minimumPercent": 5.0, "aggression": 5}}
        }))
        .is_empty());
        assert_eq!(
            policy_paths(serde_json::json!({
                "loadBalancer": {"warmup": {
                    "duration": "0.5ms", "minimumPercent": 150.0, "aggression": -0.1
                }}
            })),
            [
                "spec.trafficPolicy.loadBalancer.warmup.duration",
                "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
                "spec.trafficPolicy.loadBalancer.warmup.aggression",
            ]
        );
        let err = serde_json::from_value::<TrafficPolicy>(serde_json::json!({
            "loadBalancer": {"warmup": {"minimumPercent": 5.0}}
        }))
        .unwrap_err();
        assert_eq!(err.to_string(), "missing field `duration`");
    }

    #[test]
    fn simple_load_balancers_are_an_enum() {
        for name in [
            "UNSPECIFIED",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
            "LEAST_CONN",
        ] {
            let p = policy(serde_json::json!({"loadBalancer": {"simple": name}}));
            assert!(p.load_balancer.and_then(|lb| lb.simple).is_some(), "{name}");
        }
        let err = serde_json::from_value::<TrafficPolicy>(
            serde_json::json!({"loadBalancer": {"simple": "ROUND_ROBBIN"}}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `ROUND_ROBBIN`"),
            "{err}"
        );
    }

    #[test]
    fn traffic_policy_rules() {
        assert_eq!(
            policy_paths(serde_json::json!({
                "loadBalancer": {
                    "simple": "RANDOM",
                    "consistentHash": {"useSourceIp": true, "httpHeaderName": "x", "maglev": {}, "minimumRingSize": 3},
                    "localityLbSetting": {
                        "distribute": [{"from": "us/*", "to": {"us/a": 60, "eu": 30}}],
                        "failover": [{"from": "us", "to": "us"}],
                    },
                },
                "connectionPool": {
                    "tcp": {"maxConnections": -1, "connectTimeout": "0s"},
                    "http": {"http2KeepAlive": {"interval": "15s", "timeout": "0ms"}},
                },
                "outlierDetection": {"maxEjectionPercent": 101, "outlierDetectionHttpErrorCodes": [99]},
                "tls": {"mode": "MUTUAL"},
                "portLevelSettings": [{"tls": {"mode": "ISTIO_MUTUAL", "credentialName": "c"}}, {"port": {"number": 80}}],
                "tunnel": {"protocol": "GET", "targetHost": "", "targetPort": 0},
                "retryBudget": {"percent": 200.0},
            })),
            [
                "spec.trafficPolicy.loadBalancer",
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "spec.trafficPolicy.loadBalancer.localityLbSetting",
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
                "spec.trafficPolicy.connectionPool.tcp.maxConnections",
                "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
                "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[0]",
                "spec.trafficPolicy.tls",
                "spec.trafficPolicy.portLevelSettings[0].port",
                "spec.trafficPolicy.portLevelSettings[0].tls",
                "spec.trafficPolicy.portLevelSettings[1]",
                "spec.trafficPolicy.tunnel.protocol",
                "spec.trafficPolicy.tunnel.targetHost",
                "spec.trafficPolicy.tunnel.targetPort",
                "spec.trafficPolicy.retryBudget.percent",
            ]
        );
        assert_eq!(policy_paths(serde_json::json!({})), ["spec.trafficPolicy"]);
    }

    #[test]
    fn serializes_back_to_the_same_json() {
        let value = serde_json::json!({
            "host": "ratings.prod.svc.cluster.local",
            "trafficPolicy": {
                "loadBalancer": {"warmup": {"duration": "300s", "minimumPercent": 5.0}},
                "connectionPool": {"http": {"http2KeepAlive": {"interval": "15s", "timeout": "5s"}}},
                "outlierDetection": {"consecutive5xxErrors": 7, "interval": "5m"},
            },
            "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}],
        });
        let spec: DestinationRuleSpec = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), value);
    }
}
