//! `trellis_api::authz` end to end: policies written as users write them (YAML through the
//! loader), compiled, selected for a workload and evaluated against requests and
//! connections. Each case states the full reason the decision logs, so a wrong allow/deny,
//! a wrong deciding policy or rule, a missed audit or dry-run outcome all fail it.
//!
//! The fixtures are here; `authz/decisions.rs` has the decision order, AUDIT, dry-run and
//! policy selection, `authz/attributes.rs` every attribute, HTTP-only attributes on TCP and
//! path tricks, and `authz/conformance.rs` compiles the AuthorizationPolicies and
//! PeerAuthentications of Istio's conformance inputs.

#[path = "authz/attributes.rs"]
mod attributes;
#[path = "authz/conformance.rs"]
mod conformance;
#[path = "authz/decisions.rs"]
mod decisions;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use trellis_api::authz::{
    applies_to, evaluate, normalize_with, Decision, HttpAttrs, NormalizedPath, PathNormalization,
    PeerAuthPolicy, Policy, PolicyError, Request, Workload, DEFAULT_ROOT_NAMESPACE,
};
use trellis_api::load::{parse_str, Located};
use trellis_api::resources::Resource;
use trellis_api::snapshot::Labels;

// === fixtures ===

/// The resources of `text`, read from `path`; they must load without errors.
fn load_clean(path: &Path, text: &str) -> Vec<Located<Resource>> {
    let (resources, diagnostics) = parse_str(path, text);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    resources
}

/// Compiles every AuthorizationPolicy of `yaml`, which must load without errors.
fn policies(yaml: &str) -> Vec<Policy> {
    load_clean(Path::new("test.yaml"), yaml)
        .into_iter()
        .map(|r| match r.value {
            Resource::AuthorizationPolicy(ap) => {
                Policy::compile(&ap).unwrap_or_else(|e| panic!("{e}"))
            }
            other => panic!("not an AuthorizationPolicy: {}", other.kind()),
        })
        .collect()
}

/// One ALLOW policy `default/p` with the single rule `rule` (YAML flow style).
fn allow_rule(rule: &str) -> Vec<Policy> {
    policies(&format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: p, namespace: default}}\nspec:\n  rules:\n  - {rule}\n"
    ))
}

/// An HTTP request or a TCP connection, owning what a [`Request`] borrows.
#[derive(Clone)]
struct Call {
    principal: Option<String>,
    source_ip: IpAddr,
    remote_ip: IpAddr,
    destination_ip: IpAddr,
    port: u16,
    sni: Option<String>,
    http: Option<Http>,
}

#[derive(Clone)]
struct Http {
    host: String,
    method: String,
    path: NormalizedPath,
    headers: HeaderMap,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn spiffe(namespace: &str, account: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{account}")
}

/// A TCP connection from `default/sleep` over mTLS, to port `port`.
fn tcp(port: u16) -> Call {
    Call {
        principal: Some(spiffe("default", "sleep")),
        source_ip: ip("10.0.0.5"),
        remote_ip: ip("10.0.0.5"),
        destination_ip: ip("10.0.0.9"),
        port,
        sni: None,
        http: None,
    }
}

/// An HTTP request like [`tcp`] on port 8080, to host `httpbin`, path normalized the mesh's
/// default way.
fn http(method: &str, target: &str) -> Call {
    http_with(method, target, PathNormalization::default())
}

fn http_with(method: &str, target: &str, mode: PathNormalization) -> Call {
    Call {
        http: Some(Http {
            host: "httpbin".into(),
            method: method.into(),
            path: normalize_with(target, mode).unwrap(),
            headers: HeaderMap::new(),
        }),
        ..tcp(8080)
    }
}

fn get(target: &str) -> Call {
    http("GET", target)
}

impl Call {
    fn from(mut self, namespace: &str, account: &str) -> Self {
        self.principal = Some(spiffe(namespace, account));
        self
    }

    fn principal(mut self, principal: Option<&str>) -> Self {
        self.principal = principal.map(str::to_owned);
        self
    }

    fn ips(mut self, source: &str, remote: &str) -> Self {
        self.source_ip = ip(source);
        self.remote_ip = ip(remote);
        self
    }

    fn destination(mut self, address: &str, port: u16) -> Self {
        self.destination_ip = ip(address);
        self.port = port;
        self
    }

    fn sni(mut self, sni: &str) -> Self {
        self.sni = Some(sni.into());
        self
    }

    fn host(mut self, host: &str) -> Self {
        if let Some(http) = &mut self.http {
            http.host = host.into();
        }
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        if let Some(http) = &mut self.http {
            http.headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        self
    }

    fn decide<'p>(&self, policies: &'p [Policy]) -> Decision<'p> {
        let request = Request {
            source_principal: self.principal.as_deref(),
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.as_deref(),
            http: self.http.as_ref().map(|h| HttpAttrs {
                host: &h.host,
                method: &h.method,
                path: &h.path,
                headers: &h.headers,
            }),
        };
        evaluate(policies, &request)
    }

    fn allowed(&self, policies: &[Policy]) -> bool {
        self.decide(policies).allow()
    }

    fn describe(&self) -> String {
        match &self.http {
            Some(h) => format!(
                "{} {} host={} headers={:?} from {:?} {}→{} port {}",
                h.method,
                h.path.as_str(),
                h.host,
                h.headers,
                self.principal,
                self.source_ip,
                self.remote_ip,
                self.port
            ),
            None => format!(
                "TCP from {:?} {}→{} to {} port {} sni {:?}",
                self.principal,
                self.source_ip,
                self.remote_ip,
                self.destination_ip,
                self.port,
                self.sni
            ),
        }
    }
}

/// Checks the logged reason of each call.
fn expect(policies: &[Policy], cases: &[(Call, &str)]) {
    for (call, reason) in cases {
        assert_eq!(
            call.decide(policies).to_string(),
            *reason,
            "{}",
            call.describe()
        );
    }
}

const ALLOWED_BY_DEFAULT: &str = "allowed: no ALLOW policy applies and no DENY policy matched";

/// Each rule in an ALLOW policy of its own: whether each call is allowed.
fn check_table(cases: &[(&str, &[(Call, bool)])]) {
    for (rule, calls) in cases {
        let ps = allow_rule(rule);
        for (call, want) in *calls {
            assert_eq!(
                call.allowed(&ps),
                *want,
                "rule {rule}\ncall {}\nreason: {}",
                call.describe(),
                call.decide(&ps)
            );
        }
    }
}
