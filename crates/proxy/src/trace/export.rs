//! The span exporter: a bounded queue the request path pushes finished spans into without
//! waiting, and a task that batches them into OTLP `ExportTraceServiceRequest`s and sends
//! them to a collector over plaintext gRPC.
//!
//! The queue is the only link between requests and the exporter: when the collector is slow
//! or away, spans are dropped and counted rather than held (memory stays bounded) or waited
//! for (latency stays the proxy's own). A failed export drops its batch; the failure is
//! logged at most every 30 s, since a collector that is down fails every batch.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::{AttrValue, Resource, SpanKind, TraceError};

/// Spans waiting for export. At a few hundred bytes each this bounds the queue to about a
/// megabyte, and holds several seconds of a busy proxy's sampled spans through a collector
/// hiccup.
const QUEUE_CAPACITY: usize = 4096;

/// Spans per export request: OpenTelemetry SDKs' default, well under collectors' 4 MiB
/// message limit.
const MAX_BATCH: usize = 512;

/// How long the first span of a batch waits for others before the batch is sent anyway.
const BATCH_DELAY: Duration = Duration::from_secs(1);

/// How often a failing export is logged.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Bounds the TCP connect to the collector, so a blackholed address fails each batch in
/// seconds instead of stalling the exporter.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds one export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The instrumentation scope every span is reported under.
const SCOPE_NAME: &str = "trellis-proxy";

/// The `traceparent` flag for sampled; only sampled spans are exported.
const FLAG_SAMPLED: u32 = 0x01;

/// A finished span, as the request path hands it over: converted to OTLP on the export task,
/// not on the request path.
#[derive(Debug)]
pub(super) struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: Option<HeaderValue>,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub error: Option<Cow<'static, str>>,
}

enum Message {
    Span(Box<SpanData>),
    /// Answered once everything queued before it has been exported or dropped.
    Flush(oneshot::Sender<()>),
}

// === impl Queue ===

