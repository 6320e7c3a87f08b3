//! Unit tests of the VirtualService types and rules.

use serde_json::json;

use super::*;
use crate::resources::istio::{HeaderValueMatch, StringMatch};

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
    crate::resources::validate::rendered(|out| spec.validate(out))
}

fn paths(spec: &VirtualServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    spec.validate(&mut out);
    out.iter().map(|v| v.path.to_string()).collect()
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

fn parse(value: serde_json::Value) -> VirtualServiceSpec {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
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
fn routes_and_actions_are_required() {
    let spec = VirtualServiceSpec {
        hosts: vec!["reviews".into()],
        http: vec![HttpRoute::default()],
        ..VirtualServiceSpec::default()
    };
    assert_eq!(
        violations(&spec),
        [
            "spec.http[0]: an HTTP route needs at least one of route, redirect, directResponse or \
          delegate"
        ]
    );
    let spec = VirtualServiceSpec {
        hosts: vec!["reviews".into()],
        ..VirtualServiceSpec::default()
    };
    assert_eq!(
        violations(&spec),
        ["spec: a VirtualService needs at least one http, tcp or tls route"]
    );
}

#[test]
fn a_virtual_service_without_hosts_is_a_delegate() {
    let mut spec = spec_with(vec![dest("reviews", "v1", None)]);
    spec.hosts.clear();
    assert!(violations(&spec).is_empty());
    let mut notices = Vec::new();
    spec.notices(&mut notices);
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].path.to_string(), "spec.hosts");

    spec.gateways = vec!["mesh".into()];
    spec.http[0].delegate = Some(Delegate {
        name: Some("other".into()),
        namespace: None,
    });
    assert_eq!(
        paths(&spec),
        ["spec.gateways", "spec.http[0]", "spec.http[0].delegate"]
    );
}

#[test]
fn hosts_and_gateways_are_checked() {
    let mut spec = spec_with(vec![dest("reviews", "v1", None)]);
    spec.hosts = vec!["*.example.com".into(), "a..b".into(), String::new()];
    spec.gateways = vec!["istio-system/gw".into(), "a/b/c".into()];
    spec.export_to = vec![".".into(), ".".into()];
    assert_eq!(
        paths(&spec),
        [
            "spec.hosts[1]",
            "spec.hosts[2]",
            "spec.gateways[1]",
            "spec.exportTo[1]"
        ]
    );
}

#[test]
fn match_is_spelled_match_and_typed() {
    let route: HttpRoute = serde_json::from_value(json!({
        "match": [{"headers": {"end-user": {"exact": "jason"}, "x-present": {}}}],
        "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
    }))
    .unwrap();
    assert_eq!(route.match_.len(), 1);
    assert_eq!(
        route.match_[0].headers["end-user"],
        HeaderValueMatch::Value(StringMatch::Exact("jason".into()))
    );
    assert_eq!(
        route.match_[0].headers["x-present"],
        HeaderValueMatch::Present
    );
    assert_eq!(route.route[0].destination.subset.as_deref(), Some("v2"));
}

#[test]
fn typos_inside_policies_are_errors() {
    for (value, needle) in [
        (
            json!({"retries": {"atempts": 3}}),
            "unknown field `atempts`",
        ),
        (
            json!({"match": [{"uri": {"prefx": "/"}}]}),
            "unknown field `prefx`",
        ),
        (
            json!({"match": [{"uri": {"exact": "/", "prefix": "/"}}]}),
            "found exact and prefix",
        ),
        (json!({"timeout": "10 seconds"}), "invalid duration"),
        (
            json!({"fault": {"abort": {"httpStatus": "500"}}}),
            "invalid type",
        ),
        (
            json!({"redirect": {"derivePort": "FROM_NOWHERE"}}),
            "unknown variant",
        ),
    ] {
        let err = serde_json::from_value::<HttpRoute>(value.clone()).unwrap_err();
        assert!(err.to_string().contains(needle), "{value}: {err}");
    }
}

