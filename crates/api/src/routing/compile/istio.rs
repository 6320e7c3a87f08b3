//! A VirtualService's `http` and `tcp` routes, for one port of a Service it routes, as model
//! rules in the VirtualService's own order, with Istio's defaults filled in: a lone
//! destination takes all traffic, a redirect answers 301, faults and mirrors without a
//! percentage apply to every request, a route without `retries` gets Istio's default
//! retry policy.
//!
//! A match for another port, or for gateways without `mesh`, is left out of this port's
//! table; a route left without matches is left out altogether (Istio does the same when it
//! generates a sidecar's routes). What the model cannot do is reported by the loader
//! ([`crate::routing::unsupported`]) and skipped here: a `delegate` route is skipped (so the
//! routes after it are tried), a TCP match on subnets never matches.

use std::time::Duration;

use base64::Engine;

use crate::resources::{
    Destination, HeaderOperations, HeaderValueMatch, Headers, HttpDirectResponse,
    HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite,
    HttpRoute as VsHttpRoute, RedirectPortSelection, RouteDestination, StringMatch, VirtualService,
};
use crate::routing::header::{HeaderKey, HeaderText};
use crate::routing::model::{
    Abort, AbortStatus, Action, Backend, Delay, DirectResponse, Fault, Filters, HeaderMatch,
    HeaderOps, HeaderPair, HttpRoutes, HttpRule, MatchEntry, Mirror, PathMatch, PathRewrite,
    QueryMatch, Redirect, RedirectPort, RequestMatch, RetryOn, RetryPolicy, Rewrite, RouteKind,
    RuleName, SourceMatch, StrMatch, TcpRoutes, TcpRule, ValueMatch, WeightedDestination,
};
use crate::routing::pattern::{Pattern, RewritePattern};
use crate::routing::service_host;

/// Istio's redirect status when `redirectCode` is not set.
const DEFAULT_REDIRECT_STATUS: u16 = 301;
/// The weight a lone destination gets whatever it says: Istio sends it everything.
const LONE_WEIGHT: u32 = 100;
/// What `retryOn` means when a route sets `retries` without it (Istio's default).
const DEFAULT_RETRY_ON: [RetryOn; 5] = [
    RetryOn::ConnectFailure,
    RetryOn::RefusedStream,
    RetryOn::Unavailable,
    RetryOn::Cancelled,
    RetryOn::RetriableStatusCodes,
];

/// gRPC's status names, in code order (`OK` is 0).
const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Whether a `gateways` list (of a match) lets the rule apply to sidecars.
fn for_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// The VirtualService's HTTP rules for `port`; `None` when none applies to it.
pub(super) fn http_routes(vs: &VirtualService, port: u16) -> Option<HttpRoutes> {
    let ns = vs.meta.namespace();
    let mut matches = Vec::new();
    let mut rules = Vec::new();
    for (index, route) in vs.spec.http.iter().enumerate() {
        let conditions: Vec<RequestMatch> = if route.match_.is_empty() {
            vec![RequestMatch::default()]
        } else {
            route
                .match_
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == u32::from(port)) && for_mesh(&m.gateways))
                .filter_map(request_match)
                .collect()
        };
        if conditions.is_empty() {
            continue;
        }
        let Some(rule) = http_rule(vs, ns, index, route) else {
            continue;
        };
        let rule_index = rules.len();
        rules.push(rule);
        matches.extend(conditions.into_iter().map(|conditions| MatchEntry {
            rule: rule_index,
            conditions,
        }));
    }
    (!rules.is_empty()).then_some(HttpRoutes { matches, rules })
}

