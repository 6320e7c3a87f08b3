//! Load balancing across a destination's endpoints, as DestinationRule's `loadBalancer`
//! names the algorithms:
//!
//! * `ROUND_ROBIN`: each endpoint in turn;
//! * `LEAST_REQUEST`: power of two choices — two endpoints at random, the one with fewer
//!   requests in flight (Envoy's default for this policy);
//! * `RANDOM`;
//! * consistent hash (header, cookie, source IP): rendezvous hashing, so an endpoint that
//!   leaves moves only its own keys;
//! * the default, latency-aware: power of two choices by *peak EWMA* cost — an endpoint's
//!   smoothed latency (a slower answer counts at once, a faster one decays in over
//!   [`EWMA_DECAY`]) times its requests in flight plus one. A slow or overloaded endpoint
//!   gets fewer requests before any error is seen. An estimate that no answer refreshes
//!   decays back towards the default over [`IDLE_DECAY`], as linkerd2-proxy's does: an
//!   endpoint whose cost jumped once (a restart, a pause, a burst of slow failures) would
//!   otherwise never be picked again, so never answer, so never look cheaper.
//!
//! Each endpoint's statistics are kept by address for the life of the proxy (an endpoint that
//! comes back keeps its history); a request is counted in flight from [`Balancer::start`]
//! until its [`InFlight`] guard is dropped.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

/// How long an old latency observation keeps weight in the moving average (time constant).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// How fast an estimate nobody refreshes falls back towards [`DEFAULT_RTT`] (time constant).
/// A 3 s peak is back to the 1–2 ms of a healthy endpoint on loopback or a LAN within about
/// 9 s: the endpoint gets its share back within seconds of recovering, and a request
/// or two tells whether it really has.
pub const IDLE_DECAY: Duration = Duration::from_secs(1);

/// The latency an endpoint is assumed to have before its first answer: new endpoints are
/// tried, but not flooded.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// The algorithm a destination uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastRequest,
    Random,
    /// Rendezvous hashing on the request's hash key (header, cookie or source IP, chosen by
    /// the route); without a key, random.
    ConsistentHash,
    /// Power of two choices by peak-EWMA cost; the default.
    #[default]
    PeakEwma,
}

/// What the balancer knows of one endpoint.
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    /// (smoothed latency in seconds, when it was last updated).
    ewma: Mutex<(f64, Instant)>,
}

impl EndpointStats {
    fn new() -> Self {
        EndpointStats {
            in_flight: AtomicU32::new(0),
            ewma: Mutex::new((DEFAULT_RTT.as_secs_f64(), Instant::now())),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The smoothed latency in seconds as of `now`: the last estimate, decayed towards the default for
    /// as long as no answer refreshed it.
    fn latency_at(&self, now: Instant) -> f64 {
        let (ewma, last) = *self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        decayed(ewma, last, now)
    }

    /// Peak EWMA: a sample above the average replaces it (react to trouble at once); one
    /// below is blended in with a weight that grows with the time since the last sample.
    fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_secs_f64();
        let mut guard = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        let (ewma, last) = *guard;
        let ewma = decayed(ewma, last, now);
        let next = if sample > ewma {
            sample
        } else {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            let w = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
            ewma * w + sample * (1.0 - w)
        };
        *guard = (next, now);
    }

    /// The peak-EWMA cost of sending one more request here, as of `now`.
    fn cost_at(&self, now: Instant) -> f64 {
        self.latency_at(now) * f64::from(self.in_flight() + 1)
    }
}

/// `estimate` (seconds, last refreshed at `last`) as of `now`: its excess over
/// [`DEFAULT_RTT`] shrinks by e every [`IDLE_DECAY`] without a refresh.
fn decayed(estimate: f64, last: Instant, now: Instant) -> f64 {
    let default = DEFAULT_RTT.as_secs_f64();
    if estimate <= default {
        return estimate;
    }
    let idle = now.saturating_duration_since(last).as_secs_f64();
    default + (estimate - default) * (-idle / IDLE_DECAY.as_secs_f64()).exp()
}

/// A request counted in flight at its endpoint until dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<EndpointStats>,
    started: Instant,
}

