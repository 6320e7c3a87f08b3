//! `handshake`: the CPU cost of the mutual TLS handshake between two Trellis proxies.
//!
//! Both ends use the identity crate's real rustls configurations (TLS 1.3 only, ECDSA P-256
//! SVIDs from a freshly created mesh CA, client certificates required, SPIFFE verifiers). The
//! two connections are driven in memory on one thread, passing TLS records through `Vec`
//! buffers, so the figures are handshake CPU only: no sockets, no syscalls for I/O, no
//! scheduler wake-ups. Each side's work is timed with its thread CPU clock, so the client and
//! server columns are what each proxy would spend per new connection.
//!
//! Every handshake ends with a small application-data round trip (client → server, then
//! server → client). That is what makes the exchange complete: the server sends its session
//! tickets after the client's Finished, and the client only stores them once it reads them.
//!
//! Rows, measured interleaved so that frequency drift or a noisy neighbour hits all of them
//! alike:
//!
//! * full handshake with the default group preference (X25519MLKEM768),
//! * full handshake with the client restricted to X25519,
//! * resumed handshake (TLS 1.3 ticket from the previous connection, still with a fresh key
//!   exchange, as rustls always uses `psk_dhe_ke`),
//! * a crypto floor: one ECDSA P-256 sign, one verify and one X25519 key agreement, the
//!   primitives a full handshake is made of.
//!
//! Every measured handshake is checked to be of the intended kind (full or resumed), to have
//! negotiated the intended group and `h2`, and to have authenticated the client; the program
//! fails rather than print a mislabelled row.
//!
//! ```text
//! cargo run --release -p trellis-bench --bin handshake -- [--iterations N] [--warmup N]
//! ```

#![deny(unsafe_op_in_unsafe_fn)]

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use rustls::client::Resumption;
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::CryptoProvider;
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, NamedGroup,
    ServerConfig, ServerConnection,
};
use rustls_pki_types::ServerName;
use trellis_identity::tls::{self, ClientAuth, ExpectedPeer, ALPN_H2};
use trellis_identity::{CertificateAuthority, SpiffeId, SpiffeServerVerifier, Svid};

const USAGE: &str = "\
usage: handshake [--iterations N] [--warmup N]

Measures the CPU cost of Trellis' mutual TLS handshake (full and resumed) in memory.

  --iterations N   measured handshakes per row (default 2000)
  --warmup N       unmeasured handshakes per row before measuring (default 200)
";

const TRUST_DOMAIN: &str = "cluster.local";
const PING: &[u8] = b"ping";
const PONG: &[u8] = b"pong";

/// A full handshake takes two client flights after the ClientHello; anything far beyond
/// that means the peers are stuck, and the bench should say so rather than spin.
const MAX_FLIGHTS: usize = 8;

/// Roughly what a TLS 1.3 CertificateVerify signs: 64 spaces, a context string, a zero byte
/// and a SHA-256 transcript hash. The content does not matter, the length barely does.
const SIGNED_LEN: usize = 64 + 34 + 32;

struct Args {
    iterations: usize,
    warmup: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        iterations: 2000,
        warmup: 200,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        // Accept both `--flag N` and `--flag=N`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--iterations" => args.iterations = parse_count(&flag, &value()?)?,
            "--warmup" => args.warmup = parse_count(&flag, &value()?)?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    ensure!(args.iterations > 0, "--iterations must be at least 1");
    Ok(args)
}

fn parse_count(flag: &str, value: &str) -> Result<usize> {
    value
        .parse()
        .with_context(|| format!("{flag} expects a non-negative integer, got {value:?}"))
}

/// CPU time consumed by the calling thread, in nanoseconds.
///
/// Thread CPU time rather than wall time, so that neither preemption by other processes
/// nor the (absent) I/O shows up in the figures.
fn thread_cpu_ns() -> Result<u64> {
    let mut ts = MaybeUninit::<libc::timespec>::uninit();
    // SAFETY: `ts.as_mut_ptr()` points to writable memory sized and aligned for a
    // `timespec`, valid for the whole call; `clock_gettime` initializes it fully when it
    // returns 0, and we only read it (`assume_init`) in that case.
    let ts = unsafe {
        if libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, ts.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error())
                .context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        }
        ts.assume_init()
    };
    // Both fields are non-negative for a CPU-time clock; fall back to 0 rather than wrap.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs * 1_000_000_000 + nanos)
}

