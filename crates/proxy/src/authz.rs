//! Inbound authorization: Istio's PeerAuthentication and AuthorizationPolicy, enforced by the
//! proxy of the workload that receives the traffic.
//!
//! * **Selection**, once per snapshot ([`InboundPolicy::select`], called from
//!   [`ProxyState::set_snapshot`]): the AuthorizationPolicies that apply to this workload
//!   ([`trellis_api::authz::applies_to`]) and the mutual TLS mode of each port
//!   ([`trellis_api::authz::effective_mtls`]), published with the snapshot so that a connection
//!   or request only evaluates.
//! * **Checks**, on every inbound connection and request: [`authorize_request`] (HTTP over
//!   mTLS on 15008, plain requests and upgrades: the path is normalized first and the
//!   normalized path is what the app receives), [`authorize_connection`] (opaque TCP: a
//!   `CONNECT` tunnel on 15008, a plaintext connection captured on 15006). A denied request
//!   is answered `403` with Istio's body, `RBAC: access denied`; a denied connection is
//!   refused (403 on the tunnel) or closed.
//! * **Reporting**: every decision is logged with the deciding policy (`info` for denials,
//!   `debug` for allows) and counted in `trellis_authz_decisions_total{policy, action,
//!   decision}`. Dry-run policies only show up there (`decision="dry_run_allow"` or
//!   `"dry_run_deny"`) and in the log; AUDIT policies are logged and counted
//!   (`decision="audit"`), and change nothing.
//!
//! Until the first snapshot the proxy knows no policy, and it refuses inbound traffic rather
//! than let it through unchecked (it is not ready then either).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use http::{HeaderMap, Method, Response, StatusCode, Uri};
use trellis_api::authz::{
    applies_to, check_method, effective_mtls, evaluate, normalize, Action, Decision, EffectiveMtls,
    HttpAttrs, MethodError, NormalizedPath, PathError, PeerMode, Policy, Request, Verdict,
    Workload,
};
use trellis_api::snapshot::{Endpoint, Labels, Snapshot};
use trellis_identity::SpiffeId;

use crate::body::{error_response, full, Body};
use crate::config::ProxyConfig;
use crate::state::ProxyState;

/// The body of a denied request: Istio's exact text, which clients and scripts match on.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// What this workload enforces, chosen from one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundPolicy {
    /// The AuthorizationPolicies that apply to the workload, in the snapshot's order (by
    /// namespace and name: the policy a decision names when several match is stable).
    pub policies: Vec<Policy>,
    /// The mutual TLS mode of every port without a port-level setting.
    default_mtls: PortMtls,
    /// Ports whose mode differs from [`Self::default_mtls`] (`portLevelMtls`).
    port_mtls: BTreeMap<u16, PortMtls>,
}

/// The mutual TLS mode of a port, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMtls {
    pub mode: PeerMode,
    /// For logs: `STRICT from namespace-level PeerAuthentication default/strict`.
    pub source: String,
}

impl From<EffectiveMtls<'_>> for PortMtls {
    fn from(m: EffectiveMtls<'_>) -> Self {
        PortMtls {
            mode: m.mode,
            source: m.to_string(),
        }
    }
}

// === impl InboundPolicy ===

