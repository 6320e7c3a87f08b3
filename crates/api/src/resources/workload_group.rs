//! Istio's `WorkloadGroup`: the template from which WorkloadEntries are made for workloads
//! that register themselves (VMs), their metadata, and the readiness probe run against
//! them. The mesh parses and validates it but does not act on it yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::istio::{
    check_exclusive, check_max_items, check_non_negative, check_port, push, IstioError,
};
use super::notice::{Notice, NoticeReason};
use super::path::FieldPath;
use super::validate::{ValidationError, Violation};
use super::{ObjectMeta, WorkloadEntrySpec};

/// Most labels or annotations in the group's metadata.
const MAX_METADATA_ENTRIES: usize = 256;

/// An Istio `WorkloadGroup`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    /// `networking.istio.io/v1` (or `v1beta1`, `v1alpha3`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Template, metadata, probe.
    pub spec: WorkloadGroupSpec,
}

/// The spec of a [`WorkloadGroup`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupSpec {
    /// Labels and annotations copied onto the generated WorkloadEntries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupMetadata>,
    /// The WorkloadEntry every member starts from; its address comes from the member.
    pub template: WorkloadEntrySpec,
    /// How members are checked for readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// Labels and annotations for the generated WorkloadEntries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupMetadata {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A readiness probe; at most one of `httpGet`, `tcpSocket`, `exec` and `grpc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessProbe {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds before a probe times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Successes in a row to be ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Failures in a row to be unready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// An HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheck>,
    /// A TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheck>,
    /// A command on the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheck>,
    /// A gRPC health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
}

/// An HTTP GET readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The port, 1..=65535. Required.
    pub port: u32,
    /// The host to connect to (the workload by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<ProbeHeader>,
}

/// A header sent with an HTTP readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeHeader {
    /// The name: letters, digits, `-` and `_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A TCP connect readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {
    /// The host to connect to (the workload by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The port, 1..=65535. Required.
    pub port: u32,
}

/// A command readiness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecHealthCheck {
    /// The command and its arguments, none empty. Required.
    pub command: Vec<String>,
}

/// A gRPC health check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The port, 1..=65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// The service name to check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Why a WorkloadGroup is rejected, for the rules specific to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadGroupError {
    /// A probe scheme other than HTTP and HTTPS.
    #[error("scheme {value:?} must be HTTP or HTTPS")]
    Scheme {
        /// The scheme as written.
        value: String,
    },
}

impl From<WorkloadGroupError> for ValidationError {
    fn from(error: WorkloadGroupError) -> Self {
        ValidationError::WorkloadGroup(error)
    }
}

/// Whether `name` is a probe header name: `^[-_A-Za-z0-9]+$`.
fn is_probe_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl WorkloadGroupSpec {
    /// Adds the semantic problems of this spec to `out`, following Istio's CRD rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        if let Some(metadata) = &self.metadata {
            let at = spec.field("metadata");
            for (name, map) in [
                ("labels", &metadata.labels),
                ("annotations", &metadata.annotations),
            ] {
                check_max_items(map.len(), MAX_METADATA_ENTRIES, name, &at.field(name), out);
            }
        }
        self.template
            .validate_at(&spec.field("template"), false, out);
        if let Some(probe) = &self.probe {
            probe.validate(&spec.field("probe"), out);
        }
    }

    /// The mesh does not act on WorkloadGroups yet: one notice for the whole resource.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        out.push(Notice::new(
            FieldPath::root(),
            NoticeReason::NotActedOn {
                kind: "WorkloadGroup",
                action: "acted on",
            },
        ));
    }
}

impl ReadinessProbe {
    /// Checks the probe at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_exclusive(
            "httpGet, tcpSocket, exec or grpc",
            &[
                ("httpGet", self.http_get.is_some()),
                ("tcpSocket", self.tcp_socket.is_some()),
                ("exec", self.exec.is_some()),
                ("grpc", self.grpc.is_some()),
            ],
            path,
            out,
        );
        for (name, value) in [
            ("initialDelaySeconds", self.initial_delay_seconds),
            ("timeoutSeconds", self.timeout_seconds),
            ("periodSeconds", self.period_seconds),
            ("successThreshold", self.success_threshold),
            ("failureThreshold", self.failure_threshold),
        ] {
            check_non_negative(value, name, &path.field(name), out);
        }
        if let Some(http) = &self.http_get {
            let at = path.field("httpGet");
            check_port(Some(http.port), &at.field("port"), out);
            if let Some(scheme) = &http.scheme {
                if !matches!(scheme.as_str(), "" | "HTTP" | "HTTPS") {
                    push(
                        out,
                        at.field("scheme"),
                        WorkloadGroupError::Scheme {
                            value: scheme.clone(),
                        },
                    );
                }
            }
            for (i, header) in http.http_headers.iter().enumerate() {
                if let Some(name) = &header.name {
                    if !is_probe_header_name(name) {
                        push(
                            out,
                            at.field("httpHeaders").index(i).field("name"),
                            IstioError::Pattern {
                                what: "header name",
                                value: name.clone(),
                                rule: "letters, digits, '-' and '_'",
                            },
                        );
                    }
                }
            }
        }
        if let Some(tcp) = &self.tcp_socket {
            check_port(Some(tcp.port), &path.field("tcpSocket").field("port"), out);
        }
        if let Some(exec) = &self.exec {
            for (i, arg) in exec.command.iter().enumerate() {
                if arg.is_empty() {
                    push(
                        out,
                        path.field("exec").field("command").index(i),
                        ValidationError::Empty {
                            what: "command argument",
                        },
                    );
                }
            }
        }
        if let Some(grpc) = &self.grpc {
            check_port(grpc.port, &path.field("grpc").field("port"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(value: serde_json::Value) -> Vec<String> {
        let spec: WorkloadGroupSpec = serde_json::from_value(value).unwrap();
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    #[test]
    fn template_needs_no_address() {
        assert!(violations(serde_json::json!({"template": {}})).is_empty());
        assert_eq!(
            violations(serde_json::json!({"template": {"address": "unix://x/"}})),
            [
                "spec.template.address: UDS must be an absolute path or abstract socket",
                "spec.template.address: UDS may not be a dir",
            ]
        );
    }

    #[test]
    fn probes_are_checked() {
        let got = violations(serde_json::json!({
            "template": {},
            "probe": {
                "periodSeconds": -1,
                "httpGet": {"port": 0, "scheme": "FTP", "httpHeaders": [{"name": "**"}]},
                "tcpSocket": {"port": 65536},
            },
        }));
        let paths: Vec<&str> = got
            .iter()
            .map(|g| g.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "spec.probe",
                "spec.probe.periodSeconds",
                "spec.probe.httpGet.port",
                "spec.probe.httpGet.scheme",
                "spec.probe.httpGet.httpHeaders[0].name",
                "spec.probe.tcpSocket.port",
            ],
            "{got:#?}"
        );
    }
}