/// CPU nanoseconds since `start`, a reading from [`thread_cpu_ns`].
fn cpu_since(start: u64) -> Result<u64> {
    Ok(thread_cpu_ns()?.saturating_sub(start))
}

/// The in-memory "network" between the two connections, reused across handshakes so the
/// figures do not include growing fresh buffers.
#[derive(Default)]
struct Wire {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    server_got: Vec<u8>,
    client_got: Vec<u8>,
}

impl Wire {
    fn clear(&mut self) {
        self.to_server.clear();
        self.to_client.clear();
        self.server_got.clear();
        self.client_got.clear();
    }
}

/// Queues everything `conn` wants to send onto `wire`.
fn send<D>(conn: &mut ConnectionCommon<D>, wire: &mut Vec<u8>) -> Result<()> {
    while conn.wants_write() {
        conn.write_tls(wire).context("write_tls")?;
    }
    Ok(())
}

/// Feeds all of `wire` to `conn`, processing records as they arrive (rustls' receive buffer
/// is bounded, so reading everything before processing could fail on a large flight).
fn receive<D>(conn: &mut ConnectionCommon<D>, wire: &mut Vec<u8>) -> Result<()> {
    let mut rest = wire.as_slice();
    while !rest.is_empty() {
        let n = conn.read_tls(&mut rest).context("read_tls")?;
        ensure!(
            n > 0,
            "read_tls accepted no bytes with {} pending",
            rest.len()
        );
        conn.process_new_packets()?;
    }
    wire.clear();
    Ok(())
}

/// Appends whatever application data `conn` has decrypted to `out`.
fn read_plaintext<D>(conn: &mut ConnectionCommon<D>, out: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 64];
    loop {
        match conn.reader().read(&mut chunk) {
            // 0 means the peer closed cleanly; neither side does here, but it is not an error.
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e).context("reading application data"),
        }
    }
}

/// What one handshake cost and what it negotiated.
struct Handshake {
    client_ns: u64,
    server_ns: u64,
    kind: HandshakeKind,
    group: NamedGroup,
    suite: CipherSuite,
}

/// Runs one complete handshake plus the application-data round trip, timing each side.
fn handshake(
    client_config: &Arc<ClientConfig>,
    server_config: &Arc<ServerConfig>,
    server_name: &ServerName<'static>,
    client_id: &SpiffeId,
    wire: &mut Wire,
) -> Result<Handshake> {
    wire.clear();
    let mut client_ns = 0;
    let mut server_ns = 0;

    // Creating the client connection already builds the ClientHello, including the key
    // share, so it belongs in the client's time.
    let start = thread_cpu_ns()?;
    let mut client = ClientConnection::new(client_config.clone(), server_name.clone())
        .context("creating the client connection")?;
    send(&mut client, &mut wire.to_server)?;
    client_ns += cpu_since(start)?;

    let start = thread_cpu_ns()?;
    let mut server =
        ServerConnection::new(server_config.clone()).context("creating the server connection")?;
    server_ns += cpu_since(start)?;

    let mut ping_sent = false;
    let mut pong_sent = false;
    for _ in 0..MAX_FLIGHTS {
        let start = thread_cpu_ns()?;
        receive(&mut server, &mut wire.to_server).context("server")?;
        read_plaintext(&mut server, &mut wire.server_got)?;
        if !pong_sent && wire.server_got == PING {
            server.writer().write_all(PONG)?;
            pong_sent = true;
        }
        send(&mut server, &mut wire.to_client)?;
        server_ns += cpu_since(start)?;

        let start = thread_cpu_ns()?;
        receive(&mut client, &mut wire.to_client).context("client")?;
        read_plaintext(&mut client, &mut wire.client_got)?;
        if !ping_sent && !client.is_handshaking() {
            client.writer().write_all(PING)?;
            ping_sent = true;
        }
        send(&mut client, &mut wire.to_server)?;
        client_ns += cpu_since(start)?;

        if wire.client_got == PONG {
            break;
        }
    }
    ensure!(
        wire.client_got == PONG && wire.server_got == PING,
        "no application-data round trip after {MAX_FLIGHTS} flights \
         (server got {:?}, client got {:?})",
        String::from_utf8_lossy(&wire.server_got),
        String::from_utf8_lossy(&wire.client_got),
    );

    // Checks, outside the timed sections: both sides must agree on what happened, and the
    // server must know who the client is (on resumption, from the stored session).
    let kind = client
        .handshake_kind()
        .context("client does not know the handshake kind")?;
    ensure!(
        server.handshake_kind() == Some(kind),
        "client saw a {kind:?} handshake, server {:?}",
        server.handshake_kind()
    );
    let group = client
        .negotiated_key_exchange_group()
        .context("client negotiated no key-exchange group")?
        .name();
    let server_group = server.negotiated_key_exchange_group().map(|g| g.name());
    ensure!(
        server_group == Some(group),
        "client negotiated {group:?}, server {server_group:?}"
    );
    let suite = client
        .negotiated_cipher_suite()
        .context("client negotiated no cipher suite")?
        .suite();
    ensure!(
        client.alpn_protocol() == Some(ALPN_H2) && server.alpn_protocol() == Some(ALPN_H2),
        "ALPN h2 was not negotiated"
    );
    let peer = tls::peer_identity(server.peer_certificates())
        .context("server has no verified client identity")?;
    ensure!(
        peer == *client_id,
        "server sees client {peer}, expected {client_id}"
    );

    Ok(Handshake {
        client_ns,
        server_ns,
        kind,
        group,
        suite,
    })
}

