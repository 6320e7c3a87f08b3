//! Per-request and per-connection telemetry: Istio's standard metrics, JSON access logs,
//! per-edge golden signals for the control plane, and live taps.
//!
//! Every HTTP request a proxy handles becomes an [`Exchange`] when it starts: the edge it
//! belongs to (who called whom, as [`Edge`]), the time, and what the access log and taps need.
//! The exchange is finished once, when the response body has been sent to the end (or the
//! client went away), so durations and byte counts cover the whole response as Istio's do.
//! Finishing it:
//!
//! * counts `trellis_requests_total` and observes `trellis_request_duration_seconds` with
//!   Istio's label set ([`crate::metrics`]); paths, IDs and ports never become labels;
//! * on the destination side, adds it to the edge's summary that the control stream sends
//!   every few seconds (`trellis stat`, `trellis top`);
//! * writes a JSON access log line when access logs are on and the request is sampled;
//! * sends its metadata to any tap that matches;
//! * ends its span ([`crate::trace`]): the client span of the source side, whose context
//!   goes to the next hop in `traceparent`, or the server span of the destination side,
//!   whose context the app receives (and forwards, if it forwards trace headers).
//!
//! TCP connections (tunnels, plaintext inbound, passthrough) are [`TcpExchange`]s with the
//! `trellis_tcp_*` metrics and one access log line when they close.

mod access_log;
mod edges;
mod recorded;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use trellis_api::proto;

pub use access_log::{AccessLog, AccessLogError, AccessLogTarget};
pub use edges::{destination_service, Edge, EdgeData, MAX_SOURCE_PRINCIPALS, MAX_SOURCE_WORKLOADS};
pub use recorded::{count_request_body, Recorded};

use crate::metrics::ProxyMetrics;
use crate::trace::{ActiveSpan, SpanKind, Tracer};
use edges::{EdgeKey, EdgeTable};

/// Taps past this many events waiting to be sent lose events: a tap is for watching, and must
/// never hold requests or memory.
const TAP_QUEUE: usize = 1024;

/// Which side of a call reported it, as Istio's `reporter` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The caller's proxy (outbound).
    Source,
    /// The callee's proxy (inbound).
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// Short response flags in Envoy's spirit: why the proxy, not the app, shaped the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `NR`: no service or route for the request.
    NoRoute,
    /// `UH`: the destination has no endpoint to send to.
    NoHealthyUpstream,
    /// `UF`: the connection to the upstream proxy or app failed.
    UpstreamConnectFailure,
    /// `UC`: the upstream went away mid-response.
    UpstreamReset,
    /// `DC`: the client went away before the response was sent.
    DownstreamDisconnect,
    /// `UAEX`-like: an AuthorizationPolicy denied the request (Envoy logs `RBAC` details).
    Denied,
    /// `DPE`: the request could not be parsed or normalized.
    DownstreamProtocolError,
    /// `FI`: a route's fault injection aborted the request.
    FaultAbort,
    /// `DI`: a route's fault injection delayed the request.
    FaultDelay,
    /// `UT`: the route's timeout (or the caller's deadline) passed first.
    UpstreamTimeout,
    /// `URX`: retries were spent (attempts or budget) and the last answer stands.
    RetriesExhausted,
    /// `UO`: the destination's connection-pool limits were full.
    Overflow,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoHealthyUpstream => "UH",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamReset => "UC",
            Flag::DownstreamDisconnect => "DC",
            Flag::Denied => "RBAC",
            Flag::DownstreamProtocolError => "DPE",
            Flag::FaultAbort => "FI",
            Flag::FaultDelay => "DI",
            Flag::UpstreamTimeout => "UT",
            Flag::RetriesExhausted => "URX",
            Flag::Overflow => "UO",
        }
    }
}

/// The flag label of an exchange: `-` when the proxy only relayed, as Envoy writes it.
pub fn flag_label(flag: Option<Flag>) -> &'static str {
    flag.map_or("-", Flag::as_str)
}

