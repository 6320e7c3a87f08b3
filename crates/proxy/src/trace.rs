//! Distributed tracing: the proxy joins the traces its workload's requests belong to, adds a
//! span for each hop it carries, and exports those spans to an OpenTelemetry collector.
//!
//! * **Propagation** ([`extract`], [`inject`]): the caller's context comes from W3C Trace
//!   Context (`traceparent`, `tracestate`) or, for apps instrumented with Zipkin, from B3
//!   (`b3`, or `x-b3-traceid` and friends). A proxy always forwards a `traceparent` (a new
//!   trace when the request carried none) so the hops stay joined even where nothing exports.
//! * **Spans** ([`Tracer::start`], [`ActiveSpan`]): our own small span type, not the
//!   OpenTelemetry SDK's: no global state, and an unsampled span is only its context (no
//!   allocation, nothing queued). Sampling is parent-based: an incoming sampled flag is
//!   always respected; only a new trace is sampled with the configured probability.
//! * **Export** (`export`): finished, sampled spans go into a bounded queue that the request
//!   path never waits on (a full queue drops the span and counts it, [`Tracer::dropped`]); a
//!   task batches them into OTLP `ExportTraceServiceRequest`s sent over plaintext gRPC, as an
//!   OpenTelemetry collector takes them on 4317.

mod export;
mod propagation;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

pub use propagation::{extract, inject};

/// Why a [`Tracer`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace export endpoint {endpoint:?} is not a URI: {source}")]
    InvalidEndpoint {
        endpoint: String,
        source: http::uri::InvalidUri,
    },
    #[error(
        "trace export endpoint {endpoint:?} must be http://HOST:PORT (OTLP over plaintext gRPC)"
    )]
    UnsupportedEndpoint { endpoint: String },
    #[error("trace sampling probability {0} is not between 0 and 1")]
    Sampling(f64),
    #[error("exporting traces to {endpoint} needs a tokio runtime to run the exporter on")]
    NoRuntime { endpoint: String },
}

/// Where a request sits in a trace: the trace it belongs to, the span that sent it, and
/// whether that trace is being recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// Never all zeros.
    pub trace_id: [u8; 16],
    /// Never all zeros.
    pub span_id: [u8; 8],
    pub sampled: bool,
    /// The W3C `tracestate` carried with the trace (other vendors' data), already validated.
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The trace id as 32 lowercase hex digits, as `traceparent` and most backends show it.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// Which side of a hop a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The proxy sending a request on (outbound).
    Client,
    /// The proxy receiving a request (inbound).
    Server,
}

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(v))
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(Cow::Owned(v))
    }
}

impl From<Cow<'static, str>> for AttrValue {
    fn from(v: Cow<'static, str>) -> Self {
        AttrValue::Str(v)
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}

impl From<i32> for AttrValue {
    fn from(v: i32) -> Self {
        AttrValue::Int(v.into())
    }
}

impl From<u16> for AttrValue {
    fn from(v: u16) -> Self {
        AttrValue::Int(v.into())
    }
}

impl From<u32> for AttrValue {
    fn from(v: u32) -> Self {
        AttrValue::Int(v.into())
    }
}

impl From<u64> for AttrValue {
    /// OTLP integers are signed; a value past `i64::MAX` (never a real size or count)
    /// saturates.
    fn from(v: u64) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for AttrValue {
    fn from(v: usize) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// Who is reporting spans: the OTLP Resource attached to every export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// `service.name`: the service the workload serves, what trace backends group by.
    pub service_name: String,
    /// `service.namespace`: the workload's namespace (left out when empty).
    pub namespace: String,
    /// `trellis.workload.name`: the workload's name, e.g. `reviews-v1-2` (left out when
    /// empty).
    pub workload: String,
    /// `service.instance.id`: unique per proxy; the workload name when empty.
    pub instance_id: String,
}

// === impl Tracer ===

/// Starts spans and, when an endpoint is set, exports the sampled ones. Cheap to clone: the
/// clones share one export queue.
#[derive(Debug, Clone)]
pub struct Tracer {
    /// Probability that a new trace (no incoming context) is sampled.
    sampling: f64,
    /// None: nothing is exported, spans are only contexts to propagate.
    queue: Option<Arc<export::Queue>>,
}

impl Tracer {
    /// A tracer that samples new traces with probability `sampling` (0 to 1) and, with an
    /// `endpoint` (`http://HOST:PORT` of an OTLP/gRPC collector), exports the sampled spans
    /// as `resource`. Without an endpoint nothing is exported, but contexts are still made
    /// and propagated so the traces of other hops stay joined.
    ///
    /// With an endpoint this spawns the export task, so it must be called inside a tokio
    /// runtime; the task ends once the tracer, its clones and their spans are all dropped,
    /// after sending what it holds. The connection is made on the first export and remade
    /// after a failure.
    pub fn new(
        endpoint: Option<String>,
        sampling: f64,
        resource: Resource,
    ) -> Result<Tracer, TraceError> {
        // Written so that NaN fails too.
        if !(0.0..=1.0).contains(&sampling) {
            return Err(TraceError::Sampling(sampling));
        }
        let queue = match endpoint {
            None => None,
            Some(endpoint) => Some(Arc::new(export::Queue::spawn(endpoint, &resource)?)),
        };
        Ok(Tracer { sampling, queue })
    }

