//! Property: any valid HTTPRoute, written out as JSON text (which is YAML too) or as block
//! YAML, loads back through `parse_str` as itself, with the schema defaults applied and no
//! errors. Generated routes cover every field of the spec, within the CRD's rules.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use serde_json::Value;
use trellis_api::load::parse_str;
use trellis_api::resources::gateway::{
    BackendObjectReference, Cors, CorsMethod, Fraction, HeaderMatch, HeaderMatchType,
    HeaderModifier, HttpBackendRef, HttpHeader, HttpMethod, HttpPathMatch, HttpRoute,
    HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch, HttpRouteRule, HttpRouteSpec,
    HttpRouteTimeouts, LocalObjectReference, ParentReference, PathMatchType, PathModifier,
    PathModifierType, QueryParamMatch, RedirectScheme, RedirectStatusCode, RequestMirror,
    RequestRedirect, UrlRewrite,
};
use trellis_api::resources::{ObjectMeta, Resource};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,6}[a-z0-9])?"
}

fn subdomain() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,5}(\\.[a-z][a-z0-9-]{0,4}[a-z0-9]){0,2}"
}

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][-A-Za-z0-9!#$%&'*+.^_`|~]{0,10}"
}

/// Header values: anything printable, spaces and YAML indicators included. Starting with a
/// letter keeps them from reading as numbers (`0o7`) in plain YAML, which yaml-rust2's
/// emitter does not always quote.
fn header_value() -> impl Strategy<Value = String> {
    "[a-zA-Z][ -~éü]{0,20}"
}

fn path() -> impl Strategy<Value = String> {
    // Segments never start with '.', so "." and ".." segments cannot occur.
    "/|(/[a-zA-Z0-9_~-][a-zA-Z0-9._~!$&'()*+,;=:@-]{0,5}){1,3}/?"
}

fn match_type() -> impl Strategy<Value = Option<HeaderMatchType>> {
    option::of(select(vec![
        HeaderMatchType::Exact,
        HeaderMatchType::RegularExpression,
    ]))
}

fn port() -> impl Strategy<Value = i32> {
    1..=65535i32
}

prop_compose! {
    fn parent(index: usize)(
        service in any::<bool>(),
        core in any::<bool>(),
        namespace in option::of(label()),
        section_name in option::of(subdomain()),
        port in option::of(port()),
    ) -> ParentReference {
        // Distinct names keep the CRD's sectionName rules for repeated parents out of play.
        let (group, kind) = match (service, core) {
            (true, true) => (Some("core".to_owned()), Some("Service".to_owned())),
            (true, false) => (Some(String::new()), Some("Service".to_owned())),
            (false, _) => (None, None),
        };
        ParentReference { group, kind, namespace, name: format!("parent-{index}"), section_name, port }
    }
}

fn parents() -> impl Strategy<Value = Vec<ParentReference>> {
    (0..3usize).prop_flat_map(|n| (0..n).map(parent).collect::<Vec<_>>())
}

prop_compose! {
    fn http_match()(
        path in option::of((option::of(select(vec![
            PathMatchType::Exact,
            PathMatchType::PathPrefix,
            PathMatchType::RegularExpression,
        ])), option::of(path()))),
        headers in btree_map(header_name(), (match_type(), header_value()), 0..3),
        params in btree_map(header_name(), (match_type(), header_value()), 0..3),
        method in option::of(select(vec![
            HttpMethod::Get, HttpMethod::Head, HttpMethod::Post, HttpMethod::Put,
            HttpMethod::Delete, HttpMethod::Connect, HttpMethod::Options, HttpMethod::Trace,
            HttpMethod::Patch,
        ])),
    ) -> HttpRouteMatch {
        HttpRouteMatch {
            path: path.map(|(type_, value)| HttpPathMatch { type_, value }),
            headers: headers
                .into_iter()
                .map(|(name, (type_, value))| HeaderMatch { type_, name, value })
                .collect(),
            query_params: params
                .into_iter()
                .map(|(name, (type_, value))| QueryParamMatch { type_, name, value })
                .collect(),
            method,
        }
    }
}

