//! Hosts in network namespaces, for end-to-end tests that need real, separate network stacks
//! (transparent capture, source addresses, per-host firewalls) rather than loopback aliases.
//!
//! A [`Lan`] is a Linux bridge in a namespace of its own, with the subnet `198.18.N.0/24`
//! (part of `198.18.0.0/15`, the range reserved for benchmarking, so it cannot clash with a real
//! network) and the address `198.18.N.1` on the bridge. Each [`Host`] is another namespace
//! whose `eth0` is a veth cable plugged into the bridge, with address `198.18.N.k` and its
//! default route via the bridge. Programs run in a host with [`Host::command`]
//! (`ip netns exec NAME program …`).
//!
//! Namespace names contain N and the test process id (`trellis-N-PID` for the LAN,
//! `trellis-N-PID-NAME` for hosts), so parallel tests in one process need distinct N, and
//! different processes never collide. Dropping the [`Lan`] deletes every namespace it made;
//! [`Lan::new`] also deletes namespaces with the same N left behind by a test process that
//! has died (or by this one). Everything here needs root and the `ip` command (iproute2).

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// First word of every namespace name made here, so leftovers can be recognised.
const PREFIX: &str = "trellis";
/// The bridge's interface name inside the LAN namespace.
const BRIDGE: &str = "br0";
/// Longest host name accepted (namespace names become file names under /run/netns).
const MAX_NAME: usize = 32;

/// A bridged LAN of hosts, each in its own network namespace. Dropping it deletes them all.
#[derive(Debug)]
pub struct Lan {
    n: u8,
    netns: String,
    hosts: Vec<Host>,
    /// Every namespace made so far, hosts and LAN, including one whose set-up failed halfway.
    made: Vec<String>,
    /// Last octet of the next host's address.
    next: u8,
}

impl Lan {
    /// Makes the LAN `198.18.n.0/24`: its namespace, the bridge, and `198.18.n.1` on it.
    ///
    /// Fails (with the reason) without root or `ip`. Namespaces of an earlier `Lan` with the
    /// same `n` whose process has gone (or is this one) are deleted first.
    pub fn new(n: u8) -> Result<Lan> {
        require_root()?;
        let pid = std::process::id();
        clean_leftovers(n, pid)?;
        let netns = format!("{PREFIX}-{n}-{pid}");
        ip(&["netns", "add", &netns])?;
        // From here on, Drop cleans up whatever the remaining steps leave behind.
        let lan = Lan {
            n,
            netns: netns.clone(),
            hosts: Vec::new(),
            made: vec![netns],
            next: 2,
        };
        lan.ip(&["link", "set", "lo", "up"])?;
        lan.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        lan.ip(&[
            "addr",
            "add",
            &format!("{}/24", lan.gateway()),
            "dev",
            BRIDGE,
        ])?;
        lan.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(lan)
    }

    /// Adds a host: a namespace with `lo` up and `eth0` plugged into the bridge, at the next
    /// free address `198.18.n.k/24` (k = 2, 3, …), default route via [`gateway`](Self::gateway).
    ///
    /// `name` (letters, digits, `-`, `_`; unique in this LAN) becomes part of the namespace
    /// name.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            bail!("bad host name {name:?}: use 1 to {MAX_NAME} letters, digits, '-' or '_'");
        }
        let netns = format!("{}-{name}", self.netns);
        if self.made.contains(&netns) {
            bail!("this LAN already has a host called {name:?}");
        }
        let k = self.next;
        if k == 255 {
            bail!("LAN {} is full (253 hosts)", self.n);
        }
        ip(&["netns", "add", &netns])?;
        self.made.push(netns.clone());
        self.next += 1;
        let host = Host {
            name: netns,
            ip: Ipv4Addr::new(198, 18, self.n, k),
        };
        let veth = format!("veth{k}");
        host.ip(&["link", "set", "lo", "up"])?;
        // Made in the LAN namespace with its other end created directly in the host's, so no
        // interface ever appears in the namespace the test runs in.
        self.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
        ])?;
        self.ip(&["link", "set", &veth, "master", BRIDGE, "up"])?;
        host.ip(&["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
        host.ip(&["link", "set", "eth0", "up"])?;
        host.ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ])?;
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// The bridge's address, `198.18.n.1`: reachable from every host, and the place for
    /// services all hosts share (run them in [`lan_netns`](Self::lan_netns)).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.n, 1)
    }

    /// The name of the bridge's namespace.
    pub fn lan_netns(&self) -> &str {
        &self.netns
    }

    /// The hosts added so far.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// `ip netns exec LAN program`: a command to run in the bridge's namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.netns, program)
    }

    /// Runs `args` in the bridge's namespace to completion; see [`Host::run`].
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run_in(&self.netns, args)
    }

    /// Runs `f` on a new thread inside the LAN's own namespace: see [`spawn_in`].
    pub fn spawn<T, F>(&self, f: F) -> Result<NetnsThread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_in(&self.netns, f)
    }

    /// `ip -n LAN args`.
    fn ip(&self, args: &[&str]) -> Result<()> {
        ip_in(&self.netns, args)
    }
}

