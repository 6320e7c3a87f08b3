//! Request path normalization, done once per HTTP request before any authorization policy is
//! evaluated, so that a DENY on `/admin` cannot be walked around with `/a/../admin`,
//! `//admin`, `/%61dmin` or `/admin/.`. The normalized path is also what the proxy forwards:
//! the policy and the application must see the same path.
//!
//! This reproduces what Istio's sidecars do (Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action`, as Istio sets them from `meshConfig.pathNormalization`;
//! see <https://istio.io/latest/docs/reference/config/security/normalization/>), step by step
//! in Envoy's order:
//!
//! 1. Only the path is normalized. The query (`?…`) is kept byte for byte and never matched
//!    against `paths`; a fragment (`#…`), which has no business in a request, is dropped.
//! 2. With [`PathNormalization::DecodeAndMergeSlashes`] only, `%2F`/`%2f` become `/` and
//!    `%5C`/`%5c` become `\` (Envoy `UNESCAPE_AND_FORWARD`). Otherwise they are kept exactly
//!    as written (Envoy `KEEP_UNCHANGED`, Istio's default): `/admin%2Fx` stays `/admin%2Fx`,
//!    one segment that a policy on `/admin/*` does not match. That is Istio's documented
//!    behaviour, and the reason its best practices recommend `DECODE_AND_MERGE_SLASHES` or
//!    ALLOW policies over DENY ones.
//! 3. RFC 3986 normalization as Envoy's `normalize_path` does it: escapes of unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`) are decoded once (`%61` → `a`, `%2e` → `.`; never
//!    twice: `%252e` stays); other escapes are kept with the case they were written in; `\`
//!    becomes `/`; `.` and `..` segments are resolved and never climb above the root. Bytes
//!    outside ASCII are percent-encoded, as Envoy's canonicalizer does.
//! 4. Repeated slashes are merged (not with [`PathNormalization::Base`]). This comes after
//!    step 3, so `/app//../admin` is `/app/admin`, as in Istio.
//!
//! Rejected, so the caller answers 400 ([`PathError`]): a target that is not origin-form
//! (does not start with `/`; the asterisk-form of `OPTIONS *` included, which the caller must
//! handle before normalizing if it supports it), `%00` (Istio rejects it), a `%` not followed
//! by two hex digits, and control characters or spaces in the path. Envoy passes a malformed
//! `%` through untouched; rejecting it removes one more way for the proxy and the application
//! to disagree on what a path means.

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// How much normalization to apply: Istio's `meshConfig.pathNormalization.normalization`,
/// without `NONE` (which would make path-based policies unsafe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// RFC 3986 normalization and `\` → `/` (Istio's own default).
    Base,
    /// [`PathNormalization::Base`], then repeated slashes merged. The mesh default: Istio
    /// recommends at least this (CVE-2021-31920), and `//admin` must not slip past `/admin`.
    #[default]
    MergeSlashes,
    /// `%2F` and `%5C` decoded first, then [`PathNormalization::MergeSlashes`]. The safest for
    /// DENY policies, but changes the path applications see.
    DecodeAndMergeSlashes,
}

/// Why a request target cannot be normalized; the request should be answered with 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty, or not starting with `/` (absolute-form must be reduced to its path first).
    #[error("request target is not an absolute path (origin-form must start with '/')")]
    NotOriginForm,
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding at byte {at} of the path")]
    BadPercentEncoding {
        /// Offset of the `%` in the request target.
        at: usize,
    },
    /// `%00`, which Istio always rejects.
    #[error("encoded NUL (%00) at byte {at} of the path")]
    EncodedNul {
        /// Offset of the `%` in the request target.
        at: usize,
    },
    /// A control character, space or DEL, which no valid request target contains.
    #[error("invalid character {byte:#04x} at byte {at} of the path")]
    InvalidCharacter {
        /// The byte.
        byte: u8,
        /// Its offset in the request target.
        at: usize,
    },
}

/// A request target with its path normalized and its query untouched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormalizedPath {
    /// Normalized path, then `?query` if there was one.
    target: String,
    /// Length of the path part of `target`.
    path_len: usize,
}

impl NormalizedPath {
    /// The normalized path, without the query: what `paths` and `notPaths` are matched
    /// against.
    pub fn path(&self) -> &str {
        &self.target[..self.path_len]
    }

    /// The query as received, without its `?`, when the target had one.
    pub fn query(&self) -> Option<&str> {
        self.target.get(self.path_len + 1..)
    }

    /// Path and query: the request target to forward.
    pub fn as_str(&self) -> &str {
        &self.target
    }
}

/// Normalizes `target` (a request's origin-form target, `/path?query`) with the mesh default,
/// [`PathNormalization::MergeSlashes`].
///
/// # Errors
///
/// [`PathError`] when the target must be rejected with 400.
pub fn normalize(target: &str) -> Result<NormalizedPath, PathError> {
    normalize_with(target, PathNormalization::default())
}

/// Normalizes `target` with the given level of normalization.
///
/// # Errors
///
/// [`PathError`] when the target must be rejected with 400.
pub fn normalize_with(target: &str, mode: PathNormalization) -> Result<NormalizedPath, PathError> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let (raw_path, rest) = target.split_at(end);
    if !raw_path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let query = rest
        .strip_prefix('?')
        .map(|q| q.split_once('#').map_or(q, |(query, _fragment)| query));

    let decoded = decode(raw_path, mode)?;
    let mut path = remove_dot_segments(&decoded);
    if mode != PathNormalization::Base {
        path = merge_slashes(&path);
    }
    let path_len = path.len();
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    Ok(NormalizedPath {
        target: path,
        path_len,
    })
}

/// Whether `byte` is an RFC 3986 unreserved character, whose escapes are always decoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The value of an ASCII hexadecimal digit.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Steps 2 and 3 up to dot segments: one pass over the raw path that decodes what may be
/// decoded, turns `\` into `/` and checks every byte. One pass, so nothing is decoded twice.
fn decode(raw: &str, mode: PathNormalization) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadPercentEncoding { at: i });
                };
                let value = hi << 4 | lo;
                match value {
                    0 => return Err(PathError::EncodedNul { at: i }),
                    b'/' | b'\\' if mode == PathNormalization::DecodeAndMergeSlashes => {
                        // A decoded backslash would become a slash in the next step anyway.
                        out.push('/');
                    }
                    v if is_unreserved(v) => out.push(char::from(v)),
                    // Kept as written, including the case of its hex digits, as Envoy does.
                    _ => out.push_str(&raw[i..i + 3]),
                }
                i += 3;
                continue;
            }
            b'\\' => out.push('/'),
            0..=0x20 | 0x7f => return Err(PathError::InvalidCharacter { byte, at: i }),
            0x80..=0xff => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            _ => out.push(char::from(byte)),
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 section 5.2.4 on a path starting with `/`: `.` segments vanish, `..` removes the
/// segment before it (if any: the root is never left), and a path ending in `.` or `..`
/// keeps a trailing slash (`/a/b/..` is `/a/`).
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // `decode` keeps the leading '/', so this strips exactly that one.
    for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
        trailing_slash = matches!(segment, "." | "..");
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&kept.join("/"));
    if trailing_slash && !kept.is_empty() {
        out.push('/');
    }
    out
}

/// Collapses every run of `/` into one.
fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    out
}
