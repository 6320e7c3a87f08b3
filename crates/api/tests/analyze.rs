//! `trellis_api::analyze` over the Istio analysis conformance inputs: for every file, the
//! exact set of (code, kind, namespace/name) findings its comments call for, and nothing
//! else. The tables are written by hand from the comments in the files (and, for the files
//! without comments, from what their resource names say they exercise).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use trellis_api::analyze::{analyze, documents, Finding};

/// The conformance directory; the test fails loudly when it is missing rather than
/// passing on nothing.
fn dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/istio/analysis");
    assert!(
        dir.is_dir(),
        "conformance inputs missing: {} does not exist",
        dir.display()
    );
    dir
}

fn findings(file: &str) -> Vec<Finding> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    analyze(&documents(&path, &text))
}

/// (code, "Kind ns/name") pairs.
fn set(findings: &[Finding]) -> BTreeSet<(String, String)> {
    findings
        .iter()
        .map(|f| {
            (
                f.code.to_owned(),
                format!("{} {}/{}", f.kind, f.namespace, f.name),
            )
        })
        .collect()
}

fn expect(file: &str, expected: &[(&str, &str)]) {
    let found = findings(file);
    let want: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(c, r)| ((*c).to_owned(), (*r).to_owned()))
        .collect();
    let got = set(&found);
    let listing: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        want,
        "{file}: findings differ\nall findings:\n{}",
        listing.join("\n")
    );
    for f in &found {
        assert!(f.line > 0, "{f}");
        assert!(!f.field.is_empty(), "{f}");
    }
}

const NOT_FOUND: &str = "ReferencedResourceNotFound";
const NO_WORKLOADS: &str = "NoMatchingWorkloadsFound";
const MESH_CONFLICT: &str = "ConflictingMeshGatewayVirtualServiceHosts";
const UNREACHABLE: &str = "VirtualServiceUnreachableRule";
const INEFFECTIVE: &str = "VirtualServiceIneffectiveMatch";
const PORT_NAME: &str = "PortNameIsNotUnderNamingConvention";

#[test]
fn every_input_file_has_a_table() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("conformance directory is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(files, TABLED, "a conformance file was added or removed");
}

/// The files the tests below cover, sorted.
const TABLED: [&str; 11] = [
    "authorizationpolicies.yaml",
    "destinationrule-mutual-destination.yaml",
    "destinationrule-subsets-not-select-pods.yaml",
    "peerauthentication-crd.yaml",
    "service-no-port-name.yaml",
    "service-port-name.yaml",
    "virtualservice_conflictingmeshgatewayhosts.yaml",
    "virtualservice_destinationhosts.yaml",
    "virtualservice_destinationrules.yaml",
    "virtualservice_dupmatches.yaml",
    "virtualservice_overlappingmatches.yaml",
];

