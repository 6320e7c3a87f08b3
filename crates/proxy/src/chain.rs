//! What a call chain carries from hop to hop that is not the app's business: the caller's
//! remaining deadline, and whether a proxy further up already retries.
//!
//! Between proxies both travel in headers only proxies set (`x-trellis-*`, stripped from
//! whatever an app sends): [`DEADLINE`] is the time left, in milliseconds, when the request
//! left the client proxy; [`RETRY_LAYER`] says a proxy above retries this call.
//!
//! The app in the middle does not have to forward them. The server proxy remembers them for
//! the request's trace (its `traceparent` trace id) while the app works on it ([`Chains`]);
//! when the app calls onward with the same trace context — which apps must forward for
//! tracing anyway — the client proxy (the same process, beside the same app) finds them
//! there, so:
//!
//! * it does not start work the original caller has already given up on, and tells the next
//!   hop the time that is left;
//! * only the first proxy with retries in a chain retries: every attempt it sends is marked,
//!   and no proxy below retries a marked call. Three layers of three attempts would otherwise
//!   turn one failing request into 27 at the leaf.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

/// Milliseconds the caller still waits, as the request left the client proxy.
pub const DEADLINE: HeaderName = HeaderName::from_static("x-trellis-deadline-ms");

/// Set on every attempt of a call a proxy retries: proxies further down do not retry it.
pub const RETRY_LAYER: HeaderName = HeaderName::from_static("x-trellis-retry-layer");

/// What a call inherits from the chain it is part of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inherited {
    /// When the original caller stops waiting.
    pub deadline: Option<Instant>,
    /// A proxy above retries this call.
    pub retried_above: bool,
}

impl Inherited {
    /// Reads what a peer proxy sent; a malformed value is ignored (no deadline), never an
    /// error: the headers are advice for saving work, not part of the request.
    pub fn from_headers(headers: &HeaderMap, now: Instant) -> Self {
        let deadline = headers
            .get(DEADLINE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| now + Duration::from_millis(ms));
        Inherited {
            deadline,
            retried_above: headers.contains_key(RETRY_LAYER),
        }
    }

    /// The time left at `now`; `Some(ZERO)` once the deadline has passed.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(now))
    }

    /// The deadline of a call made now with `timeout` of its own: the earlier of the two.
    pub fn with_timeout(self, timeout: Option<Duration>, now: Instant) -> Self {
        let own = timeout.map(|t| now + t);
        Inherited {
            deadline: match (self.deadline, own) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            ..self
        }
    }

    /// Writes what the next hop inherits: the time left and, if this call is retried here or
    /// above, the retry mark.
    pub fn to_headers(self, headers: &mut HeaderMap, retried_here: bool, now: Instant) {
        headers.remove(DEADLINE);
        headers.remove(RETRY_LAYER);
        if let Some(left) = self.remaining(now) {
            let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            headers.insert(DEADLINE, HeaderValue::from(ms));
        }
        if self.retried_above || retried_here {
            headers.insert(RETRY_LAYER, HeaderValue::from_static("1"));
        }
    }
}

/// The chains the app is working on, by trace id.
#[derive(Debug, Default)]
pub struct Chains {
    open: Mutex<OpenChains>,
}

#[derive(Debug, Default)]
struct OpenChains {
    map: HashMap<[u8; 16], Open>,
    /// The size at which the next sweep of forgotten chains runs.
    sweep_at: usize,
}

#[derive(Debug)]
struct Open {
    inherited: Inherited,
    /// Requests of this trace being served at once (a trace may call a service twice).
    count: usize,
}

/// Keeps a request's chain known until dropped (when the app has answered it).
#[derive(Debug)]
pub struct Entered {
    chains: Arc<Chains>,
    trace_id: [u8; 16],
}

