//! The Kubernetes `Service` kind (`apiVersion: v1`): the name clients dial, its ports, and the
//! labels that select its workloads.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::path::FieldPath;
use super::validate::{
    check_unique_names, is_dns1123_label, is_iana_svc_name, ValidationError, Violation,
};
use super::{note_if, ObjectMeta};

/// Highest TCP/UDP port number.
const MAX_PORT: u64 = 65535;

/// A Kubernetes `Service`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// `v1`.
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Ports and selector.
    pub spec: ServiceSpec,
}

/// The spec of a [`Service`]. Only `selector` and `ports` are acted on; the other fields
/// Kubernetes defines are accepted (exported cluster YAML is full of them) and reported by
/// [`ServiceSpec::unimplemented_fields`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Labels a workload must carry to back this service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The ports the service exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Not implemented: ClusterIP/NodePort/LoadBalancer/ExternalName.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<Value>,
    /// Not implemented.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<Value>,
    /// Not implemented.
    #[serde(
        default,
        rename = "clusterIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_ips: Option<Value>,
    /// Not implemented.
    #[serde(
        default,
        rename = "externalIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ips: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<Value>,
    /// Not implemented.
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_load_balancer_node_ports: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_not_ready_addresses: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<Value>,
}

/// One port of a [`Service`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Required when the service has more than one port; a DNS-1123 label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port clients dial.
    pub port: u16,
    /// The workload port (number or named container port); defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// TCP (the default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The application protocol (`http`, `grpc`, `kubernetes.io/h2c`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<Value>,
}

/// Kubernetes' IntOrString: a port number or a port name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntOrString {
    /// A number.
    Int(i32),
    /// A name.
    String(String),
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => serializer.serialize_i32(*n),
            IntOrString::String(s) => serializer.serialize_str(s),
        }
    }
}

/// Written by hand rather than `#[serde(untagged)]` so that a wrong value gets a precise
/// message ("expected an integer or a string") instead of "did not match any variant".
struct IntOrStringVisitor;

