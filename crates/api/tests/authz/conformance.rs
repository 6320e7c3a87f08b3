//! The AuthorizationPolicies and PeerAuthentications of Istio's conformance inputs compile,
//! or are refused by name.

use super::*;

// === conformance inputs ===

fn conformance(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance/istio")
        .join(relative);
    assert!(
        path.is_file(),
        "conformance input missing: {} does not exist",
        path.display()
    );
    path
}

/// Every AuthorizationPolicy of a conformance file, by name, with its compile outcome.
fn compile_file(relative: &str) -> Vec<(String, Result<Policy, PolicyError>)> {
    let path = conformance(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    load_clean(&path, &text)
        .into_iter()
        .filter_map(|r| match r.value {
            Resource::AuthorizationPolicy(ap) => Some((ap.meta.name.clone(), Policy::compile(&ap))),
            _ => None,
        })
        .collect()
}

#[test]
fn conformance_analysis_policies_compile() {
    let compiled = compile_file("analysis/authorizationpolicies.yaml");
    let names: Vec<&str> = compiled.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "httpbin",
            "meshwide-httpbin",
            "meshwide-httpbin-v1",
            "httpbin-empty-namespace-wide",
            "httpbin-namespace-wide",
            "httpbin-nopods",
            "httpbin-bogus-not-ns",
            "httpbin-bogus-ns",
            "no-workload",
            "valid-policy",
        ]
    );
    for (name, result) in &compiled {
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
    // The documentation example: GET /info from sleep is allowed only with a Google JWT,
    // which no request has in this mesh.
    let httpbin: Vec<Policy> = compiled
        .into_iter()
        .filter(|(n, _)| n == "httpbin")
        .filter_map(|(_, r)| r.ok())
        .collect();
    assert_eq!(httpbin.len(), 1);
    expect(
        &httpbin,
        &[(
            get("/info").from("default", "sleep"),
            "denied: none of the 1 ALLOW policies that apply matched",
        )],
    );
}

#[test]
fn conformance_valid_policies_compile_or_are_refused_by_name() {
    let compiled = compile_file("validation/authz-valid.yaml");
    let outcome: Vec<(&str, Result<(), String>)> = compiled
        .iter()
        .map(|(name, r)| {
            (
                name.as_str(),
                r.as_ref().map(|_| ()).map_err(ToString::to_string),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            // Trust domains are enforced; the Envoy filter metadata condition is not
            // something a mesh without Envoy has.
            (
                "full",
                Err(
                    "AuthorizationPolicy default/full: spec.rules[0].when[14].key: condition key \
                     experimental.envoy.filters.a.b[c] is not supported by the mesh"
                        .to_owned()
                )
            ),
            ("service-account-and-namespace-principal-split", Ok(())),
        ]
    );
}

#[test]
fn conformance_peer_authentications_compile() {
    let path = conformance("validation/peerauth-valid.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let names: Vec<String> = load_clean(&path, &text)
        .iter()
        .map(|r| match &r.value {
            Resource::PeerAuthentication(pa) => match PeerAuthPolicy::compile(pa) {
                Ok(p) => p.name,
                Err(e) => panic!("{e}"),
            },
            other => panic!("unexpected {}", other.kind()),
        })
        .collect();
    assert_eq!(names, ["full", "partial-selector"]);
}
