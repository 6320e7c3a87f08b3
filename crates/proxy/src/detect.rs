//! Protocol detection on a fresh connection, by peeking at the first bytes the client sends
//! (nothing is consumed): HTTP/1.x, HTTP/2 with prior knowledge, TLS originated by the app,
//! or anything else (opaque TCP).
//!
//! A server-speaks-first protocol (MySQL, SMTP, …) sends nothing from the client until the
//! server talks, so detection gives up after a short timeout and treats the connection as
//! opaque; ports declared `tcp` (or opaque) skip detection altogether.

use std::time::Duration;

use tokio::net::TcpStream;

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c): the client opened with the connection preface.
    Http2,
    /// TLS from the app itself: carried as opaque TCP, never terminated.
    Tls,
    Opaque,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

/// Classifies a prefix; `None` means "could still be several things: need more bytes".
pub fn classify(prefix: &[u8]) -> Option<Protocol> {
    if prefix.is_empty() {
        return None;
    }
    // A TLS record starts with the handshake content type.
    if prefix[0] == 0x16 {
        return Some(Protocol::Tls);
    }
    let could_be = |candidate: &[u8]| {
        let n = prefix.len().min(candidate.len());
        prefix[..n] == candidate[..n]
    };
    if prefix.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    if METHODS.iter().any(|m| prefix.starts_with(m)) {
        return Some(Protocol::Http1);
    }
    if could_be(H2_PREFACE) || METHODS.iter().any(|m| could_be(m)) {
        return None;
    }
    Some(Protocol::Opaque)
}

/// Peeks until the protocol is known or `timeout` passes (then: opaque).
pub async fn detect(stream: &TcpStream, timeout: Duration) -> std::io::Result<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 24];
    let mut last_len = usize::MAX;
    loop {
        let peeked = tokio::select! {
            r = stream.peek(&mut buf) => r?,
            _ = tokio::time::sleep_until(deadline) => return Ok(Protocol::Opaque),
        };
        if peeked == 0 {
            // The client closed without sending anything.
            return Ok(Protocol::Opaque);
        }
        if let Some(p) = classify(&buf[..peeked]) {
            return Ok(p);
        }
        // Ambiguous so far: `peek` would return the same bytes at once, so wait briefly for
        // more to arrive rather than spin.
        if peeked == last_len {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(Protocol::Opaque),
            }
        }
        last_len = peeked;
    }
}

/// The most a ClientHello is peeked for: far above real ones (a few hundred bytes, under
/// 2 KiB with post-quantum key shares), and what the kernel keeps unread for us anyway.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The server name (SNI) the client's TLS ClientHello asks for, peeking (nothing is
/// consumed) until the whole hello has arrived or `timeout` passes. `None`: no TLS, no SNI,
/// or no complete hello in time. Parsing is rustls's ([`rustls::server::Acceptor`]), fed
/// with a copy of the peeked bytes.
pub async fn sni(stream: &TcpStream, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_CLIENT_HELLO];
    let mut last_len = 0;
    loop {
        let peeked = tokio::select! {
            r = stream.peek(&mut buf) => r.ok()?,
            _ = tokio::time::sleep_until(deadline) => return None,
        };
        if peeked == 0 {
            return None;
        }
        if peeked != last_len {
            match client_hello_sni(&buf[..peeked]) {
                Hello::Complete(name) => return name,
                Hello::Invalid => return None,
                Hello::Partial if peeked == buf.len() => return None,
                Hello::Partial => {}
            }
        }
        // Incomplete: `peek` returns the same bytes at once until more arrive.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            _ = tokio::time::sleep_until(deadline) => return None,
        }
        last_len = peeked;
    }
}

/// What a prefix of a connection says about its ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// The hello is all there: its server name, if any.
    Complete(Option<String>),
    /// More bytes are needed.
    Partial,
    /// Not a TLS ClientHello.
    Invalid,
}

fn client_hello_sni(prefix: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut reader = prefix;
    if acceptor.read_tls(&mut reader).is_err() {
        return Hello::Invalid;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Hello::Complete(
            accepted
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase),
        ),
        Ok(None) => Hello::Partial,
        Err(_) => Hello::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The first flight of a real rustls client asking for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let mut conn =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_the_server_name_of_a_client_hello() {
        let hello = client_hello("Other.Example.com");
        assert_eq!(
            client_hello_sni(&hello),
            Hello::Complete(Some("other.example.com".into()))
        );
        // Any strict prefix is not enough yet.
        assert_eq!(client_hello_sni(&hello[..hello.len() - 1]), Hello::Partial);
        assert_eq!(client_hello_sni(&hello[..3]), Hello::Partial);
        // An IP address is not sent as SNI.
        assert_eq!(
            client_hello_sni(&client_hello("10.0.0.1")),
            Hello::Complete(None)
        );
        assert_eq!(client_hello_sni(b"GET / HTTP/1.1\r\n\r\n"), Hello::Invalid);
    }

    #[tokio::test]
    async fn peeks_the_server_name_across_segments_without_consuming() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello("a.example");
        let sent = hello.clone();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (first, rest) = sent.split_at(10);
            c.write_all(first).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(rest).await.unwrap();
            c
        });
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(
            sni(&server, Duration::from_secs(5)).await.as_deref(),
            Some("a.example")
        );
        // Still all there for whoever reads the connection next.
        let mut buf = vec![0u8; hello.len()];
        assert_eq!(server.peek(&mut buf).await.unwrap(), hello.len());
        assert_eq!(buf, hello);
        drop(client.await.unwrap());
    }

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"POST /x"), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Protocol::Tls));
        assert_eq!(classify(b"\x00\x00\x00\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b"HELO x"), Some(Protocol::Opaque));
        // Prefixes of several candidates wait for more.
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b""), None);
        // "PUX" can be nothing known.
        assert_eq!(classify(b"PUX"), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detects_on_real_sockets_and_times_out_for_silent_clients() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A client that sends its request in two pieces.
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"PO").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"ST / HTTP/1.1\r\n").await.unwrap();
            s
        });
        let (server, _) = listener.accept().await.unwrap();
        let p = detect(&server, Duration::from_secs(2)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let _keep = client.await.unwrap();

        // A silent client (server-speaks-first protocols): opaque after the timeout.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        let p = detect(&server, Duration::from_millis(50)).await.unwrap();
        assert_eq!(p, Protocol::Opaque);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
