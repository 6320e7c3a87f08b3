//! Istio's `DestinationRule`: named subsets of a service's workloads (by label), which
//! VirtualService routes refer to, plus traffic policies the mesh does not apply yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::path::FieldPath;
use super::validate::{check_unique_names, is_dns1123_label, ValidationError, Violation};
use super::{note_if, ObjectMeta};

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
    /// Not implemented: load balancing, connection pool, outlier detection, TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<Value>,
    /// Not implemented: visibility to other namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Not implemented: restricting the rule to some client workloads.
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
    /// Not implemented: per-subset traffic policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<Value>,
}

/// Which client workloads a rule applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels the client workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl DestinationRuleSpec {
    /// Adds the semantic problems of this spec to `out`.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        if self.host.is_empty() {
            out.push(Violation::new(
                spec.field("host"),
                ValidationError::Empty { what: "host" },
            ));
        }
        let subsets = spec.field("subsets");
        for (i, subset) in self.subsets.iter().enumerate() {
            if !is_dns1123_label(&subset.name) {
                out.push(Violation::new(
                    subsets.index(i).field("name"),
                    ValidationError::NotDnsLabel {
                        value: subset.name.clone(),
                    },
                ));
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
    }

    /// Adds the set-but-not-acted-on fields of this spec (at `spec`) to `out`.
    pub(crate) fn unimplemented_fields(&self, spec: &FieldPath, out: &mut Vec<FieldPath>) {
        note_if(
            out,
            self.traffic_policy.is_some(),
            spec.field("trafficPolicy"),
        );
        for (i, subset) in self.subsets.iter().enumerate() {
            note_if(
                out,
                subset.traffic_policy.is_some(),
                spec.field("subsets").index(i).field("trafficPolicy"),
            );
        }
        note_if(out, !self.export_to.is_empty(), spec.field("exportTo"));
        note_if(
            out,
            self.workload_selector.is_some(),
            spec.field("workloadSelector"),
        );
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
            traffic_policy: Some(serde_json::json!({"tls": {"mode": "ISTIO_MUTUAL"}})),
            ..DestinationRuleSpec::default()
        };
        spec.subsets[1].traffic_policy = Some(serde_json::json!({}));
        let mut out = Vec::new();
        spec.unimplemented_fields(&FieldPath::root().field("spec"), &mut out);
        let got: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["spec.trafficPolicy", "spec.subsets[1].trafficPolicy"]);
    }
}
