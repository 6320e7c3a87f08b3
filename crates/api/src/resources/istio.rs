//! Building blocks shared by the Istio kinds: durations, string matches, workload selectors
//! and policy target references, percentages, and the checks the Istio CRDs apply to many
//! fields (numeric ranges, list and string sizes, one-of groups, hosts, IP blocks,
//! `exportTo`), together with the [`IstioError`] they report.

mod duration;
mod names;
mod selector;
mod string_match;

use serde::{Deserialize, Serialize};

use super::path::FieldPath;
use super::validate::{ValidationError, Violation};

pub use duration::{Duration, DurationError};
pub(crate) use names::{
    check_export_to, check_gateway_name, check_header_name, check_host, check_ip_or_cidr,
    is_ip_or_cidr,
};
pub(crate) use selector::{check_label_map, check_target_refs, LabelRule};
pub use selector::{PolicyTargetReference, WorkloadSelector};
pub(crate) use string_match::check_regex;
pub use string_match::{HeaderValueMatch, StringMatch};

/// Highest TCP/UDP port number.
pub(crate) const MAX_PORT: u32 = 65535;

/// Why an Istio resource is rejected, for the rules many fields share. Paired with its field
/// in a [`Violation`] through [`ValidationError::Istio`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IstioError {
    /// An integer outside its allowed range.
    #[error("{what} {value} must be between {min} and {max}")]
    OutOfRange {
        /// What the number is ("HTTP status").
        what: &'static str,
        /// The number as written.
        value: i64,
        /// The smallest allowed.
        min: i64,
        /// The largest allowed.
        max: i64,
    },
    /// A number below its minimum (where there is no maximum).
    #[error("{what} {value} must be at least {min}")]
    TooSmall {
        /// What the number is.
        what: &'static str,
        /// The number as written.
        value: String,
        /// The smallest allowed.
        min: String,
    },
    /// A percentage outside 0..=100.
    #[error("{what} {value} must be between 0 and 100")]
    Percent {
        /// What the percentage is ("minimumPercent").
        what: &'static str,
        /// The number as written.
        value: String,
    },
    /// A timeout or interval shorter than Istio's floor of one millisecond.
    #[error("duration {value:?} is too short: it must be a valid duration of at least 1ms")]
    DurationBelow1ms {
        /// The duration as written.
        value: String,
    },
    /// More than one field of a group where at most one may be set.
    #[error("only one of {fields} may be set, found {found}")]
    Exclusive {
        /// The group, in words ("port or derivePort").
        fields: &'static str,
        /// The ones set, in words.
        found: String,
    },
    /// None of a group where one is required.
    #[error("one of {fields} is required")]
    OneRequired {
        /// The group, in words.
        fields: &'static str,
    },
    /// A list longer than its `maxItems`, or a map with more than `maxProperties` entries.
    #[error("at most {max} {what} allowed, found {count}")]
    TooMany {
        /// What the list holds, plural ("ports").
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length as written.
        count: usize,
    },
    /// A map that must not be empty when present (`minProperties: 1`).
    #[error("{what} must have at least one entry when set")]
    EmptyMap {
        /// The map ("portLevelMtls").
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
    /// A string that does not have the required shape.
    #[error("{value:?} is not a valid {what} ({rule})")]
    Pattern {
        /// What the string is ("targetRef kind").
        what: &'static str,
        /// The value as written.
        value: String,
        /// The rule, in words.
        rule: &'static str,
    },
    /// A value used twice in a list that must not repeat.
    #[error("duplicate {what} {value:?}")]
    Duplicate {
        /// What the list holds ("exportTo entry").
        what: &'static str,
        /// The repeated value.
        value: String,
    },
    /// A `*` in a workload selector label, where Istio matches labels literally.
    #[error("wildcard '*' is not supported in a workload selector label {part}: {value:?}")]
    SelectorWildcard {
        /// "key" or "value".
        part: &'static str,
        /// The key or value as written.
        value: String,
    },
    /// A label key that Kubernetes would reject.
    #[error(
        "{value:?} is not a valid label key (an optional DNS subdomain prefix and '/', then at \
         most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
    )]
    LabelKey {
        /// The key as written.
        value: String,
    },
    /// A label value that Kubernetes would reject.
    #[error(
        "{value:?} is not a valid label value (at most 63 letters, digits, '-', '_' or '.', \
         starting and ending with a letter or digit)"
    )]
    LabelValue {
        /// The value as written.
        value: String,
    },
    /// A host that is not a (wildcard) DNS name, or that uses a wildcard where none is
    /// allowed.
    #[error("{value:?} is not a valid host: {reason}")]
    Host {
        /// The host as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value that must be an IP address or a CIDR block.
    #[error("{value:?} is not an IP address or CIDR block")]
    IpOrCidr {
        /// The value as written.
        value: String,
    },
    /// An `exportTo` entry that is neither `.`, `*`, `~` nor a namespace name.
    #[error("{value:?} is not a valid exportTo entry (\".\", \"*\", \"~\" or a namespace name)")]
    ExportTo {
        /// The entry as written.
        value: String,
    },
    /// `*` or `~` in `exportTo` next to other entries.
    #[error("exportTo {value:?} cannot be combined with other entries")]
    ExportToAlone {
        /// The entry as written.
        value: String,
    },
    /// A regular expression that does not compile.
    #[error("invalid regular expression {value:?}: {reason}")]
    InvalidRegex {
        /// The expression as written.
        value: String,
        /// The compiler's complaint.
        reason: String,
    },
    /// An HTTP header name with characters HTTP does not allow in one.
    #[error("{value:?} is not a valid HTTP header name")]
    HeaderName {
        /// The name as written.
        value: String,
    },
    /// A gateway reference that is neither `mesh`, a name nor `namespace/name`.
    #[error(
        "{value:?} is not a valid gateway reference (\"mesh\", \"name\" or \"namespace/name\")"
    )]
    GatewayName {
        /// The reference as written.
        value: String,
    },
    /// A `targetRef` naming another namespace.
    #[error(
        "targetRef namespace {value:?} must be empty: cross namespace references are not \
         supported"
    )]
    CrossNamespaceTarget {
        /// The namespace as written.
        value: String,
    },
}