/// How a telemetry-producing error answer says why: the proxy's own responses carry a
/// [`Flag`] in their extensions, read when the exchange finishes.
pub fn flag_response(
    mut resp: http::Response<crate::body::Body>,
    flag: Flag,
) -> http::Response<crate::body::Body> {
    resp.extensions_mut().insert(flag);
    resp
}

/// One open tap: which requests it wants.
#[derive(Clone, Debug)]
struct Tap {
    id: String,
    path_prefix: String,
    method: String,
}

/// The proxy's telemetry: one per proxy, shared by every listener.
pub struct Telemetry {
    metrics: Arc<ProxyMetrics>,
    /// Off: no exchange is recorded at all (the benchmark's baseline, and for users who
    /// want none). Switchable at run time (admin `POST /telemetry`); exchanges already
    /// started finish recording.
    enabled: std::sync::atomic::AtomicBool,
    /// The proxy's own workload, as edges name it.
    pub own_workload: Arc<str>,
    pub own_namespace: Arc<str>,
    pub own_principal: Arc<str>,
    access_log: Option<AccessLog>,
    tracer: Tracer,
    /// Every edge recorded, with its metric handles and this period's summaries.
    edges: EdgeTable,
    /// When the current report period started.
    period_start: Mutex<Instant>,
    taps: ArcSwap<Vec<Tap>>,
    tap_tx: tokio::sync::mpsc::Sender<proto::TapEvent>,
    /// Held by the control stream while it is open; it sends the events.
    tap_rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<proto::TapEvent>>,
    /// Tap events lost to a full queue.
    pub tap_dropped: AtomicU64,
}

impl Telemetry {
    pub fn new(
        metrics: Arc<ProxyMetrics>,
        enabled: bool,
        own_workload: &str,
        own_namespace: &str,
        own_principal: &str,
        access_log: Option<AccessLog>,
        tracer: Tracer,
    ) -> Self {
        let (tap_tx, tap_rx) = tokio::sync::mpsc::channel(TAP_QUEUE);
        Telemetry {
            metrics,
            enabled: std::sync::atomic::AtomicBool::new(enabled),
            own_workload: own_workload.into(),
            own_namespace: own_namespace.into(),
            own_principal: own_principal.into(),
            access_log,
            tracer,
            edges: EdgeTable::default(),
            period_start: Mutex::new(Instant::now()),
            taps: ArcSwap::from_pointee(Vec::new()),
            tap_tx,
            tap_rx: tokio::sync::Mutex::new(tap_rx),
            tap_dropped: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// An edge from this workload (source reporter), over mutual TLS unless it leaves the
    /// mesh.
    pub fn outbound_edge(
        &self,
        destination_service: &str,
        destination_workload: &str,
        destination_namespace: &str,
        destination_principal: &str,
        mutual_tls: bool,
    ) -> Edge {
        self.edges.get(&EdgeKey {
            reporter: Reporter::Source,
            source_workload: &self.own_workload,
            source_namespace: &self.own_namespace,
            source_principal: &self.own_principal,
            destination_service,
            destination_workload,
            destination_namespace,
            destination_principal,
            mutual_tls,
        })
    }

    /// An edge to this workload (destination reporter). The caller's workload name is its
    /// proxy's word: past [`MAX_SOURCE_WORKLOADS`] distinct names it reads `other`. The
    /// principal must already be bounded ([`Telemetry::source_principal`], once per
    /// connection), and `destination_service` too: one of the snapshot's services, or
    /// `unknown` ([`crate::inbound`] checks both).
    pub fn inbound_edge(
        &self,
        source_workload: &str,
        source_namespace: &str,
        source_principal: &str,
        destination_service: &str,
        mutual_tls: bool,
    ) -> Edge {
        self.edges.get(&EdgeKey {
            reporter: Reporter::Destination,
            source_workload: self.edges.source_workload(source_workload),
            source_namespace,
            source_principal,
            destination_service,
            destination_workload: &self.own_workload,
            destination_namespace: &self.own_namespace,
            destination_principal: &self.own_principal,
            mutual_tls,
        })
    }

    /// A caller's principal as edges label it: its own past the TLS handshake for the first
    /// [`MAX_SOURCE_PRINCIPALS`] distinct ones, `other` after.
    pub fn source_principal<'a>(&self, principal: &'a str) -> &'a str {
        self.edges.source_principal(principal)
    }

