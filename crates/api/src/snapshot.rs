//! The snapshot model: everything one proxy needs to route its traffic, compiled by the
//! control plane and pushed over the control stream.
//!
//! A [`Snapshot`] is immutable once built. The proxy converts the wire form
//! ([`proto::SnapshotMessage`]) into it with `TryFrom`, which is where malformed input is
//! rejected (the proxy then NACKs and keeps its previous snapshot), so nothing past this point
//! has to re-check addresses, ports or weights.
//!
//! The snapshot also carries every compiled AuthorizationPolicy and PeerAuthentication of the
//! mesh (JSON on the wire, see `proto/control.proto`) and the root namespace; each proxy picks
//! the ones that apply to its own workload ([`crate::authz::applies_to`],
//! [`crate::authz::effective_mtls`]). Each service carries its compiled route table
//! ([`crate::routing::RouteTable`], JSON on the wire too), checked again as it is decoded.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::authz::{PeerAuthPolicy, Policy, DEFAULT_ROOT_NAMESPACE};
use crate::destination::DestinationPolicies;
use crate::proto;
use crate::routing::RouteTable;

/// Why a snapshot from the wire could not be accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("snapshot has no version")]
    NoVersion,
    #[error("service {host}: endpoint {workload}: invalid address {address:?}")]
    BadAddress {
        host: String,
        workload: String,
        address: String,
    },
    #[error("service {host}: port {port} is out of range")]
    BadPort { host: String, port: u32 },
    #[error("service {host}: endpoint {workload} has no identity")]
    NoIdentity { host: String, workload: String },
    #[error("duplicate service host {0}")]
    DuplicateHost(String),
    #[error("service {host}: invalid virtual IP {vip:?}")]
    BadVip { host: String, vip: String },
    /// The service's route table does not deserialize (a regex that does not compile, a
    /// header name HTTP refuses, ...) or does not pass [`RouteTable::validate`].
    #[error("service {host}: routes_json: {error}")]
    Routes {
        /// The service.
        host: String,
        /// What is wrong.
        error: String,
    },
    /// The service's traffic policy does not deserialize.
    #[error("service {host}: traffic_policy_json: {error}")]
    TrafficPolicy {
        /// The service.
        host: String,
        /// What is wrong.
        error: String,
    },
    /// The compiled policies do not deserialize (or a matcher in them does not check out).
    #[error("{field}: {error}")]
    Policies {
        /// The wire field (`authorization_policies_json`, `peer_authentications_json`).
        field: &'static str,
        /// The deserialization error.
        error: String,
    },
}

/// Labels of a workload or a subset selector.
pub type Labels = BTreeMap<String, String>;

/// The routing state of one proxy at one version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Opaque, changes whenever the content changes.
    pub version: String,
    pub trust_domain: String,
    /// Every root the mesh trusts, PEM.
    pub trust_bundle_pem: String,
    /// Services by fully qualified host (`NAME.NS.svc.cluster.local`).
    pub services: HashMap<String, Arc<Service>>,
    /// Service hosts by virtual IP, for connections captured transparently.
    pub by_vip: HashMap<IpAddr, String>,
    /// (service host, endpoint index) by endpoint address: a connection straight to a
    /// workload's address still goes through its proxy, with its identity checked.
    pub by_endpoint: HashMap<IpAddr, (String, usize)>,
    /// SHA-256 (hex) of the root new certificates are issued under; a proxy whose certificate
    /// chains to another root renews at once. Empty when the control plane does not say.
    pub signing_root_fingerprint: String,
    /// Every AuthorizationPolicy of the mesh, sorted by namespace and name.
    pub authorization_policies: Vec<Policy>,
    /// Every PeerAuthentication of the mesh, sorted by namespace and name.
    pub peer_authentications: Vec<PeerAuthPolicy>,
    /// Where mesh-wide policies live (`trellis-system` unless the control plane says
    /// otherwise).
    pub root_namespace: String,
}