impl From<IstioError> for ValidationError {
    fn from(error: IstioError) -> Self {
        ValidationError::Istio(error)
    }
}

/// Adds `error` at `path` to `out`.
pub(crate) fn push(out: &mut Vec<Violation>, path: FieldPath, error: impl Into<ValidationError>) {
    out.push(Violation::new(path, error.into()));
}

/// Istio's `Percent`: a share of traffic as a double in 0..=100.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage.
    #[serde(default)]
    pub value: f64,
}

impl Percent {
    /// Checks that the value lies in 0..=100.
    pub(crate) fn validate(&self, what: &'static str, path: &FieldPath, out: &mut Vec<Violation>) {
        check_percent(Some(self.value), what, &path.field("value"), out);
    }
}

/// Reports `value` outside `min..=max`.
pub(crate) fn check_range(
    value: Option<i64>,
    what: &'static str,
    min: i64,
    max: i64,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(value) = value {
        if !(min..=max).contains(&value) {
            push(
                out,
                path.clone(),
                IstioError::OutOfRange {
                    what,
                    value,
                    min,
                    max,
                },
            );
        }
    }
}

/// Reports a port number outside 1..=65535.
pub(crate) fn check_port(port: Option<u32>, path: &FieldPath, out: &mut Vec<Violation>) {
    if let Some(port) = port {
        if !(1..=MAX_PORT).contains(&port) {
            push(
                out,
                path.clone(),
                ValidationError::PortOutOfRange {
                    port: u64::from(port),
                },
            );
        }
    }
}

/// Reports a negative count (Istio's `int32` limits and thresholds).
pub(crate) fn check_non_negative(
    value: Option<i32>,
    what: &'static str,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(value) = value {
        if value < 0 {
            push(
                out,
                path.clone(),
                IstioError::TooSmall {
                    what,
                    value: value.to_string(),
                    min: "0".into(),
                },
            );
        }
    }
}

