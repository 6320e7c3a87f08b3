//! `loadgen`: an open-loop HTTP/1.1 load generator with latency correction.
//!
//! Requests go out on a fixed schedule, whatever the server does: `--rate` requests per
//! second spread evenly over `--connections` keep-alive connections. Each request's latency
//! is measured from the moment the schedule said it should be sent, not from when it actually
//! went out, so a stall in the path under test shows up in every request it delayed (the
//! "coordinated omission" a closed-loop tool such as wrk hides). A connection carries one
//! request at a time, as HTTP/1.1 clients do.
//!
//! With `--new-connection`, every request goes out on a TCP connection of its own, opened
//! at the request's scheduled time and closed by the client once the response is in (as a
//! client without keep-alive does): each request's latency then includes the TCP handshake,
//! so whatever delays connection set-up (a SYN dropped and retransmitted, a full accept
//! queue, per-connection work in a proxy) shows in it. Requests are independent: one that
//! is slow does not hold back the next, and `--connections` is ignored. With
//! `--server-closes` as well, each request says `Connection: close`, so the server closes
//! first and the `TIME_WAIT` state lands on its side (a proxy's, for a captured connection).
//!
//! Prints one JSON object: requests, errors, achieved rate and latency percentiles in
//! microseconds (with `--new-connection`, also the percentiles of the connect step alone).
//!
//! ```text
//! loadgen --url http://198.18.40.3:8081/ [--host NAME] [--rate 1000] [--connections 16]
//!         [--duration 30] [--warmup 2] [--new-connection [--server-closes]]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    path: String,
    host: String,
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    new_connection: bool,
    server_closes: bool,
}

fn parse_args() -> Result<Args> {
    let mut url = None;
    let mut host = None;
    let mut rate = 1000.0;
    let mut connections = 16;
    let mut duration = 30.0;
    let mut warmup = 2.0;
    let mut new_connection = false;
    let mut server_closes = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--host" => host = Some(value()?),
            "--rate" => rate = value()?.parse().context("--rate")?,
            "--connections" => connections = value()?.parse().context("--connections")?,
            "--duration" => duration = value()?.parse().context("--duration")?,
            "--warmup" => warmup = value()?.parse().context("--warmup")?,
            "--new-connection" => new_connection = true,
            "--server-closes" => server_closes = true,
            other => bail!("unknown argument {other}"),
        }
    }
    let url = url.context("--url is required")?;
    let rest = url
        .strip_prefix("http://")
        .context("--url must be http://ADDR:PORT/PATH")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{authority}: the URL needs an IP address and port"))?;
    if rate <= 0.0 || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    Ok(Args {
        addr,
        path,
        host: host.unwrap_or_else(|| authority.to_string()),
        rate,
        connections,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        new_connection,
        server_closes,
    })
}

/// What one connection's worker saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// With `--new-connection`: how long each measured request's TCP connect took.
    connect_us: Vec<u32>,
    /// Requests sent, warm-up included (CPU is sampled over the whole run).
    sent: u64,
    errors: u64,
    first_error: Option<String>,
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // One thread: at the rates this is meant for the generator is nowhere near busy, and a
    // single thread keeps its own CPU use out of the way of what is being measured.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tallies = if args.new_connection {
        vec![rt.block_on(run_new_connections(&args))]
    } else {
        rt.block_on(run(&args))?
    };
    let mut all: Vec<u32> = Vec::new();
    let mut connect: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut sent = 0;
    let mut first_error = None;
    for t in tallies {
        sent += t.sent;
        all.extend(t.latencies_us);
        connect.extend(t.connect_us);
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    all.sort_unstable();
    connect.sort_unstable();
    let pct = |p: f64| percentile(&all, p);
    let mut report = serde_json::json!({
        "requests": all.len(),
        "errors": errors,
        "sent": sent,
        "first_error": first_error,
        "rate": all.len() as f64 / args.duration.as_secs_f64(),
        "p50_us": pct(50.0),
        "p90_us": pct(90.0),
        "p99_us": pct(99.0),
        "p999_us": pct(99.9),
        "max_us": all.last().copied().unwrap_or(0),
    });
    if args.new_connection {
        report["connect_p50_us"] = percentile(&connect, 50.0).into();
        report["connect_p99_us"] = percentile(&connect, 99.0).into();
        report["connect_p999_us"] = percentile(&connect, 99.9).into();
        report["connect_max_us"] = connect.last().copied().unwrap_or(0).into();
    }
    println!("{report}");
    Ok(())
}

