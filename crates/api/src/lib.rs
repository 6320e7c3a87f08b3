//! Trellis API: the resource kinds users write (Istio and Kubernetes YAML), parsing them with
//! source positions and validating them, the snapshot model a proxy runs on, and the control
//! protocol (gRPC, `proto/control.proto`) that carries snapshots from the control plane to
//! proxies.
//!
//! This crate sits at the bottom of the dependency graph: the control plane and the proxy both
//! depend on it, it depends on neither.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod authz;
pub mod destination;
pub mod load;
pub mod resources;
pub mod routing;
pub mod snapshot;
pub mod telemetry;

/// Generated protobuf and gRPC types of the control protocol.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("trellis.control.v1");
}
