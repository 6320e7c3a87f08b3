//! The Gateway API mesh conformance tests (README §4), one test each, as in-memory
//! expectations of the route model: what each upstream test sends, and which backend,
//! headers, path, status or `Location` it expects. Each test compiles the base manifests
//! plus that test's YAML alone, as the upstream runner applies one test's routes at a time.
//! "Backend" is the Service the rule forwards to; which of its pods answers is balancing,
//! not routing.

use super::*;

const MESH: &str = "gateway-conformance-mesh";
const CONSUMER: &str = "gateway-conformance-mesh-consumer";

/// The base manifests and one test's YAML.
fn mesh(file: &str) -> Mesh {
    let dir = conformance("gateway-api/mesh");
    let mesh = Mesh::compile(&[dir.join("manifests.yaml"), dir.join(file)]);
    assert!(
        mesh.routes.warnings.is_empty(),
        "{file}: {:#?}",
        mesh.routes.warnings
    );
    mesh
}

/// `GET http://echo<path>` from the echo-v1 pod of the mesh namespace.
fn get(path: &'static str) -> Request {
    Request::get(MESH, "echo", 80, path)
}

fn backend(mesh: &Mesh, req: &Request) -> String {
    mesh.forward(req).service
}

fn status(mesh: &Mesh, req: &Request) -> u16 {
    match mesh.send_with(req, 0) {
        Outcome::NotFound => 404,
        Outcome::Forwarded(_) | Outcome::Unrouted { .. } => 200,
        Outcome::Redirected { status, .. } | Outcome::Responded { status } => status,
    }
}

fn redirect(mesh: &Mesh, path: &'static str) -> (u16, String) {
    match mesh.send_with(&get(path), 0) {
        Outcome::Redirected { status, location } => (status, location),
        other => panic!("{path}: expected a redirect, got {other:?}"),
    }
}

#[test]
fn mesh_basic() {
    // 4.1: no routes, plain Service balancing.
    let dir = conformance("gateway-api/mesh");
    let mesh = Mesh::compile(&[dir.join("manifests.yaml")]);
    assert!(mesh.routes.tables.is_empty());
    assert!(matches!(
        mesh.send_with(&get("/"), 0),
        Outcome::Unrouted { service } if service == "echo"
    ));
}

#[test]
fn mesh_frontend() {
    // 4.2: a route on echo-v2 (every port) applies to traffic addressed to the Service.
    let mesh = mesh("mesh-frontend.yaml");
    let f = mesh.forward(&Request::get(MESH, "echo-v2", 80, "/"));
    assert_eq!((f.service.as_str(), f.port), ("echo-v2", Some(80)));
    assert_eq!(
        joined(&f.response_headers, "x-header-set").as_deref(),
        Some("set")
    );
    // Traffic to a pod's IP is not addressed to a Service, so no Service's table is looked
    // at (the proxy sends it straight to that endpoint): the only table is echo-v2's.
    let hosts: Vec<&String> = mesh.routes.tables.keys().collect();
    assert_eq!(
        hosts,
        ["echo-v2.gateway-conformance-mesh.svc.cluster.local"]
    );
}

#[test]
fn mesh_frontend_hostname() {
    // 4.3: the route is chosen by the Service dialled, whatever the Host header says.
    let mesh = mesh("mesh-frontend.yaml");
    let f = mesh.forward(&Request::get(MESH, "echo-v2", 80, "/").authority("echo-v1"));
    assert_eq!(f.service, "echo-v2");
    // The Host header travels unchanged.
    assert_eq!(f.authority, "echo-v1");
    assert_eq!(
        joined(&f.response_headers, "x-header-set").as_deref(),
        Some("set")
    );
    let to_v1 = Request::get(MESH, "echo-v1", 80, "/").authority("echo-v2");
    assert!(matches!(
        mesh.send_with(&to_v1, 0),
        Outcome::Unrouted { service } if service == "echo-v1"
    ));
}

