//! The mesh's security policies as the control plane handles them: every
//! `AuthorizationPolicy` and `PeerAuthentication` of a config set compiled with
//! [`trellis_api::authz`], checked when a change set is validated ([`check`], from
//! [`crate::store`]) and shipped to every proxy in the snapshot ([`compile`], from
//! [`crate::compile`]), which picks the ones that apply to its own workload.
//!
//! A policy the mesh cannot enforce as written (action CUSTOM, a target that is not a
//! Service, Envoy filter metadata…) makes the whole change set invalid, like a syntax error: loading it
//! with the offending policy left out would enforce less than the author wrote (a DENY
//! quietly gone), and loading the rest of the change without it would split one intended
//! change in two.

use trellis_api::authz::{PeerAuthError, PeerAuthPolicy, Policy, PolicyError};
use trellis_api::load::{Diagnostic, Located, Severity};
use trellis_api::resources::{FieldPath, Resource};

/// A policy of the config set that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyCompileError {
    #[error(transparent)]
    Authorization(#[from] PolicyError),
    #[error(transparent)]
    PeerAuthentication(#[from] PeerAuthError),
}

/// Every security policy of one config set, compiled, each list sorted by namespace and name
/// (so that the snapshot's content, and the policy a decision names when several match, do
/// not depend on file order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshPolicies {
    pub authorization: Vec<Policy>,
    pub peer_authentication: Vec<PeerAuthPolicy>,
}

/// Compiles every policy of `resources`.
///
/// # Errors
///
/// The first policy that does not compile. [`check`] reports all of them, with positions;
/// a config set that passed it always compiles.
pub fn compile(resources: &[Located<Resource>]) -> Result<MeshPolicies, PolicyCompileError> {
    let mut out = MeshPolicies::default();
    for located in resources {
        match &located.value {
            Resource::AuthorizationPolicy(p) => out.authorization.push(Policy::compile(p)?),
            Resource::PeerAuthentication(p) => {
                out.peer_authentication.push(PeerAuthPolicy::compile(p)?);
            }
            _ => {}
        }
    }
    out.authorization
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out.peer_authentication
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// An error diagnostic for every policy of `resources` that does not compile, naming its
/// file, the line its document starts on, kind, namespace, name and the offending field.
pub fn check(resources: &[Located<Resource>]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for located in resources {
        let (field, message) = match &located.value {
            Resource::AuthorizationPolicy(p) => match Policy::compile(p) {
                Ok(_) => continue,
                Err(e) => (e.field, e.problem.to_string()),
            },
            Resource::PeerAuthentication(p) => match PeerAuthPolicy::compile(p) {
                Ok(_) => continue,
                Err(e) => peer_auth_problem(e),
            },
            _ => continue,
        };
        let resource = &located.value;
        out.push(Diagnostic {
            severity: Severity::Error,
            file: located.file.clone(),
            line: located.line,
            column: 1,
            kind: Some(resource.kind().to_owned()),
            namespace: Some(resource.namespace().to_owned()),
            name: Some(resource.name().to_owned()),
            field: (!field.is_root()).then(|| field.to_string()),
            message,
        });
    }
    out
}

/// The field and the message of a PeerAuthentication error, without the resource's name
/// (the diagnostic carries it).
fn peer_auth_problem(e: PeerAuthError) -> (FieldPath, String) {
    let at = FieldPath::root().field("spec").field("portLevelMtls");
    match e {
        PeerAuthError::PortKey { key, .. } => (
            at.field(&key),
            format!("key {key:?} is not a port between 1 and 65535"),
        ),
        PeerAuthError::PortLevelWithoutSelector { .. } => (
            at,
            "portLevelMtls needs a selector with at least one label".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn resources(yaml: &str) -> Vec<Located<Resource>> {
        let (resources, diags) = trellis_api::load::parse_str(Path::new("p.yaml"), yaml);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        resources
    }

    const POLICIES: &str = r"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: z-allow, namespace: web}
spec:
  rules:
  - from: [{source: {principals: [cluster.local/ns/web/sa/client]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-deny, namespace: web}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: trellis-system}
spec: {mtls: {mode: STRICT}}
";

    #[test]
    fn compiles_every_policy_sorted() {
        let compiled = compile(&resources(POLICIES)).unwrap();
        let names: Vec<&str> = compiled
            .authorization
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["a-deny", "z-allow"]);
        assert_eq!(compiled.peer_authentication[0].name, "strict");
        assert!(check(&resources(POLICIES)).is_empty());
    }

    #[test]
    fn names_what_cannot_be_enforced() {
        let yaml = format!(
            "{POLICIES}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext, namespace: web}}
spec:
  action: CUSTOM
  provider: {{name: opa}}
  rules: [{{}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: envoy, namespace: web}}
spec:
  rules:
  - when: [{{key: 'experimental.envoy.filters.a[b]', values: [x]}}]
"
        );
        let res = resources(&yaml);
        let errors: Vec<String> = check(&res).iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "p.yaml:21:1: AuthorizationPolicy web/ext: spec.action: action CUSTOM (external \
                 authorization) is not supported by the mesh",
                "p.yaml:29:1: AuthorizationPolicy web/envoy: spec.rules[0].when[0].key: \
                 condition key experimental.envoy.filters.a[b] is not supported by the mesh",
            ]
        );
        assert!(matches!(
            compile(&res),
            Err(PolicyCompileError::Authorization(_))
        ));
    }
}
