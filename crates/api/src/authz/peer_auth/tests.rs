//! PeerAuthentication inheritance: levels, UNSET, competing policies, the root namespace,
//! port-level modes and compile errors.

use serde_json::json;

use super::*;

const ROOT: &str = "trellis-system";

fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> PeerAuthPolicy {
    let resource: PeerAuthentication = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .unwrap();
    PeerAuthPolicy::compile(&resource).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (mode, level, deciding policy name) for `port` of a workload `app=reviews` in `default`.
fn effective(policies: &[PeerAuthPolicy], port: u16) -> (PeerMode, MtlsLevel, Option<&str>) {
    let labels = labels(&[("app", "reviews"), ("version", "v1")]);
    let workload = Workload {
        namespace: "default",
        labels: &labels,
        services: &[],
    };
    let e = effective_mtls(policies, &workload, port, ROOT);
    (e.mode, e.level, e.policy.map(|p| p.name.as_str()))
}

fn mesh(mode: &str) -> PeerAuthPolicy {
    policy(ROOT, "mesh", json!({"mtls": {"mode": mode}}))
}

fn namespace(mode: &str) -> PeerAuthPolicy {
    policy("default", "ns", json!({"mtls": {"mode": mode}}))
}

fn workload(mode: &str, ports: serde_json::Value) -> PeerAuthPolicy {
    policy(
        "default",
        "wl",
        json!({
            "selector": {"matchLabels": {"app": "reviews"}},
            "mtls": {"mode": mode},
            "portLevelMtls": ports,
        }),
    )
}

use MtlsLevel::{Default as Dflt, Mesh, Namespace, Port, Workload as Wl};
use PeerMode::{Disable, Permissive, Strict};

#[test]
fn default_is_permissive() {
    assert_eq!(effective(&[], 80), (Permissive, Dflt, None));
    // Policies of other namespaces and other workloads do not count.
    let others = [
        policy("other", "ns", json!({"mtls": {"mode": "STRICT"}})),
        policy(
            "default",
            "ratings",
            json!({"selector": {"matchLabels": {"app": "ratings"}}, "mtls": {"mode": "STRICT"}}),
        ),
    ];
    assert_eq!(effective(&others, 80), (Permissive, Dflt, None));
}

#[test]
fn narrower_levels_override() {
    assert_eq!(
        effective(&[mesh("STRICT")], 80),
        (Strict, Mesh, Some("mesh"))
    );
    assert_eq!(
        effective(&[mesh("STRICT"), namespace("PERMISSIVE")], 80),
        (Permissive, Namespace, Some("ns"))
    );
    let all = [
        mesh("STRICT"),
        namespace("PERMISSIVE"),
        workload("DISABLE", json!({"9080": {"mode": "STRICT"}})),
    ];
    assert_eq!(effective(&all, 80), (Disable, Wl, Some("wl")));
    assert_eq!(effective(&all, 9080), (Strict, Port, Some("wl")));
}

#[test]
fn unset_inherits() {
    // Workload UNSET: the namespace decides; namespace UNSET too: the mesh.
    let all = [
        mesh("STRICT"),
        namespace("UNSET"),
        workload("UNSET", json!({"9080": {"mode": "UNSET"}, "9081": {}})),
    ];
    assert_eq!(effective(&all, 80), (Strict, Mesh, Some("mesh")));
    assert_eq!(effective(&all, 9080), (Strict, Mesh, Some("mesh")));
    assert_eq!(effective(&all, 9081), (Strict, Mesh, Some("mesh")));
    let all = [
        mesh("DISABLE"),
        namespace("STRICT"),
        workload("UNSET", json!({"9080": {"mode": "PERMISSIVE"}})),
    ];
    assert_eq!(effective(&all, 80), (Strict, Namespace, Some("ns")));
    assert_eq!(effective(&all, 9080), (Permissive, Port, Some("wl")));
    // No mtls block at all is UNSET too.
    let bare = policy("default", "bare", json!({}));
    assert_eq!(
        effective(&[mesh("STRICT"), bare], 80),
        (Strict, Mesh, Some("mesh"))
    );
    // Everything UNSET: the default.
    assert_eq!(effective(&[mesh("UNSET")], 80), (Permissive, Dflt, None));
}

#[test]
fn first_by_name_wins_within_a_level() {
    // The chosen policy wins even when its mode is UNSET: Istio picks the policy first,
    // then resolves inheritance.
    let a = policy("default", "a", json!({"mtls": {"mode": "UNSET"}}));
    let b = policy("default", "b", json!({"mtls": {"mode": "STRICT"}}));
    assert_eq!(
        effective(&[b.clone(), a.clone(), mesh("DISABLE")], 80),
        (Disable, Mesh, Some("mesh"))
    );
    let c = policy("default", "c", json!({"mtls": {"mode": "DISABLE"}}));
    assert_eq!(effective(&[c, b], 80), (Strict, Namespace, Some("b")));

    let w1 = policy(
        "default",
        "w1",
        json!({"selector": {"matchLabels": {"version": "v1"}}, "mtls": {"mode": "DISABLE"}}),
    );
    let w2 = policy(
        "default",
        "w2",
        json!({"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"},
               "portLevelMtls": {"80": {"mode": "PERMISSIVE"}}}),
    );
    // w1 wins the workload level, so w2's port-level setting does not apply either.
    assert_eq!(effective(&[w2, w1], 80), (Disable, Wl, Some("w1")));
}

