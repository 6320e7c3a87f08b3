//! The network of `trellis up --netns`: a bridge in a namespace of its own, one namespace per
//! workload plugged into it, and a cable from the host, all made with `ip` and removed again.
//!
//! ```text
//!   host (the namespace `up` runs in)          trellis-up-PID (bridge namespace)
//!   trellis-PID  198.18.100.254 ── veth ──┐    br0 198.18.100.1  (control plane)
//!                                         ├──► br0
//!   trellis-up-PID-NAME: eth0 198.18.100.k ┘    (one veth per workload)
//! ```
//!
//! Every namespace name starts with `trellis-up-PID`, PID being the `up` process's, so the
//! namespaces of a run that died without cleaning up (SIGKILL, a crash) are recognised and
//! deleted by the next `up --netns`; the host's end of the cable goes with the bridge
//! namespace. `ip netns exec` bind-mounts the files in `/etc/netns/NAME/` over `/etc/`, which
//! is how a workload gets its own `/etc/hosts`; those directories follow the same naming and
//! are removed the same way.
//!
//! The `ip` calls are short and blocking; they run only while the mesh starts and stops.

use std::fmt;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context};
use trellis_proxy::capture::find_tool;

/// First part of every namespace name made here, followed by the PID of `up`.
const PREFIX: &str = "trellis-up-";
/// Where `ip netns exec` finds files to bind-mount over `/etc/` in a namespace.
const ETC_NETNS: &str = "/etc/netns";
/// The bridge, inside the bridge namespace.
const BRIDGE: &str = "br0";
/// The host's end of its cable into the bridge: this and the PID of `up`.
const HOST_LINK_PREFIX: &str = "trellis-";
/// The bridge namespace's end of the host's cable.
const HOST_PEER: &str = "host0";
/// Longest part of a namespace name taken from a workload's name: `ip` refuses names longer
/// than a file name can be, and shorter ones are easier to type.
const MAX_NAME: usize = 40;

// === impl Subnet ===

/// An IPv4 /24 for the mesh: `.1` is the bridge (and the control plane), `.254` the host's
/// end of its cable, `.2`–`.253` the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: [u8; 3],
}

impl Subnet {
    /// The bridge's address, where the control plane listens.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// The address of the host's end of its cable into the bridge.
    pub fn host_side(&self) -> Ipv4Addr {
        self.host(254)
    }

    /// `.k` in this subnet.
    pub fn host(&self, k: u8) -> Ipv4Addr {
        let [a, b, c] = self.base;
        Ipv4Addr::new(a, b, c, k)
    }

    /// Whether `ip` is in this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.base
    }

    /// Whether `ip/len` and this subnet share any address.
    fn overlaps(&self, ip: Ipv4Addr, len: u8) -> bool {
        let mask = |l: u8| u32::MAX.checked_shl(32 - u32::from(l)).unwrap_or(0);
        let common = mask(len.min(24));
        u32::from(ip) & common == u32::from(self.host(0)) & common
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("expected A.B.C.0/24, got {s:?}"))?;
        if len != "24" {
            return Err(format!(
                "{s}: only a /24 is supported (one address per workload, .1 for the bridge)"
            ));
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("{s}: not an IPv4 address: {e}"))?;
        let [a, b, c, d] = addr.octets();
        if d != 0 {
            return Err(format!(
                "{s}: the network address ends in .0 ({a}.{b}.{c}.0/24)"
            ));
        }
        // Loopback would never leave a namespace; 240.0.0.0/4 holds the services' virtual
        // IPs; multicast and 0/8 are not for hosts.
        if addr.is_loopback() || addr.is_multicast() || a == 0 || a >= 240 {
            return Err(format!(
                "{s}: not usable for hosts (try 198.18.N.0/24, reserved for tests like this)"
            ));
        }
        Ok(Subnet { base: [a, b, c] })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.host(0))
    }
}

// === prerequisites ===

