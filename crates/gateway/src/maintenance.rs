//! Periodic clean-up of the gateway's tables, so they do not grow without bound: expired
//! pending authorizations, codes and access tokens, push nonces past the timestamp window,
//! push routes' stored replies, old received pushes, retired signing keys past their grace period, follow waits that
//! expired or lost their login, and scan logins that expired or finished.
//!
//! Every deletion is idempotent, so several replicas may sweep at once. Cut-offs are in the
//! past by a margin: an expired code is kept a few minutes so that a late second use is still
//! recognised and revokes its tokens.

use std::sync::Arc;
use std::time::Duration;

use store::Store;
use tokio::task::JoinHandle;

use crate::{Gateway, GatewayError};

/// How often [`spawn`] sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How long rows are kept past their expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Expired pending authorizations, codes, access tokens and follow waits are kept this
    /// long (a late reuse of a code is still detected and revokes its tokens).
    pub expired_oidc_grace: Duration,
    /// Push nonces are kept this long after they were seen. Must exceed twice the timestamp
    /// window (a push may carry a timestamp up to 300 s ahead and is accepted for 300 s
    /// after it).
    pub push_nonces: Duration,
    /// Received pushes (the dedup record and the dashboard's list) are kept this long.
    pub received_pushes: Duration,
    /// Retired signing keys stay published this long after retirement (ID tokens they signed
    /// live 10 minutes; relying parties may cache the JWKS longer).
    pub retired_signing_keys: Duration,
    /// Push copies whose last attempt failed are kept this long for their owner to re-send
    /// (their bodies are sealed messages of users: not kept for ever).
    pub dead_letters: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            expired_oidc_grace: Duration::from_secs(10 * 60),
            push_nonces: Duration::from_secs(15 * 60),
            received_pushes: Duration::from_secs(7 * 24 * 3600),
            retired_signing_keys: Duration::from_secs(24 * 3600),
            dead_letters: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// How many rows one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub follow_waits: u64,
    pub scan_logins: u64,
    /// Pending authorizations, codes and access tokens.
    pub oidc_rows: u64,
    pub push_nonces: u64,
    /// Reply routes' stored replies (kept as long as nonces: WeChat's retries are over).
    pub push_replies: u64,
    pub received_pushes: u64,
    pub signing_keys: u64,
    pub dead_letters: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Deletes what `retention` no longer keeps, as of `now` (Unix ms).
pub async fn sweep(
    store: &Store,
    now: i64,
    retention: &Retention,
) -> Result<SweepReport, GatewayError> {
    let before = |d: Duration| now.saturating_sub(ms(d));
    let follow_waits = store
        .delete_stale_follow_waits(before(retention.expired_oidc_grace))
        .await?;
    let scan_logins = store
        .delete_stale_scan_logins(before(retention.expired_oidc_grace))
        .await?;
    let oidc_rows = store
        .delete_expired_oidc_rows(before(retention.expired_oidc_grace))
        .await?;
    let push_nonces = store
        .delete_push_nonces_before(before(retention.push_nonces))
        .await?;
    let push_replies = store
        .delete_push_replies_before(before(retention.push_nonces))
        .await?;
    let received_pushes = store
        .delete_pushes_before(before(retention.received_pushes))
        .await?;
    let signing_keys = store
        .delete_signing_keys_retired_before(before(retention.retired_signing_keys))
        .await?;
    let dead_letters = store
        .delete_dead_push_copies_before(
            before(retention.dead_letters),
            store::oidc::OIDC_SWEEP_BATCH,
            store::oidc::OIDC_SWEEP_MAX_BATCHES,
        )
        .await?;
    Ok(SweepReport {
        follow_waits,
        scan_logins,
        oidc_rows,
        push_nonces,
        push_replies,
        received_pushes,
        signing_keys,
        dead_letters,
    })
}

/// Counts the logins abandoned on the follow page (their wait expired, no follow) as failed
/// logins, deleting their waits (so [`sweep`] does not count them again); returns how many.
pub async fn count_abandoned_logins(
    gw: &Gateway,
    now: i64,
    retention: &Retention,
) -> Result<usize, GatewayError> {
    let cutoff = now.saturating_sub(ms(retention.expired_oidc_grace));
    let abandoned = gw.store.delete_abandoned_follow_waits(cutoff).await?;
    for (account_id, website) in &abandoned {
        // Only follow-required logins have a follow page.
        gw.stats.login_failed(
            account_id,
            store::oidc::LoginMode::FollowRequired.as_str(),
            website,
            stats::LoginFailure::NotFollowing,
        );
    }
    Ok(abandoned.len())
}

/// Runs [`count_abandoned_logins`] and [`sweep`] every [`SWEEP_INTERVAL`] with the gateway's store and injected clock, until
/// the returned task is aborted. A failed sweep is logged and retried at the next tick.
pub fn spawn(gateway: Arc<Gateway>, retention: Retention) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = count_abandoned_logins(&gateway, gateway.now(), &retention).await {
                tracing::warn!(%error, "counting abandoned logins failed");
            }
            match sweep(&gateway.store, gateway.now(), &retention).await {
                Ok(report) => tracing::debug!(?report, "gateway sweep"),
                Err(error) => tracing::warn!(%error, "gateway sweep failed"),
            }
        }
    })
}
