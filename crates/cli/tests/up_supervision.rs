//! End to end: `trellis up` behaves like the deployment it stands for. Under steady load
//! through the front door, `kill -9` of the control plane, of one instance's app and of one
//! instance's proxy: each is restarted (a new PID, its restart counted in the mesh record)
//! while the rest keep serving. The control plane's death costs no request (proxies serve on
//! their last snapshot); an instance's death costs at most the requests it had in flight,
//! since the service's VirtualService retries on another instance. The admin commands find
//! the running mesh by its record, with no `--api` or `--data-dir`.
//!
//! Subnet 127.0.90.0/24 is this file's own.

use std::process::Command;
use std::time::{Duration, Instant};

use trellis_testkit::load::{Load, LoadReport};
use trellis_testkit::{HttpClient, Mesh};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
const SUBNET: u8 = 90;
/// The front door's request rate during each kill.
const RATE: u32 = 50;
/// At most this many requests are in flight at once; an instance's death may cost those.
const MAX_IN_FLIGHT: usize = 16;

/// Service `web` (the front door's), three instances `web-1..3`, and a VirtualService that
/// retries what a dead instance makes fail.
fn web() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations:\n    \
                   demo.trellis.dev/front: \"true\"\nspec:\n  selector:\n    app: web\n  ports:\n  \
                   - name: http\n    port: 9080\n";
    let workloads: String = (1..=3)
        .map(|i| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  \
                 name: web-{i}\nspec:\n  address: 127.0.1.{i}\n  serviceAccount: web\n  \
                 labels:\n    app: web\n  ports:\n    http: 9080\n"
            )
        })
        .collect();
    let routes = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  \
                  name: web\nspec:\n  hosts:\n  - web\n  http:\n  - route:\n    - destination:\n        \
                  host: web\n    retries:\n      attempts: 3\n      \
                  retryOn: connect-failure,refused-stream,reset,5xx,gateway-error\n";
    for (file, text) in [
        ("services.yaml", service.to_owned()),
        ("workloads.yaml", workloads),
        ("routes.yaml", routes.to_owned()),
    ] {
        std::fs::write(dir.path().join(file), text).expect("write");
    }
    dir
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `kill -9` of the supervised process `label` under load; returns what the load saw from
/// just before the kill until the process was back and serving for a few seconds.
async fn kill_under_load(mesh: &Mesh, label: &str) -> LoadReport {
    let (pid, restarts) = mesh.process(label).expect("the process is in the record");
    assert!(alive(pid), "{label} (pid {pid}) is not running");
    let load = Load::start(mesh.front, "web", "/", RATE, MAX_IN_FLIGHT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: kill(2) with a PID the mesh record names; only this test's mesh runs it.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_pid = loop {
        if let Ok((now, n)) = mesh.process(label) {
            if now != pid && n == restarts + 1 && alive(now) {
                break now;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{label} was not restarted within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Serving again: the load keeps going while the restarted process settles.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = load.finish().await;
    eprintln!(
        "kill -9 {label} (pid {pid} → {new_pid}): {} requests, {} failed: {:?}",
        report.sent,
        report.failures.len(),
        report.failures.iter().take(5).collect::<Vec<_>>()
    );
    report
}

/// Requests through the front door until one is answered by `instance`: the balancer gives
/// a restarted instance its share back (its cost, raised by the failures while it was away,
/// decays when nothing refreshes it).
async fn until_served_by(mesh: &Mesh, instance: &str) {
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(mesh.front, "web", "/", &[]).await {
            if resp.status == 200 && resp.json().is_ok_and(|v| v["instance"] == instance) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{instance} got no request through the front door within 30 s of its restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `url` until it answers 200 (the restarted process serves again).
async fn until_ok(mesh: &Mesh, addr: std::net::SocketAddr, path: &str) {
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(addr, "web", path, &[]).await {
            if resp.status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr}{path} did not answer 200 within 30 s of the restart (mesh {})",
            mesh.subnet
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_outlives_any_one_of_its_processes() {
    let dir = web();
    let mut mesh = Mesh::up(BIN.as_ref(), dir.path(), SUBNET).expect("mesh starts");

    // The control plane: proxies keep serving on their last snapshot.
    let report = kill_under_load(&mesh, "control").await;
    assert!(report.sent >= u64::from(RATE) * 4, "{report:?}");
    assert!(
        report.failures.is_empty(),
        "the control plane's restart cost requests: {:?}",
        report.failures
    );
    mesh.wait_for_log("control restarted", Duration::from_secs(5))
        .expect("up says it restarted the control plane");

    // One instance's app, then its proxy: the other two take its share, retries cover what
    // was in flight.
    for label in ["app web-1", "proxy web-1"] {
        let report = kill_under_load(&mesh, label).await;
        assert!(report.sent >= u64::from(RATE) * 4, "{report:?}");
        assert!(
            report.failures.len() <= MAX_IN_FLIGHT,
            "{label}: {} of {} requests failed: {:?}",
            report.failures.len(),
            report.sent,
            report.failures
        );
        // The app answers on its port, the proxy is ready (certificate and snapshot).
        until_ok(&mesh, mesh.addr(1, 9080), "/").await;
        until_ok(&mesh, mesh.addr(1, 15020), "/healthz/ready").await;
        until_served_by(&mesh, "web-1").await;
    }
    let lines = mesh.logs();
    assert!(
        !lines.iter().any(|l| l.contains("stopping the mesh")),
        "up stopped the mesh"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("proxy web-1 exited unexpectedly")),
        "up did not say the proxy died"
    );

    // The admin commands find this mesh by its record: no --api, no --data-dir.
    let out = Command::new(BIN)
        .args(["apply", &mesh.config_dir.to_string_lossy()])
        .env("TRELLIS_RUNTIME_DIR", &mesh.runtime_dir)
        .current_dir(dir.path())
        .output()
        .expect("trellis apply runs");
    assert!(
        out.status.success(),
        "trellis apply did not find the mesh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["get", "revisions", "-o", "json"])
        .env("TRELLIS_RUNTIME_DIR", &mesh.runtime_dir)
        .output()
        .expect("trellis get runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = mesh.record().expect("record");
    assert_eq!(record["api"], mesh.api.to_string());
    assert!(
        mesh.logs()
            .iter()
            .any(|l| l.contains("Admin token:") && l.contains("admin-token")),
        "up did not say where the admin token is"
    );

    // Ctrl-C (SIGTERM here) stops everything and takes the record away.
    let status = mesh.stop().expect("stops");
    assert!(status.success(), "{status}");
    assert!(
        !mesh.runtime_dir.join("up.json").exists(),
        "the record outlived the mesh"
    );
}
