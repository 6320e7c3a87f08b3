//! Header names and values as the route table carries them: parsed into `http`'s types once,
//! when a rule is compiled or a snapshot is decoded, so that matching looks a header up
//! without parsing its name and applying a header change cannot fail on a request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a header name or value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not an HTTP token.
    #[error("{0:?} is not a valid HTTP header name")]
    Name(String),
    /// Contains bytes a header value may not (control characters, newlines).
    #[error("{0:?} is not a valid HTTP header value")]
    Value(String),
}

// === HeaderKey ===

/// A header name, compared without case: it is stored in lower case, as HTTP/2 sends it and
/// as `http::HeaderMap` looks names up.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderKey(http::HeaderName);

impl HeaderKey {
    /// Parses `name` (any case).
    ///
    /// # Errors
    ///
    /// [`HeaderError::Name`] when it is not an HTTP token.
    pub fn new(name: &str) -> Result<Self, HeaderError> {
        // `from_bytes` lower-cases; the explicit lower-casing keeps that true whatever the
        // crate does with mixed case in the future.
        http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map(Self)
            .map_err(|_| HeaderError::Name(name.to_owned()))
    }

    /// The name, for `http::HeaderMap` lookups.
    pub fn name(&self) -> &http::HeaderName {
        &self.0
    }

    /// The name in lower case.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<String> for HeaderKey {
    type Error = HeaderError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(&name)
    }
}

impl From<HeaderKey> for String {
    fn from(key: HeaderKey) -> Self {
        key.0.as_str().to_owned()
    }
}

impl fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

// === HeaderText ===

/// A header value a filter sets or adds: text that HTTP allows in a value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HeaderText(http::HeaderValue);

impl HeaderText {
    /// Parses `value`.
    ///
    /// # Errors
    ///
    /// [`HeaderError::Value`] when it has bytes a header value may not.
    pub fn new(value: &str) -> Result<Self, HeaderError> {
        http::HeaderValue::from_str(value)
            .map(Self)
            .map_err(|_| HeaderError::Value(value.to_owned()))
    }

    /// The value, ready to insert into an `http::HeaderMap`.
    pub fn value(&self) -> &http::HeaderValue {
        &self.0
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // Built from a `&str`, so always valid UTF-8; the fallback cannot happen.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

impl TryFrom<String> for HeaderText {
    type Error = HeaderError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<HeaderText> for String {
    fn from(text: HeaderText) -> Self {
        text.as_str().to_owned()
    }
}

impl fmt::Debug for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_and_checked() {
        let key = HeaderKey::new("X-Header-Set").unwrap();
        assert_eq!(key.as_str(), "x-header-set");
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""x-header-set""#);
        assert!(HeaderKey::new("bad name").is_err());
        assert!(serde_json::from_str::<HeaderKey>(r#""a:b""#).is_err());
    }

    #[test]
    fn values_refuse_newlines() {
        assert_eq!(HeaderText::new("a, b").unwrap().as_str(), "a, b");
        assert!(HeaderText::new("a\r\nx-injected: 1").is_err());
        assert!(serde_json::from_str::<HeaderText>(r#""a\nb""#).is_err());
    }
}
