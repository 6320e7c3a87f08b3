//! One resource per CRD rule, each rejected with exactly one error at the expected field. The
//! line that error must point at carries a `#<` comment in the YAML, so every case states its
//! position where it is written.

use std::path::Path;

use trellis_api::load::{parse_str, Diagnostic};

/// Removes the indentation the cases share, so they can be written indented in the source.
fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim_start_matches('\n')
        .to_owned()
        + "\n"
}

/// An HTTPRoute whose spec is `spec` (indented two spaces, as under `spec:`).
fn http(spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  \
         namespace: ns\nspec:\n{}",
        indent(&dedent(spec))
    )
}

/// Like [`http`] for another kind and apiVersion.
fn resource(api_version: &str, kind: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/{api_version}\nkind: {kind}\nmetadata:\n  \
         name: r\n  namespace: ns\nspec:\n{}",
        indent(&dedent(spec))
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The parent every HTTPRoute case attaches to, on line 8.
const PARENT: &str = "parentRefs:\n- {group: \"\", kind: Service, name: echo, port: 80}\n";

/// Asserts `yaml` loads to nothing with exactly one error, at `field`, on the line marked
/// `#<`, whose message contains `message`.
#[track_caller]
fn rejected(yaml: &str, field: &str, message: &str) -> Diagnostic {
    let (resources, diagnostics) = parse_str(Path::new("case.yaml"), yaml);
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(resources.is_empty(), "accepted:\n{yaml}");
    assert_eq!(errors.len(), 1, "{yaml}\n{errors:#?}");
    let error = errors[0];
    assert_eq!(error.field.as_deref(), Some(field), "{yaml}\n{error:#?}");
    assert!(
        error.message.contains(message),
        "{:?} does not contain {message:?}",
        error.message
    );
    let marked = yaml
        .lines()
        .position(|l| l.contains("#<"))
        .map(|i| i + 1)
        .expect("the case marks its line with #<");
    assert_eq!(error.line, marked, "{yaml}\n{error}");
    error.clone()
}

#[test]
fn path_match_values_must_be_clean_absolute_paths() {
    for (value, reason) in [
        ("v1", "must be an absolute path starting with '/'"),
        ("/a//b", "must not contain '//'"),
        ("/a/./b", "must not contain '/./'"),
        ("/a/../b", "must not contain '/../'"),
        ("/a%2fb", "must not contain '%2f'"),
        ("/a#b", "must not contain '#'"),
        ("/a/..", "must not end with '/..'"),
        ("/a b", "must only contain"),
    ] {
        let yaml = http(&format!(
            "{PARENT}rules:\n- matches:\n  - path:\n      type: Exact\n      value: \"{value}\" #<\n"
        ));
        let error = rejected(&yaml, "spec.rules[0].matches[0].path.value", reason);
        let line = yaml.lines().nth(error.line - 1).unwrap_or_default();
        assert_eq!(Some(error.column - 1), line.find('"'), "the value itself");
    }
    // A regular expression is left to the implementation.
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - path: {{type: RegularExpression, value: \"v[0-9]+\"}}\n"
    ));
    let (resources, _) = parse_str(Path::new("case.yaml"), &yaml);
    assert_eq!(resources.len(), 1);
}

#[test]
fn enums_are_checked_by_type() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - path: {{type: Prefix, value: /}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].path.type",
        "unknown variant `Prefix`, expected one of `Exact`, `PathPrefix`, `RegularExpression`",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - method: FETCH #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].method",
        "unknown variant `FETCH`",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - headers:\n    - {{name: a, value: b, type: Prefix}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].headers[0].type",
        "unknown variant `Prefix`, expected `Exact` or `RegularExpression`",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestRedirect\n    requestRedirect:\n      \
         statusCode: 304 #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestRedirect.statusCode",
        "invalid value: integer `304`, expected one of 301, 302, 303, 307, 308",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestRedirect\n    requestRedirect:\n      \
         scheme: ftp #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestRedirect.scheme",
        "unknown variant `ftp`, expected `http` or `https`",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: Rewrite #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].type",
        "unknown variant `Rewrite`",
    );
}

#[test]
fn unknown_and_missing_fields_are_errors() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRef: #<\n  - {{name: echo-v1, port: 8080}}\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRef",
        "unknown field `backendRef`",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - port: 8080 #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs[0].name",
        "missing field `name`",
    );
    // `spec` is required: reported at the document, on its first line.
    let yaml = "apiVersion: gateway.networking.k8s.io/v1 #<\nkind: HTTPRoute\nmetadata:\n  \
                name: r\n";
    rejected(yaml, "spec", "missing field `spec`");
}

