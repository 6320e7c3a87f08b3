//! `parse_str` on whole files: typed values, diagnostics with exact positions and field paths,
//! warnings for what the mesh does not act on, and the kinds it skips or rejects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trellis_api::load::{parse_str, Diagnostic, Located, Severity};
use trellis_api::resources::{IntOrString, PortSelector, Resource};

/// Reads `tests/data/<name>`, returning the path diagnostics will carry and the text.
fn data(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read test data {}: {e}", path.display()));
    (path, text)
}

fn errors(diagnostics: &[Diagnostic]) -> Vec<&Diagnostic> {
    diagnostics.iter().filter(|d| d.is_error()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Parses inline text that must produce exactly one error, and returns it.
fn single_error(text: &str) -> Diagnostic {
    let (resources, diagnostics) = parse_str(Path::new("inline.yaml"), text);
    let errs = errors(&diagnostics);
    assert_eq!(errs.len(), 1, "{diagnostics:#?}");
    assert!(resources.is_empty(), "{resources:#?}");
    errs[0].clone()
}

#[test]
fn bookinfo_reviews_parses_with_values() {
    let (path, text) = data("bookinfo/reviews.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let summary: Vec<(&str, &str, &str, usize)> = resources
        .iter()
        .map(|r| (r.value.kind(), r.value.namespace(), r.value.name(), r.line))
        .collect();
    assert_eq!(
        summary,
        [
            ("Service", "default", "reviews", 3),
            ("WorkloadEntry", "default", "reviews-v1", 18),
            ("WorkloadEntry", "default", "reviews-v2", 31),
            ("WorkloadEntry", "bookinfo", "reviews-v3", 44),
            ("DestinationRule", "default", "reviews", 58),
            ("VirtualService", "default", "reviews", 75),
        ]
    );
    assert!(resources.iter().all(|r| r.file == path));

    let Resource::Service(svc) = &resources[0].value else {
        panic!("expected a Service");
    };
    assert_eq!(svc.api_version, "v1");
    // The default namespace is applied to the metadata itself.
    assert_eq!(svc.meta.namespace.as_deref(), Some("default"));
    assert_eq!(
        svc.meta.labels,
        labels(&[("app", "reviews"), ("service", "reviews")])
    );
    assert_eq!(svc.spec.selector, labels(&[("app", "reviews")]));
    assert_eq!(svc.spec.ports.len(), 1);
    assert_eq!(svc.spec.ports[0].name.as_deref(), Some("http"));
    assert_eq!(svc.spec.ports[0].port, 9080);
    assert_eq!(svc.spec.ports[0].target_port, Some(IntOrString::Int(9080)));

    let ports = [19081, 19082, 19083];
    let versions = ["v1", "v2", "v3"];
    let api_versions = [
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ];
    for (i, located) in resources[1..4].iter().enumerate() {
        let Resource::WorkloadEntry(we) = &located.value else {
            panic!("expected a WorkloadEntry");
        };
        assert_eq!(we.api_version, api_versions[i]);
        assert_eq!(we.spec.address, "127.0.0.1");
        assert_eq!(
            we.spec.ports,
            BTreeMap::from([("http".to_owned(), ports[i])])
        );
        assert_eq!(
            we.spec.labels,
            labels(&[("app", "reviews"), ("version", versions[i])])
        );
        assert_eq!(we.spec.service_account.as_deref(), Some("bookinfo-reviews"));
    }

    let Resource::DestinationRule(dr) = &resources[4].value else {
        panic!("expected a DestinationRule");
    };
    assert_eq!(dr.spec.host, "reviews");
    let subsets: Vec<(&str, &BTreeMap<String, String>)> = dr
        .spec
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), &s.labels))
        .collect();
    assert_eq!(
        subsets,
        [
            ("v1", &labels(&[("version", "v1")])),
            ("v2", &labels(&[("version", "v2")])),
            ("v3", &labels(&[("version", "v3")])),
        ]
    );

    let Resource::VirtualService(vs) = &resources[5].value else {
        panic!("expected a VirtualService");
    };
    assert_eq!(vs.spec.hosts, ["reviews"]);
    assert_eq!(vs.spec.http.len(), 1);
    let http = &vs.spec.http[0];
    assert_eq!(http.name.as_deref(), Some("split"));
    let split: Vec<(&str, Option<&str>, Option<i32>)> = http
        .route
        .iter()
        .map(|d| {
            (
                d.destination.host.as_str(),
                d.destination.subset.as_deref(),
                d.weight,
            )
        })
        .collect();
    assert_eq!(
        split,
        [
            ("reviews", Some("v1"), Some(90)),
            ("reviews", Some("v2"), Some(10)),
        ]
    );
    assert_eq!(
        http.route[0].destination.port,
        Some(PortSelector { number: 9080 })
    );
    assert_eq!(http.route[1].destination.port, None);
}

