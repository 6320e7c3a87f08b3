use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http_body_util::BodyExt;
use trellis_api::authz::{PeerAuthPolicy, Policy};
use trellis_api::resources::Resource;
use trellis_api::snapshot::{Endpoint, Service, Snapshot};

use super::*;

const WEB_ID: &str = "spiffe://cluster.local/ns/default/sa/web";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// An endpoint of a service in `default` under `identity`.
fn endpoint(name: &str, address: [u8; 4], identity: &str, labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        workload_name: name.into(),
        address: IpAddr::from(address),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        identity: identity.into(),
        inbound_port: 15008,
        ports: BTreeMap::new(),
    }
}

fn service(name: &str, namespace: &str, endpoints: Vec<Endpoint>) -> (String, Arc<Service>) {
    let host = format!("{name}.{namespace}.svc.cluster.local");
    let svc = Service {
        host: host.clone(),
        name: name.into(),
        namespace: namespace.into(),
        ports: vec![],
        subsets: BTreeMap::new(),
        endpoints,
        vips: vec![],
        routes: Default::default(),
        policies: Default::default(),
    };
    (host, Arc::new(svc))
}

/// A snapshot with `policies` (YAML) and two services: `web` in `default`, whose one endpoint
/// is the test proxy's workload (`web-1` at 127.0.0.1, labels `app: web`, `tier: front` —
/// the proxy itself is started without labels), and `other` in `default`, selecting another
/// workload with labels `app: other`.
fn snapshot(policies: &str) -> Snapshot {
    let (resources, diags) = trellis_api::load::parse_str(std::path::Path::new("p.yaml"), policies);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let (mut authz, mut peer): (Vec<Policy>, Vec<PeerAuthPolicy>) = (vec![], vec![]);
    for r in &resources {
        match &r.value {
            Resource::AuthorizationPolicy(p) => authz.push(Policy::compile(p).unwrap()),
            Resource::PeerAuthentication(p) => peer.push(PeerAuthPolicy::compile(p).unwrap()),
            _ => {}
        }
    }
    let services: HashMap<_, _> = [
        service(
            "web",
            "default",
            vec![endpoint(
                "web-1",
                [127, 0, 0, 1],
                WEB_ID,
                &[("app", "web"), ("tier", "front")],
            )],
        ),
        service(
            "other",
            "default",
            vec![endpoint(
                "other-1",
                [10, 0, 0, 9],
                "spiffe://cluster.local/ns/default/sa/other",
                &[("app", "other")],
            )],
        ),
    ]
    .into();
    Snapshot {
        version: "v1".into(),
        trust_domain: "cluster.local".into(),
        services,
        authorization_policies: authz,
        peer_authentications: peer,
        root_namespace: "trellis-system".into(),
        ..Snapshot::default()
    }
}

fn selected(policies: &str) -> Vec<String> {
    let config = ProxyConfig::for_tests(true);
    InboundPolicy::select(&snapshot(policies), &config)
        .policies
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn policy(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n---\n"
    )
}

// === selection ===

#[test]
fn picks_the_policies_that_apply_to_the_workload() {
    let all = [
        policy("ns-wide", "default", "{}"),
        policy("mesh-wide", "trellis-system", "{}"),
        policy("elsewhere", "shop", "{}"),
        // Labels from the workload's entry, though the proxy has none of its own.
        policy(
            "by-label",
            "default",
            "{selector: {matchLabels: {tier: front}}}",
        ),
        policy(
            "mesh-by-label",
            "trellis-system",
            "{selector: {matchLabels: {app: web}}}",
        ),
        policy(
            "other-label",
            "default",
            "{selector: {matchLabels: {app: other}}}",
        ),
        policy(
            "by-service",
            "default",
            "{targetRefs: [{kind: Service, name: web}]}",
        ),
        policy(
            "other-service",
            "default",
            "{targetRefs: [{kind: Service, name: other}]}",
        ),
    ]
    .concat();
    assert_eq!(
        selected(&all),
        [
            "default/ns-wide",
            "trellis-system/mesh-wide",
            "default/by-label",
            "trellis-system/mesh-by-label",
            "default/by-service",
        ]
    );
}

