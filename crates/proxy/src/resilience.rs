//! What keeps one slow or failing service from taking its callers down with it:
//!
//! * [`OutlierDetector`]: DestinationRule `outlierDetection` — an endpoint that answers with
//!   too many consecutive 5xx (or gateway errors: 502, 503, 504 and connection failures) is
//!   ejected from balancing for `baseEjectionTime` × the number of times it has been ejected,
//!   never more than `maxEjectionPercent` of the endpoints at once (but at least one, as
//!   Envoy does), and returns by itself when its time is up;
//! * [`RetryBudget`]: retries may add at most a ratio of the requests (20 % by default) plus
//!   a small floor per second, over a sliding window, so that retries cannot multiply load
//!   on a service that is already failing (Finagle's and Linkerd's retry budgets);
//! * [`ConcurrencyLimit`]: DestinationRule `connectionPool` — at most so many requests at
//!   once to a destination, then at most so many waiting; past both, fail fast (503, flag
//!   `UO`) rather than queue without bound.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

// === outlier detection ===

/// DestinationRule `outlierDetection`, with Istio's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive 5xx answers (and connection failures) that eject; `None`: not checked.
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway errors (502, 503, 504, connection failures) that eject.
    pub consecutive_gateway_errors: Option<u32>,
    /// Istio's `interval`: how often ejections are reconsidered. Here an ejection ends
    /// when its time is up, checked whenever the endpoint is considered; the interval only
    /// rounds the ejection's end up to a multiple of it, as Envoy's sweep would.
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// `splitExternalLocalOriginErrors`: failures of the proxy's own to reach the endpoint
    /// (no connection, a reset, a timeout) are counted apart, against this many in a row;
    /// `None`: they count as gateway errors (and so as 5xx).
    pub consecutive_local_origin: Option<u32>,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: Some(5),
            consecutive_gateway_errors: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            consecutive_local_origin: None,
        }
    }
}

/// How an answer counts for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Any status below 500.
    Success,
    /// 500, 501, 505…: a 5xx that is not a gateway error.
    ServerError,
    /// 502, 503, 504 from the endpoint.
    GatewayError,
    /// No answer: no connection, a reset, a timeout.
    LocalOrigin,
}

impl Answer {
    pub fn of_status(status: u16) -> Answer {
        match status {
            502..=504 => Answer::GatewayError,
            500..=599 => Answer::ServerError,
            _ => Answer::Success,
        }
    }
}

#[derive(Debug, Default)]
struct EndpointHealth {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    ejected_until: Option<Instant>,
    times_ejected: u32,
}

/// Outlier state of one destination's endpoints.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: Mutex<HashMap<SocketAddr, EndpointHealth>>,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig) -> Self {
        OutlierDetector {
            config,
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Records an answer from `addr`, one of `total` endpoints; true when it ejected it.
    pub fn record(&self, addr: SocketAddr, answer: Answer, total: usize, now: Instant) -> bool {
        let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let ejected_now = eps
            .values()
            .filter(|h| h.ejected_until.is_some_and(|t| t > now))
            .count();
        let h = eps.entry(addr).or_default();
        let split = self.config.consecutive_local_origin;
        // Without the split, a failure to reach the endpoint is a gateway error (Envoy
        // counts it as a 503).
        let answer = match answer {
            Answer::LocalOrigin if split.is_none() => Answer::GatewayError,
            a => a,
        };
        match answer {
            Answer::Success => {
                h.consecutive_5xx = 0;
                h.consecutive_gateway = 0;
                h.consecutive_local = 0;
                return false;
            }
            Answer::ServerError => {
                h.consecutive_5xx += 1;
                h.consecutive_gateway = 0;
                h.consecutive_local = 0;
            }
            Answer::GatewayError => {
                h.consecutive_5xx += 1;
                h.consecutive_gateway += 1;
                h.consecutive_local = 0;
            }
            Answer::LocalOrigin => h.consecutive_local += 1,
        }
        if h.ejected_until.is_some_and(|t| t > now) {
            return false;
        }
        let tripped = self
            .config
            .consecutive_5xx
            .is_some_and(|n| n > 0 && h.consecutive_5xx >= n)
            || self
                .config
                .consecutive_gateway_errors
                .is_some_and(|n| n > 0 && h.consecutive_gateway >= n)
            || split.is_some_and(|n| n > 0 && h.consecutive_local >= n);
        if !tripped {
            return false;
        }
        // At most max% of the endpoints out at once, but one may always go (Envoy).
        let allowed = (total * self.config.max_ejection_percent as usize / 100).max(1);
        if ejected_now >= allowed {
            return false;
        }
        h.times_ejected += 1;
        let mut duration = self.config.base_ejection_time * h.times_ejected;
        let interval = self.config.interval.as_millis().max(1);
        let rounded = duration.as_millis().div_ceil(interval) * interval;
        duration = Duration::from_millis(u64::try_from(rounded).unwrap_or(u64::MAX));
        h.ejected_until = Some(now + duration);
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        h.consecutive_local = 0;
        true
    }

    /// Whether `addr` is out of balancing at `now`.
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        let eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        eps.get(&addr)
            .and_then(|h| h.ejected_until)
            .is_some_and(|t| t > now)
    }
}

