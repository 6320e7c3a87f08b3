//! End to end: Istio's Bookinfo traffic-management tasks, with the task's own YAML from
//! `tests/conformance/istio/samples/bookinfo/networking/`, on the quickstart mesh (its
//! workloads are Bookinfo's: productpage, details, reviews v1–v3, ratings; a details-v2 is
//! added for the details task). Each test asserts what Istio's documentation says the task
//! does.
//!
//! The quickstart's productpage gives each call 3 s and one retry after a timeout, as
//! Bookinfo's does, which is what makes the delay task's outcome what Istio documents.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::{workspace_root, HttpClient, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

fn networking(file: &str) -> PathBuf {
    workspace_root()
        .join("tests/conformance/istio/samples/bookinfo/networking")
        .join(file)
}

/// The quickstart plus a details-v2 workload, as its own example directory.
fn example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let quickstart = workspace_root().join("examples/quickstart");
    for entry in std::fs::read_dir(&quickstart).expect("quickstart") {
        let entry = entry.expect("entry");
        // Routing comes from the task under test.
        if entry.file_name() == "reviews-routing.yaml" {
            continue;
        }
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    std::fs::write(
        dir.path().join("details-v2.yaml"),
        "apiVersion: networking.istio.io/v1\n\
         kind: WorkloadEntry\n\
         metadata:\n  name: details-v2\n\
         spec:\n  address: 127.0.1.7\n  serviceAccount: bookinfo-details\n\
         \x20 labels:\n    app: details\n    version: v2\n  ports:\n    http: 9080\n",
    )
    .expect("details-v2");
    dir
}

/// A mesh on `subnet` serving Bookinfo's destination rules and the task's `files`, once
/// every proxy has applied them.
async fn task(subnet: u8, files: &[&str]) -> Mesh {
    let dir = example();
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), subnet).expect("mesh starts");
    let before = status(&mesh).await["snapshot_version"].clone();
    for f in std::iter::once(&"destination-rule-all.yaml").chain(files) {
        apply(&mesh, f);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&mesh).await;
        let version = &s["snapshot_version"];
        let proxies = s["proxies"].as_array().cloned().unwrap_or_default();
        if *version != before
            && s["rejected"].is_null()
            && !proxies.is_empty()
            && proxies.iter().all(|p| p["acked_version"] == *version)
        {
            return mesh;
        }
        assert!(
            Instant::now() < deadline,
            "the task's config was not applied: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl apply` of a task file: each resource goes to a file of its own, named after its
/// kind and name, so a later task's resource replaces the earlier one of the same name (the
/// tasks rely on that: `reviews-test-v2` replaces `all-v1`'s `reviews`).
fn apply(mesh: &Mesh, file: &str) {
    let text = std::fs::read_to_string(networking(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    for doc in text.split("\n---") {
        let field = |key: &str| {
            doc.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        let (Some(kind), Some(name)) = (field("kind:"), field("  name:")) else {
            continue;
        };
        std::fs::write(
            mesh.config_dir.join(format!("{kind}-{name}.yaml")),
            doc.trim_start_matches('-'),
        )
        .expect("write");
    }
}

async fn status(mesh: &Mesh) -> Value {
    let (name, value) = mesh.api_auth();
    HttpClient::new()
        .get(mesh.api, "api", "/api/v1/status", &[(name, &value)])
        .await
        .expect("status")
        .json()
        .expect("json")
}

/// One page, as `user` (Bookinfo's `end-user` header) or anonymous.
async fn page(mesh: &Mesh, user: Option<&str>) -> (u16, Value, Duration) {
    let headers: Vec<(&str, &str)> = user.map(|u| ("end-user", u)).into_iter().collect();
    let started = Instant::now();
    let resp = HttpClient::new()
        .get(mesh.front, "productpage", "/productpage", &headers)
        .await
        .expect("page");
    let took = started.elapsed();
    let body = resp.json().unwrap_or(Value::Null);
    (resp.status, body, took)
}

/// The answer of the call to `service` inside an app's answer.
fn call<'a>(answer: &'a Value, service: &str) -> &'a Value {
    answer["calls"]
        .as_array()
        .and_then(|calls| {
            calls.iter().find(|c| {
                c["service"] == service
                    || c["url"]
                        .as_str()
                        .is_some_and(|u| u.contains(&format!("//{service}:")))
            })
        })
        .unwrap_or_else(|| panic!("no call to {service} in {answer}"))
}

/// Versions of reviews seen over `n` pages.
async fn reviews_versions(mesh: &Mesh, n: usize, user: Option<&str>) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (status, body, _) = page(mesh, user).await;
        assert_eq!(status, 200, "{body}");
        let v = call(&body, "reviews")["version"]
            .as_str()
            .unwrap_or("none")
            .to_owned();
        *seen.entry(v).or_default() += 1;
    }
    seen
}

fn share(seen: &BTreeMap<String, usize>, version: &str) -> usize {
    seen.get(version).copied().unwrap_or(0)
}

/// "Route to version 1": every service's v1 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_v1() {
    let mesh = task(24, &["virtual-service-all-v1.yaml"]).await;
    let seen = reviews_versions(&mesh, 60, None).await;
    assert_eq!(share(&seen, "v1"), 60, "{seen:?}");
    let (_, body, _) = page(&mesh, None).await;
    assert_eq!(call(&body, "details")["version"], "v1", "{body}");
    // reviews v1 shows no stars: it does not call ratings.
    assert!(call(&body, "reviews")["calls"]
        .as_array()
        .is_some_and(|c| c.is_empty()));
}

