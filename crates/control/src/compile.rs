//! The snapshot compiler: the applied config revision plus the live registry, turned into
//! the snapshot proxies route with.
//!
//! * A `Service` selects endpoints by labels among the namespace's `WorkloadEntry`s. A
//!   connected proxy stands in for the entry it names (same name, the entry's identity),
//!   wherever it is: the live proxy's address and mTLS port win, the entry's labels stay.
//!   A registration no entry vouches for is no endpoint, whatever labels it claims.
//! * `DestinationRule` subsets and traffic policy (`traffic_policy_json`, resolved per port
//!   and subset by [`trellis_api::destination`]) attach to the service their `host` names.
//! * Every service carries its route table (`routes_json`), compiled by
//!   [`trellis_api::routing::compile`] from VirtualServices and Gateway API routes (matches,
//!   precedence, actions, filters, per port), which the proxy routes with.
//!
//! * Every `AuthorizationPolicy` and `PeerAuthentication`, compiled ([`crate::policies`]), and
//!   the root namespace travel as they are: each proxy picks what applies to its workload.
//!
//! Every proxy gets the same snapshot for now; per-proxy trimming comes with sidecar scoping.
//! The version is a content hash, so an unchanged result is not pushed again.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use trellis_api::load::ConfigSet;
use trellis_api::proto;
use trellis_api::resources::{IntOrString, Resource, WorkloadEntry};

use crate::admission;
use crate::policies::PolicyCompileError;
use crate::registry::{RegisteredWorkload, Registry};
use crate::store::Revision;

