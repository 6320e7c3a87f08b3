//! Finding the config files under a directory, and the content hash of the set.
//!
//! The walk follows symlinks, because Kubernetes mounts ConfigMaps as symlinks into a hidden
//! `..data` directory, and skips hidden entries, which also keeps it out of that `..data`
//! directory, editor swap files and `.git`.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::LoadError;

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

/// The `*.yaml`/`*.yml` files under `root`, as paths relative to it, sorted.
pub(crate) fn config_files(root: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    walk(root, Path::new(""), &mut files, &mut visited)?;
    files.sort();
    Ok(files)
}

fn walk(
    root: &Path,
    relative: &Path,
    files: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), LoadError> {
    let dir = root.join(relative);
    // A directory symlink pointing at an ancestor would otherwise recurse forever.
    let canonical = fs::canonicalize(&dir).map_err(io_error(&dir))?;
    if !visited.insert(canonical) {
        return Ok(());
    }
    for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
        let entry = entry.map_err(io_error(&dir))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let mut file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_symlink() {
            file_type = fs::metadata(&path).map_err(io_error(&path))?.file_type();
        }
        let child = relative.join(&name);
        if file_type.is_dir() {
            walk(root, &child, files, visited)?;
        } else if file_type.is_file() && is_yaml(Path::new(&name)) {
            files.push(child);
        }
    }
    Ok(())
}

/// Incremental SHA-256 over (relative path, content) pairs, fed in sorted path order.
pub(crate) struct ContentHash(Sha256);

impl ContentHash {
    pub(crate) fn new() -> Self {
        ContentHash(Sha256::new())
    }

    /// Adds one file. Both parts are length-prefixed so that no two different sets of files
    /// can produce the same byte stream; the path is spelled with `/` on every platform so the
    /// hash does not depend on where the config was loaded.
    pub(crate) fn add(&mut self, relative: &Path, content: &[u8]) {
        let path = relative
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part.to_string_lossy()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/");
        self.0.update((path.len() as u64).to_be_bytes());
        self.0.update(path.as_bytes());
        self.0.update((content.len() as u64).to_be_bytes());
        self.0.update(content);
    }

    /// The hash as lowercase hex.
    pub(crate) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_extensions() {
        assert!(is_yaml(Path::new("a.yaml")));
        assert!(is_yaml(Path::new("a.YML")));
        assert!(!is_yaml(Path::new("a.json")));
        assert!(!is_yaml(Path::new("yaml")));
    }

    #[test]
    fn hash_separates_path_and_content() {
        let mut a = ContentHash::new();
        a.add(Path::new("ab"), b"c");
        let mut b = ContentHash::new();
        b.add(Path::new("a"), b"bc");
        assert_ne!(a.finish(), b.finish());
    }
}
