//! Istio's `ServiceEntry`: a service the mesh's registry does not know by itself (an
//! external API, VMs), with its hosts, addresses, ports, how endpoints are resolved, and the
//! endpoints or the workload selector that provide them. The mesh parses and validates it
//! against Istio's rules but does not act on it yet, and says so with a notice.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::istio::{
    check_exclusive, check_export_to, check_ip_or_cidr, check_label_map, check_max_items,
    check_max_len, check_port, push, LabelRule,
};
use super::notice::{Notice, NoticeReason};
use super::path::FieldPath;
use super::validate::{check_unique_names, ValidationError, Violation};
use super::{ObjectMeta, WorkloadEntrySpec};

/// Most hosts, addresses and ports.
const MAX_HOSTS: usize = 256;
/// Most endpoints.
const MAX_ENDPOINTS: usize = 4096;
/// Most selector labels.
const MAX_SELECTOR_LABELS: usize = 256;
/// Longest address.
const MAX_ADDRESS_LEN: usize = 64;
/// Longest port name or protocol.
const MAX_PORT_TEXT_LEN: usize = 256;

/// An Istio `ServiceEntry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// `networking.istio.io/v1` (or `v1beta1`, `v1alpha3`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Hosts, ports, resolution, endpoints.
    pub spec: ServiceEntrySpec,
}

/// The spec of a [`ServiceEntry`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// The hosts the entry defines (DNS names, `*.`-prefixed wildcards). Required.
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The service's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServiceEntryPort>,
    /// Whether the service is inside or outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are found (NONE by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Static endpoints; exclusive with `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Selects WorkloadEntries and Pods as endpoints; exclusive with `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<ServiceEntrySelector>,
    /// Namespaces the entry is visible to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Names the service's certificates must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of a [`ServiceEntry`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntryPort {
    /// The port number, 1..=65535. Required.
    pub number: u32,
    /// The protocol (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The port name, unique within the entry. Required.
    pub name: String,
    /// The endpoints' port, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Where a [`ServiceEntry`] lives relative to the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside: no mTLS, no mesh identity.
    MeshExternal,
    /// Inside: part of the mesh.
    MeshInternal,
}

/// How a [`ServiceEntry`]'s endpoints are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the caller dialled.
    None,
    /// The given endpoint addresses.
    Static,
    /// Resolve the hosts (or endpoint names) by DNS, all addresses.
    Dns,
    /// Resolve by DNS, first address only.
    DnsRoundRobin,
    /// Resolve the requested host by DNS at request time.
    DynamicDns,
}

/// The workload selector of a [`ServiceEntry`]: labels, matched literally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySelector {
    /// Labels a workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Why a ServiceEntry is rejected, for the rules specific to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceEntryError {
    /// `*` alone as a host, which would capture all traffic.
    #[error("hostname \"*\" is not allowed: a ServiceEntry host cannot be only a wildcard")]
    WildcardHost,
    /// A CIDR address with a resolution that needs single addresses.
    #[error("CIDR address {value:?} needs resolution NONE or STATIC, not {resolution}")]
    CidrResolution {
        /// The address.
        value: String,
        /// The resolution as written.
        resolution: &'static str,
    },
    /// Endpoints with resolution NONE, which forwards to the dialled address instead.
    #[error("resolution NONE forwards to the address the caller dialled and cannot set endpoints")]
    EndpointsWithNone,
    /// Several endpoints with DNS_ROUND_ROBIN, which uses one.
    #[error("resolution DNS_ROUND_ROBIN cannot have multiple endpoints, found {count}")]
    RoundRobinEndpoints {
        /// How many endpoints are listed.
        count: usize,
    },
    /// Two ports with one number.
    #[error("duplicate port number {number} (also used at index {first})")]
    DuplicatePortNumber {
        /// The number.
        number: u32,
        /// Index of the first port with it.
        first: usize,
    },
}

