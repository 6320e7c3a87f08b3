//! Path normalization: the tricks a DENY policy must not miss, Istio's own normalization
//! test table for each mode, every single escape, rejected targets, and idempotence.

use super::*;

use PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes};

fn path(target: &str, mode: PathNormalization) -> String {
    match normalize_with(target, mode) {
        Ok(normalized) => normalized.path().to_owned(),
        Err(e) => panic!("{target:?} ({mode:?}) rejected: {e}"),
    }
}

fn check(mode: PathNormalization, cases: &[(&str, &str)]) {
    for (input, want) in cases {
        assert_eq!(path(input, mode), *want, "{input:?} with {mode:?}");
    }
}

#[test]
fn tricks_against_admin() {
    check(
        MergeSlashes,
        &[
            ("/admin", "/admin"),
            ("/a/../admin", "/admin"),
            ("//admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%41DMIN", "/ADMIN"),
            ("/admin/.", "/admin/"),
            ("/./admin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/%2E%2e/admin", "/admin"),
            ("/.%2e/admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/x/y/../../../admin", "/admin"),
            ("/admin/x/..", "/admin/"),
            ("/admin/x/../", "/admin/"),
            ("/a\\..\\admin", "/admin"),
            ("/admin%2Fx", "/admin%2Fx"),
            ("/admin%2fx", "/admin%2fx"),
            ("/admin%5Cx", "/admin%5Cx"),
            // Not dot segments: kept.
            ("/.../admin", "/.../admin"),
            ("/..;/admin", "/..;/admin"),
            ("/..%2f/admin", "/..%2f/admin"),
        ],
    );
}

#[test]
fn query_is_kept_and_not_normalized() {
    let n = normalize("/admin?x=/..").unwrap();
    assert_eq!(n.path(), "/admin");
    assert_eq!(n.query(), Some("x=/.."));
    assert_eq!(n.as_str(), "/admin?x=/..");

    let n = normalize("/a/../b//c?q=%2e%2e//x&y=%zz").unwrap();
    assert_eq!(n.path(), "/b/c");
    assert_eq!(n.query(), Some("q=%2e%2e//x&y=%zz"));
    assert_eq!(n.as_str(), "/b/c?q=%2e%2e//x&y=%zz");

    let n = normalize("/a?").unwrap();
    assert_eq!((n.path(), n.query(), n.as_str()), ("/a", Some(""), "/a?"));
    let n = normalize("/a").unwrap();
    assert_eq!((n.query(), n.as_str()), (None, "/a"));
}

#[test]
fn fragments_are_dropped() {
    let n = normalize("/app#foo").unwrap();
    assert_eq!((n.path(), n.query()), ("/app", None));
    let n = normalize("/app?q=1#foo?bar").unwrap();
    assert_eq!((n.path(), n.query()), ("/app", Some("q=1")));
    let n = normalize("/app#foo?bar").unwrap();
    assert_eq!((n.path(), n.query(), n.as_str()), ("/app", None, "/app"));
}

// The expectations of Istio's own normalization integration test
// (tests/integration/security/normalization_test.go), per mode.
const ISTIO_COMMON: &[(&str, &str)] = &[
    ("/", "/"),
    ("/app/", "/app/"),
    ("/app/../admin", "/admin"),
    ("/app", "/app"),
    ("/app/%2E./admin", "/admin"),
    (r"/app\admin", "/app/admin"),
    ("/app//../admin", "/app/admin"),
    ("/app//../../admin", "/admin"),
];

#[test]
fn istio_base() {
    check(Base, ISTIO_COMMON);
    check(
        Base,
        &[
            ("/app//", "/app//"),
            // Dot segments up to the root leave the root alone, not an empty segment.
            ("/app/..", "/"),
            ("/..", "/"),
            ("/app/x/..", "/app/"),
            ("/app/%2f", "/app/%2f"),
            ("/app%2f/", "/app%2f/"),
            ("/xyz%30..//abc", "/xyz0..//abc"),
            (r"/app/\/\/\admin", "/app//////admin"),
            ("/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc"),
            (
                r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
            ),
        ],
    );
}

#[test]
fn istio_merge_slashes() {
    check(MergeSlashes, ISTIO_COMMON);
    check(
        MergeSlashes,
        &[
            ("/app//", "/app/"),
            ("/app/%2f", "/app/%2f"),
            ("/app%2f/", "/app%2f/"),
            ("/xyz%30..//abc", "/xyz0../abc"),
            (r"/app/\/\/\admin", "/app/admin"),
            ("/%2Fapp%5cadmin%5Cabc", "/%2Fapp%5cadmin%5Cabc"),
            (
                r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
            ),
        ],
    );
}