/// Why no snapshot could be made from a config set.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A policy does not compile. The store refuses such config sets
    /// ([`crate::policies::check`]), so this means one reached the compiler some other way.
    #[error(transparent)]
    Policy(#[from] PolicyCompileError),
    #[error("serializing the compiled policies or routes: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The default port of a proxy's mTLS listener, assumed for WorkloadEntries whose proxy has
/// not registered.
const DEFAULT_INBOUND_PORT: u32 = 15008;

/// Turns a host as written in a resource of namespace `ns` into its fully qualified form,
/// as the route compiler does.
pub fn fqdn(host: &str, ns: &str) -> String {
    trellis_api::routing::service_host(host, ns)
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What the CA contributes to a snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustState {
    pub trust_domain: String,
    /// Other trust domains the mesh answers to (Istio's `trustDomainAliases`): policies'
    /// principals in any of them match peers of the others.
    pub trust_domain_aliases: Vec<String>,
    pub bundle_pem: String,
    pub signing_root_fingerprint: String,
}

/// Compiles the snapshot every proxy receives; `root_namespace` is where mesh-wide policies
/// live.
///
/// # Errors
///
/// [`CompileError`] when a policy does not compile: the caller keeps the snapshot it has
/// rather than ship one without that policy.
pub fn compile(
    config: &ConfigSet,
    registered: &[RegisteredWorkload],
    trust: &TrustState,
    root_namespace: &str,
) -> Result<proto::SnapshotMessage, CompileError> {
    let mut policies = crate::policies::compile(&config.resources)?;
    policies.authorization = policies
        .authorization
        .into_iter()
        .map(|p| p.with_trust_domain_aliases(&trust.trust_domain, &trust.trust_domain_aliases))
        .collect();
    // Route warnings were reported when the config was validated (`store::parse_files`).
    let routes = trellis_api::routing::compile(&config.resources);
    let trust_domain = trust.trust_domain.as_str();
    let mut services = Vec::new();
    for res in &config.resources {
        let Resource::Service(svc) = &res.value else {
            continue;
        };
        let ns = svc.meta.namespace();
        let host = fqdn(&svc.meta.name, ns);
        let ports = svc
            .spec
            .ports
            .iter()
            .map(|p| proto::ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u32::from(p.port),
                target_port: match &p.target_port {
                    Some(IntOrString::Int(n)) => n.to_string(),
                    Some(IntOrString::String(s)) => s.clone(),
                    None => String::new(),
                },
                protocol: app_protocol(p.app_protocol.as_deref(), p.name.as_deref()),
            })
            .collect();
        services.push(proto::Service {
            host: host.clone(),
            name: svc.meta.name.clone(),
            namespace: ns.to_string(),
            ports,
            subsets: subsets(config, &host),
            endpoints: endpoints(config, registered, ns, &svc.spec.selector, trust_domain),
            vips: svc
                .spec
                .cluster_ip
                .as_ref()
                .and_then(|v| v.as_str())
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                .map(|ip| vec![ip.to_string()])
                .unwrap_or_default(),
            routes_json: match routes.tables.get(&host) {
                Some(table) => serde_json::to_vec(table)?,
                None => Vec::new(),
            },
            traffic_policy_json: match traffic_policy(config, &host) {
                Some(policies) => serde_json::to_vec(&policies)?,
                None => Vec::new(),
            },
        });
    }
    services.sort_by(|a, b| a.host.cmp(&b.host));
    allocate_vips(&mut services);
    let mut snap = proto::SnapshotMessage {
        version: String::new(),
        trust_bundle_pem: trust.bundle_pem.clone(),
        services,
        trust_domain: trust_domain.to_string(),
        signing_root_fingerprint: trust.signing_root_fingerprint.clone(),
        authorization_policies_json: json_list(&policies.authorization)?,
        peer_authentications_json: json_list(&policies.peer_authentication)?,
        root_namespace: root_namespace.to_owned(),
        tap: None,
    };
    snap.version = hex::encode(&Sha256::digest(snap.encode_to_vec())[..8]);
    Ok(snap)
}

/// A JSON array, or nothing for an empty list: a mesh without policies sends no policy bytes
/// at all.
fn json_list<T: serde::Serialize>(items: &[T]) -> serde_json::Result<Vec<u8>> {
    if items.is_empty() {
        Ok(Vec::new())
    } else {
        serde_json::to_vec(items)
    }
}

/// The application protocol of a Service port, as Istio reads it: `appProtocol` first, then
/// the port name's prefix (`http`, `http-web`, `grpc-api`, `tcp-db`…). Empty when neither
/// says: the proxy detects it.
fn app_protocol(app_protocol: Option<&str>, name: Option<&str>) -> String {
    const KNOWN: [&str; 12] = [
        "http", "http2", "https", "grpc", "grpc-web", "h2c", "tcp", "tls", "mongo", "mysql",
        "redis", "opaque",
    ];
    if let Some(p) = app_protocol {
        // Kubernetes' standard values (kubernetes.io/h2c, kubernetes.io/ws) and plain ones.
        let p = p.rsplit('/').next().unwrap_or(p).to_ascii_lowercase();
        return p;
    }
    let name = name.unwrap_or("").to_ascii_lowercase();
    let prefix = name.split('-').next().unwrap_or("");
    if KNOWN.contains(&prefix) {
        prefix.to_string()
    } else {
        String::new()
    }
}

/// The range virtual IPs are allocated from when a Service names no `clusterIP`: reserved
/// (240.0.0.0/4), so it can never be a real destination.
const VIP_RANGE: [u8; 2] = [240, 240];

/// Gives every service without a virtual IP one, derived from its host so that it stays the
/// same across revisions and restarts (collisions move to the next free address).
fn allocate_vips(services: &mut [proto::Service]) {
    let mut used: std::collections::HashSet<String> = services
        .iter()
        .flat_map(|s| s.vips.iter().cloned())
        .collect();
    for svc in services.iter_mut().filter(|s| s.vips.is_empty()) {
        let digest = Sha256::digest(svc.host.as_bytes());
        let mut n = u16::from_be_bytes([digest[0], digest[1]]);
        loop {
            let [hi, lo] = n.to_be_bytes();
            let vip = format!("{}.{}.{hi}.{lo}", VIP_RANGE[0], VIP_RANGE[1]);
            // .0 and .255 last octets are left alone: some tools treat them as special.
            if lo != 0 && lo != 255 && used.insert(vip.clone()) {
                svc.vips.push(vip);
                break;
            }
            n = n.wrapping_add(1);
        }
    }
}

/// The endpoints of a Service of namespace `ns` selecting `selector`: its WorkloadEntries,
/// each where its proxy is when that proxy is connected.
///
/// Only config puts a workload behind a Service: a registration counts only as the live form
/// of a WorkloadEntry it names (same namespace and name, and the identity the entry's service
/// account gives), and the entry's labels, not the registration's, are selected on. A live
/// proxy knows where it is, so its address, mTLS port and named ports win over the entry's
/// (the entry's address may not be reachable from the mesh at all: `trellis up --netns` puts
/// loopback-addressed entries into network namespaces; a VM gets a new IP). It never wins at
/// another entry's address. [`crate::admission`] refuses such registrations; this holds the
/// line again for registrations the config changed under.
fn endpoints(
    config: &ConfigSet,
    registered: &[RegisteredWorkload],
    ns: &str,
    selector: &BTreeMap<String, String>,
    trust_domain: &str,
) -> Vec<proto::Endpoint> {
    let entries: Vec<&WorkloadEntry> = admission::entries(config).collect();
    // Addresses are one flat space: an entry of any namespace owns its address.
    let owners: HashMap<IpAddr, (&str, &str)> = entries
        .iter()
        .filter_map(|we| {
            let ip = admission::entry_ip(we)?;
            Some((ip, (we.meta.namespace(), we.meta.name.as_str())))
        })
        .collect();
    let mut out: BTreeMap<String, proto::Endpoint> = BTreeMap::new();
    for we in entries {
        if we.meta.namespace() != ns || !selects(selector, &we.spec.labels) {
            continue;
        }
        let name = we.meta.name.as_str();
        let sa = admission::entry_service_account(we);
        let identity = format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}");
        let labels: std::collections::HashMap<String, String> =
            we.spec.labels.clone().into_iter().collect();
        let live: Vec<&RegisteredWorkload> = registered
            .iter()
            .filter(|w| w.namespace == ns && w.name == name && w.identity == identity)
            .filter(|w| owners.get(&w.address).is_none_or(|o| *o == (ns, name)))
            .collect();
        if live.is_empty() {
            out.insert(
                we.spec.address.clone(),
                proto::Endpoint {
                    workload_name: name.to_string(),
                    address: we.spec.address.clone(),
                    labels,
                    identity,
                    inbound_port: DEFAULT_INBOUND_PORT,
                    ports: we.spec.ports.clone().into_iter().collect(),
                },
            );
            continue;
        }
        // Replicas of one entry each serve at their own address.
        for w in live {
            let mut ports: std::collections::HashMap<String, u32> =
                we.spec.ports.clone().into_iter().collect();
            ports.extend(w.ports.iter().map(|(k, v)| (k.clone(), u32::from(*v))));
            let address = w.address.to_string();
            out.insert(
                address.clone(),
                proto::Endpoint {
                    workload_name: name.to_string(),
                    address,
                    labels: labels.clone(),
                    identity: w.identity.clone(),
                    inbound_port: u32::from(w.inbound_port),
                    ports,
                },
            );
        }
    }
    out.into_values().collect()
}

