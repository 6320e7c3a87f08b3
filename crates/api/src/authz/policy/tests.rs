//! Compiling AuthorizationPolicies: actions, targets, dry-run, the matchers each field
//! becomes, what is refused by name, and the serialized form.

use serde_json::json;

use super::*;

fn resource(meta: serde_json::Value, spec: serde_json::Value) -> AuthorizationPolicy {
    let mut metadata = json!({"name": "p", "namespace": "ns"});
    if let (Some(into), Some(from)) = (metadata.as_object_mut(), meta.as_object()) {
        into.extend(from.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1",
        "metadata": metadata,
        "spec": spec,
    }))
    .unwrap()
}

fn compile(spec: serde_json::Value) -> Result<Policy, PolicyError> {
    Policy::compile(&resource(json!({}), spec))
}

/// The error's field and message, as one line.
fn failure(spec: serde_json::Value) -> String {
    let e = compile(spec).unwrap_err();
    assert_eq!(e.policy, "ns/p");
    format!("{}: {}", e.field, e.problem)
}

#[test]
fn actions() {
    assert_eq!(compile(json!({})).unwrap().action, Action::Allow);
    assert_eq!(
        compile(json!({"action": "DENY"})).unwrap().action,
        Action::Deny
    );
    assert_eq!(
        compile(json!({"action": "AUDIT"})).unwrap().action,
        Action::Audit
    );
    let e = compile(json!({"action": "CUSTOM", "provider": {"name": "ext"}})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "AuthorizationPolicy ns/p: spec.action: action CUSTOM (external authorization) is not \
         supported by the mesh"
    );
}

#[test]
fn empty_and_allow_all_rules() {
    let nothing = compile(json!({})).unwrap();
    assert!(nothing.rules.is_empty());
    assert_eq!(nothing.target, Target::Namespace);
    let everything = compile(json!({"rules": [{}]})).unwrap();
    assert_eq!(everything.rules, vec![Rule::default()]);
}

#[test]
fn targets() {
    let selected = compile(json!({"selector": {"matchLabels": {"app": "a"}}})).unwrap();
    assert_eq!(
        selected.target,
        Target::Selector([("app".to_owned(), "a".to_owned())].into())
    );
    let services = compile(json!({"targetRefs": [
        {"kind": "Service", "name": "a"},
        {"group": "core", "kind": "Service", "name": "b", "namespace": "ns"},
    ]}))
    .unwrap();
    assert_eq!(
        services.target,
        Target::Services(vec!["a".into(), "b".into()])
    );
    let single = compile(json!({"targetRef": {"kind": "Service", "name": "a"}})).unwrap();
    assert_eq!(single.target, Target::Services(vec!["a".into()]));

    assert_eq!(
        failure(json!({"targetRefs": [
            {"kind": "Service", "name": "a"},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
        ]})),
        "spec.targetRefs[1]: targetRef to Gateway (group \"gateway.networking.k8s.io\") is not \
         supported: the mesh can only target Services"
    );
    assert!(failure(json!({"targetRef": {
        "group": "networking.istio.io", "kind": "ServiceEntry", "name": "se"}}))
    .starts_with("spec.targetRef: targetRef to ServiceEntry"));
    assert!(failure(json!({"targetRefs": [
        {"group": "gateway.networking.k8s.io", "kind": "Service", "name": "x"}]}))
    .contains("not supported"));
    assert_eq!(
        failure(json!({"targetRefs": [{"kind": "Service", "name": "a", "namespace": "other"}]})),
        "spec.targetRefs[0].namespace: targetRef to namespace \"other\": only the policy's own \
         namespace is supported"
    );
    assert_eq!(
        failure(json!({
            "selector": {"matchLabels": {"app": "a"}},
            "targetRefs": [{"kind": "Service", "name": "a"}],
        })),
        "spec: at most one of selector, targetRef and targetRefs may be set"
    );
}

#[test]
fn dry_run_annotation() {
    for (value, want) in [
        ("true", true),
        ("True", true),
        ("1", true),
        ("false", false),
    ] {
        let r = resource(
            json!({"annotations": {"istio.io/dry-run": value}}),
            json!({"action": "DENY"}),
        );
        assert_eq!(Policy::compile(&r).unwrap().dry_run, want, "{value}");
    }
    assert!(!compile(json!({})).unwrap().dry_run);
    let r = resource(
        json!({"annotations": {"istio.io/dry-run": "yes"}}),
        json!({}),
    );
    assert_eq!(
        Policy::compile(&r).unwrap_err().to_string(),
        "AuthorizationPolicy ns/p: metadata.annotations[istio.io/dry-run]: annotation \
         istio.io/dry-run must be \"true\" or \"false\", not \"yes\""
    );
}

