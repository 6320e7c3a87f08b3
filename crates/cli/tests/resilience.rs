//! End to end: retries that cannot storm and deadlines that stop work, on a three-service
//! chain (`a` → `b` → `c`) started with `trellis up`, every service with a VirtualService
//! that retries.

use std::time::{Duration, Instant};

use trellis_testkit::load::Load;
use trellis_testkit::{HttpClient, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// A chain front door → `a` → `b` → `c`: `b` calls `c` at `c_call` (a URL, so a test can
/// make the leaf fail with `?status=503` or be slow with `?delay=`), `a` calls `b` at
/// `b_call`. Each service gets `vs_extra` (YAML under its VirtualService's one route).
fn chain(b_call: &str, c_call: &str, vs_extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut services = String::new();
    let mut workloads = String::new();
    let mut routes = String::new();
    for (i, (name, calls)) in [("a", b_call), ("b", c_call), ("c", "")].iter().enumerate() {
        let front = if *name == "a" {
            "  annotations:\n    demo.trellis.dev/front: \"true\"\n"
        } else {
            ""
        };
        services.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n{front}\
             spec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 9080\n---\n"
        ));
        // Apps finish what they started even when their caller leaves, as thread-per-request
        // servers do: only the mesh can stop the work then.
        let calls = if calls.is_empty() {
            String::new()
        } else {
            format!("    demo.trellis.dev/calls: \"{calls}\"\n")
        };
        let annotations =
            format!("  annotations:\n    demo.trellis.dev/finish-abandoned: \"true\"\n{calls}");
        workloads.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}-v1\n\
             {annotations}spec:\n  address: 127.0.1.{}\n  serviceAccount: {name}\n  labels:\n    \
             app: {name}\n    version: v1\n  ports:\n    http: 9080\n---\n",
            i + 1
        ));
        routes.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n\
             spec:\n  hosts:\n  - {name}\n  http:\n  - route:\n    - destination:\n        \
             host: {name}\n{vs_extra}---\n"
        ));
    }
    for (file, text) in [
        ("services.yaml", services),
        ("workloads.yaml", workloads),
        ("routes.yaml", routes),
    ] {
        std::fs::write(dir.path().join(file), text).expect("write");
    }
    dir
}

/// Requests the proxy at `addr` served as the destination, by its metrics.
async fn served(addr: std::net::SocketAddr) -> u64 {
    let labels = ["reporter=\"destination\""];
    trellis_testkit::metric_sum(addr, "trellis_requests_total", &labels)
        .await
        .expect("metrics")
}

/// Retries configured at every hop of a three-service chain with a failing leaf: the leaf
/// sees at most 1.25× the requests sent. Only the first proxy with retries retries (the
/// others see its mark), and its retries come out of a budget of 20 % of its requests plus
/// one a second. Three layers of three attempts each would otherwise send up to 27.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_leaf_sees_at_most_a_quarter_more() {
    let retries = "    retries:\n      attempts: 2\n      retryOn: 5xx,gateway-error,reset\n";
    let dir = chain("http://b:9080/", "http://c:9080/?status=503", retries);
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 40).expect("mesh starts");
    let sent = {
        let load = Load::start(mesh.front, "a", "/", 100, 64);
        tokio::time::sleep(Duration::from_secs(6)).await;
        load.finish().await
    };
    assert!(sent.sent >= 400, "only {} requests sent", sent.sent);
    assert_eq!(sent.ok, 0, "the leaf fails, so every request should");
    // Reports are recorded when each response ends; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a, b, c) = (
        served(mesh.addr(1, 15020)).await,
        served(mesh.addr(2, 15020)).await,
        served(mesh.addr(3, 15020)).await,
    );
    let ratio = c as f64 / sent.sent as f64;
    assert!(
        ratio <= 1.25,
        "the leaf saw {c} requests for {} sent ({ratio:.2}×); a saw {a}, b saw {b}",
        sent.sent
    );
    // The retries did happen (at the first layer), within the budget.
    assert!(
        a > sent.sent,
        "no retry at all: a saw {a} for {} sent",
        sent.sent
    );
    assert_eq!(b, a, "b retried calls already retried above");
    assert_eq!(c, b, "c saw retries of b");
}