impl From<ServiceEntryError> for ValidationError {
    fn from(error: ServiceEntryError) -> Self {
        ValidationError::ServiceEntry(error)
    }
}

impl Resolution {
    /// The name as written in YAML.
    fn as_str(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Resolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

impl ServiceEntrySpec {
    /// Adds the semantic problems of this spec to `out`, following Istio's CRD rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        self.validate_hosts_and_addresses(&spec, out);
        self.validate_ports(&spec, out);
        check_exclusive(
            "workloadSelector or endpoints",
            &[
                ("workloadSelector", self.workload_selector.is_some()),
                ("endpoints", !self.endpoints.is_empty()),
            ],
            &spec,
            out,
        );
        let endpoints = spec.field("endpoints");
        let resolution = self.resolution.unwrap_or(Resolution::None);
        if resolution == Resolution::None && !self.endpoints.is_empty() {
            push(out, endpoints.clone(), ServiceEntryError::EndpointsWithNone);
        }
        if resolution == Resolution::DnsRoundRobin && self.endpoints.len() > 1 {
            push(
                out,
                endpoints.clone(),
                ServiceEntryError::RoundRobinEndpoints {
                    count: self.endpoints.len(),
                },
            );
        }
        check_max_items(
            self.endpoints.len(),
            MAX_ENDPOINTS,
            "endpoints",
            &endpoints,
            out,
        );
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            endpoint.validate_at(&endpoints.index(i), true, out);
        }
        if let Some(selector) = &self.workload_selector {
            check_label_map(
                &selector.labels,
                LabelRule::Selector {
                    max: MAX_SELECTOR_LABELS,
                },
                &spec.field("workloadSelector").field("labels"),
                out,
            );
        }
        check_export_to(&self.export_to, &spec.field("exportTo"), out);
    }

    /// Checks `hosts` and `addresses`.
    fn validate_hosts_and_addresses(&self, spec: &FieldPath, out: &mut Vec<Violation>) {
        let hosts = spec.field("hosts");
        if self.hosts.is_empty() {
            push(
                out,
                hosts.clone(),
                ValidationError::AtLeastOne { what: "host" },
            );
        }
        check_max_items(self.hosts.len(), MAX_HOSTS, "hosts", &hosts, out);
        for (i, host) in self.hosts.iter().enumerate() {
            // Istio's CRD checks only these two; partial wildcards (`*x`) are accepted.
            if host.is_empty() {
                push(out, hosts.index(i), ValidationError::Empty { what: "host" });
            } else if host == "*" {
                push(out, hosts.index(i), ServiceEntryError::WildcardHost);
            }
        }
        let addresses = spec.field("addresses");
        check_max_items(
            self.addresses.len(),
            MAX_HOSTS,
            "addresses",
            &addresses,
            out,
        );
        let resolution = self.resolution.unwrap_or(Resolution::None);
        for (i, address) in self.addresses.iter().enumerate() {
            let at = addresses.index(i);
            check_max_len(address, MAX_ADDRESS_LEN, "address", &at, out);
            check_ip_or_cidr(address, &at, out);
            if address.contains('/') && !matches!(resolution, Resolution::None | Resolution::Static)
            {
                push(
                    out,
                    at,
                    ServiceEntryError::CidrResolution {
                        value: address.clone(),
                        resolution: resolution.as_str(),
                    },
                );
            }
        }
    }

