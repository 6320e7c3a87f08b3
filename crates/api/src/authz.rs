//! Istio's authorization and peer-authentication semantics as pure functions: no I/O, no
//! clock, no locks. The control plane uses them to compile and check policies and to decide
//! which apply to which workload; the proxy uses them on every connection and request.
//!
//! - [`mod@normalize`]: the request path as policies see it (`/a/../admin` is `/admin`), and the
//!   targets to refuse with 400.
//! - [`method`]: the methods to refuse with 400 before policies see them (`delete` for
//!   `DELETE`).
//! - [`policy`]: an AuthorizationPolicy compiled into typed matchers, serializable so that
//!   snapshots can carry it.
//! - [`evaluate()`]: the decision for one request or connection from the policies that apply
//!   to the workload ([`applies_to`]), in Istio's order: DENY, then ALLOW, AUDIT on the side,
//!   dry-run policies reported but not enforced.
//! - [`peer_auth`]: the mutual TLS mode in force for a workload's port, with Istio's
//!   mesh → namespace → workload → port inheritance.
//!
//! Where the mesh departs from Istio, the module that does it says so and why.

pub mod evaluate;
pub mod method;
pub mod normalize;
pub mod peer_auth;
pub mod policy;

pub use evaluate::{applies_to, evaluate, Decision, HttpAttrs, PolicyMatch, Request, Verdict};
pub use method::{check_method, MethodError};
pub use normalize::{normalize, normalize_with, NormalizedPath, PathError, PathNormalization};
pub use peer_auth::{
    effective_mtls, EffectiveMtls, MtlsLevel, PeerAuthError, PeerAuthPolicy, PeerMode,
};
pub use policy::{Action, Policy, PolicyError, PolicyProblem};

use crate::snapshot::Labels;

/// The root namespace unless configured otherwise: policies there without a selector apply
/// to the whole mesh, and their selectors pick workloads in every namespace (Istio's
/// `istio-system`).
pub const DEFAULT_ROOT_NAMESPACE: &str = "trellis-system";

/// What policies are matched against to decide whether they apply to a workload.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    /// The workload's namespace.
    pub namespace: &'a str,
    /// The workload's labels.
    pub labels: &'a Labels,
    /// Names of the Services of its namespace that select it (for `targetRefs`).
    pub services: &'a [String],
}

impl Workload<'_> {
    /// Whether the workload carries every label of `selector` (an empty selector selects
    /// every workload, as in Istio).
    fn has_labels(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }
}
