//! End to end: DestinationRule traffic policy, on meshes started with `trellis up` where a
//! front service `a` calls services with two workloads each, under the rules' balancers,
//! outlier detection and connection-pool limits. Every assertion is on what `a`'s demo app
//! got back from its calls (which instance answered, with what status) and on `a`'s proxy's
//! metrics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::{HttpClient, Mesh};

/// `trellis_testkit::metric_sum`, failing the test if the scrape does.
async fn metric_sum(addr: std::net::SocketAddr, metric: &str, labels: &[&str]) -> u64 {
    trellis_testkit::metric_sum(addr, metric, labels)
        .await
        .expect("metrics")
}

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// A service `a` (the front) whose app calls `calls`, and for each `(service, workloads)`
/// a Service on port 9080 with those workloads; a workload is `(name, annotations)`.
/// `rules` is extra YAML (DestinationRules).
fn mesh_config(
    calls: &[&str],
    services: &[(&str, &[(&str, &str)])],
    rules: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut yaml = String::new();
    let mut host = 1;
    let service = |name: &str, front: bool| {
        let front = if front {
            "  annotations:\n    demo.trellis.dev/front: \"true\"\n"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n{front}spec:\n  selector:\n    \
             app: {name}\n  ports:\n  - name: http\n    port: 9080\n---\n"
        )
    };
    let mut workload = |app: &str, name: &str, annotations: &str| {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  \
             annotations:\n{annotations}    demo.trellis.dev/finish-abandoned: \"true\"\nspec:\n  \
             address: 127.0.1.{host}\n  serviceAccount: {app}\n  labels:\n    app: {app}\n  ports:\n    \
             http: 9080\n---\n"
        );
        host += 1;
        text
    };
    yaml.push_str(&service("a", true));
    let calls = format!("    demo.trellis.dev/calls: \"{}\"\n", calls.join(","));
    yaml.push_str(&workload("a", "a-1", &calls));
    for (name, workloads) in services {
        yaml.push_str(&service(name, false));
        for (w, annotations) in *workloads {
            yaml.push_str(&workload(name, w, annotations));
        }
    }
    yaml.push_str(rules);
    std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write");
    dir
}

/// One request to the front; returns its status, its answer and how long it took.
async fn ask(client: &HttpClient, mesh: &Mesh, headers: &[(&str, &str)]) -> (u16, Value, Duration) {
    let started = Instant::now();
    let resp = client
        .get(mesh.front, "a", "/", headers)
        .await
        .expect("request to the front");
    let took = started.elapsed();
    let body: Value = serde_json::from_str(&resp.text()).unwrap_or(Value::Null);
    (resp.status, body, took)
}

/// The instance that answered call `i` of an answer, or `None` when the call failed.
fn instance(answer: &Value, i: usize) -> Option<String> {
    answer["calls"][i]["instance"].as_str().map(str::to_string)
}

/// The default balancer prefers the faster endpoint; `ROUND_ROBIN` alternates; a
/// consistent hash on a header keeps each user on one endpoint. `a` calls `b` (default),
/// `c` (round robin, by a rule whose `workloadSelector` picks `a`, over a rule for everyone
/// saying `RANDOM`) and `d` (hash on `end-user`, which the demo app forwards) for every
/// request; `b-1` answers 30 ms slower than `b-2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_follow_the_destination_rule() {
    let dir = mesh_config(
        &["http://b:9080/", "http://c:9080/", "http://d:9080/"],
        &[
            ("b", &[("b-1", "    demo.trellis.dev/delay: 30ms\n"), ("b-2", "")]),
            ("c", &[("c-1", ""), ("c-2", "")]),
            ("d", &[("d-1", ""), ("d-2", "")]),
        ],
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: c\nspec:\n  \
         host: c\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: c-for-a\n\
         spec:\n  host: c\n  workloadSelector:\n    matchLabels:\n      app: a\n  \
         trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  \
         host: d\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        \
         httpHeaderName: end-user\n",
    );
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 43).expect("mesh starts");
    let client = HttpClient::new();
    let mut b = BTreeMap::<String, u32>::new();
    let mut c = Vec::new();
    let mut d = BTreeMap::<String, BTreeMap<String, u32>>::new();
    for i in 0..100 {
        let user = format!("user-{}", i % 20);
        let (status, answer, _) = ask(&client, &mesh, &[("end-user", &user)]).await;
        assert_eq!(status, 200, "{answer}");
        let (Some(bi), Some(ci), Some(di)) = (
            instance(&answer, 0),
            instance(&answer, 1),
            instance(&answer, 2),
        ) else {
            panic!("a call failed: {answer}");
        };
        *b.entry(bi).or_default() += 1;
        c.push(ci);
        *d.entry(user).or_default().entry(di).or_default() += 1;
    }
    // Peak EWMA × load, two choices: with two endpoints both are always compared, so the
    // slow one is chosen only while its latency is unknown.
    let fast = b.get("b-2").copied().unwrap_or(0);
    assert!(fast >= 90, "b-2 (fast) got {fast} of 100: {b:?}");
    // Round robin: a single client proxy alternates.
    let c1 = c.iter().filter(|i| *i == "c-1").count();
    assert!(
        c.windows(2).all(|w| w[0] != w[1]),
        "round robin did not alternate: {c:?}"
    );
    assert!((49..=51).contains(&c1), "c-1 got {c1} of 100");
    // Consistent hash: every user always on one endpoint, and the users spread over both.
    for (user, seen) in &d {
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
    }
    let used: std::collections::BTreeSet<&String> = d.values().flat_map(|s| s.keys()).collect();
    assert_eq!(used.len(), 2, "20 users all hashed to {used:?}");
    // What the proxy acts on is in its config dump.
    let dump = client
        .get(mesh.addr(1, 15000), "admin", "/config_dump", &[])
        .await
        .expect("config dump")
        .json()
        .expect("json");
    let policy_of = |host: &str| {
        dump["snapshot"]["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["host"] == host))
            .map(|s| s["traffic_policy"].clone())
            .unwrap_or(Value::Null)
    };
    let c = policy_of("c.default.svc.cluster.local");
    assert_eq!(c["service"]["default"]["load_balancer"], "random", "{c}");
    assert_eq!(c["scoped"][0]["labels"]["app"], "a", "{c}");
    assert_eq!(
        c["scoped"][0]["policies"]["service"]["default"]["load_balancer"], "round_robin",
        "{c}"
    );
    assert_eq!(
        policy_of("d.default.svc.cluster.local")["service"]["default"]["load_balancer"]
            ["consistent_hash"]["header"],
        "end-user"
    );
}

