//! User-supplied CA material: the operator's roots, and the intermediate that
//! signs leaves.
//!
//! Everything is checked before the CA issues anything, so that a mistake in
//! the files is one clear error at startup instead of every workload's
//! handshakes failing later:
//!
//! * the roots file holds at least one certificate usable as a trust anchor;
//!   the root the intermediate chains to must be currently valid (other
//!   expired roots only draw a warning: they are inert);
//! * every certificate in the intermediate file is a CA certificate
//!   (basicConstraints cA) allowed to sign certificates (keyUsage
//!   keyCertSign) and currently valid;
//! * the key matches the first certificate of the intermediate file;
//! * each certificate of that file is issued by the next one, and the last by
//!   one of the roots: the issuer name matches and the signature verifies.
//!
//! The roots' subject names are not interpreted: the trust domain is the
//! configured one, stated explicitly in the bundle.

use std::path::Path;

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::signer::{Root, Signer};
use super::{io_err, warn_if_exposed, CaError, RootStatus};
use crate::pem;

/// Loads and validates the operator's files and builds the signer: leaves are
/// issued by the intermediate and shipped with every certificate of the
/// intermediate file.
pub(super) fn load(
    trust_domain: &str,
    roots_path: &Path,
    intermediate_path: &Path,
    key_path: &Path,
) -> Result<Signer, CaError> {
    let now = OffsetDateTime::now_utc();

    let invalid_root = |reason: String| CaError::InvalidRoot {
        path: roots_path.to_owned(),
        reason,
    };
    let roots_text = std::fs::read_to_string(roots_path)
        .map_err(io_err("read root CA certificates", roots_path))?;
    let root_ders = pem::certs_from_pem(&roots_text).map_err(|e| invalid_root(e.to_string()))?;
    let roots = parse_all(&root_ders).map_err(invalid_root)?;
    for (index, der) in root_ders.iter().enumerate() {
        webpki::anchor_from_trusted_cert(der).map_err(|e| {
            invalid_root(format!(
                "certificate #{index} is not a usable trust anchor: {e:?}"
            ))
        })?;
    }

    let invalid_intermediate = |reason: String| CaError::InvalidIntermediate {
        path: intermediate_path.to_owned(),
        reason,
    };
    let chain_text = std::fs::read_to_string(intermediate_path).map_err(io_err(
        "read intermediate CA certificate",
        intermediate_path,
    ))?;
    let chain_ders =
        pem::certs_from_pem(&chain_text).map_err(|e| invalid_intermediate(e.to_string()))?;
    let chain = parse_all(&chain_ders).map_err(invalid_intermediate)?;
    for cert in &chain {
        check_issuing_ca(cert, intermediate_path)?;
        check_validity(cert, intermediate_path, now)?;
    }
    let Some((intermediate, _)) = chain.split_first() else {
        return Err(invalid_intermediate("no certificate".to_owned()));
    };

    warn_if_exposed(key_path);
    let invalid_key = |reason: String| CaError::InvalidIntermediateKey {
        path: key_path.to_owned(),
        reason,
    };
    let key_text =
        std::fs::read_to_string(key_path).map_err(io_err("read intermediate CA key", key_path))?;
    let key_der = pem::private_key_from_pem(&key_text).map_err(|e| invalid_key(e.to_string()))?;
    let key = KeyPair::try_from(&key_der).map_err(|e| invalid_key(e.to_string()))?;
    if key.subject_public_key_info() != intermediate.public_key().raw {
        return Err(CaError::KeyMismatch {
            cert_path: intermediate_path.to_owned(),
            key_path: key_path.to_owned(),
        });
    }

    let not_chained = |reason: String| CaError::NotChained {
        path: intermediate_path.to_owned(),
        subject: intermediate.subject().to_string(),
        roots_path: roots_path.to_owned(),
        reason,
    };
    for (index, pair) in chain.windows(2).enumerate() {
        if let [cert, issuer] = pair {
            issued_by(cert, issuer).map_err(|reason| {
                not_chained(format!(
                    "certificate #{index} of the intermediate file is not issued by the next \
                     one: {reason}"
                ))
            })?;
        }
    }
    let top = chain.last().unwrap_or(intermediate);
    let mut failures = Vec::new();
    let mut anchor = None;
    for (index, root) in roots.iter().enumerate() {
        match issued_by(top, root) {
            Ok(()) => {
                anchor = Some(index);
                break;
            }
            Err(reason) => failures.push(format!("root #{index}: {reason}")),
        }
    }
    let anchor = anchor.ok_or_else(|| not_chained(failures.join("; ")))?;

    for (index, root) in roots.iter().enumerate() {
        if index == anchor {
            check_validity(root, roots_path, now)?;
        } else if root.validity().not_after.to_datetime() <= now {
            tracing::warn!(
                path = %roots_path.display(),
                subject = %root.subject(),
                "a supplied root has expired; it is still distributed but nothing can chain to it"
            );
        }
    }

    let bundle_roots = root_ders
        .iter()
        .map(|der| Root::new(der.clone(), RootStatus::Active).map_err(invalid_root))
        .collect::<Result<Vec<_>, _>>()?;
    let signer = Signer::new(
        trust_domain,
        bundle_roots,
        anchor,
        &chain_ders[0],
        key,
        chain_ders.clone(),
    )?;
    tracing::info!(
        trust_domain,
        intermediate = %intermediate.subject(),
        path = %intermediate_path.display(),
        "loaded user-supplied CA"
    );
    Ok(signer)
}