#[test]
fn authorization_policies() {
    expect(
        "authorizationpolicies.yaml",
        &[
            (
                NO_WORKLOADS,
                "AuthorizationPolicy istio-system/meshwide-httpbin-v1",
            ),
            (
                NO_WORKLOADS,
                "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
            ),
            (NO_WORKLOADS, "AuthorizationPolicy httpbin/httpbin-nopods"),
            (NO_WORKLOADS, "AuthorizationPolicy test-ambient/no-workload"),
            (
                NOT_FOUND,
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
            ),
            (NOT_FOUND, "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
        ],
    );
}

#[test]
fn authorization_policy_bogus_namespaces_are_each_reported() {
    let found = findings("authorizationpolicies.yaml");
    let fields: BTreeSet<&str> = found
        .iter()
        .filter(|f| f.code == NOT_FOUND)
        .map(|f| f.field.as_str())
        .collect();
    let want: BTreeSet<&str> = [
        "spec.rules[0].from[1].source.notNamespaces[2]",
        "spec.rules[0].from[1].source.notNamespaces[3]",
        "spec.rules[0].from[1].source.namespaces[2]",
        "spec.rules[0].from[1].source.namespaces[3]",
    ]
    .into_iter()
    .collect();
    assert_eq!(fields, want);
}

#[test]
fn destination_rule_mutual_without_ca() {
    expect(
        "destinationrule-mutual-destination.yaml",
        &[(
            "NoServerCertificateVerificationDestinationLevel",
            "DestinationRule default/db-mtls",
        )],
    );
}

#[test]
fn destination_rule_subsets_not_selecting_pods() {
    expect(
        "destinationrule-subsets-not-select-pods.yaml",
        &[(
            "DestinationRuleSubsetNotSelectPods",
            "DestinationRule default/subsets-not-select-pods",
        )],
    );
}

#[test]
fn peer_authentication_crd_is_not_a_resource() {
    expect("peerauthentication-crd.yaml", &[]);
}

#[test]
fn service_ports_without_names() {
    expect(
        "service-no-port-name.yaml",
        &[
            (PORT_NAME, "Service my-namespace1/my-service1"),
            (PORT_NAME, "Service my-namespace2/my-service2"),
        ],
    );
}

#[test]
fn service_port_names_following_convention_or_managed() {
    expect("service-port-name.yaml", &[]);
}

#[test]
fn conflicting_mesh_gateway_hosts() {
    expect(
        "virtualservice_conflictingmeshgatewayhosts.yaml",
        &[
            (MESH_CONFLICT, "VirtualService foo/productpage"),
            (MESH_CONFLICT, "VirtualService foo/bogus-productpage"),
            (MESH_CONFLICT, "VirtualService foo/ratings"),
            (MESH_CONFLICT, "VirtualService bar/ratings"),
            (MESH_CONFLICT, "VirtualService team2/ratings"),
            (MESH_CONFLICT, "VirtualService team3/ratings"),
            (MESH_CONFLICT, "VirtualService team4/ratings"),
        ],
    );
}

#[test]
fn destination_hosts() {
    expect(
        "virtualservice_destinationhosts.yaml",
        &[
            (NOT_FOUND, "VirtualService default/reviews-bogushost"),
            (NOT_FOUND, "VirtualService default/reviews-bookinfo-other"),
            (NOT_FOUND, "VirtualService default/reviews-mirror-bogushost"),
            (NOT_FOUND, "VirtualService default/reviews-bogusport"),
            (
                "VirtualServiceDestinationPortSelectorRequired",
                "VirtualService default/reviews-2port-missing",
            ),
            (
                NOT_FOUND,
                "VirtualService istio-system/cross-namespace-details",
            ),
            (NOT_FOUND, "VirtualService hello/hello-export-to-bogus"),
        ],
    );
}

#[test]
fn destination_subsets() {
    expect(
        "virtualservice_destinationrules.yaml",
        &[
            (NOT_FOUND, "VirtualService default/reviews-bogussubset"),
            (
                NOT_FOUND,
                "VirtualService default/reviews-mirror-bogussubset",
            ),
        ],
    );
}

#[test]
fn duplicate_matches() {
    expect(
        "virtualservice_dupmatches.yaml",
        &[
            (UNREACHABLE, "VirtualService foo/sample-foo-cluster01"),
            (UNREACHABLE, "VirtualService default/duplicate-match"),
            (INEFFECTIVE, "VirtualService default/almost-duplicate-match"),
            (UNREACHABLE, "VirtualService default/duplicate-tcp-match"),
            (UNREACHABLE, "VirtualService default/duplicate-empty-tcp"),
            (
                INEFFECTIVE,
                "VirtualService default/almost-duplicate-tcp-match",
            ),
            (UNREACHABLE, "VirtualService none/tls-routing"),
            (INEFFECTIVE, "VirtualService none/tls-routing-almostmatch"),
        ],
    );
}

#[test]
fn overlapping_matches() {
    expect(
        "virtualservice_overlappingmatches.yaml",
        &[
            (INEFFECTIVE, "VirtualService default/non-method-get"),
            (
                INEFFECTIVE,
                "VirtualService default/overlapping-in-single-match",
            ),
            (
                INEFFECTIVE,
                "VirtualService default/overlapping-in-two-matches",
            ),
            (
                INEFFECTIVE,
                "VirtualService default/overlapping-mathes-with-different-methods",
            ),
            // All five are bound to the mesh gateway for the same host in one namespace:
            // analysed together, they really do conflict.
            (MESH_CONFLICT, "VirtualService default/non-method-get"),
            (
                MESH_CONFLICT,
                "VirtualService default/uri-with-prefix-exact",
            ),
            (
                MESH_CONFLICT,
                "VirtualService default/overlapping-in-single-match",
            ),
            (
                MESH_CONFLICT,
                "VirtualService default/overlapping-in-two-matches",
            ),
            (
                MESH_CONFLICT,
                "VirtualService default/overlapping-mathes-with-different-methods",
            ),
        ],
    );
}

/// No conformance file has competing PeerAuthentications, so this one is inline.
#[test]
fn conflicting_peer_authentications() {
    let text = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-a, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-b, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns-wide, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: app-1, namespace: foo}
spec: {selector: {matchLabels: {app: a, version: v1}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: app-2, namespace: foo}
spec: {selector: {matchLabels: {version: v1, app: a}}}
";
    let found = analyze(&documents(Path::new("inline.yaml"), text));
    let want: BTreeSet<(String, String)> = [
        "PeerAuthentication istio-system/mesh-a",
        "PeerAuthentication istio-system/mesh-b",
        "PeerAuthentication foo/app-1",
        "PeerAuthentication foo/app-2",
    ]
    .into_iter()
    .map(|r| ("ConflictingPeerAuthentication".to_owned(), r.to_owned()))
    .collect();
    assert_eq!(set(&found), want);
    let mesh_b = found
        .iter()
        .find(|f| f.name == "mesh-b")
        .expect("mesh-b is reported");
    assert_eq!(mesh_b.line, 6);
}
