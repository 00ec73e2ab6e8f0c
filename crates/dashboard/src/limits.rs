//! Sign-in rate limits: per client IP and per account (the email typed, whether or not
//! anyone has it, so a refusal says nothing about who exists), with `governor`'s GCRA over
//! the hub's injectable clock.
//!
//! Each password attempt and each TOTP code takes one cell from both buckets. The limits are
//! kept in memory by each replica: with several replicas an attacker gets each replica's
//! allowance, which still bounds guessing to a few attempts a minute per account.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use wechat::SharedClock;

/// One bucket's size and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Attempts allowed at once.
    pub burst: u32,
    /// One more attempt is allowed every this long.
    pub every: Duration,
}

/// The limits of sign-in attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitConfig {
    pub per_ip: Limit,
    pub per_account: Limit,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            // An office behind one address signs in many people.
            per_ip: Limit {
                burst: 30,
                every: Duration::from_secs(10),
            },
            // A person mistyping a few times is never stopped; a guesser gets one try a
            // minute once the burst is spent.
            per_account: Limit {
                burst: 10,
                every: Duration::from_secs(60),
            },
        }
    }
}

/// The hub's clock as governor's.
#[derive(Clone)]
struct HubClock(SharedClock);

impl Clock for HubClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, HubClock, NoOpMiddleware<Duration>>;

/// Both buckets.
pub struct SignInLimits {
    per_ip: Keyed<IpAddr>,
    per_account: Keyed<String>,
    clock: HubClock,
    checks: AtomicU64,
}

fn quota(limit: Limit) -> Quota {
    let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(limit.every.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

impl SignInLimits {
    pub(crate) fn new(config: &LimitConfig, clock: SharedClock) -> Self {
        let clock = HubClock(clock);
        Self {
            per_ip: RateLimiter::hashmap_with_clock(quota(config.per_ip), clock.clone()),
            per_account: RateLimiter::hashmap_with_clock(quota(config.per_account), clock.clone()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one attempt for `ip` and `account` (an email, lower-cased); `Err` with how long
    /// to wait when either bucket is empty.
    pub fn attempt(&self, ip: Option<IpAddr>, account: &str) -> Result<(), Duration> {
        // Forget keys whose buckets are full again, now and then, so a flood of made-up
        // emails does not grow the maps without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.per_ip.retain_recent();
            self.per_account.retain_recent();
        }
        let now = self.clock.now();
        if let Some(ip) = ip {
            self.per_ip
                .check_key(&ip)
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        self.per_account
            .check_key(&account.trim().to_lowercase())
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wechat::ManualClock;

    use super::*;

    #[test]
    fn an_account_is_limited_whatever_the_ip_and_refills_with_time() {
        let clock = ManualClock::new(1_000_000);
        let limits = SignInLimits::new(
            &LimitConfig {
                per_ip: Limit {
                    burst: 100,
                    every: Duration::from_secs(1),
                },
                per_account: Limit {
                    burst: 3,
                    every: Duration::from_secs(60),
                },
            },
            Arc::new(clock.clone()),
        );
        for n in 0..3u8 {
            let ip = IpAddr::from([192, 0, 2, n]);
            assert!(limits.attempt(Some(ip), "A@example.com").is_ok());
        }
        let wait = limits.attempt(None, "a@EXAMPLE.com").unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert!(limits.attempt(None, "b@example.com").is_ok());
        clock.advance(Duration::from_secs(60));
        assert!(limits.attempt(None, "a@example.com").is_ok());
        assert!(limits.attempt(None, "a@example.com").is_err());
    }
}