fn headers(max: usize) -> impl Strategy<Value = Vec<HttpHeader>> {
    btree_map(header_name(), header_value(), 0..max).prop_map(|m| {
        m.into_iter()
            .map(|(name, value)| HttpHeader { name, value })
            .collect()
    })
}

prop_compose! {
    fn header_modifier()(
        set in headers(3),
        add in headers(3),
        remove in btree_set(header_name(), 0..3),
    ) -> HeaderModifier {
        HeaderModifier { set, add, remove: remove.into_iter().collect() }
    }
}

prop_compose! {
    fn path_modifier()(prefix in any::<bool>(), value in path()) -> PathModifier {
        if prefix {
            PathModifier {
                type_: PathModifierType::ReplacePrefixMatch,
                replace_full_path: None,
                replace_prefix_match: Some(value),
            }
        } else {
            PathModifier {
                type_: PathModifierType::ReplaceFullPath,
                replace_full_path: Some(value),
                replace_prefix_match: None,
            }
        }
    }
}

prop_compose! {
    fn mirror()(
        name in label(),
        with_port in any::<bool>(),
        port in port(),
        share in 0..3u8,
        percent in 0..=100i32,
        denominator in option::of(1..=1000i32),
        numerator_share in 0.0..=1.0f64,
    ) -> RequestMirror {
        // A Service needs a port; another kind of backend may leave it out.
        let (group, kind, port) = if with_port {
            (None, None, Some(port))
        } else {
            (Some("example.com".to_owned()), Some("Bucket".to_owned()), None)
        };
        let denominator_value = denominator.unwrap_or(100);
        // Truncating keeps the numerator within 0..=denominator.
        let numerator = (f64::from(denominator_value) * numerator_share) as i32;
        let (percent, fraction) = match share {
            0 => (None, None),
            1 => (Some(percent), None),
            _ => (None, Some(Fraction { numerator, denominator })),
        };
        RequestMirror {
            backend_ref: BackendObjectReference { group, kind, name, namespace: None, port },
            percent,
            fraction,
        }
    }
}

prop_compose! {
    fn redirect()(
        scheme in option::of(select(vec![RedirectScheme::Http, RedirectScheme::Https])),
        hostname in option::of(subdomain()),
        path in option::of(path_modifier()),
        port in option::of(port()),
        status_code in option::of(select(RedirectStatusCode::ALL.to_vec())),
    ) -> RequestRedirect {
        RequestRedirect { scheme, hostname, path, port, status_code }
    }
}

prop_compose! {
    fn cors()(
        any_origin in any::<bool>(),
        origins in btree_set("https?://(\\*\\.)?[a-z]{1,8}(\\.[a-z]{2,3})?(:[0-9]{1,4})?", 0..3),
        allow_credentials in option::of(any::<bool>()),
        any_method in any::<bool>(),
        methods in btree_set(select(vec!["GET", "POST", "PUT", "PATCH", "OPTIONS"]), 0..3),
        allow_headers in btree_set(header_name(), 0..3),
        expose_headers in btree_set(header_name(), 0..3),
        max_age in option::of(1..=86400i32),
    ) -> Cors {
        let method = |m: &str| match m {
            "GET" => CorsMethod::Get,
            "POST" => CorsMethod::Post,
            "PUT" => CorsMethod::Put,
            "PATCH" => CorsMethod::Patch,
            _ => CorsMethod::Options,
        };
        Cors {
            allow_origins: if any_origin { vec!["*".to_owned()] } else { origins.into_iter().collect() },
            allow_credentials,
            allow_methods: if any_method {
                vec![CorsMethod::Any]
            } else {
                methods.into_iter().map(method).collect()
            },
            allow_headers: allow_headers.into_iter().collect(),
            expose_headers: expose_headers.into_iter().collect(),
            max_age,
        }
    }
}

prop_compose! {
    fn extension()(group in prop_oneof![Just(String::new()), subdomain()], kind in "[A-Z][a-zA-Z0-9]{0,8}", name in label()) -> HttpRouteFilter {
        HttpRouteFilter {
            extension_ref: Some(LocalObjectReference { group, kind, name }),
            ..HttpRouteFilter::new(HttpRouteFilterType::ExtensionRef)
        }
    }
}

