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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use trellis_api::load::{load_dir, ConfigSet, Diagnostic, LoadError};

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
    #[error("reading config files under {dir}: {source}")]
    Read {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("no applied revision {0} in the history")]
    NoSuchRevision(u64),
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
}

impl ConfigStore {
    /// Loads the history and the directory. An invalid directory at start is an error: there
    /// is no last good config to fall back on.
    pub fn open(dir: &Path, history: Box<dyn RevisionStore>) -> Result<Arc<Self>, StoreError> {
        let records = history.load_all()?;
        let files = read_files(dir)?;
        let config = parse_files(&files, dir).map_err(|e| match e {
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
        })?;
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
        let config = match parse_files(&files, &label) {
            Ok(c) => c,
            Err(LoadError::Invalid(diags)) => {
                let errors: Vec<Diagnostic> = diags.into_iter().filter(|d| d.is_error()).collect();
                if !dry_run {
                    let current = self.current();
                    let m = meta(
                        self.next_number(),
                        &ConfigSet {
                            resources: vec![],
                            warnings: vec![],
                            hash: hash_files(&files),
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
                    for d in &errors {
                        tracing::error!("{d}");
                    }
                    self.record(m, BTreeMap::new())?;
                }
                return Err(ChangeError::Invalid(errors));
            }
            Err(e) => {
                return Err(ChangeError::Store(StoreError::Load {
                    dir: label,
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
        let mut seen = fingerprint(&self.dir);
        // A broken directory is reported once, not at every poll while it stays broken.
        let mut rejected_hash: Option<String> = None;
        loop {
            tokio::time::sleep(interval).await;
            if Arc::strong_count(&self) == 1 {
                return;
            }
            let now = fingerprint(&self.dir);
            if now == seen {
                continue;
            }
            seen = now;
            let files = match read_files(&self.dir) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(error = %e, "config directory unreadable; keeping the last good revision");
                    continue;
                }
            };
            let hash = hash_files(&files);
            if rejected_hash.as_deref() == Some(hash.as_str()) {
                continue;
            }
            match self.change(files, Source::FileChange, None, false).await {
                Ok(_) => rejected_hash = None,
                Err(ChangeError::Invalid(_)) => rejected_hash = Some(hash),
                Err(e) => tracing::error!(error = %e, "config change could not be recorded"),
            }
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

/// Every `*.yaml`/`*.yml` file under `dir` (hidden files and directories skipped), by path
/// relative to `dir`.
pub fn read_files(dir: &Path) -> Result<BTreeMap<String, String>, StoreError> {
    let err = |source| StoreError::Read {
        dir: dir.to_path_buf(),
        source,
    };
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read(&path).map_err(err)?;
                // Not UTF-8: kept lossily so the loader reports it as an error at its line.
                out.insert(rel, String::from_utf8_lossy(&text).into_owned());
            }
        }
    }
    Ok(out)
}

/// Parses and validates a set of files as one config, exactly as a directory is loaded, then
/// checks that the mesh can enforce every security policy in it ([`crate::policies::check`]).
/// Diagnostics name the files under `label` (the watched directory, or nothing for files
/// sent by `apply`).
pub fn parse_files(files: &BTreeMap<String, String>, label: &Path) -> Result<ConfigSet, LoadError> {
    let tmp = tempfile::Builder::new()
        .prefix("trellis-change-")
        .tempdir()
        .map_err(|source| LoadError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    for (rel, content) in files {
        // Only plain relative paths: a name with `..` or a root would escape the directory.
        let rel_path = Path::new(rel);
        if rel_path.is_absolute()
            || rel_path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(LoadError::Invalid(vec![Diagnostic {
                severity: trellis_api::load::Severity::Error,
                file: PathBuf::from(rel),
                line: 1,
                column: 1,
                kind: None,
                namespace: None,
                name: None,
                field: None,
                message: "file names must be plain relative paths".into(),
            }]));
        }
        let path = tmp.path().join(rel_path);
        let io = |source| LoadError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, content).map_err(io)?;
    }
    let relabel = |d: &mut Diagnostic| {
        if let Ok(rel) = d.file.strip_prefix(tmp.path()) {
            d.file = label.join(rel);
        }
    };
    match load_dir(tmp.path()) {
        Ok(mut c) => {
            c.warnings.iter_mut().for_each(relabel);
            for r in &mut c.resources {
                if let Ok(rel) = r.file.strip_prefix(tmp.path()) {
                    r.file = label.join(rel);
                }
            }
            // Valid Istio, but a policy the mesh cannot enforce as written: the change set is
            // refused whole, like any other error (see crate::policies).
            let errors = crate::policies::check(&c.resources);
            if !errors.is_empty() {
                let mut all = c.warnings;
                all.extend(errors);
                all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
                return Err(LoadError::Invalid(all));
            }
            // Valid, but routing differently than one resource alone says (a parentRef to a
            // Service that does not exist, a VirtualService an HTTPRoute overrides): warned
            // about with the loader's own warnings.
            c.warnings
                .extend(trellis_api::routing::compile(&c.resources).warnings);
            c.warnings
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Ok(c)
        }
        Err(LoadError::Invalid(mut diags)) => {
            diags.iter_mut().for_each(relabel);
            Err(LoadError::Invalid(diags))
        }
        Err(e) => Err(e),
    }
}

/// The hash `load_dir` computes for the same files: SHA-256 over the sorted, length-prefixed
/// (path, content) pairs.
fn hash_files(files: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (p, c) in files {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
        h.update((c.len() as u64).to_be_bytes());
        h.update(c.as_bytes());
    }
    hex::encode(h.finalize())
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

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  \
                           selector: {app: web}\n  ports: [{name: http, port: 80}]\n";
    const CUSTOM: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                          metadata: {name: ext-authz, namespace: web}\nspec:\n  \
                          action: CUSTOM\n  provider: {name: opa}\n  rules: [{}]\n";

    fn store(dir: &Path, data: &Path) -> Arc<ConfigStore> {
        let history = crate::revisions::FileRevisionStore::open(data).unwrap();
        ConfigStore::open(dir, Box::new(history)).unwrap()
    }

    #[tokio::test]
    async fn a_policy_the_mesh_cannot_enforce_rejects_the_whole_change() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, data) = (tmp.path().join("config"), tmp.path().join("data"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(dir.join("web.yaml"), SERVICE).unwrap();
        let store = store(&dir, &data);
        let good = store.current().number;

        // A change that adds a Service (valid) and a CUSTOM policy (valid Istio, but nothing
        // in the mesh could enforce it).
        let files = BTreeMap::from([
            ("web.yaml".to_owned(), SERVICE.to_owned()),
            (
                "more.yaml".to_owned(),
                SERVICE.replace("name: web", "name: api"),
            ),
            ("policy.yaml".to_owned(), CUSTOM.to_owned()),
        ]);
        let Err(ChangeError::Invalid(errors)) =
            store.change(files, Source::Apply, None, false).await
        else {
            panic!("the change was accepted");
        };
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "policy.yaml:1:1: AuthorizationPolicy web/ext-authz: spec.action: action CUSTOM \
              (external authorization) is not supported by the mesh"
            ]
        );
        // Nothing of it applies: the last good revision keeps serving, and the rejection is
        // in the history.
        let current = store.current();
        assert_eq!(current.number, good);
        assert_eq!(current.config.services().count(), 1);
        let last = store.history().pop().unwrap();
        assert_eq!(last.status, Status::Rejected);
        assert_eq!(last.errors, errors);

        // The directory too: a control plane cannot start on it.
        std::fs::write(dir.join("policy.yaml"), CUSTOM).unwrap();
        let history = crate::revisions::FileRevisionStore::open(&data).unwrap();
        let Err(StoreError::Invalid { errors, .. }) = ConfigStore::open(&dir, Box::new(history))
        else {
            panic!("a directory with a CUSTOM policy opened");
        };
        assert!(
            errors[0]
                .ends_with("action CUSTOM (external authorization) is not supported by the mesh"),
            "{errors:?}"
        );
    }

    #[test]
    fn route_warnings_come_with_the_loaders() {
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                     metadata: {name: r}\nspec:\n  \
                     parentRefs: [{group: \"\", kind: Service, name: gone}]\n";
        let files = BTreeMap::from([
            ("web.yaml".to_owned(), SERVICE.to_owned()),
            ("route.yaml".to_owned(), route.to_owned()),
        ]);
        let config = parse_files(&files, Path::new("cfg")).unwrap();
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings.contains(
                &"cfg/route.yaml:1:1: warning: HTTPRoute default/r: spec.parentRefs[0]: \
                  parentRef Service default/gone does not exist (or lacks that port): the \
                  route does not attach to it"
                    .to_owned()
            ),
            "{warnings:#?}"
        );
    }
}
