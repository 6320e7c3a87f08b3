//! Checks on VirtualService rules: matches shadowed by earlier ones, and VirtualServices
//! bound to the mesh gateway that claim the same host.

use std::collections::BTreeSet;

use serde_json::Value;

use super::services::{fqdn, Visibility};
use super::{of_kind, strings, Document, Finding, Severity};

/// Runs the checks of this module.
pub(super) fn check(docs: &[Document], out: &mut Vec<Finding>) {
    for vs in of_kind(docs, "VirtualService") {
        for section in ["http", "tcp", "tls"] {
            check_matches(vs, section, out);
        }
    }
    check_mesh_conflicts(docs, out);
}

/// A match without its `name`, which only labels it and does not change what it matches.
fn normalized(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(object) = m.as_object_mut() {
        object.remove("name");
    }
    m
}

/// Whether every request `later` matches is already matched by `earlier`. Besides
/// identical matches, an HTTP match with fewer conditions covers one with more, and a URI
/// prefix covers longer prefixes. Different kinds of URI match (prefix against exact or
/// regex) are not compared: that needs reasoning about patterns, and guessing would flag
/// correct configs.
fn covers(earlier: &Value, later: &Value, http: bool) -> bool {
    if earlier == later {
        return true;
    }
    let (Some(e), Some(l)) = (earlier.as_object(), later.as_object()) else {
        return false;
    };
    if !http {
        return false;
    }
    e.iter()
        .all(|(key, condition)| match (key.as_str(), l.get(key)) {
            (_, None) => false,
            ("uri", Some(other)) => {
                match (condition["prefix"].as_str(), other["prefix"].as_str()) {
                    (Some(p), Some(q)) => q.starts_with(p),
                    _ => condition == other,
                }
            }
            (_, Some(other)) => condition == other,
        })
}

/// Rules of one section (`http`, `tcp`, `tls`) of `vs`, in order: a rule after one without
/// matches is unreachable, a rule whose every match is identical to an earlier one is
/// unreachable, and a match covered by an earlier one (same rule or earlier rule) is
/// ineffective.
fn check_matches(vs: &Document, section: &str, out: &mut Vec<Finding>) {
    let http = section == "http";
    let mut earlier: Vec<Value> = Vec::new();
    let mut catch_all: Option<usize> = None;
    for (i, rule) in vs.spec()[section]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let matches: Vec<Value> = rule["match"]
            .as_array()
            .map(|a| a.iter().map(normalized).collect())
            .unwrap_or_default();
        if let Some(k) = catch_all {
            out.push(Finding::new(
                vs,
                Severity::Error,
                "VirtualServiceUnreachableRule",
                format!("spec.{section}[{i}]"),
                format!("rule {i} is unreachable: rule {k} before it has no match and takes all traffic"),
            ));
            continue;
        }
        // An empty match (or none) matches everything.
        let empty = Value::Object(serde_json::Map::new());
        if matches.is_empty() || matches.contains(&empty) {
            catch_all = Some(i);
            continue;
        }
        if matches.iter().all(|m| earlier.contains(m)) {
            out.push(Finding::new(
                vs,
                Severity::Error,
                "VirtualServiceUnreachableRule",
                format!("spec.{section}[{i}]"),
                format!(
                    "rule {i} is unreachable: every one of its matches is used by an earlier rule"
                ),
            ));
        } else {
            for (j, m) in matches.iter().enumerate() {
                let shadowed = earlier
                    .iter()
                    .chain(&matches[..j])
                    .any(|e| covers(e, m, http));
                if shadowed {
                    out.push(Finding::new(
                        vs,
                        Severity::Info,
                        "VirtualServiceIneffectiveMatch",
                        format!("spec.{section}[{i}].match[{j}]"),
                        format!("match {j} of rule {i} never applies: an earlier match already takes all its requests"),
                    ));
                }
            }
        }
        earlier.extend(matches);
    }
}

/// A VirtualService bound to the mesh gateway (explicitly, or by naming no gateway).
struct MeshVs<'a> {
    doc: &'a Document,
    hosts: Vec<String>,
    visibility: Visibility,
}

/// Two VirtualServices bound to the mesh gateway define the same host for some namespace
/// that sees both: sidecars there would merge them unpredictably.
fn check_mesh_conflicts(docs: &[Document], out: &mut Vec<Finding>) {
    // Namespaces something lives in. A namespace that nothing lives in has no sidecars to
    // be confused, so an overlap of exportTo only there (`exportTo: [bogus]`) is harmless.
    let known: BTreeSet<&str> = docs
        .iter()
        .map(|d| d.namespace.as_str())
        .chain(of_kind(docs, "Namespace").map(|d| d.name.as_str()))
        .collect();
    let bound: Vec<MeshVs> = of_kind(docs, "VirtualService")
        .filter(|vs| {
            let gateways = strings(&vs.spec()["gateways"]);
            gateways.is_empty() || gateways.contains(&"mesh")
        })
        .map(|vs| MeshVs {
            doc: vs,
            hosts: strings(&vs.spec()["hosts"])
                .into_iter()
                .map(|h| fqdn(h, &vs.namespace))
                .collect(),
            visibility: Visibility::new(strings(&vs.spec()["exportTo"]), &vs.namespace),
        })
        .collect();
    for (a, first) in bound.iter().enumerate() {
        for (b, second) in bound.iter().enumerate() {
            if a == b || !overlap(&first.visibility, &second.visibility, &known) {
                continue;
            }
            for (k, host) in first.hosts.iter().enumerate() {
                if second.hosts.contains(host) {
                    out.push(Finding::new(
                        first.doc,
                        Severity::Error,
                        "ConflictingMeshGatewayVirtualServiceHosts",
                        format!("spec.hosts[{k}]"),
                        format!(
                            "host {host} is also defined for the mesh gateway by VirtualService \
                             {}/{}",
                            second.doc.namespace, second.doc.name
                        ),
                    ));
                }
            }
        }
    }
}

/// Whether some known namespace sees both.
fn overlap(a: &Visibility, b: &Visibility, known: &BTreeSet<&str>) -> bool {
    match (a, b) {
        (Visibility::All, Visibility::All) => true,
        (Visibility::All, Visibility::Only(names)) | (Visibility::Only(names), Visibility::All) => {
            names.iter().any(|n| known.contains(n.as_str()))
        }
        (Visibility::Only(x), Visibility::Only(y)) => x
            .iter()
            .any(|n| y.contains(n) && known.contains(n.as_str())),
    }
}