impl Drop for Lan {
    /// Deletes the hosts' namespaces, then the LAN's (the veth cables go with them). A process
    /// still running in a namespace keeps it alive, nameless, until it exits: stop children
    /// first (declare them after the `Lan`, so they are dropped before it).
    fn drop(&mut self) {
        for netns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", netns]) {
                eprintln!("testkit: could not delete network namespace {netns}: {e:#}");
            }
        }
    }
}

/// A host on a [`Lan`]: a network namespace with one interface, `eth0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The network namespace's name (as `ip netns` knows it).
    pub name: String,
    /// The address of `eth0`.
    pub ip: Ipv4Addr,
}

impl Host {
    /// `ip netns exec NAME program`: add arguments, environment, stdio as usual. The program
    /// sees only this host's network; the file system and processes are shared.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.name, program)
    }

    /// Runs `args` (program first) in this host to completion and returns its standard
    /// output; fails with the exit status and standard error if it does not succeed.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        run_in(&self.name, args)
    }

    /// Runs `f` on a new thread inside this host's network namespace: see [`spawn_in`].
    pub fn spawn<T, F>(&self, f: F) -> Result<NetnsThread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_in(&self.name, f)
    }

    /// `ip -n NAME args`.
    fn ip(&self, args: &[&str]) -> Result<()> {
        ip_in(&self.name, args)
    }
}

/// Runs `f` on a new thread that has joined the network namespace `netns` (a name under
/// `/run/netns`, as `ip netns` makes them). A network namespace belongs to a thread, not to
/// the process: sockets that thread opens, and threads it starts (a tokio runtime built on
/// it, for one), live in the namespace, while the rest of the process stays where it was.
/// That lets a test put a server or client inside a namespace without starting a process.
///
/// Fails, with the reason, when the namespace cannot be opened or joined.
pub fn spawn_in<T, F>(netns: &str, f: F) -> Result<NetnsThread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    use std::os::fd::AsFd;

    let path = Path::new("/run/netns").join(netns);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("netns {netns}"))
        .spawn(move || {
            let entered = move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network));
            drop(file);
            let ok = entered.is_ok();
            let _ = entered_tx.send(entered);
            ok.then(f)
        })
        .context("starting a thread")?;
    match entered_rx.recv() {
        Ok(Ok(())) => Ok(NetnsThread {
            netns: netns.to_string(),
            handle,
        }),
        Ok(Err(e)) => Err(anyhow!("joining network namespace {netns}: {e}")),
        Err(_) => Err(anyhow!("the thread for network namespace {netns} died")),
    }
}

/// Runs `future` to completion on a current-thread tokio runtime built for it on the calling
/// thread. Called in a thread from [`spawn_in`] (or [`Host::spawn`]), the runtime's sockets
/// are opened in that thread's namespace.
///
/// # Panics
///
/// When the runtime cannot be built.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
        .block_on(future)
}

/// A thread running inside a network namespace, from [`spawn_in`].
#[derive(Debug)]
pub struct NetnsThread<T> {
    netns: String,
    handle: std::thread::JoinHandle<Option<T>>,
}

