use super::*;
use crate::routing::model::{
    Action, ConsumerRoutes, DirectResponse, MatchEntry, RouteKind, RuleName, SourceMatch,
};
use crate::routing::{HeaderKey, Pattern};

/// A request to build views of.
struct Req {
    method: &'static str,
    path: &'static str,
    headers: http::HeaderMap,
    namespace: &'static str,
    labels: BTreeMap<String, String>,
}

fn req(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        headers: http::HeaderMap::new(),
        namespace: "default",
        labels: BTreeMap::new(),
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(
            http::HeaderName::from_static(name),
            http::HeaderValue::from_static(value),
        );
        self
    }

    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }

    fn from(mut self, namespace: &'static str, labels: &[(&str, &str)]) -> Self {
        self.namespace = namespace;
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method,
            scheme: "http",
            authority: "echo",
            path_and_query: self.path,
            headers: &self.headers,
            source: Source {
                namespace: self.namespace,
                labels: &self.labels,
            },
        }
    }
}

fn rule(name: &str) -> HttpRule {
    HttpRule {
        name: RuleName {
            kind: RouteKind::HttpRoute,
            namespace: "default".into(),
            name: "r".into(),
            rule: name.into(),
        },
        action: Action::Respond(DirectResponse {
            status: 200,
            body: None,
        }),
        filters: Default::default(),
    }
}

/// A port whose rules are named after their index, one condition each.
fn table(conditions: Vec<RequestMatch>) -> PortRoutes {
    let rules = (0..conditions.len())
        .map(|i| rule(&i.to_string()))
        .collect();
    let matches = conditions
        .into_iter()
        .enumerate()
        .map(|(rule, conditions)| MatchEntry { rule, conditions })
        .collect();
    PortRoutes {
        port: 80,
        http: Some(HttpRoutes { matches, rules }),
        ..PortRoutes::default()
    }
}

/// Which rule `r` selects: its name, "404" or "unrouted".
fn chosen(table: &PortRoutes, r: &Req) -> String {
    match select(table, &r.view()) {
        Selection::Matched(s) => s.rule.name.rule.clone(),
        Selection::NoMatch => "404".into(),
        Selection::Unrouted => "unrouted".into(),
    }
}

fn path(p: PathMatch) -> RequestMatch {
    RequestMatch {
        path: Some(p),
        ..RequestMatch::default()
    }
}

fn header(name: &str, condition: ValueMatch, invert: bool) -> RequestMatch {
    RequestMatch {
        headers: vec![HeaderMatch {
            name: HeaderKey::new(name).unwrap(),
            condition,
            invert,
        }],
        ..RequestMatch::default()
    }
}

fn query(name: &str, condition: ValueMatch) -> RequestMatch {
    RequestMatch {
        query_params: vec![QueryMatch {
            name: name.into(),
            condition,
        }],
        ..RequestMatch::default()
    }
}

#[test]
fn path_conditions() {
    let exact = |v: &str, ignore_case| PathMatch::Exact {
        value: v.into(),
        ignore_case,
    };
    let prefix = |v: &str, ignore_case| PathMatch::Prefix {
        value: v.into(),
        ignore_case,
    };
    let segments = |v: &str| PathMatch::Segments { value: v.into() };
    let regex = |v: &str| PathMatch::Regex {
        pattern: Pattern::new(v).unwrap(),
    };
    let cases = [
        (exact("/v1", false), "/v1", true),
        (exact("/v1", false), "/v1/", false),
        (exact("/v1", false), "/V1", false),
        (exact("/v1", true), "/V1", true),
        (prefix("/api", false), "/api", true),
        (prefix("/api", false), "/apix", true),
        (prefix("/api", false), "/ap", false),
        (prefix("/api", true), "/API/x", true),
        // An ASCII-insensitive prefix must not split a multi-byte character.
        (prefix("/é", true), "/e", false),
        (segments("/v2"), "/v2", true),
        (segments("/v2"), "/v2/", true),
        (segments("/v2"), "/v2/x", true),
        (segments("/v2"), "/v2example", false),
        (segments("/v2"), "/foo/v2", false),
        (segments(""), "/", true),
        (segments(""), "/anything", true),
        (regex("/v[0-9]+"), "/v12", true),
        (regex("/v[0-9]+"), "/v12/x", false),
    ];
    for (condition, p, want) in cases {
        assert_eq!(condition.matches(p), want, "{condition:?} on {p}");
    }
}

#[test]
fn the_query_is_not_part_of_the_path() {
    let t = table(vec![path(PathMatch::Exact {
        value: "/v1".into(),
        ignore_case: false,
    })]);
    assert_eq!(chosen(&t, &req("/v1?x=/v2")), "0");
    assert_eq!(chosen(&t, &req("/v1/?x")), "404");
}

