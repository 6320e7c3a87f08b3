//! Real TLS handshakes between the configurations built here, over in-memory
//! pipes, covering the accepted case and each kind of rejected peer.

use std::time::Duration;

use rcgen::ExtendedKeyUsagePurpose;
use rustls::{NamedGroup, ProtocolVersion};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::ca::{CertificateAuthority, CustomLeaf};
use crate::csr::generate_csr;
use crate::testutil::{handshake, tls_error};

const TD: &str = "trellis.local";
const HOUR: Duration = Duration::from_secs(3600);

struct Ca {
    _dir: tempfile::TempDir,
    ca: CertificateAuthority,
}

fn new_ca(trust_domain: &str) -> Ca {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), trust_domain).unwrap();
    Ca { _dir: dir, ca }
}

/// An SVID obtained the way a proxy gets one: local key, CSR, signed by the CA.
fn svid(ca: &Ca, ns: &str, sa: &str) -> Svid {
    let id = SpiffeId::new(ca.ca.trust_domain(), ns, sa);
    let (key, csr) = generate_csr(&id).unwrap();
    let issued = ca.ca.sign_csr(&csr, |_| Ok(()), HOUR).unwrap();
    Svid::from_pem(&issued.cert_chain_pem, key).unwrap()
}

/// An SVID with a profile the CA would never issue, signed by its root.
fn custom_svid(
    ca: &Ca,
    uris: &[&str],
    valid: (OffsetDateTime, OffsetDateTime),
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> Svid {
    let (der, key) = ca.ca.issue_custom(&CustomLeaf {
        uris: uris.iter().map(|u| u.to_string()).collect(),
        not_before: valid.0,
        not_after: valid.1,
        ekus,
    });
    Svid {
        // Metadata only; the verifiers read the certificate itself.
        id: SpiffeId::new(TD, "custom", "custom"),
        cert_chain: vec![der],
        key,
        not_after: SystemTime::now(),
    }
}

fn both_ekus() -> Vec<ExtendedKeyUsagePurpose> {
    vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ]
}

fn currently_valid() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::hours(1),
    )
}

#[tokio::test]
async fn mutual_tls_succeeds_and_reveals_identities() {
    let ca = new_ca(TD);
    let server_svid = svid(&ca, "shop", "api");
    let client_svid = svid(&ca, "shop", "web");
    let bundle = ca.ca.trust_bundle();

    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let client_cfg = client_config(
        Some(&client_svid),
        &bundle,
        ExpectedPeer::OneOf(vec![
            SpiffeId::new(TD, "shop", "other"),
            server_svid.id.clone(),
        ]),
    )
    .unwrap();

    let (server, client) = handshake(server_cfg, client_cfg).await;
    let mut server = server.expect("server handshake");
    let mut client = client.expect("client handshake");

    let (_, server_conn) = server.get_ref();
    assert_eq!(
        server_conn.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(server_conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        server_conn
            .negotiated_key_exchange_group()
            .map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768)
    );
    assert_eq!(
        peer_identity(server_conn.peer_certificates()).unwrap(),
        client_svid.id
    );

    let (_, client_conn) = client.get_ref();
    assert_eq!(
        client_conn.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(client_conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        peer_identity(client_conn.peer_certificates()).unwrap(),
        server_svid.id
    );

    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn any_in_trust_domain_and_local_key_svid() {
    let ca = new_ca(TD);
    let server_svid = ca
        .ca
        .issue_with_local_key(&SpiffeId::new(TD, "trellis-system", "control"), HOUR)
        .unwrap();
    let client_svid = svid(&ca, "shop", "web");
    let bundle = ca.ca.trust_bundle();
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let client_cfg = client_config(
        Some(&client_svid),
        &bundle,
        ExpectedPeer::AnyInTrustDomain(TD.to_owned()),
    )
    .unwrap();
    let (server, client) = handshake(server_cfg, client_cfg).await;
    client.expect("client handshake");
    let server = server.expect("server handshake");
    assert_eq!(
        peer_identity(server.get_ref().1.peer_certificates()).unwrap(),
        client_svid.id
    );
}

#[tokio::test]
async fn rejects_unexpected_server_identity() {
    let ca = new_ca(TD);
    let server_svid = svid(&ca, "shop", "api");
    let client_svid = svid(&ca, "shop", "web");
    let bundle = ca.ca.trust_bundle();
    let wanted = SpiffeId::new(TD, "shop", "payments");
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let client_cfg = client_config(
        Some(&client_svid),
        &bundle,
        ExpectedPeer::OneOf(vec![wanted.clone()]),
    )
    .unwrap();
    let (server, client) = handshake(server_cfg, client_cfg).await;
    assert!(server.is_err());
    let err = tls_error(&client);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::Other(_))
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&wanted.to_string()), "{msg}");
    assert!(msg.contains(&server_svid.id.to_string()), "{msg}");
}