    /// Starts recording an HTTP request; `None` when telemetry is off. Its span joins the
    /// trace `headers` carry (or starts one) and `headers` then carry the span's context, to
    /// be sent on: to the next proxy by the source side, to the app by the destination side.
    pub fn start(
        self: &Arc<Self>,
        edge: Edge,
        method: &http::Method,
        authority: &str,
        path: &str,
        grpc: bool,
        headers: &mut http::HeaderMap,
    ) -> Option<Exchange> {
        if !self.enabled() {
            return None;
        }
        let parent = crate::trace::extract(headers);
        let (kind, name) = match edge.reporter {
            Reporter::Source => (SpanKind::Client, "outbound"),
            Reporter::Destination => (SpanKind::Server, "inbound"),
        };
        let span = self.tracer.start(kind, name, parent.as_ref());
        let context = span.context();
        crate::trace::inject(headers, &context);
        // The path and authority are kept only when something will write them: a log line, a
        // tap or a recorded span. Metrics never see them.
        let detail =
            self.access_log.is_some() || span.is_recording() || !self.taps.load().is_empty();
        Some(Exchange {
            telemetry: self.clone(),
            edge,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            method: method.clone(),
            authority: if detail {
                authority.into()
            } else {
                String::new()
            },
            path: if detail { path.into() } else { String::new() },
            grpc,
            upstream: None,
            route: None,
            policy: None,
            // Formatted only for what prints it.
            trace_id: detail.then(|| context.trace_id_hex()),
            request_bytes: None,
            span: Some(span),
            recorded: false,
        })
    }

    /// Starts recording a TCP connection; `None` when telemetry is off.
    pub fn start_tcp(self: &Arc<Self>, edge: Edge) -> Option<TcpExchange> {
        if !self.enabled() {
            return None;
        }
        edge.count_tcp_open(&self.metrics);
        Some(TcpExchange {
            telemetry: self.clone(),
            edge,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            upstream: None,
        })
    }

    /// Replaces the open taps with the control plane's list.
    pub fn set_taps(&self, taps: &[proto::TapRequest]) {
        let taps: Vec<Tap> = taps
            .iter()
            .map(|t| Tap {
                id: t.id.clone(),
                path_prefix: t.path_prefix.clone(),
                method: t.method.clone(),
            })
            .collect();
        tracing::info!(taps = taps.len(), "taps changed");
        self.taps.store(Arc::new(taps));
    }

    /// The tap events waiting to be sent, for the control stream (one at a time holds it).
    pub fn tap_events(&self) -> &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<proto::TapEvent>> {
        &self.tap_rx
    }

    /// The destination-side edge summaries since the previous call, and the period they
    /// cover, for the control plane's report.
    pub fn take_summaries(&self) -> (Vec<proto::EdgeStats>, u64) {
        let now = Instant::now();
        let period = {
            let mut start = self.period_start.lock().unwrap_or_else(|p| p.into_inner());
            let p = now.duration_since(*start);
            *start = now;
            p
        };
        let mut edges = Vec::new();
        for edge in self.edges.all() {
            for (protocol, s) in edge.take_summaries() {
                edges.push(proto::EdgeStats {
                    source_workload: edge.labels.source_workload.to_string(),
                    source_namespace: edge.labels.source_namespace.to_string(),
                    source_principal: edge.labels.source_principal.to_string(),
                    destination_service: edge.labels.destination_service.to_string(),
                    destination_workload: edge.labels.destination_workload.to_string(),
                    destination_namespace: edge.labels.destination_namespace.to_string(),
                    protocol: protocol.to_owned(),
                    requests: s.requests,
                    failures: s.failures,
                    latency_counts: s.latency.counts().to_vec(),
                    latency_sum_micros: s.latency.sum_micros(),
                });
            }
        }
        (edges, u64::try_from(period.as_millis()).unwrap_or(u64::MAX))
    }