impl<T> NetnsThread<T> {
    /// Waits for the thread and returns what it returned; fails if it panicked.
    pub fn join(self) -> Result<T> {
        match self.handle.join() {
            Ok(Some(value)) => Ok(value),
            // Unreachable: spawn_in returns an error instead of a thread that did not enter.
            Ok(None) => Err(anyhow!("thread never entered {}", self.netns)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                Err(anyhow!("thread in {} panicked: {msg}", self.netns))
            }
        }
    }

    /// True once the thread has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Fails unless the process runs as root (making namespaces needs `CAP_SYS_ADMIN`, configuring
/// them `CAP_NET_ADMIN`), with a message saying so rather than a cryptic `ip` error.
fn require_root() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid();
    if uid != 0 {
        bail!("network namespaces need root (running as uid {uid})");
    }
    Ok(())
}

/// Deletes namespaces named for LAN `n` whose process is this one or no longer exists.
fn clean_leftovers(n: u8, pid: u32) -> Result<()> {
    let list = ip_output(&["netns", "list"])?;
    for netns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let mut parts = netns.splitn(4, '-');
        let (Some(PREFIX), Some(their_n), Some(their_pid)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(their_pid) = their_pid.parse::<u32>() else {
            continue;
        };
        if their_n != n.to_string() {
            continue;
        }
        let gone = !Path::new(&format!("/proc/{their_pid}")).exists();
        if their_pid == pid || gone {
            ip(&["netns", "del", netns])
                .with_context(|| format!("deleting leftover namespace {netns}"))?;
        }
    }
    Ok(())
}

