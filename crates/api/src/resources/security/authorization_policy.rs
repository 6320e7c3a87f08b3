//! Istio's `AuthorizationPolicy`: for the selected workloads, which requests are allowed,
//! denied or audited, by source (principals, namespaces, IP blocks), operation (hosts,
//! ports, methods, paths) and conditions on request attributes. Enforced by the proxies
//! (compiled with [`crate::authz::Policy::compile`], which refuses what the mesh cannot
//! enforce, such as action CUSTOM).

use serde::{Deserialize, Serialize};

use super::SecurityError;
use crate::resources::istio::{
    check_ip_or_cidr, check_max_items, check_max_len, check_range, check_target_refs,
    is_ip_or_cidr, push, IstioError, PolicyTargetReference, WorkloadSelector,
};
use crate::resources::notice::{Notice, NoticeReason};
use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};
use crate::resources::ObjectMeta;

/// Most rules, and most `from` entries per rule.
const MAX_RULES: usize = 512;
/// Most service accounts in a source.
const MAX_SERVICE_ACCOUNTS: usize = 16;
/// Longest service account (`namespace/name`).
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// Condition keys matched exactly.
const CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
];

/// An Istio `AuthorizationPolicy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// `security.istio.io/v1` (or `v1beta1`).
    pub api_version: String,
    /// Name, namespace, labels.
    #[serde(rename = "metadata")]
    pub meta: ObjectMeta,
    /// Targets, rules and action. An empty spec denies nothing and allows nothing: with
    /// action ALLOW and no rules, it denies every request.
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

/// The spec of an [`AuthorizationPolicy`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// The workloads the policy applies to (all in the namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A Service or Gateway the policy applies to, instead of a selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Services or Gateways the policy applies to, instead of a selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The requests the action applies to; any one rule matching is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
    /// What to do with matching requests (ALLOW by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationAction>,
    /// The external authorizer for action CUSTOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// What an [`AuthorizationPolicy`] does with matching requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    /// Allow them (and deny what no ALLOW policy matches).
    Allow,
    /// Deny them.
    Deny,
    /// Log them.
    Audit,
    /// Ask an external authorizer (`provider`). Valid Istio; not supported by the mesh.
    Custom,
}

/// The external authorizer of a CUSTOM policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Its name in the mesh config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One rule: sources, operations and conditions, all of which must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Where the request comes from; any entry matching is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// What the request does; any entry matching is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Further conditions; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A `from` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// A request source; the lists hold alternatives, `not*` lists exclusions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`cluster.local/ns/default/sa/reviews`), `*` wildcards allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Excluded peer identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT principals (`issuer/subject`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// Excluded JWT principals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Excluded peer namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Peer IPs or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Excluded peer IPs or blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs or blocks (from `X-Forwarded-For`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Excluded original client IPs or blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Peer service accounts (`namespace/name`, or `name` in the policy's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Excluded peer service accounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Peer trust domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    /// Excluded peer trust domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// A `to` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// What a request does; the lists hold alternatives, `not*` lists exclusions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (`Host`/`:authority`), `*` wildcards allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Excluded hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Excluded destination ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (gRPC requests are always POST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Excluded methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths, with `*` prefix/suffix wildcards or `{*}`/`{**}` templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Excluded paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A condition on a request attribute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute (`request.headers[x-user]`, `source.ip`, ...). Required.
    pub key: String,
    /// Accepted values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Excluded values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// Whether `rest` is one or more `[name]` groups with non-empty names.
fn is_bracketed(rest: &str) -> bool {
    let Some(mut rest) = rest.strip_prefix('[') else {
        return false;
    };
    loop {
        let Some((name, after)) = rest.split_once(']') else {
            return false;
        };
        if name.is_empty() || name.contains('[') {
            return false;
        }
        if after.is_empty() {
            return true;
        }
        match after.strip_prefix('[') {
            Some(next) => rest = next,
            None => return false,
        }
    }
}

/// Whether `key` is an attribute Istio's `when` conditions support.
fn is_condition_key(key: &str) -> bool {
    CONDITION_KEYS.contains(&key)
        || key
            .strip_prefix("request.headers")
            .is_some_and(|rest| is_bracketed(rest) && rest.matches('[').count() == 1)
        || key
            .strip_prefix("request.auth.claims")
            .is_some_and(is_bracketed)
        || key
            .strip_prefix("experimental.envoy.filters.")
            .is_some_and(|rest| !rest.is_empty())
}

