//! `trellis demo-app`: a small HTTP service for demos and tests.
//!
//! It answers every request with JSON naming itself and echoing the request headers it
//! received (so tests can see what the mesh added or removed), after calling each
//! `--call` URL through its proxy and embedding their answers. `?status=N` answers with that
//! status; `?delay=250ms` waits first. If any downstream call fails, the answer is 502 so a
//! failure anywhere in the call tree is visible at the top.
//!
//! Like Bookinfo's productpage, it forwards the trace context (`traceparent`, `tracestate`,
//! B3), `x-request-id` and `end-user` of the request it serves to the calls it makes, so one
//! request's calls join one trace and header-based routes apply all the way down.
//!
//! `--startup-call` URLs are called once, as soon as the app listens, the way many real apps
//! fetch something from a dependency while starting: their outcome (one try each, no retry)
//! is logged and embedded in every answer as `startup_calls`, which shows what an app's very
//! first requests met (in a namespace whose proxy is not capturing yet, a service's virtual
//! IP leads nowhere).
//!
//! With `--echo` it is an echo server instead ([`echo`]): every request is answered 200 with
//! `Key=Value` lines describing it as received, in the format of the echo app Istio and the
//! Gateway API conformance tests use, and no calls are made. `--grpc-listen` adds that app's
//! gRPC echo service (`proto.EchoTestService`) on a port of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};

mod echo;

#[derive(Args)]
pub struct DemoAppArgs {
    #[arg(long, default_value = "127.0.0.1:9080")]
    pub listen: SocketAddr,
    /// Service name reported in answers.
    #[arg(long, default_value = "demo")]
    pub service: String,
    /// Version reported in answers.
    #[arg(long, default_value = "v1")]
    pub app_version: String,
    /// Instance name reported in answers (`Hostname` with --echo).
    #[arg(long, default_value = "demo-1")]
    pub instance: String,
    /// Namespace reported in answers: the workload's.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Answer every request with 200 and `Key=Value` text lines describing it as received
    /// (Hostname, Namespace, URL, Host, Method, one RequestHeader line per header value…),
    /// as the echo app of the Gateway API conformance tests does, instead of JSON. Query
    /// parameters such as `status` and `delay` are not interpreted.
    #[arg(long, conflicts_with_all = ["calls", "startup_calls"])]
    pub echo: bool,
    /// Also serve the gRPC echo service `proto.EchoTestService` (unary `Echo`, answering with
    /// the same lines, `:authority` included) on this address, over plaintext HTTP/2.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// A URL to call for every request (repeatable), e.g. `http://reviews:9080/`.
    #[arg(long = "call")]
    pub calls: Vec<String>,
    /// How long each call may take before it is abandoned (e.g. `3s`), as Bookinfo's
    /// productpage gives reviews 3 s; without it, calls wait as long as the proxy does.
    #[arg(long, value_parser = crate::duration::parse)]
    pub call_timeout: Option<std::time::Duration>,
    /// How many times a call that timed out or could not connect is tried again
    /// (Bookinfo's productpage: once).
    #[arg(long, default_value_t = 0)]
    pub call_retries: u32,
    /// Finish a request (its delay, its calls) even when its client has gone away, as a
    /// thread-per-request server does; by default the work stops with the connection.
    #[arg(long)]
    pub finish_abandoned: bool,
    /// Wait this long before answering every request (e.g. `20ms`), as a slower instance
    /// would; `?delay=` adds to it.
    #[arg(long, value_parser = crate::duration::parse)]
    pub delay: Option<std::time::Duration>,
    /// Answer the first N requests with 500, as an instance that starts broken and then
    /// recovers.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,
    /// A URL to call once at start (repeatable), without retrying.
    #[arg(long = "startup-call")]
    pub startup_calls: Vec<String>,
    /// HTTP proxy to send calls through (the workload's Trellis proxy); `http_proxy` is
    /// used when absent.
    #[arg(long, env = "http_proxy")]
    pub proxy: Option<String>,
}

type Body = Full<Bytes>;
type HttpClient = Client<ProxyConnector, Body>;

/// Connects every call to the proxy when there is one, else to the URL's own host. Calls
/// are sent in origin form with `Host` naming the service, which the proxy routes by.
#[derive(Clone)]
struct ProxyConnector {
    proxy: Option<String>,
}

