//! Generators of valid VirtualServices: HTTP routes with matches, weighted destinations or
//! another action, and policies; TCP and TLS routes.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use trellis_api::resources::*;

use super::common::*;

fn http_destinations() -> impl Strategy<Value = Vec<HttpRouteDestination>> {
    (1usize..=3)
        .prop_flat_map(|n| (vec((destination(), option::of(headers())), n), weights(n)))
        .prop_map(|(dests, weights)| {
            dests
                .into_iter()
                .zip(weights)
                .map(|((destination, headers), weight)| HttpRouteDestination {
                    destination,
                    weight,
                    headers,
                })
                .collect()
        })
}

fn http_match() -> impl Strategy<Value = HttpMatchRequest> {
    (
        (
            option::of(label()),
            option::of(string_match()),
            option::of(string_match()),
        ),
        btree_map("[a-z]{1,5}(-[a-z]{1,4})?", header_value_match(), 0..3),
        (option::of(port()), labels(), any::<bool>()),
        btree_map("[a-z]{1,5}", header_value_match(), 0..2),
        option::of(label()),
    )
        .prop_map(
            |(
                (name, uri, method),
                headers,
                (port, source_labels, ignore_uri_case),
                query_params,
                source_namespace,
            )| {
                HttpMatchRequest {
                    name,
                    uri,
                    method,
                    headers,
                    port,
                    source_labels,
                    ignore_uri_case,
                    query_params,
                    source_namespace,
                    ..HttpMatchRequest::default()
                }
            },
        )
}

fn retries() -> impl Strategy<Value = HttpRetry> {
    (
        option::of(0i32..5),
        option::of(duration()),
        option::of(prop::sample::select(vec![
            "5xx",
            "gateway-error,connect-failure",
            "503,reset",
        ])),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(attempts, per_try_timeout, retry_on, retry_remote_localities)| HttpRetry {
                attempts,
                per_try_timeout,
                retry_on: retry_on.map(str::to_owned),
                retry_remote_localities,
                ..HttpRetry::default()
            },
        )
}

fn fault() -> impl Strategy<Value = HttpFaultInjection> {
    let delay = (duration(), option::of(percent())).prop_map(|(d, percentage)| HttpDelay {
        fixed_delay: Some(d),
        percentage,
        ..HttpDelay::default()
    });
    let abort = (200i32..=599, option::of(percent())).prop_map(|(status, percentage)| HttpAbort {
        http_status: Some(status),
        percentage,
        ..HttpAbort::default()
    });
    (option::of(delay), abort).prop_map(|(delay, abort)| HttpFaultInjection {
        delay,
        abort: Some(abort),
    })
}

fn cors() -> impl Strategy<Value = CorsPolicy> {
    (
        vec(string_match(), 0..2),
        prop::sample::subsequence(vec!["GET", "POST", "PUT"], 0..=3),
        option::of(duration()),
        option::of(any::<bool>()),
        option::of(prop_oneof![
            Just(UnmatchedPreflights::Forward),
            Just(UnmatchedPreflights::Ignore)
        ]),
    )
        .prop_map(
            |(allow_origins, methods, max_age, allow_credentials, unmatched_preflights)| {
                CorsPolicy {
                    allow_origins,
                    allow_methods: methods.into_iter().map(str::to_owned).collect(),
                    max_age,
                    allow_credentials,
                    unmatched_preflights,
                    ..CorsPolicy::default()
                }
            },
        )
}

/// What an HTTP route does with a request; exactly one kind of action.
#[derive(Clone, Debug)]
enum Action {
    Route(Vec<HttpRouteDestination>, Option<HttpRewrite>),
    Redirect(HttpRedirect),
    Respond(HttpDirectResponse),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (http_destinations(), option::of(("/[a-z]{0,5}", option::of(host())))).prop_map(
            |(route, rewrite)| Action::Route(
                route,
                rewrite.map(|(uri, authority)| HttpRewrite {
                    uri: Some(uri),
                    authority,
                    uri_regex_rewrite: None,
                })
            )
        ),
        1 => ("/[a-z]{1,5}", option::of(prop_oneof![
            Just(RedirectPortSelection::FromProtocolDefault),
            Just(RedirectPortSelection::FromRequestPort),
        ]), option::of(300u32..=399))
            .prop_map(|(uri, derive_port, redirect_code)| Action::Redirect(HttpRedirect {
                uri: Some(uri),
                derive_port,
                redirect_code,
                ..HttpRedirect::default()
            })),
        1 => (200u32..=599, option::of("[a-z ]{0,10}")).prop_map(|(status, body)| {
            Action::Respond(HttpDirectResponse {
                status,
                body: body.map(|text| HttpBody {
                    string: Some(text),
                    bytes: None,
                }),
            })
        }),
    ]
}

