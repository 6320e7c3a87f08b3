use super::*;

/// A DestinationRule's spec from YAML, through the loader users' files go through.
fn spec(yaml: &str) -> DestinationRuleSpec {
    let indented: String = yaml
        .trim_start_matches('\n')
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect();
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\n\
         spec:\n{indented}"
    );
    let (resources, diagnostics) = crate::load::parse_str(std::path::Path::new("dr.yaml"), &text);
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    match resources.into_iter().next().map(|r| r.value) {
        Some(crate::resources::Resource::DestinationRule(dr)) => dr.spec,
        other => panic!("not a DestinationRule: {other:?}"),
    }
}

#[test]
fn no_policy_is_the_default_everywhere() {
    let p = DestinationPolicies::compile(&spec("host: reviews\nsubsets:\n- name: v1\n"));
    assert!(p.is_empty());
    assert_eq!(p.get(9080, Some("v1")), &Policy::default());
    assert_eq!(p.get(9080, None).load_balancer, LoadBalancer::PeakEwma);
}

#[test]
fn simple_balancers_and_hash_keys_map_to_the_proxy_policies() {
    for (yaml, want) in [
        ("simple: ROUND_ROBIN", LoadBalancer::RoundRobin),
        ("simple: LEAST_REQUEST", LoadBalancer::LeastRequest),
        ("simple: LEAST_CONN", LoadBalancer::LeastRequest),
        ("simple: RANDOM", LoadBalancer::Random),
        ("simple: UNSPECIFIED", LoadBalancer::PeakEwma),
        (
            "consistentHash: {httpHeaderName: X-User}",
            LoadBalancer::ConsistentHash(HashOn::Header("x-user".into())),
        ),
        (
            "consistentHash: {httpCookie: {name: session}}",
            LoadBalancer::ConsistentHash(HashOn::Cookie("session".into())),
        ),
        (
            "consistentHash: {useSourceIp: true}",
            LoadBalancer::ConsistentHash(HashOn::SourceIp),
        ),
        (
            "consistentHash: {httpQueryParameterName: user}",
            LoadBalancer::ConsistentHash(HashOn::QueryParameter("user".into())),
        ),
    ] {
        let p = DestinationPolicies::compile(&spec(&format!(
            "host: r\ntrafficPolicy:\n  loadBalancer: {{{yaml}}}\n"
        )));
        assert_eq!(p.get(80, None).load_balancer, want, "{yaml}");
    }
}

#[test]
fn istio_defaults_fill_what_a_setting_leaves_out() {
    let p = DestinationPolicies::compile(&spec(
        "host: r\ntrafficPolicy:\n  outlierDetection: {baseEjectionTime: 2s}\n  \
         connectionPool: {http: {http1MaxPendingRequests: 1, idleTimeout: 1500ms}}\n",
    ));
    let policy = p.get(80, None);
    assert_eq!(
        policy.outlier,
        Some(Outlier {
            base_ejection_ms: 2000,
            ..Outlier::default()
        })
    );
    assert_eq!(
        policy.pool,
        Some(PoolLimits {
            max_pending: 1,
            idle_timeout_ms: Some(1500),
            ..PoolLimits::default()
        })
    );
    // Istio's circuit-breaking task: one connection, one pending request.
    let p = DestinationPolicies::compile(&spec(
        "host: r\ntrafficPolicy:\n  connectionPool:\n    tcp: {maxConnections: 1}\n    \
         http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}\n",
    ));
    assert_eq!(
        p.get(80, None).pool,
        Some(PoolLimits {
            max_requests: 1,
            max_pending: 1,
            max_requests_per_connection: 1,
            idle_timeout_ms: None,
        })
    );
}

