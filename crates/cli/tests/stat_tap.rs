//! Golden signals and taps end to end against a real `trellis control`: a fake proxy with a
//! real certificate holds the real `Subscribe` stream, sends reports and tap events, and
//! `GET /api/v1/stat`, `trellis stat`, `trellis top` and `trellis tap` show them.

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use trellis_api::proto::{self, control_client::ControlClient, proxy_message::Kind};
use trellis_api::telemetry::LatencyHistogram;
use trellis_identity::{tls, SpiffeId, Svid, TokenStore, TrustBundle};
use trellis_testkit::workspace_root;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
const CONTROL: &str = "127.0.47.251:15012";
const API: &str = "127.0.47.251:15014";
const TRUST_DOMAIN: &str = "cluster.local";

struct Control {
    child: Child,
    data: tempfile::TempDir,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control() -> Control {
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .arg("control")
        .args(["--listen", CONTROL, "--api-listen", API])
        .arg("--config")
        .arg(workspace_root().join("examples/quickstart"))
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(API).is_err()
        || std::net::TcpStream::connect(CONTROL).is_err()
    {
        assert!(Instant::now() < deadline, "control plane did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Control { child, data }
}

/// A gRPC channel to the control plane over TLS, as a proxy opens it.
async fn channel(svid: Option<&Svid>, bundle: &TrustBundle) -> anyhow::Result<Channel> {
    let config = tls::client_config(
        svid,
        bundle,
        tls::ExpectedPeer::OneOf(vec![trellis_control::control_identity(TRUST_DOMAIN)]),
    )?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let addr: SocketAddr = CONTROL.parse()?;
    let connect = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(Endpoint::from_static("http://trellis-control")
        .connect_with_connector(connect)
        .await?)
}

/// A proxy reduced to its control stream.
struct FakeProxy {
    tx: mpsc::Sender<proto::ProxyMessage>,
    stream: tonic::Streaming<proto::SnapshotMessage>,
}

impl FakeProxy {
    /// Gets a certificate for `default/bookinfo-reviews` with a join token, then registers
    /// `workload` at `address` over the snapshot stream.
    async fn connect(control: &Control, workload: &str, address: &str) -> anyhow::Result<Self> {
        let id = SpiffeId::new(TRUST_DOMAIN, "default", "bookinfo-reviews");
        let tokens = TokenStore::open(control.data.path())?;
        let (_, token) = tokens.create("default", &["bookinfo-reviews".to_string()], None)?;
        let root = std::fs::read_to_string(control.data.path().join("ca/root.pem"))?;
        let bundle = TrustBundle::from_pem_with_domain(&root, TRUST_DOMAIN)?;
        let (key, csr_der) = trellis_identity::generate_csr(&id)?;
        let signed = ControlClient::new(channel(None, &bundle).await?)
            .sign(proto::SignRequest {
                token,
                csr_der,
                workload_name: workload.into(),
            })
            .await?
            .into_inner();
        let svid = Svid::from_pem(&signed.cert_chain_pem, key)?;

        let (tx, rx) = mpsc::channel(16);
        tx.send(message(Kind::Register(proto::Register {
            workload_name: workload.into(),
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            address: address.into(),
            inbound_port: 15008,
            ..Default::default()
        })))
        .await?;
        let stream = ControlClient::new(channel(Some(&svid), &bundle).await?)
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(FakeProxy { tx, stream })
    }

    async fn send(&self, kind: Kind) -> anyhow::Result<()> {
        self.tx.send(message(kind)).await?;
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<proto::SnapshotMessage> {
        match tokio::time::timeout(Duration::from_secs(10), self.stream.message()).await {
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => bail!("the control plane ended the stream"),
            Ok(Err(s)) => bail!("stream failed: {s}"),
            Err(_) => bail!("nothing from the control plane in 10s"),
        }
    }

    /// The next set of taps, past any snapshot (a registration changes the snapshot).
    async fn next_taps(&mut self) -> anyhow::Result<proto::TapControl> {
        loop {
            let m = self.next().await?;
            if let Some(t) = m.tap {
                assert!(m.version.is_empty(), "a tap message carries no snapshot");
                return Ok(t);
            }
        }
    }
}

fn message(kind: Kind) -> proto::ProxyMessage {
    proto::ProxyMessage { kind: Some(kind) }
}

/// Traffic from productpage to reviews-v1: `requests` of which `failures` failed, each
/// taking 5 ms.
fn edge(requests: u64, failures: u64) -> proto::EdgeStats {
    let mut h = LatencyHistogram::default();
    for _ in 0..requests {
        h.observe(5_000);
    }
    proto::EdgeStats {
        source_workload: "productpage-v1".into(),
        source_namespace: "default".into(),
        source_principal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into(),
        destination_service: "reviews.default.svc.cluster.local".into(),
        destination_workload: "reviews-v1".into(),
        destination_namespace: "default".into(),
        protocol: "http".into(),
        requests,
        failures,
        latency_counts: h.counts().to_vec(),
        latency_sum_micros: h.sum_micros(),
    }
}

fn tap_event(tap_id: &str, path: &str) -> proto::TapEvent {
    proto::TapEvent {
        tap_id: tap_id.into(),
        start_unix_micros: 1_700_000_000_000_000,
        reporter: "destination".into(),
        method: "GET".into(),
        authority: "reviews:9080".into(),
        path: path.into(),
        status: 200,
        duration_micros: 5_000,
        source_workload: "productpage-v1".into(),
        destination_workload: "reviews-v1".into(),
        destination_service: "reviews.default.svc.cluster.local".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        ..Default::default()
    }
}

/// Runs `trellis ARGS` to completion off the async threads.
async fn trellis(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn reviews_of(v: &serde_json::Value) -> Option<&serde_json::Value> {
    v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "reviews")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_taps_over_the_control_stream() -> anyhow::Result<()> {
    let control = start_control();
    let data_dir = control
        .data
        .path()
        .to_str()
        .context("data dir")?
        .to_string();
    let mut proxy = FakeProxy::connect(&control, "reviews-v1", "127.0.47.10").await?;
    let first = proxy.next().await?;
    assert!(
        !first.version.is_empty() && first.tap.is_none(),
        "a snapshot comes first"
    );

    // Three reports of 2 s: 90 requests, 9 failures, over 6 s of the proxy's time.
    for _ in 0..3 {
        proxy
            .send(Kind::Report(proto::Report {
                edges: vec![edge(30, 3)],
                period_millis: 2000,
                ..Default::default()
            }))
            .await?;
    }
    // Reports are taken in as the stream task reads them: wait until all three are in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stat = loop {
        let o = trellis(&[
            "stat",
            "reviews",
            "-o",
            "json",
            "--api",
            API,
            "--data-dir",
            &data_dir,
        ])
        .await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o))?;
        if reviews_of(&v).is_some_and(|r| r["requests"] == 90) {
            break v;
        }
        assert!(Instant::now() < deadline, "reports never showed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stat["window_secs"], 30);
    let reviews = reviews_of(&stat).context("reviews")?;
    assert_eq!(reviews["namespace"], "default");
    assert_eq!(reviews["failures"], 9);
    assert_eq!(
        reviews["rps"], 15.0,
        "90 requests over the 6 s the proxy covered"
    );
    assert_eq!(reviews["success_rate"], 0.9);
    let p50 = reviews["p50_ms"].as_f64().context("p50")?;
    assert!((4.0..=6.0).contains(&p50), "{p50}");
    let edges = stat["edges"].as_array().context("edges")?;
    assert_eq!(edges.len(), 1, "{stat}");
    assert_eq!(edges[0]["source"], "default/productpage-v1");
    assert_eq!(edges[0]["destination_workload"], "reviews-v1");

    // The tables, and top's frame.
    let table = stdout(&trellis(&["stat", "--api", API, "--data-dir", &data_dir]).await);
    assert!(table.starts_with("SERVICE "), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("reviews ") && l.contains("15.0") && l.contains("90.00%")),
        "{table}"
    );
    assert!(
        table.contains("default/productpage-v1  default/reviews-v1"),
        "{table}"
    );
    let top = trellis(&["top", "--once", "--api", API, "--data-dir", &data_dir]).await;
    assert!(top.status.success());
    let frame = stdout(&top);
    assert!(frame.starts_with("trellis top"), "{frame}");
    assert!(!frame.contains('\x1b'), "--once does not clear the screen");
    let busiest = frame
        .lines()
        .find(|l| l.contains("default  "))
        .unwrap_or("");
    assert!(busiest.starts_with("reviews "), "busiest first: {frame}");
    let none = stdout(
        &trellis(&[
            "stat",
            "-n",
            "staging",
            "--api",
            API,
            "--data-dir",
            &data_dir,
        ])
        .await,
    );
    assert!(
        none.starts_with("no traffic reported in namespace staging"),
        "{none}"
    );

    // The metrics say what the window holds.
    let metrics = http_get("/metrics");
    assert!(
        metrics.contains("trellis_control_telemetry_reports_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trellis_control_telemetry_window_edges 3"),
        "{metrics}"
    );

    // Taps need the admin token and a connected proxy of the workload.
    let wrong = tempfile::tempdir()?;
    std::fs::write(wrong.path().join("admin-token"), "not-the-token")?;
    let o = trellis(&[
        "tap",
        "reviews-v1",
        "--api",
        API,
        "--data-dir",
        wrong.path().to_str().context("dir")?,
    ])
    .await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("admin token required"),
        "{o:?}"
    );
    let o = trellis(&["tap", "ratings-v1", "--api", API, "--data-dir", &data_dir]).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no connected proxy serves workload default/ratings-v1"),
        "{o:?}"
    );

    // A tap that stops after two events: the proxy is told, its events come out as JSON
    // lines, and when the client is gone the proxy is told the tap is over.
    let tap = {
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args([
                    "tap",
                    "reviews-v1",
                    "-n",
                    "default",
                    "--path",
                    "/reviews",
                    "--method",
                    "get",
                ])
                .args([
                    "--max",
                    "2",
                    "-o",
                    "json",
                    "--api",
                    API,
                    "--data-dir",
                    &data_dir,
                ])
                .output()
                .unwrap()
        })
    };
    let set = proxy.next_taps().await?;
    assert_eq!(set.taps.len(), 1);
    assert_eq!(set.taps[0].path_prefix, "/reviews");
    assert_eq!(set.taps[0].method, "GET");
    let id = set.taps[0].id.clone();
    proxy
        .send(Kind::Tap(proto::TapEvents {
            events: vec![
                tap_event("not-a-tap", "/reviews/0"),
                tap_event(&id, "/reviews/1"),
                tap_event(&id, "/reviews/2"),
                tap_event(&id, "/reviews/3"),
            ],
        }))
        .await?;
    let out = tokio::time::timeout(Duration::from_secs(10), tap).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 2, "--max 2");
    assert_eq!(lines[0]["tap_id"], id.as_str());
    assert_eq!(lines[0]["path"], "/reviews/1");
    assert_eq!(lines[1]["path"], "/reviews/2");
    assert_eq!(lines[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[1]["status"], 200);
    assert!(
        proxy.next_taps().await?.taps.is_empty(),
        "the tap is withdrawn"
    );

    // A tap left open; a second proxy of the workload connecting meanwhile gets its set
    // right after its snapshot; both learn when the client is killed.
    let mut open = Command::new(BIN)
        .args(["tap", "reviews-v1", "--api", API, "--data-dir", &data_dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let set = proxy.next_taps().await?;
    assert_eq!(set.taps.len(), 1);
    assert!(set.taps[0].path_prefix.is_empty() && set.taps[0].method.is_empty());
    let mut second = FakeProxy::connect(&control, "reviews-v1", "127.0.47.11").await?;
    let first = second.next().await?;
    assert!(
        first.tap.is_none() && !first.version.is_empty(),
        "snapshot first"
    );
    assert_eq!(second.next_taps().await?.taps, set.taps);
    // Events from either proxy reach the one client, as lines for people.
    second
        .send(Kind::Tap(proto::TapEvents {
            events: vec![tap_event(&set.taps[0].id, "/from-second")],
        }))
        .await?;
    let stdout_pipe = open.stdout.take().context("stdout")?;
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout_pipe), &mut line)
            .map(|_| line)
    });
    let first_line = tokio::time::timeout(Duration::from_secs(10), first_line).await???;
    assert_eq!(
        first_line.trim_end(),
        "22:13:20.000 destination productpage-v1 -> reviews-v1 GET reviews:9080/from-second 200 5.0ms trace=4bf92f3577b34da6a3ce929d0e0e4736"
    );
    open.kill()?;
    open.wait()?;
    assert!(proxy.next_taps().await?.taps.is_empty());
    assert!(second.next_taps().await?.taps.is_empty());
    Ok(())
}

/// A plain HTTP/1.1 GET of the API.
fn http_get(path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(API).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {API}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
