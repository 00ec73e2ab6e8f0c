//! `wxhub serve`: builds the application state and serves HTTP until asked to stop.

use anyhow::Context;
use axum::Router;
use axum::routing::get;

use crate::config::Config;

/// Builds the router of the whole hub.
pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let vault = crate::unseal::open_vault(&config)?;
    tracing::info!(
        active_key = %vault.keyring().active_id(),
        keys = vault.keyring().key_ids().count(),
        "vault unsealed"
    );
    let wechat = wechat::Client::new(wechat::ClientConfig::for_base(
        config.wechat_api_url.clone(),
    ))
    .context("building the WeChat client")?;
    tracing::info!(database = %config.database_url_redacted(), wechat_api = %wechat.config().api_base, "configured");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(listen = %config.listen, public_url = %config.public_url, "wxhub is serving");
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")
}

async fn shutdown_signal() {
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