impl InFlight {
    /// Records the request's latency (call when its response head arrived, or it failed).
    pub fn observe(&self) {
        let now = Instant::now();
        self.stats
            .observe(now.saturating_duration_since(self.started), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The statistics of every endpoint this proxy has sent to, and the round-robin cursor.
#[derive(Debug, Default)]
pub struct Balancer {
    stats: Mutex<HashMap<SocketAddr, Arc<EndpointStats>>>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn stats(&self, addr: SocketAddr) -> Arc<EndpointStats> {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats
            .entry(addr)
            .or_insert_with(|| Arc::new(EndpointStats::new()))
            .clone()
    }

    /// Counts a request in flight at `addr`.
    pub fn start(&self, addr: SocketAddr) -> InFlight {
        let stats = self.stats(addr);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats,
            started: Instant::now(),
        }
    }

    /// Picks one of `addrs` (the candidate endpoints, by address) under `policy`; `None` when
    /// there are none. `hash_key` is the request's consistent-hash key, if the route has one.
    pub fn pick(
        &self,
        policy: Policy,
        addrs: &[SocketAddr],
        hash_key: Option<u64>,
    ) -> Option<usize> {
        match addrs.len() {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        let n = addrs.len();
        Some(match policy {
            Policy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Policy::Random => rand::rng().random_range(0..n),
            Policy::ConsistentHash => match hash_key {
                Some(key) => rendezvous(addrs, key),
                None => rand::rng().random_range(0..n),
            },
            Policy::LeastRequest => {
                let (a, b) = two_distinct(n);
                let (ia, ib) = (
                    self.stats(addrs[a]).in_flight(),
                    self.stats(addrs[b]).in_flight(),
                );
                if ib < ia {
                    b
                } else {
                    a
                }
            }
            Policy::PeakEwma => {
                let (a, b) = two_distinct(n);
                let now = Instant::now();
                let (ca, cb) = (
                    self.stats(addrs[a]).cost_at(now),
                    self.stats(addrs[b]).cost_at(now),
                );
                if cb < ca {
                    b
                } else {
                    a
                }
            }
        })
    }
}

/// Two different indices below `n` (n ≥ 2), uniformly.
fn two_distinct(n: usize) -> (usize, usize) {
    let mut rng = rand::rng();
    let a = rng.random_range(0..n);
    let b = (a + rng.random_range(1..n)) % n;
    (a, b)
}

/// Rendezvous (highest random weight) hashing: every endpoint scores the key, the highest
/// wins. Removing an endpoint moves only the keys it won; adding one takes about 1/n of them.
fn rendezvous(addrs: &[SocketAddr], key: u64) -> usize {
    let mut best = (0, 0u64);
    for (i, addr) in addrs.iter().enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        addr.hash(&mut h);
        let score = h.finish();
        if i == 0 || score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// The hash of a consistent-hash key's value (a header's or cookie's value, a source IP),
/// stable for the life of the process.
pub fn hash_key(value: &[u8]) -> u64 {
    // Process-stable, not keyed: the same value must map to the same endpoint on every
    // request, and a peer choosing values to collide only picks its own endpoint.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 15008)))
            .collect()
    }

    fn counts(b: &Balancer, policy: Policy, a: &[SocketAddr], draws: usize) -> Vec<usize> {
        let mut c = vec![0; a.len()];
        for _ in 0..draws {
            c[b.pick(policy, a, None).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = Balancer::default();
        let a = addrs(3);
        assert_eq!(counts(&b, Policy::RoundRobin, &a, 300), vec![100, 100, 100]);
        assert_eq!(b.pick(Policy::RoundRobin, &[], None), None);
        assert_eq!(b.pick(Policy::PeakEwma, &a[..1], None), Some(0));
    }

    #[test]
    fn random_spreads_evenly() {
        let b = Balancer::default();
        let c = counts(&b, Policy::Random, &addrs(4), 40_000);
        // 10,000 expected each; 5 standard deviations is under 500.
        assert!(c.iter().all(|n| (9_500..=10_500).contains(n)), "{c:?}");
    }

    /// Power of two choices steers away from the endpoint with requests piled up.
    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::default();
        let a = addrs(3);
        let _busy: Vec<InFlight> = (0..10).map(|_| b.start(a[0])).collect();
        let c = counts(&b, Policy::LeastRequest, &a, 3_000);
        // a[0] wins only when drawn twice, which two distinct draws never do.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1_000 && c[2] > 1_000, "{c:?}");
        drop(_busy);
        assert_eq!(b.stats(a[0]).in_flight(), 0);
    }

    /// A slow endpoint's latency shows at once (peak) and it is picked far less; once it is
    /// fast again the average comes back down over time.
    #[test]
    fn peak_ewma_prefers_the_fast_endpoint() {
        let b = Balancer::default();
        let a = addrs(2);
        let t0 = Instant::now();
        b.stats(a[0]).observe(Duration::from_millis(200), t0);
        b.stats(a[1]).observe(Duration::from_millis(2), t0);
        let c = counts(&b, Policy::PeakEwma, &a, 1_000);
        assert!(c[1] > 990, "{c:?}");
        // Fast answers blend in with a weight that grows with the time since the last one
        // (while the unrefreshed peak itself falls back towards the default).
        let s = b.stats(a[0]);
        let t1 = t0 + Duration::from_millis(100);
        s.observe(Duration::from_millis(2), t1);
        let w = (-0.1 / EWMA_DECAY.as_secs_f64()).exp();
        let want = decayed(0.2, t0, t1) * w + 0.002 * (1.0 - w);
        let got = s.latency_at(t1);
        assert!((got - want).abs() < 1e-9, "{got} {want}");
        assert!(got > 0.15 && got < 0.2, "{got}");
        // In-flight requests count too: a fast endpoint with a queue costs more.
        let fast = b.stats(a[1]);
        let before = fast.cost_at(t1);
        let _q: Vec<InFlight> = (0..3).map(|_| b.start(a[1])).collect();
        assert!((fast.cost_at(t1) / before - 4.0).abs() < 1e-9);
    }

    /// An endpoint whose cost jumped (one 3 s answer during a restart) and that is therefore
    /// no longer picked is not starved for good: with no answer to refresh it, its estimate
    /// falls back, and within seconds it wins its share of picks again.
    #[test]
    fn a_recovered_endpoint_gets_its_share_back_within_seconds() {
        let b = Balancer::default();
        let a = addrs(3);
        let t0 = Instant::now();
        let slow = b.stats(a[0]);
        slow.observe(Duration::from_secs(3), t0);
        for fast in &a[1..] {
            b.stats(*fast).observe(Duration::from_millis(2), t0);
        }
        // Right after the slow answer it loses every comparison.
        assert!(slow.latency_at(t0) > 2.9);
        // The others keep answering in ~2 ms; the slow one, never picked, is left alone.
        let later = t0 + Duration::from_secs(10);
        for fast in &a[1..] {
            b.stats(*fast).observe(Duration::from_millis(2), later);
        }
        let fast_cost = b.stats(a[1]).latency_at(later);
        let slow_cost = slow.latency_at(later);
        assert!(
            slow_cost < fast_cost,
            "after 10 s the endpoint still costs {slow_cost} s against {fast_cost} s"
        );
        // Its next real answer sets it again, from the decayed value.
        slow.observe(Duration::from_millis(2), later);
        assert!(slow.latency_at(later) < 0.003);
        assert!(decayed(3.0, t0, t0) > 2.9);
        assert!(decayed(3.0, t0, later) < 0.0012);
    }

    /// The same key goes to the same endpoint; removing another endpoint leaves it there, and
    /// keys spread over all endpoints.
    #[test]
    fn consistent_hash_is_sticky_and_minimal() {
        let b = Balancer::default();
        let a = addrs(5);
        let mut moved = 0;
        let mut seen = vec![0; a.len()];
        for user in 0..1_000u32 {
            let key = hash_key(format!("user-{user}").as_bytes());
            let i = b.pick(Policy::ConsistentHash, &a, Some(key)).unwrap();
            assert_eq!(b.pick(Policy::ConsistentHash, &a, Some(key)), Some(i));
            seen[i] += 1;
            // Without endpoint 4, only its keys move.
            let fewer = &a[..4];
            let j = b.pick(Policy::ConsistentHash, fewer, Some(key)).unwrap();
            if i != 4 {
                assert_eq!(fewer[j], a[i], "key of user-{user} moved");
            } else {
                moved += 1;
            }
        }
        assert!(seen.iter().all(|n| *n > 120), "{seen:?}");
        assert_eq!(moved, seen[4]);
    }
}
