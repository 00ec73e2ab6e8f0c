//! `wxhub serve`: builds the application state and serves HTTP until asked to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use store::Store;
use wechat::{SharedClock, SystemClock};

use accounts::{VaultHandle, rotation};

use crate::config::Config;

/// How often a running server looks at its keyring file for a rotated keyring.
const KEYRING_POLL: Duration = Duration::from_secs(5);

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub vault: Arc<VaultHandle>,
    pub clock: SharedClock,
    pub config: Arc<Config>,
    /// The core-token scheduler and cache (started by [`serve_on`]).
    pub tokens: scheduler::TokenService,
    /// The login gateway (OIDC issuers, WeChat login, push callbacks) under `/t/{appid}`.
    pub gateway: Arc<gateway::Gateway>,
    /// The tenancy layer: every operation owners, operators and the CLI perform.
    pub tenancy: tenancy::Tenancy,
    /// The web dashboard under `/dashboard/` (and the hub's root, which leads to it).
    pub dashboard: dashboard::Dashboard,
    /// What happens on every account, counted and flushed to the database (by [`serve_on`]).
    pub stats: stats::Stats,
    /// WeChat's own statistics, synced nightly per account (started by [`serve_on`]).
    pub datacube: stats::datacube::DatacubeSync,
}

impl AppState {
    /// Opens the store (applying migrations), loads the keyring and checks that it holds every
    /// master key the database uses. Decrypts nothing: secrets are read when needed.
    pub async fn open(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        if config.database_url.starts_with("sqlite:") {
            create_data_dir(&config.data_dir)?;
        }
        let vault = crate::unseal::open_vault_handle(&config)?;
        let store = Store::connect(&config.database_url).await?;
        rotation::check_keyring_matches(&store, vault.current().keyring()).await?;
        let vault = Arc::new(vault);
        // The scheduler fills its token cache here; valid tokens are served as they are.
        let wechat = wechat_client(&config)?;
        let days = |n: u32| Duration::from_secs(u64::from(n) * 24 * 3600);
        let stats = stats::Stats::new(
            store.clone(),
            clock.clone(),
            stats::StatsConfig {
                daily_retention: days(config.stats_retention_days),
                ..stats::StatsConfig::default()
            },
        );
        let tokens = scheduler::TokenService::open(
            store.clone(),
            vault.clone(),
            wechat.clone(),
            clock.clone(),
            scheduler::SchedulerConfig {
                stats: stats.clone(),
                ..scheduler::SchedulerConfig::default()
            },
        )
        .await
        .context("loading the core-token cache")?;
        let tenancy = tenancy::Tenancy::new(
            store.clone(),
            vault.clone(),
            wechat.clone(),
            clock.clone(),
            tenancy::TenancyConfig {
                daily_token_budget: tokens.config().policy.daily_budget,
                quota_utc_offset_secs: tokens.config().policy.quota_utc_offset_secs,
                egress_ips: config.egress_ips.clone(),
                open_sign_up: config.open_sign_up,
                ..tenancy::TenancyConfig::new(config.public_url.clone())
            },
        );
        let datacube = stats::datacube::DatacubeSync::new(
            store.clone(),
            wechat.clone(),
            Arc::new(crate::login_gateway::SchedulerCoreTokens(tokens.clone())),
            clock.clone(),
            stats::datacube::DatacubeConfig {
                holder: tokens.config().holder.clone(),
                daily_budget: config.datacube_daily_budget,
                retention: days(config.datacube_retention_days),
                ..stats::datacube::DatacubeConfig::default()
            },
        );
        let gateway =
            crate::login_gateway::build(&config, &store, &vault, &clock, wechat, &tokens, &stats)?;
        let dashboard = dashboard::Dashboard::new(
            tenancy.clone(),
            vault.clone(),
            clock.clone(),
            dashboard::DashboardConfig {
                require_totp_for_operators: config.require_totp_for_operators,
                ..dashboard::DashboardConfig::new(config.public_url.clone())
            },
        )
        .context("starting the dashboard")?;
        Ok(Self {
            stats,
            datacube,
            dashboard,
            tenancy,
            store,
            vault,
            clock,
            config: Arc::new(config),
            tokens,
            gateway,
        })
    }
}

