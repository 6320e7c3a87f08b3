//! Join tokens: the credential a proxy presents with its first CSR, before it
//! has a certificate to authenticate with.
//!
//! A token looks like `trellis-jt.<id>.<secret>` (8 hex characters of id, 64
//! of secret) and entitles its holder to identities in one namespace, for a
//! listed set of service accounts (or `*` for any). Tokens live in
//! `<data_dir>/tokens.json`; only the SHA-256 of each secret is stored.
//!
//! The file is replaced atomically (temp file + rename), so any number of
//! readers, in any process, always see a complete file. Writers (create,
//! revoke) serialize through a lock file next to it. All methods do blocking
//! file I/O; async callers should use `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil;
use crate::reserved;
use crate::spiffe::{validate_namespace, validate_service_account, SpiffeError, SpiffeId};

const TOKEN_PREFIX: &str = "trellis-jt";
const ID_BYTES: usize = 4;
const SECRET_BYTES: usize = 32;
/// Service-account entry meaning "any service account in the namespace".
pub const ANY_SERVICE_ACCOUNT: &str = "*";
const FILE_NAME: &str = "tokens.json";
const LOCK_FILE_NAME: &str = "tokens.json.lock";
const FILE_VERSION: u32 = 1;
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A write holds the lock for milliseconds; a lock this old was left behind by
/// a process that died while holding it.
const STALE_LOCK_AGE: Duration = Duration::from_secs(30);
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Errors from the join-token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The presented string is not shaped like a join token.
    #[error("malformed join token ({reason}); expected trellis-jt.<8 hex id>.<64 hex secret>")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No token has this id, or the secret does not match it.
    #[error("unknown join token {token_id} (no such token, or wrong secret)")]
    Unknown {
        /// The id part of the presented token.
        token_id: String,
    },
    /// The token has been revoked.
    #[error("join token {token_id} has been revoked")]
    Revoked {
        /// The token's id.
        token_id: String,
    },
    /// The token's TTL has passed.
    #[error("join token {token_id} expired at {expired_at}")]
    Expired {
        /// The token's id.
        token_id: String,
        /// When it expired (RFC 3339).
        expired_at: String,
    },
    /// The requested identity is in a namespace the token is not for.
    #[error("join token is for namespace {allowed:?}, not {requested:?}")]
    WrongNamespace {
        /// The namespace of the requested identity.
        requested: String,
        /// The namespace the token is for.
        allowed: String,
    },
    /// The requested service account is not one the token allows.
    #[error(
        "join token does not allow service account {requested:?} (allowed: {})",
        allowed.join(", ")
    )]
    ServiceAccountNotAllowed {
        /// The service account of the requested identity.
        requested: String,
        /// The service accounts the token allows.
        allowed: Vec<String>,
    },
    /// A namespace given to `create` is invalid.
    #[error("invalid namespace for join token: {source}")]
    InvalidNamespace {
        /// Why it was rejected.
        #[source]
        source: SpiffeError,
    },
    /// A service account given to `create` is invalid.
    #[error("invalid service account for join token (use \"*\" for any): {source}")]
    InvalidServiceAccount {
        /// Why it was rejected.
        #[source]
        source: SpiffeError,
    },
    /// `create` was asked for a namespace kept for the mesh's own components.
    #[error(
        "namespace {namespace:?} is reserved for the mesh's own components; no join token can \
         cover it"
    )]
    ReservedNamespace {
        /// The namespace asked for.
        namespace: String,
    },
    /// The token would grant an identity kept for the mesh's own components (a token file
    /// written by hand or by an older version).
    #[error("{requested} is reserved for the mesh's own components; no join token grants it")]
    ReservedIdentity {
        /// The identity asked for.
        requested: String,
    },
    /// `create` was given no service accounts.
    #[error("a join token must allow at least one service account (or \"*\")")]
    NoServiceAccounts,
    /// `create` was given a zero or unrepresentable TTL.
    #[error("invalid join token TTL {ttl:?}: {reason}")]
    InvalidTtl {
        /// The rejected TTL.
        ttl: Duration,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The token file is not valid JSON of the expected shape.
    #[error("token file {} is corrupt: {source}", path.display())]
    Corrupt {
        /// The token file.
        path: PathBuf,
        /// Parser diagnostics.
        #[source]
        source: serde_json::Error,
    },
    /// The token file uses a format version this build does not know.
    #[error("token file {} has unsupported version {version}", path.display())]
    UnsupportedVersion {
        /// The token file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// Another writer held the lock for too long.
    #[error(
        "timed out waiting for lock {}; if no other Trellis process is running, delete it",
        path.display()
    )]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
    },
}

/// A join token's metadata, as listed (the secret is never retrievable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token id (the middle part of the token).
    pub id: String,
    /// The namespace the token grants identities in.
    pub namespace: String,
    /// The service accounts it grants; `"*"` means any.
    pub service_accounts: Vec<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stops being accepted, if ever.
    pub expires_at: Option<SystemTime>,
    /// Whether it has been revoked.
    pub revoked: bool,
}

