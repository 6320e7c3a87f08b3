//! Each attribute a rule can test, every `not` form, HTTP-only attributes on TCP, and path
//! tricks against a DENY policy.

use super::*;

// === attributes ===

#[test]
fn principals_namespaces_and_service_accounts() {
    let cases: &[(&str, &[(Call, bool)])] = &[
        (
            "{from: [{source: {principals: [cluster.local/ns/default/sa/sleep]}}]}",
            &[
                (get("/"), true),
                (get("/").from("default", "curl"), false),
                (get("/").principal(None), false),
                (
                    get("/").principal(Some("cluster.local/ns/default/sa/sleep")),
                    false,
                ),
            ],
        ),
        (
            "{from: [{source: {principals: ['*']}}]}",
            &[
                (get("/").from("x", "y"), true),
                (
                    get("/").principal(Some("spiffe://other.domain/custom")),
                    true,
                ),
                (get("/").principal(None), false),
                (tcp(80).principal(None), false),
            ],
        ),
        (
            "{from: [{source: {principals: ['*/sa/sleep', 'cluster.local/ns/prod/*']}}]}",
            &[
                (get("/").from("anywhere", "sleep"), true),
                (get("/").from("prod", "anything"), true),
                (get("/").from("dev", "curl"), false),
            ],
        ),
        (
            "{from: [{source: {notPrincipals: [cluster.local/ns/default/sa/sleep]}}]}",
            &[
                (get("/"), false),
                (get("/").from("default", "curl"), true),
                (get("/").principal(None), true),
            ],
        ),
        (
            "{from: [{source: {trustDomains: [cluster.local, corp-*]}}]}",
            &[
                (get("/"), true),
                (
                    get("/").principal(Some("spiffe://corp-eu/ns/default/sa/sleep")),
                    true,
                ),
                (
                    get("/").principal(Some("spiffe://partner.example/ns/default/sa/sleep")),
                    false,
                ),
                (get("/").principal(None), false),
                (tcp(80).principal(None), false),
            ],
        ),
        (
            "{from: [{source: {notTrustDomains: [partner.example]}}]}",
            &[
                (get("/"), true),
                (
                    get("/").principal(Some("spiffe://partner.example/ns/default/sa/sleep")),
                    false,
                ),
                (get("/").principal(None), true),
            ],
        ),
        (
            "{when: [{key: source.trustDomain, values: [partner.example]}]}",
            &[
                (get("/"), false),
                (
                    tcp(80).principal(Some("spiffe://partner.example/ns/a/sa/b")),
                    true,
                ),
            ],
        ),
        (
            "{from: [{source: {namespaces: [prod-*, default]}}]}",
            &[
                (get("/"), true),
                (get("/").from("prod-eu", "x"), true),
                (get("/").from("dev", "x"), false),
                (get("/").principal(None), false),
            ],
        ),
        (
            "{from: [{source: {notNamespaces: [default]}}]}",
            &[
                (get("/"), false),
                (get("/").from("dev", "sleep"), true),
                (get("/").principal(None), true),
            ],
        ),
        (
            "{from: [{source: {serviceAccounts: [sleep, dev/curl]}}]}",
            &[
                (get("/"), true),
                (get("/").from("dev", "curl"), true),
                (get("/").from("dev", "sleep"), false),
                (get("/").from("default", "curl"), false),
                (get("/").principal(None), false),
            ],
        ),
        (
            "{from: [{source: {notServiceAccounts: [sleep]}}]}",
            &[
                (get("/"), false),
                (get("/").from("default", "curl"), true),
                (get("/").from("other", "sleep"), true),
            ],
        ),
        (
            "{when: [{key: source.principal, values: ['*/sa/sleep']}, \
             {key: source.namespace, notValues: [kube-*]}]}",
            &[
                (get("/"), true),
                (get("/").from("kube-system", "sleep"), false),
                (get("/").from("default", "curl"), false),
            ],
        ),
        (
            "{when: [{key: source.serviceAccount, values: [default/sleep]}]}",
            &[(tcp(1), true), (tcp(1).from("default", "curl"), false)],
        ),
    ];
    check_table(cases);
}

