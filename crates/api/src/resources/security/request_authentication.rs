//! Istio's `RequestAuthentication`: which JWTs the selected workloads accept (issuer, keys,
//! audiences, where the token is found) and which claims are copied to headers. Not
//! enforced yet.

use serde::{Deserialize, Serialize};

use super::{not_enforced, SecurityError};
use crate::resources::istio::{
    check_exclusive, check_max_items, check_max_len, check_min_1ms, check_not_empty,
    check_target_refs, push, Duration, IstioError, PolicyTargetReference, WorkloadSelector,
};
use crate::resources::notice::Notice;
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;
use crate::resources::ObjectMeta;

/// Most JWT rules.
const MAX_JWT_RULES: usize = 4096;
/// Most space-delimited claims.
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;
/// Longest JWKS URL.
const MAX_URI_LEN: usize = 2048;

/// An Istio `RequestAuthentication`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    /// `security.istio.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Targets and JWT rules.
    #[serde(default)]
    pub spec: RequestAuthenticationSpec,
}

/// The spec of a [`RequestAuthentication`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// The workloads it applies to (all in the namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A Service or Gateway it applies to, instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Services or Gateways it applies to, instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The accepted token issuers and how to check their tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How tokens of one issuer are found and verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The issuer (`iss` claim). Required by Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted audiences (`aud`); any when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the issuer's keys are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The same, in the snake_case spelling Istio's schema also lists as a field of its own.
    #[serde(default, rename = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri_legacy: Option<String>,
    /// The keys themselves, as a JWKS JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers that may carry the token (`Authorization: Bearer` by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters that may carry the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies that may carry the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header to copy the verified payload to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Whether to keep the token in the forwarded request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims to copy to headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout for fetching the keys, at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Claims whose value is a space-separated list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// Whether a token is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<JwtPresence>,
}

/// A header that may carry a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The header name. Required.
    pub name: String,
    /// A prefix before the token (`Bearer `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A claim copied to a request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The header: letters, digits, `-` and `_`. Required.
    pub header: String,
    /// The claim. Required.
    pub claim: String,
}

/// Whether requests must carry a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JwtPresence {
    /// Requests without a token pass (an invalid one still fails).
    Optional,
    /// Requests without a token fail.
    Required,
}

/// Whether `uri` starts with an http or https scheme. The scheme is compared
/// case-insensitively, as URL parsers lower-case it.
fn has_http_scheme(uri: &str) -> bool {
    uri.split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
    })
}

/// Whether `name` is a header name as the schema allows it here: `^[-_A-Za-z0-9]+$`.
fn is_output_header(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RequestAuthenticationSpec {
    /// Adds the semantic problems of this spec to `out`.
    pub(crate) fn validate(&self, out: &mut Vec<Violation>) {
        let spec = FieldPath::root().field("spec");
        check_target_refs(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            &spec,
            out,
        );
        let rules = spec.field("jwtRules");
        check_max_items(self.jwt_rules.len(), MAX_JWT_RULES, "jwtRules", &rules, out);
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.validate(&rules.index(i), out);
        }
    }

    /// Not enforced yet.
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        not_enforced("RequestAuthentication", out);
    }
}

/// Reports empty entries of a list whose items have `minLength: 1`.
fn check_items_not_empty(
    list: &[String],
    what: &'static str,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    for (i, item) in list.iter().enumerate() {
        check_not_empty(item, what, &path.index(i), out);
    }
}

impl JwtRule {
    /// Checks the rule at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        check_not_empty(
            self.issuer.as_deref().unwrap_or_default(),
            "issuer",
            &path.field("issuer"),
            out,
        );
        check_items_not_empty(&self.audiences, "audience", &path.field("audiences"), out);
        check_exclusive(
            "jwks, jwksUri or jwks_uri",
            &[
                ("jwksUri", self.jwks_uri.is_some()),
                ("jwks_uri", self.jwks_uri_legacy.is_some()),
                ("jwks", self.jwks.is_some()),
            ],
            path,
            out,
        );
        for (name, uri) in [
            ("jwksUri", &self.jwks_uri),
            ("jwks_uri", &self.jwks_uri_legacy),
        ] {
            let Some(uri) = uri else { continue };
            let at = path.field(name);
            check_not_empty(uri, "jwksUri", &at, out);
            check_max_len(uri, MAX_URI_LEN, "jwksUri", &at, out);
            if !uri.is_empty() && !has_http_scheme(uri) {
                push(out, at, SecurityError::JwksUriScheme { value: uri.clone() });
            }
        }
        for (i, header) in self.from_headers.iter().enumerate() {
            check_not_empty(
                &header.name,
                "header name",
                &path.field("fromHeaders").index(i).field("name"),
                out,
            );
        }
        check_items_not_empty(
            &self.from_params,
            "parameter name",
            &path.field("fromParams"),
            out,
        );
        check_items_not_empty(
            &self.from_cookies,
            "cookie name",
            &path.field("fromCookies"),
            out,
        );
        for (i, output) in self.output_claim_to_headers.iter().enumerate() {
            let at = path.field("outputClaimToHeaders").index(i);
            check_not_empty(&output.claim, "claim", &at.field("claim"), out);
            if output.header.is_empty() {
                check_not_empty(&output.header, "header", &at.field("header"), out);
            } else if !is_output_header(&output.header) {
                push(
                    out,
                    at.field("header"),
                    IstioError::Pattern {
                        what: "header name",
                        value: output.header.clone(),
                        rule: "letters, digits, '-' and '_'",
                    },
                );
            }
        }
        check_min_1ms(self.timeout.as_ref(), &path.field("timeout"), out);
        let claims = path.field("spaceDelimitedClaims");
        check_max_items(
            self.space_delimited_claims.len(),
            MAX_SPACE_DELIMITED_CLAIMS,
            "spaceDelimitedClaims",
            &claims,
            out,
        );
        check_items_not_empty(&self.space_delimited_claims, "claim", &claims, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(value: serde_json::Value) -> Vec<String> {
        let spec: RequestAuthenticationSpec = serde_json::from_value(value).unwrap();
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    #[test]
    fn jwt_rules() {
        assert!(violations(serde_json::json!({"jwtRules": [{
            "issuer": "example.com",
            "jwksUri": "HTTPS://example.com/jwks.json",
            "outputClaimToHeaders": [{"claim": "sub", "header": "x-sub"}],
            "timeout": "5s",
        }]}))
        .is_empty());
        let got = violations(serde_json::json!({"jwtRules": [{
            "audiences": [""],
            "jwksUri": "example.com/jwks",
            "jwks": "{}",
            "outputClaimToHeaders": [{"claim": "", "header": ":authority"}],
            "timeout": "0s",
        }]}));
        let paths: Vec<&str> = got
            .iter()
            .map(|g| g.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "spec.jwtRules[0].issuer",
                "spec.jwtRules[0].audiences[0]",
                "spec.jwtRules[0]",
                "spec.jwtRules[0].jwksUri",
                "spec.jwtRules[0].outputClaimToHeaders[0].claim",
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
                "spec.jwtRules[0].timeout",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn schemes() {
        assert!(has_http_scheme("http://a"));
        assert!(has_http_scheme("Https://a"));
        assert!(!has_http_scheme("hTPp\\\u{8}lah"));
        assert!(!has_http_scheme("ftp://a"));
    }
}
