//! `trellis ca`: operations on the mesh's certificate authority.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Rotate the root: a new root cross-signed by the old one is distributed, every
    /// certificate is reissued under it, then the old root is retired. Traffic keeps flowing.
    Rotate {
        /// The control plane's HTTP API.
        #[arg(long, default_value = "127.0.0.1:15014")]
        api: SocketAddr,
        /// The control plane's data directory, where its admin token is.
        #[arg(long, default_value = "trellis-data")]
        data_dir: PathBuf,
    },
}

pub async fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Rotate { api, data_dir } => {
            let token = crate::api_client::admin_token(&data_dir)?;
            eprintln!("rotating the root; this waits for every connected proxy...");
            let report = crate::api_client::call(
                api,
                http::Method::POST,
                "/api/v1/ca/rotate",
                Some(&token),
                None,
                Duration::from_secs(700),
            )
            .await?;
            println!(
                "root rotated: {} -> {} ({} proxies, {} ms)",
                report["old_root"].as_str().unwrap_or("?"),
                report["new_root"].as_str().unwrap_or("?"),
                report["proxies"],
                report["duration_ms"]
            );
            Ok(())
        }
    }
}
