//! Trellis identity: everything a workload's cryptographic identity is made of.
//!
//! * [`spiffe`] — SPIFFE IDs of the form `spiffe://<td>/ns/<namespace>/sa/<service-account>`
//!   and extracting them from X.509 certificates.
//! * [`ca`] — the control plane's certificate authority: self-signed roots
//!   persisted on disk and rotatable without downtime, or an operator-supplied
//!   intermediate; signs proxies' CSRs into short-lived X.509-SVIDs.
//! * [`csr`] — key and CSR generation on the proxy side.
//! * [`tokens`] — join tokens that authenticate a proxy's first certificate request.
//! * [`reserved`] — the identities of the mesh's own components (`trellis-system`), which
//!   neither a join token nor a workload's CSR can obtain.
//! * [`tls`] — rustls client/server configurations whose verifiers authenticate peers
//!   by SPIFFE ID rather than by hostname.
//! * [`pem`] — small PEM helpers shared by the above.
//!
//! File-system state (the CA key, the token store) is written with owner-only
//! permissions; this crate targets Unix hosts.

#![forbid(unsafe_code)]

pub mod ca;
pub mod csr;
mod fsutil;
pub mod pem;
pub mod reserved;
pub mod spiffe;
pub mod tls;
pub mod tokens;

#[cfg(test)]
mod testutil;

pub use ca::{
    CaError, CaSource, CertificateAuthority, IssuedCert, RootInfo, RootStatus, RotationState,
    DEFAULT_ROOT_LIFETIME,
};
pub use csr::{generate_csr, CsrError};
pub use pem::PemError;
pub use reserved::{is_reserved, is_reserved_namespace};
pub use spiffe::{spiffe_id_from_cert, SpiffeError, SpiffeId};
pub use tls::{
    cert_fingerprint, client_config, peer_identity, server_config, ClientAuth, ExpectedPeer,
    SpiffeClientVerifier, SpiffeServerVerifier, Svid, TlsError, TrustBundle,
};
pub use tokens::{TokenError, TokenInfo, TokenStore};
