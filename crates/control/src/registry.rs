//! The service registry's live half: workloads whose proxies are connected right now.
//!
//! A proxy registers its workload on its snapshot stream and stays registered while the
//! stream is open. Every change bumps a generation on a `watch` channel so that the snapshot
//! publisher recompiles.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// A workload registered by its connected proxy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegisteredWorkload {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    /// SPIFFE ID from the proxy's verified certificate.
    pub identity: String,
    pub address: IpAddr,
    pub labels: BTreeMap<String, String>,
    pub inbound_port: u16,
    pub ports: BTreeMap<String, u16>,
}

/// What a connected proxy last told the control plane.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ProxyStatus {
    /// The last snapshot version it ACKed.
    pub acked_version: String,
    /// The root its current certificate chains up to.
    pub svid_issuer_root: String,
    /// The last NACK's error, if the last answer was a NACK.
    pub nack: Option<String>,
}

/// Live registrations, keyed by stream.
pub struct Registry {
    next_id: AtomicU64,
    // Held only to insert, remove or copy out; never across an await.
    workloads: Mutex<HashMap<u64, (RegisteredWorkload, ProxyStatus)>>,
    generation: watch::Sender<u64>,
}

/// Removes its workload from the registry when dropped: the stream's end, however it ends.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(1),
            workloads: Mutex::new(HashMap::new()),
            generation: watch::channel(0).0,
        })
    }

    /// Adds a workload for as long as the returned guard lives.
    pub fn register(self: &Arc<Self>, w: RegisteredWorkload) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (w, ProxyStatus::default()));
        self.generation.send_modify(|g| *g += 1);
        Registration {
            registry: self.clone(),
            id,
        }
    }

    /// A copy of the current registrations, in a stable order.
    pub fn workloads(&self) -> Vec<RegisteredWorkload> {
        self.statuses().into_iter().map(|(w, _)| w).collect()
    }

    /// The current registrations with what each proxy last reported.
    pub fn statuses(&self) -> Vec<(RegisteredWorkload, ProxyStatus)> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|(a, _), (b, _)| {
            (&a.namespace, &a.name, a.address).cmp(&(&b.namespace, &b.name, b.address))
        });
        v
    }

    /// Changes whenever a workload comes or goes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (RegisteredWorkload, ProxyStatus)>> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registration {
    /// Records what the proxy reported (an ACK or a NACK). Does not trigger a recompile.
    pub fn report(&self, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some((_, status)) = self.registry.lock().get_mut(&self.id) {
            f(status);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.generation.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let reg = Registry::new();
        let mut changes = reg.changes();
        let w = RegisteredWorkload {
            name: "a".into(),
            namespace: "default".into(),
            service_account: "a".into(),
            identity: "spiffe://cluster.local/ns/default/sa/a".into(),
            address: "127.0.0.1".parse().unwrap(),
            labels: BTreeMap::new(),
            inbound_port: 15008,
            ports: BTreeMap::new(),
        };
        let guard = reg.register(w.clone());
        assert_eq!(reg.workloads(), vec![w.clone()]);
        guard.report(|s| s.acked_version = "v1".into());
        assert_eq!(reg.statuses()[0].1.acked_version, "v1");
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        drop(guard);
        assert!(reg.workloads().is_empty());
        assert!(changes.has_changed().unwrap());
    }
}
