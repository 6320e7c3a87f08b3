//! `trellis top`: `trellis stat`'s tables, busiest first, redrawn every interval until Ctrl-C
//! (or printed once with `--once`).

use std::time::Duration;

use clap::Args;

use crate::stat::{self, Order, StatQuery};

#[derive(Args)]
pub struct TopArgs {
    /// Only traffic to this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// How often to redraw.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse)]
    pub interval: Duration,
    /// How far back each frame looks (at least 1s, at most 10m).
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    pub window: Duration,
    /// Print one frame, without clearing the screen, and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub mesh: crate::local_mesh::MeshTarget,
}

/// Clears the terminal and moves the cursor home (ANSI).
const CLEAR: &str = "\x1b[2J\x1b[H";

pub async fn run(a: TopArgs) -> anyhow::Result<()> {
    let token = a.mesh.read_token()?;
    let q = StatQuery {
        namespace: a.namespace.as_deref(),
        service: None,
        window: a.window,
    };
    if a.once {
        let v = stat::fetch(a.mesh.api(), &token, &q).await?;
        print!("{}", frame(&a, &stat::render(&v, &q, Order::ByRps)));
        return Ok(());
    }
    // Redrawing faster than the proxies report shows nothing new.
    let interval = a.interval.max(Duration::from_millis(500));
    let shutdown = crate::signal::shutdown();
    tokio::pin!(shutdown);
    loop {
        // A control plane that is away (restarting) is shown as such, and the view carries on.
        let body = match stat::fetch(a.mesh.api(), &token, &q).await {
            Ok(v) => stat::render(&v, &q, Order::ByRps),
            Err(e) => format!("cannot read the control plane: {e:#}\n"),
        };
        print!("{CLEAR}{}", frame(&a, &body));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}

fn frame(a: &TopArgs, body: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let ns = a
        .namespace
        .as_ref()
        .map(|n| format!(" · namespace {n}"))
        .unwrap_or_default();
    let keys = if a.once { "" } else { " · Ctrl-C to quit" };
    format!(
        "trellis top · {} · window {}{ns} · {} UTC{keys}\n\n{body}",
        a.mesh.api(),
        crate::duration::format(a.window),
        crate::certs::utc(now),
    )
}
