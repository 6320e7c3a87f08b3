//! Tests for the certificate authority: persistence, CSR signing and refusals.

use std::fs;
use std::time::Duration;

use rcgen::{CertificateParams, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

use super::*;
use crate::csr::generate_csr;
use crate::spiffe::spiffe_id_from_cert;

mod files;
mod rotation;

const TD: &str = "trellis.local";
const HOUR: Duration = Duration::from_secs(3600);

fn new_ca() -> (tempfile::TempDir, CertificateAuthority) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    (dir, ca)
}

fn allow(_: &SpiffeId) -> Result<(), String> {
    Ok(())
}

/// An SVID obtained the way a proxy gets one: local key, CSR, signed by the CA.
fn issue(ca: &CertificateAuthority, ns: &str, sa: &str) -> (Svid, IssuedCert) {
    let id = SpiffeId::new(ca.trust_domain(), ns, sa);
    let (key, csr) = generate_csr(&id).unwrap();
    let issued = ca.sign_csr(&csr, allow, HOUR).unwrap();
    let svid = Svid::from_pem(&issued.cert_chain_pem, key).unwrap();
    (svid, issued)
}

#[cfg(unix)]
#[test]
fn root_files_are_private() {
    let (dir, _ca) = new_ca();
    let ca_dir = dir.path().join("ca");
    assert_eq!(
        fsutil::mode_of(&ca_dir.join("root-key.pem")).unwrap(),
        Some(0o600)
    );
    assert_eq!(fsutil::mode_of(&ca_dir).unwrap(), Some(0o700));
    let leftovers: Vec<_> = fs::read_dir(&ca_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut leftovers: Vec<_> = leftovers
        .iter()
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, ["root-key.pem", "root.pem", "state.json"]);
}

#[test]
fn root_is_stable_across_restarts() {
    let (dir, first) = new_ca();
    let on_disk = fs::read_to_string(dir.path().join("ca/root.pem")).unwrap();
    assert_eq!(first.trust_bundle_pem(), on_disk);

    let second = CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(second.trust_bundle_pem(), first.trust_bundle_pem());
    assert_eq!(second.trust_bundle(), first.trust_bundle());
    assert_eq!(second.trust_domain(), TD);

    // A certificate issued before the restart still chains to the reloaded root.
    let svid = first
        .issue_with_local_key(&SpiffeId::new(TD, "ns", "sa"), HOUR)
        .unwrap();
    verify_chain(&second, &svid.cert_chain[0]);

    // A different data dir gets a different root.
    let (_other_dir, other) = new_ca();
    assert_ne!(other.trust_bundle_pem(), first.trust_bundle_pem());
}

#[test]
fn root_profile() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let (_, root) = X509Certificate::from_der(&bundle.roots[0]).unwrap();
    assert!(root.is_ca());
    let cn: Vec<_> = root
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["Trellis root CA"]);
    // Room for exactly one CA below it: its successor's cross-certificate.
    let bc = root.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(1));
    assert_eq!(bundle.trust_domain().unwrap(), TD);
    let ku = root.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let lifetime = root.validity().not_after.timestamp() - root.validity().not_before.timestamp();
    assert!(
        (3650 * 86400..=3650 * 86400 + 120).contains(&lifetime),
        "{lifetime}"
    );
    assert!(ca.root_not_after() > SystemTime::now() + Duration::from_secs(3649 * 86400));
}

#[test]
fn reload_refuses_other_trust_domain() {
    let (dir, _ca) = new_ca();
    let err = CertificateAuthority::load_or_create(dir.path(), "other.example").unwrap_err();
    assert!(
        matches!(err, CaError::TrustDomainMismatch { ref found, .. } if found == TD),
        "{err:?}"
    );
}

#[test]
fn incomplete_ca_dir_is_reported_not_replaced() {
    let (dir, _ca) = new_ca();
    let cert_path = dir.path().join("ca/root.pem");
    fs::remove_file(&cert_path).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::Incomplete { .. }), "{err:?}");
    assert!(!cert_path.exists());
}

#[test]
fn mismatched_key_is_reported() {
    let (dir, _ca) = new_ca();
    let (other_dir, _other) = new_ca();
    fs::copy(
        other_dir.path().join("ca/root-key.pem"),
        dir.path().join("ca/root-key.pem"),
    )
    .unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn invalid_trust_domain_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        CertificateAuthority::load_or_create(dir.path(), "Not Valid"),
        Err(CaError::InvalidTrustDomain { .. })
    ));
}

/// Path-validates `leaf` against the CA's root for both TLS usages.
fn verify_chain(ca: &CertificateAuthority, leaf: &CertificateDer<'_>) {
    let bundle = ca.trust_bundle();
    let anchors = [webpki::anchor_from_trusted_cert(&bundle.roots[0]).unwrap()];
    let algs = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let ee = webpki::EndEntityCert::try_from(leaf).unwrap();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(algs, &anchors, &[], UnixTime::now(), usage, None, None)
            .unwrap();
    }
}