/// Fails with a sentence saying what is missing, before anything is made: root (namespaces
/// need `CAP_SYS_ADMIN`, addresses and nftables rules `CAP_NET_ADMIN`), `ip` (iproute2) and
/// `nft` (nftables, which the proxies run to install their capture rules).
pub fn check_prerequisites() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective uid.
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid();
    if uid != 0 {
        bail!(
            "`trellis up --netns` needs root: it makes network namespaces and the proxies \
             install nftables rules (running as uid {uid}). Run it with sudo, or without \
             --netns for the loopback mesh, which needs no root"
        );
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !find_tool(tool).is_file() {
            bail!(
                "`trellis up --netns` needs the `{tool}` command (Debian package {package}); \
                 it is not on PATH nor in /usr/sbin or /sbin"
            );
        }
    }
    Ok(())
}

// === impl Network ===

/// The namespaces, cables and files of one `up --netns`. [`Network::remove`] (or dropping
/// it) deletes all of it; stop the processes running inside first, since a process keeps
/// its namespace alive, nameless, until it exits.
#[derive(Debug)]
pub struct Network {
    subnet: Subnet,
    bridge_ns: String,
    host_link: String,
    /// Whether the host's cable exists (and so is to be deleted).
    host_link_made: bool,
    /// Namespaces made so far, in order, including one whose set-up failed halfway.
    namespaces: Vec<String>,
    /// `/etc/netns/NAME` directories made so far.
    etc_dirs: Vec<PathBuf>,
    /// Whether `/etc/netns` itself was made here (and so may go when empty).
    made_etc_netns: bool,
    /// Veths in the bridge namespace are numbered, as interface names are short.
    next_veth: u32,
}