#[test]
fn mesh_ports() {
    // 4.4: parentRef.port limits a route to that port; without one it covers every port.
    let mesh = mesh("mesh-ports.yaml");
    let f = mesh.forward(&Request::get(MESH, "echo-v1", 80, "/"));
    assert_eq!(f.service, "echo-v1");
    assert_eq!(
        joined(&f.response_headers, "x-header-set").as_deref(),
        Some("v1")
    );
    assert!(matches!(
        mesh.send_with(&Request::get(MESH, "echo-v1", 8080, "/"), 0),
        Outcome::Unrouted { service } if service == "echo-v1"
    ));
    for port in [80, 8080] {
        let f = mesh.forward(&Request::get(MESH, "echo-v2", port, "/"));
        assert_eq!(f.service, "echo-v2");
        assert_eq!(
            joined(&f.response_headers, "x-header-set").as_deref(),
            Some("v2")
        );
    }
}

#[test]
fn mesh_traffic_split() {
    // 4.5: exact paths, to other Services than the parent; anything else is a 404.
    let mesh = mesh("mesh-split.yaml");
    assert_eq!(backend(&mesh, &get("/v1")), "echo-v1");
    assert_eq!(backend(&mesh, &get("/v2")), "echo-v2");
    for other in ["/", "/v1/", "/v3"] {
        assert_eq!(status(&mesh, &get(other)), 404, "{other}");
    }
}

#[test]
fn mesh_consumer_route() {
    // 4.6: a route in the consumer namespace applies to clients there only.
    let mesh = mesh("mesh-consumer-route.yaml");
    let from_consumer = Request::get(CONSUMER, "echo-v1.gateway-conformance-mesh", 80, "/");
    let f = mesh.forward(&from_consumer);
    assert_eq!((f.service.as_str(), f.port), ("echo-v1", Some(80)));
    assert_eq!(
        joined(&f.response_headers, "x-header-set").as_deref(),
        Some("set")
    );
    let from_mesh = Request::get(MESH, "echo-v1.gateway-conformance-mesh", 80, "/");
    assert!(matches!(
        mesh.send_with(&from_mesh, 0),
        Outcome::Unrouted { service } if service == "echo-v1"
    ));
}

#[test]
fn mesh_httproute_simple_same_namespace() {
    // 4.7: everything to echo-v1 through its other port.
    let mesh = mesh("httproute-simple-same-namespace.yaml");
    let f = mesh.forward(&get("/"));
    assert_eq!((f.service.as_str(), f.port), ("echo-v1", Some(8080)));
}

#[test]
fn mesh_httproute_matching() {
    // 4.8: whole-segment prefixes, header names without case, OR-ed matches, precedence.
    let mesh = mesh("httproute-matching.yaml");
    let cases = [
        ("/", None, "echo-v1"),
        ("/example", None, "echo-v1"),
        ("/", Some("one"), "echo-v1"),
        ("/v2", None, "echo-v2"),
        ("/v2/example", None, "echo-v2"),
        ("/", Some("two"), "echo-v2"),
        ("/v2/", None, "echo-v2"),
        ("/v2example", None, "echo-v1"),
        ("/foo/v2/example", None, "echo-v1"),
    ];
    for (path, version, want) in cases {
        let mut req = get(path);
        if let Some(v) = version {
            req = req.header("Version", v);
        }
        assert_eq!(backend(&mesh, &req), want, "{path} version {version:?}");
    }
}

#[test]
fn mesh_httproute_named_rule() {
    // 4.9: a rule name changes nothing but the rule's name.
    let mesh = mesh("httproute-named-rule.yaml");
    let named = mesh.forward(&get("/named"));
    assert_eq!(named.service, "echo-v1");
    assert_eq!(
        named.rule,
        "gateway-conformance-mesh/mesh-http-named-rules/named-rule"
    );
    assert_eq!(named.path_and_query, "/named");
    let unnamed = mesh.forward(&get("/unnamed"));
    assert_eq!(unnamed.service, "echo-v2");
    assert_eq!(
        unnamed.rule,
        "gateway-conformance-mesh/mesh-http-named-rules/1"
    );
    assert_eq!(unnamed.path_and_query, "/unnamed");
}

