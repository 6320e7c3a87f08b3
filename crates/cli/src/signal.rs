//! Waiting for the signals that stop a long-running subcommand.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the process can still be killed; waiting forever is the
        // only faithful behaviour left.
        _ => std::future::pending::<()>().await,
    }
}
