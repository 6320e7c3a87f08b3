//! From a config's resources to every Service's [`RouteTable`]: which routes attach to which
//! Service ports, and how VirtualServices and Gateway API routes combine (see the module
//! docs of [`crate::routing`]). Turning one VirtualService or Gateway API rule into model
//! rules is in [`istio`] and [`gateway`].
//!
//! Compiling never fails: what a single resource asks for and the model cannot do is
//! reported by the loader ([`super::unsupported`]); what only shows across resources (an
//! unknown parent Service, a VirtualService overridden by an HTTPRoute, a second
//! VirtualService for a host) comes back as warnings in [`MeshRoutes::warnings`], and the
//! rest of the config still routes.

mod gateway;
mod istio;

pub(super) use gateway::grpc_method_path;

use std::collections::{BTreeMap, BTreeSet};

use super::model::{ConsumerRoutes, PortRoutes, RouteTable};
use crate::load::{Diagnostic, Located, Severity};
use crate::resources::gateway::{GrpcRoute, HttpRoute, ParentReference, ReferenceGrant, TcpRoute};
use crate::resources::{Resource, VirtualService};

/// The route tables of a config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshRoutes {
    /// Route tables by fully qualified Service host; a Service without routes has none.
    pub tables: BTreeMap<String, RouteTable>,
    /// What routes differently than a resource alone says, each at its resource: sorted by
    /// file and line, without repeats.
    pub warnings: Vec<Diagnostic>,
}

/// A host as written in a resource of namespace `ns`, fully qualified the way a Kubernetes
/// resolver in `ns` would: `reviews`, `reviews.default`, `reviews.default.svc` and
/// `reviews.default.svc.cluster.local` all name `reviews.default.svc.cluster.local`.
pub fn service_host(host: &str, ns: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.svc.cluster.local"),
        1 => format!("{host}.svc.cluster.local"),
        2 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host,
    }
}

/// Compiles the route table of every Service in `resources` (in load order, which stands
/// for the routes' age).
pub fn compile(resources: &[Located<Resource>]) -> MeshRoutes {
    let ctx = Context {
        services: services(resources),
        grants: resources
            .iter()
            .filter_map(|r| match &r.value {
                Resource::ReferenceGrant(g) => Some(g),
                _ => None,
            })
            .collect(),
    };
    let mut warnings = Vec::new();
    let claims = claim_hosts(resources, &ctx, &mut warnings);
    let attachments = attachments(resources, &ctx, &mut warnings);
    let mut tables = BTreeMap::new();
    for (host, service) in &ctx.services {
        let vs = claims.get(host.as_str());
        let mut ports = Vec::new();
        for port in &service.ports {
            let here: Vec<&Attachment<'_>> = attachments
                .iter()
                .filter(|a| a.host == *host && a.port == port.number)
                .collect();
            if let Some(routes) = port_routes(port.number, vs, &here, &ctx, &mut warnings) {
                ports.push(routes);
            }
        }
        if !ports.is_empty() {
            ports.sort_by_key(|p| p.port);
            tables.insert(host.clone(), RouteTable { ports });
        }
    }
    // Overrides are reported once per VirtualService and Service, whatever the ports.
    for (host, located, kinds) in overridden(&claims, &attachments, &ctx) {
        warn(
            &mut warnings,
            located,
            Some("spec.hosts".to_owned()),
            format!(
                "{kinds} routes for {host} are not used on ports where a Gateway API route \
                 attaches to the Service: Gateway API routes take precedence"
            ),
        );
    }
    warnings.sort_by(|a, b| {
        (&a.file, a.line, &a.field, &a.message).cmp(&(&b.file, b.line, &b.field, &b.message))
    });
    warnings.dedup();
    MeshRoutes { tables, warnings }
}

/// What compiling needs to know of the config besides the routes: its Services and the
/// ReferenceGrants that let routes send to Services of other namespaces.
struct Context<'a> {
    services: BTreeMap<String, ServiceInfo<'a>>,
    grants: Vec<&'a ReferenceGrant>,
}

