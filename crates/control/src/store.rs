//! The config store: the current revision, how it changes, and its history.
//!
//! Changes come from three places: the watched config directory (polled; reloaded whole when
//! anything in it changes), `trellis apply` and `trellis rollback`. Each change set is
//! validated as a whole ([`parse_files`]: the loader's checks, then whether the mesh can
//! enforce every security policy in it): if any document has an error, nothing of it is
//! applied, the errors are logged with file, line and field and recorded as a rejected
//! revision, and the last good revision keeps serving. A valid change becomes the next revision, published on a
//! `watch` channel and appended to the history ([`crate::revisions`]).
//!
//! The directory stays the source of truth: an `apply` or `rollback` holds until the next
//! change in the directory (commit the change or the revert in git to keep it).
//!
//! The directory is read by the loader's [`read_config_dir`], the same reader `trellis
//! validate` and `apply` use, so whatever the directory holds (FIFOs, devices, symlink loops,
//! huge or deep trees, invalid UTF-8) costs bounded time and memory and is reported as a
//! rejected change naming the file. Reading and parsing run on blocking threads, never on
//! the async runtime that serves proxies and the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use trellis_api::load::{
    content_hash, fingerprint, load_files, read_config_dir, ConfigFiles, ConfigSet, Diagnostic,
    Fingerprint, Limits, LoadError,
};

use crate::certs::unix;
use crate::revisions::{
    git_commit, RevisionMeta, RevisionRecord, RevisionStore, RevisionStoreError, Source, Status,
};

/// The revision being served.
#[derive(Debug)]
pub struct Revision {
    pub number: u64,
    pub config: ConfigSet,
    pub meta: RevisionMeta,
    /// The files it was parsed from (relative path → content).
    pub files: BTreeMap<String, String>,
}