#[test]
fn list_sizes_are_bounded() {
    let many = |n: usize, item: &str| {
        (0..n)
            .map(|i| item.replace("{i}", &i.to_string()))
            .collect::<String>()
    };

    let yaml = http(&format!("{PARENT}rules: #<\n{}", many(17, "- {}\n")));
    rejected(&yaml, "spec.rules", "at most 16 rules allowed, found 17");

    let yaml = http(&format!("{PARENT}rules: [] #<\n"));
    rejected(
        &yaml,
        "spec.rules",
        "invalid length 0, expected at least one rule",
    );

    let yaml = http(&format!(
        "{PARENT}rules:\n- matches: #<\n{}",
        many(65, "  - path: {value: /p{i}}\n")
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches",
        "at most 64 matches allowed, found 65",
    );

    let rules = many(
        3,
        &format!("- matches:\n{}", many(50, "  - path: {value: /p{i}}\n")),
    );
    let yaml = http(&format!("{PARENT}rules: #<\n{rules}"));
    rejected(
        &yaml,
        "spec.rules",
        "the total number of matches across all rules must be at most 128, found 150",
    );

    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs: #<\n{}",
        many(17, "  - {name: b{i}, port: 80}\n")
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs",
        "at most 16 backendRefs allowed, found 17",
    );

    let yaml = http(&format!(
        "{PARENT}hostnames: #<\n{}",
        many(17, "- h{i}.example.com\n")
    ));
    rejected(
        &yaml,
        "spec.hostnames",
        "at most 16 hostnames allowed, found 17",
    );

    let yaml = http(&format!(
        "parentRefs: #<\n{}",
        many(33, "- {group: \"\", kind: Service, name: s{i}}\n")
    ));
    rejected(
        &yaml,
        "spec.parentRefs",
        "at most 32 parentRefs allowed, found 33",
    );

    let yaml = http(&format!(
        "{PARENT}rules:\n- filters: #<\n{}",
        many(
            17,
            "  - {type: ExtensionRef, extensionRef: {group: x.io, kind: F, name: f{i}}}\n"
        )
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters",
        "at most 16 filters allowed, found 17",
    );

    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - headers: #<\n{}",
        many(17, "    - {name: h{i}, value: v}\n")
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].headers",
        "at most 16 headers allowed, found 17",
    );
}

#[test]
fn names_hostnames_and_strings_follow_their_patterns() {
    let yaml = http(&format!("{PARENT}hostnames:\n- Example.com #<\n"));
    rejected(
        &yaml,
        "spec.hostnames[0]",
        "\"Example.com\" is not a valid hostname",
    );
    let yaml = http(&format!(
        "{PARENT}hostnames:\n- \"*.example.com\"\n- \"*\" #<\n"
    ));
    rejected(&yaml, "spec.hostnames[1]", "is not a valid hostname");
    let yaml = http(&format!("{PARENT}rules:\n- name: Rule_1 #<\n"));
    rejected(
        &yaml,
        "spec.rules[0].name",
        "\"Rule_1\" is not a valid rule name",
    );
    let yaml = http("parentRefs:\n- {kind: 2Service, name: echo} #<\n");
    rejected(
        &yaml,
        "spec.parentRefs[0].kind",
        "\"2Service\" is not a valid kind",
    );
    let yaml = http("parentRefs:\n- {kind: Service, group: \"\", name: echo, namespace: NS} #<\n");
    rejected(
        &yaml,
        "spec.parentRefs[0].namespace",
        "\"NS\" is not a valid namespace",
    );
    let yaml = http("parentRefs:\n- {kind: Service, group: \"\", name: \"\"} #<\n");
    rejected(&yaml, "spec.parentRefs[0].name", "name must not be empty");
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - headers:\n    - {{name: \"x header\", value: v}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].headers[0].name",
        "is not a valid header name",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - headers:\n    - {{name: x, value: \"\"}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].headers[0].value",
        "header value must not be empty",
    );
    let long = "v".repeat(4097);
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - headers:\n    - {{name: x, value: {long}}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].headers[0].value",
        "header value is 4097 characters long, at most 4096 allowed",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestRedirect\n    requestRedirect:\n      \
         hostname: \"*.example.com\" #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestRedirect.hostname",
        "is not a valid hostname",
    );
}

#[test]
fn numbers_stay_in_range() {
    let yaml = http("parentRefs:\n- {group: \"\", kind: Service, name: echo, port: 0} #<\n");
    rejected(
        &yaml,
        "spec.parentRefs[0].port",
        "port 0 must be between 1 and 65535",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - {{name: b, port: 70000}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs[0].port",
        "port 70000 must be between 1 and 65535",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - {{name: b, port: 80, weight: 1000001}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs[0].weight",
        "weight 1000001 must be between 0 and 1000000",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - {{name: b, port: 80, weight: -1}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs[0].weight",
        "weight -1 must be between 0 and 1000000",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestRedirect\n    requestRedirect:\n      \
         port: 65536 #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestRedirect.port",
        "port 65536",
    );
}

#[test]
fn service_backends_need_a_port() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - name: echo-v1 #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs[0]",
        "port is required for a Service reference",
    );
    // Another kind of backend may leave the port out.
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - {{group: example.com, kind: Bucket, name: b}}\n"
    ));
    assert_eq!(parse_str(Path::new("case.yaml"), &yaml).0.len(), 1);
}

#[test]
fn match_keys_are_unique() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - headers:\n    - {{name: version, value: one}}\n    \
         - {{name: version, value: two}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].headers[1].name",
        "duplicate header name \"version\" (also at index 0)",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - queryParams:\n    - {{name: animal, value: whale}}\n    \
         - {{name: animal, value: shark}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].matches[0].queryParams[1].name",
        "duplicate query parameter name \"animal\"",
    );
}

