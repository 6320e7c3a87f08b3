//! A DestinationRule's traffic policy: load balancing and connection pools (in their own
//! modules), outlier detection, client TLS, tunneling, PROXY protocol and retry budgets, for
//! all ports or per port.

use serde::{Deserialize, Serialize};

use super::connection_pool::ConnectionPoolSettings;
use super::load_balancer::LoadBalancerSettings;
use super::DestinationRuleError;
use crate::resources::istio::{
    check_host, check_max_items, check_min_1ms, check_non_negative, check_percent, check_port,
    check_range, push, Duration,
};
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};
use crate::resources::PortSelector;

/// Most entries in `portLevelSettings`.
const MAX_PORT_SETTINGS: usize = 4096;

/// Policies for calls to a destination (or one subset of it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// How requests are spread over endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejecting failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Overrides for particular ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel the connection through a proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Send a PROXY protocol header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Limit retries to a share of active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Policies for one port of the destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port these settings apply to. Istio requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// How requests are spread over endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejecting failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// Ejecting endpoints that keep failing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated: consecutive 5xx (502, 503, 504) errors before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// Whether local-origin failures are counted apart from upstream ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// Consecutive local-origin failures before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive gateway errors (502, 503, 504) before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xx errors before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Minimum ejection time, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Most endpoints ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Below this share of healthy endpoints, detection stops, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
    /// HTTP statuses counted as errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// How the client side of TLS towards the destination is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text.
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// Mutual TLS with certificates given here.
    Mutual,
    /// Mutual TLS with the mesh's own certificates.
    IstioMutual,
}

/// Client TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// The TLS mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client private key file (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA certificates file to verify the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// A secret holding the certificates instead of files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names the server certificate must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verifying the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

/// Tunneling connections through a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelSettings {
    /// `CONNECT` (the default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The host to tunnel to.
    pub target_host: String,
    /// The port to tunnel to.
    pub target_port: u32,
}

/// PROXY protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyProtocolVersion {
    /// Text header.
    V1,
    /// Binary header.
    V2,
}

/// Sending a PROXY protocol header upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// The version (V1 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// A cap on retries as a share of active requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of active requests that may be retries, 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed regardless of the share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
    /// Window over which the share is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_interval: Option<Duration>,
}

impl TrafficPolicy {
    /// Checks the policy at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let empty = self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_empty()
            && self.tunnel.is_none()
            && self.proxy_protocol.is_none()
            && self.retry_budget.is_none();
        if empty {
            push(
                out,
                path.clone(),
                DestinationRuleError::EmptyPolicy {
                    what: "a traffic policy",
                },
            );
        }
        validate_common(
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
            path,
            out,
        );
        let ports = path.field("portLevelSettings");
        check_max_items(
            self.port_level_settings.len(),
            MAX_PORT_SETTINGS,
            "portLevelSettings",
            &ports,
            out,
        );
        for (i, port) in self.port_level_settings.iter().enumerate() {
            port.validate(&ports.index(i), out);
        }
        if let Some(tunnel) = &self.tunnel {
            tunnel.validate(&path.field("tunnel"), out);
        }
        if let Some(budget) = &self.retry_budget {
            check_percent(
                budget.percent,
                "percent",
                &path.field("retryBudget").field("percent"),
                out,
            );
        }
    }
}

/// Checks the parts a traffic policy and a port-level policy share.
fn validate_common(
    load_balancer: Option<&LoadBalancerSettings>,
    connection_pool: Option<&ConnectionPoolSettings>,
    outlier_detection: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(lb) = load_balancer {
        lb.validate(&path.field("loadBalancer"), out);
    }
    if let Some(pool) = connection_pool {
        pool.validate(&path.field("connectionPool"), out);
    }
    if let Some(outlier) = outlier_detection {
        outlier.validate(&path.field("outlierDetection"), out);
    }
    if let Some(tls) = tls {
        tls.validate(&path.field("tls"), out);
    }
}

impl PortTrafficPolicy {
    /// Checks the port-level policy at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        match self.port {
            None => push(out, path.field("port"), DestinationRuleError::PortRequired),
            Some(port) => check_port(Some(port.number), &path.field("port").field("number"), out),
        }
        let empty = self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none();
        if empty {
            push(
                out,
                path.clone(),
                DestinationRuleError::EmptyPolicy {
                    what: "a port-level traffic policy",
                },
            );
        }
        validate_common(
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
            path,
            out,
        );
    }
}

impl OutlierDetection {
    /// Checks the settings at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_non_negative(
            self.consecutive_errors,
            "consecutiveErrors",
            &path.field("consecutiveErrors"),
            out,
        );
        check_min_1ms(self.interval.as_ref(), &path.field("interval"), out);
        check_min_1ms(
            self.base_ejection_time.as_ref(),
            &path.field("baseEjectionTime"),
            out,
        );
        for (name, value) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            check_range(value.map(i64::from), name, 0, 100, &path.field(name), out);
        }
        let codes = path.field("outlierDetectionHttpErrorCodes");
        for (i, code) in self.outlier_detection_http_error_codes.iter().enumerate() {
            check_range(
                Some(i64::from(*code)),
                "HTTP status",
                100,
                599,
                &codes.index(i),
                out,
            );
        }
    }
}

impl ClientTlsSettings {
    /// Checks which certificate sources are combined, at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        let files = set(&self.client_certificate)
            || set(&self.private_key)
            || set(&self.ca_certificates)
            || set(&self.ca_crl);
        match self.mode {
            // The mesh's own certificates are used; any given here would be ignored.
            Some(ClientTlsMode::IstioMutual) if files || set(&self.credential_name) => {
                push(
                    out,
                    path.clone(),
                    DestinationRuleError::IstioMutualWithCertificates,
                );
            }
            Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
                if set(&self.credential_name) && files =>
            {
                push(
                    out,
                    path.clone(),
                    DestinationRuleError::CredentialNameWithFiles,
                );
            }
            Some(ClientTlsMode::Mutual)
                if !(set(&self.credential_name)
                    || set(&self.client_certificate) && set(&self.private_key)) =>
            {
                push(
                    out,
                    path.clone(),
                    DestinationRuleError::MutualWithoutCertificate,
                );
            }
            _ => {}
        }
    }
}

impl TunnelSettings {
    /// Checks the tunnel at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let Some(protocol) = &self.protocol {
            if !matches!(protocol.as_str(), "CONNECT" | "POST") {
                push(
                    out,
                    path.field("protocol"),
                    DestinationRuleError::TunnelProtocol {
                        value: protocol.clone(),
                    },
                );
            }
        }
        let host = path.field("targetHost");
        if self.target_host.is_empty() {
            push(out, host, ValidationError::Empty { what: "targetHost" });
        } else {
            check_host(&self.target_host, &host, out);
        }
        check_port(Some(self.target_port), &path.field("targetPort"), out);
    }
}