/// One handshake row of the table.
struct Scenario {
    label: &'static str,
    client_config: Arc<ClientConfig>,
    expect_kind: HandshakeKind,
    expect_group: NamedGroup,
    client_ns: Vec<u64>,
    server_ns: Vec<u64>,
}

impl Scenario {
    fn new(
        label: &'static str,
        client_config: Arc<ClientConfig>,
        expect_kind: HandshakeKind,
        expect_group: NamedGroup,
        capacity: usize,
    ) -> Self {
        Self {
            label,
            client_config,
            expect_kind,
            expect_group,
            client_ns: Vec::with_capacity(capacity),
            server_ns: Vec::with_capacity(capacity),
        }
    }

    /// Runs one handshake, checks it is what this row claims to measure, and records it if
    /// `record`.
    fn run(&mut self, env: &mut Env, record: bool) -> Result<()> {
        let hs = handshake(
            &self.client_config,
            &env.server_config,
            &env.server_name,
            &env.client_id,
            &mut env.wire,
        )
        .with_context(|| format!("{}: handshake failed", self.label))?;
        if hs.kind != self.expect_kind {
            if self.expect_kind == HandshakeKind::Resumed {
                bail!(
                    "{}: expected a resumed handshake, got {:?}. The client offered a ticket \
                     from its previous connection but the server did not accept it, so \
                     resumption does not work with trellis_identity::tls::server_config / \
                     client_config as built",
                    self.label,
                    hs.kind
                );
            }
            bail!(
                "{}: expected a {:?} handshake, got {:?}",
                self.label,
                self.expect_kind,
                hs.kind
            );
        }
        ensure!(
            hs.group == self.expect_group,
            "{}: expected key exchange {:?}, negotiated {:?}",
            self.label,
            self.expect_group,
            hs.group
        );
        // The suite changes the key schedule's hash, so rows are only comparable if they
        // all negotiated the same one.
        let suite = *env.suite.get_or_insert(hs.suite);
        ensure!(
            hs.suite == suite,
            "{}: negotiated {:?}, other handshakes {suite:?}",
            self.label,
            hs.suite
        );
        if record {
            self.client_ns.push(hs.client_ns);
            self.server_ns.push(hs.server_ns);
        }
        Ok(())
    }
}

/// What every handshake shares: the server side and the expected identities.
struct Env {
    server_config: Arc<ServerConfig>,
    server_name: ServerName<'static>,
    client_id: SpiffeId,
    wire: Wire,
    /// The cipher suite every handshake negotiated.
    suite: Option<CipherSuite>,
}

