//! The refresh policy: when to refresh, how to back off, what each failure means.
//!
//! Pure functions of the clock's `now` and a random source, so tests pin both. Nothing here
//! performs I/O.
//!
//! - A `/cgi-bin/token` token is refreshed once 75–85 % of its lifetime has passed (uniform
//!   jitter, so accounts created together spread out), while the old token still works for the
//!   remaining 15–25 % (~18–30 min of 7200 s) — time for retries (docs/wechat.md §10.3).
//! - A `stable_token` token cannot be renewed early without `force_refresh` (docs/wechat.md §2: a normal
//!   call returns the same token until its last 300 s), so it is refreshed inside that window.
//! - Transient failures back off exponentially with full jitter, capped so that the retry still
//!   lands before the current token expires.
//! - When every account fails (WeChat's token endpoint is down), one account whose token has
//!   expired is probed at least every 45 s, and the first success retries the others within
//!   30 s: recovery does not wait for each backoff (crates/scheduler/src/engine/outage.rs).
//! - Credential/configuration failures wait `attention_retry` (hourly) — a person must act.
//! - 45009 waits for the next daily reset at 00:00 Asia/Shanghai (docs/wechat.md §1, §12 item 1).

use std::time::Duration;

use rand::RngExt;
use store::accounts::TokenMode;
use wechat::clock::{CHINA_UTC_OFFSET_SECS, day_index, next_day_start};

