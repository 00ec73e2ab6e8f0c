//! The `wxhub` command: parses the command line and runs one subcommand.

use std::net::SocketAddr;

use accounts::rotation;
use clap::{Parser, Subcommand};
use wxhub::config::{Config, ConfigArgs, LogFormat};
use wxhub::{demo, ops, server};

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
    /// Run the server: open the store (applying migrations), unseal the vault and serve HTTP
    /// until SIGINT/SIGTERM.
    Serve,
    /// Apply pending database migrations and exit. `serve` applies them too; run this first
    /// when several replicas start at once, or to check what a new version will change.
    Migrate {
        /// Only report pending migrations; change nothing.
        #[arg(long)]
        check: bool,
    },
    /// Manage the master keyring that protects every account's secrets.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Run the WeChat simulator alone (for trying clients against it). Nothing it does
    /// reaches the real WeChat.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7100", value_name = "ADDR")]
        listen: SocketAddr,
        /// Start empty instead of with the sample accounts and users.
        #[arg(long)]
        empty: bool,
    },
    /// Run everything on this machine for a look around: the WeChat simulator with sample
    /// accounts and users, and the hub on SQLite with a development keyring, its accounts
    /// pointing at the simulator. Prints the URLs to open.
    Demo {
        /// Address of the simulator.
        #[arg(long, default_value = "127.0.0.1:7100", value_name = "ADDR")]
        sim_listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Create a keyring file with one fresh master key (mode 0600). Never overwrites one.
    Init {
        /// Id of the key [default: k<unix-time>]
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
    },
    /// Show the keyring's master keys and how many accounts each protects.
    Status,
    /// Add a fresh master key, make it active and re-wrap every account's data key under it.
    /// Runs while servers serve: they pick up the new keyring file within seconds.
    Rotate {
        /// Id of the new key [default: k<unix-time>]
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
        /// Only add and activate the key; re-wrap later with `wxhub vault rewrap` (for
        /// replicas that must all receive the new keyring first).
        #[arg(long)]
        no_rewrap: bool,
        /// Accounts re-wrapped per batch.
        #[arg(long, default_value_t = rotation::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Re-wrap every data key that is not yet under the active master key. Resumable: run it
    /// again after an interruption.
    Rewrap {
        /// Accounts re-wrapped per batch.
        #[arg(long, default_value_t = rotation::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Remove a master key from the keyring. Refused while any account's data key is wrapped
    /// under it, and for the active key.
    DropKey {
        /// Id of the key to remove.
        key_id: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut args = cli.config.clone();
    if matches!(cli.command, Command::Demo { .. }) {
        // The demo is for trying things out: it never needs a production keyring.
        args.dev_keyring = true;
    }
    let config = match Config::load(&args) {
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
    let result = runtime.block_on(run(cli.command, config));
    match result {
        Ok(report) => {
            if !report.is_empty() {
                print!("{report}");
                if !report.ends_with('\n') {
                    println!();
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("wxhub: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<String> {
    match command {
        Command::Serve => server::serve(config).await.map(|()| String::new()),
        Command::Migrate { check } => ops::migrate(&config, check).await,
        Command::Vault(VaultCommand::Init { key_id }) => ops::vault_init(&config, key_id),
        Command::Vault(VaultCommand::Status) => ops::vault_status(&config).await,
        Command::Vault(VaultCommand::Rotate {
            key_id,
            no_rewrap,
            batch,
        }) => ops::vault_rotate(&config, key_id, no_rewrap, batch).await,
        Command::Vault(VaultCommand::Rewrap { batch }) => ops::vault_rewrap(&config, batch).await,
        Command::Vault(VaultCommand::DropKey { key_id }) => {
            ops::vault_drop_key(&config, &key_id).await
        }
        Command::Sim { listen, empty } => {
            demo::run_sim(listen, !empty).await.map(|()| String::new())
        }
        Command::Demo { sim_listen } => demo::run_demo(config, sim_listen)
            .await
            .map(|()| String::new()),
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
