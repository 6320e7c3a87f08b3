//! The route model end to end, in memory: real configs (copied unchanged under
//! `tests/conformance`) go through the loader and [`trellis_api::routing::compile`],
//! then requests go through [`select`] and the helpers the proxy will call, and the outcome
//! is what the upstream test or documentation says.
//!
//! - `routing/gamma.rs`: every Gateway API mesh conformance test of the README's §4.
//! - `routing/bookinfo.rs`: Istio's Bookinfo VirtualServices, as Istio's task pages describe.
//!
//! [`Mesh::send`] plays the client proxy: it resolves the name the client dialled to a
//! Service, selects a rule on the port, picks a destination with the given random number,
//! applies header changes and rewrites, and reports what the server would see.

#[path = "routing/bookinfo.rs"]
mod bookinfo;
#[path = "routing/gamma.rs"]
mod gamma;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use trellis_api::load::{parse_str, Diagnostic, Located};
use trellis_api::resources::Resource;
use trellis_api::routing::{
    self, pick_weighted, redirect_location, rewrite_path, select, Action, Backend, MeshRoutes,
    RedirectRequest, RequestView, Selection, Source,
};

/// The conformance data, next to the workspace. Missing data fails loudly rather than
/// letting a test pass vacuously.
fn conformance(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance")
        .join(relative)
}

/// Parses files (in this order, standing for the routes' age) without errors.
fn load(paths: &[PathBuf]) -> Vec<Located<Resource>> {
    let mut resources = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "conformance data {} is missing ({e}); it ships in the repository under tests/conformance",
                path.display()
            )
        });
        let (found, diagnostics) = parse_str(path, &text);
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        resources.extend(found);
    }
    resources
}

/// A compiled config.
struct Mesh {
    routes: MeshRoutes,
}

/// A request as a client sends it.
struct Request {
    /// The client's namespace.
    namespace: &'static str,
    /// The client's labels.
    labels: BTreeMap<String, String>,
    /// The name it dials (`echo`, `echo-v1.gateway-conformance-mesh`).
    host: &'static str,
    /// The Service port it dials.
    port: u16,
    /// The `Host` header; the dialled name unless a test sets another.
    authority: &'static str,
    method: &'static str,
    path_and_query: &'static str,
    headers: http::HeaderMap,
}

impl Request {
    fn get(namespace: &'static str, host: &'static str, port: u16, path: &'static str) -> Self {
        Request {
            namespace,
            labels: BTreeMap::new(),
            host,
            port,
            authority: host,
            method: "GET",
            path_and_query: path,
            headers: http::HeaderMap::new(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers
            .append(name, value.parse().expect("header value"));
        self
    }

    fn authority(mut self, authority: &'static str) -> Self {
        self.authority = authority;
        self
    }

    fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
}

/// What happened to a request.
#[derive(Debug)]
enum Outcome {
    /// No route applies: the addressed Service balances it over its endpoints.
    Unrouted { service: String },
    /// Routes apply and none matched.
    NotFound,
    /// Forwarded.
    Forwarded(Box<Forwarded>),
    /// Answered with a redirect.
    Redirected { status: u16, location: String },
    /// Answered without forwarding.
    Responded { status: u16 },
}

/// A forwarded request as its destination and the client see it.
#[derive(Debug)]
struct Forwarded {
    /// The rule, `namespace/name/rule`.
    rule: String,
    /// The destination Service's short name, and the Service port.
    service: String,
    port: Option<u16>,
    subset: Option<String>,
    /// What the backend receives.
    path_and_query: String,
    authority: String,
    headers: http::HeaderMap,
    /// Headers the client finds in the response, from the mesh's changes alone.
    response_headers: http::HeaderMap,
    /// The rule's filters, for fault and retry checks.
    filters: routing::Filters,
}

/// Every value of a header joined with `,` (no space), as the conformance comparator reads
/// them; `None` when absent.
fn joined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("text"))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

impl Mesh {
    fn compile(paths: &[PathBuf]) -> Mesh {
        Mesh {
            routes: routing::compile(&load(paths)),
        }
    }