/// A filter list that keeps the CRD's rules: each unrepeatable type at most once, not both a
/// redirect and a rewrite. `redirect_allowed` is false when the rule has backends.
fn filters(redirect_allowed: bool) -> impl Strategy<Value = Vec<HttpRouteFilter>> {
    (
        option::of(header_modifier()),
        option::of(header_modifier()),
        option::of(mirror()),
        option::of(prop_oneof![
            redirect().prop_map(|r| (Some(r), None)),
            (option::of(subdomain()), option::of(path_modifier()))
                .prop_map(|(hostname, path)| { (None, Some(UrlRewrite { hostname, path })) }),
        ]),
        option::of(cors()),
        vec(extension(), 0..2),
    )
        .prop_map(
            move |(request, response, mirror, redirect_or_rewrite, cors, extensions)| {
                let mut out = extensions;
                let mut push = |type_, fill: &dyn Fn(&mut HttpRouteFilter)| {
                    let mut filter = HttpRouteFilter::new(type_);
                    fill(&mut filter);
                    out.push(filter);
                };
                if let Some(m) = request {
                    push(HttpRouteFilterType::RequestHeaderModifier, &|f| {
                        f.request_header_modifier = Some(m.clone())
                    });
                }
                if let Some(m) = response {
                    push(HttpRouteFilterType::ResponseHeaderModifier, &|f| {
                        f.response_header_modifier = Some(m.clone())
                    });
                }
                if let Some(m) = mirror {
                    push(HttpRouteFilterType::RequestMirror, &|f| {
                        f.request_mirror = Some(m.clone())
                    });
                }
                match redirect_or_rewrite {
                    Some((Some(r), _)) if redirect_allowed => {
                        push(HttpRouteFilterType::RequestRedirect, &|f| {
                            f.request_redirect = Some(r.clone())
                        });
                    }
                    Some((_, Some(r))) => {
                        push(HttpRouteFilterType::UrlRewrite, &|f| {
                            f.url_rewrite = Some(r.clone())
                        });
                    }
                    _ => {}
                }
                if let Some(c) = cors {
                    push(HttpRouteFilterType::Cors, &|f| f.cors = Some(c.clone()));
                }
                out
            },
        )
        .prop_shuffle()
}

prop_compose! {
    fn backend()(
        explicit in any::<bool>(),
        name in label(),
        namespace in option::of(label()),
        port in port(),
        weight in option::of(0..=1_000_000i32),
        request in option::of(header_modifier()),
    ) -> HttpBackendRef {
        let filters = request
            .map(|m| HttpRouteFilter {
                request_header_modifier: Some(m),
                ..HttpRouteFilter::new(HttpRouteFilterType::RequestHeaderModifier)
            })
            .into_iter()
            .collect();
        HttpBackendRef {
            group: explicit.then(String::new),
            kind: explicit.then(|| "Service".to_owned()),
            name,
            namespace,
            port: Some(port),
            weight,
            filters,
        }
    }
}

prop_compose! {
    fn timeouts()(
        request in option::of(select(vec!["0s", "10s", "1m", "1h30m"])),
        backend in option::of(select(vec!["500ms", "1s", "5s"])),
    ) -> HttpRouteTimeouts {
        // Every backend timeout here is within every non-zero request timeout.
        HttpRouteTimeouts {
            request: request.map(str::to_owned),
            backend_request: backend.map(str::to_owned),
        }
    }
}

fn rule() -> impl Strategy<Value = HttpRouteRule> {
    (
        option::of(subdomain()),
        vec(http_match(), 0..3),
        vec(backend(), 0..3),
        option::of(timeouts()),
    )
        .prop_flat_map(|(name, matches, backend_refs, timeouts)| {
            let redirect_allowed = backend_refs.is_empty();
            filters(redirect_allowed).prop_map(move |mut filters| {
                // ReplacePrefixMatch replaces what a single PathPrefix match matched; with
                // other matches, replace the full path instead.
                let single_prefix = match matches.as_slice() {
                    [] => true,
                    [only] => only
                        .path
                        .as_ref()
                        .is_none_or(|p| p.type_.unwrap_or_default() == PathMatchType::PathPrefix),
                    _ => false,
                };
                if !single_prefix {
                    for filter in &mut filters {
                        let paths = [
                            filter
                                .request_redirect
                                .as_mut()
                                .and_then(|r| r.path.as_mut()),
                            filter.url_rewrite.as_mut().and_then(|r| r.path.as_mut()),
                        ];
                        for modifier in paths.into_iter().flatten() {
                            if let Some(value) = modifier.replace_prefix_match.take() {
                                modifier.type_ = PathModifierType::ReplaceFullPath;
                                modifier.replace_full_path = Some(value);
                            }
                        }
                    }
                }
                HttpRouteRule {
                    name: name.clone(),
                    matches: matches.clone(),
                    filters,
                    backend_refs: backend_refs.clone(),
                    timeouts: timeouts.clone(),
                }
            })
        })
}

