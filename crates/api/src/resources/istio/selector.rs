//! How Istio resources pick the workloads they apply to: a [`WorkloadSelector`] of labels,
//! or a [`PolicyTargetReference`] to a Service or Gateway (the security kinds), with the
//! rules the CRDs set on both and the Kubernetes label syntax.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{check_exclusive, check_max_items, check_max_len, push, IstioError};
use crate::resources::path::FieldPath;
use crate::resources::validate::{is_dns1123_subdomain, ValidationError, Violation};

/// Longest label name or value.
const MAX_LABEL_LEN: usize = 63;
/// Longest label key prefix, and longest targetRef group and name.
const MAX_NAME_LEN: usize = 253;
/// Longest targetRef kind.
const MAX_KIND_LEN: usize = 63;
/// Most entries in a `matchLabels` map.
const MAX_MATCH_LABELS: usize = 4096;
/// Most entries in `targetRefs`.
const MAX_TARGET_REFS: usize = 16;

/// Which client or server workloads a resource applies to, by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels the workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Checks the labels: no wildcards, no empty keys, Kubernetes label syntax.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_label_map(
            &self.match_labels,
            LabelRule::Selector {
                max: MAX_MATCH_LABELS,
            },
            &path.field("matchLabels"),
            out,
        );
    }
}

/// A reference from a policy to the Service, Gateway or GatewayClass it applies to, in the
/// policy's own namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// The API group of the target; empty for the core group (Services).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The kind of the target (`Service`, `Gateway`).
    pub kind: String,
    /// The name of the target.
    pub name: String,
    /// Must be empty: Istio does not support cross-namespace targets.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Whether `kind` has the shape the Gateway API requires: a letter, then letters, digits and
/// `-`, not ending with `-`.
fn is_kind(kind: &str) -> bool {
    let bytes = kind.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphabetic()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// Whether `group` is empty or dot-separated lowercase DNS labels (with no length limit per
/// label: the schema bounds only the whole).
fn is_group(group: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    };
    group.is_empty() || group.split('.').all(label_ok)
}

impl PolicyTargetReference {
    /// Checks the reference at `path`.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let group = path.field("group");
        check_max_len(&self.group, MAX_NAME_LEN, "group", &group, out);
        if !is_group(&self.group) {
            push(
                out,
                group,
                IstioError::Pattern {
                    what: "targetRef group",
                    value: self.group.clone(),
                    rule: "empty, or lowercase DNS labels separated by dots",
                },
            );
        }
        let kind = path.field("kind");
        if self.kind.is_empty() {
            push(out, kind, ValidationError::Empty { what: "kind" });
        } else {
            check_max_len(&self.kind, MAX_KIND_LEN, "kind", &kind, out);
            if !is_kind(&self.kind) {
                push(
                    out,
                    kind,
                    IstioError::Pattern {
                        what: "targetRef kind",
                        value: self.kind.clone(),
                        rule: "a letter, then letters, digits or '-', not ending with '-'",
                    },
                );
            }
        }
        let name = path.field("name");
        if self.name.is_empty() {
            push(out, name, ValidationError::Empty { what: "name" });
        } else {
            check_max_len(&self.name, MAX_NAME_LEN, "name", &name, out);
        }
        if !self.namespace.is_empty() {
            push(
                out,
                path.field("namespace"),
                IstioError::CrossNamespaceTarget {
                    value: self.namespace.clone(),
                },
            );
        }
    }
}

/// Checks the three ways a security policy picks its targets: at most one of `selector`,
/// `targetRef` and `targetRefs` (reported at `spec`), then each of them.
pub(crate) fn check_target_refs(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    spec: &FieldPath,
    out: &mut Vec<Violation>,
) {
    check_exclusive(
        "selector, targetRef or targetRefs",
        &[
            ("selector", selector.is_some()),
            ("targetRef", target_ref.is_some()),
            ("targetRefs", !target_refs.is_empty()),
        ],
        spec,
        out,
    );
    if let Some(selector) = selector {
        selector.validate(&spec.field("selector"), out);
    }
    if let Some(target) = target_ref {
        target.validate(&spec.field("targetRef"), out);
    }
    let refs = spec.field("targetRefs");
    check_max_items(target_refs.len(), MAX_TARGET_REFS, "targetRefs", &refs, out);
    for (i, target) in target_refs.iter().enumerate() {
        target.validate(&refs.index(i), out);
    }
}

