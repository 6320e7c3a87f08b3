//! Identities the mesh keeps for its own components, never issued to a workload.
//!
//! Proxies accept the control plane by its SPIFFE ID
//! (`spiffe://TD/ns/trellis-system/sa/trellis-control`), and node agents will be named
//! `spiffe://TD/ns/trellis-system/sa/trellis-node`. A workload holding either could pose as
//! the control plane to every proxy, so the whole `trellis-system` namespace is kept off the
//! workload path: no join token covers it ([`crate::TokenStore::create`] and
//! [`crate::TokenStore::authorize`]) and the CA signs no CSR for it
//! ([`crate::CertificateAuthority::sign_csr`]). The control plane issues its own certificate
//! with a key it generates itself ([`crate::CertificateAuthority::issue_with_local_key`]),
//! which is not that path.
//!
//! Reserving the namespace, not a list of names, keeps identities added later (a node agent,
//! a gateway the mesh runs itself) reserved from the start. The comparison ignores ASCII case:
//! SPIFFE IDs are case-sensitive, but a namespace that differs from the reserved one only by
//! case can only confuse whoever reads it.

use crate::spiffe::SpiffeId;

/// The namespace of the mesh's own components.
pub const SYSTEM_NAMESPACE: &str = "trellis-system";
/// The control plane's service account, in [`SYSTEM_NAMESPACE`].
pub const CONTROL_SERVICE_ACCOUNT: &str = "trellis-control";
/// Node agents' service account, in [`SYSTEM_NAMESPACE`].
pub const NODE_SERVICE_ACCOUNT: &str = "trellis-node";

/// Whether identities in `namespace` are kept for the mesh's own components.
pub fn is_reserved_namespace(namespace: &str) -> bool {
    namespace.eq_ignore_ascii_case(SYSTEM_NAMESPACE)
}

/// Whether `id` is kept for the mesh's own components, in any trust domain.
pub fn is_reserved(id: &SpiffeId) -> bool {
    is_reserved_namespace(&id.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_namespace_is_reserved_whatever_its_case() {
        for id in [
            SpiffeId::new("cluster.local", SYSTEM_NAMESPACE, CONTROL_SERVICE_ACCOUNT),
            SpiffeId::new("example.org", SYSTEM_NAMESPACE, NODE_SERVICE_ACCOUNT),
            SpiffeId::new("cluster.local", "trellis-system", "anything"),
            SpiffeId::new("cluster.local", "Trellis-System", "trellis-control"),
        ] {
            assert!(is_reserved(&id), "{id}");
        }
        for id in [
            SpiffeId::new("cluster.local", "default", "trellis-control"),
            SpiffeId::new("cluster.local", "trellis-system-2", "web"),
            SpiffeId::new("cluster.local", "trellis", "trellis-node"),
        ] {
            assert!(!is_reserved(&id), "{id}");
        }
    }
}
