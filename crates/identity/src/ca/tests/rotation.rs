//! Root rotation: every mix of old and new leaves and bundles that peers can
//! hold mid-rotation must handshake, the retired root must stop working, and
//! the state must survive restarts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::testutil::{mutual, tls_error};
use crate::tls::{cert_fingerprint, verify_chain_for_mesh};

fn bundle_of(root: &CertificateDer<'static>) -> TrustBundle {
    TrustBundle {
        roots: vec![root.clone()],
        explicit_trust_domain: Some(TD.to_owned()),
    }
}

fn subject_and_issuer(der: &[u8]) -> (String, String) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    (cert.subject().to_string(), cert.issuer().to_string())
}

async fn assert_handshake(
    server: &Svid,
    server_trusts: &TrustBundle,
    client: &Svid,
    client_trusts: &TrustBundle,
    what: &str,
) {
    let (server_end, client_end) = mutual(server, server_trusts, client, client_trusts).await;
    if let Err(e) = &client_end {
        panic!("{what}: client side failed: {e}");
    }
    if let Err(e) = &server_end {
        panic!("{what}: server side failed: {e}");
    }
}

#[tokio::test]
async fn rotation_keeps_every_peer_connected_then_retires_the_old_root() {
    let (dir, ca) = new_ca();
    let r1_bundle = ca.trust_bundle();
    let r1 = r1_bundle.roots[0].clone();
    let r1_fp = ca.signing_root_fingerprint();
    assert_eq!(r1_fp, cert_fingerprint(&r1));

    // Before: leaves from R1, shipped alone.
    let (l1_server, issued) = issue(&ca, "shop", "api");
    let (l1_client, _) = issue(&ca, "shop", "web");
    assert_eq!(issued.issuer_fingerprint, r1_fp);
    assert_eq!(l1_server.cert_chain.len(), 1);

    ca.rotate_begin().unwrap();

    // The bundle holds both roots, the old one first; leaves chain to R2.
    let both = ca.trust_bundle();
    assert_eq!(both.roots.len(), 2);
    assert_eq!(both.roots[0], r1);
    let r2 = both.roots[1].clone();
    let r2_fp = ca.signing_root_fingerprint();
    assert_eq!(r2_fp, cert_fingerprint(&r2));
    assert_ne!(r2_fp, r1_fp);
    assert_eq!(
        ca.trust_bundle_pem(),
        pem::certs_to_pem(&[r1.clone(), r2.clone()])
    );
    let r2_bundle = bundle_of(&r2);

    let roots = ca.roots();
    assert_eq!(roots.len(), 2);
    assert_eq!(roots[0].status, RootStatus::Retiring);
    assert_eq!(roots[1].status, RootStatus::Next);
    assert_ne!(
        roots[0].subject, roots[1].subject,
        "roots need distinct names"
    );
    assert!(
        roots[1].subject.contains("CN=Trellis root CA 2"),
        "{}",
        roots[1].subject
    );
    assert_eq!(ca.root_not_after(), roots[1].not_after);
    match ca.rotation() {
        RotationState::InProgress { old, new } => {
            assert_eq!(old, roots[0]);
            assert_eq!(new, roots[1]);
        }
        RotationState::Idle => panic!("rotation should be in progress"),
    }
    assert!(matches!(
        ca.rotate_begin(),
        Err(CaError::RotationInProgress { ref next }) if *next == r2_fp
    ));

    // New leaves: leaf + R2 cross-signed by R1.
    let (l2_server, issued) = issue(&ca, "shop", "api");
    let (l2_client, _) = issue(&ca, "shop", "web");
    assert_eq!(issued.issuer_fingerprint, r2_fp);
    assert_eq!(l2_server.cert_chain.len(), 2);
    let (r2_subject, _) = subject_and_issuer(&r2);
    let (r1_subject, _) = subject_and_issuer(&r1);
    let (cross_subject, cross_issuer) = subject_and_issuer(&l2_server.cert_chain[1]);
    assert_eq!(cross_subject, r2_subject);
    assert_eq!(cross_issuer, r1_subject);
    let (_, leaf_issuer) = subject_and_issuer(&l2_server.cert_chain[0]);
    assert_eq!(leaf_issuer, r2_subject);
    let control = ca
        .issue_with_local_key(&SpiffeId::new(TD, "trellis-system", "control-plane"), HOUR)
        .unwrap();
    assert_eq!(control.cert_chain[1], l2_server.cert_chain[1]);

    // Which root each leaf reaches, as a proxy would work it out.
    assert_eq!(
        l2_server.issuer_root_fingerprint(&both),
        Some(r2_fp.clone())
    );
    assert_eq!(
        l2_server.issuer_root_fingerprint(&r1_bundle),
        Some(r1_fp.clone())
    );
    assert_eq!(
        l2_server.issuer_root_fingerprint(&r2_bundle),
        Some(r2_fp.clone())
    );
    assert_eq!(
        l1_server.issuer_root_fingerprint(&both),
        Some(r1_fp.clone())
    );
    assert_eq!(l1_server.issuer_root_fingerprint(&r2_bundle), None);

    // Every combination a mesh goes through mid-rotation.
    assert_handshake(
        &l1_server,
        &both,
        &l2_client,
        &both,
        "L1 server, peer trusting {R1,R2}",
    )
    .await;
    assert_handshake(
        &l2_server,
        &r1_bundle,
        &l1_client,
        &r1_bundle,
        "L2 server, peer trusting only {R1}",
    )
    .await;
    assert_handshake(
        &l2_server,
        &r2_bundle,
        &l2_client,
        &r2_bundle,
        "L2 both ends, trusting only {R2}",
    )
    .await;
    assert_handshake(
        &l2_server,
        &both,
        &l1_client,
        &r1_bundle,
        "L1 client cert, server trusting {R1,R2}",
    )
    .await;

    // A restart mid-rotation resumes it: same roots, same chain.
    let reloaded = CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(reloaded.rotation(), ca.rotation());
    assert_eq!(reloaded.roots(), ca.roots());
    assert_eq!(reloaded.trust_bundle(), both);
    assert_eq!(reloaded.signing_root_fingerprint(), r2_fp);
    let (reissued, _) = issue(&reloaded, "shop", "api");
    assert_eq!(reissued.cert_chain[1], l2_server.cert_chain[1]);
    assert!(matches!(
        reloaded.rotate_begin(),
        Err(CaError::RotationInProgress { .. })
    ));
    drop(reloaded);

    #[cfg(unix)]
    {
        let ca_dir = dir.path().join("ca");
        for key in ["root-key.pem", "root-2-key.pem"] {
            assert_eq!(
                fsutil::mode_of(&ca_dir.join(key)).unwrap(),
                Some(0o600),
                "{key}"
            );
        }
    }

    ca.rotate_finish().unwrap();

    // Only R2 is left; fresh leaves are shipped alone.
    assert_eq!(ca.trust_bundle(), r2_bundle);
    assert_eq!(ca.trust_bundle_pem(), pem::cert_to_pem(&r2));
    assert_eq!(ca.rotation(), RotationState::Idle);
    let roots = ca.roots();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].status, RootStatus::Active);
    assert_eq!(roots[0].fingerprint_sha256_hex, r2_fp);
    assert_eq!(ca.signing_root_fingerprint(), r2_fp);
    assert!(matches!(
        ca.rotate_finish(),
        Err(CaError::NoRotationInProgress)
    ));

    let (l3_server, issued) = issue(&ca, "shop", "api");
    let (l3_client, _) = issue(&ca, "shop", "web");
    assert_eq!(issued.issuer_fingerprint, r2_fp);
    assert_eq!(l3_server.cert_chain.len(), 1);
    assert_handshake(
        &l3_server,
        &r2_bundle,
        &l3_client,
        &r2_bundle,
        "fresh leaves, {R2}",
    )
    .await;
    // Leaves issued mid-rotation keep working.
    assert_handshake(
        &l2_server,
        &r2_bundle,
        &l3_client,
        &r2_bundle,
        "L2 server, {R2}",
    )
    .await;

    // L1 is refused by {R2}-only peers, as a client and as a server.
    let (server_end, _) = mutual(&l3_server, &r2_bundle, &l1_client, &r2_bundle).await;
    assert_eq!(
        tls_error(&server_end),
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
    let (_, client_end) = mutual(&l1_server, &r2_bundle, &l3_client, &r2_bundle).await;
    assert_eq!(
        tls_error(&client_end),
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );

    // The retired root's key is gone; the finished state survives a restart.
    let ca_dir = dir.path().join("ca");
    assert!(!ca_dir.join("root-key.pem").exists());
    assert!(ca_dir.join("root-2-key.pem").exists());
    let reloaded = CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(reloaded.rotation(), RotationState::Idle);
    assert_eq!(reloaded.trust_bundle(), r2_bundle);
}

