//! A mesh across the hosts of a [`Lan`]: the control plane in the LAN's own namespace,
//! reachable from every host at the gateway address, and a transparent proxy
//! (`trellis proxy --mode transparent --capture`) in each host that joins. The apps in the
//! hosts know nothing of the mesh: their connections are captured by nftables.
//!
//! This is the set-up the network-namespace end-to-end tests share; like [`crate::netns`] it
//! needs root, `ip`, `nft` and `curl` (readiness is asked from inside each host).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::{Host, Lan};

/// The namespace every test workload lives in.
const NAMESPACE: &str = "default";

/// A control plane on a [`Lan`], and the proxies started with [`LanMesh::proxy`].
///
/// Dropping it stops the control plane, then deletes the LAN's namespaces. Proxies and apps
/// are [`Proc`]s the test holds: declare them after the mesh, so they stop first.
pub struct LanMesh {
    bin: PathBuf,
    /// The control plane's gRPC address, `GATEWAY:15012`.
    control: String,
    data: PathBuf,
    // Fields drop in declaration order: the control plane stops before its directory and
    // its namespace go.
    _control_plane: Proc,
    tmp: tempfile::TempDir,
    lan: Lan,
}

impl LanMesh {
    /// Writes `config` (the mesh's YAML) and runs `bin control` on it in the LAN's namespace,
    /// returning once its CA exists.
    pub fn start(bin: &Path, lan: Lan, config: &str) -> Result<LanMesh> {
        let tmp = tempfile::Builder::new().prefix("trellis-lan-").tempdir()?;
        let config_dir = tmp.path().join("config");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::create_dir_all(&data)?;
        std::fs::write(config_dir.join("mesh.yaml"), config)?;
        let gateway = lan.gateway();
        let control = format!("{gateway}:15012");
        let mut cmd = lan.command(bin);
        cmd.arg("control")
            .arg("--config")
            .arg(&config_dir)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &control])
            .args(["--api-listen", &format!("{gateway}:15014")]);
        let control_plane = Proc::spawn(&mut cmd)?;
        let root = data.join("ca/root.pem");
        wait_until("control plane CA", Duration::from_secs(30), || {
            root.exists()
        })?;
        // The root is written before the gRPC listener is up.
        std::thread::sleep(Duration::from_millis(300));
        Ok(LanMesh {
            bin: bin.to_path_buf(),
            control,
            data,
            _control_plane: control_plane,
            tmp,
            lan,
        })
    }

    /// The LAN the mesh runs on.
    pub fn lan(&self) -> &Lan {
        &self.lan
    }

    /// The control plane's data directory (CA root, join and API tokens).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A scratch directory that lives as long as the mesh.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// A join token for service account `sa` of the test namespace.
    pub fn token(&self, sa: &str) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["token", "create", "--namespace", NAMESPACE])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--service-account", sa])
            .stdin(Stdio::null())
            .output()
            .context("running trellis token create")?;
        if !out.status.success() {
            bail!(
                "trellis token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts a transparent proxy with capture in `host` for workload `SA-1` (service account
    /// `sa`), declaring `ports` (`name=port`), with `extra` arguments. Does not wait: see
    /// [`wait_ready`].
    pub fn proxy(&self, host: &Host, sa: &str, ports: &[&str], extra: &[&str]) -> Result<Proc> {
        let mut cmd = host.command(&self.bin);
        cmd.args(["proxy", "--mode", "transparent", "--capture"])
            .args(["--control", &self.control])
            .arg("--ca-bundle")
            .arg(self.data.join("ca/root.pem"))
            .args(["--namespace", NAMESPACE, "--service-account", sa])
            .args(["--workload-name", &format!("{sa}-1")])
            .args(["--address", &host.ip.to_string()])
            .env("TRELLIS_JOIN_TOKEN", self.token(sa)?);
        for p in ports {
            cmd.args(["--port", p]);
        }
        cmd.args(extra);
        Proc::spawn(&mut cmd)
    }

    /// Starts `trellis demo-app` in `host`, listening on the host's address at `port` and
    /// answering as `service`. It needs no mesh to listen, so it may start before the proxies.
    pub fn demo_app(&self, host: &Host, service: &str, port: u16) -> Result<Proc> {
        let mut cmd = host.command(&self.bin);
        cmd.args(["demo-app", "--listen", &format!("{}:{port}", host.ip)])
            .args(["--service", service]);
        Proc::spawn(&mut cmd)
    }
}

/// The usual two-host test mesh: a Service `service` at virtual IP `vip` with `ports`
/// (name, number), selecting one workload `SERVICE-1` (service account `service`) at
/// `server`; and a client workload `client-1` (service account `client`) at `client`.
pub fn service_config(
    service: &str,
    vip: &str,
    ports: &[(&str, u16)],
    server: Ipv4Addr,
    client: Ipv4Addr,
) -> String {
    let service_ports: String = ports
        .iter()
        .map(|(name, port)| format!("  - name: {name}\n    port: {port}\n"))
        .collect();
    let workload_ports: String = ports
        .iter()
        .map(|(name, port)| format!("    {name}: {port}\n"))
        .collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {service}
spec:
  clusterIP: {vip}
  selector:
    app: {service}
  ports:
{service_ports}---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {service}-1
spec:
  address: {server}
  serviceAccount: {service}
  labels:
    app: {service}
  ports:
{workload_ports}---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: client-1
spec:
  address: {client}
  serviceAccount: client
  labels:
    app: client
"#
    )
}