fn subsets(config: &ConfigSet, host: &str) -> Vec<proto::Subset> {
    let mut out: Vec<proto::Subset> = Vec::new();
    for res in &config.resources {
        let Resource::DestinationRule(dr) = &res.value else {
            continue;
        };
        if fqdn(&dr.spec.host, dr.meta.namespace()) != host {
            continue;
        }
        for s in &dr.spec.subsets {
            // Two rules defining one subset: the first loaded wins (files load in path order).
            if !out.iter().any(|o| o.name == s.name) {
                out.push(proto::Subset {
                    name: s.name.clone(),
                    labels: s.labels.clone().into_iter().collect(),
                });
            }
        }
    }
    out
}

/// The traffic policy of the DestinationRules for `host`, resolved per port and subset;
/// `None` when no rule sets one. Rules for every client merge as Istio merges them: the
/// first loaded rule with a top-level policy gives it, and each subset comes from the first
/// rule that defines it (as in [`subsets`]). A rule with a `workloadSelector` (for workloads
/// of its own namespace) or an `exportTo` that leaves namespaces out applies, whole and
/// before the others, to the clients it names only.
fn traffic_policy(
    config: &ConfigSet,
    host: &str,
) -> Option<trellis_api::destination::DestinationPolicies> {
    let mut merged = trellis_api::resources::DestinationRuleSpec {
        host: host.to_owned(),
        ..Default::default()
    };
    let mut scoped = Vec::new();
    for res in &config.resources {
        let Resource::DestinationRule(dr) = &res.value else {
            continue;
        };
        let ns = dr.meta.namespace();
        if fqdn(&dr.spec.host, ns) != host {
            continue;
        }
        let exported = &dr.spec.export_to;
        let to_some = !exported.is_empty() && !exported.iter().any(|e| e == "*");
        if dr.spec.workload_selector.is_some() || to_some {
            let namespaces = match &dr.spec.workload_selector {
                // Workload selectors do not reach across namespaces.
                Some(_) => vec![ns.to_owned()],
                None => exported
                    .iter()
                    .map(|e| if e == "." { ns.to_owned() } else { e.clone() })
                    .collect(),
            };
            scoped.push(trellis_api::destination::Scoped {
                namespaces,
                labels: dr
                    .spec
                    .workload_selector
                    .as_ref()
                    .map(|s| s.match_labels.clone())
                    .unwrap_or_default(),
                policies: trellis_api::destination::DestinationPolicies::compile(&dr.spec),
            });
            continue;
        }
        if merged.traffic_policy.is_none() {
            merged.traffic_policy = dr.spec.traffic_policy.clone();
        }
        for s in &dr.spec.subsets {
            if !merged.subsets.iter().any(|o| o.name == s.name) {
                merged.subsets.push(s.clone());
            }
        }
    }
    let mut policies = trellis_api::destination::DestinationPolicies::compile(&merged);
    policies.scoped = scoped;
    (!policies.is_empty()).then_some(policies)
}