/// Why the store could not start or a change could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("config directory {dir}: {source}")]
    Load { dir: PathBuf, source: LoadError },
    #[error("config directory {dir} is invalid:\n{}", .errors.join("\n"))]
    Invalid { dir: PathBuf, errors: Vec<String> },
    #[error(transparent)]
    History(#[from] RevisionStoreError),
    #[error("no applied revision {0} in the history")]
    NoSuchRevision(u64),
    #[error("validating a change failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// Why a change set was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("the change set is invalid ({} errors)", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of a change that passed validation.
#[derive(Debug)]
pub struct Accepted {
    /// The new revision's record; `None` for a dry run or when nothing changed.
    pub meta: Option<RevisionMeta>,
    /// The validated config (what would be or was applied).
    pub config: ConfigSet,
}

/// The store: current revision, history, and the lock that makes changes one at a time.
pub struct ConfigStore {
    dir: PathBuf,
    history: Box<dyn RevisionStore>,
    current: watch::Sender<Arc<Revision>>,
    /// Serialises changes so two never interleave; held across validation, never while
    /// anything waits on the network.
    change: tokio::sync::Mutex<()>,
    /// History entries, kept in memory for `get revisions`.
    log: std::sync::Mutex<Vec<RevisionMeta>>,
    /// The directory as it looked just before [`ConfigStore::open`] read it: where the
    /// watcher starts, so that a change made between the read and the watcher's start is
    /// not taken for the state already served.
    baseline: std::sync::Mutex<Option<Fingerprint>>,
}

impl ConfigStore {
    /// Loads the history and the directory. An invalid directory at start is an error: there
    /// is no last good config to fall back on.
    pub fn open(dir: &Path, history: Box<dyn RevisionStore>) -> Result<Arc<Self>, StoreError> {
        let records = history.load_all()?;
        let invalid = |e| match e {
            LoadError::Invalid(diags) => StoreError::Invalid {
                dir: dir.to_path_buf(),
                errors: diags
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| d.to_string())
                    .collect(),
            },
            source => StoreError::Load {
                dir: dir.to_path_buf(),
                source,
            },
        };
        let baseline = fingerprint(dir, &Limits::DEFAULT).ok();
        let files = read_config_dir(dir, &Limits::DEFAULT).map_err(invalid)?;
        let config = parse_files(&files, dir).map_err(invalid)?;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let last_applied = records
            .iter()
            .rev()
            .find(|r| r.meta.status == Status::Applied);
        let next = records.last().map_or(1, |r| r.meta.number + 1);
        let (meta, new_record) = match last_applied {
            // Restarted on the same content: keep serving that revision's number.
            Some(r) if r.meta.hash == config.hash => (r.meta.clone(), false),
            _ => (
                meta(
                    next,
                    &config,
                    Source::Start,
                    dir,
                    Status::Applied,
                    vec![],
                    None,
                ),
                true,
            ),
        };
        if new_record {
            history.append(&RevisionRecord {
                meta: meta.clone(),
                files: files.clone(),
            })?;
        }
        let mut log: Vec<RevisionMeta> = records.into_iter().map(|r| r.meta).collect();
        if new_record {
            log.push(meta.clone());
        }
        let revision = Revision {
            number: meta.number,
            config,
            meta,
            files,
        };
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            history,
            current: watch::channel(Arc::new(revision)).0,
            change: tokio::sync::Mutex::new(()),
            log: std::sync::Mutex::new(log),
            baseline: std::sync::Mutex::new(baseline),
        }))
    }

    /// The served revision, and its changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Revision>> {
        self.current.subscribe()
    }

    pub fn current(&self) -> Arc<Revision> {
        self.current.borrow().clone()
    }

    /// Every change set seen, oldest first.
    pub fn history(&self) -> Vec<RevisionMeta> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Validates `files` as a whole config and, unless `dry_run`, applies it as the next
    /// revision. A rejected change is recorded in the history (not for dry runs).
    pub async fn change(
        &self,
        files: BTreeMap<String, String>,
        source: Source,
        rolled_back_to: Option<u64>,
        dry_run: bool,
    ) -> Result<Accepted, ChangeError> {
        let _one = self.change.lock().await;
        let label = match source {
            Source::FileChange | Source::Start => self.dir.clone(),
            Source::Apply | Source::Rollback => PathBuf::new(),
        };
        // Parsing and compiling a config is CPU work bounded only by the loader's limits: a
        // blocking thread does it, so proxies and the API are served meanwhile.
        let (files, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = parse_files(&files, &label);
            (files, parsed)
        })
        .await
        .map_err(StoreError::from)?;
        let config = match parsed {
            Ok(c) => c,
            Err(LoadError::Invalid(diags)) => {
                let errors: Vec<Diagnostic> = diags.into_iter().filter(|d| d.is_error()).collect();
                if !dry_run {
                    self.reject(content_hash(&files), source, &errors, rolled_back_to)?;
                }
                return Err(ChangeError::Invalid(errors));
            }
            Err(e) => {
                return Err(ChangeError::Store(StoreError::Load {
                    dir: self.dir.clone(),
                    source: e,
                }))
            }
        };
        if dry_run || config.hash == self.current().config.hash {
            return Ok(Accepted { meta: None, config });
        }
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let m = meta(
            self.next_number(),
            &config,
            source,
            &self.dir,
            Status::Applied,
            vec![],
            rolled_back_to,
        );
        self.record(m.clone(), files.clone())?;
        tracing::info!(
            revision = m.number,
            hash = %short(&m.hash),
            source = ?source,
            resources = m.resources,
            "config revision applied"
        );
        self.current.send_replace(Arc::new(Revision {
            number: m.number,
            config: config.clone(),
            meta: m.clone(),
            files,
        }));
        Ok(Accepted {
            meta: Some(m),
            config,
        })
    }

    /// Applies the content of an earlier applied revision as a new revision.
    pub async fn rollback(&self, to: u64) -> Result<Accepted, ChangeError> {
        let record = self
            .history
            .load_all()
            .map_err(StoreError::from)?
            .into_iter()
            .find(|r| r.meta.number == to && r.meta.status == Status::Applied)
            .ok_or(StoreError::NoSuchRevision(to))?;
        self.change(record.files, Source::Rollback, Some(to), false)
            .await
    }

    fn next_number(&self) -> u64 {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .map_or(1, |m| m.number + 1)
    }

    /// Records a change set that was not applied, and says so in the log.
    fn reject(
        &self,
        hash: String,
        source: Source,
        errors: &[Diagnostic],
        rolled_back_to: Option<u64>,
    ) -> Result<(), StoreError> {
        let current = self.current();
        let m = meta(
            self.next_number(),
            &ConfigSet {
                resources: vec![],
                warnings: vec![],
                hash,
            },
            source,
            &self.dir,
            Status::Rejected,
            errors.iter().map(|d| d.to_string()).collect(),
            rolled_back_to,
        );
        tracing::error!(
            rejected = m.number,
            keeping = current.number,
            source = ?source,
            "config change rejected; the last good revision keeps serving"
        );
        for d in errors {
            tracing::error!("{d}");
        }
        self.record(m, BTreeMap::new())
    }

    fn record(
        &self,
        meta: RevisionMeta,
        files: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        self.history.append(&RevisionRecord {
            meta: meta.clone(),
            files,
        })?;
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(meta);
        Ok(())
    }

    /// Watches the config directory, applying each change, until the store is dropped.
    pub async fn watch_dir(self: Arc<Self>, interval: Duration) {
        let mut seen = self
            .baseline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // A broken directory is reported once, not at every poll while it stays broken: the
        // hash of a rejected config, or the errors of a directory that could not be read.
        let mut rejected: Option<String> = None;
        // The last I/O failure logged, likewise.
        let mut failed: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            if Arc::strong_count(&self) == 1 {
                return;
            }
            let now = match self.fingerprint().await {
                Ok(now) => now,
                Err(e) => {
                    self.log_unreadable(&mut failed, e);
                    continue;
                }
            };
            if seen.as_ref() == Some(&now) {
                continue;
            }
            let dir = self.dir.clone();
            let read =
                tokio::task::spawn_blocking(move || read_config_dir(&dir, &Limits::DEFAULT)).await;
            let files = match read {
                Ok(Ok(files)) => files,
                Ok(Err(LoadError::Invalid(diags))) => {
                    seen = Some(now);
                    let key = diags.iter().map(|d| format!("{d}\n")).collect::<String>();
                    if rejected.as_deref() != Some(key.as_str()) {
                        let errors: Vec<Diagnostic> =
                            diags.into_iter().filter(|d| d.is_error()).collect();
                        let _one = self.change.lock().await;
                        if let Err(e) =
                            self.reject(String::new(), Source::FileChange, &errors, None)
                        {
                            tracing::error!(error = %e, "config change could not be recorded");
                        }
                        rejected = Some(key);
                    }
                    continue;
                }
                // Not remembered as seen: an I/O error may pass (a file replaced mid-walk).
                Ok(Err(e)) => {
                    self.log_unreadable(&mut failed, e);
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the config directory failed");
                    continue;
                }
            };
            seen = Some(now);
            failed = None;
            let hash = content_hash(&files);
            if rejected.as_deref() == Some(hash.as_str()) {
                continue;
            }
            match self.change(files, Source::FileChange, None, false).await {
                Ok(_) => rejected = None,
                Err(ChangeError::Invalid(_)) => rejected = Some(hash),
                Err(e) => tracing::error!(error = %e, "config change could not be recorded"),
            }
        }
    }

    /// The directory's fingerprint, walked on a blocking thread.
    async fn fingerprint(&self) -> Result<Fingerprint, LoadError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || fingerprint(&dir, &Limits::DEFAULT))
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Io {
                    path: self.dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Logs that the directory cannot be read, unless the same was just logged.
    fn log_unreadable(&self, last: &mut Option<String>, e: LoadError) {
        let message = e.to_string();
        if last.as_deref() != Some(message.as_str()) {
            tracing::error!(error = %message, "config directory unreadable; keeping the last good revision");
            *last = Some(message);
        }
    }
}

