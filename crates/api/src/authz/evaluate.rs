//! The authorization decision for one HTTP request or TCP connection, from the compiled
//! policies that apply to the receiving workload ([`applies_to`] picks them).
//!
//! Istio's order (<https://istio.io/latest/docs/reference/config/security/authorization-policy/>),
//! CUSTOM left out because [`Policy::compile`] refuses it:
//!
//! 1. any DENY policy matching → deny;
//! 2. no ALLOW policy applying → allow;
//! 3. any ALLOW policy matching → allow;
//! 4. deny.
//!
//! An ALLOW policy without rules matches nothing, so it denies everything it applies to;
//! `rules: [{}]` matches everything. AUDIT policies only mark the request ([`Decision::audit`]).
//!
//! **Dry-run** policies (`istio.io/dry-run: "true"`) never change [`Decision::verdict`]. When
//! any dry-run ALLOW or DENY policy applies, [`Decision::dry_run`] holds the verdict there
//! would be with those policies enforced too, which answers "what happens when I drop the
//! annotation". Envoy instead reports the shadow result of the dry-run policies of each action
//! on their own: next to enforced ALLOW policies, a dry-run ALLOW policy would then be
//! reported as denying requests that the enforced ones still allow once the annotation is
//! gone, so the mesh reports the combined outcome. A dry-run AUDIT policy marks nothing, as in
//! Istio (its shadow rules have no effect).
//!
//! **HTTP-only attributes on TCP.** `hosts`, `methods`, `paths`, `request.headers[…]`,
//! `requestPrincipals` and `request.auth.*` do not exist on a TCP connection ([`Request::http`]
//! is `None`). Istio's rule (AuthorizationPolicy reference: "For a `DENY` rule, missing
//! attributes are treated as matches"; its generator drops the HTTP-only attribute from a DENY
//! or AUDIT rule and skips the whole ALLOW rule):
//!
//! - in an ALLOW policy, a rule that uses any of them anywhere matches no TCP connection (the
//!   policy stays in force, so with no other matching rule the connection is denied);
//! - in a DENY or AUDIT policy, only those attributes are dropped and the rest of the rule
//!   still applies: `to: [{operation: {methods: ["POST"], ports: ["8080"]}}]` denies every
//!   TCP connection to port 8080, and without `ports` every TCP connection.
//!
//! **Attributes**, as Istio defines them: principals are the peer's SPIFFE ID without
//! `spiffe://` (`cluster.local/ns/default/sa/sleep`), and trust domains, namespaces and
//! service accounts are read from it, so all four need mTLS (a plaintext peer has none: their
//! values never match, their `not` values always do). Hosts are compared with the whole `Host`/`:authority`
//! ignoring case, port included as in Istio (`example.com` does not match
//! `example.com:8080`; write `example.com:*` too). Paths are matched against the normalized
//! path without its query ([`NormalizedPath`]). Header names ignore case and a repeated
//! header is matched as its values joined with `,`. There are no JWTs in the mesh, so
//! `requestPrincipals` and `request.auth.*` see an absent attribute: values never match, `not`
//! values always do (`notRequestPrincipals: ["*"]` in a DENY policy denies every request, and
//! every TCP connection since it is dropped there).
//!
//! When several policies match, the one reported is the first in the order given; callers
//! that want stable reasons pass policies sorted (by namespace and name, say).

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::net::IpAddr;

use super::normalize::NormalizedPath;
use super::policy::{Action, Match, Policy, Rule, StringPattern, Target};
use super::Workload;

#[cfg(test)]
mod tests;

/// What is known about a connection, and about the request on it when it is HTTP.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The peer's SPIFFE ID (`spiffe://td/ns/x/sa/y`) from mutual TLS; `None` for plaintext.
    pub source_principal: Option<&'a str>,
    /// The address of the connection's peer (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): from X-Forwarded-For or proxy
    /// protocol where trusted, else the same as `source_ip`.
    pub remote_ip: IpAddr,
    /// The address the connection was made to.
    pub destination_ip: IpAddr,
    /// The port the connection was made to (the workload's port).
    pub destination_port: u16,
    /// The TLS server name the client sent, if any.
    pub sni: Option<&'a str>,
    /// The request, for HTTP; `None` for a TCP connection.
    pub http: Option<HttpAttrs<'a>>,
}

/// The HTTP attributes of a request.
#[derive(Clone, Copy, Debug)]
pub struct HttpAttrs<'a> {
    /// `:authority` or `Host`, as received (port included when the client sent one).
    pub host: &'a str,
    /// The method, as received (Istio matches it case-sensitively); a proxy refuses the
    /// wrong-case spellings of registered methods first ([`super::check_method`]).
    pub method: &'a str,
    /// The normalized target; its path is what `paths` match.
    pub path: &'a NormalizedPath,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
}