    fn tap(&self, event: impl FnOnce() -> proto::TapEvent, method: &str, path: &str) {
        let taps = self.taps.load();
        if taps.is_empty() {
            return;
        }
        let mut event_once = Some(event);
        let mut base: Option<proto::TapEvent> = None;
        for tap in taps.iter() {
            if !(tap.method.is_empty() || tap.method.eq_ignore_ascii_case(method))
                || !path.starts_with(&tap.path_prefix)
            {
                continue;
            }
            if base.is_none() {
                base = event_once.take().map(|f| f());
            }
            let Some(base) = &base else { continue };
            let mut e = base.clone();
            e.tap_id = tap.id.clone();
            if self.tap_tx.try_send(e).is_err() {
                self.tap_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One HTTP request in flight. Finished by [`Recorded`] when the response body ends.
pub struct Exchange {
    telemetry: Arc<Telemetry>,
    pub edge: Edge,
    start: Instant,
    start_wall: SystemTime,
    method: http::Method,
    authority: String,
    path: String,
    grpc: bool,
    /// Where the request went: the peer proxy (source side) or the app (destination side).
    pub upstream: Option<SocketAddr>,
    /// The route that chose the destination.
    pub route: Option<String>,
    /// The AuthorizationPolicy that decided (destination side).
    pub policy: Option<String>,
    pub trace_id: Option<String>,
    /// Request body bytes, counted as the body streams ([`count_request_body`]).
    pub request_bytes: Option<Arc<AtomicU64>>,
    span: Option<ActiveSpan>,
    recorded: bool,
}

/// A request abandoned before its response (the client went away while the proxy waited:
/// a delay, an upstream, a retry) is still counted: status 0, flag `DC`, as Envoy logs it.
impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(Outcome {
                status: 0,
                grpc_status: None,
                flag: Some(Flag::DownstreamDisconnect),
                response_bytes: 0,
            });
        }
    }
}

/// How a response ended, as [`Recorded`] saw it.
pub struct Outcome {
    pub status: u16,
    /// `grpc-status` from the trailers (or a trailers-only response's headers).
    pub grpc_status: Option<u8>,
    pub flag: Option<Flag>,
    pub response_bytes: u64,
}

impl Exchange {
    fn protocol(&self) -> &'static str {
        if self.grpc {
            "grpc"
        } else {
            "http"
        }
    }

    /// Records the finished request everywhere it is wanted.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    /// Records once; a second call does nothing.
    fn record(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let metrics = &self.telemetry.metrics;
        let elapsed = self.start.elapsed();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.edge
            .count_request(metrics, self.protocol(), &outcome, elapsed.as_secs_f64());
        let failed = outcome.status >= 500
            || outcome.grpc_status.is_some_and(grpc_is_failure)
            || outcome.flag == Some(Flag::DownstreamDisconnect) && outcome.status == 0;
        let tel = &self.telemetry;
        self.edge.summarize(self.protocol(), failed, micros);
        let request_bytes = self
            .request_bytes
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        if let Some(span) = self.span.take() {
            self.end_span(span, &outcome, failed, request_bytes);
        }
        if let Some(log) = &tel.access_log {
            log.request(self, &outcome, micros, request_bytes);
        }
        tel.tap(
            || proto::TapEvent {
                tap_id: String::new(),
                start_unix_micros: unix_micros(self.start_wall),
                reporter: self.edge.reporter.as_str().to_owned(),
                method: self.method.to_string(),
                authority: self.authority.clone(),
                path: self.path.clone(),
                status: u32::from(outcome.status),
                grpc_status: outcome
                    .grpc_status
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                duration_micros: micros,
                source_principal: self.edge.labels.source_principal.to_string(),
                destination_principal: self.edge.labels.destination_principal.to_string(),
                source_workload: self.edge.labels.source_workload.to_string(),
                destination_service: self.edge.labels.destination_service.to_string(),
                destination_workload: self.edge.labels.destination_workload.to_string(),
                upstream: self.upstream.map(|u| u.to_string()).unwrap_or_default(),
                response_flags: flag_label(outcome.flag).to_owned(),
                trace_id: self.trace_id.clone().unwrap_or_default(),
                request_bytes,
                response_bytes: outcome.response_bytes,
            },
            self.method.as_str(),
            &self.path,
        );
    }
}