/// A Service as routes see it: its ports.
struct ServiceInfo<'a> {
    ports: Vec<PortInfo<'a>>,
}

/// A Service port.
struct PortInfo<'a> {
    number: u16,
    name: Option<&'a str>,
}

impl Context<'_> {
    /// Whether `route` may send to Service `name` in `namespace`: the same namespace, the
    /// Service the route attaches to (a consumer route sending to its own parent), or a
    /// ReferenceGrant in that namespace for the route's kind and namespace (GEP-709).
    fn may_reference(&self, route: &Located<Resource>, namespace: &str, name: &str) -> bool {
        let route_ns = route.value.namespace();
        if namespace == route_ns {
            return true;
        }
        let is_parent = parent_refs(&route.value).iter().any(|p| {
            p.is_service()
                && p.name == name
                && p.namespace.as_deref().unwrap_or(route_ns) == namespace
        });
        if is_parent {
            return true;
        }
        let kind = route.value.kind();
        self.grants.iter().any(|g| {
            g.meta.namespace() == namespace
                && g.spec.from.iter().any(|f| {
                    f.group == "gateway.networking.k8s.io"
                        && f.kind == kind
                        && f.namespace == route_ns
                })
                && g.spec.to.iter().any(|t| {
                    matches!(t.group.as_str(), "" | "core")
                        && t.kind == "Service"
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
    }

    /// Whether `host` is a Service with port `port`.
    fn has_port(&self, host: &str, port: u16) -> bool {
        self.services
            .get(host)
            .is_some_and(|s| s.ports.iter().any(|p| p.number == port))
    }
}

/// A warning about `located`'s resource, at the line its document starts.
fn warn(
    out: &mut Vec<Diagnostic>,
    located: &Located<Resource>,
    field: Option<String>,
    message: String,
) {
    let resource = &located.value;
    out.push(Diagnostic {
        severity: Severity::Warning,
        file: located.file.clone(),
        line: located.line,
        column: 1,
        kind: Some(resource.kind().to_owned()),
        namespace: Some(resource.namespace().to_owned()),
        name: Some(resource.name().to_owned()),
        field,
        message,
    });
}

fn services(resources: &[Located<Resource>]) -> BTreeMap<String, ServiceInfo<'_>> {
    let mut out = BTreeMap::new();
    for located in resources {
        let Resource::Service(svc) = &located.value else {
            continue;
        };
        let namespace = svc.meta.namespace();
        let ports = svc
            .spec
            .ports
            .iter()
            .map(|p| PortInfo {
                number: p.port,
                name: p.name.as_deref(),
            })
            .collect();
        let info = ServiceInfo { ports };
        out.insert(service_host(&svc.meta.name, namespace), info);
    }
    out
}

/// The VirtualServices that apply to the mesh (no `gateways`, or `mesh` among them), in
/// load order.
fn mesh_virtual_services(
    resources: &[Located<Resource>],
) -> impl Iterator<Item = (&Located<Resource>, &VirtualService)> {
    resources.iter().filter_map(|located| match &located.value {
        Resource::VirtualService(vs)
            if vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh") =>
        {
            Some((located, vs))
        }
        _ => None,
    })
}

/// A VirtualService with the resource it was loaded from.
type Claim<'a> = (&'a Located<Resource>, &'a VirtualService);

/// The VirtualServices that route one Service host.
#[derive(Default)]
struct Claims<'a> {
    /// For every client: the first loaded one exported everywhere.
    everyone: Option<Claim<'a>>,
    /// For the clients of the namespaces their `exportTo` lists, in load order: the first
    /// that lists a namespace routes its clients.
    scoped: Vec<Claim<'a>>,
}

impl<'a> Claims<'a> {
    fn all(&self) -> impl Iterator<Item = Claim<'a>> + '_ {
        self.everyone.iter().chain(&self.scoped).copied()
    }

    /// The one already routing what `vs` would, if any (then `vs` is not used).
    fn taken_by(&self, vs: &VirtualService) -> Option<&'a VirtualService> {
        match exported_to(vs) {
            None => self.everyone.map(|(_, first)| first),
            Some(namespaces) => {
                let covered = |ns: &String| {
                    self.scoped
                        .iter()
                        .any(|(_, o)| exported_to(o).is_some_and(|n| n.contains(ns)))
                };
                if !namespaces.iter().all(covered) {
                    return None;
                }
                self.scoped
                    .iter()
                    .find(|(_, o)| {
                        exported_to(o).is_some_and(|n| n.iter().any(|x| namespaces.contains(x)))
                    })
                    .map(|(_, o)| *o)
            }
        }
    }
}

