//! Proxy-side key and certificate signing request generation.
//!
//! The private key never leaves the proxy: it generates a fresh ECDSA P-256
//! key, sends only the PKCS#10 CSR (which carries the requested SPIFFE ID as a
//! URI SAN) to the control plane, and pairs the returned certificate with the
//! key it kept.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::spiffe::{SpiffeError, SpiffeId};

/// Errors from generating a key and CSR.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The identity to request is not a valid SPIFFE ID.
    #[error("cannot request a certificate for {id}: {source}")]
    InvalidId {
        /// The rejected identity, as a URI.
        id: String,
        /// Why it was rejected.
        #[source]
        source: SpiffeError,
    },
    /// Key generation or CSR serialization failed.
    #[error("failed to {action} for {id}: {source}")]
    Generate {
        /// What was being done.
        action: &'static str,
        /// The identity the CSR was for.
        id: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
}

/// Generates a fresh ECDSA P-256 key and a DER-encoded PKCS#10 CSR for `id`.
///
/// The CSR's subject is empty and its only SAN is the SPIFFE URI, which is the
/// X.509-SVID profile the Trellis CA issues.
pub fn generate_csr(id: &SpiffeId) -> Result<(PrivateKeyDer<'static>, Vec<u8>), CsrError> {
    id.validate().map_err(|source| CsrError::InvalidId {
        id: id.to_string(),
        source,
    })?;
    let generate = |action: &'static str| {
        let id = id.to_string();
        move |source| CsrError::Generate { action, id, source }
    };

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("generate a key"))?;
    let uri = id
        .to_string()
        .try_into()
        .map_err(generate("encode the URI SAN"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .map_err(generate("serialize the CSR"))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((key_der, csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    #[test]
    fn csr_carries_uri_san_and_verifies() {
        let id = SpiffeId::new("trellis.local", "default", "web");
        let (key, der) = generate_csr(&id).unwrap();
        let (rest, csr) = X509CertificationRequest::from_der(&der).unwrap();
        assert!(rest.is_empty());
        csr.verify_signature().unwrap();
        let uris: Vec<String> = csr
            .requested_extensions()
            .unwrap()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec![id.to_string()]);

        // The returned key is the one whose public half is in the CSR.
        let pair = KeyPair::try_from(&key).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&pair),
            csr.certification_request_info.subject_pki.raw
        );
    }

    #[test]
    fn rejects_invalid_id() {
        let id = SpiffeId::new("trellis.local", "a/b", "web");
        assert!(matches!(generate_csr(&id), Err(CsrError::InvalidId { .. })));
    }
}
