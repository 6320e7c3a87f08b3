//! End-to-end harness for Trellis tests: starts real meshes (`trellis up` as a child
//! process, on its own slice of the loopback range), talks HTTP to them, and reads their
//! logs.
//!
//! Every mesh started here gets its own `127.0.N.0/24` (N chosen by the test), so tests run in
//! parallel without sharing a port: each workload, proxy, control plane and front door has
//! its own address. Meshes of transparent proxies run on LANs of network namespaces instead
//! ([`lan_mesh`] on [`netns`]), with real apps such as [`grpc_echo`] inside the hosts.
//! [`otlp`] stands in for an OpenTelemetry collector: it receives the spans proxies export.

pub mod grpc_echo;
pub mod http_client;
pub mod lan_mesh;
pub mod load;
pub mod mesh;
pub mod netns;
pub mod otlp;

pub use http_client::{metric_sum, HttpClient, HttpResponse};
pub use load::{Load, LoadReport};
pub use mesh::Mesh;

use std::path::PathBuf;

/// The repository root (where `examples/` and `Cargo.toml` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
