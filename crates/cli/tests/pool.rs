//! The pool of mTLS connections between proxies, end to end in network namespaces: requests
//! to one endpoint share one connection, and a connection left unused for the idle timeout
//! is closed.
//!
//! Needs root, `ip`, `nft`, `curl` and `ss` (iproute2); fails without.

use std::path::Path;
use std::time::Duration;

use trellis_testkit::lan_mesh::{
    curl, require_tools, service_config, wait_meshed, wait_until, LanMesh,
};
use trellis_testkit::netns::{Host, Lan};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
const VIP: &str = "198.18.202.10";

/// Established connections from `host` to port 15008 (other proxies).
fn pooled(host: &Host) -> usize {
    host.run(&["ss", "-tnH", "state", "established", "( dport = :15008 )"])
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn requests_share_one_connection_that_closes_when_idle() {
    require_tools(&["ip", "nft", "curl", "ss"]).unwrap();
    let mut lan = Lan::new(41).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let config = service_config("echo", VIP, &[("http", 8080)], server.ip, client.ip);
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let _app = mesh.demo_app(&server, "echo", 8080).unwrap();
    let _server_proxy = mesh.proxy(&server, "echo", &["http=8080"], &[]).unwrap();
    let _client_proxy = mesh
        .proxy(&client, "client", &[], &["--pool-idle-timeout", "2s"])
        .unwrap();
    wait_meshed(&[&server, &client]).unwrap();
    assert_eq!(pooled(&client), 0, "a connection before any request");

    // Ten requests on ten separate app connections: one pooled connection carries them all.
    let url = format!("http://{VIP}:8080/");
    for _ in 0..10 {
        let answer = curl(&client, &[&url]).unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(
        pooled(&client),
        1,
        "requests to one endpoint share one connection"
    );

    // Unused for the idle timeout (2 s; reaped within a second after): closed.
    wait_until("idle connection closed", Duration::from_secs(6), || {
        pooled(&client) == 0
    })
    .unwrap();

    // And the next request opens a fresh one.
    let answer = curl(&client, &[&url]).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(pooled(&client), 1);
}

/// Inbound mTLS connections the server proxy at `host` has accepted from `client`, by its
/// metrics.
fn accepted(host: &Host, client: &Host) -> u64 {
    let metrics = curl(host, &[&format!("http://{}:15020/metrics", host.ip)]).unwrap();
    let needle = format!("source_address=\"{}\"", client.ip);
    metrics
        .body
        .lines()
        .filter(|l| l.starts_with("trellis_inbound_connections_total{") && l.contains(&needle))
        .filter(|l| l.contains("connection_security_policy=\"mutual_tls\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// A DestinationRule's connection pool shapes the pooled connections to its destination:
/// `maxRequestsPerConnection: 2` replaces a connection after two requests, and
/// `idleTimeout: 1s` closes an unused one long before the proxy's own 60 s.
#[test]
fn a_destination_rule_limits_requests_per_connection_and_idle_time() {
    require_tools(&["ip", "nft", "curl", "ss"]).unwrap();
    let mut lan = Lan::new(44).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let mut config = service_config("echo", VIP, &[("http", 8080)], server.ip, client.ip);
    config.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  \
         name: echo\nspec:\n  host: echo\n  trafficPolicy:\n    connectionPool:\n      http:\n        \
         maxRequestsPerConnection: 2\n        idleTimeout: 1s\n",
    );
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let _app = mesh.demo_app(&server, "echo", 8080).unwrap();
    let _server_proxy = mesh.proxy(&server, "echo", &["http=8080"], &[]).unwrap();
    let _client_proxy = mesh.proxy(&client, "client", &[], &[]).unwrap();
    wait_meshed(&[&server, &client]).unwrap();
    let before = accepted(&server, &client);

    let url = format!("http://{VIP}:8080/");
    for _ in 0..6 {
        let answer = curl(&client, &[&url]).unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(
        accepted(&server, &client) - before,
        3,
        "six requests, two per connection"
    );
    // Idle for the rule's 1 s (reaped within a second after): closed, where the proxy's own
    // timeout would keep it a minute.
    wait_until("idle connection closed", Duration::from_secs(5), || {
        pooled(&client) == 0
    })
    .unwrap();
}
