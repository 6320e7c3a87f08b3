//! End to end in network namespaces: Istio's AuthorizationPolicy and PeerAuthentication
//! enforced by the server's transparent proxy, with apps that know nothing of the mesh.
//!
//! * [`authorization_policies_are_enforced`]: an ALLOW policy by principal lets the client's
//!   service account in and keeps another meshed workload out; a DENY on `/admin` refuses it
//!   however the path is spelled (`/a/../admin`, `//admin`, `/%61dmin`) with Istio's
//!   `403 RBAC: access denied` (a WebSocket upgrade too) while `/ok` works and the app sees
//!   normalized paths; a DENY on
//!   a TCP port, added while the mesh runs, closes tunnels to that port; the server proxy's
//!   `trellis_authz_decisions_total` names the deciding policies.
//! * [`peer_authentication_governs_plaintext`]: a client without a proxy (a host of its own
//!   on the LAN) reaches the server app under PERMISSIVE, counted by source address in
//!   `trellis_inbound_connections_total`; under STRICT, applied while the mesh runs, it is
//!   refused, and so is a meshed client's app that goes around its own proxy, while the
//!   meshed client still gets through.
//! * [`permissive_then_strict_without_a_failed_request`]: the adoption path with
//!   `trellis check --strict-ready` deciding when STRICT is safe.
//!
//! Needs root, `ip`, `nft`, `curl` and `python3`; fails without.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::lan_mesh::{
    curl, curl_command, require_tools, service_config, wait_meshed, Answer, LanMesh, Proc,
};
use trellis_testkit::netns::{Host, Lan};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// The web service's virtual IP (its clusterIP).
const VIP: &str = "198.18.200.20";
const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 9000;
/// How long a policy change may take to reach the server proxy: the control plane polls its
/// directory every 200 ms, then pushes; far more than that here means it did not arrive.
const PROPAGATION: Duration = Duration::from_secs(15);

/// A TCP echo server: sends back what it receives, closes at the client's EOF.
const ECHO: &str = r#"
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
def serve(c):
    while True:
        data = c.recv(65536)
        if not data: break
        c.sendall(data)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Sends `ping`, half-closes, prints what came back (nothing when the connection was refused
/// or reset on the way).
const ECHO_CLIENT: &str = r#"
import socket, sys
data = b""
try:
    addr = (sys.argv[1], int(sys.argv[2]))
    if len(sys.argv) > 3:
        # SO_MARK (36) with the proxy's mark: the capture rules let the connection pass, as if
        # the app went around its own proxy.
        c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[3], 0))
        c.settimeout(10); c.connect(addr)
    else:
        c = socket.create_connection(addr, timeout=10)
    c.sendall(b"ping"); c.shutdown(socket.SHUT_WR)
    while True:
        chunk = c.recv(65536)
        if not chunk: break
        data += chunk
except OSError as e:
    print("error:", e, file=sys.stderr)
print(repr(data.decode()))
"#;

/// The mesh's config: the `web` service (HTTP and TCP ports) selecting `web-1` at `server`,
/// `client-1` at `client`, then `policies`.
fn config(server: &Host, client: &Host, policies: &str) -> String {
    let mesh = service_config(
        "web",
        VIP,
        &[("http", HTTP_PORT), ("tcp-echo", TCP_PORT)],
        server.ip,
        client.ip,
    );
    format!("{mesh}---\n{policies}")
}

/// The server's apps (demo-app on the HTTP port, an echo server on the TCP port) and its
/// proxy, then a proxy for each of `clients` (host, service account); waits until all are
/// ready and have each other in their snapshots.
fn start_workloads(mesh: &LanMesh, server: &Host, clients: &[(&Host, &str)]) -> Vec<Proc> {
    let mut procs = vec![mesh.demo_app(server, "web", HTTP_PORT).unwrap()];
    let mut echo = server.command("python3");
    echo.args(["-c", ECHO, &server.ip.to_string(), &TCP_PORT.to_string()]);
    procs.push(Proc::spawn(&mut echo).unwrap());
    let ports = [format!("http={HTTP_PORT}"), format!("tcp-echo={TCP_PORT}")];
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    procs.push(mesh.proxy(server, "web", &ports, &[]).unwrap());
    for (host, sa) in clients {
        procs.push(mesh.proxy(host, sa, &[], &[]).unwrap());
    }
    let hosts: Vec<&Host> = [server]
        .into_iter()
        .chain(clients.iter().map(|c| c.0))
        .collect();
    wait_meshed(&hosts).unwrap();
    procs
}

