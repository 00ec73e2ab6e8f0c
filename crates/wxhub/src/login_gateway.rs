//! Wiring of the login gateway: the adapter that hands it the scheduler's core tokens, and
//! its construction from the configuration.
//!
//! The gateway never fetches a core token itself (that would invalidate the scheduler's,
//! docs/wechat.md §10); it asks [`scheduler::TokenService`] through [`gateway::CoreTokens`].

use std::sync::Arc;

use gateway::{BoxFuture, CoreTokenError, CoreTokens, Gateway, GatewayConfig};
use wechat::AccessToken;

use crate::config::Config;

/// [`gateway::CoreTokens`] over the scheduler: `current` serves from its cache,
/// `report_rejected` is its compare-and-swap refresh (single flight across replicas): the
/// gateway's own WeChat call saw the rejection, so it goes through `rejected_by_wechat`.
pub struct SchedulerCoreTokens(pub scheduler::TokenService);

fn unavailable(e: scheduler::TokenError) -> CoreTokenError {
    CoreTokenError {
        reason: e.to_string(),
    }
}

impl CoreTokens for SchedulerCoreTokens {
    fn current<'a>(
        &'a self,
        account_id: &'a str,
    ) -> BoxFuture<'a, Result<AccessToken, CoreTokenError>> {
        Box::pin(async move {
            self.0
                .current(account_id)
                .await
                .map(|t| t.access_token)
                .map_err(unavailable)
        })
    }

    fn report_rejected<'a>(
        &'a self,
        account_id: &'a str,
        rejected: &'a AccessToken,
    ) -> BoxFuture<'a, Result<AccessToken, CoreTokenError>> {
        Box::pin(async move {
            self.0
                .rejected_by_wechat(account_id, rejected)
                .await
                .map(|r| r.token.access_token)
                .map_err(unavailable)
        })
    }
}

/// The statistics sync asks the scheduler for core tokens the same way: never a fetch of its
/// own.
impl stats::datacube::CoreTokenSource for SchedulerCoreTokens {
    fn current<'a>(
        &'a self,
        account_id: &'a str,
    ) -> stats::datacube::BoxFuture<'a, Result<AccessToken, String>> {
        Box::pin(async move {
            self.0
                .current(account_id)
                .await
                .map(|t| t.access_token)
                .map_err(|e| e.to_string())
        })
    }

    fn rejected<'a>(
        &'a self,
        account_id: &'a str,
        rejected: &'a AccessToken,
    ) -> stats::datacube::BoxFuture<'a, Result<AccessToken, String>> {
        Box::pin(async move {
            self.0
                .rejected_by_wechat(account_id, rejected)
                .await
                .map(|r| r.token.access_token)
                .map_err(|e| e.to_string())
        })
    }
}

/// Builds the gateway over the hub's WeChat client (whose API and authorize-page bases come
/// from the configuration).
pub fn build(
    config: &Config,
    store: &store::Store,
    vault: &Arc<accounts::VaultHandle>,
    clock: &wechat::SharedClock,
    wechat: wechat::Client,
    tokens: &scheduler::TokenService,
    stats: &stats::Stats,
) -> anyhow::Result<Arc<Gateway>> {
    let routes = gateway::routes::RouteOptions {
        reply_deadline: config.push_reply_deadline,
        allow_hosts: config.push_allow_hosts.clone(),
        ..gateway::routes::RouteOptions::default()
    };
    Ok(Gateway::with_options(
        GatewayConfig {
            store: store.clone(),
            vault: vault.clone(),
            clock: clock.clone(),
            wechat,
            core_tokens: Arc::new(SchedulerCoreTokens(tokens.clone())),
            public_url: config.public_url.clone(),
            stats: stats.clone(),
        },
        gateway::limits::GatewayLimits::default(),
        routes,
    )?)
}
