//! The `trellis` binary: one executable for the control plane, the proxy, the demo app and
//! the commands people type. Each subcommand lives in its own module.

mod analyze;
mod api_client;
mod ca;
mod certs;
mod check;
mod config_cmds;
mod control;
mod demo_app;
mod duration;
mod local_mesh;
mod logging;
mod proxy;
mod signal;
mod stat;
mod tap;
mod token;
mod top;
mod up;
mod validate;

use clap::{Parser, Subcommand};

/// Trellis: a service mesh. mTLS, traffic management and telemetry for every call.
#[derive(Parser)]
#[command(name = "trellis", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole mesh on this machine: a control plane, and every workload of DIR with its
    /// own proxy, all on loopback with no root needed (or, with --netns, as root, each
    /// workload in a network namespace of its own with transparent capture).
    Up(up::UpArgs),
    /// Run the control plane: config store, certificate authority, snapshot push.
    Control(control::ControlArgs),
    /// Run a proxy beside one workload.
    Proxy(Box<proxy::ProxyArgs>),
    /// Run the demo HTTP service used by the examples and tests.
    DemoApp(demo_app::DemoAppArgs),
    /// Manage join tokens, the credential a proxy uses for its first certificate.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Check resources against each other: unknown hosts, missing subsets, shadowed matches, port names, conflicting policies
    Analyze(analyze::AnalyzeArgs),
    /// Validate config files or directories as the control plane would (exit 1 if invalid).
    Validate(validate::ValidateArgs),
    /// Show state from the control plane.
    #[command(subcommand)]
    Get(config_cmds::GetCommand),
    /// Show what serving DIR would change: resources, and each proxy's snapshot.
    Diff(config_cmds::DiffArgs),
    /// Validate DIR as a whole and serve it as the next revision.
    Apply(config_cmds::ApplyArgs),
    /// Serve an earlier revision's content again, as a new revision.
    Rollback(config_cmds::RollbackArgs),
    /// Show every workload certificate: serial, expiry, time left, root, last renewal.
    Certs(certs::CertsArgs),
    /// Check the mesh's health: control plane, certificate alarms, proxies in sync; or, with
    /// --strict-ready, which workloads still receive plain text.
    Check(check::CheckArgs),
    /// Operate the certificate authority (root rotation).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Show requests per second, success rate and latency per service and per edge, over a
    /// recent window.
    Stat(stat::StatArgs),
    /// Like stat, busiest first, redrawn every interval until Ctrl-C.
    Top(top::TopArgs),
    /// Watch the requests a workload's proxies handle, live (needs the admin token).
    Tap(tap::TapArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let reload = logging::init(&cli.log);
    // A proxy runs on as many threads as it is given (one by default: a sidecar carries one
    // workload's traffic, and a single thread spares every request the cross-thread wake-ups
    // of a work-stealing pool). Everything else uses a thread per core.
    let builder = match &cli.command {
        Command::Proxy(a) if a.threads <= 1 => tokio::runtime::Builder::new_current_thread(),
        Command::Proxy(a) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(a.threads));
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match { builder }.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trellis: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(a) => up::run(a).await,
            Command::Control(a) => control::run(a).await,
            Command::Proxy(a) => proxy::run(*a, reload).await,
            Command::DemoApp(a) => demo_app::run(a).await,
            Command::Token(c) => token::run(c),
            Command::Certs(a) => certs::run(a).await,
            Command::Analyze(a) => analyze::run(a),
            Command::Validate(a) => validate::run(a),
            Command::Get(c) => config_cmds::get(c).await,
            Command::Diff(a) => config_cmds::diff(a).await,
            Command::Apply(a) => config_cmds::apply(a).await,
            Command::Rollback(a) => config_cmds::rollback(a).await,
            Command::Check(a) => check::run(a).await,
            Command::Ca(c) => ca::run(c).await,
            Command::Stat(a) => stat::run(a).await,
            Command::Top(a) => top::run(a).await,
            Command::Tap(a) => tap::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Catches argument clashes in any subcommand (clap checks them only when the
    /// subcommand is first parsed, which would otherwise be at run time).
    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
