//! Revision history: every change set the control plane was given, applied or rejected, with
//! where it came from. Applied revisions keep their files so they can be diffed and rolled
//! back to.
//!
//! The history sits behind [`RevisionStore`]; [`FileRevisionStore`] keeps it in the data
//! directory (one JSON file per revision). A distributed backend (etcd) implements the same
//! trait: append-only records keyed by revision number.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a change set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The config directory as found when the control plane started.
    Start,
    /// A change in the watched config directory.
    FileChange,
    /// `trellis apply`.
    Apply,
    /// `trellis rollback`.
    Rollback,
}

/// What became of a change set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Applied,
    /// Failed validation; the previous revision kept serving.
    Rejected,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionMeta {
    pub number: u64,
    /// SHA-256 (hex) over the sorted (path, content) pairs.
    pub hash: String,
    pub time_unix: u64,
    pub source: Source,
    /// HEAD of the config directory's git checkout, when it is one.
    pub git_commit: Option<String>,
    pub status: Status,
    /// Errors of a rejected change, one line each (`file:line:col: Kind ns/name: field: msg`).
    pub errors: Vec<String>,
    pub resources: usize,
    /// For a rollback: the revision whose content it restored.
    pub rolled_back_to: Option<u64>,
}

/// A history entry with the files of an applied revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionRecord {
    pub meta: RevisionMeta,
    /// Relative path → content; empty for rejected changes.
    pub files: BTreeMap<String, String>,
}

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevisionStoreError {
    #[error("revision store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("revision record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Append-only storage of revision records.
pub trait RevisionStore: Send + Sync {
    /// Every record, oldest first.
    fn load_all(&self) -> Result<Vec<RevisionRecord>, RevisionStoreError>;
    /// Adds a record; its number is new.
    fn append(&self, record: &RevisionRecord) -> Result<(), RevisionStoreError>;
}

/// Records as `DATA/revisions/NNNNNNNN.json`, each written to a temporary file and renamed
/// into place so a crash never leaves half a record.
pub struct FileRevisionStore {
    dir: PathBuf,
}

impl FileRevisionStore {
    pub fn open(data_dir: &Path) -> Result<Self, RevisionStoreError> {
        let dir = data_dir.join("revisions");
        std::fs::create_dir_all(&dir).map_err(|source| RevisionStoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }
}

impl RevisionStore for FileRevisionStore {
    fn load_all(&self) -> Result<Vec<RevisionRecord>, RevisionStoreError> {
        let io = |path: &Path, source| RevisionStoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| io(&self.dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
                serde_json::from_str(&text)
                    .map_err(|source| RevisionStoreError::Corrupt { path: p, source })
            })
            .collect()
    }

    fn append(&self, record: &RevisionRecord) -> Result<(), RevisionStoreError> {
        let path = self.dir.join(format!("{:08}.json", record.meta.number));
        let tmp = self
            .dir
            .join(format!(".{:08}.json.tmp", record.meta.number));
        let io = |source| RevisionStoreError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(record).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }
}

/// The commit checked out in the git work tree containing `dir`, if any. Reads `.git`
/// directly (HEAD, loose refs, packed-refs) so no git binary is needed.
pub fn git_commit(dir: &Path) -> Option<String> {
    let mut cur = dir.canonicalize().ok()?;
    let git_dir = loop {
        let candidate = cur.join(".git");
        if candidate.is_dir() {
            break candidate;
        }
        if candidate.is_file() {
            // A worktree or submodule: `.git` is a file naming the real directory.
            let text = std::fs::read_to_string(&candidate).ok()?;
            let path = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
            break if path.is_absolute() {
                path
            } else {
                cur.join(path)
            };
        }
        cur = cur.parent()?.to_path_buf();
    };
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_sha(head).then(|| head.to_string());
    };
    // Worktrees keep shared refs in the common directory.
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.clone());
    for base in [&git_dir, &common] {
        if let Ok(sha) = std::fs::read_to_string(base.join(reference)) {
            let sha = sha.trim();
            if is_sha(sha) {
                return Some(sha.to_string());
            }
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| {
        let (sha, name) = l.split_once(' ')?;
        (name == reference && is_sha(sha)).then(|| sha.to_string())
    })
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> RevisionRecord {
        RevisionRecord {
            meta: RevisionMeta {
                number: n,
                hash: format!("h{n}"),
                time_unix: 1,
                source: Source::Apply,
                git_commit: None,
                status: Status::Applied,
                errors: vec![],
                resources: 1,
                rolled_back_to: None,
            },
            files: [("a.yaml".to_string(), format!("n: {n}"))].into(),
        }
    }

    #[test]
    fn file_store_round_trips_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileRevisionStore::open(dir.path()).unwrap();
        for n in [1, 2, 10] {
            store.append(&record(n)).unwrap();
        }
        let all = store.load_all().unwrap();
        let numbers: Vec<u64> = all.iter().map(|r| r.meta.number).collect();
        assert_eq!(numbers, vec![1, 2, 10]);
        assert_eq!(all[2].files["a.yaml"], "n: 10");
        // A reopened store sees the same history.
        let again = FileRevisionStore::open(dir.path())
            .unwrap()
            .load_all()
            .unwrap();
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn reads_git_head_from_loose_and_packed_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let sub = dir.path().join("config/prod");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(git_commit(&sub), None);
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack\n{sha} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(git_commit(&sub).as_deref(), Some(sha));
        let newer = "89abcdef0123456789abcdef0123456789abcdef";
        std::fs::write(git.join("refs/heads/main"), format!("{newer}\n")).unwrap();
        assert_eq!(git_commit(&sub).as_deref(), Some(newer));
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(git_commit(outside.path()), None);
    }
}