#[tokio::test]
async fn rejects_client_from_foreign_ca() {
    let ca = new_ca(TD);
    // Same trust domain name, different root: only the chain check stops it.
    let impostor_ca = new_ca(TD);
    let server_svid = svid(&ca, "shop", "api");
    let impostor = svid(&impostor_ca, "shop", "web");
    let server_cfg =
        server_config(&server_svid, &ca.ca.trust_bundle(), ClientAuth::Required).unwrap();
    // The impostor trusts the real root, so it is the server's check that
    // must fail.
    let client_cfg = client_config(
        Some(&impostor),
        &ca.ca.trust_bundle(),
        ExpectedPeer::AnyInTrustDomain(TD.to_owned()),
    )
    .unwrap();
    let (server, _client) = handshake(server_cfg, client_cfg).await;
    // Both roots carry the same subject name, so webpki finds a candidate
    // issuer and reports the failed signature check rather than an unknown
    // issuer; either way the chain is refused.
    let err = tls_error(&server);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer
            )
        ),
        "{err:?}"
    );

    // And with a differently named foreign root, it is an unknown issuer.
    let foreign_ca = new_ca("other.example");
    let foreign = svid(&foreign_ca, "shop", "web");
    let client_cfg = client_config(
        Some(&foreign),
        &ca.ca.trust_bundle(),
        ExpectedPeer::AnyInTrustDomain(TD.to_owned()),
    )
    .unwrap();
    let server_cfg =
        server_config(&server_svid, &ca.ca.trust_bundle(), ClientAuth::Required).unwrap();
    let (server, _client) = handshake(server_cfg, client_cfg).await;
    assert_eq!(
        tls_error(&server),
        &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn rejects_server_from_foreign_ca() {
    let ca = new_ca(TD);
    let foreign_ca = new_ca("other.example");
    let server_svid = svid(&foreign_ca, "shop", "api");
    let server_cfg = server_config(
        &server_svid,
        &foreign_ca.ca.trust_bundle(),
        ClientAuth::Optional,
    )
    .unwrap();
    let client_cfg = client_config(
        None,
        &ca.ca.trust_bundle(),
        ExpectedPeer::AnyInTrustDomain(TD.to_owned()),
    )
    .unwrap();
    let (_server, client) = handshake(server_cfg, client_cfg).await;
    assert_eq!(
        tls_error(&client),
        &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn rejects_server_in_other_trust_domain_even_from_our_root() {
    let ca = new_ca(TD);
    let server_svid = custom_svid(
        &ca,
        &["spiffe://other.example/ns/shop/sa/api"],
        currently_valid(),
        both_ekus(),
    );
    let bundle = ca.ca.trust_bundle();
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Optional).unwrap();
    let client_cfg =
        client_config(None, &bundle, ExpectedPeer::AnyInTrustDomain(TD.to_owned())).unwrap();
    let (_server, client) = handshake(server_cfg, client_cfg).await;
    let msg = tls_error(&client).to_string();
    assert!(msg.contains("outside trust domain"), "{msg}");
    assert!(
        msg.contains("spiffe://other.example/ns/shop/sa/api"),
        "{msg}"
    );
}

#[tokio::test]
async fn rejects_client_in_other_trust_domain_even_from_our_root() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let server_svid = svid(&ca, "shop", "api");
    let client_svid = custom_svid(
        &ca,
        &["spiffe://other.example/ns/shop/sa/web"],
        currently_valid(),
        both_ekus(),
    );
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let client_cfg = client_config(
        Some(&client_svid),
        &bundle,
        ExpectedPeer::AnyInTrustDomain(TD.to_owned()),
    )
    .unwrap();
    let (server, _client) = handshake(server_cfg, client_cfg).await;
    let msg = tls_error(&server).to_string();
    assert!(msg.contains("outside trust domain"), "{msg}");
}

#[tokio::test]
async fn rejects_expired_and_not_yet_valid_server() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let now = OffsetDateTime::now_utc();
    let cases = [
        (
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        ),
        (
            now + time::Duration::hours(1),
            now + time::Duration::hours(2),
        ),
    ];
    for (i, valid) in cases.into_iter().enumerate() {
        let server_svid = custom_svid(
            &ca,
            &["spiffe://trellis.local/ns/shop/sa/api"],
            valid,
            both_ekus(),
        );
        let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Optional).unwrap();
        let client_cfg =
            client_config(None, &bundle, ExpectedPeer::AnyInTrustDomain(TD.to_owned())).unwrap();
        let (_server, client) = handshake(server_cfg, client_cfg).await;
        let err = tls_error(&client);
        if i == 0 {
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
                ),
                "{err:?}"
            );
        } else {
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. })
                ),
                "{err:?}"
            );
        }
    }
}

