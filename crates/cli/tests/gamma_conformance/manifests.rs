//! The base environment of the conformance tests, `mesh/manifests.yaml`, turned into what
//! `trellis up --netns` runs: the file itself is copied into the config directory unchanged
//! (the loader reads its Services and skips Namespaces and Deployments), and every replica of
//! every Deployment becomes a WorkloadEntry with the pod template's labels, in the
//! Deployment's namespace, whose demo app is an echo server.
//!
//! * **Names.** A pod is called `<deployment>-<hash>-<suffix>`, and the tests identify the
//!   serving backend by that shape (the prefix, or the name less its last two parts). Entries
//!   are named `<deployment>-<k>-<r>`: `k` the namespace's position in the file (so the two
//!   `echo-v1` of different namespaces get different names, as two pods would), `r` the
//!   replica.
//! * **Ports.** Container ports carry no names in the file, and a WorkloadEntry names its
//!   ports; each takes the name of the first Service port that targets it (8080 is `http`,
//!   7070 `grpc`), which is also how `trellis up` picks the echo app's HTTP and gRPC ports.
//! * **Addresses.** `198.18.50.2` upwards in file order, inside the subnet `up` is given, so
//!   every workload sits where its entry says and the tests know each one's address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

/// One replica of a Deployment, as a WorkloadEntry.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The entry's (and the echo app's reported host) name.
    pub name: String,
    pub namespace: String,
    /// The Deployment it is a replica of.
    pub deployment: String,
    pub address: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    /// Port name to container port.
    pub ports: BTreeMap<String, u16>,
    pub service_account: String,
}

/// `doc[key]` as text, if it is a string.
fn text<'a>(doc: &'a Yaml, key: &str) -> Option<&'a str> {
    doc[key].as_str()
}

/// A YAML mapping of strings, as labels are.
fn string_map(yaml: &Yaml) -> BTreeMap<String, String> {
    yaml.as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
        .collect()
}

/// The WorkloadEntries standing for the Deployments of `manifests` (the text of
/// `manifests.yaml`), addressed from `subnet.2` up.
pub fn workloads(manifests: &str, subnet: [u8; 3]) -> Result<Vec<Workload>> {
    let docs = YamlLoader::load_from_str(manifests).context("manifests.yaml is not YAML")?;
    // Container port -> the name of the first Service port aimed at it.
    let mut port_names: BTreeMap<i64, String> = BTreeMap::new();
    let mut namespaces: Vec<String> = Vec::new();
    for doc in &docs {
        match text(doc, "kind") {
            Some("Namespace") => {
                let name =
                    text(&doc["metadata"], "name").ok_or_else(|| anyhow!("unnamed Namespace"))?;
                namespaces.push(name.to_owned());
            }
            Some("Service") => {
                for port in doc["spec"]["ports"].as_vec().into_iter().flatten() {
                    let (Some(name), Some(number)) = (text(port, "name"), port["port"].as_i64())
                    else {
                        continue;
                    };
                    let target = port["targetPort"].as_i64().unwrap_or(number);
                    port_names.entry(target).or_insert_with(|| name.to_owned());
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut next = 2u8;
    for doc in &docs {
        if text(doc, "kind") != Some("Deployment") {
            continue;
        }
        let meta = &doc["metadata"];
        let deployment = text(meta, "name").ok_or_else(|| anyhow!("unnamed Deployment"))?;
        let namespace = text(meta, "namespace").unwrap_or("default");
        let k = namespaces
            .iter()
            .position(|n| n == namespace)
            .ok_or_else(|| {
                anyhow!("Deployment {deployment}: namespace {namespace} is not in the file")
            })?;
        let template = &doc["spec"]["template"];
        let labels = string_map(&template["metadata"]["labels"]);
        if labels.is_empty() {
            bail!("Deployment {deployment}: its pods have no labels");
        }
        let pod = &template["spec"];
        let service_account = text(pod, "serviceAccountName").unwrap_or("default");
        let mut ports = BTreeMap::new();
        for container in pod["containers"].as_vec().into_iter().flatten() {
            for port in container["ports"].as_vec().into_iter().flatten() {
                let number = port["containerPort"]
                    .as_i64()
                    .ok_or_else(|| anyhow!("Deployment {deployment}: a port without a number"))?;
                let number = u16::try_from(number)
                    .with_context(|| format!("Deployment {deployment}: port {number}"))?;
                let name = match port_names.get(&i64::from(number)) {
                    Some(n) if !ports.contains_key(n) => n.clone(),
                    _ => format!("port-{number}"),
                };
                ports.insert(name, number);
            }
        }
        let replicas = doc["spec"]["replicas"].as_i64().unwrap_or(1);
        for r in 0..replicas {
            if next > 250 {
                bail!("more replicas than addresses");
            }
            out.push(Workload {
                name: format!("{deployment}-{k}-{r}"),
                namespace: namespace.to_owned(),
                deployment: deployment.to_owned(),
                address: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], next),
                labels: labels.clone(),
                ports: ports.clone(),
                service_account: service_account.to_owned(),
            });
            next += 1;
        }
    }
    Ok(out)
}

/// The WorkloadEntries as one YAML file, each annotated to run the demo app as an echo
/// server. Strings are written as JSON strings, which YAML reads as they are.
pub fn workload_entries(workloads: &[Workload]) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::new();
    for w in workloads {
        out.push_str("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n");
        out.push_str(&format!(
            "metadata:\n  name: {}\n  namespace: {}\n  annotations:\n    \
             demo.trellis.dev/echo: \"true\"\n",
            q(&w.name),
            q(&w.namespace)
        ));
        out.push_str(&format!(
            "spec:\n  address: {}\n  serviceAccount: {}\n  labels:\n",
            q(&w.address.to_string()),
            q(&w.service_account)
        ));
        for (k, v) in &w.labels {
            out.push_str(&format!("    {}: {}\n", q(k), q(v)));
        }
        out.push_str("  ports:\n");
        for (name, port) in &w.ports {
            out.push_str(&format!("    {}: {port}\n", q(name)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_become_entries_named_like_pods() {
        let manifests = "
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: b}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: a}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 7070}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-v1, namespace: b}
spec:
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - ports: [{containerPort: 8080}, {containerPort: 7070}, {containerPort: 9}]
";
        let ws = workloads(manifests, [198, 18, 50]).expect("parsed");
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].name, "echo-v1-1-0");
        assert_eq!(ws[0].address, Ipv4Addr::new(198, 18, 50, 2));
        let ports: Vec<(&str, u16)> = ws[0].ports.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(ports, [("grpc", 7070), ("http", 8080), ("port-9", 9)]);
        // The entries load as the control plane would load them, labels and ports intact.
        let yaml = workload_entries(&ws);
        let (found, diagnostics) =
            trellis_api::load::parse_str(std::path::Path::new("workloads.yaml"), &yaml);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}\n{yaml}");
        let [entry] = found.as_slice() else {
            panic!("{found:#?}");
        };
        let trellis_api::resources::Resource::WorkloadEntry(we) = &entry.value else {
            panic!("{found:#?}");
        };
        assert_eq!(we.meta.namespace(), "b");
        assert_eq!(we.spec.address, "198.18.50.2");
        assert_eq!(we.spec.labels.get("app").map(String::as_str), Some("echo"));
        assert_eq!(we.spec.ports.get("http"), Some(&8080));
    }
}
