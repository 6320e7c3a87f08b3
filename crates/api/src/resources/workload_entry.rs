//! Istio's `WorkloadEntry`: one workload instance outside Kubernetes (a process, a VM) with
//! its address, named ports and labels. Services select entries by label.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::istio::{check_max_items, check_max_len};
use super::path::FieldPath;
use super::validate::{ValidationError, Violation};
use super::{note_if, ObjectMeta};

/// Highest TCP/UDP port number.
const MAX_PORT: u32 = 65535;
/// Istio's bound on WorkloadEntry port names (`size(key) < 63`).
const PORT_NAME_MAX: usize = 62;
/// Scheme of a Unix domain socket address.
const UNIX_SCHEME: &str = "unix://";
/// Longest address (`maxLength` in Istio's schema).
const MAX_ADDRESS_LEN: usize = 256;
/// Longest network or locality.
const MAX_NETWORK_LEN: usize = 2048;
/// Longest service account.
const MAX_SERVICE_ACCOUNT_LEN: usize = 253;
/// Most ports.
const MAX_PORTS: usize = 128;
/// Most labels.
const MAX_LABELS: usize = 256;

/// An Istio `WorkloadEntry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// `networking.istio.io/v1` (or `v1beta1`, `v1alpha3`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Address, ports, labels.
    pub spec: WorkloadEntrySpec,
}

/// The spec of a [`WorkloadEntry`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntrySpec {
    /// IP address, DNS name or `unix://` socket of the workload. Istio lets it be empty when
    /// `network` is set (the workload is then reached through that network's gateway); the
    /// validation accepts that form, so consumers must expect an empty address exactly then.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port name → port number on the workload; a service port whose name matches is sent
    /// there, otherwise to the service's target port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels matched by Service selectors and DestinationRule subsets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Not implemented: the network the workload is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Not implemented: region/zone/subzone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Not implemented: load-balancing weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The service account the workload runs as, which is its mesh identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Istio's rule for WorkloadEntry port names: `^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`,
/// shorter than 63 characters.
fn is_valid_port_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= PORT_NAME_MAX
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

impl WorkloadEntrySpec {
    /// Adds the semantic problems of this spec to `out`, following Istio's CRD validation
    /// rules for the fields the mesh reads.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        self.validate_at(&FieldPath::root().field("spec"), true, out);
    }

    /// The checks of [`WorkloadEntrySpec::validate`] for a spec found at `path`: a
    /// WorkloadEntry's spec, a ServiceEntry endpoint, or a WorkloadGroup template (which
    /// needs no address: the group's workloads bring their own).
    pub(crate) fn validate_at(
        &self,
        path: &FieldPath,
        address_required: bool,
        out: &mut Vec<Violation>,
    ) {
        let address_path = path.field("address");
        check_max_len(
            &self.address,
            MAX_ADDRESS_LEN,
            "address",
            &address_path,
            out,
        );
        if self.address.is_empty() {
            if address_required && self.network.is_none() {
                out.push(Violation::new(
                    address_path.clone(),
                    ValidationError::AddressRequired,
                ));
            }
        } else if let Some(socket) = self.address.strip_prefix(UNIX_SCHEME) {
            if !(socket.starts_with('/') || socket.starts_with('@')) {
                out.push(Violation::new(
                    address_path.clone(),
                    ValidationError::UnixSocket {
                        reason: "UDS must be an absolute path or abstract socket",
                    },
                ));
            }
            if socket.ends_with('/') {
                out.push(Violation::new(
                    address_path.clone(),
                    ValidationError::UnixSocket {
                        reason: "UDS may not be a dir",
                    },
                ));
            }
            if !self.ports.is_empty() {
                out.push(Violation::new(
                    path.field("ports"),
                    ValidationError::UnixSocket {
                        reason: "UDS may not include ports",
                    },
                ));
            }
        }
        let ports = path.field("ports");
        check_max_items(self.ports.len(), MAX_PORTS, "ports", &ports, out);
        for (name, port) in &self.ports {
            // Istio checks port names with a rule on the map as a whole, so it reports them
            // at `ports`; the message names the offending key.
            if !is_valid_port_name(name) {
                out.push(Violation::new(
                    ports.clone(),
                    ValidationError::InvalidPortName {
                        value: name.clone(),
                    },
                ));
            }
            if !(1..=MAX_PORT).contains(port) {
                out.push(Violation::new(
                    ports.field(name),
                    ValidationError::PortOutOfRange {
                        port: u64::from(*port),
                    },
                ));
            }
        }
        check_max_items(
            self.labels.len(),
            MAX_LABELS,
            "labels",
            &path.field("labels"),
            out,
        );
        let texts = [
            ("network", self.network.as_deref(), MAX_NETWORK_LEN),
            ("locality", self.locality.as_deref(), MAX_NETWORK_LEN),
            (
                "serviceAccount",
                self.service_account.as_deref(),
                MAX_SERVICE_ACCOUNT_LEN,
            ),
        ];
        for (name, value, max) in texts {
            if let Some(value) = value {
                check_max_len(value, max, name, &path.field(name), out);
            }
        }
    }

    /// Adds the set-but-not-acted-on fields of this spec (at `spec`) to `out`.
    pub(crate) fn unimplemented_fields(&self, spec: &FieldPath, out: &mut Vec<FieldPath>) {
        note_if(out, self.network.is_some(), spec.field("network"));
        note_if(out, self.locality.is_some(), spec.field("locality"));
        note_if(out, self.weight.is_some(), spec.field("weight"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(spec: &WorkloadEntrySpec) -> Vec<String> {
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    #[test]
    fn address_is_required_unless_network_is_set() {
        assert_eq!(
            violations(&WorkloadEntrySpec::default()),
            ["spec.address: address is required"]
        );
        let spec = WorkloadEntrySpec {
            network: Some("net".into()),
            ..WorkloadEntrySpec::default()
        };
        assert!(violations(&spec).is_empty());
    }

    #[test]
    fn ports_are_checked() {
        let spec = WorkloadEntrySpec {
            address: "10.0.0.1".into(),
            ports: [("http".to_owned(), 99999), ("@".to_owned(), 80)].into(),
            ..WorkloadEntrySpec::default()
        };
        assert_eq!(
            violations(&spec),
            [
                "spec.ports: \"@\" is not a valid port name (letters, digits and '-', \
                 starting and ending with a letter or digit, shorter than 63 characters)",
                "spec.ports.http: port 99999 must be between 1 and 65535",
            ]
        );
    }

    #[test]
    fn unix_sockets_follow_istio_rules() {
        let spec = WorkloadEntrySpec {
            address: "unix://relative/".into(),
            ports: [("http".to_owned(), 80)].into(),
            ..WorkloadEntrySpec::default()
        };
        assert_eq!(
            violations(&spec),
            [
                "spec.address: UDS must be an absolute path or abstract socket",
                "spec.address: UDS may not be a dir",
                "spec.ports: UDS may not include ports",
            ]
        );
        let spec = WorkloadEntrySpec {
            address: "unix://@foo".into(),
            ..WorkloadEntrySpec::default()
        };
        assert!(violations(&spec).is_empty());
    }
}
