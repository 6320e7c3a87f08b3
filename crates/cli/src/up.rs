//! `trellis up [DIR]`: a whole mesh on one machine, for trying Trellis and for tests.
//!
//! Reads DIR like the control plane does, then starts, as separate processes: the control
//! plane on DIR, and for every `WorkloadEntry` a demo app with a proxy beside it, plus a front
//! proxy publishing the front service (if one is annotated) on `--listen`. Each proxy gets a
//! join token for exactly its own identity. Like the deployment it stands for, the mesh
//! outlives any one of its processes: one that dies is started again with back-off while the
//! rest keep serving ([`supervise`]). Ctrl-C or SIGTERM stops everything; children also die
//! with `up` if it is killed, so no process is left behind. A record of the running mesh
//! ([`crate::local_mesh`]) lets `trellis apply`, `ca rotate`, `tap`, … find it.
//!
//! Two ways to lay the workloads out:
//!
//! * by default, on loopback with no root needed: each app on its entry's own address and
//!   port, with an explicit-mode proxy on the same address (so every proxy uses the standard
//!   ports) that the app uses as its HTTP proxy;
//! * with `--netns` ([`netns`]), as root: each workload in a network namespace of its own on a
//!   bridged /24, its proxy capturing its traffic transparently, the app started only once
//!   its proxy is ready and finding services by name through the namespace's `/etc/hosts`.
//!
//! What a workload's demo app does comes from its WorkloadEntry: label `app` names the
//! service it reports, label `version` its version, and the annotations
//! `demo.trellis.dev/calls` and `demo.trellis.dev/startup-calls` list (comma-separated) the
//! URLs it calls for every request and once at start; `demo.trellis.dev/echo: "true"` makes
//! it an echo server (`demo-app --echo`). A port named `grpc` in the entry's `ports`, when it
//! is not the app's HTTP port, gets the demo app's gRPC echo service. The Service annotated
//! `demo.trellis.dev/front: "true"` is the one published; with none, the mesh runs without a
//! front door.

mod netns;
mod network;
mod supervise;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tokio::process::Command;
use trellis_api::load::{load_dir, LoadError};
use trellis_api::resources::Resource;
use trellis_identity::TokenStore;

use crate::local_mesh::MeshRecord;
use supervise::{Children, MakeCommand};

/// Annotation on a WorkloadEntry: URLs its demo app calls.
pub const CALLS_ANNOTATION: &str = "demo.trellis.dev/calls";
/// Annotation on a WorkloadEntry: URLs its demo app calls once, as it starts.
pub const STARTUP_CALLS_ANNOTATION: &str = "demo.trellis.dev/startup-calls";
/// Annotation on a WorkloadEntry: how long its demo app waits for each call (e.g. `3s`).
pub const CALL_TIMEOUT_ANNOTATION: &str = "demo.trellis.dev/call-timeout";
/// Annotation on a WorkloadEntry: how often its demo app tries a call again after a timeout
/// or a failed connection.
pub const CALL_RETRIES_ANNOTATION: &str = "demo.trellis.dev/call-retries";
/// Annotation on a WorkloadEntry: `"true"` makes its demo app finish requests whose client
/// went away (`--finish-abandoned`).
pub const FINISH_ABANDONED_ANNOTATION: &str = "demo.trellis.dev/finish-abandoned";
/// Annotation on a WorkloadEntry: its demo app waits this long before every answer
/// (`--delay`, e.g. `20ms`), a slower instance.
pub const DELAY_ANNOTATION: &str = "demo.trellis.dev/delay";
/// Annotation on a WorkloadEntry: its demo app answers its first N requests with 500
/// (`--fail-first`), an instance that starts broken and recovers.
pub const FAIL_FIRST_ANNOTATION: &str = "demo.trellis.dev/fail-first";
/// Annotation on a WorkloadEntry: `"true"` makes its demo app an echo server (`--echo`).
pub const ECHO_ANNOTATION: &str = "demo.trellis.dev/echo";
/// The WorkloadEntry port on which the demo app serves its gRPC echo service.
pub const GRPC_PORT_NAME: &str = "grpc";
/// Annotation on a Service: publish it on `--listen`.
pub const FRONT_ANNOTATION: &str = "demo.trellis.dev/front";

