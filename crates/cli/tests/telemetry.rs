//! End to end: the quickstart mesh's telemetry read by the tools users point at it —
//! `promtool`, a real Prometheus server, an OTLP receiver, `trellis stat` and `trellis tap`.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`.ci/run` installs
//! it); a test that needs them fails, naming the package, when they are missing.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::load::Load;
use trellis_testkit::{workspace_root, HttpClient, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

fn quickstart(subnet: u8, extra: &[&str]) -> Mesh {
    Mesh::up_with(
        BIN.as_ref(),
        &workspace_root().join("examples/quickstart"),
        subnet,
        extra,
    )
    .expect("mesh starts")
}

/// The path of `tool`, or a failure naming the package that has it.
fn require(tool: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("sh runs");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        found.status.success() && !path.is_empty(),
        "{tool} is not installed: install Debian's `prometheus` package (.ci/run does)"
    );
    path
}

async fn scrape(addr: SocketAddr) -> String {
    let resp = HttpClient::new()
        .get(addr, &addr.to_string(), "/metrics", &[])
        .await
        .unwrap_or_else(|e| panic!("scraping {addr}: {e:#}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.text()
}

/// The sample lines of a scrape: one per series (histogram buckets count each).
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name))
        .collect()
}

/// Runs `promtool check metrics` on `text`; panics with its findings unless it passes.
fn promtool_check(what: &str, text: &str) {
    let promtool = require("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}\n--- input ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `n` GETs for `path(i)` to the front door, `concurrency` at a time; every one must
/// succeed.
async fn send(mesh: &Mesh, n: usize, concurrency: usize, path: fn(usize) -> String) {
    let client = HttpClient::new();
    let front = mesh.front;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        tasks.spawn(async move {
            for i in (worker..n).step_by(concurrency) {
                let p = path(i);
                let resp = client
                    .get(front, "productpage", &p, &[])
                    .await
                    .expect("request");
                assert_eq!(resp.status, 200, "{p}: {}", resp.text());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("sender");
    }
}

/// Every proxy's and the control plane's `/metrics` pass `promtool check metrics`; the
/// request series carry Istio's labels; and ten thousand requests with distinct paths and
/// query strings leave the number of series unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_paths_add_no_series() {
    let mesh = quickstart(20, &["--access-log"]);
    // Enough that both reviews versions (90/10) and every edge have been seen.
    send(&mesh, 300, 8, |_| "/".to_owned()).await;
    let productpage = mesh.addr(1, 15020);
    let proxies: Vec<SocketAddr> = (1..=6).map(|h| mesh.addr(h, 15020)).collect();
    for p in &proxies {
        promtool_check(&format!("the proxy at {p}"), &scrape(*p).await);
    }
    let control = scrape(mesh.api).await;
    promtool_check("the control plane", &control);
    // Control-plane health: proxies connected, snapshots pushed and acknowledged, certificates
    // issued, the revision served.
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(value(&control, "trellis_control_connected_proxies "), 7.0);
    assert!(value(&control, "trellis_control_push_duration_seconds_count ") >= 7.0);
    assert!(value(&control, "trellis_control_certificates_issued_total ") >= 7.0);
    assert!(value(&control, "trellis_control_config_revision ") >= 1.0);
    // The proxy's own health.
    let own = scrape(mesh.addr(1, 15020)).await;
    assert_eq!(value(&own, "trellis_proxy_ready "), 1.0);
    assert!(value(&own, "trellis_proxy_resident_memory_bytes ") > 1e6);
    assert!(value(&own, "trellis_proxy_svid_expiry_timestamp_seconds ") > 1.7e9);
    assert!(
        own.contains("trellis_proxy_snapshot_info{version=\""),
        "{own}"
    );
    assert!(
        own.contains("trellis_proxy_open_connections{direction=\"inbound\"}"),
        "{own}"
    );

    let before = scrape(productpage).await;
    let requests: Vec<&str> = before
        .lines()
        .filter(|l| l.starts_with("trellis_requests_total{reporter=\"destination\""))
        .collect();
    assert_eq!(requests.len(), 1, "{before}");
    for label in [
        "source_workload=\"front\"",
        "source_namespace=\"default\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/trellis-front\"",
        "destination_service=\"productpage.default.svc.cluster.local\"",
        "destination_workload=\"productpage-v1\"",
        "destination_namespace=\"default\"",
        "response_code=\"200\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(
            requests[0].contains(label),
            "{label} missing: {}",
            requests[0]
        );
    }
    assert!(requests[0].ends_with(" 300"), "{}", requests[0]);

    send(&mesh, 10_000, 16, |i| {
        format!("/item/{i}?q={i}&session={}", i * 7919)
    })
    .await;
    let after = scrape(productpage).await;
    let (b, a) = (series(&before), series(&after));
    assert_eq!(
        b.len(),
        a.len(),
        "series appeared: {:?}",
        a.iter().filter(|s| !b.contains(s)).collect::<Vec<_>>()
    );
    assert!(!after.contains("/item/"), "a path became a label");
    let front_edge = after
        .lines()
        .find(|l| l.starts_with("trellis_requests_total{reporter=\"destination\""))
        .expect("series");
    assert!(front_edge.ends_with(" 10300"), "{front_edge}");

    // The access log: JSON lines with the request's path, status and identities.
    let logs = mesh.logs();
    let line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["path"] == "/item/42?q=42&session=332598" && v["reporter"] == "destination")
        .unwrap_or_else(|| panic!("no access log line for /item/42 among {} lines", logs.len()));
    assert_eq!(line["status"], 200);
    assert_eq!(line["destination_workload"], "productpage-v1");
    assert_eq!(
        line["source_principal"],
        "spiffe://cluster.local/ns/default/sa/trellis-front"
    );
    assert_eq!(line["method"], "GET");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{line}"
    );
    assert!(
        line["response_bytes"].as_u64().is_some_and(|b| b > 0),
        "{line}"
    );
}

