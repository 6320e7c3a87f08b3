//! The conformance client, as the upstream echo app's `client` command behaves, run in the
//! network namespace of the workload it speaks for (a thread joins the namespace, see
//! [`trellis_testkit::netns::spawn_in`]), so its connections are captured by that
//! workload's proxy exactly as the app's own would be.
//!
//! * Names resolve through the workload's `/etc/netns/NS/hosts` (what `trellis up --netns`
//!   writes for it), so the client dials exactly the virtual IP its name maps to; an IP
//!   literal is dialled as it is.
//! * HTTP/1.1: the `Host` header can name something other than the address dialled, 3xx
//!   answers are reported and never followed, and one invocation of `count` requests keeps
//!   its connection alive between them (weights must hold per request, not per connection).
//! * gRPC: unary `proto.EchoTestService/Echo` calls over one HTTP/2 connection, `:authority`
//!   set to the name given; a call that does not end OK fails the whole invocation, as it
//!   makes upstream's client command fail.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use trellis_testkit::netns::{block_on, spawn_in};

/// Generated client of the demo app's `proto/echo_test.proto`.
#[allow(clippy::all, dead_code)]
pub mod proto {
    tonic::include_proto!("proto");
}

/// How long one request (or call) may take: far above a round trip through two proxies
/// (milliseconds), so only a stuck exchange runs into it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A workload that sends requests: its network namespace and the hosts file resolvers there
/// read.
#[derive(Debug, Clone)]
pub struct Client {
    /// The workload's name, for messages.
    pub workload: String,
    pub netns: String,
}

/// An HTTP request as the tests write it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// The URL's host, with a port when not 80: `echo`, `echo-v1:8080`, `198.18.50.3:8080`.
    pub host: String,
    /// A `Host` header other than `host` (the address dialled stays `host`'s).
    pub host_header: Option<String>,
    /// Path and query; empty means `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// A gRPC call as the tests write it: always to `echo:7070`, with metadata.
#[derive(Debug, Clone, Default)]
pub struct GrpcCall {
    pub metadata: Vec<(String, String)>,
}

/// One answer as the client reports it.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The HTTP status; 200 for a gRPC call that ended OK.
    pub status: u16,
    /// Every response header value, in order.
    pub response_headers: Vec<(String, String)>,
    /// The echo server's `Key=Value` lines (none when something else answered: a redirect,
    /// a 404 from the mesh).
    pub fields: Vec<(String, String)>,
}

impl Answer {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The serving workload's name.
    pub fn hostname(&self) -> Option<&str> {
        self.field("Hostname")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.field("Namespace")
    }

    /// The path and query the backend received.
    pub fn url(&self) -> Option<&str> {
        self.field("URL")
    }

    /// Every request header value the backend received, as `(name, value)`.
    pub fn request_headers(&self) -> Vec<(&str, &str)> {
        self.fields
            .iter()
            .filter(|(k, _)| k == "RequestHeader")
            .filter_map(|(_, v)| split_header(v))
            .collect()
    }

    /// The last value of a response header (names compared without case).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Name:value`, where a pseudo-header's name starts with its own colon (`:authority:echo`).
fn split_header(line: &str) -> Option<(&str, &str)> {
    let skip = usize::from(line.starts_with(':'));
    let colon = line[skip..].find(':')? + skip;
    Some((&line[..colon], &line[colon + 1..]))
}

/// The `Key=Value` lines of an echo answer.
fn parse_fields(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `host` or `host:port` split, with the port defaulting to `default`.
fn host_port(authority: &str, default: u16) -> Result<(&str, u16)> {
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((
            h,
            p.parse()
                .with_context(|| format!("port in {authority:?}"))?,
        )),
        None => Ok((authority, default)),
    }
}

impl Client {
    /// `/etc/netns/NS/hosts`, as `ip netns exec` shows it to processes in the namespace.
    fn hosts_file(&self) -> PathBuf {
        PathBuf::from(format!("/etc/netns/{}/hosts", self.netns))
    }

    /// The address `name` resolves to in this workload's namespace.
    pub fn resolve(&self, name: &str) -> Result<IpAddr> {
        if let Ok(ip) = name.parse() {
            return Ok(ip);
        }
        let path = self.hosts_file();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .find_map(|l| {
                let mut words = l.split_whitespace();
                let ip = words.next()?;
                words.any(|w| w == name).then(|| ip.parse().ok()).flatten()
            })
            .ok_or_else(|| {
                anyhow!(
                    "{name} does not resolve in {} ({})",
                    self.workload,
                    path.display()
                )
            })
    }