fn http_route() -> impl Strategy<Value = HttpRoute> {
    (
        (option::of(label()), vec(http_match(), 0..3), action()),
        (
            option::of(duration()),
            option::of(retries()),
            option::of(fault()),
        ),
        (
            option::of(destination()),
            option::of(percent()),
            option::of(0u32..=100),
        ),
        (option::of(cors()), option::of(headers())),
    )
        .prop_map(
            |(
                (name, match_, action),
                (timeout, retries, fault),
                (mirror, mirror_percentage, mirror_percent),
                (cors_policy, headers),
            )| {
                let mut route = HttpRoute {
                    name,
                    match_,
                    timeout,
                    retries,
                    fault,
                    mirror,
                    mirror_percentage,
                    mirror_percent_legacy: mirror_percent,
                    cors_policy,
                    headers,
                    ..HttpRoute::default()
                };
                match action {
                    Action::Route(dests, rewrite) => {
                        route.route = dests;
                        route.rewrite = rewrite;
                    }
                    Action::Redirect(redirect) => route.redirect = Some(redirect),
                    Action::Respond(response) => route.direct_response = Some(response),
                }
                route
            },
        )
}

fn route_destinations() -> impl Strategy<Value = Vec<RouteDestination>> {
    (1usize..=3)
        .prop_flat_map(|n| (vec(destination(), n), weights(n)))
        .prop_map(|(dests, weights)| {
            dests
                .into_iter()
                .zip(weights)
                .map(|(destination, weight)| RouteDestination {
                    destination,
                    weight,
                })
                .collect()
        })
}

fn tcp_route() -> impl Strategy<Value = TcpRoute> {
    (option::of(port()), route_destinations()).prop_map(|(port, route)| TcpRoute {
        match_: port
            .map(|port| {
                vec![L4MatchAttributes {
                    port: Some(port),
                    destination_subnets: vec!["10.0.0.0/8".into()],
                    ..L4MatchAttributes::default()
                }]
            })
            .unwrap_or_default(),
        route,
    })
}

fn tls_route() -> impl Strategy<Value = TlsRoute> {
    (vec(host(), 1..3), route_destinations()).prop_map(|(sni_hosts, route)| TlsRoute {
        match_: vec![TlsMatchAttributes {
            sni_hosts,
            ..TlsMatchAttributes::default()
        }],
        route,
    })
}

pub fn virtual_service() -> impl Strategy<Value = Resource> {
    (
        meta(),
        vec(host(), 1..3),
        prop::sample::subsequence(vec!["mesh", "istio-system/gw"], 0..=2),
        vec(http_route(), 0..3),
        vec(tcp_route(), 0..2),
        vec(tls_route(), 0..2),
        prop::sample::subsequence(vec![".", "other"], 0..=2),
    )
        .prop_filter(
            "a VirtualService needs a route",
            |(_, _, _, http, tcp, tls, _)| !(http.is_empty() && tcp.is_empty() && tls.is_empty()),
        )
        .prop_map(|(meta, hosts, gateways, http, tcp, tls, export_to)| {
            Resource::VirtualService(VirtualService {
                api_version: "networking.istio.io/v1".into(),
                meta,
                spec: VirtualServiceSpec {
                    hosts,
                    gateways: gateways.into_iter().map(str::to_owned).collect(),
                    http,
                    tcp,
                    tls,
                    export_to: export_to.into_iter().map(str::to_owned).collect(),
                },
            })
        })
}
