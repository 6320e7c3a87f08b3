//! HTTP routing on the request path: the rule the addressed Service port's route table
//! selects ([`trellis_api::routing::select`]) says where a request goes and what happens on
//! the way — redirects and direct answers, fault injection, header changes, rewrites,
//! timeouts and retries.
//!
//! * **Timeouts.** The rule's timeout and the caller's remaining deadline ([`crate::chain`])
//!   bound the whole exchange up to the response head; past it the answer is 504 (`UT`), and
//!   a call whose caller has already given up is not started at all.
//! * **Retries.** A request is retried only if its body can be sent again: none, or one of
//!   known length up to 64 KiB, which is read whole first (a streamed body cannot be sent twice
//!   without holding it). A retry needs the rule's `retryOn` to cover the failure, an
//!   attempt left, the client proxy's retry budget for the destination
//!   ([`crate::resilience::RetryBudget`]: 20 % of the requests it may retry plus a small floor), and no
//!   proxy above in the call chain retrying the same call: the first layer with retries
//!   marks its attempts, and the layers below do not retry them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use rand::Rng;
use trellis_api::routing::{
    self, Abort, AbortStatus, Action, Backend, HttpRule, RequestMatch, RequestView, RetryOn,
    RetryPolicy, Selection, Source, WeightedDestination,
};
use trellis_api::snapshot::{Service, Snapshot};

use crate::body::{error_response, full, Body, BodyState};
use crate::resilience::{RetryBudget, RetryBudgetConfig};
use crate::telemetry::Flag;

/// The body of an aborted request, as Envoy's fault filter answers.
pub const ABORT_BODY: &str = "fault filter abort";

/// What the route table decided for a request.
pub enum Routed<'a> {
    /// Send it to `host` (subset, port), with the rule's filters if a rule chose it.
    Forward {
        host: &'a str,
        subset: Option<&'a str>,
        port: Option<u16>,
        rule: Option<&'a HttpRule>,
        destination: Option<&'a WeightedDestination>,
        matched: Option<&'a RequestMatch>,
    },
    /// Answer here: a redirect, a direct response, a 404 for no match, a 500 for an invalid
    /// backend.
    Answer {
        response: Response<Body>,
        flag: Option<Flag>,
        rule: Option<&'a HttpRule>,
    },
}

/// Chooses the rule for a request to `service` at `port` (the Service port addressed).
pub fn decide<'a>(service: &'a Service, port: Option<u16>, view: &RequestView<'_>) -> Routed<'a> {
    let plain = Routed::Forward {
        host: &service.host,
        subset: None,
        port,
        rule: None,
        destination: None,
        matched: None,
    };
    let Some(sp) = service.port(port) else {
        return plain;
    };
    let Some(table) = service.routes.port(sp.port) else {
        return plain;
    };
    let selected = match routing::select(table, view) {
        Selection::Unrouted => return plain,
        Selection::NoMatch => {
            return Routed::Answer {
                response: error_response(StatusCode::NOT_FOUND, "no route matched the request"),
                flag: Some(Flag::NoRoute),
                rule: None,
            }
        }
        Selection::Matched(s) => s,
    };
    let rule = selected.rule;
    match &rule.action {
        Action::Redirect(redirect) => {
            let location = routing::redirect_location(
                redirect,
                selected.matched.path.as_ref(),
                &routing::RedirectRequest {
                    scheme: view.scheme,
                    authority: view.authority,
                    path_and_query: view.path_and_query,
                    port: sp.port,
                },
            );
            let mut response = Response::new(full(""));
            *response.status_mut() =
                StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            Routed::Answer {
                response,
                flag: None,
                rule: Some(rule),
            }
        }
        Action::Respond(direct) => {
            let mut response = Response::new(full(direct.body.clone().unwrap_or_default()));
            *response.status_mut() = StatusCode::from_u16(direct.status).unwrap_or(StatusCode::OK);
            Routed::Answer {
                response,
                flag: None,
                rule: Some(rule),
            }
        }
        Action::Forward(destinations) => {
            match routing::pick_weighted(destinations, rand::rng().random()) {
                Some(d) => match &d.backend {
                    Backend::Service {
                        host,
                        subset,
                        port: p,
                    } => Routed::Forward {
                        host,
                        subset: subset.as_deref(),
                        port: p.or(port),
                        rule: Some(rule),
                        destination: Some(d),
                        matched: Some(selected.matched),
                    },
                    Backend::Invalid { reason } => Routed::Answer {
                        response: error_response(StatusCode::INTERNAL_SERVER_ERROR, reason),
                        flag: Some(Flag::NoRoute),
                        rule: Some(rule),
                    },
                },
                None => Routed::Answer {
                    response: error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the route has no backend to send to",
                    ),
                    flag: Some(Flag::NoRoute),
                    rule: Some(rule),
                },
            }
        }
    }
}

