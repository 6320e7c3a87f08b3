//! rustls configurations for mesh traffic, authenticated by SPIFFE ID.
//!
//! Both sides of a Trellis connection present X.509-SVIDs issued by the mesh
//! CA. Peers are authenticated by the SPIFFE ID in the certificate's URI SAN,
//! never by hostname: the client ignores the `ServerName` it was given and
//! instead checks the server's ID against an [`ExpectedPeer`] policy, and the
//! server accepts any client whose ID lies in the bundle's trust domain (finer
//! authorization is the caller's job, using [`peer_identity`]).
//!
//! Everything is TLS 1.3 only, negotiates ALPN `h2`, and prefers the hybrid
//! post-quantum key exchange X25519MLKEM768.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
    SupportedCipherSuite,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::pem::{self, PemError};
use crate::spiffe::{spiffe_id_from_cert, SpiffeError, SpiffeId};

/// The only application protocol mesh connections speak.
pub const ALPN_H2: &[u8] = b"h2";

/// Errors from building TLS configurations or reading identities.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// PEM text could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Pem {
        /// What was being decoded.
        what: &'static str,
        /// Decoder diagnostics.
        #[source]
        source: PemError,
    },
    /// The trust bundle has no root certificates.
    #[error("trust bundle contains no root certificates")]
    EmptyBundle,
    /// A root in the trust bundle cannot be used as a trust anchor.
    #[error("trust bundle root #{index} is unusable: {reason}")]
    InvalidRoot {
        /// Position of the root in the bundle.
        index: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// The bundle's trust domain cannot be determined.
    #[error("cannot determine the trust bundle's trust domain: {reason}")]
    BundleTrustDomain {
        /// Why it could not be determined.
        reason: String,
    },
    /// An SVID has no certificates.
    #[error("SVID certificate chain is empty")]
    EmptyChain,
    /// The SVID's leaf certificate does not carry a usable SPIFFE ID.
    #[error("SVID certificate has no usable SPIFFE ID: {source}")]
    SvidIdentity {
        /// Why the ID was rejected.
        #[source]
        source: SpiffeError,
    },
    /// The SVID's leaf certificate cannot be parsed.
    #[error("SVID certificate is unreadable: {reason}")]
    SvidCertificate {
        /// Parser diagnostics.
        reason: String,
    },
    /// The SVID's private key is unusable or does not match its certificate.
    #[error("SVID private key for {id} is unusable: {source}")]
    SvidKey {
        /// The SVID's identity.
        id: String,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// The expected-peer policy can never match a peer trusted by the bundle.
    #[error("invalid expected peer {expected}: {reason}")]
    InvalidExpectedPeer {
        /// The policy, as displayed.
        expected: String,
        /// Why it can never match.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot build the TLS {side} configuration: {source}")]
    Config {
        /// "client" or "server".
        side: &'static str,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate does not carry a usable SPIFFE ID.
    #[error("peer certificate has no usable SPIFFE ID: {source}")]
    PeerIdentity {
        /// Why the ID was rejected.
        #[source]
        source: SpiffeError,
    },
}

/// The set of root certificates that peers' certificates must chain to, and
/// the trust domain their SPIFFE IDs must lie in.
///
/// The trust domain is either stated explicitly
/// ([`TrustBundle::explicit_trust_domain`], set by
/// [`TrustBundle::from_pem_with_domain`] and by the CA) or, when absent, taken
/// from the roots' common subject organization (O), which is how the Trellis
/// self-signed CA names its roots. User-supplied roots (see
/// [`crate::ca::CaSource::Files`]) usually carry some other O, so bundles of
/// them must state the trust domain explicitly.
///
/// PEM holds only the roots: [`TrustBundle::to_pem`] drops the explicit trust
/// domain, and whoever parses the PEM again supplies it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    /// DER-encoded root CA certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// The trust domain peers must belong to; `None` means "the roots'
    /// common subject O".
    pub explicit_trust_domain: Option<String>,
}

impl TrustBundle {
    /// Parses a bundle from concatenated `CERTIFICATE` PEM blocks; its trust
    /// domain is the roots' subject O.
    pub fn from_pem(pem: &str) -> Result<Self, TlsError> {
        let roots = pem::certs_from_pem(pem).map_err(|source| TlsError::Pem {
            what: "trust bundle",
            source,
        })?;
        let bundle = Self {
            roots,
            explicit_trust_domain: None,
        };
        bundle.trust_anchors()?;
        Ok(bundle)
    }

    /// Parses a bundle from concatenated `CERTIFICATE` PEM blocks, for peers in
    /// `trust_domain` whatever the roots' subject names say.
    pub fn from_pem_with_domain(pem: &str, trust_domain: &str) -> Result<Self, TlsError> {
        let mut bundle = Self::from_pem(pem)?;
        crate::spiffe::validate_trust_domain(trust_domain).map_err(|e| {
            TlsError::BundleTrustDomain {
                reason: e.to_string(),
            }
        })?;
        bundle.explicit_trust_domain = Some(trust_domain.to_owned());
        Ok(bundle)
    }

    /// SHA-256 fingerprints (lowercase hex) of the roots, in bundle order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|root| cert_fingerprint(root))
            .collect()
    }

    /// Encodes the bundle as concatenated `CERTIFICATE` PEM blocks.
    pub fn to_pem(&self) -> String {
        pem::certs_to_pem(&self.roots)
    }

    /// The trust domain peers must belong to: the explicit one if set,
    /// otherwise the roots' common subject O.
    pub fn trust_domain(&self) -> Result<String, TlsError> {
        if let Some(td) = &self.explicit_trust_domain {
            if self.roots.is_empty() {
                return Err(TlsError::EmptyBundle);
            }
            // The field is public, so it may not have gone through
            // `from_pem_with_domain`'s check.
            crate::spiffe::validate_trust_domain(td).map_err(|e| TlsError::BundleTrustDomain {
                reason: e.to_string(),
            })?;
            return Ok(td.clone());
        }
        let mut found: Option<String> = None;
        for (index, root) in self.roots.iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(root).map_err(|e| TlsError::InvalidRoot {
                index,
                reason: e.to_string(),
            })?;
            let orgs: Vec<&str> = cert
                .subject()
                .iter_organization()
                .map(|attr| attr.as_str())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::BundleTrustDomain {
                    reason: format!("root #{index} has an unreadable organization: {e}"),
                })?;
            let [org] = orgs.as_slice() else {
                return Err(TlsError::BundleTrustDomain {
                    reason: format!(
                        "root #{index} must have exactly one subject organization (O), has {}",
                        orgs.len()
                    ),
                });
            };
            crate::spiffe::validate_trust_domain(org).map_err(|e| TlsError::BundleTrustDomain {
                reason: format!("root #{index}: {e}"),
            })?;
            match &found {
                Some(td) if td != org => {
                    return Err(TlsError::BundleTrustDomain {
                        reason: format!(
                            "roots disagree: {td:?} and {org:?}; a bundle holds one trust domain"
                        ),
                    })
                }
                Some(_) => {}
                None => found = Some((*org).to_owned()),
            }
        }
        found.ok_or(TlsError::EmptyBundle)
    }

    fn trust_anchors(&self) -> Result<Vec<TrustAnchor<'static>>, TlsError> {
        if self.roots.is_empty() {
            return Err(TlsError::EmptyBundle);
        }
        self.roots
            .iter()
            .enumerate()
            .map(|(index, root)| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|e| TlsError::InvalidRoot {
                        index,
                        reason: format!("{e:?}"),
                    })
            })
            .collect()
    }
}