#[test]
fn filters_carry_exactly_their_configuration() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestHeaderModifier #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].type",
        "filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestHeaderModifier\n    \
         requestHeaderModifier: {{remove: [x]}}\n    requestRedirect: {{port: 80}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestRedirect",
        "filter.requestRedirect must not be set when filter.type is not RequestRedirect",
    );
}

#[test]
fn filters_that_may_appear_once() {
    let modifier = "  - type: RequestHeaderModifier\n    requestHeaderModifier: {remove: [x]}\n";
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n{modifier}  - type: RequestHeaderModifier #<\n    \
         requestHeaderModifier: {{remove: [y]}}\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[1].type",
        "RequestHeaderModifier filter cannot be repeated (also at index 0)",
    );
    // The same rule holds for a backend's filters.
    let yaml = http(&format!(
        "{PARENT}rules:\n- backendRefs:\n  - name: b\n    port: 80\n    filters:\n    \
         - {{type: CORS, cors: {{allowOrigins: [\"*\"]}}}}\n    \
         - {{type: CORS, cors: {{maxAge: 10}}}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].backendRefs[0].filters[1].type",
        "CORS filter cannot be repeated",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters: #<\n  - {{type: RequestRedirect, requestRedirect: {{port: 8080}}}}\n  \
         - {{type: URLRewrite, urlRewrite: {{hostname: example.org}}}}\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters",
        "may specify either a RequestRedirect or a URLRewrite filter, but not both",
    );
}

#[test]
fn redirects_do_not_forward() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestRedirect #<\n    \
         requestRedirect: {{hostname: example.org}}\n  backendRefs:\n  - {{name: b, port: 80}}\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0]",
        "RequestRedirect filter must not be used together with backendRefs",
    );
}

#[test]
fn prefix_replacement_needs_one_prefix_match() {
    let rewrite = "  - type: URLRewrite #<\n    urlRewrite:\n      path: \
                   {type: ReplacePrefixMatch, replacePrefixMatch: /new}\n";
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - path: {{value: /a}}\n  - path: {{value: /b}}\n  \
         filters:\n{rewrite}"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0]",
        "when using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix \
         match must be specified",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- matches:\n  - path: {{type: Exact, value: /a}}\n  filters:\n{rewrite}"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0]",
        "exactly one PathPrefix match",
    );
    // With no matches the default match is a PathPrefix one, so the rule is fine.
    let yaml = http(&format!("{PARENT}rules:\n- filters:\n{rewrite}"));
    assert_eq!(parse_str(Path::new("case.yaml"), &yaml).0.len(), 1);
}

#[test]
fn path_modifiers_name_their_value() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: URLRewrite\n    urlRewrite:\n      path:\n        \
         type: ReplaceFullPath\n        replaceFullPat: /x #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].urlRewrite.path.replaceFullPat",
        "unknown field `replaceFullPat`",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: URLRewrite\n    urlRewrite:\n      path:\n        \
         type: ReplaceFullPath #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].urlRewrite.path.type",
        "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: URLRewrite\n    urlRewrite:\n      path:\n        \
         type: ReplaceFullPath\n        replaceFullPath: /x\n        replacePrefixMatch: /y #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch",
        "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
    );
}