/// A policy and the first of its rules that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyMatch<'p> {
    /// The policy.
    pub policy: &'p Policy,
    /// Index of the rule in `spec.rules`.
    pub rule: usize,
}

/// Allowed or denied, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'p> {
    /// Whether the request may proceed.
    pub allow: bool,
    /// The DENY policy that denied it, or the ALLOW policy that allowed it; `None` when the
    /// default decided (no ALLOW policy applies, or none of them matched).
    pub policy: Option<PolicyMatch<'p>>,
    /// How many ALLOW policies applied.
    pub allow_policies: usize,
}

/// The outcome of [`evaluate`]. Its `Display` is the reason to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    /// What is enforced.
    pub verdict: Verdict<'p>,
    /// When dry-run ALLOW or DENY policies apply: the verdict with them enforced as well.
    pub dry_run: Option<Verdict<'p>>,
    /// The first enforced AUDIT policy that matched: the request should be audited.
    pub audit: Option<PolicyMatch<'p>>,
}

impl Decision<'_> {
    /// Whether the request may proceed.
    pub fn allow(&self) -> bool {
        self.verdict.allow
    }
}

/// Decides on `request`, given the policies that apply to the workload receiving it.
pub fn evaluate<'p, P: Borrow<Policy>>(policies: &'p [P], request: &Request<'_>) -> Decision<'p> {
    let all = policies.iter().map(<P as Borrow<Policy>>::borrow);
    let enforced = verdict(all.clone().filter(|p| !p.dry_run), request);
    let dry_run = all
        .clone()
        .any(|p| p.dry_run && p.action != Action::Audit)
        .then(|| verdict(all.clone(), request));
    let audit = all
        .filter(|p| p.action == Action::Audit && !p.dry_run)
        .find_map(|p| p.matching_rule(request));
    Decision {
        verdict: enforced,
        dry_run,
        audit,
    }
}

/// DENY first, then ALLOW, over `policies`.
fn verdict<'p>(
    policies: impl Iterator<Item = &'p Policy> + Clone,
    request: &Request<'_>,
) -> Verdict<'p> {
    let allow_policies = policies
        .clone()
        .filter(|p| p.action == Action::Allow)
        .count();
    let of = |action| {
        policies
            .clone()
            .filter(move |p| p.action == action)
            .find_map(|p| p.matching_rule(request))
    };
    if let Some(deny) = of(Action::Deny) {
        return Verdict {
            allow: false,
            policy: Some(deny),
            allow_policies,
        };
    }
    let allow = of(Action::Allow);
    Verdict {
        allow: allow_policies == 0 || allow.is_some(),
        policy: allow,
        allow_policies,
    }
}

/// Whether `policy` applies to `workload`, by Istio's rules: a policy in the root namespace
/// applies in every namespace, any other only in its own; without a selector to every
/// workload there, with one to those carrying its labels; `targetRefs` pick the workloads
/// behind the named Services of the policy's own namespace (even from the root namespace).
///
/// Istio enforces a Service-targeted policy at the waypoint, for traffic addressed to that
/// Service only; the mesh has no waypoints and applies it to the workloads behind the
/// Service, for all traffic they receive.
pub fn applies_to(policy: &Policy, workload: &Workload<'_>, root_namespace: &str) -> bool {
    let in_scope = policy.namespace == workload.namespace || policy.namespace == root_namespace;
    match &policy.target {
        Target::Namespace => in_scope,
        Target::Selector(labels) => in_scope && workload.has_labels(labels),
        Target::Services(names) => {
            policy.namespace == workload.namespace
                && names.iter().any(|name| workload.services.contains(name))
        }
    }
}

// === impl Policy ===

