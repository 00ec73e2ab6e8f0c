//! `wxhub serve --manual-clock`: a hub whose time moves only when a test says so, for the
//! `tests/` package's scenarios that run a simulated day (or an hour of WeChat outage) on
//! processes. Never for production: the routes below let anyone who reaches the listener move
//! the hub's time, so the mode is refused on a non-loopback listener and with the real
//! WeChat API.
//!
//! The test keeps every replica and `wxhub sim --manual-clock` on one time: it starts each
//! replica at the simulator's time (`--clock-start-ms`) and, after moving the simulator,
//! sets every replica to the simulator's new time (`POST /__test/clock/set`). Moving the clock
//! wakes the core-token scheduler's loop, as a test holding a `wechat::ManualClock` calls
//! `TokenService::wake`; waits on another holder's lease re-read the clock by themselves.
//!
//! - `GET /__test/clock` → `{"now_ms": N, "manual": true, "holder": "wxhub-…"}` (the name
//!   this process's leases carry, so a test can tell its leases from a dead replica's)
//! - `POST /__test/clock/set` with `{"now_ms": N}` (never backwards) → `{"now_ms": N}`
//! - `POST /__test/clock/advance` with `{"secs": N}` and/or `{"ms": N}` → `{"now_ms": N}`
//! - `POST /__test/run-due` → what one pass over the refreshes due now did
//!   (`{"due", "refreshed", "failed", "skipped"}`), answered when the pass is over: the
//!   event a test waits on instead of polling after it moved the clock.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use wechat::{Clock, ManualClock};

use crate::config::Config;

/// The real WeChat API host: a manual clock against it would fetch real tokens on a made-up
/// schedule.
const REAL_WECHAT_API_HOST: &str = "api.weixin.qq.com";

/// Refuses `--manual-clock` with a configuration that looks like production: a listener
/// others can reach, or the real WeChat API.
pub fn check_allowed(config: &Config) -> anyhow::Result<()> {
    if !config.listen.ip().is_loopback() {
        anyhow::bail!(
            "--manual-clock is for tests only: it serves /__test/clock, which moves the hub's \
             time, so it needs a loopback --listen address (not {})",
            config.listen
        );
    }
    if let Some(addr) = config.metrics_listen
        && !addr.ip().is_loopback()
    {
        anyhow::bail!("--manual-clock is for tests only: --metrics-listen must be loopback too");
    }
    if config.wechat_api_url.host_str() == Some(REAL_WECHAT_API_HOST) {
        anyhow::bail!(
            "--manual-clock is for tests only: point --wechat-api-url at a simulator \
             (`wxhub sim --manual-clock`), not at WeChat"
        );
    }
    Ok(())
}

/// What the routes act on.
#[derive(Clone)]
struct TestClock {
    clock: ManualClock,
    tokens: scheduler::TokenService,
}

/// The `/__test` routes for `clock`, which the hub's state was built with.
pub fn router(clock: ManualClock, tokens: scheduler::TokenService) -> Router {
    Router::new()
        .route("/__test/clock", get(now))
        .route("/__test/clock/set", post(set))
        .route("/__test/clock/advance", post(advance))
        .route("/__test/run-due", post(run_due))
        .with_state(TestClock { clock, tokens })
}

/// Logs where the test clock is served, once, so a log reader knows this is no production hub.
pub fn announce(listen: SocketAddr, clock: &ManualClock) {
    tracing::warn!(
        %listen,
        now_ms = clock.now_ms(),
        "manual clock (tests only): time moves only through POST /__test/clock/set and /advance"
    );
}

fn invalid(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message.to_string() })),
    )
        .into_response()
}

async fn now(State(test): State<TestClock>) -> Response {
    axum::Json(json!({
        "now_ms": test.clock.now_ms(),
        "manual": true,
        "holder": test.tokens.config().holder,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    now_ms: i64,
}

async fn set(State(test): State<TestClock>, body: Bytes) -> Response {
    let body: SetBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return invalid(format!("JSON body: {error}")),
    };
    let current = test.clock.now_ms();
    if body.now_ms < current {
        // Leases, schedules and budgets assume time never goes back.
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "error": "the clock never moves backwards",
                "now_ms": current,
            })),
        )
            .into_response();
    }
    test.clock.set(body.now_ms);
    test.tokens.wake();
    axum::Json(json!({ "now_ms": body.now_ms })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    #[serde(default)]
    secs: u64,
    #[serde(default)]
    ms: u64,
}

async fn advance(State(test): State<TestClock>, body: Bytes) -> Response {
    let body: AdvanceBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return invalid(format!("JSON body: {error}")),
    };
    test.clock
        .advance(Duration::from_secs(body.secs).saturating_add(Duration::from_millis(body.ms)));
    test.tokens.wake();
    axum::Json(json!({ "now_ms": test.clock.now_ms() })).into_response()
}

async fn run_due(State(test): State<TestClock>) -> Response {
    match test.tokens.run_due().await {
        Ok(report) => axum::Json(json!({
            "now_ms": test.clock.now_ms(),
            "due": report.due,
            "refreshed": report.refreshed,
            "failed": report.failed,
            "skipped": report.skipped,
        }))
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}