/// The VirtualServices that route each Service host: of those that name it and apply to the
/// mesh (no `gateways`, or `mesh` among them), the first loaded exported everywhere, and
/// those exported to some namespaces only, for their clients. Ones left with nothing to
/// route are reported.
fn claim_hosts<'a>(
    resources: &'a [Located<Resource>],
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Claims<'a>> {
    let mut claims: BTreeMap<String, Claims<'a>> = BTreeMap::new();
    for (located, vs) in mesh_virtual_services(resources) {
        let ns = vs.meta.namespace();
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            if host.starts_with('*') {
                continue;
            }
            let host = service_host(host, ns);
            if !ctx.services.contains_key(&host) {
                continue;
            }
            let entry = claims.entry(host.clone()).or_default();
            match entry.taken_by(vs) {
                Some(first) => {
                    let message = format!(
                        "{host} is already routed by VirtualService {}/{}; only one \
                         VirtualService routes a host in the mesh, so this one is not used \
                         for it",
                        first.meta.namespace(),
                        first.meta.name
                    );
                    warn(warnings, located, Some(format!("spec.hosts[{i}]")), message);
                }
                None if exported_to(vs).is_some() => entry.scoped.push((located, vs)),
                None => entry.everyone = Some((located, vs)),
            }
        }
    }
    // Wildcard hosts (`*.example.com`, `*.ns.svc.cluster.local`, `*`) route the Services
    // no VirtualService names exactly; of several, the longest suffix wins, then the first
    // loaded (Istio picks the most specific host).
    let mut wildcards: Vec<(String, &Located<Resource>, &VirtualService)> = Vec::new();
    for (located, vs) in mesh_virtual_services(resources) {
        for host in &vs.spec.hosts {
            let Some(rest) = host.strip_prefix('*') else {
                continue;
            };
            let suffix = match rest {
                // `*` alone: every host.
                "" => String::new(),
                // `*.reviews`-style short forms qualify like names do.
                _ => service_host(&format!("x{rest}"), vs.meta.namespace())
                    .trim_start_matches('x')
                    .to_owned(),
            };
            wildcards.push((suffix, located, vs));
        }
    }
    for host in ctx.services.keys() {
        if claims.get(host).is_some_and(|c| c.all().next().is_some()) {
            continue;
        }
        let best = wildcards
            .iter()
            .filter(|(suffix, _, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            .max_by(|a, b| a.0.len().cmp(&b.0.len()).then(std::cmp::Ordering::Greater));
        if let Some((_, located, vs)) = best {
            claims.entry(host.clone()).or_default().everyone = Some((*located, *vs));
        }
    }
    claims
}

/// A Gateway API route's parentRefs; none for other kinds.
fn parent_refs(resource: &Resource) -> &[ParentReference] {
    match resource {
        Resource::HttpRoute(r) => &r.spec.parent_refs,
        Resource::GrpcRoute(r) => &r.spec.parent_refs,
        Resource::TcpRoute(r) => &r.spec.parent_refs,
        _ => &[],
    }
}

/// A Gateway API route attached to one Service port.
struct Attachment<'a> {
    host: String,
    port: u16,
    /// The route's namespace when it differs from the Service's: a consumer route, for
    /// clients in that namespace only.
    consumer: Option<&'a str>,
    located: &'a Located<Resource>,
    route: GatewayRoute<'a>,
    /// Load order: stands for the route's age.
    order: usize,
}