/// Reports a percentage outside 0..=100 (also NaN).
pub(crate) fn check_percent(
    value: Option<f64>,
    what: &'static str,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(value) = value {
        if !(0.0..=100.0).contains(&value) {
            push(
                out,
                path.clone(),
                IstioError::Percent {
                    what,
                    value: value.to_string(),
                },
            );
        }
    }
}

/// Reports a duration shorter than 1ms, the floor the Istio CRDs set on most timeouts.
pub(crate) fn check_min_1ms(
    duration: Option<&Duration>,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(duration) = duration {
        if !duration.is_at_least_1ms() {
            push(
                out,
                path.clone(),
                IstioError::DurationBelow1ms {
                    value: duration.as_str().to_owned(),
                },
            );
        }
    }
}

/// Reports more than one of `fields` set (name, present), at `path`.
pub(crate) fn check_exclusive(
    fields: &'static str,
    set: &[(&str, bool)],
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    let found: Vec<&str> = set
        .iter()
        .filter_map(|(name, present)| present.then_some(*name))
        .collect();
    if found.len() > 1 {
        push(
            out,
            path.clone(),
            IstioError::Exclusive {
                fields,
                found: found.join(" and "),
            },
        );
    }
}

/// Reports a list or map longer than `max`.
pub(crate) fn check_max_items(
    count: usize,
    max: usize,
    what: &'static str,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if count > max {
        push(out, path.clone(), IstioError::TooMany { what, max, count });
    }
}

/// Reports a string longer than `max` characters.
pub(crate) fn check_max_len(
    value: &str,
    max: usize,
    what: &'static str,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    let len = value.chars().count();
    if len > max {
        push(out, path.clone(), IstioError::TooLong { what, max, len });
    }
}

/// Reports an empty string (`minLength: 1`).
pub(crate) fn check_not_empty(
    value: &str,
    what: &'static str,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if value.is_empty() {
        push(out, path.clone(), ValidationError::Empty { what });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(out: &[Violation]) -> Vec<String> {
        out.iter()
            .map(|v| format!("{}: {}", v.path, v.error))
            .collect()
    }

    #[test]
    fn numeric_checks() {
        let p = FieldPath::root().field("x");
        let mut out = Vec::new();
        check_range(Some(600), "HTTP status", 200, 599, &p, &mut out);
        check_port(Some(0), &p, &mut out);
        check_port(Some(65535), &p, &mut out);
        check_non_negative(Some(-1), "maxRetries", &p, &mut out);
        check_percent(Some(100.5), "minimumPercent", &p, &mut out);
        check_percent(Some(f64::NAN), "value", &p, &mut out);
        check_min_1ms(Duration::parse("500us").ok().as_ref(), &p, &mut out);
        check_min_1ms(Duration::parse("1ms").ok().as_ref(), &p, &mut out);
        assert_eq!(
            messages(&out),
            [
                "x: HTTP status 600 must be between 200 and 599",
                "x: port 0 must be between 1 and 65535",
                "x: maxRetries -1 must be at least 0",
                "x: minimumPercent 100.5 must be between 0 and 100",
                "x: value NaN must be between 0 and 100",
                "x: duration \"500us\" is too short: it must be a valid duration of at least 1ms",
            ]
        );
    }

    #[test]
    fn group_and_size_checks() {
        let p = FieldPath::root().field("x");
        let mut out = Vec::new();
        check_exclusive(
            "port or derivePort",
            &[("port", true), ("derivePort", true)],
            &p,
            &mut out,
        );
        check_exclusive(
            "port or derivePort",
            &[("port", true), ("derivePort", false)],
            &p,
            &mut out,
        );
        check_max_items(5, 4, "ports", &p, &mut out);
        check_max_len("abcd", 3, "name", &p, &mut out);
        check_not_empty("", "issuer", &p, &mut out);
        assert_eq!(
            messages(&out),
            [
                "x: only one of port or derivePort may be set, found port and derivePort",
                "x: at most 4 ports allowed, found 5",
                "x: name is 4 characters long, at most 3 allowed",
                "x: issuer must not be empty",
            ]
        );
    }
}
