//! Span export to a real OTLP/gRPC receiver: what arrives (ids, parent links, kinds,
//! resource, attributes, status), batching and flushing, and that a collector that is away
//! never holds up the request path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use trellis_proxy::trace::{self, Resource, SpanKind, Tracer};
use trellis_testkit::otlp::{self, OtlpReceiver, ReceivedSpan, StatusCode};

fn resource() -> Resource {
    Resource {
        service_name: "reviews".into(),
        namespace: "shop".into(),
        workload: "reviews-v1".into(),
        instance_id: String::new(),
    }
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.name == name)
}

/// An address nothing listens on: bound, then let go.
fn closed_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind(local())?;
    Ok(l.local_addr()?)
}

#[tokio::test]
async fn spans_arrive_with_their_links_and_resource() -> Result<()> {
    let receiver = OtlpReceiver::start(local()).await?;
    let tracer = Tracer::new(Some(receiver.endpoint()), 1.0, resource())?;

    let mut client = tracer.start(SpanKind::Client, "GET reviews", None);
    client.set_attribute("http.request.method", "GET");
    client.set_attribute("http.response.status_code", 200);
    client.set_attribute("trellis.retried", false);
    let parent = client.context();
    let mut server = tracer.start(SpanKind::Server, "inbound", Some(&parent));
    server.set_attribute("peer.identity", String::from("spiffe://t/ns/shop/sa/web"));
    server.set_error("upstream reset");
    let started = std::time::SystemTime::now();
    server.end();
    client.end();

    let spans = receiver
        .wait_for(Duration::from_secs(10), |s| s.len() >= 2)
        .await?;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let c = find(&spans, "GET reviews").context("client span")?;
    let s = find(&spans, "inbound").context("server span")?;

    assert_eq!(c.trace_id, parent.trace_id_hex());
    assert_eq!(s.trace_id, c.trace_id);
    assert_eq!(c.span_id, parent.span_id_hex());
    assert_eq!(c.parent_span_id, "", "the client span is the root");
    assert_eq!(s.parent_span_id, c.span_id);
    assert_eq!(c.kind, otlp::SpanKind::Client);
    assert_eq!(s.kind, otlp::SpanKind::Server);

    for span in [c, s] {
        assert_eq!(span.service_name, "reviews");
        assert_eq!(
            span.resource.get("service.namespace").map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            span.resource.get("service.instance.id").map(String::as_str),
            Some("reviews-v1")
        );
        assert_eq!(span.scope_name, "trellis-proxy");
        assert!(span.start_unix_nanos > 0 && span.end_unix_nanos >= span.start_unix_nanos);
    }
    let since_epoch = started.duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    assert!(
        u128::from(s.end_unix_nanos).abs_diff(since_epoch) < Duration::from_secs(5).as_nanos(),
        "timestamps are Unix nanos"
    );

    assert_eq!(c.attr("http.request.method"), Some("GET"));
    assert_eq!(c.attr("http.response.status_code"), Some("200"));
    assert_eq!(c.attr("trellis.retried"), Some("false"));
    assert_eq!(c.status_code, StatusCode::Unset);
    assert_eq!(s.attr("peer.identity"), Some("spiffe://t/ns/shop/sa/web"));
    assert_eq!(s.status_code, StatusCode::Error);
    assert_eq!(s.status_message, "upstream reset");
    assert_eq!(tracer.dropped(), 0);
    Ok(())
}

#[tokio::test]
async fn flush_sends_without_waiting_for_the_batch_timer() -> Result<()> {
    let receiver = OtlpReceiver::start(local()).await?;
    let tracer = Tracer::new(Some(receiver.endpoint()), 1.0, resource())?;
    for i in 0..3 {
        let mut span = tracer.start(SpanKind::Client, "flushed", None);
        span.set_attribute("i", i);
        span.end();
    }
    let t = Instant::now();
    tracer.flush().await;
    // Export answered means stored: no waiting needed.
    assert_eq!(receiver.spans().len(), 3, "{:#?}", receiver.spans());
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn unsampled_and_propagated_contexts_export_nothing() -> Result<()> {
    let receiver = OtlpReceiver::start(local()).await?;
    let tracer = Tracer::new(Some(receiver.endpoint()), 0.0, resource())?;
    tracer
        .start(SpanKind::Server, "new trace, not sampled", None)
        .end();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
    );
    let parent = trace::extract(&headers).context("valid traceparent")?;
    let span = tracer.start(SpanKind::Server, "parent not sampled", Some(&parent));
    trace::inject(&mut headers, &span.context());
    span.end();
    assert!(headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.ends_with("-00")));
    let marker = tracer.start(
        SpanKind::Client,
        "sampled marker",
        Some(&trace::TraceContext {
            sampled: true,
            ..parent
        }),
    );
    marker.end();
    tracer.flush().await;
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["sampled marker"]);
    Ok(())
}

#[tokio::test]
async fn a_collector_that_is_away_never_blocks_the_request_path() -> Result<()> {
    let tracer = Tracer::new(Some(format!("http://{}", closed_port()?)), 1.0, resource())?;
    let t = Instant::now();
    for _ in 0..10_000 {
        let mut span = tracer.start(SpanKind::Client, "nowhere", None);
        span.set_attribute("http.response.status_code", 503);
        span.end();
    }
    // 10,000 spans in well under a second on any machine when nothing waits; a blocking
    // send or connect would take seconds.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(tracer.dropped() > 0, "the queue is bounded");
    // The exporter fails its batches (connection refused) and stays alive.
    tokio::time::timeout(Duration::from_secs(20), tracer.flush())
        .await
        .context("flush after failed exports")?;
    tracer.start(SpanKind::Client, "after", None).end();
    Ok(())
}

#[tokio::test]
async fn exporter_reconnects_when_the_collector_comes_back() -> Result<()> {
    let addr = closed_port()?;
    let tracer = Tracer::new(Some(format!("http://{addr}")), 1.0, resource())?;
    tracer.start(SpanKind::Client, "lost", None).end();
    tracer.flush().await;
    let receiver = OtlpReceiver::start(addr).await?;
    tracer.start(SpanKind::Client, "delivered", None).end();
    tracer.flush().await;
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["delivered"]);
    Ok(())
}

#[test]
fn receiver_on_its_own_thread() -> Result<()> {
    let listener = std::net::TcpListener::bind(local())?;
    let receiver = OtlpReceiver::start_on(listener)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spans = runtime.block_on(async {
        let tracer = Tracer::new(Some(receiver.endpoint()), 1.0, resource())?;
        tracer.start(SpanKind::Server, "threaded", None).end();
        // No flush: the batch timer sends it, while this runtime waits on the receiver's.
        receiver
            .wait_for(Duration::from_secs(10), |s| !s.is_empty())
            .await
    })?;
    assert_eq!(spans[0].name, "threaded");
    assert_eq!(spans[0].service_name, "reviews");
    let again = receiver.wait_for_blocking(Duration::from_secs(1), |s| s.len() == 1)?;
    assert_eq!(again, spans);
    drop(runtime);
    Ok(())
}