#[test]
fn sources_operations_and_conditions() {
    let p = compile(json!({"rules": [{
        "from": [
            {"source": {
                "principals": ["cluster.local/ns/a/sa/b"],
                "notPrincipals": ["*/sa/evil"],
                "requestPrincipals": ["iss/sub"],
                "namespaces": ["prod-*"],
                "ipBlocks": ["10.0.0.0/8"],
                "notRemoteIpBlocks": ["1.2.3.4"],
            }},
            {"source": {"serviceAccounts": ["sleep", "other/curl"]}},
        ],
        "to": [{"operation": {
            "hosts": ["*.example.com"],
            "notPorts": ["8080"],
            "methods": ["GET"],
            "paths": ["/api/{*}/items", "/admin*"],
        }}],
        "when": [
            {"key": "request.headers[X-User]", "values": ["alice"]},
            {"key": "destination.port", "notValues": ["9090"]},
            {"key": "request.auth.claims[iss]", "values": ["x"]},
            {"key": "source.ip", "values": []},
        ],
    }]}))
    .unwrap();
    let rule = &p.rules[0];
    assert_eq!(rule.from.len(), 2);
    assert_eq!(
        rule.from[0],
        vec![
            Match::SourcePrincipal(Values {
                values: vec![StringPattern::Exact("cluster.local/ns/a/sa/b".into())],
                not_values: vec![StringPattern::Suffix("/sa/evil".into())],
            }),
            Match::RequestAuth {
                key: "request.auth.principal".into(),
                values: Values {
                    values: vec!["iss/sub".into()],
                    not_values: vec![],
                },
            },
            Match::SourceNamespace(Values {
                values: vec![StringPattern::Prefix("prod-".into())],
                not_values: vec![],
            }),
            Match::SourceIp(Values {
                values: vec![IpBlock::parse("10.0.0.0/8").unwrap()],
                not_values: vec![],
            }),
            Match::RemoteIp(Values {
                values: vec![],
                not_values: vec![IpBlock::parse("1.2.3.4/32").unwrap()],
            }),
        ]
    );
    assert_eq!(
        rule.from[1],
        vec![Match::SourceServiceAccount(Values {
            values: vec![
                ServiceAccount::parse("ns/sleep", "").unwrap(),
                ServiceAccount::parse("other/curl", "").unwrap(),
            ],
            not_values: vec![],
        })]
    );
    assert_eq!(rule.to[0].len(), 4);
    assert!(rule.to[0]
        .iter()
        .all(|m| m.is_http_only() != matches!(m, Match::DestinationPort(_))));
    // The condition without values puts no constraint, as in Istio.
    assert_eq!(rule.when.len(), 3);
    assert_eq!(
        rule.when[0],
        Match::Header {
            name: "x-user".into(),
            values: Values {
                values: vec![StringPattern::Exact("alice".into())],
                not_values: vec![],
            },
        }
    );
    assert!(rule.uses_http_only());
    assert!(!Rule::default().uses_http_only());
}

#[test]
fn unsupported_and_malformed() {
    let rule = |r: serde_json::Value| failure(json!({"rules": [r]}));
    assert_eq!(
        rule(json!({"when": [{"key": "experimental.envoy.filters.a.b[c]", "values": ["x"]}]})),
        "spec.rules[0].when[0].key: condition key experimental.envoy.filters.a.b[c] is not \
         supported by the mesh"
    );
    assert_eq!(
        rule(json!({"when": [{"key": "destination.labels[app]", "values": ["x"]}]})),
        "spec.rules[0].when[0].key: unknown condition key \"destination.labels[app]\""
    );
    assert_eq!(
        rule(json!({"when": [{"key": "request.headers[bad header]", "values": ["x"]}]})),
        "spec.rules[0].when[0].key: \"request.headers[bad header]\" does not name a valid HTTP \
         header (request.headers[name])"
    );
    assert_eq!(
        rule(json!({"from": [{"source": {"ipBlocks": ["10.0.0.0/8", "1.2.3.4/40"]}}]})),
        "spec.rules[0].from[0].source.ipBlocks[1]: \"1.2.3.4/40\" is not an IP address or CIDR \
         block"
    );
    assert_eq!(
        rule(json!({"to": [{"operation": {"notPorts": ["http"]}}]})),
        "spec.rules[0].to[0].operation.notPorts[0]: \"http\" is not a port number"
    );
    assert!(
        rule(json!({"to": [{"operation": {"paths": ["/{**}/{**}"]}}]})).starts_with(
            "spec.rules[0].to[0].operation.paths[0]: \"/{**}/{**}\" is not a valid path template"
        )
    );
    assert_eq!(
        rule(json!({"when": [{"key": "destination.ip", "notValues": ["x"]}]})),
        "spec.rules[0].when[0].notValues[0]: \"x\" is not an IP address or CIDR block"
    );
    assert_eq!(
        rule(json!({"from": [{"source": {"notServiceAccounts": ["a/b/c"]}}]})),
        "spec.rules[0].from[0].source.notServiceAccounts[0]: \"a/b/c\" is not a service account \
         (name or namespace/name)"
    );
}