#[test]
fn mesh_httproute_query_param_matching() {
    // 4.10
    let mesh = mesh("httproute-query-param-matching.yaml");
    let cases = [
        ("/?animal=whale", None, Some("echo-v1")),
        ("/?animal=dolphin", None, Some("echo-v2")),
        (
            "/?animal=whale&otherparam=irrelevant",
            None,
            Some("echo-v1"),
        ),
        ("/?animal=dolphin&color=yellow", None, Some("echo-v2")),
        ("/?color=blue", None, None),
        ("/?animal=dog", None, None),
        ("/?animal=whaledolphin", None, None),
        ("/", None, None),
        ("/path1?animal=whale", None, Some("echo-v1")),
        ("/?animal=whale", Some("one"), Some("echo-v2")),
        ("/path3?animal=shark", None, Some("echo-v1")),
        ("/path4?animal=kraken", Some("three"), Some("echo-v1")),
        ("/?animal=shark", None, None),
        ("/path4?animal=kraken", None, None),
        ("/path5?animal=hydra", None, Some("echo-v1")),
    ];
    for (i, (path, version, want)) in cases.into_iter().enumerate() {
        let mut req = get(path);
        if let Some(v) = version {
            req = req.header("version", v);
        }
        match want {
            Some(service) => assert_eq!(backend(&mesh, &req), service, "case {}", i + 1),
            None => assert_eq!(status(&mesh, &req), 404, "case {}", i + 1),
        }
    }
}

#[test]
fn mesh_httproute_303_redirect() {
    // 4.11
    let mesh = mesh("httproute-303-redirect.yaml");
    assert_eq!(
        redirect(&mesh, "/redirect"),
        (303, "http://echo/redirect".into())
    );
}

#[test]
fn mesh_httproute_307_redirect() {
    // 4.12
    let mesh = mesh("httproute-307-redirect.yaml");
    assert_eq!(
        redirect(&mesh, "/temporary"),
        (307, "http://echo/temporary".into())
    );
}

#[test]
fn mesh_httproute_308_redirect() {
    // 4.13
    let mesh = mesh("httproute-308-redirect.yaml");
    assert_eq!(
        redirect(&mesh, "/permanent"),
        (308, "http://echo/permanent".into())
    );
}

#[test]
fn mesh_httproute_redirect_host_and_status() {
    // 4.14
    let mesh = mesh("httproute-redirect-host-and-status.yaml");
    assert_eq!(
        redirect(&mesh, "/hostname-redirect"),
        (302, "http://example.org/hostname-redirect".into())
    );
    assert_eq!(
        redirect(&mesh, "/host-and-status"),
        (301, "http://example.org/host-and-status".into())
    );
}

#[test]
fn mesh_httproute_redirect_path() {
    // 4.15: `/full` must not take `/full-path-and-host` (whole segments).
    let mesh = mesh("httproute-redirect-path.yaml");
    let cases = [
        (
            "/original-prefix/lemon",
            302,
            "http://echo/replacement-prefix/lemon",
        ),
        (
            "/full/path/original",
            302,
            "http://echo/full-path-replacement",
        ),
        (
            "/path-and-host",
            302,
            "http://example.org/replacement-prefix",
        ),
        ("/path-and-status", 301, "http://echo/replacement-prefix"),
        (
            "/full-path-and-host",
            302,
            "http://example.org/replacement-full",
        ),
        ("/full-path-and-status", 301, "http://echo/replacement-full"),
    ];
    for (path, status, location) in cases {
        assert_eq!(
            redirect(&mesh, path),
            (status, location.to_owned()),
            "{path}"
        );
    }
}

#[test]
fn mesh_httproute_redirect_port() {
    // 4.16
    let mesh = mesh("httproute-redirect-port.yaml");
    let cases = [
        ("/port", 302, "http://echo:8083/port"),
        (
            "/port-and-host",
            302,
            "http://example.org:8083/port-and-host",
        ),
        ("/port-and-status", 301, "http://echo:8083/port-and-status"),
        (
            "/port-and-host-and-status",
            302,
            "http://example.org:8083/port-and-host-and-status",
        ),
    ];
    for (path, status, location) in cases {
        assert_eq!(
            redirect(&mesh, path),
            (status, location.to_owned()),
            "{path}"
        );
    }
}

#[test]
fn mesh_httproute_scheme_redirect() {
    // 4.17: https without a port: 443, left out.
    let mesh = mesh("httproute-redirect-scheme.yaml");
    let cases = [
        ("/scheme", 302, "https://echo/scheme"),
        (
            "/scheme-and-host",
            302,
            "https://example.org/scheme-and-host",
        ),
        ("/scheme-and-status", 301, "https://echo/scheme-and-status"),
        (
            "/scheme-and-host-and-status",
            302,
            "https://example.org/scheme-and-host-and-status",
        ),
    ];
    for (path, status, location) in cases {
        assert_eq!(
            redirect(&mesh, path),
            (status, location.to_owned()),
            "{path}"
        );
    }
}

