use std::path::Path;
use std::time::Duration;

use super::*;
use crate::routing::model::{
    Action, Backend, HttpRoutes, PathMatch, PathRewrite, RedirectPort, RetryOn, RetryPolicy,
};

/// Two Services: `echo` (ports 80 `http` and 7070 `grpc`) and `other` (port 80), in `ns`.
const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ns}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80}
  - {name: grpc, port: 7070}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: ns}
spec:
  selector: {app: other}
  ports:
  - {name: http, port: 80}
";

const ECHO: &str = "echo.ns.svc.cluster.local";

fn compiled(yaml: &str) -> MeshRoutes {
    let text = format!("{SERVICES}---\n{yaml}");
    let (resources, diagnostics) = crate::load::parse_str(Path::new("t.yaml"), &text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let routes = compile(&resources);
    // Whatever is compiled survives the wire.
    for table in routes.tables.values() {
        table.validate().expect("valid table");
        let json = serde_json::to_string(table).expect("json");
        let back: RouteTable = serde_json::from_str(&json).expect("decodes");
        assert_eq!(&back, table);
    }
    routes
}

fn http<'a>(routes: &'a MeshRoutes, host: &str, port: u16) -> &'a HttpRoutes {
    routes.tables[host]
        .port(port)
        .and_then(|p| p.http.as_ref())
        .unwrap_or_else(|| panic!("no HTTP routes on {host}:{port}"))
}

/// The match order as `rule-name/match-index` strings... by rule name only.
fn order(routes: &HttpRoutes) -> Vec<String> {
    routes
        .matches
        .iter()
        .map(|m| routes.rules[m.rule].name.to_string())
        .collect()
}

fn warnings(routes: &MeshRoutes) -> Vec<String> {
    routes
        .warnings
        .iter()
        .map(|w| {
            format!(
                "{} {}: {}",
                w.name.as_deref().unwrap_or(""),
                w.field.as_deref().unwrap_or(""),
                w.message
            )
        })
        .collect()
}

fn route(name: &str, parent: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: ns}}
spec:
  parentRefs: [{parent}]
  rules:
{rules}
"
    )
}

const TO_ECHO_80: &str = "{group: \"\", kind: Service, name: echo, port: 80}";