/// URL-encodes a PromQL query for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server run for one test, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(addr: SocketAddr, targets: &[SocketAddr], control: SocketAddr) -> Prometheus {
        let bin = require("prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let list = |t: &[SocketAddr]| {
            t.iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: trellis-proxies\n  static_configs: [{{targets: [{}]}}]\n\
             - job_name: trellis-control\n  static_configs: [{{targets: [{}]}}]\n",
            list(targets),
            list(&[control])
        );
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).expect("writing the config");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let resp = HttpClient::new()
            .get(self.addr, &self.addr.to_string(), path, &[])
            .await
            .unwrap_or_else(|e| panic!("prometheus {path}: {e:#}"));
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        resp.json().expect("json")
    }

    async fn query(&self, q: &str) -> Value {
        self.get(&format!("/api/v1/query?query={}", encode(q)))
            .await
    }

    /// Waits until every target has been scraped successfully.
    async fn wait_up(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = HttpClient::new()
                .get(self.addr, &self.addr.to_string(), "/api/v1/targets", &[])
                .await
                .ok()
                .and_then(|r| r.json().ok());
            let up = ready
                .as_ref()
                .and_then(|v| v["data"]["activeTargets"].as_array().cloned())
                .map(|t| t.iter().filter(|t| t["health"] == "up").count())
                .unwrap_or(0);
            if up == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus targets not up: {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Prometheus server scrapes the quickstart mesh under steady load; PromQL's request
/// rate per `destination_service` matches the rate the test sends, within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_rate_sent() {
    let mesh = quickstart(21, &[]);
    let targets: Vec<SocketAddr> = (1..=6).map(|h| mesh.addr(h, 15020)).collect();
    let prom = Prometheus::start(mesh.addr(252, 19090), &targets, mesh.api);
    prom.wait_up(targets.len() + 1).await;

    let rate = 40;
    let load = Load::start(mesh.front, "productpage", "/", rate, 64);
    // A 15 s window, fully inside the load once 20 s have passed.
    tokio::time::sleep(Duration::from_secs(22)).await;
    let answer = prom
        .query(
            "sum by (destination_service) \
             (rate(trellis_requests_total{reporter=\"destination\",response_code=\"200\"}[15s]))",
        )
        .await;
    let report = load.finish().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let sent = report.rate();
    let results = answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let per_service = |host: &str| -> f64 {
        results
            .iter()
            .find(|r| r["metric"]["destination_service"] == host)
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no rate for {host} in {answer}"))
    };
    // Each page calls details and reviews once: all three see the front door's rate.
    for service in ["productpage", "details", "reviews"] {
        let host = format!("{service}.default.svc.cluster.local");
        let seen = per_service(&host);
        assert!(
            (seen - sent).abs() / sent <= 0.10,
            "{host}: Prometheus says {seen:.2} req/s, the test sent {sent:.2} req/s"
        );
    }
    // The control plane is scraped too.
    let proxies = prom.query("trellis_control_connected_proxies").await;
    let connected: f64 = proxies["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{proxies}"));
    assert_eq!(connected, 7.0, "six workloads and the front door");
}

