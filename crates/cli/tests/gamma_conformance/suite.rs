//! The 23 upstream mesh tests (the conformance README's §4), in its order, each with the
//! requests it sends, from the workload it names, and what it expects back. A test is one
//! function; it runs its cases one after another, each through the retry loop, and fails
//! with the first case that does not pass.

use std::net::Ipv4Addr;

use super::client::{Client, GrpcCall, HttpRequest};
use super::expect::{check, eventually, weighted, Expect, ROUND};
use super::manifests::Workload;

pub const MESH: &str = "gateway-conformance-mesh";
pub const CONSUMER: &str = "gateway-conformance-mesh-consumer";

/// What the tests need of the running mesh: the clients they send from and the address of
/// the echo-v2 workload (MeshFrontend dials it directly).
pub struct Ctx {
    /// The echo-v1 workload of the mesh namespace: the default client.
    pub v1: Client,
    /// The echo-v2 workload (MeshGRPCRouteRequestHeaderModifier sends from it).
    pub v2: Client,
    /// The echo-v1 workload of the consumer namespace.
    pub consumer: Client,
    pub v2_address: Ipv4Addr,
}

impl Ctx {
    /// Finds the workloads of the base manifests the tests send from; `client` gives the
    /// client of a workload by name.
    pub fn new(workloads: &[Workload], client: impl Fn(&str) -> Client) -> Result<Ctx, String> {
        let find = |ns: &str, deployment: &str| {
            workloads
                .iter()
                .find(|w| w.namespace == ns && w.deployment == deployment)
                .ok_or_else(|| format!("no {deployment} in {ns} in the base manifests"))
        };
        let v2 = find(MESH, "echo-v2")?;
        Ok(Ctx {
            v1: client(&find(MESH, "echo-v1")?.name),
            v2: client(&v2.name),
            consumer: client(&find(CONSUMER, "echo-v1")?.name),
            v2_address: v2.address,
        })
    }
}

/// One upstream test: its short name, its YAML (none for MeshBasic) and its cases.
pub struct Test {
    pub name: &'static str,
    pub yaml: Option<&'static str>,
    pub run: fn(&Ctx) -> Result<(), String>,
}

pub const TESTS: [Test; 23] = [
    Test {
        name: "MeshBasic",
        yaml: None,
        run: mesh_basic,
    },
    Test {
        name: "MeshFrontend",
        yaml: Some("mesh-frontend.yaml"),
        run: mesh_frontend,
    },
    Test {
        name: "MeshFrontendHostname",
        yaml: Some("mesh-frontend.yaml"),
        run: mesh_frontend_hostname,
    },
    Test {
        name: "MeshPorts",
        yaml: Some("mesh-ports.yaml"),
        run: mesh_ports,
    },
    Test {
        name: "MeshTrafficSplit",
        yaml: Some("mesh-split.yaml"),
        run: mesh_traffic_split,
    },
    Test {
        name: "MeshConsumerRoute",
        yaml: Some("mesh-consumer-route.yaml"),
        run: mesh_consumer_route,
    },
    Test {
        name: "MeshHTTPRouteSimpleSameNamespace",
        yaml: Some("httproute-simple-same-namespace.yaml"),
        run: simple_same_namespace,
    },
    Test {
        name: "MeshHTTPRouteMatching",
        yaml: Some("httproute-matching.yaml"),
        run: matching,
    },
    Test {
        name: "MeshHTTPRouteNamedRule",
        yaml: Some("httproute-named-rule.yaml"),
        run: named_rule,
    },
    Test {
        name: "MeshHTTPRouteQueryParamMatching",
        yaml: Some("httproute-query-param-matching.yaml"),
        run: query_param_matching,
    },
    Test {
        name: "MeshHTTPRoute303Redirect",
        yaml: Some("httproute-303-redirect.yaml"),
        run: redirect_303,
    },
    Test {
        name: "MeshHTTPRoute307Redirect",
        yaml: Some("httproute-307-redirect.yaml"),
        run: redirect_307,
    },
    Test {
        name: "MeshHTTPRoute308Redirect",
        yaml: Some("httproute-308-redirect.yaml"),
        run: redirect_308,
    },
    Test {
        name: "MeshHTTPRouteRedirectHostAndStatus",
        yaml: Some("httproute-redirect-host-and-status.yaml"),
        run: redirect_host_and_status,
    },
    Test {
        name: "MeshHTTPRouteRedirectPath",
        yaml: Some("httproute-redirect-path.yaml"),
        run: redirect_path,
    },
    Test {
        name: "MeshHTTPRouteRedirectPort",
        yaml: Some("httproute-redirect-port.yaml"),
        run: redirect_port,
    },
    Test {
        name: "MeshHTTPRouteSchemeRedirect",
        yaml: Some("httproute-redirect-scheme.yaml"),
        run: redirect_scheme,
    },
    Test {
        name: "MeshHTTPRouteRewritePath",
        yaml: Some("httproute-rewrite-path.yaml"),
        run: rewrite_path,
    },
    Test {
        name: "MeshHTTPRouteRequestHeaderModifier",
        yaml: Some("httproute-request-header-modifier.yaml"),
        run: request_header_modifier,
    },
    Test {
        name: "MeshHTTPRouteBackendRequestHeaderModifier",
        yaml: Some("httproute-request-header-modifier-backend.yaml"),
        run: request_header_modifier,
    },
    Test {
        name: "MeshHTTPRouteWeight",
        yaml: Some("httproute-weight.yaml"),
        run: http_weight,
    },
    Test {
        name: "MeshGRPCRouteWeight",
        yaml: Some("grpcroute-weight.yaml"),
        run: grpc_weight,
    },
    Test {
        name: "MeshGRPCRouteRequestHeaderModifier",
        yaml: Some("grpcroute-request-header-modifier.yaml"),
        run: grpc_request_header_modifier,
    },
];

