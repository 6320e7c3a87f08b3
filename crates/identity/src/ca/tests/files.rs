//! User-supplied CA files: a working root + intermediate, real handshakes
//! through it, and each kind of bad material refused at load.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::*;
use crate::testutil::{mutual, tls_error};
use crate::tls::{cert_fingerprint, client_config, peer_identity, ExpectedPeer};

/// A CA certificate made in the test, with its key.
struct TestCa {
    key: KeyPair,
    der: CertificateDer<'static>,
}

/// Subject names of an operator's PKI: nothing in them names the trust domain.
fn name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name.push(DnType::OrganizationName, "Example Corp");
    name
}

fn test_root(cn: &str) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let der = params.self_signed(&key).unwrap().der().clone();
    TestCa { key, der }
}

/// How the intermediate deviates from a good one.
struct Profile {
    is_ca: IsCa,
    key_usages: Vec<KeyUsagePurpose>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Default for Profile {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            is_ca: IsCa::Ca(BasicConstraints::Constrained(0)),
            key_usages: vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ],
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(30),
        }
    }
}

fn test_intermediate(issuer: &TestCa, profile: Profile) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Example Issuing CA");
    params.is_ca = profile.is_ca;
    params.key_usages = profile.key_usages;
    params.not_before = profile.not_before;
    params.not_after = profile.not_after;
    params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(&issuer.der, &issuer.key).unwrap();
    let der = params.signed_by(&key, &issuer).unwrap().der().clone();
    TestCa { key, der }
}

/// The operator's files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
    source: CaSource,
}

fn write_files(roots: &[&TestCa], intermediate: &TestCa, key: &KeyPair) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let roots_pem: String = roots.iter().map(|r| pem::cert_to_pem(&r.der)).collect();
    fs::write(path("roots.pem"), roots_pem).unwrap();
    fs::write(path("int.pem"), pem::cert_to_pem(&intermediate.der)).unwrap();
    fs::write(path("int-key.pem"), key.serialize_pem()).unwrap();
    let source = CaSource::Files {
        roots_pem: path("roots.pem"),
        intermediate_pem: path("int.pem"),
        intermediate_key_pem: path("int-key.pem"),
    };
    Files { dir, source }
}

fn load(files: &Files) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::load(&files.dir.path().join("data"), TD, files.source.clone())
}

fn only(root: &TestCa) -> TrustBundle {
    TrustBundle::from_pem_with_domain(&pem::cert_to_pem(&root.der), TD).unwrap()
}

#[tokio::test]
async fn issues_leaf_plus_intermediate_that_verifies_against_the_root() {
    // The first root in the bundle has nothing to do with the intermediate:
    // the CA must find the right one.
    let unrelated = test_root("Unrelated Root CA");
    let root = test_root("Example Root CA");
    let intermediate = test_intermediate(&root, Profile::default());
    let files = write_files(&[&unrelated, &root], &intermediate, &intermediate.key);
    let ca = load(&files).unwrap();

    assert!(!ca.is_self_signed());
    assert_eq!(ca.trust_domain(), TD);
    let root_fp = cert_fingerprint(&root.der);
    assert_eq!(ca.signing_root_fingerprint(), root_fp);
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.roots, [unrelated.der.clone(), root.der.clone()]);
    assert_eq!(bundle.explicit_trust_domain.as_deref(), Some(TD));
    assert_eq!(
        TrustBundle::from_pem_with_domain(&ca.trust_bundle_pem(), TD).unwrap(),
        bundle
    );
    let roots = ca.roots();
    assert_eq!(roots.len(), 2);
    assert!(roots.iter().all(|r| r.status == RootStatus::Active));
    assert_eq!(roots[1].fingerprint_sha256_hex, root_fp);
    assert_eq!(ca.rotation(), RotationState::Idle);
    assert!(ca.issuer_not_after() < ca.root_not_after());

    let (server, issued) = issue(&ca, "shop", "api");
    let (client, _) = issue(&ca, "shop", "web");
    assert_eq!(issued.issuer_fingerprint, root_fp);
    assert_eq!(server.cert_chain.len(), 2);
    assert_eq!(server.cert_chain[1], intermediate.der);
    assert_eq!(
        server.issuer_root_fingerprint(&bundle),
        Some(root_fp.clone())
    );

    // Peers that hold only the root accept the chain, both ways.
    let (server_end, client_end) = mutual(&server, &only(&root), &client, &only(&root)).await;
    let server_end = server_end.expect("server handshake");
    let client_end = client_end.expect("client handshake");
    assert_eq!(
        peer_identity(server_end.get_ref().1.peer_certificates()).unwrap(),
        client.id
    );
    assert_eq!(
        peer_identity(client_end.get_ref().1.peer_certificates()).unwrap(),
        server.id
    );

    // Without the intermediate's root, the chain is refused.
    let (_, client_end) = mutual(&server, &only(&root), &client, &only(&unrelated)).await;
    assert_eq!(
        tls_error(&client_end),
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );

    // The roots' O is "Example Corp", so plain PEM cannot say which trust
    // domain peers belong to; the domain must travel alongside.
    let plain = TrustBundle::from_pem(&pem::cert_to_pem(&root.der)).unwrap();
    assert!(matches!(
        client_config(None, &plain, ExpectedPeer::AnyInTrustDomain(TD.to_owned())),
        Err(TlsError::BundleTrustDomain { .. })
    ));

    // Leaves never outlive the intermediate.
    let long = ca
        .issue_with_local_key(
            &SpiffeId::new(TD, "trellis-system", "control-plane"),
            Duration::from_secs(100 * 365 * 86400),
        )
        .unwrap();
    assert_eq!(long.not_after, ca.issuer_not_after());
    assert_eq!(long.cert_chain.len(), 2);

    // Only self-signed roots rotate; the operator's files stay untouched.
    assert!(matches!(
        ca.rotate_begin(),
        Err(CaError::RotationUnsupported)
    ));
    assert!(matches!(
        ca.rotate_finish(),
        Err(CaError::RotationUnsupported)
    ));
    assert!(!files.dir.path().join("data").exists());
}