impl Network {
    /// Deletes what earlier runs left behind, checks that `subnet` is free on the host, then
    /// makes the bridge namespace with `subnet`'s `.1` on the bridge and plugs the host in at
    /// `.254`.
    pub fn create(subnet: Subnet) -> anyhow::Result<Network> {
        let pid = std::process::id();
        remove_leftovers(pid)?;
        check_subnet_free(subnet)?;
        let bridge_ns = format!("{PREFIX}{pid}");
        // At most 15 characters (IFNAMSIZ): "trellis-" and a PID of up to 7 digits.
        let host_link = format!("{HOST_LINK_PREFIX}{pid}");
        ip(&["netns", "add", &bridge_ns])?;
        // From here on, removal cleans up whatever the remaining steps leave behind.
        let mut network = Network {
            subnet,
            bridge_ns: bridge_ns.clone(),
            host_link: host_link.clone(),
            host_link_made: false,
            namespaces: vec![bridge_ns.clone()],
            etc_dirs: Vec::new(),
            made_etc_netns: false,
            next_veth: 1,
        };
        let gw = format!("{}/24", subnet.gateway());
        let host = format!("{}/24", subnet.host_side());
        let br = bridge_ns.as_str();
        ip(&["-n", br, "link", "set", "lo", "up"])?;
        ip(&["-n", br, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", br, "addr", "add", &gw, "dev", BRIDGE])?;
        ip(&["-n", br, "link", "set", BRIDGE, "up"])?;
        // Made here with its other end created directly in the bridge namespace: when that
        // namespace is deleted the pair goes too, so even a run that dies without cleaning up
        // leaves no stray interface on the host once its namespaces are deleted.
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", HOST_PEER, "netns", br,
        ])?;
        network.host_link_made = true;
        ip(&["-n", br, "link", "set", HOST_PEER, "master", BRIDGE, "up"])?;
        ip(&["addr", "add", &host, "dev", &host_link])?;
        ip(&["link", "set", &host_link, "up"])?;
        Ok(network)
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The host's end of its cable into the bridge.
    pub fn host_link(&self) -> &str {
        &self.host_link
    }

    /// The bridge namespace, where the control plane runs.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Makes a workload's namespace: `lo` up, `eth0` at `address` on the bridge, default route
    /// via the bridge. Returns the namespace's name, `trellis-up-PID-NAME` (or `-wK` when
    /// the workload's name does not fit in one).
    pub fn add_workload(&mut self, name: &str, address: Ipv4Addr) -> anyhow::Result<String> {
        let k = self.next_veth;
        let fits = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        let mut netns = format!("{}-{name}", self.bridge_ns);
        if !fits || self.namespaces.contains(&netns) {
            netns = format!("{}-w{k}", self.bridge_ns);
        }
        ip(&["netns", "add", &netns])?;
        self.namespaces.push(netns.clone());
        self.next_veth += 1;
        let veth = format!("veth{k}");
        let ns = netns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ])?;
        ip(&[
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &veth,
            "master",
            BRIDGE,
            "up",
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        let gw = self.subnet.gateway().to_string();
        ip(&["-n", ns, "route", "add", "default", "via", &gw])?;
        Ok(netns)
    }

    /// Writes the `/etc/hosts` that processes started with `ip netns exec NETNS` see.
    ///
    /// A file already there is rewritten in place, not replaced: `ip netns exec` bind-mounts
    /// the file itself, so processes already running would keep seeing a replaced file's
    /// old inode.
    pub fn write_hosts(&mut self, netns: &str, text: &str) -> anyhow::Result<()> {
        let etc = Path::new(ETC_NETNS);
        if !etc.exists() {
            std::fs::create_dir_all(etc).with_context(|| format!("creating {ETC_NETNS}"))?;
            self.made_etc_netns = true;
        }
        let dir = etc.join(netns);
        if !self.etc_dirs.contains(&dir) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            self.etc_dirs.push(dir.clone());
        }
        let path = dir.join("hosts");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Deletes every namespace (workloads first, then the bridge's, with the host's cable)
    /// and every `/etc/netns` directory made. Safe to call twice; reports what it could not
    /// delete on standard error and carries on with the rest.
    pub fn remove(&mut self) {
        // Deleted explicitly rather than left to go with the bridge namespace: the kernel
        // tears a deleted namespace's interfaces down in the background, and the host's
        // routes to the subnet should be gone when `up` exits.
        if std::mem::take(&mut self.host_link_made) {
            if let Err(e) = ip(&["link", "del", &self.host_link]) {
                eprintln!(
                    "trellis up: could not delete interface {}: {e:#}",
                    self.host_link
                );
            }
        }
        for netns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &netns]) {
                eprintln!("trellis up: could not delete network namespace {netns}: {e:#}");
            }
        }
        for dir in self.etc_dirs.drain(..) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("trellis up: could not remove {}: {e}", dir.display());
            }
        }
        if std::mem::take(&mut self.made_etc_netns) {
            // Only if empty: something else may have put a namespace's files there since.
            let _ = std::fs::remove_dir(ETC_NETNS);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `ip netns exec NETNS program`, as a command to add arguments to.
pub fn command_in(netns: &str, program: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(find_tool("ip"));
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

// === clean-up of earlier runs ===

/// The PID in a name made by [`Network`] (`trellis-up-PID` or `trellis-up-PID-…`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.split('-').next()?;
    digits.parse().ok()
}

/// Whether `pid` is a running `trellis` process (a PID reused by some other program does
/// not keep a dead run's namespaces alive).
fn is_running_trellis(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("trellis"))
        .unwrap_or(false)
}

/// Deletes the namespaces and `/etc/netns` directories of `up --netns` runs that are gone.
fn remove_leftovers(own_pid: u32) -> anyhow::Result<()> {
    let stale =
        |name: &str| owner_pid(name).is_some_and(|pid| pid == own_pid || !is_running_trellis(pid));
    let list = ip_output(&["netns", "list"])?;
    let mut removed = Vec::new();
    for netns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if stale(netns) {
            ip(&["netns", "del", netns])
                .with_context(|| format!("deleting {netns}, left by an earlier run"))?;
            removed.push(netns.to_string());
        }
    }
    // Host cables of dead runs: deleting their namespaces takes them down too, but in the
    // background, and their addresses would be seen as the subnet being in use.
    let links = ip_output(&["-o", "link", "show"])?;
    for link in links.lines().filter_map(link_name) {
        let pid = link
            .strip_prefix(HOST_LINK_PREFIX)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid == own_pid || !is_running_trellis(pid)) {
            // Gone already if its namespace's teardown got there first.
            if ip(&["link", "del", link]).is_ok() {
                removed.push(format!("interface {link}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(ETC_NETNS) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
                removed.push(e.path().display().to_string());
            }
        }
    }
    if !removed.is_empty() {
        eprintln!(
            "trellis up: removed what an earlier run left behind: {}",
            removed.join(", ")
        );
    }
    Ok(())
}