/// What the echo client in `host` got back from `address:port`.
fn echo(host: &Host, address: &str, port: u16) -> String {
    echo_client(host, &[address, &port.to_string()])
}

/// Like [`echo`], from an app in a meshed `host` that bypasses its proxy (its socket carries
/// the proxy's mark, so capture lets it pass): plain text reaches the server.
fn echo_bypassing(host: &Host, address: &str, port: u16) -> String {
    echo_client(host, &[address, &port.to_string(), "0x7472"])
}

/// Runs [`ECHO_CLIENT`] in `host` with `args`: what it printed.
fn echo_client(host: &Host, args: &[&str]) -> String {
    let out = host
        .command("python3")
        .args(["-c", ECHO_CLIENT])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The server proxy's metrics, asked from inside its host.
fn metrics(server: &Host) -> String {
    server
        .run(&[
            "curl",
            "-sS",
            &format!("http://{}:15020/metrics", server.ip),
        ])
        .unwrap()
}

/// Writes one more file into the control plane's config directory, atomically (a hidden
/// file renamed into place: the control plane never reads half of it).
fn write_config(mesh: &LanMesh, name: &str, yaml: &str) {
    let dir = mesh.tmp_path().join("config");
    let hidden = dir.join(format!(".{name}"));
    std::fs::write(&hidden, yaml).unwrap();
    std::fs::rename(&hidden, dir.join(name)).unwrap();
}

/// Calls `check` until it returns `Ok`, failing with its last error after [`PROPAGATION`].
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if started.elapsed() > PROPAGATION => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The value of the series `name{labels}` in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// === AuthorizationPolicy ===

const AUTHZ: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-client
spec:
  selector:
    matchLabels:
      app: web
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/client"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
spec:
  selector:
    matchLabels:
      app: web
  action: DENY
  rules:
  - to:
    - operation:
        # Without the port, Istio's rule for TCP applies: a DENY rule's HTTP-only fields
        # are dropped on TCP connections, so it would refuse every tunnel to port 9000 too.
        ports: ["8080"]
        paths: ["/admin", "/admin/*"]
"#;

const DENY_TCP: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-tcp
spec:
  selector:
    matchLabels:
      app: web
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["9000"]
"#;

#[test]
fn authorization_policies_are_enforced() {
    require_tools(&["ip", "nft", "curl", "python3"]).unwrap();
    let mut lan = Lan::new(36).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let stranger = lan.add_host("stranger").unwrap();
    let mesh = LanMesh::start(Path::new(BIN), lan, &config(&server, &client, AUTHZ)).unwrap();
    let _workloads = start_workloads(
        &mesh,
        &server,
        &[(&client, "client"), (&stranger, "stranger")],
    );
    let url = |path: &str| format!("http://{VIP}:{HTTP_PORT}{path}");
    let denied = Answer {
        status: 403,
        body: "RBAC: access denied".into(),
    };

    // The client's service account is allowed; the app sees the normalized path.
    for (path, seen) in [("/ok", "/ok"), ("/x/../ok", "/ok"), ("//ok", "/ok")] {
        let answer = curl(&client, &[&url(path)]).unwrap();
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        let v: Value = serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("{answer:?}"));
        assert_eq!(v["path"], seen, "{path}");
    }
    // /admin, however it is spelled, never reaches the app.
    for path in ["/admin", "/a/../admin", "//admin", "/%61dmin", "/admin/./x"] {
        assert_eq!(curl(&client, &[&url(path)]).unwrap(), denied, "{path}");
    }
    // A WebSocket upgrade is authorized like any request.
    let upgrade = [
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let admin = url("/a/../admin");
    assert_eq!(
        curl(&client, &[&upgrade[..], &[&admin]].concat()).unwrap(),
        denied
    );
    // Another meshed workload, with a certificate of its own, is not in the ALLOW policy.
    assert_eq!(curl(&stranger, &[&url("/ok")]).unwrap(), denied);

    // TCP: the tunnel works until a DENY on its port arrives, then it is refused and the
    // client's connection closed; HTTP on the other port is untouched.
    assert_eq!(echo(&client, VIP, TCP_PORT), "'ping'");
    write_config(&mesh, "deny-tcp.yaml", DENY_TCP);
    eventually("DENY on the TCP port in force", || {
        match echo(&client, VIP, TCP_PORT) {
            s if s == "''" => Ok(()),
            s => Err(format!("echo still answers: {s}")),
        }
    });
    assert_eq!(curl(&client, &[&url("/ok")]).unwrap().status, 200);

    // The server proxy counted every decision under the policy that made it.
    let m = metrics(&server);
    let decisions = |policy: &str, action: &str, decision: &str| {
        sample(
            &m,
            &format!(
                "trellis_authz_decisions_total{{policy=\"{policy}\",action=\"{action}\",\
                 decision=\"{decision}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(decisions("default/deny-admin", "DENY", "deny"), 6.0, "{m}");
    assert_eq!(decisions("none", "none", "deny"), 1.0, "{m}");
    assert!(decisions("default/deny-tcp", "DENY", "deny") >= 1.0, "{m}");
    // 3 + 1 HTTP requests and the first tunnel, at least.
    assert!(
        decisions("default/allow-client", "ALLOW", "allow") >= 5.0,
        "{m}"
    );
}

// === PeerAuthentication ===

fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls:
    mode: {mode}
"
    )
}

/// A mesh under PERMISSIVE: the server's apps and proxy (`web-1`) and a meshed client
/// (`client-1`), both ready, and one more host with no proxy.
struct Permissive {
    client: Host,
    server: Host,
    /// The host with no proxy.
    outsider: Host,
    /// The server app's own address, as a client outside the mesh calls it.
    direct: String,
    /// The web service's virtual IP, as a meshed client calls it.
    via_mesh: String,
    // Dropped before the mesh, which deletes the namespaces they run in.
    workloads: Vec<Proc>,
    mesh: LanMesh,
}

/// Starts [`Permissive`] on LAN `n`, calling the host with no proxy `outsider`.
fn permissive(n: u8, outsider: &str) -> Permissive {
    require_tools(&["ip", "nft", "curl", "python3"]).unwrap();
    let mut lan = Lan::new(n).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let outsider = lan.add_host(outsider).unwrap();
    let mesh = LanMesh::start(
        Path::new(BIN),
        lan,
        &config(&server, &client, &peer_authentication("PERMISSIVE")),
    )
    .unwrap();
    let workloads = start_workloads(&mesh, &server, &[(&client, "client")]);
    Permissive {
        direct: format!("http://{}:{HTTP_PORT}/ok", server.ip),
        via_mesh: format!("http://{VIP}:{HTTP_PORT}/ok"),
        client,
        server,
        outsider,
        workloads,
        mesh,
    }
}

impl Permissive {
    /// Applies STRICT while the mesh runs, and waits until `plaintext` (a request from outside
    /// the mesh) is refused.
    fn go_strict(&self, mut plaintext: impl FnMut() -> Answer) {
        write_config(
            &self.mesh,
            "mesh.yaml",
            &config(&self.server, &self.client, &peer_authentication("STRICT")),
        );
        eventually("STRICT in force", || {
            let answer = plaintext();
            match answer.status {
                0 => Ok(()),
                _ => Err(format!("plain text still answered: {answer:?}")),
            }
        });
    }
}

#[test]
fn peer_authentication_governs_plaintext() {
    let s = permissive(37, "outsider");
    let (client, server, outsider) = (&s.client, &s.server, &s.outsider);

    // PERMISSIVE: plain text reaches the app (through the server proxy's 15006), and so does
    // the meshed client over mTLS. Both are counted, plain text by its source.
    let answer = curl(outsider, &[&s.direct]).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echo(outsider, &server.ip.to_string(), TCP_PORT), "'ping'");
    assert_eq!(curl(client, &[&s.via_mesh]).unwrap().status, 200);
    // A meshed client's app going around its proxy arrives as plain text too.
    assert_eq!(
        echo_bypassing(client, &server.ip.to_string(), TCP_PORT),
        "'ping'"
    );
    let m = metrics(server);
    let plaintext = format!(
        "trellis_inbound_connections_total{{connection_security_policy=\"none\",\
         source_address=\"{}\"}}",
        outsider.ip
    );
    assert_eq!(sample(&m, &plaintext), Some(2.0), "{m}");
    let mtls = format!(
        "trellis_inbound_connections_total{{connection_security_policy=\"mutual_tls\",\
         source_address=\"{}\"}}",
        client.ip
    );
    assert!(sample(&m, &mtls).is_some_and(|n| n >= 1.0), "{m}");

    // STRICT, applied while the mesh runs: plain text is refused, HTTP and TCP alike.
    s.go_strict(|| curl(outsider, &[&s.direct]).unwrap());
    assert_eq!(echo(outsider, &server.ip.to_string(), TCP_PORT), "''");
    // So is the app that bypasses its own proxy.
    assert_eq!(
        echo_bypassing(client, &server.ip.to_string(), TCP_PORT),
        "''"
    );
    // The meshed client is unaffected.
    let answer = curl(client, &[&s.via_mesh]).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// `trellis check --strict-ready` run against the control plane (from the LAN's namespace):
/// its exit status and output.
fn strict_ready(mesh: &LanMesh, window: &str) -> (bool, String) {
    let out = mesh
        .lan()
        .command(BIN)
        .args(["check", "--strict-ready", "--namespace", "default"])
        .args(["--window", window])
        .args(["--api", &format!("{}:15014", mesh.lan().gateway())])
        .arg("--data-dir")
        .arg(mesh.data_dir())
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
}

/// Istio's adoption path as one story: PERMISSIVE with one plaintext client; the
/// strict-readiness check says not ready and names it; the client is meshed; the check says
/// ready once the window has passed; STRICT goes in. Meshed clients call the server all along
/// and none of their requests fails.
#[test]
fn permissive_then_strict_without_a_failed_request() {
    let mut s = permissive(42, "legacy");
    let (mesh, legacy, direct, via_mesh) = (&s.mesh, &s.outsider, &s.direct, &s.via_mesh);

    // Meshed traffic throughout, counted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, client, via_mesh) = (stop.clone(), s.client.clone(), via_mesh.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = curl(&client, &[&via_mesh]).unwrap();
                if answer.status == 200 {
                    ok += 1;
                } else {
                    failed.push(answer);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (ok, failed)
        })
    };

    // Crawl: a plaintext client. The check names it and says not ready.
    assert_eq!(curl(legacy, &[direct]).unwrap().status, 200);
    eventually("the check sees the plaintext client", || {
        let (ok, out) = strict_ready(mesh, "5s");
        if !ok && out.contains("default/web-1: not ready") && out.contains(&legacy.ip.to_string()) {
            Ok(())
        } else {
            Err(out)
        }
    });
    let (_, out) = strict_ready(mesh, "5s");
    assert!(out.contains("(outside the mesh)"), "{out}");

    // Walk: the client gets a proxy and calls through the mesh; once the window has passed
    // with no plaintext, the check says ready.
    s.workloads
        .push(mesh.proxy(legacy, "legacy", &[], &[]).unwrap());
    wait_meshed(&[legacy]).unwrap();
    let answer = curl(legacy, &[via_mesh]).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    eventually("ready for STRICT", || {
        let (ok, out) = strict_ready(mesh, "5s");
        if ok && out.contains("✔ default/web-1: ready for STRICT") {
            Ok(())
        } else {
            Err(out)
        }
    });

    // Run: STRICT. Plain text from outside the mesh (the LAN's own namespace has no proxy)
    // is refused.
    s.go_strict(|| curl_command(mesh.lan().command("curl"), &[direct]).unwrap());
    // The once-plaintext client, meshed, still gets through calling the server's address:
    // its connection is captured and carried over mTLS.
    let answer = curl(legacy, &[direct]).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    assert!(ok >= 20, "only {ok} meshed requests went through");
    assert!(failed.is_empty(), "meshed requests failed: {failed:?}");
    assert_eq!(curl(legacy, &[via_mesh]).unwrap().status, 200);
}
