//! End to end: what a client of the front door can do to a mesh started with `trellis up`,
//! sending requests no well-behaved client sends, by hand over TCP:
//!
//! * malformed chunked bodies and bodies cut short must not count against the endpoint that
//!   would have served them: outlier detection ejects endpoints for their own faults only;
//! * a method spelled in the wrong case (`delete` for `DELETE`) must not walk around an
//!   AuthorizationPolicy: it is refused with 400 before any policy, as Envoy refuses it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_testkit::Mesh;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// A mesh whose front service `a` has one workload, plus `extra` YAML.
fn front_only(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  annotations:\n    \
         demo.trellis.dev/front: \"true\"\nspec:\n  selector:\n    app: a\n  ports:\n  - name: http\n    \
         port: 9080\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: a-1\nspec:\n  \
         address: 127.0.1.1\n  serviceAccount: a\n  labels:\n    app: a\n  ports:\n    http: 9080\n---\n\
         {extra}"
    );
    std::fs::write(dir.path().join("mesh.yaml"), yaml).expect("write");
    dir
}

/// Sends `request` as is on a new connection to `addr` and returns the status of the answer
/// (0 when the connection closed without one), reading for at most 5 s.
async fn raw(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A plain request with `method` through the front door: its status.
async fn request(mesh: &Mesh, method: &str) -> u16 {
    let req = format!("{method} / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    raw(mesh.front, req.as_bytes()).await
}

/// Malformed chunked bodies (a chunk size that is not hex) and bodies cut short by the
/// client, sent to the front door of a service whose DestinationRule ejects an endpoint
/// after 3 consecutive gateway errors: the only endpoint stays in, and everyone else's
/// requests are still served. Counted as upstream resets, three of them ejected it for
/// 30 s and every client got 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_body_errors_do_not_eject_the_endpoint() {
    let dir = front_only(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: a\nspec:\n  \
         host: a\n  trafficPolicy:\n    outlierDetection:\n      consecutiveGatewayErrors: 3\n      \
         interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 100\n",
    );
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 171).expect("mesh starts");
    assert_eq!(request(&mesh, "GET").await, 200, "the mesh serves");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let malformed = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                          zz\r\nhello\r\n0\r\n\r\n";
        statuses.push(raw(mesh.front, malformed).await);
        // Cut short: the client promises 100 bytes, sends 5 and goes away.
        let mut tcp = TcpStream::connect(mesh.front).await.expect("connect");
        tcp.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhello")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(tcp);
    }
    // Give the abandoned requests time to be noticed everywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        assert_eq!(
            request(&mesh, "GET").await,
            200,
            "request {i} after the client errors: the endpoint was ejected"
        );
    }
    // And the malformed requests were answered as the client's error (when an answer could
    // still be written), not as the upstream's 502.
    assert!(
        statuses.iter().all(|s| *s == 0 || (400..500).contains(s)),
        "{statuses:?}"
    );
}

/// A DENY on `DELETE` and `PUT`: `delete` and `put` do not reach the app (400, before any
/// policy), the exact spellings are denied (403), and other methods pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_in_the_wrong_case_do_not_walk_around_a_deny() {
    let dir = front_only(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: no-writes\n  \
         namespace: default\nspec:\n  selector:\n    matchLabels:\n      app: a\n  action: DENY\n  \
         rules:\n  - to:\n    - operation:\n        methods: [DELETE, PUT]\n",
    );
    let mesh = Mesh::up(BIN.as_ref(), dir.path(), 172).expect("mesh starts");
    assert_eq!(request(&mesh, "GET").await, 200);
    for (method, want) in [
        ("DELETE", 403),
        ("PUT", 403),
        ("delete", 400),
        ("put", 400),
        ("Delete", 400),
        ("GET", 200),
    ] {
        assert_eq!(request(&mesh, method).await, want, "{method}");
    }
}