#[test]
fn type_error_has_exact_position_and_field_path() {
    let (path, text) = data("invalid/weight-type.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert!(resources.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.file, path);
    // `      weight: ten` on line 17: the value starts in column 15.
    assert_eq!((d.line, d.column), (17, 15));
    assert_eq!(d.kind.as_deref(), Some("VirtualService"));
    assert_eq!(d.namespace.as_deref(), Some("default"));
    assert_eq!(d.name.as_deref(), Some("reviews"));
    assert_eq!(d.field.as_deref(), Some("spec.http[0].route[1].weight"));
    assert_eq!(d.message, "invalid type: string \"ten\", expected i32");
    assert_eq!(
        d.to_string(),
        format!(
            "{}:17:15: VirtualService default/reviews: spec.http[0].route[1].weight: \
             invalid type: string \"ten\", expected i32",
            path.display()
        )
    );
}

#[test]
fn unknown_field_is_an_error_at_its_key() {
    let (path, text) = data("invalid/unknown-field.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert!(resources.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!((d.line, d.column), (8, 3));
    assert_eq!(d.field.as_deref(), Some("spec.htp"));
    assert!(
        d.message
            .starts_with("unknown field `htp`, expected one of `hosts`, `gateways`, `http`"),
        "{}",
        d.message
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let (path, text) = data("invalid/syntax.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert!(resources.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.file, path);
    // The unclosed `[reviews` on line 6 is noticed at the `:` of `http:` on line 7.
    assert_eq!((d.line, d.column), (7, 7));
    assert_eq!(d.kind, None);
    assert_eq!(d.field, None);
    assert!(
        d.message.starts_with("YAML syntax error: "),
        "{}",
        d.message
    );
}

#[test]
fn syntax_error_keeps_earlier_documents() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  \
                - port: 80\n---\nkey: [unclosed\n";
    let (resources, diagnostics) = parse_str(Path::new("x.yaml"), text);
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].value.name(), "a");
    assert_eq!(errors(&diagnostics).len(), 1);
    assert_eq!(diagnostics[0].line, 10);
}

#[test]
fn missing_kind_is_an_error() {
    let (path, text) = data("invalid/missing-kind.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert!(resources.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!((d.line, d.column), (1, 1));
    assert_eq!(d.field.as_deref(), Some("kind"));
    assert_eq!(d.message, "missing required field kind");
    // The name is still reported, so the user knows which resource it is.
    assert_eq!(d.name.as_deref(), Some("reviews"));
}

#[test]
fn weights_not_adding_up_is_an_error_at_the_route() {
    let (path, text) = data("invalid/weights-110.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert!(resources.is_empty());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.field.as_deref(), Some("spec.http[0].route"));
    assert_eq!((d.line, d.column), (9, 5));
    assert!(
        d.message.starts_with("total destination weight 110 != 100"),
        "{}",
        d.message
    );
}

#[test]
fn unimplemented_field_warns_and_resource_loads() {
    let (path, text) = data("warnings/cors.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    assert_eq!(resources.len(), 1);
    let Resource::VirtualService(vs) = &resources[0].value else {
        panic!("expected a VirtualService");
    };
    assert_eq!(vs.meta.namespace.as_deref(), Some("bookinfo"));
    // Typed: a typo inside `corsPolicy` would have been an error.
    assert!(vs.spec.http[0].cors_policy.is_some());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Warning);
    assert_eq!((d.line, d.column), (14, 5));
    assert_eq!(d.field.as_deref(), Some("spec.http[0].corsPolicy"));
    assert!(
        d.message.contains("not supported by the mesh"),
        "{}",
        d.message
    );
    assert!(
        d.to_string().starts_with(&format!(
            "{}:14:5: warning: VirtualService bookinfo/ratings: ",
            path.display()
        )),
        "{d}"
    );
}

#[test]
fn missing_required_field_points_at_its_parent() {
    let d = single_error(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n\
         spec:\n  hosts: [r]\n  http:\n  - route:\n    - destination:\n        subset: v1\n",
    );
    assert_eq!(
        d.field.as_deref(),
        Some("spec.http[0].route[0].destination.host")
    );
    assert_eq!(d.message, "missing field `host`");
    assert_eq!((d.line, d.column), (9, 7));
}

#[test]
fn missing_name_is_an_error() {
    let d = single_error("apiVersion: v1\nkind: Service\nmetadata:\n  labels: {a: b}\nspec:\n  ports:\n  - port: 80\n");
    assert_eq!(d.field.as_deref(), Some("metadata.name"));
    assert_eq!(d.message, "missing field `name`");
    assert_eq!((d.line, d.column), (3, 1));
}

#[test]
fn invalid_names_are_errors() {
    let d = single_error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: Reviews\n\
         spec:\n  host: reviews\n",
    );
    assert_eq!(d.field.as_deref(), Some("metadata.name"));
    assert_eq!((d.line, d.column), (4, 9));
    assert!(d.message.contains("DNS-1123 subdomain"), "{}", d.message);
}

#[test]
fn duplicate_subset_names_are_errors() {
    let d = single_error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\n\
         spec:\n  host: reviews\n  subsets:\n  - name: v1\n  - name: v1\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.subsets[1].name"));
    assert_eq!((d.line, d.column), (9, 11));
    assert_eq!(
        d.message,
        "duplicate subset name \"v1\" (also used at index 0)"
    );
}

#[test]
fn workload_entry_port_out_of_range() {
    let d = single_error(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w\n\
         spec:\n  address: 10.0.0.1\n  ports:\n    http: 99999\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.ports.http"));
    assert_eq!((d.line, d.column), (8, 11));
    assert_eq!(d.message, "port 99999 must be between 1 and 65535");
}

#[test]
fn service_port_out_of_u16_range_is_a_type_error() {
    let d = single_error(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 70000\n",
    );
    assert_eq!(d.field.as_deref(), Some("spec.ports[0].port"));
    assert_eq!((d.line, d.column), (7, 11));
    assert_eq!(d.message, "invalid value: integer `70000`, expected u16");
}

#[test]
fn duplicate_yaml_keys_are_errors() {
    let d = single_error(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n    \
         port: 81\n",
    );
    assert_eq!((d.line, d.column), (8, 5));
    assert_eq!(d.message, "duplicate key \"port\" (first at line 7)");
    assert_eq!(d.kind.as_deref(), Some("Service"));
}

#[test]
fn kinds_not_supported_yet_and_kubernetes_kinds_warn() {
    let text =
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec: {}\n\
                ---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec: {}\n\
                ---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata:\n  \
                name: r\n";
    let (resources, diagnostics) = parse_str(Path::new("k.yaml"), text);
    assert!(resources.is_empty());
    let got: Vec<(Severity, usize, &str)> = diagnostics
        .iter()
        .map(|d| (d.severity, d.line, d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Severity::Warning,
                2,
                "kind Gateway (networking.istio.io) is not supported yet and is ignored"
            ),
            (
                Severity::Warning,
                8,
                "kind Deployment (apps) is a Kubernetes kind the mesh does not use; skipped"
            ),
            (
                Severity::Warning,
                14,
                "kind TLSRoute (gateway.networking.k8s.io) is not supported yet and is ignored"
            ),
        ]
    );
}

#[test]
fn unknown_kind_is_an_error() {
    let d = single_error("apiVersion: v1\nkind: Servce\nmetadata:\n  name: s\n");
    assert_eq!((d.line, d.column), (2, 7));
    assert_eq!(d.field.as_deref(), Some("kind"));
    assert_eq!(d.message, "unknown kind Servce (apiVersion v1)");
}

#[test]
fn wrong_api_version_is_an_error() {
    let d = single_error(
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  \
         hosts: [r]\n",
    );
    assert!(
        d.message.starts_with(
            "apiVersion networking.istio.io/v2 is not supported for kind VirtualService"
        ),
        "{}",
        d.message
    );
}

#[test]
fn kubernetes_bookkeeping_metadata_warns() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  uid: 1234\n  \
                resourceVersion: \"7\"\nspec:\n  type: ClusterIP\n  ports:\n  - port: 80\n\
                status:\n  loadBalancer: {}\n";
    let (resources, diagnostics) = parse_str(Path::new("s.yaml"), text);
    assert_eq!(resources.len(), 1);
    let got: Vec<(usize, Option<&str>)> = diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Warning);
            (d.line, d.field.as_deref())
        })
        .collect();
    assert_eq!(
        got,
        [
            (5, Some("metadata.uid")),
            (6, Some("metadata.resourceVersion")),
            (8, Some("spec.type")),
            (11, Some("status")),
        ]
    );
}

