//! `wxhub serve`: builds the application state and serves HTTP until asked to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use store::Store;
use wechat::{ManualClock, SharedClock, SystemClock};

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
    /// The Prometheus metrics `/metrics` serves (when configured).
    pub metrics: stats::prometheus::Metrics,
    /// `wxhub serve --manual-clock` (tests only): the clock `clock` is, which the `/__test`
    /// routes move ([`crate::test_clock`]). `None` in every other case.
    pub test_clock: Option<ManualClock>,
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
        let metrics = stats::prometheus::Metrics::new(stats::prometheus::MetricsConfig {
            per_account: config.metrics_per_account,
        });
        let stats = stats::Stats::new(
            store.clone(),
            clock.clone(),
            stats::StatsConfig {
                daily_retention: days(config.stats_retention_days),
                metrics: Some(metrics.clone()),
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
                push_allow_hosts: config.push_allow_hosts.clone(),
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
            metrics,
            dashboard,
            tenancy,
            store,
            vault,
            clock,
            config: Arc::new(config),
            tokens,
            gateway,
            test_clock: None,
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

/// Builds the router of the whole hub: every request is counted in the metrics by its
/// route's pattern; `/metrics` is there only with a bearer token configured.
pub fn router(state: AppState) -> Router {
    let tokens = scheduler::router(state.tokens.clone());
    let login = gateway::router(state.gateway.clone());
    let dashboard = dashboard::router(state.dashboard.clone());
    let metrics = state.metrics.clone();
    let mut own = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready));
    if state.config.metrics_token.is_some() {
        own = own.route("/metrics", get(metrics_with_token));
    }
    let test_clock = state
        .test_clock
        .clone()
        .map(|clock| crate::test_clock::router(clock, state.tokens.clone()));
    let own = own.with_state(state);
    let own = match test_clock {
        Some(test_clock) => own.merge(test_clock),
        None => own,
    };
    own.merge(tokens)
        .merge(login)
        .merge(dashboard)
        .route_layer(axum::middleware::from_fn_with_state(metrics, count_request))
}

/// The router of the separate metrics address: `/metrics` only, without authentication.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_open))
        .with_state(state)
}

/// Counts a request in the metrics under its route's pattern (never the path itself: that
/// would be a series per appid, wait token, …).
async fn count_request(
    State(metrics): State<stats::prometheus::Metrics>,
    route: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    metrics.http_request(
        route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn metrics_with_token(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let allowed = match (&state.config.metrics_token, presented) {
        (Some(token), Some(presented)) => token.matches(presented.trim()),
        _ => false,
    };
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required",
        )
            .into_response();
    }
    metrics_open(State(state)).await
}

