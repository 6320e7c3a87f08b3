//! `trellis check`: is the mesh healthy? Checks the control plane answers, no certificate
//! alarm is open (roots or issuer near expiry, renewals overdue), every connected proxy has
//! the latest snapshot, and no root rotation is stuck. Exit status 1 when any check fails.

use std::net::SocketAddr;

use anyhow::bail;
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {
    /// The control plane's HTTP API.
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub api: SocketAddr,
}

pub async fn run(a: CheckArgs) -> anyhow::Result<()> {
    let status = match crate::api_client::get(a.api, "/api/v1/status").await {
        Ok(s) => s,
        Err(e) => {
            println!("✘ control plane: {e:#}");
            bail!("1 check failed");
        }
    };
    println!(
        "✔ control plane at {} serving config revision {}",
        a.api, status["revision"]
    );
    let mut failed = 0;
    let alarms = status["alarms"].as_array().cloned().unwrap_or_default();
    if alarms.is_empty() {
        println!("✔ certificates: no root or issuer near expiry, no overdue renewal");
    } else {
        failed += 1;
        for alarm in alarms {
            println!("✘ certificates: {}", alarm.as_str().unwrap_or(""));
        }
    }
    let version = status["snapshot_version"].as_str().unwrap_or("");
    let proxies = status["proxies"].as_array().cloned().unwrap_or_default();
    let stale: Vec<String> = proxies
        .iter()
        .filter(|p| p["acked_version"].as_str() != Some(version))
        .map(|p| p["name"].as_str().unwrap_or("?").to_string())
        .collect();
    if stale.is_empty() {
        println!(
            "✔ proxies: {} connected, all on snapshot {version}",
            proxies.len()
        );
    } else {
        failed += 1;
        println!(
            "✘ proxies: {} of {} not on snapshot {version}: {}",
            stale.len(),
            proxies.len(),
            stale.join(", ")
        );
    }
    match status["rotation"].as_str() {
        Some("idle") => println!("✔ CA: no root rotation in progress"),
        Some(r) => {
            failed += 1;
            println!("✘ CA: root rotation {r} (run `trellis ca rotate` again to finish it)");
        }
        None => {}
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}
