//! Finding the mesh `trellis up` runs: `up` writes a small record (its PID, the control
//! plane's API address, the data directory holding the admin token, and the PIDs of the
//! processes it supervises) to a well-known file, `up.json` in the runtime directory, and
//! the admin commands (`ca rotate`, `apply`, `rollback`, `tap`, `certs`, `stat`, …) read it
//! when they are not told `--api` or `--data-dir`.
//!
//! The runtime directory is `$TRELLIS_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/trellis`, else
//! `/tmp/trellis-<uid>`. The record steers where the CLI sends the admin token, so it is
//! trusted only when the directory and the file belong to the current user and nobody else
//! can write to them: someone who could plant a record could otherwise point `trellis apply`
//! at a server of their own and be handed the token.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};

/// The API address used when neither a flag nor a running `up` names one.
pub const DEFAULT_API: ([u8; 4], u16) = ([127, 0, 0, 1], 15014);
/// The data directory used when neither a flag nor a running `up` names one.
pub const DEFAULT_DATA_DIR: &str = "trellis-data";
const RECORD_FILE: &str = "up.json";

/// What a running `trellis up` tells the other commands about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeshRecord {
    /// The `up` process.
    pub pid: u32,
    /// The control plane's HTTP API.
    pub api: SocketAddr,
    /// The control plane's gRPC address.
    pub control: SocketAddr,
    /// The control plane's data directory (CA, join tokens, `admin-token`).
    pub data_dir: PathBuf,
    /// The watched config directory.
    pub config_dir: PathBuf,
    /// The processes `up` supervises, by label, with their current PIDs.
    #[serde(default)]
    pub processes: Vec<ProcessRecord>,
}

/// One supervised process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessRecord {
    pub label: String,
    pub pid: u32,
    /// How often it has been started again after it died.
    #[serde(default)]
    pub restarts: u32,
}

/// `--api` and `--data-dir` of the commands that talk to a control plane: both default to
/// the mesh a running `trellis up` names, else to `127.0.0.1:15014` and `trellis-data`.
#[derive(Args, Debug, Clone, Default)]
pub struct MeshTarget {
    /// The control plane's HTTP API [default: the running `trellis up`'s, else 127.0.0.1:15014].
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// The control plane's data directory, where its admin token is [default: the running
    /// `trellis up`'s, else trellis-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl MeshTarget {
    /// The record of a running `up` that these flags do not contradict.
    fn record(&self) -> Option<MeshRecord> {
        let record = read().ok().flatten()?;
        match self.api {
            Some(api) if api != record.api => None,
            _ => Some(record),
        }
    }

    /// The API to talk to.
    pub fn api(&self) -> SocketAddr {
        self.api
            .or_else(|| self.record().map(|r| r.api))
            .unwrap_or(SocketAddr::from(DEFAULT_API))
    }

    /// The data directory whose admin token to use.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| self.record().map(|r| r.data_dir))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The admin token of the control plane these flags name.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        self.token(crate::api_client::admin_token)
    }

    /// The read token of the control plane these flags name (its admin token when only that
    /// one is there): what every read of its API needs.
    pub fn read_token(&self) -> anyhow::Result<String> {
        self.token(crate::api_client::read_token)
    }

    /// A token read by `read` from the data directory, with an error that says where it
    /// looked and why there.
    fn token(
        &self,
        read: fn(&std::path::Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        let dir = self.data_dir();
        read(&dir).with_context(|| {
            if self.data_dir.is_none() && self.record().is_none() {
                format!(
                    "no running `trellis up` was found (no record in {}); give --data-dir \
                     (and --api) of the control plane",
                    runtime_dir().display()
                )
            } else {
                format!("using the data directory {}", dir.display())
            }
        })
    }
}

/// Where the record lives.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRELLIS_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("trellis");
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/trellis-{uid}"))
}

/// The record of the running `up`, if there is one: `None` when there is no record or its
/// `up` has gone (a record left by a killed `up`). An error when a record exists that must
/// not be trusted.
pub fn read() -> anyhow::Result<Option<MeshRecord>> {
    read_in(&runtime_dir())
}

fn read_in(dir: &Path) -> anyhow::Result<Option<MeshRecord>> {
    let path = dir.join(RECORD_FILE);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    check_private(dir)?;
    check_owned(&path, &meta)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let record: MeshRecord =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(alive(record.pid).then_some(record))
}