#[test]
fn metadata_typo_is_an_error() {
    let d = single_error("apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namspace: x\nspec:\n  ports:\n  - port: 80\n");
    assert_eq!(d.field.as_deref(), Some("metadata.namspace"));
    assert_eq!((d.line, d.column), (5, 3));
}

#[test]
fn anchors_and_quoted_numbers() {
    let text = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w\n  \
                labels: &l\n    version: \"1\"\nspec:\n  address: 10.0.0.1\n  labels: *l\n  \
                ports:\n    http: 8080\n";
    let (resources, diagnostics) = parse_str(Path::new("a.yaml"), text);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let Resource::WorkloadEntry(we) = &resources[0].value else {
        panic!("expected a WorkloadEntry");
    };
    assert_eq!(we.spec.labels, labels(&[("version", "1")]));
    assert_eq!(we.meta.labels, we.spec.labels);
    assert_eq!(we.spec.ports, BTreeMap::from([("http".to_owned(), 8080)]));
}

#[test]
fn aliases_do_not_cross_documents() {
    let text = "a: &x 1\n---\nb: *x\n";
    let (_, diagnostics) = parse_str(Path::new("a.yaml"), text);
    let errs = errors(&diagnostics);
    assert!(!errs.is_empty(), "{diagnostics:#?}");
    assert!(errs.iter().any(|d| d.line == 3), "{diagnostics:#?}");
}

#[test]
fn located_serializes_for_json_output() {
    let (path, text) = data("warnings/cors.yaml");
    let (resources, diagnostics) = parse_str(&path, &text);
    let located: &Located<Resource> = &resources[0];
    let json = serde_json::to_value(located).unwrap();
    assert_eq!(json["line"], 1);
    assert_eq!(json["value"]["kind"], "VirtualService");
    let json = serde_json::to_value(&diagnostics[0]).unwrap();
    assert_eq!(json["severity"], "warning");
    assert_eq!(json["line"], 14);
    assert_eq!(json["field"], "spec.http[0].corsPolicy");
}