/// The headers of cases 5 and 6 of 4.18.
fn with_modifier_headers(req: Request) -> Request {
    req.header("X-Header-Remove", "remove-val")
        .header("X-Header-Add-Append", "append-val-1")
        .header("X-Header-Set", "set-val")
}

#[test]
fn mesh_httproute_rewrite_path() {
    // 4.18
    let mesh = mesh("httproute-rewrite-path.yaml");
    let cases = [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two", "/one"),
    ];
    for (path, want) in cases {
        let f = mesh.forward(&get(path));
        assert_eq!(
            (f.service.as_str(), f.path_and_query.as_str()),
            ("echo-v1", want),
            "{path}"
        );
    }
    let cases = [
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ];
    for (path, want) in cases {
        let f = mesh.forward(&with_modifier_headers(get(path)));
        assert_eq!(f.path_and_query, want, "{path}");
        let h = |n| joined(&f.headers, n);
        assert_eq!(h("x-header-add").as_deref(), Some("header-val-1"));
        assert_eq!(
            h("x-header-add-append").as_deref(),
            Some("append-val-1,header-val-2")
        );
        assert_eq!(h("x-header-set").as_deref(), Some("set-overwrites-values"));
        assert_eq!(h("x-header-remove"), None);
    }
}

/// The cases of 4.19, which 4.20 repeats with the modifiers on the backendRefs.
fn request_header_modifier_cases(mesh: &Mesh) {
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case; 7] = [
        (
            "/set",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/set",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "some-other-value"),
            ],
            &[
                ("some-other-header", "val"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/add",
            &[("Some-Other-Header", "val")],
            &[
                ("some-other-header", "val"),
                ("x-header-add", "add-appends-values"),
            ],
            &[],
        ),
        (
            "/add",
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value"),
            ],
            &[
                ("some-other-header", "val"),
                ("x-header-add", "some-other-value,add-appends-values"),
            ],
            &[],
        ),
        (
            "/remove",
            &[("X-Header-Remove", "val")],
            &[],
            &["x-header-remove"],
        ),
        (
            "/multiple",
            &[
                ("X-Header-Set-2", "set-val-2"),
                ("X-Header-Add-2", "add-val-2"),
                ("X-Header-Remove-2", "remove-val-2"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-val-2,header-add-2"),
                ("x-header-add-3", "header-add-3"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove-1", "x-header-remove-2"],
        ),
        (
            "/case-insensitivity",
            &[
                ("x-header-set", "original-val-set"),
                ("x-header-add", "original-val-add"),
                ("x-header-remove", "original-val-remove"),
                ("Another-Header", "another-header-val"),
            ],
            &[
                ("x-header-set", "header-set"),
                ("x-header-add", "original-val-add,header-add"),
                ("another-header", "another-header-val"),
            ],
            &["x-header-remove"],
        ),
    ];
    for (i, (path, sent, seen, absent)) in cases.into_iter().enumerate() {
        let mut req = get(path);
        for (name, value) in sent {
            req = req.header(name, value);
        }
        let f = mesh.forward(&req);
        assert_eq!(f.service, "echo-v1", "case {}", i + 1);
        for (name, value) in seen {
            assert_eq!(
                joined(&f.headers, name).as_deref(),
                Some(*value),
                "case {}: {name}",
                i + 1
            );
        }
        for name in absent {
            assert_eq!(joined(&f.headers, name), None, "case {}: {name}", i + 1);
        }
    }
}

#[test]
fn mesh_httproute_request_header_modifier() {
    // 4.19
    request_header_modifier_cases(&mesh("httproute-request-header-modifier.yaml"));
}

#[test]
fn mesh_httproute_backend_request_header_modifier() {
    // 4.20
    let mesh = mesh("httproute-request-header-modifier-backend.yaml");
    request_header_modifier_cases(&mesh);
    // The changes belong to the backend, not the rule.
    let f = mesh.forward(&get("/set"));
    assert!(f.filters.request_headers.is_empty());
}

#[test]
fn mesh_httproute_weight() {
    // 4.21: 70/30 per request; a round passes with echo-v1 in [325, 374] of 500.
    let mesh = mesh("httproute-weight.yaml");
    let shares = mesh.shares(&get("/"), 500);
    assert_eq!(shares.len(), 2, "{shares:?}");
    assert!((325..=374).contains(&shares["echo-v1"]), "{shares:?}");
    // Exactly the weights over every residue.
    let exact = (0..100)
        .filter(|r| backend_for(&mesh, &get("/"), *r) == "echo-v1")
        .count();
    assert_eq!(exact, 70);
}

fn backend_for(mesh: &Mesh, req: &Request, random: u64) -> String {
    match mesh.send_with(req, random) {
        Outcome::Forwarded(f) => f.service,
        other => format!("{other:?}"),
    }
}

/// A unary call to `proto.EchoTestService/Echo` on `echo:7070` from the echo-v1 pod.
fn grpc() -> Request {
    let mut call = Request::get(MESH, "echo", 7070, "/proto.EchoTestService/Echo")
        .authority("echo:7070")
        .header("content-type", "application/grpc");
    call.method = "POST";
    call
}

#[test]
fn mesh_grpcroute_weight() {
    // 4.22: the weight-0 reference to a missing Service is never picked.
    let mesh = mesh("grpcroute-weight.yaml");
    let call = grpc();
    let shares = mesh.shares(&call, 500);
    assert_eq!(shares.len(), 2, "{shares:?}");
    assert!((325..=374).contains(&shares["echo-v1"]), "{shares:?}");
    let f = mesh.forward(&call);
    assert_eq!(f.port, Some(7070));
}

#[test]
fn mesh_grpcroute_request_header_modifier() {
    // 4.23
    let mesh = mesh("grpcroute-request-header-modifier.yaml");
    let send = |metadata: &[(&str, &str)]| {
        let mut call = grpc();
        for (name, value) in metadata {
            call = call.header(name, value);
        }
        mesh.forward(&call)
    };
    let f = send(&[
        ("x-test-case", "set"),
        ("some-other-header", "this-header-should-be-set"),
        ("x-header-set", "this-value-should-be-overwritten"),
    ]);
    assert_eq!(f.service, "echo-v1");
    assert_eq!(joined(&f.headers, "x-test-case").as_deref(), Some("set"));
    assert_eq!(
        joined(&f.headers, "some-other-header").as_deref(),
        Some("this-header-should-be-set")
    );
    assert_eq!(
        joined(&f.headers, "x-header-set").as_deref(),
        Some("set-overwrites-values")
    );

    let f = send(&[
        ("x-test-case", "add"),
        ("x-header-add", "this-value-should-be-appended"),
    ]);
    assert_eq!(f.service, "echo-v1");
    assert_eq!(
        joined(&f.headers, "x-header-add").as_deref(),
        Some("this-value-should-be-appended,add-appends-values")
    );

    let f = send(&[
        ("x-test-case", "remove"),
        ("x-header-remove", "this-should-be-removed"),
    ]);
    assert_eq!(f.service, "echo-v1");
    assert_eq!(joined(&f.headers, "x-header-remove"), None);

    let f = send(&[
        ("x-test-case", "multi"),
        ("x-header-set-2", "set-header-2"),
        ("x-header-add-2", "add-header-2"),
        ("x-header-remove-2", "should-be-removed-2"),
    ]);
    assert_eq!(f.service, "echo-v2");
    let h = |n| joined(&f.headers, n);
    assert_eq!(h("x-header-set-1").as_deref(), Some("header-set-1"));
    assert_eq!(h("x-header-set-2").as_deref(), Some("header-set-2"));
    assert_eq!(h("x-header-add-1").as_deref(), Some("header-add-1"));
    assert_eq!(
        h("x-header-add-2").as_deref(),
        Some("add-header-2,header-add-2")
    );
    assert_eq!(h("x-header-remove-1"), None);
    assert_eq!(h("x-header-remove-2"), None);

    // A call no rule matches finds no route (for gRPC the Gateway API asks for status
    // UNIMPLEMENTED rather than a bare 404).
    assert!(matches!(mesh.send_with(&grpc(), 0), Outcome::NotFound));
}
