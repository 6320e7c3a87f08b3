use std::time::Duration;

use axum::http::Request;
use futures_util::StreamExt;
use tower::ServiceExt;

use super::*;
use crate::golden::Reporter;

const TOKEN: &str = "s3cret";

fn service(name: &str) -> proto::Service {
    proto::Service {
        host: format!("{name}.default.svc.cluster.local"),
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

fn state() -> Arc<TelemetryState> {
    let snap = proto::SnapshotMessage {
        version: "v1".into(),
        services: vec![service("details"), service("reviews")],
        ..Default::default()
    };
    // The sender may go: the receiver keeps the last value.
    let (_tx, snapshots) = watch::channel(Arc::new(snap));
    Arc::new(TelemetryState {
        golden: Arc::new(GoldenWindow::default()),
        taps: TapRegistry::new(),
        snapshots,
        admin_token: TOKEN.into(),
    })
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(Body::empty()).unwrap()
}

async fn json(resp: Response) -> serde_json::Value {
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn key(name: &str) -> WorkloadKey {
    WorkloadKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn stat_lists_every_service_and_the_reported_edges() {
    let state = state();
    let reporter = Arc::new(Reporter {
        namespace: "default".into(),
        workload: "reviews-v1".into(),
        address: "127.0.1.3".parse().unwrap(),
    });
    let mut latency = trellis_api::telemetry::LatencyHistogram::default();
    for _ in 0..40 {
        latency.observe(2_000);
    }
    let edge = proto::EdgeStats {
        source_workload: "productpage-v1".into(),
        source_namespace: "default".into(),
        source_principal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into(),
        destination_service: "reviews.default.svc.cluster.local".into(),
        destination_workload: "reviews-v1".into(),
        destination_namespace: "default".into(),
        protocol: "http".into(),
        requests: 20,
        failures: 1,
        latency_counts: latency.counts().to_vec(),
        latency_sum_micros: latency.sum_micros(),
    };
    let now = Instant::now();
    state.golden.record(
        &reporter,
        now - Duration::from_secs(2),
        2000,
        vec![edge.clone()],
    );
    state.golden.record(&reporter, now, 2000, vec![edge]);

    let app = router(state.clone());
    let resp = app
        .clone()
        .oneshot(get("/api/v1/stat", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json(resp).await;
    assert_eq!(v["window_secs"], 30);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{v}");
    // Nobody called details: listed, with nulls.
    assert_eq!(services[0]["name"], "details");
    assert_eq!(services[0]["rps"], 0.0);
    assert_eq!(services[0]["requests"], 0);
    assert!(services[0]["success_rate"].is_null() && services[0]["p99_ms"].is_null());
    let reviews = &services[1];
    assert_eq!(reviews["service"], "reviews.default.svc.cluster.local");
    assert_eq!(reviews["requests"], 40);
    assert_eq!(reviews["failures"], 2);
    assert_eq!(reviews["rps"], 10.0);
    assert_eq!(reviews["success_rate"], 0.95);
    let p50 = reviews["p50_ms"].as_f64().unwrap();
    assert!((1.6..=2.4).contains(&p50), "{p50}");
    let edges = v["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["source"], "default/productpage-v1");
    assert_eq!(edges[0]["destination_workload"], "reviews-v1");
    assert_eq!(edges[0]["protocols"], serde_json::json!(["http"]));

    // Filters and windows.
    let v = json(
        app.clone()
            .oneshot(get("/api/v1/stat?service=details&window=1m", None))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["window_secs"], 60);
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
    assert!(v["edges"].as_array().unwrap().is_empty());
    let v = json(
        app.clone()
            .oneshot(get("/api/v1/stat?namespace=staging&window=", None))
            .await
            .unwrap(),
    )
    .await;
    assert!(v["services"].as_array().unwrap().is_empty(), "{v}");

    for bad in ["1h", "often", "100ms"] {
        let resp = app
            .clone()
            .oneshot(get(&format!("/api/v1/stat?window={bad}"), None))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(json(resp).await["error"].as_str().unwrap().contains(bad));
    }
}

#[tokio::test]
async fn tap_needs_the_admin_token_and_a_connected_proxy() {
    let state = state();
    let app = router(state.clone());
    for token in [None, Some("wrong"), Some("s3cret ")] {
        let resp = app
            .clone()
            .oneshot(get("/api/v1/tap?workload=reviews-v1", token))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let resp = app
        .clone()
        .oneshot(get("/api/v1/tap?workload=reviews-v1", Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json(resp).await["error"],
        "no connected proxy serves workload default/reviews-v1"
    );
    let resp = app
        .clone()
        .oneshot(get("/api/v1/tap", Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (_proxy, _rx) = state.taps.connect(key("reviews-v1"));
    let resp = app
        .clone()
        .oneshot(get("/api/v1/tap?workload=reviews-v1&path=api", Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(state.taps.is_empty());
}

#[tokio::test]
async fn tap_streams_json_lines_until_the_client_goes() {
    let state = state();
    let (proxy, mut sets) = state.taps.connect(key("reviews-v1"));
    let app = router(state.clone());
    let resp = app
        .oneshot(get(
            "/api/v1/tap?workload=reviews-v1&namespace=default&path=/api&method=get",
            Some(TOKEN),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");

    // The proxy is told at once.
    assert!(sets.has_changed().unwrap());
    let set = sets.borrow_and_update().clone();
    assert_eq!(set.taps.len(), 1);
    assert_eq!(set.taps[0].path_prefix, "/api");
    assert_eq!(set.taps[0].method, "GET");
    let id = set.taps[0].id.clone();

    let event = |path: &str| proto::TapEvent {
        tap_id: id.clone(),
        method: "GET".into(),
        path: path.into(),
        status: 200,
        ..Default::default()
    };
    assert_eq!(proxy.deliver(vec![event("/api/a"), event("/api/b")]), 0);
    let mut body = resp.into_body().into_data_stream();
    let mut text = String::new();
    while text.lines().count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let lines: Vec<TapEventJson> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0].path, "/api/a");
    assert_eq!(lines[1].path, "/api/b");
    assert_eq!(lines[1].tap_id, id);
    assert!(text.ends_with('\n'));

    // The client goes: the tap closes and the proxy gets an empty set.
    drop(body);
    assert!(sets.has_changed().unwrap());
    assert!(sets.borrow_and_update().taps.is_empty());
    assert!(state.taps.is_empty());
}
