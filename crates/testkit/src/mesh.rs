//! A mesh started with `trellis up`, on its own `127.0.N.0/24`.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running mesh. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Mesh {
    child: Option<Child>,
    /// The copy of the example config the mesh runs on; tests edit files here.
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    /// `TRELLIS_RUNTIME_DIR` of the mesh: where `up` publishes its record for the admin
    /// commands (one per mesh, so that parallel tests never find each other's).
    pub runtime_dir: PathBuf,
    /// Where the front service is published.
    pub front: SocketAddr,
    pub control: SocketAddr,
    /// The control plane's HTTP API.
    pub api: SocketAddr,
    pub subnet: u8,
    output: Arc<Mutex<Vec<String>>>,
    // Kept for the mesh's lifetime; removed on drop.
    tmp: tempfile::TempDir,
}

impl Mesh {
    /// Copies `example` (rewriting its `127.0.1.x` addresses to `127.0.SUBNET.x`) and runs
    /// `trellis up` on it, returning once it reports the mesh is up.
    pub fn up(bin: &Path, example: &Path, subnet: u8) -> anyhow::Result<Mesh> {
        Self::up_with(bin, example, subnet, &[])
    }

    /// As [`Mesh::up`], with extra arguments for `trellis up` (e.g. `--svid-ttl 1m`).
    pub fn up_with(bin: &Path, example: &Path, subnet: u8, extra: &[&str]) -> anyhow::Result<Mesh> {
        let tmp = tempfile::Builder::new().prefix("trellis-test-").tempdir()?;
        let config_dir = tmp.path().join("config");
        let data_dir = tmp.path().join("data");
        let runtime_dir = tmp.path().join("run");
        std::fs::create_dir_all(&config_dir)?;
        for entry in std::fs::read_dir(example)
            .with_context(|| format!("reading example {}", example.display()))?
        {
            let entry = entry?;
            let text = std::fs::read_to_string(entry.path())?;
            let text = text.replace("127.0.1.", &format!("127.0.{subnet}."));
            std::fs::write(config_dir.join(entry.file_name()), text)?;
        }
        let front = SocketAddr::from((Ipv4Addr::new(127, 0, subnet, 250), 8080));
        let control = SocketAddr::from((Ipv4Addr::new(127, 0, subnet, 251), 15012));
        let api = SocketAddr::from((Ipv4Addr::new(127, 0, subnet, 251), 15014));
        let mut child = Command::new(bin)
            .arg("up")
            .arg(&config_dir)
            .args(["--listen", &front.to_string()])
            .args(["--control", &control.to_string()])
            .args(["--api", &api.to_string()])
            .args(extra)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("TRELLIS_RUNTIME_DIR", &runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trellis up")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[mesh {subnet}] {line}");
                    output.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        let mut mesh = Mesh {
            child: Some(child),
            config_dir,
            data_dir,
            runtime_dir,
            front,
            control,
            api,
            subnet,
            output,
            tmp,
        };
        mesh.wait_for_log("Trellis mesh is up", Duration::from_secs(120))?;
        Ok(mesh)
    }

    /// The control plane's read token (its API answers only `/healthz` and `/metrics`
    /// without one).
    pub fn read_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("read-token"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    /// The `Authorization` header that carries [`Mesh::read_token`].
    pub fn api_auth(&self) -> (&'static str, String) {
        ("authorization", format!("Bearer {}", self.read_token()))
    }

    /// The address of the workload at `127.0.SUBNET.host`.
    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(127, 0, self.subnet, host), port))
    }

    /// Every line the mesh printed so far (stdout and stderr, all processes).
    pub fn logs(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a printed line contains `needle`; fails if the mesh exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return Ok(l);
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("trellis up exited ({status}) before printing {needle:?}");
                }
            }
            if Instant::now() > deadline {
                bail!("no log line containing {needle:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The record `up` publishes (`up.json` in [`Mesh::runtime_dir`]): API, data directory,
    /// and every supervised process with its PID and restart count.
    pub fn record(&self) -> anyhow::Result<serde_json::Value> {
        let path = self.runtime_dir.join("up.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The PID and restart count of the supervised process `label` (`control`,
    /// `proxy NAME`, `app NAME`, `front proxy`), from the record.
    pub fn process(&self, label: &str) -> anyhow::Result<(u32, u64)> {
        let record = self.record()?;
        let p = record["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["label"] == label)
            .with_context(|| format!("no process {label:?} in the record: {record}"))?;
        let pid = p["pid"].as_u64().context("pid")?;
        Ok((u32::try_from(pid)?, p["restarts"].as_u64().unwrap_or(0)))
    }

    /// A path inside the mesh's temporary directory; every process of the mesh names it on
    /// its command line, which is how leftovers are found.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Stops the mesh with SIGTERM and waits for `trellis up` to exit.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("mesh already stopped");
        };
        // SAFETY: kill(2) on our own unreaped child's PID.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("trellis up did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// PIDs of live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        // A zombie has an empty command line; it is not running anything.
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}
