//! Istio's `VirtualService`: for requests to some hosts, which destinations (service, subset,
//! port) receive them and in what proportion. Matching, retries, timeouts, fault injection and
//! the other HTTP features are accepted as raw JSON and reported as not implemented yet.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::path::FieldPath;
use super::validate::{is_dns1123_label, ValidationError, Violation};
use super::{note_if, ObjectMeta};

/// Highest TCP/UDP port number.
const MAX_PORT: u32 = 65535;
/// What the weights of a multi-destination route must add up to.
const TOTAL_WEIGHT: i64 = 100;

/// An Istio `VirtualService`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// `networking.istio.io/v1` (or `v1beta1`, `v1alpha3`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Hosts and routes.
    pub spec: VirtualServiceSpec,
}

/// The spec of a [`VirtualService`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// The hosts the routes apply to (service short names, FQDNs, wildcards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Not implemented: gateways and sidecars the routes apply to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP routes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Not implemented: TCP routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<Value>,
    /// Not implemented: TLS (SNI) routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<Value>,
    /// Not implemented: visibility to other namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP route: conditions (not implemented yet) and weighted destinations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// A name for logs and debugging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not implemented: match conditions (uri, headers, port, ...).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<Value>,
    /// The destinations, with weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<Value>,
    /// Not implemented. Istio's schema still carries this deprecated snake_case spelling.
    #[serde(
        default,
        rename = "mirror_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percent_legacy: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Value>,
    /// Not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<Value>,
    /// Not implemented: request/response header manipulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

/// A destination of an [`HttpRoute`] and its share of the traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Share of the traffic, in percent. Optional with a single destination; with several,
    /// they must add up to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// Not implemented: header manipulation for this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
}

/// A service, optionally narrowed to a subset and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The service (short name or FQDN).
    pub host: String,
    /// A subset defined by a DestinationRule for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port; may be omitted when the service has a single port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A port of a destination service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// The port number.
    pub number: u32,
}

impl VirtualServiceSpec {
    /// Adds the semantic problems of this spec to `out`, following Istio's rules.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        if self.hosts.is_empty() {
            out.push(Violation::new(
                spec.field("hosts"),
                ValidationError::AtLeastOne { what: "host" },
            ));
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if host.is_empty() {
                out.push(Violation::new(
                    spec.field("hosts").index(i),
                    ValidationError::Empty { what: "host" },
                ));
            }
        }
        for (i, http) in self.http.iter().enumerate() {
            http.validate(&spec.field("http").index(i), out);
        }
    }

    /// Adds the set-but-not-acted-on fields of this spec (at `spec`) to `out`.
    pub(crate) fn unimplemented_fields(&self, spec: &FieldPath, out: &mut Vec<FieldPath>) {
        note_if(out, !self.gateways.is_empty(), spec.field("gateways"));
        for (i, http) in self.http.iter().enumerate() {
            http.unimplemented_fields(&spec.field("http").index(i), out);
        }
        note_if(out, !self.tcp.is_empty(), spec.field("tcp"));
        note_if(out, !self.tls.is_empty(), spec.field("tls"));
        note_if(out, !self.export_to.is_empty(), spec.field("exportTo"));
    }
}

