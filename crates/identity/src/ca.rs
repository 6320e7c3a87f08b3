//! The mesh's certificate authority.
//!
//! The CA signs short-lived X.509-SVIDs: from proxies' CSRs via
//! [`CertificateAuthority::sign_csr`], or with an in-process key for the
//! control plane's own serving certificate via
//! [`CertificateAuthority::issue_with_local_key`]. Where its authority comes
//! from is chosen by [`CaSource`]:
//!
//! * **Self-signed** (the default): the control plane generates its own ECDSA
//!   P-256 roots and keeps them in `<data_dir>/ca/`. Each root is a CA
//!   certificate with O = the trust domain and a CN unique to its generation
//!   ("Trellis root CA" for the first, "Trellis root CA 2", "… 3" after
//!   rotations), so two roots that coexist during a rotation can never be
//!   mistaken for one another when peers build certificate paths. Leaves are
//!   signed by the root directly. `state.json` in the same directory records
//!   which root files exist and what each is for. The root can be replaced
//!   without downtime, see below.
//! * **User-supplied files**: an operator's own PKI. One or more root
//!   certificates form the trust bundle; an intermediate CA certificate and
//!   its key (optionally followed in its file by further intermediates up to a
//!   root) sign the leaves, and every issued chain is `leaf + intermediate(s)`.
//!   The files are validated at load and never written.
//!
//! In both modes the trust domain is the configured one and every bundle the
//! CA hands out states it explicitly ([`TrustBundle::explicit_trust_domain`]):
//! user-supplied roots need not name the trust domain in their subject O,
//! while self-signed roots do (and are checked to), so a bundle of them also
//! works when parsed with plain [`TrustBundle::from_pem`].
//!
//! # Root rotation (self-signed mode)
//!
//! 1. [`CertificateAuthority::rotate_begin`] generates the next root R2 and a
//!    cross-certificate: R2's subject and key, issued and signed by the current
//!    root R1. The bundle becomes {R1, R2}; new leaves are issued by R2 and
//!    shipped as `leaf + cross-certificate`, so a peer that still trusts only
//!    R1 verifies them (leaf → cross-certificate → R1), and so does a peer that
//!    already trusts R2 (leaf → R2). Old leaves still chain to R1, which
//!    everyone trusts.
//! 2. Once every workload holds a leaf from R2 and the combined bundle,
//!    [`CertificateAuthority::rotate_finish`] retires R1: the bundle becomes
//!    {R2}, leaves are shipped alone, and R1's key is deleted.
//!
//! Each step is committed by rewriting `state.json` atomically, so a restart
//! resumes wherever the last step left off.
//!
//! # Sharing
//!
//! The CA is shared across threads as `Arc<CertificateAuthority>`. Everything
//! needed to issue lives in an immutable snapshot that rotation steps replace
//! as a whole; readers only clone an `Arc` under a lock, so issuing never
//! waits for a rotation step's key generation or disk writes.
//!
//! The CA directory is assumed to be owned by a single control-plane process.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

#[cfg(test)]
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::{KeyPair, SerialNumber, PKCS_ECDSA_P256_SHA256};
#[cfg(test)]
use rustls_pki_types::CertificateDer;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::fsutil;
use crate::pem;
use crate::spiffe::{spiffe_id_from_uris, validate_trust_domain, SpiffeError, SpiffeId};
use crate::tls::{Svid, TlsError, TrustBundle};

mod files;
mod self_signed;
mod signer;

use signer::Signer;

/// Lifetime of a self-signed root unless configured otherwise: ten years.
pub const DEFAULT_ROOT_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Certificates start slightly in the past so that peers whose clocks lag a
/// little behind ours still accept them.
const BACKDATE: time::Duration = time::Duration::seconds(60);