#[test]
fn istio_decode_and_merge_slashes() {
    check(DecodeAndMergeSlashes, ISTIO_COMMON);
    check(
        DecodeAndMergeSlashes,
        &[
            ("/app//", "/app/"),
            ("/app/%2f", "/app/"),
            ("/app%2f/", "/app/"),
            ("/xyz%30..//abc", "/xyz0../abc"),
            (r"/app/\/\/\admin", "/app/admin"),
            ("/%2Fapp%5cadmin%5Cabc", "/app/admin/abc"),
            (r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc", "/app/admin/abc"),
            ("/%c0%2e%c0%2e/admin", "/%c0.%c0./admin"),
            ("/%c0%2fadmin", "/%c0/admin"),
            ("/admin%2Fx", "/admin/x"),
            ("/..%2f/admin", "/admin"),
            ("/admin/x%2f..%2f..%2fsecret", "/secret"),
        ],
    );
}

#[test]
fn istio_not_normalized() {
    // Things that look like tricks but are not, in the strictest mode.
    for input in [
        "/0x2e0x2e/admin",
        "/0x2e0x2e0x2fadmin",
        "/0x2e0x2e0x5cadmin",
        "/0x2f0x2fadmin",
        "/0x5c0x5cadmin",
        "/%25c0%25ae%25c1%259cadmin",
        "/%25c0%25ae%25c0%25ae/admin",
        "/%25c0%25afadmin",
        "/%25c1%259cadmin",
        "/%252e%252e/admin",
        "/%252e%252e%252fadmin",
        "/%c1%9cadmin",
        "/%c0%ae%c0%ae/admin",
        "/%c0%afadmin",
        "/.../admin",
        "/..../admin",
        "/..;/admin",
        "/;/admin",
        "/admin;a=b",
        "/admin;a=b/xyz",
        "/admin,a=b/xyz",
        "/Admin",
        "/ADMIN",
    ] {
        assert_eq!(path(input, DecodeAndMergeSlashes), input);
    }
}

#[test]
fn istio_every_single_escape() {
    // %01 to %ff after /admin: unreserved characters, '/' and '\' decoded (the last two only
    // in DecodeAndMergeSlashes), everything else kept as written.
    for byte in 1..=0xffu8 {
        let input = format!("/admin%{byte:02x}");
        let decoded = if byte == b'/' || byte == b'\\' {
            "/admin/".to_owned()
        } else if is_unreserved(byte) {
            format!("/admin{}", char::from(byte))
        } else {
            input.clone()
        };
        assert_eq!(path(&input, DecodeAndMergeSlashes), decoded, "{input}");
        let kept_slashes = if byte == b'/' || byte == b'\\' {
            input.clone()
        } else {
            decoded
        };
        assert_eq!(path(&input, MergeSlashes), kept_slashes, "{input}");
    }
}

#[test]
fn non_ascii_is_percent_encoded() {
    assert_eq!(path("/caf\u{e9}", MergeSlashes), "/caf%C3%A9");
}

#[test]
fn rejected_targets() {
    for (input, want) in [
        ("", PathError::NotOriginForm),
        ("admin", PathError::NotOriginForm),
        ("*", PathError::NotOriginForm),
        ("..", PathError::NotOriginForm),
        ("\\admin", PathError::NotOriginForm),
        ("?a=/b", PathError::NotOriginForm),
        ("http://host/admin", PathError::NotOriginForm),
        ("/admin%00", PathError::EncodedNul { at: 6 }),
        ("/xyz/.%00../abc", PathError::EncodedNul { at: 6 }),
        (
            "/xyz/AAAAA%%0000/abc",
            PathError::BadPercentEncoding { at: 10 },
        ),
        ("/a%zz", PathError::BadPercentEncoding { at: 2 }),
        ("/a%4", PathError::BadPercentEncoding { at: 2 }),
        ("/a%", PathError::BadPercentEncoding { at: 2 }),
        ("/a%g1", PathError::BadPercentEncoding { at: 2 }),
        ("/a b", PathError::InvalidCharacter { byte: b' ', at: 2 }),
        ("/a\tb", PathError::InvalidCharacter { byte: b'\t', at: 2 }),
        (
            "/a\u{7f}",
            PathError::InvalidCharacter { byte: 0x7f, at: 2 },
        ),
        ("/a\0", PathError::InvalidCharacter { byte: 0, at: 2 }),
    ] {
        for mode in [Base, MergeSlashes, DecodeAndMergeSlashes] {
            assert_eq!(normalize_with(input, mode), Err(want.clone()), "{input:?}");
        }
    }
}

#[test]
fn normalizing_twice_changes_nothing() {
    // Idempotence: the proxy may normalize a path that an earlier hop already normalized.
    for input in [
        "/a/./b/../c//d/",
        "/%2e%2e/%61dmin%2F%5c",
        "/x%252e/y",
        r"/a\b\..\c",
        "/caf\u{e9}/%C3",
    ] {
        for mode in [Base, MergeSlashes, DecodeAndMergeSlashes] {
            let once = path(input, mode);
            assert_eq!(path(&once, mode), once, "{input:?} with {mode:?}");
        }
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever comes in, what comes out starts with '/', has no dot segments and, when
        /// slashes are merged, no empty segments; and it is stable under a second pass.
        #[test]
        fn output_is_canonical(target in "/[a-z./\\\\%2eEfF5cC]{0,24}") {
            for mode in [Base, MergeSlashes, DecodeAndMergeSlashes] {
                let Ok(n) = normalize_with(&target, mode) else { continue };
                let p = n.path();
                prop_assert!(p.starts_with('/'));
                for segment in p[1..].split('/') {
                    prop_assert!(segment != "." && segment != "..", "{target} -> {p}");
                }
                if mode != Base {
                    prop_assert!(!p.contains("//"), "{target} -> {p}");
                }
                prop_assert!(!p.contains('\\'));
                let again = normalize_with(p, mode).map(|n| n.path().to_owned());
                prop_assert_eq!(again, Ok(p.to_owned()));
            }
        }
    }
}
