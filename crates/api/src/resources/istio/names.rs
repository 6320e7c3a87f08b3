//! Checks of the names Istio resources refer to: hosts (with wildcards), IP addresses and
//! CIDR blocks, `exportTo` namespaces, gateway references and HTTP header names.

use std::collections::HashSet;
use std::net::IpAddr;

use super::{push, IstioError};
use crate::resources::path::FieldPath;
use crate::resources::validate::{is_dns1123_label, is_dns1123_subdomain, Violation};

/// Longest DNS name.
const MAX_HOST_LEN: usize = 255;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// Whether `label` is a DNS label in either case: letters, digits and `-`, not at the ends.
fn is_host_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// Why `host` is not a host name, IP address, `*` or `*.`-prefixed name; `None` when it is.
fn host_problem(host: &str) -> Option<&'static str> {
    if host.is_empty() {
        return Some("it is empty");
    }
    if host.len() > MAX_HOST_LEN {
        return Some("it is longer than 255 characters");
    }
    if host == "*" || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    // A wildcard stands for whole leading labels (`*.example.com`), nowhere else.
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Some("a wildcard is only allowed as the whole first label (\"*.example.com\")");
    }
    if rest.split('.').all(is_host_label) {
        None
    } else {
        Some("each dot-separated label must be 1-63 letters, digits or '-', not starting or ending with '-'")
    }
}

/// Reports a host that is not a DNS name (short or fully qualified), an IP address, `*`,
/// or a `*.`-prefixed wildcard name.
pub(crate) fn check_host(host: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    if let Some(reason) = host_problem(host) {
        push(
            out,
            path.clone(),
            IstioError::Host {
                value: host.to_owned(),
                reason,
            },
        );
    }
}

/// Whether `value` is an IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub(crate) fn is_ip_or_cidr(value: &str) -> bool {
    match value.split_once('/') {
        None => value.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                return false;
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            !bits.is_empty()
                && bits.bytes().all(|b| b.is_ascii_digit())
                && bits.parse::<u32>().is_ok_and(|b| b <= max)
        }
    }
}

/// Reports a value that is neither an IP address nor a CIDR block.
pub(crate) fn check_ip_or_cidr(value: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    if !is_ip_or_cidr(value) {
        push(
            out,
            path.clone(),
            IstioError::IpOrCidr {
                value: value.to_owned(),
            },
        );
    }
}

/// Reports bad `exportTo` entries: each must be `.` (this namespace), `*` (all), `~`
/// (none) or a namespace name, without repeats, and `*` and `~` only on their own.
pub(crate) fn check_export_to(entries: &[String], path: &FieldPath, out: &mut Vec<Violation>) {
    let mut seen = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        let entry = entry.as_str();
        if !matches!(entry, "." | "*" | "~") && !is_dns1123_label(entry) {
            push(
                out,
                at.clone(),
                IstioError::ExportTo {
                    value: entry.to_owned(),
                },
            );
        }
        if matches!(entry, "*" | "~") && entries.len() > 1 {
            push(
                out,
                at.clone(),
                IstioError::ExportToAlone {
                    value: entry.to_owned(),
                },
            );
        }
        if !seen.insert(entry) {
            push(
                out,
                at,
                IstioError::Duplicate {
                    what: "exportTo entry",
                    value: entry.to_owned(),
                },
            );
        }
    }
}

/// Reports a gateway reference that is not `mesh`, `name` or `namespace/name`.
pub(crate) fn check_gateway_name(value: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    let valid = value == "mesh"
        || match value.split_once('/') {
            Some((namespace, name)) => is_dns1123_label(namespace) && is_dns1123_subdomain(name),
            None => is_dns1123_subdomain(value),
        };
    if !valid {
        push(
            out,
            path.clone(),
            IstioError::GatewayName {
                value: value.to_owned(),
            },
        );
    }
}

/// Whether `b` may appear in an HTTP header name (RFC 9110 `tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reports a header name that is empty or has characters HTTP does not allow; a leading
/// `:` (an HTTP/2 pseudo-header such as `:authority`) is allowed.
pub(crate) fn check_header_name(name: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    let token = name.strip_prefix(':').unwrap_or(name);
    if token.is_empty() || !token.bytes().all(is_tchar) {
        push(
            out,
            path.clone(),
            IstioError::HeaderName {
                value: name.to_owned(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "reviews",
            "reviews.prod.svc.cluster.local",
            "*",
            "*.example.com",
            "Example.COM",
            "10.0.0.1",
            "2001:db8::1",
        ] {
            assert_eq!(host_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a",
            "a.*.com",
            "*x",
            "a_b",
            "foo.",
            &"a".repeat(256),
        ] {
            assert!(host_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn ip_blocks() {
        for ok in [
            "1.2.3.4",
            "5.6.0.0/16",
            "001:db8::",
            "2001:db8::/32",
            "0.0.0.0/0",
        ] {
            assert!(is_ip_or_cidr(ok), "{ok}");
        }
        for bad in [
            "1.2.3.4/99",
            "1.2.3.4/",
            "a.b.c.d",
            "1.2.3.4/+8",
            "::/129",
            "",
        ] {
            assert!(!is_ip_or_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn export_to() {
        let p = FieldPath::root().field("exportTo");
        let mut out = Vec::new();
        check_export_to(&["foo".into(), ".".into()], &p, &mut out);
        assert!(out.is_empty());
        check_export_to(
            &["*".into(), "Foo".into(), ".".into(), ".".into()],
            &p,
            &mut out,
        );
        let got: Vec<String> = out.iter().map(|v| v.path.to_string()).collect();
        assert_eq!(got, ["exportTo[0]", "exportTo[1]", "exportTo[3]"]);
    }

    #[test]
    fn gateways_and_headers() {
        let p = FieldPath::root();
        let mut out = Vec::new();
        for ok in [
            "mesh",
            "bookinfo-gateway",
            "istio-system/gw",
            "gw.istio-system.svc",
        ] {
            check_gateway_name(ok, &p, &mut out);
        }
        for ok in ["end-user", "x-b3-traceid", ":authority", "X_Custom"] {
            check_header_name(ok, &p, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        check_gateway_name("a/b/c", &p, &mut out);
        check_header_name("bad header", &p, &mut out);
        check_header_name("", &p, &mut out);
        assert_eq!(out.len(), 3);
    }
}
