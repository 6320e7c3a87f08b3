//! End to end against a real `trellis control` and `trellis validate`: what crosses into the
//! control plane from outside (requests to its HTTP API, files in its watched directory)
//! costs bounded work, is refused with a message naming the file and line, and never takes
//! the control plane down. Reads of the API need a token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use trellis_testkit::workspace_root;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// 10,000 levels of block sequences in 20 KB: enough to overflow a recursive parser.
fn deep_yaml() -> String {
    format!("{}x\n", "- ".repeat(10_000))
}

/// Where the 257th level opens: `- ` is two columns.
const DEEP_ERROR: &str = "deep.yaml:1:513: collections nest more than 256 levels deep";

struct Control {
    child: Child,
    api: String,
    config: PathBuf,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control_command(ip: &str, config: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("control")
        .args(["--listen", &format!("{ip}:15012")])
        .args(["--api-listen", &format!("{ip}:15014")])
        .args(["--poll-ms", "50"])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// Starts a control plane on a copy of the quickstart, on `ip`.
fn start_control(ip: &str) -> Control {
    let tmp = tempfile::tempdir().unwrap();
    let (config, data) = (tmp.path().join("config"), tmp.path().join("data"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(workspace_root().join("examples/quickstart")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), config.join(entry.file_name())).unwrap();
    }
    let child = control_command(ip, &config, &data)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let api = format!("{ip}:15014");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&api).is_err() {
        assert!(Instant::now() < deadline, "control plane did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Control {
        child,
        api,
        config,
        data,
        _tmp: tmp,
    }
}

impl Control {
    fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join(name))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Fails the test if the control plane has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the control plane exited: {status}");
        }
        assert_eq!(http(&self.api, "GET", "/healthz", None, None).0, 200);
    }

    /// Waits for the newest history entry to be rejected with an error containing each of
    /// `needles`, and returns its errors.
    fn rejected_with(&mut self, needles: &[&str]) -> Vec<String> {
        let token = self.token("read-token");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = http(&self.api, "GET", "/api/v1/revisions", Some(&token), None);
            assert_eq!(code, 200, "{body}");
            let revs: serde_json::Value = serde_json::from_str(&body).unwrap();
            let last = revs["revisions"]
                .as_array()
                .and_then(|r| r.last())
                .cloned()
                .unwrap_or_default();
            let errors: Vec<String> = last["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect();
            let all = needles.iter().all(|n| errors.iter().any(|e| e.contains(n)));
            if last["status"] == "rejected" && all {
                return errors;
            }
            assert!(
                Instant::now() < deadline,
                "no rejection naming {needles:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP/1.1 exchange: the status code and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, rest.to_owned())
}

fn diff_body(name: &str, text: &str) -> String {
    serde_json::json!({ "files": { name: text } }).to_string()
}

/// Waits for `child` to exit, at most `timeout`.
fn exits_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a file whole (a hidden file renamed into place), so the watcher never reads half.
fn put(path: &Path, content: &[u8]) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn the_api_needs_tokens_and_bounds_what_it_parses() {
    let mut control = start_control("127.0.73.251");
    let api = control.api.clone();
    let (read, admin) = (control.token("read-token"), control.token("admin-token"));
    assert_ne!(read, admin);

    // Health and metrics are open; everything else needs a token.
    assert_eq!(http(&api, "GET", "/healthz", None, None).0, 200);
    assert_eq!(http(&api, "GET", "/metrics", None, None).0, 200);
    for path in [
        "/api/v1/status",
        "/api/v1/certs",
        "/api/v1/revisions",
        "/api/v1/strict-ready",
        "/api/v1/stat",
    ] {
        assert_eq!(http(&api, "GET", path, None, None).0, 401, "{path}");
        assert_eq!(http(&api, "GET", path, Some("nope"), None).0, 401, "{path}");
        assert_eq!(http(&api, "GET", path, Some(&read), None).0, 200, "{path}");
        assert_eq!(http(&api, "GET", path, Some(&admin), None).0, 200, "{path}");
    }
    // diff answers with whole resources: not for anyone who can reach the port.
    let small = diff_body("a.yaml", "");
    let (code, body) = http(&api, "POST", "/api/v1/diff", None, Some(&small));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("read or admin token required"), "{body}");
    // The read token does not change anything.
    let (code, _) = http(&api, "POST", "/api/v1/apply", Some(&read), Some(&small));
    assert_eq!(code, 401);
    let (code, _) = http(&api, "POST", "/api/v1/rollback", Some(&read), Some("{}"));
    assert_eq!(code, 401);

    // Nesting that once overflowed the stack of the API's worker is an error at its line.
    let (code, body) = http(
        &api,
        "POST",
        "/api/v1/diff",
        Some(&read),
        Some(&diff_body("deep.yaml", &deep_yaml())),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(DEEP_ERROR), "{body}");
    let flow = format!("a: {}\n", "[".repeat(10_000));
    let (code, body) = http(
        &api,
        "POST",
        "/api/v1/diff",
        Some(&read),
        Some(&diff_body("flow.yaml", &flow)),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("flow.yaml:1:"), "{body}");
    control.assert_running();

    // A file over the loader's limit is refused by name, however it arrives.
    let big = format!("# {}\n", "x".repeat(3 << 20));
    let (code, body) = http(
        &api,
        "POST",
        "/api/v1/diff",
        Some(&read),
        Some(&diff_body("big.yaml", &big)),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("big.yaml:1:1: file is larger than 2097152 bytes"),
        "{body}"
    );
    // A name that climbs out of the directory is refused.
    let (code, body) = http(
        &api,
        "POST",
        "/api/v1/diff",
        Some(&read),
        Some(&diff_body("../x.yaml", "")),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("plain relative paths"), "{body}");
    control.assert_running();

    // The CLI sends the token from the data directory, and says where it looked otherwise.
    let data = control.data.to_string_lossy().into_owned();
    let check = trellis(&["get", "revisions", "--api", &api, "--data-dir", &data]);
    assert!(check.status.success(), "{}", stderr(&check));
    let refused = trellis(&[
        "get",
        "revisions",
        "--api",
        &api,
        "--data-dir",
        "/nonexistent",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("/nonexistent/read-token"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn bad_files_in_the_watched_directory_are_rejected_and_never_wedge_it() {
    let mut control = start_control("127.0.74.251");
    let config = control.config.clone();

    // Deep nesting: rejected at its file and line, the control plane stays up.
    put(&config.join("deep.yaml"), deep_yaml().as_bytes());
    control.rejected_with(&[DEEP_ERROR]);
    control.assert_running();
    std::fs::remove_file(config.join("deep.yaml")).unwrap();

    // A FIFO and a link to /dev/zero: named, never opened or read.
    mkfifo(&config.join("pipe.yaml"));
    std::os::unix::fs::symlink("/dev/zero", config.join("zero.yaml")).unwrap();
    let errors = control.rejected_with(&["pipe.yaml:1:1: a FIFO", "zero.yaml:1:1: a character"]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    // Invalid UTF-8 is reported, not applied as U+FFFD.
    put(&config.join("latin1.yaml"), b"# caf\xe9\n");
    control.rejected_with(&["latin1.yaml:1:6: file is not valid UTF-8"]);
    control.assert_running();

    // SIGTERM still stops it promptly: nothing blocks on the FIFO.
    let pid = control.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = exits_within(&mut control.child, Duration::from_secs(20));
    assert!(status.is_some(), "the control plane ignored SIGTERM");

    // Started on that directory, it refuses with the files named, instead of hanging.
    let out = run_within(
        control_command("127.0.74.251", &config, &control.data),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let text = stderr(&out);
    for name in ["pipe.yaml", "zero.yaml", "latin1.yaml"] {
        assert!(text.contains(name), "{name}: {text}");
    }
    // Once they are gone, it starts again: nothing of them was kept.
    for name in ["pipe.yaml", "zero.yaml", "latin1.yaml"] {
        std::fs::remove_file(config.join(name)).unwrap();
    }
    let mut again = control_command("127.0.74.251", &config, &control.data)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&control.api).is_err() {
        assert!(again.try_wait().unwrap().is_none(), "it did not start");
        assert!(Instant::now() < deadline, "it did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn validate_reports_deep_nesting_and_special_files_instead_of_dying() {
    let tmp = tempfile::tempdir().unwrap();
    // 100 KB: what once killed `trellis validate`.
    let deep = tmp.path().join("deep.yaml");
    std::fs::write(&deep, format!("{}x\n", "- ".repeat(50_000))).unwrap();
    for target in [deep.clone(), tmp.path().to_path_buf()] {
        let out = trellis(&["validate", &target.to_string_lossy()]);
        // Exit status 1 is "invalid"; a crash is a signal, or 101 for a panic.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(DEEP_ERROR), "{text}");
    }
    // A FIFO given by name is refused rather than waited on.
    let pipe = tmp.path().join("pipe.yaml");
    mkfifo(&pipe);
    let mut cmd = Command::new(BIN);
    cmd.args(["validate", &pipe.to_string_lossy()]);
    let out = run_within(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pipe.yaml:1:1: a FIFO"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn trellis(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_within(cmd, Duration::from_secs(60))
}

/// Runs `cmd` to the end, killing it (and failing) if it takes longer than `timeout`.
fn run_within(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained on threads, so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let Some(status) = exits_within(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {timeout:?}");
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
