//! Plaintext connections the proxies saw, kept for a while: what `trellis check --strict-ready`
//! reads to say whether a workload can move to STRICT without refusing someone.
//!
//! Each proxy reports, every few seconds on its snapshot stream, the plaintext (not mutual
//! TLS) inbound connections it accepted since its previous report, per source address. The
//! ledger keeps those counts with the time they arrived, for [`RETENTION`], per workload, so a
//! question about "the last 10 minutes" is a sum. Workloads that disconnect keep their
//! history until it ages out: a client that talked plaintext to a workload that then
//! restarted must still show.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How far back reports are kept (and so the longest window a check can ask about).
pub const RETENTION: Duration = Duration::from_secs(3600);

/// Reports kept per workload, at most: a proxy reports every few seconds, so this is more
/// than an hour's worth; a misbehaving proxy cannot grow the ledger without bound.
const MAX_REPORTS: usize = 4096;

/// Sources per report, at most (the rest are dropped, and the report says so by itself:
/// a workload with that many plaintext clients is nowhere near ready).
pub const MAX_SOURCES: usize = 256;

/// A workload as the ledger files it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
struct Report {
    at: SystemTime,
    source: IpAddr,
    connections: u64,
}

/// Plaintext connections from one source in a window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceSummary {
    pub source_address: IpAddr,
    pub connections: u64,
    /// Seconds since the Unix epoch when the last report including this source arrived.
    pub last_seen_unix: u64,
}

/// The ledger: per workload, recent reports.
#[derive(Default)]
pub struct PlaintextLedger {
    // Held only to push, prune or copy out; never across an await.
    reports: Mutex<HashMap<WorkloadKey, VecDeque<Report>>>,
}

impl PlaintextLedger {
    /// Records what `workload`'s proxy reported at `at`.
    pub fn record(&self, workload: WorkloadKey, at: SystemTime, sources: &[(IpAddr, u64)]) {
        let mut all = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let reports = all.entry(workload).or_default();
        for (source, connections) in sources.iter().take(MAX_SOURCES) {
            if *connections > 0 {
                reports.push_back(Report {
                    at,
                    source: *source,
                    connections: *connections,
                });
            }
        }
        while reports.len() > MAX_REPORTS {
            reports.pop_front();
        }
        prune(&mut all, at);
    }

    /// Plaintext connections per workload and source in the `window` before `now`, sources
    /// sorted by address. Workloads with nothing in the window are absent.
    pub fn window(
        &self,
        now: SystemTime,
        window: Duration,
    ) -> BTreeMap<WorkloadKey, Vec<SourceSummary>> {
        let since = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let all = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for (workload, reports) in all.iter() {
            let mut by_source: BTreeMap<IpAddr, SourceSummary> = BTreeMap::new();
            for r in reports.iter().filter(|r| r.at >= since && r.at <= now) {
                let seen = unix(r.at);
                let s = by_source.entry(r.source).or_insert(SourceSummary {
                    source_address: r.source,
                    connections: 0,
                    last_seen_unix: seen,
                });
                s.connections += r.connections;
                s.last_seen_unix = s.last_seen_unix.max(seen);
            }
            if !by_source.is_empty() {
                out.insert(workload.clone(), by_source.into_values().collect());
            }
        }
        out
    }
}

/// Drops reports older than [`RETENTION`] before `now`, and workloads left with none.
fn prune(all: &mut HashMap<WorkloadKey, VecDeque<Report>>, now: SystemTime) {
    let Some(oldest) = now.checked_sub(RETENTION) else {
        return;
    };
    all.retain(|_, reports| {
        while reports.front().is_some_and(|r| r.at < oldest) {
            reports.pop_front();
        }
        !reports.is_empty()
    });
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sums_per_source_inside_the_window_only() {
        let ledger = PlaintextLedger::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = ip("198.18.1.2");
        let b = ip("198.18.1.3");
        ledger.record(key("web"), t0, &[(a, 2), (b, 1)]);
        ledger.record(key("web"), t0 + Duration::from_secs(60), &[(a, 3)]);
        ledger.record(key("db"), t0 + Duration::from_secs(60), &[(b, 0)]);

        let now = t0 + Duration::from_secs(90);
        let all = ledger.window(now, Duration::from_secs(600));
        assert_eq!(all.len(), 1, "a zero count is not a sighting: {all:?}");
        let web = &all[&key("web")];
        assert_eq!(web.len(), 2);
        assert_eq!(web[0].source_address, a);
        assert_eq!(web[0].connections, 5);
        assert_eq!(web[0].last_seen_unix, 1_000_060);
        assert_eq!(web[1].connections, 1);

        // A 60 s window leaves out the first report.
        let recent = ledger.window(now, Duration::from_secs(60));
        assert_eq!(
            recent[&key("web")],
            vec![SourceSummary {
                source_address: a,
                connections: 3,
                last_seen_unix: 1_000_060
            }]
        );
        // A 10 s window holds nothing.
        assert!(ledger.window(now, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn old_reports_age_out_and_the_ledger_stays_bounded() {
        let ledger = PlaintextLedger::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        ledger.record(key("web"), t0, &[(ip("198.18.1.2"), 1)]);
        let later = t0 + RETENTION + Duration::from_secs(1);
        ledger.record(key("other"), later, &[(ip("198.18.1.9"), 1)]);
        let all = ledger.window(later, RETENTION * 2);
        assert!(!all.contains_key(&key("web")), "{all:?}");

        for i in 0..(MAX_REPORTS + 10) {
            ledger.record(
                key("busy"),
                later + Duration::from_millis(i as u64),
                &[(ip("198.18.1.2"), 1)],
            );
        }
        let all = ledger.window(later + Duration::from_secs(60), RETENTION);
        assert_eq!(all[&key("busy")][0].connections, MAX_REPORTS as u64);
    }
}