#[test]
fn serde_round_trip_and_checks() {
    let p = compile(json!({
        "action": "DENY",
        "selector": {"matchLabels": {"app": "a"}},
        "rules": [{
            "from": [{"source": {"principals": ["*"], "notIpBlocks": ["10.0.0.0/8"],
                                 "serviceAccounts": ["x/y"]}}],
            "to": [{"operation": {"paths": ["/a/{**}", "*.css"], "ports": ["80"]}}],
            "when": [
                {"key": "request.headers[x-a]", "notValues": ["*"]},
                {"key": "request.auth.presenter", "values": ["p"]},
                {"key": "connection.sni", "values": ["*.local"]},
            ],
        }],
    }))
    .unwrap();
    let json = serde_json::to_value(&p).unwrap();
    let back: Policy = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, p);
    assert_eq!(
        json["rules"][0]["from"][0][0]["attribute"],
        "sourcePrincipal"
    );
    assert_eq!(json["rules"][0]["from"][0][0]["values"][0], "*");

    // Every matcher is checked again on the way in.
    let mut bad = json.clone();
    assert_eq!(bad["rules"][0]["from"][0][2]["attribute"], "sourceIp");
    bad["rules"][0]["from"][0][2]["notValues"][0] = json!("10.0.0.0/99");
    assert!(serde_json::from_value::<Policy>(bad).is_err());
    let mut bad = json.clone();
    assert_eq!(bad["rules"][0]["to"][0][1]["attribute"], "path");
    bad["rules"][0]["to"][0][1]["values"][0] = json!("/{x}");
    assert!(serde_json::from_value::<Policy>(bad).is_err());
    let mut bad = json;
    bad["rules"][0]["from"][0][2]["surprise"] = json!(true);
    assert!(serde_json::from_value::<Policy>(bad).is_err());
}

/// `trustDomains` and `source.trustDomain` compile to one attribute.
#[test]
fn trust_domains_compile() {
    let policy = compile(json!({"rules": [{
        "from": [{"source": {"trustDomains": ["td", "corp-*"], "notTrustDomains": ["old"]}}],
        "when": [{"key": "source.trustDomain", "values": ["td"]}],
    }]}))
    .unwrap();
    let rule = &policy.rules[0];
    assert_eq!(
        rule.from[0],
        [Match::SourceTrustDomain(Values {
            values: vec![
                StringPattern::Exact("td".into()),
                StringPattern::Prefix("corp-".into())
            ],
            not_values: vec![StringPattern::Exact("old".into())],
        })]
    );
    assert_eq!(
        rule.when,
        [Match::SourceTrustDomain(Values {
            values: vec![StringPattern::Exact("td".into())],
            not_values: vec![],
        })]
    );
    assert!(!rule.uses_http_only());
}

/// Aliases widen the principals that name the mesh's trust domain or an alias, in `from`
/// and in `source.principal` conditions, `not` values included; nothing else changes.
#[test]
fn trust_domain_aliases_widen_principals() {
    let policy = compile(json!({"rules": [{
        "from": [{"source": {
            "principals": ["old-td/ns/a/sa/b", "new-td/ns/c/*", "other/ns/x/sa/y", "*/ns/d/sa/e", "*"],
            "notPrincipals": ["old-td/ns/z/sa/z"],
            "trustDomains": ["old-td"],
        }}],
        "when": [{"key": "source.principal", "values": ["new-td/ns/w/sa/w"]}],
    }]}))
    .unwrap();
    let unchanged = policy.clone().with_trust_domain_aliases("new-td", &[]);
    assert_eq!(unchanged, policy);
    let widened = policy.with_trust_domain_aliases("new-td", &["old-td".to_owned()]);
    let exact = |s: &str| StringPattern::Exact(s.into());
    let rule = &widened.rules[0];
    assert_eq!(
        rule.from[0][0],
        Match::SourcePrincipal(Values {
            values: vec![
                exact("old-td/ns/a/sa/b"),
                exact("new-td/ns/a/sa/b"),
                StringPattern::Prefix("new-td/ns/c/".into()),
                StringPattern::Prefix("old-td/ns/c/".into()),
                exact("other/ns/x/sa/y"),
                StringPattern::Suffix("/ns/d/sa/e".into()),
                StringPattern::Present,
            ],
            not_values: vec![exact("old-td/ns/z/sa/z"), exact("new-td/ns/z/sa/z")],
        })
    );
    // Trust domains are compared as written, as in Istio.
    assert_eq!(
        rule.from[0][1],
        Match::SourceTrustDomain(Values {
            values: vec![exact("old-td")],
            not_values: vec![],
        })
    );
    assert_eq!(
        rule.when[0],
        Match::SourcePrincipal(Values {
            values: vec![exact("new-td/ns/w/sa/w"), exact("old-td/ns/w/sa/w")],
            not_values: vec![],
        })
    );
}