impl Policy {
    /// The first rule of this policy that matches `request`.
    fn matching_rule(&self, request: &Request<'_>) -> Option<PolicyMatch<'_>> {
        self.rules
            .iter()
            .position(|rule| rule.matches(self.action, request))
            .map(|rule| PolicyMatch { policy: self, rule })
    }
}

// === impl Rule ===

impl Rule {
    /// Whether the rule matches, for a policy with `action` (which decides what HTTP-only
    /// attributes do on TCP).
    fn matches(&self, action: Action, request: &Request<'_>) -> bool {
        if request.http.is_none() && action == Action::Allow && self.uses_http_only() {
            return false;
        }
        let all = |matches: &[Match]| matches.iter().all(|m| m.matches(request));
        (self.from.is_empty() || self.from.iter().any(|source| all(source)))
            && (self.to.is_empty() || self.to.iter().any(|operation| all(operation)))
            && all(&self.when)
    }
}

// === impl Match ===

impl Match {
    /// Whether the request passes this constraint. On TCP an HTTP-only constraint passes:
    /// only DENY and AUDIT rules get here with one (see the module documentation).
    fn matches(&self, request: &Request<'_>) -> bool {
        let principal = request.source_principal;
        let spiffe = principal.and_then(|p| p.strip_prefix("spiffe://"));
        match self {
            Match::SourcePrincipal(values) => values.check(|pattern| match pattern {
                // Istio's `.+` on the whole URI: any authenticated peer.
                StringPattern::Present => principal.is_some_and(|p| !p.is_empty()),
                _ => spiffe.is_some_and(|id| pattern.matches(id.as_bytes())),
            }),
            Match::SourceNamespace(values) => {
                let namespace = spiffe.and_then(|id| spiffe_field(id, "ns"));
                values.check(|pattern| namespace.is_some_and(|ns| pattern.matches(ns.as_bytes())))
            }
            Match::SourceTrustDomain(values) => {
                let domain = spiffe
                    .and_then(|id| id.split('/').next())
                    .filter(|d| !d.is_empty());
                values.check(|pattern| domain.is_some_and(|d| pattern.matches(d.as_bytes())))
            }
            Match::SourceServiceAccount(values) => {
                let namespace = spiffe.and_then(|id| spiffe_field(id, "ns"));
                let account = spiffe.and_then(|id| spiffe_field(id, "sa"));
                values.check(|sa| {
                    namespace == Some(sa.namespace.as_str()) && account == Some(sa.name.as_str())
                })
            }
            Match::SourceIp(values) => values.check(|block| block.contains(request.source_ip)),
            Match::RemoteIp(values) => values.check(|block| block.contains(request.remote_ip)),
            Match::DestinationIp(values) => {
                values.check(|block| block.contains(request.destination_ip))
            }
            Match::DestinationPort(values) => {
                values.check(|port| *port == request.destination_port)
            }
            Match::ConnectionSni(values) => values.check(|pattern| {
                request
                    .sni
                    .is_some_and(|sni| pattern.matches(sni.as_bytes()))
            }),
            Match::Host(values) => request
                .http
                .is_none_or(|http| values.check(|pattern| pattern.matches_ignore_case(http.host))),
            Match::Method(values) => request
                .http
                .is_none_or(|http| values.check(|pattern| pattern.matches(http.method.as_bytes()))),
            Match::Path(values) => request
                .http
                .is_none_or(|http| values.check(|pattern| pattern.matches(http.path.path()))),
            Match::Header { name, values } => request.http.is_none_or(|http| {
                let joined = joined_header(http.headers, name);
                values.check(|pattern| match (pattern, &joined) {
                    (StringPattern::Present, found) => found.is_some(),
                    (_, Some(value)) => pattern.matches(value),
                    (_, None) => false,
                })
            }),
            // No request carries a validated JWT in this mesh: the attribute is absent.
            Match::RequestAuth { values, .. } => request.http.is_none() || values.check(|_| false),
        }
    }
}

/// The value after `key` in a SPIFFE ID's path (`cluster.local/ns/default/sa/sleep`, without
/// `spiffe://`), past the trust domain.
fn spiffe_field<'a>(id: &'a str, key: &str) -> Option<&'a str> {
    let mut segments = id.split('/').skip(1);
    while let Some(segment) = segments.next() {
        let value = segments.next()?;
        if segment == key {
            return Some(value);
        }
    }
    None
}

/// All values of header `name`, joined with `,` as Envoy matches them; `None` when absent.
fn joined_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<Cow<'h, [u8]>> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in [second].into_iter().chain(all) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    Some(Cow::Owned(joined))
}

// === Display ===

impl fmt::Display for PolicyMatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} policy {}/{} (rule {})",
            self.policy.action, self.policy.namespace, self.policy.name, self.rule
        )
    }
}

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.allow, &self.policy) {
            (true, Some(by)) => write!(f, "allowed by {by}"),
            (false, Some(by)) => write!(f, "denied by {by}"),
            (true, None) => {
                f.write_str("allowed: no ALLOW policy applies and no DENY policy matched")
            }
            (false, None) => write!(
                f,
                "denied: none of the {} ALLOW policies that apply matched",
                self.allow_policies
            ),
        }
    }
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verdict)?;
        if let Some(dry_run) = &self.dry_run {
            write!(f, "; with dry-run policies: {dry_run}")?;
        }
        if let Some(audit) = &self.audit {
            write!(f, "; audited by {audit}")?;
        }
        Ok(())
    }
}