impl Chains {
    /// Remembers `inherited` for `trace_id` until the guard is dropped. Two requests of one
    /// trace at once keep the stricter of each: the earlier deadline, the retry mark if
    /// either has it.
    pub fn enter(self: &Arc<Self>, trace_id: [u8; 16], inherited: Inherited) -> Entered {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.map
            .entry(trace_id)
            .and_modify(|o| {
                o.count += 1;
                o.inherited.retried_above |= inherited.retried_above;
                o.inherited.deadline = match (o.inherited.deadline, inherited.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            })
            .or_insert(Open {
                inherited,
                count: 1,
            });
        Entered {
            chains: self.clone(),
            trace_id,
        }
    }

    /// What a call in `trace_id` inherits; nothing when the trace is not being served here
    /// (the app started it, or did not forward the trace context).
    pub fn lookup(&self, trace_id: &[u8; 16]) -> Inherited {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.map
            .get(trace_id)
            .map(|o| o.inherited)
            .unwrap_or_default()
    }

    /// Whether a chain is still remembered (served, or ended before its deadline).
    pub fn knows(&self, trace_id: &[u8; 16]) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .contains_key(trace_id)
    }

    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a chain stays known after its deadline once its requests have ended: calls an
/// app makes on behalf of a caller that left are refused for this long.
const RETAIN_AFTER_DEADLINE: Duration = Duration::from_secs(10);

impl Drop for Entered {
    /// A request that ends (or is abandoned) while it has a deadline leaves its chain known
    /// until [`RETAIN_AFTER_DEADLINE`] past that deadline: when the caller gives up, the app
    /// may not notice and go on to call onward, and those calls must find that the deadline
    /// has passed. A chain without a deadline is forgotten with its last request.
    fn drop(&mut self) {
        let now = Instant::now();
        let mut guard = self.chains.open.lock().unwrap_or_else(|p| p.into_inner());
        let open = &mut *guard;
        if let Some(o) = open.map.get_mut(&self.trace_id) {
            o.count = o.count.saturating_sub(1);
            if o.count == 0 && o.inherited.deadline.is_none() {
                open.map.remove(&self.trace_id);
            }
        }
        // Swept when the map has doubled since the last sweep: amortized constant time.
        if open.map.len() >= open.sweep_at {
            open.map.retain(|_, o| {
                o.count > 0
                    || o.inherited
                        .deadline
                        .is_some_and(|d| d + RETAIN_AFTER_DEADLINE > now)
            });
            open.sweep_at = (open.map.len() * 2).max(256);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_and_mark_travel_in_headers() {
        let now = Instant::now();
        let mut h = HeaderMap::new();
        Inherited::default()
            .with_timeout(Some(Duration::from_millis(1500)), now)
            .to_headers(&mut h, true, now + Duration::from_millis(500));
        assert_eq!(h.get(DEADLINE).unwrap(), "1000");
        assert_eq!(h.get(RETRY_LAYER).unwrap(), "1");
        let got = Inherited::from_headers(&h, now);
        assert_eq!(got.remaining(now), Some(Duration::from_millis(1000)));
        assert!(got.retried_above);
        // Without a timeout or a mark, nothing is sent, and stale values go.
        Inherited::default().to_headers(&mut h, false, now);
        assert!(h.is_empty(), "{h:?}");
        // Garbage is ignored.
        h.insert(DEADLINE, HeaderValue::from_static("soon"));
        assert_eq!(Inherited::from_headers(&h, now).deadline, None);
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let now = Instant::now();
        let caller = Inherited {
            deadline: Some(now + Duration::from_millis(300)),
            retried_above: false,
        };
        let d = caller.with_timeout(Some(Duration::from_secs(1)), now);
        assert_eq!(d.remaining(now), Some(Duration::from_millis(300)));
        let d = caller.with_timeout(Some(Duration::from_millis(100)), now);
        assert_eq!(d.remaining(now), Some(Duration::from_millis(100)));
        assert_eq!(
            caller.remaining(now + Duration::from_secs(2)),
            Some(Duration::ZERO)
        );
        assert_eq!(Inherited::default().with_timeout(None, now).deadline, None);
    }

    #[test]
    fn chains_are_known_while_served() {
        let chains = Arc::new(Chains::default());
        let now = Instant::now();
        let t = [7u8; 16];
        assert_eq!(chains.lookup(&t), Inherited::default());
        let a = chains.enter(
            t,
            Inherited {
                deadline: Some(now + Duration::from_secs(5)),
                retried_above: false,
            },
        );
        let b = chains.enter(
            t,
            Inherited {
                deadline: Some(now + Duration::from_secs(1)),
                retried_above: true,
            },
        );
        let got = chains.lookup(&t);
        assert_eq!(got.remaining(now), Some(Duration::from_secs(1)));
        assert!(got.retried_above);
        drop(a);
        assert!(chains.lookup(&t).retried_above, "still served once");
        drop(b);
        // Ended with a deadline: still known, so a call the app makes after its caller left
        // finds that the deadline has passed.
        assert!(chains.knows(&t));
        let u = [8u8; 16];
        drop(chains.enter(u, Inherited::default()));
        assert!(!chains.knows(&u), "without a deadline, forgotten at once");
    }

    #[test]
    fn ended_chains_are_swept_after_their_retention() {
        let chains = Arc::new(Chains::default());
        let long_ago = Instant::now() - RETAIN_AFTER_DEADLINE - Duration::from_secs(1);
        for i in 0..300u16 {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&i.to_be_bytes());
            drop(chains.enter(
                id,
                Inherited {
                    deadline: Some(long_ago),
                    retried_above: false,
                },
            ));
        }
        assert!(chains.len() < 256, "{} chains kept", chains.len());
    }
}
