//! What a change set would change: resources added, removed or changed (field by field), and
//! what that does to the snapshot proxies receive.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use trellis_api::load::ConfigSet;
use trellis_api::proto;

/// One changed field of a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Istio-style path: `spec.http[0].route[1].weight`.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// One resource that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceChange {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// For `changed`: the fields that differ.
    pub fields: Vec<FieldChange>,
}

fn by_key(config: &ConfigSet) -> BTreeMap<(String, String, String), Value> {
    config
        .resources
        .iter()
        .map(|r| {
            let v = &r.value;
            (
                (
                    v.kind().to_string(),
                    v.namespace().to_string(),
                    v.name().to_string(),
                ),
                serde_json::to_value(v).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Resources that differ between `old` and `new`, in kind/namespace/name order.
pub fn resource_diff(old: &ConfigSet, new: &ConfigSet) -> Vec<ResourceChange> {
    let (old, new) = (by_key(old), by_key(new));
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<_> = old.keys().chain(new.keys()).cloned().collect();
    for key in keys {
        let (kind, namespace, name) = key.clone();
        let change = |change, fields| ResourceChange {
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            change,
            fields,
        };
        match (old.get(&key), new.get(&key)) {
            (None, Some(_)) => out.push(change("added", vec![])),
            (Some(_), None) => out.push(change("removed", vec![])),
            (Some(a), Some(b)) if a != b => {
                let mut fields = Vec::new();
                json_diff("", a, b, &mut fields);
                out.push(change("changed", fields));
            }
            _ => {}
        }
    }
    out
}

fn json_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => json_diff(&join(k), p, q, out),
                    (p, q) => out.push(FieldChange {
                        path: join(k),
                        old: p.cloned(),
                        new: q.cloned(),
                    }),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(l), Some(r)) => json_diff(&p, l, r, out),
                    (l, r) => out.push(FieldChange {
                        path: p,
                        old: l.cloned(),
                        new: r.cloned(),
                    }),
                }
            }
        }
        _ if a != b => out.push(FieldChange {
            path: path.to_string(),
            old: Some(a.clone()),
            new: Some(b.clone()),
        }),
        _ => {}
    }
}

/// The service's route rules, one line each: port, kind, rule and where it sends traffic.
/// A table that does not decode (the proxy would refuse it) is one line saying so.
fn routes(svc: &proto::Service) -> Vec<String> {
    use trellis_api::routing::{Action, Backend, RouteTable, WeightedDestination};
    if svc.routes_json.is_empty() {
        return Vec::new();
    }
    let table: RouteTable = match serde_json::from_slice(&svc.routes_json) {
        Ok(t) => t,
        Err(e) => return vec![format!("undecodable route table: {e}")],
    };
    let to = |dests: &[WeightedDestination]| -> String {
        let each: Vec<String> = dests
            .iter()
            .map(|d| match &d.backend {
                Backend::Service { host, subset, port } => {
                    let subset = subset
                        .as_deref()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default();
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    format!("{host}{subset}{port}={}", d.weight)
                }
                Backend::Invalid { reason } => format!("invalid ({reason})={}", d.weight),
            })
            .collect();
        each.join(", ")
    };
    let mut out = Vec::new();
    for port in &table.ports {
        if let Some(http) = &port.http {
            for rule in &http.rules {
                let what = match &rule.action {
                    Action::Forward(dests) => to(dests),
                    Action::Redirect(_) => "redirect".to_owned(),
                    Action::Respond(r) => format!("direct response {}", r.status),
                };
                out.push(format!("port {} http {}: {what}", port.port, rule.name));
            }
        }
        if let Some(tcp) = &port.tcp {
            for rule in &tcp.rules {
                let dests = to(&rule.destinations);
                out.push(format!("port {} tcp {}: {dests}", port.port, rule.name));
            }
        }
    }
    out
}

fn endpoints(svc: &proto::Service) -> Vec<String> {
    let mut v: Vec<String> = svc
        .endpoints
        .iter()
        .map(|e| format!("{} {} {}", e.workload_name, e.address, e.identity))
        .collect();
    v.sort();
    v
}

fn subsets(svc: &proto::Service) -> Vec<String> {
    let mut v: Vec<String> = svc
        .subsets
        .iter()
        .map(|s| {
            let labels: BTreeMap<_, _> = s.labels.iter().collect();
            format!("{} {labels:?}", s.name)
        })
        .collect();
    v.sort();
    v
}

fn list_change(out: &mut Vec<String>, host: &str, what: &str, old: Vec<String>, new: Vec<String>) {
    for o in old.iter().filter(|o| !new.contains(o)) {
        out.push(format!("{host}: {what} removed: {o}"));
    }
    for n in new.iter().filter(|n| !old.contains(n)) {
        out.push(format!("{host}: {what} added: {n}"));
    }
}