/// Errors from loading, creating or using the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The configured trust domain is not a valid SPIFFE trust domain.
    #[error("invalid trust domain {trust_domain:?}: {source}")]
    InvalidTrustDomain {
        /// The rejected trust domain.
        trust_domain: String,
        /// Why it was rejected.
        #[source]
        source: SpiffeError,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Only one of the root certificate and key exists.
    #[error(
        "CA directory is incomplete: {} exists but {} does not; restore the missing file, \
         or delete both to create a new root (which invalidates every issued certificate)",
        present.display(),
        missing.display()
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// `state.json` in the CA directory is unreadable or inconsistent.
    #[error("CA state {} is invalid: {reason}", path.display())]
    InvalidState {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored or supplied root certificate (or a self-signed root's
    /// cross-certificate) is unusable.
    #[error("root CA certificate {} is invalid: {reason}", path.display())]
    InvalidRoot {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored root key is unusable.
    #[error("root CA key {} is invalid: {reason}", path.display())]
    InvalidRootKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A supplied intermediate CA certificate file is unreadable.
    #[error("intermediate CA certificate {} is invalid: {reason}", path.display())]
    InvalidIntermediate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The supplied intermediate CA key is unusable.
    #[error("intermediate CA key {} is invalid: {reason}", path.display())]
    InvalidIntermediateKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA key does not belong to the certificate it is paired with.
    #[error("CA key {} does not match certificate {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
    },
    /// A certificate that has to issue certificates is not allowed to.
    #[error("certificate {subject:?} in {} cannot act as a CA: {reason}", path.display())]
    NotACa {
        /// The certificate file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// What it lacks.
        reason: &'static str,
    },
    /// The intermediate does not chain to any of the supplied roots.
    #[error(
        "intermediate CA {subject:?} in {} does not chain to any root in {}: {reason}",
        path.display(),
        roots_path.display()
    )]
    NotChained {
        /// The intermediate certificate file.
        path: PathBuf,
        /// The intermediate's subject.
        subject: String,
        /// The roots file.
        roots_path: PathBuf,
        /// Why each candidate failed.
        reason: String,
    },
    /// A supplied CA certificate has expired.
    #[error("CA certificate {subject:?} in {} expired at {not_after}", path.display())]
    CertificateExpired {
        /// The certificate file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// A supplied CA certificate is not valid yet.
    #[error("CA certificate {subject:?} in {} is not valid before {not_before}", path.display())]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// The stored root belongs to a different trust domain than configured.
    #[error(
        "root CA {} belongs to trust domain {found:?}, but the configured trust domain is \
         {expected:?}",
        path.display()
    )]
    TrustDomainMismatch {
        /// The certificate file.
        path: PathBuf,
        /// The trust domain in the certificate.
        found: String,
        /// The configured trust domain.
        expected: String,
    },
    /// The stored signing root has expired.
    #[error("root CA certificate {} expired at {not_after}", path.display())]
    RootExpired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The certificate that signs leaves has expired while the CA was running.
    #[error("the CA's signing certificate expired at {not_after}; no certificate can be issued")]
    IssuerExpired {
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// A certificate issued by the freshly loaded or rotated CA does not
    /// verify the way peers will verify it; nothing was changed.
    #[error("CA self-test failed: {reason}")]
    SelfTest {
        /// What failed.
        reason: String,
    },
    /// `rotate_begin` was called while a rotation is in progress.
    #[error(
        "a root rotation is already in progress (new root {next}); finish it before starting \
         another"
    )]
    RotationInProgress {
        /// Fingerprint of the root being rotated to.
        next: String,
    },
    /// `rotate_finish` was called without a rotation in progress.
    #[error("no root rotation is in progress")]
    NoRotationInProgress,
    /// Rotation was requested from a CA whose roots the operator supplies.
    #[error(
        "roots supplied by the operator cannot be rotated by Trellis; replace the files and \
         restart instead"
    )]
    RotationUnsupported,
    /// Key or certificate generation failed.
    #[error("failed to {action}: {source}")]
    Generate {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// The CSR is not a well-formed PKCS#10 request.
    #[error("invalid CSR: {reason}")]
    InvalidCsr {
        /// What is wrong with it.
        reason: String,
    },
    /// The CSR's self-signature does not verify.
    #[error("CSR signature does not verify: {reason}")]
    CsrSignature {
        /// Verifier diagnostics.
        reason: String,
    },
    /// The CSR does not name exactly one valid SPIFFE ID.
    #[error("CSR does not request a usable SPIFFE ID: {source}")]
    CsrIdentity {
        /// Why the requested identity was rejected.
        #[source]
        source: SpiffeError,
    },
    /// An identity to issue for is not a valid SPIFFE ID.
    #[error("cannot issue a certificate for {id}: {source}")]
    InvalidIdentity {
        /// The rejected identity.
        id: String,
        /// Why it was rejected.
        #[source]
        source: SpiffeError,
    },
    /// The requested identity is in another trust domain.
    #[error("CSR for {requested} refused: this CA only issues for trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        /// The requested identity.
        requested: String,
        /// This CA's trust domain.
        trust_domain: String,
    },
    /// The requested identity is kept for the mesh's own components ([`crate::reserved`]).
    #[error("CSR for {requested} refused: the identity is reserved for the mesh's own components")]
    ReservedIdentity {
        /// The requested identity.
        requested: String,
    },
    /// The authorization callback refused the identity.
    #[error("CSR for {requested} refused: {reason}")]
    NotAuthorized {
        /// The requested identity.
        requested: String,
        /// The callback's reason.
        reason: String,
    },
    /// The requested certificate lifetime is unusable.
    #[error("invalid certificate lifetime {lifetime:?}: {reason}")]
    InvalidLifetime {
        /// The requested lifetime.
        lifetime: Duration,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Signing the leaf certificate failed.
    #[error("failed to sign certificate for {id}: {source}")]
    Sign {
        /// The identity being issued.
        id: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// The trust bundle could not be built from the roots.
    #[error("cannot build the trust bundle: {source}")]
    Bundle {
        /// The underlying error.
        #[source]
        source: TlsError,
    },
}

/// Where the CA's signing authority comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// Roots generated and kept by the control plane in `<data_dir>/ca/`,
    /// rotatable with [`CertificateAuthority::rotate_begin`].
    SelfSigned {
        /// Lifetime of roots created from now on (an existing root keeps its
        /// own). [`DEFAULT_ROOT_LIFETIME`] unless configured.
        root_lifetime: Duration,
    },
    /// An operator's PKI, read from files and never modified.
    Files {
        /// PEM file with one or more root certificates: the trust bundle.
        roots_pem: PathBuf,
        /// PEM file with the intermediate CA certificate that signs leaves,
        /// optionally followed by further intermediates, each issued by the
        /// next, the last one by a root.
        intermediate_pem: PathBuf,
        /// PEM file with the intermediate's private key (PKCS#8, SEC1 or
        /// PKCS#1).
        intermediate_key_pem: PathBuf,
    },
}

