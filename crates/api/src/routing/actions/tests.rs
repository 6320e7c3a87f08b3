use super::*;
use crate::routing::model::Backend;
use crate::routing::{HeaderKey, HeaderPair, HeaderText, Pattern, RewritePattern};

fn segments(v: &str) -> PathMatch {
    // As the compiler holds a PathPrefix: without its trailing slash.
    PathMatch::Segments {
        value: v.trim_end_matches('/').into(),
    }
}

#[test]
fn replace_prefix_match_follows_the_gateway_api_table() {
    // The table in the Gateway API's HTTPPathModifier documentation.
    let cases = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        // The conformance cases (MeshHTTPRouteRewritePath, MeshHTTPRouteRedirectPath).
        ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
        ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
        ("/strip-prefix", "/strip-prefix", "/", "/"),
        (
            "/original-prefix/lemon",
            "/original-prefix",
            "/replacement-prefix",
            "/replacement-prefix/lemon",
        ),
        // The root prefix.
        ("/a", "/", "/x", "/x/a"),
        // The query stays.
        ("/foo/bar?a=1&b", "/foo", "/xyz", "/xyz/bar?a=1&b"),
    ];
    for (path, prefix, replacement, want) in cases {
        let got = rewrite_path(
            path,
            Some(&segments(prefix)),
            &PathRewrite::Prefix(replacement.into()),
        );
        assert_eq!(got, want, "{path} matched by {prefix} with {replacement:?}");
    }
}

#[test]
fn istio_prefix_rewrites_are_envoy_prefix_rewrites() {
    let prefix = |v: &str| PathMatch::Prefix {
        value: v.into(),
        ignore_case: false,
    };
    let exact = PathMatch::Exact {
        value: "/ratings".into(),
        ignore_case: false,
    };
    let regex = PathMatch::Regex {
        pattern: Pattern::new("/r.*").unwrap(),
    };
    let cases: [(&str, Option<&PathMatch>, &str, &str); 8] = [
        (
            "/wpcatalog/item",
            Some(&prefix("/wpcatalog")),
            "/newcatalog",
            "/newcatalog/item",
        ),
        // A plain string prefix: no segment logic.
        ("/apix", Some(&prefix("/api")), "/v2", "/v2x"),
        // `/` swallows the slashes after the prefix instead of doubling them.
        ("/api/x", Some(&prefix("/api")), "/", "/x"),
        ("/api//x", Some(&prefix("/api")), "/", "/x"),
        // Exact and regex matches: the whole path.
        (
            "/ratings?x=1",
            Some(&exact),
            "/v1/ratings",
            "/v1/ratings?x=1",
        ),
        ("/reviews/1", Some(&regex), "/r", "/r"),
        // No path condition: Istio's route prefix is `/`.
        ("/x", None, "/v1/", "/v1/x"),
        ("/x", None, "/", "/x"),
    ];
    for (path, matched, replacement, want) in cases {
        let got = rewrite_path(path, matched, &PathRewrite::Prefix(replacement.into()));
        assert_eq!(got, want, "{path} with {replacement:?}");
    }
}

#[test]
fn full_and_regex_rewrites() {
    let full = PathRewrite::Full("/one".into());
    assert_eq!(
        rewrite_path("/full/one/two?q", Some(&segments("/full/one")), &full),
        "/one?q"
    );
    let regex = PathRewrite::Regex {
        pattern: RewritePattern::new("^/service/([^/]+)(/.*)$").unwrap(),
        substitution: "${2}/instance/${1}".into(),
    };
    assert_eq!(
        rewrite_path("/service/foo/v1/api?x=1", None, &regex),
        "/v1/api/instance/foo?x=1"
    );
}

fn gateway_redirect() -> Redirect {
    Redirect {
        scheme: None,
        host: None,
        port: RedirectPort::Listener,
        path: None,
        status: 302,
    }
}

