//! What the upstream runner asserts, with its timings: the mesh comparator (status set,
//! headers at the backend joined by `,`, headers that must be absent, response headers, the
//! serving backend by name prefix), the retry loop (three passes in a row, 100 ms after a
//! failure, 30 s in all) and the weight helper (500-request rounds, shares within 0.05, ten
//! rounds at most). Two checks upstream declares but does not make are made here as well,
//! where a test declares them: the path the backend received (rewrites) and the redirect's
//! `Location`; and every answer from a backend must come from the mesh namespace, which the
//! name prefix alone cannot tell from the consumer namespace's `echo-v1`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::client::Answer;

/// Consecutive passes a case needs.
const PASSES: usize = 3;
/// The wait after a failed attempt.
const AFTER_FAILURE: Duration = Duration::from_millis(100);
/// How long a case may take to pass.
const CASE_LIMIT: Duration = Duration::from_secs(30);
/// Requests in one weight round.
pub const ROUND: usize = 500;
/// Rounds the weight helper tries.
const ROUNDS: usize = 10;
/// How far a backend's share may be from its weight's.
const TOLERANCE: f64 = 0.05;

/// What one case expects of an answer.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Acceptable statuses; `{200}` by default.
    pub statuses: Vec<u16>,
    /// The serving workload's name prefix (`echo-v1`); `None` accepts any answer.
    pub backend: Option<String>,
    /// The namespace the backend must report (with `backend`).
    pub namespace: Option<String>,
    /// Headers the backend must have received: all values joined with `,`.
    pub backend_headers: Vec<(String, String)>,
    pub absent_backend_headers: Vec<String>,
    /// Response headers: the last value.
    pub response_headers: Vec<(String, String)>,
    pub absent_response_headers: Vec<String>,
    /// The path and query the backend received (declared upstream, checked here).
    pub backend_path: Option<String>,
    /// The redirect's `Location` (declared upstream, checked here).
    pub location: Option<String>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            statuses: vec![200],
            backend: None,
            namespace: None,
            backend_headers: Vec::new(),
            absent_backend_headers: Vec::new(),
            response_headers: Vec::new(),
            absent_response_headers: Vec::new(),
            backend_path: None,
            location: None,
        }
    }
}

