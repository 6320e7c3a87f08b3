//! Checks against the service registry: VirtualService destinations (host, subset, port),
//! DestinationRule subsets that select no workload, DestinationRule TLS without server
//! verification, and Service port names.

use serde_json::Value;

use super::input::{selects, workloads};
use super::{labels, of_kind, strings, Document, Finding, Severity};

/// The suffix Kubernetes gives Service hostnames.
const CLUSTER_SUFFIX: &str = "svc.cluster.local";

/// Protocols Istio recognises in a port name (`<protocol>[-<suffix>]`).
const PORT_PROTOCOLS: [&str; 11] = [
    "grpc", "grpc-web", "http", "http2", "https", "mongo", "mysql", "redis", "tcp", "tls", "udp",
];

/// Runs the checks of this module.
pub(super) fn check(docs: &[Document], out: &mut Vec<Finding>) {
    let registry = Registry::new(docs);
    for vs in of_kind(docs, "VirtualService") {
        check_destinations(docs, &registry, vs, out);
    }
    for dr in of_kind(docs, "DestinationRule") {
        check_subsets_select_pods(docs, dr, out);
        check_tls(dr, out);
    }
    for svc in of_kind(docs, "Service") {
        check_port_names(svc, out);
    }
}

/// Who can see a resource, from its `exportTo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Visibility {
    /// Every namespace (no exportTo, or `*`).
    All,
    /// Only these namespaces (`.` already resolved to the resource's own).
    Only(Vec<String>),
}

impl Visibility {
    /// From exportTo entries of a resource in namespace `own`.
    pub(super) fn new<'a>(entries: impl IntoIterator<Item = &'a str>, own: &str) -> Self {
        let mut names = Vec::new();
        let mut any = false;
        for entry in entries {
            any = true;
            match entry.trim() {
                "*" => return Visibility::All,
                "." => names.push(own.to_owned()),
                // `~` exports to nobody; an empty entry is a stray comma.
                "~" | "" => {}
                other => names.push(other.to_owned()),
            }
        }
        if any {
            Visibility::Only(names)
        } else {
            Visibility::All
        }
    }

    /// Whether namespace `ns` sees the resource.
    pub(super) fn includes(&self, ns: &str) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Only(names) => names.iter().any(|n| n == ns),
        }
    }
}

/// `host` as a fully qualified name, resolved from namespace `ns` the way Istio does: a name
/// without dots is a Service in the same namespace; anything else is taken as written.
pub(super) fn fqdn(host: &str, ns: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_owned()
    } else {
        format!("{host}.{ns}.{CLUSTER_SUFFIX}")
    }
}

/// Whether a registry host (possibly a `*.` wildcard) covers destination host `dest`.
fn host_covers(registered: &str, dest: &str) -> bool {
    if registered == dest || registered == "*" {
        return true;
    }
    match registered.strip_prefix('*') {
        Some(suffix) => dest.ends_with(suffix) && dest.len() > suffix.len(),
        None => false,
    }
}

/// One host of a Service or ServiceEntry.
struct Entry<'a> {
    host: String,
    visibility: Visibility,
    ports: Vec<u64>,
    doc: &'a Document,
}

/// Every host Services and ServiceEntries define.
struct Registry<'a> {
    entries: Vec<Entry<'a>>,
}

impl<'a> Registry<'a> {
    fn new(docs: &'a [Document]) -> Self {
        let mut entries = Vec::new();
        for svc in of_kind(docs, "Service") {
            let annotation =
                svc.value["metadata"]["annotations"]["networking.istio.io/exportTo"].as_str();
            entries.push(Entry {
                host: format!("{}.{}.{CLUSTER_SUFFIX}", svc.name, svc.namespace),
                visibility: Visibility::new(
                    annotation.into_iter().flat_map(|a| a.split(',')),
                    &svc.namespace,
                ),
                ports: ports(&svc.spec()["ports"], "port"),
                doc: svc,
            });
        }
        for se in of_kind(docs, "ServiceEntry") {
            let spec = se.spec();
            let visibility = Visibility::new(strings(&spec["exportTo"]), &se.namespace);
            let ports = ports(&spec["ports"], "number");
            for host in strings(&spec["hosts"]) {
                entries.push(Entry {
                    host: fqdn(host, &se.namespace),
                    visibility: visibility.clone(),
                    ports: ports.clone(),
                    doc: se,
                });
            }
        }
        Registry { entries }
    }

    /// The entry for `host` (already an FQDN) that namespace `ns` sees. Exact hosts win over
    /// wildcards, as in Istio's host lookup.
    fn lookup(&self, host: &str, ns: &str) -> Option<&Entry<'a>> {
        let visible = || self.entries.iter().filter(|e| e.visibility.includes(ns));
        visible()
            .find(|e| e.host == host)
            .or_else(|| visible().find(|e| host_covers(&e.host, host)))
    }
}

