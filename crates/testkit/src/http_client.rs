//! A small keep-alive HTTP/1.1 client for tests, able to send a request to one address while
//! naming another host (as an app does through its proxy).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// A response, with its body read whole.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "response ({}) is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Pooled HTTP/1.1 client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        Self {
            inner: Client::builder(TokioExecutor::new()).build(c),
            timeout: Duration::from_secs(20),
        }
    }

    /// GET `path` from `addr`, with `Host: host` and extra headers.
    pub async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<HttpResponse> {
        self.send(http::Method::GET, addr, host, path, headers, Bytes::new())
            .await
    }

    /// POST `body` (with its `content-length`) to `path` at `addr`, with `Host: host`.
    pub async fn post(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<HttpResponse> {
        self.send(http::Method::POST, addr, host, path, &[], body)
            .await
    }

    async fn send(
        &self,
        method: http::Method,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<HttpResponse> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{path}"))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body))?;
        let resp = tokio::time::timeout(self.timeout, self.inner.request(req))
            .await
            .with_context(|| format!("{method} {host}{path} via {addr} timed out"))?
            .with_context(|| format!("{method} {host}{path} via {addr}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// The sum of the samples of `metric` in the Prometheus text served at `addr` (`/metrics`)
/// whose label sets contain every one of `labels` (each written `name="value"`).
pub async fn metric_sum(addr: SocketAddr, metric: &str, labels: &[&str]) -> anyhow::Result<u64> {
    let text = HttpClient::new()
        .get(addr, "metrics", "/metrics", &[])
        .await?
        .text();
    let prefix = format!("{metric}{{");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum())
}