/// The VirtualService's `tls` rules (first, by server name) and `tcp` rules for `port`;
/// `None` when none applies to it.
pub(super) fn tcp_routes(vs: &VirtualService, port: u16) -> Option<TcpRoutes> {
    let ns = vs.meta.namespace();
    let mut rules = Vec::new();
    // A rule with somewhere to send connections; one without is left out.
    let mut push = |name, matches, route: &[RouteDestination]| {
        let destinations = destinations(ns, route.iter().map(|d| (&d.destination, d.weight, None)));
        if !destinations.is_empty() {
            rules.push(TcpRule {
                name,
                matches,
                destinations,
            });
        }
    };
    for (index, route) in vs.spec.tls.iter().enumerate() {
        let matches: Vec<SourceMatch> = route
            .match_
            .iter()
            .filter(|m| m.port.is_none_or(|p| p == u32::from(port)) && for_mesh(&m.gateways))
            .filter(|m| m.destination_subnets.is_empty())
            .map(|m| SourceMatch {
                source_labels: m.source_labels.clone(),
                source_namespace: m.source_namespace.clone(),
                sni_hosts: m.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            })
            .collect();
        // Every TLS match names server names (validation requires it); none left for this
        // port means the rule is not for it.
        if matches.is_empty() || matches.iter().any(|m| m.sni_hosts.is_empty()) {
            continue;
        }
        let name = rule_name(vs, index, Some(&format!("tls-{index}")));
        push(name, matches, &route.route);
    }
    for (index, route) in vs.spec.tcp.iter().enumerate() {
        let matches: Vec<SourceMatch> = route
            .match_
            .iter()
            .filter(|m| m.port.is_none_or(|p| p == u32::from(port)) && for_mesh(&m.gateways))
            // Subnet conditions cannot be checked: such a match never matches.
            .filter(|m| m.destination_subnets.is_empty() && m.source_subnet.is_none())
            .map(|m| SourceMatch {
                source_labels: m.source_labels.clone(),
                source_namespace: m.source_namespace.clone(),
                sni_hosts: Vec::new(),
            })
            .collect();
        if !route.match_.is_empty() && matches.is_empty() {
            continue;
        }
        // Any one of no conditions is none; a match without conditions is every
        // connection, so a list of only such matches is left empty too.
        let matches = if matches.iter().any(|m| m == &SourceMatch::default()) {
            Vec::new()
        } else {
            matches
        };
        push(rule_name(vs, index, None), matches, &route.route);
    }
    (!rules.is_empty()).then_some(TcpRoutes { rules })
}

fn rule_name(vs: &VirtualService, index: usize, name: Option<&str>) -> RuleName {
    RuleName {
        kind: RouteKind::VirtualService,
        namespace: vs.meta.namespace().to_owned(),
        name: vs.meta.name.clone(),
        rule: name.map_or_else(|| index.to_string(), str::to_owned),
    }
}

// === matches ===