prop_compose! {
    fn http_route()(
        v1 in any::<bool>(),
        name in subdomain(),
        namespace in option::of(label()),
        labels in btree_map(label(), header_value(), 0..3),
        annotations in btree_map(subdomain().prop_map(|s| format!("{s}/note")), header_value(), 0..2),
        parent_refs in parents(),
        hostnames in vec("(\\*\\.)?[a-z][a-z0-9-]{0,5}[a-z0-9](\\.[a-z]{2,4}){0,2}", 0..3),
        rules in vec(rule(), 0..3),
    ) -> HttpRoute {
        HttpRoute {
            api_version: format!("gateway.networking.k8s.io/{}", if v1 { "v1" } else { "v1beta1" }),
            meta: ObjectMeta { name, namespace, labels, annotations },
            spec: HttpRouteSpec { parent_refs, hostnames, rules },
        }
    }
}

/// What the loader must produce for `route`: the default namespace and the schema defaults.
fn loaded(route: &HttpRoute) -> Resource {
    let mut resource = Resource::HttpRoute(route.clone());
    resource
        .meta_mut()
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    resource.apply_defaults();
    resource
}

/// JSON to yaml-rust2's tree, for its block-style emitter.
fn to_yaml(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Value::Object(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(hash)
        }
    }
}

/// Parses `text` and asserts it yields exactly `expected`, without errors.
fn assert_loads_as(text: &str, expected: &[Resource]) -> Result<(), TestCaseError> {
    let (resources, diagnostics) = parse_str(Path::new("generated.yaml"), text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    prop_assert!(errors.is_empty(), "{}\n{text}", errors.join("\n"));
    let got: Vec<&Resource> = resources.iter().map(|r| &r.value).collect();
    let want: Vec<&Resource> = expected.iter().collect();
    prop_assert_eq!(got, want, "{}", text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn http_routes_round_trip_through_json_text(route in http_route()) {
        let json = serde_json::to_string_pretty(&Resource::HttpRoute(route.clone()))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_loads_as(&json, &[loaded(&route)])?;
    }

    #[test]
    fn http_routes_round_trip_through_block_yaml(routes in vec(http_route(), 1..3)) {
        // Several documents in one file, as users write them.
        let mut text = String::new();
        for route in &routes {
            let value = serde_json::to_value(Resource::HttpRoute(route.clone()))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut doc = String::new();
            YamlEmitter::new(&mut doc)
                .dump(&to_yaml(&value))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            text.push_str(&doc);
            text.push('\n');
        }
        let expected: Vec<Resource> = routes.iter().map(loaded).collect();
        assert_loads_as(&text, &expected)?;
    }

    #[test]
    fn defaulted_routes_are_fixed_points(route in http_route()) {
        // Loading what was loaded changes nothing: defaults serialize spelled out.
        let once = loaded(&route);
        let json = serde_json::to_string(&once).map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_loads_as(&json, std::slice::from_ref(&once))?;
    }
}

#[test]
fn generated_strings_cover_yaml_indicators() {
    // The value strategy must reach the characters that force quoting, or the round trips
    // above would not test quoting at all.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let value = header_value()
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or_default();
        seen.extend(value.chars().filter(|c| ":#'\"{}[],& ".contains(*c)));
    }
    let wanted = ":#'\"{}[],& ";
    assert_eq!(seen.len(), wanted.chars().count(), "{seen:?}");
}
