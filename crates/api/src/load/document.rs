//! One YAML document to one typed resource, or to diagnostics saying why not.
//!
//! The steps: read `apiVersion` and `kind`; decide from them whether to parse, skip with a
//! warning or reject; drop the Kubernetes bookkeeping fields the mesh does not model (with a
//! warning each); deserialize strictly, turning a serde error into a field path and the
//! position of that field; apply the default namespace and the kind's schema defaults; run the
//! semantic checks; warn about every field that is accepted but not implemented yet, and
//! about the resource's notices (kinds not acted on yet, references outside the mesh).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::kinds::{classify, Class, Supported};
use super::yaml::{Anchor, Document, Node, NodeValue};
use super::{Diagnostic, Located, Severity};
use crate::resources::{FieldPath, PathSegment, Resource, DEFAULT_NAMESPACE};

/// Kubernetes metadata fields that are written by the API server or by controllers, or that
/// the mesh has no use for. Exported cluster YAML is full of them, so they are dropped with a
/// warning instead of failing the strict metadata parse (which still rejects typos).
const IGNORED_METADATA: &[&str] = &[
    "generateName",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Top-level fields besides apiVersion/kind/metadata/spec that are dropped with a warning.
const IGNORED_TOP_LEVEL: &[&str] = &["status"];

/// Problems with the document as a whole, before any kind-specific parsing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DocumentError {
    /// The document is a scalar or a list.
    #[error("a resource must be a mapping, found a {found}")]
    NotAMapping {
        /// What was found.
        found: &'static str,
    },
    /// `apiVersion` or `kind` is absent.
    #[error("missing required field {field}")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// `apiVersion` or `kind` is not a string.
    #[error("{field} must be a string, found a {found}")]
    NotAString {
        /// The field.
        field: &'static str,
        /// What was found.
        found: &'static str,
    },
}

/// What a diagnostic about this document says about the resource: filled in as far as the
/// document allows even when it is broken, so messages can name it.
struct Context<'a> {
    file: &'a Path,
    root: &'a Node,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl<'a> Context<'a> {
    /// Reads kind, namespace and name from the tree, tolerating any shape.
    fn new(file: &'a Path, root: &'a Node) -> Self {
        let string_at = |node: &Node, key: &str| match node.get(key).map(|e| &e.value.value) {
            Some(NodeValue::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let metadata = root.get("metadata").map(|e| &e.value);
        let name = metadata.and_then(|m| string_at(m, "name"));
        let namespace = name.as_ref().map(|_| {
            metadata
                .and_then(|m| string_at(m, "namespace"))
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
        });
        Context {
            file,
            root,
            kind: string_at(root, "kind"),
            namespace,
            name,
        }
    }

    /// A diagnostic at an explicit position.
    fn at(
        &self,
        severity: Severity,
        mark: super::yaml::Mark,
        field: Option<&FieldPath>,
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line: mark.line,
            column: mark.column,
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            field: field.filter(|f| !f.is_root()).map(ToString::to_string),
            message,
        }
    }

    /// A diagnostic about `field`, positioned where the field is written.
    fn field(
        &self,
        severity: Severity,
        field: &FieldPath,
        anchor: Anchor,
        message: String,
    ) -> Diagnostic {
        let mark = self.root.locate(field, anchor);
        self.at(severity, mark, Some(field), message)
    }
}

