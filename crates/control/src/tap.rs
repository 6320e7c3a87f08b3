//! Live taps: `trellis tap` (`GET /api/v1/tap`) watching the requests a workload's proxies
//! handle, as they happen.
//!
//! The registry knows the open taps (a random id, the workload, a path prefix and method
//! filter, and a bounded channel to the HTTP response streaming them) and the connected
//! proxies (their workload, and a `watch` slot holding the whole set of taps they must
//! serve). Opening or closing a tap recomputes its workload's set and puts it in the slot of
//! every proxy of that workload; each proxy's snapshot stream sends it on as a
//! `SnapshotMessage` carrying only `tap`. A `watch` keeps only the latest set, which is all a
//! proxy needs (each set replaces the previous one), so a proxy slow to read its stream never
//! holds up the registry. A proxy that connects gets its workload's set at once.
//!
//! Proxies send the events their taps matched as `ProxyMessage::Tap`; the registry routes
//! each by `tap_id` to its tap's channel with `try_send`: a reader that cannot keep up loses
//! events, and never stalls the proxy's stream. A tap is closed when the HTTP client goes
//! away (its [`OpenTap`] is dropped with the response body). A tap whose workload has no
//! proxy left stays open: a proxy restarting reconnects and picks it up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use trellis_api::proto;

use crate::plaintext::WorkloadKey;

/// Open taps, at most: each costs every proxy of its workload a check per request, and a
/// person watches a handful at a time.
pub const MAX_TAPS: usize = 64;

/// Events buffered per tap between the proxies and the HTTP response; past that, events are
/// dropped until the reader catches up.
pub const EVENT_BUFFER: usize = 1024;

/// Why a tap cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    #[error("no connected proxy serves workload {}/{}", .0.namespace, .0.name)]
    NoProxy(WorkloadKey),
    #[error("{MAX_TAPS} taps are open already; close one first")]
    TooMany,
}

/// Which requests a tap wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapFilter {
    /// Only paths starting with this; empty for all.
    pub path_prefix: String,
    /// Only this method (upper case); empty for all.
    pub method: String,
}

/// The registry of taps and of the proxies that serve them.
#[derive(Default)]
pub struct TapRegistry {
    // Held only to change or read the maps and to fill `watch` slots (which never block);
    // never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    taps: HashMap<String, Tap>,
    proxies: HashMap<u64, ConnectedProxy>,
    next_proxy: u64,
}

struct Tap {
    workload: WorkloadKey,
    filter: TapFilter,
    events: mpsc::Sender<proto::TapEvent>,
}

struct ConnectedProxy {
    workload: WorkloadKey,
    control: watch::Sender<Arc<proto::TapControl>>,
}

/// A proxy's place in the registry, for as long as its snapshot stream lives.
pub struct ProxyTaps {
    registry: Arc<TapRegistry>,
    id: u64,
    workload: WorkloadKey,
}

/// An open tap: its events, until dropped.
pub struct OpenTap {
    registry: Arc<TapRegistry>,
    id: String,
    events: mpsc::Receiver<proto::TapEvent>,
}

impl TapRegistry {
    /// An empty registry, shared by the HTTP API (which opens taps) and the snapshot streams.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a proxy of `workload`. The receiver holds the taps it must serve: already
    /// its workload's current set (marked changed when not empty, so the stream sends it at
    /// once), then every new set.
    pub fn connect(
        self: &Arc<Self>,
        workload: WorkloadKey,
    ) -> (ProxyTaps, watch::Receiver<Arc<proto::TapControl>>) {
        let mut inner = self.lock();
        let set = inner.set_of(&workload);
        let (control, rx) = watch::channel(Arc::new(proto::TapControl::default()));
        if !set.taps.is_empty() {
            // `send_replace` marks the value changed for `rx`; a value given to
            // `watch::channel` would count as already seen.
            control.send_replace(Arc::new(set));
        }
        let id = inner.next_proxy;
        inner.next_proxy += 1;
        inner.proxies.insert(
            id,
            ConnectedProxy {
                workload: workload.clone(),
                control,
            },
        );
        (
            ProxyTaps {
                registry: self.clone(),
                id,
                workload,
            },
            rx,
        )
    }

