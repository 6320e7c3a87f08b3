//! The Gateway API kinds (`HTTPRoute`, `GRPCRoute`, `TCPRoute`, `ReferenceGrant`): the mesh
//! conformance manifests and Istio's Gateway API samples load (copied unchanged under
//! `tests/conformance`), the CRD schema defaults are applied, and each CRD rule
//! rejects a resource at the right field and line (`gateway_api/invalid.rs`). Round trips of
//! generated routes are in `gateway_api/roundtrip.rs`.

#[path = "gateway_api/invalid.rs"]
mod invalid;
#[path = "gateway_api/roundtrip.rs"]
mod roundtrip;

use std::path::{Path, PathBuf};

use trellis_api::load::{parse_str, Diagnostic, Located, Severity};
use trellis_api::resources::gateway::{
    GrpcRoute, HeaderMatchType, HttpRoute, PathMatchType, RedirectStatusCode, TcpRoute,
};
use trellis_api::resources::Resource;

/// The conformance data, next to the workspace. Missing data fails the test loudly rather
/// than letting it pass vacuously.
fn conformance_dir(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance")
        .join(relative)
}

/// Parses a file and asserts it has no errors.
fn load_clean(path: &Path) -> (Vec<Located<Resource>>, Vec<Diagnostic>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "conformance data {} is missing ({e}); it ships in the repository under tests/conformance",
            path.display()
        )
    });
    let (resources, diagnostics) = parse_str(path, &text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "{}:\n{}",
        path.display(),
        errors.join("\n")
    );
    (resources, diagnostics)
}

fn mesh_file(name: &str) -> (Vec<Located<Resource>>, Vec<Diagnostic>) {
    load_clean(&conformance_dir("gateway-api/mesh").join(name))
}

fn kinds_and_names(resources: &[Located<Resource>]) -> Vec<(&str, &str)> {
    resources
        .iter()
        .map(|r| (r.value.kind(), r.value.name()))
        .collect()
}

fn warnings(diagnostics: &[Diagnostic]) -> Vec<&str> {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.message.as_str())
        .collect()
}

fn only_http_route(resources: &[Located<Resource>]) -> &HttpRoute {
    match resources {
        [Located {
            value: Resource::HttpRoute(route),
            ..
        }] => route,
        other => panic!("expected one HTTPRoute, got {:?}", kinds_and_names(other)),
    }
}

fn only_grpc_route(resources: &[Located<Resource>]) -> &GrpcRoute {
    match resources {
        [Located {
            value: Resource::GrpcRoute(route),
            ..
        }] => route,
        other => panic!("expected one GRPCRoute, got {:?}", kinds_and_names(other)),
    }
}

/// A mesh conformance file: the kinds and names it yields, and how many of its documents
/// are Kubernetes kinds the loader skips (Namespaces and Deployments in `manifests.yaml`).
struct MeshFile {
    name: &'static str,
    resources: &'static [(&'static str, &'static str)],
    skipped: usize,
}