/// The view [`routing::select`] takes of a request from this proxy's app.
pub fn view<'a>(
    parts: &'a http::request::Parts,
    authority: &'a str,
    namespace: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
) -> RequestView<'a> {
    RequestView {
        method: parts.method.as_str(),
        scheme: "http",
        authority,
        path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &parts.headers,
        source: Source { namespace, labels },
    }
}

/// Fault injection: waits out a delay if the dice say so, then answers an abort if they say
/// so. `Some` is the answer to send instead of forwarding.
pub async fn inject_fault(rule: Option<&HttpRule>) -> Option<(Response<Body>, Flag)> {
    let fault = rule?.filters.fault.as_ref()?;
    if let Some(delay) = &fault.delay {
        if routing::chance(delay.percent, rand::rng().random()) {
            tokio::time::sleep(delay.duration).await;
        }
    }
    let abort = fault.abort.as_ref()?;
    if !routing::chance(abort.percent, rand::rng().random()) {
        return None;
    }
    Some((abort_response(abort), Flag::FaultAbort))
}

fn abort_response(abort: &Abort) -> Response<Body> {
    match abort.status {
        AbortStatus::Http(status) => {
            let mut r = error_response(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                ABORT_BODY,
            );
            // Envoy's body, exactly: apps and tests compare it.
            *r.body_mut() = full(ABORT_BODY);
            r
        }
        // A trailers-only gRPC answer: status in the headers of a 200.
        AbortStatus::Grpc(code) => {
            let mut r = Response::new(full(""));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert("grpc-message", HeaderValue::from_static(ABORT_BODY));
            r
        }
    }
}

/// Applies the rule's and the destination's request changes: headers, then the path and
/// authority rewrite. Returns the authority to send.
pub fn rewrite_request(
    parts: &mut http::request::Parts,
    authority: &str,
    rule: Option<&HttpRule>,
    destination: Option<&WeightedDestination>,
    matched: Option<&RequestMatch>,
) -> Result<String, String> {
    let Some(rule) = rule else {
        return Ok(authority.to_owned());
    };
    rule.filters.request_headers.apply(&mut parts.headers);
    if let Some(d) = destination {
        d.request_headers.apply(&mut parts.headers);
    }
    let Some(rewrite) = &rule.filters.rewrite else {
        return Ok(authority.to_owned());
    };
    if let Some(path) = &rewrite.path {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let new = routing::rewrite_path(pq, matched.and_then(|m| m.path.as_ref()), path);
        parts.uri = Uri::builder()
            .path_and_query(new.as_str())
            .build()
            .map_err(|e| format!("rewritten path {new:?}: {e}"))?;
    }
    Ok(rewrite
        .authority
        .clone()
        .unwrap_or_else(|| authority.to_owned()))
}

/// Applies the rule's and the destination's response header changes.
pub fn rewrite_response(
    resp: &mut Response<Body>,
    rule: Option<&HttpRule>,
    destination: Option<&WeightedDestination>,
) {
    if let Some(rule) = rule {
        rule.filters.response_headers.apply(resp.headers_mut());
    }
    if let Some(d) = destination {
        d.response_headers.apply(resp.headers_mut());
    }
}

/// How one attempt ended, as retry conditions see it.
pub enum Attempt {
    /// A response head arrived.
    Answered { status: u16, grpc: Option<u16> },
    /// No connection to the upstream.
    ConnectFailure,
    /// The connection or stream broke before a response.
    Reset,
    /// The per-try timeout passed.
    Timeout,
    /// No answer, by the client's doing: its request body failed (malformed chunked
    /// framing, the client went away mid-body), or the per-try timeout passed while the
    /// proxy was still waiting for the client's body. Never retried, and never held against
    /// the endpoint: not by outlier detection, not by the balancer's latency.
    ClientFault,
}

