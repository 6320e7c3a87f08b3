//! Connection pool limits of a DestinationRule traffic policy: how many TCP connections and
//! HTTP requests a client may have open to the destination, and their timeouts.

use serde::{Deserialize, Serialize};

use super::DestinationRuleError;
use crate::resources::istio::{check_min_1ms, check_non_negative, push, Duration};
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;

/// TCP and HTTP connection limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// Limits common to TCP and HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// TCP connection limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Most connections to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// Connect timeout, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// TCP keepalive probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Longest a connection lives, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// How long an idle connection is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Time between probes, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Whether HTTP/1.1 connections are upgraded to HTTP/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh-wide default.
    Default,
    /// Do not upgrade.
    DoNotUpgrade,
    /// Upgrade.
    Upgrade,
}

/// HTTP request limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Most requests queued while waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// Most active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// Most requests per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// Most outstanding retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// How long an idle connection is kept, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Whether to use the client's protocol upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Most concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 PING keepalive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// HTTP/2 PING keepalive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2KeepAlive {
    /// Time between PINGs, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How long to wait for a PING reply, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl ConnectionPoolSettings {
    /// Checks the limits at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if self.tcp.is_none() && self.http.is_none() {
            push(
                out,
                path.clone(),
                DestinationRuleError::EmptyPolicy {
                    what: "a connection pool",
                },
            );
        }
        if let Some(tcp) = &self.tcp {
            let at = path.field("tcp");
            check_non_negative(
                tcp.max_connections,
                "maxConnections",
                &at.field("maxConnections"),
                out,
            );
            check_min_1ms(
                tcp.connect_timeout.as_ref(),
                &at.field("connectTimeout"),
                out,
            );
            check_min_1ms(
                tcp.max_connection_duration.as_ref(),
                &at.field("maxConnectionDuration"),
                out,
            );
            if let Some(keepalive) = &tcp.tcp_keepalive {
                let at = at.field("tcpKeepalive");
                check_min_1ms(keepalive.time.as_ref(), &at.field("time"), out);
                check_min_1ms(keepalive.interval.as_ref(), &at.field("interval"), out);
            }
        }
        if let Some(http) = &self.http {
            let at = path.field("http");
            for (name, value) in [
                ("http1MaxPendingRequests", http.http1_max_pending_requests),
                ("http2MaxRequests", http.http2_max_requests),
                ("maxRequestsPerConnection", http.max_requests_per_connection),
                ("maxRetries", http.max_retries),
                ("maxConcurrentStreams", http.max_concurrent_streams),
            ] {
                check_non_negative(value, name, &at.field(name), out);
            }
            check_min_1ms(http.idle_timeout.as_ref(), &at.field("idleTimeout"), out);
            if let Some(keepalive) = &http.http2_keep_alive {
                let at = at.field("http2KeepAlive");
                check_min_1ms(keepalive.interval.as_ref(), &at.field("interval"), out);
                check_min_1ms(keepalive.timeout.as_ref(), &at.field("timeout"), out);
            }
        }
    }
}
