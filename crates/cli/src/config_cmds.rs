//! The config lifecycle against a running control plane: `get revisions`, `diff`, `apply`,
//! `rollback`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::api_client;

#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub mesh: crate::local_mesh::MeshTarget,
    /// Print the API's JSON instead of text.
    #[arg(short = 'o', long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

#[derive(Subcommand)]
pub enum GetCommand {
    /// Every config revision: number, time, source, git commit, status, errors.
    Revisions {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct DiffArgs {
    /// Directory of YAML to compare with the revision being served.
    pub dir: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// Directory of YAML: the whole config to serve (validated as a whole first).
    pub dir: PathBuf,
    /// Validate and show what would change, without applying.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The revision whose content to serve again.
    pub revision: u64,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn get(cmd: GetCommand) -> anyhow::Result<()> {
    match cmd {
        GetCommand::Revisions { api } => {
            let token = api.mesh.read_token()?;
            let v = api_client::get(api.mesh.api(), "/api/v1/revisions", &token).await?;
            if api.output == "json" {
                return print_json(&v);
            }
            let current = v["current"].as_u64().unwrap_or(0);
            println!(
                "{:<4} {:<9} {:<20} {:<11} {:<13} {:<10} RESOURCES",
                "REV", "STATUS", "TIME (UTC)", "SOURCE", "HASH", "COMMIT"
            );
            for r in v["revisions"].as_array().into_iter().flatten() {
                let n = r["number"].as_u64().unwrap_or(0);
                let mut source = r["source"].as_str().unwrap_or("").to_string();
                if let Some(to) = r["rolled_back_to"].as_u64() {
                    source = format!("{source}→{to}");
                }
                println!(
                    "{:<4} {:<9} {:<20} {:<11} {:<13} {:<10} {}{}",
                    n,
                    r["status"].as_str().unwrap_or(""),
                    crate::certs::utc(r["time_unix"].as_i64().unwrap_or(0)),
                    source,
                    r["hash"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                    r["git_commit"]
                        .as_str()
                        .and_then(|c| c.get(..8))
                        .unwrap_or("-"),
                    r["resources"],
                    if n == current { "   ← serving" } else { "" },
                );
                for e in r["errors"].as_array().into_iter().flatten() {
                    println!("       {}", e.as_str().unwrap_or(""));
                }
            }
            Ok(())
        }
    }
}

/// The files of `dir`, read as the control plane reads its own directory (and within the
/// same limits, which it applies again to what it is sent).
fn files(dir: &std::path::Path) -> anyhow::Result<Value> {
    use trellis_api::load::{read_config_dir, Limits};
    let files = read_config_dir(dir, &Limits::DEFAULT)
        .with_context(|| format!("reading {}", dir.display()))?;
    Ok(serde_json::to_value(files)?)
}

/// Prints resource and snapshot changes.
fn print_changes(v: &Value) {
    let resources = v["resources"].as_array().cloned().unwrap_or_default();
    if resources.is_empty() {
        println!(
            "no resource changes (against revision {})",
            v["from_revision"]
        );
    } else {
        println!(
            "resource changes (against revision {}):",
            v["from_revision"]
        );
    }
    for r in &resources {
        let sign = match r["change"].as_str() {
            Some("added") => "+",
            Some("removed") => "-",
            _ => "~",
        };
        println!(
            "  {sign} {} {}/{}",
            r["kind"].as_str().unwrap_or(""),
            r["namespace"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or("")
        );
        for f in r["fields"].as_array().into_iter().flatten() {
            let show = |x: &Value| match x {
                Value::Null => "(none)".to_string(),
                other => other.to_string(),
            };
            println!(
                "      {}: {} → {}",
                f["path"].as_str().unwrap_or(""),
                show(&f["old"]),
                show(&f["new"])
            );
        }
    }
    if let Some(snapshot) = v["snapshot"].as_array() {
        let proxies: Vec<&str> = v["affected_proxies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if snapshot.is_empty() {
            println!("no snapshot changes");
        } else {
            println!(
                "snapshot changes, for each of {} proxies ({}):",
                proxies.len(),
                proxies.join(", ")
            );
            for line in snapshot {
                println!("  {}", line.as_str().unwrap_or(""));
            }
        }
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        println!("{}", w.as_str().unwrap_or(""));
    }
}

pub async fn diff(a: DiffArgs) -> anyhow::Result<()> {
    let token = a.api.mesh.read_token()?;
    let body = serde_json::json!({ "files": files(&a.dir)? });
    let v = api_client::call(
        a.api.mesh.api(),
        http::Method::POST,
        "/api/v1/diff",
        Some(&token),
        Some(&body),
        Duration::from_secs(30),
    )
    .await?;
    if a.api.output == "json" {
        return print_json(&v);
    }
    print_changes(&v);
    Ok(())
}

pub async fn apply(a: ApplyArgs) -> anyhow::Result<()> {
    let token = a.api.mesh.admin_token()?;
    let body = serde_json::json!({ "files": files(&a.dir)?, "dry_run": a.dry_run });
    let v = api_client::call(
        a.api.mesh.api(),
        http::Method::POST,
        "/api/v1/apply",
        Some(&token),
        Some(&body),
        Duration::from_secs(30),
    )
    .await?;
    if a.api.output == "json" {
        return print_json(&v);
    }
    print_changes(&v);
    match (&v["revision"], a.dry_run) {
        (_, true) => println!("dry run: valid, nothing applied"),
        (Value::Null, false) => println!("nothing to apply: the served revision has this content"),
        (r, false) => println!("applied as revision {}", r["number"]),
    }
    Ok(())
}

pub async fn rollback(a: RollbackArgs) -> anyhow::Result<()> {
    let token = a.api.mesh.admin_token()?;
    let body = serde_json::json!({ "revision": a.revision });
    let v = api_client::call(
        a.api.mesh.api(),
        http::Method::POST,
        "/api/v1/rollback",
        Some(&token),
        Some(&body),
        Duration::from_secs(30),
    )
    .await?;
    if a.api.output == "json" {
        return print_json(&v);
    }
    print_changes(&v);
    match &v["revision"] {
        Value::Null => println!("revision {} is already being served", a.revision),
        r => println!(
            "rolled back to revision {} as revision {}",
            a.revision, r["number"]
        ),
    }
    Ok(())
}
