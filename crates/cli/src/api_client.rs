//! A small client of the control plane's HTTP API, for `certs`, `check` and `ca`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Sends a request to the API and returns the JSON answer; a non-2xx answer is an error
/// carrying the API's message.
pub async fn call(
    api: SocketAddr,
    method: http::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{api}{path}"));
    if let Some(t) = bearer {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(b)?)))?,
        None => req.body(Full::new(Bytes::new()))?,
    };
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .with_context(|| format!("control plane API at {api} did not answer in {timeout:?}"))?
        .with_context(|| format!("cannot reach the control plane API at {api}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "unexpected answer from {api}{path}: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    if !status.is_success() {
        let mut msg = v["error"].as_str().unwrap_or("no message").to_string();
        for e in v["errors"].as_array().into_iter().flatten() {
            msg.push_str("\n  ");
            msg.push_str(e.as_str().unwrap_or(""));
        }
        bail!("{msg}");
    }
    Ok(v)
}

/// Reads the admin token the control plane keeps in its data directory.
pub fn admin_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the admin token {}", path.display()))?;
    Ok(token.trim().to_string())
}

pub async fn get(api: SocketAddr, path: &str) -> anyhow::Result<Value> {
    call(
        api,
        http::Method::GET,
        path,
        None,
        None,
        Duration::from_secs(10),
    )
    .await
}
