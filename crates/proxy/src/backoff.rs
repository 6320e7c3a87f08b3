//! Exponential back-off with jitter, for reconnecting to the control plane.

use std::time::Duration;

/// Doubles from `initial` up to `max`; each delay gets up to 20 % random jitter so that many
/// proxies restarted together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            initial,
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.2);
        base + jitter
    }

    /// Called after a success: the next failure starts from the beginning again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        let bases = [100, 200, 400, 800, 800, 800];
        for (got, base) in d.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *got >= base && *got <= base.mul_f64(1.2),
                "{got:?} vs {base:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(121));
    }
}
