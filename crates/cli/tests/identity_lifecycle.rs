//! End to end: the certificate lifecycle under traffic — renewal with short-lived
//! certificates, and root rotation — on meshes started by `trellis up`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use trellis_testkit::{workspace_root, HttpClient, Load, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

fn trellis(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("trellis runs")
}

fn certs(mesh: &Mesh) -> Value {
    let data = mesh.data_dir.to_string_lossy();
    let out = trellis(&[
        "certs",
        "--api",
        &mesh.api.to_string(),
        "--data-dir",
        &data,
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("certs JSON")
}

/// Certificates issued per workload so far.
fn issued_per_workload(mesh: &Mesh) -> BTreeMap<String, u64> {
    certs(mesh)["certs"]
        .as_array()
        .expect("certs")
        .iter()
        .map(|c| {
            (
                c["workload"].as_str().unwrap_or("").to_string(),
                c["issued_total"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_across_renewals_of_one_minute_certificates() {
    let mesh = Mesh::up_with(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        16,
        &["--svid-ttl", "1m"],
    )
    .expect("mesh starts");
    let load = Load::start(mesh.front, "productpage", "/", 50, 64);
    // Renewal is due at half-life (≈30 s with jitter): 100 s spans at least three renewals
    // of every certificate.
    tokio::time::sleep(Duration::from_secs(100)).await;
    let report = load.finish().await;
    assert!(report.sent > 3000, "load too thin: {report:?}");
    assert!(
        report.failures.is_empty(),
        "{} failed: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );

    let issued = issued_per_workload(&mesh);
    for w in [
        "productpage-v1",
        "details-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "ratings-v1",
        "front",
    ] {
        let n = issued.get(w).copied().unwrap_or(0);
        assert!(
            n >= 3,
            "{w}: only {n} certificates in 100 s of 1-minute lifetimes: {issued:?}"
        );
    }
    // The proxy reports its certificate's expiry, and it is within the minute.
    let client = HttpClient::new();
    let metrics = client
        .get(mesh.addr(1, 15020), "admin", "/metrics", &[])
        .await
        .unwrap()
        .text();
    let expiry: u64 = metrics
        .lines()
        .find(|l| l.starts_with("trellis_proxy_svid_expiry_timestamp_seconds "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no expiry metric in {metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry > now && expiry <= now + 61,
        "expiry {expiry}, now {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_under_load_fails_no_request() {
    let mut mesh = Mesh::up(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        17,
    )
    .expect("mesh starts");
    let before = certs(&mesh);
    let old_root = before["roots"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    // ≥ 200 requests/s, each crossing four proxy-to-proxy hops (front → productpage →
    // details, reviews → ratings), before, during and after the rotation.
    let load = Load::start(mesh.front, "productpage", "/", 250, 128);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let api = mesh.api.to_string();
    let data = mesh.data_dir.to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || {
        trellis(&["ca", "rotate", "--api", &api, "--data-dir", &data])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "rotation failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during rotation: {:?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(
        report.rate() >= 200.0,
        "only {:.0} requests/s",
        report.rate()
    );

    // Every certificate now chains to the new root, and the old root is gone.
    let after = certs(&mesh);
    let roots = after["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let new_root = roots[0]["fingerprint"].as_str().unwrap();
    assert_ne!(new_root, old_root);
    for c in after["certs"].as_array().unwrap() {
        assert_eq!(c["issuer_root"], new_root, "{c}");
    }
    mesh.wait_for_log("root rotation finished", Duration::from_secs(1))
        .unwrap();

    // And traffic still flows on fresh connections under the new root alone.
    let client = HttpClient::new();
    let resp = client
        .get(mesh.addr(1, 15001), "ratings:9080", "/", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let check = trellis(&[
        "check",
        "--api",
        &mesh.api.to_string(),
        "--data-dir",
        &mesh.data_dir.to_string_lossy(),
    ]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// A root and an intermediate made the way an operator's PKI would: the root's subject says
/// nothing about the mesh's trust domain.
fn operator_ca(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name
            .push(DnType::OrganizationName, "Example Corp PKI");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Example Corp Root");
    let root = root_params.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let int = ca_params("Example Corp Mesh Intermediate")
        .signed_by(&int_key, &Issuer::new(root_params, root_key))
        .unwrap();
    let paths = ["roots.pem", "intermediate.pem", "intermediate-key.pem"].map(|f| dir.join(f));
    std::fs::write(&paths[0], root.pem()).unwrap();
    std::fs::write(&paths[1], int.pem()).unwrap();
    std::fs::write(&paths[2], int_key.serialize_pem()).unwrap();
    let [a, b, c] = paths.map(|p| p.to_string_lossy().into_owned());
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_supplied_root_and_intermediate_issue_every_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let (roots, int, key) = operator_ca(pki.path());
    let mesh = Mesh::up_with(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        19,
        &[
            "--ca-roots",
            &roots,
            "--ca-intermediate",
            &int,
            "--ca-intermediate-key",
            &key,
        ],
    )
    .expect("mesh starts on the operator's CA");
    let client = HttpClient::new();
    for _ in 0..20 {
        let resp = client
            .get(mesh.front, "productpage", "/", &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let c = certs(&mesh);
    let roots_seen = c["roots"].as_array().unwrap();
    assert_eq!(roots_seen.len(), 1, "{roots_seen:?}");
    assert!(
        roots_seen[0]["subject"]
            .as_str()
            .unwrap()
            .contains("Example Corp Root"),
        "{roots_seen:?}"
    );
    let fp = roots_seen[0]["fingerprint"].as_str().unwrap();
    let issued = c["certs"].as_array().unwrap();
    assert!(issued.len() >= 7, "{issued:?}");
    for cert in issued {
        assert_eq!(cert["issuer_root"], fp, "{cert}");
    }
    // Nothing of the CA was written to the data directory: the operator keeps the keys.
    assert!(!mesh.data_dir.join("ca").join("root-key.pem").exists());
}