/// Whether `path` uses `{*}`/`{**}` only as whole segments, and `{**}` at most once.
fn is_valid_path_template(path: &str) -> bool {
    if !path.contains(['{', '}']) {
        return true;
    }
    let mut double = 0;
    for segment in path.split('/') {
        match segment {
            "{*}" => {}
            "{**}" => double += 1,
            other if other.contains(['{', '}']) => return false,
            _ => {}
        }
    }
    double <= 1
}

/// Whether `port` is a port number written as a string.
fn is_port_string(port: &str) -> bool {
    !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
}

impl AuthorizationPolicySpec {
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
        let custom = self.action == Some(AuthorizationAction::Custom);
        let provider_named = self
            .provider
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if custom && !provider_named {
            push(
                out,
                spec.field("provider"),
                SecurityError::CustomWithoutProvider,
            );
        }
        if !custom && self.provider.is_some() {
            push(
                out,
                spec.field("provider"),
                SecurityError::ProviderWithoutCustom,
            );
        }
        let rules = spec.field("rules");
        check_max_items(self.rules.len(), MAX_RULES, "rules", &rules, out);
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&rules.index(i), out);
        }
    }

    /// A CUSTOM policy: there is no external authorizer to call. (Valid Istio, so only a
    /// warning here; the control plane refuses it, see [`crate::authz::Policy::compile`].)
    pub(crate) fn notices(&self, out: &mut Vec<Notice>) {
        if self.action == Some(AuthorizationAction::Custom) {
            out.push(Notice::new(
                FieldPath::root().field("spec").field("action"),
                NoticeReason::NotActedOn {
                    kind: "action CUSTOM",
                    action: "supported",
                },
            ));
        }
    }
}

impl AuthorizationRule {
    /// Checks the rule at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let from = path.field("from");
        check_max_items(self.from.len(), MAX_RULES, "from entries", &from, out);
        for (i, entry) in self.from.iter().enumerate() {
            let at = from.index(i).field("source");
            match &entry.source {
                Some(source) if !source.is_empty() => source.validate(&at, out),
                _ => push(out, at, SecurityError::EmptySource),
            }
        }
        for (i, entry) in self.to.iter().enumerate() {
            let at = path.field("to").index(i).field("operation");
            match &entry.operation {
                Some(operation) if !operation.is_empty() => operation.validate(&at, out),
                _ => push(out, at, SecurityError::EmptyOperation),
            }
        }
        for (i, condition) in self.when.iter().enumerate() {
            condition.validate(&path.field("when").index(i), out);
        }
    }
}

impl Source {
    /// Whether nothing is set.
    fn is_empty(&self) -> bool {
        *self == Source::default()
    }

    /// Checks the source at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let accounts = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let identities = !self.principals.is_empty()
            || !self.not_principals.is_empty()
            || !self.namespaces.is_empty()
            || !self.not_namespaces.is_empty();
        if accounts && identities {
            push(
                out,
                path.clone(),
                SecurityError::ServiceAccountsWithPrincipals,
            );
        }
        for (name, list) in [
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
        ] {
            let at = path.field(name);
            check_max_items(list.len(), MAX_SERVICE_ACCOUNTS, name, &at, out);
            for (i, account) in list.iter().enumerate() {
                check_max_len(
                    account,
                    MAX_SERVICE_ACCOUNT_LEN,
                    "service account",
                    &at.index(i),
                    out,
                );
            }
        }
        for (name, list) in [
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ] {
            for (i, block) in list.iter().enumerate() {
                check_ip_or_cidr(block, &path.field(name).index(i), out);
            }
        }
    }
}

impl Operation {
    /// Whether nothing is set.
    fn is_empty(&self) -> bool {
        *self == Operation::default()
    }

    /// Checks the operation at `path`.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        for (name, list) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            for (i, port) in list.iter().enumerate() {
                check_port_string(port, &path.field(name).index(i), out);
            }
        }
        for (name, list) in [("paths", &self.paths), ("notPaths", &self.not_paths)] {
            for (i, p) in list.iter().enumerate() {
                if !is_valid_path_template(p) {
                    push(
                        out,
                        path.field(name).index(i),
                        SecurityError::PathTemplate { value: p.clone() },
                    );
                }
            }
        }
    }
}

