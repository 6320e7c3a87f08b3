//! What a call chain carries from hop to hop that is not the app's business: the caller's
//! remaining deadline, and whether a proxy further up already retries.
//!
//! Between proxies both travel in headers only proxies set (`x-trellis-*`, stripped from
//! whatever an app sends): [`DEADLINE`] is the time left, in milliseconds, when the request
//! left the client proxy; [`RETRY_LAYER`] says a proxy above retries this call.
//!
//! The app in the middle does not have to forward them. The server proxy remembers them for
//! the request while the app works on it ([`Chains`]); when the app calls onward with the
//! trace context it was given — which apps must forward for tracing anyway — the client
//! proxy (the same process, beside the same app) finds them there, so:
//!
//! * it does not start work the original caller has already given up on, and tells the next
//!   hop the time that is left;
//! * only the first proxy with retries in a chain retries: every attempt it sends is marked,
//!   and no proxy below retries a marked call. Three layers of three attempts would otherwise
//!   turn one failing request into 27 at the leaf.
//!
//! **What the state is keyed by, and why it cannot be forged.** Both pieces of state are
//! harmful in the wrong hands: a deadline that has passed makes every call that finds it
//! fail with 504 without being sent, and a retry mark switches retries off. Trace ids are no
//! secret — the front door accepts a client's `traceparent`, and any peer proxy sends what it
//! likes — so state keyed by the trace id alone let anyone who knew or picked a trace id
//! fail other clients' requests of that trace for seconds. The key is therefore a
//! [`ChainKey`]: the trace id *and the span id this proxy handed the app* with the request
//! — the server span's, or one minted for the purpose when telemetry is off ([`bind`]).
//! That span id is drawn at random (a CSPRNG) by this proxy and overwrites whatever the
//! caller sent, so no caller can choose it or know it in advance; it reaches only the app
//! serving that one request, and comes back only on the calls that app makes for it. A
//! caller's deadline and mark thus reach only its own request's onward calls. The price:
//! an app that starts spans of its own sends its calls with its own span id as the parent,
//! and they inherit nothing (the chain fails open: no deadline, retries allowed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::trace::TraceContext;

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

/// Which request a chain's state belongs to: the trace id and the span id the server proxy
/// handed the app with the request (see the module's doc for why it cannot be forged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainKey {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl ChainKey {
    /// The key a trace context names: on the server side, the context handed to the app; on
    /// the client side, the one the app sent with its call (its parent is the span it was
    /// handed).
    pub fn of(ctx: &TraceContext) -> Self {
        ChainKey {
            trace_id: ctx.trace_id,
            span_id: ctx.span_id,
        }
    }
}

/// The key of a request's chain, once the trace context the app will receive is this
/// proxy's own. `span_minted`: telemetry has just written the server span's context into
/// `headers` (its span id was drawn here). Otherwise the caller's span id is replaced with
/// one drawn here — the caller's own could be anyone's choice — and a trace is started
/// when the caller sent none, so that the app has a context to forward.
pub fn bind(headers: &mut HeaderMap, span_minted: bool) -> Option<ChainKey> {
    if span_minted {
        return crate::trace::extract(headers).map(|ctx| ChainKey::of(&ctx));
    }
    let mut ctx = crate::trace::extract(headers).unwrap_or_else(|| TraceContext {
        trace_id: random_id(),
        span_id: random_id(),
        sampled: false,
        tracestate: None,
    });
    ctx.span_id = random_id();
    crate::trace::inject(headers, &ctx);
    Some(ChainKey::of(&ctx))
}

/// A random id, never all zeros (W3C's "invalid"), from the thread's CSPRNG.
fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

/// The chains the app is working on, by [`ChainKey`].
#[derive(Debug, Default)]
pub struct Chains {
    open: Mutex<OpenChains>,
}

#[derive(Debug, Default)]
struct OpenChains {
    map: HashMap<ChainKey, Open>,
    /// The size at which the next sweep of forgotten chains runs.
    sweep_at: usize,
}

#[derive(Debug)]
struct Open {
    inherited: Inherited,
    /// Requests of this chain being served at once.
    count: usize,
    /// Once its requests have ended: when it is forgotten.
    forget_at: Option<Instant>,
}

/// Keeps a request's chain known until dropped (when the app has answered it).
#[derive(Debug)]
pub struct Entered {
    chains: Arc<Chains>,
    key: ChainKey,
}

impl Chains {
    /// Remembers `inherited` for `key` until the guard is dropped. Two requests under one key
    /// at once keep the stricter of each: the earlier deadline, the retry mark if either has
    /// it.
    pub fn enter(self: &Arc<Self>, key: ChainKey, inherited: Inherited) -> Entered {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.map
            .entry(key)
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
                forget_at: None,
            });
        Entered {
            chains: self.clone(),
            key,
        }
    }

    /// What a call under `key` inherits; nothing when no request served here was handed that
    /// context (the app started the trace, did not forward the context, or made it up).
    pub fn lookup(&self, key: &ChainKey) -> Inherited {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.map.get(key).map(|o| o.inherited).unwrap_or_default()
    }

    /// Whether a chain is still remembered (served, or ended before its deadline).
    pub fn knows(&self, key: &ChainKey) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .contains_key(key)
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
    /// has passed. A deadline is the caller's number, though: one far away keeps the chain
    /// no longer than if it passed [`RETAIN_AFTER_DEADLINE`] from now, so every request's
    /// chain is forgotten at most twice that after it ends. A chain without a deadline is
    /// forgotten with its last request.
    fn drop(&mut self) {
        let now = Instant::now();
        let mut guard = self.chains.open.lock().unwrap_or_else(|p| p.into_inner());
        let open = &mut *guard;
        if let Some(o) = open.map.get_mut(&self.key) {
            o.count = o.count.saturating_sub(1);
            if o.count == 0 {
                match o.inherited.deadline {
                    None => {
                        open.map.remove(&self.key);
                    }
                    Some(d) => {
                        let until = d.min(now + RETAIN_AFTER_DEADLINE) + RETAIN_AFTER_DEADLINE;
                        o.forget_at = Some(until);
                    }
                }
            }
        }
        // Swept when the map has doubled since the last sweep: amortized constant time.
        if open.map.len() >= open.sweep_at {
            open.map
                .retain(|_, o| o.count > 0 || o.forget_at.is_some_and(|t| t > now));
            open.sweep_at = (open.map.len() * 2).max(256);
        }
    }
}

#[cfg(test)]
mod tests;
