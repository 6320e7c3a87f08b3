//! Regular expressions as the route table carries them: compiled once, when a rule is
//! compiled or a snapshot is decoded, and serialized as the expression the user wrote, so a
//! snapshot that does not compile is refused before it reaches a request.
//!
//! Istio and Envoy use RE2, whose syntax the `regex` crate shares (no backreferences, no
//! look-around), and match a whole value ([`Pattern`]); a path rewrite replaces every match
//! anywhere in the path ([`RewritePattern`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest compiled program a route may carry. The `regex` crate's default (10 MiB) is
/// meant for one-off use; a table holds many expressions, evaluated by every proxy on every
/// request, so a pathological one is refused early instead. 1 MiB takes expressions far
/// beyond anything routes use (`[a-z]{1,1000}` compiles to about 200 KiB).
const SIZE_LIMIT: usize = 1 << 20;

/// Why an expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression {pattern:?}: {reason}")]
pub struct PatternError {
    /// The expression as written.
    pub pattern: String,
    /// The compiler's complaint, on one line.
    pub reason: String,
}

/// Compiles `source` (wrapped as `wrapped`) within [`SIZE_LIMIT`].
fn compile(source: &str, wrapped: &str) -> Result<regex::Regex, PatternError> {
    regex::RegexBuilder::new(wrapped)
        .size_limit(SIZE_LIMIT)
        .build()
        .map_err(|error| PatternError {
            pattern: source.to_owned(),
            reason: one_line(&error),
        })
}

/// The last line of a syntax error says what is wrong; the lines above repeat the pattern
/// with a caret, which a log line or a NACK cannot show well.
fn one_line(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .map_or_else(|| text.clone(), str::to_owned),
        other => other.to_string(),
    }
}

// === Pattern ===

/// A regular expression that must match a whole value (Envoy's `safe_regex`: `v[0-9]+`
/// matches `v12`, not `xv12`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`, anchored at both ends.
    ///
    /// # Errors
    ///
    /// [`PatternError`] when it is not a valid expression or compiles too large.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let regex = compile(source, &format!("^(?:{source})$"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches. Does not allocate.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl TryFrom<String> for Pattern {
    type Error = PatternError;

    fn try_from(source: String) -> Result<Self, Self::Error> {
        Self::new(&source)
    }
}

impl From<Pattern> for String {
    fn from(pattern: Pattern) -> Self {
        pattern.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

// === RewritePattern ===

/// A regular expression whose every match in a value is replaced (Envoy's
/// `regex_rewrite`, Istio's `uriRegexRewrite`): not anchored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RewritePattern {
    source: String,
    regex: regex::Regex,
}

impl RewritePattern {
    /// Compiles `source` as written.
    ///
    /// # Errors
    ///
    /// [`PatternError`] when it is not a valid expression or compiles too large.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let regex = compile(source, source)?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// `value` with every match replaced by `substitution`, whose `$1`/`${name}` refer to
    /// capture groups.
    pub fn replace_all<'a>(&self, value: &'a str, substitution: &str) -> std::borrow::Cow<'a, str> {
        self.regex.replace_all(value, substitution)
    }
}

impl TryFrom<String> for RewritePattern {
    type Error = PatternError;

    fn try_from(source: String) -> Result<Self, Self::Error> {
        Self::new(&source)
    }
}

impl From<RewritePattern> for String {
    fn from(pattern: RewritePattern) -> Self {
        pattern.source
    }
}

impl PartialEq for RewritePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for RewritePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RewritePattern({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_values() {
        let p = Pattern::new("v[0-9]+").unwrap();
        assert!(p.is_match("v12"));
        assert!(!p.is_match("xv12"));
        assert!(!p.is_match("v12x"));
        // Alternation binds inside the anchors.
        let p = Pattern::new("a|b").unwrap();
        assert!(p.is_match("b"));
        assert!(!p.is_match("ab"));
    }

    #[test]
    fn serializes_as_written_and_refuses_bad_expressions() {
        let p = Pattern::new("/api/(v1|v2)/.*").unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#""/api/(v1|v2)/.*""#);
        let back: Pattern = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let err = serde_json::from_str::<Pattern>(r#""(unclosed""#).unwrap_err();
        assert!(err.to_string().contains("(unclosed"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        let huge = Pattern::new("[a-z]{1000}{1000}").unwrap_err();
        assert!(huge.reason.contains("size limit"), "{huge}");
    }

    #[test]
    fn rewrite_patterns_replace_every_match() {
        let p = RewritePattern::new("^/service/([^/]+)(/.*)$").unwrap();
        assert_eq!(
            p.replace_all("/service/foo/v1/api", "$2/instance/$1"),
            "/v1/api/instance/foo"
        );
        let p = RewritePattern::new("o").unwrap();
        assert_eq!(p.replace_all("/foo/bo", "0"), "/f00/b0");
    }
}
