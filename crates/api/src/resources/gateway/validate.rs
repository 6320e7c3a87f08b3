//! The rules of the Gateway API CRD schemas, written out in Rust: string lengths and
//! patterns, list sizes, numeric ranges, and the errors they produce. The per-kind modules
//! combine these with the kinds' CEL rules (`x-kubernetes-validations`).
//!
//! The patterns are checked by hand rather than with a regex engine: they are small, fixed,
//! and this way the crate needs no regex dependency on its hot configuration path.

use std::collections::HashMap;

use crate::resources::path::FieldPath;
use crate::resources::validate::{ValidationError, Violation};

/// Longest hostname, group, object name or sectionName (`maxLength: 253`).
pub(crate) const MAX_NAME_LEN: usize = 253;
/// Longest kind or namespace (`maxLength: 63`).
const MAX_KIND_LEN: usize = 63;
/// Longest header name (`maxLength: 256`).
const MAX_HEADER_NAME_LEN: usize = 256;
/// Longest header value (`maxLength: 4096`).
pub(crate) const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Longest path, query parameter value, gRPC service or method (`maxLength: 1024`).
pub(crate) const MAX_PATH_LEN: usize = 1024;
/// Highest port number.
const MAX_PORT: i32 = 65535;

/// Why a Gateway API resource is rejected. Paired with its field in a [`Violation`] through
/// [`ValidationError::Gateway`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A list longer than its `maxItems`.
    #[error("at most {max} {what} allowed, found {count}")]
    TooMany {
        /// What the list holds, plural ("rules").
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length as written.
        count: usize,
    },
    /// A string shorter than its `minLength` (always 1 in these schemas).
    #[error("{what} must not be empty")]
    Empty {
        /// What the string is ("header name").
        what: &'static str,
    },
    /// A string longer than its `maxLength`.
    #[error("{what} is {len} characters long, at most {max} allowed")]
    TooLong {
        /// What the string is.
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length as written, in characters.
        len: usize,
    },
    /// A string that does not match its `pattern`.
    #[error("{value:?} is not a valid {what} ({rule})")]
    Pattern {
        /// What the string is ("hostname").
        what: &'static str,
        /// The value as written.
        value: String,
        /// The pattern, in words.
        rule: &'static str,
    },
    /// A number outside its `minimum`..=`maximum`.
    #[error("{what} {value} must be between {min} and {max}")]
    OutOfRange {
        /// What the number is ("port").
        what: &'static str,
        /// The number as written.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The largest allowed.
        max: i64,
    },
    /// A number below its `minimum` (where there is no maximum).
    #[error("{what} {value} must be at least {min}")]
    TooSmall {
        /// What the number is.
        what: &'static str,
        /// The number as written.
        value: i64,
        /// The smallest allowed.
        min: i64,
    },
    /// A key repeated in a list that Kubernetes treats as a map or a set.
    #[error("duplicate {what} {value:?} (also at index {first})")]
    Duplicate {
        /// What is repeated ("header name").
        what: &'static str,
        /// The repeated value.
        value: String,
        /// Index of the first entry with it.
        first: usize,
    },
    /// A value that must stand alone (`*`) combined with others.
    #[error("{what} cannot contain '*' alongside other values")]
    WildcardNotAlone {
        /// The list ("allowOrigins").
        what: &'static str,
    },
    /// An Exact or PathPrefix path match value that is not a clean absolute path.
    #[error("path {value:?} {reason}")]
    InvalidPath {
        /// The value as written.
        value: String,
        /// The rule it breaks ("must start with '/'").
        reason: &'static str,
    },
    /// A filter whose type names a configuration field that is absent.
    #[error("filter.{field} must be specified for {filter_type} filter.type")]
    FilterFieldMissing {
        /// The field that must be set (`requestHeaderModifier`).
        field: &'static str,
        /// The filter type.
        filter_type: &'static str,
    },
    /// A filter carrying the configuration of another filter type.
    #[error("filter.{field} must not be set when filter.type is not {filter_type}")]
    FilterFieldNotAllowed {
        /// The field that is set.
        field: &'static str,
        /// The type the field belongs to.
        filter_type: &'static str,
    },
    /// A filter type that may appear once per list used twice.
    #[error("{filter_type} filter cannot be repeated (also at index {first})")]
    FilterRepeated {
        /// The filter type.
        filter_type: &'static str,
        /// Index of its first use.
        first: usize,
    },
    /// A RequestRedirect and a URLRewrite in the same filter list.
    #[error("may specify either a RequestRedirect or a URLRewrite filter, but not both")]
    RedirectAndRewrite,
    /// A rule that both redirects and forwards.
    #[error("RequestRedirect filter must not be used together with backendRefs")]
    RedirectWithBackends,
    /// `replacePrefixMatch` without a single PathPrefix match to replace.
    #[error(
        "when using {filter_type} filter with path.replacePrefixMatch, exactly one PathPrefix \
         match must be specified"
    )]
    PrefixReplaceNeedsOnePrefixMatch {
        /// RequestRedirect or URLRewrite.
        filter_type: &'static str,
    },
    /// A path modifier whose type names a field that is absent.
    #[error("{field} must be specified when type is set to '{modifier_type}'")]
    ModifierValueMissing {
        /// `replaceFullPath` or `replacePrefixMatch`.
        field: &'static str,
        /// The modifier type.
        modifier_type: &'static str,
    },
    /// A path modifier field set under the other type.
    #[error("type must be '{modifier_type}' when {field} is set")]
    ModifierTypeMismatch {
        /// The field that is set.
        field: &'static str,
        /// The type that field requires.
        modifier_type: &'static str,
    },
    /// A backend reference to a core Service without a port.
    #[error("port is required for a Service reference")]
    ServicePortRequired,
    /// A mirror filter with both ways of saying how much to mirror.
    #[error("only one of percent or fraction may be specified")]
    PercentAndFraction,
    /// A mirror fraction above 1.
    #[error("numerator {numerator} must be less than or equal to denominator {denominator}")]
    FractionAboveOne {
        /// The numerator.
        numerator: i32,
        /// The denominator, defaulted.
        denominator: i32,
    },
    /// More matches in a route than the CRD allows across all rules.
    #[error(
        "the total number of matches across all rules must be at most {max}, found {total} \
         (16 rules and 64 matches per rule are allowed, but not both at once)"
    )]
    TooManyMatches {
        /// The limit.
        max: usize,
        /// The total as written (after defaults).
        total: usize,
    },
    /// Several references to the same parent, only some with a sectionName.
    #[error(
        "sectionName must be specified when parentRefs includes 2 or more references to the \
         same parent (see index {other})"
    )]
    SectionNameRequired {
        /// Index of another reference to the same parent.
        other: usize,
    },
    /// Several references to the same parent section.
    #[error(
        "sectionName must be unique when parentRefs includes 2 or more references to the same \
         parent (also at index {first})"
    )]
    SectionNameNotUnique {
        /// Index of the first reference to the same parent and section.
        first: usize,
    },
    /// A gRPC method match that matches on nothing.
    #[error("one or both of service or method must be specified")]
    EmptyMethodMatch,
    /// A per-try timeout longer than the whole request's.
    #[error(
        "backendRequest timeout {backend_request} cannot be longer than request timeout {request}"
    )]
    BackendTimeoutTooLong {
        /// The backendRequest timeout as written.
        backend_request: String,
        /// The request timeout as written.
        request: String,
    },
}

