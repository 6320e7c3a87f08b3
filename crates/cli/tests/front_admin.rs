//! End to end: `trellis up --listen` on an address other workloads can reach publishes the
//! front service there, and only that. The front proxy's admin ports (config dump, log
//! level, telemetry switch; health and metrics) stay on loopback.
//!
//! `up` runs in a host of a LAN of network namespaces (`198.18.55.0/24`, this file's own),
//! publishing on the host's LAN address; a neighbour on the LAN tries the admin port.
//! Needs root, `ip` and `curl`; fails without.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_testkit::lan_mesh::{curl, require_tools};
use trellis_testkit::netns::Lan;
use trellis_testkit::workspace_root;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// `trellis up` in a namespace; dropping it stops it (SIGTERM, then SIGKILL).
struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not reaped yet, so the PID is still its.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

#[test]
fn up_on_a_lan_address_keeps_the_front_proxys_admin_on_loopback() {
    require_tools(&["ip", "curl"]).unwrap();
    let mut lan = Lan::new(55).expect("LAN (needs root)");
    let front = lan.add_host("front").unwrap();
    let neighbour = lan.add_host("neighbour").unwrap();
    let data = tempfile::tempdir().unwrap();
    let published = format!("{}:8080", front.ip);
    let mut child = front
        .command(BIN)
        .arg("up")
        .arg(workspace_root().join("examples/quickstart"))
        .args(["--listen", &published])
        .arg("--data-dir")
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trellis up starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("[up] {line}");
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    let mut up = Up { child };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|l| l.contains("Trellis mesh is up"))
    {
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("trellis up exited ({status}) before the mesh was up");
        }
        assert!(Instant::now() < deadline, "mesh not up within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The front service is published on the LAN.
    let page = curl(&neighbour, &[&format!("http://{published}/")]).unwrap();
    assert_eq!(page.status, 200, "{}", page.body);

    // Its admin endpoints are not: nothing listens on 15000 there.
    for (method, path) in [
        ("GET", "/config_dump"),
        ("POST", "/logging?level=trace"),
        ("POST", "/telemetry?enabled=off"),
    ] {
        let url = format!("http://{}:15000{path}", front.ip);
        let a = curl(&neighbour, &["-X", method, &url]).unwrap();
        assert_eq!(a.status, 0, "{method} {url} answered: {}", a.body);
    }

    // On loopback, where the operator of the host finds them, they answer; the health and
    // metrics port is on loopback too.
    let dump = curl(&front, &["http://127.0.0.1:15000/config_dump"]).unwrap();
    assert_eq!(dump.status, 200, "{}", dump.body);
    let json = dump.body.trim();
    let dump: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(dump["config"]["workload"], "front", "{dump}");
    for port in ["admin", "admin_local"] {
        let addr: std::net::SocketAddr = dump["config"][port]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {port} in {dump}"));
        assert!(addr.ip().is_loopback(), "front {port} on {addr}");
    }
    drop(up);
}
