//! The service registry's live half: workloads whose proxies are connected right now.
//!
//! A proxy registers its workload on its snapshot stream and stays registered while the
//! stream is open. Every change bumps a generation on a `watch` channel so that the snapshot
//! publisher recompiles.
//!
//! What a registration may claim is checked against the config first
//! ([`crate::admission`]); the registry itself refuses, atomically with the insertion, an
//! address or a workload name that a connected proxy of another identity holds, so that no
//! registration displaces another identity's live proxy, even one racing it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Why the registry refused a workload: a connected proxy of another identity holds its
/// address or its name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("address {address} is held by the connected proxy of {identity}")]
    Address { address: IpAddr, identity: String },
    #[error("workload {namespace}/{name} is held by the connected proxy of {identity}")]
    Name {
        namespace: String,
        name: String,
        identity: String,
    },
}

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

    /// Adds a workload for as long as the returned guard lives, unless a connected proxy of
    /// another identity holds its address or its name. The same identity may hold both more
    /// than once: replicas of one workload, or a restarted proxy whose old stream has not
    /// closed yet.
    ///
    /// # Errors
    ///
    /// [`Conflict`], naming the holder.
    pub fn register(self: &Arc<Self>, w: RegisteredWorkload) -> Result<Registration, Conflict> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            // Checked and inserted under one lock: two racing registrations cannot both pass.
            let mut workloads = self.lock();
            for (held, _) in workloads.values() {
                if held.identity == w.identity {
                    continue;
                }
                if held.address == w.address {
                    return Err(Conflict::Address {
                        address: w.address,
                        identity: held.identity.clone(),
                    });
                }
                if held.namespace == w.namespace && held.name == w.name {
                    return Err(Conflict::Name {
                        namespace: w.namespace,
                        name: w.name,
                        identity: held.identity.clone(),
                    });
                }
            }
            workloads.insert(id, (w, ProxyStatus::default()));
        }
        self.generation.send_modify(|g| *g += 1);
        Ok(Registration {
            registry: self.clone(),
            id,
        })
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
        let guard = reg.register(w.clone()).unwrap();
        assert_eq!(reg.workloads(), vec![w.clone()]);
        guard.report(|s| s.acked_version = "v1".into());
        assert_eq!(reg.statuses()[0].1.acked_version, "v1");
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        drop(guard);
        assert!(reg.workloads().is_empty());
        assert!(changes.has_changed().unwrap());
    }

    fn workload(name: &str, sa: &str, address: &str) -> RegisteredWorkload {
        RegisteredWorkload {
            name: name.into(),
            namespace: "default".into(),
            service_account: sa.into(),
            identity: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
            address: address.parse().unwrap(),
            labels: BTreeMap::new(),
            inbound_port: 15008,
            ports: BTreeMap::new(),
        }
    }

    #[test]
    fn another_identity_cannot_take_a_live_proxy_s_address_or_name() {
        let reg = Registry::new();
        let _details = reg
            .register(workload("details-v1", "details", "10.0.0.5"))
            .unwrap();
        let mut changes = reg.changes();
        changes.mark_unchanged();

        let taken = reg.register(workload("attacker", "attacker", "10.0.0.5"));
        assert_eq!(
            taken.err(),
            Some(Conflict::Address {
                address: "10.0.0.5".parse().unwrap(),
                identity: "spiffe://cluster.local/ns/default/sa/details".into(),
            })
        );
        let named = reg.register(workload("details-v1", "attacker", "10.0.0.9"));
        assert!(
            matches!(named, Err(Conflict::Name { ref name, .. }) if name == "details-v1"),
            "{:?}",
            named.err()
        );
        // Nothing changed for the snapshot publisher, and the live proxy is still there alone.
        assert!(!changes.has_changed().unwrap());
        assert_eq!(reg.workloads().len(), 1);
        assert_eq!(reg.workloads()[0].service_account, "details");

        // The same identity may: a replica at another address, a restarted proxy at the same.
        let _replica = reg
            .register(workload("details-v1", "details", "10.0.0.6"))
            .unwrap();
        let restarted = reg
            .register(workload("details-v1", "details", "10.0.0.5"))
            .unwrap();
        assert_eq!(reg.workloads().len(), 3);
        drop(restarted);
        assert_eq!(reg.workloads().len(), 2);
    }
}
