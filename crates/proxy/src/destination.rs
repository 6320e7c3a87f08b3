//! DestinationRule traffic policy on the request path: for the destination a request is
//! going to (service, port, subset), which endpoint gets it and what may refuse it.
//!
//! * The balancer ([`crate::balance`]) the policy names picks among the endpoints that outlier
//!   detection has not ejected. With a consistent hash, the key is read from the request
//!   (header, cookie, query parameter) or is the client workload's own address.
//! * Connection-pool limits ([`crate::resilience::ConcurrencyLimit`]) and outlier detection
//!   ([`crate::resilience::OutlierDetector`]) keep state per destination, in [`Destinations`],
//!   across snapshots: a new snapshot with the same policy keeps the counts and ejections, a
//!   changed policy starts afresh.
//!
//! A destination whose policy has neither keeps no state at all, so the common case costs a
//! lookup in the (immutable) snapshot only.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trellis_api::destination::{HashOn, LoadBalancer, Outlier, Policy};

use crate::balance::{self, Policy as Algorithm};
use crate::resilience::{Answer, ConcurrencyLimit, OutlierConfig, OutlierDetector};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    subset: Option<String>,
}

/// What is kept for one destination with limits or outlier detection.
#[derive(Debug)]
pub struct DestinationState {
    policy: Policy,
    /// `None`: no outlier detection.
    pub outlier: Option<OutlierDetector>,
    /// `None`: no request limit.
    pub limit: Option<ConcurrencyLimit>,
}

/// The state of every destination this proxy has sent to with a stateful policy.
#[derive(Debug, Default)]
pub struct Destinations {
    // A plain mutex: held for a map lookup, never across an await.
    by_key: Mutex<HashMap<Key, Arc<DestinationState>>>,
}

impl Destinations {
    /// The state for requests to `port` of `host` (`subset`, if any) under `policy`; `None`
    /// when the policy keeps none.
    pub fn get(
        &self,
        host: &str,
        port: u16,
        subset: Option<&str>,
        policy: &Policy,
    ) -> Option<Arc<DestinationState>> {
        if !policy.is_stateful() {
            return None;
        }
        let key = Key {
            host: host.to_owned(),
            port,
            subset: subset.map(str::to_owned),
        };
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&key) {
            if s.policy == *policy {
                return Some(s.clone());
            }
        }
        let name = match subset {
            Some(s) => format!("{host}:{port} subset {s}"),
            None => format!("{host}:{port}"),
        };
        let state = Arc::new(DestinationState {
            policy: policy.clone(),
            outlier: policy
                .outlier
                .as_ref()
                .map(|o| OutlierDetector::new(config(o))),
            limit: policy
                .pool
                .as_ref()
                .filter(|p| p.max_requests != u32::MAX)
                .map(|p| {
                    ConcurrencyLimit::new(
                        name,
                        usize::try_from(p.max_requests).unwrap_or(usize::MAX),
                        usize::try_from(p.max_pending).unwrap_or(usize::MAX),
                    )
                }),
        });
        map.insert(key, state.clone());
        state.into()
    }
}

fn config(o: &Outlier) -> OutlierConfig {
    let nonzero = |n: u32| (n > 0).then_some(n);
    OutlierConfig {
        consecutive_5xx: nonzero(o.consecutive_5xx),
        consecutive_gateway_errors: nonzero(o.consecutive_gateway_errors),
        interval: Duration::from_millis(o.interval_ms),
        base_ejection_time: Duration::from_millis(o.base_ejection_ms),
        max_ejection_percent: o.max_ejection_percent,
        consecutive_local_origin: o.consecutive_local_origin,
    }
}

/// The endpoints (indices into `addrs`) a request may go to: those not ejected. If that
/// leaves fewer than `min_health_percent` of them, all of them (Envoy's panic mode, which
/// Istio turns on only when a rule sets `minHealthPercent`).
pub fn admitted(
    state: Option<&DestinationState>,
    addrs: &[SocketAddr],
    now: Instant,
) -> Vec<usize> {
    let all = || (0..addrs.len()).collect();
    let Some((detector, outlier)) =
        state.and_then(|s| Some((s.outlier.as_ref()?, s.policy.outlier.as_ref()?)))
    else {
        return all();
    };
    let healthy: Vec<usize> = (0..addrs.len())
        .filter(|i| !detector.is_ejected(addrs[*i], now))
        .collect();
    let min = u64::from(outlier.min_health_percent);
    let share = healthy.len() as u64 * 100;
    if min > 0 && share < min * addrs.len() as u64 {
        return all();
    }
    healthy
}

