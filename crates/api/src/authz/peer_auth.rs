//! The mutual TLS mode in force for one port of one workload, from the PeerAuthentications of
//! the mesh, as Istio composes them (`ComposePeerAuthentication` in
//! `pilot/pkg/security/authn/policy_applier.go`):
//!
//! - three levels: mesh (root namespace, no selector), namespace (no selector), workload
//!   (a selector with at least one label, matching the workload's labels; an empty selector
//!   counts as none). A policy with a selector in the root namespace is ignored, as Istio
//!   ignores it: only namespace-local policies may pick workloads.
//! - when several policies compete at one level, the oldest wins. Trellis resources carry no
//!   creation time, so the first by name wins, which is also Istio's tie-break between
//!   policies created in the same second (it sorts by creation time, then name). The
//!   analyzer warns about such competing policies.
//! - each level overrides the one above it, except where its mode is UNSET (or absent), which
//!   inherits. With no policy at all the mode is PERMISSIVE.
//! - `portLevelMtls` of the chosen workload-level policy overrides the mode for its ports
//!   (UNSET there inherits the workload level). Ports are the workload's own (the container
//!   port, not the Service port), as in Istio.
//!
//! Port-level settings on a policy without a selector are refused by [`PeerAuthPolicy::compile`]
//! as Istio's validation refuses them, instead of being ignored.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Workload;
use crate::resources::{MtlsMode, PeerAuthentication, PeerAuthenticationMtls};
use crate::snapshot::Labels;

/// A PeerAuthentication that could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// A `portLevelMtls` key that is not a port.
    #[error(
        "PeerAuthentication {policy}: portLevelMtls key {key:?} is not a port between 1 and 65535"
    )]
    PortKey {
        /// `namespace/name` of the policy.
        policy: String,
        /// The key as written.
        key: String,
    },
    /// `portLevelMtls` on a policy that selects no particular workload.
    #[error("PeerAuthentication {policy}: portLevelMtls needs a selector with at least one label")]
    PortLevelWithoutSelector {
        /// `namespace/name` of the policy.
        policy: String,
    },
}

/// A mutual TLS mode that is in force (never UNSET).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerMode {
    /// Plain text only.
    Disable,
    /// Plain text and mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

impl fmt::Display for PeerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerMode::Disable => "DISABLE",
            PeerMode::Permissive => "PERMISSIVE",
            PeerMode::Strict => "STRICT",
        })
    }
}

/// A compiled PeerAuthentication. Modes are `None` where the resource leaves them UNSET.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthPolicy {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// The labels a workload must carry; `None` for a namespace- or mesh-wide policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    /// The mode for all ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PeerMode>,
    /// Modes for particular workload ports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_modes: BTreeMap<u16, Option<PeerMode>>,
}

/// Which level decided an [`EffectiveMtls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MtlsLevel {
    /// No policy set a mode: PERMISSIVE.
    Default,
    /// The mesh-wide policy.
    Mesh,
    /// The namespace-wide policy.
    Namespace,
    /// The workload's policy, for all its ports.
    Workload,
    /// The workload's policy, for this port.
    Port,
}

impl fmt::Display for MtlsLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MtlsLevel::Default => "default",
            MtlsLevel::Mesh => "mesh",
            MtlsLevel::Namespace => "namespace",
            MtlsLevel::Workload => "workload",
            MtlsLevel::Port => "port",
        })
    }
}

/// The mode in force for one port of one workload, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveMtls<'p> {
    /// The mode.
    pub mode: PeerMode,
    /// The level that set it.
    pub level: MtlsLevel,
    /// The policy that set it; `None` for [`MtlsLevel::Default`].
    pub policy: Option<&'p PeerAuthPolicy>,
}

impl fmt::Display for EffectiveMtls<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.policy {
            None => write!(
                f,
                "{} (default: no PeerAuthentication sets a mode)",
                self.mode
            ),
            Some(p) => write!(
                f,
                "{} from {}-level PeerAuthentication {}/{}",
                self.mode, self.level, p.namespace, p.name
            ),
        }
    }
}

