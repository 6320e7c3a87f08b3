//! Generators of valid AuthorizationPolicies and PeerAuthentications.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use trellis_api::resources::*;

use super::common::*;

fn source() -> impl Strategy<Value = Source> {
    (
        vec("cluster.local/ns/[a-z]{1,5}/sa/[a-z]{1,5}", 0..2),
        vec(label(), 0..2),
        prop::sample::subsequence(vec!["10.0.0.1", "192.168.0.0/16"], 0..=2),
        vec("[a-z]{1,5}\\*", 0..2),
    )
        .prop_filter("a source sets something", |(p, n, ip, r)| {
            !(p.is_empty() && n.is_empty() && ip.is_empty() && r.is_empty())
        })
        .prop_map(
            |(principals, namespaces, ip_blocks, request_principals)| Source {
                principals,
                namespaces,
                ip_blocks: ip_blocks.into_iter().map(str::to_owned).collect(),
                request_principals,
                ..Source::default()
            },
        )
}

fn operation() -> impl Strategy<Value = Operation> {
    (
        prop::sample::subsequence(vec!["GET", "POST"], 1..=2),
        vec("/[a-z]{1,5}(/\\{\\*\\})?", 0..2),
        vec(port().prop_map(|p| p.to_string()), 0..2),
    )
        .prop_map(|(methods, paths, ports)| Operation {
            methods: methods.into_iter().map(str::to_owned).collect(),
            paths,
            ports,
            ..Operation::default()
        })
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        vec("[a-z]{1,5}", 1..3).prop_map(|values| Condition {
            key: "request.headers[x-user]".into(),
            values,
            not_values: Vec::new(),
        }),
        Just(Condition {
            key: "source.ip".into(),
            values: vec!["10.0.0.0/8".into()],
            not_values: vec!["10.1.2.3".into()],
        }),
        port().prop_map(|p| Condition {
            key: "destination.port".into(),
            values: Vec::new(),
            not_values: vec![p.to_string()],
        }),
    ]
}

pub fn authorization_policy() -> impl Strategy<Value = Resource> {
    let rule = (
        vec(source(), 0..2),
        vec(operation(), 0..2),
        vec(condition(), 0..2),
    )
        .prop_map(|(from, to, when)| AuthorizationRule {
            from: from
                .into_iter()
                .map(|source| RuleFrom {
                    source: Some(source),
                })
                .collect(),
            to: to
                .into_iter()
                .map(|operation| RuleTo {
                    operation: Some(operation),
                })
                .collect(),
            when,
        });
    (
        meta(),
        option::of(labels()),
        vec(rule, 0..3),
        prop::sample::select(vec![
            None,
            Some(AuthorizationAction::Allow),
            Some(AuthorizationAction::Deny),
            Some(AuthorizationAction::Audit),
            Some(AuthorizationAction::Custom),
        ]),
    )
        .prop_map(|(meta, selector, rules, action)| {
            let custom = action == Some(AuthorizationAction::Custom);
            Resource::AuthorizationPolicy(AuthorizationPolicy {
                api_version: "security.istio.io/v1".into(),
                meta,
                spec: AuthorizationPolicySpec {
                    selector: selector.map(|match_labels| WorkloadSelector { match_labels }),
                    rules,
                    action,
                    provider: custom.then(|| ExtensionProvider {
                        name: Some("ext-authz".into()),
                    }),
                    ..AuthorizationPolicySpec::default()
                },
            })
        })
}

fn mtls() -> impl Strategy<Value = PeerAuthenticationMtls> {
    option::of(prop::sample::select(vec![
        MtlsMode::Unset,
        MtlsMode::Disable,
        MtlsMode::Permissive,
        MtlsMode::Strict,
    ]))
    .prop_map(|mode| PeerAuthenticationMtls { mode })
}

pub fn peer_authentication() -> impl Strategy<Value = Resource> {
    (
        meta(),
        btree_map("[a-z]{1,6}", "[a-z0-9]{1,6}", 0..3),
        option::of(mtls()),
        btree_map(port().prop_map(|p| p.to_string()), mtls(), 1..3),
    )
        .prop_map(|(meta, match_labels, mtls, ports)| {
            // Port-level settings need a selector that selects something.
            let port_level_mtls = (!match_labels.is_empty()).then_some(ports);
            Resource::PeerAuthentication(PeerAuthentication {
                api_version: "security.istio.io/v1beta1".into(),
                meta,
                spec: PeerAuthenticationSpec {
                    selector: Some(WorkloadSelector { match_labels }),
                    mtls,
                    port_level_mtls,
                },
            })
        })
}