fn request(path: &'static str) -> RedirectRequest<'static> {
    RedirectRequest {
        scheme: "http",
        authority: "echo",
        path_and_query: path,
        port: 80,
    }
}

#[test]
fn gateway_api_redirect_locations() {
    let host = |h: &str| Some(h.to_owned());
    let cases = [
        // 4.11–4.14: nothing but a status or a hostname.
        (gateway_redirect(), "/redirect", "http://echo/redirect"),
        (
            Redirect {
                host: host("example.org"),
                ..gateway_redirect()
            },
            "/hostname-redirect",
            "http://example.org/hostname-redirect",
        ),
        // 4.16: a port.
        (
            Redirect {
                port: RedirectPort::Fixed(8083),
                ..gateway_redirect()
            },
            "/port",
            "http://echo:8083/port",
        ),
        (
            Redirect {
                host: host("example.org"),
                port: RedirectPort::Fixed(8083),
                ..gateway_redirect()
            },
            "/port-and-host",
            "http://example.org:8083/port-and-host",
        ),
        // 4.17: a scheme without a port takes the scheme's (left out).
        (
            Redirect {
                scheme: Some("https".into()),
                ..gateway_redirect()
            },
            "/scheme",
            "https://echo/scheme",
        ),
        (
            Redirect {
                scheme: Some("https".into()),
                host: host("example.org"),
                ..gateway_redirect()
            },
            "/scheme-and-host",
            "https://example.org/scheme-and-host",
        ),
        // 4.15: paths.
        (
            Redirect {
                path: Some(PathRewrite::Full("/full-path-replacement".into())),
                ..gateway_redirect()
            },
            "/full/path/original",
            "http://echo/full-path-replacement",
        ),
    ];
    for (redirect, path, want) in cases {
        assert_eq!(
            redirect_location(&redirect, Some(&segments("/full")), &request(path)),
            want
        );
    }
    // The prefix replacement uses the selecting match.
    let redirect = Redirect {
        path: Some(PathRewrite::Prefix("/replacement-prefix".into())),
        ..gateway_redirect()
    };
    let matched = segments("/original-prefix");
    assert_eq!(
        redirect_location(
            &redirect,
            Some(&matched),
            &request("/original-prefix/lemon")
        ),
        "http://echo/replacement-prefix/lemon"
    );
    // Without a port or scheme, the Service port the request came in on, unless default.
    let on_8080 = RedirectRequest {
        authority: "echo:8080",
        port: 8080,
        ..request("/x")
    };
    assert_eq!(
        redirect_location(&gateway_redirect(), None, &on_8080),
        "http://echo:8080/x"
    );
}

#[test]
fn istio_redirect_locations() {
    let istio = Redirect {
        scheme: None,
        host: None,
        port: RedirectPort::Authority,
        path: None,
        status: 301,
    };
    let on = |authority: &'static str| RedirectRequest {
        authority,
        port: 9080,
        ..request("/v1/bookRatings?x=1")
    };
    let cases = [
        // The authority's port stays; a replaced authority drops it.
        (
            Redirect {
                path: Some(PathRewrite::Full("/v1/bookRatings".into())),
                host: Some("newratings.default.svc.cluster.local".into()),
                ..istio.clone()
            },
            on("ratings:9080"),
            "http://newratings.default.svc.cluster.local/v1/bookRatings?x=1",
        ),
        (
            istio.clone(),
            on("ratings:9080"),
            "http://ratings:9080/v1/bookRatings?x=1",
        ),
        // A scheme change drops the old scheme's default port.
        (
            Redirect {
                scheme: Some("https".into()),
                ..istio.clone()
            },
            on("ratings:80"),
            "https://ratings/v1/bookRatings?x=1",
        ),
        (
            Redirect {
                scheme: Some("https".into()),
                ..istio.clone()
            },
            on("ratings:9080"),
            "https://ratings:9080/v1/bookRatings?x=1",
        ),
        (
            Redirect {
                port: RedirectPort::RequestPort,
                ..istio.clone()
            },
            on("ratings"),
            "http://ratings:9080/v1/bookRatings?x=1",
        ),
        (
            Redirect {
                port: RedirectPort::SchemeDefault,
                ..istio.clone()
            },
            on("ratings:9080"),
            "http://ratings/v1/bookRatings?x=1",
        ),
        // IPv6 hosts keep their brackets.
        (
            istio.clone(),
            on("[fd00::1]:9080"),
            "http://[fd00::1]:9080/v1/bookRatings?x=1",
        ),
    ];
    for (redirect, req, want) in cases {
        assert_eq!(
            redirect_location(&redirect, None, &req),
            want,
            "{redirect:?}"
        );
    }
}

