//! End to end against a real `trellis control`: join-token checks at the CA, and a proxy
//! that cannot reach the control plane.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use trellis_identity::TokenStore;
use trellis_testkit::workspace_root;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

struct Control {
    child: Child,
    data: tempfile::TempDir,
    addr: SocketAddr,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_control(addr: &str, extra: &[&str]) -> Control {
    let data = tempfile::tempdir().unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let api = SocketAddr::new(addr.ip(), 15014);
    let child = Command::new(BIN)
        .arg("control")
        .args(["--api-listen", &api.to_string()])
        .args(extra)
        .arg("--config")
        .arg(workspace_root().join("examples/quickstart"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "control plane did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Control { child, data, addr }
}

/// Starts a proxy that must get its certificate; returns once it logged so.
fn start_proxy(control: &Control, ns: &str, sa: &str, token: &str, ip: &str) -> Child {
    let mut child = Command::new(BIN)
        .arg("proxy")
        .args(["--control", &control.addr.to_string()])
        .arg("--ca-bundle")
        .arg(control.data.path().join("ca/root.pem"))
        .args(["--namespace", ns, "--service-account", sa])
        .args(["--workload-name", "first", "--address", ip])
        .env("TRELLIS_JOIN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "proxy got no certificate");
        match lines.next() {
            Some(Ok(l)) if l.contains("certificate issued") => break,
            Some(Ok(_)) => {}
            _ => panic!("proxy ended before getting a certificate"),
        }
    }
    // Keep draining so the proxy never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Runs a proxy that asks for `ns/sa` with `token`, expecting it to give up.
fn proxy_refused(control: &Control, ns: &str, sa: &str, token: &str, ip: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("proxy")
        .args(["--control", &control.addr.to_string()])
        .arg("--ca-bundle")
        .arg(control.data.path().join("ca/root.pem"))
        .args(["--namespace", ns, "--service-account", sa])
        .args(["--workload-name", "w", "--address", ip])
        .env("TRELLIS_JOIN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "proxy kept running with a refused token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ca_refuses_bad_tokens_and_identities_the_token_does_not_allow() {
    let control = start_control("127.0.20.251:15012", &[]);
    let tokens = TokenStore::open(control.data.path()).unwrap();
    let (_, good) = tokens
        .create("default", &["bookinfo-reviews".to_string()], None)
        .unwrap();

    // A token that worked once is refused after its revocation.
    let (revoked_id, revoked) = tokens
        .create("default", &["bookinfo-details".to_string()], None)
        .unwrap();
    let first = start_proxy(
        &control,
        "default",
        "bookinfo-details",
        &revoked,
        "127.0.20.10",
    );
    tokens.revoke(&revoked_id).unwrap();

    let cases = [
        // (namespace, service account, token, what the error must say)
        (
            "default",
            "bookinfo-reviews",
            "trellis-jt.00000000.00",
            "token",
        ),
        ("default", "bookinfo-reviews", "not-a-token", "token"),
        (
            "default",
            "bookinfo-ratings",
            good.as_str(),
            "bookinfo-ratings",
        ),
        ("prod", "bookinfo-reviews", good.as_str(), "prod"),
        ("default", "bookinfo-details", revoked.as_str(), "revoked"),
    ];
    for (i, (ns, sa, token, must_say)) in cases.iter().enumerate() {
        let out = proxy_refused(&control, ns, sa, token, &format!("127.0.20.{}", i + 1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i}: proxy succeeded");
        assert!(
            stderr.contains("control plane refused"),
            "case {i}: no clear refusal: {stderr}"
        );
        assert!(
            stderr.contains(must_say),
            "case {i}: {must_say:?} not in {stderr}"
        );
    }
    let mut first = first;
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn the_control_plane_s_identity_is_never_issued_to_a_workload() {
    let control = start_control("127.0.26.251:15012", &[]);
    let data = control.data.path();

    // `trellis token create` refuses the mesh's own namespace, whatever the accounts: `*`
    // would cover the control plane's identity, `trellis-node` the node agents'.
    for sa in ["*", "trellis-control", "trellis-node", "web"] {
        let out = Command::new(BIN)
            .args(["token", "create", "--namespace", "trellis-system"])
            .arg("--data-dir")
            .arg(data)
            .args(["--service-account", sa])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sa}: a token was made");
        assert!(out.stdout.is_empty(), "{sa}: printed a token");
        assert!(stderr.contains("reserved"), "{sa}: {stderr}");
    }
    let tokens = TokenStore::open(data).unwrap();
    assert!(tokens.list().unwrap().is_empty());

    // A token file that grants it anyway (edited by hand, or by an older version): the
    // control plane still refuses the certificate.
    let (_, token) = tokens.create("default", &["*".to_string()], None).unwrap();
    let path = data.join("tokens.json");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"default\"", "\"trellis-system\"");
    std::fs::write(&path, edited).unwrap();
    for (i, sa) in ["trellis-control", "trellis-node"].into_iter().enumerate() {
        let ip = format!("127.0.26.{}", i + 1);
        let out = proxy_refused(&control, "trellis-system", sa, &token, &ip);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sa}: proxy succeeded");
        assert!(
            stderr.contains("control plane refused") && stderr.contains("reserved"),
            "{sa}: no clear refusal: {stderr}"
        );
    }
    // Nothing was issued, and both requests were counted as refused.
    let read_token = std::fs::read_to_string(data.join("read-token")).unwrap();
    let answer = http_get_with(
        "127.0.26.251:15014",
        "/api/v1/certs",
        Some(read_token.trim()),
    );
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let certs: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(certs["certs"].as_array().map(Vec::len), Some(0), "{certs}");
    let metrics = http_get("127.0.26.251:15014", "/metrics");
    assert!(
        metrics.contains("trellis_control_certificate_requests_refused_total 2"),
        "{metrics}"
    );
}

#[test]
fn expiry_alarms_reach_logs_metrics_certs_and_check() {
    // A root lives 3650 days by default: a 4000-day warning window puts it inside.
    let control = start_control("127.0.22.251:15012", &["--expiry-warning-days", "4000"]);
    let api = "127.0.22.251:15014";
    let check = Command::new(BIN)
        .args(["check", "--api", api])
        .arg("--data-dir")
        .arg(control.data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success(),
        "check passed with an expiring root: {stdout}"
    );
    assert!(
        stdout.contains("✘ certificates: root") && stdout.contains("expires in"),
        "{stdout}"
    );

    let certs = Command::new(BIN)
        .args(["certs", "--api", api])
        .arg("--data-dir")
        .arg(control.data.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&certs.stdout);
    assert!(certs.status.success());
    assert!(
        table.contains("ALARMS") && table.contains("expires in 3649 days"),
        "{table}"
    );

    let metrics = http_get(api, "/metrics");
    assert!(metrics.contains("trellis_control_alarms 1"), "{metrics}");
    assert!(
        metrics.contains("trellis_control_ca_root_expiry_timestamp_seconds{"),
        "{metrics}"
    );
    drop(control);

    // With the default window there is no alarm and check passes.
    let control = start_control("127.0.23.251:15012", &[]);
    let check = Command::new(BIN)
        .args(["check", "--api", "127.0.23.251:15014"])
        .arg("--data-dir")
        .arg(control.data.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    drop(control);
}

/// A plain HTTP/1.1 GET, enough for a metrics page.
fn http_get(addr: &str, path: &str) -> String {
    http_get_with(addr, path, None)
}

/// A GET with `Authorization: Bearer TOKEN` when given (the API's reads need a token).
fn http_get_with(addr: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn proxy_retries_an_unreachable_control_plane_with_backoff() {
    // A real CA bundle, but nothing listens where the proxy looks for the control plane.
    let data = tempfile::tempdir().unwrap();
    trellis_identity::CertificateAuthority::load_or_create(data.path(), "cluster.local").unwrap();
    let mut child = Command::new(BIN)
        .arg("proxy")
        .args(["--control", "127.0.21.251:15012"])
        .arg("--ca-bundle")
        .arg(data.path().join("ca/root.pem"))
        .args(["--workload-name", "w", "--address", "127.0.21.1"])
        .env("TRELLIS_JOIN_TOKEN", "trellis-jt.00000000.00")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut delays = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while delays.len() < 4 && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if line.contains("retrying") {
            assert!(
                line.contains("127.0.21.251:15012"),
                "log names no address: {line}"
            );
            assert!(line.contains("error="), "log says no reason: {line}");
            delays.push(retry_in_ms(&line));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(delays.len() >= 4, "only {} retries logged", delays.len());
    // Doubling with at most 20 % jitter: each delay is longer than the one before.
    for w in delays.windows(2) {
        assert!(w[1] > w[0], "back-off does not grow: {delays:?}");
    }
}

/// Parses `retry_in=123.45ms` (tracing's Debug of a Duration) into milliseconds.
fn retry_in_ms(line: &str) -> f64 {
    let v = line
        .split("retry_in=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no retry_in in {line}"));
    if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().unwrap()
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("unexpected duration {v}")
    }
}
