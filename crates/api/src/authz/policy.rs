//! AuthorizationPolicy compiled for evaluation: [`Policy::compile`] turns the resource into
//! flat lists of typed matchers, with every IP block, port and path template parsed once, so
//! that [`super::evaluate()`] does no parsing per request. The control plane compiles, ships the
//! result in snapshots (it is serde-serializable, and every matcher is checked again when
//! deserialized), and the proxy evaluates.
//!
//! The shape follows Istio's own compilation to Envoy RBAC (`pilot/pkg/security/authz/model`):
//! a rule matches when one of its `from` entries, one of its `to` entries and all of its `when`
//! conditions match; within an entry every field must match; a field matches when one of its
//! values matches and none of its `not` values does. `when` conditions are kept apart from
//! `from` and `to` (Istio copies them into every entry, which is equivalent).
//!
//! What the mesh does not implement is refused by name ([`PolicyProblem`]) rather than
//! ignored: action CUSTOM, targets other than Services, and the
//! `experimental.envoy.filters.*` conditions. Trust-domain aliases (a mesh that moved to a
//! new trust domain) widen `principals` as Istio's do ([`Policy::with_trust_domain_aliases`]).
//! JWT attributes
//! (`requestPrincipals`, `request.auth.*`) compile, but the mesh has no RequestAuthentication
//! support, so they are evaluated as for a request that carries no token: a value never
//! matches, a `not` value always does.

mod pattern;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use pattern::{
    parse_port, IpBlock, PathPattern, PathTemplate, PatternError, ServiceAccount, StringPattern,
};

use crate::resources::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition, FieldPath, Operation,
    PolicyTargetReference, Source,
};

/// The annotation that makes a policy dry-run: evaluated and reported, never enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// An AuthorizationPolicy that could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("AuthorizationPolicy {policy}: {field}: {problem}")]
pub struct PolicyError {
    /// `namespace/name` of the policy.
    pub policy: String,
    /// The offending field (`spec.rules[0].from[1].source.ipBlocks[0]`).
    pub field: FieldPath,
    /// What is wrong with it.
    pub problem: PolicyProblem,
}

/// What is wrong with one field of an AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    /// Action CUSTOM delegates to an external authorizer, which the mesh does not have.
    #[error("action CUSTOM (external authorization) is not supported by the mesh")]
    Custom,
    /// A target that is not a Service.
    #[error(
        "targetRef to {kind} (group {group:?}) is not supported: the mesh can only target \
         Services"
    )]
    TargetKind {
        /// The target's group.
        group: String,
        /// The target's kind.
        kind: String,
    },
    /// A target in another namespace.
    #[error("targetRef to namespace {namespace:?}: only the policy's own namespace is supported")]
    TargetNamespace {
        /// The namespace named.
        namespace: String,
    },
    /// Both a selector and target references.
    #[error("at most one of selector, targetRef and targetRefs may be set")]
    ConflictingTargets,
    /// A field or condition the mesh does not implement.
    #[error("{what} is not supported by the mesh")]
    Unsupported {
        /// What it is.
        what: String,
    },
    /// A `when` key that is not an Istio attribute.
    #[error("unknown condition key {key:?}")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A `request.headers[...]` key whose name is not a valid header name.
    #[error("{key:?} does not name a valid HTTP header (request.headers[name])")]
    HeaderKey {
        /// The key.
        key: String,
    },
    /// The dry-run annotation with a value that is not a boolean. Istio logs such a value and
    /// enforces the policy; refusing it keeps a typo from turning a dry run into enforcement.
    #[error("annotation {DRY_RUN_ANNOTATION} must be \"true\" or \"false\", not {value:?}")]
    DryRun {
        /// The value.
        value: String,
    },
    /// A value that does not parse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// What a policy does with the requests its rules match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow them; when any ALLOW policy applies, whatever none matches is denied.
    Allow,
    /// Deny them, before any ALLOW policy is considered.
    Deny,
    /// Mark them for audit; never changes the decision.
    Audit,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
        })
    }
}

/// A compiled AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// What to do with matching requests.
    pub action: Action,
    /// `istio.io/dry-run: "true"`: evaluated and reported, never enforced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Which workloads it applies to (see [`super::applies_to`]).
    pub target: Target,
    /// Any one matching is enough. None: the policy matches nothing (an ALLOW policy without
    /// rules therefore denies everything it applies to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// The workloads a policy applies to, within its namespace (or the mesh, from the root
/// namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Target {
    /// No selector: every workload.
    Namespace,
    /// Workloads carrying all these labels (all workloads when empty, as in Istio).
    Selector(BTreeMap<String, String>),
    /// Workloads behind these Services of the policy's namespace (`targetRefs`).
    Services(Vec<String>),
}

/// One rule: it matches when one `from` alternative, one `to` alternative and every `when`
/// condition match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// One entry per `from` source, each the list of its fields (all must match); empty
    /// means any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Vec<Match>>,
    /// One entry per `to` operation, each the list of its fields; empty means any operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Vec<Match>>,
    /// The `when` conditions; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Match>,
}

/// Accepted and excluded values of one attribute: it matches when `values` is empty or one of
/// them matches, and none of `not_values` does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Values<T> {
    /// Any one must match (no constraint when empty).
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<T>,
    /// None may match.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<T>,
}

impl<T> Values<T> {
    /// Whether the attribute, as `matches` sees it, passes.
    pub fn check(&self, mut matches: impl FnMut(&T) -> bool) -> bool {
        (self.values.is_empty() || self.values.iter().any(&mut matches))
            && !self.not_values.iter().any(matches)
    }
}

/// One constraint on one request attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "attribute", rename_all = "camelCase", deny_unknown_fields)]
pub enum Match {
    /// `principals`, `source.principal`: the peer's SPIFFE ID without `spiffe://`. Needs mTLS.
    SourcePrincipal(Values<StringPattern>),
    /// `namespaces`, `source.namespace`: the namespace in the peer's SPIFFE ID. Needs mTLS.
    SourceNamespace(Values<StringPattern>),
    /// `trustDomains`, `source.trustDomain`: the trust domain of the peer's SPIFFE ID. Needs
    /// mTLS.
    SourceTrustDomain(Values<StringPattern>),
    /// `serviceAccounts`, `source.serviceAccount`: namespace and account in the peer's
    /// SPIFFE ID. Needs mTLS.
    SourceServiceAccount(Values<ServiceAccount>),
    /// `ipBlocks`, `source.ip`: the address of the connection's peer.
    SourceIp(Values<IpBlock>),
    /// `remoteIpBlocks`, `remote.ip`: the original client (X-Forwarded-For, proxy protocol).
    RemoteIp(Values<IpBlock>),
    /// `destination.ip`: the address the connection was made to.
    DestinationIp(Values<IpBlock>),
    /// `ports`, `destination.port`: the port the connection was made to.
    DestinationPort(Values<u16>),
    /// `connection.sni`: the TLS server name the client asked for.
    ConnectionSni(Values<StringPattern>),
    /// `hosts` (HTTP only): the `Host`/`:authority`, compared ignoring case, port included.
    Host(Values<StringPattern>),
    /// `methods` (HTTP only).
    Method(Values<StringPattern>),
    /// `paths` (HTTP only): the normalized path, without query.
    Path(Values<PathPattern>),
    /// `request.headers[name]` (HTTP only): all values of the header joined with `,`.
    Header {
        /// Header name, lowercase.
        name: String,
        /// The patterns; `*` means "present".
        values: Values<StringPattern>,
    },
    /// `requestPrincipals` and `request.auth.*` (HTTP only): JWT attributes, which no request
    /// has in this mesh.
    RequestAuth {
        /// `request.auth.principal` for `requestPrincipals`, else the condition key.
        key: String,
        /// The values as written.
        values: Values<String>,
    },
}

impl Match {
    /// Whether the attribute exists only for HTTP requests. On a TCP connection such a match
    /// makes an ALLOW rule unusable and is dropped from a DENY or AUDIT rule.
    pub fn is_http_only(&self) -> bool {
        matches!(
            self,
            Match::Host(_)
                | Match::Method(_)
                | Match::Path(_)
                | Match::Header { .. }
                | Match::RequestAuth { .. }
        )
    }
}

impl Rule {
    /// Whether any part of the rule uses an HTTP-only attribute.
    pub fn uses_http_only(&self) -> bool {
        self.from
            .iter()
            .chain(&self.to)
            .flatten()
            .chain(&self.when)
            .any(Match::is_http_only)
    }
}

// === compilation ===