#[test]
fn gateway_api_ranks_matches_not_rules() {
    let yaml = route(
        "r",
        TO_ECHO_80,
        "  - name: catch-all
    matches:
    - path: {type: PathPrefix, value: /}
    - headers: [{name: version, value: one}]
    backendRefs: [{name: echo, port: 80}]
  - name: regex
    matches: [{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]
    backendRefs: [{name: echo, port: 80}]
  - name: long-prefix
    matches: [{path: {type: PathPrefix, value: /v2/api}}]
    backendRefs: [{name: echo, port: 80}]
  - name: exact
    matches: [{path: {type: Exact, value: /v2}}]
    backendRefs: [{name: echo, port: 80}]
  - name: method
    matches: [{path: {type: PathPrefix, value: /v2}, method: POST}]
    backendRefs: [{name: echo, port: 80}]
  - name: two-headers
    matches: [{path: {type: PathPrefix, value: /v2}, headers: [{name: a, value: '1'}, {name: b, value: '2'}]}]
    backendRefs: [{name: echo, port: 80}]
  - name: header-and-query
    matches: [{path: {type: PathPrefix, value: /v2}, headers: [{name: a, value: '1'}], queryParams: [{name: q, value: '1'}]}]
    backendRefs: [{name: echo, port: 80}]
  - name: header
    matches: [{path: {type: PathPrefix, value: /v2}, headers: [{name: a, value: '1'}]}]
    backendRefs: [{name: echo, port: 80}]
",
    );
    let routes = compiled(&yaml);
    assert_eq!(
        order(http(&routes, ECHO, 80)),
        [
            "ns/r/exact",
            "ns/r/long-prefix",
            "ns/r/method",
            "ns/r/two-headers",
            "ns/r/header-and-query",
            "ns/r/header",
            // The header match of the catch-all rule outranks its bare `/` match.
            "ns/r/catch-all",
            "ns/r/catch-all",
            "ns/r/regex",
        ]
    );
    let entries = &http(&routes, ECHO, 80).matches;
    assert_eq!(entries[6].conditions.headers.len(), 1);
    assert!(entries[7].conditions.headers.is_empty());
    // Prefixes are held without their trailing slash, as segment prefixes.
    assert_eq!(
        entries[1].conditions.path,
        Some(PathMatch::Segments {
            value: "/v2/api".into()
        })
    );
}

#[test]
fn ties_go_to_the_older_route_then_the_name_then_rule_order() {
    let rule =
        "  - backendRefs: [{name: echo, port: 80}]\n  - backendRefs: [{name: other, port: 80}]\n";
    // `b` is loaded before `a`: older wins over alphabetical.
    let yaml = format!(
        "{}---\n{}",
        route("b", TO_ECHO_80, rule),
        route("a", TO_ECHO_80, rule)
    );
    let routes = compiled(&yaml);
    assert_eq!(
        order(http(&routes, ECHO, 80)),
        ["ns/b/0", "ns/b/1", "ns/a/0", "ns/a/1"]
    );
}

#[test]
fn parent_port_and_section_name_choose_ports() {
    let rules = "  - backendRefs: [{name: echo, port: 80}]\n";
    let yaml = format!(
        "{}---\n{}---\n{}",
        route(
            "all-ports",
            "{group: \"\", kind: Service, name: other}",
            rules
        ),
        route("by-number", TO_ECHO_80, rules),
        route(
            "by-name",
            "{group: \"\", kind: Service, name: echo, sectionName: grpc}",
            rules
        ),
    );
    let routes = compiled(&yaml);
    let names = |host: &str, port| order(http(&routes, host, port));
    assert_eq!(names(ECHO, 80), ["ns/by-number/0"]);
    assert_eq!(names(ECHO, 7070), ["ns/by-name/0"]);
    assert_eq!(names("other.ns.svc.cluster.local", 80), ["ns/all-ports/0"]);
}

#[test]
fn unknown_parents_and_backends_are_warned_about() {
    let yaml = format!(
        "{}---\n{}",
        route(
            "lost",
            "{group: \"\", kind: Service, name: nowhere}",
            "  - backendRefs: [{name: echo, port: 80}]\n"
        ),
        route(
            "half",
            "{group: \"\", kind: Service, name: echo, port: 80}",
            "  - backendRefs: [{name: echo, port: 80, weight: 1}, {name: gone, port: 80, weight: 1}, {name: zero, port: 80, weight: 0}]\n"
        )
    );
    let routes = compiled(&yaml);
    assert_eq!(
        warnings(&routes),
        [
            "lost spec.parentRefs[0]: parentRef Service ns/nowhere does not exist (or lacks that \
             port): the route does not attach to it",
            "half spec.rules[0].backendRefs[1]: backendRef Service ns/gone port 80 does not \
             exist: requests sent to it are answered 500",
        ]
    );
    // The invalid backend keeps its share; the zero-weight one is left out.
    let Action::Forward(destinations) = &http(&routes, ECHO, 80).rules[0].action else {
        panic!("expected a forward");
    };
    assert_eq!(destinations.len(), 2);
    assert!(matches!(destinations[1].backend, Backend::Invalid { .. }));
}

#[test]
fn a_rule_without_backends_answers_500_and_redirects_default_to_302() {
    let yaml = route(
        "r",
        TO_ECHO_80,
        "  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: echo, port: 80, weight: 0}]
  - matches: [{path: {value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
",
    );
    let routes = compiled(&yaml);
    let rules = &http(&routes, ECHO, 80).rules;
    for rule in &rules[..2] {
        assert!(
            matches!(&rule.action, Action::Respond(r) if r.status == 500),
            "{rule:?}"
        );
        assert_eq!(rule.filters.retries, None);
    }
    let Action::Redirect(redirect) = &rules[2].action else {
        panic!("expected a redirect");
    };
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.port, RedirectPort::Listener);
    assert_eq!(redirect.host.as_deref(), Some("example.org"));
}

#[test]
fn grpc_methods_become_path_conditions_and_rank_first() {
    let yaml = format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: g, namespace: ns}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: echo, port: 7070}}]
  rules:
  - name: service
    matches: [{{method: {{service: proto.EchoTestService}}}}]
    backendRefs: [{{name: echo, port: 7070}}]
  - name: both
    matches: [{{method: {{service: proto.EchoTestService, method: Echo}}}}]
    backendRefs: [{{name: echo, port: 7070}}]
  - name: method
    matches: [{{method: {{method: Echo}}}}]
    backendRefs: [{{name: echo, port: 7070}}]
  - name: regex
    matches: [{{method: {{type: RegularExpression, service: 'proto\\..*'}}}}]
    backendRefs: [{{name: echo, port: 7070}}]
  - name: all
    backendRefs: [{{name: echo, port: 7070}}]
