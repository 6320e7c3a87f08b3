//! Loading the config directory: multi-document Kubernetes-style YAML (users' Istio YAML,
//! unchanged) into typed [`Resource`]s, with every problem reported as a [`Diagnostic`] that
//! carries the file, line, column, resource and Istio-style field path.
//!
//! Loading is all-or-nothing: [`load_dir`] returns a [`ConfigSet`] only when no diagnostic is
//! an error, so a bad edit never half-applies. Warnings (fields or kinds the mesh does not act
//! on yet) never block a load, but are always reported; nothing is silently ignored.

mod dir;
mod document;
mod kinds;
mod yaml;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::resources::gateway::{GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute};
use crate::resources::{
    DestinationRule, Resource, ResourceKey, Service, VirtualService, WorkloadEntry,
};

/// How bad a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config is rejected.
    Error,
    /// The config loads, but something in it is not acted on.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found in the config, positioned in its source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file, as found under the loaded directory (or as given to [`parse_str`]).
    pub file: PathBuf,
    /// Line, 1-based.
    pub line: usize,
    /// Column in characters, 1-based.
    pub column: usize,
    /// The resource's kind, when the document got that far.
    pub kind: Option<String>,
    /// The resource's namespace (defaulted), when its name is known.
    pub namespace: Option<String>,
    /// The resource's name, when known.
    pub name: Option<String>,
    /// The field, Istio-style: `spec.http[0].route[1].weight`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `file:line:col: [warning: ]Kind ns/name: field: message`, leaving out what is unknown.
/// Errors carry no prefix (the form compilers and `kubectl` users read); warnings say so. The
/// field is left out when the message already names it.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        let resource = match (&self.kind, &self.namespace, &self.name) {
            (Some(kind), Some(ns), Some(name)) => Some(format!("{kind} {ns}/{name}")),
            (Some(kind), None, Some(name)) => Some(format!("{kind} {name}")),
            (Some(kind), _, None) => Some(kind.clone()),
            (None, Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, None, Some(name)) => Some(name.clone()),
            (None, _, None) => None,
        };
        if let Some(resource) = resource {
            write!(f, "{resource}: ")?;
        }
        if let Some(field) = &self.field {
            if !self.message.contains(field.as_str()) {
                write!(f, "{field}: ")?;
            }
        }
        f.write_str(&self.message)
    }
}

/// A value and the document it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Located<T> {
    /// The file.
    pub file: PathBuf,
    /// Line where the document's content starts (its first key), 1-based.
    pub line: usize,
    /// The value.
    pub value: T,
}

/// Why [`load_dir`] returned no config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// At least one diagnostic is an error. Holds all diagnostics, errors and warnings,
    /// sorted by file and position.
    #[error("{}", describe_invalid(.0))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    /// The diagnostics of an [`LoadError::Invalid`]; empty for IO errors.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(diagnostics) => diagnostics,
            LoadError::Io { .. } => &[],
        }
    }
}

/// The Display of [`LoadError::Invalid`]: a count, then each error on its own line.
fn describe_invalid(diagnostics: &[Diagnostic]) -> String {
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("\n  {d}"))
        .collect();
    format!(
        "invalid configuration ({} error{}):{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        errors.concat()
    )
}

/// A loaded, valid config.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigSet {
    /// Every resource, in file order then document order.
    pub resources: Vec<Located<Resource>>,
    /// What was accepted but is not acted on.
    pub warnings: Vec<Diagnostic>,
    /// SHA-256 (hex) over the sorted (relative path, content) pairs of the files read: equal
    /// hashes mean the same config.
    pub hash: String,
}

impl ConfigSet {
    /// The Services.
    pub fn services(&self) -> impl Iterator<Item = &Service> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::Service(s) => Some(s),
            _ => None,
        })
    }

    /// The WorkloadEntries.
    pub fn workload_entries(&self) -> impl Iterator<Item = &WorkloadEntry> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::WorkloadEntry(w) => Some(w),
            _ => None,
        })
    }

    /// The DestinationRules.
    pub fn destination_rules(&self) -> impl Iterator<Item = &DestinationRule> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::DestinationRule(d) => Some(d),
            _ => None,
        })
    }

    /// The VirtualServices.
    pub fn virtual_services(&self) -> impl Iterator<Item = &VirtualService> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::VirtualService(v) => Some(v),
            _ => None,
        })
    }

    /// The Gateway API HTTPRoutes, with schema defaults applied.
    pub fn http_routes(&self) -> impl Iterator<Item = &HttpRoute> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::HttpRoute(h) => Some(h),
            _ => None,
        })
    }

    /// The Gateway API GRPCRoutes, with schema defaults applied.
    pub fn grpc_routes(&self) -> impl Iterator<Item = &GrpcRoute> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::GrpcRoute(g) => Some(g),
            _ => None,
        })
    }

    /// The Gateway API TCPRoutes, with schema defaults applied.
    pub fn tcp_routes(&self) -> impl Iterator<Item = &TcpRoute> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::TcpRoute(t) => Some(t),
            _ => None,
        })
    }

    /// The Gateway API ReferenceGrants.
    pub fn reference_grants(&self) -> impl Iterator<Item = &ReferenceGrant> + '_ {
        self.resources.iter().filter_map(|r| match &r.value {
            Resource::ReferenceGrant(g) => Some(g),
            _ => None,
        })
    }
}

