//! The proxy's last good state on disk (`--state-dir`): its certificate and key, and the last
//! snapshot it applied. A proxy restarted while the control plane is unreachable starts
//! serving from them at once instead of waiting; it reconnects in the background.
//!
//! Files are written to a temporary name and renamed, so a crash never leaves half a file;
//! the key file is created with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use prost::Message;
use serde::{Deserialize, Serialize};
use trellis_api::proto;
use trellis_identity::{Svid, TrustBundle};

/// Why the saved state could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Serialize, Deserialize)]
struct SavedCreds {
    cert_chain_pem: String,
    key_pem: String,
    bundle_pem: String,
    issuer_root: String,
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PersistError> {
    let tmp = path.with_extension("tmp");
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Saves the credentials (the key with mode 0600).
pub fn save_creds(
    dir: &Path,
    svid: &Svid,
    bundle: &TrustBundle,
    issuer_root: &str,
) -> Result<(), PersistError> {
    let saved = SavedCreds {
        cert_chain_pem: svid.cert_chain_pem(),
        key_pem: svid.key_pem(),
        bundle_pem: bundle.to_pem(),
        issuer_root: issuer_root.to_string(),
    };
    let json = serde_json::to_vec(&saved).map_err(|e| PersistError::Corrupt {
        path: dir.join("credentials.json"),
        reason: e.to_string(),
    })?;
    write(&dir.join("credentials.json"), &json, 0o600)
}

/// Loads saved credentials that have not expired: (SVID, bundle, issuer root).
pub fn load_creds(
    dir: &Path,
    trust_domain: &str,
) -> Result<Option<(Svid, TrustBundle, String)>, PersistError> {
    let path = dir.join("credentials.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path, source }),
    };
    let corrupt = |reason: String| PersistError::Corrupt {
        path: path.clone(),
        reason,
    };
    let saved: SavedCreds = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    let key = trellis_identity::pem::private_key_from_pem(&saved.key_pem)
        .map_err(|e| corrupt(e.to_string()))?;
    let svid = Svid::from_pem(&saved.cert_chain_pem, key).map_err(|e| corrupt(e.to_string()))?;
    if svid.not_after <= SystemTime::now() {
        return Ok(None);
    }
    let bundle = TrustBundle::from_pem_with_domain(&saved.bundle_pem, trust_domain)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Some((svid, bundle, saved.issuer_root)))
}

/// Saves the last applied snapshot, in its wire form.
pub fn save_snapshot(dir: &Path, msg: &proto::SnapshotMessage) -> Result<(), PersistError> {
    write(&dir.join("snapshot.pb"), &msg.encode_to_vec(), 0o600)
}

/// Loads the last applied snapshot, if any.
pub fn load_snapshot(dir: &Path) -> Result<Option<proto::SnapshotMessage>, PersistError> {
    let path = dir.join("snapshot.pb");
    match std::fs::read(&path) {
        Ok(bytes) => proto::SnapshotMessage::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| PersistError::Corrupt {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_protects_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca =
            trellis_identity::CertificateAuthority::load_or_create(ca_dir.path(), "cluster.local")
                .unwrap();
        let id = trellis_identity::SpiffeId::new("cluster.local", "default", "a");
        let svid = ca
            .issue_with_local_key(&id, std::time::Duration::from_secs(600))
            .unwrap();
        assert!(load_creds(dir.path(), "cluster.local").unwrap().is_none());
        save_creds(dir.path(), &svid, &ca.trust_bundle(), "fp").unwrap();
        let (back, _, root) = load_creds(dir.path(), "cluster.local").unwrap().unwrap();
        assert_eq!(back.id, id);
        assert_eq!(root, "fp");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let msg = proto::SnapshotMessage {
            version: "v9".into(),
            ..Default::default()
        };
        save_snapshot(dir.path(), &msg).unwrap();
        assert_eq!(load_snapshot(dir.path()).unwrap().unwrap().version, "v9");
        std::fs::write(dir.path().join("snapshot.pb"), b"\xff\xff\xff").unwrap();
        assert!(load_snapshot(dir.path()).is_err());
    }
}