fn parse_all<'a>(ders: &'a [CertificateDer<'static>]) -> Result<Vec<X509Certificate<'a>>, String> {
    ders.iter()
        .enumerate()
        .map(|(index, der)| match X509Certificate::from_der(der) {
            Ok(([], cert)) => Ok(cert),
            Ok((rest, _)) => Err(format!(
                "certificate #{index} has {} trailing bytes",
                rest.len()
            )),
            Err(e) => Err(format!("certificate #{index} is unparseable: {e}")),
        })
        .collect()
}

/// A certificate that is to sign certificates must say it may.
fn check_issuing_ca(cert: &X509Certificate<'_>, path: &Path) -> Result<(), CaError> {
    let not_a_ca = |reason| CaError::NotACa {
        path: path.to_owned(),
        subject: cert.subject().to_string(),
        reason,
    };
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(_) => return Err(not_a_ca("basicConstraints does not have cA set")),
        Err(_) => return Err(not_a_ca("its basicConstraints extension is malformed")),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => Ok(()),
        Ok(Some(_)) => Err(not_a_ca("keyUsage does not include keyCertSign")),
        Ok(None) => Err(not_a_ca(
            "it has no keyUsage extension (keyCertSign is required)",
        )),
        Err(_) => Err(not_a_ca("its keyUsage extension is malformed")),
    }
}

fn check_validity(
    cert: &X509Certificate<'_>,
    path: &Path,
    now: OffsetDateTime,
) -> Result<(), CaError> {
    let validity = cert.validity();
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();
    if not_after <= now {
        return Err(CaError::CertificateExpired {
            path: path.to_owned(),
            subject: cert.subject().to_string(),
            not_after,
        });
    }
    if not_before > now {
        return Err(CaError::NotYetValid {
            path: path.to_owned(),
            subject: cert.subject().to_string(),
            not_before,
        });
    }
    Ok(())
}

/// Whether `issuer` issued `cert`: its name is `cert`'s issuer name (compared
/// byte for byte, as path builders do) and its key verifies `cert`'s
/// signature.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), String> {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "{:?} names its issuer {:?}, not {:?}",
            cert.subject().to_string(),
            cert.issuer().to_string(),
            issuer.subject().to_string()
        ));
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|e| {
            format!(
                "the signature on {:?} does not verify with the key of {:?}: {e}",
                cert.subject().to_string(),
                issuer.subject().to_string()
            )
        })
}