/// Recompiles whenever the config revision, the registry or the CA's trust state changes
/// and publishes the result; streams read the latest from the returned receiver.
///
/// A compile error keeps the snapshot already published (before the first one, an empty
/// snapshot without a version, which proxies refuse): a proxy never receives a snapshot that
/// leaves out a policy.
pub fn publisher(
    mut revisions: watch::Receiver<Arc<Revision>>,
    registry: Arc<Registry>,
    mut trust: watch::Receiver<TrustState>,
    root_namespace: String,
) -> watch::Receiver<Arc<proto::SnapshotMessage>> {
    let first = compile(
        &revisions.borrow_and_update().config,
        &registry.workloads(),
        &trust.borrow_and_update(),
        &root_namespace,
    )
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "no snapshot can be compiled from the config");
        proto::SnapshotMessage::default()
    });
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut reg_changes = registry.changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = revisions.changed() => if r.is_err() { return },
                r = reg_changes.changed() => if r.is_err() { return },
                r = trust.changed() => if r.is_err() { return },
            }
            let rev = revisions.borrow_and_update().clone();
            let trust_now = trust.borrow_and_update().clone();
            let snap = match compile(
                &rev.config,
                &registry.workloads(),
                &trust_now,
                &root_namespace,
            ) {
                Ok(snap) => snap,
                Err(e) => {
                    tracing::error!(revision = rev.number, error = %e, "snapshot not compiled; proxies keep the previous one");
                    continue;
                }
            };
            if snap.version != tx.borrow().version {
                tracing::info!(version = %snap.version, revision = rev.number, services = snap.services.len(), "snapshot published");
                tx.send_replace(Arc::new(snap));
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(host: &str, vips: &[&str]) -> proto::Service {
        proto::Service {
            host: host.into(),
            vips: vips.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn vips_are_stable_distinct_and_respect_cluster_ips() {
        let mut a = vec![
            svc("a.default.svc.cluster.local", &[]),
            svc("b.default.svc.cluster.local", &["10.96.0.10"]),
        ];
        allocate_vips(&mut a);
        assert_eq!(a[1].vips, vec!["10.96.0.10"]);
        assert!(a[0].vips[0].starts_with("240.240."), "{:?}", a[0].vips);
        // The same host gets the same address in another snapshot.
        let mut again = vec![svc("a.default.svc.cluster.local", &[])];
        allocate_vips(&mut again);
        assert_eq!(again[0].vips, a[0].vips);
        // Many services: no two share an address.
        let mut many: Vec<_> = (0..2000)
            .map(|i| svc(&format!("s{i}.default.svc.cluster.local"), &[]))
            .collect();
        allocate_vips(&mut many);
        let distinct: std::collections::HashSet<_> =
            many.iter().map(|s| s.vips[0].clone()).collect();
        assert_eq!(distinct.len(), 2000);
    }

    fn config(yaml: &str) -> ConfigSet {
        let (resources, diags) = trellis_api::load::parse_str(std::path::Path::new("t.yaml"), yaml);
        assert!(diags.is_empty(), "{diags:?}");
        ConfigSet {
            resources,
            warnings: Vec::new(),
            hash: String::new(),
        }
    }

    fn registered(name: &str, sa: &str, address: &str) -> RegisteredWorkload {
        RegisteredWorkload {
            name: name.into(),
            namespace: "default".into(),
            service_account: sa.into(),
            identity: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
            address: address.parse().expect("test address"),
            labels: [("app".to_string(), "web".to_string())].into(),
            inbound_port: 15008,
            ports: BTreeMap::new(),
        }
    }

    const ROOT: &str = trellis_api::authz::DEFAULT_ROOT_NAMESPACE;

    /// Where each endpoint of the one service is, and who answers there.
    fn endpoints_of(snap: &proto::SnapshotMessage) -> Vec<(String, String, String)> {
        snap.services[0]
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.address.clone(),
                    e.workload_name.clone(),
                    e.identity.clone(),
                )
            })
            .collect()
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-1
spec:
  address: 127.0.1.1
  serviceAccount: web
  labels:
    app: web
  ports:
    http: 8080
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-2
spec:
  address: 127.0.1.2
  serviceAccount: web
  labels:
    app: web
"#;

    #[test]
    fn ships_compiled_policies_and_the_root_namespace() {
        let trust = TrustState::default();
        let snap = compile(&config(WEB), &[], &trust, ROOT).unwrap();
        assert!(snap.authorization_policies_json.is_empty());
        assert!(snap.peer_authentications_json.is_empty());
        assert_eq!(snap.root_namespace, ROOT);

        let policies = format!(
            "{WEB}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-only}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/client]}}}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: mesh, namespace: mesh-root}}
spec: {{mtls: {{mode: STRICT}}}}
"
        );
        let with = compile(&config(&policies), &[], &trust, "mesh-root").unwrap();
        assert_ne!(with.version, snap.version);
        assert_eq!(with.root_namespace, "mesh-root");
        // What the proxy reads back is what the control plane compiled.
        let wire = trellis_api::snapshot::Snapshot::try_from(with).unwrap();
        assert_eq!(wire.root_namespace, "mesh-root");
        assert_eq!(wire.authorization_policies.len(), 1);
        assert_eq!(wire.authorization_policies[0].name, "web-only");
        assert_eq!(wire.peer_authentications[0].namespace, "mesh-root");

        // With the old trust domain as an alias, the shipped policy lets the same workload
        // in either trust domain through.
        let moved = TrustState {
            trust_domain: "new.example".into(),
            trust_domain_aliases: vec!["cluster.local".into()],
            ..TrustState::default()
        };
        let aliased = compile(&config(&policies), &[], &moved, "mesh-root").unwrap();
        let wire = trellis_api::snapshot::Snapshot::try_from(aliased).unwrap();
        let request = |principal| trellis_api::authz::Request {
            source_principal: Some(principal),
            source_ip: [10, 0, 0, 1].into(),
            remote_ip: [10, 0, 0, 1].into(),
            destination_ip: [10, 0, 0, 2].into(),
            destination_port: 80,
            sni: None,
            http: None,
        };
        let allowed = |principal| {
            trellis_api::authz::evaluate(&wire.authorization_policies, &request(principal)).allow()
        };
        assert!(allowed("spiffe://cluster.local/ns/default/sa/client"));
        assert!(allowed("spiffe://new.example/ns/default/sa/client"));
        assert!(!allowed("spiffe://other.example/ns/default/sa/client"));
        assert!(!allowed("spiffe://new.example/ns/default/sa/intruder"));
    }

    #[test]
    fn ships_traffic_policy_with_rules_scoped_to_some_clients() {
        let trust = TrustState::default();
        let plain = compile(&config(WEB), &[], &trust, ROOT).unwrap();
        assert!(plain.services[0].traffic_policy_json.is_empty());
        let dr = |name: &str, extra: &str, lb: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: \
                 {{name: {name}}}\nspec:\n  host: web\n{extra}  trafficPolicy:\n    \
                 loadBalancer: {{simple: {lb}}}\n"
            )
        };
        let yaml = format!(
            "{WEB}{}{}{}{}",
            dr("everyone", "", "RANDOM"),
            dr("later", "", "LEAST_REQUEST"),
            dr(
                "front",
                "  workloadSelector: {matchLabels: {app: front}}\n",
                "ROUND_ROBIN"
            ),
            dr("here", "  exportTo: [\".\", batch]\n", "LEAST_REQUEST"),
        );
        let snap = compile(&config(&yaml), &[], &trust, ROOT).unwrap();
        let wire = trellis_api::snapshot::Snapshot::try_from(snap).unwrap();
        let web = wire.resolve("web", "default").unwrap();
        let p = &web.policies;
        use trellis_api::destination::LoadBalancer;
        // The first rule for everyone gives the policy; the scoped ones keep to their clients.
        assert_eq!(p.get(80, None).load_balancer, LoadBalancer::Random);
        assert_eq!(p.scoped.len(), 2);
        assert_eq!(p.scoped[0].namespaces, ["default"]);
        assert_eq!(p.scoped[1].namespaces, ["default", "batch"]);
        let labels = |app: &str| -> BTreeMap<String, String> {
            [("app".to_string(), app.to_string())].into()
        };
        let lb = |ns, app| p.get_for(ns, &labels(app), 80, None).load_balancer.clone();
        assert_eq!(lb("default", "front"), LoadBalancer::RoundRobin);
        assert_eq!(lb("default", "web"), LoadBalancer::LeastRequest);
        assert_eq!(lb("batch", "front"), LoadBalancer::LeastRequest);
        assert_eq!(lb("other", "front"), LoadBalancer::Random);
    }

    #[test]
    fn ships_each_services_route_table() {
        let trust = TrustState::default();
        let plain = compile(&config(WEB), &[], &trust, ROOT).unwrap();
        assert!(plain.services[0].routes_json.is_empty());

        let routed = format!(
            "{WEB}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: web, port: 80}}]
  rules:
  - matches: [{{path: {{type: Exact, value: /v1}}}}]
    backendRefs: [{{name: web, port: 80}}]
"
        );
        let (resources, _) = trellis_api::load::parse_str(std::path::Path::new("t.yaml"), &routed);
        let cfg = ConfigSet {
            resources,
            warnings: Vec::new(),
            hash: String::new(),
        };
        let snap = compile(&cfg, &[], &trust, ROOT).unwrap();
        assert_ne!(snap.version, plain.version);
        // The proxy reads back what the control plane compiled.
        let wire = trellis_api::snapshot::Snapshot::try_from(snap).unwrap();
        let web = wire.resolve("web", "default").unwrap();
        let want = trellis_api::routing::compile(&cfg.resources);
        assert_eq!(&web.routes, &want.tables["web.default.svc.cluster.local"]);
        assert!(web.routes.port(80).and_then(|p| p.http.as_ref()).is_some());
    }

    #[test]
    fn a_registration_moves_the_entry_it_names() {
        let cfg = config(WEB);
        let trust = TrustState {
            trust_domain: "cluster.local".into(),
            ..TrustState::default()
        };
        let web = "spiffe://cluster.local/ns/default/sa/web".to_string();
        let at = |a: &str, n: &str, id: &str| (a.to_string(), n.to_string(), id.to_string());

        let compile_with =
            |registered: &[RegisteredWorkload]| compile(&cfg, registered, &trust, ROOT).unwrap();

        let cases = [
            (
                "nobody registered: the entries as written",
                vec![],
                vec![
                    at("127.0.1.1", "web-1", &web),
                    at("127.0.1.2", "web-2", &web),
                ],
            ),
            (
                "web-1's proxy registers elsewhere: the entry moves there",
                vec![registered("web-1", "web", "198.18.100.2")],
                vec![
                    at("127.0.1.2", "web-2", &web),
                    at("198.18.100.2", "web-1", &web),
                ],
            ),
            (
                "another identity claiming the name moves nothing and is no endpoint",
                vec![registered("web-1", "other", "198.18.100.3")],
                vec![
                    at("127.0.1.1", "web-1", &web),
                    at("127.0.1.2", "web-2", &web),
                ],
            ),
            (
                "another identity at an entry's address, with its labels, displaces nothing",
                vec![registered("attacker", "other", "127.0.1.1")],
                vec![
                    at("127.0.1.1", "web-1", &web),
                    at("127.0.1.2", "web-2", &web),
                ],
            ),
            (
                "a registration no entry names is no endpoint, whatever labels it claims",
                vec![registered("web-3", "web", "198.18.100.9")],
                vec![
                    at("127.0.1.1", "web-1", &web),
                    at("127.0.1.2", "web-2", &web),
                ],
            ),
            (
                "two live proxies with one name both serve; neither displaces the other",
                vec![
                    registered("web-1", "web", "198.18.100.2"),
                    registered("web-1", "web", "198.18.100.4"),
                ],
                vec![
                    at("127.0.1.2", "web-2", &web),
                    at("198.18.100.2", "web-1", &web),
                    at("198.18.100.4", "web-1", &web),
                ],
            ),
            (
                "an entry's proxy at another entry's address is not served there",
                vec![registered("web-1", "web", "127.0.1.2")],
                vec![
                    at("127.0.1.1", "web-1", &web),
                    at("127.0.1.2", "web-2", &web),
                ],
            ),
        ];
        for (why, registrations, want) in cases {
            assert_eq!(endpoints_of(&compile_with(&registrations)), want, "{why}");
        }

        // The moved entry keeps its ports and its labels, not the ones its proxy claims.
        let mut moved = registered("web-1", "web", "198.18.100.2");
        moved.labels.insert("version".into(), "claimed".into());
        let snap = compile_with(&[moved]);
        let endpoint = &snap.services[0].endpoints[1];
        assert_eq!(endpoint.ports.get("http"), Some(&8080));
        assert_eq!(
            endpoint.labels,
            [("app".to_string(), "web".to_string())].into()
        );
    }
}