impl InboundPolicy {
    /// Picks what applies to the workload `config` describes from everything `snapshot`
    /// carries.
    pub fn select(snapshot: &Snapshot, config: &ProxyConfig) -> Self {
        let own = OwnWorkload::new(config);
        let labels = own.labels(snapshot);
        let services = own.services(snapshot);
        let workload = Workload {
            namespace: config.namespace(),
            labels: &labels,
            services: &services,
        };
        let root = snapshot.root_namespace.as_str();
        let policies = snapshot
            .authorization_policies
            .iter()
            .filter(|p| applies_to(p, &workload, root))
            .cloned()
            .collect();
        let peer = &snapshot.peer_authentications;
        // Port 0 is in no port-level setting (they are refused when compiled), so this is
        // the workload-level mode.
        let default_mtls = PortMtls::from(effective_mtls(peer, &workload, 0, root));
        let ports: BTreeSet<u16> = peer
            .iter()
            .flat_map(|p| p.port_modes.keys().copied())
            .collect();
        let port_mtls = ports
            .into_iter()
            .map(|port| {
                (
                    port,
                    PortMtls::from(effective_mtls(peer, &workload, port, root)),
                )
            })
            .filter(|(_, m)| *m != default_mtls)
            .collect();
        InboundPolicy {
            policies,
            default_mtls,
            port_mtls,
        }
    }

    /// The mutual TLS mode in force on the workload's `port`.
    pub fn mtls(&self, port: u16) -> &PortMtls {
        self.port_mtls.get(&port).unwrap_or(&self.default_mtls)
    }

    /// Whether any port requires mutual TLS.
    pub fn any_strict(&self) -> bool {
        std::iter::once(&self.default_mtls)
            .chain(self.port_mtls.values())
            .any(|m| m.mode == PeerMode::Strict)
    }

    /// One line for the log when the policy changes.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .policies
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let mut ports = String::new();
        for (port, m) in &self.port_mtls {
            ports.push_str(&format!("; port {port}: {}", m.source));
        }
        format!(
            "authorization policies [{}]; mTLS {}{ports}",
            names.join(", "),
            self.default_mtls.source
        )
    }
}

/// The proxy's own workload as the snapshot lists it: endpoints in its namespace under its
/// identity, at its address or with its workload name.
struct OwnWorkload<'a> {
    config: &'a ProxyConfig,
    identity: String,
}

impl<'a> OwnWorkload<'a> {
    fn new(config: &'a ProxyConfig) -> Self {
        OwnWorkload {
            config,
            identity: config.identity.to_string(),
        }
    }

    fn is(&self, ep: &Endpoint) -> bool {
        ep.identity == self.identity
            && (ep.address == self.config.address || ep.workload_name == self.config.workload_name)
    }