/// The crypto-floor row: the handshake's primitives, timed one by one.
struct Floor {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    message: [u8; SIGNED_LEN],
    x25519_peer: Vec<u8>,
    sign_ns: Vec<u64>,
    verify_ns: Vec<u64>,
    x25519_ns: Vec<u64>,
    hybrid_client_ns: Vec<u64>,
    hybrid_server_ns: Vec<u64>,
}

impl Floor {
    fn new(svid: &Svid, capacity: usize) -> Result<Self> {
        // The SVID's own key, so the floor signs with exactly what the handshake signs with.
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, svid.key.secret_der())
            .map_err(|e| anyhow::anyhow!("loading the SVID key into aws-lc-rs: {e}"))?;
        let peer = kx_group::X25519.start().context("X25519 key generation")?;
        Ok(Self {
            key,
            rng: SystemRandom::new(),
            message: [0x20; SIGNED_LEN],
            x25519_peer: peer.pub_key().to_vec(),
            sign_ns: Vec::with_capacity(capacity),
            verify_ns: Vec::with_capacity(capacity),
            x25519_ns: Vec::with_capacity(capacity),
            hybrid_client_ns: Vec::with_capacity(capacity),
            hybrid_server_ns: Vec::with_capacity(capacity),
        })
    }

    fn run(&mut self, record: bool) -> Result<()> {
        let err = |what: &'static str| {
            move |e: aws_lc_rs::error::Unspecified| anyhow::anyhow!("{what}: {e}")
        };

        let start = thread_cpu_ns()?;
        let signature = self
            .key
            .sign(&self.rng, &self.message)
            .map_err(err("ECDSA sign"))?;
        let sign = cpu_since(start)?;

        // Verifying from the encoded public key, as webpki does with a certificate's key,
        // so point decoding is included.
        let start = thread_cpu_ns()?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, self.key.public_key().as_ref())
            .verify(&self.message, signature.as_ref())
            .map_err(err("ECDSA verify"))?;
        let verify = cpu_since(start)?;

        // One side's share of an X25519 exchange, through the same rustls provider object
        // the handshake uses: generate a key pair, then agree with the peer's public key.
        let start = thread_cpu_ns()?;
        kx_group::X25519
            .start()
            .context("X25519 key generation")?
            .complete(&self.x25519_peer)
            .context("X25519 agreement")?;
        let x25519 = cpu_since(start)?;

        // Both sides of the hybrid exchange, for comparison with the X25519 row: the client
        // generates and later decapsulates, the server encapsulates.
        let start = thread_cpu_ns()?;
        let client_kx = kx_group::X25519MLKEM768
            .start()
            .context("X25519MLKEM768 key generation")?;
        let mut hybrid_client = cpu_since(start)?;
        let client_share = client_kx.pub_key().to_vec();
        let start = thread_cpu_ns()?;
        let server_kx = kx_group::X25519MLKEM768
            .start_and_complete(&client_share)
            .context("X25519MLKEM768 encapsulation")?;
        let hybrid_server = cpu_since(start)?;
        let start = thread_cpu_ns()?;
        client_kx
            .complete(&server_kx.pub_key)
            .context("X25519MLKEM768 decapsulation")?;
        hybrid_client += cpu_since(start)?;

        if record {
            self.sign_ns.push(sign);
            self.verify_ns.push(verify);
            self.x25519_ns.push(x25519);
            self.hybrid_client_ns.push(hybrid_client);
            self.hybrid_server_ns.push(hybrid_server);
        }
        Ok(())
    }
}

/// Order statistics of a set of samples, in nanoseconds.
struct Stats {
    p50: u64,
    p99: u64,
    mean: f64,
}

