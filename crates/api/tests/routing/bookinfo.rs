//! Istio's Bookinfo VirtualServices (`samples/bookinfo/networking`), with the Bookinfo
//! Services and DestinationRules, routed as Istio's task pages describe: request routing
//! (all to v1, then Jason to v2), traffic shifting (90/10, 50/50), fault injection (a 7 s
//! delay and an HTTP 500 for Jason, a 555 for everyone).

use std::time::Duration;

use trellis_api::routing::{AbortStatus, RetryPolicy};

use super::*;

/// The Bookinfo Services and subsets, then the given networking files.
fn bookinfo(files: &[&str]) -> Mesh {
    let mut paths = vec![
        conformance("istio/samples/bookinfo/platform/kube/bookinfo.yaml"),
        conformance("istio/samples/bookinfo/networking/destination-rule-all.yaml"),
    ];
    paths.extend(
        files
            .iter()
            .map(|f| conformance(&format!("istio/samples/bookinfo/networking/{f}"))),
    );
    let mesh = Mesh::compile(&paths);
    assert!(
        mesh.routes.warnings.is_empty(),
        "{:#?}",
        mesh.routes.warnings
    );
    mesh
}

/// productpage (in `default`) calling `service` on 9080.
fn call(service: &'static str) -> Request {
    Request::get("default", service, 9080, "/").labels(&[("app", "productpage"), ("version", "v1")])
}

fn as_jason(req: Request) -> Request {
    req.header("end-user", "jason")
}

fn subset(mesh: &Mesh, req: &Request) -> String {
    let f = mesh.forward(req);
    format!("{}/{}", f.service, f.subset.unwrap_or_default())
}

#[test]
fn all_v1() {
    let mesh = bookinfo(&["virtual-service-all-v1.yaml"]);
    for service in ["productpage", "reviews", "ratings", "details"] {
        let f = mesh.forward(&call(service));
        assert_eq!(f.service, service);
        assert_eq!(f.subset.as_deref(), Some("v1"));
        // Unchanged on its way, but with Istio's default retries.
        assert_eq!(f.path_and_query, "/");
        assert_eq!(f.filters.retries, Some(RetryPolicy::mesh_default()));
        assert_eq!(f.filters.fault, None);
    }
}

#[test]
fn reviews_test_v2_sends_jason_to_v2() {
    // Applied over all-v1 in the task, it replaces that file's `reviews` (same name).
    let mesh = bookinfo(&["virtual-service-reviews-test-v2.yaml"]);
    assert_eq!(subset(&mesh, &as_jason(call("reviews"))), "reviews/v2");
    assert_eq!(
        subset(&mesh, &call("reviews").header("End-User", "jason")),
        "reviews/v2"
    );
    assert_eq!(subset(&mesh, &call("reviews")), "reviews/v1");
    assert_eq!(
        subset(&mesh, &call("reviews").header("end-user", "Jason")),
        "reviews/v1"
    );
    assert_eq!(
        subset(&mesh, &call("reviews").header("end-user", "jason2")),
        "reviews/v1"
    );
}

#[test]
fn reviews_90_10_and_50_50() {
    for (file, split) in [
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
    ] {
        let mesh = bookinfo(&[file]);
        // Every residue of the total weight once: exactly the split.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for random in 0..100 {
            let name = match mesh.send_with(&call("reviews"), random) {
                Outcome::Forwarded(f) => f.subset.unwrap_or_default(),
                other => format!("{other:?}"),
            };
            *seen.entry(name).or_default() += 1;
        }
        let want: BTreeMap<String, usize> =
            split.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        assert_eq!(seen, want, "{file}");
    }
}

#[test]
fn reviews_v3_and_jason_v2_v3() {
    let mesh = bookinfo(&["virtual-service-reviews-v3.yaml"]);
    assert_eq!(subset(&mesh, &as_jason(call("reviews"))), "reviews/v3");
    let mesh = bookinfo(&["virtual-service-reviews-jason-v2-v3.yaml"]);
    assert_eq!(subset(&mesh, &as_jason(call("reviews"))), "reviews/v2");
    assert_eq!(subset(&mesh, &call("reviews")), "reviews/v3");
}

#[test]
fn ratings_test_delay_delays_jason_by_7s() {
    let mesh = bookinfo(&["virtual-service-ratings-test-delay.yaml"]);
    let f = mesh.forward(&as_jason(call("ratings")));
    assert_eq!(f.subset.as_deref(), Some("v1"));
    let delay = f
        .filters
        .fault
        .and_then(|fault| fault.delay)
        .expect("a delay");
    assert_eq!(
        (delay.duration, delay.percent),
        (Duration::from_secs(7), 100.0)
    );
    let f = mesh.forward(&call("ratings"));
    assert_eq!(f.subset.as_deref(), Some("v1"));
    assert_eq!(f.filters.fault, None);
}

#[test]
fn ratings_test_abort_answers_jason_500() {
    let mesh = bookinfo(&["virtual-service-ratings-test-abort.yaml"]);
    let f = mesh.forward(&as_jason(call("ratings")));
    let abort = f
        .filters
        .fault
        .and_then(|fault| fault.abort)
        .expect("an abort");
    assert_eq!(
        (abort.status, abort.percent),
        (AbortStatus::Http(500), 100.0)
    );
    assert_eq!(mesh.forward(&call("ratings")).filters.fault, None);
}

#[test]
fn details_fault_injection_aborts_everyone_with_555() {
    let mesh = bookinfo(&["fault-injection-details-v1.yaml"]);
    let f = mesh.forward(&call("details"));
    assert_eq!(f.rule, "default/details/0");
    let abort = f
        .filters
        .fault
        .and_then(|fault| fault.abort)
        .expect("an abort");
    assert_eq!(
        (abort.status, abort.percent),
        (AbortStatus::Http(555), 100.0)
    );
}

#[test]
fn ratings_db_and_details_v2() {
    let mesh = bookinfo(&[
        "virtual-service-ratings-db.yaml",
        "virtual-service-details-v2.yaml",
    ]);
    assert_eq!(subset(&mesh, &call("reviews")), "reviews/v3");
    assert_eq!(subset(&mesh, &call("ratings")), "ratings/v2");
    assert_eq!(subset(&mesh, &call("details")), "details/v2");
    // Not routed: plain balancing.
    assert!(matches!(
        mesh.send_with(&call("productpage"), 0),
        Outcome::Unrouted { service } if service == "productpage"
    ));
}

#[test]
fn the_ingress_virtual_service_does_not_route_the_mesh() {
    // Bound to `bookinfo-gateway` only (and for host `*`): ingress, not sidecars.
    let mesh = bookinfo(&["bookinfo-gateway.yaml"]);
    assert!(mesh.routes.tables.is_empty());
}