impl Default for CaSource {
    fn default() -> Self {
        Self::SelfSigned {
            root_lifetime: DEFAULT_ROOT_LIFETIME,
        }
    }
}

/// What a root in the trust bundle is currently for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RootStatus {
    /// The root, with no rotation in progress (every supplied root in
    /// [`CaSource::Files`] mode).
    Active,
    /// During a rotation: the new root, which new certificates chain to; it
    /// becomes `Active` when the rotation finishes.
    Next,
    /// During a rotation: the old root, still trusted so that certificates
    /// issued under it keep working; it leaves the bundle when the rotation
    /// finishes.
    Retiring,
}

/// A root certificate in the CA's trust bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootInfo {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint_sha256_hex: String,
    /// The subject, e.g. `CN=Trellis root CA 2, O=cluster.local`.
    pub subject: String,
    /// When the root expires.
    pub not_after: SystemTime,
    /// What the root is for.
    pub status: RootStatus,
}

/// Whether a root rotation is under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationState {
    /// One root (or, in [`CaSource::Files`] mode, the supplied roots), nothing
    /// in flight.
    Idle,
    /// [`CertificateAuthority::rotate_begin`] has run and
    /// [`CertificateAuthority::rotate_finish`] has not.
    InProgress {
        /// The root being retired.
        old: RootInfo,
        /// The root new certificates chain to.
        new: RootInfo,
    },
}

/// A certificate issued from a CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// The leaf certificate as PEM, followed by any certificates peers need
    /// to reach a root (the intermediate in [`CaSource::Files`] mode, the
    /// cross-certificate during a rotation). The root itself is not included;
    /// peers get it from the trust bundle.
    pub cert_chain_pem: String,
    /// The certificate serial number, lowercase hex.
    pub serial_hex: String,
    /// When the certificate expires.
    pub not_after: SystemTime,
    /// SHA-256 (lowercase hex) of the root the certificate chains up to: the
    /// CA's [`CertificateAuthority::signing_root_fingerprint`] at issuance.
    pub issuer_fingerprint: String,
}

/// How the CA was set up, and what that allows.
enum Mode {
    SelfSigned(self_signed::Store),
    Files,
}

