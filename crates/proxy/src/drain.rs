//! Draining on shutdown: readiness goes false, listeners stop accepting, connections are told
//! to finish (HTTP/1.1 closes once idle, HTTP/2 sends GOAWAY), and requests in flight get until
//! the deadline to complete.

use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;

/// Waits for every watched connection to finish, or for `deadline`.
pub async fn finish(graceful: GracefulShutdown, deadline: Duration, what: &str) {
    let open = graceful.count();
    if open > 0 {
        tracing::info!(listener = what, connections = open, "draining");
    }
    tokio::select! {
        _ = graceful.shutdown() => tracing::debug!(listener = what, "drained"),
        _ = tokio::time::sleep(deadline) => {
            tracing::warn!(listener = what, ?deadline, "drain deadline passed; closing what is left");
        }
    }
}
