//! Reading the config files under a directory, within limits, and the content hash of a set
//! of files. The control plane's watcher, its start-up, `trellis validate`, `diff` and `apply`
//! all read a directory through [`read_config_dir`], so every one of them is bounded alike.
//!
//! The walk follows symlinks, because Kubernetes mounts ConfigMaps as symlinks into a hidden
//! `..data` directory, and skips hidden entries, which also keeps it out of that `..data`
//! directory, editor swap files and `.git`. What a directory may hold is bounded so that no
//! file in it can hang, spin or exhaust the reader:
//!
//! * only regular files are read. A FIFO, socket or device named `*.yaml` (or a symlink to
//!   one, such as `/dev/zero`) is an error naming the file, not skipped: the config would
//!   otherwise silently differ from what the directory shows, and the loader is
//!   all-or-nothing. Files are opened non-blocking and checked again after opening, so one
//!   swapped for a FIFO between the walk and the read cannot block either;
//! * each directory is entered once, however many symlinks lead to it (a loop, or a diamond
//!   of links that would multiply the walk), identified by device and inode;
//! * directories nest at most [`Limits::max_depth`] levels, files are at most
//!   [`Limits::max_file_bytes`] each and [`Limits::max_total_bytes`] together, and there are at
//!   most [`Limits::max_files`] of them. Sizes are what was read, through a reader that stops
//!   one byte past the limit, never what the metadata claims;
//! * content must be UTF-8; a file that is not is an error at its first bad byte.
//!
//! Everything here is blocking I/O: async callers run it on a blocking thread.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{Diagnostic, LoadError, Severity};

/// A config as files: path relative to the config directory (components joined by `/`) →
/// content. Sorted, which is the order resources are read in and the order of the hash.
pub type ConfigFiles = BTreeMap<String, String>;

/// How much a config may hold. Every path that reads a config applies the same limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Directories below the config directory, at most.
    pub max_depth: usize,
    /// Config files, at most.
    pub max_files: usize,
    /// Bytes in one file, at most.
    pub max_file_bytes: u64,
    /// Bytes in all files together, at most.
    pub max_total_bytes: u64,
}