/// The mesh CA: its roots, its signing key and, in self-signed mode, its
/// on-disk state.
pub struct CertificateAuthority {
    trust_domain: String,
    mode: Mode,
    /// The current signing snapshot. The lock is only ever held to clone or
    /// replace the `Arc`.
    signer: RwLock<Arc<Signer>>,
    /// Serialises rotation steps, which generate keys and write files; issuing
    /// never takes it.
    rotation_lock: Mutex<()>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs.
        let signer = self.signer();
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("self_signed", &self.is_self_signed())
            .field("signing_root", &signer.signing_root().fingerprint)
            .field("roots", &signer.roots().len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the self-signed root CA from `data_dir/ca/`, creating it on first
    /// start with a ten-year root: `load(data_dir, trust_domain,
    /// CaSource::default())`.
    pub fn load_or_create(data_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        Self::load(data_dir, trust_domain, CaSource::default())
    }

    /// Loads the CA for `trust_domain` from `source`.
    ///
    /// * [`CaSource::SelfSigned`]: loads `data_dir/ca/`, resuming a rotation
    ///   left in progress, or creates a first root there (ECDSA P-256, CN
    ///   "Trellis root CA", O = `trust_domain`, valid `root_lifetime`; key file
    ///   mode 0600, directory mode 0700). Stored roots must belong to
    ///   `trust_domain`, match their keys, and the signing root must not have
    ///   expired.
    /// * [`CaSource::Files`]: reads and validates the operator's files (see
    ///   [`CaSource::Files`]); `data_dir` is not used. The intermediate must be
    ///   a CA certificate allowed to sign certificates, match its key, chain to
    ///   one of the roots with valid signatures, and it and every certificate
    ///   up to the root must be currently valid. The roots' subject O is not
    ///   consulted: leaves are issued in `trust_domain`, which the bundle states
    ///   explicitly. Leaf lifetimes are cut at the intermediate's expiry.
    ///
    /// Either way, before returning, the CA issues a throw-away certificate
    /// and checks that it verifies against its bundle exactly as peers will
    /// verify it ([`CaError::SelfTest`] otherwise).
    pub fn load(data_dir: &Path, trust_domain: &str, source: CaSource) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain).map_err(|source| CaError::InvalidTrustDomain {
            trust_domain: trust_domain.to_owned(),
            source,
        })?;
        let (mode, signer) = match source {
            CaSource::SelfSigned { root_lifetime } => {
                let (store, signer) =
                    self_signed::Store::open(data_dir, trust_domain, root_lifetime)?;
                (Mode::SelfSigned(store), signer)
            }
            CaSource::Files {
                roots_pem,
                intermediate_pem,
                intermediate_key_pem,
            } => {
                let signer = files::load(
                    trust_domain,
                    &roots_pem,
                    &intermediate_pem,
                    &intermediate_key_pem,
                )?;
                (Mode::Files, signer)
            }
        };
        let ca = Self {
            trust_domain: trust_domain.to_owned(),
            mode,
            signer: RwLock::new(Arc::new(signer)),
            rotation_lock: Mutex::new(()),
        };
        tracing::info!(
            trust_domain,
            self_signed = ca.is_self_signed(),
            signing_root = %ca.signing_root_fingerprint(),
            rotation = ?ca.rotation(),
            "loaded CA"
        );
        Ok(ca)
    }

    fn signer(&self) -> Arc<Signer> {
        // A panic while holding the lock cannot leave a half-written `Arc`
        // behind, so a poisoned lock is still consistent.
        self.signer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace_signer(&self, signer: Signer) {
        *self.signer.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(signer);
    }

    /// Whether the roots are the control plane's own ([`CaSource::SelfSigned`]).
    pub fn is_self_signed(&self) -> bool {
        matches!(self.mode, Mode::SelfSigned(_))
    }

    /// The trust bundle (every root peers must trust now) as concatenated PEM
    /// blocks. With a single self-signed root this is byte-identical to its
    /// file in `ca/`. Changes with rotation steps.
    pub fn trust_bundle_pem(&self) -> String {
        self.signer().bundle_pem().to_owned()
    }

    /// The trust bundle, with [`TrustBundle::explicit_trust_domain`] set to
    /// this CA's trust domain. Changes with rotation steps.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.signer().bundle().clone()
    }

    /// The trust domain this CA issues identities in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// When the root that new certificates chain up to expires.
    pub fn root_not_after(&self) -> SystemTime {
        self.signer().signing_root().not_after.into()
    }

    /// When the certificate that signs leaves expires: the intermediate in
    /// [`CaSource::Files`] mode, the signing root in self-signed mode.
    pub fn issuer_not_after(&self) -> SystemTime {
        self.signer().issuer_not_after().into()
    }

    /// SHA-256 (lowercase hex) of the root that new certificates chain up to:
    /// the new root as soon as a rotation has begun; in [`CaSource::Files`]
    /// mode, the root the intermediate chains to.
    pub fn signing_root_fingerprint(&self) -> String {
        self.signer().signing_root().fingerprint.clone()
    }

    /// The roots in the trust bundle, in bundle order (during a rotation: the
    /// retiring root, then the next one).
    pub fn roots(&self) -> Vec<RootInfo> {
        self.signer()
            .roots()
            .iter()
            .map(|root| root.info())
            .collect()
    }

    /// Whether a root rotation is in progress, and between which roots.
    pub fn rotation(&self) -> RotationState {
        let signer = self.signer();
        let find = |status| signer.roots().iter().find(|root| root.status == status);
        match (find(RootStatus::Retiring), find(RootStatus::Next)) {
            (Some(old), Some(new)) => RotationState::InProgress {
                old: old.info(),
                new: new.info(),
            },
            _ => RotationState::Idle,
        }
    }

    /// Starts a root rotation (see the module docs): creates the next root
    /// (key file mode 0600) and its cross-certificate signed by the current
    /// root, commits the new state to disk, and from then on issues under the
    /// new root with the bundle holding both.
    ///
    /// Fails with [`CaError::RotationInProgress`] if a rotation has already
    /// begun and [`CaError::RotationUnsupported`] for user-supplied roots. On
    /// failure the CA keeps its previous state.
    pub fn rotate_begin(&self) -> Result<(), CaError> {
        let Mode::SelfSigned(store) = &self.mode else {
            return Err(CaError::RotationUnsupported);
        };
        let _one_at_a_time = self
            .rotation_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.signer();
        let next = store.begin_rotation(&current)?;
        tracing::info!(
            old_root = %current.signing_root().fingerprint,
            new_root = %next.signing_root().fingerprint,
            "root rotation begun: issuing under the new root, trusting both"
        );
        self.replace_signer(next);
        Ok(())
    }

    /// Finishes a root rotation: the retiring root leaves the bundle, leaves
    /// are shipped without the cross-certificate, and the retiring root's key
    /// is deleted.
    ///
    /// Fails with [`CaError::NoRotationInProgress`] unless
    /// [`CertificateAuthority::rotate_begin`] has run (possibly before a
    /// restart), and [`CaError::RotationUnsupported`] for user-supplied roots.
    pub fn rotate_finish(&self) -> Result<(), CaError> {
        let Mode::SelfSigned(store) = &self.mode else {
            return Err(CaError::RotationUnsupported);
        };
        let _one_at_a_time = self
            .rotation_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.signer();
        let next = store.finish_rotation(&current)?;
        tracing::info!(
            root = %next.signing_root().fingerprint,
            "root rotation finished: the old root is no longer trusted"
        );
        self.replace_signer(next);
        Ok(())
    }

    /// Issues a leaf certificate for the identity requested in a DER PKCS#10 CSR.
    ///
    /// The CSR's signature must verify and it must request exactly one SPIFFE
    /// ID (as a URI SAN) in this CA's trust domain, outside the namespace kept for
    /// the mesh's own components ([`CaError::ReservedIdentity`]: this is the path
    /// workloads take, whatever `authorize` says); `authorize` then decides
    /// whether the requester may have that identity (its `Err` becomes
    /// [`CaError::NotAuthorized`]). Anything else the CSR asks for (subject,
    /// other SANs, extensions) is ignored: the certificate always has the fixed
    /// SVID profile. Lifetimes are cut short so that the leaf never outlives
    /// any certificate of its chain.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        authorize: impl FnOnce(&SpiffeId) -> Result<(), String>,
        lifetime: Duration,
    ) -> Result<IssuedCert, CaError> {
        let (id, public_key) = inspect_csr(csr_der).inspect_err(|e| {
            tracing::warn!(error = %e, "refused CSR");
        })?;
        if id.trust_domain != self.trust_domain {
            let err = CaError::ForeignTrustDomain {
                requested: id.to_string(),
                trust_domain: self.trust_domain.clone(),
            };
            tracing::warn!(error = %err, "refused CSR");
            return Err(err);
        }
        if crate::reserved::is_reserved(&id) {
            let err = CaError::ReservedIdentity {
                requested: id.to_string(),
            };
            tracing::warn!(error = %err, "refused CSR");
            return Err(err);
        }
        if let Err(reason) = authorize(&id) {
            let err = CaError::NotAuthorized {
                requested: id.to_string(),
                reason,
            };
            tracing::warn!(error = %err, "refused CSR");
            return Err(err);
        }
        // One snapshot for the whole issuance, so that the chain and the
        // reported root match the key that signed, even mid-rotation.
        let signer = self.signer();
        let leaf = signer.issue(&id, &public_key, lifetime)?;
        let chain = signer.chain(leaf.der);
        Ok(IssuedCert {
            cert_chain_pem: pem::certs_to_pem(&chain),
            spiffe_id: id,
            serial_hex: leaf.serial_hex,
            not_after: leaf.not_after,
            issuer_fingerprint: signer.signing_root().fingerprint.clone(),
        })
    }

    /// Issues a leaf certificate for `id` with a key generated in-process,
    /// e.g. for the control plane's own serving certificate. The SVID's chain
    /// is the same as [`CertificateAuthority::sign_csr`] would return.
    pub fn issue_with_local_key(&self, id: &SpiffeId, lifetime: Duration) -> Result<Svid, CaError> {
        id.validate().map_err(|source| CaError::InvalidIdentity {
            id: id.to_string(),
            source,
        })?;
        if id.trust_domain != self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                requested: id.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
                action: "generate a leaf key",
                source,
            })?;
        let signer = self.signer();
        let leaf = signer.issue(id, &key, lifetime)?;
        Ok(Svid {
            id: id.clone(),
            cert_chain: signer.chain(leaf.der),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after: leaf.not_after,
        })
    }

    /// Signs a leaf with an arbitrary profile, for tests that need certificates
    /// the CA would never issue (expired, wrong EKU, foreign trust domain...).
    /// Only the leaf is returned, without any chain.
    #[cfg(test)]
    pub(crate) fn issue_custom(
        &self,
        leaf: &CustomLeaf,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        self.signer().issue_custom(leaf)
    }
}

