//! Istio's `StringMatch`: a string compared exactly, by prefix, or by an RE2 regular
//! expression, written as a mapping with exactly one of `exact`, `prefix` or `regex`
//! (`{prefix: /api}`). Header and query-parameter maps also accept an empty mapping, which
//! Istio reads as "present, with any value"; [`HeaderValueMatch`] models that.

use std::fmt;

use serde::de::Deserializer;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::IstioError;
use crate::resources::path::FieldPath;
use crate::resources::validate::Violation;

/// How a string is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Equal to this value.
    Exact(String),
    /// Starting with this value.
    Prefix(String),
    /// Matching this RE2 regular expression, anchored at both ends.
    Regex(String),
}

/// The mapping as written, before checking that exactly one matcher is set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStringMatch {
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    regex: Option<String>,
}

impl RawStringMatch {
    /// The single matcher set, `Ok(None)` for an empty mapping, or the names of the
    /// matchers when several are set.
    fn into_match(self) -> Result<Option<StringMatch>, String> {
        let set: Vec<&str> = [
            ("exact", self.exact.is_some()),
            ("prefix", self.prefix.is_some()),
            ("regex", self.regex.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if set.len() > 1 {
            return Err(set.join(" and "));
        }
        Ok(match (self.exact, self.prefix, self.regex) {
            (Some(v), _, _) => Some(StringMatch::Exact(v)),
            (_, Some(v), _) => Some(StringMatch::Prefix(v)),
            (_, _, Some(v)) => Some(StringMatch::Regex(v)),
            (None, None, None) => None,
        })
    }
}

/// Message for a mapping that sets several matchers.
fn several(found: &str) -> String {
    format!("exactly one of exact, prefix or regex must be set, found {found}")
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match RawStringMatch::deserialize(deserializer)?.into_match() {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(serde::de::Error::custom(
                "exactly one of exact, prefix or regex must be set, found none",
            )),
            Err(found) => Err(serde::de::Error::custom(several(&found))),
        }
    }
}

impl StringMatch {
    /// The value to compare against.
    pub fn value(&self) -> &str {
        match self {
            StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Regex(v) => v,
        }
    }

    /// Reports a regular expression that does not compile, at its `regex` field.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let StringMatch::Regex(pattern) = self {
            check_regex(pattern, &path.field("regex"), out);
        }
    }
}

/// Reports `pattern` at `path` when it does not compile. Istio compiles these with RE2,
/// whose syntax the `regex` crate shares (no backreferences or look-around).
pub(crate) fn check_regex(pattern: &str, path: &FieldPath, out: &mut Vec<Violation>) {
    if let Err(error) = regex::Regex::new(pattern) {
        // The syntax error's last line says what is wrong; the lines above it repeat the
        // pattern with a caret, which a one-line diagnostic cannot show well.
        let reason = match error {
            regex::Error::Syntax(text) => text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .map_or_else(|| text.clone(), str::to_owned),
            other => other.to_string(),
        };
        super::push(
            out,
            path.clone(),
            IstioError::InvalidRegex {
                value: pattern.to_owned(),
                reason,
            },
        );
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(v) => write!(f, "exact {v:?}"),
            StringMatch::Prefix(v) => write!(f, "prefix {v:?}"),
            StringMatch::Regex(v) => write!(f, "regex {v:?}"),
        }
    }
}

/// The value side of a header, `withoutHeaders` or query-parameter match: a
/// [`StringMatch`], or `{}` for "present with any value".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValueMatch {
    /// The header (or parameter) is present, whatever its value (`{}`).
    Present,
    /// The value matches.
    Value(StringMatch),
}

impl HeaderValueMatch {
    /// Checks the regular expression, if any.
    pub(crate) fn validate(&self, path: &FieldPath, out: &mut Vec<Violation>) {
        if let HeaderValueMatch::Value(m) = self {
            m.validate(path, out);
        }
    }
}

impl Serialize for HeaderValueMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            HeaderValueMatch::Present => serializer.serialize_map(Some(0))?.end(),
            HeaderValueMatch::Value(m) => m.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for HeaderValueMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match RawStringMatch::deserialize(deserializer)?.into_match() {
            Ok(Some(m)) => Ok(HeaderValueMatch::Value(m)),
            Ok(None) => Ok(HeaderValueMatch::Present),
            Err(found) => Err(serde::de::Error::custom(several(&found))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exactly_one_matcher() {
        let m: StringMatch = serde_json::from_value(json!({"prefix": "/api"})).unwrap();
        assert_eq!(m, StringMatch::Prefix("/api".into()));
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"prefix": "/api"}));
        let none = serde_json::from_value::<StringMatch>(json!({})).unwrap_err();
        assert!(none.to_string().ends_with("found none"), "{none}");
        let two =
            serde_json::from_value::<StringMatch>(json!({"exact": "a", "regex": "b"})).unwrap_err();
        assert!(two.to_string().ends_with("found exact and regex"), "{two}");
        let typo = serde_json::from_value::<StringMatch>(json!({"prefx": "/"})).unwrap_err();
        assert!(typo.to_string().contains("unknown field `prefx`"), "{typo}");
    }

    #[test]
    fn header_values_may_be_presence_matches() {
        let m: HeaderValueMatch = serde_json::from_value(json!({})).unwrap();
        assert_eq!(m, HeaderValueMatch::Present);
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({}));
        let m: HeaderValueMatch = serde_json::from_value(json!({"exact": "jason"})).unwrap();
        assert_eq!(
            m,
            HeaderValueMatch::Value(StringMatch::Exact("jason".into()))
        );
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"exact": "jason"}));
    }

    #[test]
    fn regexes_must_compile() {
        let path = FieldPath::root().field("uri");
        let mut out = Vec::new();
        StringMatch::Regex("^/api/(v1|v2)$".into()).validate(&path, &mut out);
        assert!(out.is_empty());
        StringMatch::Regex("(unclosed".into()).validate(&path, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path.to_string(), "uri.regex");
        assert!(
            out[0].error.to_string().contains("(unclosed"),
            "{}",
            out[0].error
        );
    }
}