/// The interface name in a line of `ip -o link show` (`12: trellis-42@if2: <…> …`).
fn link_name(line: &str) -> Option<&str> {
    let name = line.split_whitespace().nth(1)?.trim_end_matches(':');
    Some(name.split('@').next().unwrap_or(name))
}

/// Fails when an address of the host's overlaps `subnet`: routes to the workloads would be
/// ambiguous (another `up --netns` on the same subnet, or a real network there).
fn check_subnet_free(subnet: Subnet) -> anyhow::Result<()> {
    let out = ip_output(&["-o", "-4", "addr", "show"])?;
    for line in out.lines() {
        // "4: eth0    inet 192.0.2.2/24 brd … scope global eth0 …"
        let mut words = line.split_whitespace();
        let dev = words.nth(1).unwrap_or("?");
        let Some(cidr) = words.skip_while(|w| *w != "inet").nth(1) else {
            continue;
        };
        let Some((ip, len)) = cidr.split_once('/') else {
            continue;
        };
        let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
            continue;
        };
        if len <= 32 && subnet.overlaps(ip, len) {
            bail!(
                "{subnet} is already in use on this host ({cidr} on {dev}); pick another with \
                 --netns-subnet"
            );
        }
    }
    Ok(())
}

// === running ip ===

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    ip_output(args).map(drop)
}

/// `ip ARGS`: its standard output, or an error carrying its standard error.
fn ip_output(args: &[&str]) -> anyhow::Result<String> {
    let what = format!("`ip {}`", args.join(" "));
    let out = std::process::Command::new(find_tool("ip"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
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
    use super::*;

    #[test]
    fn subnets_parse_and_lay_out_addresses() {
        let s: Subnet = "198.18.100.0/24".parse().expect("valid");
        assert_eq!(s.gateway(), Ipv4Addr::new(198, 18, 100, 1));
        assert_eq!(s.host_side(), Ipv4Addr::new(198, 18, 100, 254));
        assert_eq!(s.host(7), Ipv4Addr::new(198, 18, 100, 7));
        assert!(s.contains(Ipv4Addr::new(198, 18, 100, 200)));
        assert!(!s.contains(Ipv4Addr::new(198, 18, 101, 2)));
        assert_eq!(s.to_string(), "198.18.100.0/24");
        for bad in [
            "198.18.100.0",
            "198.18.100.0/16",
            "198.18.100.5/24",
            "127.0.5.0/24",
            "240.240.0.0/24",
            "224.0.0.0/24",
            "nonsense/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn overlap_is_seen_from_either_side() {
        let s: Subnet = "198.18.100.0/24".parse().expect("valid");
        assert!(s.overlaps(Ipv4Addr::new(198, 18, 100, 254), 24));
        assert!(s.overlaps(Ipv4Addr::new(198, 18, 100, 9), 32));
        // A wider network around it.
        assert!(s.overlaps(Ipv4Addr::new(198, 18, 0, 1), 15));
        assert!(s.overlaps(Ipv4Addr::new(10, 0, 0, 1), 0));
        assert!(!s.overlaps(Ipv4Addr::new(198, 18, 101, 1), 24));
        assert!(!s.overlaps(Ipv4Addr::new(127, 0, 0, 1), 8));
    }

    #[test]
    fn leftovers_are_recognised_by_name() {
        assert_eq!(owner_pid("trellis-up-4242"), Some(4242));
        assert_eq!(owner_pid("trellis-up-4242-productpage-v1"), Some(4242));
        assert_eq!(owner_pid("trellis-31-4242-client"), None);
        assert_eq!(owner_pid("trellis-up-x-1"), None);
        assert_eq!(owner_pid("other"), None);
        assert_eq!(
            link_name("12: trellis-42@if2: <BROADCAST,MULTICAST,UP> mtu 1500"),
            Some("trellis-42")
        );
        assert_eq!(link_name("1: lo: <LOOPBACK,UP> mtu 65536"), Some("lo"));
    }
}
