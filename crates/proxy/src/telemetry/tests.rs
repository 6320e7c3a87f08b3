use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};

use super::*;
use crate::body::{boxed, full, Body};

fn telemetry(access_log: Option<AccessLog>) -> (Arc<Telemetry>, Arc<ProxyMetrics>) {
    let metrics = Arc::new(ProxyMetrics::default());
    let t = Arc::new(Telemetry::new(
        metrics.clone(),
        true,
        "reviews-v1",
        "default",
        "spiffe://cluster.local/ns/default/sa/reviews",
        access_log,
        crate::trace::Tracer::propagate_only(),
    ));
    (t, metrics)
}

fn inbound(t: &Telemetry) -> Edge {
    t.inbound_edge(
        "productpage-v1",
        "default",
        "spiffe://cluster.local/ns/default/sa/productpage",
        "reviews.default.svc.cluster.local",
        true,
    )
}

/// Sends `body` as the response of `ex` to the end, as a client reading it all would.
async fn respond(ex: Option<Exchange>, body: &'static str) {
    Recorded::wrap(http::Response::new(full(body)), ex)
        .into_body()
        .collect()
        .await
        .unwrap();
}

fn series(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A response whose body is sent to the end finishes its exchange once, with the bytes sent.
#[tokio::test]
async fn a_response_sent_to_the_end_is_counted_once() {
    let (t, metrics) = telemetry(None);
    let ex = t.start(
        inbound(&t),
        &http::Method::GET,
        "reviews:9080",
        "/r/1",
        false,
        &mut http::HeaderMap::new(),
    );
    let resp = http::Response::new(full("twelve bytes"));
    let body = Recorded::wrap(resp, ex)
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(body.to_bytes().len(), 12);
    let text = metrics.encode();
    let requests = series(&text, "trellis_requests_total{");
    assert_eq!(requests.len(), 1, "{text}");
    assert!(
        requests[0].contains("reporter=\"destination\""),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("source_workload=\"productpage-v1\""));
    assert!(requests[0].contains("destination_workload=\"reviews-v1\""));
    assert!(requests[0].contains("response_code=\"200\""));
    assert!(requests[0].contains("response_flags=\"-\""));
    assert!(requests[0].ends_with(" 1"), "{}", requests[0]);
    assert!(text.contains("trellis_request_duration_seconds_count{"));
    // The destination side summarizes the edge for the control plane.
    let (edges, _) = t.take_summaries();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].requests, 1);
    assert_eq!(edges[0].failures, 0);
    assert_eq!(edges[0].source_workload, "productpage-v1");
    assert_eq!(edges[0].latency_counts.iter().sum::<u64>(), 1);
    // Taken: the next period starts empty.
    assert!(t.take_summaries().0.is_empty());
}

/// Only the destination side reports edges to the control plane: a call between two
/// proxies must not be counted twice.
#[tokio::test]
async fn the_source_side_sends_no_summary() {
    let (t, metrics) = telemetry(None);
    let edge = t.outbound_edge(
        "details.default.svc.cluster.local",
        "details-v1",
        "default",
        "x",
        true,
    );
    let ex = t.start(
        edge,
        &http::Method::GET,
        "details:9080",
        "/",
        false,
        &mut http::HeaderMap::new(),
    );
    respond(ex, "x").await;
    assert!(t.take_summaries().0.is_empty());
    assert!(metrics.encode().contains("reporter=\"source\""));
}

/// A client that goes away mid-response is `DC`; a 503 and a failing gRPC status are
/// failures; a gRPC status read from the trailers labels the series.
#[tokio::test]
async fn flags_and_failures() {
    let (t, metrics) = telemetry(None);
    // Dropped before the end.
    let ex = t.start(
        inbound(&t),
        &http::Method::GET,
        "a",
        "/",
        false,
        &mut http::HeaderMap::new(),
    );
    let resp = Recorded::wrap(http::Response::new(full("unread")), ex);
    drop(resp);
    // The proxy's own 503, flagged.
    let ex = t.start(
        inbound(&t),
        &http::Method::GET,
        "a",
        "/",
        false,
        &mut http::HeaderMap::new(),
    );
    let resp = flag_response(
        crate::body::error_response(http::StatusCode::SERVICE_UNAVAILABLE, "none"),
        Flag::NoHealthyUpstream,
    );
    Recorded::wrap(resp, ex)
        .into_body()
        .collect()
        .await
        .unwrap();
    // gRPC UNAVAILABLE (14) in the trailers of a 200.
    let ex = t.start(
        inbound(&t),
        &http::Method::POST,
        "a",
        "/svc/M",
        true,
        &mut http::HeaderMap::new(),
    );
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"msg"))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body: Body = boxed(StreamBody::new(futures_util::stream::iter(frames)));
    Recorded::wrap(http::Response::new(body), ex)
        .into_body()
        .collect()
        .await
        .unwrap();
    let text = metrics.encode();
    assert!(text.contains("response_flags=\"DC\""), "{text}");
    assert!(
        series(&text, "trellis_requests_total{")
            .iter()
            .any(|l| l.contains("response_code=\"503\"") && l.contains("response_flags=\"UH\"")),
        "{text}"
    );
    assert!(
        series(&text, "trellis_requests_total{")
            .iter()
            .any(|l| l.contains("request_protocol=\"grpc\"")
                && l.contains("grpc_response_status=\"14\"")),
        "{text}"
    );
    let (edges, _) = t.take_summaries();
    let (http, grpc): (Vec<_>, Vec<_>) = edges.iter().partition(|e| e.protocol == "http");
    assert_eq!(http[0].requests, 2);
    // The DC request had a 200 head: the app answered, the client left. Only the 503 failed.
    assert_eq!(http[0].failures, 1);
    assert_eq!((grpc[0].requests, grpc[0].failures), (1, 1));
}