/// How the engine schedules refreshes and retries. Every field has a default that suits
/// WeChat's documented limits.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Earliest refresh point as a fraction of the token's lifetime (default 0.75).
    pub refresh_from: f64,
    /// Latest refresh point as a fraction of the token's lifetime (default 0.85).
    pub refresh_to: f64,
    /// Stable-token mode: WeChat rotates a stable token only in its last 300 s (docs/wechat.md §2), so
    /// the refresh is scheduled this long before expiry (default 300 s)…
    pub stable_window: Duration,
    /// …minus a random part of up to this much (default 60 s), leaving retries room.
    pub stable_jitter: Duration,
    /// First transient-retry delay bound (default 2 s); doubles per consecutive failure.
    pub retry_base: Duration,
    /// Largest transient-retry delay (default 5 min).
    pub retry_cap: Duration,
    /// Transient retries are scheduled at least this long before the current token expires
    /// (default 60 s).
    pub expiry_margin: Duration,
    /// Delay before retrying a credential/configuration failure (default 1 h).
    pub attention_retry: Duration,
    /// Transient failures in a row, across all accounts and with no success between, that
    /// make the engine treat WeChat's token endpoint as down (default 3; see
    /// `engine::outage`)…
    pub outage_streak: u32,
    /// …once they span at least this long (default 30 s): scattered failures among many
    /// successful refreshes are no outage.
    pub outage_after: Duration,
    /// During an outage, some account whose token has expired is tried at least this often
    /// (default 45 s, jittered down to half), so WeChat's recovery is noticed soon.
    pub outage_probe_interval: Duration,
    /// After an outage, the accounts that failed during it are retried spread over this long
    /// (default 30 s) instead of each waiting out its backoff.
    pub recovery_spread: Duration,
    /// Upstream token calls wxhub allows itself per account per day, failed ones included
    /// (default 200, a tenth of WeChat's 2000). Never exceeded, across all replicas.
    pub daily_budget: i64,
    /// A backend's "token rejected" report forces a refresh only if the current token is at
    /// least this old (default 30 s), so a misbehaving backend cannot burn the quota.
    pub rejected_min_age: Duration,
    /// Stable-token force refreshes per day (docs/wechat.md §2: 20).
    pub stable_force_daily_limit: i64,
    /// Minimum spacing of stable-token force refreshes (docs/wechat.md §2: 30 s).
    pub stable_force_min_interval: Duration,
    /// Offset east of UTC of the time zone whose midnight resets WeChat's daily quotas (UTC+8).
    pub quota_utc_offset_secs: i64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_from: 0.75,
            refresh_to: 0.85,
            stable_window: Duration::from_secs(300),
            stable_jitter: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(300),
            expiry_margin: Duration::from_secs(60),
            attention_retry: Duration::from_secs(3600),
            outage_streak: 3,
            outage_after: Duration::from_secs(30),
            outage_probe_interval: Duration::from_secs(45),
            recovery_spread: Duration::from_secs(30),
            daily_budget: 200,
            rejected_min_age: Duration::from_secs(30),
            stable_force_daily_limit: 20,
            stable_force_min_interval: Duration::from_secs(30),
            quota_utc_offset_secs: CHINA_UTC_OFFSET_SECS,
        }
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RefreshPolicy {
    /// When to refresh a token fetched at `issued_at` that expires at `expires_at`.
    pub fn next_refresh_at(
        &self,
        mode: TokenMode,
        issued_at: i64,
        expires_at: i64,
        rng: &mut impl rand::Rng,
    ) -> i64 {
        let lifetime = (expires_at - issued_at).max(0);
        match mode {
            TokenMode::Token => {
                let from = self.refresh_from.clamp(0.0, 1.0);
                let to = self.refresh_to.clamp(from, 1.0);
                let fraction = if to > from {
                    rng.random_range(from..to)
                } else {
                    from
                };
                issued_at + (lifetime as f64 * fraction) as i64
            }
            TokenMode::StableToken => {
                let jitter = rng.random_range(0..=ms(self.stable_jitter).max(0));
                let at = expires_at - ms(self.stable_window) + jitter;
                // A short-lived answer (WeChat returned the token with little life left):
                // refresh at the same proportion as above rather than in the past.
                at.max(issued_at + lifetime / 2)
            }
        }
    }

    /// Delay before retry number `failures` (1 = first retry) after a transient failure at
    /// `now`: full jitter over an exponential bound, at least 1 s, and — while a token is still
    /// valid — early enough to land `expiry_margin` before it expires.
    pub fn transient_retry_at(
        &self,
        now: i64,
        failures: i64,
        valid_until: Option<i64>,
        rng: &mut impl rand::Rng,
    ) -> i64 {
        let exp = failures.clamp(1, 30) - 1;
        let bound = ms(self.retry_base)
            .saturating_mul(1_i64 << exp)
            .min(ms(self.retry_cap))
            .max(1_000);
        let mut delay = rng.random_range(1_000..=bound);
        if let Some(until) = valid_until {
            let room = until - ms(self.expiry_margin) - now;
            if room > 0 {
                delay = delay.min(room.max(1_000));
            }
        }
        now + delay
    }

    /// The quota day `now` falls in.
    pub fn quota_day(&self, now: i64) -> i64 {
        day_index(now, self.quota_utc_offset_secs)
    }

    /// The next daily quota reset after `now`.
    pub fn next_quota_reset(&self, now: i64) -> i64 {
        next_day_start(now, self.quota_utc_offset_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T0: i64 = 1_768_449_600_000;
    const LIFE: i64 = 7_200_000;

    #[test]
    fn token_mode_refreshes_between_75_and_85_percent() {
        let policy = RefreshPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let at = policy.next_refresh_at(TokenMode::Token, T0, T0 + LIFE, &mut rng);
            assert!((T0 + 5_400_000..T0 + 6_120_000).contains(&at), "{at}");
            seen.push(at);
        }
        seen.sort_unstable();
        // Jitter really spreads: the spread covers most of the window.
        assert!(seen[999] - seen[0] > 600_000);
    }

    #[test]
    fn stable_mode_refreshes_in_the_last_five_minutes() {
        let policy = RefreshPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let at = policy.next_refresh_at(TokenMode::StableToken, T0, T0 + LIFE, &mut rng);
            assert!(
                (T0 + LIFE - 300_000..=T0 + LIFE - 240_000).contains(&at),
                "{at}"
            );
        }
    }

    #[test]
    fn transient_retries_grow_and_land_before_expiry() {
        let policy = RefreshPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        for failures in 1..20 {
            let at = policy.transient_retry_at(T0, failures, None, &mut rng);
            assert!(
                (T0 + 1_000..=T0 + 300_000).contains(&at),
                "{failures}: {at}"
            );
        }
        // Two minutes of validity left: the retry comes before the last minute.
        for failures in 1..20 {
            let at = policy.transient_retry_at(T0, failures, Some(T0 + 120_000), &mut rng);
            assert!(at <= T0 + 60_000, "{at}");
        }
    }

    #[test]
    fn quota_resets_at_midnight_in_shanghai() {
        let policy = RefreshPolicy::default();
        // T0 is 12:00 in Shanghai; the reset is 12 h later.
        assert_eq!(policy.next_quota_reset(T0), T0 + 12 * 3_600_000);
        assert_eq!(
            policy.quota_day(T0) + 1,
            policy.quota_day(T0 + 12 * 3_600_000)
        );
    }
}
