//! End to end in network namespaces, one test per application protocol that must cross two
//! transparent proxies untouched: client app → nftables capture → client proxy → mTLS
//! HTTP/2 → server proxy → server app, the apps unaware of the mesh.
//!
//! * gRPC with a real tonic client and server: unary replies, error statuses (trailers-only
//!   and after streamed messages), and bidirectional streaming in lock-step, which hangs on
//!   any hop that holds a stream back.
//! * WebSocket (an HTTP/1.1 `Upgrade`) with tokio-tungstenite: text and binary messages
//!   echoed, a clean close, and a refused upgrade reaching the client with its body.
//! * Opaque TCP and TLS routed by a VirtualService's `tcp` and `tls` (server name) rules.
//!
//! The apps run on threads inside the hosts' namespaces, each with a tokio runtime of its
//! own. Needs root, `ip`, `nft` and `curl`; fails without.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;
use trellis_testkit::grpc_echo::{self, EchoClient, EchoRequest};
use trellis_testkit::lan_mesh::{require_tools, service_config, wait_meshed, LanMesh, Proc};
use trellis_testkit::netns::{block_on, Host, Lan};

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// The echo service's virtual IP (its clusterIP).
const VIP: &str = "198.18.200.10";
/// What the server proxy tells its app about the caller.
const XFCC: &str =
    "By=spiffe://cluster.local/ns/default/sa/echo;URI=spiffe://cluster.local/ns/default/sa/client";
/// How long one message may take to come back. Far above a round trip here (milliseconds),
/// so only a message held back on the way runs into it.
const STEP: Duration = Duration::from_secs(10);

/// Two hosts on a LAN with a mesh: `server` runs workload `echo-1` behind the `echo` service
/// (with `ports`), `client` runs `client-1`; both proxies are ready.
struct TwoHosts {
    client: Host,
    server: Host,
    // Dropped before the mesh, which deletes the namespaces they run in.
    _proxies: [Proc; 2],
    _mesh: LanMesh,
}

fn two_hosts(lan: u8, ports: &[(&str, u16)]) -> TwoHosts {
    require_tools(&["ip", "nft", "curl"]).unwrap();
    let mut lan = Lan::new(lan).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let config = service_config("echo", VIP, ports, server.ip, client.ip);
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let declared: Vec<String> = ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
    let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
    let server_proxy = mesh.proxy(&server, "echo", &declared, &[]).unwrap();
    let client_proxy = mesh.proxy(&client, "client", &[], &[]).unwrap();
    wait_meshed(&[&server, &client]).unwrap();
    TwoHosts {
        client,
        server,
        _proxies: [server_proxy, client_proxy],
        _mesh: mesh,
    }
}

/// Listens on `port` of `host` (bound before this returns, so no client can come too early)
/// and runs `serve` on it on a thread inside the host, until the test process ends.
fn serve_in<F, Fut>(host: &Host, port: u16, serve: F)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let ip = host.ip;
    let listener = host
        .spawn(move || std::net::TcpListener::bind((ip, port)))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    host.spawn(move || {
        block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serve(listener).await;
        });
    })
    .unwrap();
}

/// Runs `client` to completion on a thread inside `host`; its sockets are opened there, so
/// the capture rules send them to the client proxy.
fn run_in<F, Fut>(host: &Host, client: F) -> Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>>,
{
    host.spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(client())
    })?
    .join()?
}

/// The next item of `stream`, or an error naming `what` if it takes longer than [`STEP`].
async fn next<S: futures_util::Stream + Unpin>(stream: &mut S, what: &str) -> Result<S::Item> {
    tokio::time::timeout(STEP, stream.next())
        .await
        .map_err(|_| anyhow!("{what}: nothing within {STEP:?} (held back on the way?)"))?
        .ok_or_else(|| anyhow!("{what}: the stream ended"))
}

// === gRPC ===

const GRPC_PORT: u16 = 50051;

#[test]
fn grpc_unary_and_bidi_streaming_cross_two_transparent_proxies() {
    let hosts = two_hosts(32, &[("grpc", GRPC_PORT)]);
    serve_in(&hosts.server, GRPC_PORT, |listener| async move {
        if let Err(e) = grpc_echo::serve(listener).await {
            eprintln!("gRPC echo server: {e}");
        }
    });
    run_in(&hosts.client, grpc_client).unwrap();
}

fn request(message: impl Into<String>, fail_with: Code) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        fail_with: fail_with as i32,
    }
}