/// Waits for the readiness endpoint of the proxy in `host`, asked from inside the host.
pub fn wait_ready(host: &Host) -> Result<()> {
    wait_until("proxy", Duration::from_secs(30), || {
        host.command("curl")
            .args(["-sf", "-o", "/dev/null"])
            .arg(format!("http://{}:15020/healthz/ready", host.ip))
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// Waits for the proxies in `hosts` to be ready and to have each other in their snapshots.
pub fn wait_meshed(hosts: &[&Host]) -> Result<()> {
    for host in hosts {
        wait_ready(host)?;
    }
    // Every snapshot includes every side once all registered.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// An HTTP answer as curl saw it: the status (0 when there was none) and the body, followed
/// by what curl said on standard error.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `curl` in `host` with `args` (URL included): see [`curl_command`].
pub fn curl(host: &Host, args: &[&str]) -> Result<Answer> {
    curl_command(host.command("curl"), args)
}

/// Runs `curl` (a command for the `curl` program in some namespace) with `args` (URL
/// included), for at most 10 s, sending the path exactly as written.
pub fn curl_command(mut curl: Command, args: &[&str]) -> Result<Answer> {
    let out = curl
        .args([
            "-sS",
            "--max-time",
            "10",
            "--path-as-is",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok(Answer {
        status: code.trim().parse().unwrap_or(0),
        body: format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    })
}

/// Polls `ok` every 50 ms until it holds; fails after `timeout`, naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !ok() {
        if started.elapsed() > timeout {
            bail!("{what} not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Fails, naming the first one missing, unless every program in `tools` is on `PATH`.
pub fn require_tools(tools: &[&str]) -> Result<()> {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status();
        if !matches!(found, Ok(s) if s.success()) {
            bail!("{tool} is required for this test");
        }
    }
    Ok(())
}

/// Fails the calling test, loudly, unless it runs as root and `tools` are installed: what a
/// test that makes network namespaces needs.
pub fn require_root_and(tools: &[&str]) {
    if let Err(e) = require_tools(tools) {
        panic!("{e}");
    }
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test needs root (network namespaces)"
    );
}

/// A child process that is killed on drop, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Proc(Child);

impl Proc {
    /// Starts `cmd` with standard input closed (output is inherited).
    pub fn spawn(cmd: &mut Command) -> Result<Proc> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Proc(child))
    }

    /// The process, to signal or wait for it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