/// The numbers under `key` of a port list.
fn ports(list: &Value, key: &str) -> Vec<u64> {
    list.as_array()
        .map(|a| a.iter().filter_map(|p| p[key].as_u64()).collect())
        .unwrap_or_default()
}

/// A destination of a VirtualService, where it is, and whether it carries traffic (a mirror
/// does not need a port to be picked: it copies the request to the same port).
struct Dest<'v> {
    field: String,
    value: &'v Value,
    routed: bool,
}

/// Every destination of a VirtualService: route destinations of http, tcp and tls rules,
/// and http mirrors.
pub(super) fn destinations_of(spec: &Value) -> Vec<(String, &Value, bool)> {
    let mut out = Vec::new();
    for section in ["http", "tcp", "tls"] {
        for (i, rule) in spec[section].as_array().into_iter().flatten().enumerate() {
            for (j, route) in rule["route"].as_array().into_iter().flatten().enumerate() {
                out.push((
                    format!("spec.{section}[{i}].route[{j}].destination"),
                    &route["destination"],
                    true,
                ));
            }
            if section == "http" {
                out.push((format!("spec.http[{i}].mirror"), &rule["mirror"], false));
                for (j, m) in rule["mirrors"].as_array().into_iter().flatten().enumerate() {
                    out.push((
                        format!("spec.http[{i}].mirrors[{j}].destination"),
                        &m["destination"],
                        false,
                    ));
                }
            }
        }
    }
    out
}

/// Host, subset and port of every destination of `vs`.
fn check_destinations(
    docs: &[Document],
    registry: &Registry,
    vs: &Document,
    out: &mut Vec<Finding>,
) {
    // The namespaces the VirtualService is exported to must all be able to reach its
    // destinations. `*` cannot be enumerated, so it stands for the VirtualService's own.
    let mut namespaces: Vec<String> = strings(&vs.spec()["exportTo"])
        .into_iter()
        .map(|e| match e {
            "." | "*" => vs.namespace.clone(),
            other => other.to_owned(),
        })
        .collect();
    if namespaces.is_empty() {
        namespaces.push(vs.namespace.clone());
    }
    // With no Service or ServiceEntry in the input at all there is no registry to check
    // against (routing analysed in isolation); reporting every host would be pure noise.
    let have_registry = !registry.entries.is_empty();
    let dests = destinations_of(vs.spec())
        .into_iter()
        .map(|(field, value, routed)| Dest {
            field,
            value,
            routed,
        });
    for dest in dests {
        // A missing or empty destination (`- {}`) is a validation error, not ours.
        let Some(host) = dest.value["host"].as_str() else {
            continue;
        };
        let host = fqdn(host, &vs.namespace);
        if have_registry {
            check_host(registry, vs, &dest, &host, &namespaces, out);
        }
        if let Some(subset) = dest.value["subset"].as_str() {
            check_subset(docs, vs, &dest, &host, subset, out);
        }
    }
}

/// The host exists for every namespace in `namespaces`, and the port is right.
fn check_host(
    registry: &Registry,
    vs: &Document,
    dest: &Dest,
    host: &str,
    namespaces: &[String],
    out: &mut Vec<Finding>,
) {
    let mut found = None;
    for ns in namespaces {
        match registry.lookup(host, ns) {
            Some(entry) => found = found.or(Some(entry)),
            None => {
                out.push(Finding::new(
                    vs,
                    Severity::Error,
                    "ReferencedResourceNotFound",
                    format!("{}.host", dest.field),
                    format!(
                        "host {host} is not a Service or ServiceEntry visible to namespace {ns}"
                    ),
                ));
                return;
            }
        }
    }
    let Some(entry) = found else { return };
    if !dest.routed {
        return;
    }
    match dest.value["port"]["number"].as_u64() {
        Some(port) if !entry.ports.is_empty() && !entry.ports.contains(&port) => {
            out.push(Finding::new(
                vs,
                Severity::Error,
                "ReferencedResourceNotFound",
                format!("{}.port.number", dest.field),
                format!(
                    "port {port} is not a port of {} {}/{} (ports: {:?})",
                    entry.doc.kind, entry.doc.namespace, entry.doc.name, entry.ports
                ),
            ));
        }
        None if entry.ports.len() > 1 => out.push(Finding::new(
            vs,
            Severity::Error,
            "VirtualServiceDestinationPortSelectorRequired",
            format!("{}.port", dest.field),
            format!(
                "{} {}/{} has several ports ({:?}); the destination must pick one",
                entry.doc.kind, entry.doc.namespace, entry.doc.name, entry.ports
            ),
        )),
        _ => {}
    }
}

