//! Tests of traffic capture.
//!
//! Rendering and validation run anywhere. Everything else happens in network namespaces made
//! for the test (named `trcap-PID-…`, deleted on drop even when the test fails) and needs root,
//! `ip` and `nft`: those tests fail, loudly, rather than skip without them, so a CI job that
//! lost its privileges does not go green by testing nothing.
//!
//! The tests with real connections open their sockets on threads that joined the namespaces
//! ([`trellis_testkit::netns::spawn_in`]); a socket stays in its namespace afterwards.

use super::*;
use std::io::{Read, Write};
use std::process::Output;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_testkit::netns::{block_on, spawn_in, NetnsThread};

// ---------------------------------------------------------------------------------------------
// Rendering and validation (no privileges needed)

#[test]
fn default_config_uses_the_proxy_ports() {
    let cfg = CaptureConfig::default();
    assert_eq!(cfg.outbound_port, 15001);
    assert_eq!(cfg.inbound_port, 15006);
    assert_eq!(cfg.mark, PROXY_MARK);
    assert_eq!(
        cfg.inbound_excluded_ports(),
        [15000, 15001, 15006, 15008, 15020]
    );
    cfg.validate().unwrap();
}

#[test]
fn ruleset_has_redirects_and_exclusions() {
    let cfg = sample_config();
    let script = cfg.ruleset().unwrap();
    // The atomic-replace prologue.
    let head: Vec<&str> = script.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(head[0], "table inet trellis");
    assert_eq!(head[1], "delete table inet trellis");
    assert_eq!(head[2], "table inet trellis {");
    let output = chain_rules(&script, "output");
    let prerouting = chain_rules(&script, "prerouting");
    for expected in [
        "tcp flags & (fin | syn | rst | ack) != syn return",
        "meta mark 0x00007472 return",
        "meta skuid 4242 return",
        "oifname \"lo\" return",
        "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1 return",
        "tcp dport { 25, 8080 } return",
        "ip daddr 198.18.42.128/25 return",
        "ip6 daddr 2001:2:0:42::80/121 return",
    ] {
        assert!(
            output.iter().any(|r| r.starts_with(expected)),
            "{expected:?} missing from output chain:\n{script}"
        );
    }
    assert_eq!(
        output.last().copied(),
        Some("meta l4proto tcp redirect to :15001")
    );
    assert!(
        prerouting
            .iter()
            .any(|r| r.starts_with("tcp dport { 9100, 15000, 15001, 15006, 15008, 15020 } return")),
        "{script}"
    );
    assert_eq!(
        prerouting.last().copied(),
        Some("meta l4proto tcp redirect to :15006")
    );
}

#[test]
fn uid_exclusion_is_optional() {
    let script = CaptureConfig::default().ruleset().unwrap();
    assert!(!script.contains("skuid"), "{script}");
    assert!(!script.contains("excluded outbound"), "{script}");
}

#[test]
fn invalid_configs_are_refused() {
    let base = CaptureConfig::default();
    let cases = [
        CaptureConfig {
            mark: 0,
            ..base.clone()
        },
        CaptureConfig {
            inbound_port: 15001,
            ..base.clone()
        },
        CaptureConfig {
            outbound_port: 0,
            ..base.clone()
        },
        CaptureConfig {
            exclude_inbound_ports: vec![0],
            ..base.clone()
        },
        CaptureConfig {
            exclude_outbound_ports: vec![15001],
            ..base.clone()
        },
    ];
    for cfg in cases {
        assert!(
            matches!(cfg.ruleset(), Err(CaptureError::Config(_))),
            "{cfg:?} was accepted"
        );
    }
}

