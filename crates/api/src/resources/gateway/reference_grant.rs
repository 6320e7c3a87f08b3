//! The Gateway API `ReferenceGrant`: lets objects of some kinds in other namespaces refer to
//! objects in this one (a route in namespace `a` sending to a Service in `b` needs a grant in
//! `b`).

use serde::{Deserialize, Serialize};

use super::validate::{check_max_items, check_string, GROUP, KIND, NAMESPACE, OBJECT_NAME};
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};
use crate::resources::ObjectMeta;

/// Most entries in `from` and in `to`.
const MAX_ENTRIES: usize = 16;

/// A Gateway API `ReferenceGrant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrant {
    /// `gateway.networking.k8s.io/v1beta1` (or `v1`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Who may refer to what.
    pub spec: ReferenceGrantSpec,
}

/// The spec of a [`ReferenceGrant`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    /// The objects that may refer; at least one.
    pub from: Vec<ReferenceGrantFrom>,
    /// The objects, in the grant's namespace, that may be referred to; at least one.
    pub to: Vec<ReferenceGrantTo>,
}

/// Objects of a kind in a namespace that are granted references.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantFrom {
    /// API group; `""` for core.
    pub group: String,
    /// Kind (`HTTPRoute`).
    pub kind: String,
    /// Namespace of the referring objects.
    pub namespace: String,
}

/// Objects that may be referred to: every object of the kind, or one by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantTo {
    /// API group; `""` for core.
    pub group: String,
    /// Kind (`Service`).
    pub kind: String,
    /// One object's name; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ReferenceGrantSpec {
    /// Adds the problems of this spec to `out`.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        let from = spec.field("from");
        check_entries(("from entry", "from entries"), self.from.len(), &from, out);
        for (i, entry) in self.from.iter().enumerate() {
            let at = from.index(i);
            check_string(GROUP, &entry.group, &at.field("group"), out);
            check_string(KIND, &entry.kind, &at.field("kind"), out);
            check_string(NAMESPACE, &entry.namespace, &at.field("namespace"), out);
        }
        let to = spec.field("to");
        check_entries(("to entry", "to entries"), self.to.len(), &to, out);
        for (i, entry) in self.to.iter().enumerate() {
            let at = to.index(i);
            check_string(GROUP, &entry.group, &at.field("group"), out);
            check_string(KIND, &entry.kind, &at.field("kind"), out);
            if let Some(name) = &entry.name {
                check_string(OBJECT_NAME, name, &at.field("name"), out);
            }
        }
    }
}

/// `minItems: 1`, `maxItems: 16`, for a list of `what` (singular, plural).
fn check_entries(
    (one, many): (&'static str, &'static str),
    count: usize,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if count == 0 {
        let error = ValidationError::AtLeastOne { what: one };
        out.push(Violation::new(path.clone(), error));
    }
    check_max_items(many, count, MAX_ENTRIES, path, out);
}