#[test]
fn csr_round_trip() {
    let (_dir, ca) = new_ca();
    let id = SpiffeId::new(TD, "shop", "web");
    let (key, csr) = generate_csr(&id).unwrap();

    let mut seen = None;
    let issued = ca
        .sign_csr(
            &csr,
            |requested| {
                seen = Some(requested.clone());
                Ok(())
            },
            HOUR,
        )
        .unwrap();
    assert_eq!(seen.as_ref(), Some(&id));
    assert_eq!(issued.spiffe_id, id);
    assert_eq!(issued.issuer_fingerprint, ca.signing_root_fingerprint());
    assert_eq!(
        issued.issuer_fingerprint,
        crate::tls::cert_fingerprint(&ca.trust_bundle().roots[0])
    );

    let svid = Svid::from_pem(&issued.cert_chain_pem, key).unwrap();
    assert_eq!(svid.id, id);
    assert_eq!(svid.not_after, issued.not_after);
    assert_eq!(svid.cert_chain.len(), 1);
    let leaf = &svid.cert_chain[0];
    assert_eq!(spiffe_id_from_cert(leaf).unwrap(), id);
    verify_chain(&ca, leaf);

    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    assert_eq!(hex::encode(cert.raw_serial()), issued.serial_hex);
    assert_eq!(issued.serial_hex.len(), 32);
    assert!(!cert.is_ca());
    assert_eq!(cert.subject().iter().count(), 0, "subject should be empty");
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical);
    assert_eq!(san.value.general_names.len(), 1);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(cert.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));

    let now = OffsetDateTime::now_utc().unix_timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(
        (now - 62..=now - 58).contains(&not_before),
        "{not_before} vs {now}"
    );
    assert!(
        (now + 3598..=now + 3601).contains(&not_after),
        "{not_after} vs {now}"
    );
    assert_eq!(
        issued.not_after,
        SystemTime::UNIX_EPOCH + Duration::from_secs(not_after as u64)
    );

    // Serials are random, not derived from the key.
    let again = ca.sign_csr(&csr, allow, HOUR).unwrap();
    assert_ne!(again.serial_hex, issued.serial_hex);
}

#[test]
fn refuses_the_mesh_s_own_identities_whatever_the_caller_allows() {
    let (_dir, ca) = new_ca();
    for sa in ["trellis-control", "trellis-node", "anything"] {
        let id = SpiffeId::new(TD, "trellis-system", sa);
        let (_, csr) = generate_csr(&id).unwrap();
        let err = ca.sign_csr(&csr, allow, HOUR).unwrap_err();
        assert!(
            matches!(&err, CaError::ReservedIdentity { requested } if *requested == id.to_string()),
            "{id}: {err:?}"
        );
    }
    // The control plane's own certificate does not take this path.
    let control = SpiffeId::new(TD, "trellis-system", "trellis-control");
    assert_eq!(ca.issue_with_local_key(&control, HOUR).unwrap().id, control);
}

#[test]
fn refuses_unauthorized_identity() {
    let (_dir, ca) = new_ca();
    let id = SpiffeId::new(TD, "shop", "admin");
    let (_, csr) = generate_csr(&id).unwrap();
    let err = ca
        .sign_csr(&csr, |_| Err("token does not allow sa admin".into()), HOUR)
        .unwrap_err();
    match &err {
        CaError::NotAuthorized { requested, reason } => {
            assert_eq!(requested, &id.to_string());
            assert_eq!(reason, "token does not allow sa admin");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "CSR for spiffe://trellis.local/ns/shop/sa/admin refused: token does not allow sa admin"
    );
}

#[test]
fn refuses_foreign_trust_domain() {
    let (_dir, ca) = new_ca();
    let (_, csr) = generate_csr(&SpiffeId::new("evil.example", "shop", "web")).unwrap();
    let mut called = false;
    let err = ca
        .sign_csr(
            &csr,
            |_| {
                called = true;
                Ok(())
            },
            HOUR,
        )
        .unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err:?}");
    assert!(
        !called,
        "authorize must not be consulted for a foreign trust domain"
    );
    assert!(
        err.to_string()
            .contains("spiffe://evil.example/ns/shop/sa/web"),
        "{err}"
    );

    let err = ca
        .issue_with_local_key(&SpiffeId::new("evil.example", "a", "b"), HOUR)
        .unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err:?}");
}

