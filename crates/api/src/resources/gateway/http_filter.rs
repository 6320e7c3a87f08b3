//! HTTPRoute filters: header modifiers, mirroring, redirects, URL rewrites, CORS and
//! extension references, with the CRD's rules for each filter and for a filter list.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::common::{
    check_filter_fields, check_filter_repeats, check_target_hostname, HeaderModifier,
    LocalObjectReference, RequestMirror, RouteFilter, SharedFilterConfig,
};
use super::validate::{
    check_max_items, check_port, check_string, check_unique, push, GatewayError, Rule, HEADER_NAME,
    MAX_NAME_LEN, MAX_PATH_LEN,
};
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;

/// Most filters in one list.
pub(crate) const MAX_FILTERS: usize = 16;
/// Most CORS origins, allowed headers or exposed headers.
const MAX_CORS_ENTRIES: usize = 64;
/// Most CORS methods (every method once, or `*`).
const MAX_CORS_METHODS: usize = 9;
/// Default CORS `maxAge`, in seconds.
pub const DEFAULT_CORS_MAX_AGE: i32 = 5;
/// Filter types that may appear at most once in an HTTPRoute filter list.
const UNREPEATABLE: [&str; 5] = [
    "CORS",
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
];

/// One HTTPRoute filter: its type, and the configuration field of that type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    /// Which filter this is; the field of the same name must be set, and no other.
    #[serde(rename = "type")]
    pub type_: HttpRouteFilterType,
    /// For [`HttpRouteFilterType::RequestHeaderModifier`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For [`HttpRouteFilterType::ResponseHeaderModifier`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For [`HttpRouteFilterType::RequestMirror`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
    /// For [`HttpRouteFilterType::RequestRedirect`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// For [`HttpRouteFilterType::UrlRewrite`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// For [`HttpRouteFilterType::Cors`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// For [`HttpRouteFilterType::ExtensionRef`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

/// The kinds of HTTPRoute filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpRouteFilterType {
    /// Set, add or remove request headers.
    RequestHeaderModifier,
    /// Set, add or remove response headers.
    ResponseHeaderModifier,
    /// Copy requests to another backend.
    RequestMirror,
    /// Answer with a redirect instead of forwarding.
    RequestRedirect,
    /// Change the host or path before forwarding.
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    /// An implementation-specific filter.
    ExtensionRef,
    /// Answer CORS preflights and add CORS headers.
    #[serde(rename = "CORS")]
    Cors,
}

impl HttpRouteFilterType {
    /// The name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            HttpRouteFilterType::RequestHeaderModifier => "RequestHeaderModifier",
            HttpRouteFilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
            HttpRouteFilterType::RequestMirror => "RequestMirror",
            HttpRouteFilterType::RequestRedirect => "RequestRedirect",
            HttpRouteFilterType::UrlRewrite => "URLRewrite",
            HttpRouteFilterType::ExtensionRef => "ExtensionRef",
            HttpRouteFilterType::Cors => "CORS",
        }
    }
}

/// Answer with a redirect. Every field left out keeps the request's own value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// The scheme of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    /// The host of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How to change the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// The port of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// The status; defaults to [`RedirectStatusCode::Found`] (302).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<RedirectStatusCode>,
}

/// The scheme of a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

/// The status codes a redirect may answer with; written as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedirectStatusCode {
    /// 301.
    MovedPermanently,
    /// 302, the default.
    Found,
    /// 303.
    SeeOther,
    /// 307.
    TemporaryRedirect,
    /// 308.
    PermanentRedirect,
}

impl RedirectStatusCode {
    /// Every code, in numeric order.
    pub const ALL: [RedirectStatusCode; 5] = [
        RedirectStatusCode::MovedPermanently,
        RedirectStatusCode::Found,
        RedirectStatusCode::SeeOther,
        RedirectStatusCode::TemporaryRedirect,
        RedirectStatusCode::PermanentRedirect,
    ];