/// Why `answer` does not meet `expect`, or nothing when it does.
pub fn check(answer: &Answer, expect: &Expect) -> Result<(), String> {
    if !expect.statuses.contains(&answer.status) {
        return Err(format!(
            "status {} (expected {:?}); answer {}",
            answer.status,
            expect.statuses,
            describe(answer)
        ));
    }
    let received = answer.request_headers();
    let values = |name: &str| -> Vec<&str> {
        received
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    for (name, want) in &expect.backend_headers {
        let got = values(name);
        if got.is_empty() {
            return Err(format!(
                "the backend did not receive {name}; {}",
                describe(answer)
            ));
        }
        let joined = got.join(",");
        if joined != *want {
            return Err(format!(
                "the backend received {name}: {joined:?}, expected {want:?}; {}",
                describe(answer)
            ));
        }
    }
    for name in &expect.absent_backend_headers {
        let got = values(name);
        if !got.is_empty() {
            return Err(format!(
                "the backend received {name}: {got:?}, which should be absent; {}",
                describe(answer)
            ));
        }
    }
    for (name, want) in &expect.response_headers {
        match answer.response_header(name) {
            Some(v) if v == want => {}
            got => {
                return Err(format!(
                    "response header {name}: {got:?}, expected {want:?}; {}",
                    describe(answer)
                ))
            }
        }
    }
    for name in &expect.absent_response_headers {
        if let Some(v) = answer.response_header(name) {
            return Err(format!(
                "response header {name}: {v:?}, which should be absent; {}",
                describe(answer)
            ));
        }
    }
    if let Some(backend) = &expect.backend {
        match answer.hostname() {
            Some(h) if h.starts_with(backend.as_str()) => {}
            other => {
                return Err(format!(
                    "served by {other:?}, expected {backend}; {}",
                    describe(answer)
                ))
            }
        }
        if let Some(ns) = &expect.namespace {
            if answer.namespace() != Some(ns.as_str()) {
                return Err(format!(
                    "served from namespace {:?}, expected {ns}; {}",
                    answer.namespace(),
                    describe(answer)
                ));
            }
        }
    }
    if let Some(path) = &expect.backend_path {
        if answer.url() != Some(path.as_str()) {
            return Err(format!(
                "the backend received path {:?}, expected {path:?}; {}",
                answer.url(),
                describe(answer)
            ));
        }
    }
    if let Some(location) = &expect.location {
        if answer.response_header("location") != Some(location.as_str()) {
            return Err(format!(
                "Location {:?}, expected {location:?}; {}",
                answer.response_header("location"),
                describe(answer)
            ));
        }
    }
    Ok(())
}

/// A short account of an answer for failure messages.
fn describe(answer: &Answer) -> String {
    format!(
        "[status {}, served by {:?} in {:?}, path {:?}, response headers {:?}, backend headers \
         {:?}]",
        answer.status,
        answer.hostname(),
        answer.namespace(),
        answer.url(),
        answer.response_headers,
        answer.request_headers()
    )
}

/// Runs `attempt` until it passes [`PASSES`] times in a row, waiting [`AFTER_FAILURE`] after
/// each failure; fails with the last failure once [`CASE_LIMIT`] has passed.
pub fn eventually(mut attempt: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let start = Instant::now();
    let mut streak = 0;
    let mut last = String::from("never attempted");
    loop {
        if start.elapsed() > CASE_LIMIT {
            return Err(format!(
                "not {PASSES} passes in a row within {CASE_LIMIT:?}; last failure: {last}"
            ));
        }
        match attempt() {
            Ok(()) => {
                streak += 1;
                if streak == PASSES {
                    return Ok(());
                }
            }
            Err(e) => {
                streak = 0;
                last = e;
                std::thread::sleep(AFTER_FAILURE);
            }
        }
    }
}

/// The backend a weight round counts an answer for: the serving workload's name less its
/// last two `-`-separated parts (a pod's ReplicaSet hash and suffix), whole when it has
/// fewer than three.
pub fn backend_name(hostname: &str) -> &str {
    let parts: Vec<&str> = hostname.split('-').collect();
    if parts.len() < 3 {
        return hostname;
    }
    let keep: usize = parts[..parts.len() - 2].iter().map(|p| p.len() + 1).sum();
    &hostname[..keep - 1]
}

/// Judges one round of answers against `weights` (backend → weight): every answer from a
/// backend with a weight, as many distinct backends as have a weight above 0, and each share
/// within [`TOLERANCE`] of its weight's, computed as upstream does in `f64`.
pub fn judge_round(answers: &[Answer], weights: &[(&str, u32)]) -> Result<(), String> {
    if answers.len() != ROUND {
        return Err(format!("{} answers, expected {ROUND}", answers.len()));
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        let name = a.hostname().map(backend_name).unwrap_or("");
        if !weights.iter().any(|(b, _)| *b == name) {
            return Err(format!(
                "an answer from {:?} (status {}), not one of the weighted backends",
                a.hostname(),
                a.status
            ));
        }
        *seen.entry(name).or_default() += 1;
    }
    let expected = weights.iter().filter(|(_, w)| *w > 0).count();
    if seen.len() != expected {
        return Err(format!(
            "backends seen {seen:?}, expected {expected} of them"
        ));
    }
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    for (backend, weight) in weights {
        let want = f64::from(*weight) / f64::from(total);
        let count = seen.get(backend).copied().unwrap_or(0);
        let got = count as f64 / ROUND as f64;
        if (got - want).abs() > TOLERANCE {
            return Err(format!(
                "{backend} served {count} of {ROUND} ({got}), expected a share of {want} ± \
                 {TOLERANCE}; all: {seen:?}"
            ));
        }
    }
    Ok(())
}

/// The weight helper: `warm_up` through the retry loop, then rounds from `round` judged by
/// [`judge_round`] until one passes, at most [`ROUNDS`].
pub fn weighted(
    warm_up: impl FnMut() -> Result<(), String>,
    mut round: impl FnMut() -> Result<Vec<Answer>, String>,
    weights: &[(&str, u32)],
) -> Result<(), String> {
    eventually(warm_up).map_err(|e| format!("warm-up: {e}"))?;
    let mut failures = Vec::new();
    for _ in 0..ROUNDS {
        match round().and_then(|answers| judge_round(&answers, weights)) {
            Ok(()) => return Ok(()),
            Err(e) => failures.push(e),
        }
    }
    Err(format!("{ROUNDS} rounds failed: {failures:#?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(host: &str) -> Answer {
        Answer {
            status: 200,
            response_headers: Vec::new(),
            fields: vec![("Hostname".into(), host.into())],
        }
    }

    #[test]
    fn backend_names_drop_the_pod_suffixes() {
        assert_eq!(backend_name("echo-v1-0-0"), "echo-v1");
        assert_eq!(backend_name("echo-v1-6d4b9c8f7-x2k9p"), "echo-v1");
        assert_eq!(backend_name("echo-v1"), "echo-v1");
        assert_eq!(backend_name("echo-v1-a"), "echo");
    }

    #[test]
    fn rounds_pass_between_325_and_374() {
        let round = |v1: usize| -> Vec<Answer> {
            (0..ROUND)
                .map(|i| from(if i < v1 { "echo-v1-0-0" } else { "echo-v2-0-0" }))
                .collect()
        };
        let weights = [("echo-v1", 70), ("echo-v2", 30)];
        for v1 in [325, 350, 374] {
            assert!(judge_round(&round(v1), &weights).is_ok(), "{v1}");
        }
        for v1 in [324, 375, 500] {
            assert!(judge_round(&round(v1), &weights).is_err(), "{v1}");
        }
        let mut answers = round(350);
        answers[0] = Answer {
            status: 503,
            ..Answer::default()
        };
        assert!(judge_round(&answers, &weights).is_err());
    }

    #[test]
    fn values_join_with_a_comma_and_absent_means_absent() {
        let answer = Answer {
            status: 200,
            response_headers: vec![("X-Header-Set".into(), "set".into())],
            fields: vec![
                ("RequestHeader".into(), "X-Header-Add:a".into()),
                ("RequestHeader".into(), "x-header-add:b".into()),
                ("Hostname".into(), "echo-v1-0-0".into()),
            ],
        };
        let mut e = Expect {
            backend: Some("echo-v1".into()),
            backend_headers: vec![("x-header-add".into(), "a,b".into())],
            response_headers: vec![("x-header-set".into(), "set".into())],
            ..Expect::default()
        };
        assert_eq!(check(&answer, &e), Ok(()));
        e.backend_headers = vec![("x-header-add".into(), "a, b".into())];
        assert!(check(&answer, &e).is_err());
        e.backend_headers.clear();
        e.absent_backend_headers = vec!["X-HEADER-ADD".into()];
        assert!(check(&answer, &e).is_err());
        e.absent_backend_headers.clear();
        e.backend = Some("echo-v2".into());
        assert!(check(&answer, &e).is_err());
        e.backend = None;
        e.statuses = vec![404];
        assert!(check(&answer, &e).is_err());
    }
}
