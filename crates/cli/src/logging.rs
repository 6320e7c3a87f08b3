//! Log output for every subcommand: `tracing` to stderr, text or JSON.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct LogArgs {
    /// Log filter, as RUST_LOG (e.g. `info`, `trellis_proxy=debug`).
    #[arg(long, global = true, env = "TRELLIS_LOG", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Changes the log filter of the running process (the proxy's admin `/logging` uses it).
pub type Reload = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub fn init(args: &LogArgs) -> Reload {
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!(
            "trellis: bad --log-level {:?} ({e}); using info",
            args.log_level
        );
        EnvFilter::new("info")
    });
    match args.log_format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            std::sync::Arc::new(move |level: &str| {
                let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())
            })
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .with_env_filter(filter)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            std::sync::Arc::new(move |level: &str| {
                let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())
            })
        }
    }
}
