//! Istio's own CRD validation cases (`tests/conformance/istio/validation`), run through the
//! loader: every document of a `KIND-valid.yaml` file must load without an error, and every
//! document of a `KIND-invalid.yaml` file must be rejected with an error at the field its
//! `_err:` key names. `_err` is test bookkeeping, not part of the resource, so this harness
//! strips it before parsing.
//!
//! Istio writes `_err` in three ways, and each is checked as strictly as it allows:
//!
//! - `spec.a.b: reason` or `spec.a.b in body ...`: an error's field must equal `spec.a.b`;
//! - `b[0] in body ...` (a path without its root, as Kubernetes messages end): an error's
//!   field must end with `.b[0]`;
//! - a bare reason, from rules that carry no path: an error's message must contain the key
//!   words listed for that reason in [`KEY_WORDS`], each of which is itself taken from the
//!   reason.
//!
//! Telemetry is not a kind the mesh supports: its documents must all be reported as such
//! (a warning, no error, no resource).

use std::path::{Path, PathBuf};

use trellis_api::load::{parse_str, Diagnostic};

/// The kinds with valid/invalid files, by file prefix.
const KINDS: &[&str] = &[
    "authz",
    "destinationrule",
    "peerauth",
    "reqauth",
    "serviceentry",
    "workloadentry",
    "workloadgroup",
];

/// For `_err` values that are only a reason: the words an error message must contain. Each
/// entry's words are substrings of its reason (checked), compared case-insensitively.
const KEY_WORDS: &[(&str, &[&str])] = &[
    (
        "Cannot set serviceAccounts with namespaces or principals",
        &["serviceAccounts", "namespaces", "principals"],
    ),
    ("Unsupported value: \"BLAH\"", &["BLAH"]),
    ("Unsupported value: \"MANDATORY\"", &["MANDATORY"]),
    ("type conversion error from", &["type conversion"]),
    (
        "portLevelMtls requires selector",
        &["portLevelMtls requires", "selector"],
    ),
    (
        "port must be between 1-65535",
        &["port", "between", "65535"],
    ),
    (
        "only one of targetRefs or selector can be set",
        &["only one of", "targetRefs", "selector"],
    ),
    (
        "cross namespace referencing is not currently supported",
        &["cross namespace", "supported"],
    ),
    ("url must have scheme", &["url", "scheme"]),
    ("must be a valid duration greater than", &["duration"]),
    (
        "wildcard is not supported in selector",
        &["wildcard", "not supported", "selector"],
    ),
    (
        "only one of WorkloadSelector or Endpoints can be set",
        &["only one of", "workloadSelector", "endpoints"],
    ),
    ("hostname cannot be wildcard", &["hostname", "wildcard"]),
    (
        "CIDR addresses are allowed only for NONE/STATIC resolution types",
        &["CIDR", "NONE", "STATIC", "resolution"],
    ),
    ("Duplicate value", &["duplicate"]),
    (
        "port number cannot be duplicated",
        &["port number", "duplicate"],
    ),
    (
        "NONE mode cannot set endpoints",
        &["NONE", "cannot set endpoints"],
    ),
    (
        "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        &["DNS_ROUND_ROBIN", "multiple endpoints"],
    ),
    ("Address is required", &["address is required"]),
    ("UDS may not be a dir", &["UDS", "dir"]),
    (
        "UDS must be an absolute path or abstract socket",
        &["absolute path", "abstract socket"],
    ),
    ("UDS may not include ports", &["UDS", "ports"]),
];

/// Cases that cannot be matched, with the reason. Each entry is (file, `metadata.name` of
/// the document, why). An entry whose case passes fails the test, so the list cannot rot.
const EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "serviceentry-valid.yaml",
    "full",
    "a YAML dialect difference, not a validation rule: in `addresses: [1.2.3.4, 001:db8::]` \
     the plain scalar ends with ':' right before ']'. YAML 1.2, which the loader's parser \
     (yaml-rust2) follows, reads that ':' as an implicit key indicator, so the item becomes \
     the mapping {\"001:db8:\": null} and is rejected as not a string; Kubernetes' go-yaml \
     reads the string \"001:db8::\". The same document with the address quoted is accepted \
     (`service_entry_full_with_a_quoted_ipv6_address_is_accepted`).",
)];

/// One document of a validation file.
struct Case {
    /// 1-based position in the file, for messages.
    number: usize,
    /// The `_err` value, unquoted, when present.
    err: Option<String>,
    /// The document without its `_err` line.
    body: String,
}