/// Weighted shifts: each split holds within 4.5 standard deviations over 500 pages.
async fn split(subnet: u8, file: &str, expect: &[(&str, f64)]) {
    let mesh = task(subnet, &["virtual-service-all-v1.yaml", file]).await;
    let n = 500;
    let seen = reviews_versions(&mesh, n, None).await;
    for (version, p) in expect {
        let got = share(&seen, version) as f64;
        let mean = p * n as f64;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (got - mean).abs() <= 4.5 * sd.max(0.5),
            "{file}: {version} {got} of {n}, expected about {mean} ({seen:?})"
        );
    }
    let total: usize = seen.values().sum();
    let expected: f64 = expect.iter().map(|(v, _)| share(&seen, v) as f64).sum();
    assert_eq!(
        expected as usize, total,
        "a version outside the split: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_90_10() {
    split(
        25,
        "virtual-service-reviews-90-10.yaml",
        &[("v1", 0.9), ("v2", 0.1)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_80_20() {
    split(
        26,
        "virtual-service-reviews-80-20.yaml",
        &[("v1", 0.8), ("v2", 0.2)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_50_v3() {
    split(
        27,
        "virtual-service-reviews-50-v3.yaml",
        &[("v1", 0.5), ("v3", 0.5)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_v2_v3() {
    split(
        28,
        "virtual-service-reviews-v2-v3.yaml",
        &[("v2", 0.5), ("v3", 0.5)],
    )
    .await;
}

/// "Route to v3": red stars for everyone, so ratings is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_v3() {
    let mesh = task(
        29,
        &[
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-v3.yaml",
        ],
    )
    .await;
    let seen = reviews_versions(&mesh, 50, None).await;
    assert_eq!(share(&seen, "v3"), 50, "{seen:?}");
    let (_, body, _) = page(&mesh, None).await;
    assert_eq!(
        call(call(&body, "reviews"), "ratings")["service"],
        "ratings",
        "{body}"
    );
}

/// "Route based on user identity": jason sees reviews v2 (black stars), everyone else v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jason_sees_v2() {
    let mesh = task(
        30,
        &[
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
        ],
    )
    .await;
    let jason = reviews_versions(&mesh, 30, Some("jason")).await;
    assert_eq!(share(&jason, "v2"), 30, "{jason:?}");
    let others = reviews_versions(&mesh, 30, Some("alice")).await;
    assert_eq!(share(&others, "v1"), 30, "{others:?}");
    let anonymous = reviews_versions(&mesh, 30, None).await;
    assert_eq!(share(&anonymous, "v1"), 30, "{anonymous:?}");
}

/// "Injecting an HTTP delay fault": ratings is delayed 7 s for jason. productpage gives
/// reviews 3 s and one retry, so jason's page comes back after about 6 s with the reviews
/// unavailable — the bug Istio's task is about; other users are not delayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_delay_hits_jason_only() {
    let mesh = task(
        31,
        &[
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
            "virtual-service-ratings-test-delay.yaml",
        ],
    )
    .await;
    let (status, body, took) = page(&mesh, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_secs(3),
        "an anonymous page took {took:?}"
    );
    let (_, body, took) = page(&mesh, Some("jason")).await;
    let reviews = call(&body, "reviews");
    assert!(
        reviews["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out")),
        "jason's reviews should time out: {body}"
    );
    assert_eq!(reviews["attempts"], 2, "{body}");
    assert!(took >= Duration::from_secs(6), "jason's page took {took:?}");
    // The delay itself, as reviews-v2's proxy recorded its call to ratings: held by the
    // fault until productpage gave up on reviews, so the caller went away first (`DC`).
    let metrics = HttpClient::new()
        .get(mesh.addr(4, 15020), "m", "/metrics", &[])
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("trellis_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"ratings.default.svc.cluster.local\"")
                && l.contains("response_flags=\"DC\"")),
        "no delayed ratings call abandoned by its caller:\n{metrics}"
    );
}

/// "Injecting an HTTP abort fault": ratings answers 500 for jason, so his reviews show
/// "ratings unavailable"; other users are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_abort_hits_jason_only() {
    let mesh = task(
        32,
        &[
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
            "virtual-service-ratings-test-abort.yaml",
        ],
    )
    .await;
    for _ in 0..10 {
        let (_, body, _) = page(&mesh, Some("jason")).await;
        // reviews v2 answers 502 when ratings fails; its answer is in productpage's error.
        let reviews: Value = call(&body, "reviews")["error"]
            .as_str()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_else(|| panic!("reviews did not fail as expected: {body}"));
        let ratings = call(&reviews, "ratings");
        assert_eq!(ratings["status"], 500, "{body}");
        assert!(
            ratings["error"]
                .as_str()
                .is_some_and(|e| e.contains("fault filter abort")),
            "{body}"
        );
    }
    let (status, body, _) = page(&mesh, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(call(&body, "reviews")["version"], "v1");
}

/// details v2 for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_v2() {
    let mesh = task(
        33,
        &[
            "virtual-service-all-v1.yaml",
            "virtual-service-details-v2.yaml",
        ],
    )
    .await;
    for _ in 0..30 {
        let (status, body, _) = page(&mesh, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(call(&body, "details")["version"], "v2", "{body}");
    }
}