/// Every file of the mesh conformance folder.
const MESH_FILES: &[MeshFile] = &[
    MeshFile {
        name: "grpcroute-request-header-modifier.yaml",
        resources: &[("GRPCRoute", "grpc-request-header-modifier")],
        skipped: 0,
    },
    MeshFile {
        name: "grpcroute-weight.yaml",
        resources: &[("GRPCRoute", "mesh-grpc-weighted-backends")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-303-redirect.yaml",
        resources: &[("HTTPRoute", "mesh-303-redirect")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-307-redirect.yaml",
        resources: &[("HTTPRoute", "mesh-307-redirect")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-308-redirect.yaml",
        resources: &[("HTTPRoute", "mesh-308-redirect")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-matching.yaml",
        resources: &[("HTTPRoute", "mesh-matching")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-named-rule.yaml",
        resources: &[("HTTPRoute", "mesh-http-named-rules")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-query-param-matching.yaml",
        resources: &[("HTTPRoute", "mesh-query-param-matching")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-redirect-host-and-status.yaml",
        resources: &[("HTTPRoute", "mesh-redirect-host-and-status")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-redirect-path.yaml",
        resources: &[("HTTPRoute", "mesh-redirect-path")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-redirect-port.yaml",
        resources: &[("HTTPRoute", "mesh-redirect-port")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-redirect-scheme.yaml",
        resources: &[("HTTPRoute", "mesh-redirect-scheme")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-request-header-modifier-backend.yaml",
        resources: &[("HTTPRoute", "mesh-request-header-modifier")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-request-header-modifier.yaml",
        resources: &[("HTTPRoute", "mesh-request-header-modifier")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-rewrite-path.yaml",
        resources: &[("HTTPRoute", "mesh-rewrite-path")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-simple-same-namespace.yaml",
        resources: &[("HTTPRoute", "gateway-conformance-mesh-test")],
        skipped: 0,
    },
    MeshFile {
        name: "httproute-weight.yaml",
        resources: &[("HTTPRoute", "mesh-weighted-backends")],
        skipped: 0,
    },
    MeshFile {
        name: "manifests.yaml",
        resources: &[
            ("Service", "echo-v1"),
            ("Service", "echo-v2"),
            ("Service", "echo"),
        ],
        skipped: 5,
    },
    MeshFile {
        name: "mesh-consumer-route.yaml",
        resources: &[("HTTPRoute", "mesh-echo-add-header")],
        skipped: 0,
    },
    MeshFile {
        name: "mesh-frontend.yaml",
        resources: &[("HTTPRoute", "mesh-split-v1")],
        skipped: 0,
    },
    MeshFile {
        name: "mesh-ports.yaml",
        resources: &[
            ("HTTPRoute", "mesh-split-v1"),
            ("HTTPRoute", "mesh-split-v2"),
        ],
        skipped: 0,
    },
    MeshFile {
        name: "mesh-split.yaml",
        resources: &[("HTTPRoute", "mesh-split")],
        skipped: 0,
    },
];

#[test]
fn every_mesh_conformance_file_loads_without_errors() {
    let dir = conformance_dir("gateway-api/mesh");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()))
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .expect("readable directory");
    on_disk.sort();
    let listed: Vec<&str> = MESH_FILES.iter().map(|f| f.name).collect();
    assert_eq!(
        on_disk, listed,
        "the table must cover every file in {dir:?}"
    );

    for MeshFile {
        name,
        resources: expected,
        skipped,
    } in MESH_FILES
    {
        let (resources, diagnostics) = mesh_file(name);
        assert_eq!(kinds_and_names(&resources), *expected, "{name}");
        assert!(
            resources
                .iter()
                .all(|r| r.value.namespace() == "gateway-conformance-mesh"
                    || r.value.name() == "mesh-echo-add-header"),
            "{name}"
        );
        let skips = diagnostics
            .iter()
            .filter(|d| d.message.ends_with("the mesh does not use; skipped"))
            .count();
        assert_eq!(skips, *skipped, "{name}: {diagnostics:#?}");
        // Every route attaches to a Service the mesh routes: no warning beyond the skipped
        // kinds.
        assert_eq!(diagnostics.len(), *skipped, "{name}: {diagnostics:#?}");
    }
}

#[test]
fn mesh_routes_attach_to_services_with_defaults_applied() {
    let (resources, _) = mesh_file("httproute-weight.yaml");
    let route = only_http_route(&resources);
    let parent = &route.spec.parent_refs[0];
    assert_eq!(
        (parent.group.as_deref(), parent.kind.as_deref()),
        (Some(""), Some("Service"))
    );
    assert!(parent.is_service());
    assert_eq!(parent.port, Some(80));
    let rule = &route.spec.rules[0];
    // No matches written: one match of every path.
    assert_eq!(rule.matches.len(), 1);
    let path = rule.matches[0].path.as_ref().expect("defaulted path");
    assert_eq!(path.type_, Some(PathMatchType::PathPrefix));
    assert_eq!(path.value.as_deref(), Some("/"));
    let backends: Vec<_> = rule
        .backend_refs
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                b.group.as_deref(),
                b.kind.as_deref(),
                b.port,
                b.weight,
            )
        })
        .collect();
    assert_eq!(
        backends,
        [
            ("echo-v1", Some(""), Some("Service"), Some(8080), Some(70)),
            ("echo-v2", Some(""), Some("Service"), Some(8080), Some(30)),
        ]
    );

    let (resources, _) = mesh_file("httproute-simple-same-namespace.yaml");
    let backend = &only_http_route(&resources).spec.rules[0].backend_refs[0];
    assert_eq!(backend.weight, Some(1), "weight defaults to 1");
    assert_eq!(backend.weight(), 1);

    let (resources, _) = mesh_file("grpcroute-weight.yaml");
    let route = only_grpc_route(&resources);
    assert_eq!(route.spec.parent_refs[0].port, Some(7070));
    let rule = &route.spec.rules[0];
    // GRPCRoute declares no default match.
    assert!(rule.matches.is_empty());
    let weights: Vec<(&str, i32)> = rule
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.weight()))
        .collect();
    assert_eq!(weights, [("echo-v1", 70), ("echo-v2", 30), ("echo-v3", 0)]);
    assert!(rule
        .backend_refs
        .iter()
        .all(|b| b.group.as_deref() == Some("") && b.kind.as_deref() == Some("Service")));
}

#[test]
fn match_and_redirect_defaults() {
    let (resources, _) = mesh_file("httproute-matching.yaml");
    let rule = &only_http_route(&resources).spec.rules[0];
    // The second match names only a header; its path defaults to every path.
    let header_only = &rule.matches[1];
    let path = header_only.path.as_ref().expect("defaulted path");
    assert_eq!(
        (path.match_type(), path.value()),
        (PathMatchType::PathPrefix, "/")
    );
    assert_eq!(header_only.headers[0].name, "version");
    assert_eq!(header_only.headers[0].type_, Some(HeaderMatchType::Exact));

    let (resources, _) = mesh_file("httproute-query-param-matching.yaml");
    let param = &only_http_route(&resources).spec.rules[0].matches[0].query_params[0];
    assert_eq!(
        (param.name.as_str(), param.value.as_str(), param.type_),
        ("animal", "whale", Some(HeaderMatchType::Exact))
    );

    let (resources, _) = mesh_file("httproute-redirect-host-and-status.yaml");
    let codes: Vec<Option<RedirectStatusCode>> = only_http_route(&resources)
        .spec
        .rules
        .iter()
        .map(|r| {
            r.filters[0]
                .request_redirect
                .as_ref()
                .and_then(|f| f.status_code)
        })
        .collect();
    assert_eq!(
        codes,
        [
            Some(RedirectStatusCode::Found),
            Some(RedirectStatusCode::MovedPermanently)
        ]
    );

    let (resources, _) = mesh_file("httproute-named-rule.yaml");
    let names: Vec<Option<&str>> = only_http_route(&resources)
        .spec
        .rules
        .iter()
        .map(|r| r.name.as_deref())
        .collect();
    assert_eq!(names, [Some("named-rule"), None]);
}

#[test]
fn consumer_route_refers_across_namespaces() {
    let (resources, _) = mesh_file("mesh-consumer-route.yaml");
    let route = only_http_route(&resources);
    assert_eq!(route.meta.namespace(), "gateway-conformance-mesh-consumer");
    let parent = &route.spec.parent_refs[0];
    assert_eq!(
        parent.namespace.as_deref(),
        Some("gateway-conformance-mesh")
    );
    assert_eq!(parent.port, None, "no port: every port of the Service");
    let backend = &route.spec.rules[0].backend_refs[0];
    assert_eq!(
        backend.namespace.as_deref(),
        Some("gateway-conformance-mesh")
    );
    let modifier = route.spec.rules[0].filters[0]
        .response_header_modifier
        .as_ref()
        .expect("response header modifier");
    assert_eq!(
        (
            modifier.set[0].name.as_str(),
            modifier.set[0].value.as_str()
        ),
        ("X-Header-Set", "set")
    );
}

/// Every HTTPRoute, GRPCRoute and TCPRoute document under Istio's samples, by file.
fn istio_sample_routes() -> Vec<(PathBuf, Vec<Located<Resource>>, Vec<Diagnostic>)> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("readable directory").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&conformance_dir("istio/samples"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            ["HTTPRoute", "GRPCRoute", "TCPRoute"]
                .iter()
                .any(|kind| text.contains(&format!("kind: {kind}")))
        })
        .map(|path| {
            let (resources, diagnostics) = load_clean(&path);
            (path, resources, diagnostics)
        })
        .collect()
}

#[test]
fn istio_gateway_api_samples_load_with_ingress_warnings() {
    let samples = istio_sample_routes();
    let routes: Vec<&Located<Resource>> = samples
        .iter()
        .flat_map(|(_, resources, _)| resources)
        .filter(|r| r.value.kind().ends_with("Route"))
        .collect();
    // helloworld (2 HTTPRoutes) and tcp-echo (2 TCPRoutes) at least.
    assert!(routes.len() >= 4, "only {} routes found", routes.len());
    for (path, resources, diagnostics) in &samples {
        for route in resources
            .iter()
            .filter(|r| r.value.kind().ends_with("Route"))
        {
            // Istio's samples attach routes to its ingress Gateway, which the mesh reports.
            assert!(
                diagnostics.iter().any(|d| d.message
                    == "parentRef to Gateway is not supported by the mesh (ingress)"
                    && d.name.as_deref() == Some(route.value.name())
                    && d.field.as_deref() == Some("spec.parentRefs[0]")),
                "{}: {diagnostics:#?}",
                path.display()
            );
        }
    }
}

#[test]
fn helloworld_route_weights_and_gateway_parent() {
    let (resources, diagnostics) = load_clean(&conformance_dir(
        "istio/samples/helloworld/gateway-api/helloworld-route.yaml",
    ));
    let route = only_http_route(&resources);
    let parent = &route.spec.parent_refs[0];
    assert_eq!(parent.group.as_deref(), Some("gateway.networking.k8s.io"));
    assert_eq!(parent.kind.as_deref(), Some("Gateway"));
    assert!(parent.is_gateway());
    let rule = &route.spec.rules[0];
    let path = rule.matches[0].path.as_ref().expect("path");
    assert_eq!(
        (path.match_type(), path.value()),
        (PathMatchType::Exact, "/hello")
    );
    let weights: Vec<i32> = rule.backend_refs.iter().map(|b| b.weight()).collect();
    assert_eq!(weights, [90, 10]);
    // `  - name: helloworld-gateway` on line 7: the warning points at the parentRef.
    let gateway = diagnostics
        .iter()
        .find(|d| d.message.starts_with("parentRef to Gateway"))
        .expect("gateway warning");
    assert_eq!((gateway.line, gateway.column), (7, 5));
    assert_eq!(
        warnings(&diagnostics),
        ["parentRef to Gateway is not supported by the mesh (ingress)"]
    );

    let (resources, diagnostics) = load_clean(&conformance_dir(
        "istio/samples/helloworld/gateway-api/helloworld-gateway.yaml",
    ));
    assert_eq!(kinds_and_names(&resources), [("HTTPRoute", "helloworld")]);
    assert_eq!(
        diagnostics[0].message,
        "kind Gateway (gateway.networking.k8s.io) is not supported yet and is ignored"
    );
}

#[test]
fn tcp_echo_routes_use_v1alpha2_with_sections() {
    let (resources, _) = load_clean(&conformance_dir(
        "istio/samples/tcp-echo/gateway-api/tcp-echo-20-v2.yaml",
    ));
    let [Located {
        value: Resource::TcpRoute(route),
        ..
    }] = resources.as_slice()
    else {
        panic!("expected one TCPRoute");
    };
    let route: &TcpRoute = route;
    assert_eq!(route.api_version, "gateway.networking.k8s.io/v1alpha2");
    assert_eq!(
        route.spec.parent_refs[0].section_name.as_deref(),
        Some("tcp-31400")
    );
    let split: Vec<(&str, Option<i32>, i32)> = route.spec.rules[0]
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.port, b.weight()))
        .collect();
    assert_eq!(
        split,
        [
            ("tcp-echo-v1", Some(9000), 80),
            ("tcp-echo-v2", Some(9000), 20)
        ]
    );

    let (resources, _) = load_clean(&conformance_dir(
        "istio/samples/tcp-echo/gateway-api/tcp-echo-all-v1.yaml",
    ));
    assert_eq!(
        kinds_and_names(&resources),
        [
            ("Service", "tcp-echo-v1"),
            ("Service", "tcp-echo-v2"),
            ("TCPRoute", "tcp-echo"),
        ]
    );
    let Resource::TcpRoute(route) = &resources[2].value else {
        unreachable!()
    };
    assert_eq!(route.spec.rules[0].backend_refs[0].weight, Some(1));
}

#[test]
fn defaults_are_idempotent_and_serialize_spelled_out() {
    let (resources, _) = mesh_file("httproute-redirect-path.yaml");
    let mut again = resources[0].value.clone();
    again.apply_defaults();
    assert_eq!(again, resources[0].value);
    let json = serde_json::to_value(&resources[0].value).expect("serializable");
    assert_eq!(json["kind"], "HTTPRoute");
    let redirect = &json["spec"]["rules"][0]["filters"][0]["requestRedirect"];
    assert_eq!(redirect["statusCode"], 302);
    assert_eq!(redirect["path"]["type"], "ReplacePrefixMatch");
    assert_eq!(
        json["spec"]["rules"][0]["matches"][0]["path"],
        serde_json::json!({"type": "PathPrefix", "value": "/original-prefix"})
    );
    let back: Resource = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, resources[0].value);
}

#[test]
fn reference_grant_loads_without_warnings() {
    let text = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata:\n  \
                name: allow-consumer\n  namespace: gateway-conformance-mesh\nspec:\n  from:\n  \
                - group: gateway.networking.k8s.io\n    kind: HTTPRoute\n    namespace: \
                gateway-conformance-mesh-consumer\n  to:\n  - group: \"\"\n    kind: Service\n";
    let (resources, diagnostics) = parse_str(Path::new("grant.yaml"), text);
    let [Located {
        value: Resource::ReferenceGrant(grant),
        ..
    }] = resources.as_slice()
    else {
        panic!("expected a ReferenceGrant: {diagnostics:#?}");
    };
    assert_eq!(grant.spec.from[0].kind, "HTTPRoute");
    assert_eq!(grant.spec.to[0].group, "");
    assert_eq!(grant.spec.to[0].name, None);
    // Enforced by the route compiler: nothing to warn about.
    assert!(warnings(&diagnostics).is_empty(), "{diagnostics:#?}");
}

#[test]
fn whole_mesh_folder_reports_only_the_reused_route_names() {
    // The upstream suite applies one test's YAML at a time; two pairs of files reuse a route
    // name, so loading the folder as one config finds exactly those duplicates.
    let dir = conformance_dir("gateway-api/mesh");
    let diagnostics = match trellis_api::load::load_dir(&dir) {
        Err(error) => error.diagnostics().to_vec(),
        Ok(set) => panic!("expected duplicates, loaded {}", set.resources.len()),
    };
    let mut errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.split(':').next().unwrap_or_default().to_owned())
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            "duplicate HTTPRoute gateway-conformance-mesh/mesh-request-header-modifier",
            "duplicate HTTPRoute gateway-conformance-mesh/mesh-split-v1",
        ]
    );
}

#[test]
fn a_mesh_config_directory_exposes_its_routes() {
    let mesh = conformance_dir("gateway-api/mesh");
    let config = tempfile::tempdir().expect("temp dir");
    for name in [
        "manifests.yaml",
        "httproute-weight.yaml",
        "grpcroute-weight.yaml",
    ] {
        std::fs::copy(mesh.join(name), config.path().join(name)).expect("copy");
    }
    let set = trellis_api::load::load_dir(config.path()).expect("valid config");
    assert_eq!(set.services().count(), 3);
    let http: Vec<&str> = set.http_routes().map(|r| r.meta.name.as_str()).collect();
    assert_eq!(http, ["mesh-weighted-backends"]);
    let grpc: Vec<&str> = set.grpc_routes().map(|r| r.meta.name.as_str()).collect();
    assert_eq!(grpc, ["mesh-grpc-weighted-backends"]);
    assert_eq!(set.tcp_routes().count(), 0);
    assert_eq!(set.reference_grants().count(), 0);
}