impl Case {
    /// `metadata.name`, for messages and exceptions.
    fn name(&self) -> &str {
        self.body
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("name:"))
            .map_or("?", str::trim)
    }
}

fn validation_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/istio/validation")
}

/// Splits a validation file into its documents, dropping the ones that are only comments
/// (Istio keeps its TODO cases commented out).
fn cases(file: &str) -> Vec<Case> {
    let path = validation_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing ({e}); this test needs it", path.display()));
    let mut documents: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(Vec::new());
        } else if let Some(last) = documents.last_mut() {
            last.push(line);
        }
    }
    documents
        .into_iter()
        .filter(|lines| {
            lines
                .iter()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .enumerate()
        .map(|(i, lines)| {
            let mut err = None;
            let body: Vec<&str> = lines
                .into_iter()
                .filter(|line| match line.strip_prefix("_err:") {
                    Some(value) => {
                        err = Some(unquote(value.trim()).to_owned());
                        false
                    }
                    None => true,
                })
                .collect();
            Case {
                number: i + 1,
                err,
                body: body.join("\n") + "\n",
            }
        })
        .collect()
}

/// `'x'` or `"x"` to `x` (the `_err` values are plain YAML scalars without escapes).
fn unquote(value: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// What an invalid document's errors must show.
#[derive(Debug)]
enum Expect {
    /// An error at exactly this field.
    Field(String),
    /// An error at a field ending with this partial path.
    FieldSuffix(String),
    /// An error whose message holds these words.
    Words(&'static [&'static str]),
}

/// Whether `text` looks like a field path (`spec.jwtRules[0].fromHeaders[0].name`).
fn is_path(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']' | '_'))
}

fn expectation(err: &str) -> Expect {
    let head = err
        .split_once(": ")
        .or_else(|| err.split_once(" in body "))
        .map(|(head, _)| head)
        .filter(|head| is_path(head));
    if let Some(path) = head {
        return if path == "spec" || path.starts_with("spec.") || path.starts_with("metadata") {
            Expect::Field(path.to_owned())
        } else {
            Expect::FieldSuffix(path.to_owned())
        };
    }
    let (_, words) = KEY_WORDS
        .iter()
        .find(|(reason, _)| *reason == err)
        .unwrap_or_else(|| panic!("no key words listed for Istio's reason {err:?}"));
    for word in *words {
        assert!(
            err.to_lowercase().contains(&word.to_lowercase()),
            "key word {word:?} is not in {err:?}"
        );
    }
    Expect::Words(words)
}

/// Whether one of `errors` shows what `expect` asks for.
fn matches(expect: &Expect, errors: &[&Diagnostic]) -> bool {
    errors.iter().any(|d| match expect {
        Expect::Field(path) => d.field.as_deref() == Some(path.as_str()),
        Expect::FieldSuffix(suffix) => d
            .field
            .as_deref()
            .is_some_and(|f| f == suffix || f.ends_with(&format!(".{suffix}"))),
        Expect::Words(words) => {
            let message = d.message.to_lowercase();
            d.field.is_some() && words.iter().all(|w| message.contains(&w.to_lowercase()))
        }
    })
}

fn is_exception(file: &str, case: &Case) -> Option<&'static str> {
    EXCEPTIONS
        .iter()
        .find(|(f, name, _)| *f == file && *name == case.name())
        .map(|(_, _, why)| *why)
}

fn describe(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("\n    {d}")).collect()
}

/// Runs one valid file; returns (accepted, total) and adds failures.
fn run_valid(file: &str, failures: &mut Vec<String>) -> (usize, usize) {
    let cases = cases(file);
    assert!(!cases.is_empty(), "{file} has no documents");
    let mut accepted = 0;
    for case in &cases {
        assert_eq!(case.err, None, "{file}: valid documents carry no _err");
        let (resources, diagnostics) = parse_str(Path::new(file), &case.body);
        let ok = resources.len() == 1 && !diagnostics.iter().any(Diagnostic::is_error);
        if ok && is_exception(file, case).is_some() {
            failures.push(format!(
                "{file} #{}: listed as an exception but passes",
                case.number
            ));
        } else if ok {
            accepted += 1;
        } else if let Some(why) = is_exception(file, case) {
            println!("  exception {file} #{} {}: {why}", case.number, case.name());
        } else {
            failures.push(format!(
                "{file} #{} {}: not accepted:{}",
                case.number,
                case.name(),
                describe(&diagnostics)
            ));
        }
    }
    (accepted, cases.len())
}

