//! Istio's security kinds (`security.istio.io`): [`AuthorizationPolicy`] (who may call
//! what), [`PeerAuthentication`] (whether workloads require mutual TLS) and
//! [`RequestAuthentication`] (which JWTs requests may carry). The mesh parses and validates
//! them against Istio's rules. The proxies enforce AuthorizationPolicy and PeerAuthentication
//! (see [`crate::authz`]); RequestAuthentication is not enforced yet, which its notice says.
//! [`SecurityError`] holds the rules specific to them.

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

use super::notice::{Notice, NoticeReason};
use super::path::FieldPath;
use super::validate::ValidationError;

pub use authorization_policy::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationPolicySpec, AuthorizationRule,
    Condition, ExtensionProvider, Operation, RuleFrom, RuleTo, Source,
};
pub use peer_authentication::{
    MtlsMode, PeerAuthentication, PeerAuthenticationMtls, PeerAuthenticationSpec,
};
pub use request_authentication::{
    ClaimToHeader, JwtHeader, JwtPresence, JwtRule, RequestAuthentication,
    RequestAuthenticationSpec,
};

/// The group of the Istio security kinds.
pub const ISTIO_SECURITY_GROUP: &str = "security.istio.io";

/// The `apiVersion`s accepted for the Istio security kinds; `v1beta1` is still served with
/// the same schema.
pub const ISTIO_SECURITY_API_VERSIONS: [&str; 2] =
    ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// Why a security resource is rejected, for the rules specific to these kinds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// `serviceAccounts` next to principals or namespaces, which it already implies.
    #[error(
        "serviceAccounts and notServiceAccounts cannot be set together with principals, \
         notPrincipals, namespaces or notNamespaces"
    )]
    ServiceAccountsWithPrincipals,
    /// A `from` entry whose source matches nothing in particular.
    #[error("a from entry needs a source with at least one field set")]
    EmptySource,
    /// A `to` entry whose operation matches nothing in particular.
    #[error("a to entry needs an operation with at least one field set")]
    EmptyOperation,
    /// A `when` key that is not one of Istio's attributes.
    #[error(
        "{key:?} is not a supported condition key (such as request.headers[name], source.ip, \
         source.namespace, request.auth.claims[name] or destination.port)"
    )]
    ConditionKey {
        /// The key as written.
        key: String,
    },
    /// A `when` condition that compares with nothing.
    #[error("condition {key:?} needs values or notValues")]
    ConditionWithoutValues {
        /// The key.
        key: String,
    },
    /// A path template with `{*}`/`{**}` used other than as whole segments.
    #[error(
        "{value:?} is not a valid path template: {{*}} and {{**}} must be whole path \
         segments, and {{**}} may appear once"
    )]
    PathTemplate {
        /// The path as written.
        value: String,
    },
    /// Action CUSTOM without the provider that would decide.
    #[error("action CUSTOM needs a provider with a name")]
    CustomWithoutProvider,
    /// A provider with an action other than CUSTOM.
    #[error("provider may only be set with action CUSTOM")]
    ProviderWithoutCustom,
    /// Port-level mTLS without a workload selector.
    #[error("portLevelMtls requires a selector with at least one matchLabels entry")]
    PortLevelNeedsSelector,
    /// A portLevelMtls key that is not a number.
    #[error(
        "portLevelMtls key {key:?} is not a port number (type conversion to an integer failed)"
    )]
    PortKeyNotNumber {
        /// The key as written.
        key: String,
    },
    /// A JWKS URL without an http or https scheme.
    #[error("{value:?} is not a valid JWKS url: it must have scheme http:// or https://")]
    JwksUriScheme {
        /// The URL as written.
        value: String,
    },
}

impl From<SecurityError> for ValidationError {
    fn from(error: SecurityError) -> Self {
        ValidationError::Security(error)
    }
}

/// The notice of a security resource nothing enforces yet.
fn not_enforced(kind: &'static str, out: &mut Vec<Notice>) {
    out.push(Notice::new(
        FieldPath::root(),
        NoticeReason::NotActedOn {
            kind,
            action: "enforced",
        },
    ));
}