impl From<GatewayError> for ValidationError {
    fn from(error: GatewayError) -> Self {
        ValidationError::Gateway(error)
    }
}

/// Adds a violation of `error` at `path`.
pub(crate) fn push(out: &mut Vec<Violation>, path: FieldPath, error: GatewayError) {
    out.push(Violation::new(path, error.into()));
}

/// `maxItems`: reports a list at `path` longer than `max`.
pub(crate) fn check_max_items(
    what: &'static str,
    count: usize,
    max: usize,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if count > max {
        push(
            out,
            path.clone(),
            GatewayError::TooMany { what, max, count },
        );
    }
}

/// `minLength: 1` and `maxLength`: reports an empty or too long string. Returns whether the
/// length was fine, so callers check the pattern only of plausible values (one message per
/// field is enough).
pub(crate) fn check_len(
    what: &'static str,
    value: &str,
    max: usize,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) -> bool {
    // Kubernetes counts maxLength in characters, not bytes.
    let len = value.chars().count();
    if len == 0 {
        push(out, path.clone(), GatewayError::Empty { what });
        false
    } else if len > max {
        push(out, path.clone(), GatewayError::TooLong { what, max, len });
        false
    } else {
        true
    }
}

/// `minimum`/`maximum`: reports `value` outside `min..=max`.
pub(crate) fn check_range(
    what: &'static str,
    value: i32,
    (min, max): (i32, i32),
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if !(min..=max).contains(&value) {
        let error = GatewayError::OutOfRange {
            what,
            value: value.into(),
            min: min.into(),
            max: max.into(),
        };
        push(out, path.clone(), error);
    }
}

