//! What an HTTP route does instead of forwarding as is: answer with a redirect or a fixed
//! response, hand over to a delegate VirtualService, or rewrite the path and authority on
//! the way. The mesh does not act on any of them yet; they are typed and validated so that
//! mistakes surface now.

use serde::{Deserialize, Serialize};

use super::VirtualServiceError;
use crate::resources::istio::{check_exclusive, check_port, check_range, check_regex, push};
use crate::resources::path::FieldPath;
use crate::resources::validate::{
    is_dns1123_label, is_dns1123_subdomain, ValidationError, Violation,
};

/// Which port a redirect's `Location` carries, instead of a fixed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port the request came in on.
    FromRequestPort,
}

/// Answer with a redirect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replace the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Use this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Derive the port instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replace the scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The redirect status (301 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
    /// Replace the matched prefix of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
}

/// Answer with a fixed response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    /// The HTTP status, 200..=599.
    pub status: u32,
    /// The body, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A direct response body: text or base64-encoded bytes, at most one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    /// The body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// The body as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// Another VirtualService whose routes handle the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its namespace (this one by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Path and authority rewrites before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replace the matched part of the path (the prefix, or the whole exact path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Rewrite the path with a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regular-expression path rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// The RE2 expression to match.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<String>,
    /// The replacement, with `\1`-style groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

impl HttpRedirect {
    /// Checks the redirect at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_exclusive(
            "port or derivePort",
            &[
                ("port", self.port.is_some()),
                ("derivePort", self.derive_port.is_some()),
            ],
            path,
            out,
        );
        check_exclusive(
            "uri or prefixRewrite",
            &[
                ("uri", self.uri.is_some()),
                ("prefixRewrite", self.prefix_rewrite.is_some()),
            ],
            path,
            out,
        );
        let changes_something = self.uri.is_some()
            || self.authority.is_some()
            || self.scheme.is_some()
            || self.port.is_some()
            || self.derive_port.is_some()
            || self.prefix_rewrite.is_some();
        if !changes_something {
            push(out, path.clone(), VirtualServiceError::EmptyRedirect);
        }
        check_port(self.port, &path.field("port"), out);
        check_range(
            self.redirect_code.map(i64::from),
            "redirect code",
            300,
            399,
            &path.field("redirectCode"),
            out,
        );
    }
}

/// Whether `text` is standard base64 (padding optional, as protobuf's JSON reader allows).
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    padding <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
        && body.len() % 4 != 1
        && (padding == 0 || text.len().is_multiple_of(4))
}

impl HttpDirectResponse {
    /// Checks the response at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_range(
            Some(i64::from(self.status)),
            "HTTP status",
            200,
            599,
            &path.field("status"),
            out,
        );
        if let Some(body) = &self.body {
            let at = path.field("body");
            check_exclusive(
                "string or bytes",
                &[
                    ("string", body.string.is_some()),
                    ("bytes", body.bytes.is_some()),
                ],
                &at,
                out,
            );
            if let Some(bytes) = &body.bytes {
                if !is_base64(bytes) {
                    push(out, at.field("bytes"), VirtualServiceError::Base64);
                }
            }
        }
    }
}

impl Delegate {
    /// Checks the reference at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let name = self.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            push(
                out,
                path.field("name"),
                ValidationError::Empty {
                    what: "delegate name",
                },
            );
        } else if !is_dns1123_subdomain(name) {
            push(
                out,
                path.field("name"),
                ValidationError::NotDnsSubdomain {
                    value: name.to_owned(),
                },
            );
        }
        if let Some(namespace) = &self.namespace {
            if !is_dns1123_label(namespace) {
                push(
                    out,
                    path.field("namespace"),
                    ValidationError::NotDnsLabel {
                        value: namespace.clone(),
                    },
                );
            }
        }
    }
}

impl HttpRewrite {
    /// Checks the rewrite at `path`.
    pub(super) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_exclusive(
            "uri or uriRegexRewrite",
            &[
                ("uri", self.uri.is_some()),
                ("uriRegexRewrite", self.uri_regex_rewrite.is_some()),
            ],
            path,
            out,
        );
        if let Some(pattern) = self
            .uri_regex_rewrite
            .as_ref()
            .and_then(|r| r.match_.as_ref())
        {
            check_regex(pattern, &path.field("uriRegexRewrite").field("match"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        for ok in ["", "aGk=", "aGVsbG8", "aGVsbG8=", "YQ==", "-_8A"] {
            assert!(is_base64(ok), "{ok}");
        }
        for bad in ["a", "a===", "aGk=x", "a b", "YQ="] {
            assert!(!is_base64(bad), "{bad}");
        }
    }
}