/// A service as the proxy sees it: its ports, its subsets, its routes and its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub host: String,
    pub name: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub subsets: BTreeMap<String, Labels>,
    pub endpoints: Vec<Endpoint>,
    pub vips: Vec<IpAddr>,
    /// The route table per service port ([`crate::routing::select`]); empty when the
    /// service has no routes.
    pub routes: RouteTable,
    /// DestinationRule traffic policy per port and subset; the defaults when no rule sets
    /// one.
    pub policies: Arc<DestinationPolicies>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// What the workload listens on for this service port.
    pub target: TargetPort,
    pub protocol: String,
}

/// A Kubernetes `targetPort`: a number, or the name of a workload port.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetPort {
    Number(u16),
    Named(String),
}

/// A workload behind a service, reached through its proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub workload_name: String,
    pub address: IpAddr,
    pub labels: Labels,
    /// The SPIFFE ID the endpoint's proxy must present.
    pub identity: String,
    /// The endpoint proxy's mTLS listener port.
    pub inbound_port: u16,
    /// Named workload ports.
    pub ports: BTreeMap<String, u16>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Finds the service an authority names, the way a Kubernetes resolver would for a client
    /// in `client_ns`: `reviews`, `reviews.default`, `reviews.default.svc` and the full
    /// `reviews.default.svc.cluster.local` all name the same service. A port, if present, is
    /// stripped first.
    pub fn resolve(&self, authority: &str, client_ns: &str) -> Option<&Arc<Service>> {
        let host = strip_port(authority).trim_end_matches('.');
        let host = host.to_ascii_lowercase();
        let candidates = match host.matches('.').count() {
            0 => vec![format!("{host}.{client_ns}.svc.cluster.local")],
            1 => vec![format!("{host}.svc.cluster.local")],
            2 if host.ends_with(".svc") => vec![format!("{host}.cluster.local")],
            _ => vec![host.clone()],
        };
        candidates.iter().find_map(|h| self.services.get(h))
    }
}

/// The host part of an authority (`host`, `host:port`, `[v6]:port`).
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The port of an authority, if it names one.
pub fn authority_port(authority: &str) -> Option<u16> {
    let (_, p) = authority.rsplit_once(':')?;
    p.parse().ok()
}

// === impl Service ===

impl Service {
    /// The service port a request addressed to `port` uses: the named one, or the only one
    /// when the request named none.
    pub fn port(&self, port: Option<u16>) -> Option<&ServicePort> {
        match port {
            Some(p) => self.ports.iter().find(|sp| sp.port == p),
            None => match self.ports.as_slice() {
                [only] => Some(only),
                _ => self.ports.iter().find(|sp| sp.port == 80),
            },
        }
    }

    /// Endpoints whose labels satisfy the subset's selector (all of them for no subset).
    pub fn endpoints_in(&self, subset: Option<&str>) -> Vec<&Endpoint> {
        let selector = subset.and_then(|s| self.subsets.get(s));
        self.endpoints
            .iter()
            .filter(|ep| match selector {
                Some(sel) => sel.iter().all(|(k, v)| ep.labels.get(k) == Some(v)),
                None => subset.is_none(),
            })
            .collect()
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// Where the endpoint's proxy accepts mTLS.
    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.inbound_port)
    }

    /// The workload port that serves `sp` on this endpoint.
    pub fn target_port(&self, sp: &ServicePort) -> Option<u16> {
        match &sp.target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Named(name) => self.ports.get(name).copied(),
        }
    }
}

// === wire conversions ===

fn port16(host: &str, port: u32) -> Result<u16, SnapshotError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| SnapshotError::BadPort {
            host: host.to_string(),
            port,
        })
}

impl TryFrom<proto::SnapshotMessage> for Snapshot {
    type Error = SnapshotError;

