//! Proxy lifecycle against real processes: a proxy stopped with SIGTERM while requests are in
//! flight through it loses none of them; a proxy restarted while the control plane is down
//! serves from its saved certificate and snapshot.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trellis_identity::TokenStore;
use trellis_testkit::HttpClient;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A control plane for `net` (`127.0.N.`) on .251, serving the config above; returns it with
/// its data directory and CA root file once it accepts connections.
fn start_control(
    tmp: &std::path::Path,
    net: &str,
) -> (Proc, std::path::PathBuf, std::path::PathBuf) {
    let (cfg, data) = (tmp.join("config"), tmp.join("data"));
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("mesh.yaml"), config(net)).unwrap();
    let listen = format!("{net}251:15012");
    let control = spawn(
        Command::new(BIN)
            .arg("control")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen",
                &listen,
                "--api-listen",
                &format!("{net}251:15014"),
            ]),
    );
    let root = data.join("ca/root.pem");
    let started = Instant::now();
    while !root.exists() || std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "control plane did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (control, data, root)
}

fn config(net: &str) -> String {
    CONFIG.replace("127.0.24.", net)
}

const CONFIG: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: b
spec:
  selector: {app: b}
  ports:
  - {name: http, port: 9080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: b-1
spec:
  address: 127.0.24.2
  serviceAccount: b
  labels: {app: b}
  ports: {http: 9080}
"#;

fn proxy(root: &std::path::Path, sa: &str, ip: &str, token: String, extra: &[&str]) -> Proc {
    let control = format!("{}251:15012", &ip[..ip.rfind('.').unwrap_or(0) + 1]);
    let mut cmd = Command::new(BIN);
    cmd.args(["proxy", "--control", &control])
        .arg("--ca-bundle")
        .arg(root)
        .args([
            "--service-account",
            sa,
            "--workload-name",
            &format!("{sa}-1"),
        ])
        .args(["--address", ip])
        .env("TRELLIS_JOIN_TOKEN", token);
    cmd.args(extra);
    spawn(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_requests_in_flight_loses_none() {
    let tmp = tempfile::tempdir().unwrap();
    let (_control, data, root) = start_control(tmp.path(), "127.0.24.");
    let tokens = TokenStore::open(&data).unwrap();
    let token = |sa: &str| tokens.create("default", &[sa.to_string()], None).unwrap().1;
    let _app = spawn(Command::new(BIN).args([
        "demo-app",
        "--listen",
        "127.0.24.2:9080",
        "--service",
        "b",
    ]));
    let _a = proxy(&root, "a", "127.0.24.1", token("a"), &[]);
    let mut b = proxy(
        &root,
        "b",
        "127.0.24.2",
        token("b"),
        &["--port", "http=9080"],
    );

    let client = HttpClient::new();
    let started = Instant::now();
    for admin in ["127.0.24.1:15020", "127.0.24.2:15020"] {
        loop {
            let ok = client
                .get(admin.parse().unwrap(), "admin", "/healthz/ready", &[])
                .await;
            if matches!(ok, Ok(r) if r.status == 200) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{admin} not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The local admin port: config dump and log level.
    let dump = client
        .get(
            "127.0.24.1:15000".parse().unwrap(),
            "admin",
            "/config_dump",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dump.status, 200);
    let dump = dump.json().unwrap();
    assert_eq!(
        dump["config"]["identity"],
        "spiffe://cluster.local/ns/default/sa/a"
    );
    assert_eq!(dump["ready"], true);
    assert_eq!(
        dump["snapshot"]["services"][0]["host"],
        "b.default.svc.cluster.local"
    );
    assert_eq!(
        dump["snapshot"]["services"][0]["endpoints"][0]["identity"],
        "spiffe://cluster.local/ns/default/sa/b"
    );
    assert!(post("127.0.24.1:15000", "/logging?level=debug").starts_with("HTTP/1.1 200"));
    assert!(post("127.0.24.1:15000", "/logging?level=a=b=c=").starts_with("HTTP/1.1 400"));

    let outbound = "127.0.24.1:15001".parse().unwrap();
    // Warm the pooled connection, then put ten slow requests in flight.
    let warm = client.get(outbound, "b:9080", "/", &[]).await.unwrap();
    assert_eq!(warm.status, 200, "{}", warm.text());
    let mut in_flight = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        in_flight.push(tokio::spawn(async move {
            client.get(outbound, "b:9080", "/?delay=1500ms", &[]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(b.0.id() as i32, libc::SIGTERM);
    }
    for r in in_flight {
        let resp = r.await.unwrap().expect("request in flight completes");
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.0.try_wait().unwrap().is_some_and(|s| s.success()));
}

async fn wait_ready(client: &HttpClient, admin: &str) {
    let started = Instant::now();
    loop {
        let ok = client
            .get(admin.parse().unwrap(), "admin", "/healthz/ready", &[])
            .await;
        if matches!(ok, Ok(r) if r.status == 200) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{admin} not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarted_while_the_control_plane_is_down_still_serves() {
    let net = "127.0.25.";
    let tmp = tempfile::tempdir().unwrap();
    let (mut control, data, root) = start_control(tmp.path(), net);
    let tokens = TokenStore::open(&data).unwrap();
    let token = |sa: &str| tokens.create("default", &[sa.to_string()], None).unwrap().1;
    let _app = spawn(Command::new(BIN).args([
        "demo-app",
        "--listen",
        "127.0.25.2:9080",
        "--service",
        "b",
    ]));
    let state_a = tmp.path().join("state-a");
    let state_b = tmp.path().join("state-b");
    let sa = state_a.to_string_lossy().into_owned();
    let sb = state_b.to_string_lossy().into_owned();
    let (ta, tb) = (token("a"), token("b"));
    let mut a = proxy(&root, "a", "127.0.25.1", ta.clone(), &["--state-dir", &sa]);
    let mut b = proxy(
        &root,
        "b",
        "127.0.25.2",
        tb.clone(),
        &["--port", "http=9080", "--state-dir", &sb],
    );
    let client = HttpClient::new();
    wait_ready(&client, "127.0.25.1:15020").await;
    wait_ready(&client, "127.0.25.2:15020").await;
    let outbound = "127.0.25.1:15001".parse().unwrap();
    // Both snapshots know both workloads once both registered.
    let started = Instant::now();
    loop {
        let r = client.get(outbound, "b:9080", "/", &[]).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The control plane goes away, then both proxies restart.
    let _ = control.0.kill();
    let _ = control.0.wait();
    drop(a);
    drop(b);
    a = proxy(&root, "a", "127.0.25.1", ta, &["--state-dir", &sa]);
    b = proxy(
        &root,
        "b",
        "127.0.25.2",
        tb,
        &["--port", "http=9080", "--state-dir", &sb],
    );
    wait_ready(&client, "127.0.25.1:15020").await;
    wait_ready(&client, "127.0.25.2:15020").await;
    for _ in 0..20 {
        let r = client.get(outbound, "b:9080", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    drop((a, b));
}

/// A bodiless HTTP/1.1 POST; returns the raw response.
fn post(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
