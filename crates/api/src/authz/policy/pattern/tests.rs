//! The value matchers: Istio's string patterns, IP blocks, path templates, service accounts
//! and ports, and their serialized forms.

use super::*;

#[test]
fn string_patterns() {
    let cases = [
        ("abc", "abc", true),
        ("abc", "abcd", false),
        ("abc*", "abc", true),
        ("abc*", "abcd", true),
        ("abc*", "xabc", false),
        ("*abc", "abc", true),
        ("*abc", "xabc", true),
        ("*abc", "abcx", false),
        ("*", "x", true),
        ("*", "", false),
        ("*abc*", "xabc*", true),
        ("*abc*", "xabcd", false),
    ];
    for (pattern, value, want) in cases {
        let p = StringPattern::parse(pattern);
        assert_eq!(p.matches(value.as_bytes()), want, "{pattern} ~ {value}");
        assert_eq!(p.to_string(), pattern);
    }
    assert!(StringPattern::parse("GET").matches(b"GET"));
    assert!(!StringPattern::parse("GET").matches(b"get"));
}

#[test]
fn case_insensitive_patterns() {
    for (pattern, value, want) in [
        ("Example.COM", "example.com", true),
        ("*.Example.com", "api.EXAMPLE.com", true),
        ("api.*", "API.example.com", true),
        ("api.*", "ap", false),
        ("*.example.com", "com", false),
        ("example.com", "example.com:80", false),
        ("example.com:*", "example.com:80", true),
        ("*", "", false),
    ] {
        assert_eq!(
            StringPattern::parse(pattern).matches_ignore_case(value),
            want,
            "{pattern} ~ {value}"
        );
    }
}

#[test]
fn ip_blocks() {
    let block = IpBlock::parse("10.1.2.3/8").unwrap();
    assert_eq!(block.to_string(), "10.0.0.0/8");
    assert!(block.contains("10.200.0.1".parse().unwrap()));
    assert!(block.contains("::ffff:10.0.0.1".parse().unwrap()));
    assert!(!block.contains("11.0.0.1".parse().unwrap()));
    assert!(!block.contains("::a00:1".parse().unwrap()));
    let single = IpBlock::parse("192.168.1.7").unwrap();
    assert!(single.contains("192.168.1.7".parse().unwrap()));
    assert!(!single.contains("192.168.1.8".parse().unwrap()));
    let all = IpBlock::parse("0.0.0.0/0").unwrap();
    assert!(all.contains("1.2.3.4".parse().unwrap()));
    assert!(!all.contains("2001:db8::1".parse().unwrap()));
    let v6 = IpBlock::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db9::1".parse().unwrap()));
    assert!(IpBlock::parse("::/0")
        .unwrap()
        .contains("::1".parse().unwrap()));
    for bad in [
        "1.2.3.4/33",
        "::/129",
        "1.2.3.4/",
        "1.2.3.4/+8",
        "1.2.3/8",
        "host",
        "",
    ] {
        assert!(IpBlock::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn path_templates() {
    let cases = [
        ("/a/{*}/c", "/a/b/c", true),
        ("/a/{*}/c", "/a//c", false),
        ("/a/{*}/c", "/a/b/d/c", false),
        ("/a/{*}", "/a/b", true),
        ("/a/{*}", "/a/b/", false),
        ("/a/{*}", "/a/b*", false),
        ("/a/{**}", "/a/", true),
        ("/a/{**}", "/a/b/c/d", true),
        ("/a/{**}", "/a", false),
        ("/{**}/path/template", "/x/y/path/template", true),
        ("/{**}/path/template", "/x/path/template", true),
        ("/{**}/path/template", "/path/template", false),
        ("/{**}/path/template", "/x/path/other", false),
        ("/{*}/{**}/end", "/a/b/c/end", true),
        ("/{*}/{**}/end", "/a/end", false),
        ("/a/{*}/c/{**}", "/a/x/c/y", true),
        ("/a/{*}/", "/a/x/", true),
        ("/a/{*}/", "/a/x", false),
    ];
    for (template, path, want) in cases {
        let p = PathPattern::parse(template).unwrap();
        assert!(matches!(p, PathPattern::Template(_)), "{template}");
        assert_eq!(p.matches(path), want, "{template} ~ {path}");
        assert_eq!(p.to_string(), template);
    }
    for bad in [
        "/a{*}",
        "/{**}/{**}",
        "/{x}",
        "/{**}/{*}",
        "a/{*}",
        "/a*/{*}",
        "/*/{*}",
        "/a//{*}",
        "/a b/{*}",
    ] {
        assert!(PathPattern::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(
        PathPattern::parse("/prefix/*").unwrap(),
        PathPattern::Plain(StringPattern::Prefix("/prefix/".into()))
    );
}

#[test]
fn service_accounts_and_ports() {
    let sa = ServiceAccount::parse("sleep", "foo").unwrap();
    assert_eq!((sa.namespace.as_str(), sa.name.as_str()), ("foo", "sleep"));
    let sa = ServiceAccount::parse("bar/sleep", "foo").unwrap();
    assert_eq!(String::from(sa), "bar/sleep");
    for bad in ["", "/x", "x/", "a/b/c"] {
        assert!(ServiceAccount::parse(bad, "foo").is_err(), "{bad}");
    }
    assert_eq!(parse_port("8080"), Ok(8080));
    assert_eq!(parse_port("0"), Ok(0));
    for bad in ["", "-1", "+80", "65536", "http"] {
        assert!(parse_port(bad).is_err(), "{bad}");
    }
}

#[test]
fn serialized_forms_are_checked() {
    let json = serde_json::to_string(&IpBlock::parse("10.0.0.0/8").unwrap()).unwrap();
    assert_eq!(json, "\"10.0.0.0/8\"");
    assert!(serde_json::from_str::<IpBlock>("\"10.0.0.0/40\"").is_err());
    assert!(serde_json::from_str::<PathPattern>("\"/{**}/{**}\"").is_err());
    assert!(serde_json::from_str::<ServiceAccount>("\"noslash\"").is_err());
    let p: StringPattern = serde_json::from_str("\"*.example.com\"").unwrap();
    assert_eq!(p, StringPattern::Suffix(".example.com".into()));
}