/// One request through productpage, reviews (v2) and ratings, sent with its own
/// `traceparent`, arrives at an OTLP receiver as one trace: a client and a server span for
/// every hop, each span's parent another span of the trace, server spans the children of
/// the calling proxy's client spans, and client spans the children of their workload's
/// server span (the demo app forwards the trace headers, as Bookinfo's apps do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_every_hop() {
    use trellis_testkit::otlp::{OtlpReceiver, SpanKind};
    let receiver = OtlpReceiver::start("127.0.22.253:0".parse().expect("addr"))
        .await
        .expect("receiver");
    let endpoint = receiver.endpoint();
    let mesh = quickstart(22, &["--otlp-endpoint", &endpoint, "--trace-sampling", "0"]);
    // All reviews traffic to v2, which calls ratings.
    let routing = mesh.config_dir.join("reviews-routing.yaml");
    let text = std::fs::read_to_string(&routing).expect("routing");
    std::fs::write(
        &routing,
        text.replace("weight: 90", "weight: 0")
            .replace("weight: 10", "weight: 100"),
    )
    .expect("write routing");
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ten v2 pages in a row: under the old 90/10 split one could be v2 by chance.
    let mut in_a_row = 0;
    loop {
        let page = client
            .get(mesh.front, "productpage", "/", &[])
            .await
            .expect("request")
            .json()
            .expect("json");
        let reviews = page["calls"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["service"] == "reviews").cloned());
        if reviews.is_some_and(|r| r["version"] == "v2") {
            in_a_row += 1;
            if in_a_row == 10 {
                break;
            }
            continue;
        }
        in_a_row = 0;
        assert!(
            Instant::now() < deadline,
            "reviews never moved to v2: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Sampling is 0 for new traces: only the traced request below is recorded, because it
    // arrives sampled.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let root = "00f067aa0ba902b7";
    let resp = client
        .get(
            mesh.front,
            "productpage",
            "/traced",
            &[("traceparent", &format!("00-{trace_id}-{root}-01"))],
        )
        .await
        .expect("traced request");
    assert_eq!(resp.status, 200, "{}", resp.text());
    // front -> productpage -> {details, reviews-v2 -> ratings}: four hops, two spans each.
    let spans = receiver
        .wait_for(Duration::from_secs(30), |s| {
            s.iter().filter(|s| s.trace_id == trace_id).count() >= 8
        })
        .await
        .expect("spans arrive");
    let spans: Vec<_> = spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let dump = spans
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(spans.len(), 8, "{dump}");
    assert!(
        receiver.spans().iter().all(|s| s.trace_id == trace_id),
        "an unsampled request was exported: {dump}"
    );
    let by_id = |id: &str| spans.iter().find(|s| s.span_id == id);
    for s in &spans {
        if s.parent_span_id == root {
            assert_eq!(
                s.kind,
                SpanKind::Client,
                "only the front door's span hangs off the caller: {s}"
            );
            assert_eq!(s.service_name, "front", "{s}");
            continue;
        }
        let parent = by_id(&s.parent_span_id)
            .unwrap_or_else(|| panic!("{s} has a parent outside the trace\n{dump}"));
        match s.kind {
            // A server span's parent is the caller proxy's client span, on another service.
            SpanKind::Server => {
                assert_eq!(parent.kind, SpanKind::Client, "{s} <- {parent}");
                assert_ne!(parent.service_name, s.service_name, "{s} <- {parent}");
            }
            // A client span's parent is its own workload's server span.
            SpanKind::Client => {
                assert_eq!(parent.kind, SpanKind::Server, "{s} <- {parent}");
                assert_eq!(parent.service_name, s.service_name, "{s} <- {parent}");
            }
            other => panic!("unexpected span kind {other:?}: {s}"),
        }
    }
    let servers: std::collections::BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .map(|s| s.service_name.as_str())
        .collect();
    assert_eq!(
        servers.into_iter().collect::<Vec<_>>(),
        ["details", "productpage", "ratings", "reviews"],
        "{dump}"
    );
    let ratings = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.service_name == "ratings")
        .expect("ratings span");
    assert_eq!(
        ratings.attr("http.response.status_code"),
        Some("200"),
        "{ratings}"
    );
    assert_eq!(
        ratings.attr("trellis.source.principal"),
        Some("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{ratings}"
    );
}