#[test]
fn rotates_again_from_the_second_root() {
    let (dir, ca) = new_ca();
    ca.rotate_begin().unwrap();
    ca.rotate_finish().unwrap();
    let r2 = ca.trust_bundle().roots[0].clone();
    ca.rotate_begin().unwrap();
    let r3 = ca.trust_bundle().roots[1].clone();
    assert!(ca.roots()[1].subject.contains("CN=Trellis root CA 3"));

    // R2's path length leaves room for R3's cross-certificate.
    let (leaf, _) = issue(&ca, "shop", "api");
    for (what, root) in [("R2", &r2), ("R3", &r3)] {
        verify_chain_for_mesh(&bundle_of(root), &leaf.cert_chain)
            .unwrap_or_else(|e| panic!("against {what}: {e}"));
    }
    let state = fs::read_to_string(dir.path().join("ca/state.json")).unwrap();
    assert!(state.contains("root-3-cross.pem"), "{state}");
}

#[test]
fn directory_without_state_file_loads_and_rotates() {
    // Written before state.json existed: just the first root and its key.
    let (dir, ca) = new_ca();
    let bundle = ca.trust_bundle_pem();
    drop(ca);
    let state_path = dir.path().join("ca/state.json");
    fs::remove_file(&state_path).unwrap();

    let ca = CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    assert_eq!(ca.trust_bundle_pem(), bundle);
    assert!(
        !state_path.exists(),
        "loading must not rewrite the directory"
    );
    ca.rotate_begin().unwrap();
    assert!(state_path.exists());
    let reloaded = CertificateAuthority::load_or_create(dir.path(), TD).unwrap();
    assert!(matches!(
        reloaded.rotation(),
        RotationState::InProgress { .. }
    ));
}

