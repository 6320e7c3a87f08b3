//! What a registration may claim: each field of a `Register`, as an attacker holding a join
//! token for its own identity would fill it in.

use super::*;

/// The details workload of bookinfo, a second workload in another namespace, and a Service
/// selecting details.
const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: details}
spec:
  selector: {app: details}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-v1}
spec:
  address: 10.0.0.5
  serviceAccount: bookinfo-details
  labels: {app: details, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ledger, namespace: billing}
spec:
  address: 10.0.1.7
  serviceAccount: ledger
  labels: {app: ledger}
"#;

fn config() -> ConfigSet {
    let (resources, diags) = trellis_api::load::parse_str(std::path::Path::new("t.yaml"), CONFIG);
    assert!(diags.is_empty(), "{diags:?}");
    ConfigSet {
        resources,
        warnings: Vec::new(),
        hash: String::new(),
    }
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa)
}

/// A registration as `ns/sa`'s proxy would send it.
fn register(
    ns: &str,
    sa: &str,
    name: &str,
    address: &str,
    labels: &[(&str, &str)],
) -> proto::Register {
    proto::Register {
        workload_name: name.into(),
        namespace: ns.into(),
        service_account: sa.into(),
        address: address.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        inbound_port: 15008,
        ports: [("http".to_string(), 9080)].into_iter().collect(),
    }
}

#[test]
fn the_workload_s_own_proxy_is_admitted_here_or_elsewhere() {
    let details = id("default", "bookinfo-details");
    let labels = [("app", "details"), ("version", "v1")];
    for (address, claimed) in [
        ("10.0.0.5", &labels[..]),
        // Moved (a VM with a new IP, `up --netns`): the entry follows its proxy.
        ("198.18.0.2", &labels[..]),
        // Claiming fewer labels is no claim: the entry's are what Services select.
        ("10.0.0.5", &[][..]),
    ] {
        let r = register(
            "default",
            "bookinfo-details",
            "details-v1",
            address,
            claimed,
        );
        let w = admit(&details, r, &config()).unwrap();
        assert_eq!(w.identity, details.to_string());
        assert_eq!(w.address.to_string(), address);
        assert_eq!(w.ports["http"], 9080);
    }
}

#[test]
fn a_proxy_no_entry_names_is_admitted_as_a_client() {
    // Admitted so that it gets snapshots; the compiler makes it no endpoint, whatever its
    // labels (`compile::tests::a_registration_moves_the_entry_it_names`).
    let r = register(
        "default",
        "attacker",
        "attacker-1",
        "10.0.0.66",
        &[("app", "details")],
    );
    let w = admit(&id("default", "attacker"), r, &config()).unwrap();
    assert_eq!(w.name, "attacker-1");
}