#[test]
fn the_deprecated_consecutive_errors_counts_gateway_errors_alone() {
    let p = DestinationPolicies::compile(&spec(
        "host: r\ntrafficPolicy:\n  outlierDetection: {consecutiveErrors: 7, \
         outlierDetectionHttpErrorCodes: [429]}\n",
    ));
    let o = p.get(80, None).outlier.clone().expect("outlier");
    assert_eq!((o.consecutive_5xx, o.consecutive_gateway_errors), (0, 7));
    assert_eq!(o.error_codes, [429]);
    assert_eq!(o.consecutive_local_origin, None);
    let p = DestinationPolicies::compile(&spec(
        "host: r\ntrafficPolicy:\n  outlierDetection: {splitExternalLocalOriginErrors: true}\n",
    ));
    let o = p.get(80, None).outlier.clone().expect("outlier");
    assert_eq!(o.consecutive_local_origin, Some(5), "Istio's default");
    let p = DestinationPolicies::compile(&spec(
        "host: r\ntrafficPolicy:\n  outlierDetection: {consecutive5xxErrors: 0, \
         consecutiveGatewayErrors: 2}\n",
    ));
    let o = p.get(80, None).outlier.clone().expect("outlier");
    assert_eq!((o.consecutive_5xx, o.consecutive_gateway_errors), (0, 2));
}

#[test]
fn ports_and_subsets_override_setting_by_setting() {
    let p = DestinationPolicies::compile(&spec(
        r#"
host: reviews
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  outlierDetection: {consecutive5xxErrors: 3}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer: {simple: ROUND_ROBIN}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 4}}
    portLevelSettings:
    - port: {number: 9443}
      loadBalancer: {simple: LEAST_REQUEST}
"#,
    ));
    let three = Some(Outlier {
        consecutive_5xx: 3,
        ..Outlier::default()
    });
    let four = Some(PoolLimits {
        max_requests: 4,
        ..PoolLimits::default()
    });
    // The rule's level, its port override.
    assert_eq!(p.get(80, None).load_balancer, LoadBalancer::Random);
    assert_eq!(p.get(9080, None).load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(p.get(9080, None).outlier, three);
    // A subset without a policy is the service's.
    assert_eq!(p.get(9080, Some("v1")), p.get(9080, None));
    assert_eq!(p.get(9080, Some("nope")), p.get(9080, None));
    // v2 adds a pool everywhere, keeps the rule's port override and adds its own.
    let v2 = |port| p.get(port, Some("v2"));
    assert_eq!(v2(80).load_balancer, LoadBalancer::Random);
    assert_eq!(v2(9080).load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(v2(9443).load_balancer, LoadBalancer::LeastRequest);
    for port in [80, 9080, 9443] {
        assert_eq!(v2(port).pool, four, "port {port}");
        assert_eq!(v2(port).outlier, three, "port {port}");
    }
    // The compiled form goes over the wire as JSON and comes back the same.
    let json = serde_json::to_string(&p).expect("serializes");
    let back: DestinationPolicies = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, p);
}

#[test]
fn a_scoped_rule_decides_for_the_clients_it_takes() {
    let rule = |lb: &str| {
        DestinationPolicies::compile(&spec(&format!(
            "host: r\ntrafficPolicy:\n  loadBalancer: {{simple: {lb}}}\n"
        )))
    };
    let mut p = rule("RANDOM");
    p.scoped = vec![
        Scoped {
            namespaces: vec!["web".into()],
            labels: [("app".to_string(), "front".to_string())].into(),
            policies: rule("ROUND_ROBIN"),
        },
        Scoped {
            namespaces: vec!["web".into(), "batch".into()],
            labels: BTreeMap::new(),
            policies: rule("LEAST_REQUEST"),
        },
    ];
    let labels =
        |app: &str| -> BTreeMap<String, String> { [("app".to_string(), app.to_string())].into() };
    let lb = |ns: &str, app: &str| p.get_for(ns, &labels(app), 80, None).load_balancer.clone();
    assert_eq!(
        lb("web", "front"),
        LoadBalancer::RoundRobin,
        "the first that takes it"
    );
    assert_eq!(lb("web", "other"), LoadBalancer::LeastRequest);
    assert_eq!(lb("batch", "front"), LoadBalancer::LeastRequest);
    assert_eq!(
        lb("elsewhere", "front"),
        LoadBalancer::Random,
        "no scoped rule: the rest"
    );
    assert_eq!(p.get(80, None).load_balancer, LoadBalancer::Random);
}