",
        route(
            "h",
            "{group: \"\", kind: Service, name: echo, port: 7070}",
            "  - backendRefs: [{name: echo, port: 7070}]\n"
        )
    );
    let routes = compiled(&yaml);
    let table = http(&routes, ECHO, 7070);
    assert_eq!(
        order(table),
        [
            "ns/g/both",
            "ns/g/service",
            "ns/g/regex",
            "ns/g/method",
            "ns/g/all",
            "ns/h/0"
        ]
    );
    let path = |i: usize| table.matches[i].conditions.path.clone();
    assert_eq!(
        path(0),
        Some(PathMatch::Exact {
            value: "/proto.EchoTestService/Echo".into(),
            ignore_case: false
        })
    );
    let hits = |i: usize, p: &str| path(i).is_some_and(|m| m.matches(p));
    assert!(hits(1, "/proto.EchoTestService/Other"));
    assert!(!hits(1, "/proto.EchoTestServiceX/Echo"));
    assert!(hits(2, "/proto.X/Y"));
    assert!(!hits(2, "/other.X/Y"));
    assert!(hits(3, "/any.Service/Echo"));
    assert!(!hits(3, "/any.Service/EchoX"));
    assert_eq!(path(4), None);
}

#[test]
fn consumer_routes_are_kept_apart() {
    let yaml = format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mine, namespace: client}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: echo, namespace: ns, port: 80}}]
  rules:
  - backendRefs: [{{name: other, namespace: ns, port: 80}}]
",
        route(
            "producer",
            TO_ECHO_80,
            "  - backendRefs: [{name: echo, port: 80}]\n"
        )
    );
    let routes = compiled(&yaml);
    let port = routes.tables[ECHO].port(80).unwrap();
    assert_eq!(order(port.http.as_ref().unwrap()), ["ns/producer/0"]);
    assert_eq!(port.consumers.len(), 1);
    assert_eq!(port.consumers[0].namespace, "client");
    assert_eq!(
        order(port.consumers[0].http.as_ref().unwrap()),
        ["client/mine/0"]
    );
    // `other` is neither in the route's namespace nor its parent: without a ReferenceGrant
    // in `ns` the backend is refused (500s), and the user is told.
    let backend = |routes: &MeshRoutes| {
        let consumer = &routes.tables[ECHO].port(80).unwrap().consumers[0];
        match &consumer.http.as_ref().unwrap().rules[0].action {
            Action::Forward(d) => d[0].backend.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(backend(&routes), Backend::Invalid { .. }));
    let w = warnings(&routes);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("no ReferenceGrant there allows HTTPRoutes from namespace client"),
        "{w:?}"
    );
    // A grant for another kind, namespace or Service does not do; the right one does.
    for (from_kind, from_ns, to_name, granted) in [
        ("GRPCRoute", "client", "other", false),
        ("HTTPRoute", "elsewhere", "other", false),
        ("HTTPRoute", "client", "echo", false),
        ("HTTPRoute", "client", "other", true),
    ] {
        let grant = format!(
            "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: g, namespace: ns}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, \
             kind: {from_kind}, namespace: {from_ns}}}]\n  to: [{{group: \"\", kind: Service, \
             name: {to_name}}}]\n"
        );
        let routes = compiled(&format!("{yaml}{grant}"));
        assert_eq!(
            matches!(backend(&routes), Backend::Service { .. }),
            granted,
            "{from_kind} from {from_ns} to {to_name}"
        );
    }
}

const VS: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: ns}
spec:
  hosts: [echo]
  http:
  - name: jason
    match:
    - headers: {end-user: {exact: jason}}
    - port: 7070
      sourceLabels: {app: tester}
    route:
    - destination: {host: echo, subset: v2}
  - name: not-for-sidecars
    match:
    - gateways: [ingress]
    route:
    - destination: {host: echo, subset: v3}
  - route:
    - destination: {host: echo, subset: v1}
      weight: 90
    - destination: {host: other, subset: v2}
      weight: 10
    - destination: {host: other.ns, subset: v3}
      weight: 0
";

