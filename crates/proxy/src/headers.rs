//! Header handling shared by both directions: hop-by-hop headers, the headers Trellis adds
//! between proxies, and `x-forwarded-client-cert`.

use http::header::{HeaderMap, HeaderName, CONNECTION};

/// The workload port the request is for, set by the client proxy and removed by the server
/// proxy before the request reaches the app.
pub const TARGET_PORT: HeaderName = HeaderName::from_static("x-trellis-target-port");

/// Set by the client proxy when the app spoke HTTP/2 (h2c, gRPC), so the server proxy
/// speaks HTTP/2 to its app too; removed before the app sees the request.
pub const APP_PROTOCOL: HeaderName = HeaderName::from_static("x-trellis-app-protocol");

/// The calling workload's name, set by the client proxy for the server proxy's telemetry
/// (Istio exchanges the same through peer metadata). Informational: the caller's identity is
/// always the TLS session's, and this header only names which workload of that identity
/// called.
pub const SOURCE_WORKLOAD: HeaderName = HeaderName::from_static("x-trellis-source-workload");

/// The service the caller addressed (its host), set by the client proxy, so the server
/// proxy's metrics name the same `destination_service` when a workload backs several.
pub const DESTINATION_SERVICE: HeaderName =
    HeaderName::from_static("x-trellis-destination-service");

/// Envoy's header naming the verified client identity.
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1), plus
/// the ones HTTP/2 forbids.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including any the `Connection` header lists, except
/// `te: trailers`: it tells the next hop the client can take trailers, HTTP/2 allows exactly
/// that value (RFC 9113 §8.2.2), and gRPC servers may refuse calls without it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// Removes every header only proxies may set, so an app cannot forge one.
pub fn strip_trellis_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-trellis-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// The XFCC value the server-side proxy sets: who it is and whom the TLS session verified.
pub fn xfcc_value(own: &str, peer: &str) -> String {
    format!("By={own};URI={peer}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-custom"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn keeps_te_trailers_only() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn strips_trellis_headers() {
        let mut h = HeaderMap::new();
        h.insert(TARGET_PORT, HeaderValue::from_static("1"));
        h.insert("x-trellis-anything", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_trellis_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(
            xfcc_value("spiffe://a/ns/x/sa/y", "spiffe://a/ns/x/sa/z"),
            "By=spiffe://a/ns/x/sa/y;URI=spiffe://a/ns/x/sa/z"
        );
    }
}
