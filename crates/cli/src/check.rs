//! `trellis check`: is the mesh healthy? Checks the control plane answers, no certificate
//! alarm is open (roots or issuer near expiry, renewals overdue), every connected proxy has
//! the latest snapshot, and no root rotation is stuck. Exit status 1 when any check fails.
//!
//! `--strict-ready` asks another question: which workloads could move to a STRICT
//! PeerAuthentication without refusing anyone? A workload is ready when its proxy accepted no
//! plaintext connection in the window (`--window`, 10 minutes by default); otherwise the
//! check names the sources, and the meshed workload at that address when there is one.

use anyhow::bail;
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub mesh: crate::local_mesh::MeshTarget,
    /// Report, per workload, the plaintext connections seen in the window instead, and
    /// whether it is ready for STRICT mutual TLS.
    #[arg(long)]
    pub strict_ready: bool,
    /// With --strict-ready: only this namespace's workloads.
    #[arg(long, short = 'n', requires = "strict_ready")]
    pub namespace: Option<String>,
    /// With --strict-ready: how far back to look (at most 1h).
    #[arg(long, default_value = "10m", value_parser = crate::duration::parse, requires = "strict_ready")]
    pub window: std::time::Duration,
}

pub async fn run(a: CheckArgs) -> anyhow::Result<()> {
    let token = a.mesh.read_token()?;
    if a.strict_ready {
        return strict_ready(&a, &token).await;
    }
    let status = match crate::api_client::get(a.mesh.api(), "/api/v1/status", &token).await {
        Ok(s) => s,
        Err(e) => {
            println!("✘ control plane: {e:#}");
            bail!("1 check failed");
        }
    };
    println!(
        "✔ control plane at {} serving config revision {}",
        a.mesh.api(),
        status["revision"]
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

async fn strict_ready(a: &CheckArgs, token: &str) -> anyhow::Result<()> {
    if a.window > std::time::Duration::from_secs(3600) {
        bail!("--window: the control plane keeps an hour of reports at most");
    }
    let mut path = format!("/api/v1/strict-ready?window_secs={}", a.window.as_secs());
    if let Some(ns) = &a.namespace {
        path.push_str(&format!("&namespace={ns}"));
    }
    let report = crate::api_client::get(a.mesh.api(), &path, token).await?;
    let workloads = report["workloads"].as_array().cloned().unwrap_or_default();
    let window = crate::duration::format(a.window);
    if workloads.is_empty() {
        println!(
            "no workloads{}",
            a.namespace
                .as_ref()
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default()
        );
    }
    let mut not_ready = 0;
    for w in &workloads {
        let name = format!(
            "{}/{}",
            w["namespace"].as_str().unwrap_or("?"),
            w["workload"].as_str().unwrap_or("?")
        );
        if w["ready"].as_bool() == Some(true) {
            println!("✔ {name}: ready for STRICT (no plaintext connection in the last {window})");
            continue;
        }
        not_ready += 1;
        let sources = w["plaintext"].as_array().cloned().unwrap_or_default();
        let total: u64 = sources
            .iter()
            .filter_map(|s| s["connections"].as_u64())
            .sum();
        println!(
            "✘ {name}: not ready: {total} plaintext connection(s) in the last {window}, from:"
        );
        for s in sources {
            let from = s["source_address"].as_str().unwrap_or("?");
            let who = s["source_workload"]
                .as_str()
                .map(|w| format!(" (meshed workload {w}: its traffic bypasses its proxy)"))
                .unwrap_or_else(|| " (outside the mesh)".to_string());
            println!(
                "    {from}{who}: {} connection(s), last at {} (UTC)",
                s["connections"],
                s["last_seen_unix"]
                    .as_i64()
                    .map(crate::certs::utc)
                    .unwrap_or_default()
            );
        }
    }
    if not_ready > 0 {
        bail!("{not_ready} workload(s) not ready for STRICT");
    }
    Ok(())
}
