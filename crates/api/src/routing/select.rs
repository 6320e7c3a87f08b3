//! Choosing the rule for a request: a first-match scan of a port's pre-ordered conditions
//! ([`select`]), and the same for TCP connections ([`select_tcp`]).
//!
//! This runs on every request, so it does not allocate except where a value must be
//! rebuilt before a regular expression can see it: a header sent several times (its values
//! joined with `,`) or a query parameter with `%` escapes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::model::{
    HeaderMatch, HttpRoutes, HttpRule, PathMatch, PortRoutes, QueryMatch, RequestMatch, StrMatch,
    TcpRoutes, TcpRule, ValueMatch,
};

/// What [`select`] looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The authority (`Host`) as the request carries it.
    pub authority: &'a str,
    /// The path and query as the rules should see them: normalized, if the proxy normalizes
    /// paths before routing.
    pub path_and_query: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// Who is calling.
    pub source: Source<'a>,
}

/// The calling workload: the proxy's own (or, for a node proxy, the one it serves this
/// request for).
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// The outcome of [`select`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Selection<'a> {
    /// No HTTP route applies to this client on this port: forward to the Service as
    /// addressed (plain balancing over its endpoints).
    Unrouted,
    /// A rule was selected.
    Matched(Selected<'a>),
    /// Routes apply, and none matched: answer 404.
    NoMatch,
}

/// A selected rule and the condition that selected it (rewrites and redirects replace what
/// that condition's path matched).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Selected<'a> {
    /// The rule.
    pub rule: &'a HttpRule,
    /// The condition that held.
    pub matched: &'a RequestMatch,
}

impl PortRoutes {
    /// The HTTP rules a client in `namespace` gets: its namespace's consumer routes if
    /// there are any, else the port's own.
    pub fn http_for(&self, namespace: &str) -> Option<&HttpRoutes> {
        self.consumer(namespace)
            .and_then(|c| c.http.as_ref())
            .or(self.http.as_ref())
    }

    /// The TCP rules a client in `namespace` gets.
    pub fn tcp_for(&self, namespace: &str) -> Option<&TcpRoutes> {
        self.consumer(namespace)
            .and_then(|c| c.tcp.as_ref())
            .or(self.tcp.as_ref())
    }

    fn consumer(&self, namespace: &str) -> Option<&super::model::ConsumerRoutes> {
        // Sorted by namespace (checked on decode).
        self.consumers
            .binary_search_by(|c| c.namespace.as_str().cmp(namespace))
            .ok()
            .and_then(|i| self.consumers.get(i))
    }
}

/// The rule for `req` among the routes of the port it was addressed to.
///
/// Conditions on the caller (`sourceLabels`, `sourceNamespace`) are, in Istio, evaluated
/// once per sidecar when its configuration is generated: rules for other callers do not
/// exist for it. So when no condition at all is for this caller, the port has no routes
/// for it ([`Selection::Unrouted`]), not routes that fail to match.
pub fn select<'a>(table: &'a PortRoutes, req: &RequestView<'_>) -> Selection<'a> {
    let Some(routes) = table.http_for(req.source.namespace) else {
        return Selection::Unrouted;
    };
    let (path, query) = match req.path_and_query.split_once('?') {
        Some((path, query)) => (path, query),
        None => (req.path_and_query, ""),
    };
    let mut for_this_caller = false;
    for entry in &routes.matches {
        let m = &entry.conditions;
        if !source_matches(m.source_namespace.as_deref(), &m.source_labels, &req.source) {
            continue;
        }
        for_this_caller = true;
        if request_matches(m, req, path, query) {
            // The index was checked when the table was decoded; a table built in code that
            // breaks it selects nothing rather than panicking.
            return match routes.rules.get(entry.rule) {
                Some(rule) => Selection::Matched(Selected { rule, matched: m }),
                None => Selection::NoMatch,
            };
        }
    }
    if for_this_caller || routes.matches.is_empty() {
        Selection::NoMatch
    } else {
        Selection::Unrouted
    }
}

