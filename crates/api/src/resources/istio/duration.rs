//! Durations as Istio's YAML writes them: `"1.5s"`, `"100ms"`, `"1h30m"`. Istio reads
//! `google.protobuf.Duration` fields leniently, in the syntax of Go's `time.ParseDuration`
//! (which is also what the CRDs' CEL `duration()` accepts), so configs use both `300s` and
//! `5m`; this type accepts exactly that syntax and keeps the text as written, so a config
//! serializes back unchanged.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Nanoseconds in one millisecond: the smallest value most Istio durations allow.
pub(crate) const NANOS_PER_MILLI: i128 = 1_000_000;

/// Go's limit: a duration is an `int64` count of nanoseconds.
const MAX_NANOS: i128 = i64::MAX as i128;

/// Why a duration string is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty text.
    #[error("invalid duration \"\": a duration such as \"1.5s\" or \"100ms\" is required")]
    Empty,
    /// Not a sequence of numbers with units.
    #[error(
        "invalid duration {text:?}: expected numbers with units (h, m, s, ms, us, ns), such \
         as \"1.5s\", \"100ms\" or \"1h30m\""
    )]
    Syntax {
        /// The text as written.
        text: String,
    },
    /// A number without a unit (only a bare `0` may omit it).
    #[error("invalid duration {text:?}: missing unit (h, m, s, ms, us, ns)")]
    MissingUnit {
        /// The text as written.
        text: String,
    },
    /// A unit that is not one of Go's.
    #[error("invalid duration {text:?}: unknown unit {unit:?} (use h, m, s, ms, us or ns)")]
    UnknownUnit {
        /// The text as written.
        text: String,
        /// The unit found.
        unit: String,
    },
    /// More than about 292 years.
    #[error("invalid duration {text:?}: out of range")]
    OutOfRange {
        /// The text as written.
        text: String,
    },
}

/// A duration as written in a config (`"1.5s"`), parsed and validated; it serializes back
/// to the same text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    nanos: i128,
}

impl Duration {
    /// Parses Go duration syntax: an optional sign, then one or more decimal numbers each
    /// followed by a unit (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`); a bare `0` is also allowed.
    ///
    /// # Errors
    ///
    /// [`DurationError`] when the text is not such a duration or exceeds Go's range.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let nanos = parse_nanos(text)?;
        Ok(Self {
            text: text.to_owned(),
            nanos,
        })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The length in nanoseconds; negative for a negative duration.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The length as a [`std::time::Duration`], `None` when negative.
    pub fn to_std(&self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Whether the duration is at least one millisecond, the floor Istio's CRDs put on most
    /// timeouts and intervals.
    pub fn is_at_least_1ms(&self) -> bool {
        self.nanos >= NANOS_PER_MILLI
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"1.5s\" or \"100ms\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        Duration::parse(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Nanoseconds per unit, by unit name. `µs` comes in two spellings (micro sign and Greek
/// mu), as in Go.
fn unit_nanos(unit: &str) -> Option<i128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => NANOS_PER_MILLI,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// The value of `text` in nanoseconds.
fn parse_nanos(text: &str) -> Result<i128, DurationError> {
    let syntax = || DurationError::Syntax {
        text: text.to_owned(),
    };
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let (negative, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err(syntax());
    }
    let mut rest = body;
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(syntax());
        }
        let unit_len = after_number
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after_number.len(), |(i, _)| i);
        let (unit, after_unit) = after_number.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                text: text.to_owned(),
            });
        }
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
        })?;
        total = total
            .checked_add(
                component_nanos(int_digits, frac_digits, per_unit).ok_or_else(|| {
                    DurationError::OutOfRange {
                        text: text.to_owned(),
                    }
                })?,
            )
            .filter(|t| *t <= MAX_NANOS)
            .ok_or_else(|| DurationError::OutOfRange {
                text: text.to_owned(),
            })?;
        rest = after_unit;
    }
    Ok(if negative { -total } else { total })
}

/// `int.frac` units in nanoseconds, truncating below a nanosecond as Go does. `None` when it
/// overflows.
fn component_nanos(int_digits: &str, frac_digits: &str, per_unit: i128) -> Option<i128> {
    let mut whole: i128 = 0;
    for digit in int_digits.bytes() {
        whole = whole
            .checked_mul(10)?
            .checked_add(i128::from(digit - b'0'))?;
        if whole > MAX_NANOS {
            return None;
        }
    }
    let mut nanos = whole.checked_mul(per_unit)?;
    // Each fractional digit is worth a tenth of the previous one; digits beyond what a
    // nanosecond can resolve contribute nothing.
    let mut scale = per_unit;
    for digit in frac_digits.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.checked_add(i128::from(digit - b'0') * scale)?;
    }
    Some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> i128 {
        Duration::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .as_nanos()
    }

    #[test]
    fn parses_go_syntax() {
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("1.5s"), 1_500_000_000);
        assert_eq!(nanos("100ms"), 100_000_000);
        assert_eq!(nanos("1h30m"), 5_400_000_000_000);
        assert_eq!(nanos("300s"), 300_000_000_000);
        assert_eq!(nanos(".5s"), 500_000_000);
        assert_eq!(nanos("1.s"), 1_000_000_000);
        assert_eq!(nanos("-2us"), -2_000);
        assert_eq!(nanos("3\u{b5}s"), 3_000);
        assert_eq!(nanos("1ns"), 1);
        assert_eq!(nanos("0.0000000001s"), 0);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "", "apple", "1", "s", "1.5", ".s", "1x", "1s2", "--1s", "1 s", "+",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            Duration::parse("10d").unwrap_err(),
            DurationError::UnknownUnit {
                text: "10d".into(),
                unit: "d".into()
            }
        );
        assert!(matches!(
            Duration::parse("9999999999h"),
            Err(DurationError::OutOfRange { .. })
        ));
    }

    #[test]
    fn keeps_the_text_and_compares_to_a_millisecond() {
        let d: Duration = serde_json::from_value(serde_json::json!("1.5s")).unwrap();
        assert_eq!(d.as_str(), "1.5s");
        assert_eq!(serde_json::to_value(&d).unwrap(), "1.5s");
        assert!(d.is_at_least_1ms());
        assert!(!Duration::parse("999us").unwrap().is_at_least_1ms());
        assert_eq!(
            Duration::parse("2s").unwrap().to_std(),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(Duration::parse("-2s").unwrap().to_std(), None);
        let err = serde_json::from_value::<Duration>(serde_json::json!("apple")).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid duration \"apple\""),
            "{err}"
        );
    }
}