/// Outlier detection: `b-2` fails its first 3 requests. With `consecutive5xxErrors: 3` the
/// third failure ejects it: nothing goes to it for the ejection time (3 s), and then it is
/// back and serves again. Round robin makes `b-2` get every other request while it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_brings_it_back() {
    let dir = mesh_config(
        &["http://b:9080/"],
        &[(
            "b",
            &[("b-1", ""), ("b-2", "    demo.trellis.dev/fail-first: \"3\"\n")],
        )],
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: b\nspec:\n  \
         host: b\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n    \
         outlierDetection:\n      consecutive5xxErrors: 3\n      interval: 1s\n      \
         baseEjectionTime: 3s\n      maxEjectionPercent: 100\n",
    );
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 44).expect("mesh starts");
    let client = HttpClient::new();
    let started = Instant::now();
    // (time sent, answering instance or None for a failed call)
    let mut seen: Vec<(Duration, Option<String>)> = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let at = started.elapsed();
        let (_, answer, _) = ask(&client, &mesh, &[]).await;
        seen.push((at, instance(&answer, 0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failures: Vec<usize> = (0..seen.len()).filter(|i| seen[*i].1.is_none()).collect();
    assert_eq!(
        failures.len(),
        3,
        "b-2's three failures, nothing else: {seen:?}"
    );
    // Requests are sequential: everything sent after the third failure's answer is after
    // the ejection.
    let ejected_at = seen
        .get(failures[2] + 1)
        .map(|s| s.0)
        .expect("requests after the ejection");
    let during: Vec<&Option<String>> = seen
        .iter()
        .filter(|(t, _)| *t >= ejected_at && *t < ejected_at + Duration::from_millis(2500))
        .map(|(_, i)| i)
        .collect();
    assert!(
        during.len() >= 10,
        "too few requests while ejected: {seen:?}"
    );
    assert!(
        during.iter().all(|i| i.as_deref() == Some("b-1")),
        "b-2 got requests while ejected: {seen:?}"
    );
    let back = seen
        .iter()
        .filter(|(t, _)| *t >= ejected_at + Duration::from_millis(3500))
        .filter(|(_, i)| i.as_deref() == Some("b-2"))
        .count();
    assert!(
        back >= 5,
        "b-2 did not come back ({back} answers): {seen:?}"
    );
}

/// Connection-pool limits: `b` takes 2 s per request and its rule allows one request at a
/// time (`maxConnections: 1`) and one waiting (`http1MaxPendingRequests: 1`). Of six
/// requests sent at once, two are served, one after the other, and four are refused at once
/// with 503 and the response flag `UO`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits_queue_one_and_shed_the_rest_with_503_uo() {
    let dir = mesh_config(
        &["http://b:9080/"],
        &[("b", &[("b-1", "    demo.trellis.dev/delay: 2s\n")])],
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: b\nspec:\n  \
         host: b\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n      \
         http:\n        http1MaxPendingRequests: 1\n",
    );
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 45).expect("mesh starts");
    let client = HttpClient::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (client, front) = (client.clone(), mesh.front);
        tasks.spawn(async move {
            let started = Instant::now();
            let resp = client.get(front, "a", "/", &[]).await.expect("request");
            let body: Value = serde_json::from_str(&resp.text()).unwrap_or(Value::Null);
            (started.elapsed(), body)
        });
    }
    let mut served = Vec::new();
    let mut shed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (took, answer) = r.expect("task");
        match instance(&answer, 0) {
            Some(_) => served.push(took),
            None => {
                let call = &answer["calls"][0];
                assert_eq!(call["status"], 503, "{answer}");
                let error = call["error"].as_str().unwrap_or("");
                assert!(error.contains("too many requests"), "{answer}");
                shed.push(took);
            }
        }
    }
    served.sort();
    assert_eq!(served.len(), 2, "served {served:?}, shed {shed:?}");
    assert_eq!(shed.len(), 4, "served {served:?}, shed {shed:?}");
    // The second waited for the first: the pool queues before it sheds.
    assert!(served[1] >= Duration::from_millis(3900), "{served:?}");
    // Shed requests did not wait for a place.
    assert!(
        shed.iter().all(|t| *t < Duration::from_secs(2)),
        "shed after {shed:?}"
    );
    let uo = metric_sum(
        mesh.addr(1, 15020),
        "trellis_requests_total",
        &[
            "reporter=\"source\"",
            "response_code=\"503\"",
            "response_flags=\"UO\"",
        ],
    )
    .await;
    assert_eq!(
        uo, 4,
        "a's proxy should record the four shed requests with UO"
    );
}