    /// A tracer that exports nothing and starts no sampled trace: it only propagates.
    pub fn propagate_only() -> Tracer {
        Tracer {
            sampling: 0.0,
            queue: None,
        }
    }

    /// Starts a span of `kind`. With a `parent` (the caller's context from [`extract`], or a
    /// span of this proxy) the span joins that trace and keeps its sampling decision;
    /// without one it starts a new trace, sampled with the tracer's probability.
    pub fn start(
        &self,
        kind: SpanKind,
        name: impl Into<Cow<'static, str>>,
        parent: Option<&TraceContext>,
    ) -> ActiveSpan {
        let context = match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id: new_id(),
                sampled: p.sampled,
                tracestate: p.tracestate.clone(),
            },
            None => TraceContext {
                trace_id: new_id(),
                span_id: new_id(),
                sampled: self.sample(),
                tracestate: None,
            },
        };
        let recording = match &self.queue {
            Some(queue) if context.sampled => Some(Recording {
                data: Box::new(export::SpanData {
                    trace_id: context.trace_id,
                    span_id: context.span_id,
                    parent_span_id: parent.map(|p| p.span_id),
                    trace_state: None,
                    name: name.into(),
                    kind,
                    start_unix_nanos: unix_nanos(SystemTime::now()),
                    end_unix_nanos: 0,
                    attributes: Vec::new(),
                    error: None,
                }),
                started: Instant::now(),
                queue: queue.clone(),
            }),
            _ => None,
        };
        ActiveSpan { context, recording }
    }

    /// Spans lost because the export queue was full (the collector too slow or away) or the
    /// export task was gone.
    pub fn dropped(&self) -> u64 {
        self.queue
            .as_ref()
            .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
    }

    /// True when sampled spans are exported.
    pub fn is_exporting(&self) -> bool {
        self.queue.is_some()
    }

    /// Waits until every span ended before this call has been sent to the collector (or
    /// dropped after a failed export). Returns at once without an endpoint.
    pub async fn flush(&self) {
        if let Some(queue) = &self.queue {
            queue.flush().await;
        }
    }

    fn sample(&self) -> bool {
        // random() is in [0, 1): 0 never samples and 1 always does.
        self.sampling > 0.0 && rand::random::<f64>() < self.sampling
    }
}

// === impl ActiveSpan ===

/// A span in progress, from [`Tracer::start`]. [`ActiveSpan::end`] finishes it; dropping it
/// finishes it too, so a request whose future is cancelled still reports its span.
#[derive(Debug)]
pub struct ActiveSpan {
    context: TraceContext,
    /// Only for sampled spans of an exporting tracer: the others carry no data at all.
    recording: Option<Recording>,
}

#[derive(Debug)]
struct Recording {
    data: Box<export::SpanData>,
    /// The duration comes from the monotonic clock, so a wall-clock step during the request
    /// cannot make a span end before it started.
    started: Instant,
    queue: Arc<export::Queue>,
}

impl ActiveSpan {
    /// This span's context: the parent for the next hop (give it to [`inject`]) or for a
    /// child span.
    pub fn context(&self) -> TraceContext {
        self.context.clone()
    }

    /// The trace id as 32 lowercase hex digits, for access logs.
    pub fn trace_id_hex(&self) -> String {
        self.context.trace_id_hex()
    }

    /// True when the span's data is kept and exported: callers can skip computing attribute
    /// values otherwise.
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Sets an attribute (a later value for the same key is sent too; backends keep the
    /// last). A no-op on a span that is not recording.
    pub fn set_attribute(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        if let Some(r) = &mut self.recording {
            r.data.attributes.push((key, value.into()));
        }
    }

    /// Marks the span failed (OTLP status ERROR) with `message`.
    pub fn set_error(&mut self, message: impl Into<Cow<'static, str>>) {
        if let Some(r) = &mut self.recording {
            r.data.error = Some(message.into());
        }
    }

    /// Ends the span now. A recording span is queued for export without waiting: when the
    /// queue is full it is dropped and counted in [`Tracer::dropped`].
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(mut r) = self.recording.take() else {
            return;
        };
        let elapsed = u64::try_from(r.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        r.data.end_unix_nanos = r.data.start_unix_nanos.saturating_add(elapsed);
        r.data.trace_state = self.context.tracestate.take();
        r.queue.push(r.data);
    }
}

impl Drop for ActiveSpan {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A random id that is not all zeros (the W3C value for "invalid").
fn new_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

/// Nanoseconds since the Unix epoch, 0 for a clock set before it.
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Lowercase hex, the only case W3C Trace Context and B3 allow.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        s.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
    }
    s
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Parses exactly `2 * N` lowercase hex digits; uppercase is refused, as the W3C rules
/// require (and B3 specifies lowercase too).
fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}