#[derive(Serialize, Deserialize)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

#[derive(Clone, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    namespace: String,
    service_accounts: Vec<String>,
    /// Hex SHA-256 of the raw secret bytes.
    secret_sha256: String,
    created_at_unix_ms: u64,
    expires_at_unix_ms: Option<u64>,
    revoked: bool,
}

impl TokenRecord {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            service_accounts: self.service_accounts.clone(),
            created_at: from_unix_ms(self.created_at_unix_ms),
            expires_at: self.expires_at_unix_ms.map(from_unix_ms),
            revoked: self.revoked,
        }
    }
}

/// The join-token store backed by `<data_dir>/tokens.json`.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    lock_path: PathBuf,
    /// Serializes this process's writers so they queue here instead of
    /// polling the lock file against each other.
    writers: Mutex<()>,
}

impl TokenStore {
    /// Opens (without yet creating) the token file in `data_dir`, creating the
    /// directory if needed and checking that any existing file is readable.
    pub fn open(data_dir: &Path) -> Result<Self, TokenError> {
        fs::create_dir_all(data_dir).map_err(|source| TokenError::Io {
            action: "create data directory",
            path: data_dir.to_owned(),
            source,
        })?;
        let store = Self {
            path: data_dir.join(FILE_NAME),
            lock_path: data_dir.join(LOCK_FILE_NAME),
            writers: Mutex::new(()),
        };
        store.read()?;
        Ok(store)
    }

    /// Creates a token for `namespace` and `service_accounts` (`"*"` allows any),
    /// valid for `ttl` or forever. The mesh's own namespace ([`crate::reserved`]) is
    /// refused, whatever the service accounts. Returns the token id and the full secret
    /// token, which is shown once and cannot be recovered later.
    pub fn create(
        &self,
        namespace: &str,
        service_accounts: &[String],
        ttl: Option<Duration>,
    ) -> Result<(String, String), TokenError> {
        validate_namespace(namespace).map_err(|source| TokenError::InvalidNamespace { source })?;
        if reserved::is_reserved_namespace(namespace) {
            return Err(TokenError::ReservedNamespace {
                namespace: namespace.to_owned(),
            });
        }
        if service_accounts.is_empty() {
            return Err(TokenError::NoServiceAccounts);
        }
        for sa in service_accounts {
            if sa != ANY_SERVICE_ACCOUNT {
                validate_service_account(sa)
                    .map_err(|source| TokenError::InvalidServiceAccount { source })?;
            }
        }
        let now_ms = unix_ms(SystemTime::now());
        let expires_at_unix_ms = match ttl {
            None => None,
            Some(ttl) if ttl.is_zero() => {
                return Err(TokenError::InvalidTtl {
                    ttl,
                    reason: "must be positive",
                })
            }
            Some(ttl) => Some(
                u64::try_from(ttl.as_millis())
                    .ok()
                    .and_then(|ttl_ms| now_ms.checked_add(ttl_ms))
                    .ok_or(TokenError::InvalidTtl {
                        ttl,
                        reason: "too long",
                    })?,
            ),
        };

        let secret: [u8; SECRET_BYTES] = rand::random();
        let secret_sha256 = hex::encode(Sha256::digest(secret));
        let id = self.modify(|file| {
            let id = loop {
                let candidate = hex::encode(rand::random::<[u8; ID_BYTES]>());
                if !file.tokens.iter().any(|t| t.id == candidate) {
                    break candidate;
                }
            };
            file.tokens.push(TokenRecord {
                id: id.clone(),
                namespace: namespace.to_owned(),
                service_accounts: service_accounts.to_vec(),
                secret_sha256,
                created_at_unix_ms: now_ms,
                expires_at_unix_ms,
                revoked: false,
            });
            Ok(id)
        })?;
        tracing::info!(token_id = %id, namespace, ?service_accounts, ?ttl, "created join token");
        let token = format!("{TOKEN_PREFIX}.{id}.{}", hex::encode(secret));
        Ok((id, token))
    }