    /// Opens a tap on `workload`, if a proxy of it is connected.
    pub fn open(
        self: &Arc<Self>,
        workload: WorkloadKey,
        filter: TapFilter,
    ) -> Result<OpenTap, TapError> {
        let mut inner = self.lock();
        if !inner.proxies.values().any(|p| p.workload == workload) {
            return Err(TapError::NoProxy(workload));
        }
        if inner.taps.len() >= MAX_TAPS {
            return Err(TapError::TooMany);
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tracing::info!(tap = %id, workload = %workload.name, namespace = %workload.namespace, path = %filter.path_prefix, method = %filter.method, "tap opened");
        inner.taps.insert(
            id.clone(),
            Tap {
                workload: workload.clone(),
                filter,
                events: tx,
            },
        );
        inner.publish(&workload);
        Ok(OpenTap {
            registry: self.clone(),
            id,
            events: rx,
        })
    }

    /// Open taps.
    pub fn len(&self) -> usize {
        self.lock().taps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// The taps of `workload`, sorted by id so a set's message does not depend on map order.
    fn set_of(&self, workload: &WorkloadKey) -> proto::TapControl {
        let mut taps: Vec<proto::TapRequest> = self
            .taps
            .iter()
            .filter(|(_, t)| t.workload == *workload)
            .map(|(id, t)| proto::TapRequest {
                id: id.clone(),
                path_prefix: t.filter.path_prefix.clone(),
                method: t.filter.method.clone(),
            })
            .collect();
        taps.sort_by(|a, b| a.id.cmp(&b.id));
        proto::TapControl { taps }
    }

    /// Gives every proxy of `workload` its new set.
    fn publish(&self, workload: &WorkloadKey) {
        let set = Arc::new(self.set_of(workload));
        for p in self.proxies.values().filter(|p| p.workload == *workload) {
            p.control.send_replace(set.clone());
        }
    }
}

impl ProxyTaps {
    /// Routes events the proxy sent to their taps; returns how many were dropped (tap full,
    /// closed, or not one of this proxy's workload).
    pub fn deliver(&self, events: Vec<proto::TapEvent>) -> usize {
        let inner = self.registry.lock();
        let mut dropped = 0;
        for e in events {
            // A proxy only learns the ids of its own workload's taps; checking it anyway
            // keeps a proxy from writing into another workload's tap.
            match inner.taps.get(&e.tap_id) {
                Some(t) if t.workload == self.workload => {
                    if t.events.try_send(e).is_err() {
                        dropped += 1;
                    }
                }
                _ => dropped += 1,
            }
        }
        dropped
    }
}

impl Drop for ProxyTaps {
    fn drop(&mut self) {
        self.registry.lock().proxies.remove(&self.id);
    }
}

impl OpenTap {
    /// The tap's id, as its proxies see it in their `TapRequest` and send it back in events.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event the proxies sent. Never ends while the tap is open: the registry keeps
    /// the sending side until this is dropped.
    pub async fn next(&mut self) -> Option<proto::TapEvent> {
        self.events.recv().await
    }
}

impl Drop for OpenTap {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(t) = inner.taps.remove(&self.id) {
            tracing::info!(tap = %self.id, workload = %t.workload.name, namespace = %t.workload.namespace, "tap closed");
            inner.publish(&t.workload);
        }
    }
}

/// A tap event as `GET /api/v1/tap` streams it: one JSON object per line, the proto's field
/// names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapEventJson {
    pub tap_id: String,
    pub start_unix_micros: i64,
    pub reporter: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u32,
    pub grpc_status: String,
    pub duration_micros: u64,
    pub source_principal: String,
    pub destination_principal: String,
    pub source_workload: String,
    pub destination_service: String,
    pub destination_workload: String,
    pub upstream: String,
    pub response_flags: String,
    pub trace_id: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl From<proto::TapEvent> for TapEventJson {
    fn from(e: proto::TapEvent) -> Self {
        TapEventJson {
            tap_id: e.tap_id,
            start_unix_micros: e.start_unix_micros,
            reporter: e.reporter,
            method: e.method,
            authority: e.authority,
            path: e.path,
            status: e.status,
            grpc_status: e.grpc_status,
            duration_micros: e.duration_micros,
            source_principal: e.source_principal,
            destination_principal: e.destination_principal,
            source_workload: e.source_workload,
            destination_service: e.destination_service,
            destination_workload: e.destination_workload,
            upstream: e.upstream,
            response_flags: e.response_flags,
            trace_id: e.trace_id,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
        }
    }
}

#[cfg(test)]
mod tests;