    /// The HTTP status code.
    pub fn code(self) -> u16 {
        match self {
            RedirectStatusCode::MovedPermanently => 301,
            RedirectStatusCode::Found => 302,
            RedirectStatusCode::SeeOther => 303,
            RedirectStatusCode::TemporaryRedirect => 307,
            RedirectStatusCode::PermanentRedirect => 308,
        }
    }
}

impl Serialize for RedirectStatusCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.code())
    }
}

/// Reads the integer and maps it to a code, so that a wrong one is a type error at the
/// field, naming the allowed values.
struct StatusCodeVisitor;

impl Visitor<'_> for StatusCodeVisitor {
    type Value = RedirectStatusCode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of 301, 302, 303, 307, 308")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RedirectStatusCode, E> {
        RedirectStatusCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == v)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RedirectStatusCode, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for RedirectStatusCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(StatusCodeVisitor)
    }
}

/// Change the host and/or path before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// The new Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How to change the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// A change of path, for redirects and rewrites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathModifier {
    /// Which change; the field of the same name must be set.
    #[serde(rename = "type")]
    pub type_: PathModifierType,
    /// The whole new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// What the matched prefix is replaced with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// The kinds of path change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathModifierType {
    /// Replace the whole path.
    ReplaceFullPath,
    /// Replace the prefix the rule's PathPrefix match matched.
    ReplacePrefixMatch,
}

/// Cross-origin resource sharing: which origins, methods and headers browsers may use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins (`https://example.com`, `https://*.example.com`, or `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// Whether credentials may be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Allowed methods, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<CorsMethod>,
    /// Allowed request headers, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached, in seconds; defaults to
    /// [`DEFAULT_CORS_MAX_AGE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
}

/// A method a CORS filter allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CorsMethod {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
    /// OPTIONS.
    Options,
    /// TRACE.
    Trace,
    /// PATCH.
    Patch,
    /// `*`: every method.
    #[serde(rename = "*")]
    Any,
}

impl CorsMethod {
    /// The method as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            CorsMethod::Get => "GET",
            CorsMethod::Head => "HEAD",
            CorsMethod::Post => "POST",
            CorsMethod::Put => "PUT",
            CorsMethod::Delete => "DELETE",
            CorsMethod::Connect => "CONNECT",
            CorsMethod::Options => "OPTIONS",
            CorsMethod::Trace => "TRACE",
            CorsMethod::Patch => "PATCH",
            CorsMethod::Any => "*",
        }
    }
}

impl HttpRouteFilter {
    /// A filter of `type_` with no configuration yet.
    pub fn new(type_: HttpRouteFilterType) -> Self {
        Self {
            type_,
            request_header_modifier: None,
            response_header_modifier: None,
            request_mirror: None,
            request_redirect: None,
            url_rewrite: None,
            cors: None,
            extension_ref: None,
        }
    }

