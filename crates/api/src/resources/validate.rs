//! Semantic checks shared by the resource kinds: what a well-typed resource must additionally
//! satisfy before the mesh will act on it (names, ports, weights), following the rules Istio
//! and Kubernetes apply so that a config accepted by them is accepted here too.

use std::collections::HashMap;

use super::path::FieldPath;
use super::ObjectMeta;

/// Longest DNS-1123 label (a namespace, a subset name, a port name).
const DNS1123_LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (a resource name).
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest IANA service name (a named `targetPort`).
const IANA_SVC_NAME_MAX: usize = 15;

/// One reason a resource is rejected. Paired with the field it concerns in a [`Violation`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A value that must be a DNS-1123 subdomain (resource names) is not one.
    #[error(
        "{value:?} is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', \
         starting and ending with a letter or digit, at most 253 characters)"
    )]
    NotDnsSubdomain {
        /// The offending value.
        value: String,
    },
    /// A value that must be a DNS-1123 label (namespaces, subset and port names) is not one.
    #[error(
        "{value:?} is not a valid DNS-1123 label (lowercase letters, digits and '-', starting \
         and ending with a letter or digit, at most 63 characters)"
    )]
    NotDnsLabel {
        /// The offending value.
        value: String,
    },
    /// A list that needs at least one entry is empty or absent.
    #[error("at least one {what} is required")]
    AtLeastOne {
        /// What the list holds, singular ("host", "port").
        what: &'static str,
    },
    /// A string that must not be empty is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What the string is ("host", "address").
        what: &'static str,
    },
    /// A destination weight below zero.
    #[error("weight {weight} must not be negative")]
    NegativeWeight {
        /// The weight as written.
        weight: i32,
    },
    /// The weights of a multi-destination route do not add up to 100.
    #[error(
        "total destination weight {total} != 100 (when a route has more than one destination, \
         their weights must add up to 100)"
    )]
    WeightSum {
        /// Sum of the weights as written (absent weights count as 0).
        total: i64,
    },
    /// A port number outside 1..=65535.
    #[error("port {port} must be between 1 and 65535")]
    PortOutOfRange {
        /// The number as written.
        port: u64,
    },
    /// A name used twice where names must be unique.
    #[error("duplicate {what} name {name:?} (also used at index {first})")]
    DuplicateName {
        /// What is named ("subset", "port").
        what: &'static str,
        /// The repeated name.
        name: String,
        /// Index of the first entry with that name.
        first: usize,
    },
    /// A Service port protocol other than TCP, UDP or SCTP.
    #[error("protocol {value:?} must be one of TCP, UDP, SCTP")]
    InvalidProtocol {
        /// The protocol as written.
        value: String,
    },
    /// A Service with several ports has one without a name.
    #[error("port name is required when a Service has more than one port")]
    PortNameRequired,
    /// A named `targetPort` that is not an IANA service name.
    #[error(
        "{value:?} is not a valid port name (at most 15 lowercase letters, digits and '-', with \
         at least one letter, not starting or ending with '-')"
    )]
    InvalidTargetPortName {
        /// The name as written.
        value: String,
    },
    /// A WorkloadEntry port name that Istio would reject.
    #[error(
        "{value:?} is not a valid port name (letters, digits and '-', starting and ending with \
         a letter or digit, shorter than 63 characters)"
    )]
    InvalidPortName {
        /// The name as written.
        value: String,
    },
    /// A WorkloadEntry with neither an address nor a network.
    #[error("address is required")]
    AddressRequired,
    /// A `unix://` WorkloadEntry address that Istio would reject.
    #[error("{reason}")]
    UnixSocket {
        /// Istio's wording of the rule that was broken.
        reason: &'static str,
    },
    /// An HTTP route entry that says neither where to send traffic nor how to answer it.
    #[error("an HTTP route needs at least one of route, redirect, directResponse or delegate")]
    NoHttpAction,
    /// A rule of the Gateway API kinds (`HTTPRoute`, `GRPCRoute`, `TCPRoute`,
    /// `ReferenceGrant`).
    #[error(transparent)]
    Gateway(super::gateway::GatewayError),
    /// A rule many Istio kinds share (ranges, durations, selectors, hosts).
    #[error(transparent)]
    Istio(super::istio::IstioError),
    /// A rule specific to `VirtualService`.
    #[error(transparent)]
    VirtualService(super::virtual_service::VirtualServiceError),
    /// A rule specific to `DestinationRule`.
    #[error(transparent)]
    DestinationRule(super::destination_rule::DestinationRuleError),
    /// A rule specific to `ServiceEntry`.
    #[error(transparent)]
    ServiceEntry(super::service_entry::ServiceEntryError),
    /// A rule specific to `WorkloadGroup`.
    #[error(transparent)]
    WorkloadGroup(super::workload_group::WorkloadGroupError),
    /// A rule specific to the Istio security kinds (`AuthorizationPolicy`,
    /// `PeerAuthentication`, `RequestAuthentication`).
    #[error(transparent)]
    Security(super::security::SecurityError),
}