impl tower::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = match &self.proxy {
            Some(p) => Ok(p.clone()),
            None => uri
                .authority()
                .map(|a| match a.port_u16() {
                    Some(_) => a.to_string(),
                    None => format!("{}:80", a.host()),
                })
                .ok_or_else(|| std::io::Error::other("URL has no host")),
        };
        Box::pin(async move {
            let tcp = TcpStream::connect(target?).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tcp))
        })
    }
}

struct App {
    args: DemoAppArgs,
    client: HttpClient,
    /// The answers to the startup calls, once they are all in.
    startup: std::sync::OnceLock<Vec<Value>>,
    /// Requests received so far (for `--fail-first`).
    received: std::sync::atomic::AtomicU64,
    /// The names echo answers report.
    who: Arc<echo::Identity>,
}

/// How long one startup call may take: a call into a mesh that drops its packets would
/// otherwise wait for the kernel's connect timeout (minutes).
const STARTUP_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(args: DemoAppArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let proxy = args.proxy.as_deref().map(|p| {
        p.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    });
    let client = Client::builder(TokioExecutor::new()).build(ProxyConnector { proxy });
    tracing::info!(listen = %args.listen, service = %args.service, version = %args.app_version, "demo app serving");
    let who = Arc::new(echo::Identity {
        hostname: args.instance.clone(),
        namespace: args.namespace.clone(),
        version: args.app_version.clone(),
    });
    let grpc_listen = args.grpc_listen;
    let app = Arc::new(App {
        args,
        client,
        startup: std::sync::OnceLock::new(),
        received: std::sync::atomic::AtomicU64::new(0),
        who: who.clone(),
    });
    let grpc = async {
        match grpc_listen {
            Some(listen) => echo::serve_grpc(listen, who).await,
            None => std::future::pending().await,
        }
    };
    let serve = async {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move {
                        if app.args.echo {
                            let local = app.args.listen;
                            return Ok::<_, Infallible>(
                                echo::http_answer(req, &app.who, local, peer).await,
                            );
                        }
                        if !app.args.finish_abandoned {
                            return Ok::<_, Infallible>(handle(req, &app).await);
                        }
                        // On a task of its own, the work goes on if the client leaves.
                        let work = tokio::spawn(async move { handle(req, &app).await });
                        Ok(work.await.unwrap_or_else(|e| {
                            json_response(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &json!({"error": e.to_string()}),
                            )
                        }))
                    }
                });
                // HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port.
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    };
    // Run beside the accept loop: a startup call may come back to this very app.
    let startup = async {
        let mut answers = Vec::with_capacity(app.args.startup_calls.len());
        for url in &app.args.startup_calls {
            let (ok, answer) = match tokio::time::timeout(
                STARTUP_CALL_TIMEOUT,
                // One try, whatever the call retries: what the very first request met.
                async {
                    call_once(&app.client, url, &[])
                        .await
                        .unwrap_or_else(|e| (false, e))
                },
            )
            .await
            {
                Ok(r) => r,
                Err(_) => (
                    false,
                    json!({"url": url, "error": format!("no answer within {STARTUP_CALL_TIMEOUT:?}")}),
                ),
            };
            if ok {
                tracing::info!(%url, "startup call succeeded");
            } else {
                tracing::warn!(%url, answer = %answer, "startup call failed");
            }
            answers.push(json!({"url": url, "ok": ok, "answer": answer}));
        }
        let _ = app.startup.set(answers);
    };
    tokio::select! {
        _ = async { tokio::join!(serve, startup) } => Ok(()),
        // Serving gRPC ends only by failing (a port in use, say).
        r = grpc => r,
        _ = crate::signal::shutdown() => Ok(()),
    }
}

