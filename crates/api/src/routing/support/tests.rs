use std::path::Path;

use super::*;

fn notices(yaml: &str) -> Vec<String> {
    let (resources, diagnostics) = crate::load::parse_str(Path::new("t.yaml"), yaml);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    resources
        .iter()
        .flat_map(|r| unsupported(&r.value))
        .map(|n| format!("{}: {}", n.path, n.reason))
        .collect()
}

#[test]
fn gateway_api_parts_the_model_leaves_out() {
    let got = notices(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{group: \"\", kind: Service, name: echo}]
  hostnames: [echo.example.com]
  rules:
  - matches:
    - path: {type: RegularExpression, value: '/(unclosed'}
      headers: [{type: RegularExpression, name: x, value: '[a-z]+'}]
    filters:
    - type: CORS
      cors: {allowOrigins: ['*']}
    backendRefs:
    - {group: example.com, kind: Bucket, name: b, port: 80}
    - name: echo
      port: 80
      filters:
      - {type: URLRewrite, urlRewrite: {hostname: x.example}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ingress}
spec:
  parentRefs: [{name: gw}]
  hostnames: [echo.example.com]
  rules:
  - backendRefs: [{name: echo, port: 80}]
",
    );
    assert_eq!(
        got,
        [
            "spec.hostnames: hostnames on a route attached to a Service: not matched: the route \
             applies to every request to the Service",
            "spec.rules[0].matches[0].path.value: invalid regular expression \"/(unclosed\": \
             unclosed group: this match never matches",
            "spec.rules[0].filters[0]: the CORS filter: not supported by the mesh, ignored",
            "spec.rules[0].backendRefs[0]: backendRef to example.com/Bucket: not supported by \
             the mesh: requests sent to it are answered 500",
            "spec.rules[0].backendRefs[1].filters[0]: the URLRewrite filter on a backendRef: not \
             supported by the mesh, ignored",
        ]
    );
}

#[test]
fn grpc_and_tcp_routes() {
    let got = notices(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{group: \"\", kind: Service, name: echo}]
  rules:
  - matches: [{method: {type: RegularExpression, service: 'pkg(', method: Echo}}]
    backendRefs: [{name: echo, port: 7070}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t}
spec:
  parentRefs: [{group: \"\", kind: Service, name: db}]
  rules:
  - backendRefs: [{name: db, port: 5432}]
  - backendRefs: [{name: db-2, port: 5432}]
",
    );
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("spec.rules[0].matches[0].method: invalid regular expression"));
    assert!(got[0].ends_with("this match never matches"));
    assert_eq!(
        got[1],
        "spec.rules[1]: a second TCPRoute rule: never used: TCP has nothing to match on, so the \
         first rule takes every connection"
    );
}

#[test]
fn virtual_service_parts_the_model_leaves_out() {
    let got = notices(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v}
spec:
  hosts: [echo]
  gateways: [mesh, ingress]
  exportTo: [.]
  http:
  - match: [{uri: {prefix: /}, statPrefix: echo}]
    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}
    retries: {attempts: 1, retryRemoteLocalities: true}
    route: [{destination: {host: echo}}]
  tcp:
  - match: [{sourceSubnet: 10.0.0.0/8}]
    route: [{destination: {host: echo}}]
",
    );
    assert_eq!(
        got,
        [
            "spec.gateways[1]: gateway \"ingress\": not supported by the mesh, ignored",
            "spec.http[0].corsPolicy: CORS: not supported by the mesh, ignored",
            "spec.http[0].retries.retryRemoteLocalities: retrying in other localities: not \
             supported by the mesh, ignored",
            "spec.http[0].match[0].statPrefix: a statistics prefix: not supported by the mesh, \
             ignored",
            "spec.tcp[0].match[0].sourceSubnet: sourceSubnet in a TCP match: not supported by \
             the mesh: this match never matches",
        ]
    );
}