#[test]
fn every_claim_the_certificate_or_the_config_does_not_back_is_refused() {
    let attacker = id("default", "attacker");
    let cases: Vec<(&str, SpiffeId, proto::Register, RegistrationError)> = vec![
        (
            "another namespace than the certificate's",
            attacker.clone(),
            register("billing", "attacker", "a", "10.0.0.66", &[]),
            RegistrationError::NotItsIdentity {
                identity: attacker.to_string(),
                namespace: "billing".into(),
                service_account: "attacker".into(),
            },
        ),
        (
            "another service account than the certificate's",
            attacker.clone(),
            register("default", "bookinfo-details", "details-v1", "10.0.0.5", &[]),
            RegistrationError::NotItsIdentity {
                identity: attacker.to_string(),
                namespace: "default".into(),
                service_account: "bookinfo-details".into(),
            },
        ),
        (
            "the address of details-v1, claiming its labels",
            attacker.clone(),
            register(
                "default",
                "attacker",
                "attacker",
                "10.0.0.5",
                &[("app", "details")],
            ),
            RegistrationError::AnotherEntrysAddress {
                address: "10.0.0.5".parse().unwrap(),
                namespace: "default".into(),
                name: "details-v1".into(),
            },
        ),
        (
            "the address of details-v1, spelled as an IPv4-mapped IPv6 address",
            attacker.clone(),
            register("default", "attacker", "attacker", "::ffff:10.0.0.5", &[]),
            RegistrationError::AnotherEntrysAddress {
                address: "10.0.0.5".parse().unwrap(),
                namespace: "default".into(),
                name: "details-v1".into(),
            },
        ),
        (
            "the address of an entry of another namespace",
            attacker.clone(),
            register("default", "attacker", "attacker", "10.0.1.7", &[]),
            RegistrationError::AnotherEntrysAddress {
                address: "10.0.1.7".parse().unwrap(),
                namespace: "billing".into(),
                name: "ledger".into(),
            },
        ),
        (
            "the name of details-v1, from elsewhere",
            attacker.clone(),
            register("default", "attacker", "details-v1", "10.0.0.66", &[]),
            RegistrationError::NotTheEntrysIdentity {
                namespace: "default".into(),
                name: "details-v1".into(),
                entry_service_account: "bookinfo-details".into(),
                service_account: "attacker".into(),
            },
        ),
        (
            "details' own proxy, with a label its entry does not give it",
            id("default", "bookinfo-details"),
            register(
                "default",
                "bookinfo-details",
                "details-v1",
                "10.0.0.5",
                &[("app", "reviews")],
            ),
            RegistrationError::NotTheEntrysLabel {
                namespace: "default".into(),
                name: "details-v1".into(),
                key: "app".into(),
                claimed: "reviews".into(),
                expected: Some("details".into()),
            },
        ),
        (
            "details' own proxy, with a label its entry does not have",
            id("default", "bookinfo-details"),
            register(
                "default",
                "bookinfo-details",
                "details-v1",
                "10.0.0.5",
                &[("admin", "true")],
            ),
            RegistrationError::NotTheEntrysLabel {
                namespace: "default".into(),
                name: "details-v1".into(),
                key: "admin".into(),
                claimed: "true".into(),
                expected: None,
            },
        ),
        (
            "a certificate for the control plane's identity",
            id("trellis-system", "trellis-control"),
            register(
                "trellis-system",
                "trellis-control",
                "control",
                "10.0.0.70",
                &[],
            ),
            RegistrationError::Reserved {
                identity: id("trellis-system", "trellis-control").to_string(),
            },
        ),
    ];
    for (why, who, r, want) in cases {
        assert_eq!(admit(&who, r, &config()).err(), Some(want), "{why}");
    }
}

#[test]
fn malformed_or_oversized_claims_are_invalid() {
    let attacker = id("default", "attacker");
    let long = "x".repeat(MAX_TEXT + 1);
    let mut many_labels = register("default", "attacker", "a", "10.0.0.66", &[]);
    many_labels.labels = (0..=MAX_ENTRIES)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let mut zero_port = register("default", "attacker", "a", "10.0.0.66", &[]);
    zero_port.inbound_port = 0;
    let mut big_port = register("default", "attacker", "a", "10.0.0.66", &[]);
    big_port.ports.insert("http".into(), 70_000);
    for (why, r) in [
        (
            "no name",
            register("default", "attacker", "", "10.0.0.66", &[]),
        ),
        (
            "a long name",
            register("default", "attacker", &long, "10.0.0.66", &[]),
        ),
        (
            "a long label",
            register("default", "attacker", "a", "10.0.0.66", &[("k", &long)]),
        ),
        (
            "a host name",
            register("default", "attacker", "a", "details", &[]),
        ),
        ("too many labels", many_labels),
        ("mTLS port 0", zero_port),
        ("a port past 65535", big_port),
    ] {
        let got = admit(&attacker, r, &config());
        assert!(
            matches!(&got, Err(e @ RegistrationError::Invalid { .. }) if e.status().code() == tonic::Code::InvalidArgument),
            "{why}: {got:?}"
        );
    }
}