#[test]
fn header_modifiers_do_not_repeat_names() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: ResponseHeaderModifier\n    \
         responseHeaderModifier:\n      set:\n      - {{name: X-A, value: a}}\n      \
         - {{name: X-A, value: b}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].responseHeaderModifier.set[1].name",
        "duplicate header name \"X-A\"",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestHeaderModifier\n    \
         requestHeaderModifier:\n      remove:\n      - X-A\n      - X-A #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestHeaderModifier.remove[1]",
        "duplicate",
    );
}

#[test]
fn parents_repeated_need_distinct_sections() {
    let yaml = http(
        "parentRefs:\n- {group: \"\", kind: Service, name: echo, port: 80}\n\
         - {group: \"\", kind: Service, name: echo, port: 8080} #<\n",
    );
    rejected(&yaml, "spec.parentRefs[1]", "sectionName must be unique");
    let yaml = http(
        "parentRefs:\n- {group: \"\", kind: Service, name: echo, sectionName: http}\n\
         - {group: \"\", kind: Service, name: echo} #<\n",
    );
    rejected(&yaml, "spec.parentRefs[1]", "sectionName must be specified");
    // Distinct sections, or distinct parents, are fine.
    let yaml = http(
        "parentRefs:\n- {group: \"\", kind: Service, name: echo, sectionName: http}\n\
         - {group: \"\", kind: Service, name: echo, sectionName: grpc}\n\
         - {group: \"\", kind: Service, name: echo, namespace: other}\n",
    );
    assert_eq!(parse_str(Path::new("case.yaml"), &yaml).0.len(), 1);
}

#[test]
fn timeouts_are_durations_and_ordered() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- timeouts:\n    request: 10 seconds #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].timeouts.request",
        "\"10 seconds\" is not a valid duration",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- timeouts:\n    request: 1s\n    backendRequest: 1m #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].timeouts.backendRequest",
        "backendRequest timeout 1m cannot be longer than request timeout 1s",
    );
    // `0s` disables the request timeout, so any backend timeout fits.
    let yaml = http(&format!(
        "{PARENT}rules:\n- timeouts: {{request: 0s, backendRequest: 1h30m}}\n"
    ));
    assert_eq!(parse_str(Path::new("case.yaml"), &yaml).0.len(), 1);
}

#[test]
fn mirrors_say_how_much_once() {
    let mirror =
        "  - type: RequestMirror\n    requestMirror:\n      backendRef: {name: m, port: 80}\n";
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n{mirror}      percent: 101 #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestMirror.percent",
        "percent 101 must be between 0 and 100",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n{mirror}      fraction: {{numerator: 3, denominator: 2}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestMirror.fraction",
        "numerator 3 must be less than or equal to denominator 2",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestMirror\n    requestMirror: #<\n      \
         backendRef: {{name: m, port: 80}}\n      percent: 5\n      fraction: {{numerator: 1}}\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestMirror",
        "only one of percent or fraction may be specified",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: RequestMirror\n    requestMirror:\n      \
         backendRef: {{name: m}} #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].requestMirror.backendRef",
        "port is required",
    );
}

#[test]
fn cors_lists() {
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: CORS\n    cors:\n      \
         allowOrigins: [\"*\", \"https://example.com\"] #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].cors.allowOrigins",
        "allowOrigins cannot contain '*' alongside other values",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: CORS\n    cors:\n      allowOrigins:\n      \
         - example.com #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].cors.allowOrigins[0]",
        "is not a valid origin",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: CORS\n    cors:\n      maxAge: 0 #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].cors.maxAge",
        "maxAge 0 must be at least 1",
    );
    let yaml = http(&format!(
        "{PARENT}rules:\n- filters:\n  - type: CORS\n    cors:\n      allowMethods: [GET, \"*\"] #<\n"
    ));
    rejected(
        &yaml,
        "spec.rules[0].filters[0].cors.allowMethods",
        "cannot contain '*'",
    );
}