/// The `ip` program: on `PATH`, else in the sbin directories where iproute2 installs it
/// (test runners do not always have them on `PATH`).
fn ip_program() -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("ip"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

fn netns_command(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(ip_program());
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

fn run_in(netns: &str, args: &[&str]) -> Result<String> {
    let Some((program, rest)) = args.split_first() else {
        bail!("no command to run in {netns}");
    };
    let mut cmd = netns_command(netns, program);
    cmd.args(rest);
    output(cmd, &format!("`{}` in {netns}", args.join(" ")))
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

/// `ip -n NETNS ARGS`, which must succeed.
fn ip_in(netns: &str, args: &[&str]) -> Result<()> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    ip(&all)
}

fn ip_output(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(ip_program());
    cmd.args(args);
    output(cmd, &format!("`ip {}`", args.join(" ")))
}

/// Runs `cmd` to completion; its standard output, or an error with its standard error.
fn output(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !out.status.success() {
        return Err(anyhow!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).with_context(|| format!("{what} printed non-UTF-8 output"))
}

#[cfg(test)]
mod tests {
    //! These need root and `ip`, and fail without them. Sockets inside the namespaces are
    //! opened on threads that joined them ([`spawn_in`]), so nothing beyond the test's own
    //! namespaces is touched and no other tool is needed.

    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn hosts_talk_over_tcp_through_the_bridge() {
        let mut lan = Lan::new(231).unwrap();
        let a = lan.add_host("a").unwrap();
        let b = lan.add_host("b").unwrap();
        assert_eq!(lan.gateway(), Ipv4Addr::new(198, 18, 231, 1));
        assert_eq!(a.ip, Ipv4Addr::new(198, 18, 231, 2));
        assert_eq!(b.ip, Ipv4Addr::new(198, 18, 231, 3));
        assert_eq!(lan.hosts(), [a.clone(), b.clone()]);
        let pid = std::process::id().to_string();
        assert!(
            a.name.contains(&pid) && a.name.contains("231"),
            "{}",
            a.name
        );
        assert!(lan.lan_netns().contains(&pid), "{}", lan.lan_netns());

        let routes = a.run(&["ip", "-4", "route"]).unwrap();
        assert!(routes.contains("default via 198.18.231.1"), "{routes}");

        // Host to host, and host to a service in the LAN namespace.
        let (bip, gw) = (b.ip, lan.gateway());
        let server_b = echo_once(b.spawn(move || TcpListener::bind((bip, 7000))));
        let server_lan = echo_once(lan.spawn(move || TcpListener::bind((gw, 7001))));
        assert_eq!(
            send(a.spawn(connect(bip, 7000)), "hello-b"),
            "echo hello-b from 198.18.231.2"
        );
        assert_eq!(
            send(b.spawn(connect(gw, 7001)), "hello-lan"),
            "echo hello-lan from 198.18.231.3"
        );
        server_b.join().unwrap();
        server_lan.join().unwrap();
        // A socket stays in the namespace it was made in after its thread is gone.
        let stream = a.spawn(connect(bip, 7002)).unwrap().join().unwrap();
        assert_eq!(
            stream.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        let listener = b
            .spawn(move || TcpListener::bind((bip, 0)))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(listener.local_addr().unwrap().ip(), bip);
    }

    #[test]
    fn spawn_in_fails_for_a_missing_namespace() {
        let err = spawn_in("trellis-no-such-namespace", || ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("trellis-no-such-namespace"), "{err}");
    }

    #[test]
    fn drop_deletes_every_namespace() {
        let mut lan = Lan::new(232).unwrap();
        let mut names = vec![lan.lan_netns().to_string()];
        for host in ["one", "two", "three"] {
            names.push(lan.add_host(host).unwrap().name);
        }
        let before = ip_output(&["netns", "list"]).unwrap();
        for name in &names {
            assert!(before.contains(name.as_str()), "{name} missing: {before}");
        }
        drop(lan);
        let after = ip_output(&["netns", "list"]).unwrap();
        for name in &names {
            assert!(
                !after
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(name)),
                "{name} left behind: {after}"
            );
        }
    }

    #[test]
    fn leftovers_of_the_same_lan_are_replaced() {
        let mut crashed = Lan::new(233).unwrap();
        crashed.add_host("h").unwrap();
        // As if the test had died without dropping its Lan.
        std::mem::forget(crashed);
        let mut lan = Lan::new(233).unwrap();
        let h = lan.add_host("h").unwrap();
        assert_eq!(h.ip, Ipv4Addr::new(198, 18, 233, 2));
        drop(lan);
        let after = ip_output(&["netns", "list"]).unwrap();
        let prefix = format!("{PREFIX}-233-{}", std::process::id());
        assert!(!after.contains(&prefix), "{after}");
    }

    #[test]
    fn run_reports_failures_with_stderr() {
        let mut lan = Lan::new(234).unwrap();
        let h = lan.add_host("h").unwrap();
        let links = h.run(&["ip", "-o", "link"]).unwrap();
        assert!(links.contains("lo:") && links.contains("eth0@"), "{links}");
        let err = h
            .run(&["ip", "link", "show", "nosuchdev"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuchdev") && err.contains("failed"), "{err}");
        assert!(h.run(&[]).is_err());
    }

    #[test]
    fn bad_host_names_are_refused() {
        let mut lan = Lan::new(235).unwrap();
        lan.add_host("ok_1-a").unwrap();
        for bad in ["", "a b", "x/y", &"n".repeat(MAX_NAME + 1), "ok_1-a"] {
            assert!(lan.add_host(bad).is_err(), "{bad:?} accepted");
        }
        // Refusals do not use up addresses.
        assert_eq!(
            lan.add_host("next").unwrap().ip,
            Ipv4Addr::new(198, 18, 235, 3)
        );
    }

    /// Binds a listener inside a namespace (the socket stays there when the thread ends),
    /// then answers one connection on a thread: read to the end, reply `echo MSG from PEER`.
    fn echo_once(
        bind: Result<NetnsThread<std::io::Result<TcpListener>>>,
    ) -> std::thread::JoinHandle<()> {
        let listener = bind.unwrap().join().unwrap().unwrap();
        std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut msg = String::new();
            conn.read_to_string(&mut msg).unwrap();
            write!(conn, "echo {msg} from {}", peer.ip()).unwrap();
        })
    }

    /// Connects from inside a namespace, sends `msg`, half-closes and returns the answer.
    fn send(connect: Result<NetnsThread<std::io::Result<TcpStream>>>, msg: &str) -> String {
        let mut conn = connect.unwrap().join().unwrap().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(msg.as_bytes()).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    }

    fn connect(ip: Ipv4Addr, port: u16) -> impl FnOnce() -> std::io::Result<TcpStream> {
        move || TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(5))
    }
}