async fn metrics_open(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    gather(&state).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            stats::prometheus::CONTENT_TYPE,
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Sets the gauges the database and the scheduler know, just before a scrape. A failed read
/// leaves the previous values (and is logged).
async fn gather(state: &AppState) {
    let metrics = &state.metrics;
    match state.store.count_accounts_by_health().await {
        Ok(rows) => {
            use store::tokens::TokenState;
            // Every state, so a state without accounts reads 0 rather than disappearing.
            let mut by_state: std::collections::BTreeMap<&str, i64> = [
                TokenState::Pending,
                TokenState::Healthy,
                TokenState::Retrying,
                TokenState::NeedsAttention,
                TokenState::QuotaExhausted,
            ]
            .iter()
            .map(|s| (s.as_str(), 0))
            .chain([("disabled", 0)])
            .collect();
            for (account_state, token_state, n) in &rows {
                let key = if *account_state == store::accounts::AccountState::Disabled {
                    "disabled"
                } else {
                    token_state.as_str()
                };
                *by_state.entry(key).or_default() += n;
            }
            let counts: Vec<(&str, i64)> = by_state.into_iter().collect();
            metrics.set_accounts_by_token_state(&counts);
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot count accounts"),
    }
    let now = state.clock.now_ms();
    match state.store.datacube_sync_progress().await {
        Ok((oldest, accounts)) => {
            // The oldest day every synced account has ends a day after its start.
            let lag = oldest.map_or(0, |day| ((now - day - 24 * 3_600_000) / 1000).max(0));
            metrics.set_datacube(lag, accounts);
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read the datacube sync"),
    }
    let (size, idle) = state.store.pool_status();
    metrics.set_db_connections(i64::from(idle), i64::from(size.saturating_sub(idle)));
    if let Some(at) = state.tokens.last_progress() {
        metrics.set_scheduler_pass_age((now - at).max(0) / 1000);
    }
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

/// How long the core-token scheduler may go without progress before `/readyz` says so: 24
/// of its 5-second polls, far longer than any pass that is merely busy (each refresh that
/// ends counts as progress).
pub const SCHEDULER_STALL: Duration = Duration::from_secs(120);

/// Ready when the database answers and the core-token scheduler is making progress.
async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    if let Err(err) = state.store.schema_status().await {
        tracing::warn!(error = %err, "not ready: the database does not answer");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable".to_owned(),
        );
    }
    if let Some(at) = state.tokens.last_progress() {
        let idle = state.clock.now_ms() - at;
        let limit = i64::try_from(SCHEDULER_STALL.as_millis()).unwrap_or(i64::MAX);
        if idle > limit {
            tracing::warn!(
                idle_ms = idle,
                "not ready: the core-token scheduler has stopped"
            );
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "core-token scheduler stalled: no progress for {} s",
                    idle / 1000
                ),
            );
        }
    }
    (StatusCode::OK, "ready".to_owned())
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
    // Copies of pushes to owners' servers, from the queue every replica shares.
    let copies = gateway::routes::spawn_copy_worker(state.gateway.clone());
    // Counts reach the database every few seconds; the last ones at the end.
    let flusher = state.stats.spawn_flusher();
    // WeChat's statistics: each account at its own time of day, one replica per account.
    let datacube = state.datacube.spawn();
    let grace = state.tokens.config().shutdown_grace;
    // `/metrics` on its own address, when configured.
    let metrics_server = match state.config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for /metrics"))?;
            tracing::info!(%addr, "serving /metrics");
            let app = metrics_router(state.clone());
            let limits = state.config.http.clone();
            Some(tokio::spawn(async move {
                let forever = std::future::pending();
                if let Err(error) = crate::listener::serve(listener, app, limits, forever).await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            }))
        }
        None => None,
    };
    // Header, idle and request timeouts and a connection limit (TCP_NODELAY too).
    let limits = state.config.http.clone();
    let gateway = state.gateway.clone();
    let result = crate::listener::serve(listener, router(state), limits, shutdown)
        .await
        .context("HTTP server failed");
    // Replies of reply routes waiting for their batched write, for WeChat's retries that
    // another replica may take.
    gateway.write_replies().await;
    reload.abort();
    sweeper.abort();
    copies.abort();
    datacube.abort();
    if let Some(task) = metrics_server {
        task.abort();
    }
    // Refreshes in flight finish and store their token (an aborted one would waste a fetch:
    // WeChat has already superseded the old token); no new one starts.
    scheduler_tasks.shutdown(grace).await;
    flusher.shutdown().await;
    result
}

/// Runs the server until SIGINT or SIGTERM. With `manual_clock` (tests only, see
/// [`crate::test_clock`]) its time stands at that clock's and moves only when a test says so.
pub async fn serve(mut config: Config, manual_clock: Option<ManualClock>) -> anyhow::Result<()> {
    if manual_clock.is_some() {
        crate::test_clock::check_allowed(&config)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let listen = listener.local_addr()?;
    if config.public_url.port() == Some(0) {
        // `--listen 127.0.0.1:0` without a public URL (tests starting several processes):
        // the public URL is where the server actually listens.
        config.public_url = url::Url::parse(&format!("http://{listen}/"))?;
    }
    let public_url = config.public_url.clone();
    let clock: SharedClock = match &manual_clock {
        Some(clock) => Arc::new(clock.clone()),
        None => Arc::new(SystemClock),
    };
    let mut state = AppState::open(config, clock).await?;
    if let Some(clock) = manual_clock {
        crate::test_clock::announce(listen, &clock);
        state.test_clock = Some(clock);
    }
    tracing::info!(
        database = %state.store.redacted_url(),
        active_key = %state.vault.current().keyring().active_id(),
        "store opened and vault unsealed"
    );
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