impl Exchange {
    /// Ends the span with OpenTelemetry's HTTP attributes and the mesh's own.
    fn end_span(&self, mut span: ActiveSpan, outcome: &Outcome, failed: bool, request_bytes: u64) {
        if span.is_recording() {
            let edge = &self.edge;
            span.set_attribute("http.request.method", self.method.to_string());
            span.set_attribute("server.address", self.authority.clone());
            span.set_attribute("url.path", self.path.clone());
            span.set_attribute("http.response.status_code", outcome.status);
            if let Some(code) = outcome.grpc_status {
                span.set_attribute("rpc.grpc.status_code", u32::from(code));
            }
            span.set_attribute("http.request.body.size", request_bytes);
            span.set_attribute("http.response.body.size", outcome.response_bytes);
            span.set_attribute("trellis.reporter", edge.reporter.as_str());
            span.set_attribute(
                "trellis.source.workload",
                edge.labels.source_workload.to_string(),
            );
            span.set_attribute(
                "trellis.source.principal",
                edge.labels.source_principal.to_string(),
            );
            span.set_attribute(
                "trellis.destination.service",
                edge.labels.destination_service.to_string(),
            );
            span.set_attribute(
                "trellis.destination.workload",
                edge.labels.destination_workload.to_string(),
            );
            span.set_attribute("trellis.response_flags", flag_label(outcome.flag));
            if let Some(u) = self.upstream {
                span.set_attribute("trellis.upstream", u.to_string());
            }
            if failed {
                span.set_error(format!("status {}", outcome.status));
            }
        }
        span.end();
    }
}

/// gRPC statuses that mean the server failed, as a success rate should count them: not
/// the ones that report on the request (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
/// PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED, CANCELLED).
fn grpc_is_failure(code: u8) -> bool {
    matches!(code, 2 | 4 | 8 | 10 | 12 | 13 | 14 | 15)
}

/// One TCP connection in flight; [`TcpExchange::finish`] when it closes.
pub struct TcpExchange {
    telemetry: Arc<Telemetry>,
    pub edge: Edge,
    start: Instant,
    start_wall: SystemTime,
    pub upstream: Option<SocketAddr>,
}

impl TcpExchange {
    /// Records the closed connection: as Istio counts them, `sent` is what went back to the
    /// client (the response direction) and `received` what came from it (the request
    /// direction); a flag when it could not be made or ended badly.
    pub fn finish(self, sent: u64, received: u64, flag: Option<Flag>) {
        let metrics = &self.telemetry.metrics;
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.edge.count_tcp_close(metrics, sent, received, flag);
        let tel = &self.telemetry;
        self.edge.summarize("tcp", flag.is_some(), micros);
        if let Some(log) = &tel.access_log {
            log.connection(&self, flag, micros, sent, received);
        }
        tel.tap(
            || proto::TapEvent {
                tap_id: String::new(),
                start_unix_micros: unix_micros(self.start_wall),
                reporter: self.edge.reporter.as_str().to_owned(),
                method: "TCP".into(),
                duration_micros: micros,
                source_principal: self.edge.labels.source_principal.to_string(),
                destination_principal: self.edge.labels.destination_principal.to_string(),
                source_workload: self.edge.labels.source_workload.to_string(),
                destination_service: self.edge.labels.destination_service.to_string(),
                destination_workload: self.edge.labels.destination_workload.to_string(),
                upstream: self.upstream.map(|u| u.to_string()).unwrap_or_default(),
                response_flags: flag_label(flag).to_owned(),
                request_bytes: received,
                response_bytes: sent,
                ..Default::default()
            },
            "TCP",
            "",
        );
    }
}

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