impl HttpRoute {
    /// Adds the semantic problems of this route (at `path`) to `out`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if self.route.is_empty()
            && self.redirect.is_none()
            && self.direct_response.is_none()
            && self.delegate.is_none()
        {
            out.push(Violation::new(path.clone(), ValidationError::NoHttpAction));
        }
        let route_path = path.field("route");
        for (j, dest) in self.route.iter().enumerate() {
            let dest_path = route_path.index(j);
            let destination = dest_path.field("destination");
            if dest.destination.host.is_empty() {
                out.push(Violation::new(
                    destination.field("host"),
                    ValidationError::Empty { what: "host" },
                ));
            }
            if let Some(subset) = &dest.destination.subset {
                if !is_dns1123_label(subset) {
                    out.push(Violation::new(
                        destination.field("subset"),
                        ValidationError::NotDnsLabel {
                            value: subset.clone(),
                        },
                    ));
                }
            }
            if let Some(port) = dest.destination.port {
                if !(1..=MAX_PORT).contains(&port.number) {
                    out.push(Violation::new(
                        destination.field("port").field("number"),
                        ValidationError::PortOutOfRange {
                            port: u64::from(port.number),
                        },
                    ));
                }
            }
            if let Some(weight) = dest.weight {
                if weight < 0 {
                    out.push(Violation::new(
                        dest_path.field("weight"),
                        ValidationError::NegativeWeight { weight },
                    ));
                }
            }
        }
        // Istio's rule: a lone destination takes all traffic whatever its weight says, but
        // several must spell out a split that adds up to 100. Summed in i64 so that huge
        // weights cannot overflow into a sum that happens to look right.
        if self.route.len() > 1 {
            let total: i64 = self
                .route
                .iter()
                .map(|d| i64::from(d.weight.unwrap_or(0)))
                .sum();
            if total != TOTAL_WEIGHT {
                out.push(Violation::new(
                    route_path,
                    ValidationError::WeightSum { total },
                ));
            }
        }
    }

    /// Adds the set-but-not-acted-on fields of this route (at `path`) to `out`.
    fn unimplemented_fields(&self, path: &FieldPath, out: &mut Vec<FieldPath>) {
        note_if(out, !self.match_.is_empty(), path.field("match"));
        let optional = [
            ("redirect", &self.redirect),
            ("directResponse", &self.direct_response),
            ("delegate", &self.delegate),
            ("rewrite", &self.rewrite),
            ("timeout", &self.timeout),
            ("retries", &self.retries),
            ("fault", &self.fault),
            ("mirror", &self.mirror),
            ("mirrors", &self.mirrors),
            ("mirrorPercent", &self.mirror_percent),
            ("mirror_percent", &self.mirror_percent_legacy),
            ("mirrorPercentage", &self.mirror_percentage),
            ("corsPolicy", &self.cors_policy),
            ("headers", &self.headers),
        ];
        for (name, value) in optional {
            note_if(out, value.is_some(), path.field(name));
        }
        for (j, dest) in self.route.iter().enumerate() {
            note_if(
                out,
                dest.headers.is_some(),
                path.field("route").index(j).field("headers"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, subset: &str, weight: Option<i32>) -> HttpRouteDestination {
        HttpRouteDestination {
            destination: Destination {
                host: host.into(),
                subset: Some(subset.into()),
                port: None,
            },
            weight,
            headers: None,
        }
    }

    fn violations(spec: &VirtualServiceSpec) -> Vec<String> {
        let mut out = Vec::new();
        spec.validate(&mut out);
        out.iter()
            .map(|v| format!("{}: {}", v.path, v.error))
            .collect()
    }

    fn spec_with(route: Vec<HttpRouteDestination>) -> VirtualServiceSpec {
        VirtualServiceSpec {
            hosts: vec!["reviews".into()],
            http: vec![HttpRoute {
                route,
                ..HttpRoute::default()
            }],
            ..VirtualServiceSpec::default()
        }
    }

    #[test]
    fn weights_must_add_up_with_several_destinations() {
        let ok = spec_with(vec![
            dest("reviews", "v1", Some(90)),
            dest("reviews", "v2", Some(10)),
        ]);
        assert!(violations(&ok).is_empty());
        let bad = spec_with(vec![
            dest("reviews", "v1", Some(90)),
            dest("reviews", "v2", Some(20)),
        ]);
        assert_eq!(
            violations(&bad),
            [
                "spec.http[0].route: total destination weight 110 != 100 (when a route has more \
              than one destination, their weights must add up to 100)"
            ]
        );
        let missing = spec_with(vec![
            dest("reviews", "v1", Some(90)),
            dest("reviews", "v2", None),
        ]);
        assert_eq!(violations(&missing).len(), 1);
    }

    #[test]
    fn single_destination_may_omit_weight() {
        assert!(violations(&spec_with(vec![dest("reviews", "v1", None)])).is_empty());
    }

    #[test]
    fn destinations_are_checked() {
        let mut route = vec![dest("", "V1", Some(-5)), dest("reviews", "v2", Some(105))];
        route[1].destination.port = Some(PortSelector { number: 0 });
        let got = violations(&spec_with(route));
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            "spec.http[0].route[0].destination.host: host must not be empty"
        );
        assert!(got[1].starts_with("spec.http[0].route[0].destination.subset: \"V1\""));
        assert_eq!(
            got[2],
            "spec.http[0].route[0].weight: weight -5 must not be negative"
        );
        assert_eq!(
            got[3],
            "spec.http[0].route[1].destination.port.number: port 0 must be between 1 and 65535"
        );
    }

    #[test]
    fn hosts_and_actions_are_required() {
        let spec = VirtualServiceSpec {
            http: vec![HttpRoute::default()],
            ..VirtualServiceSpec::default()
        };
        assert_eq!(
            violations(&spec),
            [
                "spec.hosts: at least one host is required",
                "spec.http[0]: an HTTP route needs at least one of route, redirect, \
                 directResponse or delegate",
            ]
        );
    }

    #[test]
    fn reports_unimplemented_fields() {
        let mut spec = spec_with(vec![dest("reviews", "v1", None)]);
        spec.gateways = vec!["mesh".into()];
        spec.http[0].retries = Some(serde_json::json!({"attempts": 3}));
        spec.http[0].match_ = vec![serde_json::json!({"uri": {"prefix": "/"}})];
        spec.http[0].route[0].headers = Some(serde_json::json!({}));
        let mut out = Vec::new();
        spec.unimplemented_fields(&FieldPath::root().field("spec"), &mut out);
        let got: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "spec.gateways",
                "spec.http[0].match",
                "spec.http[0].retries",
                "spec.http[0].route[0].headers",
            ]
        );
    }

    #[test]
    fn match_is_spelled_match() {
        let route: HttpRoute = serde_json::from_value(serde_json::json!({
            "match": [{"headers": {"end-user": {"exact": "jason"}}}],
            "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
        }))
        .unwrap();
        assert_eq!(route.match_.len(), 1);
        assert_eq!(route.route[0].destination.subset.as_deref(), Some("v2"));
    }
}