/// Runs one invalid file; returns (rejected at the right field, total) and adds failures.
fn run_invalid(file: &str, failures: &mut Vec<String>) -> (usize, usize) {
    let cases = cases(file);
    assert!(!cases.is_empty(), "{file} has no documents");
    let mut right = 0;
    for case in &cases {
        let err = case
            .err
            .as_deref()
            .unwrap_or_else(|| panic!("{file} #{}: invalid documents say why", case.number));
        let expect = expectation(err);
        let (resources, diagnostics) = parse_str(Path::new(file), &case.body);
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        let ok = resources.is_empty() && matches(&expect, &errors);
        if ok && is_exception(file, case).is_some() {
            failures.push(format!(
                "{file} #{}: listed as an exception but passes",
                case.number
            ));
        } else if ok {
            right += 1;
        } else if let Some(why) = is_exception(file, case) {
            println!("  exception {file} #{} {}: {why}", case.number, case.name());
        } else {
            failures.push(format!(
                "{file} #{} {} (_err {err:?}, expected {expect:?}): {}{}",
                case.number,
                case.name(),
                if resources.is_empty() {
                    "rejected elsewhere"
                } else {
                    "accepted"
                },
                describe(&diagnostics)
            ));
        }
    }
    (right, cases.len())
}

#[test]
fn istio_validation_cases() {
    let mut failures = Vec::new();
    for kind in KINDS {
        let valid = format!("{kind}-valid.yaml");
        let (ok, total) = run_valid(&valid, &mut failures);
        println!("{valid}: valid accepted {ok}/{total}");
        let invalid = format!("{kind}-invalid.yaml");
        let (ok, total) = run_invalid(&invalid, &mut failures);
        println!("{invalid}: invalid rejected at the right field {ok}/{total}");
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Telemetry is outside the mesh: each document is reported as a kind not supported yet,
/// with no error and no resource, whether Istio would accept it or not.
#[test]
fn telemetry_is_reported_as_unsupported() {
    for file in ["telemetry-valid.yaml", "telemetry-invalid.yaml"] {
        let cases = cases(file);
        assert!(!cases.is_empty(), "{file}");
        let mut reported = 0;
        for case in &cases {
            let (resources, diagnostics) = parse_str(Path::new(file), &case.body);
            assert!(resources.is_empty(), "{file} #{}", case.number);
            assert!(
                !diagnostics.iter().any(Diagnostic::is_error),
                "{file} #{}:{}",
                case.number,
                describe(&diagnostics)
            );
            let unsupported = diagnostics.iter().any(|d| {
                d.kind.as_deref() == Some("Telemetry")
                    && d.message
                        == "kind Telemetry (telemetry.istio.io) is not supported yet and is ignored"
            });
            if unsupported {
                reported += 1;
            }
        }
        println!("{file}: reported unsupported {reported}/{}", cases.len());
        assert_eq!(reported, cases.len(), "{file}");
    }
}

/// The one exception, with the YAML dialect difference taken out: everything else in the
/// document must validate.
#[test]
fn service_entry_full_with_a_quoted_ipv6_address_is_accepted() {
    let case = cases("serviceentry-valid.yaml")
        .into_iter()
        .find(|c| c.name() == "full")
        .unwrap_or_else(|| panic!("serviceentry-valid.yaml has no document named full"));
    let unquoted = "addresses: [1.2.3.4, 001:db8::]";
    assert!(case.body.contains(unquoted), "{}", case.body);
    let body = case
        .body
        .replace(unquoted, "addresses: [1.2.3.4, \"001:db8::\"]");
    let (resources, diagnostics) = parse_str(Path::new("serviceentry-valid.yaml"), &body);
    assert!(
        !diagnostics.iter().any(Diagnostic::is_error),
        "{}",
        describe(&diagnostics)
    );
    assert_eq!(resources.len(), 1);
}

#[test]
fn every_listed_exception_and_key_word_is_used() {
    // An exception or key-word entry nobody needs any more would hide a regression or rot.
    for (file, name, _) in EXCEPTIONS {
        assert!(
            cases(file).iter().any(|c| c.name() == *name),
            "exception for {file} {name} names no document"
        );
    }
    let reasons: Vec<String> = KINDS
        .iter()
        .flat_map(|kind| cases(&format!("{kind}-invalid.yaml")))
        .filter_map(|c| c.err)
        .collect();
    for (reason, _) in KEY_WORDS {
        assert!(
            reasons.iter().any(|r| r == reason),
            "key words for {reason:?} are not used by any case"
        );
    }
}