/// The mesh `up` runs when given no directory.
const DEFAULT_DIR: &str = "examples/quickstart";
/// The quickstart's files, built in so that `trellis up` runs anywhere.
const EMBEDDED_QUICKSTART: [(&str, &str); 3] = [
    (
        "services.yaml",
        include_str!("../../../examples/quickstart/services.yaml"),
    ),
    (
        "workloads.yaml",
        include_str!("../../../examples/quickstart/workloads.yaml"),
    ),
    (
        "reviews-routing.yaml",
        include_str!("../../../examples/quickstart/reviews-routing.yaml"),
    ),
];

fn write_embedded_quickstart(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in EMBEDDED_QUICKSTART {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Args)]
pub struct UpArgs {
    /// Directory of the mesh's YAML. When the default is not there (outside a checkout),
    /// the quickstart built into the binary is written to the data directory and run.
    #[arg(default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Where the front service is published.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The control plane's gRPC address (with --netns: the bridge's address, port 15012).
    #[arg(long, default_value = "127.0.0.1:15012", conflicts_with = "netns")]
    pub control: SocketAddr,
    /// The control plane's HTTP API (`trellis certs`, `check`, `ca rotate` talk to it; with
    /// --netns: the bridge's address, port 15014).
    #[arg(long, default_value = "127.0.0.1:15014", conflicts_with = "netns")]
    pub api: SocketAddr,
    /// Run every workload in a network namespace of its own, its proxy capturing its
    /// traffic transparently (nftables), on a bridged subnet the host is plugged into. Needs
    /// root, `ip` and `nft`.
    #[arg(long)]
    pub netns: bool,
    /// With --netns: the workloads' subnet, a /24 (.1 bridge and control plane, .254 the
    /// host, .2 to .253 the workloads).
    #[arg(long, default_value = "198.18.100.0/24", requires = "netns")]
    pub netns_subnet: network::Subnet,
    /// Lifetime of workload certificates (e.g. 24h, or 1m to watch renewals).
    #[arg(long, default_value = "24h")]
    pub svid_ttl: String,
    /// Data directory of the control plane (CA root, tokens); a temporary one when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Your own CA instead of a self-signed root: PEM file of the root(s) to trust (with
    /// --ca-intermediate and --ca-intermediate-key; leaves are issued by the intermediate).
    #[arg(long, requires_all = ["ca_intermediate", "ca_intermediate_key"])]
    pub ca_roots: Option<PathBuf>,
    /// Your own CA: the intermediate certificate, PEM.
    #[arg(long, requires = "ca_roots")]
    pub ca_intermediate: Option<PathBuf>,
    /// Your own CA: the intermediate's private key, PEM.
    #[arg(long, requires = "ca_roots")]
    pub ca_intermediate_key: Option<PathBuf>,
    /// How long to wait for everything to become ready, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout_secs: u64,
    /// Every proxy writes a JSON access log line per request and TCP connection to its
    /// standard output (shown with the mesh's output).
    #[arg(long)]
    pub access_log: bool,
    /// Every proxy exports its spans with OTLP over gRPC to this collector (Jaeger, an
    /// OpenTelemetry collector), e.g. `http://127.0.0.1:4317`.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces the proxies sample. All of them by default: this is a mesh to
    /// look at, not to run at scale (a lone `trellis proxy` samples 1 %).
    #[arg(long, default_value = "1")]
    pub trace_sampling: String,
}

/// The telemetry flags every proxy of the mesh gets.
fn telemetry_flags(a: &UpArgs) -> Vec<String> {
    let mut flags = Vec::new();
    if a.access_log {
        flags.extend(["--access-log".to_owned(), "stdout".to_owned()]);
    }
    if let Some(endpoint) = &a.otlp_endpoint {
        flags.extend(["--otlp-endpoint".to_owned(), endpoint.clone()]);
    }
    flags.extend(["--trace-sampling".to_owned(), a.trace_sampling.clone()]);
    flags
}