/// A workload's X.509-SVID: its certificate chain and private key.
#[derive(Debug)]
pub struct Svid {
    /// The SPIFFE ID in the leaf certificate.
    pub id: SpiffeId,
    /// Leaf first, then any intermediates (the root is not included).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// When the leaf certificate expires.
    pub not_after: SystemTime,
}

impl Clone for Svid {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            not_after: self.not_after,
        }
    }
}

impl Svid {
    /// Assembles an SVID from a PEM certificate chain (leaf first) and the
    /// leaf's private key, checking that the key belongs to the leaf.
    pub fn from_pem(chain_pem: &str, key_der: PrivateKeyDer<'static>) -> Result<Self, TlsError> {
        let cert_chain = pem::certs_from_pem(chain_pem).map_err(|source| TlsError::Pem {
            what: "SVID certificate chain",
            source,
        })?;
        Self::from_der(cert_chain, key_der)
    }

    /// Assembles an SVID from DER certificates (leaf first) and the leaf's
    /// private key, checking that the key belongs to the leaf.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let leaf = cert_chain.first().ok_or(TlsError::EmptyChain)?;
        let id = spiffe_id_from_cert(leaf).map_err(|source| TlsError::SvidIdentity { source })?;
        let not_after = leaf_not_after(leaf)?;
        // Catch a key/certificate mix-up here rather than at the first handshake.
        rustls::sign::CertifiedKey::from_der(cert_chain.clone(), key.clone_key(), &provider())
            .map_err(|source| TlsError::SvidKey {
                id: id.to_string(),
                source,
            })?;
        Ok(Self {
            id,
            cert_chain,
            key,
            not_after,
        })
    }

    /// The certificate chain as concatenated PEM blocks.
    pub fn cert_chain_pem(&self) -> String {
        pem::certs_to_pem(&self.cert_chain)
    }

    /// The private key as a PEM block.
    pub fn key_pem(&self) -> String {
        pem::private_key_to_pem(&self.key)
    }

    /// The SHA-256 fingerprint (lowercase hex) of the root in `bundle` that
    /// this SVID's chain verifies against now, or `None` if it verifies against
    /// none of them (or has expired).
    ///
    /// Roots are tried in bundle order, but a root that issued a certificate of
    /// the chain directly wins over a path through a cross-certificate: during a
    /// root rotation, a certificate issued under the new root reports the new
    /// root whenever the bundle holds it. The trust domain is not checked.
    pub fn issuer_root_fingerprint(&self, bundle: &TrustBundle) -> Option<String> {
        let anchors = bundle.trust_anchors().ok()?;
        let (leaf, intermediates) = self.cert_chain.split_first()?;
        let leaf = EndEntityCert::try_from(leaf).ok()?;
        let algs = provider().signature_verification_algorithms.all;
        let now = UnixTime::now();
        // Our leaves carry both usages, but a foreign one may carry only one.
        let path = [KeyUsage::server_auth(), KeyUsage::client_auth()]
            .into_iter()
            .find_map(|usage| {
                leaf.verify_for_usage(algs, &anchors, intermediates, now, usage, None, None)
                    .ok()
            })?;
        let anchor = path.anchor();
        anchors
            .iter()
            .zip(&bundle.roots)
            .find(|(candidate, _)| {
                candidate.subject == anchor.subject
                    && candidate.subject_public_key_info == anchor.subject_public_key_info
            })
            .map(|(_, root)| cert_fingerprint(root))
    }
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex: how Trellis
/// names roots in snapshots, logs and the CA state.
pub fn cert_fingerprint(cert_der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(cert_der))
}

