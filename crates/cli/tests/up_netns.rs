//! End to end: `trellis up --netns`, the real binary, every workload in a network namespace of
//! its own with a transparent proxy. Checks calls by service name from inside a namespace
//! (mTLS identities in the answers), the front door from the host, the capture rules, that an
//! app starts only once its proxy is ready, and that nothing is left behind after SIGTERM.
//!
//! Needs root, `ip`, `nft`, `curl` and `setpriv` (`.ci/run` installs them); fails without.
//! Subnets 198.18.34.0/24 and 198.18.35.0/24 (and 127.0.34.x, 127.0.35.x for the front
//! doors) are this file's own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_testkit::{mesh::processes_mentioning, workspace_root};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
const ID: &str = "spiffe://cluster.local/ns/default/sa";

/// Fails the test, loudly, unless it can run: root and the tools it and `up --netns` use.
fn require_root_and_tools() {
    trellis_testkit::lan_mesh::require_root_and(&["ip", "nft", "curl", "setpriv"]);
}

/// A running `trellis up --netns`; dropping it stops it (SIGTERM, then SIGKILL).
struct Up {
    child: Option<Child>,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    tmp: tempfile::TempDir,
}

impl Up {
    /// Copies `config` into a temporary directory (so every process of the mesh names it)
    /// and runs `up --netns` on it in `198.18.SUBNET.0/24`, front door on
    /// `127.0.SUBNET.250:8080`; returns once it says the mesh is up.
    fn start(config: impl FnOnce(&Path), subnet: u8) -> Up {
        let tmp = tempfile::Builder::new()
            .prefix("trellis-up-netns-")
            .tempdir()
            .expect("temporary directory");
        let dir = tmp.path().join("config");
        std::fs::create_dir_all(&dir).expect("config directory");
        config(&dir);
        let mut child = Command::new(BIN)
            .arg("up")
            .arg(&dir)
            .arg("--netns")
            .args(["--netns-subnet", &format!("198.18.{subnet}.0/24")])
            .args(["--listen", &format!("127.0.{subnet}.250:8080")])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trellis up starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
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
                    eprintln!("[up {subnet}] {line}");
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let mut up = Up {
            pid: child.id(),
            child: Some(child),
            lines,
            tmp,
        };
        up.wait_for_line("Trellis mesh is up", Duration::from_secs(120));
        up
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The index of the first printed line containing `needle`.
    fn line_index(&self, needle: &str) -> Option<usize> {
        self.lines().iter().position(|l| l.contains(needle))
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.line_index(needle).is_none() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("trellis up exited ({status}) before printing {needle:?}");
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The namespace of `workload`, as `up` names it.
    fn netns(&self, workload: &str) -> String {
        format!("trellis-up-{}-{workload}", self.pid)
    }

    /// Runs `args` in `workload`'s namespace (with its /etc/hosts).
    fn exec(&self, workload: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns(workload)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec runs")
    }

    /// SIGTERM, then waits for `up` to exit.
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        // SAFETY: kill(2) on our own child, not reaped yet, so the PID is still its.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("trellis up did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// GET `url` with curl in `workload`'s namespace: the answer's JSON, or a panic saying why.
fn get_json(up: &Up, workload: &str, url: &str) -> Value {
    let out = up.exec(workload, &["curl", "-sS", "--max-time", "10", "-f", url]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "GET {url} from {workload}: {}{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

fn copy_quickstart(dir: &Path) {
    let example = workspace_root().join("examples/quickstart");
    for entry in std::fs::read_dir(&example).expect("examples/quickstart") {
        let entry = entry.expect("directory entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
}

const QUICKSTART_WORKLOADS: [&str; 6] = [
    "productpage-v1",
    "details-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
    "ratings-v1",
];

#[test]
fn quickstart_in_namespaces_calls_by_name_over_mtls_and_leaves_nothing_behind() {
    require_root_and_tools();
    let mut up = Up::start(copy_quickstart, 34);
    let pid = up.pid;

    // Every workload has its namespace, capture rules and hosts file.
    for w in QUICKSTART_WORKLOADS {
        let out = up.exec(w, &["nft", "list", "table", "inet", "trellis"]);
        let rules = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && rules.contains("redirect to :15001"),
            "no capture rules in {w}: {rules}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hosts = PathBuf::from(format!("/etc/netns/{}/hosts", up.netns(w)));
        let text =
            std::fs::read_to_string(&hosts).unwrap_or_else(|e| panic!("{}: {e}", hosts.display()));
        assert!(text.contains("reviews.default.svc.cluster.local"), "{text}");
    }

    // From productpage's namespace, by short name: every call reaches a reviews app over
    // mTLS, which names both sides. The WorkloadEntries say 127.0.1.x; an endpoint left
    // there would fail about half of these.
    for _ in 0..20 {
        let reviews = get_json(&up, "productpage-v1", "http://reviews:9080/");
        assert_eq!(reviews["service"], "reviews");
        assert!(
            ["v1", "v2"].contains(&reviews["version"].as_str().unwrap_or("")),
            "{reviews}"
        );
        assert_eq!(
            reviews["headers"]["x-forwarded-client-cert"],
            format!("By={ID}/bookinfo-reviews;URI={ID}/bookinfo-productpage").as_str()
        );
    }
    // The fully qualified name too, from another workload.
    let details = get_json(
        &up,
        "ratings-v1",
        "http://details.default.svc.cluster.local:9080/",
    );
    assert_eq!(details["service"], "details");
    assert_eq!(
        details["headers"]["x-forwarded-client-cert"],
        format!("By={ID}/bookinfo-details;URI={ID}/bookinfo-ratings").as_str()
    );

    // The front door, from the host, with the command the start-up output shows.
    let shown = "curl -s http://127.0.34.250:8080/";
    assert!(
        up.line_index(shown).is_some(),
        "start-up output lacks {shown:?}"
    );
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-f", "http://127.0.34.250:8080/"])
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(page["service"], "productpage");
    assert_eq!(
        page["headers"]["x-forwarded-client-cert"],
        format!("By={ID}/bookinfo-productpage;URI={ID}/trellis-front").as_str()
    );
    let services: Vec<&str> = page["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["service"].as_str())
        .collect();
    assert_eq!(services, ["details", "reviews"], "{page}");

    // SIGTERM: everything goes.
    let status = up.stop();
    assert!(status.success(), "trellis up exited with {status}");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    let ours = format!("trellis-up-{pid}");
    assert!(
        !namespaces.contains(&ours),
        "namespaces left behind: {namespaces}"
    );
    for w in QUICKSTART_WORKLOADS {
        let dir = PathBuf::from(format!("/etc/netns/{ours}-{w}"));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let link = Command::new("ip")
        .args(["link", "show", "dev", &format!("trellis-{pid}")])
        .output()
        .expect("ip link show");
    assert!(!link.status.success(), "the host's veth was left behind");
    let needle = up.tmp.path().to_string_lossy().into_owned();
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// A one-workload mesh whose app calls itself by name as it starts, once: the call is
/// captured by its proxy, goes out over mTLS to its own inbound and back to the app, so it
/// needs the proxy's certificate, snapshot and capture rules (without them the virtual IP
/// leads nowhere).
const SELF_CALLING: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: client
  annotations:
    demo.trellis.dev/front: "true"
spec:
  selector:
    app: client
  ports:
  - name: http
    port: 8080
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-1
  annotations:
    demo.trellis.dev/startup-calls: "http://client:8080/"
spec:
  # In the subnet, so `up` keeps it: the endpoint is right even in the proxy's first snapshot.
  address: 198.18.35.2
  serviceAccount: client
  labels:
    app: client
  ports:
    http: 8080
"#;

#[test]
fn an_app_starts_only_once_its_proxy_is_ready() {
    require_root_and_tools();
    let mut up = Up::start(
        |dir| std::fs::write(dir.join("mesh.yaml"), SELF_CALLING).expect("config written"),
        35,
    );

    // The app's one startup call went through the mesh, over mTLS.
    let deadline = Instant::now() + Duration::from_secs(20);
    let startup = loop {
        let page = get_json(&up, "client-1", "http://client:8080/");
        if !page["startup_calls"].is_null() {
            break page["startup_calls"].clone();
        }
        assert!(Instant::now() < deadline, "startup calls never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(startup[0]["ok"], true, "startup call failed: {startup}");
    assert_eq!(
        startup[0]["answer"]["headers"]["x-forwarded-client-cert"],
        format!("By={ID}/client;URI={ID}/client").as_str(),
        "{startup}"
    );

    // The success alone does not prove the order: a first SYN sent before the rules were in
    // is dropped, and TCP's retry a second later may well be captured. The log does: every
    // process logs to the one standard error `up` shares with them, so its lines are in the
    // order they were written. The proxy installed its rules and `up` saw it ready before
    // the app started, and the app called once it was serving.
    let index = |needle: &str| {
        up.line_index(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in {:#?}", up.lines()))
    };
    let captured = index("capture rules installed");
    let ready = index("proxy client-1 is ready; starting its app");
    let serving = index("demo app serving");
    let called = index("startup call succeeded");
    assert!(
        captured < ready && ready < serving && serving < called,
        "{:#?}",
        up.lines()
    );
    let status = up.stop();
    assert!(status.success(), "trellis up exited with {status}");
}

#[test]
fn without_root_up_netns_says_so_and_makes_nothing() {
    require_root_and_tools();
    // setpriv executes trellis in its own process: the PID `up` would name namespaces with.
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([BIN, "up", "--netns", "--netns-subnet", "198.18.35.0/24"])
        .arg(workspace_root().join("examples/quickstart"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv runs");
    let pid = child.id();
    let out = child.wait_with_output().expect("trellis up ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(stderr.contains("without --netns"), "{stderr}");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains(&format!("trellis-up-{pid}")),
        "{namespaces}"
    );
}
