//! An OpenTelemetry collector stand-in for tests: a real OTLP/gRPC trace receiver (tonic,
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export`) that keeps every span it is
//! sent, flattened with its resource and scope, for tests to assert on.
//!
//! It serves either on the test's tokio runtime ([`OtlpReceiver::start`]) or on a thread of
//! its own ([`OtlpReceiver::start_on`], for a listener bound inside a network namespace and
//! for tests without a runtime), until the receiver is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use tokio::sync::{oneshot, watch};

pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// One span as the receiver got it, ids in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    /// The resource's `service.name`, empty without one.
    pub service_name: String,
    /// All resource attributes, values rendered as text.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope_name: String,
    /// Span attributes, values rendered as text (`200`, `true`, `GET`).
    pub attributes: BTreeMap<String, String>,
    pub status_code: StatusCode,
    pub status_message: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    /// The attribute `key`, if the span has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

impl fmt::Display for ReceivedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:?} from {:?}: trace {} span {} parent {:?}, {:?}, attributes {:?}",
            self.name,
            self.kind,
            self.service_name,
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.status_code,
            self.attributes,
        )
    }
}

/// The spans received so far; `changed` ticks on every export, for waiters.
#[derive(Debug)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    changed: watch::Sender<u64>,
}

impl Store {
    fn spans(&self) -> Vec<ReceivedSpan> {
        // A panicking test thread cannot leave the Vec half-written: pushes are whole.
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A running OTLP/gRPC trace receiver; it stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Store>,
    /// Dropped with the receiver, which shuts the server down.
    _stop: oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// Listens on `addr` (e.g. `127.0.0.1:0`) and serves on the current tokio runtime until
    /// dropped.
    pub async fn start(addr: SocketAddr) -> Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the OTLP receiver to {addr}"))?;
        let addr = listener.local_addr().context("OTLP receiver address")?;
        let store = new_store();
        let (stop, stopped) = oneshot::channel();
        let served = store.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(listener, served, stopped).await {
                eprintln!("OTLP receiver on {addr} failed: {e}");
            }
        });
        Ok(OtlpReceiver {
            addr,
            store,
            _stop: stop,
        })
    }

    /// Serves on `listener` from a thread of its own (with its own current-thread tokio
    /// runtime) until dropped. The listener keeps the network namespace it was bound in, so
    /// a test can bind it on a thread inside a namespace ([`crate::netns::spawn_in`]) and
    /// hand it over. Needs no runtime from the caller.
    pub fn start_on(listener: std::net::TcpListener) -> Result<OtlpReceiver> {
        listener
            .set_nonblocking(true)
            .context("making the OTLP listener non-blocking")?;
        let addr = listener.local_addr().context("OTLP receiver address")?;
        let store = new_store();
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let served = store.clone();
        std::thread::Builder::new()
            .name(format!("otlp-receiver-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!(e).context("OTLP receiver runtime")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!(e).context("OTLP listener")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    if let Err(e) = serve(listener, served, stopped).await {
                        eprintln!("OTLP receiver on {addr} failed: {e}");
                    }
                });
            })
            .context("starting the OTLP receiver thread")?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the OTLP receiver thread died while starting"))??;
        Ok(OtlpReceiver {
            addr,
            store,
            _stop: stop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL an OTLP/gRPC exporter is given: `http://IP:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans()
    }

    /// Forgets the spans received so far.
    pub fn clear(&self) {
        self.store
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Waits until `pred` holds for the spans received so far and returns them; after
    /// `timeout`, fails with a listing of what did arrive.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.store.changed.subscribe();
        loop {
            // Marked seen before reading, so an export landing after the read wakes us.
            changed.borrow_and_update();
            let spans = self.spans();
            if pred(&spans) {
                return Ok(spans);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the store we hold, so only the timeout ends the wait.
                Ok(Err(_)) | Err(_) => return Err(timed_out(timeout, &self.spans())),
            }
        }
    }

    /// [`OtlpReceiver::wait_for`] for tests without a runtime: polls every 20 ms.
    pub fn wait_for_blocking(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                return Err(timed_out(timeout, &spans));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn timed_out(timeout: Duration, spans: &[ReceivedSpan]) -> anyhow::Error {
    let listing: String = spans.iter().map(|s| format!("\n  {s}")).collect();
    anyhow!(
        "the spans waited for did not arrive within {timeout:?}; {} arrived:{listing}",
        spans.len()
    )
}

fn new_store() -> Arc<Store> {
    Arc::new(Store {
        spans: Mutex::new(Vec::new()),
        changed: watch::channel(0).0,
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    stopped: oneshot::Receiver<()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Collector { store }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                // Sent or dropped: either way the receiver is gone.
                let _ = stopped.await;
            },
        )
        .await
}

// === impl Collector ===

/// The gRPC service: flattens each export into the store.
struct Collector {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let received = flatten(request.into_inner());
        self.store
            .spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(received);
        self.store.changed.send_modify(|n| *n += 1);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = attributes(rs.resource.map(|r| r.attributes).unwrap_or_default());
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            let scope_name = ss.scope.map(|s| s.name).unwrap_or_default();
            for span in ss.spans {
                let status = span.status.unwrap_or_default();
                out.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    trace_state: span.trace_state,
                    name: span.name,
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    service_name: service_name.clone(),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    attributes: attributes(span.attributes),
                    status_code: StatusCode::try_from(status.code).unwrap_or(StatusCode::Unset),
                    status_message: status.message,
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                });
            }
        }
    }
    out
}

fn attributes(kvs: Vec<KeyValue>) -> BTreeMap<String, String> {
    kvs.into_iter()
        .map(|kv| (kv.key, kv.value.map(text).unwrap_or_default()))
        .collect()
}

/// An attribute value as a test compares it.
fn text(v: AnyValue) -> String {
    match v.value {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(&b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