// === building requests and expectations ===

/// `GET http://<host><path>`.
fn get(host: &str, path: &str) -> HttpRequest {
    HttpRequest {
        host: host.to_owned(),
        path: path.to_owned(),
        ..HttpRequest::default()
    }
}

fn with_headers(mut req: HttpRequest, headers: &[(&str, &str)]) -> HttpRequest {
    req.headers
        .extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    req
}

/// 200 from `backend`, a workload of the mesh namespace.
fn served_by(backend: &str) -> Expect {
    Expect {
        backend: Some(backend.to_owned()),
        namespace: Some(MESH.to_owned()),
        ..Expect::default()
    }
}

fn response_header(mut e: Expect, name: &str, value: &str) -> Expect {
    e.response_headers.push((name.to_owned(), value.to_owned()));
    e
}

fn no_response_header(mut e: Expect, name: &str) -> Expect {
    e.absent_response_headers.push(name.to_owned());
    e
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A 3xx from the mesh itself, with its `Location`.
fn redirect(status: u16, location: &str) -> Expect {
    Expect {
        statuses: vec![status],
        location: Some(location.to_owned()),
        ..Expect::default()
    }
}

/// One HTTP case through the retry loop; the error names the case.
fn case(name: &str, client: &Client, req: &HttpRequest, expect: &Expect) -> Result<(), String> {
    eventually(|| {
        let answers = client.http(req, 1).map_err(|e| format!("{e:#}"))?;
        let answer = answers.first().ok_or("no answer")?;
        check(answer, expect)
    })
    .map_err(|e| {
        format!(
            "case {name:?} (GET http://{}{} from {}): {e}",
            req.host, req.path, client.workload
        )
    })
}

/// One gRPC case through the retry loop.
fn grpc_case(name: &str, client: &Client, call: &GrpcCall, expect: &Expect) -> Result<(), String> {
    eventually(|| {
        let answers = client.grpc(call, 1).map_err(|e| format!("{e:#}"))?;
        let answer = answers.first().ok_or("no answer")?;
        check(answer, expect)
    })
    .map_err(|e| format!("case {name:?} (gRPC from {}): {e}", client.workload))
}

// === the tests ===

/// 4.1: plain Service balancing, no routes.
fn mesh_basic(ctx: &Ctx) -> Result<(), String> {
    case("echo", &ctx.v1, &get("echo", ""), &Expect::default())
}

/// 4.2: the route applies to traffic addressed to the Service, not to the pod's own IP.
fn mesh_frontend(ctx: &Ctx) -> Result<(), String> {
    case(
        "Send to service",
        &ctx.v1,
        &get("echo-v2", ""),
        &response_header(served_by("echo-v2"), "X-Header-Set", "set"),
    )?;
    case(
        "Send to pod IP",
        &ctx.v1,
        &get(&format!("{}:8080", ctx.v2_address), ""),
        &no_response_header(served_by("echo-v2"), "X-Header-Set"),
    )
}

/// 4.3: the route is chosen by the address dialled, whatever the Host header says.
fn mesh_frontend_hostname(ctx: &Ctx) -> Result<(), String> {
    let mut to_v2 = get("echo-v2", "");
    to_v2.host_header = Some("echo-v1".into());
    case(
        "Send to service with wrong hostname",
        &ctx.v1,
        &to_v2,
        &response_header(served_by("echo-v2"), "X-Header-Set", "set"),
    )?;
    let mut to_v1 = get("echo-v1", "");
    to_v1.host_header = Some("echo-v2".into());
    case(
        "Send to other service with matching hostname",
        &ctx.v1,
        &to_v1,
        &no_response_header(served_by("echo-v1"), "X-Header-Set"),
    )
}

/// 4.4: `parentRef.port` limits a route to one Service port.
fn mesh_ports(ctx: &Ctx) -> Result<(), String> {
    case(
        "Explicit port set, send to that port",
        &ctx.v1,
        &get("echo-v1", ""),
        &response_header(served_by("echo-v1"), "X-Header-Set", "v1"),
    )?;
    case(
        "Explicit port, send to an excluded port",
        &ctx.v1,
        &get("echo-v1:8080", ""),
        &no_response_header(served_by("echo-v1"), "X-Header-Set"),
    )?;
    case(
        "No port set",
        &ctx.v1,
        &get("echo-v2", ""),
        &response_header(served_by("echo-v2"), "X-Header-Set", "v2"),
    )?;
    case(
        "No port set, port 8080",
        &ctx.v1,
        &get("echo-v2:8080", ""),
        &response_header(served_by("echo-v2"), "X-Header-Set", "v2"),
    )
}

/// 4.5: Exact paths, to Services other than the parent.
fn mesh_traffic_split(ctx: &Ctx) -> Result<(), String> {
    case("/v1", &ctx.v1, &get("echo", "/v1"), &served_by("echo-v1"))?;
    case("/v2", &ctx.v1, &get("echo", "/v2"), &served_by("echo-v2"))
}

/// 4.6: a route of the consumer namespace applies to its clients only.
fn mesh_consumer_route(ctx: &Ctx) -> Result<(), String> {
    let req = get("echo-v1.gateway-conformance-mesh", "/");
    case(
        "from the consumer namespace",
        &ctx.consumer,
        &req,
        &response_header(served_by("echo-v1"), "X-Header-Set", "set"),
    )?;
    case(
        "from the mesh namespace",
        &ctx.v1,
        &req,
        &no_response_header(served_by("echo-v1"), "X-Header-Set"),
    )
}

/// 4.7: everything to echo-v1, through its other port.
fn simple_same_namespace(ctx: &Ctx) -> Result<(), String> {
    case("echo", &ctx.v1, &get("echo", "/"), &served_by("echo-v1"))
}

/// 4.8: whole-segment prefixes, header names without case, OR-ed matches, precedence.
fn matching(ctx: &Ctx) -> Result<(), String> {
    let cases: [(&str, Option<&str>, &str); 9] = [
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
    for (i, (path, version, backend)) in cases.into_iter().enumerate() {
        let mut req = get("echo", path);
        if let Some(v) = version {
            req = with_headers(req, &[("Version", v)]);
        }
        case(&format!("{}", i + 1), &ctx.v1, &req, &served_by(backend))?;
    }
    Ok(())
}

/// 4.9: a rule's name changes nothing; the paths arrive unchanged.
fn named_rule(ctx: &Ctx) -> Result<(), String> {
    for (path, backend) in [("/named", "echo-v1"), ("/unnamed", "echo-v2")] {
        let expect = Expect {
            backend_path: Some(path.to_owned()),
            ..served_by(backend)
        };
        case(path, &ctx.v1, &get("echo", path), &expect)?;
    }
    Ok(())
}

/// 4.10: Exact query-param matches with paths and headers, 404 when nothing matches.
fn query_param_matching(ctx: &Ctx) -> Result<(), String> {
    let cases: [(&str, Option<&str>, Option<&str>); 15] = [
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
    for (i, (path, version, backend)) in cases.into_iter().enumerate() {
        let mut req = get("echo", path);
        if let Some(v) = version {
            req = with_headers(req, &[("version", v)]);
        }
        let expect = match backend {
            Some(b) => served_by(b),
            None => Expect {
                statuses: vec![404],
                ..Expect::default()
            },
        };
        case(&format!("{}", i + 1), &ctx.v1, &req, &expect)?;
    }
    Ok(())
}

/// Redirect cases: `GET http://echo<path>` answered by the mesh.
fn redirects(ctx: &Ctx, cases: &[(&str, u16, &str)]) -> Result<(), String> {
    for (path, status, location) in cases {
        case(
            path,
            &ctx.v1,
            &get("echo", path),
            &redirect(*status, location),
        )?;
    }
    Ok(())
}

/// 4.11
fn redirect_303(ctx: &Ctx) -> Result<(), String> {
    redirects(ctx, &[("/redirect", 303, "http://echo/redirect")])
}

/// 4.12
fn redirect_307(ctx: &Ctx) -> Result<(), String> {
    redirects(ctx, &[("/temporary", 307, "http://echo/temporary")])
}

/// 4.13
fn redirect_308(ctx: &Ctx) -> Result<(), String> {
    redirects(ctx, &[("/permanent", 308, "http://echo/permanent")])
}

/// 4.14
fn redirect_host_and_status(ctx: &Ctx) -> Result<(), String> {
    redirects(
        ctx,
        &[
            (
                "/hostname-redirect",
                302,
                "http://example.org/hostname-redirect",
            ),
            (
                "/host-and-status",
                301,
                "http://example.org/host-and-status",
            ),
        ],
    )
}

/// 4.15: `/full` must not take `/full-path-and-host` (whole segments).
fn redirect_path(ctx: &Ctx) -> Result<(), String> {
    redirects(
        ctx,
        &[
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
        ],
    )
}

/// 4.16
fn redirect_port(ctx: &Ctx) -> Result<(), String> {
    redirects(
        ctx,
        &[
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
        ],
    )
}

/// 4.17: https without a port: 443, left out.
fn redirect_scheme(ctx: &Ctx) -> Result<(), String> {
    redirects(
        ctx,
        &[
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
        ],
    )
}

/// 4.18: path rewrites, by prefix and in full, with a request-header modifier.
fn rewrite_path(ctx: &Ctx) -> Result<(), String> {
    let plain = [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two", "/one"),
    ];
    for (path, at_backend) in plain {
        let expect = Expect {
            backend_path: Some(at_backend.to_owned()),
            ..served_by("echo-v1")
        };
        case(path, &ctx.v1, &get("echo", path), &expect)?;
    }
    let sent = [
        ("X-Header-Remove", "remove-val"),
        ("X-Header-Add-Append", "append-val-1"),
        ("X-Header-Set", "set-val"),
    ];
    let modified = [
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ];
    for (path, at_backend) in modified {
        let expect = Expect {
            backend_path: Some(at_backend.to_owned()),
            backend_headers: owned(&[
                ("X-Header-Add", "header-val-1"),
                ("X-Header-Add-Append", "append-val-1,header-val-2"),
                ("X-Header-Set", "set-overwrites-values"),
            ]),
            absent_backend_headers: vec!["X-Header-Remove".into()],
            ..served_by("echo-v1")
        };
        case(
            path,
            &ctx.v1,
            &with_headers(get("echo", path), &sent),
            &expect,
        )?;
    }
    Ok(())
}

/// 4.19, and 4.20 with the same cases (the modifiers sit on the backendRefs there).
fn request_header_modifier(ctx: &Ctx) -> Result<(), String> {
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
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "set-overwrites-values"),
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
                ("Some-Other-Header", "val"),
                ("X-Header-Set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "/add",
            &[("Some-Other-Header", "val")],
            &[
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "add-appends-values"),
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
                ("Some-Other-Header", "val"),
                ("X-Header-Add", "some-other-value,add-appends-values"),
            ],
            &[],
        ),
        (
            "/remove",
            &[("X-Header-Remove", "val")],
            &[],
            &["X-Header-Remove"],
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
                ("X-Header-Set-1", "header-set-1"),
                ("X-Header-Set-2", "header-set-2"),
                ("X-Header-Add-1", "header-add-1"),
                ("X-Header-Add-2", "add-val-2,header-add-2"),
                ("X-Header-Add-3", "header-add-3"),
                ("Another-Header", "another-header-val"),
            ],
            &["X-Header-Remove-1", "X-Header-Remove-2"],
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
                ("X-Header-Set", "header-set"),
                ("X-Header-Add", "original-val-add,header-add"),
                ("Another-Header", "another-header-val"),
            ],
            &["X-Header-Remove"],
        ),
    ];
    for (i, (path, sent, seen, absent)) in cases.into_iter().enumerate() {
        let expect = Expect {
            backend_headers: owned(seen),
            absent_backend_headers: absent.iter().map(|s| s.to_string()).collect(),
            ..served_by("echo-v1")
        };
        case(
            &format!("{} {path}", i + 1),
            &ctx.v1,
            &with_headers(get("echo", path), sent),
            &expect,
        )?;
    }
    Ok(())
}

