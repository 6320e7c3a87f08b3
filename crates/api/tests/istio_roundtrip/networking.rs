//! Generators of valid DestinationRules (with traffic policies) and ServiceEntries.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use trellis_api::resources::*;

use super::common::*;

fn simple_lb() -> impl Strategy<Value = SimpleLb> {
    prop::sample::select(vec![
        SimpleLb::Unspecified,
        SimpleLb::Random,
        SimpleLb::Passthrough,
        SimpleLb::RoundRobin,
        SimpleLb::LeastRequest,
        SimpleLb::LeastConn,
    ])
}

fn traffic_policy() -> impl Strategy<Value = TrafficPolicy> {
    let warmup = (
        duration(),
        option::of((0u32..=1000).prop_map(|t| f64::from(t) / 10.0)),
    )
        .prop_map(|(duration, minimum_percent)| WarmupConfiguration {
            duration,
            minimum_percent,
            aggression: None,
        });
    let lb = (simple_lb(), option::of(warmup)).prop_map(|(simple, warmup)| LoadBalancerSettings {
        simple: Some(simple),
        warmup,
        ..LoadBalancerSettings::default()
    });
    let pool = (
        option::of(0i32..1000),
        option::of(duration()),
        option::of(0i32..100),
    )
        .prop_map(
            |(max_connections, connect_timeout, max_retries)| ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    max_connections,
                    connect_timeout,
                    ..TcpSettings::default()
                }),
                http: max_retries.map(|r| HttpSettings {
                    max_retries: Some(r),
                    h2_upgrade_policy: Some(H2UpgradePolicy::Upgrade),
                    ..HttpSettings::default()
                }),
            },
        );
    let outlier = (
        option::of(0u32..10),
        option::of(duration()),
        option::of(0i32..=100),
    )
        .prop_map(
            |(errors, interval, max_ejection_percent)| OutlierDetection {
                consecutive_5xx_errors: errors,
                interval,
                max_ejection_percent,
                outlier_detection_http_error_codes: vec![503],
                ..OutlierDetection::default()
            },
        );
    let tls = prop::sample::select(vec![
        ClientTlsMode::Disable,
        ClientTlsMode::Simple,
        ClientTlsMode::IstioMutual,
    ])
    .prop_map(|mode| ClientTlsSettings {
        mode: Some(mode),
        sni: Some("example.com".into()),
        ..ClientTlsSettings::default()
    });
    (
        lb,
        option::of(pool),
        option::of(outlier),
        option::of(tls),
        option::of(port()),
    )
        .prop_map(
            |(lb, connection_pool, outlier_detection, tls, level_port)| TrafficPolicy {
                load_balancer: Some(lb),
                connection_pool,
                outlier_detection,
                port_level_settings: level_port
                    .map(|number| {
                        vec![PortTrafficPolicy {
                            port: Some(PortSelector { number }),
                            tls: tls.clone(),
                            load_balancer: Some(LoadBalancerSettings {
                                simple: Some(SimpleLb::Random),
                                ..LoadBalancerSettings::default()
                            }),
                            ..PortTrafficPolicy::default()
                        }]
                    })
                    .unwrap_or_default(),
                tls,
                ..TrafficPolicy::default()
            },
        )
}

pub fn destination_rule() -> impl Strategy<Value = Resource> {
    (
        meta(),
        host(),
        vec((labels(), option::of(traffic_policy())), 0..3),
        option::of(traffic_policy()),
        option::of(labels()),
    )
        .prop_map(|(meta, host, subsets, traffic_policy, selector)| {
            Resource::DestinationRule(DestinationRule {
                api_version: "networking.istio.io/v1beta1".into(),
                meta,
                spec: DestinationRuleSpec {
                    host,
                    subsets: subsets
                        .into_iter()
                        .enumerate()
                        .map(|(i, (labels, traffic_policy))| Subset {
                            name: format!("v{i}"),
                            labels,
                            traffic_policy,
                        })
                        .collect(),
                    traffic_policy,
                    export_to: Vec::new(),
                    workload_selector: selector
                        .map(|match_labels| WorkloadSelector { match_labels }),
                },
            })
        })
}

pub fn service_entry() -> impl Strategy<Value = Resource> {
    let endpoint = ((1u8..=254, 1u8..=254), labels(), option::of(label())).prop_map(
        |((a, b), labels, network)| WorkloadEntrySpec {
            address: format!("10.{a}.{b}.1"),
            ports: BTreeMap::from([("p0".to_owned(), 8080)]),
            labels,
            network,
            ..WorkloadEntrySpec::default()
        },
    );
    (
        meta(),
        vec(host(), 1..3),
        prop::sample::subsequence(vec!["1.2.3.4", "2001:db8::1", "10.0.0.0/16"], 0..=3),
        (
            1usize..4,
            option::of(prop_oneof![Just("HTTP"), Just("TCP"), Just("TLS")]),
        ),
        prop::sample::select(vec![None, Some(Resolution::Static), Some(Resolution::Dns)]),
        vec(endpoint, 0..3),
        option::of(prop_oneof![
            Just(Location::MeshExternal),
            Just(Location::MeshInternal)
        ]),
        vec(label(), 0..2),
    )
        .prop_map(
            |(meta, hosts, addresses, (ports, protocol), resolution, endpoints, location, sans)| {
                // Endpoints need a resolution that uses them; a CIDR address one that does not
                // resolve by DNS.
                let endpoints = if resolution.is_some() {
                    endpoints
                } else {
                    Vec::new()
                };
                let addresses = addresses
                    .into_iter()
                    .filter(|a| !a.contains('/') || resolution != Some(Resolution::Dns))
                    .map(str::to_owned)
                    .collect();
                Resource::ServiceEntry(ServiceEntry {
                    api_version: "networking.istio.io/v1alpha3".into(),
                    meta,
                    spec: ServiceEntrySpec {
                        hosts,
                        addresses,
                        ports: (0..ports)
                            .map(|i| ServiceEntryPort {
                                number: 8000 + i as u32,
                                protocol: protocol.map(str::to_owned),
                                name: format!("p{i}"),
                                target_port: (i == 0).then_some(9000),
                            })
                            .collect(),
                        location,
                        resolution,
                        endpoints,
                        workload_selector: None,
                        export_to: Vec::new(),
                        subject_alt_names: sans,
                    },
                })
            },
        )
}
