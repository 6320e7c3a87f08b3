//! `trellis token`: join tokens, kept (hashed) in the control plane's data directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use trellis_identity::TokenStore;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token that lets a proxy get a certificate for NAMESPACE and the given
    /// service accounts; prints the token once. `trellis-system`, the mesh's own namespace,
    /// is refused.
    Create {
        #[arg(long, default_value = "trellis-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Service account the token allows (repeatable; `*` for any in the namespace).
        #[arg(long = "service-account", required = true)]
        service_accounts: Vec<String>,
        /// How long the token is accepted (e.g. 1h, 7d); no expiry when absent.
        #[arg(long, value_parser = crate::duration::parse)]
        ttl: Option<Duration>,
    },
    /// List tokens: id, namespace, service accounts, expiry, revoked.
    List {
        #[arg(long, default_value = "trellis-data")]
        data_dir: PathBuf,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long, default_value = "trellis-data")]
        data_dir: PathBuf,
        id: String,
    },
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            data_dir,
            namespace,
            service_accounts,
            ttl,
        } => {
            let store = TokenStore::open(&data_dir).context("opening the token store")?;
            let (_, token) = store
                .create(&namespace, &service_accounts, ttl)
                .context("creating a token")?;
            println!("{token}");
        }
        TokenCommand::List { data_dir } => {
            let store = TokenStore::open(&data_dir).context("opening the token store")?;
            println!(
                "{:<10} {:<20} {:<40} {:<22} REVOKED",
                "ID", "NAMESPACE", "SERVICE ACCOUNTS", "EXPIRES (UTC)"
            );
            for t in store.list().context("listing tokens")? {
                let expires = t
                    .expires_at
                    .and_then(|e| e.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| crate::certs::utc(d.as_secs() as i64))
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<10} {:<20} {:<40} {:<22} {}",
                    t.id,
                    t.namespace,
                    t.service_accounts.join(","),
                    expires,
                    if t.revoked { "yes" } else { "no" }
                );
            }
        }
        TokenCommand::Revoke { data_dir, id } => {
            let store = TokenStore::open(&data_dir).context("opening the token store")?;
            store.revoke(&id).context("revoking")?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
