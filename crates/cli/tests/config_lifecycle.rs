//! End to end: the GitOps lifecycle of a running mesh — a watched git checkout, rejected
//! commits that never disturb traffic, `apply`, `diff`, `rollback`, and quick successive
//! changes — plus `trellis validate`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::{workspace_root, HttpClient, Load, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

fn trellis(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("trellis runs")
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git_head(dir: &std::path::Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn revisions(mesh: &Mesh) -> Value {
    let out = trellis(&[
        "get",
        "revisions",
        "--api",
        &mesh.api.to_string(),
        "--data-dir",
        &mesh.data_dir.to_string_lossy(),
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reviews versions seen in `n` requests through the front door.
async fn versions(mesh: &Mesh, n: usize) -> BTreeMap<String, usize> {
    let client = HttpClient::new();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let resp = client
            .get(mesh.front, "productpage", "/", &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let page = resp.json().unwrap();
        let v = page["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == "reviews")
            .map(|c| c["version"].as_str().unwrap_or("").to_string())
            .unwrap();
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

/// Waits until every one of 10 consecutive requests is served by reviews `version`.
async fn wait_for_only(mesh: &Mesh, version: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let counts = versions(mesh, 10).await;
        if counts.len() == 1 && counts.contains_key(version) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "never only {version}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn routing(weights: [u32; 3]) -> String {
    let mut s = String::from("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v2\n    labels: {version: v2}\n  - name: v3\n    labels: {version: v3}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n");
    for (subset, w) in ["v1", "v2", "v3"].iter().zip(weights) {
        s.push_str(&format!(
            "    - destination: {{host: reviews, subset: {subset}}}\n      weight: {w}\n"
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_lifecycle_on_a_running_mesh() {
    let mesh = Mesh::up(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        18,
    )
    .expect("mesh starts");
    let dir = mesh.config_dir.clone();
    let api = mesh.api.to_string();
    let data = mesh.data_dir.to_string_lossy().into_owned();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "quickstart"]);

    // 1. A bad commit never disturbs traffic: load runs across it with no failure.
    let load = Load::start(mesh.front, "productpage", "/", 100, 64);
    std::fs::write(
        dir.join("reviews-routing.yaml"),
        routing([0, 0, 100]).replace("weight: 100", "weight: \"all\""),
    )
    .unwrap();
    git(&dir, &["commit", "-q", "-am", "broken weight"]);
    let bad_commit = git_head(&dir);
    let started = Instant::now();
    let rejected = loop {
        let revs = revisions(&mesh);
        let found = revs["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "rejected")
            .cloned();
        if let Some(r) = found {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no rejected revision: {revs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rejected["source"], "file-change");
    assert_eq!(rejected["git_commit"], bad_commit.as_str());
    let errors = rejected["errors"].to_string();
    assert!(
        errors.contains("reviews-routing.yaml:") && errors.contains("spec.http[0].route[2].weight"),
        "{errors}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    assert!(
        report.failures.is_empty(),
        "{:?}",
        &report.failures[..report.failures.len().min(3)]
    );
    let counts = versions(&mesh, 50).await;
    assert!(
        !counts.contains_key("v3"),
        "the rejected change half-applied: {counts:?}"
    );
    // The control plane's status shows the rejected change too.
    let (name, value) = mesh.api_auth();
    let status = trellis_testkit::HttpClient::new()
        .get(mesh.api, "api", "/api/v1/status", &[(name, &value)])
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["rejected"]["number"], rejected["number"], "{status}");

    // 2. The fix, committed, applies and records its commit.
    std::fs::write(dir.join("reviews-routing.yaml"), routing([0, 0, 100])).unwrap();
    git(&dir, &["commit", "-q", "-am", "all to v3"]);
    let good_commit = git_head(&dir);
    wait_for_only(&mesh, "v3", Duration::from_secs(10)).await;
    let revs = revisions(&mesh);
    let current = revs["current"].as_u64().unwrap();
    let served = revs["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == current)
        .unwrap();
    assert_eq!(served["git_commit"], good_commit.as_str());

    // 3. diff shows resource and snapshot changes of a candidate; apply serves it.
    let cand = tempfile::tempdir().unwrap();
    for f in ["services.yaml", "workloads.yaml"] {
        std::fs::copy(dir.join(f), cand.path().join(f)).unwrap();
    }
    std::fs::write(
        cand.path().join("reviews-routing.yaml"),
        routing([0, 100, 0]),
    )
    .unwrap();
    let cand_dir = cand.path().to_string_lossy().into_owned();
    // Reading needs the read token; without it the API refuses and the CLI says why.
    let out = trellis(&[
        "diff",
        &cand_dir,
        "--api",
        &api,
        "--data-dir",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/read-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = trellis(&["diff", &cand_dir, "--api", &api, "--data-dir", &data]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("~ VirtualService default/reviews"), "{text}");
    assert!(
        text.contains("spec.http[0].route[1].weight: 0 → 100"),
        "{text}"
    );
    assert!(
        text.contains("reviews.default.svc.cluster.local: route added"),
        "{text}"
    );
    let dry = trellis(&[
        "apply",
        &cand_dir,
        "--dry-run",
        "--api",
        &api,
        "--data-dir",
        &data,
    ]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run"));
    let counts = versions(&mesh, 20).await;
    assert_eq!(
        counts.get("v3"),
        Some(&20),
        "dry run applied something: {counts:?}"
    );
    let before_apply = current;
    let out = trellis(&["apply", &cand_dir, "--api", &api, "--data-dir", &data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_only(&mesh, "v2", Duration::from_secs(5)).await;

    // 4. rollback restores the previous routing.
    let out = trellis(&[
        "rollback",
        &before_apply.to_string(),
        "--api",
        &api,
        "--data-dir",
        &data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_only(&mesh, "v3", Duration::from_secs(5)).await;
    let revs = revisions(&mesh);
    let last = revs["revisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["source"], "rollback");
    assert_eq!(last["rolled_back_to"], before_apply);
    // Without the admin token, changes are refused.
    let out = trellis(&["rollback", "1", "--api", &api, "--data-dir", "/nonexistent"]);
    assert!(!out.status.success());

    // 5. Two quick successive changes end on the second.
    std::fs::write(dir.join("reviews-routing.yaml"), routing([0, 100, 0])).unwrap();
    std::fs::write(dir.join("reviews-routing.yaml"), routing([100, 0, 0])).unwrap();
    wait_for_only(&mesh, "v1", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = versions(&mesh, 50).await;
    assert_eq!(counts.get("v1"), Some(&50), "{counts:?}");
}

#[test]
fn validate_reports_files_lines_and_fields_with_exit_status() {
    let ok = trellis(&[
        "validate",
        &workspace_root()
            .join("examples/quickstart")
            .to_string_lossy(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid: 12 resources"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, routing([90, 20, 0])).unwrap();
    let out = trellis(&["validate", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.yaml:") && text.contains("VirtualService default/reviews"),
        "{text}"
    );

    let out = trellis(&["validate", &dir.path().to_string_lossy(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["kind"], "VirtualService");
    assert_eq!(d["field"], "spec.http[0].route");
    assert!(d["line"].as_u64().unwrap() > 1);
}
