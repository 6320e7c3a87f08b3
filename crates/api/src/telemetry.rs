//! Golden-signal summaries shared by the proxy (which fills them) and the control plane (which
//! merges them into a rolling window for `trellis stat` and `trellis top`).
//!
//! Latency is kept as counts over fixed bucket bounds, the same on every proxy, so summaries
//! from many proxies and many periods merge by adding counts, and a percentile is read from
//! the merged counts. The bounds grow by a fifth each, so a percentile read from them is
//! within 20 % of the true value: plenty for an operator's view, and a proxy's summary of one
//! edge is a few hundred bytes however many requests it saw.

use std::sync::LazyLock;

/// Upper bounds of the latency buckets, in microseconds: 10 µs, growing by a fifth each, up
/// to past ten minutes. A last, open bucket holds everything above.
pub static LATENCY_BOUNDS_MICROS: LazyLock<Vec<u64>> = LazyLock::new(|| {
    let mut bounds = Vec::new();
    let mut b: u64 = 10;
    while b < 600_000_000 {
        bounds.push(b);
        b = (b * 6).div_ceil(5);
    }
    bounds.push(b);
    bounds
});

/// A latency histogram over [`LATENCY_BOUNDS_MICROS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// One count per bound, then the open bucket; empty until the first observation.
    counts: Vec<u64>,
    sum_micros: u64,
}

impl LatencyHistogram {
    /// The histogram sent on the wire: `counts` must have one entry per bound plus one, or be
    /// empty. Anything else (a proxy with other bounds) is refused rather than misread.
    pub fn from_parts(counts: Vec<u64>, sum_micros: u64) -> Option<Self> {
        if counts.is_empty() || counts.len() == LATENCY_BOUNDS_MICROS.len() + 1 {
            Some(Self { counts, sum_micros })
        } else {
            None
        }
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn sum_micros(&self) -> u64 {
        self.sum_micros
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn observe(&mut self, micros: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BOUNDS_MICROS.len() + 1];
        }
        let i = LATENCY_BOUNDS_MICROS.partition_point(|b| *b < micros);
        self.counts[i] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; other.counts.len()];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// The `q` quantile (0..=1) in microseconds, interpolated inside its bucket; `None` when
    /// empty. A value in the open bucket reads as the last bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let bounds = &*LATENCY_BOUNDS_MICROS;
        // The rank of the wanted observation, 1-based.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            if seen + c >= rank {
                let Some(hi) = bounds.get(i) else {
                    return bounds.last().copied();
                };
                let lo = if i == 0 { 0 } else { bounds[i - 1] };
                let within = (rank - seen) as f64 / *c as f64;
                return Some(lo + ((hi - lo) as f64 * within).round() as u64);
            }
            seen += c;
        }
        bounds.last().copied()
    }
}

/// The content type of [`prometheus_text`]'s output.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics text, as the metrics encoder writes it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus servers do); anything
/// else (curl, `promtool check metrics`, older scrapers) gets the classic text format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Rewrites OpenMetrics text as the classic Prometheus text format (0.0.4): a counter's
/// `# HELP` and `# TYPE` name its `_total` series, as that format wants, and the `# UNIT`
/// and `# EOF` lines, which it does not have, go. Sample lines are the same in both.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_total_families() {
        let om = "# HELP trellis_requests Requests.\n# TYPE trellis_requests counter\n\
                  trellis_requests_total{a=\"b\"} 3\n# HELP up Up.\n# TYPE up gauge\n\
                  # UNIT up seconds\nup 1\n# EOF\n";
        let text = prometheus_text(om);
        assert_eq!(
            text,
            "# HELP trellis_requests_total Requests.\n# TYPE trellis_requests_total counter\n\
             trellis_requests_total{a=\"b\"} 3\n# HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn bounds_grow_by_a_fifth_and_cover_ten_minutes() {
        let b = &*LATENCY_BOUNDS_MICROS;
        assert_eq!(b[0], 10);
        for w in b.windows(2) {
            assert!(w[1] > w[0] && w[1] <= w[0] * 6 / 5 + 1, "{w:?}");
        }
        assert!(*b.last().unwrap() >= 600_000_000);
        assert!(b.len() < 120, "{} buckets", b.len());
    }

    #[test]
    fn quantiles_are_within_a_fifth() {
        let mut h = LatencyHistogram::default();
        // 1..=10_000 µs, evenly: p50 = 5000, p99 = 9900.
        for v in 1..=10_000 {
            h.observe(v);
        }
        for (q, want) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.2, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.sum_micros(), 10_000 * 10_001 / 2);
    }

    #[test]
    fn merging_adds_counts() {
        let (mut a, mut b) = (LatencyHistogram::default(), LatencyHistogram::default());
        a.observe(100);
        b.observe(100_000);
        b.observe(100_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        // Two of three observations are near 100 ms: the median is there.
        let p50 = a.quantile(0.5).unwrap();
        assert!((80_000..=120_000).contains(&p50), "{p50}");
        assert!(a.quantile(0.1).unwrap() <= 120, "{:?}", a.quantile(0.1));
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn foreign_bucket_layouts_are_refused() {
        assert!(LatencyHistogram::from_parts(vec![1, 2, 3], 6).is_none());
        assert!(LatencyHistogram::from_parts(vec![], 0).is_some());
        let n = LATENCY_BOUNDS_MICROS.len() + 1;
        assert_eq!(
            LatencyHistogram::from_parts(vec![1; n], 7).unwrap().count(),
            n as u64
        );
    }

    #[test]
    fn huge_values_land_in_the_open_bucket() {
        let mut h = LatencyHistogram::default();
        h.observe(u64::MAX);
        assert_eq!(h.counts().last(), Some(&1));
        assert_eq!(h.quantile(0.5), LATENCY_BOUNDS_MICROS.last().copied());
    }
}
