//! Self-signed mode on disk, and the steps of a root rotation.
//!
//! Layout of `<data_dir>/ca/` (mode 0700):
//!
//! * `root.pem`, `root-key.pem`: the first root (generation 1) and its key.
//! * `root-<n>.pem`, `root-<n>-key.pem`: the root of generation n ≥ 2.
//! * `root-<n>-cross.pem`: generation n's cross-certificate (its subject and
//!   key, signed by generation n−1), used while rotating to it.
//! * `state.json`: which of these files make up the CA, and what each root is
//!   for:
//!
//! ```json
//! { "version": 1,
//!   "roots": [
//!     { "generation": 1, "cert": "root.pem", "key": "root-key.pem", "status": "retiring" },
//!     { "generation": 2, "cert": "root-2.pem", "key": "root-2-key.pem",
//!       "cross_cert": "root-2-cross.pem", "status": "next" } ] }
//! ```
//!
//! Keys are written with mode 0600, certificates and the state with 0644.
//! Every file is replaced atomically and `state.json` is written last, so the
//! directory always describes a committed state: a crash in between leaves at
//! most unreferenced files, which the next attempt overwrites.
//!
//! A directory holding `root.pem` and `root-key.pem` but no `state.json`
//! (written before the state file existed) is read as a single active
//! generation-1 root; the state file appears with the first rotation.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::signer::{Root, Signer};
use super::{
    io_err, now_utc_seconds, random_serial, warn_if_exposed, CaError, RootStatus, BACKDATE,
};
use crate::fsutil;
use crate::pem;
use crate::tls;

const STATE_FILE: &str = "state.json";
const STATE_VERSION: u32 = 1;
const COMMON_NAME: &str = "Trellis root CA";

/// `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    roots: Vec<RootEntry>,
}

/// One root in `state.json`. File names are relative to the CA directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootEntry {
    generation: u32,
    cert: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cross_cert: Option<String>,
    status: StoredStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoredStatus {
    Active,
    Retiring,
    Next,
}

impl From<StoredStatus> for RootStatus {
    fn from(status: StoredStatus) -> Self {
        match status {
            StoredStatus::Active => Self::Active,
            StoredStatus::Retiring => Self::Retiring,
            StoredStatus::Next => Self::Next,
        }
    }
}

impl RootEntry {
    /// The files of generation `generation`; the first keeps the names it had
    /// before rotation existed.
    fn new(generation: u32, status: StoredStatus) -> Self {
        let (cert, key) = if generation <= 1 {
            ("root.pem".to_owned(), "root-key.pem".to_owned())
        } else {
            (
                format!("root-{generation}.pem"),
                format!("root-{generation}-key.pem"),
            )
        };
        let cross_cert = (generation > 1 && status == StoredStatus::Next)
            .then(|| format!("root-{generation}-cross.pem"));
        Self {
            generation,
            cert,
            key,
            cross_cert,
            status,
        }
    }
}

/// A root read from disk, with its key.
struct StoredRoot {
    entry: RootEntry,
    cert_path: PathBuf,
    der: CertificateDer<'static>,
    key: KeyPair,
    subject_raw: Vec<u8>,
    not_after: OffsetDateTime,
    cross: Option<CertificateDer<'static>>,
}

/// What `state.json` (or its absence) says, with the files loaded.
enum Loaded {
    Idle(Box<StoredRoot>),
    Rotating {
        old: Box<StoredRoot>,
        new: Box<StoredRoot>,
    },
}

/// The self-signed CA's directory.
pub(super) struct Store {
    dir: PathBuf,
    trust_domain: String,
    root_lifetime: time::Duration,
}

