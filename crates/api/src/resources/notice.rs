//! Notices: things worth telling the user about a valid resource that are not a
//! field-by-field "not implemented yet" (those are [`super::Resource::unimplemented_fields`]).
//! A notice says that a whole kind is accepted but not acted on, or that a reference points
//! at something outside the mesh. The loader turns each into a warning.

use super::path::FieldPath;

/// What a [`Notice`] says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoticeReason {
    /// The kind parses and validates, but the mesh does nothing with it yet.
    #[error("{kind} is validated but not {action} by the mesh yet")]
    NotActedOn {
        /// The kind (`HTTPRoute`).
        kind: &'static str,
        /// What the mesh would do with it ("routed", "enforced").
        action: &'static str,
    },
    /// Part of a route the mesh's route model cannot carry out as written, and what
    /// happens instead ([`crate::routing::unsupported`]).
    #[error("{what}: {consequence}")]
    Routing {
        /// The part, in words (`the CORS filter`).
        what: String,
        /// What the mesh does instead (`ignored`).
        consequence: &'static str,
    },
    /// A route attaches to a Gateway: valid Gateway API, but ingress, not mesh (GAMMA).
    #[error("parentRef to Gateway is not supported by the mesh (ingress)")]
    GatewayParent,
    /// A route attaches to a kind that is neither a Service nor a Gateway.
    #[error(
        "parentRef to {kind} (group {group:?}) is not supported by the mesh; routes attach to \
         Services"
    )]
    UnsupportedParent {
        /// The parent's group as defaulted.
        group: String,
        /// The parent's kind as defaulted.
        kind: String,
    },
}

/// A [`NoticeReason`] about a field (the document root for the resource as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The field, from the document root; the root itself when the notice is about the
    /// whole resource.
    pub path: FieldPath,
    /// What the notice says.
    pub reason: NoticeReason,
}

impl Notice {
    /// A notice at `path`.
    pub fn new(path: FieldPath, reason: NoticeReason) -> Self {
        Self { path, reason }
    }
}