fn dest(host: &str, weight: u32) -> WeightedDestination {
    WeightedDestination {
        weight,
        backend: Backend::Service {
            host: host.into(),
            subset: None,
            port: None,
        },
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

fn host(d: &WeightedDestination) -> &str {
    match &d.backend {
        Backend::Service { host, .. } => host,
        Backend::Invalid { reason } => reason,
    }
}

#[test]
fn weighted_picks_are_proportional() {
    let ds = [dest("v1", 70), dest("v2", 30)];
    assert_eq!(pick_weighted(&ds, 0).map(host), Some("v1"));
    assert_eq!(pick_weighted(&ds, 69).map(host), Some("v1"));
    assert_eq!(pick_weighted(&ds, 70).map(host), Some("v2"));
    assert_eq!(pick_weighted(&ds, 99).map(host), Some("v2"));
    assert_eq!(pick_weighted(&ds, 100).map(host), Some("v1"));
    // Over a uniform spread of random numbers, exactly the weights.
    let mut v1 = 0;
    for r in 0..1000u64 {
        if pick_weighted(&ds, r.wrapping_mul(0x9E37_79B9_7F4A_7C15)).map(host) == Some("v1") {
            v1 += 1;
        }
    }
    assert!((650..=750).contains(&v1), "{v1}");
    assert!(pick_weighted(&[], 1).is_none());
    assert!(pick_weighted(&[dest("v1", 0)], 1).is_none());
    assert_eq!(
        pick_weighted(&[dest("v1", 0), dest("v2", 1)], u64::MAX).map(host),
        Some("v2")
    );
}

#[test]
fn chances() {
    assert!(chance(100.0, u64::MAX));
    assert!(!chance(0.0, 0));
    assert!(!chance(f64::NAN, 0));
    assert!(chance(50.0, 0));
    assert!(!chance(50.0, u64::MAX));
    assert!(chance(50.0, u64::MAX / 2 - 4096));
    assert!(!chance(50.0, u64::MAX / 2 + 4096));
}

#[test]
fn header_changes_remove_then_set_then_add() {
    let pair = |n: &str, v: &str| HeaderPair {
        name: HeaderKey::new(n).unwrap(),
        value: HeaderText::new(v).unwrap(),
    };
    let ops = HeaderOps {
        set: vec![pair("X-Header-Set", "set-overwrites-values")],
        add: vec![pair("X-Header-Add", "add-appends-values")],
        remove: vec![HeaderKey::new("X-Header-Remove").unwrap()],
    };
    let mut headers = http::HeaderMap::new();
    headers.append("x-header-set", "a".parse().unwrap());
    headers.append("x-header-set", "b".parse().unwrap());
    headers.append("x-header-add", "some-other-value".parse().unwrap());
    headers.append("x-header-remove", "gone".parse().unwrap());
    ops.apply(&mut headers);
    let all = |n: &str| {
        headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(all("x-header-set"), "set-overwrites-values");
    assert_eq!(all("x-header-add"), "some-other-value,add-appends-values");
    assert!(headers.get("x-header-remove").is_none());
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn picks_only_destinations_with_weight(weights in vec(0u32..4, 1..6), random: u64) {
            let ds: Vec<WeightedDestination> =
                weights.iter().map(|w| dest("d", *w)).collect();
            match pick_weighted(&ds, random) {
                Some(d) => prop_assert!(d.weight > 0),
                None => prop_assert!(weights.iter().all(|w| *w == 0)),
            }
        }

        #[test]
        fn segment_rewrites_give_clean_absolute_paths(
            parts in vec("[a-z]{1,3}", 1..4),
            keep in 0usize..4,
            trailing in any::<bool>(),
            replacement in "(/[a-z]{1,3}){0,2}/?",
        ) {
            let path = format!("/{}{}", parts.join("/"), if trailing { "/" } else { "" });
            let keep = keep.min(parts.len());
            let prefix = format!("/{}", parts[..keep].join("/"));
            let got = rewrite_path(
                &path,
                Some(&segments(&prefix)),
                &PathRewrite::Prefix(replacement.clone()),
            );
            prop_assert!(got.starts_with('/'), "{path} {prefix} {replacement} -> {got}");
            prop_assert!(!got.contains("//"), "{path} {prefix} {replacement} -> {got}");
            // What followed the prefix is kept.
            let rest = path[prefix.trim_end_matches('/').len()..].trim_start_matches('/');
            prop_assert!(got.ends_with(rest), "{path} {prefix} {replacement} -> {got}");
        }
    }
}
