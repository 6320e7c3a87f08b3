//! SPIFFE IDs as Trellis uses them.
//!
//! Trellis only ever issues and accepts one shape of SPIFFE ID:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. Parsing is
//! deliberately strict (lowercase scheme, no query, fragment, port, userinfo or
//! percent-encoding) so that two different strings can never name the same
//! workload.

use std::fmt;
use std::str::FromStr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

const SCHEME_PREFIX: &str = "spiffe://";
/// Limits from the SPIFFE ID specification.
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Errors from parsing or extracting a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// The ID exceeds the SPIFFE length limit.
    #[error("SPIFFE ID is too long ({len} bytes, at most {MAX_ID_LEN} allowed)")]
    TooLong {
        /// Length of the rejected input in bytes.
        len: usize,
    },
    /// The ID does not start with the lowercase `spiffe://` scheme.
    #[error("SPIFFE ID {input:?} must start with \"spiffe://\"")]
    BadScheme {
        /// The rejected input.
        input: String,
    },
    /// The ID carries a query or fragment.
    #[error("SPIFFE ID {input:?} must not contain a query ('?') or fragment ('#')")]
    QueryOrFragment {
        /// The rejected input.
        input: String,
    },
    /// The trust domain is empty.
    #[error("SPIFFE ID {input:?} has an empty trust domain")]
    EmptyTrustDomain {
        /// The rejected input.
        input: String,
    },
    /// The trust domain contains characters SPIFFE does not allow.
    #[error(
        "trust domain {trust_domain:?} is invalid: it must be at most {MAX_TRUST_DOMAIN_LEN} \
         characters of lowercase letters, digits, '.', '-' and '_'"
    )]
    InvalidTrustDomain {
        /// The rejected trust domain.
        trust_domain: String,
    },
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("SPIFFE ID {input:?} must have the path /ns/<namespace>/sa/<service-account>")]
    BadPath {
        /// The rejected input.
        input: String,
    },
    /// The namespace or service account is empty.
    #[error("SPIFFE ID {input:?} has an empty {what}")]
    EmptySegment {
        /// The rejected input.
        input: String,
        /// Which segment was empty ("namespace" or "service account").
        what: &'static str,
    },
    /// The namespace or service account contains forbidden characters.
    #[error(
        "{what} {value:?} is invalid: it may only contain letters, digits, '.', '-' and '_' \
         and must not be '.' or '..'"
    )]
    InvalidSegment {
        /// Which segment was invalid ("namespace" or "service account").
        what: &'static str,
        /// The rejected segment.
        value: String,
    },
    /// The bytes could not be parsed as an X.509 certificate.
    #[error("not a valid X.509 certificate: {reason}")]
    NotACertificate {
        /// Parser diagnostics.
        reason: String,
    },
    /// The certificate carries no URI SAN with the `spiffe` scheme.
    #[error("certificate has no SPIFFE URI SAN")]
    NoSpiffeUriSan,
    /// The certificate carries more than one SPIFFE URI SAN, so its identity is ambiguous.
    #[error("certificate has {count} SPIFFE URI SANs; exactly one is required")]
    MultipleSpiffeUriSans {
        /// How many SPIFFE URI SANs were found.
        count: usize,
    },
    /// The certificate's SPIFFE URI SAN does not parse.
    #[error("certificate's SPIFFE URI SAN is malformed: {source}")]
    MalformedUriSan {
        /// Why the URI was rejected.
        #[source]
        source: Box<SpiffeError>,
    },
}

/// A Trellis workload identity: `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// Trust domain, e.g. `trellis.local`.
    pub trust_domain: String,
    /// Namespace the workload runs in.
    pub namespace: String,
    /// Service account the workload runs as.
    pub service_account: String,
}

impl SpiffeId {
    /// Builds an ID from its parts without validating them.
    ///
    /// Use [`SpiffeId::try_new`] (or [`SpiffeId::validate`]) when the parts come
    /// from outside the program.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Builds an ID from its parts, rejecting anything that would not round-trip
    /// through [`FromStr`].
    pub fn try_new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeError> {
        let id = Self::new(trust_domain, namespace, service_account);
        id.validate()?;
        Ok(id)
    }