impl Policy {
    /// Compiles a (validated) AuthorizationPolicy.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] for what the mesh does not support (action CUSTOM, targets other than
    /// same-namespace Services, some condition keys), and for values that do not parse,
    /// naming the field.
    pub fn compile(resource: &AuthorizationPolicy) -> Result<Policy, PolicyError> {
        let namespace = resource.meta.namespace().to_owned();
        let name = resource.meta.name.clone();
        let fail = |field: FieldPath, problem: PolicyProblem| PolicyError {
            policy: format!("{namespace}/{name}"),
            field,
            problem,
        };
        let spec = &resource.spec;
        let at = FieldPath::root().field("spec");

        let action = match spec.action {
            None | Some(AuthorizationAction::Allow) => Action::Allow,
            Some(AuthorizationAction::Deny) => Action::Deny,
            Some(AuthorizationAction::Audit) => Action::Audit,
            Some(AuthorizationAction::Custom) => {
                return Err(fail(at.field("action"), PolicyProblem::Custom));
            }
        };
        let dry_run = match resource.meta.annotations.get(DRY_RUN_ANNOTATION) {
            None => false,
            Some(value) => parse_bool(value).ok_or_else(|| {
                fail(
                    FieldPath::root()
                        .field("metadata")
                        .field("annotations")
                        .field(DRY_RUN_ANNOTATION),
                    PolicyProblem::DryRun {
                        value: value.clone(),
                    },
                )
            })?,
        };
        let target = compile_target(resource, &namespace).map_err(|(f, p)| fail(f, p))?;
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(rule, &namespace, &at.field("rules").index(i)))
            .collect::<Result<_, _>>()
            .map_err(|(f, p)| fail(f, p))?;
        Ok(Policy {
            namespace,
            name,
            action,
            dry_run,
            target,
            rules,
        })
    }
}

impl Policy {
    /// This policy as it applies in a mesh whose trust domain is `trust_domain` and that
    /// also answers to `aliases` (a mesh moved to a new trust domain, or one that accepts a
    /// peer mesh's): every principal that names one of these trust domains also matches the
    /// same namespace and service account in the others. `trustDomains` and
    /// `source.trustDomain` stay literal, and principals that start with `*` or name another
    /// trust domain are left alone, as Istio's trust-domain migration does
    /// (`MigrateTrustDomain`, which rewrites only the source principal attribute).
    pub fn with_trust_domain_aliases(mut self, trust_domain: &str, aliases: &[String]) -> Self {
        let mut domains = vec![trust_domain];
        for alias in aliases {
            if !domains.contains(&alias.as_str()) {
                domains.push(alias);
            }
        }
        if domains.len() < 2 {
            return self;
        }
        let widen = |patterns: &mut Vec<StringPattern>| {
            let mut out = Vec::with_capacity(patterns.len() * domains.len());
            for pattern in patterns.drain(..) {
                let aliased = aliased_principals(&pattern, &domains);
                out.push(pattern);
                for alias in aliased {
                    if !out.contains(&alias) {
                        out.push(alias);
                    }
                }
            }
            *patterns = out;
        };
        let matches = self
            .rules
            .iter_mut()
            .flat_map(|rule| rule.from.iter_mut().flatten().chain(rule.when.iter_mut()));
        for m in matches {
            if let Match::SourcePrincipal(values) = m {
                widen(&mut values.values);
                widen(&mut values.not_values);
            }
        }
        self
    }
}

/// `pattern` with its trust domain replaced by each of the others in `domains`, when it
/// names one of them (`old-td/ns/foo/sa/bar` or `old-td/ns/foo/*`); nothing otherwise.
fn aliased_principals(pattern: &StringPattern, domains: &[&str]) -> Vec<StringPattern> {
    let (text, rebuild): (&str, fn(String) -> StringPattern) = match pattern {
        StringPattern::Exact(s) => (s, StringPattern::Exact),
        StringPattern::Prefix(s) => (s, StringPattern::Prefix),
        // `*…` does not pin a trust domain; `*` alone is any peer.
        StringPattern::Suffix(_) | StringPattern::Present => return Vec::new(),
    };
    let Some(at) = text.find("/ns/") else {
        return Vec::new();
    };
    let (domain, rest) = text.split_at(at);
    if !domains.contains(&domain) {
        return Vec::new();
    }
    domains
        .iter()
        .filter(|d| **d != domain)
        .map(|d| rebuild(format!("{d}{rest}")))
        .collect()
}

/// A compile failure before the policy's name is attached.
type Failure = (FieldPath, PolicyProblem);