/// The `p`th percentile of sorted samples (nearest rank), 0 when there are none.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// One request per new connection, `rate` per second, each on a task of its own so that a
/// slow one delays no other.
async fn run_new_connections(args: &Args) -> Tally {
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    let mut tally = Tally::default();
    let mut due = start;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        // As in the keep-alive mode, the timer's own lateness (up to a millisecond) is the
        // generator's and is left out: the clock starts when the request really starts.
        let origin = Instant::now();
        let measured = due >= measure_from;
        let (addr, path, host) = (args.addr, args.path.clone(), args.host.clone());
        let server_closes = args.server_closes;
        tasks.spawn(async move {
            let result = one_request(addr, &path, &host, server_closes).await;
            (measured, origin, Instant::now(), result)
        });
        // Collect what has finished, so the set stays small at high rates.
        while let Some(done) = tasks.try_join_next() {
            record(&mut tally, done);
        }
        due += interval;
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut tally, done);
    }
    tally
}

type Outcome = (bool, Instant, Instant, Result<Duration>);

fn record(tally: &mut Tally, done: Result<Outcome, tokio::task::JoinError>) {
    tally.sent += 1;
    let (measured, origin, finished, result) = match done {
        Ok(o) => o,
        Err(e) => (true, Instant::now(), Instant::now(), Err(e.into())),
    };
    if !measured {
        return;
    }
    match result {
        Ok(connect) => {
            tally
                .latencies_us
                .push(micros(finished.duration_since(origin)));
            tally.connect_us.push(micros(connect));
        }
        Err(e) => {
            tally.errors += 1;
            tally.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
}

/// Connects, sends one request, reads the response and closes: the client closes first, as
/// a client without keep-alive does, unless `server_closes` asks the server to with
/// `Connection: close`. Returns how long the connect took.
async fn one_request(
    addr: SocketAddr,
    path: &str,
    host: &str,
    server_closes: bool,
) -> Result<Duration> {
    let t0 = Instant::now();
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    let connect = t0.elapsed();
    tcp.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, host);
    if server_closes {
        req = req.header(http::header::CONNECTION, "close");
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if !status.is_success() {
        bail!("status {status}");
    }
    // Dropping the sender lets the connection task finish, which drops (closes) the socket.
    drop(sender);
    conn.await??;
    Ok(connect)
}

async fn run(args: &Args) -> Result<Vec<Tally>> {
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut workers = Vec::new();
    for k in 0..args.connections {
        // Stagger the connections so the requests are evenly spread, not in bursts of N.
        let offset = interval.mul_f64(k as f64 / args.connections as f64);
        let (addr, path, host) = (args.addr, args.path.clone(), args.host.clone());
        workers.push(tokio::spawn(async move {
            worker(
                addr,
                path,
                host,
                start + offset,
                interval,
                measure_from,
                end,
            )
            .await
        }));
    }
    let mut out = Vec::new();
    for w in workers {
        out.push(w.await?);
    }
    Ok(out)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn worker(
    addr: SocketAddr,
    path: String,
    host: String,
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    let mut due = first;
    // When the previous response on this connection came back.
    let mut previous_done = first;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        // The timer wakes up to a millisecond late. That lateness is the generator's, not the
        // path's, and is left out; lateness because the previous response on this connection
        // arrived after this request was due is the path's, and is counted (the correction).
        let origin = if previous_done > due {
            due
        } else {
            Instant::now()
        };
        let result = async {
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                sender = Some(connect(addr).await?);
            }
            let Some(s) = sender.as_mut() else {
                bail!("no connection");
            };
            s.ready().await?;
            let req = http::Request::get(path.as_str())
                .header(http::header::HOST, host.as_str())
                .body(Empty::<Bytes>::new())?;
            let resp = s.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            if !status.is_success() {
                bail!("status {status}");
            }
            Ok(())
        }
        .await;
        let done = Instant::now();
        previous_done = done;
        tally.sent += 1;
        if due >= measure_from {
            match result {
                Ok(()) => tally.latencies_us.push(
                    done.duration_since(origin)
                        .as_micros()
                        .min(u32::MAX as u128) as u32,
                ),
                Err(e) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert_with(|| e.to_string());
                    sender = None;
                }
            }
        } else if result.is_err() {
            sender = None;
        }
        due += interval;
    }
    tally
}