fn meta(
    number: u64,
    config: &ConfigSet,
    source: Source,
    dir: &Path,
    status: Status,
    errors: Vec<String>,
    rolled_back_to: Option<u64>,
) -> RevisionMeta {
    RevisionMeta {
        number,
        hash: config.hash.clone(),
        time_unix: unix(SystemTime::now()),
        source,
        git_commit: match source {
            Source::Start | Source::FileChange => git_commit(dir),
            Source::Apply | Source::Rollback => None,
        },
        status,
        errors,
        resources: config.resources.len(),
        rolled_back_to,
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Parses and validates a set of files as one config, exactly as a directory is loaded
/// ([`load_files`], with the loader's limits whoever sent the files), then checks that the
/// mesh can enforce every security policy in it ([`crate::policies::check`]). Diagnostics
/// name the files under `label` (the watched directory, or nothing for files sent by
/// `apply`).
pub fn parse_files(files: &ConfigFiles, label: &Path) -> Result<ConfigSet, LoadError> {
    let mut c = load_files(label, files, &Limits::DEFAULT)?;
    // Valid Istio, but a policy the mesh cannot enforce as written: the change set is
    // refused whole, like any other error (see crate::policies).
    let errors = crate::policies::check(&c.resources);
    if !errors.is_empty() {
        let mut all = c.warnings;
        all.extend(errors);
        all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(LoadError::Invalid(all));
    }
    // Valid, but routing differently than one resource alone says (a parentRef to a Service
    // that does not exist, a VirtualService an HTTPRoute overrides): warned about with the
    // loader's own warnings.
    c.warnings
        .extend(trellis_api::routing::compile(&c.resources).warnings);
    c.warnings
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Ok(c)
}

#[cfg(test)]
mod tests;