/// The WeChat client for the configured API and OAuth URLs.
pub fn wechat_client(config: &Config) -> anyhow::Result<wechat::Client> {
    Ok(wechat::Client::new(wechat::ClientConfig {
        api_base: config.wechat_api_url.clone(),
        open_base: config.wechat_open_url.clone(),
        mp_base: config.wechat_mp_url.clone(),
        ..wechat::ClientConfig::default()
    })?)
}

/// Creates the data directory (and missing parents) readable by wxhub's user only (0700 on
/// Unix): it holds the SQLite database and possibly a development keyring. An existing
/// directory is left as it is.
pub fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Builds the router of the whole hub.
pub fn router(state: AppState) -> Router {
    let tokens = scheduler::router(state.tokens.clone());
    let login = gateway::router(state.gateway.clone());
    let dashboard = dashboard::router(state.dashboard.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
        .merge(tokens)
        .merge(login)
        .merge(dashboard)
}

/// While no operator exists, a one-time link (valid 1 hour) to create the first one, as
/// `wxhub serve` prints it; `None` once there is an operator. There is no default password:
/// this link is the only way in to a new hub.
pub async fn first_operator_link(state: &AppState) -> anyhow::Result<Option<String>> {
    let link = state
        .tenancy
        .first_operator_setup_link(&tenancy::Principal::cli())
        .await
        .context("making the first operator's setup link")?;
    Ok(link.map(|link| {
        dashboard::link_url(&state.config.public_url, link.purpose, link.token.expose())
    }))
}

/// Ready when the database answers.
async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.schema_status().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// Serves `state` on `listener` until `shutdown` completes, with the background tasks a
/// server runs (keyring reload, the core-token scheduler, the login gateway's sweeper).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (vault, store) = (state.vault.clone(), state.store.clone());
    let reload = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEYRING_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Checked against the database as at start-up: a keyring lacking a key still in
            // use is refused (the error names it) and the current one kept.
            if let Err(err) = vault.reload_if_changed(&store).await {
                tracing::error!(error = %err, "the keyring file changed but is not used; keeping the current keyring");
            }
        }
    });
    let scheduler_tasks = state
        .tokens
        .start()
        .await
        .context("starting the core-token scheduler")?;
    // Expired login rows, old push nonces and pushes, retired signing keys.
    let sweeper = gateway::maintenance::spawn(
        state.gateway.clone(),
        gateway::maintenance::Retention::default(),
    );
    // Counts reach the database every few seconds; the last ones at the end.
    let flusher = state.stats.spawn_flusher();
    // WeChat's statistics: each account at its own time of day, one replica per account.
    let datacube = state.datacube.spawn();
    let grace = state.tokens.config().shutdown_grace;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // Small writes go out at once: a login page's Server-Sent Event would otherwise wait
    // for the browser's delayed ACK (Nagle's algorithm, about 40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed");
    reload.abort();
    sweeper.abort();
    datacube.abort();
    // Refreshes in flight finish and store their token (an aborted one would waste a fetch:
    // WeChat has already superseded the old token); no new one starts.
    scheduler_tasks.shutdown(grace).await;
    flusher.shutdown().await;
    result
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let public_url = config.public_url.clone();
    let state = AppState::open(config, Arc::new(SystemClock)).await?;
    tracing::info!(
        database = %state.store.redacted_url(),
        active_key = %state.vault.current().keyring().active_id(),
        "store opened and vault unsealed"
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, %public_url, "wxhub is serving");
    // On standard output only, never in the log: the link lets whoever opens it first become
    // the operator.
    if let Some(link) = first_operator_link(&state).await? {
        println!(
            "No operator exists yet. Open this link within 1 hour to create the first one \
             (it works once; restart wxhub for a new one):\n  {link}"
        );
    }
    serve_on(listener, state, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