    /// Checks that every part is valid, so that the URI form parses back to `self`.
    pub fn validate(&self) -> Result<(), SpiffeError> {
        validate_trust_domain(&self.trust_domain)?;
        validate_namespace(&self.namespace)?;
        validate_service_account(&self.service_account)?;
        let len = self.to_string().len();
        if len > MAX_ID_LEN {
            return Err(SpiffeError::TooLong { len });
        }
        Ok(())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME_PREFIX}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeError::TooLong { len: input.len() });
        }
        let owned = || input.to_owned();
        let rest = input
            .strip_prefix(SCHEME_PREFIX)
            .ok_or_else(|| SpiffeError::BadScheme { input: owned() })?;
        if input.contains(['?', '#']) {
            return Err(SpiffeError::QueryOrFragment { input: owned() });
        }
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| SpiffeError::BadPath { input: owned() })?;
        if trust_domain.is_empty() {
            return Err(SpiffeError::EmptyTrustDomain { input: owned() });
        }
        validate_trust_domain(trust_domain)?;

        let segments: Vec<&str> = path.split('/').collect();
        let [ns_label, namespace, sa_label, service_account] = segments.as_slice() else {
            return Err(SpiffeError::BadPath { input: owned() });
        };
        if *ns_label != "ns" || *sa_label != "sa" {
            return Err(SpiffeError::BadPath { input: owned() });
        }
        if namespace.is_empty() {
            return Err(SpiffeError::EmptySegment {
                input: owned(),
                what: "namespace",
            });
        }
        if service_account.is_empty() {
            return Err(SpiffeError::EmptySegment {
                input: owned(),
                what: "service account",
            });
        }
        validate_namespace(namespace)?;
        validate_service_account(service_account)?;
        Ok(Self::new(trust_domain, *namespace, *service_account))
    }
}

/// Checks a trust domain name against the SPIFFE character rules.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeError> {
    let ok = !trust_domain.is_empty()
        && trust_domain.len() <= MAX_TRUST_DOMAIN_LEN
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::InvalidTrustDomain {
            trust_domain: trust_domain.to_owned(),
        })
    }
}

/// Checks a namespace name against the SPIFFE path-segment rules.
pub fn validate_namespace(namespace: &str) -> Result<(), SpiffeError> {
    validate_segment(namespace, "namespace")
}

/// Checks a service account name against the SPIFFE path-segment rules.
pub fn validate_service_account(service_account: &str) -> Result<(), SpiffeError> {
    validate_segment(service_account, "service account")
}

fn validate_segment(value: &str, what: &'static str) -> Result<(), SpiffeError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::InvalidSegment {
            what,
            value: value.to_owned(),
        })
    }
}