impl Store {
    /// Opens `data_dir/ca/`, creating a first root if there is none, and
    /// builds the signer for the state recorded there.
    pub(super) fn open(
        data_dir: &Path,
        trust_domain: &str,
        root_lifetime: Duration,
    ) -> Result<(Self, Signer), CaError> {
        let invalid = |reason| CaError::InvalidLifetime {
            lifetime: root_lifetime,
            reason,
        };
        if root_lifetime.is_zero() {
            return Err(invalid("a root lifetime must be positive"));
        }
        let root_lifetime = time::Duration::try_from(root_lifetime)
            .ok()
            .filter(|lifetime| OffsetDateTime::now_utc().checked_add(*lifetime).is_some())
            .ok_or_else(|| invalid("too long for a root"))?;
        let dir = data_dir.join("ca");
        std::fs::create_dir_all(data_dir).map_err(io_err("create data directory", data_dir))?;
        fsutil::create_dir(&dir, fsutil::PRIVATE_DIR_MODE)
            .map_err(io_err("create CA directory", &dir))?;
        warn_if_exposed(&dir);
        let store = Self {
            dir,
            trust_domain: trust_domain.to_owned(),
            root_lifetime,
        };
        let state = match store.read_state()? {
            Some(state) => state,
            None => store.first_state()?,
        };
        let signer = store.signer(store.load(&state)?)?;
        Ok((store, signer))
    }

    /// Rotation step 1: a new root, cross-signed by the current one, becomes
    /// the signing root; both are trusted. Returns the new signer once the
    /// state is committed to disk.
    pub(super) fn begin_rotation(&self, current: &Signer) -> Result<Signer, CaError> {
        let old = match self.load(&self.committed_state()?)? {
            Loaded::Idle(old) => old,
            Loaded::Rotating { new, .. } => {
                return Err(CaError::RotationInProgress {
                    next: tls::cert_fingerprint(&new.der),
                })
            }
        };
        self.ensure_unchanged(&old, current)?;
        let generation =
            old.entry.generation.checked_add(1).ok_or_else(|| {
                self.invalid_state("root generation counter is exhausted".to_owned())
            })?;
        let new_entry = RootEntry::new(generation, StoredStatus::Next);
        let cross_name = new_entry
            .cross_cert
            .clone()
            .ok_or_else(|| self.invalid_state("no cross-certificate file name".to_owned()))?;
        let (new_key, new_params) = self.generate_root(generation)?;
        let new_der = new_params
            .self_signed(&new_key)
            .map_err(|source| CaError::Generate {
                action: "self-sign the new root CA certificate",
                source,
            })?
            .der()
            .clone();
        let cross_der = self.cross_certify(&new_params, &new_key, &old)?;
        let key_pem = new_key.serialize_pem();

        let mut old_entry = old.entry.clone();
        old_entry.status = StoredStatus::Retiring;
        let state = StateFile {
            version: STATE_VERSION,
            roots: vec![old_entry, new_entry.clone()],
        };
        // Build and self-test before anything touches the disk: a root that
        // does not work must not be committed.
        let roots = vec![
            self.root(old.der.clone(), RootStatus::Retiring, &old.cert_path)?,
            self.root(
                new_der.clone(),
                RootStatus::Next,
                &self.path(&new_entry.cert),
            )?,
        ];
        let signer = Signer::new(
            &self.trust_domain,
            roots,
            1,
            &new_der,
            new_key,
            vec![cross_der.clone()],
        )?;

        let key_path = self.path(&new_entry.key);
        let cert_path = self.path(&new_entry.cert);
        let cross_path = self.path(&cross_name);
        fsutil::write_atomic(&key_path, key_pem.as_bytes(), fsutil::PRIVATE_FILE_MODE)
            .map_err(io_err("write root CA key", &key_path))?;
        fsutil::write_atomic(
            &cert_path,
            pem::cert_to_pem(&new_der).as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
        )
        .map_err(io_err("write root CA certificate", &cert_path))?;
        fsutil::write_atomic(
            &cross_path,
            pem::cert_to_pem(&cross_der).as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
        )
        .map_err(io_err("write cross-certificate", &cross_path))?;
        self.write_state(&state)?;
        Ok(signer)
    }

