//! The `wxhub` command: configuration, the composition root, and the operator subcommands.

mod config;
mod server;
mod unseal;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigArgs, LogFormat};

/// Self-hosted, multi-tenant hosting for WeChat Official Accounts: an encrypted vault for
/// account secrets, a core-token scheduler, a WeChat login gateway and statistics.
///
/// Every option can also be set with a WXHUB_* environment variable or in the TOML file given
/// by --config; flags win over the environment, which wins over the file.
#[derive(Debug, Parser)]
#[command(name = "wxhub", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: open the store, unseal the vault and serve HTTP until SIGINT/SIGTERM.
    Serve,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("wxhub: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wxhub: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => server::serve(config).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("wxhub: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WXHUB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