    /// Checks that `token` is a live token entitling its holder to `id`.
    ///
    /// Reads the file afresh on every call, so tokens created or revoked by
    /// other processes take effect immediately.
    pub fn authorize(&self, token: &str, id: &SpiffeId) -> Result<(), TokenError> {
        let (token_id, secret) = parse_token(token)?;
        let unknown = || TokenError::Unknown {
            token_id: token_id.to_owned(),
        };
        let file = self.read()?;
        let record = file
            .tokens
            .iter()
            .find(|t| t.id == token_id)
            .ok_or_else(unknown)?;
        // The secret is checked before anything else so that someone without it
        // learns nothing about the token (not even whether it is revoked).
        let presented = Sha256::digest(secret);
        let stored = hex::decode(&record.secret_sha256).unwrap_or_default();
        if !constant_time_eq(&presented, &stored) {
            return Err(unknown());
        }
        if record.revoked {
            return Err(TokenError::Revoked {
                token_id: record.id.clone(),
            });
        }
        if let Some(expires_at) = record.expires_at_unix_ms {
            if unix_ms(SystemTime::now()) >= expires_at {
                return Err(TokenError::Expired {
                    token_id: record.id.clone(),
                    expired_at: format_unix_ms(expires_at),
                });
            }
        }
        // After the secret, like every other refusal; before the namespace check, so that
        // a token record for the reserved namespace (written by hand, or by a version that
        // let it be made) is refused for that reason.
        if reserved::is_reserved(id) {
            return Err(TokenError::ReservedIdentity {
                requested: id.to_string(),
            });
        }
        if record.namespace != id.namespace {
            return Err(TokenError::WrongNamespace {
                requested: id.namespace.clone(),
                allowed: record.namespace.clone(),
            });
        }
        let sa_allowed = record
            .service_accounts
            .iter()
            .any(|sa| sa == ANY_SERVICE_ACCOUNT || *sa == id.service_account);
        if !sa_allowed {
            return Err(TokenError::ServiceAccountNotAllowed {
                requested: id.service_account.clone(),
                allowed: record.service_accounts.clone(),
            });
        }
        Ok(())
    }

    /// Revokes a token by id. Revoking an already revoked token is a no-op.
    pub fn revoke(&self, token_id: &str) -> Result<(), TokenError> {
        self.modify(|file| {
            let record = file
                .tokens
                .iter_mut()
                .find(|t| t.id == token_id)
                .ok_or_else(|| TokenError::Unknown {
                    token_id: token_id.to_owned(),
                })?;
            record.revoked = true;
            Ok(())
        })?;
        tracing::info!(token_id, "revoked join token");
        Ok(())
    }

    /// Lists all tokens, including revoked and expired ones.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        Ok(self.read()?.tokens.iter().map(TokenRecord::info).collect())
    }

    fn read(&self) -> Result<TokenFile, TokenError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(TokenFile {
                    version: FILE_VERSION,
                    tokens: Vec::new(),
                })
            }
            Err(source) => {
                return Err(TokenError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let file: TokenFile =
            serde_json::from_slice(&bytes).map_err(|source| TokenError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if file.version != FILE_VERSION {
            return Err(TokenError::UnsupportedVersion {
                path: self.path.clone(),
                version: file.version,
            });
        }
        Ok(file)
    }

    /// Read-modify-write under both the in-process and the cross-process lock,
    /// so concurrent writers cannot lose each other's updates.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        // A panic elsewhere while holding the mutex leaves no broken state
        // behind (the file is only ever replaced whole), so poisoning is moot.
        let _in_process = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        let _lock = LockFile::acquire(&self.lock_path)?;
        let mut file = self.read()?;
        let out = change(&mut file)?;
        let json = serde_json::to_vec_pretty(&file).map_err(|source| TokenError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        fsutil::write_atomic(&self.path, &json, fsutil::PRIVATE_FILE_MODE).map_err(|source| {
            TokenError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(out)
    }
}

/// An exclusive lock held by existence of a file, removed on drop.
struct LockFile {
    path: PathBuf,
}

impl LockFile {
    fn acquire(path: &Path) -> Result<Self, TokenError> {
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match fsutil::create_new_file(path, fsutil::PRIVATE_FILE_MODE) {
                Ok(_) => {
                    return Ok(Self {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_stale(path) {
                        tracing::warn!(path = %path.display(), "removing stale token lock");
                        // Losing a race with another remover is fine: both
                        // then retry the exclusive create.
                        let _ = fs::remove_file(path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(TokenError::LockTimeout {
                            path: path.to_owned(),
                        });
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(source) => {
                    return Err(TokenError::Io {
                        action: "create lock file",
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
    }
}

fn is_stale(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age > STALE_LOCK_AGE)
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove token lock");
        }
    }
}

/// Splits a token into its id and raw secret, checking the exact shape.
fn parse_token(token: &str) -> Result<(&str, [u8; SECRET_BYTES]), TokenError> {
    let malformed = |reason| TokenError::Malformed { reason };
    let mut parts = token.trim().split('.');
    let (Some(prefix), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("wrong number of parts"));
    };
    if prefix != TOKEN_PREFIX {
        return Err(malformed("wrong prefix"));
    }
    if id.len() != ID_BYTES * 2 || !is_lower_hex(id) {
        return Err(malformed("id is not 8 lowercase hex characters"));
    }
    if secret.len() != SECRET_BYTES * 2 || !is_lower_hex(secret) {
        return Err(malformed("secret is not 64 lowercase hex characters"));
    }
    let mut raw = [0u8; SECRET_BYTES];
    hex::decode_to_slice(secret, &mut raw).map_err(|_| malformed("secret is not hex"))?;
    Ok((id, raw))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Compares without an early exit, so response timing does not reveal how
/// many leading bytes of a guessed secret's hash were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

fn format_unix_ms(ms: u64) -> String {
    let formatted = i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    formatted.unwrap_or_else(|| format!("{ms} ms after the Unix epoch"))
}

#[cfg(test)]
mod tests;