/// A caller's 1 s timeout stops downstream work: `b` is slow (2 s) before it calls `c`; the
/// front door gives up after 1 s, and when `b` does call `c`, its proxy knows the caller's
/// deadline has passed and does not start the call. `c` never sees a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_timeout_stops_downstream_work() {
    let timeout = "    timeout: 1s\n    retries:\n      attempts: 0\n";
    let dir = chain("http://b:9080/?delay=2s", "http://c:9080/", timeout);
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 41).expect("mesh starts");
    let client = HttpClient::new();
    for _ in 0..3 {
        let started = Instant::now();
        let resp = client
            .get(mesh.front, "a", "/", &[])
            .await
            .expect("request");
        let took = started.elapsed();
        assert_eq!(resp.status, 504, "{}", resp.text());
        assert!(took < Duration::from_secs(2), "the timeout took {took:?}");
    }
    // b's app finishes its 2 s delay and calls c: give it the time to try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_metrics = client
        .get(mesh.addr(2, 15020), "m", "/metrics", &[])
        .await
        .expect("metrics")
        .text();
    let refused: u64 = b_metrics
        .lines()
        .filter(|l| {
            l.starts_with("trellis_requests_total{reporter=\"source\"")
                && l.contains("destination_service=\"c.default.svc.cluster.local\"")
                && l.contains("response_flags=\"UT\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(
        refused, 3,
        "b's calls to c were not refused at the deadline:\n{b_metrics}"
    );
    assert_eq!(
        served(mesh.addr(3, 15020)).await,
        0,
        "c did work past the deadline"
    );
}

/// A caller's deadline reaches only the calls made for its own request. An attacker picks a
/// trace id (the front door accepts a client's `traceparent`) and sends a request that
/// outlives `a`'s 1 s timeout (`?delay=2s`: `a`'s app waits before calling `b`), so that
/// `a`'s proxy remembers a deadline that has passed. Other requests with the very same
/// `traceparent` are served all the same; the attacker's own late call is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_trace_id_cannot_fail_other_requests() {
    let dir = chain("http://b:9080/", "http://c:9080/", "    timeout: 1s\n");
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 173).expect("mesh starts");
    let client = HttpClient::new();
    let traceparent = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let attack = client
        .get(mesh.front, "a", "/?delay=2s", &traceparent)
        .await
        .expect("request");
    assert_eq!(attack.status, 504, "{}", attack.text());
    // While `a`'s proxy still knows the attacker's passed deadline (10 s past it).
    for i in 0..3 {
        let resp = client
            .get(mesh.front, "a", "/", &traceparent)
            .await
            .expect("request");
        assert_eq!(
            resp.status,
            200,
            "request {i} of the same trace: {}",
            resp.text()
        );
    }
    // The attacker's request's app wakes and calls `b`: refused at the deadline.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let refused = trellis_testkit::metric_sum(
        mesh.addr(1, 15020),
        "trellis_requests_total",
        &[
            "reporter=\"source\"",
            "destination_service=\"b.default.svc.cluster.local\"",
            "response_flags=\"UT\"",
        ],
    )
    .await
    .expect("metrics");
    assert_eq!(refused, 1, "the attacker's own late call to b");
    assert_eq!(served(mesh.addr(2, 15020)).await, 3, "b served the others");
}

/// Mirroring: every request `a` sends to `b` is also sent to `c`, as a copy whose authority
/// says it is one (`b-shadow`, labelled by the service's full host); the copies' answers are
/// dropped, and the caller's answers are `b`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_copies_reach_the_mirror_and_change_nothing() {
    let dir = chain("http://b:9080/", "", "");
    std::fs::write(
        dir.path().join("routes.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: b\n\
         spec:\n  hosts:\n  - b\n  http:\n  - route:\n    - destination:\n        host: b\n    \
         mirror:\n      host: c\n    mirrorPercentage:\n      value: 100.0\n",
    )
    .expect("routes");
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 42).expect("mesh starts");
    let client = HttpClient::new();
    for _ in 0..20 {
        let resp = client
            .get(mesh.front, "a", "/", &[])
            .await
            .expect("request");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let body = resp.json().expect("json");
        assert_eq!(body["calls"][0]["service"], "b", "{body}");
    }
    // The copies are fire and forget: give the last ones a moment to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = HttpClient::new()
            .get(mesh.addr(3, 15020), "m", "/metrics", &[])
            .await
            .expect("metrics")
            .text();
        let shadow: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("trellis_requests_total{reporter=\"destination\"")
                    && l.contains("destination_service=\"b.default.svc.cluster.local-shadow\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum();
        if shadow == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c received {shadow} mirrored copies, not 20:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        served(mesh.addr(2, 15020)).await,
        20,
        "b served every request once"
    );
}