/// A request with a body is retried whole: `a-1` fails its first request, and `a`'s route
/// retries 5xx. A 10 KiB POST gets 200 on the second attempt, with the whole body
/// received there (the proxy read the body, of known length, before the first attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_is_retried_whole() {
    let dir = mesh_config(&[], &[], "");
    // `a` itself: its first request fails, and its VirtualService retries.
    let yaml = std::fs::read_to_string(dir.path().join("mesh.yaml")).expect("read");
    let yaml = yaml.replacen(
        "  annotations:\n    demo.trellis.dev/calls: \"\"\n",
        "  annotations:\n    demo.trellis.dev/fail-first: \"1\"\n",
        1,
    );
    assert!(yaml.contains("fail-first"), "{yaml}");
    let rules = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  \
                 name: a\nspec:\n  hosts:\n  - a\n  http:\n  - route:\n    - destination:\n        \
                 host: a\n    retries:\n      attempts: 2\n      retryOn: 5xx\n";
    std::fs::write(dir.path().join("mesh.yaml"), format!("{yaml}{rules}")).expect("write");
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 46).expect("mesh starts");
    let body = bytes::Bytes::from(vec![b'x'; 10 * 1024]);
    let resp = HttpClient::new()
        .post(mesh.front, "a", "/", body)
        .await
        .expect("request");
    let answer: Value = serde_json::from_str(&resp.text()).unwrap_or(Value::Null);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(answer["body_bytes"], 10 * 1024, "{answer}");
    let served = metric_sum(
        mesh.addr(1, 15020),
        "trellis_requests_total",
        &["reporter=\"destination\""],
    )
    .await;
    assert_eq!(
        served, 2,
        "a-1 should have served the attempt and the retry"
    );
}

/// Retries go to another endpoint (Istio's default, `retryIgnorePreviousHosts`): `b-1`
/// always fails, `b-2` never does, and `b` retries 5xx once. Round robin sends every other
/// request to `b-1`; its retry goes to `b-2`, so every request succeeds, and each of
/// `b-1`'s failures was retried on `b-2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_endpoint() {
    let dir = mesh_config(
        &["http://b:9080/"],
        &[(
            "b",
            &[("b-1", "    demo.trellis.dev/fail-first: \"1000000\"\n"), ("b-2", "")],
        )],
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: b\nspec:\n  \
         host: b\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: b\nspec:\n  \
         hosts:\n  - b\n  http:\n  - route:\n    - destination:\n        host: b\n    retries:\n      \
         attempts: 1\n      retryOn: 5xx\n",
    );
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 48).expect("mesh starts");
    let client = HttpClient::new();
    for _ in 0..20 {
        let (status, answer, _) = ask(&client, &mesh, &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(instance(&answer, 0).as_deref(), Some("b-2"), "{answer}");
    }
    // b-1's failures each came back as a retry on b-2: b-1 served about half the first
    // attempts, b-2 everything else.
    let served = |host| {
        metric_sum(
            mesh.addr(host, 15020),
            "trellis_requests_total",
            &["reporter=\"destination\""],
        )
    };
    let (b1, b2) = (served(2).await, served(3).await);
    assert_eq!(b2, 20, "b-2 answered every request");
    assert!((8..=12).contains(&b1), "b-1 got {b1} first attempts of 20");
}
