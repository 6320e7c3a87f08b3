use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

#[test]
fn classifies_first_lines() {
    assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Kind::Http1));
    // Looser than any parser: any method token, blank lines first, several spaces, tabs,
    // an unusual version, a bare LF.
    assert_eq!(classify(b"PROPFIND /x HTTP/1.1\r\n"), Some(Kind::Http1));
    assert_eq!(classify(b"\r\n\r\nget  /  http/1.1\n"), Some(Kind::Http1));
    assert_eq!(classify(b"GET\t/ HTTP/9.9\r\n"), Some(Kind::Http1));
    assert_eq!(classify(H2_PREFACE), Some(Kind::Http2));
    // Not a request line.
    assert_eq!(classify(b"PING\r\n"), Some(Kind::Opaque));
    assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Kind::Opaque));
    assert_eq!(classify(b"SET key value\r\n"), Some(Kind::Opaque));
    assert_eq!(
        classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
        Some(Kind::Opaque)
    );
    assert_eq!(
        classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
        Some(Kind::Opaque)
    );
    // Not enough yet.
    assert_eq!(classify(b""), None);
    assert_eq!(classify(b"\r\n"), None);
    assert_eq!(classify(b"PRI * HT"), None);
    assert_eq!(classify(b"GET /very-long-path"), None);
}

/// An app that answers every request with the XFCC it received (or `none`), after which
/// the proxy's connection is reused for the next request.
async fn xfcc_echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let seen = req
                        .headers()
                        .get_all(XFCC)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("?").to_owned())
                        .collect::<Vec<_>>()
                        .join(" | ");
                    let seen = if seen.is_empty() { "none".into() } else { seen };
                    Ok::<_, Infallible>(Response::new(crate::body::full(seen)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn target(addr: SocketAddr, xfcc: Option<&'static str>) -> AppTarget {
    AppTarget {
        addr,
        mark: None,
        xfcc: xfcc.map(HeaderValue::from_static),
        limits: Limits::default(),
    }
}

/// Sends `requests` (raw HTTP/1.1, keep-alive) through [`serve`] and returns what came
/// back.
async fn through(requests: &[&[u8]], xfcc: Option<&'static str>) -> (String, Kind) {
    let app_addr = xfcc_echo_app().await;
    let app = TcpStream::connect(app_addr).await.unwrap();
    let (mut client, proxy_side) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(serve(
        proxy_side,
        app,
        target(app_addr, xfcc),
        Arc::new(Totals::default()),
    ));
    for r in requests {
        client.write_all(r).await.unwrap();
    }
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let kind = served.await.unwrap().unwrap();
    (String::from_utf8_lossy(&out).into_owned(), kind)
}

const FORGED: &[u8] =
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: By=x;URI=spiffe://evil\r\n\r\n";

#[tokio::test]
async fn a_forged_xfcc_is_replaced_on_every_request_of_a_connection() {
    let last = b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-client-cert: URI=spiffe://evil2\r\nConnection: close\r\n\r\n";
    let (out, kind) = through(&[FORGED, last], Some("By=spiffe://me;URI=spiffe://caller")).await;
    assert_eq!(kind, Kind::Http1);
    assert!(!out.contains("evil"), "{out}");
    assert_eq!(
        out.matches("By=spiffe://me;URI=spiffe://caller").count(),
        2,
        "{out}"
    );
}

#[tokio::test]
async fn plaintext_requests_reach_the_app_without_any_xfcc() {
    let close = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: By=x;URI=spiffe://evil\r\nConnection: close\r\n\r\n";
    let (out, _) = through(&[close], None).await;
    assert!(!out.contains("evil"), "{out}");
    assert!(out.ends_with("none"), "{out}");
}

#[tokio::test]
async fn a_client_that_waits_before_its_request_is_still_classified_by_it() {
    let app_addr = xfcc_echo_app().await;
    let app = TcpStream::connect(app_addr).await.unwrap();
    let (mut client, proxy_side) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(serve(
        proxy_side,
        app,
        target(app_addr, None),
        Arc::new(Totals::default()),
    ));
    // Past the protocol-detection timeout that used to turn such a client opaque.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: URI=spiffe://evil\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    client.read_to_string(&mut out).await.unwrap();
    assert!(!out.contains("evil"), "{out}");
    assert_eq!(served.await.unwrap().unwrap(), Kind::Http1);
}

#[tokio::test]
async fn a_half_sent_request_line_is_given_the_header_timeout() {
    let app_addr = xfcc_echo_app().await;
    let app = TcpStream::connect(app_addr).await.unwrap();
    let (mut client, proxy_side) = tokio::io::duplex(1024);
    client.write_all(b"GET /slow").await.unwrap();
    let mut short = target(app_addr, None);
    short.limits.header_read_timeout = Duration::from_millis(100);
    let err = serve(proxy_side, app, short, Arc::new(Totals::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, AppStreamError::FirstLineTimeout(_)), "{err}");
}

#[tokio::test]
async fn a_server_that_speaks_first_is_spliced_untouched() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app_task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"220 banner\r\n").await.unwrap();
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.unwrap();
        got
    });
    let app = TcpStream::connect(addr).await.unwrap();
    let (mut client, proxy_side) = tokio::io::duplex(1024);
    let totals = Arc::new(Totals::default());
    let served = tokio::spawn(serve(proxy_side, app, target(addr, None), totals.clone()));
    let mut banner = [0u8; 12];
    client.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"220 banner\r\n");
    client.write_all(b"HELO x\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    drop(client);
    assert_eq!(served.await.unwrap().unwrap(), Kind::Opaque);
    assert_eq!(app_task.await.unwrap(), b"HELO x\r\n");
    assert_eq!(totals.get(), (8, 12));
}

#[tokio::test]
async fn an_upgrade_the_app_accepts_is_spliced_after_its_101() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // An app that switches to an echo protocol, after checking the XFCC it got.
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
            assert_eq!(req.headers().get(XFCC).unwrap(), "By=a;URI=b");
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 4];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            let mut resp = Response::new(crate::body::full(""));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("echo"));
            resp.headers_mut().insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            Ok::<_, Infallible>(resp)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .with_upgrades()
            .await;
    });
    let app = TcpStream::connect(addr).await.unwrap();
    let (mut client, proxy_side) = tokio::io::duplex(4096);
    tokio::spawn(serve(
        proxy_side,
        app,
        target(addr, Some("By=a;URI=b")),
        Arc::new(Totals::default()),
    ));
    client
        .write_all(b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\nX-Forwarded-Client-Cert: forged\r\n\r\n")
        .await
        .unwrap();
    // The 101's head, then the switched protocol.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        client.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
}