#[test]
fn refuses_tampered_or_unusable_csrs() {
    let (_dir, ca) = new_ca();
    let (_, csr) = generate_csr(&SpiffeId::new(TD, "shop", "web")).unwrap();

    // Flip a bit in the signature (the last bytes of the DER).
    let mut tampered = csr.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let err = ca.sign_csr(&tampered, allow, HOUR).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::CsrSignature { .. } | CaError::InvalidCsr { .. }
        ),
        "{err:?}"
    );

    assert!(matches!(
        ca.sign_csr(b"definitely not DER", allow, HOUR),
        Err(CaError::InvalidCsr { .. })
    ));

    let mut trailing = csr.clone();
    trailing.push(0);
    assert!(matches!(
        ca.sign_csr(&trailing, allow, HOUR),
        Err(CaError::InvalidCsr { .. })
    ));

    // A CSR naming only a DNS name, and one naming two SPIFFE IDs.
    let key = KeyPair::generate().unwrap();
    let dns_only = CertificateParams::new(vec!["web.example".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let err = ca.sign_csr(dns_only.der(), allow, HOUR).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::CsrIdentity {
                source: SpiffeError::NoSpiffeUriSan
            }
        ),
        "{err:?}"
    );

    let mut two = CertificateParams::default();
    two.subject_alt_names = vec![
        SanType::URI("spiffe://trellis.local/ns/a/sa/b".try_into().unwrap()),
        SanType::URI("spiffe://trellis.local/ns/a/sa/c".try_into().unwrap()),
    ];
    let two = two.serialize_request(&key).unwrap();
    let err = ca.sign_csr(two.der(), allow, HOUR).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::CsrIdentity {
                source: SpiffeError::MultipleSpiffeUriSans { count: 2 }
            }
        ),
        "{err:?}"
    );
}

#[test]
fn local_key_svid() {
    let (_dir, ca) = new_ca();
    let id = SpiffeId::new(TD, "trellis-system", "control-plane");
    let svid = ca.issue_with_local_key(&id, HOUR).unwrap();
    assert_eq!(svid.id, id);
    verify_chain(&ca, &svid.cert_chain[0]);
    // The pieces are consistent: rebuilding through the checked constructor works.
    let rebuilt = Svid::from_pem(&svid.cert_chain_pem(), svid.key.clone_key()).unwrap();
    assert_eq!(rebuilt.id, id);
    assert_eq!(rebuilt.not_after, svid.not_after);

    assert!(matches!(
        ca.issue_with_local_key(&SpiffeId::new(TD, "a/b", "c"), HOUR),
        Err(CaError::InvalidIdentity { .. })
    ));
}

#[test]
fn lifetimes() {
    let (_dir, ca) = new_ca();
    let id = SpiffeId::new(TD, "ns", "sa");
    assert!(matches!(
        ca.issue_with_local_key(&id, Duration::ZERO),
        Err(CaError::InvalidLifetime { .. })
    ));
    assert!(matches!(
        ca.issue_with_local_key(&id, Duration::MAX),
        Err(CaError::InvalidLifetime { .. })
    ));
    let century = ca
        .issue_with_local_key(&id, Duration::from_secs(100 * 365 * 86400))
        .unwrap();
    assert_eq!(century.not_after, ca.root_not_after());
    assert_eq!(ca.issuer_not_after(), ca.root_not_after());
}

#[test]
fn root_lifetime_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let month = Duration::from_secs(30 * 86400);
    let ca = CertificateAuthority::load(
        dir.path(),
        TD,
        CaSource::SelfSigned {
            root_lifetime: month,
        },
    )
    .unwrap();
    let expected = SystemTime::now() + month;
    let diff = expected
        .duration_since(ca.root_not_after())
        .unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(5), "{diff:?}");

    for root_lifetime in [Duration::ZERO, Duration::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let err =
            CertificateAuthority::load(dir.path(), TD, CaSource::SelfSigned { root_lifetime })
                .unwrap_err();
        assert!(matches!(err, CaError::InvalidLifetime { .. }), "{err:?}");
    }
}

#[test]
fn single_root_reports_idle_and_active() {
    let (_dir, ca) = new_ca();
    assert!(ca.is_self_signed());
    assert_eq!(ca.rotation(), RotationState::Idle);
    let roots = ca.roots();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].status, RootStatus::Active);
    assert_eq!(
        roots[0].fingerprint_sha256_hex,
        ca.signing_root_fingerprint()
    );
    assert_eq!(roots[0].not_after, ca.root_not_after());
    assert!(
        roots[0].subject.contains("CN=Trellis root CA"),
        "{}",
        roots[0].subject
    );
    assert!(roots[0].subject.contains(TD), "{}", roots[0].subject);
}

#[test]
fn ca_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
}

#[test]
fn debug_does_not_leak_key() {
    let (dir, ca) = new_ca();
    let key_pem = fs::read_to_string(dir.path().join("ca/root-key.pem")).unwrap();
    let body: String = key_pem.lines().nth(1).unwrap().to_owned();
    assert!(!format!("{ca:?}").contains(&body));
}