/// Why an attempt got no response head, as the pool and the per-try timer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// No connection to the endpoint's proxy (connect, TLS or connect timeout).
    ConnectFailure,
    /// The stream or connection ended without a response.
    Reset,
    /// The per-try timeout passed.
    Timeout,
}

/// Whose fault an attempt without an answer was, given how far its request body got.
///
/// A failing client body makes the HTTP/2 client reset the stream itself, and the attempt
/// then fails exactly as if the upstream had reset it: only the body's own state tells the
/// two apart. Counted against the endpoint, three malformed chunked requests would eject a
/// healthy endpoint under `consecutiveGatewayErrors: 3`, and every client would get 503.
/// Likewise a per-try timeout that passes while the proxy waits for the client's next bytes
/// (a client trickling its upload) says nothing about the endpoint; one that passes while
/// the upstream holds the body back (flow control) or owes the response does.
pub fn blame(failure: NoAnswer, body: BodyState) -> Attempt {
    match (failure, body) {
        (_, BodyState::Failed) | (NoAnswer::Timeout, BodyState::WaitingOnClient) => {
            Attempt::ClientFault
        }
        (NoAnswer::ConnectFailure, _) => Attempt::ConnectFailure,
        (NoAnswer::Reset, _) => Attempt::Reset,
        (NoAnswer::Timeout, _) => Attempt::Timeout,
    }
}

/// Whether `policy` retries an attempt that ended so.
pub fn retryable(policy: &RetryPolicy, attempt: &Attempt) -> bool {
    policy.retry_on.iter().any(|on| match (on, attempt) {
        (RetryOn::FiveXx, Attempt::Answered { status, .. }) => *status >= 500,
        (RetryOn::FiveXx | RetryOn::GatewayError, Attempt::Timeout)
        | (RetryOn::FiveXx | RetryOn::GatewayError, Attempt::ConnectFailure)
        | (RetryOn::FiveXx | RetryOn::GatewayError, Attempt::Reset) => true,
        (RetryOn::GatewayError, Attempt::Answered { status, .. }) => {
            matches!(status, 502..=504)
        }
        (RetryOn::Reset | RetryOn::ResetBeforeRequest, Attempt::Reset) => true,
        (RetryOn::ConnectFailure, Attempt::ConnectFailure) => true,
        (RetryOn::RefusedStream, Attempt::Reset) => true,
        (RetryOn::Retriable4xx, Attempt::Answered { status, .. }) => *status == 409,
        (RetryOn::RetriableStatusCodes, Attempt::Answered { status, .. }) => {
            policy.status_codes.contains(status)
        }
        (RetryOn::Cancelled, Attempt::Answered { grpc: Some(1), .. })
        | (RetryOn::DeadlineExceeded, Attempt::Answered { grpc: Some(4), .. })
        | (RetryOn::ResourceExhausted, Attempt::Answered { grpc: Some(8), .. })
        | (RetryOn::Internal, Attempt::Answered { grpc: Some(13), .. })
        | (RetryOn::Unavailable, Attempt::Answered { grpc: Some(14), .. }) => true,
        _ => false,
    })
}

