//! A small client of the control plane's HTTP API, for `certs`, `check`, `ca`, the config
//! commands, `stat`, `top` and `tap` (the one streaming call).
//!
//! Every call but `/healthz` and `/metrics` carries a token from the control plane's data
//! directory: `read-token` for reads, `admin-token` for changes and taps.

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

/// Reads the token for the API's reads: `read-token` in the control plane's data directory,
/// or its admin token when only that one is at hand (the admin token reads too).
pub fn read_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("read-token");
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            admin_token(data_dir).with_context(|| {
                format!(
                    "no read token {} (give the control plane's --data-dir)",
                    path.display()
                )
            })
        }
        Err(e) => Err(e).with_context(|| format!("reading the read token {}", path.display())),
    }
}

/// A GET with `token`.
pub async fn get(api: SocketAddr, path: &str, token: &str) -> anyhow::Result<Value> {
    call(
        api,
        http::Method::GET,
        path,
        Some(token),
        None,
        Duration::from_secs(10),
    )
    .await
}

/// `?k=v&…` for the parameters whose value is not empty, encoded as a form.
pub fn query_string(params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// Opens a streaming GET and calls `line` with each line of the body (without its newline)
/// until the body ends or `line` returns `false`. Only the answer's head is under `timeout`:
/// the body may stay open, and silent, as long as the server likes. A non-2xx answer is an
/// error carrying the API's message.
pub async fn stream_lines(
    api: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    timeout: Duration,
    mut line: impl FnMut(&str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().uri(format!("http://{api}{path}"));
    if let Some(t) = bearer {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = tokio::time::timeout(timeout, client.request(req.body(Full::new(Bytes::new()))?))
        .await
        .with_context(|| format!("control plane API at {api} did not answer in {timeout:?}"))?
        .with_context(|| format!("cannot reach the control plane API at {api}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        let msg = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("{msg} ({status})");
    }
    // Bytes of a line not yet complete.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let rest = pending.split_off(end + 1);
            let text = String::from_utf8_lossy(&pending[..end]).into_owned();
            pending = rest;
            if !text.trim().is_empty() && !line(&text)? {
                return Ok(());
            }
        }
    }
    Ok(())
}