/// Path-validates `chain` (leaf first) against `bundle` exactly as the TLS
/// verifiers do, for both client and server use, returning the leaf's
/// identity; the CA uses it to check its own issuance before relying on it.
pub(crate) fn verify_chain_for_mesh(
    bundle: &TrustBundle,
    chain: &[CertificateDer<'_>],
) -> Result<SpiffeId, String> {
    let verifier = ChainVerifier::new(bundle, provider()).map_err(|e| e.to_string())?;
    let (leaf, intermediates) = chain.split_first().ok_or("empty chain")?;
    let now = UnixTime::now();
    verifier
        .verify("server", leaf, intermediates, now, KeyUsage::server_auth())
        .map_err(|e| format!("as a server certificate: {e}"))?;
    verifier
        .verify("client", leaf, intermediates, now, KeyUsage::client_auth())
        .map_err(|e| format!("as a client certificate: {e}"))
}

fn leaf_not_after(leaf: &[u8]) -> Result<SystemTime, TlsError> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| TlsError::SvidCertificate {
        reason: e.to_string(),
    })?;
    let secs = cert.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| TlsError::SvidCertificate {
        reason: format!("notAfter {secs} is before 1970"),
    })?;
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(|| TlsError::SvidCertificate {
            reason: format!("notAfter {secs} is out of range"),
        })
}