#[test]
fn grpc_route_rules() {
    let parent = PARENT.replace("80", "7070");
    let yaml = resource(
        "v1",
        "GRPCRoute",
        &format!("{parent}rules:\n- matches:\n  - method: {{type: Exact}} #<\n"),
    );
    rejected(
        &yaml,
        "spec.rules[0].matches[0].method",
        "one or both of service or method must be specified",
    );
    let yaml = resource(
        "v1",
        "GRPCRoute",
        &format!("{parent}rules:\n- matches:\n  - method: {{service: pkg/Svc}} #<\n"),
    );
    rejected(
        &yaml,
        "spec.rules[0].matches[0].method.service",
        "is not a valid gRPC service",
    );
    // A regular expression is left to the implementation.
    let yaml = resource(
        "v1",
        "GRPCRoute",
        &format!("{parent}rules:\n- matches:\n  - method: {{type: RegularExpression, service: \"pkg/.*\"}}\n"),
    );
    assert_eq!(parse_str(Path::new("case.yaml"), &yaml).0.len(), 1);
    let yaml = resource(
        "v1",
        "GRPCRoute",
        &format!("{parent}rules:\n- filters:\n  - type: URLRewrite #<\n"),
    );
    rejected(
        &yaml,
        "spec.rules[0].filters[0].type",
        "unknown variant `URLRewrite`",
    );
    let yaml = resource(
        "v1",
        "GRPCRoute",
        &format!(
            "{parent}rules:\n- filters:\n  - {{type: ResponseHeaderModifier, \
             responseHeaderModifier: {{remove: [a]}}}}\n  - type: ResponseHeaderModifier #<\n    \
             responseHeaderModifier: {{remove: [b]}}\n"
        ),
    );
    rejected(
        &yaml,
        "spec.rules[0].filters[1].type",
        "ResponseHeaderModifier filter cannot be repeated",
    );
    let yaml = resource("v1beta1", "GRPCRoute", &format!("{parent}rules: []\n"))
        .replace("kind: GRPCRoute", "kind: GRPCRoute #<");
    rejected(
        &yaml,
        "kind",
        "apiVersion gateway.networking.k8s.io/v1beta1 is not supported for kind GRPCRoute",
    );
}

#[test]
fn tcp_route_rules() {
    let backends = "  backendRefs:\n  - {name: tcp-echo, port: 9000}\n";
    let two_rules = format!(
        "parentRefs:\n- {{name: gw}}\nrules: #<\n-{}-{}",
        &backends[1..],
        &backends[1..]
    );
    let yaml = resource("v1", "TCPRoute", &two_rules);
    rejected(&yaml, "spec.rules", "at most 1 rules allowed, found 2");
    // v1alpha2 allowed up to 16 rules.
    let yaml = resource("v1alpha2", "TCPRoute", &two_rules.replace(" #<", ""));
    assert_eq!(parse_str(Path::new("case.yaml"), &yaml).0.len(), 1);
    let yaml = resource(
        "v1",
        "TCPRoute",
        "parentRefs:\n- {name: gw}\nrules:\n- backendRefs: [] #<\n",
    );
    rejected(
        &yaml,
        "spec.rules[0].backendRefs",
        "at least one backendRef is required",
    );
    let yaml = resource(
        "v1",
        "TCPRoute",
        "parentRefs:\n- {name: gw}\nrules:\n- name: r #<\n",
    );
    rejected(
        &yaml,
        "spec.rules[0].backendRefs",
        "missing field `backendRefs`",
    );
    let yaml = resource("v1", "TCPRoute", "rules: [] #<\n");
    rejected(&yaml, "spec.rules", "at least one rule is required");
}

#[test]
fn reference_grant_rules() {
    let to = "to:\n- {group: \"\", kind: Service}\n";
    let yaml = resource("v1beta1", "ReferenceGrant", &format!("from: [] #<\n{to}"));
    rejected(&yaml, "spec.from", "at least one from entry is required");
    let yaml = resource(
        "v1",
        "ReferenceGrant",
        &format!("from:\n- {{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: Other}} #<\n{to}"),
    );
    rejected(
        &yaml,
        "spec.from[0].namespace",
        "\"Other\" is not a valid namespace",
    );
    let yaml = resource(
        "v1",
        "ReferenceGrant",
        "from:\n- {group: gateway.networking.k8s.io, kind: HTTPRoute} #<\nto: []\n",
    );
    rejected(&yaml, "spec.from[0].namespace", "missing field `namespace`");
    let yaml = resource(
        "v1beta1",
        "ReferenceGrant",
        "from:\n- {group: g.io, kind: HTTPRoute, namespace: a}\nto:\n- {group: \"\", kind: Service-} #<\n",
    );
    rejected(&yaml, "spec.to[0].kind", "is not a valid kind");
}
