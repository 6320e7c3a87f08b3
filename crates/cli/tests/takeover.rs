//! Endpoint takeover, end to end in network namespaces: an attacker host holding an ordinary
//! join token (service account `attacker`) runs a proxy of its own and registers claims about
//! someone else's workload, while a meshed client keeps calling the `echo` service.
//!
//! * the address of echo's workload, with echo's label: refused (before, the control plane
//!   replaced echo's endpoint with the attacker's identity and every meshed call failed);
//! * echo's workload name, from its own address: refused;
//! * its own address with echo's label, and an app behind it: admitted as a client only, and
//!   never an endpoint of echo (before, it took its share of echo's calls and saw them).
//!
//! Each time the control plane's registry and the client's calls show echo served by its own
//! proxy alone.
//!
//! Needs root, `ip`, `nft` and `curl`; fails without.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::lan_mesh::{
    curl, require_root_and, service_config, wait_meshed, LanMesh, Proc,
};
use trellis_testkit::netns::Host;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// The echo service's virtual IP (its clusterIP).
const VIP: &str = "198.18.202.10";
const ECHO_ID: &str = "spiffe://cluster.local/ns/default/sa/echo";
const ATTACKER_ID: &str = "spiffe://cluster.local/ns/default/sa/attacker";

/// Starts, in `attacker`, a proxy for service account `attacker` (explicit mode, its own
/// listeners on the attacker's address) that registers `name` at `address` with `labels`.
fn attacker_proxy(
    mesh: &LanMesh,
    attacker: &Host,
    name: &str,
    address: &str,
    labels: &[&str],
) -> Proc {
    let own = attacker.ip.to_string();
    let mut cmd = attacker.command(BIN);
    cmd.arg("proxy")
        .args(["--control", &format!("{}:15012", mesh.lan().gateway())])
        .arg("--ca-bundle")
        .arg(mesh.tmp_path().join("data/ca/root.pem"))
        .args(["--namespace", "default", "--service-account", "attacker"])
        .args(["--workload-name", name, "--address", address])
        .args(["--inbound", &format!("{own}:15008")])
        .args(["--admin", &format!("{own}:15020")])
        .args(["--outbound", "127.0.0.1:15001"])
        .args(["--admin-local", "127.0.0.1:15000"])
        .args(["--port", "http=8080"])
        .env("TRELLIS_JOIN_TOKEN", mesh.token("attacker").unwrap());
    for l in labels {
        cmd.args(["--label", l]);
    }
    Proc::spawn(&mut cmd).unwrap()
}

/// A GET on the control plane's HTTP API, from the LAN's own namespace.
fn api(mesh: &LanMesh, path: &str) -> String {
    let url = format!("http://{}:15014{path}", mesh.lan().gateway());
    // Reads of the API need the read token; /metrics is open, the header does no harm.
    let token = std::fs::read_to_string(mesh.data_dir().join("read-token")).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    mesh.lan()
        .run(&["curl", "-sS", "--max-time", "5", "-H", &auth, &url])
        .unwrap()
}

/// `trellis_control_registrations_refused_total`.
fn refused(mesh: &LanMesh) -> u64 {
    api(mesh, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix("trellis_control_registrations_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the control plane has refused `n` registrations in all.
fn wait_refused(mesh: &LanMesh, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused(mesh) < n {
        assert!(
            Instant::now() < deadline,
            "the control plane did not refuse registration {n}; proxies: {}",
            api(mesh, "/api/v1/status")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The connected proxies, as (workload name, address, identity).
fn proxies(mesh: &LanMesh) -> Vec<(String, String, String)> {
    let status: Value = serde_json::from_str(&api(mesh, "/api/v1/status")).unwrap();
    let field = |p: &Value, k: &str| p[k].as_str().unwrap_or_default().to_owned();
    status["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (field(p, "name"), field(p, "address"), field(p, "identity")))
        .collect()
}

/// Which service answered each of `n` meshed calls from the client app to echo ("" for a
/// call that failed, with its status).
fn answers(client: &Host, n: usize) -> Vec<String> {
    let url = format!("http://{VIP}:8080/");
    (0..n)
        .map(|_| {
            let a = curl(client, &[&url]).unwrap();
            match serde_json::from_str::<Value>(a.body.trim()) {
                Ok(body) if a.status == 200 => body["service"].as_str().unwrap_or("").to_owned(),
                _ => format!("status {}", a.status),
            }
        })
        .collect()
}

#[test]
fn an_ordinary_token_cannot_take_over_another_workload_s_endpoint() {
    require_root_and(&["ip", "nft", "curl"]);
    let mut lan = trellis_testkit::netns::Lan::new(52).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let attacker = lan.add_host("attacker").unwrap();
    let config = service_config("echo", VIP, &[("http", 8080)], server.ip, client.ip);
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let _app = mesh.demo_app(&server, "echo", 8080).unwrap();
    let _server_proxy = mesh.proxy(&server, "echo", &["http=8080"], &[]).unwrap();
    let _client_proxy = mesh.proxy(&client, "client", &[], &[]).unwrap();
    wait_meshed(&[&server, &client]).unwrap();
    let echo_alone = |why: &str| {
        let echo = (
            "echo-1".to_string(),
            server.ip.to_string(),
            ECHO_ID.to_string(),
        );
        let live = proxies(&mesh);
        assert!(live.contains(&echo), "{why}: {live:?}");
        assert!(
            live.iter().all(|p| p.0 != "echo-1" || p == &echo)
                && live.iter().all(|p| p.1 != echo.1 || p == &echo),
            "{why}: {live:?}"
        );
        assert_eq!(answers(&client, 10), vec!["echo"; 10], "{why}");
    };
    echo_alone("before any attack");

    // The attack as found: echo's address, echo's label, a name of its own.
    let server_ip = server.ip.to_string();
    let attack = attacker_proxy(&mesh, &attacker, "attacker", &server_ip, &["app=echo"]);
    wait_refused(&mesh, 1);
    // A proxy that is refused retries; the control plane keeps refusing it.
    wait_refused(&mesh, 2);
    echo_alone("after a registration at echo's address");
    drop(attack);

    // Echo's workload name, from the attacker's own address.
    let own_ip = attacker.ip.to_string();
    let attack = attacker_proxy(&mesh, &attacker, "echo-1", &own_ip, &["app=echo"]);
    wait_refused(&mesh, 3);
    echo_alone("after a registration under echo's name");
    drop(attack);

    // Its own address and a name no WorkloadEntry has, claiming echo's label, with an app
    // that answers as "attacker": admitted (it may call others), but no endpoint of echo.
    let _attacker_app = mesh.demo_app(&attacker, "attacker", 8080).unwrap();
    let _attack = attacker_proxy(&mesh, &attacker, "attacker-1", &own_ip, &["app=echo"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let admitted = ("attacker-1".to_string(), own_ip, ATTACKER_ID.to_string());
    while !proxies(&mesh).contains(&admitted) {
        assert!(
            Instant::now() < deadline,
            "the client-only registration was refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A registration reaches every proxy within milliseconds when it changes the snapshot;
    // a second is ample for one that would.
    std::thread::sleep(Duration::from_secs(1));
    echo_alone("after a registration claiming echo's label");
}