    /// Sends `req` `count` times from this workload, on one kept-alive connection (a new
    /// one only if the server closes it), and returns every answer. A request that gets no
    /// answer fails the whole invocation.
    pub fn http(&self, req: &HttpRequest, count: usize) -> Result<Vec<Answer>> {
        let (name, port) = host_port(&req.host, 80)?;
        let ip = self.resolve(name)?;
        let req = req.clone();
        let thread = spawn_in(&self.netns, move || {
            block_on(async move {
                let mut sender = None;
                let mut answers = Vec::with_capacity(count);
                for i in 0..count {
                    let answer = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        send_http(&mut sender, ip, port, &req),
                    )
                    .await
                    .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
                    .and_then(|r| r)
                    .with_context(|| format!("request {} of {count}", i + 1))?;
                    answers.push(answer);
                }
                Ok(answers)
            })
        })?;
        thread.join()?
    }

    /// Makes `call` `count` times from this workload over one HTTP/2 connection to the
    /// address of `echo` (port 7070), `:authority` `echo:7070`.
    pub fn grpc(&self, call: &GrpcCall, count: usize) -> Result<Vec<Answer>> {
        const AUTHORITY: &str = "echo:7070";
        let (name, port) = host_port(AUTHORITY, 80)?;
        let ip = self.resolve(name)?;
        let call = call.clone();
        let thread = spawn_in(&self.netns, move || {
            block_on(async move {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))?
                        .origin(format!("http://{AUTHORITY}").parse()?)
                        .connect_timeout(REQUEST_TIMEOUT)
                        .timeout(REQUEST_TIMEOUT);
                let channel = endpoint.connect().await.context("connecting")?;
                let mut client =
                    proto::echo_test_service_client::EchoTestServiceClient::new(channel);
                let mut answers = Vec::with_capacity(count);
                for i in 0..count {
                    let mut request = tonic::Request::new(proto::EchoRequest {
                        message: format!("call {}", i + 1),
                    });
                    for (k, v) in &call.metadata {
                        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())?;
                        request.metadata_mut().append(key, v.parse()?);
                    }
                    let response = client
                        .echo(request)
                        .await
                        .map_err(|s| anyhow!("call {} of {count}: {s}", i + 1))?;
                    let response_headers = response
                        .metadata()
                        .clone()
                        .into_headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    answers.push(Answer {
                        status: 200,
                        response_headers,
                        fields: parse_fields(&response.into_inner().message),
                    });
                }
                Ok(answers)
            })
        })?;
        thread.join()?
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One request on the connection in `sender`, connecting first if there is none or the
/// last one was closed.
async fn send_http(
    sender: &mut Option<Sender>,
    ip: IpAddr,
    port: u16,
    req: &HttpRequest,
) -> Result<Answer> {
    if let Some(s) = sender.as_mut() {
        if s.ready().await.is_err() {
            *sender = None;
        }
    }
    let s = match sender {
        Some(s) => s,
        None => {
            let tcp = tokio::net::TcpStream::connect((ip, port))
                .await
                .with_context(|| format!("connecting to {ip}:{port}"))?;
            tcp.set_nodelay(true)?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            sender.insert(s)
        }
    };
    let path = if req.path.is_empty() { "/" } else { &req.path };
    let mut builder = http::Request::get(path).header(
        http::header::HOST,
        req.host_header.as_deref().unwrap_or(&req.host),
    );
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder.body(Empty::new())?;
    let response = s.send_request(request).await?;
    let status = response.status().as_u16();
    let response_headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes();
    if body.len() > 1 << 20 {
        bail!("an answer of {} bytes is no echo", body.len());
    }
    Ok(Answer {
        status,
        response_headers,
        fields: parse_fields(&String::from_utf8_lossy(&body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_lines_parse() {
        let a = Answer {
            status: 200,
            response_headers: vec![("x-a".into(), "1".into()), ("X-A".into(), "2".into())],
            fields: parse_fields(
                "URL=/a?b=c\nRequestHeader=x-add:a\nRequestHeader=:authority:echo:7070\n\
                 RequestHeader=x-empty:\nHostname=echo-v1-0-0\nnot a field\n",
            ),
        };
        assert_eq!(a.hostname(), Some("echo-v1-0-0"));
        assert_eq!(a.url(), Some("/a?b=c"));
        assert_eq!(
            a.request_headers(),
            [("x-add", "a"), (":authority", "echo:7070"), ("x-empty", "")]
        );
        assert_eq!(a.response_header("x-a"), Some("2"));
        assert_eq!(
            host_port("echo-v1:8080", 80).expect("valid"),
            ("echo-v1", 8080)
        );
        assert_eq!(host_port("echo", 80).expect("valid"), ("echo", 80));
    }
}