/// Extracts the SPIFFE ID from a DER-encoded X.509 certificate.
///
/// The certificate must carry exactly one URI SAN with the `spiffe` scheme, and
/// it must be a valid Trellis ID. This does not verify the certificate; callers
/// must only trust the result for a certificate whose chain they have verified.
pub fn spiffe_id_from_cert(der: &[u8]) -> Result<SpiffeId, SpiffeError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SpiffeError::NotACertificate {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(SpiffeError::NotACertificate {
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SpiffeError::NotACertificate {
            reason: format!("unreadable subject alternative name extension: {e}"),
        })?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    spiffe_id_from_uris(&uris)
}

/// Picks the single SPIFFE URI out of a certificate's (or CSR's) URI SANs.
pub(crate) fn spiffe_id_from_uris(uris: &[&str]) -> Result<SpiffeId, SpiffeError> {
    // The scheme is matched case-insensitively here so that a "SPIFFE://" URI
    // counts as an (invalid) SPIFFE ID instead of being silently ignored.
    let spiffe: Vec<&str> = uris
        .iter()
        .copied()
        .filter(|uri| {
            uri.get(..SCHEME_PREFIX.len())
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case(SCHEME_PREFIX))
        })
        .collect();
    match spiffe.as_slice() {
        [] => Err(SpiffeError::NoSpiffeUriSan),
        [uri] => uri.parse().map_err(|source| SpiffeError::MalformedUriSan {
            source: Box::new(source),
        }),
        many => Err(SpiffeError::MultipleSpiffeUriSans { count: many.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let id: SpiffeId = "spiffe://trellis.local/ns/default/sa/web".parse().unwrap();
        assert_eq!(id, SpiffeId::new("trellis.local", "default", "web"));
        assert_eq!(id.to_string(), "spiffe://trellis.local/ns/default/sa/web");
        let id2: SpiffeId = id.to_string().parse().unwrap();
        assert_eq!(id, id2);
    }

    #[test]
    fn accepts_allowed_characters() {
        let id: SpiffeId = "spiffe://a-b_c.d9/ns/My_Ns-1.x/sa/SA.v2".parse().unwrap();
        assert_eq!(id.trust_domain, "a-b_c.d9");
        assert_eq!(id.namespace, "My_Ns-1.x");
        assert_eq!(id.service_account, "SA.v2");
    }

    #[test]
    fn rejects_bad_shapes() {
        type Check = fn(&SpiffeError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, SpiffeError::BadScheme { .. })),
            ("https://td/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::BadScheme { .. })
            }),
            ("SPIFFE://td/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::BadScheme { .. })
            }),
            ("spiffe://td", |e| matches!(e, SpiffeError::BadPath { .. })),
            ("spiffe://td/", |e| matches!(e, SpiffeError::BadPath { .. })),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, SpiffeError::EmptyTrustDomain { .. })
            }),
            ("spiffe://TD/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::InvalidTrustDomain { .. })
            }),
            ("spiffe://td:8080/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::InvalidTrustDomain { .. })
            }),
            ("spiffe://user@td/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::InvalidTrustDomain { .. })
            }),
            ("spiffe://td/ns/a/sa/b?x=1", |e| {
                matches!(e, SpiffeError::QueryOrFragment { .. })
            }),
            ("spiffe://td/ns/a/sa/b#frag", |e| {
                matches!(e, SpiffeError::QueryOrFragment { .. })
            }),
            ("spiffe://td/ns//sa/b", |e| {
                matches!(
                    e,
                    SpiffeError::EmptySegment {
                        what: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns/a/sa/", |e| {
                matches!(
                    e,
                    SpiffeError::EmptySegment {
                        what: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns/a/sa/b/", |e| {
                matches!(e, SpiffeError::BadPath { .. })
            }),
            ("spiffe://td/ns/a/sa/b/c", |e| {
                matches!(e, SpiffeError::BadPath { .. })
            }),
            ("spiffe://td/ns/a", |e| {
                matches!(e, SpiffeError::BadPath { .. })
            }),
            ("spiffe://td/namespace/a/sa/b", |e| {
                matches!(e, SpiffeError::BadPath { .. })
            }),
            ("spiffe://td/sa/b/ns/a", |e| {
                matches!(e, SpiffeError::BadPath { .. })
            }),
            ("spiffe://td/ns/../sa/b", |e| {
                matches!(e, SpiffeError::InvalidSegment { .. })
            }),
            ("spiffe://td/ns/a%2Fb/sa/b", |e| {
                matches!(e, SpiffeError::InvalidSegment { .. })
            }),
            ("spiffe://td/ns/a b/sa/b", |e| {
                matches!(e, SpiffeError::InvalidSegment { .. })
            }),
        ];
        for (input, check) in cases {
            let err = input
                .parse::<SpiffeId>()
                .expect_err(&format!("{input:?} should be rejected"));
            assert!(check(&err), "{input:?} gave unexpected error {err:?}");
        }
        let long = format!("spiffe://td/ns/a/sa/{}", "x".repeat(MAX_ID_LEN));
        assert!(matches!(
            long.parse::<SpiffeId>(),
            Err(SpiffeError::TooLong { .. })
        ));
    }

    #[test]
    fn try_new_validates() {
        assert!(SpiffeId::try_new("td", "ns", "sa").is_ok());
        assert!(SpiffeId::try_new("td", "a/b", "sa").is_err());
        assert!(SpiffeId::try_new("Td", "ns", "sa").is_err());
        assert!(SpiffeId::try_new("td", "ns", "").is_err());
    }

    #[test]
    fn picks_single_spiffe_uri() {
        let id = spiffe_id_from_uris(&["https://example.com", "spiffe://td/ns/a/sa/b"]).unwrap();
        assert_eq!(id, SpiffeId::new("td", "a", "b"));
        assert_eq!(
            spiffe_id_from_uris(&["https://example.com"]),
            Err(SpiffeError::NoSpiffeUriSan)
        );
        assert_eq!(
            spiffe_id_from_uris(&["spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/c"]),
            Err(SpiffeError::MultipleSpiffeUriSans { count: 2 })
        );
        assert!(matches!(
            spiffe_id_from_uris(&["SPIFFE://td/ns/a/sa/b"]),
            Err(SpiffeError::MalformedUriSan { .. })
        ));
    }

    #[test]
    fn cert_parsing_errors() {
        assert!(matches!(
            spiffe_id_from_cert(b"not a cert"),
            Err(SpiffeError::NotACertificate { .. })
        ));

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            spiffe_id_from_cert(cert.der()),
            Err(SpiffeError::NoSpiffeUriSan)
        );

        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://td/ns/a/sa/b".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://td/ns/a/sa/c".try_into().unwrap()),
        ];
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            spiffe_id_from_cert(cert.der()),
            Err(SpiffeError::MultipleSpiffeUriSans { count: 2 })
        );

        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://td/ns/a/sa/b/extra".try_into().unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(
            spiffe_id_from_cert(cert.der()),
            Err(SpiffeError::MalformedUriSan { .. })
        ));

        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://td/ns/a/sa/b".try_into().unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            spiffe_id_from_cert(cert.der()),
            Ok(SpiffeId::new("td", "a", "b"))
        );
    }
}