/// Checks a port (`1..=65535`).
pub(crate) fn check_port(port: Option<i32>, path: &FieldPath, out: &mut Vec<Violation>) {
    if let Some(port) = port {
        check_range("port", port, (1, MAX_PORT), path, out);
    }
}

/// Checks the length and pattern of a string at `path` against `rule`.
pub(crate) fn check_string(rule: Rule, value: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    if rule.may_be_empty && value.is_empty() {
        return;
    }
    if check_len(rule.what, value, rule.max_len, path, out) && !(rule.valid)(value) {
        let error = GatewayError::Pattern {
            what: rule.what,
            value: value.to_owned(),
            rule: rule.words,
        };
        push(out, path.clone(), error);
    }
}

/// A string field's schema: its name in messages, its `maxLength`, its pattern as a
/// function and in words, and whether `""` is allowed (`^$|...` patterns).
#[derive(Clone, Copy)]
pub(crate) struct Rule {
    /// What the string is, in messages ("hostname").
    pub what: &'static str,
    /// `maxLength`, in characters.
    pub max_len: usize,
    /// The `pattern`.
    pub valid: fn(&str) -> bool,
    /// The `pattern` in words, for messages.
    pub words: &'static str,
    /// Whether `""` is allowed (patterns of the form `^$|...`).
    pub may_be_empty: bool,
}