/// The Gateway API route kinds the mesh routes with.
#[derive(Clone, Copy)]
enum GatewayRoute<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
    Tcp(&'a TcpRoute),
}

/// Every (route, Service port) pair a Service parentRef makes, in load order. A route that
/// names the same port twice (by number and by name) attaches once.
fn attachments<'a>(
    resources: &'a [Located<Resource>],
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<Attachment<'a>> {
    let mut out: Vec<Attachment<'a>> = Vec::new();
    for (order, located) in resources.iter().enumerate() {
        let (route, parents) = match &located.value {
            Resource::HttpRoute(r) => (GatewayRoute::Http(r), &r.spec.parent_refs),
            Resource::GrpcRoute(r) => (GatewayRoute::Grpc(r), &r.spec.parent_refs),
            Resource::TcpRoute(r) => (GatewayRoute::Tcp(r), &r.spec.parent_refs),
            _ => continue,
        };
        let route_ns = located.value.namespace();
        let mut seen: BTreeSet<(String, u16)> = BTreeSet::new();
        for (i, parent) in parents.iter().enumerate() {
            // Gateways and other kinds are reported by the loader; they are not the mesh's.
            if !parent.is_service() {
                continue;
            }
            let parent_ns = parent.namespace.as_deref().unwrap_or(route_ns);
            let host = format!("{}.{parent_ns}.svc.cluster.local", parent.name);
            let field = Some(format!("spec.parentRefs[{i}]"));
            let Some(ports) = parent_ports(&host, parent, ctx) else {
                let message = format!(
                    "parentRef Service {parent_ns}/{} does not exist (or lacks that port): the \
                     route does not attach to it",
                    parent.name
                );
                warn(warnings, located, field, message);
                continue;
            };
            for port in ports {
                if seen.insert((host.clone(), port)) {
                    out.push(Attachment {
                        host: host.clone(),
                        port,
                        consumer: (route_ns != parent_ns).then_some(route_ns),
                        located,
                        route,
                        order,
                    });
                }
            }
        }
    }
    out
}

/// The Service ports a parentRef attaches to: its `port`, the port its `sectionName` names,
/// or every port. `None` when the Service or that port does not exist.
fn parent_ports(host: &str, parent: &ParentReference, ctx: &Context<'_>) -> Option<Vec<u16>> {
    let service = ctx.services.get(host)?;
    let ports: Vec<u16> = service
        .ports
        .iter()
        .filter(|p| parent.port.is_none_or(|want| i32::from(p.number) == want))
        .filter(|p| {
            parent
                .section_name
                .as_deref()
                .is_none_or(|section| p.name == Some(section))
        })
        .map(|p| p.number)
        .collect();
    (!ports.is_empty()).then_some(ports)
}