#[test]
fn virtual_service_rules_keep_their_order_per_port() {
    let routes = compiled(VS);
    let on_80 = http(&routes, ECHO, 80);
    assert_eq!(order(on_80), ["ns/echo/jason", "ns/echo/2"]);
    // The second match of `jason` is only for port 7070.
    let on_7070 = http(&routes, ECHO, 7070);
    assert_eq!(
        order(on_7070),
        ["ns/echo/jason", "ns/echo/jason", "ns/echo/2"]
    );
    assert_eq!(on_7070.matches[1].conditions.source_labels["app"], "tester");
    let Action::Forward(split) = &on_80.rules[1].action else {
        panic!("expected a forward");
    };
    let weights: Vec<(u32, &Backend)> = split.iter().map(|d| (d.weight, &d.backend)).collect();
    assert_eq!(
        weights,
        [
            (
                90,
                &Backend::Service {
                    host: ECHO.into(),
                    subset: Some("v1".into()),
                    port: None
                }
            ),
            (
                10,
                &Backend::Service {
                    host: "other.ns.svc.cluster.local".into(),
                    subset: Some("v2".into()),
                    port: None
                }
            ),
        ]
    );
    // Istio's default retries, since the route does not say.
    assert_eq!(
        on_80.rules[1].filters.retries,
        Some(RetryPolicy::mesh_default())
    );
}

#[test]
fn gateway_api_routes_override_a_virtual_service_port_by_port() {
    let yaml = format!(
        "{VS}---\n{}",
        route(
            "gamma",
            TO_ECHO_80,
            "  - backendRefs: [{name: echo, port: 80}]\n"
        )
    );
    let routes = compiled(&yaml);
    assert_eq!(order(http(&routes, ECHO, 80)), ["ns/gamma/0"]);
    assert_eq!(
        order(http(&routes, ECHO, 7070)),
        ["ns/echo/jason", "ns/echo/jason", "ns/echo/2"]
    );
    assert_eq!(
        warnings(&routes),
        [
            "echo spec.hosts: http routes for echo.ns.svc.cluster.local are not used on ports \
          where a Gateway API route attaches to the Service: Gateway API routes take precedence"
        ]
    );
}

#[test]
fn one_virtual_service_per_host() {
    let second = VS
        .replace("name: echo, namespace: ns", "name: echo-2, namespace: ns")
        .replace("hosts: [echo]", "hosts: [echo.ns.svc.cluster.local, other]");
    let routes = compiled(&format!("{VS}---\n{second}"));
    assert_eq!(
        order(http(&routes, ECHO, 80)),
        ["ns/echo/jason", "ns/echo/2"]
    );
    // The second one still routes the host nobody else claimed.
    assert_eq!(
        order(http(&routes, "other.ns.svc.cluster.local", 80)),
        ["ns/echo-2/jason", "ns/echo-2/2"]
    );
    assert_eq!(
        warnings(&routes),
        [
            "echo-2 spec.hosts[0]: echo.ns.svc.cluster.local is already routed by VirtualService \
          ns/echo; only one VirtualService routes a host in the mesh, so this one is not used \
          for it"
        ]
    );
}

#[test]
fn virtual_services_bound_only_to_gateways_do_not_route_the_mesh() {
    let yaml = VS.replace("hosts: [echo]", "hosts: [echo]\n  gateways: [ingress]");
    assert!(compiled(&yaml).tables.is_empty());
    let yaml = VS.replace(
        "hosts: [echo]",
        "hosts: [echo]\n  gateways: [ingress, mesh]",
    );
    assert_eq!(compiled(&yaml).tables.len(), 1);
}

#[test]
fn istio_actions_and_filters() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: ns}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: example.org}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{uri: {prefix: /api}, ignoreUriCase: true}]
    rewrite: {uri: /v2/api, authority: api.internal}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: '5xx,retriable-4xx,409'}
    fault:
      delay: {fixedDelay: 7s, percent: 10}
      abort: {grpcStatus: UNAVAILABLE}
    mirror: {host: other}
    mirrorPercentage: {value: 25}
    headers:
      request: {set: {x-a: '1'}, add: {x-b: '2'}, remove: [x-c]}
    route:
    - destination: {host: echo}
      headers: {response: {set: {x-from: echo}}}
  - match: [{uri: {regex: '/r/.*'}}]
    retries: {attempts: 0}
    mirrors:
    - destination: {host: other, port: {number: 80}}
    rewrite: {uriRegexRewrite: {match: '^/r/(.*)$', rewrite: '/\\1'}}
    route:
    - destination: {host: echo}
