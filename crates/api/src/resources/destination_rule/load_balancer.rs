//! Load balancing settings of a DestinationRule traffic policy: the algorithm (simple,
//! consistent hash, backend utilization), locality-aware routing and failover, slow-start
//! warmup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DestinationRuleError;
use crate::resources::istio::{
    check_exclusive, check_min_1ms, check_percent, check_range, push, Duration, IstioError,
};
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};

/// What locality distribution weights must add up to.
const TOTAL_WEIGHT: u64 = 100;

/// How requests are spread over the destination's endpoints; at most one of `simple`,
/// `consistentHash` and `backendUtilization`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A standard algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Hash-based affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Weighting by load that backends report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_utilization: Option<BackendUtilization>,
    /// Locality-aware routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Deprecated slow-start window, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow start for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
    /// Zone-aware routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

/// The standard load balancing algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// The default (least request).
    Unspecified,
    /// Deprecated: least request.
    LeastConn,
    /// A random endpoint.
    Random,
    /// Forward to the address the caller asked for.
    Passthrough,
    /// Each endpoint in turn.
    RoundRobin,
    /// The endpoint with fewer active requests, of two picked at random.
    LeastRequest,
}

/// Hash-based affinity: what to hash (at most one key) and how (at most one of `ringHash`,
/// `maglev` and the deprecated `minimumRingSize`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash this cookie, creating it if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash the source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ketama ring hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated ring size; use `ringHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// The cookie a consistent hash uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra cookie attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// A cookie attribute (`SameSite=Strict`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Ring hash settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Smallest number of virtual nodes on the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// Lookup table size (a prime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Weighting by backend-reported utilization (ORCA).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendUtilization {
    /// How often weights are recomputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_update_period: Option<Duration>,
    /// How long an endpoint's weight stays valid without a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_expiration_period: Option<Duration>,
    /// How long a new endpoint waits before its weight is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_stabilization_period: Option<Duration>,
    /// Penalty for error rates, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_utilization_penalty_percent: Option<u32>,
    /// Named metrics that make up utilization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_names_for_computing_utilization: Vec<String>,
}

/// Locality-aware load balancing: either a traffic distribution or failover rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// How traffic from each locality is split over localities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Where traffic goes when a region has no healthy endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Labels ordering failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Whether locality load balancing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from one locality, split over others by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// The originating locality (`region/zone/subzone`, `*` allowed as the last part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination localities and their weights, adding up to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// A failover from one region to another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// The failing region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The region taking over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Slow start: new endpoints get a growing share of traffic over `duration`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// The warmup window, at least 1ms. Required.
    pub duration: Duration,
    /// Share of traffic a new endpoint starts with, 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// How fast the share grows, at least 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}

/// Zone-aware routing settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLbSetting {
    /// Whether zone-aware routing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Smallest cluster for which zone-aware routing applies, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u32>,
    /// Failover rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Labels ordering failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
}

/// Whether `locality` is `region[/zone[/subzone]]` with `*` allowed only as a whole last part.
fn is_locality(locality: &str) -> bool {
    let parts: Vec<&str> = locality.split('/').collect();
    let last = parts.len() - 1;
    parts.len() <= 3
        && parts.iter().enumerate().all(|(i, part)| {
            !part.is_empty() && (!part.contains('*') || (*part == "*" && i == last))
        })
}

/// Reports a malformed locality at `path`.
fn check_locality(locality: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    if !is_locality(locality) {
        push(
            out,
            path.clone(),
            DestinationRuleError::Locality {
                value: locality.to_owned(),
            },
        );
    }
}