/// 4.21: 70/30 per request between echo-v1 and echo-v2 on one kept-alive connection.
fn http_weight(ctx: &Ctx) -> Result<(), String> {
    let req = get("echo", "/");
    weighted(
        || {
            let answers = ctx.v1.http(&req, 1).map_err(|e| format!("{e:#}"))?;
            check(answers.first().ok_or("no answer")?, &Expect::default())
        },
        || ctx.v1.http(&req, ROUND).map_err(|e| format!("{e:#}")),
        &[("echo-v1", 70), ("echo-v2", 30)],
    )
}

/// 4.22: the same for gRPC on one HTTP/2 connection; the weight-0 reference to the missing
/// Service echo-v3 is never chosen.
fn grpc_weight(ctx: &Ctx) -> Result<(), String> {
    let call = GrpcCall::default();
    weighted(
        || {
            let answers = ctx.v1.grpc(&call, 1).map_err(|e| format!("{e:#}"))?;
            check(answers.first().ok_or("no answer")?, &Expect::default())
        },
        || ctx.v1.grpc(&call, ROUND).map_err(|e| format!("{e:#}")),
        &[("echo-v1", 70), ("echo-v2", 30)],
    )
}

/// 4.23: GRPCRoute header matches and metadata set, add and remove.
fn grpc_request_header_modifier(ctx: &Ctx) -> Result<(), String> {
    type Case<'a> = (
        &'static str,
        &'a Client,
        &'static [(&'static str, &'static str)],
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case<'_>; 4] = [
        (
            "Set headers -- overwrites existing header",
            &ctx.v1,
            &[
                ("x-test-case", "set"),
                ("some-other-header", "this-header-should-be-set"),
                ("x-header-set", "this-value-should-be-overwritten"),
            ],
            "echo-v1",
            &[
                ("x-test-case", "set"),
                ("some-other-header", "this-header-should-be-set"),
                ("x-header-set", "set-overwrites-values"),
            ],
            &[],
        ),
        (
            "Add headers -- appends to existing header",
            &ctx.v1,
            &[
                ("x-test-case", "add"),
                ("x-header-add", "this-value-should-be-appended"),
            ],
            "echo-v1",
            &[
                ("x-test-case", "add"),
                (
                    "x-header-add",
                    "this-value-should-be-appended,add-appends-values",
                ),
            ],
            &[],
        ),
        (
            "Remove headers -- removes headers",
            &ctx.v1,
            &[
                ("x-test-case", "remove"),
                ("x-header-remove", "this-should-be-removed"),
            ],
            "echo-v1",
            &[("x-test-case", "remove")],
            &["x-header-remove"],
        ),
        (
            "Multiple operations -- set, add, and remove headers",
            &ctx.v2,
            &[
                ("x-test-case", "multi"),
                ("x-header-set-2", "set-header-2"),
                ("x-header-add-2", "add-header-2"),
                ("x-header-remove-2", "should-be-removed-2"),
            ],
            "echo-v2",
            &[
                ("x-test-case", "multi"),
                ("x-header-set-1", "header-set-1"),
                ("x-header-set-2", "header-set-2"),
                ("x-header-add-1", "header-add-1"),
                ("x-header-add-2", "add-header-2,header-add-2"),
            ],
            &["x-header-remove-1", "x-header-remove-2"],
        ),
    ];
    for (name, client, metadata, backend, seen, absent) in cases {
        let call = GrpcCall {
            metadata: owned(metadata),
        };
        let expect = Expect {
            backend_headers: owned(seen),
            absent_backend_headers: absent.iter().map(|s| s.to_string()).collect(),
            ..served_by(backend)
        };
        grpc_case(name, client, &call, &expect)?;
    }
    Ok(())
}