async fn handle(req: Request<Incoming>, app: &App) -> Response<Body> {
    let n = app
        .received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(d) = app.args.delay {
        tokio::time::sleep(d).await;
    }
    if n < app.args.fail_first {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({
                "service": app.args.service,
                "instance": app.args.instance,
                "error": format!("request {} of the first {} is failed (--fail-first)", n + 1, app.args.fail_first),
            }),
        );
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    if let Some(d) = query.get("delay") {
        match crate::duration::parse(d) {
            Ok(d) => tokio::time::sleep(d).await,
            Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("bad delay {d:?}")}),
                )
            }
        }
    }
    let headers: Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let forwarded: Vec<(http::HeaderName, http::HeaderValue)> = FORWARDED
        .iter()
        .filter_map(|name| {
            req.headers()
                .get(*name)
                .map(|v| (http::HeaderName::from_static(name), v.clone()))
        })
        .collect();
    let version = format!("{:?}", req.version());
    let path = req.uri().path().to_string();
    // The body is counted as it streams in, never held whole: tests send 10 MB through.
    let mut body_bytes: u64 = 0;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("reading the body: {e}")}),
                )
            }
        }
    }
    let mut calls = Vec::with_capacity(app.args.calls.len());
    let mut failed = false;
    for url in &app.args.calls {
        let (ok, answer) = call(app, url, &forwarded).await;
        failed |= !ok;
        calls.push(answer);
    }
    let status = match query.get("status").map(|s| s.parse::<u16>()) {
        Some(Ok(n)) => StatusCode::from_u16(n).unwrap_or(StatusCode::BAD_REQUEST),
        Some(Err(_)) => StatusCode::BAD_REQUEST,
        None if failed => StatusCode::BAD_GATEWAY,
        None => StatusCode::OK,
    };
    let body = json!({
        "service": app.args.service,
        "version": app.args.app_version,
        "instance": app.args.instance,
        "namespace": app.args.namespace,
        "path": path,
        "http_version": version,
        "body_bytes": body_bytes,
        "headers": headers,
        "calls": calls,
        // null while the startup calls are still under way.
        "startup_calls": app.startup.get(),
    });
    json_response(status, &body)
}

/// Headers passed from the request served to the calls made for it: the trace context,
/// the request ID and Bookinfo's user header (lowercase, as `HeaderName::from_static` needs).
const FORWARDED: [&str; 10] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
    "end-user",
];

/// Calls one downstream URL with the `forwarded` headers, within the call timeout and with
/// the retries the app was given; the answer is its JSON, or a description of the failure
/// (with the attempts made).
async fn call(
    app: &App,
    url: &str,
    forwarded: &[(http::HeaderName, http::HeaderValue)],
) -> (bool, Value) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let once = call_once(&app.client, url, forwarded);
        let result = match app.args.call_timeout {
            Some(t) => match tokio::time::timeout(t, once).await {
                Ok(r) => r,
                Err(_) => Err(json!({"url": url, "error": format!("timed out after {t:?}")})),
            },
            None => once.await,
        };
        match result {
            Ok(answer) => return answer,
            // Only a timeout or a failed connection is tried again, as an HTTP client
            // library's retries would; an HTTP error status is an answer.
            Err(mut e) if attempt > app.args.call_retries => {
                e["attempts"] = json!(attempt);
                return (false, e);
            }
            Err(_) => continue,
        }
    }
}

/// One try: `Err` for what may be tried again (no connection, no answer in time).
async fn call_once(
    client: &HttpClient,
    url: &str,
    forwarded: &[(http::HeaderName, http::HeaderValue)],
) -> Result<(bool, Value), Value> {
    let mut req = match Request::get(url).body(Body::new(Bytes::new())) {
        Ok(r) => r,
        Err(e) => return Ok((false, json!({"url": url, "error": e.to_string()}))),
    };
    for (name, value) in forwarded {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => return Err(json!({"url": url, "error": format!("{e:?}")})),
    };
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok((false, json!({"url": url, "error": e.to_string()}))),
    };
    Ok(match serde_json::from_slice::<Value>(&body) {
        Ok(v) if status.is_success() => (true, v),
        _ => (
            false,
            json!({"url": url, "status": status.as_u16(), "error": String::from_utf8_lossy(&body)}),
        ),
    })
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn parse_query(q: &str) -> std::collections::HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = parse_query("status=503&delay=10ms&x");
        assert_eq!(q.get("status").map(String::as_str), Some("503"));
        assert_eq!(q.get("delay").map(String::as_str), Some("10ms"));
        assert_eq!(q.len(), 2);
    }
}
