//! The embedded config store: a directory of YAML, watched.
//!
//! The directory is polled (cheap metadata listing) and reloaded whole when anything in it
//! changes. A change set is validated as a whole: if any file has an error, nothing of it is
//! applied, the errors are logged with file, line and field, and the last good config keeps
//! serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use trellis_api::load::{load_dir, ConfigSet, LoadError};

/// One applied config.
#[derive(Debug)]
pub struct Revision {
    /// Counts applied revisions since start, from 1.
    pub number: u64,
    pub config: ConfigSet,
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("config directory {dir}: {source}")]
    Load { dir: PathBuf, source: LoadError },
}

/// Loads the first revision; an invalid directory at start is an error (there is no last
/// good config to fall back on).
pub fn initial(dir: &Path) -> Result<Revision, StoreError> {
    let config = load_dir(dir).map_err(|source| StoreError::Load {
        dir: dir.to_path_buf(),
        source,
    })?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(Revision { number: 1, config })
}

/// Watches `dir` and publishes each valid change on `tx`, until every receiver is gone.
pub async fn watch_dir(dir: PathBuf, interval: Duration, tx: watch::Sender<Arc<Revision>>) {
    let mut seen = fingerprint(&dir);
    let mut rejected_hash = None;
    loop {
        tokio::time::sleep(interval).await;
        if tx.is_closed() {
            return;
        }
        let now = fingerprint(&dir);
        if now == seen {
            continue;
        }
        seen = now;
        let current = tx.borrow().clone();
        match load_dir(&dir) {
            Ok(config) if config.hash == current.config.hash => {}
            Ok(config) => {
                for w in &config.warnings {
                    tracing::warn!("{w}");
                }
                let number = current.number + 1;
                tracing::info!(revision = number, hash = %short(&config.hash), resources = config.resources.len(), "config revision applied");
                rejected_hash = None;
                tx.send_replace(Arc::new(Revision { number, config }));
            }
            Err(LoadError::Invalid(diags)) => {
                // Log a rejected change once, not at every poll while it stays broken.
                let key = format!("{diags:?}");
                if rejected_hash.as_ref() != Some(&key) {
                    tracing::error!(
                        keeping = current.number,
                        "config change rejected; the last good revision keeps serving"
                    );
                    for d in &diags {
                        tracing::error!("{d}");
                    }
                    rejected_hash = Some(key);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "config directory unreadable; keeping the last good revision")
            }
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Paths, sizes and modification times of every file: changes when any file does.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}