/// The subset is defined by a DestinationRule for the host. Only checked when some
/// DestinationRule names the host: without any, subsets may come from elsewhere (another
/// file not given), and the host check already covers typos in the host itself.
fn check_subset(
    docs: &[Document],
    vs: &Document,
    dest: &Dest,
    host: &str,
    subset: &str,
    out: &mut Vec<Finding>,
) {
    let rules: Vec<&Document> = of_kind(docs, "DestinationRule")
        .filter(|dr| {
            dr.spec()["host"]
                .as_str()
                .is_some_and(|h| fqdn(h, &dr.namespace) == host)
        })
        .collect();
    if rules.is_empty() {
        return;
    }
    let defined = rules.iter().any(|dr| {
        dr.spec()["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["name"].as_str() == Some(subset))
    });
    if !defined {
        out.push(Finding::new(
            vs,
            Severity::Error,
            "ReferencedResourceNotFound",
            format!("{}.subset", dest.field),
            format!("subset {subset} of host {host} is not defined by any DestinationRule"),
        ));
    }
}

/// Every subset of a DestinationRule whose host is a Service in the input selects at least
/// one of that Service's workloads. Hosts that are not Services here (external, or defined
/// elsewhere) have no known workloads, so nothing is said about them.
fn check_subsets_select_pods(docs: &[Document], dr: &Document, out: &mut Vec<Finding>) {
    let Some(host) = dr.spec()["host"].as_str() else {
        return;
    };
    let host = fqdn(host, &dr.namespace);
    let Some(svc) = of_kind(docs, "Service")
        .find(|s| format!("{}.{}.{CLUSTER_SUFFIX}", s.name, s.namespace) == host)
    else {
        return;
    };
    // A Service without a selector has hand-managed endpoints, not pods we could see.
    let selector = labels(&svc.spec()["selector"]);
    if selector.is_empty() {
        return;
    }
    let all = workloads(docs);
    let pods: Vec<&Vec<(&str, &str)>> = all
        .iter()
        .filter(|(ns, l)| *ns == svc.namespace && selects(&selector, l))
        .map(|(_, l)| l)
        .collect();
    for (i, subset) in dr.spec()["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let wanted = labels(&subset["labels"]);
        if !pods.iter().any(|l| selects(&wanted, l)) {
            out.push(Finding::new(
                dr,
                Severity::Warning,
                "DestinationRuleSubsetNotSelectPods",
                format!("spec.subsets[{i}]"),
                format!(
                    "subset {} selects no workload of Service {}/{}",
                    subset["name"].as_str().unwrap_or("<unnamed>"),
                    svc.namespace,
                    svc.name
                ),
            ));
        }
    }
}

/// TLS origination (SIMPLE or MUTUAL) that does not verify the server: no caCertificates,
/// no credentialName to take them from, and verification not explicitly skipped.
fn check_tls(dr: &Document, out: &mut Vec<Finding>) {
    let policy = &dr.spec()["trafficPolicy"];
    let mut places = vec![(
        "spec.trafficPolicy.tls".to_owned(),
        &policy["tls"],
        "NoServerCertificateVerificationDestinationLevel",
    )];
    for (i, port) in policy["portLevelSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        places.push((
            format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
            &port["tls"],
            "NoServerCertificateVerificationPortLevel",
        ));
    }
    for (field, tls, code) in places {
        let mode = tls["mode"].as_str().unwrap_or_default();
        let verifies = tls["caCertificates"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            || tls["credentialName"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            || tls["insecureSkipVerify"].as_bool() == Some(true);
        if matches!(mode, "SIMPLE" | "MUTUAL") && !verifies {
            out.push(Finding::new(
                dr,
                Severity::Error,
                code,
                field,
                format!(
                    "TLS mode {mode} without caCertificates: the server's certificate is not \
                     verified"
                ),
            ));
        }
    }
}

/// Service ports are named `<protocol>[-<suffix>]` or carry an appProtocol, so that the
/// protocol is known. Istio-managed gateway and waypoint Services are generated with their
/// own names and are left alone.
fn check_port_names(svc: &Document, out: &mut Vec<Finding>) {
    if !svc.value["metadata"]["labels"]["gateway.istio.io/managed"].is_null()
        || svc.namespace == "kube-system"
    {
        return;
    }
    for (i, port) in svc.spec()["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if port["appProtocol"].as_str().is_some() {
            continue;
        }
        let number = &port["port"];
        let problem = match port["name"].as_str() {
            None | Some("") => format!("port {number} has no name and no appProtocol"),
            Some(name) if follows_convention(name) => continue,
            Some(name) => format!(
                "port {number} name {name:?} does not follow <protocol>[-<suffix>] and there \
                 is no appProtocol"
            ),
        };
        out.push(Finding::new(
            svc,
            Severity::Info,
            "PortNameIsNotUnderNamingConvention",
            format!("spec.ports[{i}]"),
            problem,
        ));
    }
}

/// Whether a port name is `<protocol>` or `<protocol>-<suffix>` (case-insensitive).
fn follows_convention(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    PORT_PROTOCOLS.iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}