impl Limits {
    /// The limits the control plane and the CLI apply. A Kubernetes object is at most about
    /// 1.5 MB (etcd's request limit), and each revision keeps its files in the history, so:
    /// 2 MiB a file and 16 MiB a config. Config checkouts nest a handful of directories deep.
    pub const DEFAULT: Limits = Limits {
        max_depth: 32,
        max_files: 2_000,
        max_file_bytes: 2 << 20,
        max_total_bytes: 16 << 20,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Whether `name` is a config file name.
fn is_yaml(name: &Path) -> bool {
    name.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An error about a whole file (or directory), at its first line.
pub(crate) fn file_error(file: PathBuf, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file,
        line: 1,
        column: 1,
        kind: None,
        namespace: None,
        name: None,
        field: None,
        message,
    }
}

/// What a non-regular file is, for messages.
fn describe(file_type: fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// A config file the walk found, not read yet.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    relative: String,
    /// `None` for a regular file; what else it is otherwise.
    irregular: Option<&'static str>,
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
}

/// What the walk saw.
#[derive(Debug, Default)]
struct Walk {
    /// Sorted by relative path.
    files: Vec<Found>,
    problems: Vec<Diagnostic>,
}

/// Walks `root` without reading any file: the config files found, and what is wrong with
/// the tree itself.
fn walk(root: &Path, limits: &Limits) -> Result<Walk, LoadError> {
    let mut out = Walk::default();
    let meta = fs::metadata(root).map_err(io_error(root))?;
    if !meta.is_dir() {
        return Err(LoadError::Io {
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut visited = HashSet::from([(meta.dev(), meta.ino())]);
    // (relative path, depth); an explicit stack, so depth costs no call stack.
    let mut pending: Vec<(String, usize)> = vec![(String::new(), 0)];
    while let Some((relative, depth)) = pending.pop() {
        let dir = root.join(&relative);
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let os_name = entry.file_name();
            if os_name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            let yaml = is_yaml(Path::new(&os_name));
            // Follows symlinks: a link is whatever it points to.
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // A dangling link is only a problem where a config file was meant to be.
                Err(e) if yaml => {
                    out.problems
                        .push(file_error(path, format!("cannot read: {e}")));
                    continue;
                }
                Err(_) => continue,
            };
            if !meta.is_dir() && !yaml {
                continue;
            }
            let Some(name) = os_name.to_str() else {
                out.problems.push(file_error(
                    path,
                    "name is not valid UTF-8; the config is sent and recorded by name".into(),
                ));
                continue;
            };
            let child = if relative.is_empty() {
                name.to_owned()
            } else {
                format!("{relative}/{name}")
            };
            if meta.is_dir() {
                if !visited.insert((meta.dev(), meta.ino())) {
                    // Already walked through another path: a symlink loop or a second link.
                    continue;
                }
                if depth + 1 > limits.max_depth {
                    out.problems.push(file_error(
                        path,
                        format!(
                            "directories nest more than {} levels deep; not read",
                            limits.max_depth
                        ),
                    ));
                    continue;
                }
                pending.push((child, depth + 1));
                continue;
            }
            if out.files.len() >= limits.max_files {
                out.problems.push(file_error(
                    path,
                    format!(
                        "more than {} config files; the rest are not read",
                        limits.max_files
                    ),
                ));
                return Ok(sorted(out));
            }
            out.files.push(Found {
                relative: child,
                irregular: (!meta.is_file()).then(|| describe(meta.file_type())),
                len: meta.len(),
                modified: meta.modified().ok(),
                inode: (meta.dev(), meta.ino()),
            });
        }
    }
    Ok(sorted(out))
}

fn sorted(mut walk: Walk) -> Walk {
    walk.files.sort_by(|a, b| a.relative.cmp(&b.relative));
    walk
}

/// Reads every `*.yaml`/`*.yml` file under `root` within `limits` (see the module doc).
///
/// # Errors
///
/// [`LoadError::Io`] when a directory cannot be listed; [`LoadError::Invalid`], with one
/// error per file or directory at fault, when anything breaks a rule or a limit.
pub fn read_config_dir(root: &Path, limits: &Limits) -> Result<ConfigFiles, LoadError> {
    let walk = walk(root, limits)?;
    let mut problems = walk.problems;
    let mut files = ConfigFiles::new();
    let mut total: u64 = 0;
    for found in &walk.files {
        let path = root.join(&found.relative);
        if let Some(what) = found.irregular {
            problems.push(file_error(
                path,
                format!("{what}, not a regular file; only regular files are read"),
            ));
            continue;
        }
        let left = limits.max_total_bytes.saturating_sub(total);
        let cap = limits.max_file_bytes.min(left);
        let bytes = match read_bounded(&path, cap) {
            Ok(Bounded::Read(bytes)) => bytes,
            Ok(Bounded::TooLarge) if cap < limits.max_file_bytes => {
                problems.push(file_error(
                    path,
                    format!(
                        "the config files together are larger than {} bytes; the rest are \
                         not read",
                        limits.max_total_bytes
                    ),
                ));
                break;
            }
            Ok(Bounded::TooLarge) => {
                problems.push(file_error(
                    path,
                    format!("file is larger than {} bytes", limits.max_file_bytes),
                ));
                continue;
            }
            Ok(Bounded::Irregular(what)) => {
                problems.push(file_error(
                    path,
                    format!("{what}, not a regular file; only regular files are read"),
                ));
                continue;
            }
            Err(e) => {
                problems.push(file_error(path, format!("cannot read: {e}")));
                continue;
            }
        };
        total += bytes.len() as u64;
        match String::from_utf8(bytes) {
            Ok(text) => {
                files.insert(found.relative.clone(), text);
            }
            Err(e) => {
                let valid_up_to = e.utf8_error().valid_up_to();
                problems.push(not_utf8(&path, e.as_bytes(), valid_up_to));
            }
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(LoadError::Invalid(problems))
    }
}

/// What [`read_bounded`] found.
enum Bounded {
    Read(Vec<u8>),
    /// More than the limit; nothing kept.
    TooLarge,
    /// Not a regular file after all (it changed since the walk).
    Irregular(&'static str),
}

/// Reads a regular file of at most `limit` bytes, without blocking on anything else.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Bounded> {
    // Non-blocking, so that opening a FIFO returns at once instead of waiting for a writer;
    // for a regular file the flag changes nothing.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Bounded::Irregular(describe(meta.file_type())));
    }
    // The metadata's length only sizes the buffer; the limit is enforced on what is read.
    let capacity = meta.len().min(limit).saturating_add(1);
    let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(Bounded::TooLarge);
    }
    Ok(Bounded::Read(bytes))
}

/// Reads one config file given by path (`trellis validate FILE`), within the per-file limit
/// and under the same rules as a file in a directory.
///
/// # Errors
///
/// [`LoadError::Invalid`] with one error naming the file when it is not a regular file, is
/// too large, cannot be read or is not UTF-8.
pub fn read_config_file(path: &Path, limits: &Limits) -> Result<String, LoadError> {
    let fail = |message: String| LoadError::Invalid(vec![file_error(path.to_path_buf(), message)]);
    let bytes = match read_bounded(path, limits.max_file_bytes) {
        Ok(Bounded::Read(bytes)) => bytes,
        Ok(Bounded::TooLarge) => {
            return Err(fail(format!(
                "file is larger than {} bytes",
                limits.max_file_bytes
            )))
        }
        Ok(Bounded::Irregular(what)) => {
            return Err(fail(format!(
                "{what}, not a regular file; only regular files are read"
            )))
        }
        Err(e) => return Err(fail(format!("cannot read: {e}"))),
    };
    String::from_utf8(bytes).map_err(|e| {
        let valid_up_to = e.utf8_error().valid_up_to();
        LoadError::Invalid(vec![not_utf8(path, e.as_bytes(), valid_up_to)])
    })
}

/// An error for a file that is not UTF-8, at the first bad byte.
pub(crate) fn not_utf8(path: &Path, bytes: &[u8], valid_up_to: usize) -> Diagnostic {
    let valid = String::from_utf8_lossy(&bytes[..valid_up_to]);
    let line = valid.matches('\n').count() + 1;
    let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Diagnostic {
        line,
        column,
        ..file_error(path.to_path_buf(), "file is not valid UTF-8".to_owned())
    }
}

/// What a config directory looks like without reading its files: paths, sizes, modification
/// times and inodes of the config files, and the walk's own problems. Equal fingerprints mean
/// nothing a read would see has changed (short of a same-size, same-time edit in place).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    files: Vec<Found>,
    problems: Vec<String>,
}

/// The [`Fingerprint`] of `root`, walked under the same rules and limits as
/// [`read_config_dir`].
///
/// # Errors
///
/// [`LoadError::Io`] when a directory cannot be listed.
pub fn fingerprint(root: &Path, limits: &Limits) -> Result<Fingerprint, LoadError> {
    let walk = walk(root, limits)?;
    Ok(Fingerprint {
        files: walk.files,
        problems: walk.problems.iter().map(ToString::to_string).collect(),
    })
}

/// Incremental SHA-256 over (relative path, content) pairs, fed in sorted path order.
pub(crate) struct ContentHash(Sha256);

impl ContentHash {
    pub(crate) fn new() -> Self {
        ContentHash(Sha256::new())
    }

    /// Adds one file. Both parts are length-prefixed so that no two different sets of files
    /// can produce the same byte stream.
    pub(crate) fn add(&mut self, relative: &str, content: &[u8]) {
        self.0.update((relative.len() as u64).to_be_bytes());
        self.0.update(relative.as_bytes());
        self.0.update((content.len() as u64).to_be_bytes());
        self.0.update(content);
    }

    /// The hash as lowercase hex.
    pub(crate) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The content hash of a set of files: equal hashes mean the same config.
pub fn content_hash(files: &ConfigFiles) -> String {
    let mut hash = ContentHash::new();
    for (relative, text) in files {
        hash.add(relative, text.as_bytes());
    }
    hash.finish()
}

#[cfg(test)]
mod tests;