/// One workload to start, read from a WorkloadEntry.
#[derive(Clone)]
struct Workload {
    name: String,
    namespace: String,
    service_account: String,
    address: IpAddr,
    labels: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
    calls: Vec<String>,
    startup_calls: Vec<String>,
    /// `--call-timeout` and `--call-retries` for its demo app, as annotated.
    call_timeout: Option<String>,
    call_retries: Option<String>,
    finish_abandoned: bool,
    /// `--delay` and `--fail-first` for its demo app, as annotated.
    delay: Option<String>,
    fail_first: Option<String>,
    /// `demo-app --echo`.
    echo: bool,
}

impl Workload {
    fn identity(&self) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    fn app_port(&self) -> anyhow::Result<u16> {
        self.ports
            .get("http")
            .or_else(|| self.ports.values().next())
            .copied()
            .ok_or_else(|| anyhow!("WorkloadEntry {} has no ports", self.name))
    }

    /// The port of the gRPC echo service, if the entry names one apart from the app's.
    fn grpc_port(&self) -> Option<u16> {
        let grpc = *self.ports.get(GRPC_PORT_NAME)?;
        (self.app_port().ok() != Some(grpc)).then_some(grpc)
    }
}

/// The service published on `--listen`.
struct Front {
    /// `name.namespace`.
    service: String,
    namespace: String,
    port: u16,
}

/// What `up` starts, read from DIR.
struct Plan {
    workloads: Vec<Workload>,
    /// None when no Service is annotated to be published.
    front: Option<Front>,
}

/// What every start-up step needs.
struct Ctx<'a> {
    args: &'a UpArgs,
    exe: &'a Path,
    data_dir: &'a Path,
    plan: &'a Plan,
    ready_deadline: Instant,
}