/// Whether a server requires clients to present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients must present a valid SVID.
    Required,
    /// Clients may connect anonymously; if they present a certificate it must be valid.
    Optional,
}

/// Which server identities a client accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// Any workload in this trust domain.
    AnyInTrustDomain(String),
    /// Exactly one of these identities.
    OneOf(Vec<SpiffeId>),
}

impl ExpectedPeer {
    fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::AnyInTrustDomain(td) => id.trust_domain == *td,
            Self::OneOf(ids) => ids.contains(id),
        }
    }
}

impl fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AnyInTrustDomain(td) => write!(f, "any identity in trust domain {td:?}"),
            Self::OneOf(ids) => {
                f.write_str("one of [")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{id}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The aws-lc-rs provider restricted to what the mesh uses: TLS 1.3 suites and
/// hybrid post-quantum key exchange with classical fallbacks.
fn provider() -> Arc<CryptoProvider> {
    let base = aws_lc_rs::default_provider();
    Arc::new(CryptoProvider {
        // AES-128-GCM/SHA-256 first: on the machines measured, the SHA-384 key schedule of
        // the AES-256 suite cost 57 µs of a 494 µs full handshake and 67 µs of a 251 µs
        // resumed one (bench/src/bin/handshake.rs), for no security the mesh needs.
        cipher_suites: {
            let mut suites: Vec<SupportedCipherSuite> = base
                .cipher_suites
                .iter()
                .copied()
                .filter(|suite| matches!(suite, SupportedCipherSuite::Tls13(_)))
                .collect();
            suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            suites
        },
        kx_groups: vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
            aws_lc_rs::kx_group::SECP256R1,
        ],
        ..base
    })
}

