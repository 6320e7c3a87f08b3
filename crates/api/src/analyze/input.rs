//! Lenient reading of YAML files into untyped [`Document`]s: every document that parses as
//! YAML and has a `kind` is kept, whether or not it would pass strict validation.

use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::resources::DEFAULT_NAMESPACE;

/// One YAML document of the input, as JSON, with what identifies it.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The file it was read from.
    pub file: PathBuf,
    /// Line of the document's first content line, 1-based.
    pub line: usize,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, [`DEFAULT_NAMESPACE`] when absent.
    pub namespace: String,
    /// `metadata.name` (empty when absent).
    pub name: String,
    /// The whole document.
    pub value: Value,
}

impl Document {
    /// `spec`, or null.
    pub fn spec(&self) -> &Value {
        &self.value["spec"]
    }
}

/// Splits `text` into its YAML documents and reads each one leniently. Documents that are
/// not YAML, not mappings or have no `kind` are skipped: strict problems are `trellis
/// validate`'s job, and one bad document must not hide the others from analysis.
pub fn documents(file: &Path, text: &str) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    // Split on `---` lines ourselves rather than letting the YAML loader do it: each chunk
    // then parses on its own (a syntax error stays in its document) and keeps its line.
    let mut chunk = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            push(file, &chunk, start, &mut out);
            chunk.clear();
            start = index + 2;
        } else {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    push(file, &chunk, start, &mut out);
    out
}

/// Parses one document chunk starting at line `start` and adds it to `out` if usable.
fn push(file: &Path, chunk: &str, start: usize, out: &mut Vec<Document>) {
    let Ok(parsed) = YamlLoader::load_from_str(chunk) else {
        return;
    };
    let Some(yaml) = parsed.into_iter().next() else {
        return;
    };
    let value = to_json(&yaml);
    let Some(kind) = value["kind"].as_str().map(str::to_owned) else {
        return;
    };
    // Point at the first line with content, not at a leading comment.
    let skipped = chunk
        .lines()
        .take_while(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        })
        .count();
    let meta = &value["metadata"];
    out.push(Document {
        file: file.to_path_buf(),
        line: start + skipped,
        kind,
        namespace: meta["namespace"]
            .as_str()
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_owned(),
        name: meta["name"].as_str().unwrap_or_default().to_owned(),
        value,
    });
}

/// yaml-rust2's tree as JSON. Map keys that are not strings are written as their scalar
/// text; aliases and bad values become null.
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(text.clone()), Value::Number),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => continue,
                };
                map.insert(key, to_json(v));
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// Everything that runs pods, as (namespace, labels): WorkloadEntries, Pods, and the pod
/// templates of Deployments, StatefulSets and DaemonSets.
pub(super) fn workloads(docs: &[Document]) -> Vec<(&str, Vec<(&str, &str)>)> {
    docs.iter()
        .filter_map(|d| {
            let labels = match d.kind.as_str() {
                "WorkloadEntry" => &d.value["spec"]["labels"],
                "Pod" => &d.value["metadata"]["labels"],
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                    &d.value["spec"]["template"]["metadata"]["labels"]
                }
                _ => return None,
            };
            Some((d.namespace.as_str(), super::labels(labels)))
        })
        .collect()
}

/// Whether `labels` has every pair of `selector` (an empty selector matches everything).
pub(super) fn selects(selector: &[(&str, &str)], labels: &[(&str, &str)]) -> bool {
    selector.iter().all(|pair| labels.contains(pair))
}
