//! The value matchers a compiled policy is made of: Istio's string patterns (`abc`, `abc*`,
//! `*abc`, `*`), IP blocks, path patterns with `{*}`/`{**}` templates, and service
//! accounts. Each serializes as the string a user would write, and is checked again when
//! deserialized, so a snapshot cannot smuggle in a matcher the compiler would have refused.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Why a pattern could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Neither an IP address nor a CIDR block with a valid prefix length.
    #[error("{value:?} is not an IP address or CIDR block")]
    IpBlock {
        /// The value as written.
        value: String,
    },
    /// A path template Istio would refuse: `{*}` or `{**}` other than as whole segments,
    /// more than one `{**}`, a `{*}` after the `{**}`, or a literal segment that is empty or
    /// has characters other than RFC 3986 path characters (`*` included).
    #[error(
        "{value:?} is not a valid path template: {{*}} and {{**}} must be whole segments, \
         {{**}} may appear once with only literal segments after it, and literal segments \
         must be non-empty path characters"
    )]
    PathTemplate {
        /// The path as written.
        value: String,
    },
    /// A service account that is not `name` or `namespace/name`.
    #[error("{value:?} is not a service account (name or namespace/name)")]
    ServiceAccount {
        /// The value as written.
        value: String,
    },
    /// A port that is not a number between 0 and 65535.
    #[error("{value:?} is not a port number")]
    Port {
        /// The value as written.
        value: String,
    },
}

// === StringPattern ===

/// One of Istio's string matches, which every string field of a rule supports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StringPattern {
    /// `*`: the value is present and not empty.
    Present,
    /// `abc`: exactly `abc`.
    Exact(String),
    /// `abc*`: starts with `abc` (`abc` itself included).
    Prefix(String),
    /// `*abc`: ends with `abc` (`abc` itself included).
    Suffix(String),
}

impl StringPattern {
    /// Parses `value` the way Istio does: `*` alone, then a leading `*`, then a trailing one
    /// (so `*abc*` is the suffix `abc*`).
    pub fn parse(value: &str) -> Self {
        if value == "*" {
            StringPattern::Present
        } else if let Some(suffix) = value.strip_prefix('*') {
            StringPattern::Suffix(suffix.to_owned())
        } else if let Some(prefix) = value.strip_suffix('*') {
            StringPattern::Prefix(prefix.to_owned())
        } else {
            StringPattern::Exact(value.to_owned())
        }
    }

    /// Whether `value` matches, comparing bytes exactly.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            StringPattern::Present => !value.is_empty(),
            StringPattern::Exact(s) => value == s.as_bytes(),
            StringPattern::Prefix(s) => value.starts_with(s.as_bytes()),
            StringPattern::Suffix(s) => value.ends_with(s.as_bytes()),
        }
    }

    /// Whether `value` matches, ignoring ASCII case (hosts).
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        let (value, fixed) = (value.as_bytes(), self.fixed().as_bytes());
        match self {
            StringPattern::Present => !value.is_empty(),
            StringPattern::Exact(_) => value.eq_ignore_ascii_case(fixed),
            StringPattern::Prefix(_) => value
                .get(..fixed.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(fixed)),
            StringPattern::Suffix(_) => value
                .len()
                .checked_sub(fixed.len())
                .and_then(|start| value.get(start..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(fixed)),
        }
    }

    /// The literal part (empty for [`StringPattern::Present`]).
    fn fixed(&self) -> &str {
        match self {
            StringPattern::Present => "",
            StringPattern::Exact(s) | StringPattern::Prefix(s) | StringPattern::Suffix(s) => s,
        }
    }
}

impl From<String> for StringPattern {
    fn from(value: String) -> Self {
        StringPattern::parse(&value)
    }
}

impl From<StringPattern> for String {
    fn from(pattern: StringPattern) -> Self {
        pattern.to_string()
    }
}

impl fmt::Display for StringPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringPattern::Present => f.write_str("*"),
            StringPattern::Exact(s) => f.write_str(s),
            StringPattern::Prefix(s) => write!(f, "{s}*"),
            StringPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

// === IpBlock ===

/// An address block: a CIDR, or a single address (a block of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpBlock {
    /// The network address, host bits cleared.
    network: IpAddr,
    /// Prefix length, at most 32 for IPv4 and 128 for IPv6.
    prefix: u8,
}

impl IpBlock {
    /// Parses `10.0.0.0/8`, `10.1.2.3` (a /32), `2001:db8::/32` or `::1`. Host bits set in a
    /// CIDR are cleared, as Envoy does (`10.1.2.3/8` is `10.0.0.0/8`).
    ///
    /// # Errors
    ///
    /// [`PatternError::IpBlock`] for anything else.
    pub fn parse(value: &str) -> Result<Self, PatternError> {
        let bad = || PatternError::IpBlock {
            value: value.to_owned(),
        };
        let (addr, prefix) = match value.split_once('/') {
            None => {
                let addr: IpAddr = value.parse().map_err(|_| bad())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
            Some((addr, bits)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let bits: u8 = bits.parse().map_err(|_| bad())?;
                if bits > if addr.is_ipv4() { 32 } else { 128 } {
                    return Err(bad());
                }
                (addr, bits)
            }
        };
        Ok(IpBlock {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) counts as
    /// the IPv4 address it carries, so a dual-stack listener cannot dodge an IPv4 block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

impl TryFrom<String> for IpBlock {
    type Error = PatternError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        IpBlock::parse(&value)
    }
}

impl From<IpBlock> for String {
    fn from(block: IpBlock) -> Self {
        block.to_string()
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

// === PathPattern ===

/// What a `paths` entry matches: a string pattern, or a template with `{*}`/`{**}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PathPattern {
    /// `/exact`, `/prefix*`, `*suffix` or `*`.
    Plain(StringPattern),
    /// A path template, as Envoy's `uri_template` matches it.
    Template(PathTemplate),
}

/// A path template: segments that are literal, `{*}` (one segment) or `{**}` (the rest).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    /// As written, for display and serialization.
    source: String,
    /// The segments after the leading `/`.
    segments: Vec<TemplateSegment>,
}

/// One segment of a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TemplateSegment {
    /// Matches exactly this text.
    Literal(String),
    /// `{*}`: one non-empty segment of path characters.
    One,
    /// `{**}`: any run of path characters and slashes, possibly empty.
    Many,
}

/// Whether `byte` may appear in a segment matched by `{*}` or `{**}`: Envoy's `kLiteral`,
/// RFC 3986 `pchar` without `*`.
fn is_template_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&byte)
}

