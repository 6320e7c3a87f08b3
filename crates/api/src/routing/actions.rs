//! What the proxy does once a rule is selected, as pure functions: rewrite a path, build a
//! redirect's `Location`, pick a weighted destination, roll a percentage, change headers.
//! Randomness comes in as an argument, so every outcome here can be tested exactly.

use std::borrow::Cow;

use super::model::{
    HeaderOps, PathMatch, PathRewrite, Redirect, RedirectPort, WeightedDestination,
};
use crate::snapshot::{authority_port, strip_port};

/// `path_and_query` with its path changed by `rewrite`; the query is kept. `matched` is the
/// path condition of the condition that selected the rule ([`super::Selected::matched`]),
/// which a prefix replacement replaces:
///
/// * a Gateway API `PathPrefix` (segments): the matched segments, per the spec's
///   `ReplacePrefixMatch` table, trailing slashes included (`/foo/bar` matched by `/foo`
///   with `/xyz` becomes `/xyz/bar`, with `` or `/` becomes `/bar`; `/foo` becomes `/xyz`,
///   or `/` for an empty replacement);
/// * an Istio `prefix`: that many characters, as Envoy's `prefix_rewrite` (so
///   `/foo/bar` matched by `/foo` with `/v2` becomes `/v2/bar`); a replacement of exactly
///   `/` also swallows the slashes after the prefix, as Istio arranges, so `/foo/bar` becomes
///   `/bar` and not `//bar`;
/// * an exact or regex path: the whole path;
/// * no path condition: the leading `/` (Istio matches such a route as prefix `/`).
pub fn rewrite_path(
    path_and_query: &str,
    matched: Option<&PathMatch>,
    rewrite: &PathRewrite,
) -> String {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let new_path: Cow<'_, str> = match rewrite {
        PathRewrite::Full(full) => Cow::Borrowed(full),
        PathRewrite::Regex {
            pattern,
            substitution,
        } => pattern.replace_all(path, substitution),
        PathRewrite::Prefix(replacement) => match matched {
            Some(PathMatch::Segments { value }) => {
                Cow::Owned(replace_segments(path, value, replacement))
            }
            Some(PathMatch::Prefix { value, .. }) => {
                Cow::Owned(replace_chars(path, value.len(), replacement))
            }
            Some(PathMatch::Exact { .. } | PathMatch::Regex { .. }) => Cow::Borrowed(replacement),
            None => Cow::Owned(replace_chars(path, 1, replacement)),
        },
    };
    let mut out = String::with_capacity(new_path.len() + query.len());
    out.push_str(&new_path);
    out.push_str(query);
    out
}

/// Gateway API `ReplacePrefixMatch` after a segment-prefix match of `prefix` (held without
/// its trailing `/`).
fn replace_segments(path: &str, prefix: &str, replacement: &str) -> String {
    // `rest` is empty or starts with `/`: the match was on whole segments.
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    let replacement = replacement.trim_end_matches('/');
    let out = format!("{replacement}{rest}");
    if out.is_empty() {
        "/".to_owned()
    } else {
        out
    }
}

/// Envoy's `prefix_rewrite`: the first `len` bytes replaced.
fn replace_chars(path: &str, len: usize, replacement: &str) -> String {
    let rest = path.get(len..).unwrap_or("");
    if replacement == "/" {
        format!("/{}", rest.trim_start_matches('/'))
    } else {
        format!("{replacement}{rest}")
    }
}

/// What [`redirect_location`] needs of the request.
#[derive(Clone, Copy, Debug)]
pub struct RedirectRequest<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The authority (`Host`) as the request carries it.
    pub authority: &'a str,
    /// The path and query.
    pub path_and_query: &'a str,
    /// The port the request came in on: the Service port it was addressed to.
    pub port: u16,
}

/// The well-known port of a scheme.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The `Location` of a redirect answering `req`; `matched` as for [`rewrite_path`]. A port
/// that is the scheme's default is left out (`http://echo/x`, not `http://echo:80/x`).
pub fn redirect_location(
    redirect: &Redirect,
    matched: Option<&PathMatch>,
    req: &RedirectRequest<'_>,
) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(req.scheme);
    let host = redirect
        .host
        .as_deref()
        .unwrap_or_else(|| strip_port(req.authority));
    let port = match redirect.port {
        RedirectPort::Fixed(port) => Some(port),
        RedirectPort::SchemeDefault => None,
        RedirectPort::RequestPort => Some(req.port),
        RedirectPort::Listener if redirect.scheme.is_some() => None,
        RedirectPort::Listener => Some(req.port),
        RedirectPort::Authority if redirect.host.is_some() => None,
        RedirectPort::Authority => authority_port(req.authority)
            .filter(|&port| scheme == req.scheme || Some(port) != default_port(req.scheme)),
    };
    let port = port.filter(|&p| Some(p) != default_port(scheme));
    let path = match &redirect.path {
        Some(rewrite) => rewrite_path(req.path_and_query, matched, rewrite),
        None => req.path_and_query.to_owned(),
    };
    let host: Cow<'_, str> = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    };
    match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    }
}

/// The destination `random` (uniform over `u64`) picks, each with probability proportional
/// to its weight; `None` only when there is none with a positive weight.
pub fn pick_weighted(
    destinations: &[WeightedDestination],
    random: u64,
) -> Option<&WeightedDestination> {
    let total: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return None;
    }
    // At most 2^32 destinations of weight below 2^32, so the total fits in a u64 and the
    // bias of `%` is below 2^-32 of a share.
    let mut point = random % total;
    for d in destinations {
        let weight = u64::from(d.weight);
        if point < weight {
            return Some(d);
        }
        point -= weight;
    }
    None
}

/// Whether a share of `percent` (0..=100) includes the request `random` (uniform over
/// `u64`) stands for: faults and mirrors.
pub fn chance(percent: f64, random: u64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 || percent.is_nan() {
        return false;
    }
    // The top 53 bits are exact in an f64: a uniform fraction in [0, 1).
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    fraction * 100.0 < percent
}

impl HeaderOps {
    /// Applies the changes to `headers`: remove, then set (replacing every value), then add
    /// (appending a value).
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name.name());
        }
        for pair in &self.set {
            headers.insert(pair.name.name().clone(), pair.value.value().clone());
        }
        for pair in &self.add {
            headers.append(pair.name.name().clone(), pair.value.value().clone());
        }
    }
}

#[cfg(test)]
mod tests;
