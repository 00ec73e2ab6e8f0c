//! How often the token API looks up API keys it has never verified.
//!
//! A key in the verification cache costs no database access; a key the cache has never seen
//! costs a read. Anyone can send well-formed keys, so those lookups are limited per client IP
//! and per account (the appid in the path), in this replica's memory with `governor`'s GCRA
//! over the hub's injectable clock. Keys verified before on this replica skip the limit, so a
//! flood of fake keys on an account does not lock out its real backends. The client IP is the
//! connection's peer address (`ConnectInfo`; the server puts the `X-Forwarded-For` client
//! there for a configured trusted proxy).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use wechat::SharedClock;

/// A bucket's size and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Lookups allowed at once.
    pub burst: u32,
    /// One more is allowed every this long.
    pub every: Duration,
}

/// Unknown-key lookups one client IP may make: a backend starting up checks each of its keys
/// once; a script guessing keys gets 20, then one a second.
pub const DEFAULT_UNKNOWN_KEYS_PER_IP: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(1),
};

/// Unknown-key lookups at one account, all clients together: 20 a second, sustained.
pub const DEFAULT_UNKNOWN_KEYS_PER_ACCOUNT: Rate = Rate {
    burst: 200,
    every: Duration::from_millis(50),
};

#[derive(Clone)]
struct HubClock(SharedClock);

impl Clock for HubClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, HubClock, NoOpMiddleware<Duration>>;

/// A keyed limiter that forgets full buckets now and then, so a flood of keys does not grow
/// its map without bound.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    keyed: Keyed<K>,
    clock: HubClock,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(rate: Rate, clock: SharedClock) -> Self {
        let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.every.max(Duration::from_millis(1)))
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let clock = HubClock(clock);
        Limiter {
            keyed: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.keyed.retain_recent();
        }
        let now = self.clock.now();
        self.keyed
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

/// The key an address is limited under: IPv6 by its /64 (one subscriber's network).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The unknown-key lookup limits of one replica.
pub(crate) struct KeyLookups {
    per_ip: Limiter<IpAddr>,
    per_account: Limiter<String>,
}

impl KeyLookups {
    pub(crate) fn new(per_ip: Rate, per_account: Rate, clock: SharedClock) -> Self {
        KeyLookups {
            per_ip: Limiter::new(per_ip, clock.clone()),
            per_account: Limiter::new(per_account, clock),
        }
    }

    /// Takes one lookup for `ip` at `appid`; `Err` with how long to wait.
    pub(crate) fn check(&self, ip: Option<IpAddr>, appid: &str) -> Result<(), Duration> {
        // The address first: a script over its own limit does not spend the account's.
        if let Some(ip) = ip {
            self.per_ip.check(&client_key(ip))?;
        }
        self.per_account.check(&appid.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wechat::ManualClock;

    use super::*;

    #[test]
    fn lookups_are_limited_per_address_then_per_account_and_refill() {
        let clock = ManualClock::new(1_000_000);
        let lookups = KeyLookups::new(
            Rate {
                burst: 2,
                every: Duration::from_secs(1),
            },
            Rate {
                burst: 3,
                every: Duration::from_secs(5),
            },
            Arc::new(clock.clone()),
        );
        let a = Some(IpAddr::from([198, 51, 100, 1]));
        let b = Some(IpAddr::from([198, 51, 100, 2]));
        assert!(lookups.check(a, "wx1").is_ok() && lookups.check(a, "wx1").is_ok());
        assert_eq!(lookups.check(a, "wx1"), Err(Duration::from_secs(1)));
        assert!(lookups.check(b, "wx1").is_ok());
        assert_eq!(lookups.check(b, "wx1"), Err(Duration::from_secs(5)));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let same_net: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(client_key(v6), client_key(same_net));
        clock.advance(Duration::from_secs(5));
        assert!(lookups.check(b, "wx1").is_ok());
    }
}