/// The TCP rule for a connection from `source` to the port, asking for server name `sni`
/// if it opened with TLS, or `None` to forward to the Service as addressed (no TCP route, or
/// none for this caller and name).
pub fn select_tcp<'a>(
    table: &'a PortRoutes,
    source: &Source<'_>,
    sni: Option<&str>,
) -> Option<&'a TcpRule> {
    let routes = table.tcp_for(source.namespace)?;
    routes.rules.iter().find(|rule| {
        rule.matches.is_empty()
            || rule.matches.iter().any(|m| {
                source_matches(m.source_namespace.as_deref(), &m.source_labels, source)
                    && m.sni_matches(sni)
            })
    })
}

fn source_matches(
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    source: &Source<'_>,
) -> bool {
    namespace.is_none_or(|ns| ns == source.namespace)
        && labels
            .iter()
            .all(|(k, v)| source.labels.get(k).is_some_and(|have| have == v))
}

fn request_matches(m: &RequestMatch, req: &RequestView<'_>, path: &str, query: &str) -> bool {
    // Cheapest first: most requests are told apart by method or path.
    m.method.as_ref().is_none_or(|c| c.matches(req.method))
        && m.path.as_ref().is_none_or(|c| c.matches(path))
        && m.authority
            .as_ref()
            .is_none_or(|c| c.matches(req.authority))
        && m.scheme.as_ref().is_none_or(|c| c.matches(req.scheme))
        && m.headers.iter().all(|h| h.matches(req.headers))
        && m.query_params.iter().all(|q| q.matches(query))
}

// === conditions ===

impl PathMatch {
    /// Whether `path` (without its query) satisfies the condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact { value, ignore_case } => {
                if *ignore_case {
                    path.eq_ignore_ascii_case(value)
                } else {
                    path == value
                }
            }
            PathMatch::Prefix { value, ignore_case } => match path.get(..value.len()) {
                Some(head) if *ignore_case => head.eq_ignore_ascii_case(value),
                Some(head) => head == value,
                None => false,
            },
            PathMatch::Segments { value } => path
                .strip_prefix(value.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            PathMatch::Regex { pattern } => pattern.is_match(path),
        }
    }
}

impl StrMatch {
    /// Whether `value` satisfies the condition.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(v) => value == v,
            StrMatch::Prefix(v) => value.starts_with(v.as_str()),
            StrMatch::Regex(p) => p.is_match(value),
        }
    }
}

impl HeaderMatch {
    /// Whether the headers satisfy the condition.
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        let mut values = headers.get_all(self.name.name()).iter();
        let holds = match values.next() {
            None => false,
            Some(first) => match values.next() {
                // The common case, one value: compared in place.
                None => self.condition.matches_bytes(first.as_bytes()),
                Some(_) => {
                    let joined = join(headers.get_all(self.name.name()).iter());
                    self.condition.matches_bytes(&joined)
                }
            },
        };
        holds != self.invert
    }
}

/// Several values of one header as Envoy compares them: joined with `,`.
fn join<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(value.as_bytes());
    }
    out
}

impl QueryMatch {
    /// Whether the query (without `?`) satisfies the condition: the first parameter of this
    /// name, percent-decoded, is what is compared.
    pub fn matches(&self, query: &str) -> bool {
        let found = query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name) == self.name.as_str()).then_some(value)
        });
        match found {
            None => false,
            Some(value) => self
                .condition
                .matches_bytes(percent_decode(value).as_bytes()),
        }
    }
}

impl ValueMatch {
    /// Whether a present value satisfies the condition.
    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Exact(v) => value == v.as_bytes(),
            ValueMatch::Prefix(v) => value.starts_with(v.as_bytes()),
            // A value that is not UTF-8 cannot match an expression over text.
            ValueMatch::Regex(p) => std::str::from_utf8(value).is_ok_and(|v| p.is_match(v)),
        }
    }
}

/// `%XX` escapes decoded; borrowed when there are none (the usual case). Envoy decodes query
/// parameters the same way before matching, and leaves `+` alone. A malformed escape is
/// kept as written; bytes that do not form UTF-8 are replaced.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1..i + 3)) {
            // `from_str_radix` alone would take a sign (`%+1`).
            (b'%', Some(hex)) if hex.iter().all(u8::is_ascii_hexdigit) => std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests;