/// The routes of one Service port: the VirtualService that claims the host (if any) and the
/// Gateway API routes attached to the port.
fn port_routes(
    port: u16,
    claims: Option<&Claims<'_>>,
    attached: &[&Attachment<'_>],
    ctx: &Context<'_>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<PortRoutes> {
    let producer: Vec<&Attachment<'_>> = attached
        .iter()
        .copied()
        .filter(|a| a.consumer.is_none())
        .collect();
    let gateway_http = gateway::http_routes(&producer, ctx, warnings);
    let gateway_tcp = gateway::tcp_routes(&producer, ctx, warnings);
    // Gateway API routes attached to the port take it over (see `overridden`).
    let vs_http = |vs: &VirtualService| {
        if gateway_http.is_some() {
            None
        } else {
            istio::http_routes(vs, port)
        }
    };
    let vs_tcp = |vs: &VirtualService| {
        if gateway_tcp.is_some() {
            None
        } else {
            istio::tcp_routes(vs, port)
        }
    };
    let everyone = claims.and_then(|c| c.everyone);
    let http = gateway_http
        .clone()
        .or_else(|| everyone.and_then(|(_, vs)| vs_http(vs)));
    let tcp = gateway_tcp
        .clone()
        .or_else(|| everyone.and_then(|(_, vs)| vs_tcp(vs)));
    // A VirtualService whose `exportTo` leaves namespaces out routes only the clients of the
    // namespaces it lists (the first loaded that lists one): its rules go to them as
    // consumer routes.
    let scoped: Vec<(Vec<String>, &VirtualService)> = claims
        .map(|c| c.scoped.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, vs)| Some((exported_to(vs)?, *vs)))
        .collect();
    let scoped_for = |namespace: &str| {
        scoped
            .iter()
            .find(|(namespaces, _)| namespaces.iter().any(|n| n == namespace))
            .map(|(_, vs)| *vs)
    };
    let mut namespaces: BTreeSet<&str> = attached.iter().filter_map(|a| a.consumer).collect();
    namespaces.extend(
        scoped
            .iter()
            .flat_map(|(n, _)| n.iter().map(String::as_str)),
    );
    let mut consumers = Vec::new();
    for namespace in namespaces {
        let theirs: Vec<&Attachment<'_>> = attached
            .iter()
            .copied()
            .filter(|a| a.consumer == Some(namespace))
            .collect();
        let vs = scoped_for(namespace);
        let routes = ConsumerRoutes {
            namespace: namespace.to_owned(),
            http: gateway::http_routes(&theirs, ctx, warnings).or_else(|| vs.and_then(vs_http)),
            tcp: gateway::tcp_routes(&theirs, ctx, warnings).or_else(|| vs.and_then(vs_tcp)),
        };
        if routes.http.is_some() || routes.tcp.is_some() {
            consumers.push(routes);
        }
    }
    (http.is_some() || tcp.is_some() || !consumers.is_empty()).then_some(PortRoutes {
        port,
        http,
        tcp,
        consumers,
    })
}

/// The client namespaces a VirtualService's `exportTo` limits it to (`.` is its own); `None`
/// when it is exported everywhere (no `exportTo`, or `*` among them).
fn exported_to(vs: &VirtualService) -> Option<Vec<String>> {
    let list = &vs.spec.export_to;
    if list.is_empty() || list.iter().any(|e| e == "*") {
        return None;
    }
    let own = vs.meta.namespace();
    let mut out: Vec<String> = list
        .iter()
        .map(|e| if e == "." { own.to_owned() } else { e.clone() })
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// The (host, VirtualService) pairs whose routes a producer Gateway API route replaces on at
/// least one port where the VirtualService had routes of the same family, with the families
/// replaced (`http`, `tcp`, `http and tcp`).
fn overridden<'a>(
    claims: &BTreeMap<String, Claims<'a>>,
    attachments: &[Attachment<'_>],
    ctx: &Context<'_>,
) -> Vec<(String, &'a Located<Resource>, &'static str)> {
    let mut out = Vec::new();
    let each = claims
        .iter()
        .flat_map(|(host, c)| c.all().map(move |claim| (host, claim)));
    for (host, (located, vs)) in each {
        let Some(service) = ctx.services.get(host) else {
            continue;
        };
        let replaced = |tcp: bool| {
            service.ports.iter().any(|port| {
                let attached = attachments.iter().any(|a| {
                    a.host == *host
                        && a.port == port.number
                        && a.consumer.is_none()
                        && matches!(a.route, GatewayRoute::Tcp(_)) == tcp
                });
                attached
                    && if tcp {
                        istio::tcp_routes(vs, port.number).is_some()
                    } else {
                        istio::http_routes(vs, port.number).is_some()
                    }
            })
        };
        let kinds = match (replaced(false), replaced(true)) {
            (true, true) => "http and tcp",
            (true, false) => "http",
            (false, true) => "tcp",
            (false, false) => continue,
        };
        out.push((host.clone(), located, kinds));
    }
    out
}

#[cfg(test)]
mod tests;
