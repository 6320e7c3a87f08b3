//! End to end in network namespaces: two workloads on a bridged LAN, each with a proxy in
//! transparent mode (nftables capture), the apps unaware of the mesh. One connection per
//! protocol: HTTP/1.1 (chunked upload, 100-continue, 10 MB body), h2c, opaque TCP with
//! half-close, and a server-speaks-first protocol; plus the capture rules' removal on exit.
//!
//! Needs root, `ip`, `nft`, `curl` and `python3` (`.ci/run` installs them); fails without.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::lan_mesh::{require_tools, service_config, wait_meshed, LanMesh, Proc};
use trellis_testkit::netns::Lan;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// The echo service's virtual IP (its clusterIP in the config below).
const VIP: &str = "198.18.200.10";

/// A TCP echo server that answers only after the client half-closes: it proves the
/// half-close crossed both proxies.
const ECHO_AFTER_EOF: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000)); s.listen(16)
while True:
    c, _ = s.accept()
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk: break
        data += chunk
    c.sendall(b"echo:" + data); c.close()
"#;

/// A server that speaks first: a banner on connect.
const BANNER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9100)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"220 banner\r\n"); c.close()
"#;

/// Answers every connection with the address it came from.
const PEER_SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9200)); s.listen(16)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"#;

/// Prints what the server at ARGV[1]:9200 says.
const PEER_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], 9200), timeout=10)
print(c.recv(100).decode())
"#;

/// Client side of the half-close test: send, shut down writing, read to EOF. The payload
/// opens with a byte no HTTP request starts with: the server proxy takes 64 KiB of token
/// characters without a space for a request line in progress, i.e. HTTP.
const HALF_CLOSE_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], 9000), timeout=10)
c.sendall(b"\0" + b"x" * 99999); c.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = c.recv(65536)
    if not chunk: break
    data += chunk
print(len(data), data[:5].decode())
"#;

/// Connects and times the banner's arrival.
const BANNER_CLIENT: &str = r#"
import socket, sys, time
t = time.monotonic()
c = socket.create_connection((sys.argv[1], 9100), timeout=10)
line = c.recv(100)
print(int((time.monotonic() - t) * 1000), line.decode().strip())
"#;

#[test]
fn every_protocol_crosses_two_transparent_proxies() {
    require_tools(&["nft", "ip", "curl", "python3"]).unwrap();
    let mut lan = Lan::new(31).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let config = service_config(
        "echo",
        VIP,
        &[("http", 8080), ("tcp-echo", 9000), ("tcp-banner", 9100)],
        server.ip,
        client.ip,
    );
    // The control plane lives on the LAN's own namespace, reachable from both hosts.
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();

    // The server's apps first (they do not need the mesh to listen), then both proxies; the
    // client's traffic only starts once its proxy is ready.
    let sip = server.ip.to_string();
    let _app = mesh.demo_app(&server, "echo", 8080).unwrap();
    let mut echo = server.command("python3");
    echo.args(["-c", ECHO_AFTER_EOF, &sip]);
    let _echo = Proc::spawn(&mut echo).unwrap();
    let mut banner = server.command("python3");
    banner.args(["-c", BANNER, &sip]);
    let _banner = Proc::spawn(&mut banner).unwrap();
    let mut peer = server.command("python3");
    peer.args(["-c", PEER_SERVER, &sip]);
    let _peer = Proc::spawn(&mut peer).unwrap();
    let _server_proxy = mesh
        .proxy(
            &server,
            "echo",
            &["http=8080", "tcp-echo=9000", "tcp-banner=9100"],
            &["--exclude-inbound-ports", "9200,9300"],
        )
        .unwrap();
    let mut client_proxy = mesh
        .proxy(
            &client,
            "client",
            &[],
            &["--exclude-outbound-ports", "9200"],
        )
        .unwrap();
    wait_meshed(&[&server, &client]).unwrap();

    let curl = |args: &[&str]| -> (bool, String) {
        let out = client
            .command("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let url = format!("http://{VIP}:8080/");

    // HTTP/1.1: the app sees the verified client identity.
    let (ok, body) = curl(&[&url]);
    assert!(ok, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(v["http_version"], "HTTP/1.1");
    assert_eq!(
        v["headers"]["x-forwarded-client-cert"],
        "By=spiffe://cluster.local/ns/default/sa/echo;URI=spiffe://cluster.local/ns/default/sa/client"
    );

    // A 10 MB chunked upload with Expect: 100-continue.
    let big = mesh.tmp_path().join("big");
    std::fs::write(&big, vec![b'z'; 10 * 1024 * 1024]).unwrap();
    let (ok, body) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", big.display()),
        &url,
    ]);
    assert!(ok, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(v["body_bytes"], 10 * 1024 * 1024);

    // h2c with prior knowledge: HTTP/2 end to end, app included.
    let (ok, body) = curl(&["--http2-prior-knowledge", &url]);
    assert!(ok, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(v["http_version"], "HTTP/2.0");

    // Opaque TCP with half-close: the server answers only after seeing the client's EOF.
    let out = client
        .command("python3")
        .args(["-c", HALF_CLOSE_CLIENT, VIP])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "100005 echo:");

    // Server speaks first on a port declared tcp: the banner arrives within 100 ms.
    let out = client
        .command("python3")
        .args(["-c", BANNER_CLIENT, VIP])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ms, line) = text.trim().split_once(' ').unwrap();
    assert_eq!(line, "220 banner");
    assert!(ms.parse::<u64>().unwrap() < 100, "banner after {ms} ms");

    // Ports excluded from capture on both sides: the app sees the client's own address, not
    // the server proxy's (which is what a connection through the mesh would show).
    let out = client
        .command("python3")
        .args(["-c", PEER_CLIENT, &sip])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        client.ip.to_string(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Capture rules are gone after the proxy exits on SIGTERM.
    assert!(client
        .run(&["nft", "list", "tables"])
        .unwrap()
        .contains("trellis"));
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(client_proxy.child().id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while client_proxy.child().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "proxy did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tables = client.run(&["nft", "list", "tables"]).unwrap();
    assert!(
        !tables.contains("trellis"),
        "capture rules left behind: {tables}"
    );
}
