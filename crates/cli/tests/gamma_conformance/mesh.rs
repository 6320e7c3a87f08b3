//! The mesh under test: `trellis up --netns` (the real binary) on a config directory holding
//! the base manifests and the WorkloadEntries made from them, with each test's routes
//! copied in and removed again while it runs.
//!
//! A change to the directory is waited for through the control plane's status API (from the
//! host, over `up`'s cable into the bridge): a new revision served, a new snapshot version
//! published, every proxy having ACKed it. So the next test never meets the last one's
//! routes, and a route file the control plane rejects, or that changes nothing, fails its
//! test with the reason instead of passing against a stale configuration.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::client::Client;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");

/// How long a change to the config directory may take to reach every proxy: the control
/// plane polls the directory every 200 ms and pushes at once, so seconds are plenty.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);

/// A running `trellis up --netns`; dropping it stops it (SIGTERM, then SIGKILL).
pub struct Up {
    child: Option<Child>,
    pub pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
    config: PathBuf,
    api: SocketAddr,
    /// Proxies that must ACK a snapshot for it to count as in force.
    proxies: usize,
    _tmp: tempfile::TempDir,
}

impl Up {
    /// Writes `files` (name, content) into a new config directory and runs `up --netns` on
    /// it in `198.18.SUBNET.0/24`; returns once the mesh is up with `proxies` proxies.
    pub fn start(files: &[(&str, String)], subnet: [u8; 3], proxies: usize) -> Result<Up> {
        let tmp = tempfile::Builder::new()
            .prefix("trellis-gamma-")
            .tempdir()
            .context("temporary directory")?;
        let config = tmp.path().join("config");
        std::fs::create_dir_all(&config)?;
        for (name, text) in files {
            std::fs::write(config.join(name), text)?;
        }
        let [a, b, c] = subnet;
        let mut child = Command::new(BIN)
            .arg("up")
            .arg(&config)
            .arg("--netns")
            .args(["--netns-subnet", &format!("{a}.{b}.{c}.0/24")])
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trellis up")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("GAMMA_MESH_LOG").is_some() {
                        eprintln!("[up] {line}");
                    }
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let mut up = Up {
            pid: child.id(),
            child: Some(child),
            lines,
            config,
            api: SocketAddr::from((Ipv4Addr::new(a, b, c, 1), 15014)),
            proxies,
            _tmp: tmp,
        };
        up.wait_for_line("Trellis mesh is up", Duration::from_secs(120))?;
        Ok(up)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The mesh's output so far (for a failure's message).
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.lines().iter().any(|l| l.contains(needle)) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "trellis up exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            if Instant::now() > deadline {
                bail!("no {needle:?} within {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The client for `workload`, in the namespace `up` made for it.
    pub fn client(&self, workload: &str) -> Client {
        Client {
            workload: workload.to_owned(),
            netns: format!("trellis-up-{}-{workload}", self.pid),
        }
    }

    /// The control plane's read token, from its data directory.
    fn read_token(&self) -> Result<String> {
        let path = self._tmp.path().join("data").join("read-token");
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(token.trim().to_owned())
    }

    /// The control plane's `/api/v1/status`.
    fn status(&self) -> Result<Value> {
        let mut tcp = TcpStream::connect_timeout(&self.api, Duration::from_secs(5))
            .with_context(|| format!("connecting to the control plane's API at {}", self.api))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            tcp,
            "GET /api/v1/status HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\n\r\n",
            self.api,
            self.read_token()?
        )?;
        let mut text = String::new();
        tcp.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP answer: {text:?}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("status API answered {head:?}");
        }
        serde_json::from_str(body).with_context(|| format!("status API answered {body:?}"))
    }

    /// Copies `yaml` into the config directory and waits until it is in force.
    pub fn apply(&self, yaml: &Path) -> Result<()> {
        let name = yaml
            .file_name()
            .ok_or_else(|| anyhow!("{} names no file", yaml.display()))?;
        let text = std::fs::read(yaml).with_context(|| format!("reading {}", yaml.display()))?;
        self.change(|config| {
            // Written beside the directory and renamed in, so the control plane never reads
            // half a file.
            let staging = config.with_extension("staging");
            std::fs::write(&staging, &text)?;
            std::fs::rename(&staging, config.join(name))?;
            Ok(())
        })
        .with_context(|| format!("applying {}", yaml.display()))
    }

    /// Deletes `yaml`'s copy from the config directory and waits until that is in force.
    pub fn delete(&self, yaml: &Path) -> Result<()> {
        let name = yaml
            .file_name()
            .ok_or_else(|| anyhow!("{} names no file", yaml.display()))?;
        self.change(|config| Ok(std::fs::remove_file(config.join(name))?))
            .with_context(|| format!("deleting {}", yaml.display()))
    }

    /// Makes a change to the config directory and waits until the control plane serves a
    /// new revision with it, its snapshot differs from the one before, and every proxy has
    /// ACKed that snapshot.
    fn change(&self, edit: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let before = self.status()?;
        let revision = before["revision"].as_u64().unwrap_or(0);
        let version = before["snapshot_version"].clone();
        edit(&self.config)?;
        let start = Instant::now();
        loop {
            let now = self.status()?;
            if let Some(rejected) = now["rejected"].as_object() {
                if rejected.get("number").and_then(Value::as_u64) > Some(revision) {
                    bail!("the control plane rejected the change: {}", now["rejected"]);
                }
            }
            let proxies = now["proxies"].as_array().map_or(&[][..], Vec::as_slice);
            if let Some(nack) = proxies.iter().find(|p| !p["nack"].is_null()) {
                bail!("a proxy rejected the snapshot: {nack}");
            }
            let served = now["revision"].as_u64().unwrap_or(0) > revision;
            let published = now["snapshot_version"] != version;
            let acked = proxies.len() >= self.proxies
                && proxies
                    .iter()
                    .all(|p| p["acked_version"] == now["snapshot_version"]);
            if served && published && acked {
                return Ok(());
            }
            if start.elapsed() > CONVERGE_LIMIT {
                bail!(
                    "not in force within {CONVERGE_LIMIT:?} (new revision served: {served}, \
                     snapshot changed: {published}, every proxy ACKed it: {acked}); status: {now}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for `up` to exit (SIGKILL after 30 s).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not reaped yet, so the PID is still its.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
    }
}
