//! The per-request policies of an HTTP route: header manipulation, retries, fault
//! injection, mirroring and CORS. The mesh does not act on any of them yet; they are typed
//! and validated so that mistakes surface now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Destination, VirtualServiceError};
use crate::resources::istio::{
    check_exclusive, check_header_name, check_min_1ms, check_range, push, Duration, IstioError,
    Percent, StringMatch,
};
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;

/// HTTP methods a CORS policy may allow.
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Conditions Envoy can retry on (HTTP and gRPC); numeric HTTP statuses are also allowed.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC's status code names.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Header changes for requests and responses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Changes to the request before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Changes to the response before returning it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Headers to overwrite, append or remove.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append to these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Retry policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// How many retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Timeout of each try, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated conditions to retry on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Whether retries may go to other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    /// Whether retries avoid hosts already tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// What CORS preflights that match no allowed origin do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    /// The default (forward).
    Unspecified,
    /// Forward them upstream.
    Forward,
    /// Answer them without CORS headers.
    Ignore,
}

/// CORS policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Deprecated exact origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    /// Allowed origins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long preflight results may be cached, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Whether credentials are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// What unmatched preflights do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// Fault injection: delays and aborts for a share of requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HttpDelay>,
    /// Abort requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<HttpAbort>,
}

/// A delay before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDelay {
    /// The delay, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    /// Listed by the schema but rejected by Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    /// Share of requests delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
    /// Deprecated integer share of requests delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

/// An error response instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAbort {
    /// Answer with this HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// Answer with this gRPC status (a code name such as `UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Listed by the schema but rejected by Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A destination that receives copies of requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    /// Where copies go.
    pub destination: Destination,
    /// Share of requests copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

impl Headers {
    /// Checks the header names at `path`.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        for (side, ops) in [("request", &self.request), ("response", &self.response)] {
            let Some(ops) = ops else { continue };
            let at = path.field(side);
            for (op, map) in [("set", &ops.set), ("add", &ops.add)] {
                for name in map.keys() {
                    check_header_name(name, &at.field(op).field(name), out);
                }
            }
            for (i, name) in ops.remove.iter().enumerate() {
                check_header_name(name, &at.field("remove").index(i), out);
            }
        }
    }
}

impl HttpRetry {
    /// Checks the retry policy at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_range(
            self.attempts.map(i64::from),
            "attempts",
            0,
            i64::from(i32::MAX),
            &path.field("attempts"),
            out,
        );
        check_min_1ms(
            self.per_try_timeout.as_ref(),
            &path.field("perTryTimeout"),
            out,
        );
        check_min_1ms(self.backoff.as_ref(), &path.field("backoff"), out);
        if let Some(retry_on) = &self.retry_on {
            for condition in retry_on.split(',').map(str::trim) {
                let status = condition
                    .parse::<u16>()
                    .is_ok_and(|s| (100..=599).contains(&s));
                if !status && !RETRY_ON.contains(&condition) {
                    push(
                        out,
                        path.field("retryOn"),
                        VirtualServiceError::RetryOn {
                            value: condition.to_owned(),
                        },
                    );
                }
            }
        }
    }
}

impl CorsPolicy {
    /// Checks the CORS policy at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        for (i, origin) in self.allow_origins.iter().enumerate() {
            origin.validate(&path.field("allowOrigins").index(i), out);
        }
        for (i, method) in self.allow_methods.iter().enumerate() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                push(
                    out,
                    path.field("allowMethods").index(i),
                    VirtualServiceError::HttpMethod {
                        value: method.clone(),
                    },
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                // `*` is how a policy allows every header.
                if name != "*" {
                    check_header_name(name, &path.field(field).index(i), out);
                }
            }
        }
        check_min_1ms(self.max_age.as_ref(), &path.field("maxAge"), out);
    }
}

impl HttpFaultInjection {
    /// Checks the fault at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if self.delay.is_none() && self.abort.is_none() {
            push(out, path.clone(), VirtualServiceError::EmptyFault);
        }
        if let Some(delay) = &self.delay {
            let at = path.field("delay");
            check_exclusive(
                "fixedDelay or exponentialDelay",
                &[
                    ("fixedDelay", delay.fixed_delay.is_some()),
                    ("exponentialDelay", delay.exponential_delay.is_some()),
                ],
                &at,
                out,
            );
            if delay.fixed_delay.is_none() && delay.exponential_delay.is_none() {
                push(
                    out,
                    at.clone(),
                    IstioError::OneRequired {
                        fields: "fixedDelay",
                    },
                );
            }
            check_min_1ms(delay.fixed_delay.as_ref(), &at.field("fixedDelay"), out);
            if delay.exponential_delay.is_some() {
                push(
                    out,
                    at.field("exponentialDelay"),
                    VirtualServiceError::UnsupportedFault {
                        field: "exponentialDelay",
                        instead: "fixedDelay",
                    },
                );
            }
            if let Some(p) = &delay.percentage {
                p.validate("percentage", &at.field("percentage"), out);
            }
            check_range(
                delay.percent.map(i64::from),
                "percent",
                0,
                100,
                &at.field("percent"),
                out,
            );
        }
        if let Some(abort) = &self.abort {
            abort.validate(&path.field("abort"), out);
        }
    }
}

impl HttpAbort {
    /// Checks the abort at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let set = [
            ("httpStatus", self.http_status.is_some()),
            ("grpcStatus", self.grpc_status.is_some()),
            ("http2Error", self.http2_error.is_some()),
        ];
        check_exclusive("httpStatus, grpcStatus or http2Error", &set, path, out);
        if set.iter().all(|(_, present)| !present) {
            push(
                out,
                path.clone(),
                IstioError::OneRequired {
                    fields: "httpStatus or grpcStatus",
                },
            );
        }
        check_range(
            self.http_status.map(i64::from),
            "HTTP status",
            200,
            599,
            &path.field("httpStatus"),
            out,
        );
        if let Some(status) = &self.grpc_status {
            if !GRPC_STATUSES.contains(&status.as_str()) {
                push(
                    out,
                    path.field("grpcStatus"),
                    VirtualServiceError::GrpcStatus {
                        value: status.clone(),
                    },
                );
            }
        }
        if self.http2_error.is_some() {
            push(
                out,
                path.field("http2Error"),
                VirtualServiceError::UnsupportedFault {
                    field: "http2Error",
                    instead: "httpStatus or grpcStatus",
                },
            );
        }
        if let Some(p) = &self.percentage {
            p.validate("percentage", &path.field("percentage"), out);
        }
    }
}

impl HttpMirrorPolicy {
    /// Checks the mirror at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        self.destination.validate(&path.field("destination"), out);
        if let Some(p) = &self.percentage {
            p.validate("percentage", &path.field("percentage"), out);
        }
    }
}