async fn grpc_client() -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{VIP}:{GRPC_PORT}"))?
        .connect_timeout(STEP)
        .timeout(STEP)
        .connect()
        .await
        .context("connecting to the echo service")?;
    let mut echo = EchoClient::new(channel);

    // Unary: the reply, and the caller identity the server's proxy vouched for.
    let reply = echo.unary(request("hello", Code::Ok)).await?.into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.client_cert, XFCC);
    // A message over many HTTP/2 frames and flow-control windows.
    let big = "m".repeat(1 << 20);
    let reply = echo
        .unary(request(big.clone(), Code::Ok))
        .await?
        .into_inner();
    assert!(reply.message == big, "1 MiB message came back altered");

    // An error status from the server reaches the client as that status and message. Here
    // it is trailers-only (grpc-status in the response headers).
    let status = echo
        .unary(request("no such greeting", Code::NotFound))
        .await
        .expect_err("the server fails this call");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no such greeting");

    // Bidirectional streaming in lock-step: request N+1 is sent only once reply N is in, so
    // a hop that waits for a whole body (or holds frames back) stalls the stream. Then a
    // status after streamed messages: it can only travel in HTTP/2 trailers.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("msg 1", Code::Ok)).await?;
    let mut replies = tokio::time::timeout(
        STEP,
        echo.bidi(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .context("bidi call: no response headers")??
    .into_inner();
    const N: u64 = 20;
    for i in 1..=N {
        let reply = next(&mut replies, &format!("reply {i}")).await??;
        assert_eq!(reply.sequence, i);
        assert_eq!(reply.message, format!("msg {i}"));
        assert_eq!(reply.client_cert, XFCC);
        if i < N {
            tx.send(request(format!("msg {}", i + 1), Code::Ok)).await?;
        }
    }
    tx.send(request("quota used up", Code::ResourceExhausted))
        .await?;
    let status = next(&mut replies, "the failing reply")
        .await?
        .expect_err("the server ends the stream with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "quota used up");

    // A stream the client ends: it closes cleanly with status OK (trailers again).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("only", Code::Ok)).await?;
    let mut replies = echo
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    assert_eq!(next(&mut replies, "the only reply").await??.message, "only");
    drop(tx);
    let end = tokio::time::timeout(STEP, replies.message())
        .await
        .context("the stream did not end")?;
    ensure!(matches!(end, Ok(None)), "expected a clean end, got {end:?}");
    Ok(())
}

// === WebSocket ===

const WS_PORT: u16 = 8080;

#[test]
fn websocket_crosses_two_transparent_proxies() {
    let hosts = two_hosts(33, &[("http", WS_PORT)]);
    serve_in(&hosts.server, WS_PORT, |listener| async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(ws_echo(tcp));
        }
    });
    run_in(&hosts.client, ws_client).unwrap();
}

/// A WebSocket echo server on `/echo`; other paths are refused with 403 and a body. The 101
/// reports back what the server saw of the upgrade request (`x-seen-*` headers).
async fn ws_echo(tcp: tokio::net::TcpStream) {
    // The callback's type is tungstenite's, refusal (a whole response) included.
    #[allow(clippy::result_large_err)]
    let check = |req: &http::Request<()>, mut resp: http::Response<()>| {
        if req.uri().path() != "/echo" {
            let mut refusal = http::Response::new(Some(format!("no room at {}", req.uri())));
            *refusal.status_mut() = http::StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        for (seen, name) in [
            ("x-seen-client-cert", "x-forwarded-client-cert"),
            ("x-seen-host", "host"),
        ] {
            let value = req
                .headers()
                .get(name)
                .cloned()
                .unwrap_or(http::HeaderValue::from_static("(none)"));
            resp.headers_mut().insert(seen, value);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else {
        return;
    };
    // Reading on after the client's Close is what sends tungstenite's answer to it.
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

async fn ws_client() -> Result<()> {
    let addr = format!("{VIP}:{WS_PORT}");

    // A refused upgrade: the server's status and body reach the client. Read with hyper,
    // which reads the whole answer (tungstenite keeps only what arrived with the head).
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let offer = http::Request::get("/elsewhere")
        .header(http::header::HOST, &addr)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let refusal = tokio::time::timeout(STEP, async {
        let resp = sender.send_request(offer).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, body))
    })
    .await
    .context("refused upgrade: no answer")??;
    assert_eq!(refusal.0, http::StatusCode::FORBIDDEN);
    assert_eq!(refusal.1, "no room at /elsewhere");

    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let (mut ws, resp) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://{addr}/echo"), tcp),
    )
    .await
    .context("handshake: no answer")?
    .context("handshake")?;
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    // The upgrade went through the server proxy as HTTP: the app saw the caller's verified
    // identity and the authority the client addressed.
    assert_eq!(resp.headers()["x-seen-client-cert"], XFCC);
    assert_eq!(resp.headers()["x-seen-host"], addr.as_str());

    let messages = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 0xfe, 0xff]),
        Message::text("ünïcødé ✓"),
        // Many frames and TCP segments, both directions.
        Message::binary(vec![0x5a; 256 * 1024]),
        Message::text("last"),
    ];
    for (i, msg) in messages.into_iter().enumerate() {
        ws.send(msg.clone()).await?;
        let echoed = next(&mut ws, &format!("echo of message {i}")).await??;
        assert!(echoed == msg, "message {i} came back altered");
    }

    // A clean close: our Close is answered with one, then the connection ends.
    ws.close(None).await?;
    let answer = next(&mut ws, "close answer").await?;
    ensure!(
        matches!(answer, Ok(Message::Close(_))),
        "expected the server's Close, got {answer:?}"
    );
    let end = tokio::time::timeout(STEP, ws.next())
        .await
        .context("connection not closed after the closing handshake")?;
    ensure!(end.is_none(), "expected the end, got {end:?}");
    Ok(())
}