// === retry budget ===

/// Retries allowed on top of requests: `ratio` of the requests in the last `window`, plus
/// `min_per_second` over that window (so a quiet service can still retry at all).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    pub ratio: f64,
    pub min_per_second: u32,
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.2,
            min_per_second: 1,
            window: Duration::from_secs(10),
        }
    }
}

/// A client proxy's retry budget for one destination.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// (second, requests, retries), oldest first, at most one entry per second of the window.
    seconds: Mutex<VecDeque<(u64, u64, u64)>>,
    epoch: Instant,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            config,
            seconds: Mutex::new(VecDeque::new()),
            epoch: Instant::now(),
        }
    }

    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    fn with_current<T>(
        &self,
        now: Instant,
        f: impl FnOnce(&mut VecDeque<(u64, u64, u64)>) -> T,
    ) -> T {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let window = self.config.window.as_secs().max(1);
        let mut seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        while seconds
            .front()
            .is_some_and(|(s, _, _)| *s + window <= second)
        {
            seconds.pop_front();
        }
        if seconds.back().is_none_or(|(s, _, _)| *s != second) {
            seconds.push_back((second, 0, 0));
        }
        f(&mut seconds)
    }

    /// Counts an original request (not a retry).
    pub fn deposit(&self, now: Instant) {
        self.with_current(now, |s| {
            if let Some(last) = s.back_mut() {
                last.1 += 1;
            }
        });
    }

    /// Takes a retry from the budget; false when it is spent (the failure is returned as is).
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let window = self.config.window.as_secs_f64();
        let (ratio, floor) = (self.config.ratio, f64::from(self.config.min_per_second));
        self.with_current(now, |s| {
            let requests: u64 = s.iter().map(|e| e.1).sum();
            let retries: u64 = s.iter().map(|e| e.2).sum();
            let allowed = ratio * requests as f64 + floor * window;
            if (retries as f64) < allowed {
                if let Some(last) = s.back_mut() {
                    last.2 += 1;
                }
                true
            } else {
                false
            }
        })
    }
}

// === connection pool limits ===

/// Too many requests to the destination already: answered 503 with flag `UO`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many requests to {destination}: {in_flight} in flight and {pending} waiting")]
pub struct Overflow {
    pub destination: String,
    pub in_flight: usize,
    pub pending: usize,
}

/// DestinationRule `connectionPool` limits for one destination: at most `max_requests` at
/// once (Istio's `http2MaxRequests`), at most `max_pending` waiting for one to finish
/// (`http1MaxPendingRequests`).
#[derive(Debug)]
pub struct ConcurrencyLimit {
    name: String,
    max_requests: usize,
    max_pending: usize,
    permits: Arc<Semaphore>,
    pending: AtomicUsize,
}

/// A request's place under its destination's limit, held until it ends.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl ConcurrencyLimit {
    pub fn new(name: impl Into<String>, max_requests: usize, max_pending: usize) -> Self {
        let max_requests = max_requests.max(1);
        ConcurrencyLimit {
            name: name.into(),
            max_requests,
            max_pending,
            permits: Arc::new(Semaphore::new(max_requests)),
            pending: AtomicUsize::new(0),
        }
    }

    /// A slot now, or after waiting behind at most `max_pending` others; [`Overflow`] at once
    /// when that queue is full too.
    pub async fn acquire(&self) -> Result<Slot, Overflow> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        let waiting = self.pending.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overflow());
        }
        // Decremented however the wait ends (a cancelled request included).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.pending);
        match self.permits.clone().acquire_owned().await {
            Ok(permit) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; treat it as full if it ever were.
            Err(_) => Err(self.overflow()),
        }
    }

    fn overflow(&self) -> Overflow {
        Overflow {
            destination: self.name.clone(),
            in_flight: self.max_requests - self.permits.available_permits(),
            pending: self.pending.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests;