/// Route hostnames: an optional `*.` then a DNS subdomain.
pub(crate) const HOSTNAME: Rule = Rule {
    what: "hostname",
    max_len: MAX_NAME_LEN,
    valid: is_route_hostname,
    words: "lowercase letters, digits, '-' and '.', optionally starting with '*.'",
    may_be_empty: false,
};
/// Redirect and rewrite hostnames, sectionNames and rule names: a DNS subdomain.
pub(crate) const fn subdomain(what: &'static str) -> Rule {
    Rule {
        what,
        max_len: MAX_NAME_LEN,
        valid: is_subdomain,
        words: "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        may_be_empty: false,
    }
}
/// API groups: empty (the core group) or a DNS subdomain.
pub(crate) const GROUP: Rule = Rule {
    what: "group",
    max_len: MAX_NAME_LEN,
    valid: is_subdomain,
    words: "empty, or lowercase letters, digits, '-' and '.'",
    may_be_empty: true,
};
/// Kinds: a letter, then letters, digits and '-', not ending with '-'.
pub(crate) const KIND: Rule = Rule {
    what: "kind",
    max_len: MAX_KIND_LEN,
    valid: is_kind,
    words: "a letter, then letters, digits and '-', not ending with '-'",
    may_be_empty: false,
};
/// Namespaces: a DNS label.
pub(crate) const NAMESPACE: Rule = Rule {
    what: "namespace",
    max_len: MAX_KIND_LEN,
    valid: is_label,
    words: "lowercase letters, digits and '-', starting and ending with a letter or digit",
    may_be_empty: false,
};
/// Object names: any non-empty string up to 253 characters.
pub(crate) const OBJECT_NAME: Rule = Rule {
    what: "name",
    max_len: MAX_NAME_LEN,
    valid: |_| true,
    words: "",
    may_be_empty: false,
};
/// HTTP header names (an RFC 7230 token).
pub(crate) const HEADER_NAME: Rule = Rule {
    what: "header name",
    max_len: MAX_HEADER_NAME_LEN,
    valid: is_header_name,
    words: "letters, digits and !#$%&'*+-.^_`|~",
    may_be_empty: false,
};

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`: one DNS label, of any length (the CRD patterns bound
/// only the whole string).
fn is_label_any_len(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// A DNS label of at most 63 characters (namespaces).
fn is_label(value: &str) -> bool {
    value.len() <= MAX_KIND_LEN && is_label_any_len(value)
}

/// Dot-separated DNS labels.
fn is_subdomain(value: &str) -> bool {
    value.split('.').all(is_label_any_len)
}

/// A route hostname: [`is_subdomain`], optionally after `*.`.
fn is_route_hostname(value: &str) -> bool {
    is_subdomain(value.strip_prefix("*.").unwrap_or(value))
}

/// A kind: `[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?`.
fn is_kind(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphabetic()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// A header name: one or more token characters.
fn is_header_name(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reports every entry whose key was already used by an earlier entry: Kubernetes rejects
/// duplicates in lists it treats as maps (`x-kubernetes-list-type: map`) or sets.
pub(crate) fn check_unique<'a>(
    what: &'static str,
    keys: impl Iterator<Item = (usize, &'a str)>,
    path_of: impl Fn(usize) -> FieldPath,
    out: &mut Vec<Violation>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, key) in keys {
        match seen.get(key) {
            Some(first) => {
                let error = GatewayError::Duplicate {
                    what,
                    value: key.to_owned(),
                    first: *first,
                };
                push(out, path_of(index), error);
            }
            None => {
                seen.insert(key, index);
            }
        }
    }
}

/// The first rule an Exact or PathPrefix path match value breaks, if any (the CRD's CEL
/// rules for `matches[].path`).
pub(crate) fn path_problem(value: &str) -> Option<&'static str> {
    if !value.starts_with('/') {
        return Some("must be an absolute path starting with '/'");
    }
    let forbidden = [
        ("//", "must not contain '//'"),
        ("/./", "must not contain '/./'"),
        ("/../", "must not contain '/../'"),
        ("%2f", "must not contain '%2f'"),
        ("%2F", "must not contain '%2F'"),
        ("#", "must not contain '#'"),
    ];
    if let Some((_, reason)) = forbidden.iter().find(|(s, _)| value.contains(s)) {
        return Some(reason);
    }
    if value.ends_with("/..") {
        return Some("must not end with '/..'");
    }
    if value.ends_with("/.") {
        return Some("must not end with '/.'");
    }
    if !is_path_chars(value) {
        return Some(
            "must only contain letters, digits, -/._~!$&'()*+,;=:@ and %-escapes of two hex digits",
        );
    }
    None
}

/// `^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`
fn is_path_chars(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    !bytes.is_empty()
}

/// A Gateway API duration (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`, e.g. `1h30m`) in milliseconds,
/// or `None` when it does not match the pattern.
pub(crate) fn parse_duration_ms(value: &str) -> Option<u64> {
    let mut rest = value;
    let mut total: u64 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        // At most five digits, so this cannot overflow; the `?` only guards the impossible.
        let number: u64 = number.parse().ok()?;
        let (unit_ms, after) = if let Some(after) = after.strip_prefix("ms") {
            (1, after)
        } else if let Some(after) = after.strip_prefix('h') {
            (3_600_000, after)
        } else if let Some(after) = after.strip_prefix('m') {
            (60_000, after)
        } else if let Some(after) = after.strip_prefix('s') {
            (1_000, after)
        } else {
            return None;
        };
        total += number * unit_ms;
        parts += 1;
        rest = after;
    }
    (1..=4).contains(&parts).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_and_groups() {
        for ok in ["example.com", "*.example.com", "a", "a-1.b"] {
            assert!(is_route_hostname(ok), "{ok}");
        }
        for bad in ["", "*", "*.", "Example.com", "a..b", "-a", "a.*.b", "a_b"] {
            assert!(!is_route_hostname(bad), "{bad}");
        }
        assert!(is_subdomain("gateway.networking.k8s.io"));
        assert!(!is_subdomain("*.example.com"));
    }

    #[test]
    fn kinds_and_header_names() {
        assert!(is_kind("Service"));
        assert!(is_kind("Backend-2"));
        assert!(!is_kind("2Service"));
        assert!(!is_kind("Service-"));
        assert!(is_header_name("X-Header_1!"));
        assert!(!is_header_name("X Header"));
        assert!(!is_header_name("X:Header"));
        assert!(!is_header_name(""));
    }

    #[test]
    fn paths() {
        for ok in ["/", "/a/b", "/a%20b", "/~user/a;b=c", "/a.b"] {
            assert_eq!(path_problem(ok), None, "{ok}");
        }
        for bad in [
            "a", "//", "/a/./b", "/a/../b", "/a%2fb", "/a#b", "/a/..", "/a/.", "/a b", "/%zz",
            "/%4",
        ] {
            assert!(path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("0s"), Some(0));
        assert_eq!(parse_duration_ms("1s1s1s1s"), Some(4_000));
        for bad in ["", "1", "1d", "123456s", "1s1s1s1s1s", "s", "1.5s", "-1s"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn unique_keys_point_at_the_repeat() {
        let mut out = Vec::new();
        check_unique(
            "header name",
            ["a", "b", "a"].into_iter().enumerate(),
            |i| FieldPath::root().field("headers").index(i).field("name"),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path.to_string(), "headers[2].name");
    }
}