/// An Istio match as conditions (its `port` and `gateways` were dealt with by the caller).
/// `None` when an expression does not compile, which validation already refuses.
fn request_match(m: &HttpMatchRequest) -> Option<RequestMatch> {
    let path = match &m.uri {
        None => None,
        Some(StringMatch::Exact(value)) => Some(PathMatch::Exact {
            value: value.clone(),
            ignore_case: m.ignore_uri_case,
        }),
        Some(StringMatch::Prefix(value)) => Some(PathMatch::Prefix {
            value: value.clone(),
            ignore_case: m.ignore_uri_case,
        }),
        // Envoy's case-insensitivity does not apply to regular expressions.
        Some(StringMatch::Regex(source)) => Some(PathMatch::Regex {
            pattern: Pattern::new(source).ok()?,
        }),
    };
    let mut headers = Vec::new();
    for (invert, map) in [(false, &m.headers), (true, &m.without_headers)] {
        for (name, value) in map {
            headers.push(HeaderMatch {
                name: HeaderKey::new(name).ok()?,
                condition: value_match(value)?,
                invert,
            });
        }
    }
    let query_params = m
        .query_params
        .iter()
        .map(|(name, value)| {
            Some(QueryMatch {
                name: name.clone(),
                condition: value_match(value)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(RequestMatch {
        name: m.name.clone(),
        path,
        method: optional(m.method.as_ref())?,
        authority: optional(m.authority.as_ref())?,
        scheme: optional(m.scheme.as_ref())?,
        headers,
        query_params,
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
    })
}

/// An optional condition: `Some(None)` when absent, `None` when it does not compile.
fn optional(m: Option<&StringMatch>) -> Option<Option<StrMatch>> {
    match m {
        None => Some(None),
        Some(m) => str_match(m).map(Some),
    }
}

fn str_match(m: &StringMatch) -> Option<StrMatch> {
    Some(match m {
        StringMatch::Exact(v) => StrMatch::Exact(v.clone()),
        StringMatch::Prefix(v) => StrMatch::Prefix(v.clone()),
        StringMatch::Regex(v) => StrMatch::Regex(Pattern::new(v).ok()?),
    })
}

fn value_match(m: &HeaderValueMatch) -> Option<ValueMatch> {
    Some(match m {
        HeaderValueMatch::Present => ValueMatch::Present,
        HeaderValueMatch::Value(StringMatch::Exact(v)) => ValueMatch::Exact(v.clone()),
        HeaderValueMatch::Value(StringMatch::Prefix(v)) => ValueMatch::Prefix(v.clone()),
        HeaderValueMatch::Value(StringMatch::Regex(v)) => ValueMatch::Regex(Pattern::new(v).ok()?),
    })
}

// === rules ===

/// The rule for one `http` route; `None` for a `delegate` (not supported), or a route with
/// no destination of positive weight (which validation refuses).
fn http_rule(vs: &VirtualService, ns: &str, index: usize, route: &VsHttpRoute) -> Option<HttpRule> {
    let mut filters = Filters::default();
    let action = if let Some(redirect) = &route.redirect {
        Action::Redirect(to_redirect(redirect))
    } else if let Some(response) = &route.direct_response {
        Action::Respond(direct_response(response))
    } else if route.delegate.is_some() {
        return None;
    } else {
        let destinations = destinations(
            ns,
            route
                .route
                .iter()
                .map(|d| (&d.destination, d.weight, d.headers.as_ref())),
        );
        if destinations.is_empty() {
            return None;
        }
        let (retries, per_try_timeout) = retries(route.retries.as_ref());
        filters.retries = retries;
        filters.per_try_timeout = per_try_timeout;
        filters.rewrite = route.rewrite.as_ref().and_then(to_rewrite);
        filters.mirrors = mirrors(ns, route);
        filters.timeout = route
            .timeout
            .as_ref()
            .and_then(|t| t.to_std())
            .filter(|t| !t.is_zero());
        Action::Forward(destinations)
    };
    if let Some(headers) = &route.headers {
        let (request, response) = header_ops(headers);
        filters.request_headers = request;
        filters.response_headers = response;
    }
    filters.fault = route.fault.as_ref().map(fault);
    Some(HttpRule {
        name: rule_name(vs, index, route.name.as_deref()),
        action,
        filters,
    })
}

/// Weighted destinations: a lone one takes everything whatever its weight says, several
/// split by their weights (those of weight 0 are left out).
fn destinations<'a>(
    ns: &str,
    route: impl ExactSizeIterator<Item = (&'a Destination, Option<i32>, Option<&'a Headers>)>,
) -> Vec<WeightedDestination> {
    let lone = route.len() == 1;
    route
        .filter_map(|(d, weight, headers)| {
            let weight = if lone {
                LONE_WEIGHT
            } else {
                u32::try_from(weight.unwrap_or(0)).unwrap_or(0)
            };
            if weight == 0 {
                return None;
            }
            let (request_headers, response_headers) = headers.map(header_ops).unwrap_or_default();
            Some(WeightedDestination {
                weight,
                backend: Backend::Service {
                    host: service_host(&d.host, ns),
                    subset: d.subset.clone(),
                    port: d.port.and_then(|p| u16::try_from(p.number).ok()),
                },
                request_headers,
                response_headers,
            })
        })
        .collect()
}

fn header_ops(headers: &Headers) -> (HeaderOps, HeaderOps) {
    let ops = |o: &Option<HeaderOperations>| match o {
        None => HeaderOps::default(),
        Some(o) => {
            let pairs = |map: &std::collections::BTreeMap<String, String>| {
                map.iter()
                    .filter_map(|(name, value)| {
                        Some(HeaderPair {
                            name: HeaderKey::new(name).ok()?,
                            value: HeaderText::new(value).ok()?,
                        })
                    })
                    .collect()
            };
            HeaderOps {
                set: pairs(&o.set),
                add: pairs(&o.add),
                remove: o
                    .remove
                    .iter()
                    .filter_map(|n| HeaderKey::new(n).ok())
                    .collect(),
            }
        }
    };
    (ops(&headers.request), ops(&headers.response))
}

fn to_redirect(r: &HttpRedirect) -> Redirect {
    let port = match (r.port.and_then(|p| u16::try_from(p).ok()), r.derive_port) {
        (Some(port), _) => RedirectPort::Fixed(port),
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => RedirectPort::SchemeDefault,
        (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::RequestPort,
        (None, None) => RedirectPort::Authority,
    };
    let path = match (&r.uri, &r.prefix_rewrite) {
        (Some(uri), _) => Some(PathRewrite::Full(uri.clone())),
        (None, Some(prefix)) => Some(PathRewrite::Prefix(prefix.clone())),
        (None, None) => None,
    };
    Redirect {
        scheme: r.scheme.clone(),
        host: r.authority.clone(),
        port,
        path,
        status: r
            .redirect_code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(DEFAULT_REDIRECT_STATUS),
    }
}

fn direct_response(r: &HttpDirectResponse) -> DirectResponse {
    let body = r.body.as_ref().and_then(|b| match (&b.string, &b.bytes) {
        (Some(text), _) => Some(text.clone().into_bytes()),
        (None, Some(encoded)) => decode_base64(encoded),
        (None, None) => None,
    });
    DirectResponse {
        status: u16::try_from(r.status).unwrap_or(500),
        body,
    }
}

/// Base64 as protobuf's JSON reader takes it: standard or URL-safe alphabet, padding
/// optional (validation checked the shape).
fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    let standard: String = encoded
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(standard)
        .ok()
}

fn to_rewrite(r: &HttpRewrite) -> Option<Rewrite> {
    let path = match (&r.uri, &r.uri_regex_rewrite) {
        (Some(uri), _) => Some(PathRewrite::Prefix(uri.clone())),
        (None, Some(regex)) => {
            let pattern = RewritePattern::new(regex.match_.as_deref()?).ok()?;
            let substitution = re2_substitution(regex.rewrite.as_deref().unwrap_or_default());
            Some(PathRewrite::Regex {
                pattern,
                substitution,
            })
        }
        (None, None) => None,
    };
    Some(Rewrite {
        path,
        authority: r.authority.clone(),
    })
}

/// An RE2 substitution (`\1` for a group, `\\` for a backslash) in the `regex` crate's
/// syntax (`${1}`, with `$` written `$$`).
fn re2_substitution(re2: &str) -> String {
    let mut out = String::with_capacity(re2.len());
    let mut chars = re2.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Istio's retry semantics: no `retries` is its default policy; `attempts` unset or 0
/// disables retries (and with them `perTryTimeout`); `retryOn` unset keeps the default
/// conditions and 503, while a `retryOn` list replaces them, its numbers becoming the
/// retried statuses.
fn retries(r: Option<&HttpRetry>) -> (Option<RetryPolicy>, Option<Duration>) {
    let Some(r) = r else {
        return (Some(RetryPolicy::mesh_default()), None);
    };
    let attempts = r.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0);
    if attempts == 0 {
        return (None, None);
    }
    let (retry_on, status_codes) = match r.retry_on.as_deref() {
        None | Some("") => (DEFAULT_RETRY_ON.to_vec(), vec![503]),
        Some(list) => {
            let mut on = Vec::new();
            let mut codes = Vec::new();
            for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if let Ok(code) = item.parse::<u16>() {
                    codes.push(code);
                } else if let Some(condition) = RetryOn::parse(item) {
                    on.push(condition);
                }
            }
            if !codes.is_empty() && !on.contains(&RetryOn::RetriableStatusCodes) {
                on.push(RetryOn::RetriableStatusCodes);
            }
            (on, codes)
        }
    };
    let policy = RetryPolicy {
        attempts,
        retry_on,
        status_codes,
        backoff: r.backoff.as_ref().and_then(|b| b.to_std()),
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
    };
    let per_try = r
        .per_try_timeout
        .as_ref()
        .and_then(|t| t.to_std())
        .filter(|t| !t.is_zero());
    (Some(policy), per_try)
}

/// Istio's fault: a share given as `percentage`, or the older integer `percent`, or every
/// request.
fn fault(f: &HttpFaultInjection) -> Fault {
    let delay = f.delay.as_ref().and_then(|d| {
        Some(Delay {
            duration: d.fixed_delay.as_ref()?.to_std()?,
            percent: d
                .percentage
                .map(|p| p.value)
                .or(d.percent.map(f64::from))
                .unwrap_or(100.0),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let status = match (a.http_status, &a.grpc_status) {
            (Some(status), _) => AbortStatus::Http(u16::try_from(status).ok()?),
            (None, Some(name)) => {
                let code = GRPC_STATUSES.iter().position(|s| s == name)?;
                AbortStatus::Grpc(u16::try_from(code).ok()?)
            }
            (None, None) => return None,
        };
        Some(Abort {
            status,
            percent: a.percentage.map_or(100.0, |p| p.value),
        })
    });
    Fault { delay, abort }
}

/// `mirror` with its share (`mirrorPercentage`, else `mirrorPercent` in either spelling,
/// else all), then every `mirrors` entry (all unless it says).
fn mirrors(ns: &str, route: &VsHttpRoute) -> Vec<Mirror> {
    let to = |d: &Destination, percent: f64| Mirror {
        host: service_host(&d.host, ns),
        subset: d.subset.clone(),
        port: d.port.and_then(|p| u16::try_from(p.number).ok()),
        percent: percent.clamp(0.0, 100.0),
    };
    let mut out = Vec::new();
    if let Some(d) = &route.mirror {
        let percent = route
            .mirror_percentage
            .map(|p| p.value)
            .or(route.mirror_percent.map(f64::from))
            .or(route.mirror_percent_legacy.map(f64::from))
            .unwrap_or(100.0);
        out.push(to(d, percent));
    }
    for m in &route.mirrors {
        out.push(to(&m.destination, m.percentage.map_or(100.0, |p| p.value)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_substitutions_become_regex_crate_ones() {
        assert_eq!(re2_substitution(r"/v1/\1/\2"), "/v1/${1}/${2}");
        assert_eq!(re2_substitution(r"\\x$y"), r"\x$$y");
    }

    #[test]
    fn base64_in_either_alphabet() {
        assert_eq!(decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode_base64("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            decode_base64("-_8A").as_deref(),
            Some(&[0xfb, 0xff, 0x00][..])
        );
    }
}
