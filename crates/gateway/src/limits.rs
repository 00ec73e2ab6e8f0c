//! Limits on what anonymous visitors can make wxhub spend of an account's WeChat quotas.
//!
//! Besides WeChat's quotas, the requests anyone can send that write to the database are
//! limited here too: every `/authorize` stores a pending login, and a `/token` request of a
//! public client (no secret to check first) opens a write transaction to redeem its code. Both
//! are limited per client IP and per account, so a flood from one address stops at its own
//! allowance and a flood on one account cannot crowd out the others' logins and token
//! write-backs.
//!
//! Two kinds:
//! - per login, in the database, so every replica shares them: how often one follow wait may
//!   re-check `user/info` ("I've followed", see [`crate::login::follow_continue`]);
//! - per client IP (and, for QR codes, per browser), in each replica's memory, with
//!   `governor`'s GCRA over the hub's injectable clock. With several replicas a client gets
//!   each replica's allowance, which still bounds a script to a few calls a minute. The
//!   client IP is the connection's peer address (`ConnectInfo`), as for the dashboard's
//!   sign-in limits; the server puts the `X-Forwarded-For` client there for requests from a
//!   configured trusted proxy, otherwise all clients behind a proxy share its allowance.

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
    /// Calls allowed at once.
    pub burst: u32,
    /// One more call is allowed every this long.
    pub every: Duration,
}

/// The gateway's limits. The defaults are generous for people and tight for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLimits {
    /// "I've followed" re-checks of one follow wait: at most this many.
    pub follow_rechecks_per_wait: u32,
    /// …and not closer together than this.
    pub follow_recheck_interval: Duration,
    /// "I've followed" re-checks from one client IP, all waits together.
    pub follow_rechecks_per_ip: Rate,
    /// QR codes created for one browser (its login cookie): the scan page's first code and
    /// each refresh, and the follow page's code. Each spends one of the account's 100 000
    /// daily `qrcode/create` calls (docs/wechat-2.md §1.2).
    pub qr_creates_per_browser: Rate,
    /// QR codes created for one client IP, all browsers together.
    pub qr_creates_per_ip: Rate,
    /// Logins started (`/authorize`, each storing a pending login) from one client IP.
    pub authorize_per_ip: Rate,
    /// Logins started at one account, all clients together.
    pub authorize_per_account: Rate,
    /// `/token` requests without a client secret (public clients, whose code redemption is
    /// the first thing checked) from one client IP.
    pub public_token_per_ip: Rate,
    /// …at one account, all clients together.
    pub public_token_per_account: Rate,
    /// How often a waiting scan page's event stream re-reads its login when no announcement
    /// woke it: the bound on how long a lost notification delays a page, and the rate of
    /// database reads per waiting page ([`crate::events`]).
    pub scan_page_poll: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            // A person presses a few times; the subscribe push is the normal path.
            follow_rechecks_per_wait: 10,
            follow_recheck_interval: Duration::from_secs(5),
            // An office behind one address logs several people in at once.
            follow_rechecks_per_ip: Rate {
                burst: 20,
                every: Duration::from_secs(30),
            },
            // A person refreshes an expired code now and then.
            qr_creates_per_browser: Rate {
                burst: 5,
                every: Duration::from_secs(60),
            },
            qr_creates_per_ip: Rate {
                burst: 30,
                every: Duration::from_secs(10),
            },
            // An office or a school behind one address starts many logins at once; a script
            // gets 30, then one every 2 s.
            authorize_per_ip: Rate {
                burst: 30,
                every: Duration::from_secs(2),
            },
            // 50 a second a replica, sustained, for the busiest account; a flood on one
            // account writes at most that many pending logins.
            authorize_per_account: Rate {
                burst: 500,
                every: Duration::from_millis(20),
            },
            // A public client redeems one code per login.
            public_token_per_ip: Rate {
                burst: 30,
                every: Duration::from_secs(2),
            },
            public_token_per_account: Rate {
                burst: 500,
                every: Duration::from_millis(20),
            },
            scan_page_poll: Duration::from_secs(2),
        }
    }
}

/// The key a client IP is limited under: the address itself, or for IPv6 its /64, which one
/// subscriber usually gets whole (so a host cannot rotate through addresses of its own
/// network to escape its limit).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
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