#[test]
fn refuses_unusable_material_clearly() {
    let root = test_root("Example Root CA");
    let good = test_intermediate(&root, Profile::default());
    // Loads, so each failure below is down to its one defect.
    load(&write_files(&[&root], &good, &good.key)).unwrap();

    // Same root name, different key: only the signature check can tell.
    let impostor = test_root("Example Root CA");
    let foreign = test_intermediate(&impostor, Profile::default());
    let err = load(&write_files(&[&root], &foreign, &foreign.key)).unwrap_err();
    assert!(matches!(err, CaError::NotChained { .. }), "{err:?}");
    assert!(err.to_string().contains("signature"), "{err}");

    // A root of another name.
    let stranger = test_root("Stranger Root CA");
    let foreign = test_intermediate(&stranger, Profile::default());
    let err = load(&write_files(&[&root], &foreign, &foreign.key)).unwrap_err();
    assert!(matches!(err, CaError::NotChained { .. }), "{err:?}");
    assert!(err.to_string().contains("Stranger Root CA"), "{err}");

    let other_key = KeyPair::generate().unwrap();
    let err = load(&write_files(&[&root], &good, &other_key)).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");

    let leaf_like = test_intermediate(
        &root,
        Profile {
            is_ca: IsCa::ExplicitNoCa,
            ..Profile::default()
        },
    );
    let err = load(&write_files(&[&root], &leaf_like, &leaf_like.key)).unwrap_err();
    assert!(
        matches!(err, CaError::NotACa { reason, .. } if reason.contains("cA")),
        "{err:?}"
    );

    let cannot_sign = test_intermediate(
        &root,
        Profile {
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            ..Profile::default()
        },
    );
    let err = load(&write_files(&[&root], &cannot_sign, &cannot_sign.key)).unwrap_err();
    assert!(
        matches!(err, CaError::NotACa { reason, .. } if reason.contains("keyCertSign")),
        "{err:?}"
    );

    let now = OffsetDateTime::now_utc();
    let expired = test_intermediate(
        &root,
        Profile {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
            ..Profile::default()
        },
    );
    let err = load(&write_files(&[&root], &expired, &expired.key)).unwrap_err();
    assert!(matches!(err, CaError::CertificateExpired { .. }), "{err:?}");

    let files = write_files(&[&root], &good, &good.key);
    let CaSource::Files {
        intermediate_key_pem,
        ..
    } = &files.source
    else {
        unreachable!()
    };
    fs::write(intermediate_key_pem, "not a key").unwrap();
    let err = load(&files).unwrap_err();
    assert!(
        matches!(err, CaError::InvalidIntermediateKey { .. }),
        "{err:?}"
    );
    let err = CertificateAuthority::load(
        Path::new("/nonexistent"),
        TD,
        CaSource::Files {
            roots_pem: files.dir.path().join("missing.pem"),
            intermediate_pem: files.dir.path().join("int.pem"),
            intermediate_key_pem: files.dir.path().join("int-key.pem"),
        },
    )
    .unwrap_err();
    assert!(matches!(err, CaError::Io { .. }), "{err:?}");
}
