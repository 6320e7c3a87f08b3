//! Checks on the security kinds: PeerAuthentications that compete for the same scope, and
//! AuthorizationPolicies that can never apply or name namespaces that do not exist.

use std::collections::BTreeMap;

use super::input::{selects, workloads};
use super::{labels, of_kind, strings, Document, Finding, Severity};

/// Istio's root namespace: policies there without a selector apply to the whole mesh, and
/// their selectors pick workloads in every namespace.
const ROOT_NAMESPACE: &str = "istio-system";

/// Runs the checks of this module.
pub(super) fn check(docs: &[Document], out: &mut Vec<Finding>) {
    check_peer_authentications(docs, out);
    for policy in of_kind(docs, "AuthorizationPolicy") {
        check_policy_workloads(docs, policy, out);
        check_policy_namespaces(docs, policy, out);
    }
}

/// At most one PeerAuthentication per scope: mesh-wide (root namespace, no selector),
/// namespace-wide (no selector), or one workload selector. With several, which one wins is
/// up to creation order, which the config does not show.
fn check_peer_authentications(docs: &[Document], out: &mut Vec<Finding>) {
    let mut scopes: BTreeMap<(String, String), Vec<&Document>> = BTreeMap::new();
    for pa in of_kind(docs, "PeerAuthentication") {
        let selector = labels(&pa.spec()["selector"]["matchLabels"]);
        // Sorted pairs, so selectors written in different orders are the same scope.
        let key = if selector.is_empty() {
            String::new()
        } else {
            let mut pairs: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.sort();
            pairs.join(",")
        };
        scopes
            .entry((pa.namespace.clone(), key))
            .or_default()
            .push(pa);
    }
    for ((namespace, selector), group) in scopes {
        if group.len() < 2 {
            continue;
        }
        let scope = match (selector.is_empty(), namespace == ROOT_NAMESPACE) {
            (true, true) => "mesh-wide".to_owned(),
            (true, false) => format!("namespace-wide in {namespace}"),
            (false, _) => format!("for selector {selector} in {namespace}"),
        };
        let names: Vec<&str> = group.iter().map(|d| d.name.as_str()).collect();
        for pa in &group {
            out.push(Finding::new(
                pa,
                Severity::Error,
                "ConflictingPeerAuthentication",
                if selector.is_empty() {
                    "spec"
                } else {
                    "spec.selector"
                },
                format!(
                    "several PeerAuthentications are {scope} ({}); only one takes effect",
                    names.join(", ")
                ),
            ));
        }
    }
}

/// An AuthorizationPolicy selects at least one workload: by its selector (in its namespace,
/// or anywhere from the root namespace), or, namespace-wide, any workload of its namespace.
fn check_policy_workloads(docs: &[Document], policy: &Document, out: &mut Vec<Finding>) {
    let spec = policy.spec();
    // Policies attached to gateways or services by targetRef do not select pods by label.
    if !spec["targetRef"].is_null() || !spec["targetRefs"].is_null() {
        return;
    }
    let selector = labels(&spec["selector"]["matchLabels"]);
    let root = policy.namespace == ROOT_NAMESPACE;
    if selector.is_empty() && root {
        return;
    }
    let matched = workloads(docs)
        .iter()
        .any(|(ns, l)| (root || *ns == policy.namespace) && selects(&selector, l));
    if !matched {
        let (field, message) = if selector.is_empty() {
            (
                "metadata.namespace".to_owned(),
                format!("no workload runs in namespace {}", policy.namespace),
            )
        } else {
            (
                "spec.selector".to_owned(),
                format!(
                    "no workload {} matches the selector",
                    if root {
                        "in the mesh".to_owned()
                    } else {
                        format!("in namespace {}", policy.namespace)
                    }
                ),
            )
        };
        out.push(Finding::new(
            policy,
            Severity::Warning,
            "NoMatchingWorkloadsFound",
            field,
            message,
        ));
    }
}

/// Every `namespaces`/`notNamespaces` entry of a source matches some namespace. Only
/// checked when the input declares namespaces: otherwise none are known.
fn check_policy_namespaces(docs: &[Document], policy: &Document, out: &mut Vec<Finding>) {
    let namespaces: Vec<&str> = of_kind(docs, "Namespace")
        .map(|d| d.name.as_str())
        .collect();
    if namespaces.is_empty() {
        return;
    }
    let spec = policy.spec();
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        for (j, from) in rule["from"].as_array().into_iter().flatten().enumerate() {
            for key in ["namespaces", "notNamespaces"] {
                for (k, pattern) in strings(&from["source"][key]).into_iter().enumerate() {
                    if !namespaces.iter().any(|ns| pattern_matches(pattern, ns)) {
                        out.push(Finding::new(
                            policy,
                            Severity::Error,
                            "ReferencedResourceNotFound",
                            format!("spec.rules[{i}].from[{j}].source.{key}[{k}]"),
                            format!("no namespace matches {pattern:?}"),
                        ));
                    }
                }
            }
        }
    }
}

/// Istio's string match for policy values: exact, `*`, `prefix*` or `*suffix`.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}