fn quota(rate: Rate) -> Quota {
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(rate.every.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

/// A keyed in-memory limiter that forgets full buckets now and then, so a flood of keys does
/// not grow its map without bound.
pub(crate) struct Limiter<K: std::hash::Hash + Eq + Clone> {
    keyed: Keyed<K>,
    clock: HubClock,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(rate: Rate, clock: SharedClock) -> Self {
        let clock = HubClock(clock);
        Limiter {
            keyed: RateLimiter::hashmap_with_clock(quota(rate), clock.clone()),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one cell for `key`; `Err` with how long to wait when the bucket is empty.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.keyed.retain_recent();
        }
        let now = self.clock.now();
        self.keyed
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

/// The in-memory limiters of one replica.
pub(crate) struct Limiters {
    pub(crate) config: GatewayLimits,
    pub(crate) follow_rechecks_per_ip: Limiter<IpAddr>,
    qr_creates_per_browser: Limiter<String>,
    qr_creates_per_ip: Limiter<IpAddr>,
    authorize_per_ip: Limiter<IpAddr>,
    authorize_per_account: Limiter<String>,
    public_token_per_ip: Limiter<IpAddr>,
    public_token_per_account: Limiter<String>,
}

impl Limiters {
    pub(crate) fn new(config: GatewayLimits, clock: SharedClock) -> Self {
        Limiters {
            follow_rechecks_per_ip: Limiter::new(config.follow_rechecks_per_ip, clock.clone()),
            qr_creates_per_browser: Limiter::new(config.qr_creates_per_browser, clock.clone()),
            qr_creates_per_ip: Limiter::new(config.qr_creates_per_ip, clock.clone()),
            authorize_per_ip: Limiter::new(config.authorize_per_ip, clock.clone()),
            authorize_per_account: Limiter::new(config.authorize_per_account, clock.clone()),
            public_token_per_ip: Limiter::new(config.public_token_per_ip, clock.clone()),
            public_token_per_account: Limiter::new(config.public_token_per_account, clock),
            config,
        }
    }

    /// Takes one login start for `ip` and the account `appid`; `Err` with how long to wait.
    pub(crate) fn authorize(&self, ip: Option<IpAddr>, appid: &str) -> Result<(), Duration> {
        // The address first: a script over its own limit does not spend the account's.
        if let Some(ip) = ip {
            self.authorize_per_ip.check(&client_key(ip))?;
        }
        self.authorize_per_account.check(&appid.to_owned())
    }

    /// Takes one secret-less `/token` request for `ip` and the account `appid`.
    pub(crate) fn public_token(&self, ip: Option<IpAddr>, appid: &str) -> Result<(), Duration> {
        if let Some(ip) = ip {
            self.public_token_per_ip.check(&client_key(ip))?;
        }
        self.public_token_per_account.check(&appid.to_owned())
    }

    /// Takes one QR creation for the browser whose binding hash is `browser` and for `ip`;
    /// `Err` with how long to wait.
    pub(crate) fn qr_create(&self, browser: &str, ip: Option<IpAddr>) -> Result<(), Duration> {
        // The browser first: a browser over its own limit does not spend its address's.
        self.qr_creates_per_browser.check(&browser.to_owned())?;
        match ip {
            Some(ip) => self.qr_creates_per_ip.check(&ip),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wechat::ManualClock;

    use super::*;

    #[test]
    fn a_key_is_limited_alone_and_refills_with_time() {
        let clock = ManualClock::new(1_000_000);
        let limiter = Limiter::new(
            Rate {
                burst: 2,
                every: Duration::from_secs(30),
            },
            Arc::new(clock.clone()),
        );
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        assert!(limiter.check(&a).is_ok() && limiter.check(&a).is_ok());
        assert_eq!(limiter.check(&a), Err(Duration::from_secs(30)));
        assert!(limiter.check(&b).is_ok());
        clock.advance(Duration::from_secs(30));
        assert!(limiter.check(&a).is_ok());
        assert!(limiter.check(&a).is_err());
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(one), client_key(other_host));
        assert_ne!(client_key(one), client_key(other_net));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }

    #[test]
    fn login_starts_are_limited_per_address_then_per_account() {
        let clock = ManualClock::new(1_000_000);
        let limits = Limiters::new(
            GatewayLimits {
                authorize_per_ip: Rate {
                    burst: 2,
                    every: Duration::from_secs(2),
                },
                authorize_per_account: Rate {
                    burst: 3,
                    every: Duration::from_secs(1),
                },
                ..GatewayLimits::default()
            },
            Arc::new(clock.clone()),
        );
        let (a, b) = (
            Some(IpAddr::from([192, 0, 2, 1])),
            Some(IpAddr::from([192, 0, 2, 2])),
        );
        assert!(limits.authorize(a, "wx1").is_ok() && limits.authorize(a, "wx1").is_ok());
        assert_eq!(limits.authorize(a, "wx1"), Err(Duration::from_secs(2)));
        // The refused one did not spend the account's: b gets its last one.
        assert!(limits.authorize(b, "wx1").is_ok());
        assert_eq!(limits.authorize(b, "wx1"), Err(Duration::from_secs(1)));
        let c = Some(IpAddr::from([192, 0, 2, 3]));
        assert!(limits.authorize(c, "wx2").is_ok(), "other accounts go on");
        assert_eq!(limits.authorize(c, "wx1"), Err(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(2));
        assert!(limits.authorize(c, "wx1").is_ok(), "both refilled");
    }
}
