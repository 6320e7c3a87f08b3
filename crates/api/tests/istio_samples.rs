//! Istio's own sample and validation YAML (copied unchanged under `tests/conformance`)
//! must load: users bring exactly these files. Warnings are allowed (the mesh does not act on
//! every field yet), errors are not.

use std::path::{Path, PathBuf};

use trellis_api::load::{parse_str, Diagnostic, Located, Severity};
use trellis_api::resources::Resource;

/// The conformance data, next to the workspace. Missing data fails the test loudly rather
/// than letting it pass vacuously.
fn conformance(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance")
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "conformance data {} is missing ({e}); it ships in the repository under tests/conformance",
            path.display()
        )
    });
    (path, text)
}

/// Parses a sample and asserts it has no errors.
fn load_clean(relative: &str) -> (Vec<Located<Resource>>, Vec<Diagnostic>) {
    let (path, text) = conformance(relative);
    let (resources, diagnostics) = parse_str(&path, &text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{relative}:\n{}", errors.join("\n"));
    (resources, diagnostics)
}

fn kinds_and_names(resources: &[Located<Resource>]) -> Vec<(&str, &str)> {
    resources
        .iter()
        .map(|r| (r.value.kind(), r.value.name()))
        .collect()
}

fn warning_fields(diagnostics: &[Diagnostic]) -> Vec<&str> {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .filter_map(|d| d.field.as_deref())
        .collect()
}

#[test]
fn every_bookinfo_networking_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance/istio/samples/bookinfo/networking");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    // The README lists these tasks; guard against an empty or truncated copy.
    assert!(names.len() >= 20, "{names:?}");
    let mut routing = 0;
    for name in &names {
        let (resources, _) = load_clean(&format!("istio/samples/bookinfo/networking/{name}"));
        routing += resources
            .iter()
            .filter(|r| {
                matches!(
                    r.value,
                    Resource::VirtualService(_) | Resource::DestinationRule(_)
                )
            })
            .count();
    }
    assert!(
        routing >= 30,
        "only {routing} VirtualServices/DestinationRules loaded"
    );
}

#[test]
fn destination_rule_all_has_every_subset() {
    let (resources, diagnostics) =
        load_clean("istio/samples/bookinfo/networking/destination-rule-all.yaml");
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let subsets: Vec<(&str, Vec<&str>)> = resources
        .iter()
        .map(|r| match &r.value {
            Resource::DestinationRule(dr) => (
                dr.spec.host.as_str(),
                dr.spec.subsets.iter().map(|s| s.name.as_str()).collect(),
            ),
            other => panic!("unexpected {}", other.kind()),
        })
        .collect();
    assert_eq!(
        subsets,
        [
            ("productpage", vec!["v1"]),
            ("reviews", vec!["v1", "v2", "v3"]),
            ("ratings", vec!["v1", "v2", "v2-mysql", "v2-mysql-vm"]),
            ("details", vec!["v1", "v2"]),
        ]
    );
}

