//! WeChat's token endpoint down for every account, and back.
//!
//! Each account backs off on its own ([`RefreshPolicy::transient_retry_at`]: full jitter up to
//! `retry_cap`, 5 min). That keeps an hour-long outage to about 25 calls per account, but on
//! its own it lets the last account wait up to 5 min after WeChat answers again. Two
//! engine-wide rules shorten the recovery without adding a herd:
//!
//! - **Probe.** Once `outage_streak` transient failures in a row (any accounts, no success
//!   between) spanning `outage_after` make the outage plain, some account whose token has already expired is always
//!   due within `outage_probe_interval`: the soonest such retry is moved forward when it lies
//!   further out. The probe is one of that account's own retries, taken earlier — a real token
//!   call, counted in its budget — and only accounts that have used less than half of today's
//!   budget are probed, so a long outage cannot spend an account's day. Accounts whose token
//!   still lives keep their backoff, which already lands before their expiry.
//! - **Recovery.** The first success after an outage moves every account that failed during
//!   it to a moment drawn in `[now, now + recovery_spread)`, each its own, so they come back
//!   spread out (and the engine's concurrency bound holds anyway).
//!
//! Both moves are single statements on the shared `core_tokens` rows, so on several replicas
//! whichever notices first acts for all (the others find nothing left to move), and the
//! others' due loops pick the moved rows up at their next poll.
//!
//! The cost, stated: at most one probe per interval per replica that sees failures (they
//! coincide on the same soonest row), about 80 calls an hour for the whole engine at most; with
//! many accounts the accounts' own retries already come more often and the probe moves nothing.

use std::sync::{Mutex, PoisonError};

use crate::TokenService;
use crate::policy::{RefreshPolicy, ms};

/// The engine's view of WeChat's token endpoint, from its own refreshes' outcomes.
#[derive(Debug, Default)]
pub(crate) struct UpstreamHealth {
    state: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    /// Transient failures since the last success.
    streak: u32,
    /// When the first of them happened.
    streak_since: i64,
    /// Set once the streak reached `outage_streak`: when the outage began.
    outage_since: Option<i64>,
    /// When a probe was last arranged.
    probed_at: Option<i64>,
}

impl UpstreamHealth {
    /// Counts a transient failure at `now`.
    fn failed(&self, now: i64, policy: &RefreshPolicy) {
        let mut health = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if health.streak == 0 {
            health.streak_since = now;
        }
        health.streak = health.streak.saturating_add(1);
        if health.outage_since.is_none()
            && health.streak >= policy.outage_streak.max(1)
            && now - health.streak_since >= ms(policy.outage_after)
        {
            health.outage_since = Some(health.streak_since);
            tracing::warn!(
                failures = health.streak,
                "WeChat's token endpoint is failing for every account; probing it until it answers"
            );
        }
    }

    /// Whether a pass ending at `now` should arrange a probe: during an outage, at most once a
    /// second (several passes may end at the same moment).
    fn probe_due(&self, now: i64) -> bool {
        let mut health = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if health.outage_since.is_none() || health.probed_at.is_some_and(|at| now - at < 1_000) {
            return false;
        }
        health.probed_at = Some(now);
        true
    }

    /// Counts a success; returns when the outage it ends began, if there was one.
    fn succeeded(&self) -> Option<i64> {
        let mut health = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = health.outage_since.take();
        *health = Health::default();
        ended
    }
}

impl TokenService {
    /// Counts a transient refresh failure at `now`.
    pub(super) fn note_transient_failure(&self, now: i64) {
        self.inner.upstream.failed(now, &self.inner.config.policy);
    }

    /// At the end of a due pass during an outage: make sure an account without a live token
    /// is tried within the probe interval. Checked once a pass rather than after each failure,
    /// so a million failing accounts cost one statement a pass, and a pass ends at least every
    /// `poll_interval`, so the probe is never late by more than that.
    pub(super) async fn arrange_probe(&self) {
        let now = self.inner.clock.now_ms();
        if !self.inner.upstream.probe_due(now) {
            return;
        }
        let policy = &self.inner.config.policy;
        let interval = ms(policy.outage_probe_interval).max(2);
        let probe_at =
            now + self.jitter(|rng| rand::RngExt::random_range(rng, interval / 2..=interval));
        match self
            .inner
            .store
            .hasten_soonest_dead_retry(
                now,
                probe_at,
                policy.quota_day(now),
                (policy.daily_budget / 2).max(1),
            )
            .await
        {
            Ok(true) => {
                tracing::debug!(
                    probe_at,
                    "an expired account's retry moved forward to probe WeChat"
                );
                self.inner.wake.notify_one();
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot arrange a probe of WeChat's token endpoint")
            }
        }
    }

    /// After a successful refresh at `now`: if it ends an outage, retry the accounts that
    /// failed during it, spread over the recovery spread.
    pub(super) async fn note_success(&self, now: i64) {
        let Some(since) = self.inner.upstream.succeeded() else {
            return;
        };
        let spread = ms(self.inner.config.policy.recovery_spread);
        match self
            .inner
            .store
            .hasten_retries_since(now, spread, since)
            .await
        {
            Ok(moved) => {
                tracing::info!(
                    moved,
                    outage_ms = now - since,
                    "WeChat's token endpoint answers again; retrying the accounts that failed"
                );
                self.inner.wake.notify_one();
            }
            Err(error) => tracing::warn!(%error, "cannot move retries forward after an outage"),
        }
    }
}