#[test]
fn the_proxys_own_labels_win_over_its_entrys() {
    let mut config = ProxyConfig::for_tests(true);
    config.labels.insert("tier".into(), "back".into());
    let snap = snapshot(
        &[
            policy(
                "front",
                "default",
                "{selector: {matchLabels: {tier: front}}}",
            ),
            policy(
                "back",
                "default",
                "{selector: {matchLabels: {tier: back, app: web}}}",
            ),
        ]
        .concat(),
    );
    let names: Vec<String> = InboundPolicy::select(&snap, &config)
        .policies
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["back"]);
}

#[test]
fn another_identity_at_the_same_address_is_not_this_workload() {
    let mut config = ProxyConfig::for_tests(true);
    config.identity = trellis_identity::SpiffeId::new("cluster.local", "default", "intruder");
    config.workload_name = "intruder-1".into();
    // The `web` endpoint at 127.0.0.1 is someone else's: no labels, no services from it.
    let snap = snapshot(
        &[
            policy(
                "by-label",
                "default",
                "{selector: {matchLabels: {app: web}}}",
            ),
            policy(
                "by-service",
                "default",
                "{targetRefs: [{kind: Service, name: web}]}",
            ),
        ]
        .concat(),
    );
    assert!(InboundPolicy::select(&snap, &config).policies.is_empty());
}

#[test]
fn mutual_tls_mode_per_port() {
    let peer = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: trellis-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: metrics-open, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls:
    '9090': {mode: PERMISSIVE}
";
    let config = ProxyConfig::for_tests(true);
    let policy = InboundPolicy::select(&snapshot(peer), &config);
    assert_eq!(policy.mtls(8080).mode, PeerMode::Strict);
    assert_eq!(
        policy.mtls(8080).source,
        "STRICT from mesh-level PeerAuthentication trellis-system/strict"
    );
    assert_eq!(policy.mtls(9090).mode, PeerMode::Permissive);
    assert!(policy.any_strict());

    // No PeerAuthentication: PERMISSIVE everywhere.
    let open = InboundPolicy::select(&snapshot(""), &config);
    assert_eq!(open.mtls(8080).mode, PeerMode::Permissive);
    assert!(!open.any_strict());
}

// === checks ===

const DENY_ADMIN: &str =
    "{action: DENY, rules: [{to: [{operation: {paths: [/admin, /admin/*]}}]}]}";

fn state(policies: &str) -> ProxyState {
    let state = ProxyState::new(ProxyConfig::for_tests(true), None);
    state.set_snapshot(snapshot(policies));
    state
}

fn peer(id: &str) -> Peer {
    let id: trellis_identity::SpiffeId = id.parse().unwrap();
    Peer::new(id, SocketAddr::from(([10, 0, 0, 2], 40000)), None)
}

async fn get(state: &ProxyState, caller: &Peer, target: &str) -> Result<String, (u16, String)> {
    let uri: Uri = format!("http://web:8080{target}").parse().unwrap();
    match authorize_request(state, caller, 8080, &Method::GET, &uri, &HeaderMap::new()) {
        Ok(allowed) => Ok(allowed.path.as_str().to_owned()),
        Err(refusal) => {
            let resp = refusal.into_response();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Err((status, String::from_utf8_lossy(&body).into_owned()))
        }
    }
}

