//! Admission of a proxy's `Register`: what a registration may claim, checked against the
//! certificate it came with and the config before it reaches the [`crate::registry`].
//!
//! Every field of a `Register` is written by whoever holds the proxy's key, which any join
//! token holder does for its own identity. Only the namespace and service account are
//! vouched for (by the certificate); the rest is checked against what the config says:
//!
//! * **namespace, service account**: must be the certificate's; the mesh's own namespace
//!   ([`trellis_identity::reserved`]) registers nothing.
//! * **workload name**: if a `WorkloadEntry` of the namespace has that name, its service
//!   account must be the certificate's. The name keys the workload's reports, taps and
//!   golden signals, so it cannot be borrowed.
//! * **labels**: with an entry, every label claimed must be the entry's (the entry's labels,
//!   not the claim, are what Services select: [`crate::compile`]). Without one, the labels
//!   select nothing.
//! * **address**: must not be another `WorkloadEntry`'s (in any namespace: addresses are
//!   one flat space), and must not be held by a live proxy of another identity (checked
//!   atomically by [`crate::registry::Registry::register`]). A registration may be elsewhere
//!   than its own entry says: the entry moves to where its proxy is.
//! * **ports, mTLS port**: where the registering proxy's own workload listens; they only
//!   ever steer traffic meant for that identity, and are only bounded here.
//!
//! A proxy whose name no WorkloadEntry has is admitted as a client: it receives snapshots
//! (it needs them to call anyone) but is no endpoint of any Service, whatever labels it
//! claims. Trellis has no auto-registration (a `WorkloadGroup` is validated, not acted on), so
//! only a WorkloadEntry, written by whoever writes the config, puts a workload behind a
//! Service.
//!
//! The compiler applies the same rules to the registry on every snapshot, so a config change
//! after a proxy registered (an entry renamed, its service account changed) cannot leave the
//! proxy serving what the entry no longer vouches for.

use std::collections::BTreeMap;
use std::net::IpAddr;

use trellis_api::load::ConfigSet;
use trellis_api::proto;
use trellis_api::resources::{Resource, WorkloadEntry};
use trellis_identity::SpiffeId;

use crate::registry::{Conflict, RegisteredWorkload};