#[tokio::test]
async fn rejects_expired_client() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let now = OffsetDateTime::now_utc();
    let server_svid = svid(&ca, "shop", "api");
    let client_svid = custom_svid(
        &ca,
        &["spiffe://trellis.local/ns/shop/sa/web"],
        (
            now - time::Duration::hours(2),
            now - time::Duration::seconds(1),
        ),
        both_ekus(),
    );
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let client_cfg = client_config(
        Some(&client_svid),
        &bundle,
        ExpectedPeer::OneOf(vec![server_svid.id.clone()]),
    )
    .unwrap();
    let (server, _client) = handshake(server_cfg, client_cfg).await;
    let err = tls_error(&server);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn rejects_server_auth_only_leaf_as_client() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let server_svid = svid(&ca, "shop", "api");
    let client_svid = custom_svid(
        &ca,
        &["spiffe://trellis.local/ns/shop/sa/web"],
        currently_valid(),
        vec![ExtendedKeyUsagePurpose::ServerAuth],
    );
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let client_cfg = client_config(
        Some(&client_svid),
        &bundle,
        ExpectedPeer::OneOf(vec![server_svid.id.clone()]),
    )
    .unwrap();
    let (server, _client) = handshake(server_cfg, client_cfg).await;
    assert_eq!(
        tls_error(&server),
        &rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)
    );
}

#[tokio::test]
async fn rejects_client_auth_only_leaf_as_server() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let server_svid = custom_svid(
        &ca,
        &["spiffe://trellis.local/ns/shop/sa/api"],
        currently_valid(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Optional).unwrap();
    let client_cfg =
        client_config(None, &bundle, ExpectedPeer::AnyInTrustDomain(TD.to_owned())).unwrap();
    let (_server, client) = handshake(server_cfg, client_cfg).await;
    assert_eq!(
        tls_error(&client),
        &rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)
    );
}

#[tokio::test]
async fn rejects_client_without_spiffe_id() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let server_svid = svid(&ca, "shop", "api");
    for uris in [&[][..], &["https://web.example/"][..]] {
        let client_svid = custom_svid(&ca, uris, currently_valid(), both_ekus());
        let server_cfg = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
        let client_cfg = client_config(
            Some(&client_svid),
            &bundle,
            ExpectedPeer::OneOf(vec![server_svid.id.clone()]),
        )
        .unwrap();
        let (server, _client) = handshake(server_cfg, client_cfg).await;
        let msg = tls_error(&server).to_string();
        assert!(msg.contains("no SPIFFE URI SAN"), "{msg}");
    }
}

#[tokio::test]
async fn rejects_malformed_spiffe_ids_on_either_side() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let good = svid(&ca, "shop", "api");
    let malformed = [
        "spiffe://trellis.local/not/a/workload",
        "spiffe://trellis.local/ns/shop/sa/",
        "spiffe://trellis.local/ns/shop/sa/api?x=1",
    ];
    for uri in malformed {
        let bad = custom_svid(&ca, &[uri], currently_valid(), both_ekus());
        // As a client certificate: the server refuses it.
        let server_cfg = server_config(&good, &bundle, ClientAuth::Required).unwrap();
        let client_cfg = client_config(
            Some(&bad),
            &bundle,
            ExpectedPeer::OneOf(vec![good.id.clone()]),
        )
        .unwrap();
        let (server, _client) = handshake(server_cfg, client_cfg).await;
        let msg = tls_error(&server).to_string();
        assert!(msg.contains("SPIFFE"), "{uri}: {msg}");
        // As a server certificate: the client refuses it.
        let server_cfg = server_config(&bad, &bundle, ClientAuth::Required).unwrap_or_else(|e| {
            panic!("{uri}: server config should build (the peer decides): {e}")
        });
        let client_cfg = client_config(
            Some(&good),
            &bundle,
            ExpectedPeer::AnyInTrustDomain(TD.to_owned()),
        )
        .unwrap();
        let (_server, client) = handshake(server_cfg, client_cfg).await;
        let msg = tls_error(&client).to_string();
        assert!(msg.contains("SPIFFE"), "{uri}: {msg}");
    }
}