    /// The workload's labels: those of its WorkloadEntry (as the snapshot's endpoints carry
    /// them), overridden by the ones the proxy was started with. Services select the workload
    /// by its entry's labels whether or not the proxy repeats them, so policies must see the
    /// same labels: otherwise a DENY policy with a selector would silently not apply to a
    /// workload whose proxy was started without `--label`.
    fn labels(&self, snapshot: &Snapshot) -> Labels {
        let mut labels = Labels::new();
        for svc in snapshot.services.values() {
            if svc.namespace != self.config.namespace() {
                continue;
            }
            for ep in svc.endpoints.iter().filter(|ep| self.is(ep)) {
                labels.extend(ep.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        labels.extend(
            self.config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        labels
    }

    /// Names of the Services of the workload's namespace that have it as an endpoint (what
    /// `targetRefs` name).
    fn services(&self, snapshot: &Snapshot) -> Vec<String> {
        let mut names: Vec<String> = snapshot
            .services
            .values()
            .filter(|svc| svc.namespace == self.config.namespace())
            .filter(|svc| svc.endpoints.iter().any(|ep| self.is(ep)))
            .map(|svc| svc.name.clone())
            .collect();
        names.sort();
        names
    }
}

// === checks ===

/// The peer of an mTLS connection on 15008, as its TLS session proved it.
#[derive(Debug)]
pub struct Peer {
    /// The verified SPIFFE ID.
    pub id: SpiffeId,
    /// The same, as text: the `source.principal` of every request on the connection.
    pub principal: String,
    /// Where the connection comes from.
    pub addr: SocketAddr,
    /// The server name the peer asked for in its TLS handshake.
    pub sni: Option<String>,
}

impl Peer {
    pub fn new(id: SpiffeId, addr: SocketAddr, sni: Option<String>) -> Self {
        Peer {
            principal: id.to_string(),
            id,
            addr,
            sni,
        }
    }
}

/// Why a request does not reach the app.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The path cannot be normalized: 400.
    #[error("invalid request path: {0}")]
    Path(#[from] PathError),
    /// The method spells a registered one in another case (`delete`): 400, as Envoy
    /// answers, so that a policy on `DELETE` cannot be walked around.
    #[error("invalid request method: {0}")]
    Method(#[from] MethodError),
    /// An AuthorizationPolicy denied it: 403. Holds the deciding policy (`ns/name`, or `none`
    /// when the default decided) for access logs.
    #[error("{DENIED_BODY}")]
    Denied { policy: String },
    /// No snapshot yet, so no policy is known: 503.
    #[error("no snapshot yet: inbound policy unknown")]
    NoPolicy,
}

impl Refusal {
    /// The answer to send instead of the app's.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Refusal::Path(_) | Refusal::Method(_) => error_response(StatusCode::BAD_REQUEST, self),
            Refusal::Denied { .. } => denied(),
            Refusal::NoPolicy => error_response(StatusCode::SERVICE_UNAVAILABLE, self),
        }
    }
}

/// Checks the method and normalizes the path of a request from `peer` for the app's `port`,
/// and decides on it. `Ok` holds the normalized target, which is what the app must receive.
///
/// # Errors
///
/// [`Refusal`] when the request must not reach the app.
pub fn authorize_request(
    state: &ProxyState,
    peer: &Peer,
    port: u16,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Authorized, Refusal> {
    check_method(method.as_str()).inspect_err(|e| {
        tracing::info!(peer = %peer.addr, caller = %peer.principal, error = %e, "request refused: invalid method");
    })?;
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = normalize(target).inspect_err(|e| {
        tracing::info!(peer = %peer.addr, caller = %peer.principal, target, error = %e, "request refused: invalid path");
    })?;
    let Some(policy) = state.inbound_policy.load_full() else {
        return Err(Refusal::NoPolicy);
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let request = Request {
        source_principal: Some(&peer.principal),
        source_ip: peer.addr.ip(),
        remote_ip: peer.addr.ip(),
        destination_ip: state.config.address,
        destination_port: port,
        sni: peer.sni.as_deref(),
        http: Some(HttpAttrs {
            host,
            method: method.as_str(),
            path: &path,
            headers,
        }),
    };
    let ruling = decide(state, &policy.policies, &request);
    if ruling.allow {
        Ok(Authorized {
            path,
            policy: ruling.policy,
        })
    } else {
        Err(Refusal::Denied {
            policy: ruling.policy,
        })
    }
}

/// An allowed request: the path the app must receive and the policy that allowed it.
#[derive(Debug)]
pub struct Authorized {
    pub path: NormalizedPath,
    /// `ns/name` of the deciding policy, or `none` when the default (no ALLOW policy)
    /// decided.
    pub policy: String,
}

/// A decision on a connection.
#[derive(Debug)]
pub struct Ruling {
    pub allow: bool,
    /// `ns/name` of the deciding policy, or `none`.
    pub policy: String,
}

/// Decides on an opaque TCP connection from `source` (with the peer's SPIFFE ID when it came
/// over mTLS) to `destination` on this workload. Before the first snapshot: refused.
pub fn authorize_connection(
    state: &ProxyState,
    principal: Option<&str>,
    source: SocketAddr,
    destination: SocketAddr,
    sni: Option<&str>,
) -> Ruling {
    let Some(policy) = state.inbound_policy.load_full() else {
        tracing::info!(%source, %destination, "connection refused: no policy yet (no snapshot)");
        return Ruling {
            allow: false,
            policy: "none".into(),
        };
    };
    let request = Request {
        source_principal: principal,
        source_ip: source.ip(),
        remote_ip: source.ip(),
        destination_ip: destination.ip(),
        destination_port: destination.port(),
        sni,
        http: None,
    };
    decide(state, &policy.policies, &request)
}

/// The answer to a denied request (or tunnel): 403 with Istio's body.
pub fn denied() -> Response<Body> {
    let mut resp = Response::new(full(DENIED_BODY));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Evaluates, logs and counts.
fn decide(state: &ProxyState, policies: &[Policy], request: &Request<'_>) -> Ruling {
    let decision = evaluate(policies, request);
    let policy = report(state, &decision, request);
    Ruling {
        allow: decision.allow(),
        policy,
    }
}

// === reporting ===

/// `ns/name` of the policy behind a verdict, or `none` when the default decided.
fn policy_label(verdict: &Verdict<'_>) -> String {
    PolicyName(verdict).to_string()
}

/// Displays as [`policy_label`] does, for log lines: formatted only when the line is written.
struct PolicyName<'a, 'p>(&'a Verdict<'p>);

impl std::fmt::Display for PolicyName<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.policy {
            Some(m) => write!(f, "{}/{}", m.policy.namespace, m.policy.name),
            None => f.write_str("none"),
        }
    }
}

/// What was decided on, for log lines: `GET /admin` for a request, `TCP` for a connection.
/// Formatted only when the line is written (most decisions are allowed, logged at debug).
struct Subject<'a, 'r>(&'a Request<'r>);

impl std::fmt::Display for Subject<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.http {
            Some(h) => write!(f, "{} {}", h.method, h.path.path()),
            None => f.write_str("TCP"),
        }
    }
}

fn action_label(verdict: &Verdict<'_>) -> &'static str {
    match verdict.policy.map(|m| m.policy.action) {
        Some(Action::Allow) => "ALLOW",
        Some(Action::Deny) => "DENY",
        Some(Action::Audit) => "AUDIT",
        None => "none",
    }
}

/// Logs and counts one decision: the enforced verdict, the dry-run one if any dry-run policy
/// applies, and the audit mark. Returns the deciding policy's label.
fn report(state: &ProxyState, decision: &Decision<'_>, request: &Request<'_>) -> String {
    let metrics = &state.metrics;
    let verdict = &decision.verdict;
    let policy = PolicyName(verdict);
    let principal = request.source_principal.unwrap_or("none");
    let source = request.source_ip;
    let port = request.destination_port;
    let what = Subject(request);
    let label = policy_label(verdict);
    metrics.count_authz(
        label.clone(),
        action_label(verdict),
        if verdict.allow { "allow" } else { "deny" },
    );
    if verdict.allow {
        tracing::debug!(%policy, principal, %source, port, request = %what, reason = %verdict, "authorization: allowed");
    } else {
        tracing::info!(%policy, principal, %source, port, request = %what, reason = %verdict, "authorization: denied");
    }
    if let Some(dry_run) = &decision.dry_run {
        let dry_policy = PolicyName(dry_run);
        let outcome = if dry_run.allow {
            "dry_run_allow"
        } else {
            "dry_run_deny"
        };
        metrics.count_authz(policy_label(dry_run), action_label(dry_run), outcome);
        if dry_run.allow {
            tracing::debug!(policy = %dry_policy, principal, %source, port, request = %what, reason = %dry_run, "authorization (dry run, not enforced): would allow");
        } else {
            tracing::info!(policy = %dry_policy, principal, %source, port, request = %what, reason = %dry_run, "authorization (dry run, not enforced): would deny");
        }
    }
    if let Some(audit) = &decision.audit {
        let audit_policy = format!("{}/{}", audit.policy.namespace, audit.policy.name);
        metrics.count_authz(audit_policy.clone(), "AUDIT", "audit");
        tracing::info!(policy = %audit_policy, principal, %source, port, request = %what, rule = audit.rule, "authorization: audited");
    }
    label
}

#[cfg(test)]
mod tests;