impl LoadBalancerSettings {
    /// Checks the settings at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_exclusive(
            "simple, consistentHash or backendUtilization",
            &[
                ("simple", self.simple.is_some()),
                ("consistentHash", self.consistent_hash.is_some()),
                ("backendUtilization", self.backend_utilization.is_some()),
            ],
            path,
            out,
        );
        if let Some(hash) = &self.consistent_hash {
            hash.validate(&path.field("consistentHash"), out);
        }
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate(&path.field("localityLbSetting"), out);
        }
        check_min_1ms(
            self.warmup_duration_secs.as_ref(),
            &path.field("warmupDurationSecs"),
            out,
        );
        if let Some(warmup) = &self.warmup {
            let at = path.field("warmup");
            check_min_1ms(Some(&warmup.duration), &at.field("duration"), out);
            check_percent(
                warmup.minimum_percent,
                "minimumPercent",
                &at.field("minimumPercent"),
                out,
            );
            if let Some(aggression) = warmup.aggression {
                if aggression.is_nan() || aggression < 0.0 {
                    push(
                        out,
                        at.field("aggression"),
                        IstioError::TooSmall {
                            what: "aggression",
                            value: aggression.to_string(),
                            min: "0".into(),
                        },
                    );
                }
            }
        }
        if let Some(zone) = &self.zone_aware_lb_setting {
            let at = path.field("zoneAwareLbSetting");
            check_range(
                zone.min_cluster_size.map(i64::from),
                "minClusterSize",
                1,
                i64::from(u32::MAX),
                &at.field("minClusterSize"),
                out,
            );
            check_failover(&zone.failover, &at.field("failover"), out);
        }
    }
}

impl ConsistentHashLb {
    /// Checks the hash settings at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_exclusive(
            "httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            &[
                ("httpHeaderName", self.http_header_name.is_some()),
                ("httpCookie", self.http_cookie.is_some()),
                ("useSourceIp", self.use_source_ip.is_some()),
                (
                    "httpQueryParameterName",
                    self.http_query_parameter_name.is_some(),
                ),
            ],
            path,
            out,
        );
        check_exclusive(
            "minimumRingSize, ringHash or maglev",
            &[
                ("minimumRingSize", self.minimum_ring_size.is_some()),
                ("ringHash", self.ring_hash.is_some()),
                ("maglev", self.maglev.is_some()),
            ],
            path,
            out,
        );
        if let Some(cookie) = &self.http_cookie {
            let at = path.field("httpCookie");
            if cookie.name.is_empty() {
                push(
                    out,
                    at.field("name"),
                    ValidationError::Empty {
                        what: "cookie name",
                    },
                );
            }
            for (i, attribute) in cookie.attributes.iter().enumerate() {
                if attribute.name.is_empty() {
                    push(
                        out,
                        at.field("attributes").index(i).field("name"),
                        ValidationError::Empty {
                            what: "cookie attribute name",
                        },
                    );
                }
            }
        }
    }
}

/// Checks failover rules: both ends set and different.
fn check_failover(failover: &[LocalityFailover], path: &FieldPath, out: &mut Vec<Violation>) {
    for (i, rule) in failover.iter().enumerate() {
        let at = path.index(i);
        for (name, value) in [("from", &rule.from), ("to", &rule.to)] {
            match value.as_deref() {
                None | Some("") => push(
                    out,
                    at.field(name),
                    ValidationError::Empty { what: "region" },
                ),
                Some(region) => check_locality(region, &at.field(name), out),
            }
        }
        if let (Some(from), Some(to)) = (&rule.from, &rule.to) {
            if from == to && !from.is_empty() {
                push(
                    out,
                    at.clone(),
                    DestinationRuleError::FailoverToSelf {
                        value: from.clone(),
                    },
                );
            }
        }
    }
}

impl LocalityLbSetting {
    /// Checks the locality settings at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_exclusive(
            "distribute or failover",
            &[
                ("distribute", !self.distribute.is_empty()),
                ("failover", !self.failover.is_empty()),
            ],
            path,
            out,
        );
        for (i, rule) in self.distribute.iter().enumerate() {
            let at = path.field("distribute").index(i);
            match rule.from.as_deref() {
                None | Some("") => {
                    push(
                        out,
                        at.field("from"),
                        ValidationError::Empty { what: "locality" },
                    );
                }
                Some(from) => check_locality(from, &at.field("from"), out),
            }
            for locality in rule.to.keys() {
                check_locality(locality, &at.field("to").field(locality), out);
            }
            let total: u64 = rule.to.values().map(|w| u64::from(*w)).sum();
            if total != TOTAL_WEIGHT {
                push(
                    out,
                    at.field("to"),
                    DestinationRuleError::DistributeTotal { total },
                );
            }
        }
        check_failover(&self.failover, &path.field("failover"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localities() {
        for ok in [
            "us-east",
            "us-east/zone1",
            "us-east/zone1/sub",
            "us-east/*",
            "*",
        ] {
            assert!(is_locality(ok), "{ok}");
        }
        for bad in ["", "a//b", "a/b/c/d", "*/b", "us-*", "a/*/c"] {
            assert!(!is_locality(bad), "{bad}");
        }
    }
}