/// A request that can be sent again: its head and its whole body.
pub struct Replayable {
    pub method: Method,
    pub uri: Uri,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl Replayable {
    pub fn request(&self) -> Request<Body> {
        let mut r = Request::new(full(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        *r.version_mut() = http::Version::HTTP_2;
        r
    }
}

/// The retry budgets of the destinations this proxy calls, by service host.
#[derive(Debug, Default)]
pub struct Budgets {
    by_host: Mutex<HashMap<String, Arc<RetryBudget>>>,
}

impl Budgets {
    /// The budget for `host`; `percent` is a DestinationRule's `retryBudget.percent`, if it
    /// sets one. A budget whose configuration changed starts afresh.
    pub fn get(&self, host: &str, percent: Option<f64>) -> Arc<RetryBudget> {
        let config = RetryBudgetConfig {
            ratio: percent.map_or(RetryBudgetConfig::default().ratio, |p| p / 100.0),
            ..RetryBudgetConfig::default()
        };
        let mut m = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = m.get(host) {
            if *b.config() == config {
                return b.clone();
            }
        }
        let b = Arc::new(RetryBudget::new(config));
        m.insert(host.to_owned(), b.clone());
        b
    }
}

/// The earliest of `a` and `b`.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The answer when the deadline passed.
pub fn timed_out(after: Option<Duration>) -> Response<Body> {
    let msg = match after {
        Some(d) => format!("upstream request timeout after {d:?}"),
        None => "upstream request timeout: the caller's deadline has passed".to_owned(),
    };
    let mut r = error_response(StatusCode::GATEWAY_TIMEOUT, msg);
    r.extensions_mut().insert(Flag::UpstreamTimeout);
    r
}

/// The routed destination's service in the snapshot.
pub fn destination<'a>(snapshot: &'a Snapshot, host: &str) -> Option<&'a Service> {
    snapshot.services.get(host).map(|s| s.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn], codes: &[u16]) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            retry_on: on.to_vec(),
            status_codes: codes.to_vec(),
            backoff: None,
            ignore_previous_hosts: false,
        }
    }

    #[test]
    fn retry_conditions() {
        let ans = |status, grpc| Attempt::Answered { status, grpc };
        let p = policy(&[RetryOn::FiveXx], &[]);
        assert!(retryable(&p, &ans(500, None)));
        assert!(retryable(&p, &Attempt::Reset));
        assert!(!retryable(&p, &ans(404, None)));
        let p = policy(&[RetryOn::GatewayError], &[]);
        assert!(retryable(&p, &ans(503, None)));
        assert!(!retryable(&p, &ans(500, None)));
        let p = policy(&[RetryOn::RetriableStatusCodes], &[418]);
        assert!(retryable(&p, &ans(418, None)));
        assert!(!retryable(&p, &ans(500, None)));
        let p = policy(&[RetryOn::Unavailable], &[]);
        assert!(retryable(&p, &ans(200, Some(14))));
        assert!(!retryable(&p, &ans(200, Some(13))));
        let p = policy(&[RetryOn::ConnectFailure], &[]);
        assert!(retryable(&p, &Attempt::ConnectFailure));
        assert!(!retryable(&p, &Attempt::Timeout));
    }

    #[test]
    fn a_failed_client_body_is_the_clients_fault() {
        use BodyState::*;
        // The client's body failed: whatever the pool reported, the client is to blame.
        for failure in [NoAnswer::Reset, NoAnswer::Timeout, NoAnswer::ConnectFailure] {
            assert!(matches!(blame(failure, Failed), Attempt::ClientFault));
        }
        // A timeout while waiting for the client's bytes is the client's; one while the
        // upstream holds the body back, or owes the answer, is the upstream's.
        assert!(matches!(
            blame(NoAnswer::Timeout, WaitingOnClient),
            Attempt::ClientFault
        ));
        for body in [Sending, Ended] {
            assert!(matches!(blame(NoAnswer::Timeout, body), Attempt::Timeout));
        }
        // A reset with the body sent, or still streaming, is the upstream's.
        for body in [Sending, WaitingOnClient, Ended] {
            assert!(matches!(blame(NoAnswer::Reset, body), Attempt::Reset));
            assert!(matches!(
                blame(NoAnswer::ConnectFailure, body),
                Attempt::ConnectFailure
            ));
        }
        // Never retried, whatever the policy retries on.
        let all = [
            RetryOn::FiveXx,
            RetryOn::GatewayError,
            RetryOn::Reset,
            RetryOn::ResetBeforeRequest,
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
        ];
        assert!(!retryable(&policy(&all, &[]), &Attempt::ClientFault));
    }

    #[test]
    fn aborts_answer_as_envoy_does() {
        let r = abort_response(&Abort {
            status: AbortStatus::Http(503),
            percent: 100.0,
        });
        assert_eq!(r.status(), 503);
        let r = abort_response(&Abort {
            status: AbortStatus::Grpc(14),
            percent: 100.0,
        });
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
    }
}
