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

fn start_control(addr: &str) -> Control {
    let data = tempfile::tempdir().unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let child = Command::new(BIN)
        .arg("control")
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
    let control = start_control("127.0.20.251:15012");
    let tokens = TokenStore::open(control.data.path()).unwrap();
    let (_, good) = tokens
        .create("default", &["bookinfo-reviews".to_string()], None)
        .unwrap();

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