/// A resource mode, UNSET as `None`.
fn mode(mtls: Option<&PeerAuthenticationMtls>) -> Option<PeerMode> {
    match mtls.and_then(|m| m.mode)? {
        MtlsMode::Unset => None,
        MtlsMode::Disable => Some(PeerMode::Disable),
        MtlsMode::Permissive => Some(PeerMode::Permissive),
        MtlsMode::Strict => Some(PeerMode::Strict),
    }
}

impl PeerAuthPolicy {
    /// Compiles a (validated) PeerAuthentication.
    ///
    /// # Errors
    ///
    /// [`PeerAuthError`] for a `portLevelMtls` key that is not a port, or port-level modes
    /// without a selector.
    pub fn compile(resource: &PeerAuthentication) -> Result<Self, PeerAuthError> {
        let namespace = resource.meta.namespace().to_owned();
        let name = resource.meta.name.clone();
        let policy = || format!("{namespace}/{name}");
        let spec = &resource.spec;
        let selector = spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .filter(|labels| !labels.is_empty());
        let mut port_modes = BTreeMap::new();
        if let Some(ports) = &spec.port_level_mtls {
            if selector.is_none() {
                return Err(PeerAuthError::PortLevelWithoutSelector { policy: policy() });
            }
            for (key, mtls) in ports {
                let port = key
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| PeerAuthError::PortKey {
                        policy: policy(),
                        key: key.clone(),
                    })?;
                port_modes.insert(port, mode(Some(mtls)));
            }
        }
        Ok(PeerAuthPolicy {
            mode: mode(spec.mtls.as_ref()),
            namespace,
            name,
            selector,
            port_modes,
        })
    }
}

/// The mode in force on `port` of `workload`. `policies` may hold every PeerAuthentication
/// of the mesh; those that do not concern the workload are skipped.
pub fn effective_mtls<'p, P: Borrow<PeerAuthPolicy>>(
    policies: &'p [P],
    workload: &Workload<'_>,
    port: u16,
    root_namespace: &str,
) -> EffectiveMtls<'p> {
    let (mut mesh, mut namespace, mut selected): (
        Option<&PeerAuthPolicy>,
        Option<&PeerAuthPolicy>,
        Option<&PeerAuthPolicy>,
    ) = (None, None, None);
    // Keeps the first by name: the stand-in for Istio's "oldest wins".
    let keep = |slot: &mut Option<&'p PeerAuthPolicy>, p: &'p PeerAuthPolicy| {
        if slot.is_none_or(|current| p.name < current.name) {
            *slot = Some(p);
        }
    };
    for p in policies.iter().map(<P as Borrow<PeerAuthPolicy>>::borrow) {
        match &p.selector {
            None if p.namespace == root_namespace => keep(&mut mesh, p),
            None if p.namespace == workload.namespace => keep(&mut namespace, p),
            Some(labels)
                if p.namespace == workload.namespace
                    && p.namespace != root_namespace
                    && workload.has_labels(labels) =>
            {
                keep(&mut selected, p);
            }
            _ => {}
        }
    }

    let mut effective = EffectiveMtls {
        mode: PeerMode::Permissive,
        level: MtlsLevel::Default,
        policy: None,
    };
    for (level, policy) in [
        (MtlsLevel::Mesh, mesh),
        (MtlsLevel::Namespace, namespace),
        (MtlsLevel::Workload, selected),
    ] {
        if let Some((p, mode)) = policy.and_then(|p| Some((p, p.mode?))) {
            effective = EffectiveMtls {
                mode,
                level,
                policy: Some(p),
            };
        }
    }
    if let Some((p, mode)) = selected.and_then(|p| Some((p, (*p.port_modes.get(&port)?)?))) {
        effective = EffectiveMtls {
            mode,
            level: MtlsLevel::Port,
            policy: Some(p),
        };
    }
    effective
}

#[cfg(test)]
mod tests;
