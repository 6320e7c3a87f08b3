//! Which request methods a proxy lets reach policies and applications.
//!
//! Methods are case-sensitive (RFC 9110, section 9.1), and Istio's AuthorizationPolicy matches
//! `methods` exactly as written: its sidecars compile them to an exact match on `:method`. An
//! application framework, however, may well treat `delete` as `DELETE`. Left alone, a DENY
//! on `DELETE` would then let `delete` through to the very handler it was meant to guard.
//!
//! Envoy never lets such a request reach a policy over HTTP/1.1: its codec (http-parser, and
//! BalsaParser for parity with it) accepts only a fixed list of uppercase methods and answers
//! anything else `400` with `HPE_INVALID_METHOD` (envoyproxy/envoy#8247, envoyproxy/envoy#18819,
//! envoyproxy/envoy#25714). The mesh does the same for the case that matters, on every
//! protocol: a method that equals a registered one except for letter case is refused with
//! 400 before any policy is evaluated. Other extension methods (`PURGE`, `FOO`) pass, and
//! policies match them exactly, as Istio documents.

/// The methods of IANA's HTTP Method Registry, all uppercase (as Envoy's header validator
/// lists them for `restrict_http_methods`).
const REGISTERED: [&str; 40] = [
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "POST",
    "PRI",
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "TRACE",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// Why a request's method is refused; the request should be answered with 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// The method spells a registered one in another case (`delete` for `DELETE`).
    #[error("method {method:?} is {registered} in the wrong case (methods are case-sensitive)")]
    WrongCase {
        method: String,
        registered: &'static str,
    },
}

/// Checks a request's method before policies see it: refused when it differs from a
/// registered method only by letter case.
///
/// # Errors
///
/// [`MethodError::WrongCase`] for such a method.
pub fn check_method(method: &str) -> Result<(), MethodError> {
    // The common case, an uppercase method, costs one scan and no lookup: only a method
    // with a lowercase letter can be a wrong-case spelling of a registered one.
    if !method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Ok(());
    }
    match REGISTERED.iter().find(|r| r.eq_ignore_ascii_case(method)) {
        Some(registered) => Err(MethodError::WrongCase {
            method: method.to_owned(),
            registered,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_methods_in_the_wrong_case_are_refused() {
        for m in [
            "delete", "Delete", "put", "pUT", "get", "post", "patch", "connect",
        ] {
            assert!(
                matches!(check_method(m), Err(MethodError::WrongCase { .. })),
                "{m} passed"
            );
        }
        assert_eq!(
            check_method("delete"),
            Err(MethodError::WrongCase {
                method: "delete".into(),
                registered: "DELETE",
            })
        );
    }

    #[test]
    fn exact_and_extension_methods_pass() {
        for m in REGISTERED {
            assert_eq!(check_method(m), Ok(()), "{m}");
        }
        // Extension methods are the application's business, matched exactly by policies.
        for m in ["PURGE", "FOO", "purge", "x-custom"] {
            assert_eq!(check_method(m), Ok(()), "{m}");
        }
    }

    #[test]
    fn the_list_is_uppercase() {
        assert!(REGISTERED
            .iter()
            .all(|m| !m.bytes().any(|b| b.is_ascii_lowercase())));
    }
}
