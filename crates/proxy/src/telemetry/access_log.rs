//! JSON access logs: one line per request or TCP connection, written by a thread of its own
//! so that the request path never waits on a disk or a pipe. Lines past a full queue are
//! dropped and counted rather than slowing traffic down.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use rand::Rng;
use serde::Serialize;

use super::{flag_label, EdgeData, Exchange, Flag, Outcome, TcpExchange};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    /// Appended to; created if missing.
    File(PathBuf),
}

/// Why the access log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("access log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("access log sampling must be between 0 and 1, not {0}")]
    Sampling(f64),
}

/// The access log: sampling, then a bounded queue to the writer thread.
pub struct AccessLog {
    tx: SyncSender<String>,
    /// Fraction of requests logged, 0..=1.
    sampling: f64,
    /// Lines lost to a full queue.
    pub dropped: AtomicU64,
}

impl AccessLog {
    /// Opens `target` and starts the writer thread.
    pub fn open(target: &AccessLogTarget, sampling: f64) -> Result<AccessLog, AccessLogError> {
        if !(0.0..=1.0).contains(&sampling) {
            return Err(AccessLogError::Sampling(sampling));
        }
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out))
            .map_err(|source| AccessLogError::Open {
                path: PathBuf::from("<thread>"),
                source,
            })?;
        Ok(AccessLog {
            tx,
            sampling,
            dropped: AtomicU64::new(0),
        })
    }

    fn sampled(&self) -> bool {
        self.sampling >= 1.0 || (self.sampling > 0.0 && rand::rng().random::<f64>() < self.sampling)
    }

    fn send(&self, line: &Line<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        match self.tx.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn request(
        &self,
        ex: &Exchange,
        outcome: &Outcome,
        micros: u64,
        request_bytes: u64,
    ) {
        if !self.sampled() {
            return;
        }
        self.send(&Line {
            protocol: ex.protocol(),
            method: ex.method.as_str(),
            authority: &ex.authority,
            path: &ex.path,
            status: Some(outcome.status),
            grpc_status: outcome.grpc_status,
            route: ex.route.as_deref(),
            policy: ex.policy.as_deref(),
            trace_id: ex.trace_id.as_deref(),
            ..Line::new(&ex.edge, ex.start_wall, ex.upstream, outcome.flag, micros)
                .bytes(request_bytes, outcome.response_bytes)
        });
    }

    pub(super) fn connection(
        &self,
        ex: &TcpExchange,
        flag: Option<Flag>,
        micros: u64,
        sent: u64,
        received: u64,
    ) {
        if !self.sampled() {
            return;
        }
        // Received from the client is the request direction.
        self.send(
            &Line::new(&ex.edge, ex.start_wall, ex.upstream, flag, micros).bytes(received, sent),
        );
    }
}

/// One access log line. Empty strings are written as they are (`""`), absent values as
/// `null`, so every line has every field and a log pipeline needs no per-line schema.
#[derive(Serialize)]
struct Line<'a> {
    start_time: String,
    reporter: &'static str,
    protocol: &'static str,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    status: Option<u16>,
    grpc_status: Option<u8>,
    response_flags: &'static str,
    duration_ms: f64,
    request_bytes: u64,
    response_bytes: u64,
    source_workload: &'a str,
    source_namespace: &'a str,
    source_principal: &'a str,
    destination_service: &'a str,
    destination_workload: &'a str,
    destination_namespace: &'a str,
    destination_principal: &'a str,
    connection_security_policy: &'static str,
    upstream: Option<String>,
    route: Option<&'a str>,
    policy: Option<&'a str>,
    trace_id: Option<&'a str>,
}

impl<'a> Line<'a> {
    /// A TCP connection's line: the edge's names, the time, the upstream and the outcome.
    fn new(
        edge: &'a EdgeData,
        start: SystemTime,
        upstream: Option<std::net::SocketAddr>,
        flag: Option<Flag>,
        micros: u64,
    ) -> Self {
        let l = &edge.labels;
        Line {
            start_time: rfc3339(start),
            reporter: l.reporter,
            protocol: "tcp",
            method: "",
            authority: "",
            path: "",
            status: None,
            grpc_status: None,
            response_flags: flag_label(flag),
            duration_ms: micros as f64 / 1000.0,
            request_bytes: 0,
            response_bytes: 0,
            source_workload: &l.source_workload,
            source_namespace: &l.source_namespace,
            source_principal: &l.source_principal,
            destination_service: &l.destination_service,
            destination_workload: &l.destination_workload,
            destination_namespace: &l.destination_namespace,
            destination_principal: &l.destination_principal,
            connection_security_policy: l.connection_security_policy,
            upstream: upstream.map(|u| u.to_string()),
            route: None,
            policy: None,
            trace_id: None,
        }
    }

    fn bytes(self, request_bytes: u64, response_bytes: u64) -> Self {
        Line {
            request_bytes,
            response_bytes,
            ..self
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Writes lines as they come, flushing whenever the queue is empty so a line is visible
/// promptly without a write per line under load.
fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    let mut warned = false;
    while let Ok(line) = rx.recv() {
        let mut result = out.write_all(line.as_bytes());
        while let Ok(line) = rx.try_recv() {
            result = result.and(out.write_all(line.as_bytes()));
        }
        // Errors are logged once, not per line (that would be a line per request); the queue
        // keeps draining so a full disk never backs traffic up.
        if let Err(e) = result.and(out.flush()) {
            if !warned {
                tracing::warn!(error = %e, "access log write failed; lines are being lost");
                warned = true;
            }
        }
    }
}