/// Builds a server configuration presenting `svid` and verifying client SVIDs
/// against `bundle`.
pub fn server_config(
    svid: &Svid,
    bundle: &TrustBundle,
    client_auth: ClientAuth,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = SpiffeClientVerifier {
        chain: ChainVerifier::new(bundle, provider.clone())?,
        mandatory: client_auth == ClientAuth::Required,
    };
    let config_err = |source| TlsError::Config {
        side: "server",
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(svid.cert_chain.clone(), svid.key.clone_key())
        .map_err(|source| TlsError::SvidKey {
            id: svid.id.to_string(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Builds a client configuration that accepts only servers whose SVID chains
/// to `bundle` and matches `expected`, presenting `svid` if given.
///
/// The `ServerName` later passed to the connector is sent as SNI but plays no
/// part in authentication.
pub fn client_config(
    svid: Option<&Svid>,
    bundle: &TrustBundle,
    expected: ExpectedPeer,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let chain = ChainVerifier::new(bundle, provider.clone())?;
    check_expected(&expected, &chain.trust_domain)?;
    let verifier = SpiffeServerVerifier { chain, expected };
    let config_err = |source| TlsError::Config {
        side: "client",
        source,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match svid {
        Some(svid) => builder
            .with_client_auth_cert(svid.cert_chain.clone(), svid.key.clone_key())
            .map_err(|source| TlsError::SvidKey {
                id: svid.id.to_string(),
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A policy that cannot match anything is a configuration bug; report it now
/// rather than as a stream of handshake failures.
fn check_expected(expected: &ExpectedPeer, trust_domain: &str) -> Result<(), TlsError> {
    let invalid = |reason: String| TlsError::InvalidExpectedPeer {
        expected: expected.to_string(),
        reason,
    };
    match expected {
        ExpectedPeer::AnyInTrustDomain(td) if td != trust_domain => Err(invalid(format!(
            "the trust bundle is for trust domain {trust_domain:?}"
        ))),
        ExpectedPeer::AnyInTrustDomain(_) => Ok(()),
        ExpectedPeer::OneOf(ids) if ids.is_empty() => {
            Err(invalid("no identities listed".to_owned()))
        }
        ExpectedPeer::OneOf(ids) => match ids.iter().find(|id| id.trust_domain != trust_domain) {
            Some(id) => Err(invalid(format!(
                "{id} is outside the trust bundle's trust domain {trust_domain:?}"
            ))),
            None => Ok(()),
        },
    }
}

/// Reads the SPIFFE ID of a connection's peer from its (already verified)
/// certificate chain, e.g. `ServerConnection::peer_certificates()`.
pub fn peer_identity(conn_certs: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, TlsError> {
    let leaf = conn_certs
        .and_then(|certs| certs.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    spiffe_id_from_cert(leaf).map_err(|source| TlsError::PeerIdentity { source })
}

/// A SPIFFE-level rejection, carried to rustls as `CertificateError::Other`.
struct PeerRejected(String);

// rustls prints `CertificateError::Other` with `{:?}`, so Debug is what ends up
// in handshake error messages; keep it human-readable.
impl fmt::Debug for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerRejected {}

fn reject(peer: &'static str, reason: String) -> rustls::Error {
    tracing::warn!(peer, %reason, "rejected peer certificate");
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PeerRejected(
        reason,
    )))))
}

/// Maps path-validation failures to the closest rustls error, so the peer gets
/// a meaningful alert (e.g. certificate_expired).
fn reject_chain(peer: &'static str, err: webpki::Error) -> rustls::Error {
    tracing::warn!(peer, reason = ?err, "rejected peer certificate chain");
    let cert_err = match err {
        webpki::Error::CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }
        }
        webpki::Error::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        webpki::Error::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_err)
}

/// Path validation against the bundle plus the trust-domain check, shared by
/// both verifiers.
#[derive(Debug)]
struct ChainVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
}

impl ChainVerifier {
    fn new(bundle: &TrustBundle, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        Ok(Self {
            anchors: bundle.trust_anchors()?,
            trust_domain: bundle.trust_domain()?,
            provider,
        })
    }

    fn verify(
        &self,
        peer: &'static str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<SpiffeId, rustls::Error> {
        let cert = EndEntityCert::try_from(end_entity).map_err(|e| reject_chain(peer, e))?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| reject_chain(peer, e))?;
        // Only now is the certificate known to come from our CA, so only now
        // does its URI SAN mean anything.
        let id = spiffe_id_from_cert(end_entity).map_err(|e| reject(peer, e.to_string()))?;
        if id.trust_domain != self.trust_domain {
            return Err(reject(
                peer,
                format!(
                    "peer identity {id} is outside trust domain {:?}",
                    self.trust_domain
                ),
            ));
        }
        Ok(id)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server-side verifier of client SVIDs.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    chain: ChainVerifier,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    /// Builds a verifier accepting clients whose SVID chains to `bundle` and
    /// lies in its trust domain.
    pub fn new(bundle: &TrustBundle, client_auth: ClientAuth) -> Result<Self, TlsError> {
        Ok(Self {
            chain: ChainVerifier::new(bundle, provider())?,
            mandatory: client_auth == ClientAuth::Required,
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Clients have exactly one SVID, so hints would only leak the CA name.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain.verify(
            "client",
            end_entity,
            intermediates,
            now,
            KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Client-side verifier of server SVIDs.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    chain: ChainVerifier,
    expected: ExpectedPeer,
}

impl SpiffeServerVerifier {
    /// Builds a verifier accepting servers whose SVID chains to `bundle` and
    /// whose ID matches `expected`.
    pub fn new(bundle: &TrustBundle, expected: ExpectedPeer) -> Result<Self, TlsError> {
        let chain = ChainVerifier::new(bundle, provider())?;
        check_expected(&expected, &chain.trust_domain)?;
        Ok(Self { chain, expected })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        // Mesh identity is the SPIFFE ID; the name a caller dialled proves nothing.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = self.chain.verify(
            "server",
            end_entity,
            intermediates,
            now,
            KeyUsage::server_auth(),
        )?;
        if !self.expected.allows(&id) {
            return Err(reject(
                "server",
                format!("server presented identity {id}, expected {}", self.expected),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