/// Reports a string that is not a port number.
fn check_port_string(port: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    if !is_port_string(port) {
        match port.parse::<i64>() {
            Ok(number) => check_range(Some(number), "port", 1, 65535, path, out),
            Err(_) => push(
                out,
                path.clone(),
                IstioError::Pattern {
                    what: "port",
                    value: port.to_owned(),
                    rule: "a number between 1 and 65535",
                },
            ),
        }
    }
}

impl Condition {
    /// Checks the condition at `path`: a known key, and values of the right shape.
    fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        let key = path.field("key");
        if self.key.is_empty() {
            push(out, key, ValidationError::Empty { what: "key" });
        } else if !is_condition_key(&self.key) {
            push(
                out,
                key,
                SecurityError::ConditionKey {
                    key: self.key.clone(),
                },
            );
        }
        if self.values.is_empty() && self.not_values.is_empty() {
            push(
                out,
                path.clone(),
                SecurityError::ConditionWithoutValues {
                    key: self.key.clone(),
                },
            );
        }
        for (name, list) in [("values", &self.values), ("notValues", &self.not_values)] {
            for (i, value) in list.iter().enumerate() {
                let at = path.field(name).index(i);
                match self.key.as_str() {
                    "source.ip" | "remote.ip" | "destination.ip" if !is_ip_or_cidr(value) => {
                        check_ip_or_cidr(value, &at, out);
                    }
                    "destination.port" => check_port_string(value, &at, out),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(value: serde_json::Value) -> Vec<String> {
        let spec: AuthorizationPolicySpec = serde_json::from_value(value).unwrap();
        crate::resources::validate::rendered(|out| spec.validate(out))
    }

    #[test]
    fn condition_keys() {
        for ok in [
            "request.headers[X-header]",
            "request.auth.claims[iss]",
            "request.auth.claims[nested1][nested2]",
            "experimental.envoy.filters.a.b[c]",
            "source.ip",
        ] {
            assert!(is_condition_key(ok), "{ok}");
        }
        for bad in [
            "request.headers",
            "request.headers[]",
            "request.headers[a][b]",
            "src.ip",
        ] {
            assert!(!is_condition_key(bad), "{bad}");
        }
    }

    #[test]
    fn path_templates() {
        for ok in ["/a/{*}/b", "/{**}/path/template", "*/suffix", "/exact"] {
            assert!(is_valid_path_template(ok), "{ok}");
        }
        for bad in ["/a{*}", "/{**}/{**}", "/{x}"] {
            assert!(!is_valid_path_template(bad), "{bad}");
        }
    }

    #[test]
    fn sources_and_operations() {
        let got = violations(serde_json::json!({
            "rules": [{
                "from": [
                    {"source": {"serviceAccounts": ["sa"], "namespaces": ["ns"]}},
                    {"source": {}},
                    {"source": {"ipBlocks": ["1.2.3.4/40"]}},
                ],
                "to": [{"operation": {"ports": ["80", "http", "70000"]}}, {}],
                "when": [{"key": "destination.port", "values": ["0"]}, {"key": "foo"}],
            }],
        }));
        let paths: Vec<&str> = got
            .iter()
            .map(|g| g.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "spec.rules[0].from[0].source",
                "spec.rules[0].from[1].source",
                "spec.rules[0].from[2].source.ipBlocks[0]",
                "spec.rules[0].to[0].operation.ports[1]",
                "spec.rules[0].to[0].operation.ports[2]",
                "spec.rules[0].to[1].operation",
                "spec.rules[0].when[0].values[0]",
                "spec.rules[0].when[1].key",
                "spec.rules[0].when[1]",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn custom_needs_a_provider_and_is_noticed() {
        assert_eq!(
            violations(serde_json::json!({"action": "CUSTOM"})),
            ["spec.provider: action CUSTOM needs a provider with a name"]
        );
        assert_eq!(
            violations(serde_json::json!({"provider": {"name": "ext"}})),
            ["spec.provider: provider may only be set with action CUSTOM"]
        );
        let spec: AuthorizationPolicySpec = serde_json::from_value(
            serde_json::json!({"action": "CUSTOM", "provider": {"name": "ext"}}),
        )
        .unwrap();
        let mut notices = Vec::new();
        spec.notices(&mut notices);
        let got: Vec<String> = notices.iter().map(|n| n.reason.to_string()).collect();
        assert_eq!(
            got,
            ["action CUSTOM is validated but not supported by the mesh yet"]
        );
    }
}
