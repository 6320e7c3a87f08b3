//! Attacks on a server workload's proxy, end to end in network namespaces: an attacker host
//! on the same LAN, with no proxy, goes for the server proxy's mTLS port (15008) while a
//! meshed client keeps calling the server through its own proxy. Each attack must be
//! refused, and the meshed traffic must not notice.
//!
//! * plaintext HTTP sent to 15008;
//! * a client certificate for a mesh identity from a foreign CA (same trust domain name);
//! * a certificate from a CA of another trust domain;
//! * an expired SVID issued by the mesh's own CA;
//! * a slowloris: hundreds of connections that never finish (or never start) a handshake;
//! * 1 MB of request headers from a meshed app through its own proxy.
//!
//! Needs root, `ip`, `nft` and `curl`; fails without.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_identity::tls::{client_config, ExpectedPeer, TrustBundle};
use trellis_identity::{CaSource, CertificateAuthority, SpiffeId, Svid};
use trellis_testkit::lan_mesh::{curl, require_tools, service_config, wait_meshed, LanMesh, Proc};
use trellis_testkit::netns::{block_on, Host, Lan};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// The service's virtual IP (its clusterIP).
const VIP: &str = "198.18.201.10";

/// A mesh with a server (`echo`, the demo app on 8080) and a client, both behind transparent
/// proxies, and an attacker host with no proxy.
struct Scene {
    client: Host,
    server: Host,
    attacker: Host,
    _procs: Vec<Proc>,
    mesh: LanMesh,
}

fn scene(n: u8) -> Scene {
    require_tools(&["ip", "nft", "curl"]).unwrap();
    let mut lan = Lan::new(n).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let attacker = lan.add_host("attacker").unwrap();
    let config = service_config("echo", VIP, &[("http", 8080)], server.ip, client.ip);
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let app = mesh.demo_app(&server, "echo", 8080).unwrap();
    let server_proxy = mesh.proxy(&server, "echo", &["http=8080"], &[]).unwrap();
    let client_proxy = mesh.proxy(&client, "client", &[], &[]).unwrap();
    wait_meshed(&[&server, &client]).unwrap();
    Scene {
        client,
        server,
        attacker,
        _procs: vec![client_proxy, server_proxy, app],
        mesh,
    }
}

impl Scene {
    /// A meshed request from the client app, with `args` before the URL: the HTTP status
    /// curl saw (0 for none).
    fn meshed_status_with(&self, args: &[&str]) -> u16 {
        let url = format!("http://{VIP}:8080/");
        curl(&self.client, &[args, &[&url]].concat())
            .unwrap()
            .status
    }

    /// A plain meshed request from the client app: the HTTP status curl saw.
    fn meshed_status(&self) -> u16 {
        self.meshed_status_with(&[])
    }

    fn inbound(&self) -> SocketAddr {
        SocketAddr::from((self.server.ip, 15008))
    }

    fn mesh_bundle(&self) -> TrustBundle {
        let pem = std::fs::read_to_string(self.mesh.tmp_path().join("data/ca/root.pem")).unwrap();
        TrustBundle::from_pem(&pem).unwrap()
    }

    /// Runs `f` on a tokio runtime in the attacker's namespace.
    fn as_attacker<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
            + Send
            + 'static,
    ) -> T {
        self.attacker
            .spawn(move || block_on(f()))
            .unwrap()
            .join()
            .unwrap()
    }
}