";
    let routes = compiled(yaml);
    let rules = &http(&routes, ECHO, 80).rules;
    let Action::Redirect(redirect) = &rules[0].action else {
        panic!("expected a redirect");
    };
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.port, RedirectPort::Authority);
    assert_eq!(redirect.path, Some(PathRewrite::Full("/new".into())));
    let Action::Respond(response) = &rules[1].action else {
        panic!("expected a direct response");
    };
    assert_eq!(
        (response.status, response.body.as_deref()),
        (418, Some(&b"short and stout"[..]))
    );
    let f = &rules[2].filters;
    assert_eq!(f.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(f.per_try_timeout, Some(Duration::from_millis(500)));
    let retries = f.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, 3);
    assert_eq!(
        retries.retry_on,
        [
            RetryOn::FiveXx,
            RetryOn::Retriable4xx,
            RetryOn::RetriableStatusCodes
        ]
    );
    assert_eq!(retries.status_codes, [409]);
    let fault = f.fault.as_ref().unwrap();
    assert_eq!(
        fault.delay.as_ref().unwrap().duration,
        Duration::from_secs(7)
    );
    assert_eq!(fault.delay.as_ref().unwrap().percent, 10.0);
    let abort = fault.abort.as_ref().unwrap();
    assert_eq!(abort.status, crate::routing::AbortStatus::Grpc(14));
    assert_eq!(abort.percent, 100.0);
    let mirrors: Vec<(Option<u16>, f64)> = f.mirrors.iter().map(|m| (m.port, m.percent)).collect();
    assert_eq!(mirrors, [(None, 25.0)]);
    let mirrors: Vec<(Option<u16>, f64)> = rules[3]
        .filters
        .mirrors
        .iter()
        .map(|m| (m.port, m.percent))
        .collect();
    assert_eq!(mirrors, [(Some(80), 100.0)]);
    assert_eq!(f.request_headers.set[0].name.as_str(), "x-a");
    assert_eq!(f.request_headers.remove[0].as_str(), "x-c");
    let Action::Forward(to) = &rules[2].action else {
        panic!("expected a forward");
    };
    assert_eq!(to[0].response_headers.set[0].value.as_str(), "echo");
    let rewrite = f.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.authority.as_deref(), Some("api.internal"));
    let matched = &http(&routes, ECHO, 80).matches[2].conditions;
    assert_eq!(
        crate::routing::rewrite_path(
            "/API/x",
            matched.path.as_ref(),
            rewrite.path.as_ref().unwrap()
        ),
        "/v2/api/x"
    );
    // `attempts: 0` turns retries off; `\1` becomes the regex crate's group syntax.
    assert_eq!(rules[3].filters.retries, None);
    let rewrite = rules[3].filters.rewrite.as_ref().unwrap();
    assert_eq!(
        crate::routing::rewrite_path("/r/x/y", None, rewrite.path.as_ref().unwrap()),
        "/x/y"
    );
}