/// Paths, queries and authorities never become labels: ten thousand distinct ones make one
/// series.
#[tokio::test]
async fn distinct_paths_add_no_series() {
    let (t, metrics) = telemetry(None);
    for i in 0..10_000 {
        let ex = t.start(
            inbound(&t),
            &http::Method::GET,
            &format!("host-{i}:9080"),
            &format!("/item/{i}?id={i}"),
            false,
            &mut http::HeaderMap::new(),
        );
        respond(ex, "x").await;
    }
    let text = metrics.encode();
    assert_eq!(series(&text, "trellis_requests_total{").len(), 1, "{text}");
    assert!(!text.contains("/item/"), "a path leaked into a label");
}

/// Access log lines are JSON with the request's details, written by the log's own thread.
#[tokio::test]
async fn access_log_lines_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::open(&AccessLogTarget::File(path.clone()), 1.0).unwrap();
    let (t, _) = telemetry(Some(log));
    let mut ex = t
        .start(
            inbound(&t),
            &http::Method::PUT,
            "reviews:9080",
            "/r/7?x=1",
            false,
            &mut http::HeaderMap::new(),
        )
        .unwrap();
    ex.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    ex.policy = Some("default/allow-pp".into());
    ex.upstream = Some("127.0.0.1:9080".parse().unwrap());
    let req_body = count_request_body(Full::new(Bytes::from_static(b"abcd")), Some(&mut ex));
    req_body.collect().await.unwrap();
    respond(Some(ex), "hello").await;
    let tcp = t.start_tcp(inbound(&t)).unwrap();
    tcp.finish(10, 20, Some(Flag::UpstreamReset));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let r = &lines[0];
    assert_eq!(r["method"], "PUT");
    assert_eq!(r["path"], "/r/7?x=1");
    assert_eq!(r["authority"], "reviews:9080");
    assert_eq!(r["status"], 200);
    assert_eq!(r["request_bytes"], 4);
    assert_eq!(r["response_bytes"], 5);
    assert_eq!(r["response_flags"], "-");
    assert_eq!(r["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["policy"], "default/allow-pp");
    assert_eq!(r["upstream"], "127.0.0.1:9080");
    assert_eq!(
        r["source_principal"],
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
    assert_eq!(r["destination_workload"], "reviews-v1");
    assert!(r["start_time"].as_str().unwrap().ends_with('Z'));
    let c = &lines[1];
    assert_eq!(c["protocol"], "tcp");
    assert_eq!(c["response_flags"], "UC");
    // Received from the client is the request direction.
    assert_eq!(
        (c["request_bytes"].as_u64(), c["response_bytes"].as_u64()),
        (Some(20), Some(10))
    );
}

#[test]
fn sampling_outside_zero_to_one_is_refused() {
    assert!(AccessLog::open(&AccessLogTarget::Stdout, 1.5).is_err());
    assert!(AccessLog::open(&AccessLogTarget::File("/nonexistent/dir/log".into()), 1.0).is_err());
}

/// A tap gets the requests its filter matches, tagged with its id; others get nothing.
#[tokio::test]
async fn taps_get_what_they_match() {
    let (t, _) = telemetry(None);
    t.set_taps(&[
        proto::TapRequest {
            id: "t1".into(),
            path_prefix: "/api".into(),
            method: String::new(),
        },
        proto::TapRequest {
            id: "t2".into(),
            path_prefix: String::new(),
            method: "POST".into(),
        },
    ]);
    for (method, path) in [("GET", "/api/x"), ("POST", "/other"), ("GET", "/other")] {
        let m: http::Method = method.parse().unwrap();
        let ex = t.start(
            inbound(&t),
            &m,
            "reviews:9080",
            path,
            false,
            &mut http::HeaderMap::new(),
        );
        respond(ex, "x").await;
    }
    let mut rx = t.tap_events().lock().await;
    let mut got = Vec::new();
    while let Ok(e) = rx.try_recv() {
        got.push((e.tap_id, e.method, e.path, e.status));
    }
    assert_eq!(
        got,
        vec![
            ("t1".into(), "GET".into(), "/api/x".into(), 200),
            ("t2".into(), "POST".into(), "/other".into(), 200),
        ]
    );
    t.set_taps(&[]);
    let ex = t.start(
        inbound(&t),
        &http::Method::GET,
        "a",
        "/api/y",
        false,
        &mut http::HeaderMap::new(),
    );
    respond(ex, "x").await;
    assert!(rx.try_recv().is_err());
}

/// Off means off: nothing is recorded.
#[tokio::test]
async fn disabled_records_nothing() {
    let metrics = Arc::new(ProxyMetrics::default());
    let t = Arc::new(Telemetry::new(
        metrics.clone(),
        false,
        "w",
        "ns",
        "p",
        None,
        crate::trace::Tracer::propagate_only(),
    ));
    assert!(t
        .start(
            inbound(&t),
            &http::Method::GET,
            "a",
            "/",
            false,
            &mut http::HeaderMap::new()
        )
        .is_none());
    assert!(t.start_tcp(inbound(&t)).is_none());
    assert!(!metrics.encode().contains("trellis_requests_total{"));
}

/// The caller's workload name is its proxy's word: a peer inventing names gets the first
/// [`MAX_SOURCE_WORKLOADS`] labels and `other` after, and one edge is one shared value.
#[tokio::test]
async fn caller_workload_names_are_capped_and_edges_shared() {
    let (t, metrics) = telemetry(None);
    for i in 0..MAX_SOURCE_WORKLOADS + 50 {
        let edge = t.inbound_edge(&format!("w-{i}"), "default", "p", "svc", true);
        let ex = t.start(
            edge,
            &http::Method::GET,
            "a",
            "/",
            false,
            &mut http::HeaderMap::new(),
        );
        respond(ex, "x").await;
    }
    let text = metrics.encode();
    assert_eq!(
        series(&text, "trellis_requests_total{").len(),
        MAX_SOURCE_WORKLOADS + 1,
        "{text}"
    );
    assert!(text.contains("source_workload=\"other\""));
    assert!(Arc::ptr_eq(
        &t.inbound_edge("w-1", "default", "p", "svc", true),
        &t.inbound_edge("w-1", "default", "p", "svc", true)
    ));
    assert!(!Arc::ptr_eq(
        &t.inbound_edge("w-1", "default", "p", "svc", true),
        &t.inbound_edge("w-1", "default", "p", "svc", false)
    ));
}

/// A snapshot with one service, `reviews` in `default`, whose endpoint is at 10.0.0.7.
fn reviews_snapshot() -> trellis_api::snapshot::Snapshot {
    use trellis_api::snapshot::{Endpoint, Service, Snapshot};
    let host = "reviews.default.svc.cluster.local".to_owned();
    let service = Service {
        host: host.clone(),
        name: "reviews".into(),
        namespace: "default".into(),
        ports: vec![],
        subsets: Default::default(),
        endpoints: vec![Endpoint {
            workload_name: "reviews-v1".into(),
            address: [10, 0, 0, 7].into(),
            labels: Default::default(),
            identity: "spiffe://cluster.local/ns/default/sa/reviews".into(),
            inbound_port: 15008,
            ports: Default::default(),
        }],
        vips: vec![],
        routes: Default::default(),
        policies: Default::default(),
    };
    Snapshot {
        services: [(host.clone(), Arc::new(service))].into(),
        by_endpoint: [([10, 0, 0, 7].into(), (host, 0))].into(),
        ..Snapshot::default()
    }
}

/// The service a peer names, or the authority an app chose, becomes a label only if the
/// snapshot knows it, spelled as the snapshot spells it.
#[test]
fn destination_services_come_from_the_snapshot() {
    let snap = reviews_snapshot();
    let label = |named: Option<&str>, authority: &str| {
        destination_service(Some(&snap), named, authority, "default").into_owned()
    };
    let host = "reviews.default.svc.cluster.local";
    assert_eq!(label(Some(host), "whatever:1"), host);
    for authority in [
        "reviews:9080",
        "REVIEWS.default",
        "reviews.default.svc.",
        "10.0.0.7:9080",
    ] {
        assert_eq!(label(None, authority), host, "{authority}");
    }
    // A name the snapshot does not know falls back to the authority, then to `unknown`.
    assert_eq!(label(Some("made-up-1"), "reviews"), host);
    assert_eq!(label(Some("made-up-1"), "made-up-2:80"), "unknown");
    assert_eq!(label(None, "10.9.9.9:80"), "unknown");
    // Mirrored copies keep their mark.
    assert_eq!(label(None, "reviews-shadow:9080"), format!("{host}-shadow"));
    assert_eq!(label(None, "made-up-shadow"), "unknown");
    assert_eq!(
        destination_service(None, Some(host), "reviews", "default"),
        "unknown"
    );
}

/// What one peer chooses — a service name per request in the peer header, a new spelling of
/// the authority per request, a new principal per connection — adds a bounded number of
/// series, however many distinct values it sends.
#[tokio::test]
async fn labels_a_peer_chooses_stay_bounded() {
    let (t, metrics) = telemetry(None);
    let snap = reviews_snapshot();
    let caller = "spiffe://cluster.local/ns/default/sa/productpage";
    for i in 0..2_000u32 {
        let named = format!("svc-{i}.default.svc.cluster.local");
        // Odd requests spell the known service in a new mix of cases; even ones name
        // services that do not exist.
        let authority: String = if i % 2 == 0 {
            format!("made-up-{i}:9080")
        } else {
            "reviews.default:9080"
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> (j % 11)) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        };
        let named = (i % 3 != 0).then_some(named.as_str());
        let service = destination_service(Some(&snap), named, &authority, "default");
        let edge = t.inbound_edge("productpage-v1", "default", caller, &service, true);
        let ex = t.start(
            edge,
            &http::Method::GET,
            &authority,
            "/",
            false,
            &mut http::HeaderMap::new(),
        );
        respond(ex, "x").await;
    }
    let text = metrics.encode();
    let requests = series(&text, "trellis_requests_total{");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests
        .iter()
        .any(|l| l.contains("destination_service=\"reviews.default.svc.cluster.local\"")));
    assert!(requests
        .iter()
        .any(|l| l.contains("destination_service=\"unknown\"")));

    // A caller with a certificate per request (a token for every service account of its
    // namespace): its principals get the cap's labels, then `other`.
    for i in 0..MAX_SOURCE_PRINCIPALS + 100 {
        let principal = format!("spiffe://cluster.local/ns/default/sa/p-{i}");
        let edge = t.inbound_edge(
            "productpage-v1",
            "default",
            t.source_principal(&principal),
            "reviews.default.svc.cluster.local",
            true,
        );
        let ex = t.start(
            edge,
            &http::Method::GET,
            "reviews",
            "/",
            false,
            &mut http::HeaderMap::new(),
        );
        respond(ex, "x").await;
    }
    let text = metrics.encode();
    let principals: std::collections::BTreeSet<String> = series(&text, "trellis_requests_total{")
        .iter()
        .filter_map(|l| l.split("source_principal=\"").nth(1)?.split('"').next())
        .filter(|p| !p.ends_with("/sa/productpage"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        principals.len(),
        MAX_SOURCE_PRINCIPALS + 1,
        "{principals:?}"
    );
    assert!(principals.contains("other"));
}

/// A response code HTTP does not define reads `other`; one edge labels at most
/// MAX_OUTCOMES_PER_EDGE distinct answers, then counts the rest together.
#[tokio::test]
async fn response_codes_are_bounded_per_edge() {
    let (t, metrics) = telemetry(None);
    for status in 100..1000u16 {
        let ex = t.start(
            inbound(&t),
            &http::Method::GET,
            "reviews",
            "/",
            false,
            &mut http::HeaderMap::new(),
        );
        let mut resp = http::Response::new(full("x"));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        respond_with(resp, ex).await;
    }
    let text = metrics.encode();
    let requests = series(&text, "trellis_requests_total{");
    // `other` may have taken one of the places before the cap (HTTP defines no 104).
    assert!(
        requests.len() <= crate::metrics::MAX_OUTCOMES_PER_EDGE + 1,
        "{text}"
    );
    let other = requests
        .iter()
        .find(|l| l.contains("response_code=\"other\""))
        .expect("an `other` series");
    let counted: u64 = requests
        .iter()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 900, "every request counted once: {other}");
}

async fn respond_with(resp: http::Response<Body>, ex: Option<Exchange>) {
    Recorded::wrap(resp, ex)
        .into_body()
        .collect()
        .await
        .unwrap();
}
