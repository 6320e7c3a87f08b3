//! Field paths inside a resource, written the way Istio and Kubernetes print them in their
//! validation errors: `spec.http[0].route[1].weight`.
//!
//! Paths are built while validating typed resources and while converting serde errors; the
//! loader walks them through its position-carrying YAML tree to find a line and column.

use std::fmt;

use serde::{Serialize, Serializer};

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    /// A mapping key: a struct field (`spec`, `http`) or a map entry (`labels`' `app`).
    Field(String),
    /// A position in a list, 0-based.
    Index(usize),
}

/// A path from the document root to one field, e.g. `spec.http[0].route`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    segments: Vec<PathSegment>,
}

impl FieldPath {
    /// The document root (displays as an empty string).
    pub fn root() -> Self {
        Self::default()
    }

    /// A path made of the given segments.
    pub fn from_segments(segments: Vec<PathSegment>) -> Self {
        Self { segments }
    }

    /// This path extended by a field name.
    #[must_use]
    pub fn field(&self, name: &str) -> Self {
        let mut segments = self.segments.clone();
        segments.push(PathSegment::Field(name.to_owned()));
        Self { segments }
    }

    /// This path extended by a list index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.segments.clone();
        segments.push(PathSegment::Index(index));
        Self { segments }
    }

    /// The segments, root first.
    pub fn segments(&self) -> &[PathSegment] {
        &self.segments
    }

    /// Whether this is the document root.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }
}

/// Whether a key can be printed after a dot without becoming ambiguous. Map keys such as
/// `app.kubernetes.io/name` contain dots themselves, so they are printed in brackets instead,
/// the way Kubernetes prints `metadata.labels[app.kubernetes.io/name]`.
fn is_plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                PathSegment::Index(index) => write!(f, "[{index}]")?,
                PathSegment::Field(key) if is_plain_key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                PathSegment::Field(key) => write!(f, "[{key}]")?,
            }
        }
        Ok(())
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_istio_style() {
        let path = FieldPath::root()
            .field("spec")
            .field("http")
            .index(0)
            .field("route")
            .index(1)
            .field("weight");
        assert_eq!(path.to_string(), "spec.http[0].route[1].weight");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn brackets_keys_that_are_not_identifiers() {
        let path = FieldPath::root()
            .field("metadata")
            .field("labels")
            .field("app.kubernetes.io/name");
        assert_eq!(path.to_string(), "metadata.labels[app.kubernetes.io/name]");
        let path = FieldPath::root().field("spec").field("ports").field("@");
        assert_eq!(path.to_string(), "spec.ports[@]");
    }
}