#[test]
fn ip_blocks_and_remote_ip_blocks() {
    // ipBlocks look at the connection's peer, remoteIpBlocks at the original client.
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-peer}
spec:
  action: DENY
  rules:
  - from: [{source: {ipBlocks: [10.1.0.0/16, 192.0.2.7]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client}
spec:
  action: DENY
  rules:
  - from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]
"#,
    );
    expect(
        &ps,
        &[
            (
                get("/").ips("10.1.2.3", "198.51.100.1"),
                "denied by DENY policy default/deny-peer (rule 0)",
            ),
            (
                tcp(80).ips("192.0.2.7", "192.0.2.7"),
                "denied by DENY policy default/deny-peer (rule 0)",
            ),
            (
                get("/").ips("10.0.0.5", "203.0.113.9"),
                "denied by DENY policy default/deny-client (rule 0)",
            ),
            // The client is in the peer block and the peer in the client block: neither.
            (get("/").ips("203.0.113.9", "10.1.2.3"), ALLOWED_BY_DEFAULT),
            (
                get("/").ips("::ffff:10.1.0.1", "::ffff:10.1.0.1"),
                "denied by DENY policy default/deny-peer (rule 0)",
            ),
        ],
    );
    check_table(&[
        (
            "{from: [{source: {notIpBlocks: [10.0.0.0/24]}}]}",
            &[(get("/"), false), (get("/").ips("10.0.1.5", "10.0.0.5"), true)],
        ),
        (
            "{from: [{source: {notRemoteIpBlocks: [203.0.113.7]}}]}",
            &[
                (get("/").ips("10.0.0.5", "203.0.113.7"), false),
                (get("/").ips("203.0.113.7", "10.0.0.5"), true),
            ],
        ),
        (
            "{when: [{key: source.ip, values: [10.0.0.0/8]}, {key: remote.ip, notValues: [10.0.0.6]}]}",
            &[
                (tcp(1), true),
                (tcp(1).ips("10.0.0.5", "10.0.0.6"), false),
                (tcp(1).ips("11.0.0.5", "10.0.0.5"), false),
            ],
        ),
        (
            "{when: [{key: destination.ip, values: ['10.0.0.0/28']}, {key: destination.port, notValues: ['9090']}]}",
            &[
                (tcp(80), true),
                (tcp(80).destination("10.0.0.99", 80), false),
                (tcp(80).destination("10.0.0.9", 9090), false),
            ],
        ),
    ]);
}

#[test]
fn operations() {
    check_table(&[
        (
            "{to: [{operation: {hosts: [httpbin, '*.example.com', 'api.local:*']}}]}",
            &[
                (get("/"), true),
                (get("/").host("HTTPBIN"), true),
                (get("/").host("www.Example.COM"), true),
                (get("/").host("api.local:8080"), true),
                (get("/").host("api.local"), false),
                // Istio matches the whole authority: a port must be allowed for explicitly.
                (get("/").host("httpbin:8000"), false),
            ],
        ),
        (
            "{to: [{operation: {notHosts: ['*.internal']}}]}",
            &[(get("/"), true), (get("/").host("DB.Internal"), false)],
        ),
        (
            "{to: [{operation: {ports: ['8080']}}]}",
            &[(get("/"), true), (tcp(8080), true), (tcp(9090), false)],
        ),
        (
            "{to: [{operation: {notPorts: ['8080']}}]}",
            &[(get("/"), false), (tcp(9090), true)],
        ),
        (
            "{to: [{operation: {methods: [GET, 'P*']}}]}",
            &[
                (get("/"), true),
                (http("PATCH", "/"), true),
                (http("get", "/"), false),
                (http("DELETE", "/"), false),
            ],
        ),
        (
            "{to: [{operation: {notMethods: [DELETE]}}]}",
            &[(get("/"), true), (http("DELETE", "/"), false)],
        ),
        (
            "{to: [{operation: {paths: [/info, '/static/*', '*.css', '/api/{*}/items', '/v1/{**}']}}]}",
            &[
                (get("/info"), true),
                (get("/info?x=1"), true),
                (get("/info/"), false),
                (get("/static/a/b.js"), true),
                (get("/x/y.css"), true),
                (get("/api/7/items"), true),
                (get("/api/7/8/items"), false),
                (get("/v1/"), true),
                (get("/v1/a/b"), true),
                (get("/v1"), false),
                (get("/secret"), false),
            ],
        ),
        (
            "{to: [{operation: {notPaths: ['/admin*']}}]}",
            &[
                (get("/info"), true),
                (get("/admin/users"), false),
                (get("/x/../admin"), false),
            ],
        ),
        (
            // Fields of one operation are ANDed, operations are ORed.
            "{to: [{operation: {methods: [GET], paths: [/a]}}, {operation: {methods: [POST], paths: [/b]}}]}",
            &[
                (get("/a"), true),
                (http("POST", "/b"), true),
                (get("/b"), false),
                (http("POST", "/a"), false),
            ],
        ),
    ]);
}