#[test]
fn root_namespace_selectors_are_ignored() {
    let root_selector = policy(
        ROOT,
        "root-wl",
        json!({"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"}}),
    );
    assert_eq!(
        effective(std::slice::from_ref(&root_selector), 80),
        (Permissive, Dflt, None)
    );
    // Even for a workload of the root namespace itself.
    let labels = labels(&[("app", "reviews")]);
    let in_root = Workload {
        namespace: ROOT,
        labels: &labels,
        services: &[],
    };
    let both = [root_selector, mesh("DISABLE")];
    let e = effective_mtls(&both, &in_root, 80, ROOT);
    assert_eq!((e.mode, e.level), (Disable, Mesh));
    // An empty selector makes a namespace-wide policy.
    let empty = policy(
        "default",
        "empty",
        json!({"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}),
    );
    assert_eq!(effective(&[empty], 80), (Strict, Namespace, Some("empty")));
}

#[test]
fn compile_errors() {
    let compile = |spec: serde_json::Value| {
        let resource: PeerAuthentication = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap();
        PeerAuthPolicy::compile(&resource)
    };
    assert_eq!(
        compile(json!({"portLevelMtls": {"80": {"mode": "STRICT"}}})),
        Err(PeerAuthError::PortLevelWithoutSelector {
            policy: "ns/p".into()
        })
    );
    for key in ["0", "70000", "http", ""] {
        assert_eq!(
            compile(json!({
                "selector": {"matchLabels": {"app": "a"}},
                "portLevelMtls": {key: {"mode": "STRICT"}},
            })),
            Err(PeerAuthError::PortKey {
                policy: "ns/p".into(),
                key: key.into()
            }),
            "{key}"
        );
    }
    let ok = compile(json!({
        "selector": {"matchLabels": {"app": "a"}},
        "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"8080": {"mode": "DISABLE"}, "9090": {}},
    }))
    .unwrap();
    assert_eq!(ok.mode, Some(Strict));
    assert_eq!(
        ok.port_modes,
        [(8080, Some(Disable)), (9090, None)].into_iter().collect()
    );
    let json = serde_json::to_string(&ok).unwrap();
    assert_eq!(serde_json::from_str::<PeerAuthPolicy>(&json).unwrap(), ok);
}

#[test]
fn reason() {
    let all = [mesh("STRICT")];
    let labels = Labels::new();
    let w = Workload {
        namespace: "default",
        labels: &labels,
        services: &[],
    };
    assert_eq!(
        effective_mtls(&all, &w, 80, ROOT).to_string(),
        "STRICT from mesh-level PeerAuthentication trellis-system/mesh"
    );
    let none: [PeerAuthPolicy; 0] = [];
    assert_eq!(
        effective_mtls(&none, &w, 80, ROOT).to_string(),
        "PERMISSIVE (default: no PeerAuthentication sets a mode)"
    );
}