#[test]
fn tcp_routes_from_both_sources() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: ns}
spec:
  hosts: [echo]
  tls:
  - match: [{port: 7070, sniHosts: [A.example, \"*.b.example\"]}]
    route: [{destination: {host: other}}]
  tcp:
  - match: [{port: 7070, sourceNamespace: batch}]
    route: [{destination: {host: other}}]
  - match: [{destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: other}}]
  - route: [{destination: {host: echo, subset: v1}, weight: 60}, {destination: {host: echo, subset: v2}, weight: 40}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t, namespace: ns}
spec:
  parentRefs: [{group: \"\", kind: Service, name: other}]
  rules:
  - backendRefs: [{name: echo, port: 80}]
  - backendRefs: [{name: other, port: 80}]
";
    let routes = compiled(yaml);
    let tcp = |host: &str, port| {
        routes.tables[host]
            .port(port)
            .unwrap()
            .tcp
            .as_ref()
            .unwrap()
            .rules
            .clone()
    };
    let on_7070 = tcp(ECHO, 7070);
    assert_eq!(on_7070.len(), 3, "the subnet match never matches");
    // The TLS rule comes first, by server name (in lower case).
    assert_eq!(
        on_7070[0].matches[0].sni_hosts,
        ["a.example", "*.b.example"]
    );
    assert_eq!(on_7070[0].name.rule, "tls-0");
    assert_eq!(
        on_7070[1].matches[0].source_namespace.as_deref(),
        Some("batch")
    );
    assert!(on_7070[2].matches.is_empty());
    // The TLS rule is for port 7070 only.
    assert_eq!(tcp(ECHO, 80).len(), 1);
    let other = tcp("other.ns.svc.cluster.local", 80);
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].name.to_string(), "ns/t/0");
}

#[test]
fn wildcard_hosts_route_services_no_virtual_service_names() {
    let vs = |name: &str, host: &str, to: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, \
             namespace: ns}}\nspec:\n  hosts: [\"{host}\"]\n  http:\n  - route: [{{destination: \
             {{host: {to}}}}}]\n---\n"
        )
    };
    let to = |routes: &MeshRoutes, host: &str| match &http(routes, host, 80).rules[0].action {
        Action::Forward(d) => match &d[0].backend {
            Backend::Service { host, .. } => host.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    // `*.ns.svc.cluster.local` covers both Services; `echo`'s own VirtualService wins there.
    let routes = compiled(&format!(
        "{}{}",
        vs("all", "*.ns.svc.cluster.local", "other"),
        vs("echo", "echo", "echo")
    ));
    assert_eq!(to(&routes, ECHO), ECHO);
    assert_eq!(
        to(&routes, "other.ns.svc.cluster.local"),
        "other.ns.svc.cluster.local"
    );
    assert_eq!(
        http(&routes, "other.ns.svc.cluster.local", 80).rules[0]
            .name
            .name,
        "all"
    );
    // The longer suffix wins over `*`, whatever the order; a suffix that is not a whole
    // label does not match.
    let routes = compiled(&format!(
        "{}{}{}",
        vs("any", "*", "echo"),
        vs("svc", "*.svc.cluster.local", "other"),
        vs("far", "*.elsewhere.svc.cluster.local", "echo"),
    ));
    let name = |host: &str| http(&routes, host, 80).rules[0].name.name.clone();
    assert_eq!(name(ECHO), "svc");
    assert_eq!(name("other.ns.svc.cluster.local"), "svc");
    let routes = compiled(&vs("any", "*", "echo"));
    assert_eq!(
        http(&routes, "other.ns.svc.cluster.local", 80).rules[0]
            .name
            .name,
        "any"
    );
}

#[test]
fn a_virtual_service_exported_to_some_namespaces_routes_only_their_clients() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: ns}
spec:
  hosts: [echo]
  exportTo: [\".\", batch]
  http:
  - route: [{destination: {host: other}}]
";
    let routes = compiled(yaml);
    let port = routes.tables[ECHO].port(80).expect("routes on port 80");
    // Nobody else: no routes for other clients, the Service as addressed.
    assert!(port.http.is_none());
    let namespaces: Vec<&str> = port
        .consumers
        .iter()
        .map(|c| c.namespace.as_str())
        .collect();
    assert_eq!(namespaces, ["batch", "ns"]);
    for c in &port.consumers {
        let http = c.http.as_ref().expect("the VirtualService's rules");
        assert_eq!(http.rules[0].name.name, "echo");
    }
    assert_eq!(port.http_for("ns").map(|h| h.rules.len()), Some(1));
    assert!(port.http_for("web").is_none());
    // Exported everywhere: the port's own routes, as before.
    let routes = compiled(&yaml.replace("[\".\", batch]", "[\"*\"]"));
    let port = routes.tables[ECHO].port(80).expect("routes on port 80");
    assert!(port.http.is_some() && port.consumers.is_empty());
}

#[test]
fn virtual_services_for_one_host_exported_to_different_namespaces_each_route_theirs() {
    let vs = |name: &str, export: &str, to: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, \
             namespace: ns}}\nspec:\n  hosts: [echo]\n  exportTo: [{export}]\n  http:\n  - route: \
             [{{destination: {{host: {to}}}}}]\n---\n"
        )
    };
    let routes = compiled(&format!(
        "{}{}{}{}",
        vs("for-a", "a", "other"),
        vs("for-b", "b, a", "echo"),
        vs("everyone", "\"*\"", "other"),
        vs("again-a", "a", "echo"),
    ));
    let port = routes.tables[ECHO].port(80).expect("routes");
    let name = |ns: &str| port.http_for(ns).map(|h| h.rules[0].name.name.clone());
    // The first that lists a namespace routes its clients; the one exported everywhere
    // routes the rest.
    assert_eq!(name("a").as_deref(), Some("for-a"));
    assert_eq!(name("b").as_deref(), Some("for-b"));
    assert_eq!(name("web").as_deref(), Some("everyone"));
    // `again-a` has nothing left to route: reported, like a second VirtualService for a host.
    let w = warnings(&routes);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("again-a spec.hosts[0]:"), "{w:?}");
}