impl Visitor<'_> for IntOrStringVisitor {
    type Value = IntOrString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
        i32::try_from(v)
            .map(IntOrString::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
        i32::try_from(v)
            .map(IntOrString::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
        Ok(IntOrString::String(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntOrStringVisitor)
    }
}

impl ServiceSpec {
    /// Adds the semantic problems of this spec to `out`.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let ports_path = FieldPath::root().field("spec").field("ports");
        if self.ports.is_empty() {
            out.push(Violation::new(
                ports_path.clone(),
                ValidationError::AtLeastOne { what: "port" },
            ));
        }
        for (i, port) in self.ports.iter().enumerate() {
            let path = ports_path.index(i);
            if port.port == 0 {
                out.push(Violation::new(
                    path.field("port"),
                    ValidationError::PortOutOfRange { port: 0 },
                ));
            }
            match &port.name {
                Some(name) if !is_dns1123_label(name) => out.push(Violation::new(
                    path.field("name"),
                    ValidationError::NotDnsLabel {
                        value: name.clone(),
                    },
                )),
                None if self.ports.len() > 1 => out.push(Violation::new(
                    path.field("name"),
                    ValidationError::PortNameRequired,
                )),
                _ => {}
            }
            match &port.target_port {
                Some(IntOrString::Int(n)) if !(1..=MAX_PORT as i64).contains(&i64::from(*n)) => {
                    out.push(Violation::new(
                        path.field("targetPort"),
                        ValidationError::PortOutOfRange {
                            // A negative number is reported as 0: still out of range, and
                            // the message need not carry a sign for that one case.
                            port: u64::try_from(*n).unwrap_or(0),
                        },
                    ))
                }
                Some(IntOrString::String(name)) if !is_iana_svc_name(name) => {
                    out.push(Violation::new(
                        path.field("targetPort"),
                        ValidationError::InvalidTargetPortName {
                            value: name.clone(),
                        },
                    ))
                }
                _ => {}
            }
            if let Some(protocol) = &port.protocol {
                if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                    out.push(Violation::new(
                        path.field("protocol"),
                        ValidationError::InvalidProtocol {
                            value: protocol.clone(),
                        },
                    ));
                }
            }
        }
        check_unique_names(
            "port",
            self.ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.name.as_deref().map(|n| (i, n))),
            |i| ports_path.index(i).field("name"),
            out,
        );
    }

    /// Adds the set-but-not-acted-on fields of this spec (at `spec`) to `out`.
    pub(crate) fn unimplemented_fields(&self, spec: &FieldPath, out: &mut Vec<FieldPath>) {
        let optional = [
            ("type", &self.type_),
            ("clusterIPs", &self.cluster_ips),
            ("externalIPs", &self.external_ips),
            ("externalName", &self.external_name),
            ("externalTrafficPolicy", &self.external_traffic_policy),
            ("internalTrafficPolicy", &self.internal_traffic_policy),
            ("healthCheckNodePort", &self.health_check_node_port),
            ("ipFamilies", &self.ip_families),
            ("ipFamilyPolicy", &self.ip_family_policy),
            ("loadBalancerClass", &self.load_balancer_class),
            ("loadBalancerIP", &self.load_balancer_ip),
            (
                "loadBalancerSourceRanges",
                &self.load_balancer_source_ranges,
            ),
            (
                "allocateLoadBalancerNodePorts",
                &self.allocate_load_balancer_node_ports,
            ),
            (
                "publishNotReadyAddresses",
                &self.publish_not_ready_addresses,
            ),
            ("sessionAffinity", &self.session_affinity),
            ("sessionAffinityConfig", &self.session_affinity_config),
            ("trafficDistribution", &self.traffic_distribution),
        ];
        for (name, value) in optional {
            note_if(out, value.is_some(), spec.field(name));
        }
        for (i, port) in self.ports.iter().enumerate() {
            note_if(
                out,
                port.node_port.is_some(),
                spec.field("ports").index(i).field("nodePort"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, number: u16) -> ServicePort {
        ServicePort {
            name: name.map(str::to_owned),
            port: number,
            ..ServicePort::default()
        }
    }

    fn violations(spec: &ServiceSpec) -> Vec<String> {
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    #[test]
    fn int_or_string_parses_both_and_rejects_others() {
        let p: ServicePort =
            serde_json::from_value(serde_json::json!({"port": 80, "targetPort": 8080})).unwrap();
        assert_eq!(p.target_port, Some(IntOrString::Int(8080)));
        let p: ServicePort =
            serde_json::from_value(serde_json::json!({"port": 80, "targetPort": "http"})).unwrap();
        assert_eq!(p.target_port, Some(IntOrString::String("http".into())));
        let err = serde_json::from_value::<ServicePort>(
            serde_json::json!({"port": 80, "targetPort": true}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid type: boolean `true`, expected an integer or a string"
        );
    }

    #[test]
    fn ports_are_checked() {
        assert_eq!(
            violations(&ServiceSpec::default()),
            ["spec.ports: at least one port is required"]
        );
        let spec = ServiceSpec {
            ports: vec![
                port(Some("http"), 80),
                port(Some("http"), 0),
                port(None, 81),
            ],
            ..ServiceSpec::default()
        };
        assert_eq!(
            violations(&spec),
            [
                "spec.ports[1].port: port 0 must be between 1 and 65535",
                "spec.ports[2].name: port name is required when a Service has more than one port",
                "spec.ports[1].name: duplicate port name \"http\" (also used at index 0)",
            ]
        );
    }

    #[test]
    fn single_unnamed_port_is_fine() {
        let spec = ServiceSpec {
            ports: vec![port(None, 80)],
            ..ServiceSpec::default()
        };
        assert!(violations(&spec).is_empty());
    }

    #[test]
    fn protocol_and_target_port_are_checked() {
        let mut p = port(None, 80);
        p.protocol = Some("HTTP".into());
        p.target_port = Some(IntOrString::Int(70000));
        let spec = ServiceSpec {
            ports: vec![p],
            ..ServiceSpec::default()
        };
        assert_eq!(
            violations(&spec),
            [
                "spec.ports[0].targetPort: port 70000 must be between 1 and 65535",
                "spec.ports[0].protocol: protocol \"HTTP\" must be one of TCP, UDP, SCTP",
            ]
        );
    }
}