/// Connects to `addr` with `svid`, trusting `bundle` for the server, then sends an HTTP/2
/// preface and reads: `Ok(bytes read)` if the server answered anything over TLS, `Err` with
/// the reason when the connection was refused at any point.
async fn tls_attempt(addr: SocketAddr, svid: Svid, bundle: TrustBundle) -> Result<usize, String> {
    let config = client_config(
        Some(&svid),
        &bundle,
        ExpectedPeer::AnyInTrustDomain("cluster.local".into()),
    )
    .map_err(|e| format!("config: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("trellis").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // In TLS 1.3 the client's handshake ends before the server has checked the client's
    // certificate: a refusal arrives as an alert on the first read.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no answer in 5 s".into()),
    }
}

/// A certificate for `id` from a brand-new CA (in `dir`) the mesh has never heard of.
fn foreign_svid(dir: &Path, id: &SpiffeId) -> Svid {
    let ca =
        CertificateAuthority::load_or_create(dir, &id.trust_domain).expect("a foreign CA starts");
    ca.issue_with_local_key(id, Duration::from_secs(3600))
        .unwrap()
}

#[test]
fn attacks_on_the_inbound_port_are_refused_and_meshed_traffic_goes_on() {
    let s = scene(38);
    assert_eq!(s.meshed_status(), 200);
    let inbound = s.inbound();
    let client_id = SpiffeId::new("cluster.local", "default", "client");

    // The real thing works: a certificate from the mesh's own CA gets an HTTP/2 answer (the
    // server's SETTINGS), which shows the checks below fail for the reason they name.
    let mesh_ca = CertificateAuthority::load(
        &s.mesh.tmp_path().join("data"),
        "cluster.local",
        CaSource::SelfSigned {
            root_lifetime: Duration::from_secs(3650 * 86400),
        },
    )
    .expect("the mesh CA loads");
    let good = mesh_ca
        .issue_with_local_key(&client_id, Duration::from_secs(3600))
        .unwrap();
    let bundle = s.mesh_bundle();
    let b = bundle.clone();
    let got = s.as_attacker(move || Box::pin(tls_attempt(inbound, good, b)));
    assert!(matches!(got, Ok(n) if n > 0), "a valid SVID: {got:?}");

    // Plaintext HTTP to the mTLS port: no HTTP answer, just a closed connection.
    let got = s.as_attacker(move || {
        Box::pin(async move {
            let mut tcp = TcpStream::connect(inbound)
                .await
                .map_err(|e| e.to_string())?;
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            match tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await {
                Ok(_) => Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned()),
                Err(_) => Err("no close in 5 s".into()),
            }
        })
    });
    let answer = got.unwrap();
    assert!(
        !answer.contains("HTTP/1.1"),
        "plaintext got an answer: {answer:?}"
    );

    // A foreign CA issuing the very identity the mesh trusts.
    let tmp = tempfile::tempdir().unwrap();
    let forged = foreign_svid(&tmp.path().join("same-domain"), &client_id);
    let b = bundle.clone();
    let got = s.as_attacker(move || Box::pin(tls_attempt(inbound, forged, b)));
    assert!(got.is_err(), "foreign CA accepted: {got:?}");

    // Another trust domain altogether.
    let evil = SpiffeId::new("evil.example", "default", "client");
    let other = foreign_svid(&tmp.path().join("other-domain"), &evil);
    let b = bundle.clone();
    let got = s.as_attacker(move || Box::pin(tls_attempt(inbound, other, b)));
    assert!(got.is_err(), "other trust domain accepted: {got:?}");

    // An SVID from the mesh's own CA that has expired.
    let short = mesh_ca
        .issue_with_local_key(&client_id, Duration::from_secs(1))
        .unwrap();
    let wait = short
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_secs(2));
    let b = bundle.clone();
    let got = s.as_attacker(move || Box::pin(tls_attempt(inbound, short, b)));
    assert!(got.is_err(), "expired SVID accepted: {got:?}");

    assert_eq!(s.meshed_status(), 200, "meshed traffic after the attacks");
}

#[test]
fn a_slowloris_and_a_header_flood_leave_the_proxies_serving() {
    let s = scene(39);
    let inbound = s.inbound();

    // 300 connections to the mTLS port: half send nothing, half a partial ClientHello.
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let attacker = s
        .attacker
        .spawn(move || {
            block_on(async move {
                let mut conns = Vec::new();
                for i in 0..300 {
                    if let Ok(mut c) = TcpStream::connect(inbound).await {
                        if i % 2 == 1 {
                            // A TLS record header promising more than ever comes.
                            let _ = c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
                        }
                        conns.push(c);
                    }
                }
                let _ = opened_tx.send(conns.len());
                let _ = hold_rx.await;
                // Which of them has the server closed by now?
                let mut closed = 0;
                for c in &mut conns {
                    let mut b = [0u8; 64];
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_millis(50), c.read(&mut b)).await
                    {
                        closed += 1;
                    }
                }
                (conns.len(), closed)
            })
        })
        .unwrap();
    let opened = opened_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the attacker opened its connections");
    assert!(opened >= 250, "only {opened} attack connections opened");

    // Meanwhile, meshed requests are answered, and quickly.
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(s.meshed_status(), 200, "meshed request under slowloris");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "meshed request took {:?} under slowloris",
            started.elapsed()
        );
    }

    // The handshake deadline (10 s) closes the stalled connections.
    std::thread::sleep(Duration::from_secs(12));
    let _ = hold_tx.send(());
    let (total, closed) = attacker.join().unwrap();
    assert_eq!(
        closed, total,
        "stalled handshakes still open after the deadline"
    );

    // 1 MB of request headers from a meshed app: refused, and the next request still works.
    let big = "x".repeat(1024 * 1024);
    let header_file = s.mesh.tmp_path().join("big-header");
    std::fs::write(&header_file, format!("x-big: {big}\n")).unwrap();
    let status = s.meshed_status_with(&["-H", &format!("@{}", header_file.display())]);
    assert!(
        status == 431 || status == 0,
        "1 MB of headers got {status:?}"
    );
    assert_eq!(
        s.meshed_status(),
        200,
        "meshed request after the header flood"
    );

    // The server proxy's own memory stayed bounded through all of it.
    let rss = proxy_rss_kib(&s.server);
    assert!(rss < 64 * 1024, "server proxy RSS {rss} KiB");
}

/// Resident memory of the proxy running in `host`, from /proc.
fn proxy_rss_kib(host: &Host) -> u64 {
    let needle = format!("--address\0{}\0", host.ip);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("\0proxy\0") && cmdline.contains(&needle) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
        }
    }
    panic!("no proxy process for {}", host.ip);
}
