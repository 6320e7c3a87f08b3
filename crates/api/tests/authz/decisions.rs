//! The decision order (DENY, ALLOW, default), AUDIT, dry-run, and which policies apply
//! to which workload.

use super::*;

// === the decision order ===

#[test]
fn no_policy_allows() {
    expect(
        &[],
        &[
            (get("/"), ALLOWED_BY_DEFAULT),
            (tcp(5432), ALLOWED_BY_DEFAULT),
        ],
    );
}

#[test]
fn deny_before_allow_then_default_deny() {
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-read}
spec:
  rules:
  - to: [{operation: {methods: [DELETE]}}]
    from: [{source: {principals: [cluster.local/ns/admin/sa/root]}}]
  - to: [{operation: {methods: [GET, POST]}}]
"#,
    );
    expect(
        &ps,
        &[
            (
                get("/x"),
                "allowed by ALLOW policy default/allow-read (rule 1)",
            ),
            (
                http("POST", "/x"),
                "denied by DENY policy default/deny-post (rule 0)",
            ),
            (
                http("PUT", "/x"),
                "denied: none of the 1 ALLOW policies that apply matched",
            ),
            (
                http("DELETE", "/x"),
                "denied: none of the 1 ALLOW policies that apply matched",
            ),
            (
                http("DELETE", "/x").from("admin", "root"),
                "allowed by ALLOW policy default/allow-read (rule 0)",
            ),
        ],
    );
}

#[test]
fn empty_policies_and_allow_all() {
    let allow_nothing = policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: allow-nothing}\nspec: {}\n",
    );
    let deny = "denied: none of the 1 ALLOW policies that apply matched";
    expect(&allow_nothing, &[(get("/"), deny), (tcp(80), deny)]);

    let allow_all = policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: allow-all}\nspec:\n  rules:\n  - {}\n",
    );
    let allowed = "allowed by ALLOW policy default/allow-all (rule 0)";
    expect(&allow_all, &[(get("/"), allowed), (tcp(80), allowed)]);

    // With action DENY the same shapes deny nothing and everything.
    let deny_nothing = policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: d}\nspec: {action: DENY}\n",
    );
    expect(&deny_nothing, &[(get("/"), ALLOWED_BY_DEFAULT)]);
    let deny_all = policies(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: d}\nspec:\n  action: DENY\n  rules:\n  - {}\n",
    );
    let denied = "denied by DENY policy default/d (rule 0)";
    expect(&deny_all, &[(get("/"), denied), (tcp(80), denied)]);

    // An ALLOW-all does not override a DENY.
    let both = [deny_all, allow_all].concat();
    expect(&both, &[(get("/"), denied)]);
}