/// Go's `strconv.ParseBool`, which Istio uses for the dry-run annotation.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The selector, `targetRef` or `targetRefs`.
fn compile_target(resource: &AuthorizationPolicy, namespace: &str) -> Result<Target, Failure> {
    let spec = &resource.spec;
    let at = FieldPath::root().field("spec");
    let refs: Vec<(FieldPath, &PolicyTargetReference)> = spec
        .target_ref
        .iter()
        .map(|r| (at.field("targetRef"), r))
        .chain(
            spec.target_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (at.field("targetRefs").index(i), r)),
        )
        .collect();
    if refs.is_empty() {
        return Ok(match &spec.selector {
            None => Target::Namespace,
            Some(selector) => Target::Selector(selector.match_labels.clone()),
        });
    }
    if spec.selector.is_some() || (spec.target_ref.is_some() && !spec.target_refs.is_empty()) {
        return Err((at, PolicyProblem::ConflictingTargets));
    }
    let mut services = Vec::with_capacity(refs.len());
    for (field, target) in refs {
        let core = target.group.is_empty() || target.group == "core";
        if !core || target.kind != "Service" {
            return Err((
                field,
                PolicyProblem::TargetKind {
                    group: target.group.clone(),
                    kind: target.kind.clone(),
                },
            ));
        }
        if !target.namespace.is_empty() && target.namespace != namespace {
            return Err((
                field.field("namespace"),
                PolicyProblem::TargetNamespace {
                    namespace: target.namespace.clone(),
                },
            ));
        }
        services.push(target.name.clone());
    }
    Ok(Target::Services(services))
}

/// One rule, at `at` (`spec.rules[i]`).
fn compile_rule(
    rule: &AuthorizationRule,
    namespace: &str,
    at: &FieldPath,
) -> Result<Rule, Failure> {
    let mut from = Vec::with_capacity(rule.from.len());
    for (i, entry) in rule.from.iter().enumerate() {
        let at = at.field("from").index(i).field("source");
        from.push(match &entry.source {
            Some(source) => compile_source(source, namespace, &at)?,
            None => Vec::new(),
        });
    }
    let mut to = Vec::with_capacity(rule.to.len());
    for (i, entry) in rule.to.iter().enumerate() {
        let at = at.field("to").index(i).field("operation");
        to.push(match &entry.operation {
            Some(operation) => compile_operation(operation, &at)?,
            None => Vec::new(),
        });
    }
    let mut when = Vec::with_capacity(rule.when.len());
    for (i, condition) in rule.when.iter().enumerate() {
        if let Some(m) = compile_condition(condition, namespace, &at.field("when").index(i))? {
            when.push(m);
        }
    }
    Ok(Rule { from, to, when })
}

/// Parses a field's values and `not` values with `parse`, reporting the failing one at
/// `at.<field>[i]` or `at.<not_field>[i]`. `None` when both lists are empty, as Istio then
/// puts no constraint in the rule.
fn values<T>(
    (field, list): (&str, &[String]),
    (not_field, not_list): (&str, &[String]),
    at: &FieldPath,
    mut parse: impl FnMut(&str) -> Result<T, PatternError>,
) -> Result<Option<Values<T>>, Failure> {
    if list.is_empty() && not_list.is_empty() {
        return Ok(None);
    }
    let mut each = |name: &str, items: &[String]| {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| parse(v).map_err(|e| (at.field(name).index(i), e.into())))
            .collect::<Result<Vec<T>, Failure>>()
    };
    Ok(Some(Values {
        values: each(field, list)?,
        not_values: each(not_field, not_list)?,
    }))
}

/// String patterns, which always parse.
fn strings(list: &[String], not_list: &[String]) -> Option<Values<StringPattern>> {
    if list.is_empty() && not_list.is_empty() {
        return None;
    }
    let parse = |items: &[String]| items.iter().map(|v| StringPattern::parse(v)).collect();
    Some(Values {
        values: parse(list),
        not_values: parse(not_list),
    })
}

/// Values kept as written (JWT attributes, never matched).
fn raw(list: &[String], not_list: &[String]) -> Option<Values<String>> {
    (!list.is_empty() || !not_list.is_empty()).then(|| Values {
        values: list.to_vec(),
        not_values: not_list.to_vec(),
    })
}

/// The key of `requestPrincipals`, as Istio names the attribute.
const REQUEST_PRINCIPAL: &str = "request.auth.principal";