/// How strictly a label map is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LabelRule {
    /// Labels on a workload or subset: Kubernetes label syntax.
    Labels,
    /// Labels a selector matches: Kubernetes label syntax, at most `max` entries, and no
    /// `*`, which Istio would otherwise take literally and never match.
    Selector {
        /// The most entries allowed.
        max: usize,
    },
}

/// Whether `name` is the name part of a label key, or a non-empty label value: at most 63
/// letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit.
fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Whether `key` is a Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain.
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= MAX_NAME_LEN && is_dns1123_subdomain(prefix) && is_label_name(name)
        }
        None => is_label_name(key),
    }
}

/// Checks a label map at `path` (each problem reported at its key).
pub(crate) fn check_label_map(
    labels: &BTreeMap<String, String>,
    rule: LabelRule,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    let selector = match rule {
        LabelRule::Labels => false,
        LabelRule::Selector { max } => {
            check_max_items(labels.len(), max, "labels", path, out);
            true
        }
    };
    for (key, value) in labels {
        let at = path.field(key);
        if key.is_empty() {
            push(
                out,
                at.clone(),
                ValidationError::Empty { what: "label key" },
            );
        } else if selector && key.contains('*') {
            push(
                out,
                at.clone(),
                IstioError::SelectorWildcard {
                    part: "key",
                    value: key.clone(),
                },
            );
        } else if !is_label_key(key) {
            push(out, at.clone(), IstioError::LabelKey { value: key.clone() });
        }
        if selector && value.contains('*') {
            push(
                out,
                at,
                IstioError::SelectorWildcard {
                    part: "value",
                    value: value.clone(),
                },
            );
        } else if !value.is_empty() && !is_label_name(value) {
            push(
                out,
                at,
                IstioError::LabelValue {
                    value: value.clone(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(pairs: &[(&str, &str)], rule: LabelRule) -> Vec<String> {
        let mut out = Vec::new();
        check_label_map(
            &labels(pairs),
            rule,
            &FieldPath::root().field("l"),
            &mut out,
        );
        out.iter()
            .map(|v| format!("{}: {}", v.path, v.error))
            .collect()
    }

    #[test]
    fn label_syntax() {
        let ok = [
            ("app", "reviews"),
            ("app.kubernetes.io/name", "x_y.z-1"),
            ("version", ""),
        ];
        assert!(check(&ok, LabelRule::Labels).is_empty());
        let got = check(
            &[("-a", "ok"), ("b", "bad value"), ("c/d/e", "v")],
            LabelRule::Labels,
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("l[-a]: \"-a\" is not a valid label key"));
        assert!(got[1].starts_with("l.b: \"bad value\" is not a valid label value"));
    }

    #[test]
    fn selectors_reject_wildcards() {
        let got = check(&[("*", "v"), ("val", "*")], LabelRule::Selector { max: 4 });
        assert_eq!(
            got,
            [
                "l[*]: wildcard '*' is not supported in a workload selector label key: \"*\"",
                "l.val: wildcard '*' is not supported in a workload selector label value: \"*\"",
            ]
        );
        let got = check(&[("a", "1"), ("b", "2")], LabelRule::Selector { max: 1 });
        assert_eq!(got, ["l: at most 1 labels allowed, found 2"]);
    }

    #[test]
    fn target_references() {
        let spec = FieldPath::root().field("spec");
        let good = PolicyTargetReference {
            group: String::new(),
            kind: "Service".into(),
            name: "foo".into(),
            namespace: String::new(),
        };
        let mut out = Vec::new();
        check_target_refs(None, Some(&good), &[], &spec, &mut out);
        assert!(out.is_empty(), "{out:?}");
        let bad = PolicyTargetReference {
            group: "__".into(),
            kind: "Serv_ice".into(),
            name: String::new(),
            namespace: "bar".into(),
        };
        check_target_refs(
            Some(&WorkloadSelector::default()),
            Some(&bad),
            &[],
            &spec,
            &mut out,
        );
        let got: Vec<String> = out.iter().map(|v| v.path.to_string()).collect();
        assert_eq!(
            got,
            [
                "spec",
                "spec.targetRef.group",
                "spec.targetRef.kind",
                "spec.targetRef.name",
                "spec.targetRef.namespace",
            ]
        );
    }
}
