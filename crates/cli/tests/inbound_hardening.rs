//! What reaches a transparent server proxy's app, end to end in network namespaces: a server
//! workload (`echo`, the demo app on 8080, which echoes the headers it got), a meshed
//! client, and a host outside the mesh.
//!
//! * An `x-forwarded-client-cert` written by the client never reaches the app: neither in
//!   plaintext from outside the mesh (the app gets none) nor from a meshed client dialling
//!   the server's own address, which its proxy carries in an opaque tunnel (the app gets
//!   the server proxy's, naming the client's verified identity).
//! * A connection to the plaintext port itself (15006) is closed, instead of the proxy
//!   connecting to itself until it runs out of descriptors.
//! * Half-sent requests are closed once the header-read timeout has passed, on the
//!   plaintext inbound path and on the client's captured outbound path.
//!
//! Needs root, `ip`, `nft` and `curl`; fails without.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use trellis_testkit::lan_mesh::{curl, require_tools, service_config, wait_meshed, LanMesh, Proc};
use trellis_testkit::netns::{Host, Lan};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// The service's virtual IP (its clusterIP).
const VIP: &str = "198.18.52.10";
const FORGED: &str =
    "By=spiffe://cluster.local/ns/default/sa/echo;URI=spiffe://cluster.local/ns/default/sa/forged";

struct Scene {
    client: Host,
    server: Host,
    outsider: Host,
    _procs: Vec<Proc>,
    _mesh: LanMesh,
}

/// The mesh on LAN `n`; both proxies get `proxy_args`.
fn scene(n: u8, vip: &str, proxy_args: &[&str]) -> Scene {
    require_tools(&["ip", "nft", "curl"]).unwrap();
    let mut lan = Lan::new(n).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let outsider = lan.add_host("outsider").unwrap();
    let config = service_config("echo", vip, &[("http", 8080)], server.ip, client.ip);
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let app = mesh.demo_app(&server, "echo", 8080).unwrap();
    let server_proxy = mesh
        .proxy(&server, "echo", &["http=8080"], proxy_args)
        .unwrap();
    let client_proxy = mesh.proxy(&client, "client", &[], proxy_args).unwrap();
    wait_meshed(&[&server, &client]).unwrap();
    Scene {
        client,
        server,
        outsider,
        _procs: vec![client_proxy, server_proxy, app],
        _mesh: mesh,
    }
}

/// The XFCC values the demo app reports in each JSON answer of `body`, in order (`None`
/// for an answer without one).
fn xfcc_seen(body: &str) -> Vec<Option<String>> {
    serde_json::Deserializer::from_str(body)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        // curl's `-w` puts each status code between the answers.
        .filter(|v| v.is_object())
        .map(|v| {
            v["headers"]["x-forwarded-client-cert"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_forged_xfcc_reaches_no_app_in_plaintext_or_through_a_tunnel() {
    let s = scene(52, VIP, &[]);
    let header = format!("x-forwarded-client-cert: {FORGED}");
    let server_url = format!("http://{}:8080/", s.server.ip);

    // From outside the mesh, plaintext (PERMISSIVE): two requests on one connection, and
    // neither arrives with an XFCC.
    let a = curl(&s.outsider, &["-H", &header, &server_url, &server_url]).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(xfcc_seen(&a.body), vec![None, None], "{}", a.body);

    // A meshed client dialling the server's own address: its proxy tunnels the connection
    // (opaque TCP), and the server proxy still sets the XFCC from the TLS session.
    let proxy_says = "By=spiffe://cluster.local/ns/default/sa/echo;URI=spiffe://cluster.local/ns/default/sa/client";
    let a = curl(&s.client, &["-H", &header, &server_url, &server_url]).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        xfcc_seen(&a.body),
        vec![Some(proxy_says.to_owned()), Some(proxy_says.to_owned())],
        "{}",
        a.body
    );

    // Through the service's virtual IP (routed as HTTP all the way), the same.
    let a = curl(&s.client, &["-H", &header, &format!("http://{VIP}:8080/")]).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(xfcc_seen(&a.body), vec![Some(proxy_says.to_owned())]);
}

/// Open descriptors of the proxy running in `host`, from /proc.
fn proxy_fds(host: &Host) -> usize {
    let needle = format!("--address\0{}\0", host.ip);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("\0proxy\0") && cmdline.contains(&needle) {
            return std::fs::read_dir(entry.path().join("fd")).unwrap().count();
        }
    }
    panic!("no proxy process for {}", host.ip);
}

/// In `host`: connects to `addr`, sends `bytes`, and waits up to `within` for the other side
/// to close. `Some(elapsed)` when it did.
fn closed_within(
    host: &Host,
    addr: SocketAddr,
    bytes: &'static [u8],
    within: Duration,
) -> Option<Duration> {
    host.spawn(move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        c.write_all(bytes).ok()?;
        c.set_read_timeout(Some(within)).ok()?;
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return Some(started.elapsed()),
                // An answer (a 408, say) before the close is fine: keep reading.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(started.elapsed())
                }
                Err(_) => return None,
            }
        }
    })
    .unwrap()
    .join()
    .unwrap()
}

#[test]
fn a_connection_to_the_plaintext_port_itself_is_closed() {
    let vip = "198.18.54.10";
    let s = scene(54, vip, &[]);
    let before = proxy_fds(&s.server);

    // 15006 dialled directly is not captured: its original destination is the listener
    // itself. The connection is closed at once, and the proxy does not connect to itself.
    let a = curl(&s.outsider, &[&format!("http://{}:15006/", s.server.ip)]).unwrap();
    assert_eq!(a.status, 0, "{}", a.body);
    assert!(
        a.body.contains("Empty reply") || a.body.contains("reset"),
        "{}",
        a.body
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = proxy_fds(&s.server);
    assert!(
        after < before + 20,
        "server proxy descriptors went from {before} to {after}"
    );
    // Not one plaintext connection was passed on (a loop counts each of its turns, until
    // the descriptors run out and the chain unwinds).
    let metrics = curl(
        &s.server,
        &[&format!("http://{}:15020/metrics", s.server.ip)],
    )
    .unwrap();
    let plaintext: f64 = metrics
        .body
        .lines()
        .filter(|l| {
            l.starts_with("trellis_inbound_connections_total")
                && l.contains("connection_security_policy=\"none\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        plaintext, 0.0,
        "plaintext connections passed on:\n{}",
        metrics.body
    );
    let a = curl(&s.client, &[&format!("http://{vip}:8080/")]).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn half_sent_requests_are_closed_after_the_header_read_timeout() {
    let vip = "198.18.53.10";
    let s = scene(53, vip, &["--header-read-timeout", "1s"]);

    // A request whose headers never end: closed after the 1 s header-read timeout, well
    // before 8 s (an open connection would hold until the read times out).
    let half: &'static [u8] = b"GET / HTTP/1.1\r\nHost: echo\r\nx-partial: ";
    let plaintext = SocketAddr::from((s.server.ip, 8080));
    assert!(
        closed_within(&s.outsider, plaintext, half, Duration::from_secs(8)).is_some(),
        "half-sent plaintext request still open after 8 s"
    );
    let captured: SocketAddr = format!("{vip}:8080").parse().unwrap();
    assert!(
        closed_within(&s.client, captured, half, Duration::from_secs(8)).is_some(),
        "half-sent request to the outbound capture still open after 8 s"
    );
    // A request line that never ends, too.
    assert!(
        closed_within(
            &s.outsider,
            plaintext,
            b"GET /never-ending",
            Duration::from_secs(8)
        )
        .is_some(),
        "half-sent request line still open after 8 s"
    );
}