#[test]
fn conditions() {
    check_table(&[
        (
            "{when: [{key: 'request.headers[X-User]', values: [alice, 'admin-*']}]}",
            &[
                (get("/").header("x-user", "alice"), true),
                (get("/").header("x-user", "admin-bob"), true),
                (get("/").header("x-user", "mallory"), false),
                (get("/"), false),
                // Repeated headers are matched joined with ','.
                (
                    get("/").header("x-user", "alice").header("x-user", "bob"),
                    false,
                ),
            ],
        ),
        (
            "{when: [{key: 'request.headers[x-user]', values: ['alice,*']}]}",
            &[(
                get("/").header("x-user", "alice").header("x-user", "bob"),
                true,
            )],
        ),
        (
            "{when: [{key: 'request.headers[x-debug]', notValues: ['*']}]}",
            &[(get("/"), true), (get("/").header("x-debug", "1"), false)],
        ),
        (
            "{when: [{key: 'request.headers[x-debug]', values: ['*']}]}",
            &[(get("/"), false), (get("/").header("x-debug", ""), true)],
        ),
        (
            "{when: [{key: connection.sni, values: ['*.svc.cluster.local']}]}",
            &[
                (tcp(443).sni("db.default.svc.cluster.local"), true),
                (tcp(443).sni("example.com"), false),
                (tcp(443), false),
            ],
        ),
        (
            "{when: [{key: connection.sni, notValues: [evil.example]}]}",
            &[(tcp(443), true), (tcp(443).sni("evil.example"), false)],
        ),
    ]);
}

#[test]
fn jwt_attributes_never_hold() {
    // The mesh has no JWTs: positive matches fail, negative ones pass.
    check_table(&[
        (
            "{from: [{source: {requestPrincipals: ['*']}}]}",
            &[(get("/"), false)],
        ),
        (
            "{from: [{source: {notRequestPrincipals: ['*']}}]}",
            &[(get("/"), true)],
        ),
        (
            "{when: [{key: 'request.auth.claims[iss]', values: ['https://accounts.google.com']}]}",
            &[(get("/"), false)],
        ),
        (
            "{when: [{key: request.auth.audiences, notValues: [x]}]}",
            &[(get("/"), true)],
        ),
    ]);
    // Istio's "require a JWT" recipe therefore denies every HTTP request.
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt}
spec:
  action: DENY
  rules:
  - from: [{source: {notRequestPrincipals: ["*"]}}]
"#,
    );
    expect(
        &ps,
        &[(
            get("/"),
            "denied by DENY policy default/require-jwt (rule 0)",
        )],
    );
}

// === HTTP-only attributes on TCP ===

#[test]
fn http_only_fields_on_tcp() {
    // The example of Istio's reference: on TCP, the method is missing, so the DENY rule is
    // the port alone.
    let deny_post_8080 = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post-8080}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST], ports: ["8080"]}}]
"#,
    );
    let denied = "denied by DENY policy default/deny-post-8080 (rule 0)";
    expect(
        &deny_post_8080,
        &[
            (tcp(8080), denied),
            (tcp(9090), ALLOWED_BY_DEFAULT),
            (get("/"), ALLOWED_BY_DEFAULT),
            (http("POST", "/"), denied),
        ],
    );

    // Without the port, every TCP connection.
    let deny_post = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post}
