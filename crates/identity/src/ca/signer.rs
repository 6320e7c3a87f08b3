//! One immutable state of the CA: the roots peers trust, the key that signs
//! leaves, and the certificates shipped after each leaf.
//!
//! A [`Signer`] is built whole (and self-tested) before it replaces the
//! previous one, so issuing threads never see a half-rotated CA.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::{now_utc_seconds, random_serial, CaError, RootInfo, RootStatus, BACKDATE};
use crate::pem;
use crate::spiffe::SpiffeId;
use crate::tls::{self, TrustBundle};

/// Lifetime of the throw-away certificate a new signer verifies itself with.
const SELF_TEST_LIFETIME: Duration = Duration::from_secs(300);

/// A root in the trust bundle.
pub(super) struct Root {
    pub(super) der: CertificateDer<'static>,
    pub(super) fingerprint: String,
    pub(super) subject: String,
    pub(super) not_after: OffsetDateTime,
    pub(super) status: RootStatus,
}

impl Root {
    /// Reads what the CA reports about `der`; the caller has already checked
    /// that it parses.
    pub(super) fn new(der: CertificateDer<'static>, status: RootStatus) -> Result<Self, String> {
        let (subject, not_after) = {
            let (_, cert) = X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
            (
                cert.subject().to_string(),
                cert.validity().not_after.to_datetime(),
            )
        };
        Ok(Self {
            fingerprint: tls::cert_fingerprint(&der),
            der,
            subject,
            not_after,
            status,
        })
    }

    pub(super) fn info(&self) -> RootInfo {
        RootInfo {
            fingerprint_sha256_hex: self.fingerprint.clone(),
            subject: self.subject.clone(),
            not_after: self.not_after.into(),
            status: self.status,
        }
    }
}

/// A freshly signed leaf.
pub(super) struct Leaf {
    pub(super) der: CertificateDer<'static>,
    pub(super) serial_hex: String,
    pub(super) not_after: SystemTime,
}

/// Everything needed to issue under one CA state.
pub(super) struct Signer {
    roots: Vec<Root>,
    /// Index in `roots` of the root leaves chain up to.
    signing_root: usize,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
    /// Sent after every leaf: intermediates, or the cross-certificate.
    chain_tail: Vec<CertificateDer<'static>>,
    /// No leaf may outlive this: the earliest expiry among the issuing
    /// certificate, the chain tail and the signing root.
    leaf_limit: OffsetDateTime,
    bundle: TrustBundle,
    bundle_pem: String,
}