/// What changes in a snapshot, one line per change, by service host.
pub fn snapshot_diff(old: &proto::SnapshotMessage, new: &proto::SnapshotMessage) -> Vec<String> {
    let index = |s: &proto::SnapshotMessage| -> BTreeMap<String, proto::Service> {
        s.services
            .iter()
            .map(|x| (x.host.clone(), x.clone()))
            .collect()
    };
    let (a, b) = (index(old), index(new));
    let mut out = Vec::new();
    let hosts: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for host in hosts {
        match (a.get(host), b.get(host)) {
            (None, Some(_)) => out.push(format!("{host}: service added")),
            (Some(_), None) => out.push(format!("{host}: service removed")),
            (Some(x), Some(y)) => {
                let ports = |s: &proto::Service| {
                    s.ports
                        .iter()
                        .map(|p| format!("{} {}->{}", p.name, p.port, p.target_port))
                        .collect::<Vec<_>>()
                };
                list_change(&mut out, host, "port", ports(x), ports(y));
                list_change(&mut out, host, "subset", subsets(x), subsets(y));
                let (rx, ry) = (routes(x), routes(y));
                let rules_changed = rx != ry;
                list_change(&mut out, host, "route", rx, ry);
                // Matches, filters and consumer routes are not in the lines above.
                if !rules_changed && x.routes_json != y.routes_json {
                    out.push(format!("{host}: route matches or filters changed"));
                }
                if x.traffic_policy_json != y.traffic_policy_json {
                    out.push(format!("{host}: traffic policy changed"));
                }
                list_change(&mut out, host, "endpoint", endpoints(x), endpoints(y));
            }
            (None, None) => {}
        }
    }
    if old.trust_bundle_pem != new.trust_bundle_pem {
        out.push("trust bundle changed".into());
    }
    // Policies are compared as a whole: the resource diff already says which ones changed.
    if old.authorization_policies_json != new.authorization_policies_json {
        out.push("authorization policies changed".into());
    }
    if old.peer_authentications_json != new.peer_authentications_json {
        out.push("peer authentications changed".into());
    }
    if old.root_namespace != new.root_namespace {
        out.push(format!(
            "root namespace changed: {:?} -> {:?}",
            old.root_namespace, new.root_namespace
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(weights: (u32, u32)) -> ConfigSet {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: r\nspec:\n  selector: {{app: r}}\n  ports:\n  - {{name: http, port: 80}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {{host: r, subset: a}}\n      weight: {}\n    - destination: {{host: r, subset: b}}\n      weight: {}\n",
            weights.0, weights.1
        );
        let (resources, diags) = trellis_api::load::parse_str(Path::new("a.yaml"), &yaml);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        ConfigSet {
            resources,
            warnings: vec![],
            hash: String::new(),
        }
    }

    #[test]
    fn names_changed_fields() {
        let changes = resource_diff(&config((90, 10)), &config((50, 50)));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].change, "changed");
        let paths: Vec<&str> = changes[0].fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "spec.http[0].route[0].weight",
                "spec.http[0].route[1].weight"
            ]
        );
        assert_eq!(changes[0].fields[0].old, Some(Value::from(90)));
        assert_eq!(changes[0].fields[0].new, Some(Value::from(50)));
        assert!(resource_diff(&config((90, 10)), &config((90, 10))).is_empty());
        let empty = ConfigSet {
            resources: vec![],
            warnings: vec![],
            hash: String::new(),
        };
        assert_eq!(resource_diff(&empty, &config((1, 99)))[0].change, "added");
    }

    #[test]
    fn snapshot_route_changes() {
        // The route table the control plane compiles for `r` from `config`.
        let svc = |weights: (u32, u32)| {
            let cs = config(weights);
            let routes = trellis_api::routing::compile(&cs.resources);
            let table = routes
                .tables
                .get("r.default.svc.cluster.local")
                .cloned()
                .unwrap_or_default();
            proto::Service {
                host: "r.default.svc.cluster.local".into(),
                routes_json: serde_json::to_vec(&table).unwrap(),
                ..Default::default()
            }
        };
        let snap = |w| proto::SnapshotMessage {
            services: vec![svc(w)],
            ..Default::default()
        };
        let lines = snapshot_diff(&snap((90, 10)), &snap((50, 50)));
        assert_eq!(
            lines,
            vec![
                "r.default.svc.cluster.local: route removed: port 80 http default/r/0: \
                 r.default.svc.cluster.local/a=90, r.default.svc.cluster.local/b=10",
                "r.default.svc.cluster.local: route added: port 80 http default/r/0: \
                 r.default.svc.cluster.local/a=50, r.default.svc.cluster.local/b=50"
            ]
        );
        assert!(snapshot_diff(&snap((90, 10)), &snap((90, 10))).is_empty());
        // A change the rule lines do not show is still reported.
        let mut other = snap((90, 10));
        other.services[0].traffic_policy_json = b"{}".to_vec();
        assert_eq!(
            snapshot_diff(&snap((90, 10)), &other),
            vec!["r.default.svc.cluster.local: traffic policy changed"]
        );
    }
}