#[test]
fn http_policies_are_checked() {
    let spec = parse(json!({
        "hosts": ["reviews"],
        "http": [{
            "match": [{"uri": {"regex": "(unclosed"}, "port": 70000, "headers": {"bad name": {}}}],
            "route": [{"destination": {"host": "reviews"}}],
            "redirect": {"uri": "/x"},
            "rewrite": {"uri": "/y"},
            "timeout": "500us",
            "retries": {"attempts": -1, "perTryTimeout": "0s", "retryOn": "5xx,bogus,503"},
            "fault": {
                "delay": {"exponentialDelay": "1s", "percent": 101},
                "abort": {"grpcStatus": "NOPE", "percentage": {"value": 120}},
            },
            "mirror": {"host": "m"},
            "mirrors": [{"destination": {"host": "n"}}],
            "mirrorPercent": 101,
            "corsPolicy": {"allowMethods": ["GET", "FETCH"], "maxAge": "0s"},
            "headers": {"request": {"set": {"bad header": "x"}}},
        }],
    }));
    assert_eq!(
        paths(&spec),
        [
            "spec.http[0]",
            "spec.http[0]",
            "spec.http[0]",
            "spec.http[0].match[0].uri.regex",
            "spec.http[0].match[0].headers[bad name]",
            "spec.http[0].match[0].port",
            "spec.http[0].timeout",
            "spec.http[0].retries.attempts",
            "spec.http[0].retries.perTryTimeout",
            "spec.http[0].retries.retryOn",
            "spec.http[0].fault.delay.exponentialDelay",
            "spec.http[0].fault.delay.percent",
            "spec.http[0].fault.abort.grpcStatus",
            "spec.http[0].fault.abort.percentage.value",
            "spec.http[0].mirrorPercent",
            "spec.http[0].corsPolicy.allowMethods[1]",
            "spec.http[0].corsPolicy.maxAge",
            "spec.http[0].headers.request.set[bad header]",
        ]
    );
}

#[test]
fn direct_responses_and_redirects() {
    let spec = parse(json!({
        "hosts": ["a"],
        "http": [
            {"directResponse": {"status": 503, "body": {"string": "down"}}},
            {"directResponse": {"status": 99, "body": {"string": "x", "bytes": "!!"}}},
            {"redirect": {}},
            {"redirect": {"port": 8080, "derivePort": "FROM_REQUEST_PORT", "redirectCode": 200}},
        ],
    }));
    assert_eq!(
        paths(&spec),
        [
            "spec.http[1].directResponse.status",
            "spec.http[1].directResponse.body",
            "spec.http[1].directResponse.body.bytes",
            "spec.http[2].redirect",
            "spec.http[3].redirect",
            "spec.http[3].redirect.redirectCode",
        ]
    );
}

#[test]
fn tcp_and_tls_routes() {
    let spec = parse(json!({
        "hosts": ["tcp-echo"],
        "tcp": [
            {"match": [{"port": 31400}], "route": [
                {"destination": {"host": "tcp-echo", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "tcp-echo", "subset": "v2"}, "weight": 20},
            ]},
            {"match": [{"destinationSubnets": ["10.0.0.0/33"], "sourceSubnet": "x"}]},
        ],
        "tls": [{"match": [{"sniHosts": []}], "route": [{"destination": {"host": "a"}}]}],
    }));
    assert_eq!(
        paths(&spec),
        [
            "spec.tcp[1].match[0].destinationSubnets[0]",
            "spec.tcp[1].match[0].sourceSubnet",
            "spec.tcp[1].route",
            "spec.tls[0].match[0].sniHosts",
        ]
    );
    let err = serde_json::from_value::<VirtualServiceSpec>(json!({
        "hosts": ["a"], "tls": [{"route": []}],
    }))
    .unwrap_err();
    assert!(err.to_string().contains("missing field `match`"), "{err}");
}

#[test]
fn serializes_back_to_the_same_json() {
    let value = json!({
        "hosts": ["reviews"],
        "http": [{
            "name": "r",
            "match": [{"uri": {"prefix": "/api"}, "headers": {"x": {}}, "ignoreUriCase": true}],
            "route": [{"destination": {"host": "reviews", "port": {"number": 9080}}, "weight": 100}],
            "timeout": "1.5s",
            "retries": {"attempts": 2, "perTryTimeout": "100ms", "retryOn": "5xx"},
            "fault": {"delay": {"fixedDelay": "7s", "percentage": {"value": 50.0}}},
            "mirror_percent": 5,
            "mirrorPercent": 6,
        }],
    });
    let spec = parse(value.clone());
    assert_eq!(serde_json::to_value(&spec).unwrap(), value);
}