#[test]
fn cidrs_parse_and_normalise() {
    let c: Cidr = "198.18.3.4/16".parse().unwrap();
    assert_eq!(c.to_string(), "198.18.0.0/16");
    assert!(c.contains("198.18.200.1".parse().unwrap()));
    assert!(!c.contains("198.19.0.1".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    assert_eq!(
        "198.18.0.9".parse::<Cidr>().unwrap().to_string(),
        "198.18.0.9/32"
    );
    assert_eq!(
        "2001:2::5/48".parse::<Cidr>().unwrap().to_string(),
        "2001:2::/48"
    );
    assert_eq!("::1".parse::<Cidr>().unwrap().prefix_len(), 128);
    assert_eq!(
        "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
        "0.0.0.0/0"
    );
    for bad in [
        "198.18.0.0/33",
        "2001:2::/129",
        "nope/8",
        "198.18.0.0/x",
        "",
    ] {
        assert!(
            matches!(bad.parse::<Cidr>(), Err(CaptureError::Cidr { .. })),
            "{bad:?} parsed"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Installation in a namespace (root)

#[test]
fn install_lists_redirects_and_exclusions() {
    let ns = Netns::new("list");
    assert!(!Capture::is_installed_in(Some(&ns.name)).unwrap());
    let capture = Capture::install_in(Some(&ns.name), &sample_config()).unwrap();
    assert!(Capture::is_installed_in(Some(&ns.name)).unwrap());
    assert_eq!(capture.netns(), Some(ns.name.as_str()));

    // What the kernel reports back, not what we sent.
    let listing = capture.listing().unwrap();
    let output = chain_rules(&listing, "output");
    let prerouting = chain_rules(&listing, "prerouting");
    assert!(
        listing.contains("type nat hook output priority") && listing.contains("policy accept"),
        "{listing}"
    );
    for expected in [
        "meta l4proto != tcp return",
        "tcp flags != syn / fin,syn,rst,ack return",
        "meta mark 0x00007472 return",
        "meta skuid 4242 return",
        "oifname \"lo\" return",
        "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1 return",
        "tcp dport { 25, 8080 } return",
        "ip daddr 198.18.42.128/25 return",
        "ip6 daddr 2001:2:0:42::80/121 return",
    ] {
        assert!(
            output.iter().any(|r| r.starts_with(expected)),
            "{expected:?} missing from output chain:\n{listing}"
        );
    }
    assert_eq!(
        output.last().copied(),
        Some("meta l4proto tcp redirect to :15001"),
        "{listing}"
    );
    assert!(
        prerouting
            .iter()
            .any(|r| r.starts_with("tcp dport { 9100, 15000, 15001, 15006, 15008, 15020 } return")),
        "{listing}"
    );
    assert_eq!(
        prerouting.last().copied(),
        Some("meta l4proto tcp redirect to :15006"),
        "{listing}"
    );
    capture.remove().unwrap();
}

#[test]
fn install_twice_replaces_the_table() {
    let ns = Netns::new("twice");
    let first = Capture::install_in(Some(&ns.name), &sample_config()).unwrap();
    let once = first.listing().unwrap();

    // Same configuration again (a restarted proxy finding its predecessor's table).
    let second = Capture::install_in(Some(&ns.name), &sample_config()).unwrap();
    let twice = second.listing().unwrap();
    assert_eq!(once, twice, "a second install changed the rules");
    let tables = ns.run(&[find_tool("nft").to_str().unwrap(), "list", "tables"]);
    assert_eq!(tables.matches("table inet trellis").count(), 1, "{tables}");

    // A different configuration replaces the old rules rather than adding to them.
    let moved = CaptureConfig {
        outbound_port: 16001,
        ..sample_config()
    };
    let third = Capture::install_in(Some(&ns.name), &moved).unwrap();
    let listing = third.listing().unwrap();
    assert_eq!(listing.matches("chain output").count(), 1, "{listing}");
    assert_eq!(listing.matches("redirect to").count(), 2, "{listing}");
    assert!(listing.contains("redirect to :16001"), "{listing}");
    assert!(!listing.contains("redirect to :15001"), "{listing}");

    // Every value removes the one shared table; removing what is already gone is not an error.
    third.remove().unwrap();
    second.remove().unwrap();
    drop(first);
    assert!(!Capture::is_installed_in(Some(&ns.name)).unwrap());
}

#[test]
fn remove_leaves_no_table() {
    let ns = Netns::new("remove");
    let capture = Capture::install_in(Some(&ns.name), &CaptureConfig::default()).unwrap();
    assert!(Capture::is_installed_in(Some(&ns.name)).unwrap());
    capture.remove().unwrap();
    assert!(!Capture::is_installed_in(Some(&ns.name)).unwrap());
    let ruleset = ns.run(&[find_tool("nft").to_str().unwrap(), "list", "ruleset"]);
    assert!(!ruleset.contains("trellis"), "{ruleset}");
}

#[test]
fn drop_removes_the_table() {
    let ns = Netns::new("drop");
    {
        let _capture = Capture::install_in(Some(&ns.name), &CaptureConfig::default()).unwrap();
        assert!(Capture::is_installed_in(Some(&ns.name)).unwrap());
    }
    assert!(!Capture::is_installed_in(Some(&ns.name)).unwrap());
}

#[test]
fn errors_from_nft_are_reported() {
    require_privileges();
    let err = Capture::is_installed_in(Some("trcap-no-such-namespace")).unwrap_err();
    assert!(
        matches!(err, CaptureError::Nft { .. }),
        "unexpected error {err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Real connections (root)

/// Two namespaces joined by a veth pair: W, the workload with capture installed, and P, a
/// peer on the same link. Listeners in both say which local address accepted the connection
/// and what `original_dst` reports, so each connection shows whether it was redirected.
#[test]
fn redirects_real_connections() {
    let (w, p) = linked_pair("w", "p");
    let _capture = Capture::install_in(Some(&w.name), &sample_config()).unwrap();
    // The proxy's listeners (and an app port excluded from capture) in W; an app in P.
    let _w_listen = Listener::start(&w, &[15001, 15006, 15008, 9100]);
    let _p_listen = Listener::start(&p, &[80, 8080, 9000]);

    let cases: &[(&Netns, &str, Option<u32>, &str)] = &[
        // Outbound from the workload: captured, original destination recovered.
        (
            &w,
            "198.18.42.2:80",
            None,
            "local=127.0.0.1:15001 orig=198.18.42.2:80",
        ),
        (
            &w,
            "[2001:2:0:42::2]:80",
            None,
            "local=[::1]:15001 orig=[2001:2:0:42::2]:80",
        ),
        // The proxy's own (marked) connections go straight out.
        (
            &w,
            "198.18.42.2:80",
            Some(PROXY_MARK),
            "local=198.18.42.2:80 ",
        ),
        (
            &w,
            "[2001:2:0:42::2]:80",
            Some(PROXY_MARK),
            "local=[2001:2:0:42::2]:80 ",
        ),
        // A mark other than the proxy's does not exempt a connection.
        (
            &w,
            "198.18.42.2:80",
            Some(PROXY_MARK + 1),
            "local=127.0.0.1:15001 orig=198.18.42.2:80",
        ),
        // Excluded port and excluded network.
        (&w, "198.18.42.2:8080", None, "local=198.18.42.2:8080 "),
        (&w, "198.18.42.130:80", None, "local=198.18.42.130:80 "),
        (
            &w,
            "[2001:2:0:42::82]:80",
            None,
            "local=[2001:2:0:42::82]:80 ",
        ),
        // Loopback is left alone (else this would land on 15001).
        (&w, "127.0.0.1:15008", None, "local=127.0.0.1:15008 "),
        // Inbound to the workload: captured to 15006 on the address it arrived at.
        (
            &p,
            "198.18.42.1:9000",
            None,
            "local=198.18.42.1:15006 orig=198.18.42.1:9000",
        ),
        (
            &p,
            "[2001:2:0:42::1]:9000",
            None,
            "local=[2001:2:0:42::1]:15006 orig=[2001:2:0:42::1]:9000",
        ),
        // The proxy's own port and an excluded inbound port are not redirected.
        (&p, "198.18.42.1:15008", None, "local=198.18.42.1:15008 "),
        (&p, "198.18.42.1:9100", None, "local=198.18.42.1:9100 "),
    ];
    let mut failures = Vec::new();
    for (ns, addr, mark, expected) in cases {
        let got = connect_from(ns, addr, *mark);
        let ok = if expected.ends_with(' ') {
            got.starts_with(expected)
        } else {
            got == *expected
        };
        if !ok {
            failures.push(format!(
                "from {} to {addr} (mark {mark:?}): got {got:?}, want {expected:?}",
                ns.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "wrong routing:\n{}\nrules:\n{}",
        failures.join("\n"),
        _capture.listing().unwrap_or_default()
    );
}

/// Connections that were open before the rules went in are left alone: only new
/// connections are redirected, whichever way they go.
#[test]
fn established_connections_survive_installing_capture() {
    let (w, p) = linked_pair("est-w", "est-p");
    // An echo server on each side and a connection to it from the other, opened before capture.
    let w_server = echo_server(&w, "198.18.42.1:9000");
    let p_server = echo_server(&p, "198.18.42.2:80");
    let mut inbound = connect_std(&p, "198.18.42.1:9000");
    let mut outbound = connect_std(&w, "198.18.42.2:80");
    assert_eq!(echo(&mut inbound, "before"), "before");
    assert_eq!(echo(&mut outbound, "before"), "before");

    let capture = Capture::install_in(Some(&w.name), &sample_config()).unwrap();
    let after_inbound = echo(&mut inbound, "after");
    let after_outbound = echo(&mut outbound, "after");
    assert_eq!(
        (after_inbound.as_str(), after_outbound.as_str()),
        ("after", "after"),
        "rules:\n{}",
        capture.listing().unwrap_or_default()
    );
    drop((inbound, outbound));
    w_server.join().unwrap();
    p_server.join().unwrap();
}

/// A TCP echo server for one connection, listening (in `ns`) before this returns.
fn echo_server(ns: &Netns, addr: &str) -> std::thread::JoinHandle<()> {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = in_ns(ns, move || std::net::TcpListener::bind(addr))
        .join()
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// A plain blocking connection opened from inside `ns`.
fn connect_std(ns: &Netns, addr: &str) -> std::net::TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let stream = in_ns(ns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .join()
    .unwrap()
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends `msg` and returns what came back, or the error as text.
fn echo(stream: &mut std::net::TcpStream, msg: &str) -> String {
    if let Err(e) = stream.write_all(msg.as_bytes()) {
        return format!("write: {e}");
    }
    let mut buf = vec![0u8; msg.len()];
    match stream.read_exact(&mut buf) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(e) => format!("read: {e}"),
    }
}

fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> NetnsThread<T> {
    spawn_in(&ns.name, f).unwrap()
}

/// Answers every connection with `local=ADDR orig=ADDR|none` and closes it.
async fn answer_with_addresses(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let local = stream.local_addr().map(canonical).unwrap();
        let orig = original_dst(&stream)
            .map(|a| canonical(a).to_string())
            .unwrap_or_else(|_| "none".into());
        let _ = stream
            .write_all(format!("local={local} orig={orig}\n").as_bytes())
            .await;
        let _ = stream.shutdown().await;
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A configuration exercising every kind of exclusion.
fn sample_config() -> CaptureConfig {
    CaptureConfig {
        exclude_outbound_ports: vec![8080, 25],
        exclude_outbound_cidrs: vec![
            "198.18.42.128/25".parse().unwrap(),
            "2001:2:0:42::80/121".parse().unwrap(),
        ],
        exclude_inbound_ports: vec![9100],
        proxy_uid: Some(4242),
        ..CaptureConfig::default()
    }
}

/// The rules of chain `name` in an nft script or listing, trimmed, without the chain's
/// `type … hook …` line.
fn chain_rules<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("chain {name} {{");
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| *l != "}")
        .filter(|l| !l.is_empty() && !l.starts_with("type "))
        .collect()
}

/// Panics unless the test can make namespaces and nftables rules.
fn require_privileges() {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid; this avoids unsafe code for geteuid().
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap();
    assert_eq!(
        uid, 0,
        "capture tests need root (to make network namespaces and nftables rules)"
    );
    for (tool, flag) in [("nft", "--version"), ("ip", "-V")] {
        let path = find_tool(tool);
        let ok = Command::new(&path)
            .arg(flag)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "capture tests need `{tool}` ({} does not run)",
            path.display()
        );
    }
}

/// Two namespaces joined by a veth pair (`eth0` on both sides): the first has 198.18.42.1 and
/// 2001:2:0:42::1, the second 198.18.42.2 and .130 and 2001:2:0:42::2 and ::82.
fn linked_pair(a: &str, b: &str) -> (Netns, Netns) {
    let w = Netns::new(a);
    let p = Netns::new(b);
    w.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &p.name,
    ]);
    w.ip(&["addr", "add", "198.18.42.1/24", "dev", "eth0"]);
    w.ip(&["addr", "add", "2001:2:0:42::1/64", "dev", "eth0", "nodad"]);
    p.ip(&["addr", "add", "198.18.42.2/24", "dev", "eth0"]);
    p.ip(&["addr", "add", "198.18.42.130/24", "dev", "eth0"]);
    p.ip(&["addr", "add", "2001:2:0:42::2/64", "dev", "eth0", "nodad"]);
    p.ip(&["addr", "add", "2001:2:0:42::82/64", "dev", "eth0", "nodad"]);
    w.ip(&["link", "set", "eth0", "up"]);
    p.ip(&["link", "set", "eth0", "up"]);
    (w, p)
}

/// A network namespace made for one test, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        require_privileges();
        let pid = std::process::id();
        let name = format!("trcap-{pid}-{tag}");
        // Clear namespaces these tests left behind: ones of this process (same name), and ones
        // of test processes that were killed before their Drop could run.
        let list = Command::new(find_tool("ip"))
            .args(["netns", "list"])
            .output()
            .unwrap();
        for old in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            let Some(owner) = old
                .strip_prefix("trcap-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let dead = !std::path::Path::new(&format!("/proc/{owner}")).exists();
            if old == name || dead {
                let _ = Command::new(find_tool("ip"))
                    .args(["netns", "del", old])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let out = Command::new(find_tool("ip"))
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let out = Command::new(find_tool("ip"))
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        check(&out, &format!("ip -n {} {args:?}", self.name));
    }

    /// `ip netns exec NAME ARGS`, which must succeed; returns its output.
    fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args[0]).args(&args[1..]).output().unwrap();
        check(&out, &format!("{args:?} in {}", self.name));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(find_tool("ip"));
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new(find_tool("ip"))
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            other => eprintln!(
                "could not delete network namespace {}: {other:?}",
                self.name
            ),
        }
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Listeners in a namespace on `[::]:P` for each port (IPv4 too: bindv6only is off by
/// default, which also exercises `original_dst` on IPv4-mapped addresses), each answering
/// with [`answer_with_addresses`]. They stop when this is dropped.
struct Listener {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<NetnsThread<()>>,
}

impl Listener {
    fn start(ns: &Netns, ports: &[u16]) -> Listener {
        let ports = ports.to_vec();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = in_ns(ns, move || {
            block_on(async move {
                for port in ports {
                    let listener = tokio::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
                        .await
                        .unwrap_or_else(|e| panic!("bind [::]:{port}: {e}"));
                    tokio::spawn(answer_with_addresses(listener));
                }
                let _ = ready_tx.send(());
                let _ = stopped.await;
            });
        });
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let why = thread.join().err().map(|e| e.to_string());
            panic!("listeners in {} did not start: {why:?}", ns.name);
        }
        Listener {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` (with `SO_MARK` when given) and returns what the listener answered, or
/// what went wrong.
fn connect_from(ns: &Netns, addr: &str, mark: Option<u32>) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let thread = in_ns(ns, move || {
        block_on(async move {
            let mut stream =
                tokio::time::timeout(Duration::from_secs(5), connect_marked(addr, mark))
                    .await
                    .map_err(|_| "connect timed out".to_string())?
                    .map_err(|e| format!("connect: {e}"))?;
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
                .await
                .map_err(|_| "read timed out".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            Ok::<_, String>(answer.trim().to_string())
        })
    });
    match thread.join() {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    }
}