#[test]
fn weighted_splits_have_their_weights() {
    for (file, expected) in [
        (
            "virtual-service-reviews-90-10.yaml",
            [("v1", 90), ("v2", 10)],
        ),
        (
            "virtual-service-reviews-80-20.yaml",
            [("v1", 80), ("v2", 20)],
        ),
        (
            "virtual-service-reviews-50-v3.yaml",
            [("v1", 50), ("v3", 50)],
        ),
        (
            "virtual-service-reviews-v2-v3.yaml",
            [("v2", 50), ("v3", 50)],
        ),
    ] {
        let (resources, diagnostics) =
            load_clean(&format!("istio/samples/bookinfo/networking/{file}"));
        assert!(diagnostics.is_empty(), "{file}: {diagnostics:#?}");
        let [Located {
            value: Resource::VirtualService(vs),
            ..
        }] = resources.as_slice()
        else {
            panic!("{file}: expected one VirtualService");
        };
        assert_eq!(vs.spec.hosts, ["reviews"], "{file}");
        let split: Vec<(&str, i32)> = vs.spec.http[0]
            .route
            .iter()
            .map(|d| {
                (
                    d.destination.subset.as_deref().unwrap_or_default(),
                    d.weight.unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(split, expected, "{file}");
    }
}

#[test]
fn header_match_and_fault_injection_load_with_warnings() {
    let (resources, diagnostics) =
        load_clean("istio/samples/bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml");
    assert_eq!(kinds_and_names(&resources), [("VirtualService", "reviews")]);
    // Matches and faults are routed: nothing to warn about.
    assert!(warning_fields(&diagnostics).is_empty(), "{diagnostics:#?}");
    let Resource::VirtualService(vs) = &resources[0].value else {
        unreachable!()
    };
    assert_eq!(
        serde_json::to_value(&vs.spec.http[0].match_).unwrap(),
        serde_json::json!([{"headers": {"end-user": {"exact": "jason"}}}])
    );
    assert_eq!(
        vs.spec.http[1].route[0].destination.subset.as_deref(),
        Some("v3")
    );

    let (resources, diagnostics) =
        load_clean("istio/samples/bookinfo/networking/virtual-service-ratings-test-delay.yaml");
    assert_eq!(kinds_and_names(&resources), [("VirtualService", "ratings")]);
    assert!(warning_fields(&diagnostics).is_empty(), "{diagnostics:#?}");

    let (resources, diagnostics) =
        load_clean("istio/samples/bookinfo/networking/fault-injection-details-v1.yaml");
    assert_eq!(
        kinds_and_names(&resources),
        [
            ("VirtualService", "details"),
            ("DestinationRule", "details")
        ]
    );
    assert!(warning_fields(&diagnostics).is_empty(), "{diagnostics:#?}");
}

#[test]
fn gateway_is_skipped_and_service_entry_validated_with_warnings() {
    let (resources, diagnostics) =
        load_clean("istio/samples/bookinfo/networking/bookinfo-gateway.yaml");
    assert_eq!(
        kinds_and_names(&resources),
        [("VirtualService", "bookinfo")]
    );
    assert_eq!(
        diagnostics[0].message,
        "kind Gateway (networking.istio.io) is not supported yet and is ignored"
    );
    assert_eq!(warning_fields(&diagnostics)[1..], ["spec.gateways"]);

    let (resources, diagnostics) =
        load_clean("istio/samples/bookinfo/networking/egress-rule-google-apis.yaml");
    assert_eq!(
        kinds_and_names(&resources),
        [
            ("ServiceEntry", "googleapis"),
            ("VirtualService", "rewrite-port-for-googleapis"),
            ("DestinationRule", "originate-tls-for-googleapis"),
        ]
    );
    // The ServiceEntry is parsed and validated, and the user is told it is not acted on.
    assert_eq!(
        diagnostics[0].message,
        "ServiceEntry is validated but not acted on by the mesh yet"
    );
    assert_eq!(diagnostics[0].field, None);
    // Its balancer is acted on; TLS origination is not, and is named.
    assert_eq!(
        warning_fields(&diagnostics),
        ["spec.trafficPolicy.portLevelSettings[0].tls"]
    );
}

#[test]
fn namespaced_sample_keeps_its_namespace() {
    let (resources, _) = load_clean("istio/samples/bookinfo/networking/certmanager-gateway.yaml");
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].value.namespace(), "istio-system");
}

#[test]
fn kubernetes_manifests_yield_their_services() {
    let (resources, diagnostics) = load_clean("istio/samples/bookinfo/platform/kube/bookinfo.yaml");
    let services: Vec<(&str, u16)> = resources
        .iter()
        .map(|r| match &r.value {
            Resource::Service(s) => (s.meta.name.as_str(), s.spec.ports[0].port),
            other => panic!("unexpected {}", other.kind()),
        })
        .collect();
    assert_eq!(
        services,
        [
            ("details", 9080),
            ("ratings", 9080),
            ("reviews", 9080),
            ("productpage", 9080)
        ]
    );
    // Deployments and ServiceAccounts are reported, not silently dropped.
    let skipped = diagnostics
        .iter()
        .filter(|d| d.message.ends_with("skipped"))
        .count();
    assert_eq!(skipped, 10);

    let (resources, _) = load_clean("istio/samples/httpbin/httpbin.yaml");
    let [Located {
        value: Resource::Service(httpbin),
        ..
    }] = resources.as_slice()
    else {
        panic!("expected the httpbin Service");
    };
    assert_eq!(httpbin.spec.ports[0].port, 8000);
    assert_eq!(
        httpbin.spec.ports[0].target_port,
        Some(trellis_api::resources::IntOrString::Int(8080))
    );
}

#[test]
fn tcp_routes_load_with_a_warning() {
    let (resources, diagnostics) = load_clean("istio/samples/tcp-echo/tcp-echo-20-v2.yaml");
    assert_eq!(
        kinds_and_names(&resources),
        [("VirtualService", "tcp-echo")]
    );
    // TCP routes are routed; only the ingress gateway is not the mesh's.
    assert_eq!(warning_fields(&diagnostics), ["spec.gateways"]);
}

/// Splits a validation file into documents and their expected error (`_err:`), removing that
/// key, which is test bookkeeping rather than part of the resource.
fn validation_cases(relative: &str) -> Vec<(Option<String>, String)> {
    let (_, text) = conformance(relative);
    text.split("\n---\n")
        .map(|doc| {
            let mut expected = None;
            let body: Vec<&str> = doc
                .lines()
                .filter(|line| match line.strip_prefix("_err:") {
                    Some(err) => {
                        expected = Some(err.trim().trim_matches('\'').to_owned());
                        false
                    }
                    None => true,
                })
                .collect();
            (expected, body.join("\n"))
        })
        .collect()
}

#[test]
fn istio_valid_documents_are_accepted() {
    for file in [
        "istio/validation/workloadentry-valid.yaml",
        "istio/validation/destinationrule-valid.yaml",
    ] {
        let cases = validation_cases(file);
        assert!(cases.len() >= 4, "{file}");
        for (expected, body) in cases {
            assert_eq!(expected, None, "{file}: valid documents carry no _err");
            let (resources, diagnostics) = parse_str(Path::new(file), &body);
            assert!(
                diagnostics.iter().all(|d| !d.is_error()),
                "{file}: {diagnostics:#?}"
            );
            assert_eq!(resources.len(), 1, "{file}:\n{body}");
        }
    }
}

#[test]
fn istio_invalid_workload_entries_are_rejected_at_the_same_field() {
    let cases = validation_cases("istio/validation/workloadentry-invalid.yaml");
    assert_eq!(cases.len(), 7);
    for (expected, body) in cases {
        let expected = expected.expect("every invalid document says why");
        let (resources, diagnostics) = parse_str(Path::new("we.yaml"), &body);
        assert!(resources.is_empty(), "{expected}: accepted");
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(!errors.is_empty(), "{expected}: no error");
        // Istio writes either `path: reason` or just the reason (its CEL rules carry no
        // path); for the latter, the field each rule is about.
        let path = match expected.split_once(": ") {
            Some((path, _)) => path,
            None => match expected.as_str() {
                "Address is required"
                | "UDS may not be a dir"
                | "UDS must be an absolute path or abstract socket" => "spec.address",
                "UDS may not include ports" | "port must be between 1-65535" => "spec.ports",
                other => panic!("no field known for Istio's {other:?}"),
            },
        };
        assert!(
            errors
                .iter()
                .any(|d| d.field.as_deref().is_some_and(|f| f.starts_with(path))),
            "{expected}: {errors:#?}"
        );
    }
}

/// The `.yaml` files under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{} is missing: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_sample_parses_and_every_document_is_accounted_for() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/istio/samples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    // The README lists these samples; guard against an empty or truncated copy.
    assert!(files.len() >= 30, "{files:?}");
    let (mut parsed, mut unsupported, mut skipped) = (0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
        let (resources, diagnostics) = parse_str(file, &text);
        let errors: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            file.display(),
            errors.join("\n")
        );
        let kind_warnings = |suffix: &str| -> Vec<String> {
            diagnostics
                .iter()
                .filter(|d| d.field.as_deref() == Some("kind") && d.message.ends_with(suffix))
                .filter_map(|d| d.kind.clone())
                .collect()
        };
        let not_yet = kind_warnings("is not supported yet and is ignored");
        let kubernetes = kind_warnings("the mesh does not use; skipped");
        // Kinds outside the mesh's scope are reported as such, never silently dropped.
        for kind in &not_yet {
            assert_eq!(kind, "Gateway", "{}", file.display());
        }
        for kind in &kubernetes {
            assert!(
                ["Deployment", "ServiceAccount"].contains(&kind.as_str()),
                "{}: {kind}",
                file.display()
            );
        }
        for r in &resources {
            assert!(
                [
                    "Service",
                    "VirtualService",
                    "DestinationRule",
                    "ServiceEntry",
                    "HTTPRoute",
                    "TCPRoute",
                ]
                .contains(&r.value.kind()),
                "{}: {}",
                file.display(),
                r.value.kind()
            );
        }
        let documents = text.lines().filter(|l| l.starts_with("kind:")).count();
        assert_eq!(
            resources.len() + not_yet.len() + kubernetes.len(),
            documents,
            "{}: every document is parsed, reported unsupported or reported skipped",
            file.display()
        );
        parsed += resources.len();
        unsupported += not_yet.len();
        skipped += kubernetes.len();
    }
    println!(
        "{} sample files: {parsed} resources parsed, {unsupported} documents of unsupported \
         kinds, {skipped} Kubernetes documents skipped",
        files.len()
    );
    assert!(
        parsed >= 50 && unsupported >= 5 && skipped >= 18,
        "{parsed} {unsupported} {skipped}"
    );
}