/// Writes `record` unless a live `up` holds the file already (then `Ok(false)`: the admin
/// commands keep finding that first mesh, and this one is reached with `--api`).
pub fn write(record: &MeshRecord) -> anyhow::Result<bool> {
    write_in(&runtime_dir(), record)
}

fn write_in(dir: &Path, record: &MeshRecord) -> anyhow::Result<bool> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    check_private(dir)?;
    if let Some(other) = read_in(dir)? {
        if other.pid != record.pid {
            return Ok(false);
        }
    }
    // Written aside and renamed, so a reader never sees half a record.
    let tmp = dir.join(format!(".{RECORD_FILE}.{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(record)?.as_bytes())?;
    }
    std::fs::rename(&tmp, dir.join(RECORD_FILE))
        .with_context(|| format!("writing {}", dir.join(RECORD_FILE).display()))?;
    Ok(true)
}

/// Removes the record if it is `pid`'s.
pub fn remove(pid: u32) {
    let dir = runtime_dir();
    if let Ok(Some(r)) = read_in(&dir) {
        if r.pid == pid {
            let _ = std::fs::remove_file(dir.join(RECORD_FILE));
        }
    }
}

fn check_private(dir: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    check_owned(dir, &meta)?;
    if meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "{} can be written by other users; not trusting the mesh record in it",
            dir.display()
        );
    }
    Ok(())
}

fn check_owned(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        bail!(
            "{} belongs to another user (uid {}); not trusting it",
            path.display(),
            meta.uid()
        );
    }
    if meta.file_type().is_symlink() {
        bail!("{} is a symbolic link; not trusting it", path.display());
    }
    Ok(())
}

/// True while process `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32) -> MeshRecord {
        MeshRecord {
            pid,
            api: "127.0.0.1:25014".parse().expect("address"),
            control: "127.0.0.1:25012".parse().expect("address"),
            data_dir: "/var/lib/trellis-test".into(),
            config_dir: "examples/quickstart".into(),
            processes: vec![ProcessRecord {
                label: "control".into(),
                pid: 1,
                restarts: 0,
            }],
        }
    }

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        d
    }

    #[test]
    fn a_live_record_is_read_back() {
        let d = private_dir();
        let r = record(std::process::id());
        assert!(write_in(d.path(), &r).expect("write"));
        assert_eq!(read_in(d.path()).expect("read"), Some(r));
    }

    #[test]
    fn a_dead_ups_record_is_ignored_and_replaced() {
        let d = private_dir();
        // PIDs are below 2^22 on Linux: this one cannot be running.
        let dead = record(u32::MAX - 1);
        assert!(write_in(d.path(), &dead).expect("write"));
        assert_eq!(read_in(d.path()).expect("read"), None);
        let live = record(std::process::id());
        assert!(write_in(d.path(), &live).expect("write over a dead record"));
        assert_eq!(read_in(d.path()).expect("read"), Some(live));
    }

    #[test]
    fn a_live_ups_record_is_not_overwritten() {
        let d = private_dir();
        let first = record(std::process::id());
        assert!(write_in(d.path(), &first).expect("write"));
        // PID 1 is alive: another `up` holding the record.
        let mut second = record(1);
        second.api = "127.0.0.1:35014".parse().expect("address");
        assert!(!write_in(d.path(), &second).expect("write"));
        assert_eq!(read_in(d.path()).expect("read"), Some(first));
    }

    #[test]
    fn a_record_in_a_directory_others_can_write_is_refused() {
        let d = private_dir();
        assert!(write_in(d.path(), &record(std::process::id())).expect("write"));
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = read_in(d.path()).expect_err("a world-writable directory");
        assert!(err.to_string().contains("other users"), "{err:#}");
    }

    #[test]
    fn a_symlinked_record_is_refused() {
        let d = private_dir();
        let elsewhere = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(
            elsewhere.path(),
            serde_json::to_string(&record(std::process::id())).expect("json"),
        )
        .expect("write");
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join(RECORD_FILE)).expect("link");
        let err = read_in(d.path()).expect_err("a symlink");
        assert!(err.to_string().contains("symbolic link"), "{err:#}");
    }
}
