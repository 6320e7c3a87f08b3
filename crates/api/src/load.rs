//! Loading the config directory: multi-document Kubernetes-style YAML (users' Istio YAML,
//! unchanged) into typed [`Resource`]s, with every problem reported as a [`Diagnostic`] that
//! carries the file, line, column, resource and Istio-style field path.
//!
//! Reading a directory ([`read_config_dir`]) is bounded: regular files only, each directory
//! once, limited depth, sizes and counts ([`Limits`]), strict UTF-8; see the `dir` module.
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
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use dir::{
    content_hash, fingerprint, read_config_dir, read_config_file, ConfigFiles, Fingerprint, Limits,
};

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
/// hidden files and directories, within [`Limits::DEFAULT`]: [`read_config_dir`], then
/// [`load_files`].
///
/// # Errors
///
/// [`LoadError::Io`] when a directory cannot be listed; [`LoadError::Invalid`], with all
/// diagnostics, when a file breaks a reading rule or limit, or when any diagnostic is an
/// error (syntax, type, unknown field or kind, semantic rule, or the same kind/namespace/name
/// defined twice).
pub fn load_dir(dir: &Path) -> Result<ConfigSet, LoadError> {
    let files = read_config_dir(dir, &Limits::DEFAULT)?;
    load_files(dir, &files, &Limits::DEFAULT)
}

/// Parses and validates a set of files as one config. File names are relative paths; the
/// diagnostics name them under `label` (the directory they were read from, or nothing).
/// The files must respect `limits` (count and sizes) whoever sent them, and their names must
/// be plain relative paths.
///
/// # Errors
///
/// [`LoadError::Invalid`], with all diagnostics, when any of them is an error.
pub fn load_files(
    label: &Path,
    files: &ConfigFiles,
    limits: &Limits,
) -> Result<ConfigSet, LoadError> {
    let mut resources = Vec::new();
    let mut diagnostics = Vec::new();
    if files.len() > limits.max_files {
        diagnostics.push(dir::file_error(
            label.to_path_buf(),
            format!("more than {} config files", limits.max_files),
        ));
    }
    let total: u64 = files.values().map(|t| t.len() as u64).sum();
    if total > limits.max_total_bytes {
        diagnostics.push(dir::file_error(
            label.to_path_buf(),
            format!(
                "the config files together are larger than {} bytes",
                limits.max_total_bytes
            ),
        ));
    }
    if !diagnostics.is_empty() {
        // Nothing is parsed: the point of the limits is that none of that work is done.
        return Err(LoadError::Invalid(diagnostics));
    }
    for (relative, text) in files {
        let path = label.join(relative);
        if !is_plain_relative(relative) {
            diagnostics.push(dir::file_error(
                path,
                "file names must be plain relative paths".into(),
            ));
            continue;
        }
        if text.len() as u64 > limits.max_file_bytes {
            diagnostics.push(dir::file_error(
                path,
                format!("file is larger than {} bytes", limits.max_file_bytes),
            ));
            continue;
        }
        let (found, diags) = parse_str(&path, text);
        resources.extend(found);
        diagnostics.extend(diags);
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
        hash: content_hash(files),
    })
}

/// Whether `name` is `a/b.yaml`-like: `/`-separated, no empty, `.` or `..` component, not
/// absolute. Names come from clients too; one that could climb out of a directory, or name
/// one file two ways, is refused.
fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
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
    fn only_plain_relative_names() {
        assert!(is_plain_relative("a.yaml"));
        assert!(is_plain_relative("ns/web/a.yaml"));
        for bad in [
            "",
            "/etc/a.yaml",
            "../a.yaml",
            "a//b.yaml",
            "./a.yaml",
            "a/../b.yaml",
        ] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
