//! The mesh's root certificate authority.
//!
//! The control plane owns one self-signed ECDSA P-256 root per trust domain,
//! stored as `<data_dir>/ca/root.pem` and `<data_dir>/ca/root-key.pem`. It is
//! created on first start and loaded unchanged afterwards, so proxies keep
//! trusting the same bundle across restarts. The root signs short-lived
//! X.509-SVIDs directly (no intermediates): from proxies' CSRs via
//! [`CertificateAuthority::sign_csr`], or with an in-process key for the
//! control plane's own serving certificate via
//! [`CertificateAuthority::issue_with_local_key`].
//!
//! The CA directory is assumed to be owned by a single control-plane process.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::fsutil;
use crate::pem;
use crate::spiffe::{spiffe_id_from_uris, validate_trust_domain, SpiffeError, SpiffeId};
use crate::tls::{Svid, TlsError, TrustBundle};

const ROOT_COMMON_NAME: &str = "Trellis root CA";
const ROOT_VALIDITY: time::Duration = time::Duration::days(3650);
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
    /// The stored root certificate is unusable.
    #[error("root CA certificate {} is invalid: {reason}", path.display())]
    InvalidRoot {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored root key is unusable.
    #[error("root CA key {} is invalid: {reason}", path.display())]
    InvalidRootKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored root key does not belong to the stored root certificate.
    #[error("root CA key {} does not match certificate {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file.
        key_path: PathBuf,
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
    /// The stored root has expired.
    #[error("root CA certificate {} expired at {not_after}", path.display())]
    RootExpired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: OffsetDateTime,
    },
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
    /// The trust bundle could not be built from the root.
    #[error("cannot build the trust bundle: {source}")]
    Bundle {
        /// The underlying error.
        #[source]
        source: TlsError,
    },
}

/// A certificate issued from a CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// The leaf certificate as PEM (the root is not included; peers get it
    /// from the trust bundle).
    pub cert_chain_pem: String,
    /// The certificate serial number, lowercase hex.
    pub serial_hex: String,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

/// The mesh root CA: its certificate and signing key.
pub struct CertificateAuthority {
    trust_domain: String,
    root_pem: String,
    root_der: CertificateDer<'static>,
    root_not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key stays out of logs.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("root_not_after", &self.root_not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the root CA from `data_dir/ca/`, creating it on first start.
    ///
    /// A new root is an ECDSA P-256 self-signed CA certificate (CN
    /// "Trellis root CA", O = `trust_domain`, valid ten years). The key file is
    /// created with mode 0600 and the `ca` directory with mode 0700. An existing
    /// root must belong to `trust_domain`, match its key and not be expired.
    pub fn load_or_create(data_dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        validate_trust_domain(trust_domain).map_err(|source| CaError::InvalidTrustDomain {
            trust_domain: trust_domain.to_owned(),
            source,
        })?;
        let ca_dir = data_dir.join("ca");
        let cert_path = ca_dir.join("root.pem");
        let key_path = ca_dir.join("root-key.pem");

        std::fs::create_dir_all(data_dir).map_err(io_err("create data directory", data_dir))?;
        fsutil::create_dir(&ca_dir, fsutil::PRIVATE_DIR_MODE)
            .map_err(io_err("create CA directory", &ca_dir))?;
        warn_if_exposed(&ca_dir);

        let cert_exists = cert_path
            .try_exists()
            .map_err(io_err("check", &cert_path))?;
        let key_exists = key_path.try_exists().map_err(io_err("check", &key_path))?;
        match (cert_exists, key_exists) {
            (true, true) => Self::load(trust_domain, &cert_path, &key_path),
            (false, false) => Self::create(trust_domain, &cert_path, &key_path),
            (true, false) => Err(CaError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    fn load(trust_domain: &str, cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        warn_if_exposed(key_path);
        let cert_pem = std::fs::read_to_string(cert_path)
            .map_err(io_err("read root CA certificate", cert_path))?;
        let key_pem =
            std::fs::read_to_string(key_path).map_err(io_err("read root CA key", key_path))?;
        let ca = Self::from_pem(trust_domain, cert_pem, &key_pem, cert_path, key_path)?;
        tracing::info!(trust_domain, path = %cert_path.display(), "loaded root CA");
        Ok(ca)
    }

    fn create(trust_domain: &str, cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
                action: "generate the root CA key",
                source,
            })?;
        let now = now_utc_seconds();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, ROOT_COMMON_NAME);
        name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = name;
        params.not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        params.not_after = now + ROOT_VALIDITY;
        params.serial_number = Some(random_serial().0);
        // Path length 0: the root signs workload certificates directly.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::Generate {
                action: "self-sign the root CA certificate",
                source,
            })?;
        let cert_pem = pem::cert_to_pem(cert.der());
        let key_pem = key.serialize_pem();