/// Runs the `trellis` CLI to completion; panics unless it succeeds.
fn trellis(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("trellis runs");
    assert!(
        out.status.success(),
        "trellis {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The row for `name` in `trellis stat -o json`'s services.
fn service_row(stat: &Value, name: &str) -> Value {
    stat["services"]
        .as_array()
        .and_then(|s| s.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no {name} in {stat}"))
}

/// `trellis stat` agrees with the load the test sent through real proxies: the request rate
/// within 10 % while it runs, and afterwards the exact counts of requests and failures.
/// `trellis tap` shows the requests its filter matches, live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_tap_agree_with_what_was_sent() {
    let mesh = quickstart(23, &[]);
    let api = mesh.api.to_string();
    let data = mesh.data_dir.to_string_lossy().into_owned();
    let ok = Load::start(mesh.front, "productpage", "/", 30, 64);
    // The app answers these with 503: failures in productpage's success rate, not in its
    // callees' (the app calls details and reviews before answering).
    let failing = Load::start(mesh.front, "productpage", "/?status=503", 5, 64);
    tokio::time::sleep(Duration::from_secs(16)).await;
    let during: Value = serde_json::from_str(&trellis(&[
        "stat",
        "-o",
        "json",
        "--window",
        "10s",
        "--api",
        &api,
        "--data-dir",
        &data,
    ]))
    .expect("stat json");
    let (ok, failing) = (ok.finish().await, failing.finish().await);
    assert!(ok.failures.is_empty(), "{:?}", ok.failures);
    assert_eq!(failing.ok, 0, "the 503s were answered 200");
    let sent_rate = ok.rate() + failing.rate();
    let row = service_row(&during, "productpage");
    let rps = row["rps"].as_f64().expect("rps");
    assert!(
        (rps - sent_rate).abs() / sent_rate <= 0.10,
        "trellis stat says {rps:.2} req/s for productpage, the test sent {sent_rate:.2}: {during}"
    );
    // Two report periods later every request has been reported.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Value = serde_json::from_str(&trellis(&[
        "stat",
        "-o",
        "json",
        "--window",
        "10m",
        "--api",
        &api,
        "--data-dir",
        &data,
    ]))
    .expect("stat json");
    let total = ok.sent + failing.sent;
    let row = service_row(&after, "productpage");
    assert_eq!(row["requests"].as_u64(), Some(total), "{row}");
    assert_eq!(row["failures"].as_u64(), Some(failing.sent), "{row}");
    let success = row["success_rate"].as_f64().expect("success");
    let expected = ok.sent as f64 / total as f64;
    assert!((success - expected).abs() < 1e-9, "{success} vs {expected}");
    for callee in ["details", "reviews"] {
        let row = service_row(&after, callee);
        assert_eq!(row["requests"].as_u64(), Some(total), "{row}");
        assert_eq!(row["failures"].as_u64(), Some(0), "{row}");
    }
    // The table form names the same services.
    let table = trellis(&[
        "stat",
        "--api",
        &api,
        "--window",
        "10m",
        "--data-dir",
        &data,
    ]);
    assert!(
        table.contains("productpage") && table.contains("ratings"),
        "{table}"
    );

    // tap: three matching requests, printed as they happen; the others are not.
    let tap = Command::new(BIN)
        .args([
            "tap",
            "productpage-v1",
            "--path",
            "/tapme",
            "--max",
            "3",
            "-o",
            "json",
        ])
        .args(["--api", &api, "--data-dir", &data])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tap starts");
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The tap reaches the proxy over its control stream; keep sending until it has seen
    // three (and one that does not match between each).
    let waiter = std::thread::spawn(move || tap.wait_with_output().expect("tap ends"));
    let mut i = 0;
    while !waiter.is_finished() {
        assert!(
            Instant::now() < deadline,
            "tap printed fewer than 3 events in 20 s"
        );
        client
            .get(mesh.front, "productpage", &format!("/tapme?i={i}"), &[])
            .await
            .expect("request");
        client
            .get(mesh.front, "productpage", "/other", &[])
            .await
            .expect("request");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = waiter.join().expect("tap thread");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    for e in &events {
        assert!(
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/tapme?i=")),
            "{e}"
        );
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["method"], "GET", "{e}");
        assert_eq!(e["destination_workload"], "productpage-v1", "{e}");
        assert_eq!(
            e["source_principal"], "spiffe://cluster.local/ns/default/sa/trellis-front",
            "{e}"
        );
        assert!(e["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{e}");
    }
}