impl Signer {
    /// Assembles a signer and checks that what it issues verifies against its
    /// bundle (and against each retiring root alone, as peers that have not
    /// received the new bundle yet see it).
    ///
    /// `issuer_cert` is the certificate of `key`; the callers have validated
    /// every certificate passed in.
    pub(super) fn new(
        trust_domain: &str,
        roots: Vec<Root>,
        signing_root: usize,
        issuer_cert: &CertificateDer<'_>,
        key: KeyPair,
        chain_tail: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CaError> {
        let self_test = |reason: String| CaError::SelfTest { reason };
        let root_not_after = roots
            .get(signing_root)
            .map(|root| root.not_after)
            .ok_or_else(|| self_test("the signing root is not in the bundle".to_owned()))?;
        let issuer_not_after = not_after_of(issuer_cert).map_err(self_test)?;
        let mut leaf_limit = issuer_not_after.min(root_not_after);
        for cert in &chain_tail {
            leaf_limit = leaf_limit.min(not_after_of(cert).map_err(self_test)?);
        }
        let issuer = Issuer::from_ca_cert_der(issuer_cert, key)
            .map_err(|e| self_test(format!("the signing certificate is unusable: {e}")))?;
        let bundle = TrustBundle {
            roots: roots.iter().map(|root| root.der.clone()).collect(),
            explicit_trust_domain: Some(trust_domain.to_owned()),
        };
        // Fails here, with a clear error, rather than in every TLS config later.
        bundle
            .trust_domain()
            .map_err(|source| CaError::Bundle { source })?;
        let bundle_pem = pem::certs_to_pem(&bundle.roots);
        let signer = Self {
            roots,
            signing_root,
            issuer,
            issuer_not_after,
            chain_tail,
            leaf_limit,
            bundle,
            bundle_pem,
        };
        signer.self_test(trust_domain)?;
        Ok(signer)
    }

    pub(super) fn roots(&self) -> &[Root] {
        &self.roots
    }

    pub(super) fn signing_root(&self) -> &Root {
        // `new` checked the index and nothing changes it afterwards.
        &self.roots[self.signing_root]
    }

    pub(super) fn issuer_not_after(&self) -> OffsetDateTime {
        self.issuer_not_after
    }

    pub(super) fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    pub(super) fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// `leaf` followed by what peers need to reach a root.
    pub(super) fn chain(&self, leaf: CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        let mut chain = Vec::with_capacity(1 + self.chain_tail.len());
        chain.push(leaf);
        chain.extend(self.chain_tail.iter().cloned());
        chain
    }

    /// Issues an X.509-SVID leaf for `id` and `public_key`.
    pub(super) fn issue(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        lifetime: Duration,
    ) -> Result<Leaf, CaError> {
        let leaf = self.sign_leaf(id, public_key, lifetime)?;
        tracing::info!(
            spiffe_id = %id,
            serial = %leaf.serial_hex,
            not_after = ?leaf.not_after,
            root = %self.signing_root().fingerprint,
            "issued certificate"
        );
        Ok(leaf)
    }

    fn sign_leaf(
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
        if self.leaf_limit <= now {
            return Err(CaError::IssuerExpired {
                not_after: self.leaf_limit,
            });
        }
        // A leaf that outlived a certificate of its chain would be rejected
        // from then on anyway; saying so in its notAfter lets the holder renew
        // in time.
        let not_after = if not_after > self.leaf_limit {
            tracing::warn!(
                requested = ?lifetime,
                limit = %self.leaf_limit,
                "certificate lifetime cut short at the CA chain's expiry"
            );
            self.leaf_limit
        } else {
            not_after
        };
        Ok((now.checked_sub(BACKDATE).unwrap_or(now), not_after))
    }

    fn self_test(&self, trust_domain: &str) -> Result<(), CaError> {
        let id = SpiffeId::new(trust_domain, "trellis-system", "ca-self-test");
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
                action: "generate the self-test key",
                source,
            })?;
        let leaf = self.sign_leaf(&id, &key, SELF_TEST_LIFETIME)?;
        let chain = self.chain(leaf.der);
        let mut bundles = vec![("the trust bundle".to_owned(), self.bundle.clone())];
        for root in &self.roots {
            if root.status == RootStatus::Retiring {
                bundles.push((
                    format!("the retiring root {:?} alone", root.subject),
                    TrustBundle {
                        roots: vec![root.der.clone()],
                        explicit_trust_domain: Some(trust_domain.to_owned()),
                    },
                ));
            }
        }
        for (what, bundle) in bundles {
            let verified = tls::verify_chain_for_mesh(&bundle, &chain).map_err(|reason| {
                CaError::SelfTest {
                    reason: format!("a test certificate does not verify against {what}: {reason}"),
                }
            })?;
            if verified != id {
                return Err(CaError::SelfTest {
                    reason: format!("a test certificate for {id} verified as {verified}"),
                });
            }
        }
        Ok(())
    }

    /// See `CertificateAuthority::issue_custom`.
    #[cfg(test)]
    pub(super) fn issue_custom(
        &self,
        leaf: &super::CustomLeaf,
    ) -> (
        CertificateDer<'static>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ) {
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
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
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

fn not_after_of(der: &[u8]) -> Result<OffsetDateTime, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.to_datetime())
}
