//! End to end: the quickstart mesh started by `trellis up`, real processes on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::{mesh::processes_mentioning, workspace_root, HttpClient, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

const PRODUCTPAGE_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

fn quickstart(subnet: u8) -> Mesh {
    Mesh::up(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        subnet,
    )
    .expect("mesh starts")
}

/// The reviews answer inside productpage's answer.
fn reviews_of(page: &Value) -> &Value {
    let calls = page["calls"].as_array().expect("calls array");
    calls
        .iter()
        .find(|c| c["service"] == "reviews")
        .unwrap_or_else(|| panic!("no reviews answer in {page}"))
}

/// Sends `n` requests to the front door, `concurrency` at a time; returns the count of each
/// reviews version seen. Panics on any failed request.
async fn versions(mesh: &Mesh, n: usize, concurrency: usize) -> BTreeMap<String, usize> {
    let client = HttpClient::new();
    let front = mesh.front;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let count = n / concurrency + usize::from(worker < n % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(count);
            for _ in 0..count {
                let resp = client
                    .get(front, "productpage", "/", &[])
                    .await
                    .expect("request");
                assert_eq!(resp.status, 200, "{}", resp.text());
                let page = resp.json().expect("json");
                let version = reviews_of(&page)["version"]
                    .as_str()
                    .expect("version")
                    .to_string();
                seen.push(version);
            }
            seen
        }));
    }
    let mut counts = BTreeMap::new();
    for t in tasks {
        for v in t.await.expect("worker") {
            *counts.entry(v).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_splits_traffic_and_carries_identity() {
    let mut mesh = quickstart(11);
    let counts = versions(&mesh, 1000, 8).await;
    let total: usize = counts.values().sum();
    assert_eq!(total, 1000);
    let v1 = counts.get("v1").copied().unwrap_or(0);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "only v1 and v2 may serve: {counts:?}");
    assert!(
        (870..=930).contains(&v1),
        "v1 share out of 90±3 %: {counts:?}"
    );
    assert!(
        (70..=130).contains(&v2),
        "v2 share out of 10±3 %: {counts:?}"
    );

    // The reviews app saw productpage's verified identity.
    let client = HttpClient::new();
    let page = client
        .get(mesh.front, "productpage", "/", &[])
        .await
        .unwrap()
        .json()
        .unwrap();
    let xfcc = reviews_of(&page)["headers"]["x-forwarded-client-cert"]
        .as_str()
        .expect("reviews got an XFCC header")
        .to_string();
    assert_eq!(xfcc, format!("By={REVIEWS_ID};URI={PRODUCTPAGE_ID}"));

    // Stopping `up` stops every process it started.
    let status = mesh.stop().expect("stop");
    assert!(status.success(), "trellis up exited with {status}");
    let needle = mesh.tmp_path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_xfcc_never_reaches_a_server_app() {
    let mesh = quickstart(12);
    let client = HttpClient::new();
    let forged = "By=spiffe://cluster.local/ns/default/sa/reviews;URI=spiffe://cluster.local/ns/kube-system/sa/admin";

    // A client app (this test, standing in for productpage's app) sends a forged XFCC and a
    // forged target port through productpage's proxy.
    let productpage_proxy = mesh.addr(1, 15001);
    let resp = client
        .get(
            productpage_proxy,
            "reviews:9080",
            "/",
            &[
                ("x-forwarded-client-cert", forged),
                ("x-trellis-target-port", "1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let reviews = resp.json().unwrap();
    assert_eq!(reviews["service"], "reviews");
    assert_eq!(
        reviews["headers"]["x-forwarded-client-cert"],
        format!("By={REVIEWS_ID};URI={PRODUCTPAGE_ID}").as_str()
    );
    assert!(reviews["headers"].get("x-trellis-target-port").is_none());

    // The same through the front door: productpage's app sees the front proxy's identity.
    let page = client
        .get(
            mesh.front,
            "productpage",
            "/",
            &[("x-forwarded-client-cert", forged)],
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        page["headers"]["x-forwarded-client-cert"],
        format!("By={PRODUCTPAGE_ID};URI=spiffe://cluster.local/ns/default/sa/trellis-front")
            .as_str()
    );
}

/// Writes the reviews route with the given weights for v1, v2, v3.
fn write_weights(mesh: &Mesh, weights: [u32; 3]) {
    let mut routes = String::new();
    for (subset, w) in ["v1", "v2", "v3"].iter().zip(weights) {
        routes.push_str(&format!(
            "    - destination:\n        host: reviews\n        subset: {subset}\n      weight: {w}\n"
        ));
    }
    let text = std::fs::read_to_string(mesh.config_dir.join("reviews-routing.yaml")).unwrap();
    let head = &text[..text.find("  http:").expect("http section")];
    let new = format!("{head}  http:\n  - route:\n{routes}");
    // Write then rename, as git and editors do, so the watcher never sees half a file.
    let tmp = mesh.config_dir.join(".reviews-routing.yaml.tmp");
    std::fs::write(&tmp, new).unwrap();
    std::fs::rename(&tmp, mesh.config_dir.join("reviews-routing.yaml")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_edit_reaches_running_proxies() {
    let mut mesh = quickstart(13);
    let before = versions(&mesh, 100, 4).await;
    assert!(!before.contains_key("v3"), "{before:?}");

    write_weights(&mesh, [0, 0, 100]);
    let written = Instant::now();
    let client = HttpClient::new();
    // Ten v3 answers in a row: under the old 90/10 split v3 never answers.
    let mut streak = 0;
    while streak < 10 {
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "route change never arrived"
        );
        let page = client
            .get(mesh.front, "productpage", "/", &[])
            .await
            .unwrap()
            .json()
            .unwrap();
        if reviews_of(&page)["version"] == "v3" {
            streak += 1;
        } else {
            streak = 0;
        }
    }
    let took = written.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to reach the proxies"
    );

    let after = versions(&mesh, 200, 4).await;
    assert_eq!(after.get("v3"), Some(&200), "{after:?}");
    mesh.wait_for_log("config revision applied", Duration::from_secs(1))
        .unwrap();

    // Back to a split: 50/50 between v1 and v2.
    write_weights(&mesh, [50, 50, 0]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let split = versions(&mesh, 400, 4).await;
    assert!(!split.contains_key("v3"), "{split:?}");
    let v1 = split.get("v1").copied().unwrap_or(0);
    // 400 draws at p=0.5: σ = 10, so ±60 is six σ.
    assert!((140..=260).contains(&v1), "{split:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_reported_and_last_good_keeps_serving() {
    let mut mesh = quickstart(14);
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings\nspec:\n  hosts:\n  - ratings\n  http:\n  - route:\n    - destination:\n        host: ratings\n      weight: ten\n";
    std::fs::write(mesh.config_dir.join("broken.yaml"), bad).unwrap();
    let line = mesh
        .wait_for_log("broken.yaml:12:", Duration::from_secs(10))
        .expect("the error names the file and line");
    assert!(line.contains("spec.http[0].route[0].weight"), "{line}");
    assert!(line.contains("VirtualService"), "{line}");
    mesh.wait_for_log("last good revision keeps serving", Duration::from_secs(1))
        .unwrap();

    // Also a syntax error in another file, and a valid edit in the same change set: nothing
    // of the set applies.
    std::fs::write(mesh.config_dir.join("syntax.yaml"), "kind: [unclosed\n").unwrap();
    write_weights(&mesh, [0, 0, 100]);
    mesh.wait_for_log("syntax.yaml:", Duration::from_secs(10))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let counts = versions(&mesh, 200, 4).await;
    assert!(
        !counts.contains_key("v3"),
        "half-applied change: {counts:?}"
    );
    assert!(counts.get("v1").copied().unwrap_or(0) > 150, "{counts:?}");

    // Fixing the files applies the pending edit.
    std::fs::remove_file(mesh.config_dir.join("broken.yaml")).unwrap();
    std::fs::remove_file(mesh.config_dir.join("syntax.yaml")).unwrap();
    // Rejected change sets are numbered too, so the fix is whatever revision comes next.
    mesh.wait_for_log("config revision applied", Duration::from_secs(10))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = versions(&mesh, 50, 2).await;
    assert_eq!(counts.get("v3"), Some(&50), "{counts:?}");
}