#[test]
fn audit_marks_but_never_decides() {
    let audit = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/user/profile/*"]}}]
"#;
    let alone = policies(audit);
    expect(
        &alone,
        &[
            (
                get("/user/profile/1"),
                "allowed: no ALLOW policy applies and no DENY policy matched; audited by AUDIT \
                 policy default/audit (rule 0)",
            ),
            (get("/other"), ALLOWED_BY_DEFAULT),
            // On TCP the path is dropped from the AUDIT rule: every connection is audited.
            (
                tcp(5432),
                "allowed: no ALLOW policy applies and no DENY policy matched; audited by AUDIT \
                 policy default/audit (rule 0)",
            ),
        ],
    );
    let with_allow = policies(&format!(
        "{audit}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: allow-get}}\nspec:\n  rules:\n  - to: [{{operation: {{methods: [GET]}}}}]\n"
    ));
    expect(
        &with_allow,
        &[
            (
                http("POST", "/user/profile/1"),
                "denied: none of the 1 ALLOW policies that apply matched; audited by AUDIT \
                 policy default/audit (rule 0)",
            ),
            (
                get("/user/profile/1"),
                "allowed by ALLOW policy default/allow-get (rule 0); audited by AUDIT policy \
                 default/audit (rule 0)",
            ),
        ],
    );
}

#[test]
fn dry_run_is_reported_not_enforced() {
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-deny
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/headers"]}}]
"#,
    );
    expect(
        &ps,
        &[
            (
                get("/headers"),
                "allowed: no ALLOW policy applies and no DENY policy matched; with dry-run \
                 policies: denied by DENY policy default/dry-deny (rule 0)",
            ),
            (
                get("/ip"),
                "allowed: no ALLOW policy applies and no DENY policy matched; with dry-run \
                 policies: allowed: no ALLOW policy applies and no DENY policy matched",
            ),
        ],
    );
    let decision = get("/headers").decide(&ps);
    assert!(decision.allow());
    let would = decision.dry_run.unwrap();
    assert!(!would.allow);
    assert_eq!(
        would.policy.map(|m| m.policy.name.as_str()),
        Some("dry-deny")
    );

    // A dry-run ALLOW next to an enforced one: the outcome with both enforced.
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-post}
spec:
  rules:
  - to: [{operation: {methods: [POST]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-allow-get
  annotations: {istio.io/dry-run: "true"}
spec:
  rules:
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-audit
  annotations: {istio.io/dry-run: "true"}
spec:
  action: AUDIT
  rules:
  - {}
"#,
    );
    expect(
        &ps,
        &[
            (
                get("/"),
                "denied: none of the 1 ALLOW policies that apply matched; with dry-run \
                 policies: allowed by ALLOW policy default/dry-allow-get (rule 0)",
            ),
            (
                http("POST", "/"),
                "allowed by ALLOW policy default/allow-post (rule 0); with dry-run policies: \
                 allowed by ALLOW policy default/allow-post (rule 0)",
            ),
            (
                http("PUT", "/"),
                "denied: none of the 1 ALLOW policies that apply matched; with dry-run \
                 policies: denied: none of the 2 ALLOW policies that apply matched",
            ),
        ],
    );

    // Only a dry-run AUDIT: no dry-run outcome, no audit.
    let audit_only = [ps[2].clone()];
    expect(&audit_only, &[(get("/"), ALLOWED_BY_DEFAULT)]);
}

// === which policies apply ===

#[test]
fn selectors_and_target_refs() {
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: trellis-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-reviews, namespace: trellis-system}
spec:
  selector: {matchLabels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-service-x, namespace: trellis-system}
spec:
  targetRefs: [{kind: Service, name: x}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-v2, namespace: default}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: service-reviews, namespace: default}
spec:
  targetRefs: [{kind: Service, name: reviews}]
"#,
    );
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let reviews_v1 = labels(&[("app", "reviews"), ("version", "v1")]);
    let reviews_v2 = labels(&[("app", "reviews"), ("version", "v2")]);
    let x = labels(&[("app", "x")]);
    let reviews_svc = ["reviews".to_owned()];
    let x_svc = ["x".to_owned()];
    let cases: [(Workload<'_>, &[&str]); 5] = [
        (
            Workload {
                namespace: "default",
                labels: &reviews_v1,
                services: &reviews_svc,
            },
            &["mesh-wide", "mesh-reviews", "ns-wide", "service-reviews"],
        ),
        (
            Workload {
                namespace: "default",
                labels: &reviews_v2,
                services: &[],
            },
            &["mesh-wide", "mesh-reviews", "ns-wide", "reviews-v2"],
        ),
        (
            Workload {
                namespace: "other",
                labels: &reviews_v2,
                services: &reviews_svc,
            },
            &["mesh-wide", "mesh-reviews"],
        ),
        (
            // A Service named x outside the root namespace is not the one targeted.
            Workload {
                namespace: "default",
                labels: &x,
                services: &x_svc,
            },
            &["mesh-wide", "ns-wide"],
        ),
        (
            Workload {
                namespace: "trellis-system",
                labels: &x,
                services: &x_svc,
            },
            &["mesh-wide", "mesh-service-x"],
        ),
    ];
    for (workload, want) in cases {
        let got: Vec<&str> = ps
            .iter()
            .filter(|p| applies_to(p, &workload, DEFAULT_ROOT_NAMESPACE))
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(got, want, "{workload:?}");
    }

    // The root namespace is a setting: with another root, trellis-system is an ordinary
    // namespace.
    let w = Workload {
        namespace: "default",
        labels: &reviews_v1,
        services: &[],
    };
    let got: Vec<&str> = ps
        .iter()
        .filter(|p| applies_to(p, &w, "istio-system"))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(got, ["ns-wide"]);
}
