//! Istio's `PeerAuthentication`: whether the selected workloads accept plain text, mutual
//! TLS or both, for all ports or per port. Enforced by transparent-mode proxies on plaintext
//! inbound connections ([`crate::authz::effective_mtls`]); between proxies the mesh always
//! uses mutual TLS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SecurityError;
use crate::resources::istio::{check_range, push, IstioError, WorkloadSelector};
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;
use crate::resources::ObjectMeta;

/// An Istio `PeerAuthentication`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// `security.istio.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Selector and modes.
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

/// The spec of a [`PeerAuthentication`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// The workloads it applies to (all in the namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerAuthenticationMtls>,
    /// Modes for particular ports, by port number (a string key); needs a selector. `None`
    /// when absent, as an empty map is an error rather than "no overrides".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, PeerAuthenticationMtls>>,
}

/// An mTLS mode setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationMtls {
    /// The mode (inherited from the parent scope when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
}

/// Whether a workload requires mutual TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the namespace or mesh.
    Unset,
    /// Plain text only.
    Disable,
    /// Both plain text and mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl PeerAuthenticationSpec {
    /// Adds the semantic problems of this spec to `out`.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        if let Some(selector) = &self.selector {
            selector.validate(&spec.field("selector"), out);
        }
        let Some(ports) = &self.port_level_mtls else {
            return;
        };
        let at = spec.field("portLevelMtls");
        if ports.is_empty() {
            push(
                out,
                at.clone(),
                IstioError::EmptyMap {
                    what: "portLevelMtls",
                },
            );
        }
        // Port-level settings only make sense for particular workloads, whose ports are
        // known; a namespace-wide policy cannot name ports.
        let selects = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !selects {
            push(out, at.clone(), SecurityError::PortLevelNeedsSelector);
        }
        for key in ports.keys() {
            let key_path = at.field(key);
            match key.trim().parse::<i64>() {
                Ok(port) => check_range(Some(port), "port", 1, 65535, &key_path, out),
                Err(_) => push(
                    out,
                    key_path,
                    SecurityError::PortKeyNotNumber { key: key.clone() },
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(value: serde_json::Value) -> Vec<String> {
        let spec: PeerAuthenticationSpec = serde_json::from_value(value).unwrap();
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    #[test]
    fn port_level_rules() {
        assert!(violations(serde_json::json!({
            "selector": {"matchLabels": {"app": "a"}},
            "portLevelMtls": {"80": {"mode": "STRICT"}},
        }))
        .is_empty());
        assert_eq!(
            violations(serde_json::json!({"portLevelMtls": {"0": {}, "x": {}}})),
            [
                "spec.portLevelMtls: portLevelMtls requires a selector with at least one \
                 matchLabels entry",
                "spec.portLevelMtls[0]: port 0 must be between 1 and 65535",
                "spec.portLevelMtls.x: portLevelMtls key \"x\" is not a port number (type \
                 conversion to an integer failed)",
            ]
        );
        assert_eq!(
            violations(serde_json::json!({
                "selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {},
            })),
            ["spec.portLevelMtls: portLevelMtls must have at least one entry when set"]
        );
    }

    #[test]
    fn modes_are_an_enum() {
        let err = serde_json::from_value::<PeerAuthenticationSpec>(
            serde_json::json!({"mtls": {"mode": "BLAH"}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant `BLAH`"), "{err}");
    }
}
