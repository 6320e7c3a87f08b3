//! PEM encoding and decoding of certificates and private keys.
//!
//! Decoding is delegated to `rustls-pki-types`; encoding is done here because
//! none of our dependencies expose a general-purpose PEM writer.

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors from decoding PEM text.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The text is not valid PEM.
    #[error("invalid PEM in {what}: {source}")]
    Invalid {
        /// What was being decoded, e.g. "certificate chain".
        what: &'static str,
        /// Decoder diagnostics.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The text contains no item of the requested kind.
    #[error("no {what} found in PEM text")]
    Empty {
        /// What was being looked for, e.g. "CERTIFICATE block".
        what: &'static str,
    },
}

/// Decodes every `CERTIFICATE` block in `pem`, in order. At least one is required.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemError::Invalid {
            what: "certificates",
            source,
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            what: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// Decodes the first private key (PKCS#8, SEC1 or PKCS#1) in `pem`.
pub fn private_key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
            what: "PRIVATE KEY block",
        },
        source => PemError::Invalid {
            what: "private key",
            source,
        },
    })
}

/// Encodes one DER certificate as a `CERTIFICATE` PEM block.
pub fn cert_to_pem(der: &[u8]) -> String {
    encode_block("CERTIFICATE", der)
}

/// Encodes certificates as concatenated `CERTIFICATE` PEM blocks.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| cert_to_pem(c)).collect()
}

/// Encodes a private key with the PEM label matching its encoding.
pub fn private_key_to_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        // PKCS#8 is the only other encoding rustls knows; the enum is
        // non-exhaustive, so anything new is labelled generically too.
        _ => "PRIVATE KEY",
    };
    encode_block(label, key.secret_der())
}

fn encode_block(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // RFC 7468 asks for 64-character lines.
    for (i, ch) in body.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            out.push('\n');
        }
        out.push(ch);
    }
    out.push_str("\n-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_round_trip_matches_rcgen() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ours = cert_to_pem(cert.der());
        assert_eq!(ours.replace("\r\n", "\n"), cert.pem().replace("\r\n", "\n"));
        let decoded = certs_from_pem(&(ours.clone() + &ours)).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].as_ref(), cert.der().as_ref());
    }

    #[test]
    fn key_round_trip() {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let pem = private_key_to_pem(&der);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = private_key_from_pem(&pem).unwrap();
        assert_eq!(back.secret_der(), der.secret_der());
    }

    #[test]
    fn empty_inputs_are_errors() {
        assert!(matches!(certs_from_pem(""), Err(PemError::Empty { .. })));
        assert!(matches!(
            private_key_from_pem("garbage"),
            Err(PemError::Empty { .. })
        ));
        assert!(matches!(
            certs_from_pem("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(PemError::Invalid { .. })
        ));
    }
}