    /// Rotation step 2: the retiring root leaves the bundle. Returns the new
    /// signer once the state is committed; the retiring root's key and the
    /// cross-certificate are then deleted (its certificate stays for the
    /// record).
    pub(super) fn finish_rotation(&self, current: &Signer) -> Result<Signer, CaError> {
        let (old, new) = match self.load(&self.committed_state()?)? {
            Loaded::Idle(_) => return Err(CaError::NoRotationInProgress),
            Loaded::Rotating { old, new } => (old, new),
        };
        self.ensure_unchanged(&new, current)?;
        let cross_name = new.entry.cross_cert.clone();
        let mut entry = new.entry.clone();
        entry.status = StoredStatus::Active;
        entry.cross_cert = None;
        let state = StateFile {
            version: STATE_VERSION,
            roots: vec![entry],
        };
        let root = self.root(new.der.clone(), RootStatus::Active, &new.cert_path)?;
        let signer = Signer::new(
            &self.trust_domain,
            vec![root],
            0,
            &new.der,
            new.key,
            Vec::new(),
        )?;
        self.write_state(&state)?;

        // The state no longer refers to these. A retired root's key could
        // still mint certificates that stale peers accept, so it goes; failing
        // to delete it does not undo the committed rotation.
        let leftovers = std::iter::once(old.entry.key).chain(cross_name);
        for name in leftovers {
            let path = self.path(&name);
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "cannot delete a retired CA file; delete it by hand");
                }
            }
        }
        Ok(signer)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn state_path(&self) -> PathBuf {
        self.path(STATE_FILE)
    }

    fn invalid_state(&self, reason: String) -> CaError {
        CaError::InvalidState {
            path: self.state_path(),
            reason,
        }
    }

    fn read_state(&self) -> Result<Option<StateFile>, CaError> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read CA state", &path)(e)),
        };
        let state: StateFile = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid_state(format!("not valid CA state JSON: {e}")))?;
        if state.version != STATE_VERSION {
            return Err(self.invalid_state(format!(
                "version {} is not supported (expected {STATE_VERSION})",
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// The state as committed, reading a directory without `state.json` as
    /// its single first root.
    fn committed_state(&self) -> Result<StateFile, CaError> {
        Ok(self.read_state()?.unwrap_or_else(|| StateFile {
            version: STATE_VERSION,
            roots: vec![RootEntry::new(1, StoredStatus::Active)],
        }))
    }

    fn write_state(&self, state: &StateFile) -> Result<(), CaError> {
        let path = self.state_path();
        let mut json = serde_json::to_vec_pretty(state)
            .map_err(|e| self.invalid_state(format!("cannot encode: {e}")))?;
        json.push(b'\n');
        fsutil::write_atomic(&path, &json, fsutil::PUBLIC_FILE_MODE)
            .map_err(io_err("write CA state", &path))
    }

    /// The state of a directory without `state.json`: its existing first
    /// root, or a new one.
    fn first_state(&self) -> Result<StateFile, CaError> {
        let entry = RootEntry::new(1, StoredStatus::Active);
        let cert_path = self.path(&entry.cert);
        let key_path = self.path(&entry.key);
        let cert_exists = cert_path
            .try_exists()
            .map_err(io_err("check", &cert_path))?;
        let key_exists = key_path.try_exists().map_err(io_err("check", &key_path))?;
        let state = StateFile {
            version: STATE_VERSION,
            roots: vec![entry],
        };
        match (cert_exists, key_exists) {
            // Written before state files existed; leave it as it is until the
            // first rotation has something to record.
            (true, true) => Ok(state),
            (false, false) => {
                let (key, params) = self.generate_root(1)?;
                let cert = params
                    .self_signed(&key)
                    .map_err(|source| CaError::Generate {
                        action: "self-sign the root CA certificate",
                        source,
                    })?;
                // Key first: if we die in between, the next start finds a key
                // without a certificate and reports it instead of silently
                // minting a new root.
                fsutil::write_atomic(
                    &key_path,
                    key.serialize_pem().as_bytes(),
                    fsutil::PRIVATE_FILE_MODE,
                )
                .map_err(io_err("write root CA key", &key_path))?;
                fsutil::write_atomic(
                    &cert_path,
                    pem::cert_to_pem(cert.der()).as_bytes(),
                    fsutil::PUBLIC_FILE_MODE,
                )
                .map_err(io_err("write root CA certificate", &cert_path))?;
                self.write_state(&state)?;
                tracing::info!(
                    trust_domain = %self.trust_domain,
                    path = %cert_path.display(),
                    "created new root CA"
                );
                Ok(state)
            }
            (true, false) => Err(CaError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    /// Checks the shape of `state` and loads the files it names.
    fn load(&self, state: &StateFile) -> Result<Loaded, CaError> {
        for entry in &state.roots {
            for name in [&entry.cert, &entry.key]
                .into_iter()
                .chain(entry.cross_cert.as_ref())
            {
                if !is_plain_file_name(name) {
                    return Err(self.invalid_state(format!(
                        "{name:?} is not a file name inside the CA directory"
                    )));
                }
            }
            if entry.cross_cert.is_some() != (entry.status == StoredStatus::Next) {
                return Err(self.invalid_state(format!(
                    "generation {}: exactly the next root has a cross-certificate",
                    entry.generation
                )));
            }
        }
        let statuses: Vec<StoredStatus> = state.roots.iter().map(|e| e.status).collect();
        match (statuses.as_slice(), state.roots.as_slice()) {
            ([StoredStatus::Active], [entry]) => Ok(Loaded::Idle(Box::new(self.load_root(entry)?))),
            ([StoredStatus::Retiring, StoredStatus::Next], [old, new]) => {
                if new.generation <= old.generation {
                    return Err(self.invalid_state(format!(
                        "the next root (generation {}) must be newer than the retiring one \
                         (generation {})",
                        new.generation, old.generation
                    )));
                }
                let old = self.load_root(old)?;
                let mut new = self.load_root(new)?;
                if old.subject_raw == new.subject_raw {
                    return Err(self.invalid_state(
                        "the retiring and the next root have the same subject name".to_owned(),
                    ));
                }
                new.cross = Some(self.load_cross(&old, &new)?);
                Ok(Loaded::Rotating {
                    old: Box::new(old),
                    new: Box::new(new),
                })
            }
            _ => Err(self.invalid_state(format!(
                "expected one active root, or a retiring root followed by a next root; found \
                 {statuses:?}"
            ))),
        }
    }

    fn load_root(&self, entry: &RootEntry) -> Result<StoredRoot, CaError> {
        let cert_path = self.path(&entry.cert);
        let key_path = self.path(&entry.key);
        // Half a pair is worth its own message: the fix is to restore the
        // other half, never to generate a new root.
        let cert_exists = cert_path
            .try_exists()
            .map_err(io_err("check", &cert_path))?;
        let key_exists = key_path.try_exists().map_err(io_err("check", &key_path))?;
        match (cert_exists, key_exists) {
            (true, false) => {
                return Err(CaError::Incomplete {
                    present: cert_path,
                    missing: key_path,
                })
            }
            (false, true) => {
                return Err(CaError::Incomplete {
                    present: key_path,
                    missing: cert_path,
                })
            }
            _ => {}
        }
        warn_if_exposed(&key_path);
        let cert_pem = std::fs::read_to_string(&cert_path)
            .map_err(io_err("read root CA certificate", &cert_path))?;
        let key_pem =
            std::fs::read_to_string(&key_path).map_err(io_err("read root CA key", &key_path))?;
        let invalid_root = |reason: String| CaError::InvalidRoot {
            path: cert_path.clone(),
            reason,
        };
        let der = single_cert(&cert_pem).map_err(invalid_root)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::InvalidRootKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let (subject_raw, not_after) = {
            let (_, x509) = X509Certificate::from_der(&der)
                .map_err(|e| invalid_root(format!("unparseable: {e}")))?;
            if !x509.is_ca() {
                return Err(invalid_root("not a CA certificate".to_owned()));
            }
            let orgs: Vec<&str> = x509
                .subject()
                .iter_organization()
                .filter_map(|attr| attr.as_str().ok())
                .collect();
            if orgs != [self.trust_domain.as_str()] {
                return Err(CaError::TrustDomainMismatch {
                    path: cert_path.clone(),
                    found: orgs.join(", "),
                    expected: self.trust_domain.clone(),
                });
            }
            if key.subject_public_key_info() != x509.public_key().raw {
                return Err(CaError::KeyMismatch {
                    cert_path: cert_path.clone(),
                    key_path,
                });
            }
            (
                x509.subject().as_raw().to_vec(),
                x509.validity().not_after.to_datetime(),
            )
        };
        Ok(StoredRoot {
            entry: entry.clone(),
            cert_path,
            der,
            key,
            subject_raw,
            not_after,
            cross: None,
        })
    }

    /// Loads `new`'s cross-certificate and checks that it certifies `new`'s
    /// name and key under `old`.
    fn load_cross(
        &self,
        old: &StoredRoot,
        new: &StoredRoot,
    ) -> Result<CertificateDer<'static>, CaError> {
        let name =
            new.entry.cross_cert.as_deref().ok_or_else(|| {
                self.invalid_state("the next root has no cross-certificate".into())
            })?;
        let path = self.path(name);
        let text =
            std::fs::read_to_string(&path).map_err(io_err("read cross-certificate", &path))?;
        let invalid = |reason: String| CaError::InvalidRoot {
            path: path.clone(),
            reason,
        };
        let der = single_cert(&text).map_err(invalid)?;
        {
            let (_, cross) = X509Certificate::from_der(&der)
                .map_err(|e| invalid(format!("unparseable: {e}")))?;
            let (_, old_cert) = X509Certificate::from_der(&old.der)
                .map_err(|e| invalid(format!("retiring root unparseable: {e}")))?;
            if cross.subject().as_raw() != new.subject_raw.as_slice()
                || cross.public_key().raw != new.key.subject_public_key_info().as_slice()
            {
                return Err(invalid(format!(
                    "does not certify the next root {}",
                    new.cert_path.display()
                )));
            }
            if !cross.is_ca() {
                return Err(invalid("not a CA certificate".to_owned()));
            }
            if cross.issuer().as_raw() != old.subject_raw.as_slice() {
                return Err(invalid(format!(
                    "not issued by the retiring root {}",
                    old.cert_path.display()
                )));
            }
            cross
                .verify_signature(Some(old_cert.public_key()))
                .map_err(|e| {
                    invalid(format!(
                        "signature by the retiring root {} does not verify: {e}",
                        old.cert_path.display()
                    ))
                })?;
        }
        Ok(der)
    }

    /// The signer for a loaded state.
    fn signer(&self, loaded: Loaded) -> Result<Signer, CaError> {
        let now = OffsetDateTime::now_utc();
        let check_signing_root = |root: &StoredRoot| {
            if root.not_after <= now {
                return Err(CaError::RootExpired {
                    path: root.cert_path.clone(),
                    not_after: root.not_after,
                });
            }
            Ok(())
        };
        match loaded {
            Loaded::Idle(root) => {
                check_signing_root(&root)?;
                let info = self.root(root.der.clone(), RootStatus::Active, &root.cert_path)?;
                Signer::new(
                    &self.trust_domain,
                    vec![info],
                    0,
                    &root.der,
                    root.key,
                    Vec::new(),
                )
            }
            Loaded::Rotating { old, new } => {
                check_signing_root(&new)?;
                if old.not_after <= now {
                    // Only peers that never received the new bundle still
                    // need it, and they are past saving; keep going.
                    tracing::warn!(
                        path = %old.cert_path.display(),
                        not_after = %old.not_after,
                        "the retiring root has expired; finish the rotation"
                    );
                }
                let cross = new.cross.clone().ok_or_else(|| {
                    self.invalid_state("the next root has no cross-certificate".into())
                })?;
                let roots = vec![
                    self.root(old.der.clone(), RootStatus::Retiring, &old.cert_path)?,
                    self.root(new.der.clone(), RootStatus::Next, &new.cert_path)?,
                ];
                Signer::new(&self.trust_domain, roots, 1, &new.der, new.key, vec![cross])
            }
        }
    }

    fn root(
        &self,
        der: CertificateDer<'static>,
        status: RootStatus,
        path: &Path,
    ) -> Result<Root, CaError> {
        Root::new(der, status).map_err(|reason| CaError::InvalidRoot {
            path: path.to_owned(),
            reason,
        })
    }

    /// Refuses a rotation step when the directory no longer holds the state
    /// this process loaded: someone else changed it, and acting on either
    /// version could strand workloads.
    fn ensure_unchanged(&self, on_disk: &StoredRoot, current: &Signer) -> Result<(), CaError> {
        let disk = tls::cert_fingerprint(&on_disk.der);
        let memory = &current.signing_root().fingerprint;
        if disk != *memory {
            return Err(self.invalid_state(format!(
                "the CA directory changed since it was loaded (signing root on disk {disk}, in \
                 use {memory}); restart the control plane"
            )));
        }
        Ok(())
    }

    /// A new root's key and certificate parameters (not yet signed).
    fn generate_root(&self, generation: u32) -> Result<(KeyPair, CertificateParams), CaError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
                action: "generate a root CA key",
                source,
            })?;
        let now = now_utc_seconds();
        let mut params = self.ca_params(generation);
        params.not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        params.not_after = now.saturating_add(self.root_lifetime);
        // Path length 1: a root signs leaves directly, and at most one CA
        // certificate below it, its successor's cross-certificate.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        Ok((key, params))
    }

    /// The cross-certificate for a new root: its name and key, issued by
    /// `old`. It expires with whichever of the two expires first.
    fn cross_certify(
        &self,
        new_params: &CertificateParams,
        new_key: &KeyPair,
        old: &StoredRoot,
    ) -> Result<CertificateDer<'static>, CaError> {
        let generate = |action| move |source| CaError::Generate { action, source };
        let now = now_utc_seconds();
        let mut params = CertificateParams::default();
        params.distinguished_name = new_params.distinguished_name.clone();
        params.not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        params.not_after = new_params.not_after.min(old.not_after);
        params.serial_number = Some(random_serial().0);
        // It only ever sits directly above leaves.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&old.der, &old.key)
            .map_err(generate("use the current root as issuer"))?;
        let cert = params
            .signed_by(new_key, &issuer)
            .map_err(generate("cross-sign the new root"))?;
        Ok(cert.der().clone())
    }

    /// Parameters shared by a root and its cross-certificate: the same
    /// subject, byte for byte, is what lets peers use either.
    fn ca_params(&self, generation: u32) -> CertificateParams {
        let mut name = DistinguishedName::new();
        let common_name = if generation <= 1 {
            COMMON_NAME.to_owned()
        } else {
            format!("{COMMON_NAME} {generation}")
        };
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, self.trust_domain.as_str());
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.serial_number = Some(random_serial().0);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
    }
}

/// Exactly one certificate from PEM text.
fn single_cert(text: &str) -> Result<CertificateDer<'static>, String> {
    let certs = pem::certs_from_pem(text).map_err(|e| e.to_string())?;
    match <[CertificateDer<'static>; 1]>::try_from(certs) {
        Ok([cert]) => Ok(cert),
        Err(certs) => Err(format!(
            "expected exactly one certificate, found {}",
            certs.len()
        )),
    }
}

/// A bare file name: `state.json` must not point outside the CA directory.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && Path::new(name).file_name().is_some_and(|n| n == name)
}