    /// The filter type whose `path.replacePrefixMatch` this filter uses, if it does.
    pub(crate) fn replaces_prefix(&self) -> Option<&'static str> {
        let uses = |path: Option<&PathModifier>| {
            path.is_some_and(|p| {
                p.type_ == PathModifierType::ReplacePrefixMatch && p.replace_prefix_match.is_some()
            })
        };
        if uses(self.request_redirect.as_ref().and_then(|r| r.path.as_ref())) {
            Some("RequestRedirect")
        } else if uses(self.url_rewrite.as_ref().and_then(|r| r.path.as_ref())) {
            Some("URLRewrite")
        } else {
            None
        }
    }

    /// Checks the filter (at `path`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let shared = SharedFilterConfig {
            request_header_modifier: self.request_header_modifier.as_ref(),
            response_header_modifier: self.response_header_modifier.as_ref(),
            request_mirror: self.request_mirror.as_ref(),
        };
        let [request_modifier, response_modifier, mirror] = shared.fields();
        let fields = [
            request_modifier,
            response_modifier,
            mirror,
            (
                "requestRedirect",
                "RequestRedirect",
                self.request_redirect.is_some(),
            ),
            ("urlRewrite", "URLRewrite", self.url_rewrite.is_some()),
            ("cors", "CORS", self.cors.is_some()),
            ("extensionRef", "ExtensionRef", self.extension_ref.is_some()),
        ];
        check_filter_fields(self.type_.name(), &fields, path, out);
        shared.validate(path, out);
        if let Some(redirect) = &self.request_redirect {
            let at = path.field("requestRedirect");
            check_target_hostname(redirect.hostname.as_deref(), &at.field("hostname"), out);
            if let Some(modifier) = &redirect.path {
                modifier.validate(&at.field("path"), out);
            }
            check_port(redirect.port, &at.field("port"), out);
        }
        if let Some(rewrite) = &self.url_rewrite {
            let at = path.field("urlRewrite");
            check_target_hostname(rewrite.hostname.as_deref(), &at.field("hostname"), out);
            if let Some(modifier) = &rewrite.path {
                modifier.validate(&at.field("path"), out);
            }
        }
        if let Some(cors) = &self.cors {
            cors.validate(&path.field("cors"), out);
        }
        if let Some(extension) = &self.extension_ref {
            extension.validate(&path.field("extensionRef"), out);
        }
    }
}

impl RouteFilter for HttpRouteFilter {
    /// Fills in the schema defaults: redirect status 302, mirror defaults, CORS maxAge 5.
    fn apply_defaults(&mut self) {
        if let Some(redirect) = &mut self.request_redirect {
            redirect
                .status_code
                .get_or_insert(RedirectStatusCode::Found);
        }
        if let Some(mirror) = &mut self.request_mirror {
            mirror.apply_defaults();
        }
        if let Some(cors) = &mut self.cors {
            cors.max_age.get_or_insert(DEFAULT_CORS_MAX_AGE);
        }
    }

    /// Checks an HTTPRoute filter list (at `path`): its size, each filter, the types that
    /// may appear once, and that it does not both redirect and rewrite.
    fn validate_list(filters: &[Self], path: &FieldPath, out: &mut Vec<Violation>) {
        check_max_items("filters", filters.len(), MAX_FILTERS, path, out);
        for (i, filter) in filters.iter().enumerate() {
            filter.validate(&path.index(i), out);
        }
        check_filter_repeats(
            filters.iter().map(|f| f.type_.name()),
            &UNREPEATABLE,
            path,
            out,
        );
        let has = |t| filters.iter().any(|f| f.type_ == t);
        if has(HttpRouteFilterType::RequestRedirect) && has(HttpRouteFilterType::UrlRewrite) {
            push(out, path.clone(), GatewayError::RedirectAndRewrite);
        }
    }
}

impl PathModifier {
    /// Checks the modifier (at `path`): the field its type names is set, the other is not,
    /// and the new path is not too long.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let full = (
            "replaceFullPath",
            "ReplaceFullPath",
            &self.replace_full_path,
        );
        let prefix = (
            "replacePrefixMatch",
            "ReplacePrefixMatch",
            &self.replace_prefix_match,
        );
        let chosen = match self.type_ {
            PathModifierType::ReplaceFullPath => full.1,
            PathModifierType::ReplacePrefixMatch => prefix.1,
        };
        for (field, modifier_type, value) in [full, prefix] {
            match value {
                None if modifier_type == chosen => {
                    let error = GatewayError::ModifierValueMissing {
                        field,
                        modifier_type,
                    };
                    push(out, path.field("type"), error);
                }
                Some(_) if modifier_type != chosen => {
                    let error = GatewayError::ModifierTypeMismatch {
                        field,
                        modifier_type,
                    };
                    push(out, path.field(field), error);
                }
                Some(value) => {
                    // The CRD bounds only the length: `/`, `/prefix` and even an empty string
                    // are all valid replacements.
                    let len = value.chars().count();
                    if len > MAX_PATH_LEN {
                        let error = GatewayError::TooLong {
                            what: "path",
                            max: MAX_PATH_LEN,
                            len,
                        };
                        push(out, path.field(field), error);
                    }
                }
                None => {}
            }
        }
    }
}