impl PathPattern {
    /// Parses a `paths` entry: a template when it contains `{` or `}` (Istio's validation
    /// refuses braces anywhere else), a string pattern otherwise.
    ///
    /// # Errors
    ///
    /// [`PatternError::PathTemplate`] for a template Envoy would refuse.
    pub fn parse(value: &str) -> Result<Self, PatternError> {
        if !value.contains(['{', '}']) {
            return Ok(PathPattern::Plain(StringPattern::parse(value)));
        }
        let bad = || PatternError::PathTemplate {
            value: value.to_owned(),
        };
        let rest = value.strip_prefix('/').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut seen_many = false;
        for (i, segment) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let parsed = match *segment {
                "{*}" if !seen_many => TemplateSegment::One,
                "{**}" if !seen_many => {
                    seen_many = true;
                    TemplateSegment::Many
                }
                // Istio's rule for literals in a template: path characters only, and not
                // empty except after a trailing slash.
                "" if last => TemplateSegment::Literal(String::new()),
                literal if !literal.is_empty() && literal.bytes().all(is_template_char) => {
                    TemplateSegment::Literal(literal.to_owned())
                }
                _ => return Err(bad()),
            };
            segments.push(parsed);
        }
        Ok(PathPattern::Template(PathTemplate {
            source: value.to_owned(),
            segments,
        }))
    }

    /// Whether `path` (normalized, without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Plain(pattern) => pattern.matches(path.as_bytes()),
            PathPattern::Template(template) => template.matches(path),
        }
    }
}

impl PathTemplate {
    /// Whether `path` matches the whole template. Envoy turns `{**}` into
    /// `[pchar/]*` between the slashes around it, so it always takes at least one (possibly
    /// empty) segment: `/a/{**}` matches `/a/` and `/a/b/c` but not `/a`.
    fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let segment_ok = |template: &TemplateSegment, part: &str| match template {
            TemplateSegment::Literal(text) => part == text,
            TemplateSegment::One => !part.is_empty() && part.bytes().all(is_template_char),
            TemplateSegment::Many => false,
        };
        let Some(many) = self
            .segments
            .iter()
            .position(|s| *s == TemplateSegment::Many)
        else {
            return parts.len() == self.segments.len()
                && self
                    .segments
                    .iter()
                    .zip(&parts)
                    .all(|(t, p)| segment_ok(t, p));
        };
        let after = self.segments.len() - many - 1;
        if parts.len() < many + 1 + after {
            return false;
        }
        let (head, tail) = parts.split_at(parts.len() - after);
        let (head, middle) = head.split_at(many);
        self.segments[..many]
            .iter()
            .zip(head)
            .all(|(t, p)| segment_ok(t, p))
            && self.segments[many + 1..]
                .iter()
                .zip(tail)
                .all(|(t, p)| segment_ok(t, p))
            && middle.iter().all(|p| p.bytes().all(is_template_char))
    }
}

impl TryFrom<String> for PathPattern {
    type Error = PatternError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        PathPattern::parse(&value)
    }
}

impl From<PathPattern> for String {
    fn from(pattern: PathPattern) -> Self {
        pattern.to_string()
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Plain(pattern) => pattern.fmt(f),
            PathPattern::Template(template) => f.write_str(&template.source),
        }
    }
}

// === ServiceAccount ===

/// A `serviceAccounts` entry, its namespace filled in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceAccount {
    /// Namespace of the account.
    pub namespace: String,
    /// Name of the account.
    pub name: String,
}

impl ServiceAccount {
    /// Parses `namespace/name`, or `name` in `default_namespace` (the policy's).
    ///
    /// # Errors
    ///
    /// [`PatternError::ServiceAccount`] when a part is empty or there are more slashes.
    pub fn parse(value: &str, default_namespace: &str) -> Result<Self, PatternError> {
        let (namespace, name) = value.split_once('/').unwrap_or((default_namespace, value));
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(PatternError::ServiceAccount {
                value: value.to_owned(),
            });
        }
        Ok(ServiceAccount {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl TryFrom<String> for ServiceAccount {
    type Error = PatternError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        // Serialized accounts always carry their namespace, so an empty default is refused.
        ServiceAccount::parse(&value, "")
    }
}

impl From<ServiceAccount> for String {
    fn from(account: ServiceAccount) -> Self {
        format!("{}/{}", account.namespace, account.name)
    }
}

/// Parses a port written as a string (`ports`, `destination.port`).
///
/// # Errors
///
/// [`PatternError::Port`] unless it is a number from 0 to 65535.
pub fn parse_port(value: &str) -> Result<u16, PatternError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PatternError::Port {
            value: value.to_owned(),
        });
    }
    value.parse().map_err(|_| PatternError::Port {
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests;