#[tokio::test]
async fn denies_a_path_however_it_is_spelled() {
    let state = state(&policy("deny-admin", "default", DENY_ADMIN));
    let client = peer(CLIENT_ID);
    for target in [
        "/admin",
        "/a/../admin",
        "//admin",
        "/%61dmin",
        "/admin/./x",
        "/ADMIN/../admin",
    ] {
        assert_eq!(
            get(&state, &client, target).await,
            Err((403, DENIED_BODY.to_owned())),
            "{target}"
        );
    }
    // Allowed requests go on with the normalized path, query untouched.
    assert_eq!(get(&state, &client, "/ok").await, Ok("/ok".to_owned()));
    assert_eq!(
        get(&state, &client, "/x/../ok?a=..%2F").await,
        Ok("/ok?a=..%2F".to_owned())
    );
    // A path that cannot be normalized is refused before any policy.
    assert_eq!(
        get(&state, &client, "/a%zz").await.map_err(|(s, _)| s),
        Err(400)
    );

    let metrics = state.metrics.encode();
    assert!(
        metrics.contains(
            "trellis_authz_decisions_total{policy=\"default/deny-admin\",action=\"DENY\",\
             decision=\"deny\"} 6"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "trellis_authz_decisions_total{policy=\"none\",action=\"none\",decision=\"allow\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn allow_by_principal() {
    let state = state(&policy(
        "clients-only",
        "default",
        "{rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]}]}",
    ));
    assert_eq!(get(&state, &peer(CLIENT_ID), "/").await, Ok("/".to_owned()));
    let stranger = peer("spiffe://cluster.local/ns/default/sa/stranger");
    assert_eq!(
        get(&state, &stranger, "/").await,
        Err((403, DENIED_BODY.to_owned()))
    );
    // A plaintext connection has no principal: an ALLOW by principal keeps it out.
    let source = SocketAddr::from(([10, 0, 0, 3], 5555));
    let target = SocketAddr::from(([127, 0, 0, 1], 8080));
    assert!(!authorize_connection(&state, None, source, target, None).allow);
    assert!(authorize_connection(&state, Some(CLIENT_ID), source, target, None).allow);
}

/// A DENY on `DELETE` and `PUT` is not walked around by spelling them in lowercase: such a
/// method is refused with 400 before any policy, as Envoy refuses it; extension methods and
/// the exact spellings are decided by the policy.
#[tokio::test]
async fn methods_in_the_wrong_case_are_refused_before_policies() {
    let state = state(&policy(
        "deny-writes",
        "default",
        "{action: DENY, rules: [{to: [{operation: {methods: [DELETE, PUT]}}]}]}",
    ));
    let client = peer(CLIENT_ID);
    let uri: Uri = "http://web:8080/items/1".parse().unwrap();
    let decide = |method: &str| {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        authorize_request(&state, &client, 8080, &method, &uri, &HeaderMap::new())
    };
    for m in ["delete", "put", "Delete", "pUt"] {
        match decide(m) {
            Err(refusal @ Refusal::Method(_)) => {
                assert_eq!(refusal.into_response().status(), StatusCode::BAD_REQUEST)
            }
            other => panic!("{m}: {other:?}"),
        }
    }
    for m in ["DELETE", "PUT"] {
        assert!(matches!(decide(m), Err(Refusal::Denied { .. })), "{m}");
    }
    for m in ["GET", "PURGE", "purge"] {
        assert!(decide(m).is_ok(), "{m}");
    }
}

#[test]
fn tcp_connections_are_denied_by_port_and_dry_run_is_not_enforced() {
    let state = state(
        &[
            policy(
                "deny-db",
                "default",
                "{action: DENY, rules: [{to: [{operation: {ports: ['5432']}}]}]}",
            ),
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata:\n  name: deny-all-dry\n  annotations: {istio.io/dry-run: 'true'}\n\
             spec: {action: DENY, rules: [{}]}\n---\n"
                .to_owned(),
        ]
        .concat(),
    );
    let source = SocketAddr::from(([10, 0, 0, 2], 5555));
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    assert!(!authorize_connection(&state, Some(CLIENT_ID), source, at(5432), None).allow);
    // The dry-run DENY would refuse this one, but only says so.
    assert!(authorize_connection(&state, Some(CLIENT_ID), source, at(8080), None).allow);
    let metrics = state.metrics.encode();
    assert!(
        metrics.contains(
            "trellis_authz_decisions_total{policy=\"default/deny-all-dry\",action=\"DENY\",\
             decision=\"dry_run_deny\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn nothing_passes_before_the_first_snapshot() {
    let state = ProxyState::new(ProxyConfig::for_tests(true), None);
    assert_eq!(
        get(&state, &peer(CLIENT_ID), "/").await.map_err(|(s, _)| s),
        Err(503)
    );
    let any = SocketAddr::from(([127, 0, 0, 1], 8080));
    assert!(!authorize_connection(&state, None, any, any, None).allow);
}
