//! Cross-resource analysis (`trellis analyze`): checks that need several resources at once,
//! which per-resource validation in [`crate::load`] cannot do. Unknown destination hosts,
//! missing subsets and ports, subsets and policies that select no workload, shadowed route
//! matches, conflicting mesh-bound VirtualServices, Service port names and conflicting
//! PeerAuthentications, with Istio-like codes.
//!
//! Analysis reads documents leniently, as untyped JSON: a resource that strict validation
//! rejects (a VirtualService with a `- {}` destination) is still worth analysing, and the
//! Kubernetes kinds that only describe workloads (`Pod`, `Deployment`, `Namespace`) are
//! skipped by the loader but are exactly what subset and selector checks need.

mod input;
mod policy;
mod routes;
mod services;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

pub use input::{documents, Document};

/// How bad a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config does not do what it says: traffic fails or a rule never applies.
    Error,
    /// Probably a mistake.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        })
    }
}

/// One problem found by looking at resources together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error, warning or info.
    pub severity: Severity,
    /// Istio-like code (`ReferencedResourceNotFound`).
    pub code: &'static str,
    /// The kind of the resource the finding is about.
    pub kind: String,
    /// Its namespace (defaulted).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Line where its document starts, 1-based.
    pub line: usize,
    /// The field, Istio-style (`spec.http[0].route[1].destination.host`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// `SEVERITY [Code] Kind ns/name file:line field: message`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {} {}/{} {}:{} {}: {}",
            self.severity,
            self.code,
            self.kind,
            self.namespace,
            self.name,
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

impl Finding {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// A finding about `doc`.
    fn new(
        doc: &Document,
        severity: Severity,
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            code,
            kind: doc.kind.clone(),
            namespace: doc.namespace.clone(),
            name: doc.name.clone(),
            file: doc.file.clone(),
            line: doc.line,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Runs every check over all `docs` together and returns the findings, sorted by file and
/// line (then code, for a stable order).
pub fn analyze(docs: &[Document]) -> Vec<Finding> {
    let mut out = Vec::new();
    routes::check(docs, &mut out);
    services::check(docs, &mut out);
    policy::check(docs, &mut out);
    out.sort_by(|a, b| {
        (&a.file, a.line, a.code, &a.field).cmp(&(&b.file, b.line, b.code, &b.field))
    });
    out.dedup();
    out
}

/// The documents of one kind.
fn of_kind<'a>(docs: &'a [Document], kind: &'a str) -> impl Iterator<Item = &'a Document> + 'a {
    docs.iter().filter(move |d| d.kind == kind)
}

/// The strings of a JSON array (non-strings are ignored: this is lenient reading).
fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A JSON object of string values as pairs (label selectors, labels).
fn labels(value: &Value) -> Vec<(&str, &str)> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}
