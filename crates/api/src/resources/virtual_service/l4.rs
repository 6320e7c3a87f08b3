//! TCP and TLS routes of a VirtualService: connections matched by port, subnet, source and
//! (for TLS) SNI, sent to weighted destinations. The mesh does not route them yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::http::{check_weight, check_weight_sum};
use super::Destination;
use crate::resources::istio::{
    check_gateway_name, check_host, check_ip_or_cidr, check_label_map, check_port, push, LabelRule,
};
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};

/// A destination of a TCP or TLS route and its share of the connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the connection.
    pub destination: Destination,
    /// Share of the connections, in percent; with several destinations they add up to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// A route for opaque TCP connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions; any one matching selects the route.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<L4MatchAttributes>,
    /// The destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TCP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    /// Destination IPs or subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels the calling workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways the match applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Source IP or subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_subnet: Option<String>,
}

/// A route for TLS connections, by SNI, without terminating TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions; any one matching selects the route. Required.
    #[serde(rename = "match")]
    pub match_: Vec<TlsMatchAttributes>,
    /// The destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// SNI values to match (wildcards allowed). Required.
    pub sni_hosts: Vec<String>,
    /// Destination IPs or subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels the calling workload must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways the match applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Checks a TCP or TLS route's destinations and their weights, at `path` (the `route` list).
fn check_route(route: &[RouteDestination], path: &FieldPath, out: &mut Vec<Violation>) {
    if route.is_empty() {
        push(
            out,
            path.clone(),
            ValidationError::AtLeastOne {
                what: "route destination",
            },
        );
    }
    for (j, dest) in route.iter().enumerate() {
        dest.destination
            .validate(&path.index(j).field("destination"), out);
        check_weight(dest.weight, &path.index(j).field("weight"), out);
    }
    let weights: Vec<Option<i32>> = route.iter().map(|d| d.weight).collect();
    check_weight_sum(&weights, path, out);
}

/// Checks the parts TCP and TLS matches share.
fn check_common(
    subnets: &[String],
    port: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    for (i, subnet) in subnets.iter().enumerate() {
        check_ip_or_cidr(subnet, &path.field("destinationSubnets").index(i), out);
    }
    check_port(port, &path.field("port"), out);
    check_label_map(
        source_labels,
        LabelRule::Labels,
        &path.field("sourceLabels"),
        out,
    );
    for (i, gateway) in gateways.iter().enumerate() {
        check_gateway_name(gateway, &path.field("gateways").index(i), out);
    }
}

impl TcpRoute {
    /// Checks the route at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        for (k, m) in self.match_.iter().enumerate() {
            let at = path.field("match").index(k);
            check_common(
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                &at,
                out,
            );
            if let Some(subnet) = &m.source_subnet {
                check_ip_or_cidr(subnet, &at.field("sourceSubnet"), out);
            }
        }
        check_route(&self.route, &path.field("route"), out);
    }
}

impl TlsRoute {
    /// Checks the route at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if self.match_.is_empty() {
            push(
                out,
                path.field("match"),
                ValidationError::AtLeastOne { what: "match" },
            );
        }
        for (k, m) in self.match_.iter().enumerate() {
            let at = path.field("match").index(k);
            if m.sni_hosts.is_empty() {
                push(
                    out,
                    at.field("sniHosts"),
                    ValidationError::AtLeastOne { what: "sniHost" },
                );
            }
            for (i, host) in m.sni_hosts.iter().enumerate() {
                check_host(host, &at.field("sniHosts").index(i), out);
            }
            check_common(
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                &at,
                out,
            );
        }
        check_route(&self.route, &path.field("route"), out);
    }
}