/// A CORS origin: `*`, or `http(s)://host[:port]` where host may start with `*.` or be `*`.
fn is_cors_origin(value: &str) -> bool {
    if value == "*" {
        return true;
    }
    let Some(rest) = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    if let Some(port) = port {
        if !(1..=5).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host == "*" {
        return true;
    }
    let host = host.strip_prefix("*.").unwrap_or(host);
    host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// CORS origins.
const ORIGIN: Rule = Rule {
    what: "origin",
    max_len: MAX_NAME_LEN,
    valid: is_cors_origin,
    words: "'*', or http:// or https:// then a host (which may start with '*.') and a port",
    may_be_empty: false,
};

impl Cors {
    /// Checks the filter (at `path`).
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let origins = path.field("allowOrigins");
        check_max_items(
            "origins",
            self.allow_origins.len(),
            MAX_CORS_ENTRIES,
            &origins,
            out,
        );
        for (i, origin) in self.allow_origins.iter().enumerate() {
            check_string(ORIGIN, origin, &origins.index(i), out);
        }
        let keys = self.allow_origins.iter().map(String::as_str);
        check_set("origin", "allowOrigins", keys, &origins, out);

        let methods = path.field("allowMethods");
        let count = self.allow_methods.len();
        check_max_items("methods", count, MAX_CORS_METHODS, &methods, out);
        let names = self.allow_methods.iter().map(|m| m.name());
        check_set("method", "allowMethods", names, &methods, out);

        for (field, wildcard_alone) in [("allowHeaders", true), ("exposeHeaders", false)] {
            let list = if wildcard_alone {
                &self.allow_headers
            } else {
                &self.expose_headers
            };
            let at = path.field(field);
            check_max_items("headers", list.len(), MAX_CORS_ENTRIES, &at, out);
            for (i, name) in list.iter().enumerate() {
                check_string(HEADER_NAME, name, &at.index(i), out);
            }
            let keys = list.iter().map(String::as_str);
            if wildcard_alone {
                check_set("header name", field, keys, &at, out);
            } else {
                check_unique("header name", keys.enumerate(), |i| at.index(i), out);
            }
        }
        if let Some(max_age) = self.max_age {
            if max_age < 1 {
                let error = GatewayError::TooSmall {
                    what: "maxAge",
                    value: max_age.into(),
                    min: 1,
                };
                push(out, path.field("maxAge"), error);
            }
        }
    }
}

/// A CORS list that is a set which may hold `*` only on its own.
fn check_set<'a>(
    what: &'static str,
    list: &'static str,
    keys: impl Iterator<Item = &'a str> + Clone,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    check_unique(what, keys.clone().enumerate(), |i| path.index(i), out);
    if keys.clone().any(|k| k == "*") && keys.count() > 1 {
        push(
            out,
            path.clone(),
            GatewayError::WildcardNotAlone { what: list },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins() {
        for ok in [
            "*",
            "https://example.com",
            "http://*.example.com:8080",
            "https://*",
            "http://a-b.c",
        ] {
            assert!(is_cors_origin(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://",
            "https://a..b",
            "https://a:123456",
            "https://a/b",
            "https://a:",
        ] {
            assert!(!is_cors_origin(bad), "{bad}");
        }
    }

    #[test]
    fn status_codes_are_integers() {
        let code: RedirectStatusCode = serde_json::from_value(serde_json::json!(301)).unwrap();
        assert_eq!(code, RedirectStatusCode::MovedPermanently);
        assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(301));
        let err = serde_json::from_value::<RedirectStatusCode>(serde_json::json!(304)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value: integer `304`, expected one of 301, 302, 303, 307, 308"
        );
    }
}
