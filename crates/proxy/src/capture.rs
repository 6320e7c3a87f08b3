//! Transparent capture of the workload's TCP traffic with nftables.
//!
//! The proxy runs in the workload's network namespace and installs one nftables table,
//! `inet trellis`, with two NAT chains:
//!
//! * `output` (locally generated traffic): every outbound TCP connection of the workload is
//!   redirected to the proxy's outbound port ([`CaptureConfig::outbound_port`], 15001), except
//!   - the proxy's own connections, recognised by the socket mark [`PROXY_MARK`] (the proxy
//!     sets it with [`connect_marked`] or [`set_mark`]) or, optionally, by the proxy's uid;
//!   - loopback traffic (`oifname "lo"`, `127.0.0.0/8`, `::1`): the app talking to itself,
//!     and the redirected traffic itself once it has been turned towards `127.0.0.1`;
//!   - configured destination ports and CIDRs.
//! * `prerouting` (traffic arriving from the network): every inbound TCP connection is
//!   redirected to the inbound plaintext port ([`CaptureConfig::inbound_port`], 15006), except
//!   the proxy's own ports (mTLS 15008, admin 15020, …) and configured ports.
//!
//! The listener that accepts a redirected connection learns where the client meant to go with
//! [`original_dst`] (`SO_ORIGINAL_DST`, read from the connection-tracking entry).
//!
//! Rules are applied by feeding a script to `nft -f -`, so a whole table is replaced in one
//! kernel transaction: there is never a moment with half a ruleset, and a table left behind by
//! a crashed proxy is replaced rather than duplicated. Changing rules needs `CAP_NET_ADMIN` in
//! the namespace (root, in practice).

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

#[cfg(test)]
mod tests;

/// The socket mark the proxy puts on its own outbound sockets (`SO_MARK`), so the capture rules
/// let them through instead of looping them back into the proxy. 0x7472 is "tr" in ASCII.
pub const PROXY_MARK: u32 = 0x7472;

/// Default port of the outbound listener that captured outbound traffic is redirected to.
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;

/// Default port of the inbound plaintext listener that captured inbound traffic is redirected to.
pub const DEFAULT_INBOUND_PORT: u16 = 15006;

/// The proxy's own ports, never captured inbound: 15000 (reserved), 15001 (outbound),
/// 15006 (inbound plaintext), 15008 (mTLS between proxies), 15020 (admin).
pub const DEFAULT_PROXY_PORTS: [u16; 5] = [15000, 15001, 15006, 15008, 15020];

/// nftables family of the capture table. `inet` covers IPv4 and IPv6 with one set of rules.
pub const TABLE_FAMILY: &str = "inet";

/// Name of the capture table.
pub const TABLE_NAME: &str = "trellis";

/// Why capture could not be configured, installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The configuration cannot produce a working ruleset.
    #[error("invalid capture configuration: {0}")]
    Config(String),
    /// A CIDR did not parse.
    #[error("invalid CIDR {input:?}: {reason}")]
    Cidr {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `nft` (or `ip`, to enter a namespace) could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The error from the operating system.
        source: io::Error,
    },
    /// `nft` ran and failed.
    #[error("{action} failed ({status}): {stderr}")]
    Nft {
        /// What was being done, including the namespace if not the current one.
        action: String,
        /// How `nft` exited.
        status: ExitStatus,
        /// What `nft` said.
        stderr: String,
    },
}