/// Turns one document into a resource, adding diagnostics to `out`. Returns `None` when the
/// document is skipped or has errors.
pub(crate) fn process(
    file: &Path,
    document: Document,
    out: &mut Vec<Diagnostic>,
) -> Option<Located<Resource>> {
    let root = &document.root;
    let ctx = Context::new(file, root);
    if !document.issues.is_empty() {
        for issue in &document.issues {
            out.push(ctx.at(Severity::Error, issue.mark, None, issue.error.to_string()));
        }
        return None;
    }
    if !matches!(root.value, NodeValue::Map(_)) {
        let error = DocumentError::NotAMapping {
            found: root.type_name(),
        };
        out.push(ctx.at(Severity::Error, root.mark, None, error.to_string()));
        return None;
    }

    let (Some(api_version), Some(kind)) = (
        header_field(&ctx, "apiVersion", out),
        header_field(&ctx, "kind", out),
    ) else {
        return None;
    };
    let kind_path = FieldPath::root().field("kind");
    let supported = match classify(&api_version, &kind) {
        Class::Supported(supported) => supported,
        Class::NotSupportedYet { group } => {
            let message = format!("kind {kind} ({group}) is not supported yet and is ignored");
            out.push(ctx.field(Severity::Warning, &kind_path, Anchor::Value, message));
            return None;
        }
        Class::Skipped { group } => {
            let group = if group.is_empty() { "core" } else { &group };
            let message = format!(
                "kind {kind} ({group}) is a Kubernetes kind the mesh does not use; skipped"
            );
            out.push(ctx.field(Severity::Warning, &kind_path, Anchor::Value, message));
            return None;
        }
        Class::Rejected(error) => {
            out.push(ctx.field(
                Severity::Error,
                &kind_path,
                Anchor::Value,
                error.to_string(),
            ));
            return None;
        }
    };

    let mut json = root.to_json();
    drop_ignored_fields(&ctx, &mut json, out);
    let parsed = match supported {
        Supported::Service => typed(json).map(Resource::Service),
        Supported::WorkloadEntry => typed(json).map(Resource::WorkloadEntry),
        Supported::DestinationRule => typed(json).map(Resource::DestinationRule),
        Supported::VirtualService => typed(json).map(Resource::VirtualService),
        Supported::ServiceEntry => typed(json).map(Resource::ServiceEntry),
        Supported::WorkloadGroup => typed(json).map(Resource::WorkloadGroup),
        Supported::PeerAuthentication => typed(json).map(Resource::PeerAuthentication),
        Supported::AuthorizationPolicy => typed(json).map(Resource::AuthorizationPolicy),
        Supported::RequestAuthentication => typed(json).map(Resource::RequestAuthentication),
        Supported::HttpRoute => typed(json).map(Resource::HttpRoute),
        Supported::GrpcRoute => typed(json).map(Resource::GrpcRoute),
        Supported::TcpRoute => typed(json).map(Resource::TcpRoute),
        Supported::ReferenceGrant => typed(json).map(Resource::ReferenceGrant),
    };
    let mut resource = match parsed {
        Ok(resource) => resource,
        Err(failure) => {
            out.push(ctx.field(
                Severity::Error,
                &failure.path,
                failure.anchor,
                failure.message,
            ));
            return None;
        }
    };
    resource
        .meta_mut()
        .namespace
        .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
    // Before validation: the kinds' rules are written against the defaulted values, as
    // Kubernetes evaluates CRD rules after admission defaulting.
    resource.apply_defaults();

    let violations = resource.validate();
    for violation in &violations {
        out.push(ctx.field(
            Severity::Error,
            &violation.path,
            Anchor::Value,
            violation.error.to_string(),
        ));
    }
    for path in resource.unimplemented_fields() {
        let message = format!("field {path} is not implemented yet and is ignored");
        out.push(ctx.field(Severity::Warning, &path, Anchor::Key, message));
    }
    for notice in resource.notices() {
        let message = notice.reason.to_string();
        out.push(ctx.field(Severity::Warning, &notice.path, Anchor::Key, message));
    }
    violations.is_empty().then(|| Located {
        file: file.to_path_buf(),
        line: root.mark.line,
        value: resource,
    })
}

/// Reads `apiVersion` or `kind`, reporting it missing or mistyped.
fn header_field(
    ctx: &Context<'_>,
    field: &'static str,
    out: &mut Vec<Diagnostic>,
) -> Option<String> {
    let path = FieldPath::root().field(field);
    let error = match ctx.root.get(field).map(|e| &e.value) {
        Some(Node {
            value: NodeValue::Str(s),
            ..
        }) => return Some(s.clone()),
        Some(node) => DocumentError::NotAString {
            field,
            found: node.type_name(),
        },
        None => DocumentError::MissingField { field },
    };
    out.push(ctx.field(Severity::Error, &path, Anchor::Value, error.to_string()));
    None
}

/// Removes `kind` (already read; the typed structs do not carry it) and the fields listed in
/// [`IGNORED_TOP_LEVEL`] and [`IGNORED_METADATA`], warning about each of the latter.
fn drop_ignored_fields(ctx: &Context<'_>, json: &mut Value, out: &mut Vec<Diagnostic>) {
    let Value::Object(top) = json else {
        return;
    };
    top.remove("kind");
    for field in IGNORED_TOP_LEVEL {
        if top.remove(*field).is_some() {
            let path = FieldPath::root().field(field);
            let message = format!("field {path} is ignored");
            out.push(ctx.field(Severity::Warning, &path, Anchor::Key, message));
        }
    }
    if let Some(Value::Object(metadata)) = top.get_mut("metadata") {
        for field in IGNORED_METADATA {
            if metadata.remove(*field).is_some() {
                let path = FieldPath::root().field("metadata").field(field);
                let message = format!("field {path} is ignored");
                out.push(ctx.field(Severity::Warning, &path, Anchor::Key, message));
            }
        }
    }
}

/// A serde error, as a field and a message.
struct Failure {
    path: FieldPath,
    anchor: Anchor,
    message: String,
}

/// The name inside serde's "unknown field `x`" / "missing field `x`" messages.
fn quoted_field<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('`'))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
}

/// Deserializes strictly, converting the first error into a [`Failure`].
fn typed<T: DeserializeOwned>(json: Value) -> Result<T, Failure> {
    serde_path_to_error::deserialize(json).map_err(|error| {
        let segments = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathSegment::Field(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let mut path = FieldPath::from_segments(segments);
        let message = error.into_inner().to_string();
        // serde reports an unknown field with the field already in the path, and a missing
        // field at its parent; in both cases the key is what the reader should look at.
        let anchor = if message.starts_with("unknown field") {
            Anchor::Key
        } else if let Some(field) = quoted_field(&message, "missing field ") {
            path = path.field(field);
            Anchor::Key
        } else {
            Anchor::Value
        };
        Failure {
            path,
            anchor,
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_field_names() {
        assert_eq!(
            quoted_field("missing field `host`", "missing field "),
            Some("host")
        );
        assert_eq!(quoted_field("invalid type: x", "missing field "), None);
    }
}