#[tokio::test]
async fn required_client_auth_needs_a_certificate() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    let server_svid = svid(&ca, "shop", "api");
    let client_cfg =
        client_config(None, &bundle, ExpectedPeer::AnyInTrustDomain(TD.to_owned())).unwrap();

    let required = server_config(&server_svid, &bundle, ClientAuth::Required).unwrap();
    let (server, _client) = handshake(required, client_cfg.clone()).await;
    assert_eq!(tls_error(&server), &rustls::Error::NoCertificatesPresented);

    let optional = server_config(&server_svid, &bundle, ClientAuth::Optional).unwrap();
    let (server, client) = handshake(optional, client_cfg).await;
    client.expect("client handshake");
    let server = server.expect("server handshake");
    assert!(matches!(
        peer_identity(server.get_ref().1.peer_certificates()),
        Err(TlsError::NoPeerCertificate)
    ));
}

#[test]
fn expected_peer_must_be_satisfiable() {
    let ca = new_ca(TD);
    let bundle = ca.ca.trust_bundle();
    for expected in [
        ExpectedPeer::AnyInTrustDomain("other.example".to_owned()),
        ExpectedPeer::OneOf(vec![]),
        ExpectedPeer::OneOf(vec![SpiffeId::new("other.example", "a", "b")]),
    ] {
        let err = client_config(None, &bundle, expected.clone()).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidExpectedPeer { .. }),
            "{expected}: {err:?}"
        );
    }
}

#[test]
fn bundle_pem_round_trip() {
    let ca = new_ca(TD);
    let bundle = TrustBundle::from_pem(&ca.ca.trust_bundle_pem()).unwrap();
    assert_eq!(bundle.explicit_trust_domain, None);
    assert_eq!(bundle.roots, ca.ca.trust_bundle().roots);
    assert_eq!(TrustBundle::from_pem(&bundle.to_pem()).unwrap(), bundle);
    // Self-signed roots name the trust domain in their O, so plain PEM is enough.
    assert_eq!(bundle.trust_domain().unwrap(), TD);
    // The CA's own bundle states it, and PEM plus the domain restores it exactly.
    assert_eq!(
        ca.ca.trust_bundle().explicit_trust_domain.as_deref(),
        Some(TD)
    );
    assert_eq!(
        TrustBundle::from_pem_with_domain(&ca.ca.trust_bundle_pem(), TD).unwrap(),
        ca.ca.trust_bundle()
    );
    assert_eq!(
        bundle.fingerprints(),
        vec![ca.ca.signing_root_fingerprint()]
    );

    let other = new_ca("other.example");
    let mixed = TrustBundle {
        roots: vec![
            bundle.roots[0].clone(),
            other.ca.trust_bundle().roots[0].clone(),
        ],
        explicit_trust_domain: None,
    };
    assert!(matches!(
        mixed.trust_domain(),
        Err(TlsError::BundleTrustDomain { .. })
    ));
    assert!(matches!(
        TrustBundle::from_pem(""),
        Err(TlsError::Pem { .. })
    ));
    assert!(matches!(
        TrustBundle::from_pem_with_domain(&bundle.to_pem(), "Not Valid"),
        Err(TlsError::BundleTrustDomain { .. })
    ));
    // An explicit trust domain overrides the roots' O, even a mixed one.
    let declared = TrustBundle {
        explicit_trust_domain: Some("declared.example".to_owned()),
        ..mixed
    };
    assert_eq!(declared.trust_domain().unwrap(), "declared.example");
    assert!(matches!(
        TrustBundle {
            roots: vec![],
            explicit_trust_domain: Some(TD.to_owned())
        }
        .trust_domain(),
        Err(TlsError::EmptyBundle)
    ));
}

#[test]
fn svid_rejects_mismatched_key() {
    let ca = new_ca(TD);
    let a = svid(&ca, "shop", "a");
    let b = svid(&ca, "shop", "b");
    let err = Svid::from_pem(&a.cert_chain_pem(), b.key.clone_key()).unwrap_err();
    assert!(matches!(err, TlsError::SvidKey { .. }), "{err:?}");
    let key_back = crate::pem::private_key_from_pem(&a.key_pem()).unwrap();
    Svid::from_pem(&a.cert_chain_pem(), key_back).unwrap();
}

#[test]
fn peer_identity_needs_a_certificate() {
    assert!(matches!(
        peer_identity(None),
        Err(TlsError::NoPeerCertificate)
    ));
    assert!(matches!(
        peer_identity(Some(&[])),
        Err(TlsError::NoPeerCertificate)
    ));
}