#[test]
fn bad_state_files_are_reported() {
    let (dir, ca) = new_ca();
    ca.rotate_begin().unwrap();
    drop(ca);
    let state_path = dir.path().join("ca/state.json");
    let good = fs::read_to_string(&state_path).unwrap();

    for bad in [
        "not json".to_owned(),
        good.replace("\"root-2.pem\"", "\"../root-2.pem\""),
        good.replace("\"retiring\"", "\"active\""),
        good.replace("\"version\": 1", "\"version\": 7"),
    ] {
        assert_ne!(bad, good);
        fs::write(&state_path, &bad).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path(), TD).unwrap_err();
        assert!(
            matches!(err, CaError::InvalidState { .. }),
            "{bad}: {err:?}"
        );
    }

    // A cross-certificate that does not certify the next root.
    fs::write(&state_path, &good).unwrap();
    let ca_dir = dir.path().join("ca");
    fs::copy(ca_dir.join("root.pem"), ca_dir.join("root-2-cross.pem")).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), TD).unwrap_err();
    assert!(matches!(err, CaError::InvalidRoot { .. }), "{err:?}");
}

#[test]
fn issuing_while_rotating_stays_consistent() {
    // Each issued chain must match the root it reports, even when a rotation
    // step lands in the middle of issuance.
    let (_dir, ca) = new_ca();
    let ca = Arc::new(ca);
    let r1 = ca.trust_bundle().roots[0].clone();
    let done = Arc::new(AtomicBool::new(false));
    let worker = {
        let (ca, done) = (ca.clone(), done.clone());
        std::thread::spawn(move || {
            let mut issued = Vec::new();
            while !done.load(Ordering::Relaxed) || issued.is_empty() {
                issued.push(issue(&ca, "shop", "api"));
            }
            issued
        })
    };
    ca.rotate_begin().unwrap();
    let r2 = ca.trust_bundle().roots[1].clone();
    ca.rotate_finish().unwrap();
    done.store(true, Ordering::Relaxed);
    let issued = worker.join().unwrap();
    for (svid, cert) in issued {
        let root = if cert.issuer_fingerprint == cert_fingerprint(&r1) {
            &r1
        } else {
            assert_eq!(cert.issuer_fingerprint, cert_fingerprint(&r2));
            &r2
        };
        verify_chain_for_mesh(&bundle_of(root), &svid.cert_chain).unwrap();
    }
}