// === opaque TCP and TLS, routed ===

const TCP_PORT: u16 = 9000;
const TLS_PORT: u16 = 9443;

/// The first flight of a TLS client asking for server name `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    use tokio_rustls::rustls;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("tls");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

/// A VirtualService sends connections made to `echo` elsewhere: its `tcp` rule sends port
/// 9000 to `other`, and its `tls` rule sends port 9443 connections asking for server name
/// `other.example.com` to `other`, while other names go to `echo` as addressed. The server
/// apps write their own name (on 9443 after reading the ClientHello's record) and close, so
/// the answer says who was reached; the client dials echo's virtual IP every time.
#[test]
fn tcp_and_tls_routes_send_connections_where_the_rule_says() {
    require_tools(&["ip", "nft", "curl"]).unwrap();
    let mut lan = Lan::new(43).expect("LAN (needs root)");
    let client = lan.add_host("client").unwrap();
    let server = lan.add_host("server").unwrap();
    let other = lan.add_host("other").unwrap();
    let ports = [("tcp", TCP_PORT), ("tls", TLS_PORT)];
    let mut config = service_config("echo", VIP, &ports, server.ip, client.ip);
    config.push_str(&format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: other\nspec:\n  \
         clusterIP: 198.18.200.11\n  selector:\n    app: other\n  ports:\n  - name: tcp\n    \
         port: {TCP_PORT}\n  - name: tls\n    port: {TLS_PORT}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
         metadata:\n  name: other-1\nspec:\n  address: {}\n  serviceAccount: other\n  labels:\n    \
         app: other\n  ports:\n    tcp: {TCP_PORT}\n    tls: {TLS_PORT}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  \
         name: echo-to-other\nspec:\n  hosts:\n  - echo\n  tls:\n  - match:\n    - port: {TLS_PORT}\n      \
         sniHosts:\n      - other.example.com\n    route:\n    - destination:\n        host: other\n  \
         tcp:\n  - match:\n    - port: {TCP_PORT}\n    route:\n    - destination:\n        \
         host: other\n",
        other.ip
    ));
    let mesh = LanMesh::start(Path::new(BIN), lan, &config).unwrap();
    let declared = [format!("tcp={TCP_PORT}"), format!("tls={TLS_PORT}")];
    let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
    let _proxies = [
        mesh.proxy(&server, "echo", &declared, &[]).unwrap(),
        mesh.proxy(&other, "other", &declared, &[]).unwrap(),
        mesh.proxy(&client, "client", &[], &[]).unwrap(),
    ];
    wait_meshed(&[&server, &other, &client]).unwrap();
    for (host, name) in [(&server, "echo"), (&other, "other")] {
        serve_in(host, TCP_PORT, move |listener| async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.write_all(name.as_bytes()).await;
                let _ = tcp.shutdown().await;
            }
        });
        serve_in(host, TLS_PORT, move |listener| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut tcp, _)) = listener.accept().await {
                // The whole first record (the ClientHello), so nothing unread is left.
                let mut head = [0u8; 5];
                if tcp.read_exact(&mut head).await.is_err() {
                    continue;
                }
                let mut record = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
                if tcp.read_exact(&mut record).await.is_err() {
                    continue;
                }
                let _ = tcp.write_all(name.as_bytes()).await;
                let _ = tcp.shutdown().await;
            }
        });
    }
    run_in(&client, || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ask = |port: u16, hello: Option<Vec<u8>>| async move {
            let mut tcp = tokio::net::TcpStream::connect((VIP, port)).await?;
            if let Some(hello) = hello {
                tcp.write_all(&hello).await?;
            }
            let mut answer = String::new();
            tokio::time::timeout(STEP, tcp.read_to_string(&mut answer)).await??;
            anyhow::Ok(answer)
        };
        for _ in 0..3 {
            let answer = ask(TCP_PORT, None).await?;
            ensure!(
                answer == "other",
                "tcp: echo's address answered {answer:?}, not other"
            );
            let answer = ask(TLS_PORT, Some(client_hello("other.example.com"))).await?;
            ensure!(
                answer == "other",
                "tls other.example.com: {answer:?}, not other"
            );
            let answer = ask(TLS_PORT, Some(client_hello("echo.example.com"))).await?;
            ensure!(
                answer == "echo",
                "tls echo.example.com: {answer:?}, not echo"
            );
        }
        Ok(())
    })
    .unwrap();
}