        // Key first: if we die in between, the next start finds a key without
        // a certificate and reports it instead of silently minting a new root.
        fsutil::write_atomic(key_path, key_pem.as_bytes(), fsutil::PRIVATE_FILE_MODE)
            .map_err(io_err("write root CA key", key_path))?;
        fsutil::write_atomic(cert_path, cert_pem.as_bytes(), fsutil::PUBLIC_FILE_MODE)
            .map_err(io_err("write root CA certificate", cert_path))?;
        tracing::info!(trust_domain, path = %cert_path.display(), "created new root CA");
        Self::from_pem(trust_domain, cert_pem, &key_pem, cert_path, key_path)
    }

    fn from_pem(
        trust_domain: &str,
        cert_pem: String,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, CaError> {
        let invalid_root = |reason: String| CaError::InvalidRoot {
            path: cert_path.to_owned(),
            reason,
        };
        let certs = pem::certs_from_pem(&cert_pem).map_err(|e| invalid_root(e.to_string()))?;
        let root_der = match <[CertificateDer<'static>; 1]>::try_from(certs) {
            Ok([root]) => root,
            Err(certs) => {
                return Err(invalid_root(format!(
                    "expected exactly one certificate, found {}",
                    certs.len()
                )))
            }
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::InvalidRootKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;

        let root_not_after = {
            let (_, x509) = X509Certificate::from_der(&root_der)
                .map_err(|e| invalid_root(format!("unparseable: {e}")))?;
            if !x509.is_ca() {
                return Err(invalid_root("not a CA certificate".to_owned()));
            }
            let orgs: Vec<&str> = x509
                .subject()
                .iter_organization()
                .filter_map(|attr| attr.as_str().ok())
                .collect();
            if orgs != [trust_domain] {
                return Err(CaError::TrustDomainMismatch {
                    path: cert_path.to_owned(),
                    found: orgs.join(", "),
                    expected: trust_domain.to_owned(),
                });
            }
            if key.subject_public_key_info() != x509.public_key().raw {
                return Err(CaError::KeyMismatch {
                    cert_path: cert_path.to_owned(),
                    key_path: key_path.to_owned(),
                });
            }
            x509.validity().not_after.to_datetime()
        };
        if root_not_after <= OffsetDateTime::now_utc() {
            return Err(CaError::RootExpired {
                path: cert_path.to_owned(),
                not_after: root_not_after,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&root_der, key)
            .map_err(|e| invalid_root(format!("unusable as issuer: {e}")))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            root_pem: cert_pem,
            root_der,
            root_not_after,
            issuer,
        })
    }

    /// The root certificate as PEM, byte-identical to `ca/root.pem`.
    pub fn trust_bundle_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The root certificate as a [`TrustBundle`].
    pub fn trust_bundle(&self) -> TrustBundle {
        TrustBundle {
            roots: vec![self.root_der.clone()],
        }
    }

    /// The trust domain this CA issues identities in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// When the root certificate expires.
    pub fn root_not_after(&self) -> SystemTime {
        self.root_not_after.into()
    }

    /// Issues a leaf certificate for the identity requested in a DER PKCS#10 CSR.
    ///
    /// The CSR's signature must verify and it must request exactly one SPIFFE
    /// ID (as a URI SAN) in this CA's trust domain; `authorize` then decides
    /// whether the requester may have that identity (its `Err` becomes
    /// [`CaError::NotAuthorized`]). Anything else the CSR asks for (subject,
    /// other SANs, extensions) is ignored: the certificate always has the fixed
    /// SVID profile. Lifetimes beyond the root's expiry are cut short.
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
        if let Err(reason) = authorize(&id) {
            let err = CaError::NotAuthorized {
                requested: id.to_string(),
                reason,
            };
            tracing::warn!(error = %err, "refused CSR");
            return Err(err);
        }
        let leaf = self.issue_leaf(&id, &public_key, lifetime)?;
        Ok(IssuedCert {
            cert_chain_pem: pem::cert_to_pem(&leaf.der),
            spiffe_id: id,
            serial_hex: leaf.serial_hex,
            not_after: leaf.not_after,
        })
    }

    /// Issues a leaf certificate for `id` with a key generated in-process,
    /// e.g. for the control plane's own serving certificate.
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
        let leaf = self.issue_leaf(id, &key, lifetime)?;
        Ok(Svid {
            id: id.clone(),
            cert_chain: vec![leaf.der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            not_after: leaf.not_after,
        })
    }

    fn issue_leaf(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        lifetime: Duration,
    ) -> Result<Leaf, CaError> {
        let (not_before, not_after) = self.leaf_validity(lifetime)?;
        let (serial, serial_hex) = random_serial();
        let sign_err = |source| CaError::Sign {
            id: id.to_string(),
            source,
        };
        let params = leaf_params(
            &[id.to_string()],
            not_before,
            not_after,
            serial,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
        .map_err(sign_err)?;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(sign_err)?;
        tracing::info!(spiffe_id = %id, serial = %serial_hex, %not_after, "issued certificate");
        Ok(Leaf {
            der: cert.der().clone(),
            serial_hex,
            not_after: not_after.into(),
        })
    }

    fn leaf_validity(
        &self,
        lifetime: Duration,
    ) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
        let invalid = |reason| CaError::InvalidLifetime { lifetime, reason };
        if lifetime.is_zero() {
            return Err(invalid("must be positive"));
        }
        let now = now_utc_seconds();
        let not_after = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|lifetime| now.checked_add(lifetime))
            .ok_or_else(|| invalid("too long"))?;
        // A leaf cannot outlive the root that vouches for it.
        let not_after = if not_after > self.root_not_after {
            tracing::warn!(
                requested = ?lifetime,
                root_not_after = %self.root_not_after,
                "certificate lifetime cut short at root CA expiry"
            );
            self.root_not_after
        } else {
            not_after
        };
        Ok((now.checked_sub(BACKDATE).unwrap_or(now), not_after))
    }

    /// Signs a leaf with an arbitrary profile, for tests that need certificates
    /// the CA would never issue (expired, wrong EKU, foreign trust domain...).
    #[cfg(test)]
    pub(crate) fn issue_custom(
        &self,
        leaf: &CustomLeaf,
    ) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("generate key");
        let params = leaf_params(
            &leaf.uris,
            leaf.not_before,
            leaf.not_after,
            random_serial().0,
            leaf.ekus.clone(),
        )
        .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
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

struct Leaf {
    der: CertificateDer<'static>,
    serial_hex: String,
    not_after: SystemTime,
}

/// The X.509-SVID leaf profile: empty subject, URI SANs only (rcgen marks the
/// SAN extension critical because the subject is empty, as SPIFFE requires),
/// not a CA.
fn leaf_params(
    uris: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: SerialNumber,
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| Ok(SanType::URI(uri.as_str().try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(serial);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = ekus;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
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