/// A `from` source, at `at` (`spec.rules[i].from[j].source`).
fn compile_source(source: &Source, namespace: &str, at: &FieldPath) -> Result<Vec<Match>, Failure> {
    let mut out = Vec::new();
    out.extend(strings(&source.principals, &source.not_principals).map(Match::SourcePrincipal));
    out.extend(
        strings(&source.trust_domains, &source.not_trust_domains).map(Match::SourceTrustDomain),
    );
    out.extend(
        raw(&source.request_principals, &source.not_request_principals).map(|values| {
            Match::RequestAuth {
                key: REQUEST_PRINCIPAL.to_owned(),
                values,
            }
        }),
    );
    out.extend(strings(&source.namespaces, &source.not_namespaces).map(Match::SourceNamespace));
    out.extend(
        values(
            ("serviceAccounts", &source.service_accounts),
            ("notServiceAccounts", &source.not_service_accounts),
            at,
            |v| ServiceAccount::parse(v, namespace),
        )?
        .map(Match::SourceServiceAccount),
    );
    out.extend(
        values(
            ("ipBlocks", &source.ip_blocks),
            ("notIpBlocks", &source.not_ip_blocks),
            at,
            IpBlock::parse,
        )?
        .map(Match::SourceIp),
    );
    out.extend(
        values(
            ("remoteIpBlocks", &source.remote_ip_blocks),
            ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
            at,
            IpBlock::parse,
        )?
        .map(Match::RemoteIp),
    );
    Ok(out)
}

/// A `to` operation, at `at` (`spec.rules[i].to[j].operation`).
fn compile_operation(operation: &Operation, at: &FieldPath) -> Result<Vec<Match>, Failure> {
    let mut out = Vec::new();
    out.extend(strings(&operation.hosts, &operation.not_hosts).map(Match::Host));
    out.extend(
        values(
            ("ports", &operation.ports),
            ("notPorts", &operation.not_ports),
            at,
            parse_port,
        )?
        .map(Match::DestinationPort),
    );
    out.extend(strings(&operation.methods, &operation.not_methods).map(Match::Method));
    out.extend(
        values(
            ("paths", &operation.paths),
            ("notPaths", &operation.not_paths),
            at,
            PathPattern::parse,
        )?
        .map(Match::Path),
    );
    Ok(out)
}

/// A `when` condition, at `at` (`spec.rules[i].when[j]`). `None` when it has no values.
fn compile_condition(
    condition: &Condition,
    namespace: &str,
    at: &FieldPath,
) -> Result<Option<Match>, Failure> {
    let key = condition.key.as_str();
    let (list, not_list) = (&condition.values, &condition.not_values);
    let (field, not_field) = (("values", &list[..]), ("notValues", &not_list[..]));
    let unsupported = |what: String| Err((at.field("key"), PolicyProblem::Unsupported { what }));
    let compiled = match key {
        "source.ip" => values(field, not_field, at, IpBlock::parse)?.map(Match::SourceIp),
        "remote.ip" => values(field, not_field, at, IpBlock::parse)?.map(Match::RemoteIp),
        "destination.ip" => values(field, not_field, at, IpBlock::parse)?.map(Match::DestinationIp),
        "destination.port" => values(field, not_field, at, parse_port)?.map(Match::DestinationPort),
        "source.principal" => strings(list, not_list).map(Match::SourcePrincipal),
        "source.namespace" => strings(list, not_list).map(Match::SourceNamespace),
        "source.serviceAccount" => values(field, not_field, at, |v| {
            ServiceAccount::parse(v, namespace)
        })?
        .map(Match::SourceServiceAccount),
        "connection.sni" => strings(list, not_list).map(Match::ConnectionSni),
        "source.trustDomain" => strings(list, not_list).map(Match::SourceTrustDomain),
        _ if key.starts_with("experimental.envoy.filters.") => {
            return unsupported(format!("condition key {key}"));
        }
        _ if key.starts_with("request.headers") => {
            let name = key
                .strip_prefix("request.headers[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
                .ok_or_else(|| {
                    (
                        at.field("key"),
                        PolicyProblem::HeaderKey {
                            key: key.to_owned(),
                        },
                    )
                })?;
            strings(list, not_list).map(|values| Match::Header {
                name: name.as_str().to_owned(),
                values,
            })
        }
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
            raw(list, not_list).map(|values| Match::RequestAuth {
                key: key.to_owned(),
                values,
            })
        }
        _ if key.starts_with("request.auth.claims[") && key.ends_with(']') => raw(list, not_list)
            .map(|values| Match::RequestAuth {
                key: key.to_owned(),
                values,
            }),
        _ => {
            return Err((
                at.field("key"),
                PolicyProblem::UnknownKey {
                    key: key.to_owned(),
                },
            ));
        }
    };
    Ok(compiled)
}

#[cfg(test)]
mod tests;
