//! Helpers of the evaluation: reading SPIFFE IDs and joining repeated headers. The decision
//! table itself is in `crates/api/tests/authz.rs`.

use super::*;

#[test]
fn spiffe_fields() {
    let id = "cluster.local/ns/default/sa/sleep";
    assert_eq!(spiffe_field(id, "ns"), Some("default"));
    assert_eq!(spiffe_field(id, "sa"), Some("sleep"));
    assert_eq!(spiffe_field(id, "cluster.local"), None);
    // The trust domain is never read as a key, and a key needs a value after it.
    assert_eq!(spiffe_field("ns/x/sa", "ns"), None);
    assert_eq!(spiffe_field("td/ns/x/sa", "sa"), None);
    assert_eq!(spiffe_field("td", "ns"), None);
}

#[test]
fn repeated_headers_are_joined() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(joined_header(&headers, "x-a"), None);
    headers.append("x-a", http::HeaderValue::from_static("1"));
    assert_eq!(joined_header(&headers, "X-A").as_deref(), Some(&b"1"[..]));
    headers.append("x-a", http::HeaderValue::from_static("2"));
    headers.append("x-a", http::HeaderValue::from_static("3"));
    assert_eq!(
        joined_header(&headers, "x-a").as_deref(),
        Some(&b"1,2,3"[..])
    );
    assert_eq!(joined_header(&headers, "bad name"), None);
}