/// Parses every document of one file's text. Returns the resources that are free of errors
/// (documents with errors, and skipped kinds, yield none) and all diagnostics, sorted by
/// position. `file` is only used to label the results.
pub fn parse_str(file: &Path, text: &str) -> (Vec<Located<Resource>>, Vec<Diagnostic>) {
    // A byte-order mark is invisible to the user and means nothing to YAML here.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed = yaml::parse(text);
    let mut resources = Vec::new();
    let mut diagnostics = Vec::new();
    for document in parsed.documents {
        if let Some(resource) = document::process(file, document, &mut diagnostics) {
            resources.push(resource);
        }
    }
    if let Some(issue) = parsed.syntax_error {
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: issue.mark.line,
            column: issue.mark.column,
            kind: None,
            namespace: None,
            name: None,
            field: None,
            message: issue.error.to_string(),
        });
    }
    diagnostics.sort_by_key(|d| (d.line, d.column));
    (resources, diagnostics)
}

/// Loads every `*.yaml`/`*.yml` file under `dir`, recursively, in sorted path order, skipping
/// hidden files and directories.
///
/// # Errors
///
/// [`LoadError::Io`] when something cannot be read; [`LoadError::Invalid`], with all
/// diagnostics, when any of them is an error (syntax, type, unknown field or kind, semantic
/// rule, or the same kind/namespace/name defined twice).
pub fn load_dir(dir: &Path) -> Result<ConfigSet, LoadError> {
    let files = dir::config_files(dir)?;
    let mut hash = dir::ContentHash::new();
    let mut resources = Vec::new();
    let mut diagnostics = Vec::new();
    for relative in &files {
        let path = dir.join(relative);
        let bytes = fs::read(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        hash.add(relative, &bytes);
        match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let (found, diags) = parse_str(&path, text);
                resources.extend(found);
                diagnostics.extend(diags);
            }
            Err(error) => diagnostics.push(not_utf8(&path, &bytes, error.valid_up_to())),
        }
    }
    diagnostics.extend(duplicates(&resources));
    // Stable: within a file, diagnostics keep the order parse_str gave them.
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(LoadError::Invalid(diagnostics));
    }
    Ok(ConfigSet {
        resources,
        warnings: diagnostics,
        hash: hash.finish(),
    })
}

/// An error for a file that is not UTF-8, at the first bad byte.
fn not_utf8(path: &Path, bytes: &[u8], valid_up_to: usize) -> Diagnostic {
    let valid = String::from_utf8_lossy(&bytes[..valid_up_to]);
    let line = valid.matches('\n').count() + 1;
    let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Diagnostic {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line,
        column,
        kind: None,
        namespace: None,
        name: None,
        field: None,
        message: "file is not valid UTF-8".to_owned(),
    }
}

/// An error for every resource whose kind/namespace/name was already defined, naming the
/// first definition.
fn duplicates(resources: &[Located<Resource>]) -> Vec<Diagnostic> {
    let mut first: HashMap<ResourceKey, &Located<Resource>> = HashMap::new();
    let mut out = Vec::new();
    for located in resources {
        let key = located.value.key();
        if let Some(earlier) = first.get(&key) {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: located.file.clone(),
                line: located.line,
                column: 1,
                kind: Some(key.kind.to_owned()),
                namespace: Some(key.namespace.clone()),
                name: Some(key.name.clone()),
                field: None,
                message: format!(
                    "duplicate {key}: already defined at {}:{}",
                    earlier.file.display(),
                    earlier.line
                ),
            });
        } else {
            first.insert(key, located);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(severity: Severity) -> Diagnostic {
        Diagnostic {
            severity,
            file: PathBuf::from("config/reviews.yaml"),
            line: 12,
            column: 9,
            kind: Some("VirtualService".into()),
            namespace: Some("default".into()),
            name: Some("reviews".into()),
            field: Some("spec.http[0].route[1].weight".into()),
            message: "invalid type: string \"ten\", expected i32".into(),
        }
    }

    #[test]
    fn display_has_every_known_part() {
        assert_eq!(
            diag(Severity::Error).to_string(),
            "config/reviews.yaml:12:9: VirtualService default/reviews: \
             spec.http[0].route[1].weight: invalid type: string \"ten\", expected i32"
        );
        let mut d = diag(Severity::Warning);
        d.kind = None;
        d.namespace = None;
        d.name = None;
        d.field = None;
        d.message = "YAML syntax error".into();
        assert_eq!(
            d.to_string(),
            "config/reviews.yaml:12:9: warning: YAML syntax error"
        );
    }

    #[test]
    fn display_does_not_repeat_a_field_the_message_names() {
        let mut d = diag(Severity::Warning);
        d.field = Some("spec.http[0].retries".into());
        d.message = "field spec.http[0].retries is not implemented yet and is ignored".into();
        assert_eq!(
            d.to_string(),
            "config/reviews.yaml:12:9: warning: VirtualService default/reviews: \
             field spec.http[0].retries is not implemented yet and is ignored"
        );
    }

    #[test]
    fn serializes_severity_lowercase() {
        let json = serde_json::to_value(diag(Severity::Error)).unwrap();
        assert_eq!(json["severity"], "error");
        assert_eq!(json["field"], "spec.http[0].route[1].weight");
    }

    #[test]
    fn not_utf8_points_at_the_bad_byte() {
        let bytes = b"a: b\ncd: \xff\n";
        // 9 = the length of the valid prefix "a: b\ncd: ".
        let d = not_utf8(Path::new("x.yaml"), bytes, 9);
        assert_eq!((d.line, d.column), (2, 5));
    }
}