/// Comma-separated URLs in annotation `key` of a WorkloadEntry.
fn url_list(annotations: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    annotations
        .get(key)
        .map(|c| {
            c.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn read_plan(dir: &Path) -> anyhow::Result<Plan> {
    let config = match load_dir(dir) {
        Ok(c) => c,
        Err(LoadError::Invalid(diags)) => {
            for d in &diags {
                eprintln!("{d}");
            }
            bail!("{} is not a valid mesh config", dir.display());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut workloads = Vec::new();
    let mut front = None;
    for res in &config.resources {
        match &res.value {
            Resource::WorkloadEntry(we) => {
                let address = we.spec.address.parse().with_context(|| {
                    format!(
                        "WorkloadEntry {}: `trellis up` needs an IP address, not {:?}",
                        we.meta.name, we.spec.address
                    )
                })?;
                let ports = we
                    .spec
                    .ports
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), u16::try_from(*v)?)))
                    .collect::<anyhow::Result<_>>()?;
                workloads.push(Workload {
                    name: we.meta.name.clone(),
                    namespace: we.meta.namespace().to_string(),
                    service_account: we
                        .spec
                        .service_account
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    address,
                    labels: we.spec.labels.clone(),
                    ports,
                    calls: url_list(&we.meta.annotations, CALLS_ANNOTATION),
                    startup_calls: url_list(&we.meta.annotations, STARTUP_CALLS_ANNOTATION),
                    call_timeout: we.meta.annotations.get(CALL_TIMEOUT_ANNOTATION).cloned(),
                    call_retries: we.meta.annotations.get(CALL_RETRIES_ANNOTATION).cloned(),
                    finish_abandoned: we
                        .meta
                        .annotations
                        .get(FINISH_ABANDONED_ANNOTATION)
                        .is_some_and(|v| v == "true"),
                    delay: we.meta.annotations.get(DELAY_ANNOTATION).cloned(),
                    fail_first: we.meta.annotations.get(FAIL_FIRST_ANNOTATION).cloned(),
                    echo: we
                        .meta
                        .annotations
                        .get(ECHO_ANNOTATION)
                        .is_some_and(|v| v == "true"),
                });
            }
            Resource::Service(svc)
                if svc
                    .meta
                    .annotations
                    .get(FRONT_ANNOTATION)
                    .map(String::as_str)
                    == Some("true") =>
            {
                let port = svc
                    .spec
                    .ports
                    .first()
                    .map(|p| p.port)
                    .ok_or_else(|| anyhow!("front Service {} has no port", svc.meta.name))?;
                front = Some(Front {
                    service: format!("{}.{}", svc.meta.name, svc.meta.namespace()),
                    namespace: svc.meta.namespace().to_string(),
                    port,
                });
            }
            _ => {}
        }
    }
    Ok(Plan { workloads, front })
}

pub async fn run(mut a: UpArgs) -> anyhow::Result<()> {
    if a.netns {
        network::check_prerequisites()?;
    }
    let tmp;
    let data_dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("trellis-up-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&data_dir)?;
    if a.dir == Path::new(DEFAULT_DIR) && !a.dir.exists() {
        // Not in a checkout: the quickstart built into the binary, written where it can be
        // edited while the mesh runs.
        a.dir = data_dir.join("quickstart");
        write_embedded_quickstart(&a.dir)?;
        println!(
            "No {DEFAULT_DIR} here: running the built-in quickstart from {}",
            a.dir.display()
        );
    }
    let plan = read_plan(&a.dir)?;
    let exe = std::env::current_exe().context("finding the trellis executable")?;
    let (control, api) = if a.netns {
        let gw = a.netns_subnet.gateway();
        (
            SocketAddr::new(gw.into(), 15012),
            SocketAddr::new(gw.into(), 15014),
        )
    } else {
        (a.control, a.api)
    };
    let record = MeshRecord {
        pid: std::process::id(),
        api,
        control,
        data_dir: std::path::absolute(&data_dir).unwrap_or_else(|_| data_dir.clone()),
        config_dir: std::path::absolute(&a.dir).unwrap_or_else(|_| a.dir.clone()),
        processes: Vec::new(),
    };
    let ctx = Ctx {
        args: &a,
        exe: &exe,
        data_dir: &data_dir,
        plan: &plan,
        ready_deadline: Instant::now() + Duration::from_secs(a.ready_timeout_secs),
    };
    // Filled as soon as it exists, so that whatever was made is removed on every way out.
    // Declared before the children so that, should this function unwind, they are killed
    // before their namespaces are deleted.
    let mut net = None;
    let mut children = Children::default();
    let result = tokio::select! {
        // Polled first, so the signal handlers are in place before anything starts: a
        // Ctrl-C while the mesh starts stops it like one while it runs.
        biased;
        _ = crate::signal::shutdown() => {
            eprintln!("trellis up: stopping");
            Ok(())
        }
        r = async {
            if a.netns {
                netns::run(&ctx, &mut children, &mut net, record).await
            } else {
                start_loopback(&ctx, &mut children).await?;
                announce(&ctx, &mut children, record)?;
                children.supervise().await
            }
        } => r,
    };
    children.stop().await;
    // Namespaces only after the processes in them are gone: a live process would keep its
    // namespace alive, nameless.
    if let Some(mut net) = net {
        net.remove();
    }
    eprintln!("trellis up: stopped");
    result
}

/// Starts the control plane (`cmd`: the program to run it with) on `control` and `api`, and
/// waits until it has its CA root and accepts connections. Returns the roots proxies trust.
async fn start_control(
    ctx: &Ctx<'_>,
    children: &mut Children,
    mut program: impl FnMut() -> Command + Send + 'static,
    control: SocketAddr,
    api: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let a = ctx.args;
    let control_log = std::env::var("TRELLIS_LOG").unwrap_or_else(|_| "info".into());
    let mut args: Vec<std::ffi::OsString> = vec![
        "control".into(),
        "--config".into(),
        a.dir.clone().into(),
        "--data-dir".into(),
        ctx.data_dir.into(),
        "--listen".into(),
        control.to_string().into(),
        "--api-listen".into(),
        api.to_string().into(),
        "--svid-ttl".into(),
        a.svid_ttl.clone().into(),
    ];
    // Proxies trust what the CA's leaves chain to: the self-signed root the control plane
    // writes on first start, or the user's roots.
    let root = match (&a.ca_roots, &a.ca_intermediate, &a.ca_intermediate_key) {
        (Some(roots), Some(int), Some(key)) => {
            args.extend([
                "--ca-roots".into(),
                roots.into(),
                "--ca-intermediate".into(),
                int.into(),
                "--ca-intermediate-key".into(),
                key.into(),
            ]);
            roots.clone()
        }
        _ => ctx.data_dir.join("ca").join("root.pem"),
    };
    children.spawn(
        "control".into(),
        Box::new(move || {
            let mut cmd = program();
            cmd.args(&args).env("TRELLIS_LOG", &control_log);
            Ok(cmd)
        }),
    )?;
    wait_until(ctx.ready_deadline, children, "the control plane", || {
        let root = root.clone();
        async move { root.exists() && tokio::net::TcpStream::connect(control).await.is_ok() }
    })
    .await?;
    Ok(root)
}

/// A proxy for `w` at `address`, with a join token for exactly its identity.
fn proxy_command(
    mut cmd: Command,
    telemetry: &[String],
    tokens: &TokenStore,
    control: SocketAddr,
    root: &Path,
    w: &Workload,
    address: IpAddr,
) -> anyhow::Result<Command> {
    let (_, token) = tokens
        .create(
            &w.namespace,
            std::slice::from_ref(&w.service_account),
            Some(Duration::from_secs(3600)),
        )
        .context("creating a join token")?;
    cmd.arg("proxy")
        .args(["--control", &control.to_string()])
        .arg("--ca-bundle")
        .arg(root)
        .args(["--namespace", &w.namespace])
        .args(["--service-account", &w.service_account])
        .args(["--workload-name", &w.name])
        .args(["--address", &address.to_string()])
        .args(telemetry)
        .env("TRELLIS_JOIN_TOKEN", token);
    for (k, v) in &w.labels {
        cmd.args(["--label", &format!("{k}={v}")]);
    }
    for (k, v) in &w.ports {
        cmd.args(["--port", &format!("{k}={v}")]);
    }
    Ok(cmd)
}

/// `w`'s demo app on `address`, calling through `proxy` when given (explicit mode).
fn app_command(
    mut cmd: Command,
    w: &Workload,
    address: IpAddr,
    proxy: Option<SocketAddr>,
) -> anyhow::Result<Command> {
    let port = w.app_port()?;
    cmd.arg("demo-app")
        .args(["--listen", &SocketAddr::new(address, port).to_string()])
        .args(["--service", w.labels.get("app").unwrap_or(&w.name)])
        .args(["--app-version", w.labels.get("version").map_or("v1", |v| v)])
        .args(["--instance", &w.name])
        .args(["--namespace", &w.namespace])
        // The demo app would take it as its proxy.
        .env_remove("http_proxy");
    if let Some(p) = proxy {
        cmd.args(["--proxy", &p.to_string()]);
    }
    for c in &w.calls {
        cmd.args(["--call", c]);
    }
    for c in &w.startup_calls {
        cmd.args(["--startup-call", c]);
    }
    if let Some(t) = &w.call_timeout {
        cmd.args(["--call-timeout", t]);
    }
    if let Some(n) = &w.call_retries {
        cmd.args(["--call-retries", n]);
    }
    if w.finish_abandoned {
        cmd.arg("--finish-abandoned");
    }
    if let Some(d) = &w.delay {
        cmd.args(["--delay", d]);
    }
    if let Some(n) = &w.fail_first {
        cmd.args(["--fail-first", n]);
    }
    if w.echo {
        cmd.arg("--echo");
    }
    if let Some(grpc) = w.grpc_port() {
        cmd.args(["--grpc-listen", &SocketAddr::new(address, grpc).to_string()]);
    }
    Ok(cmd)
}

/// The front door: a proxy of its own identity, in the namespace `up` runs in, whose
/// outbound listener is the published address and sends everything to the front service. It
/// serves no app, so its other listeners take ephemeral ports. Only the published address
/// follows `--listen`: the health and local admin ports stay on loopback
/// ([`front_admin_ip`]). Returns its health address, or nothing when no service is to be
/// published.
fn spawn_front(
    ctx: &Ctx<'_>,
    children: &mut Children,
    tokens: &Arc<TokenStore>,
    control: SocketAddr,
    root: &Path,
) -> anyhow::Result<Option<SocketAddr>> {
    let a = ctx.args;
    let Some(front) = &ctx.plan.front else {
        return Ok(None);
    };
    let front_sa = "trellis-front";
    let admin_ip = front_admin_ip(a.listen.ip());
    let front_admin = SocketAddr::new(admin_ip, free_port(admin_ip)?);
    let (exe, tokens, root) = (ctx.exe.to_path_buf(), tokens.clone(), root.to_path_buf());
    let namespace = front.namespace.clone();
    let mut args: Vec<String> = [
        "proxy",
        "--control",
        &control.to_string(),
        "--namespace",
        &front.namespace,
        "--service-account",
        front_sa,
        "--workload-name",
        "front",
        "--address",
        &a.listen.ip().to_string(),
        "--outbound",
        &a.listen.to_string(),
        "--inbound",
        &SocketAddr::new(a.listen.ip(), 0).to_string(),
        "--admin",
        &front_admin.to_string(),
        "--admin-local",
        &SocketAddr::new(admin_ip, 15000).to_string(),
        "--front",
        &format!("{}:{}", front.service, front.port),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(telemetry_flags(a));
    children.spawn(
        "front proxy".into(),
        Box::new(move || {
            let (_, token) = tokens
                .create(
                    &namespace,
                    &[front_sa.to_string()],
                    Some(Duration::from_secs(3600)),
                )
                .context("creating a join token")?;
            let mut cmd = Command::new(&exe);
            cmd.args(&args)
                .arg("--ca-bundle")
                .arg(&root)
                .env("TRELLIS_JOIN_TOKEN", token);
            Ok(cmd)
        }),
    )?;
    Ok(Some(front_admin))
}

/// Where the front proxy's admin ports listen: `--listen` publishes the front service, not
/// the proxy's configuration, log level and telemetry switch, so they stay on loopback (the
/// published address itself when it is a loopback one).
fn front_admin_ip(listen: IpAddr) -> IpAddr {
    if listen.is_loopback() {
        listen
    } else if listen.is_ipv6() {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    }
}

/// The default layout: everything on loopback, explicit-mode proxies, no root.
async fn start_loopback(ctx: &Ctx<'_>, children: &mut Children) -> anyhow::Result<()> {
    let a = ctx.args;
    let exe = ctx.exe.to_path_buf();
    let root = start_control(ctx, children, move || Command::new(&exe), a.control, a.api).await?;
    let tokens = Arc::new(TokenStore::open(ctx.data_dir).context("opening the token store")?);
    let telemetry = telemetry_flags(a);
    let mut admins = Vec::new();
    for w in &ctx.plan.workloads {
        let (exe, tokens, root, telemetry, workload) = (
            ctx.exe.to_path_buf(),
            tokens.clone(),
            root.clone(),
            telemetry.clone(),
            w.clone(),
        );
        let control = a.control;
        let proxy: MakeCommand = Box::new(move || {
            proxy_command(
                Command::new(&exe),
                &telemetry,
                &tokens,
                control,
                &root,
                &workload,
                workload.address,
            )
        });
        children.spawn(format!("proxy {}", w.name), proxy)?;
        admins.push((w.name.clone(), SocketAddr::new(w.address, 15020)));
        let proxy = SocketAddr::new(w.address, 15001);
        let (exe, workload) = (ctx.exe.to_path_buf(), w.clone());
        let app: MakeCommand = Box::new(move || {
            app_command(Command::new(&exe), &workload, workload.address, Some(proxy))
        });
        children.spawn(format!("app {}", w.name), app)?;
    }
    if let Some(front_admin) = spawn_front(ctx, children, &tokens, a.control, &root)? {
        admins.push(("front".into(), front_admin));
    }
    for (name, admin) in &admins {
        wait_until(
            ctx.ready_deadline,
            children,
            &format!("proxy {name}"),
            || {
                let admin = *admin;
                async move { ready(admin).await }
            },
        )
        .await?;
    }

    println!(
        "Trellis mesh is up: {} workloads, control plane on {}",
        ctx.plan.workloads.len(),
        a.control
    );
    println!();
    println!("  {:<16} {:<12} IDENTITY", "WORKLOAD", "ADDRESS");
    for w in &ctx.plan.workloads {
        println!("  {:<16} {:<12} {}", w.name, w.address, w.identity());
    }
    println!();
    print_tries(ctx, a.api, None);
    Ok(())
}

/// The closing lines of the start-up output: what to try (`more` after the curls).
fn print_tries(ctx: &Ctx<'_>, api: SocketAddr, more: Option<&str>) {
    let a = ctx.args;
    match &ctx.plan.front {
        Some(front) => {
            println!(
                "{} is published on http://{}/ . Try:",
                front.service, a.listen
            );
            println!("  curl -s http://{}/", a.listen);
            println!("  curl -s 'http://{}/?status=503'", a.listen);
        }
        None => println!(
            "No service is published (annotate one {FRONT_ANNOTATION}: \"true\" for a front \
             door on {}). Try:",
            a.listen
        ),
    }
    if let Some(more) = more {
        println!("  {more}");
    }
    println!(
        "  edit the YAML in {} (routes, weights, policies): the mesh follows within seconds",
        a.dir.display()
    );
    println!("  trellis certs --api {api}        # every workload certificate");
    println!("  trellis check --api {api}        # mesh health");
}

/// Once the mesh is up: publishes its record for the admin commands and says where its
/// data and API tokens are.
fn announce(ctx: &Ctx<'_>, children: &mut Children, record: MeshRecord) -> anyhow::Result<()> {
    let token = record.data_dir.join("admin-token");
    let read_token = record.data_dir.join("read-token");
    let data_dir = record.data_dir.clone();
    let published = children.publish_record(record)?;
    println!();
    println!("Data directory (CA, join tokens): {}", data_dir.display());
    println!("Admin token:                      {}", token.display());
    println!("Read token (status, stat, diff):  {}", read_token.display());
    if published {
        println!(
            "`trellis apply`, `rollback`, `ca rotate`, `tap`, `stat`, … find this mesh by \
             itself (record in {}).",
            crate::local_mesh::runtime_dir().display()
        );
    } else {
        println!(
            "Another `trellis up` is running: give the admin commands `--api` and `--data-dir` \
             to reach this one."
        );
    }
    println!(
        "A process that dies is restarted; Ctrl-C stops the mesh{}.",
        if ctx.args.data_dir.is_none() {
            " and removes the data directory"
        } else {
            ""
        }
    );
    Ok(())
}

/// Polls `check` until it holds, a child dies, or the deadline passes.
async fn wait_until<F, Fut>(
    deadline: Instant,
    children: &mut Children,
    what: &str,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(deadline, children, what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Polls `check` until it gives a value, a child dies, or the deadline passes.
async fn wait_for<T, F, Fut>(
    deadline: Instant,
    children: &mut Children,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if let Some((label, status)) = children.exited() {
            bail!("{label} exited ({status}) while waiting for {what}");
        }
        if Instant::now() > deadline {
            bail!("{what} was not ready in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when a proxy's `/healthz/ready` answers 200.
async fn ready(admin: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(admin).await else {
        return false;
    };
    let req = format!("GET /healthz/ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.is_ok() && &buf[9..12] == b"200"
}

/// A port free on `ip` right now.
fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in quickstart is a whole mesh: the workloads and the front door of the
    /// checkout's `examples/quickstart`.
    #[test]
    fn the_built_in_quickstart_runs_like_the_checkouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_embedded_quickstart(dir.path()).expect("write");
        let built_in = read_plan(dir.path()).expect("the built-in quickstart is valid");
        let checkout = read_plan(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(DEFAULT_DIR),
        )
        .expect("checkout");
        let names = |p: &Plan| {
            p.workloads
                .iter()
                .map(|w| w.name.clone())
                .collect::<Vec<_>>()
        };
        assert!(!built_in.workloads.is_empty());
        assert_eq!(names(&built_in), names(&checkout));
        assert_eq!(
            built_in.front.as_ref().map(|f| f.service.clone()),
            checkout.front.as_ref().map(|f| f.service.clone())
        );
    }
}
