//! File-system helpers for secret-bearing state: owner-only files and
//! directories, and atomic replacement of a file's contents.
//!
//! Errors are plain `io::Error`s; callers add the path and the action to their
//! own error types.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode for files holding secrets.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode for files anyone on the host may read (certificates).
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode for directories holding secrets.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path`, failing if it exists, with `mode` applied at creation so the
/// contents are never readable with looser permissions, not even briefly.
pub(crate) fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

/// Creates directory `path` (its parent must exist) with `mode`; succeeds if it
/// already exists.
pub(crate) fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    match builder.create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        other => other,
    }
}

/// Permission bits of `path`, when the platform has them.
pub(crate) fn mode_of(path: &Path) -> io::Result<Option<u32>> {
    let meta = fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        Ok(Some(meta.permissions().mode() & 0o7777))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(None)
    }
}

/// Replaces `path` with `contents` so that concurrent readers see either the
/// old or the new file in full, never a partial write.
///
/// The data goes to a uniquely named sibling first (created with `mode`), is
/// flushed to disk, and is then renamed over `path`; rename within one
/// directory is atomic on POSIX file systems.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_sibling(path)?;
    let result = (|| {
        let mut file = create_new_file(&tmp, mode)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        // Best effort: the temp file is garbage either way, and the original
        // error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_sibling(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let unique = format!(
        ".{}.tmp-{}-{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    );
    Ok(path.with_file_name(unique))
}

/// Makes a completed rename durable across a crash.
fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one", PRIVATE_FILE_MODE).unwrap();
        write_atomic(&path, b"two", PRIVATE_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        assert_eq!(mode_of(&path).unwrap(), Some(0o600));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind: {leftovers:?}");
    }

    #[test]
    fn create_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        create_new_file(&path, PRIVATE_FILE_MODE).unwrap();
        assert_eq!(
            create_new_file(&path, PRIVATE_FILE_MODE)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
    }
}