spec:
  action: DENY
  rules:
  - to: [{operation: {methods: [POST], hosts: [x], paths: [/y]}}]
    when: [{key: "request.headers[x]", values: ["1"]}]
"#,
    );
    expect(
        &deny_post,
        &[
            (tcp(1), "denied by DENY policy default/deny-post (rule 0)"),
            (get("/"), ALLOWED_BY_DEFAULT),
        ],
    );

    // Only the HTTP-only part is dropped: the principal still has to match.
    let deny_from = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-evil}
spec:
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/x/sa/evil], requestPrincipals: ["*"]}}]
"#,
    );
    expect(
        &deny_from,
        &[
            (
                tcp(1).from("x", "evil"),
                "denied by DENY policy default/deny-evil (rule 0)",
            ),
            (tcp(1), ALLOWED_BY_DEFAULT),
            // On HTTP the request principal is required, and never present.
            (get("/").from("x", "evil"), ALLOWED_BY_DEFAULT),
        ],
    );

    // In an ALLOW policy a rule using any HTTP-only field is skipped on TCP; the others
    // still count, and the policy still applies.
    let allow = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow}
spec:
  rules:
  - to: [{operation: {methods: [GET], ports: ["8080"]}}]
  - to: [{operation: {ports: ["9000"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
  - when: [{key: "request.headers[x]", notValues: ["*"]}]
"#,
    );
    let none = "denied: none of the 1 ALLOW policies that apply matched";
    expect(
        &allow,
        &[
            (get("/"), "allowed by ALLOW policy default/allow (rule 0)"),
            (tcp(8080), none),
            (tcp(9000), "allowed by ALLOW policy default/allow (rule 1)"),
            (tcp(7000), none),
            // On HTTP the header rule matches whatever the port.
            (
                get("/").destination("10.0.0.9", 7000),
                "allowed by ALLOW policy default/allow (rule 3)",
            ),
        ],
    );
}

// === path normalization against DENY ===

#[test]
fn path_tricks_do_not_get_past_deny() {
    let ps = policies(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin, "/admin/*"]}}]
"#,
    );
    let denied = "denied by DENY policy default/deny-admin (rule 0)";
    for target in [
        "/admin",
        "/a/../admin",
        "//admin",
        "/%61dmin",
        "/%61%64%6D%69%6E",
        "/admin/.",
        "/./admin",
        "/%2e%2e/admin",
        "/x/.%2E/admin/users",
        "/admin?x=/..",
        "/admin#fragment",
        "/admin//users",
        "///admin/users",
        "/admin/x/../y",
        r"/admin\users",
        r"/..\admin",
    ] {
        for mode in [
            PathNormalization::MergeSlashes,
            PathNormalization::DecodeAndMergeSlashes,
        ] {
            expect(&ps, &[(http_with("GET", target, mode), denied)]);
        }
    }
    for target in ["/ADMIN", "/administrator", "/info?next=/admin", "/x/admin"] {
        expect(&ps, &[(get(target), ALLOWED_BY_DEFAULT)]);
    }
    // An encoded slash keeps `/admin%2Fusers` one segment, as Istio does by default: it is
    // not under `/admin/`. Decoding slashes (Istio's DECODE_AND_MERGE_SLASHES) closes that.
    expect(
        &ps,
        &[
            (get("/admin%2Fusers"), ALLOWED_BY_DEFAULT),
            (
                http_with(
                    "GET",
                    "/admin%2Fusers",
                    PathNormalization::DecodeAndMergeSlashes,
                ),
                denied,
            ),
            (
                http_with(
                    "GET",
                    "/public%2F..%2Fadmin",
                    PathNormalization::DecodeAndMergeSlashes,
                ),
                denied,
            ),
        ],
    );
    // Without merging slashes (Istio's BASE), `//admin` is another path.
    expect(
        &ps,
        &[(
            http_with("GET", "//admin", PathNormalization::Base),
            ALLOWED_BY_DEFAULT,
        )],
    );
}