/// An IPv4 or IPv6 network: an address and a prefix length, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network `addr/prefix_len`; host bits of `addr` are cleared (so `198.18.3.4/16`
    /// becomes `198.18.0.0/16`, as nft would otherwise refuse it).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CaptureError> {
        let addr = match addr {
            IpAddr::V4(a) => {
                if prefix_len > 32 {
                    return Err(CaptureError::Cidr {
                        input: format!("{a}/{prefix_len}"),
                        reason: "an IPv4 prefix length is at most 32",
                    });
                }
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if prefix_len > 128 {
                    return Err(CaptureError::Cidr {
                        input: format!("{a}/{prefix_len}"),
                        reason: "an IPv6 prefix length is at most 128",
                    });
                }
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Cidr { addr, prefix_len })
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match Cidr::new(ip, self.prefix_len) {
            Ok(net) => net.addr == self.addr,
            Err(_) => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CaptureError;

    /// Parses `ADDR/LEN`, or a bare address as a single-host network (`/32`, `/128`).
    fn from_str(s: &str) -> Result<Cidr, CaptureError> {
        let bad = |reason| CaptureError::Cidr {
            input: s.to_string(),
            reason,
        };
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
        let len = match len {
            Some(len) => len
                .trim()
                .parse::<u8>()
                .map_err(|_| bad("the prefix length is not a number"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, len).map_err(|_| bad("the prefix length is too long"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// What to capture and where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Outbound TCP is redirected to this port (on `127.0.0.1` / `::1`).
    pub outbound_port: u16,
    /// Inbound TCP is redirected to this port (on the address it arrived at).
    pub inbound_port: u16,
    /// The proxy's own listening ports: inbound connections to them are never redirected.
    /// [`outbound_port`](Self::outbound_port) and [`inbound_port`](Self::inbound_port) are
    /// excluded whether or not they are listed.
    pub proxy_ports: Vec<u16>,
    /// Outbound connections to these destination ports are left alone.
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound connections to these networks are left alone.
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Inbound connections to these ports are left alone (delivered to the app directly).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound packets carrying this mark are the proxy's own and are not redirected.
    /// Must not be 0: every unmarked packet has mark 0, so nothing would be captured.
    pub mark: u32,
    /// If set, outbound connections of processes running as this uid are not redirected
    /// either (for a proxy that cannot set `SO_MARK`, which needs `CAP_NET_ADMIN`).
    pub proxy_uid: Option<u32>,
}

impl Default for CaptureConfig {
    /// Ports 15001 (outbound) and 15006 (inbound), the proxy's default ports excluded,
    /// [`PROXY_MARK`], no uid exclusion, nothing else excluded.
    fn default() -> Self {
        CaptureConfig {
            outbound_port: DEFAULT_OUTBOUND_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            proxy_ports: DEFAULT_PROXY_PORTS.to_vec(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            mark: PROXY_MARK,
            proxy_uid: None,
        }
    }
}

impl CaptureConfig {
    /// Checks that the configuration yields rules that capture something and cannot loop.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let bad = |msg: String| Err(CaptureError::Config(msg));
        if self.outbound_port == 0 || self.inbound_port == 0 {
            return bad("the outbound and inbound ports must not be 0".into());
        }
        if self.outbound_port == self.inbound_port {
            // Outbound and inbound connections must reach different listeners: the proxy
            // tells the two directions apart by the port that accepted them.
            return bad(format!(
                "outbound and inbound traffic cannot share port {}",
                self.outbound_port
            ));
        }
        if self.mark == 0 {
            return bad("the proxy mark must not be 0 (every unmarked packet has mark 0)".into());
        }
        let lists = [
            ("proxy_ports", &self.proxy_ports),
            ("exclude_outbound_ports", &self.exclude_outbound_ports),
            ("exclude_inbound_ports", &self.exclude_inbound_ports),
        ];
        for (name, ports) in lists {
            if ports.contains(&0) {
                return bad(format!("{name} contains port 0"));
            }
        }
        if self.exclude_outbound_ports.contains(&self.outbound_port) {
            // Harmless to the kernel, but it would mean the proxy's own listener port is
            // dialled directly, which is almost certainly a configuration mistake.
            return bad(format!(
                "exclude_outbound_ports contains the outbound port {}",
                self.outbound_port
            ));
        }
        Ok(())
    }

    /// Ports whose inbound connections are not redirected: the proxy's ports, the outbound and
    /// inbound ports, and the configured exclusions; sorted, without duplicates.
    pub fn inbound_excluded_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .proxy_ports
            .iter()
            .chain(&self.exclude_inbound_ports)
            .copied()
            .chain([self.outbound_port, self.inbound_port])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The `nft -f` script that (re)creates the capture table atomically.
    ///
    /// The script first creates the table (a no-op if it exists), then deletes it, then
    /// defines it afresh. nft applies the whole file as one transaction, so an old table is
    /// replaced without a window in which traffic goes uncaptured, and a missing one is not
    /// an error.
    pub fn ruleset(&self) -> Result<String, CaptureError> {
        self.validate()?;
        let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
        let mut out = String::new();
        // Writing to a String cannot fail; `push_str` keeps that obvious.
        let mut line = |indent: usize, text: &str| {
            out.push_str(&"\t".repeat(indent));
            out.push_str(text);
            out.push('\n');
        };
        line(
            0,
            "# trellis-proxy: transparent capture of the workload's TCP traffic",
        );
        line(0, &format!("table {table}"));
        line(0, &format!("delete table {table}"));
        line(0, &format!("table {table} {{"));

        line(1, "chain output {");
        // -100 is the usual destination-NAT priority (nft calls it `dstnat` in prerouting but
        // older versions refuse that name in the output hook, so the number is spelled out).
        line(2, "type nat hook output priority -100; policy accept;");
        line(2, "meta l4proto != tcp return");
        line(2, SYN_ONLY);
        line(
            2,
            &format!(
                "meta mark {:#010x} return comment \"the proxy's own connections\"",
                self.mark
            ),
        );
        if let Some(uid) = self.proxy_uid {
            line(
                2,
                &format!("meta skuid {uid} return comment \"the proxy's own user\""),
            );
        }
        line(2, "oifname \"lo\" return comment \"loopback\"");
        line(2, "ip daddr 127.0.0.0/8 return comment \"loopback\"");
        line(2, "ip6 daddr ::1 return comment \"loopback\"");
        let mut ports = self.exclude_outbound_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        if !ports.is_empty() {
            line(
                2,
                &format!(
                    "tcp dport {} return comment \"excluded outbound ports\"",
                    port_set(&ports)
                ),
            );
        }
        // One rule per network rather than one set: nft rejects overlapping intervals in a
        // set, and overlapping exclusions are an easy mistake that should not be fatal.
        for cidr in &self.exclude_outbound_cidrs {
            let family = if cidr.addr.is_ipv4() { "ip" } else { "ip6" };
            line(
                2,
                &format!("{family} daddr {cidr} return comment \"excluded outbound network\""),
            );
        }
        line(
            2,
            &format!("meta l4proto tcp redirect to :{}", self.outbound_port),
        );
        line(1, "}");

        line(1, "chain prerouting {");
        line(2, "type nat hook prerouting priority -100; policy accept;");
        line(2, "meta l4proto != tcp return");
        line(2, SYN_ONLY);
        line(
            2,
            &format!(
                "tcp dport {} return comment \"the proxy's ports and excluded inbound ports\"",
                port_set(&self.inbound_excluded_ports())
            ),
        );
        line(
            2,
            &format!("meta l4proto tcp redirect to :{}", self.inbound_port),
        );
        line(1, "}");
        line(0, "}");
        Ok(out)
    }
}

/// Only a connection's opening SYN may be redirected. The NAT hooks normally see just the first
/// packet of a connection, but a namespace that had no conntrack users before the rules went in
/// has no entries for its established connections (the proxy's own control-plane stream, an
/// app's keep-alive connection): conntrack then picks them up mid-stream as new and the redirect
/// would rewrite their packets, cutting them. Matching the SYN alone leaves them untouched.
const SYN_ONLY: &str =
    "tcp flags & (fin | syn | rst | ack) != syn return comment \"established before capture\"";

/// `{ 1, 2, 3 }`: an anonymous nft set of ports.
fn port_set(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Installed capture rules. Dropping it removes them (best effort: a failure is logged);
/// [`Capture::remove`] does the same and reports failure.
#[derive(Debug)]
pub struct Capture {
    netns: Option<String>,
    config: CaptureConfig,
    /// False once the rules have been removed, so `Drop` does not remove them again.
    active: bool,
}

impl Capture {
    /// Installs the capture rules in the current network namespace, replacing a `trellis`
    /// table left over from an earlier proxy (so installing twice is harmless).
    pub fn install(cfg: &CaptureConfig) -> Result<Capture, CaptureError> {
        Capture::install_in(None, cfg)
    }

    /// Like [`install`](Self::install), in the named network namespace (`ip netns exec NAME
    /// nft …`) when `netns` is given. Used by tests, and by a supervisor that prepares a
    /// workload's namespace from outside.
    pub fn install_in(netns: Option<&str>, cfg: &CaptureConfig) -> Result<Capture, CaptureError> {
        let script = cfg.ruleset()?;
        run_nft(
            netns,
            &["-f", "-"],
            Some(&script),
            "installing capture rules",
        )?;
        tracing::info!(
            netns = netns.unwrap_or("(current)"),
            outbound_port = cfg.outbound_port,
            inbound_port = cfg.inbound_port,
            "traffic capture installed"
        );
        Ok(Capture {
            netns: netns.map(str::to_string),
            config: cfg.clone(),
            active: true,
        })
    }

    /// Removes the rules now, reporting failure (dropping removes them too, but can only log).
    pub fn remove(mut self) -> Result<(), CaptureError> {
        // Whatever happens, Drop must not try again: a second failure would only repeat the log.
        self.active = false;
        Capture::remove_in(self.netns.as_deref())
    }

    /// Removes the capture table from the current namespace (or `netns`) if there is one,
    /// without a [`Capture`] value: for cleaning up after a proxy that crashed.
    pub fn remove_in(netns: Option<&str>) -> Result<(), CaptureError> {
        // Creating the table first makes the delete succeed when it is already gone.
        let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
        let script = format!("table {table}\ndelete table {table}\n");
        run_nft(netns, &["-f", "-"], Some(&script), "removing capture rules")?;
        tracing::info!(
            netns = netns.unwrap_or("(current)"),
            "traffic capture removed"
        );
        Ok(())
    }

    /// Whether a capture table is present in the current network namespace.
    pub fn is_installed() -> Result<bool, CaptureError> {
        Capture::is_installed_in(None)
    }

    /// Whether a capture table is present in `netns` (the current namespace if `None`).
    pub fn is_installed_in(netns: Option<&str>) -> Result<bool, CaptureError> {
        // `list tables` rather than `list table trellis`: the latter fails when the table is
        // missing, and telling that failure apart from others would mean parsing messages.
        let tables = run_nft(netns, &["list", "tables"], None, "listing nftables tables")?;
        let wanted = format!("table {TABLE_FAMILY} {TABLE_NAME}");
        Ok(tables.lines().any(|l| l.trim() == wanted))
    }

    /// The table as the kernel has it (`nft list table inet trellis`), for diagnostics.
    pub fn listing(&self) -> Result<String, CaptureError> {
        run_nft(
            self.netns.as_deref(),
            &["list", "table", TABLE_FAMILY, TABLE_NAME],
            None,
            "listing capture rules",
        )
    }

    /// The configuration the rules were made from.
    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// The namespace the rules are in (`None`: the one this process was in at install time).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        if let Err(error) = Capture::remove_in(self.netns.as_deref()) {
            tracing::warn!(
                %error,
                netns = self.netns.as_deref().unwrap_or("(current)"),
                "could not remove traffic capture rules"
            );
        }
    }
}

/// Runs `nft ARGS` (inside `netns` via `ip netns exec` when given), feeding `stdin`, and
/// returns its standard output.
fn run_nft(
    netns: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
    action: &str,
) -> Result<String, CaptureError> {
    let nft = find_tool("nft");
    let mut cmd = match netns {
        Some(ns) => {
            let ip = find_tool("ip");
            let mut c = Command::new(&ip);
            c.args(["netns", "exec", ns]).arg(&nft);
            c
        }
        None => Command::new(&nft),
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_err = |source| CaptureError::Spawn {
        program: match netns {
            Some(ns) => format!("nft in network namespace {ns}"),
            None => nft.display().to_string(),
        },
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The script is a few kilobytes at most and nft reads all of it before writing
        // anything, so writing before collecting the output cannot fill both pipes and hang.
        // Dropping the pipe afterwards gives nft its end of file.
        if let Err(e) = pipe.write_all(script.as_bytes()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(e));
        }
    }
    let output = child.wait_with_output().map_err(spawn_err)?;
    if !output.status.success() {
        return Err(CaptureError::Nft {
            action: match netns {
                Some(ns) => format!("{action} in network namespace {ns}"),
                None => action.to_string(),
            },
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Finds `name` on `PATH`, then in the sbin directories: daemons are often started with a
/// `PATH` that lacks them, and that is where `nft` and `ip` live. Falls back to the bare name
/// so the spawn error names the program.
pub fn find_tool(name: &str) -> PathBuf {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
    path_dirs
        .into_iter()
        .chain(fallback)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The destination the client of a redirected connection asked for (`SO_ORIGINAL_DST`).
///
/// For a connection that was not redirected this is its local address (if the connection is
/// tracked at all: otherwise the call fails with `ENOENT`). Works for IPv4 connections,
/// including ones accepted on a dual-stack `[::]` listener (IPv4-mapped local address), and
/// for IPv6 connections (`IP6T_SO_ORIGINAL_DST`).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    // The conntrack lookup is per family: an IPv4 connection, even one on an IPv6 socket,
    // has to be asked at the IPv4 level.
    let ipv4 = match stream.local_addr()? {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    let addr = if ipv4 {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST returned a non-IP address",
        )
    })
}

/// Sets `SO_MARK` on a socket, so packets it sends carry `mark` (and, with [`PROXY_MARK`],
/// escape capture). Needs `CAP_NET_ADMIN`.
pub fn set_mark<S: AsFd>(socket: &S, mark: u32) -> io::Result<()> {
    SockRef::from(socket).set_mark(mark)
}

/// Connects to `addr` over TCP, setting `SO_MARK` to `mark` first when given, so that even the
/// SYN is marked and the connection escapes capture. Needs `CAP_NET_ADMIN` when `mark` is set.
pub async fn connect_marked(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(mark) = mark {
        set_mark(&socket, mark)?;
    }
    socket.connect(addr).await
}