/// The request path's end of the exporter.
#[derive(Debug)]
pub(super) struct Queue {
    tx: mpsc::Sender<Message>,
    pub dropped: AtomicU64,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Span(s) => f.debug_tuple("Span").field(&s.name).finish(),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Queue {
    /// Checks `endpoint` and spawns the export task on the current tokio runtime.
    pub fn spawn(endpoint: String, resource: &Resource) -> Result<Queue, TraceError> {
        let uri = match endpoint.parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(source) => return Err(TraceError::InvalidEndpoint { endpoint, source }),
        };
        // TLS is not built into the proxy's gRPC client; a collector is reached in plaintext
        // (normally a node-local agent).
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(TraceError::UnsupportedEndpoint { endpoint });
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(TraceError::NoRuntime { endpoint });
        };
        let channel = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        runtime.spawn(run(rx, channel, resource_proto(resource), endpoint));
        Ok(Queue {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a finished span; never waits.
    pub fn push(&self, span: Box<SpanData>) {
        if self.tx.try_send(Message::Span(span)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            // An error means the task is gone, and with it whatever it held.
            let _ = wait.await;
        }
    }
}

// === the export task ===

/// Collects spans into batches of up to [`MAX_BATCH`], each sent at most [`BATCH_DELAY`]
/// after its first span, until every sender is gone; then sends the last batch and ends.
async fn run(
    mut rx: mpsc::Receiver<Message>,
    endpoint: Endpoint,
    resource: OtlpResource,
    endpoint_text: String,
) {
    // Lazy: the first export connects, and a broken connection is remade on the next one.
    let mut client = TraceServiceClient::new(endpoint.connect_lazy());
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut warn = WarnLimiter::default();
    let mut open = true;
    while open {
        match rx.recv().await {
            None => break,
            Some(Message::Span(s)) => batch.push(*s),
            Some(Message::Flush(done)) => flushes.push(done),
        }
        let deadline = Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH && flushes.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Message::Span(s))) => batch.push(*s),
                Ok(Some(Message::Flush(done))) => flushes.push(done),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        if !batch.is_empty() {
            export(
                &mut client,
                &resource,
                &mut batch,
                &mut warn,
                &endpoint_text,
            )
            .await;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
    tracing::debug!(endpoint = %endpoint_text, "trace exporter stopped");
}

/// Sends `batch` (emptying it); a failure drops it.
async fn export(
    client: &mut TraceServiceClient<Channel>,
    resource: &OtlpResource,
    batch: &mut Vec<SpanData>,
    warn: &mut WarnLimiter,
    endpoint: &str,
) {
    let count = batch.len();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: batch.drain(..).map(span_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    match client.export(request).await {
        Ok(response) => {
            let rejected = response
                .into_inner()
                .partial_success
                .filter(|p| p.rejected_spans > 0);
            if let Some(p) = rejected {
                if let Some(suppressed) = warn.allow(Instant::now()) {
                    tracing::warn!(
                        endpoint,
                        rejected = p.rejected_spans,
                        reason = %p.error_message,
                        suppressed,
                        "trace collector rejected spans"
                    );
                }
            }
        }
        Err(status) => {
            if let Some(suppressed) = warn.allow(Instant::now()) {
                tracing::warn!(
                    endpoint,
                    error = %status,
                    dropped = count,
                    suppressed,
                    "trace export failed, spans dropped"
                );
            }
        }
    }
}

/// Lets a warning through at most every [`WARN_INTERVAL`] and counts the ones held back.
#[derive(Debug, Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    /// Some(number of warnings held back since the last one) when this one may be logged.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now < t + WARN_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

// === OTLP conversion ===

fn resource_proto(r: &Resource) -> OtlpResource {
    let instance = if r.instance_id.is_empty() {
        &r.workload
    } else {
        &r.instance_id
    };
    let attributes = [
        ("service.name", &r.service_name),
        ("service.namespace", &r.namespace),
        ("service.instance.id", instance),
        ("trellis.workload.name", &r.workload),
    ]
    .into_iter()
    // service.name is required by OTLP backends, even empty; the rest only when known.
    .filter(|(k, v)| *k == "service.name" || !v.is_empty())
    .map(|(k, v)| key_value(k, any_value::Value::StringValue(v.clone())))
    .collect();
    OtlpResource {
        attributes,
        ..Default::default()
    }
}

fn span_proto(s: SpanData) -> Span {
    let kind = match s.kind {
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Server => span::SpanKind::Server,
    };
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s
            .trace_state
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: FLAG_SAMPLED,
        name: s.name.into_owned(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.end_unix_nanos,
        attributes: s
            .attributes
            .into_iter()
            .map(|(k, v)| key_value(k, attr_proto(v)))
            .collect(),
        status: s.error.map(|message| Status {
            message: message.into_owned(),
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn attr_proto(v: AttrValue) -> any_value::Value {
    match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s.into_owned()),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    }
}

fn key_value(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited() {
        let mut warn = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(warn.allow(t0), Some(0));
        assert_eq!(warn.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(warn.allow(t0 + Duration::from_secs(29)), None);
        assert_eq!(warn.allow(t0 + WARN_INTERVAL), Some(2));
        assert_eq!(warn.allow(t0 + WARN_INTERVAL), None);
    }

    #[test]
    fn resource_attributes() {
        let attrs = |r: &Resource| -> Vec<(String, String)> {
            resource_proto(r)
                .attributes
                .into_iter()
                .map(|kv| {
                    let v = match kv.value.and_then(|v| v.value) {
                        Some(any_value::Value::StringValue(s)) => s,
                        other => format!("{other:?}"),
                    };
                    (kv.key, v)
                })
                .collect()
        };
        let r = Resource {
            service_name: "reviews".into(),
            namespace: "shop".into(),
            workload: "reviews-v1".into(),
            instance_id: String::new(),
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            attrs(&r),
            pairs(&[
                ("service.name", "reviews"),
                ("service.namespace", "shop"),
                ("service.instance.id", "reviews-v1"),
                ("trellis.workload.name", "reviews-v1"),
            ])
        );
        assert_eq!(attrs(&Resource::default()), pairs(&[("service.name", "")]));
    }
}