/// Longest workload name, label key or value, or port name a registration may carry (a DNS
/// name's length: longer than any Kubernetes name or label).
const MAX_TEXT: usize = 253;
/// Most labels, and most named ports, a registration may carry.
const MAX_ENTRIES: usize = 64;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("{identity} cannot register a workload as {namespace}/{service_account}")]
    NotItsIdentity {
        identity: String,
        namespace: String,
        service_account: String,
    },
    #[error("{identity} is reserved for the mesh's own components and registers no workload")]
    Reserved { identity: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(
        "WorkloadEntry {namespace}/{name} runs as service account {entry_service_account:?}, \
         not {service_account:?}"
    )]
    NotTheEntrysIdentity {
        namespace: String,
        name: String,
        entry_service_account: String,
        service_account: String,
    },
    #[error(
        "label {key}={claimed:?} is not WorkloadEntry {namespace}/{name}'s ({})",
        match expected { Some(v) => format!("it says {key}={v:?}"), None => "it has no such label".to_string() }
    )]
    NotTheEntrysLabel {
        namespace: String,
        name: String,
        key: String,
        claimed: String,
        expected: Option<String>,
    },
    #[error("address {address} is WorkloadEntry {namespace}/{name}'s")]
    AnotherEntrysAddress {
        address: IpAddr,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Held(#[from] Conflict),
}

impl RegistrationError {
    /// The gRPC status a refused proxy gets.
    pub fn status(&self) -> tonic::Status {
        match self {
            RegistrationError::Invalid { .. } => tonic::Status::invalid_argument(self.to_string()),
            _ => tonic::Status::permission_denied(self.to_string()),
        }
    }
}

/// The service account a WorkloadEntry runs as: Istio's default when it names none.
pub(crate) fn entry_service_account(we: &WorkloadEntry) -> &str {
    we.spec.service_account.as_deref().unwrap_or("default")
}

/// A WorkloadEntry's address as an IP, in the form registrations are compared in; `None`
/// for a host name or a socket path.
pub(crate) fn entry_ip(we: &WorkloadEntry) -> Option<IpAddr> {
    we.spec
        .address
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The WorkloadEntries of `config`.
pub(crate) fn entries(config: &ConfigSet) -> impl Iterator<Item = &WorkloadEntry> {
    config.resources.iter().filter_map(|r| match &r.value {
        Resource::WorkloadEntry(we) => Some(we),
        _ => None,
    })
}

/// Checks `r`, sent by a proxy whose certificate says `id`, against `config`; the workload
/// to register when it passes. Conflicts with other live proxies are the registry's to check.
///
/// # Errors
///
/// [`RegistrationError`], naming the first claim that does not hold.
pub fn admit(
    id: &SpiffeId,
    r: proto::Register,
    config: &ConfigSet,
) -> Result<RegisteredWorkload, RegistrationError> {
    if r.namespace != id.namespace || r.service_account != id.service_account {
        return Err(RegistrationError::NotItsIdentity {
            identity: id.to_string(),
            namespace: r.namespace,
            service_account: r.service_account,
        });
    }
    // The CA never issues these to a workload; a certificate that names one anyway (issued
    // before the namespace was reserved) still gets no place in the registry.
    if trellis_identity::is_reserved(id) {
        return Err(RegistrationError::Reserved {
            identity: id.to_string(),
        });
    }
    let invalid = |field, reason: String| RegistrationError::Invalid { field, reason };
    let text = |field, s: &str| {
        if s.len() > MAX_TEXT {
            Err(invalid(field, format!("longer than {MAX_TEXT} bytes")))
        } else {
            Ok(())
        }
    };
    if r.workload_name.is_empty() {
        return Err(invalid("workload name", "empty".into()));
    }
    text("workload name", &r.workload_name)?;
    if r.labels.len() > MAX_ENTRIES || r.ports.len() > MAX_ENTRIES {
        return Err(invalid(
            "labels or ports",
            format!("more than {MAX_ENTRIES}"),
        ));
    }
    for (k, v) in &r.labels {
        text("label", k)?;
        text("label", v)?;
    }
    // Canonical, so that `::ffff:10.0.0.5` is compared as the 10.0.0.5 it reaches.
    let address = r
        .address
        .parse::<IpAddr>()
        .map_err(|_| invalid("address", format!("{:?} is not an IP address", r.address)))?
        .to_canonical();
    if address.is_unspecified() || address.is_multicast() || address == IpAddr::from([255; 4]) {
        return Err(invalid(
            "address",
            format!("{address} is no workload's address"),
        ));
    }
    let port = |p: u32| {
        u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("port", format!("{p} is not a port number")))
    };
    let inbound_port = port(r.inbound_port)?;
    let mut ports = BTreeMap::new();
    for (name, p) in r.ports {
        text("port name", &name)?;
        ports.insert(name, port(p)?);
    }

    let own = entries(config)
        .find(|we| we.meta.namespace() == r.namespace && we.meta.name == r.workload_name);
    if let Some(we) = own {
        let entry_sa = entry_service_account(we);
        if entry_sa != r.service_account {
            return Err(RegistrationError::NotTheEntrysIdentity {
                namespace: r.namespace,
                name: r.workload_name,
                entry_service_account: entry_sa.to_string(),
                service_account: r.service_account,
            });
        }
        // In key order, so the same claim is always refused for the same label.
        let claimed_labels: BTreeMap<&String, &String> = r.labels.iter().collect();
        for (key, claimed) in claimed_labels {
            let expected = we.spec.labels.get(key);
            if expected != Some(claimed) {
                return Err(RegistrationError::NotTheEntrysLabel {
                    namespace: r.namespace.clone(),
                    name: r.workload_name.clone(),
                    key: key.clone(),
                    claimed: claimed.clone(),
                    expected: expected.cloned(),
                });
            }
        }
    }
    let taken = entries(config)
        .find(|we| !own.is_some_and(|o| std::ptr::eq(o, *we)) && entry_ip(we) == Some(address));
    if let Some(we) = taken {
        return Err(RegistrationError::AnotherEntrysAddress {
            address,
            namespace: we.meta.namespace().to_string(),
            name: we.meta.name.clone(),
        });
    }
    Ok(RegisteredWorkload {
        name: r.workload_name,
        namespace: r.namespace,
        service_account: r.service_account,
        identity: id.to_string(),
        address,
        labels: r.labels.into_iter().collect(),
        inbound_port,
        ports,
    })
}

#[cfg(test)]
mod tests;