#[test]
fn header_conditions() {
    let exact = |v: &str| ValueMatch::Exact(v.into());
    let cases = [
        // Names ignore case (they are held, and sent by HTTP/2, in lower case).
        (
            header("Version", exact("one"), false),
            req("/").header("version", "one"),
            true,
        ),
        (
            header("version", exact("one"), false),
            req("/").header("version", "One"),
            false,
        ),
        (header("version", exact("one"), false), req("/"), false),
        (
            header("x", ValueMatch::Prefix("ab".into()), false),
            req("/").header("x", "abc"),
            true,
        ),
        (
            header("x", ValueMatch::Regex(Pattern::new("a.c").unwrap()), false),
            req("/").header("x", "abc"),
            true,
        ),
        (
            header("x", ValueMatch::Regex(Pattern::new("a.c").unwrap()), false),
            req("/").header("x", "abcd"),
            false,
        ),
        (
            header("x", ValueMatch::Present, false),
            req("/").header("x", ""),
            true,
        ),
        (header("x", ValueMatch::Present, false), req("/"), false),
        // Inverted (Istio withoutHeaders): absent, or present with another value.
        (header("x", ValueMatch::Present, true), req("/"), true),
        (
            header("x", ValueMatch::Present, true),
            req("/").header("x", "1"),
            false,
        ),
        (header("x", exact("a"), true), req("/"), true),
        (
            header("x", exact("a"), true),
            req("/").header("x", "b"),
            true,
        ),
        (
            header("x", exact("a"), true),
            req("/").header("x", "a"),
            false,
        ),
        // Several values compare as one, joined with ','.
        (
            header("x", exact("a,b"), false),
            req("/").header("x", "a").header("x", "b"),
            true,
        ),
        (
            header("x", exact("a"), false),
            req("/").header("x", "a").header("x", "b"),
            false,
        ),
        (
            header("x", ValueMatch::Regex(Pattern::new("a,.*").unwrap()), false),
            req("/").header("x", "a").header("x", "b"),
            true,
        ),
    ];
    for (i, (condition, r, want)) in cases.into_iter().enumerate() {
        let t = table(vec![condition]);
        let got = chosen(&t, &r) == "0";
        assert_eq!(got, want, "case {i}");
    }
}

#[test]
fn query_conditions() {
    let exact = |v: &str| ValueMatch::Exact(v.into());
    let cases = [
        (query("animal", exact("whale")), "/?animal=whale", true),
        (
            query("animal", exact("whale")),
            "/?animal=whale&other=x",
            true,
        ),
        (
            query("animal", exact("whale")),
            "/?other=x&animal=whale",
            true,
        ),
        (
            query("animal", exact("whale")),
            "/?animal=whaledolphin",
            false,
        ),
        (query("animal", exact("whale")), "/?color=blue", false),
        (query("animal", exact("whale")), "/", false),
        // The first occurrence counts.
        (
            query("animal", exact("whale")),
            "/?animal=dog&animal=whale",
            false,
        ),
        // Percent-decoded, `+` left alone.
        (
            query("animal", exact("blue whale")),
            "/?animal=blue%20whale",
            true,
        ),
        (query("animal", exact("a+b")), "/?animal=a+b", true),
        (query("a b", exact("1")), "/?a%20b=1", true),
        (query("animal", exact("%zz")), "/?animal=%zz", true),
        (query("animal", ValueMatch::Present), "/?animal", true),
        (query("animal", ValueMatch::Present), "/?animal=", true),
        (query("animal", ValueMatch::Present), "/?animals=1", false),
        (
            query("n", ValueMatch::Regex(Pattern::new("[0-9]+").unwrap())),
            "/?n=42",
            true,
        ),
    ];
    for (condition, p, want) in cases {
        let t = table(vec![condition.clone()]);
        let r = Req {
            path: p,
            ..req("/")
        };
        assert_eq!(chosen(&t, &r) == "0", want, "{condition:?} on {p}");
    }
}

#[test]
fn method_authority_and_scheme_conditions() {
    let t = table(vec![
        RequestMatch {
            method: Some(StrMatch::Exact("POST".into())),
            ..RequestMatch::default()
        },
        RequestMatch {
            authority: Some(StrMatch::Prefix("echo".into())),
            scheme: Some(StrMatch::Exact("https".into())),
            ..RequestMatch::default()
        },
        RequestMatch {
            authority: Some(StrMatch::Regex(Pattern::new("ech.").unwrap())),
            ..RequestMatch::default()
        },
    ]);
    assert_eq!(chosen(&t, &req("/").method("POST")), "0");
    // Scheme is `http` in these views: the second rule never holds.
    assert_eq!(chosen(&t, &req("/")), "2");
}

#[test]
fn first_match_wins_and_no_match_is_404() {
    let t = table(vec![
        header("end-user", ValueMatch::Exact("jason".into()), false),
        path(PathMatch::Prefix {
            value: "/".into(),
            ignore_case: false,
        }),
        header("x", ValueMatch::Present, false),
    ]);
    assert_eq!(chosen(&t, &req("/").header("end-user", "jason")), "0");
    assert_eq!(chosen(&t, &req("/").header("x", "1")), "1");
    let only = table(vec![header(
        "end-user",
        ValueMatch::Exact("jason".into()),
        false,
    )]);
    assert_eq!(chosen(&only, &req("/")), "404");
    // A port with routes but no conditions at all answers 404 too.
    assert_eq!(chosen(&table(vec![]), &req("/")), "404");
    // A port without HTTP routes is not routed.
    let none = PortRoutes {
        port: 80,
        ..PortRoutes::default()
    };
    assert_eq!(chosen(&none, &req("/")), "unrouted");
}

