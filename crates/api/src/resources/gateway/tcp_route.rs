//! The Gateway API `TCPRoute`: connections to its parents go to weighted backends, with no
//! matching (TCP carries nothing to match on).

use serde::{Deserialize, Serialize};

use super::common::{
    check_rule_name, route_notices, validate_parent_refs, BackendRef, ParentReference, MAX_BACKENDS,
};
use super::validate::check_max_items;
use super::GATEWAY_API_GROUP;
use crate::resources::notice::Notice;
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};
use crate::resources::ObjectMeta;

/// Most rules of a `v1` TCPRoute, which allows exactly one.
const MAX_RULES_V1: usize = 1;
/// Most rules of a `v1alpha2` TCPRoute.
const MAX_RULES_V1ALPHA2: usize = 16;

/// A Gateway API `TCPRoute`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// `gateway.networking.k8s.io/v1` (or `v1alpha2`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Parents and rules.
    pub spec: TcpRouteSpec,
}

/// The spec of a [`TcpRoute`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteSpec {
    /// What the route attaches to: Services for the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// The rules: one for `v1`, up to 16 for `v1alpha2`.
    pub rules: Vec<TcpRouteRule>,
}

/// One rule: where connections go, by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRouteRule {
    /// A name for status and policies; a DNS subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The backends; at least one.
    pub backend_refs: Vec<BackendRef>,
}

impl TcpRoute {
    /// Fills in the schema defaults: parentRef `group`/`kind`
    /// (`gateway.networking.k8s.io`/`Gateway`), backendRef `group`/`kind`/`weight`
    /// (`""`/`Service`/1).
    pub fn apply_defaults(&mut self) {
        for parent in &mut self.spec.parent_refs {
            parent.apply_defaults();
        }
        for rule in &mut self.spec.rules {
            rule.backend_refs
                .iter_mut()
                .for_each(BackendRef::apply_defaults);
        }
    }

    /// Adds the problems of this route to `out`. The rule limit depends on the version.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        validate_parent_refs(&self.spec.parent_refs, &spec.field("parentRefs"), out);
        let rules = spec.field("rules");
        let max_rules = if self.api_version == format!("{GATEWAY_API_GROUP}/v1alpha2") {
            MAX_RULES_V1ALPHA2
        } else {
            MAX_RULES_V1
        };
        if self.spec.rules.is_empty() {
            let error = ValidationError::AtLeastOne { what: "rule" };
            out.push(Violation::new(rules.clone(), error));
        }
        check_max_items("rules", self.spec.rules.len(), max_rules, &rules, out);
        for (i, rule) in self.spec.rules.iter().enumerate() {
            let at = rules.index(i);
            check_rule_name(rule.name.as_deref(), &at.field("name"), out);
            let backends = at.field("backendRefs");
            if rule.backend_refs.is_empty() {
                let error = ValidationError::AtLeastOne { what: "backendRef" };
                out.push(Violation::new(backends.clone(), error));
            }
            let count = rule.backend_refs.len();
            check_max_items("backendRefs", count, MAX_BACKENDS, &backends, out);
            for (j, backend) in rule.backend_refs.iter().enumerate() {
                backend.validate(&backends.index(j), out);
            }
        }
    }

    /// The mesh does not route with TCPRoutes yet; parents other than Services are outside
    /// the mesh altogether.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        route_notices(&self.spec.parent_refs, out);
    }
}