/// Profile for [`CertificateAuthority::issue_custom`].
#[cfg(test)]
pub(crate) struct CustomLeaf {
    pub uris: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub ekus: Vec<ExtendedKeyUsagePurpose>,
}

/// Parses and verifies a CSR, returning the identity it requests and its key.
fn inspect_csr(csr_der: &[u8]) -> Result<(SpiffeId, rcgen::SubjectPublicKeyInfo), CaError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|e| CaError::InvalidCsr {
            reason: format!("not a DER PKCS#10 request: {e}"),
        })?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCsr {
            reason: format!("{} trailing bytes after the request", rest.len()),
        });
    }
    csr.verify_signature().map_err(|e| CaError::CsrSignature {
        reason: e.to_string(),
    })?;
    let uris: Vec<&str> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|ext| match ext {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let id = spiffe_id_from_uris(&uris).map_err(|source| CaError::CsrIdentity { source })?;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|e| CaError::InvalidCsr {
                reason: format!("unsupported public key: {e}"),
            })?;
    Ok((id, public_key))
}

/// A random 16-byte serial, and its hex form as it appears in the certificate.
fn random_serial() -> (SerialNumber, String) {
    let mut bytes: [u8; 16] = rand::random();
    // DER INTEGERs are signed and minimal: a clear top bit and a nonzero first
    // byte make the encoded serial exactly these 16 bytes.
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

/// Now, truncated to whole seconds because that is all X.509 times can hold;
/// this keeps reported expiry times equal to what the certificate says.
fn now_utc_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

fn warn_if_exposed(path: &Path) {
    if let Ok(Some(mode)) = fsutil::mode_of(path) {
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "CA path is accessible to other users; it should be owner-only"
            );
        }
    }
}

#[cfg(test)]
mod tests;
