//! The `wxhub` command: parses the command line and runs one subcommand.

use std::net::SocketAddr;

use accounts::rotation;
use clap::{Parser, Subcommand};
use store::accounts::{AccountKind, TokenMode};
use tenancy::websites::WebsiteChanges;
use wxhub::config::{Config, ConfigArgs, LogFormat};
use wxhub::{demo, ops, server, tenants};

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
    Serve {
        /// FOR TESTS ONLY, never in production: the hub's clock stands still and moves only
        /// through `POST /__test/clock/set` (`{"now_ms": N}`) and `/__test/clock/advance`
        /// (`{"secs": N}`) on the hub's own listener, which anyone reaching it may call; the
        /// tests/ package moves every replica and `wxhub sim --manual-clock` together with
        /// them. Refused unless --listen is a loopback address and the WeChat API URL is not
        /// WeChat's.
        #[arg(long)]
        manual_clock: bool,
        /// Where the manual clock starts, in Unix milliseconds (the simulator's
        /// `GET /__sim/clock`) [default: the current time]
        #[arg(long, value_name = "UNIX_MS", requires = "manual_clock")]
        clock_start_ms: Option<i64>,
    },
    /// Apply pending database migrations and exit. `serve` applies them too; run this first
    /// when several replicas start at once, or to check what a new version will change.
    Migrate {
        /// Only report pending migrations; change nothing.
        #[arg(long)]
        check: bool,
    },
    /// Manage the master keyring that protects every stored secret (account secrets, ID-token
    /// signing keys).
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Rotate the key that signs the login gateway's ID tokens.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Manage the OpenID Connect clients (tenant websites) of the login gateway.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Run the WeChat simulator alone (for trying clients against it). Nothing it does
    /// reaches the real WeChat.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7100", value_name = "ADDR")]
        listen: SocketAddr,
        /// Start empty instead of with the sample accounts and users.
        #[arg(long)]
        empty: bool,
        /// A clock that starts at the current time and then moves only when told to, through
        /// the control API: `POST /__sim/clock/advance` with `{"secs": N}` (or `{"ms": N}`)
        /// and `POST /__sim/clock/set` with `{"now_ms": N}`. Without it those answer 409 and
        /// the simulator follows the system clock.
        #[arg(long)]
        manual_clock: bool,
        /// The hub the sample accounts push to (`URL/t/APPID/wechat/push`) and whose host
        /// their OAuth redirects may name [default: no pushes, redirects to the simulator's own
        /// page]
        #[arg(long, value_name = "URL", conflicts_with = "empty")]
        hub_url: Option<url::Url>,
    },
    /// Run the demo's sample tenant website alone, with one "Log in with WeChat" button per
    /// client file (the saved output of `wxhub client create` for a confidential client whose
    /// redirect URI is PUBLIC_URL/callback).
    SampleSite {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7200", value_name = "ADDR")]
        listen: SocketAddr,
        /// The URL browsers reach the site at [default: http://LISTEN/]
        #[arg(long = "site-url", value_name = "URL")]
        site_url: Option<url::Url>,
        /// What `wxhub client create` printed for a website (repeat for several).
        #[arg(long = "client-file", required = true, value_name = "FILE")]
        client_files: Vec<std::path::PathBuf>,
    },
    /// Ask a running server's /readyz and exit 0 if it is ready, 1 otherwise: a health check
    /// for container images, which have no HTTP client.
    Healthcheck {
        /// The URL to ask [default: /readyz on --listen, on loopback when it is 0.0.0.0/[::]]
        #[arg(long, value_name = "URL")]
        url: Option<url::Url>,
    },
    /// Run everything on this machine for a look around: the WeChat simulator with sample
    /// accounts and users, and the hub on SQLite with a development keyring, its accounts
    /// pointing at the simulator. Prints the URLs to open.
    Demo {
        /// Address of the simulator.
        #[arg(long, default_value = "127.0.0.1:7100", value_name = "ADDR")]
        sim_listen: SocketAddr,
        /// Address of the sample tenant website.
        #[arg(long, default_value = "127.0.0.1:7200", value_name = "ADDR")]
        site_listen: SocketAddr,
    },
    /// Register and manage WeChat Official Accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage the API keys with which an account's backends read its access_token.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Route an account's pushes to the owner's own servers: a reply route answers users
    /// through wxhub, copy routes get every matching push from a durable queue.
    #[command(subcommand)]
    PushRoute(wxhub::push_routes::PushRouteCommand),
    /// Dashboard operators: people who see every account and invite owners.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Show the audit log (who changed what, newest first).
    Audit {
        /// Only entries about this account.
        #[arg(long)]
        appid: Option<String>,
        /// Only entries by this actor (a user id, or `cli`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. `api_key.revoke`.
        #[arg(long)]
        action: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Register an account. Reads the secrets from stdin, never from the command line:
    /// line 1 the AppSecret, optional line 2 the push Token, optional line 3 the EncodingAESKey.
    /// The credentials are checked with WeChat first (stable_token without force_refresh, which
    /// invalidates no token a backend may be using); nothing is stored if WeChat refuses.
    Add {
        /// The account's AppID (wx + 16 hex digits).
        appid: String,
        /// Display name (shown to end users).
        #[arg(long)]
        name: String,
        /// Email of the owning dashboard user (created without a password if missing).
        #[arg(long, value_name = "EMAIL")]
        owner: String,
        /// A subscription account (订阅号) instead of a service account (服务号).
        #[arg(long)]
        subscription: bool,
        /// The account is not verified (微信认证).
        #[arg(long)]
        unverified: bool,
        /// Fetch the token with /cgi-bin/stable_token instead of /cgi-bin/token.
        #[arg(long)]
        stable_token: bool,
        /// Store the credentials without asking WeChat (a host that cannot reach WeChat yet).
        #[arg(long)]
        skip_check: bool,
    },
    /// Register many accounts at once, read from stdin one a line: `APPID<TAB>NAME<TAB>APPSECRET`
    /// or CSV `APPID,NAME,APPSECRET` (a spreadsheet's export; a header row, blank lines and `#`
    /// comments skipped), all owned by --owner. With --skip-check (the
    /// bulk path, e.g. a migration of many thousand accounts): every line is checked first and
    /// if any is wrong each is named and nothing is stored; then they are written 10,000 a
    /// transaction, the progress on stderr. Without it each account is checked with WeChat and
    /// registered in turn, stopping at the first that fails (naming it; those before it stay).
    Import {
        /// Email of the owning dashboard user (created without a password if missing).
        #[arg(long, value_name = "EMAIL")]
        owner: String,
        /// Subscription accounts (订阅号) instead of service accounts (服务号).
        #[arg(long)]
        subscription: bool,
        /// The accounts are not verified (微信认证).
        #[arg(long)]
        unverified: bool,
        /// Fetch their tokens with /cgi-bin/stable_token instead of /cgi-bin/token.
        #[arg(long)]
        stable_token: bool,
        /// Store the credentials without asking WeChat.
        #[arg(long)]
        skip_check: bool,
    },
    /// List accounts with their token health.
    List,
    /// Show one account: token health, the fix for a failure, and its gateway settings.
    Show {
        /// The account's AppID.
        appid: String,
    },
    /// Rename an account.
    Rename {
        /// The account's AppID.
        appid: String,
        /// The new display name.
        name: String,
    },
    /// Replace the AppSecret, read from stdin (one line), after checking it with WeChat.
    SetSecret {
        /// The account's AppID.
        appid: String,
        /// Store it without asking WeChat.
        #[arg(long)]
        skip_check: bool,
    },
    /// Set the push Token and EncodingAESKey from stdin (line 1 and 2; an empty line clears
    /// one), or generate strong ones with --generate and print them once for WeChat's console.
    PushCredentials {
        /// The account's AppID.
        appid: String,
        /// Generate a new Token and EncodingAESKey.
        #[arg(long)]
        generate: bool,
    },
    /// Stop serving an account (no refreshes, token API 403, no logins) on every server.
    Disable {
        /// The account's AppID.
        appid: String,
    },
    /// Serve a disabled account again.
    Enable {
        /// The account's AppID.
        appid: String,
    },
    /// Delete an account and everything that belongs to it; its secrets are crypto-shredded.
    Delete {
        /// The account's AppID.
        appid: String,
        /// The appid again, to confirm.
        #[arg(long, value_name = "APPID")]
        confirm: String,
    },
    /// Fetch a new access_token now (at most once per 5 minutes; the previous token keeps
    /// working for 5 minutes).
    Refresh {
        /// The account's AppID.
        appid: String,
    },
    /// Reset the account's daily API quotas at WeChat (10 resets a month).
    ClearQuota {
        /// The account's AppID.
        appid: String,
    },
    /// Set how the login gateway treats an account's pushes and follow page. Options not
    /// given keep their value; an empty value ("") clears one.
    Configure {
        /// The account's AppID.
        appid: String,
        /// The original id (原始ID, `gh_` + 12 characters): the ToUserName of its pushes.
        /// Required before plain or compatible-mode pushes are accepted.
        #[arg(long, value_name = "GH_ID")]
        original_id: Option<String>,
        /// The message encryption mode set in WeChat's console: plain, compatible or safe.
        #[arg(long, value_parser = ["plain", "compatible", "safe", ""])]
        push_mode: Option<String>,
        /// The owner's own server, which receives a re-signed copy of every push (https).
        #[arg(long, value_name = "URL")]
        push_relay_url: Option<String>,
        /// An https URL of the account's QR code image, shown on the follow page.
        #[arg(long, value_name = "URL")]
        follow_qr_url: Option<String>,
        /// An https link to the account's profile, shown on the follow page.
        #[arg(long, value_name = "URL")]
        follow_link: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Create an operator (or renew the link of one who has not set a password yet) and print
    /// a one-time link, valid 1 hour, where they choose their password. No password is ever
    /// set or printed here.
    Create {
        /// The operator's email (what they sign in with).
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Create an API key for an account; it is printed once.
    Create {
        /// The account's AppID.
        appid: String,
        /// A note saying which backend uses the key.
        #[arg(long, default_value = "")]
        label: String,
        /// What the key may do: token (read the access_token), report (report it rejected),
        /// proxy (call WeChat through wxhub), comma-separated.
        #[arg(long, default_value = "token,report,proxy")]
        scopes: String,
        /// Limit the proxy to this WeChat path (repeat for several), e.g.
        /// /cgi-bin/message/custom/send.
        #[arg(long = "proxy-path", value_name = "PATH")]
        proxy_paths: Vec<String>,
    },
    /// List an account's API keys (ids, labels, scopes; never the keys).
    List {
        /// The account's AppID.
        appid: String,
    },
    /// Revoke an API key; every server refuses it within a second.
    Revoke {
        /// The account's AppID.
        appid: String,
        /// The key's id, from `wxhub apikey list`.
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SigningKeyCommand {
    /// Publish a new ID-token signing key in every issuer's JWKS without signing with it yet,
    /// so relying parties that cache the JWKS learn it before it is used.
    Rotate,
    /// Make the published key the one that signs (the old one stays in the JWKS until the
    /// sweeper removes it a day later). Waits until it has been published for 24 hours
    /// unless --now is given (after a key compromise).
    Activate {
        /// Activate at once.
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a website that logs its users in through an account's WeChat login. Prints
    /// the client_id, the issuer URL and, for a confidential client, the secret (only once).
    Create {
        /// The account's appid.
        #[arg(long)]
        appid: String,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// An exact redirect URI (repeat for several): https, or http to 127.0.0.1/[::1]/
        /// localhost; no wildcard, fragment or user information.
        #[arg(long = "redirect-uri", required = true, value_name = "URI")]
        redirect_uris: Vec<String>,
        /// `follow-required` (snsapi_base; the user must follow the account) or `userinfo`
        /// (snsapi_userinfo; nickname and avatar, no follow needed).
        #[arg(long, value_parser = ["follow-required", "userinfo"])]
        mode: String,
        /// A public client (single-page or mobile app): no secret, PKCE required.
        #[arg(long)]
        public: bool,
    },
    /// List an account's websites.
    List {
        /// The account's appid.
        #[arg(long)]
        appid: String,
    },
    /// Show one website.
    Show {
        /// The account's appid.
        #[arg(long)]
        appid: String,
        /// The website's client_id.
        client_id: String,
    },
    /// Change a website's settings (what is not given is kept; --redirect-uri replaces the
    /// whole list).
    Edit {
        /// The account's appid.
        #[arg(long)]
        appid: String,
        /// The website's client_id.
        client_id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// The new list of exact redirect URIs (repeat for several).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// The new login mode.
        #[arg(long, value_parser = ["follow-required", "userinfo"])]
        mode: Option<String>,
        /// The algorithm of the website's ID tokens: RS256 (what every OpenID Connect library
        /// accepts) or ES256 (smaller; only for libraries configured to accept it). Tokens
        /// already issued stay valid.
        #[arg(long, value_parser = ["RS256", "ES256"])]
        id_token_alg: Option<String>,
        /// Where logins happen: `auto` (WeChat's authorize page inside WeChat, the scan page
        /// in any other browser), `wechat` (always the authorize page) or `scan` (always the
        /// scan page).
        #[arg(long, value_parser = ["auto", "wechat", "scan"])]
        login_surface: Option<String>,
        /// Whether a PC scan must be confirmed in WeChat before the computer is signed in:
        /// `on`, `off`, or `default` (on while the account's pushes are in plain mode, whose
        /// bodies WeChat does not sign).
        #[arg(long, value_parser = ["on", "off", "default"])]
        scan_confirmation: Option<String>,
    },
    /// Replace a confidential website's client secret; prints the new one once.
    RotateSecret {
        /// The account's appid.
        #[arg(long)]
        appid: String,
        /// The website's client_id.
        client_id: String,
    },
    /// Delete a website with its pending logins, codes and tokens.
    Delete {
        /// The account's appid.
        #[arg(long)]
        appid: String,
        /// The website's client_id.
        client_id: String,
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
    /// Show the keyring's master keys and how many data keys of each kind (accounts, signing
    /// keys) each one wraps.
    Status,
    /// Add a fresh master key, make it active and re-wrap every data key (accounts, signing
    /// keys) under it. Runs while servers serve: servers reading the same keyring file take
    /// the new key the moment they meet it.
    Rotate {
        /// Id of the new key [default: k<unix-time>]
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
        /// Only add and activate the key; re-wrap later with `wxhub vault rewrap`.
        #[arg(long)]
        no_rewrap: bool,
        /// Only add the key, not active (replicas with their own keyring copies: copy the file
        /// to every replica, then `wxhub vault activate ID`).
        #[arg(long, conflicts_with = "no_rewrap")]
        no_activate: bool,
        /// Data keys re-wrapped per batch.
        #[arg(long, default_value_t = rotation::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Make a master key of the keyring the active one and re-wrap every data key under it.
    Activate {
        /// Id of the key to activate.
        key_id: String,
        /// Only activate the key; re-wrap later with `wxhub vault rewrap`.
        #[arg(long)]
        no_rewrap: bool,
        /// Data keys re-wrapped per batch.
        #[arg(long, default_value_t = rotation::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Re-wrap every data key that is not yet under the active master key. Resumable: run it
    /// again after an interruption.
    Rewrap {
        /// Data keys re-wrapped per batch.
        #[arg(long, default_value_t = rotation::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Remove a master key from the keyring. Refused while any data key (an account's, a
    /// signing key's) is wrapped under it, and for the active key.
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
        Command::Serve {
            manual_clock,
            clock_start_ms,
        } => {
            let clock = manual_clock.then(|| match clock_start_ms {
                Some(ms) => wechat::ManualClock::new(ms),
                None => wechat::ManualClock::starting_now(),
            });
            server::serve(config, clock).await.map(|()| String::new())
        }
        Command::Migrate { check } => ops::migrate(&config, check).await,
        Command::Vault(VaultCommand::Init { key_id }) => ops::vault_init(&config, key_id),
        Command::Vault(VaultCommand::Status) => ops::vault_status(&config).await,
        Command::Vault(VaultCommand::Rotate {
            key_id,
            no_activate: true,
            ..
        }) => ops::vault_add_inactive_key(&config, key_id).await,
        Command::Vault(VaultCommand::Rotate {
            key_id,
            no_rewrap,
            batch,
            ..
        }) => ops::vault_rotate(&config, key_id, no_rewrap, batch).await,
        Command::Vault(VaultCommand::Activate {
            key_id,
            no_rewrap,
            batch,
        }) => ops::vault_activate(&config, &key_id, no_rewrap, batch).await,
        Command::Vault(VaultCommand::Rewrap { batch }) => ops::vault_rewrap(&config, batch).await,
        Command::Vault(VaultCommand::DropKey { key_id }) => {
            ops::vault_drop_key(&config, &key_id).await
        }
        Command::Client(command) => client_command(&config, command).await,
        Command::Sim {
            listen,
            empty,
            manual_clock,
            hub_url,
        } => demo::run_sim(demo::SimOptions {
            listen,
            sample: !empty,
            manual_clock,
            hub_url,
        })
        .await
        .map(|()| String::new()),
        Command::SampleSite {
            listen,
            site_url,
            client_files,
        } => {
            let site_url = match site_url {
                Some(url) => url,
                None => url::Url::parse(&format!("http://{listen}/"))?,
            };
            wxhub::sample_site::run(listen, site_url, &client_files)
                .await
                .map(|()| String::new())
        }
        Command::Healthcheck { url } => ops::healthcheck(&config, url).await,
        Command::Demo {
            sim_listen,
            site_listen,
        } => demo::run_demo(config, sim_listen, site_listen)
            .await
            .map(|()| String::new()),
        Command::Account(command) => account_command(&config, command).await,
        Command::PushRoute(command) => {
            wxhub::push_routes::run(&config, command, &mut std::io::stdin().lock()).await
        }
        Command::SigningKey(SigningKeyCommand::Rotate) => {
            wxhub::clients::signing_key_rotate(&config).await
        }
        Command::SigningKey(SigningKeyCommand::Activate { now }) => {
            wxhub::clients::signing_key_activate(&config, now).await
        }
        Command::Apikey(ApikeyCommand::Create {
            appid,
            label,
            scopes,
            proxy_paths,
        }) => tenants::apikey_create(&config, &appid, &label, &scopes, proxy_paths).await,
        Command::Operator(OperatorCommand::Create { email }) => {
            tenants::operator_create(&config, &email).await
        }
        Command::Apikey(ApikeyCommand::List { appid }) => {
            tenants::apikey_list(&config, &appid).await
        }
        Command::Apikey(ApikeyCommand::Revoke { appid, key_id }) => {
            tenants::apikey_revoke(&config, &appid, &key_id).await
        }
        Command::Audit {
            appid,
            actor,
            action,
            limit,
        } => {
            let query = tenancy::people::AuditQuery {
                appid,
                actor,
                action,
                from: None,
                until: None,
            };
            tenants::audit_list(&config, query, limit).await
        }
    }
}

async fn account_command(config: &Config, command: AccountCommand) -> anyhow::Result<String> {
    let stdin = &mut std::io::stdin().lock();
    match command {
        AccountCommand::Add {
            appid,
            name,
            owner,
            subscription,
            unverified,
            stable_token,
            skip_check,
        } => {
            let args = tenants::NewAccountArgs {
                appid,
                name,
                owner_email: owner,
                kind: if subscription {
                    AccountKind::Subscription
                } else {
                    AccountKind::Service
                },
                verified: !unverified,
                token_mode: if stable_token {
                    TokenMode::StableToken
                } else {
                    TokenMode::Token
                },
                skip_check,
            };
            tenants::account_add(config, &args, stdin).await
        }
        AccountCommand::Import {
            owner,
            subscription,
            unverified,
            stable_token,
            skip_check,
        } => {
            let args = tenants::NewAccountArgs {
                appid: String::new(),
                name: String::new(),
                owner_email: owner,
                kind: if subscription {
                    AccountKind::Subscription
                } else {
                    AccountKind::Service
                },
                verified: !unverified,
                token_mode: if stable_token {
                    TokenMode::StableToken
                } else {
                    TokenMode::Token
                },
                skip_check,
            };
            tenants::account_import(config, &args, stdin).await
        }
        AccountCommand::List => tenants::account_list(config).await,
        AccountCommand::Show { appid } => tenants::account_show(config, &appid).await,
        AccountCommand::Rename { appid, name } => {
            tenants::account_rename(config, &appid, &name).await
        }
        AccountCommand::SetSecret { appid, skip_check } => {
            tenants::account_set_secret(config, &appid, skip_check, stdin).await
        }
        AccountCommand::PushCredentials { appid, generate } => {
            tenants::account_push_credentials(config, &appid, generate, stdin).await
        }
        AccountCommand::Disable { appid } => {
            tenants::account_set_enabled(config, &appid, false).await
        }
        AccountCommand::Enable { appid } => {
            tenants::account_set_enabled(config, &appid, true).await
        }
        AccountCommand::Delete { appid, confirm } => {
            tenants::account_delete(config, &appid, &confirm).await
        }
        AccountCommand::Refresh { appid } => tenants::account_refresh(config, &appid).await,
        AccountCommand::ClearQuota { appid } => tenants::account_clear_quota(config, &appid).await,
        AccountCommand::Configure {
            appid,
            original_id,
            push_mode,
            push_relay_url,
            follow_qr_url,
            follow_link,
        } => {
            let args = tenants::SettingsArgs {
                original_id,
                push_mode,
                push_relay_url,
                follow_qr_url,
                follow_link,
            };
            tenants::account_configure(config, &appid, args).await
        }
    }
}

async fn client_command(config: &Config, command: ClientCommand) -> anyhow::Result<String> {
    match command {
        ClientCommand::Create {
            appid,
            name,
            redirect_uris,
            mode,
            public,
        } => {
            let mode = tenants::login_mode(&mode)?;
            tenants::client_create(config, &appid, &name, redirect_uris, mode, public).await
        }
        ClientCommand::List { appid } => tenants::client_list(config, &appid).await,
        ClientCommand::Show { appid, client_id } => {
            tenants::client_show(config, &appid, &client_id).await
        }
        ClientCommand::Edit {
            appid,
            client_id,
            name,
            redirect_uris,
            mode,
            id_token_alg,
            login_surface,
            scan_confirmation,
        } => {
            let changes = WebsiteChanges {
                name,
                redirect_uris: (!redirect_uris.is_empty()).then_some(redirect_uris),
                login_mode: mode.as_deref().map(tenants::login_mode).transpose()?,
                id_token_signed_response_alg: id_token_alg
                    .as_deref()
                    .map(str::parse)
                    .transpose()?,
                login_surface: login_surface.as_deref().map(str::parse).transpose()?,
                scan_confirmation: scan_confirmation
                    .as_deref()
                    .map(tenants::scan_confirmation)
                    .transpose()?,
            };
            tenants::client_edit(config, &appid, &client_id, &changes).await
        }
        ClientCommand::RotateSecret { appid, client_id } => {
            tenants::client_rotate_secret(config, &appid, &client_id).await
        }
        ClientCommand::Delete { appid, client_id } => {
            tenants::client_delete(config, &appid, &client_id).await
        }
    }
}

/// Logs go to standard error. Text logs are coloured only when standard error is a terminal
/// and `NO_COLOR` is unset or empty (no-color.org), so a redirected log file or journal holds
/// plain text without escape codes.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WXHUB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