    /// Sends `req`; `random` picks among weighted destinations.
    fn send_with(&self, req: &Request, random: u64) -> Outcome {
        let host = routing::service_host(req.host, req.namespace);
        let short = host.split('.').next().unwrap_or_default().to_owned();
        let Some(port) = self.routes.tables.get(&host).and_then(|t| t.port(req.port)) else {
            return Outcome::Unrouted { service: short };
        };
        let view = RequestView {
            method: req.method,
            scheme: "http",
            authority: req.authority,
            path_and_query: req.path_and_query,
            headers: &req.headers,
            source: Source {
                namespace: req.namespace,
                labels: &req.labels,
            },
        };
        let selected = match select(port, &view) {
            Selection::Unrouted => return Outcome::Unrouted { service: short },
            Selection::NoMatch => return Outcome::NotFound,
            Selection::Matched(selected) => selected,
        };
        let rule = selected.rule;
        let matched = selected.matched.path.as_ref();
        let destinations = match &rule.action {
            Action::Redirect(redirect) => {
                let location = redirect_location(
                    redirect,
                    matched,
                    &RedirectRequest {
                        scheme: "http",
                        authority: req.authority,
                        path_and_query: req.path_and_query,
                        port: req.port,
                    },
                );
                return Outcome::Redirected {
                    status: redirect.status,
                    location,
                };
            }
            Action::Respond(response) => {
                return Outcome::Responded {
                    status: response.status,
                }
            }
            Action::Forward(destinations) => destinations,
        };
        let chosen = pick_weighted(destinations, random).expect("a destination");
        let (service, port, subset) = match &chosen.backend {
            Backend::Service { host, port, subset } => (
                host.split('.').next().unwrap_or_default().to_owned(),
                *port,
                subset.clone(),
            ),
            Backend::Invalid { .. } => return Outcome::Responded { status: 500 },
        };
        let mut headers = req.headers.clone();
        rule.filters.request_headers.apply(&mut headers);
        chosen.request_headers.apply(&mut headers);
        let mut response_headers = http::HeaderMap::new();
        rule.filters.response_headers.apply(&mut response_headers);
        chosen.response_headers.apply(&mut response_headers);
        let rewrite = rule.filters.rewrite.as_ref();
        let path_and_query = match rewrite.and_then(|r| r.path.as_ref()) {
            Some(path) => rewrite_path(req.path_and_query, matched, path),
            None => req.path_and_query.to_owned(),
        };
        let authority = rewrite
            .and_then(|r| r.authority.clone())
            .unwrap_or_else(|| req.authority.to_owned());
        Outcome::Forwarded(Box::new(Forwarded {
            rule: rule.name.to_string(),
            service,
            port,
            subset,
            path_and_query,
            authority,
            headers,
            response_headers,
            filters: rule.filters.clone(),
        }))
    }

    /// Sends `req` and expects it forwarded (to the first destination where weights split).
    fn forward(&self, req: &Request) -> Forwarded {
        match self.send_with(req, 0) {
            Outcome::Forwarded(f) => *f,
            other => panic!(
                "{} {}: expected a forward, got {other:?}",
                req.host, req.path_and_query
            ),
        }
    }

    /// Shares of the destinations over `draws` requests, from a fixed pseudo-random
    /// sequence (so the result is the same on every run).
    fn shares(&self, req: &Request, draws: usize) -> BTreeMap<String, usize> {
        let mut state: u64 = 0x5EED_0F7E_E115;
        let mut out = BTreeMap::new();
        for _ in 0..draws {
            // splitmix64: uniform enough for a 70/30 check, and reproducible.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let name = match self.send_with(req, z) {
                Outcome::Forwarded(f) => f.service,
                other => format!("{other:?}"),
            };
            *out.entry(name).or_default() += 1;
        }
        out
    }
}