impl Stats {
    fn of(samples: &[u64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().map(|&x| x as f64).sum::<f64>() / sorted.len() as f64
        };
        Self {
            p50: percentile(&sorted, 0.50),
            p99: percentile(&sorted, 0.99),
            mean,
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn us_f(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

fn sum_pairwise(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// nproc, CPU model, kernel and date, for the header line.
fn machine_facts() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // x86 says "model name"; some Arm kernels only have "Hardware" or nothing useful.
    let model = ["model name", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| format!("Linux {}", release.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_owned());
    let now = time::OffsetDateTime::now_utc();
    format!(
        "nproc {nproc}, {model}, {kernel}, {} {:02}:{:02} UTC",
        now.date(),
        now.hour(),
        now.minute()
    )
}

/// Average cost of one clock reading, which every timed section pays once or twice.
fn timer_overhead_ns() -> Result<f64> {
    const READINGS: u64 = 10_000;
    let start = thread_cpu_ns()?;
    for _ in 0..READINGS {
        thread_cpu_ns()?;
    }
    Ok(cpu_since(start)? as f64 / READINGS as f64)
}

/// The identity crate's client config, rebuilt with the same settings except that the
/// client only offers `group`.
///
/// rustls fixes a config's crypto provider when it is built, so restricting the groups
/// means building a new config. This mirrors `trellis_identity::tls::client_config`
/// (TLS 1.3, SPIFFE server verifier, client SVID, ALPN h2), and every handshake made with
/// it is still checked to negotiate h2 and identify the client, like all the others.
fn client_config_with_group(
    base: &ClientConfig,
    group: &'static dyn rustls::crypto::SupportedKxGroup,
    svid: &Svid,
    verifier: SpiffeServerVerifier,
) -> Result<Arc<ClientConfig>> {
    let provider = CryptoProvider {
        kx_groups: vec![group],
        ..(**base.crypto_provider()).clone()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(svid.cert_chain.clone(), svid.key.clone_key())?;
    config.alpn_protocols = base.alpn_protocols.clone();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

fn main() -> Result<()> {
    let args = parse_args()?;

    let dir = tempfile::tempdir().context("creating a temporary CA directory")?;
    let ca = CertificateAuthority::load_or_create(dir.path(), TRUST_DOMAIN)?;
    let id_a = SpiffeId::new(TRUST_DOMAIN, "default", "a");
    let id_b = SpiffeId::new(TRUST_DOMAIN, "default", "b");
    let lifetime = Duration::from_secs(3600);
    let svid_a = ca.issue_with_local_key(&id_a, lifetime)?;
    let svid_b = ca.issue_with_local_key(&id_b, lifetime)?;
    let bundle = ca.trust_bundle();

    let server_config = tls::server_config(&svid_b, &bundle, ClientAuth::Required)?;
    let expected = ExpectedPeer::OneOf(vec![id_b.clone()]);
    // The identity crate's client config as is: its session cache is what resumes.
    let resuming = tls::client_config(Some(&svid_a), &bundle, expected.clone())?;
    // The same configuration with resumption off. Left on, the clone would share the
    // session cache (an Arc inside the config) and resume.
    let mut full_default = (*resuming).clone();
    full_default.resumption = Resumption::disabled();
    let full_default = Arc::new(full_default);
    let full_x25519 = client_config_with_group(
        &resuming,
        kx_group::X25519,
        &svid_a,
        SpiffeServerVerifier::new(&bundle, expected.clone())?,
    )?;
    // For comparison only: how much of a resumption is the hybrid key exchange.
    let mut resuming_x25519 = (*client_config_with_group(
        &resuming,
        kx_group::X25519,
        &svid_a,
        SpiffeServerVerifier::new(&bundle, expected)?,
    )?)
    .clone();
    resuming_x25519.resumption = Resumption::default();
    let resuming_x25519 = Arc::new(resuming_x25519);

    // Tell the reader up front whether the server can resume at all: with no ticketer,
    // rustls falls back to stateful TLS 1.3 tickets kept in `session_storage`.
    let server_resumption = format!(
        "Server resumption: ticketer {}, session cache {}, {} TLS 1.3 tickets per connection",
        if server_config.ticketer.enabled() {
            "enabled (stateless tickets)"
        } else {
            "disabled (stateful tickets)"
        },
        if server_config.session_storage.can_cache() {
            "enabled"
        } else {
            "disabled"
        },
        server_config.send_tls13_tickets,
    );

    let mut env = Env {
        server_config,
        server_name: ServerName::try_from("b.default.svc.cluster.local")?,
        client_id: id_a,
        wire: Wire::default(),
        suite: None,
    };

    let capacity = args.iterations;
    let mut rows = [
        Scenario::new(
            "full",
            full_default,
            HandshakeKind::Full,
            NamedGroup::X25519MLKEM768,
            capacity,
        ),
        Scenario::new(
            "full",
            full_x25519,
            HandshakeKind::Full,
            NamedGroup::X25519,
            capacity,
        ),
        Scenario::new(
            "resumed",
            resuming.clone(),
            HandshakeKind::Resumed,
            NamedGroup::X25519MLKEM768,
            capacity,
        ),
        Scenario::new(
            "resumed",
            resuming_x25519.clone(),
            HandshakeKind::Resumed,
            NamedGroup::X25519,
            capacity,
        ),
    ];

    // Prime the resuming client's session cache: its first connection is necessarily full.
    let mut prime = Scenario::new(
        "priming the session cache",
        resuming,
        HandshakeKind::Full,
        NamedGroup::X25519MLKEM768,
        0,
    );
    prime.run(&mut env, false)?;
    let mut prime = Scenario::new(
        "priming the X25519 session cache",
        resuming_x25519,
        HandshakeKind::Full,
        NamedGroup::X25519,
        0,
    );
    prime.run(&mut env, false)?;

    let mut floor = Floor::new(&svid_a, capacity)?;
    let overhead = timer_overhead_ns()?;

    // Interleave the rows so that anything slow-changing on the machine affects all alike.
    for i in 0..args.warmup + args.iterations {
        let record = i >= args.warmup;
        for row in &mut rows {
            row.run(&mut env, record)?;
        }
        floor.run(record)?;
    }

    println!("## Trellis mTLS handshake CPU cost");
    println!();
    println!("Machine: {}", machine_facts());
    println!();
    println!(
        "{} measured handshakes per row after {} warm-up, interleaved; one thread, in-memory \
         transport; TLS 1.3 ({suite}), ECDSA P-256 SVIDs, client certificate required, ALPN \
         h2, plus a 4-byte request and response. CPU time from CLOCK_THREAD_CPUTIME_ID \
         (≈{overhead:.0} ns per reading, included); total = client + server. \
         {server_resumption}.",
        args.iterations,
        args.warmup,
        suite = env
            .suite
            .map_or_else(|| "no suite".to_owned(), |s| format!("{s:?}")),
    );
    println!();
    println!(
        "| handshake | key exchange | client CPU p50 | client CPU p99 | server CPU p50 \
         | server CPU p99 | total p50 | total mean |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|");
    for row in &rows {
        let client = Stats::of(&row.client_ns);
        let server = Stats::of(&row.server_ns);
        let total = Stats::of(&sum_pairwise(&row.client_ns, &row.server_ns));
        println!(
            "| {} | {:?} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.expect_group,
            us(client.p50),
            us(client.p99),
            us(server.p50),
            us(server.p99),
            us(total.p50),
            us_f(total.mean),
        );
    }
    let floor_total = Stats::of(&sum_pairwise(
        &sum_pairwise(&floor.sign_ns, &floor.verify_ns),
        &floor.x25519_ns,
    ));
    println!(
        "| crypto floor: 1 sign + 1 verify + 1 X25519 | X25519 | – | – | – | – | {} | {} |",
        us(floor_total.p50),
        us_f(floor_total.mean),
    );

    let sign = Stats::of(&floor.sign_ns);
    let verify = Stats::of(&floor.verify_ns);
    let x25519 = Stats::of(&floor.x25519_ns);
    let hybrid_client = Stats::of(&floor.hybrid_client_ns);
    let hybrid_server = Stats::of(&floor.hybrid_server_ns);
    // Per side, a full mutual-TLS 1.3 handshake signs its CertificateVerify once, verifies
    // the peer's certificate and the peer's CertificateVerify, and does one key exchange.
    let full_primitives = 2 * (sign.p50 + 2 * verify.p50 + x25519.p50);
    println!();
    println!(
        "Primitives (p50, aws-lc-rs): ECDSA P-256 sign {}, verify {}; X25519 keygen + \
         agreement {}; X25519MLKEM768 client side (keygen + decapsulation) {}, server side \
         (encapsulation) {}. A full mutual handshake needs, per side, 1 sign + 2 verifies + \
         1 key exchange: with X25519 that is {} of primitives for both sides together.",
        us(sign.p50),
        us(verify.p50),
        us(x25519.p50),
        us(hybrid_client.p50),
        us(hybrid_server.p50),
        us(full_primitives),
    );
    Ok(())
}