    fn try_from(msg: proto::SnapshotMessage) -> Result<Self, Self::Error> {
        if msg.version.is_empty() {
            return Err(SnapshotError::NoVersion);
        }
        let mut services = HashMap::with_capacity(msg.services.len());
        let mut by_vip = HashMap::new();
        let mut by_endpoint = HashMap::new();
        for svc in msg.services {
            let svc = Service::try_from(svc)?;
            let host = svc.host.clone();
            for vip in &svc.vips {
                by_vip.insert(*vip, host.clone());
            }
            for (i, ep) in svc.endpoints.iter().enumerate() {
                by_endpoint.entry(ep.address).or_insert((host.clone(), i));
            }
            if services.insert(host.clone(), Arc::new(svc)).is_some() {
                return Err(SnapshotError::DuplicateHost(host));
            }
        }
        let authorization_policies = json_list(
            &msg.authorization_policies_json,
            "authorization_policies_json",
        )?;
        let peer_authentications =
            json_list(&msg.peer_authentications_json, "peer_authentications_json")?;
        let root_namespace = if msg.root_namespace.is_empty() {
            DEFAULT_ROOT_NAMESPACE.to_owned()
        } else {
            msg.root_namespace
        };
        Ok(Snapshot {
            version: msg.version,
            trust_domain: msg.trust_domain,
            trust_bundle_pem: msg.trust_bundle_pem,
            services,
            by_vip,
            by_endpoint,
            signing_root_fingerprint: msg.signing_root_fingerprint,
            authorization_policies,
            peer_authentications,
            root_namespace,
        })
    }
}

/// A JSON array from the wire; no bytes at all is an empty list (a control plane that sends
/// no policies).
fn json_list<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    field: &'static str,
) -> Result<Vec<T>, SnapshotError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(bytes).map_err(|e| SnapshotError::Policies {
        field,
        error: e.to_string(),
    })
}

/// A service's route table from the wire, checked; no bytes is no routes.
fn route_table(host: &str, bytes: &[u8]) -> Result<RouteTable, SnapshotError> {
    if bytes.is_empty() {
        return Ok(RouteTable::default());
    }
    let error = |error: String| SnapshotError::Routes {
        host: host.to_owned(),
        error,
    };
    let table: RouteTable = serde_json::from_slice(bytes).map_err(|e| error(e.to_string()))?;
    table.validate().map_err(|e| error(e.to_string()))?;
    Ok(table)
}

fn destination_policies(
    host: &str,
    bytes: &[u8],
) -> Result<Arc<DestinationPolicies>, SnapshotError> {
    if bytes.is_empty() {
        return Ok(Arc::default());
    }
    serde_json::from_slice(bytes)
        .map(Arc::new)
        .map_err(|e| SnapshotError::TrafficPolicy {
            host: host.to_owned(),
            error: e.to_string(),
        })
}

impl TryFrom<proto::Service> for Service {
    type Error = SnapshotError;