/// The balancer algorithm for a policy.
pub fn algorithm(lb: &LoadBalancer) -> Algorithm {
    match lb {
        LoadBalancer::PeakEwma => Algorithm::PeakEwma,
        LoadBalancer::RoundRobin => Algorithm::RoundRobin,
        LoadBalancer::LeastRequest => Algorithm::LeastRequest,
        LoadBalancer::Random => Algorithm::Random,
        LoadBalancer::ConsistentHash(_) => Algorithm::ConsistentHash,
    }
}

/// The consistent-hash key of a request: from `headers` and `query` for the HTTP sources,
/// `source` (the client workload's address) for `useSourceIp`. `None` when the request has
/// no such value: it is then balanced at random.
pub fn hash_key(
    on: &HashOn,
    headers: &http::HeaderMap,
    query: Option<&str>,
    source: IpAddr,
) -> Option<u64> {
    match on {
        HashOn::Header(name) => {
            let mut values = headers.get_all(name.as_str()).iter().peekable();
            values.peek()?;
            // Several values hash together, in order.
            let joined: Vec<&[u8]> = values.map(|v| v.as_bytes()).collect();
            Some(balance::hash_key(&joined.concat()))
        }
        HashOn::Cookie(name) => cookie(headers, name).map(|v| balance::hash_key(v.as_bytes())),
        HashOn::SourceIp => Some(balance::hash_key(source.to_string().as_bytes())),
        HashOn::QueryParameter(name) => query?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| balance::hash_key(v.as_bytes())),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// How an attempt's outcome counts for outlier detection: a status by its class (one of
/// `error_codes`, the rule's extra error statuses, as a 5xx), and no answer (no connection,
/// a reset, a timeout) as a local-origin failure. `None`: the client's fault, which says
/// nothing about the endpoint and is not counted at all (only upstream faults may eject).
pub fn answer_of(outcome: &crate::route::Attempt, error_codes: &[u16]) -> Option<Answer> {
    use crate::route::Attempt;
    match outcome {
        Attempt::Answered { status, .. } => Some(match Answer::of_status(*status) {
            Answer::Success if error_codes.contains(status) => Answer::ServerError,
            answer => answer,
        }),
        Attempt::ConnectFailure | Attempt::Reset | Attempt::Timeout => Some(Answer::LocalOrigin),
        Attempt::ClientFault => None,
    }
}

impl DestinationState {
    /// The statuses below 500 the destination's outlier detection counts as errors.
    pub fn error_codes(&self) -> &[u16] {
        self.policy
            .outlier
            .as_ref()
            .map_or(&[], |o| o.error_codes.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::destination::PoolLimits;

    fn outlier_policy() -> Policy {
        Policy {
            outlier: Some(Outlier {
                consecutive_5xx: 2,
                max_ejection_percent: 100,
                ..Outlier::default()
            }),
            ..Policy::default()
        }
    }

    #[test]
    fn state_is_kept_while_the_policy_stays_and_dropped_when_it_changes() {
        let d = Destinations::default();
        assert!(d.get("a", 80, None, &Policy::default()).is_none());
        let p = outlier_policy();
        let first = d.get("a", 80, None, &p).expect("stateful");
        let again = d.get("a", 80, None, &p).expect("stateful");
        assert!(Arc::ptr_eq(&first, &again));
        // Another port, another subset: other destinations.
        assert!(!Arc::ptr_eq(&first, &d.get("a", 81, None, &p).expect("s")));
        assert!(!Arc::ptr_eq(
            &first,
            &d.get("a", 80, Some("v1"), &p).expect("s")
        ));
        let mut changed = p.clone();
        changed.pool = Some(PoolLimits {
            max_requests: 3,
            ..PoolLimits::default()
        });
        let fresh = d.get("a", 80, None, &changed).expect("stateful");
        assert!(!Arc::ptr_eq(&first, &fresh));
        assert!(fresh.limit.is_some());
        // Only a pending limit: no request limit to enforce.
        changed.pool = Some(PoolLimits {
            max_pending: 1,
            ..PoolLimits::default()
        });
        assert!(d.get("a", 80, None, &changed).expect("s").limit.is_none());
    }

    #[test]
    fn ejected_endpoints_are_not_admitted_unless_too_few_remain() {
        let d = Destinations::default();
        let addrs: Vec<SocketAddr> = (1..=4)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 15008)))
            .collect();
        let mut p = outlier_policy();
        let s = d.get("a", 80, None, &p).expect("stateful");
        let now = Instant::now();
        assert_eq!(admitted(Some(&s), &addrs, now), [0, 1, 2, 3]);
        let detector = s.outlier.as_ref().expect("detector");
        for _ in 0..2 {
            detector.record(addrs[1], Answer::ServerError, 4, now);
        }
        assert_eq!(admitted(Some(&s), &addrs, now), [0, 2, 3]);
        // Back after the base ejection time (rounded up to the interval).
        assert_eq!(
            admitted(Some(&s), &addrs, now + Duration::from_secs(31)),
            [0, 1, 2, 3]
        );
        // With minHealthPercent 80, 3 of 4 in is too few: everyone is used.
        p.outlier.as_mut().expect("o").min_health_percent = 80;
        let s = d.get("a", 80, None, &p).expect("stateful");
        let detector = s.outlier.as_ref().expect("detector");
        for _ in 0..2 {
            detector.record(addrs[1], Answer::ServerError, 4, now);
        }
        assert_eq!(admitted(Some(&s), &addrs, now), [0, 1, 2, 3]);
    }

    #[test]
    fn answers_count_by_class_and_by_the_rules_extra_codes() {
        use crate::route::Attempt;
        let answered = |status| Attempt::Answered { status, grpc: None };
        let of = |outcome: &Attempt, codes: &[u16]| answer_of(outcome, codes);
        assert_eq!(of(&answered(200), &[]), Some(Answer::Success));
        assert_eq!(of(&answered(429), &[]), Some(Answer::Success));
        assert_eq!(of(&answered(429), &[429]), Some(Answer::ServerError));
        assert_eq!(of(&answered(500), &[]), Some(Answer::ServerError));
        assert_eq!(of(&answered(503), &[429]), Some(Answer::GatewayError));
        assert_eq!(of(&Attempt::Reset, &[]), Some(Answer::LocalOrigin));
        assert_eq!(of(&Attempt::Timeout, &[]), Some(Answer::LocalOrigin));
        assert_eq!(of(&Attempt::ConnectFailure, &[]), Some(Answer::LocalOrigin));
        // The client's fault is not the endpoint's: not counted at all.
        assert_eq!(of(&Attempt::ClientFault, &[]), None);
    }

    #[test]
    fn hash_keys_come_from_the_named_part_of_the_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "alice".parse().expect("value"));
        headers.insert(
            http::header::COOKIE,
            "theme=dark; session=s1".parse().expect("value"),
        );
        let ip: IpAddr = [10, 0, 0, 9].into();
        let key = |on: HashOn, q: Option<&str>| hash_key(&on, &headers, q, ip);
        let alice = balance::hash_key(b"alice");
        assert_eq!(key(HashOn::Header("x-user".into()), None), Some(alice));
        assert_eq!(key(HashOn::Header("x-none".into()), None), None);
        assert_eq!(
            key(HashOn::Cookie("session".into()), None),
            Some(balance::hash_key(b"s1"))
        );
        assert_eq!(key(HashOn::Cookie("none".into()), None), None);
        assert_eq!(
            key(HashOn::QueryParameter("u".into()), Some("a=1&u=alice")),
            Some(alice)
        );
        assert_eq!(key(HashOn::QueryParameter("u".into()), Some("a=1")), None);
        assert_eq!(key(HashOn::QueryParameter("u".into()), None), None);
        assert_eq!(
            key(HashOn::SourceIp, None),
            Some(balance::hash_key(b"10.0.0.9"))
        );
    }
}
