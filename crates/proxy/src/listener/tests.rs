use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// `EMFILE`: what `accept` returns once the process is out of descriptors.
const EMFILE: i32 = 24;

/// A listener that is out of descriptors until `ok_from`, then accepts in-memory streams.
struct OutOfFiles {
    calls: Arc<AtomicUsize>,
    ok_from: Instant,
}

impl Accept for OutOfFiles {
    type Io = DuplexStream;
    fn accept(&self) -> impl Future<Output = io::Result<(DuplexStream, SocketAddr)>> + Send {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let ok = Instant::now() >= self.ok_from;
        async move {
            if ok {
                let (a, _b) = tokio::io::duplex(64);
                Ok((a, SocketAddr::from(([192, 0, 2, 1], 4242))))
            } else {
                Err(io::Error::from_raw_os_error(EMFILE))
            }
        }
    }
}

fn limits(max_connections: usize) -> Limits {
    Limits {
        max_connections,
        ..Limits::default()
    }
}

#[tokio::test(start_paused = true)]
async fn backs_off_while_out_of_descriptors_and_recovers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut listener = Listener::new(
        OutOfFiles {
            calls: calls.clone(),
            ok_from: start + Duration::from_secs(10),
        },
        "test",
        limits(4),
    );
    let conn = listener.accept().await;
    assert_eq!(conn.peer(), SocketAddr::from(([192, 0, 2, 1], 4242)));
    // Ten seconds of EMFILE: 5 ms doubling to 1 s (with up to 20 % jitter) is a few dozen
    // attempts, where a loop that retries at once makes millions.
    let n = calls.load(Ordering::Relaxed);
    assert!((10..=30).contains(&n), "{n} accept calls in 10 s of EMFILE");
    // The pause never exceeds the cap: accepted within 1.2 s of the descriptors coming back.
    let waited = Instant::now().duration_since(start);
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    assert!(waited <= Duration::from_millis(11_200), "{waited:?}");
    // After a success the back-off starts over.
    assert!(listener.backoff.next_delay() <= BACKOFF_MIN.mul_f64(1.2));
}

#[tokio::test(start_paused = true)]
async fn errors_of_one_connection_are_retried_at_once() {
    struct Aborted(AtomicUsize);
    impl Accept for Aborted {
        type Io = DuplexStream;
        fn accept(&self) -> impl Future<Output = io::Result<(DuplexStream, SocketAddr)>> + Send {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            async move {
                if n < 3 {
                    Err(io::Error::from(io::ErrorKind::ConnectionAborted))
                } else {
                    Ok((
                        tokio::io::duplex(8).0,
                        SocketAddr::from(([192, 0, 2, 1], 1)),
                    ))
                }
            }
        }
    }
    let start = Instant::now();
    let mut listener = Listener::new(Aborted(AtomicUsize::new(0)), "test", limits(4));
    listener.accept().await;
    assert_eq!(Instant::now(), start);
}

#[test]
fn accept_errors_are_logged_once_per_period_with_a_count() {
    let start = Instant::now();
    let mut throttle = Throttle::new(Duration::from_secs(5));
    let mut logged = Vec::new();
    // An error every millisecond for 12 s.
    for ms in 0..12_000u64 {
        if let Some(held_back) = throttle.allow(start + Duration::from_millis(ms)) {
            logged.push((ms, held_back));
        }
    }
    assert_eq!(logged, vec![(0, 0), (5_000, 4_999), (10_000, 4_999)]);
}

#[tokio::test]
async fn the_cap_holds_and_frees_a_place_when_a_connection_closes() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut listener = Listener::new(tcp, "test", limits(2));
    // Three clients connect: the kernel completes every handshake (the backlog).
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    let first = listener.accept().await;
    let _second = listener.accept().await;
    // The third waits while two are open.
    let third = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        third.is_err(),
        "a third connection was accepted past a cap of 2"
    );
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the third connection is accepted once one closes");
    // It is one of the clients, still connected.
    let mut third = third;
    third.write_all(b"x").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_times_out_and_traffic_keeps_it_open() {
    let (io, mut far) = tokio::io::duplex(64);
    let mut conn = Connection::new(
        io,
        SocketAddr::from(([192, 0, 2, 1], 1)),
        None,
        Duration::from_secs(60),
    );
    let mut buf = [0u8; 8];
    // Bytes every 40 s keep it open past the timeout.
    for _ in 0..3 {
        let read = conn.read(&mut buf);
        let write = async {
            tokio::time::sleep(Duration::from_secs(40)).await;
            far.write_all(b"hi").await.unwrap();
        };
        let (n, ()) = tokio::join!(read, write);
        assert_eq!(n.unwrap(), 2);
    }
    let start = Instant::now();
    let err = conn.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        Instant::now().duration_since(start),
        Duration::from_secs(60)
    );
}

/// Connections the accept loop has not taken yet wait in the kernel's backlog. With the 128
/// that tokio's `bind` uses, the 130th of them had its SYN dropped and its client waited a
/// second to retry; [`bind`] holds [`LISTEN_BACKLOG`] (capped by `net.core.somaxconn`, 4096 by
/// default).
#[tokio::test]
async fn the_listen_backlog_holds_more_than_128_unaccepted_connections() {
    const WAITING: usize = 600;
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = listener.local_addr().unwrap();
    // One at a time, so each handshake has completed (and its connection is queued) before
    // the next SYN arrives: the queue fills deterministically. Nothing accepts.
    let mut clients = Vec::with_capacity(WAITING);
    let filled = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..WAITING {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
    })
    .await;
    assert!(
        filled.is_ok(),
        "only {} connections were taken into the backlog; the next SYN was dropped",
        clients.len()
    );
    assert_eq!(clients.len(), WAITING);
    drop(listener);
}