/// A [`ValidationError`] at a field of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field, from the document root (`spec.http[0].route`).
    pub path: FieldPath,
    /// What is wrong with it.
    pub error: ValidationError,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: FieldPath, error: ValidationError) -> Self {
        Self { path, error }
    }
}

/// Whether `value` is a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars.
pub fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= DNS1123_LABEL_MAX
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Whether `value` is a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 chars.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= DNS1123_SUBDOMAIN_MAX && value.split('.').all(is_dns1123_label)
}

/// Whether `value` is an IANA service name, which Kubernetes requires of named target ports.
pub(crate) fn is_iana_svc_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= IANA_SVC_NAME_MAX
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
        && !value.contains("--")
}

/// Checks the metadata every kind shares: a DNS-1123 subdomain name and, when given, a
/// DNS-1123 label namespace.
pub(crate) fn validate_meta(meta: &ObjectMeta, out: &mut Vec<Violation>) {
    let path = FieldPath::root().field("metadata");
    if !is_dns1123_subdomain(&meta.name) {
        out.push(Violation::new(
            path.field("name"),
            ValidationError::NotDnsSubdomain {
                value: meta.name.clone(),
            },
        ));
    }
    if let Some(namespace) = &meta.namespace {
        if !is_dns1123_label(namespace) {
            out.push(Violation::new(
                path.field("namespace"),
                ValidationError::NotDnsLabel {
                    value: namespace.clone(),
                },
            ));
        }
    }
}

/// Reports every entry whose name was already used by an earlier entry of the same list.
/// `names` yields (index, name); `path_of` gives the path of entry `index`'s name field.
pub(crate) fn check_unique_names<'a>(
    what: &'static str,
    names: impl Iterator<Item = (usize, &'a str)>,
    path_of: impl Fn(usize) -> FieldPath,
    out: &mut Vec<Violation>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, name) in names {
        if let Some(first) = seen.get(name) {
            out.push(Violation::new(
                path_of(index),
                ValidationError::DuplicateName {
                    what,
                    name: name.to_owned(),
                    first: *first,
                },
            ));
        } else {
            seen.insert(name, index);
        }
    }
}

/// Runs `validate` and renders what it found as `path: error` lines, the form tests compare.
#[cfg(test)]
pub(crate) fn rendered(validate: impl FnOnce(&mut Vec<Violation>)) -> Vec<String> {
    let mut out = Vec::new();
    validate(&mut out);
    out.iter()
        .map(|v| format!("{}: {}", v.path, v.error))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "v1", "v2-mysql-vm", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "V1", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn dns_subdomains() {
        for ok in ["reviews", "reviews.default", "a-1.b-2.c"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "Reviews", "a..b", ".a", "a.", "a_b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn iana_names() {
        assert!(is_iana_svc_name("http"));
        assert!(is_iana_svc_name("http-2"));
        assert!(!is_iana_svc_name("8080"));
        assert!(!is_iana_svc_name("http--x"));
        assert!(!is_iana_svc_name("-http"));
        assert!(!is_iana_svc_name("a-very-long-port-name"));
    }

    #[test]
    fn duplicate_names_point_at_the_second_use() {
        let mut out = Vec::new();
        check_unique_names(
            "subset",
            ["v1", "v2", "v1"].into_iter().enumerate(),
            |i| {
                FieldPath::root()
                    .field("spec")
                    .field("subsets")
                    .index(i)
                    .field("name")
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path.to_string(), "spec.subsets[2].name");
        assert_eq!(
            out[0].error,
            ValidationError::DuplicateName {
                what: "subset",
                name: "v1".into(),
                first: 0
            }
        );
    }
}
