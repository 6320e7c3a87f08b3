//! `trellis ca`: operations on the mesh's certificate authority.

use std::time::Duration;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Rotate the root: a new root cross-signed by the old one is distributed, every
    /// certificate is reissued under it, then the old root is retired. Traffic keeps flowing.
    Rotate {
        #[command(flatten)]
        mesh: crate::local_mesh::MeshTarget,
    },
}

pub async fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Rotate { mesh } => {
            let token = mesh.admin_token()?;
            eprintln!("rotating the root; this waits for every connected proxy...");
            let report = crate::api_client::call(
                mesh.api(),
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