#[test]
fn caller_conditions() {
    let t = table(vec![
        RequestMatch {
            source_labels: [("app".to_string(), "productpage".to_string())].into(),
            path: Some(PathMatch::Prefix {
                value: "/api".into(),
                ignore_case: false,
            }),
            ..RequestMatch::default()
        },
        RequestMatch {
            source_namespace: Some("test".into()),
            ..RequestMatch::default()
        },
    ]);
    let productpage = req("/api/x").from("default", &[("app", "productpage"), ("v", "1")]);
    assert_eq!(chosen(&t, &productpage), "0");
    let productpage = req("/other").from("default", &[("app", "productpage")]);
    assert_eq!(
        chosen(&t, &productpage),
        "404",
        "rules for this caller exist"
    );
    assert_eq!(chosen(&t, &req("/api/x").from("test", &[])), "1");
    // For a caller no condition is for, the port has no routes at all (Istio leaves them
    // out of that sidecar's configuration).
    assert_eq!(
        chosen(&t, &req("/api/x").from("default", &[("app", "x")])),
        "unrouted"
    );
}

#[test]
fn consumer_routes_replace_the_ports_own_for_their_namespace() {
    let mut t = table(vec![RequestMatch::default()]);
    let consumer = table(vec![RequestMatch::default(), RequestMatch::default()]);
    let mut theirs = consumer.http.unwrap();
    theirs.matches.remove(0);
    t.consumers = vec![
        ConsumerRoutes {
            namespace: "a".into(),
            http: None,
            tcp: None,
        },
        ConsumerRoutes {
            namespace: "consumer".into(),
            http: Some(theirs),
            tcp: None,
        },
    ];
    assert_eq!(chosen(&t, &req("/").from("consumer", &[])), "1");
    assert_eq!(chosen(&t, &req("/").from("default", &[])), "0");
    // A consumer entry without HTTP routes leaves the port's own in force.
    assert_eq!(chosen(&t, &req("/").from("a", &[])), "0");
}

#[test]
fn tcp_rules_by_caller() {
    let name = |rule: &str| RuleName {
        kind: RouteKind::VirtualService,
        namespace: "default".into(),
        name: "db".into(),
        rule: rule.into(),
    };
    let dest = vec![crate::routing::WeightedDestination {
        weight: 1,
        backend: crate::routing::Backend::Service {
            host: "db.default.svc.cluster.local".into(),
            subset: None,
            port: None,
        },
        request_headers: Default::default(),
        response_headers: Default::default(),
    }];
    let t = PortRoutes {
        port: 5432,
        tcp: Some(TcpRoutes {
            rules: vec![
                TcpRule {
                    name: name("0"),
                    matches: vec![SourceMatch {
                        source_namespace: Some("batch".into()),
                        ..SourceMatch::default()
                    }],
                    destinations: dest.clone(),
                },
                TcpRule {
                    name: name("1"),
                    matches: vec![],
                    destinations: dest,
                },
            ],
        }),
        ..PortRoutes::default()
    };
    let labels = BTreeMap::new();
    let from = |namespace| Source {
        namespace,
        labels: &labels,
    };
    let pick = |ns| select_tcp(&t, &from(ns), None).map(|r| r.name.rule.clone());
    assert_eq!(pick("batch").as_deref(), Some("0"));
    assert_eq!(pick("web").as_deref(), Some("1"));
    let none = PortRoutes::default();
    assert!(select_tcp(&none, &from("web"), None).is_none());
}

#[test]
fn tls_rules_match_the_server_name() {
    let m = |hosts: &[&str]| SourceMatch {
        sni_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..SourceMatch::default()
    };
    assert!(m(&[]).sni_matches(None));
    assert!(m(&[]).sni_matches(Some("a.example")));
    assert!(!m(&["a.example"]).sni_matches(None));
    assert!(m(&["a.example"]).sni_matches(Some("A.Example")));
    assert!(!m(&["a.example"]).sni_matches(Some("b.example")));
    let wild = m(&["*.example"]);
    assert!(wild.sni_matches(Some("a.example")));
    assert!(wild.sni_matches(Some("a.b.example")));
    assert!(!wild.sni_matches(Some("example")));
    assert!(!wild.sni_matches(Some("aexample")));
    assert!(m(&["*"]).sni_matches(Some("anything")));
    assert!(!m(&["*"]).sni_matches(None));
}

#[test]
fn percent_decoding() {
    assert!(matches!(percent_decode("abc"), Cow::Borrowed("abc")));
    assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
    assert_eq!(percent_decode("%+1%4"), "%+1%4");
    assert_eq!(percent_decode("%ff"), "\u{fffd}");
}
