//! `trellis token`: join tokens, kept (hashed) in the control plane's data directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use trellis_identity::TokenStore;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token that lets a proxy get a certificate for NAMESPACE and the given
    /// service accounts; prints the token once.
    Create {
        #[arg(long, default_value = "trellis-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Service account the token allows (repeatable; `*` for any in the namespace).
        #[arg(long = "service-account", required = true)]
        service_accounts: Vec<String>,
        /// Lifetime in seconds (no expiry when absent).
        #[arg(long)]
        ttl_secs: Option<u64>,
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
            ttl_secs,
        } => {
            let store = TokenStore::open(&data_dir).context("opening the token store")?;
            let (_, token) = store
                .create(
                    &namespace,
                    &service_accounts,
                    ttl_secs.map(Duration::from_secs),
                )
                .context("creating a token")?;
            println!("{token}");
        }
        TokenCommand::Revoke { data_dir, id } => {
            let store = TokenStore::open(&data_dir).context("opening the token store")?;
            store.revoke(&id).context("revoking")?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