    fn try_from(svc: proto::Service) -> Result<Self, Self::Error> {
        let host = svc.host;
        let ports = svc
            .ports
            .into_iter()
            .map(|p| {
                let target = match p.target_port.parse::<u32>() {
                    Ok(n) => TargetPort::Number(port16(&host, n)?),
                    Err(_) if p.target_port.is_empty() => {
                        TargetPort::Number(port16(&host, p.port)?)
                    }
                    Err(_) => TargetPort::Named(p.target_port),
                };
                Ok(ServicePort {
                    name: p.name,
                    port: port16(&host, p.port)?,
                    target,
                    protocol: p.protocol,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let subsets: BTreeMap<_, _> = svc
            .subsets
            .into_iter()
            .map(|s| (s.name, s.labels.into_iter().collect()))
            .collect();
        let endpoints = svc
            .endpoints
            .into_iter()
            .map(|ep| {
                let address =
                    ep.address
                        .parse::<IpAddr>()
                        .map_err(|_| SnapshotError::BadAddress {
                            host: host.clone(),
                            workload: ep.workload_name.clone(),
                            address: ep.address.clone(),
                        })?;
                if ep.identity.is_empty() {
                    return Err(SnapshotError::NoIdentity {
                        host: host.clone(),
                        workload: ep.workload_name,
                    });
                }
                let ports = ep
                    .ports
                    .into_iter()
                    .map(|(k, v)| Ok((k, port16(&host, v)?)))
                    .collect::<Result<_, SnapshotError>>()?;
                Ok(Endpoint {
                    workload_name: ep.workload_name,
                    address,
                    labels: ep.labels.into_iter().collect(),
                    identity: ep.identity,
                    inbound_port: port16(&host, ep.inbound_port)?,
                    ports,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let vips = svc
            .vips
            .iter()
            .map(|v| {
                v.parse::<IpAddr>().map_err(|_| SnapshotError::BadVip {
                    host: host.clone(),
                    vip: v.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let routes = route_table(&host, &svc.routes_json)?;
        let policies = destination_policies(&host, &svc.traffic_policy_json)?;
        Ok(Service {
            vips,
            routes,
            policies,
            host,
            name: svc.name,
            namespace: svc.namespace,
            ports,
            subsets,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> proto::SnapshotMessage {
        proto::SnapshotMessage {
            version: "1-abc".into(),
            trust_bundle_pem: String::new(),
            trust_domain: "cluster.local".into(),
            signing_root_fingerprint: String::new(),
            authorization_policies_json: Vec::new(),
            peer_authentications_json: Vec::new(),
            root_namespace: String::new(),
            tap: None,
            services: vec![proto::Service {
                host: "reviews.default.svc.cluster.local".into(),
                name: "reviews".into(),
                namespace: "default".into(),
                ports: vec![proto::ServicePort {
                    name: "http".into(),
                    port: 9080,
                    target_port: "http-alt".into(),
                    protocol: "TCP".into(),
                }],
                subsets: vec![proto::Subset {
                    name: "v1".into(),
                    labels: [("version".to_string(), "v1".to_string())].into(),
                }],
                endpoints: vec![proto::Endpoint {
                    workload_name: "reviews-v1".into(),
                    address: "127.0.1.3".into(),
                    labels: [("version".to_string(), "v1".to_string())].into(),
                    identity: "spiffe://cluster.local/ns/default/sa/reviews".into(),
                    inbound_port: 15008,
                    ports: [("http-alt".to_string(), 9081)].into(),
                }],
                vips: vec!["240.240.0.7".into()],
                routes_json: Vec::new(),
                traffic_policy_json: Vec::new(),
            }],
        }
    }

    #[test]
    fn converts_and_resolves_short_names() {
        let snap = Snapshot::try_from(wire()).unwrap();
        for name in [
            "reviews",
            "reviews:9080",
            "reviews.default",
            "reviews.default.svc",
            "Reviews.default.svc.cluster.local.",
        ] {
            let svc = snap.resolve(name, "default").unwrap();
            assert_eq!(svc.name, "reviews", "{name}");
        }
        assert!(snap.resolve("reviews", "other").is_none());
        let vip: IpAddr = "240.240.0.7".parse().unwrap();
        assert_eq!(snap.by_vip[&vip], "reviews.default.svc.cluster.local");
        let ep: IpAddr = "127.0.1.3".parse().unwrap();
        assert_eq!(
            snap.by_endpoint[&ep],
            ("reviews.default.svc.cluster.local".to_string(), 0)
        );
        let svc = snap.resolve("reviews", "default").unwrap();
        let sp = svc.port(Some(9080)).unwrap();
        let eps = svc.endpoints_in(Some("v1"));
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].target_port(sp), Some(9081));
        assert!(svc.endpoints_in(Some("v2")).is_empty());
        assert_eq!(svc.endpoints_in(None).len(), 1);
    }

    #[test]
    fn rejects_malformed_wire_input() {
        let mut m = wire();
        m.services[0].endpoints[0].address = "not-an-ip".into();
        assert!(matches!(
            Snapshot::try_from(m),
            Err(SnapshotError::BadAddress { .. })
        ));
        let mut m = wire();
        m.services[0].ports[0].port = 70000;
        assert!(matches!(
            Snapshot::try_from(m),
            Err(SnapshotError::BadPort { port: 70000, .. })
        ));
        let mut m = wire();
        m.services[0].routes_json = b"{\"ports\": 7}".to_vec();
        assert!(matches!(
            Snapshot::try_from(m),
            Err(SnapshotError::Routes { .. })
        ));
        let mut m = wire();
        m.services[0].traffic_policy_json = b"{\"service\": {\"default\": {\"pool\": 1}}}".to_vec();
        assert!(matches!(
            Snapshot::try_from(m),
            Err(SnapshotError::TrafficPolicy { .. })
        ));
        let mut m = wire();
        m.version.clear();
        assert_eq!(Snapshot::try_from(m).unwrap_err(), SnapshotError::NoVersion);
    }

    #[test]
    fn carries_compiled_policies_and_the_root_namespace() {
        let snap = Snapshot::try_from(wire()).unwrap();
        assert!(snap.authorization_policies.is_empty());
        assert!(snap.peer_authentications.is_empty());
        assert_eq!(snap.root_namespace, DEFAULT_ROOT_NAMESPACE);

        let mut m = wire();
        m.root_namespace = "mesh-root".into();
        let yaml = r"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec: {mtls: {mode: STRICT}}
";
        let (resources, diagnostics) = crate::load::parse_str(std::path::Path::new("p.yaml"), yaml);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        let (mut authz, mut peer) = (Vec::new(), Vec::new());
        for r in &resources {
            match &r.value {
                crate::resources::Resource::AuthorizationPolicy(p) => {
                    authz.push(Policy::compile(p).unwrap())
                }
                crate::resources::Resource::PeerAuthentication(p) => {
                    peer.push(PeerAuthPolicy::compile(p).unwrap())
                }
                _ => {}
            }
        }
        m.authorization_policies_json = serde_json::to_vec(&authz).unwrap();
        m.peer_authentications_json = serde_json::to_vec(&peer).unwrap();
        let snap = Snapshot::try_from(m).unwrap();
        assert_eq!(snap.root_namespace, "mesh-root");
        assert_eq!(snap.authorization_policies, authz);
        assert_eq!(snap.peer_authentications, peer);

        // Malformed policies are refused, so the proxy NACKs and keeps what it enforces.
        let mut m = wire();
        m.authorization_policies_json = b"[{\"namespace\":1}]".to_vec();
        assert!(matches!(
            Snapshot::try_from(m),
            Err(SnapshotError::Policies {
                field: "authorization_policies_json",
                ..
            })
        ));
        let mut m = wire();
        m.peer_authentications_json = b"not json".to_vec();
        assert!(matches!(
            Snapshot::try_from(m),
            Err(SnapshotError::Policies {
                field: "peer_authentications_json",
                ..
            })
        ));
    }

    #[test]
    fn carries_route_tables_and_refuses_bad_ones() {
        let yaml = r"apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {regex: 'ja.*'}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
";
        let (resources, diagnostics) = crate::load::parse_str(std::path::Path::new("r.yaml"), yaml);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        let compiled = crate::routing::compile(&resources);
        let table = &compiled.tables["reviews.default.svc.cluster.local"];
        let mut m = wire();
        m.services[0].routes_json = serde_json::to_vec(table).unwrap();
        let snap = Snapshot::try_from(m.clone()).unwrap();
        let svc = snap.resolve("reviews", "default").unwrap();
        assert_eq!(&svc.routes, table);
        assert!(svc.routes.port(9080).is_some());

        // A regex that does not compile, or a table that breaks its invariants, is refused.
        let json = String::from_utf8(m.services[0].routes_json.clone()).unwrap();
        for bad in [
            json.replace("ja.*", "ja(.*"),
            json.replace("\"rule\":1", "\"rule\":7"),
        ] {
            assert_ne!(bad, json);
            let mut m = m.clone();
            m.services[0].routes_json = bad.clone().into_bytes();
            let result = Snapshot::try_from(m);
            assert!(
                matches!(result, Err(SnapshotError::Routes { .. })),
                "{bad}: {result:?}"
            );
        }
        // No bytes, no routes.
        let snap = Snapshot::try_from(wire()).unwrap();
        assert!(snap
            .resolve("reviews", "default")
            .unwrap()
            .routes
            .is_empty());
    }

    #[test]
    fn authority_parts() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(authority_port("a.b:8080"), Some(8080));
        assert_eq!(authority_port("a.b"), None);
    }
}