    /// Checks `ports`: ranges, sizes and unique names and numbers.
    fn validate_ports(&self, spec: &FieldPath, out: &mut Vec<Violation>) {
        let ports = spec.field("ports");
        check_max_items(self.ports.len(), MAX_HOSTS, "ports", &ports, out);
        let mut numbers: HashMap<u32, usize> = HashMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = ports.index(i);
            check_port(Some(port.number), &at.field("number"), out);
            check_port(port.target_port, &at.field("targetPort"), out);
            check_max_len(
                &port.name,
                MAX_PORT_TEXT_LEN,
                "port name",
                &at.field("name"),
                out,
            );
            if let Some(protocol) = &port.protocol {
                check_max_len(
                    protocol,
                    MAX_PORT_TEXT_LEN,
                    "protocol",
                    &at.field("protocol"),
                    out,
                );
            }
            if let Some(first) = numbers.get(&port.number) {
                push(
                    out,
                    at.field("number"),
                    ServiceEntryError::DuplicatePortNumber {
                        number: port.number,
                        first: *first,
                    },
                );
            } else {
                numbers.insert(port.number, i);
            }
        }
        check_unique_names(
            "port",
            self.ports
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.name.as_str())),
            |i| ports.index(i).field("name"),
            out,
        );
    }

    /// The mesh does not act on ServiceEntries yet: one notice for the whole resource.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        out.push(Notice::new(
            FieldPath::root(),
            NoticeReason::NotActedOn {
                kind: "ServiceEntry",
                action: "acted on",
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(spec: &ServiceEntrySpec) -> Vec<String> {
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    fn spec(value: serde_json::Value) -> ServiceEntrySpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn hosts_are_required_and_not_bare_wildcards() {
        let err = serde_json::from_value::<ServiceEntrySpec>(serde_json::json!({})).unwrap_err();
        assert_eq!(err.to_string(), "missing field `hosts`");
        assert_eq!(
            violations(&spec(serde_json::json!({"hosts": []}))),
            ["spec.hosts: at least one host is required"]
        );
        assert!(
            violations(&spec(serde_json::json!({"hosts": ["*x", "*.example.com"]}))).is_empty()
        );
        assert_eq!(
            violations(&spec(serde_json::json!({"hosts": ["*"]}))),
            [
                "spec.hosts[0]: hostname \"*\" is not allowed: a ServiceEntry host cannot be only \
              a wildcard"
            ]
        );
    }

    #[test]
    fn resolution_rules() {
        let got = violations(&spec(serde_json::json!({
            "hosts": ["a.com"], "addresses": ["10.0.0.0/8", "bad"], "resolution": "DNS",
        })));
        assert_eq!(
            got,
            [
                "spec.addresses[0]: CIDR address \"10.0.0.0/8\" needs resolution NONE or STATIC, \
                 not DNS",
                "spec.addresses[1]: \"bad\" is not an IP address or CIDR block",
            ]
        );
        let got = violations(&spec(serde_json::json!({
            "hosts": ["a.com"], "endpoints": [{"address": "1.1.1.1"}],
        })));
        assert_eq!(got.len(), 1);
        assert!(
            got[0].starts_with("spec.endpoints: resolution NONE"),
            "{got:?}"
        );
        let got = violations(&spec(serde_json::json!({
            "hosts": ["a.com"], "resolution": "DNS_ROUND_ROBIN",
            "endpoints": [{"address": "a.com"}, {"address": "b.com"}],
            "workloadSelector": {"labels": {"app": "x"}},
        })));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("spec: only one of workloadSelector or endpoints"));
        assert!(got[1].contains("cannot have multiple endpoints"));
    }

    #[test]
    fn ports_and_endpoints() {
        let got = violations(&spec(serde_json::json!({
            "hosts": ["a.com"], "resolution": "STATIC",
            "ports": [
                {"name": "a", "number": 80},
                {"name": "a", "number": 80, "targetPort": 0},
            ],
            "endpoints": [{"address": "unix://rel", "ports": {"a": 70000}}],
        })));
        let paths: Vec<&str> = got
            .iter()
            .map(|g| g.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "spec.ports[1].targetPort",
                "spec.ports[1].number",
                "spec.ports[1].name",
                "spec.endpoints[0].address",
                "spec.endpoints[0].ports",
                "spec.endpoints[0].ports.a",
            ],
            "{got:#?}"
        );
    }
}
