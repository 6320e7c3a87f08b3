//! The certificate ledger: what the CA issued to each workload, and how its last renewal
//! went. It backs `trellis certs`, the renewal alarms of `trellis check`, and the CA metrics.
//!
//! Kept in memory: after a restart of the control plane the ledger fills again as proxies
//! renew (each renews at half-life at the latest).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One workload's certificate, as last issued.
#[derive(Debug, Clone, Serialize)]
pub struct CertRecord {
    pub identity: String,
    pub workload: String,
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after_unix: u64,
    pub issued_at_unix: u64,
    /// SHA-256 (hex) of the root the certificate chains up to.
    pub issuer_root: String,
    /// The last request's outcome: `ok`, or why it was refused.
    pub last_result: String,
    pub last_attempt_unix: u64,
    pub issued_total: u64,
}

impl CertRecord {
    /// Past three quarters of its lifetime without a renewal: renewal (due at half-life) has
    /// been failing for a quarter of the lifetime.
    pub fn renewal_overdue(&self, now: SystemTime) -> bool {
        let now = unix(now);
        let lifetime = self.not_after_unix.saturating_sub(self.issued_at_unix);
        now >= self.issued_at_unix + lifetime * 3 / 4
    }
}

/// Every workload's latest certificate, keyed by (identity, workload).
#[derive(Default)]
pub struct CertLedger {
    // Held only to insert or copy; never across an await.
    records: Mutex<BTreeMap<(String, String), CertRecord>>,
    refused_total: Mutex<u64>,
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl CertLedger {
    pub fn issued(
        &self,
        identity: &str,
        workload: &str,
        serial: &str,
        not_after: SystemTime,
        issuer_root: &str,
    ) {
        let now = unix(SystemTime::now());
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let key = (identity.to_string(), workload.to_string());
        let total = records.get(&key).map_or(0, |r| r.issued_total) + 1;
        records.insert(
            key,
            CertRecord {
                identity: identity.to_string(),
                workload: workload.to_string(),
                serial: serial.to_string(),
                not_after_unix: unix(not_after),
                issued_at_unix: now,
                issuer_root: issuer_root.to_string(),
                last_result: "ok".into(),
                last_attempt_unix: now,
                issued_total: total,
            },
        );
    }

    /// Records a refused request against the workload's existing record, if any.
    pub fn refused(&self, identity: Option<&str>, workload: &str, reason: &str) {
        *self.refused_total.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let Some(identity) = identity else { return };
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = records.get_mut(&(identity.to_string(), workload.to_string())) {
            r.last_result = format!("refused: {reason}");
            r.last_attempt_unix = unix(SystemTime::now());
        }
    }

    pub fn list(&self) -> Vec<CertRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn refused_total(&self) -> u64 {
        *self.refused_total.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Total certificates issued since start.
    pub fn issued_total(&self) -> u64 {
        self.list().iter().map(|r| r.issued_total).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_issue_and_refusal_and_overdue() {
        let ledger = CertLedger::default();
        let id = "spiffe://cluster.local/ns/default/sa/a";
        let not_after = SystemTime::now() + Duration::from_secs(400);
        ledger.issued(id, "a-1", "01", not_after, "fp");
        ledger.issued(id, "a-1", "02", not_after, "fp");
        ledger.refused(Some(id), "a-1", "token revoked");
        let list = ledger.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].serial, "02");
        assert_eq!(list[0].issued_total, 2);
        assert_eq!(list[0].last_result, "refused: token revoked");
        assert_eq!(ledger.refused_total(), 1);
        let r = &list[0];
        assert!(!r.renewal_overdue(SystemTime::now()));
        assert!(r.renewal_overdue(SystemTime::now() + Duration::from_secs(301)));
    }
}
