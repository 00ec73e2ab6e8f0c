//! The core-token scheduler, the token API and the WeChat API proxy.
//!
//! WeChat's core access_token is the one thing every backend of an Official Account needs and
//! the one thing they must never fetch themselves: each `/cgi-bin/token` call supersedes the
//! previous token (it dies 300 s later) and counts against a 2000/day quota, so independent
//! fetchers invalidate each other (40001) and exhaust the quota (45009) — the most common
//! complaint in every WeChat SDK's tracker (docs/wechat.md §10.1). This crate makes wxhub the only
//! fetcher: it refreshes each account's token once per window, across any number of replicas,
//! and hands it out.
//!
//! - [`TokenService`]: the handle everything else uses. [`TokenService::current`] serves from
//!   memory; [`TokenService::report_rejected`] is the compare-and-swap refresh for a token a
//!   backend saw rejected; [`TokenService::run_due`] processes every refresh due at the
//!   clock's current time (the background loop calls it; tests call it after moving a
//!   `ManualClock`); [`TokenService::start`] runs the background tasks.
//! - [`router`]: the token API and the proxy under `/api/v1/accounts/{appid}/…`, plus
//!   `/api/v1/openapi.json`.
//! - [`policy`]: when to refresh and how to back off; [`apikey`]: key generation and hashing.
//!
//! It must never log, return in an error, or store in clear a token, an AppSecret or an API
//! key; never hold a database transaction across a WeChat call; and never call WeChat for an
//! account without holding its lease.

mod api;
pub mod apikey;
mod cache;
mod changes;
mod engine;
pub mod fuzzing;
pub mod limits;
pub mod policy;
mod proxy;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use accounts::VaultHandle;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use store::Store;
use store::tokens::TokenState;
use tokio::sync::{Notify, Semaphore, broadcast};
use wechat::SharedClock;

pub use api::router;
pub use cache::CurrentToken;
pub use engine::{BackgroundTasks, EngineEvent, ReportOutcome, Reported, RunReport};
pub use policy::RefreshPolicy;

/// Settings of a [`TokenService`]. `Default` suits production.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// When to refresh and how to retry.
    pub policy: RefreshPolicy,
    /// This replica's name in lease rows (default: a fresh UUIDv7 per process, so a restarted
    /// process never mistakes an old lease for its own).
    pub holder: String,
    /// How long a claimed lease lasts (default 60 s). Must exceed the WeChat client's timeout,
    /// so a holder whose lease lapsed has given up on its call.
    pub lease: Duration,
    /// Refreshes in flight at once in this process (default 64).
    pub concurrency: usize,
    /// Longest sleep of the background loop (default 5 s): it also notices accounts added and
    /// rescheduled by other processes.
    pub poll_interval: Duration,
    /// Full cache reload from the database, the fallback for lost notifications (default 5 min).
    pub reload_interval: Duration,
    /// How long [`TokenService::current`] waits for an account's first token (real time,
    /// default 10 s).
    pub first_token_wait: Duration,
    /// How long a verified API key is trusted without asking the database (by the injected
    /// clock, default 10 s).
    pub api_key_cache_ttl: Duration,
    /// Largest request body the proxy accepts (default 2 MiB); larger → 413.
    pub max_proxy_body: usize,
    /// Timeout of a proxied WeChat call (default 30 s).
    pub proxy_timeout: Duration,
    /// Seed of the jitter RNG (default: random). Tests pin it.
    pub rng_seed: Option<u64>,
    /// Rejected-token reports one API key may have confirmed with WeChat per hour, per
    /// replica (default 60); more answer [`TokenError::ReportsCapped`]. Reports answered
    /// without asking WeChat (a stale token, a token WeChat just accepted) do not count.
    pub reports_per_key_per_hour: u32,
    /// How long WeChat's acceptance of a reported token is trusted, so a burst of reports of
    /// a working token asks WeChat once (by the injected clock, default 10 s).
    pub accepted_report_memo: Duration,
    /// First delay before retrying to store a fetched token whose write-back failed (real
    /// time, default 500 ms; doubling up to 30 s). The token is served from memory meanwhile.
    pub write_retry: Duration,
    /// How long [`BackgroundTasks::shutdown`] lets refreshes in flight finish (real time,
    /// default 10 s: the WeChat client's timeout, so a call in flight can end either way).
    pub shutdown_grace: Duration,
    /// Where refreshes, token reads per API key and proxy calls are counted (default:
    /// disabled).
    pub stats: stats::Stats,
    /// Database lookups of never-verified API keys one client IP may cause
    /// ([`limits`]; more answer 429).
    pub unknown_keys_per_ip: limits::Rate,
    /// …and one account, all clients together.
    pub unknown_keys_per_account: limits::Rate,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            policy: RefreshPolicy::default(),
            holder: format!("wxhub-{}", uuid::Uuid::now_v7()),
            lease: Duration::from_secs(60),
            concurrency: 64,
            poll_interval: Duration::from_secs(5),
            reload_interval: Duration::from_secs(300),
            first_token_wait: Duration::from_secs(10),
            api_key_cache_ttl: Duration::from_secs(10),
            max_proxy_body: 2 * 1024 * 1024,
            proxy_timeout: Duration::from_secs(30),
            rng_seed: None,
            shutdown_grace: Duration::from_secs(10),
            write_retry: Duration::from_millis(500),
            reports_per_key_per_hour: 60,
            accepted_report_memo: Duration::from_secs(10),
            stats: stats::Stats::disabled(),
            unknown_keys_per_ip: limits::DEFAULT_UNKNOWN_KEYS_PER_IP,
            unknown_keys_per_account: limits::DEFAULT_UNKNOWN_KEYS_PER_ACCOUNT,
        }
    }
}

/// What can go wrong getting a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No such account (or not visible to the caller).
    #[error("unknown account")]
    UnknownAccount,
    /// The account is disabled: wxhub neither refreshes nor serves its token.
    #[error("the account is disabled")]
    AccountDisabled,
    /// No valid token, and the scheduler knows why (needs attention, quota exhausted,
    /// retrying). `reason` is for the account's owner and holds no secret.
    #[error("no valid token ({state}): {reason}")]
    Unavailable {
        /// Where the account's token stands.
        state: TokenState,
        /// WeChat's errcode of the last failure, if any.
        code: Option<i64>,
        /// What went wrong and how to fix it.
        reason: String,
        /// When the scheduler tries next (Unix ms).
        retry_at: Option<i64>,
    },
    /// A rejected-token report arrived for a token younger than the policy's minimum age.
    #[error("the current token was fetched moments ago; not refreshing again yet")]
    RateLimited {
        /// When a report would be honoured (Unix ms).
        retry_at: i64,
    },
    /// This API key had [`SchedulerConfig::reports_per_key_per_hour`] reports confirmed with
    /// WeChat within the last hour; this one was not acted on.
    #[error("this API key reported more than {limit} rejected tokens in an hour")]
    ReportsCapped {
        /// The hourly cap.
        limit: u32,
        /// When a report would be honoured (Unix ms).
        retry_at: i64,
    },
    /// The first token did not arrive in time.
    #[error("no token yet; the first fetch is still in progress")]
    Pending,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The vault refused (a key missing from the keyring).
    #[error(transparent)]
    Vault(#[from] accounts::AccountError),
    /// The proxy's HTTP client could not be built (TLS backend, system configuration).
    #[error("cannot build the proxy's HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

/// The scheduler and token cache of one replica. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    vault: Arc<VaultHandle>,
    client: wechat::Client,
    clock: SharedClock,
    config: SchedulerConfig,
    api_base: url::Url,
    proxy_http: reqwest::Client,
    cache: cache::TokenCache,
    keys: apikey::KeyCache,
    /// Limits on looking up keys the cache has never seen.
    key_lookups: limits::KeyLookups,
    /// One async mutex per account: single flight inside this process.
    flights: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    permits: Arc<Semaphore>,
    wake: Notify,
    events: broadcast::Sender<EngineEvent>,
    rng: Mutex<StdRng>,
    /// Per-key report counts and tokens WeChat just accepted.
    reports: engine::ReportLedger,
    /// Accounts whose fetched token is served from memory while its write is retried.
    deferred_writes: Mutex<std::collections::HashSet<String>>,
    /// Refreshes in flight, and whether new ones may start (cooperative shutdown).
    inflight: engine::InFlight,
    /// Test only: see [`TokenService::set_after_claim_hook`].
    after_claim: std::sync::RwLock<Option<AfterClaimHook>>,
    /// When the background loop last made progress (a pass finished, or a refresh of a pass
    /// ended), by the injected clock; 0: the loop has not run.
    progress_at: std::sync::atomic::AtomicI64,
    /// What this engine's refreshes say about WeChat's token endpoint (outage and recovery).
    upstream: engine::UpstreamHealth,
}

/// A test hook run after each lease claim: see [`TokenService::set_after_claim_hook`].
#[doc(hidden)]
pub type AfterClaimHook =
    Arc<dyn Fn(&str) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("holder", &self.inner.config.holder)
            .field("accounts", &self.inner.cache.len())
            .finish()
    }
}

impl TokenService {
    /// Builds the service and fills its cache from the database: tokens that are still valid
    /// are served as they are, so a restart makes no upstream call. Starts nothing; call
    /// [`TokenService::start`] for the background loop (or drive it with
    /// [`TokenService::run_due`]).
    ///
    /// `client` is the WeChat client (its `api_base` is also where the proxy forwards).
    pub async fn open(
        store: Store,
        vault: Arc<VaultHandle>,
        client: wechat::Client,
        clock: SharedClock,
        config: SchedulerConfig,
    ) -> Result<Self, TokenError> {
        let seed = config
            .rng_seed
            .unwrap_or_else(|| rand::rng().random::<u64>());
        let proxy_http = reqwest::Client::builder()
            .timeout(config.proxy_timeout)
            // Never follow a redirect: it could carry the access_token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TokenError::HttpClient(e.without_url()))?;
        let key_lookups = limits::KeyLookups::new(
            config.unknown_keys_per_ip,
            config.unknown_keys_per_account,
            clock.clone(),
        );
        let service = Self {
            inner: Arc::new(Inner {
                api_base: client.config().api_base.clone(),
                store,
                vault,
                client,
                clock,
                permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
                key_lookups,
                config,
                proxy_http,
                cache: cache::TokenCache::new(),
                keys: apikey::KeyCache::default(),
                flights: Mutex::new(std::collections::HashMap::new()),
                wake: Notify::new(),
                events: broadcast::channel(4096).0,
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                after_claim: std::sync::RwLock::new(None),
                inflight: engine::InFlight::new(),
                reports: engine::ReportLedger::default(),
                deferred_writes: Mutex::new(std::collections::HashSet::new()),
                progress_at: std::sync::atomic::AtomicI64::new(0),
                upstream: engine::UpstreamHealth::default(),
            }),
        };
        service.reload_all().await?;
        Ok(service)
    }

    /// The configuration in use.
    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.config
    }

    /// The store it uses.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Engine events (lease claims, refreshes, failures, stale writes, cache updates), for
    /// tests and metrics. Lagging receivers lose the oldest events.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// The account id registered under `appid`, from memory (then the database).
    pub async fn account_id_for_appid(&self, appid: &str) -> Result<String, TokenError> {
        if let Some(id) = self.inner.cache.account_id_of(appid) {
            return Ok(id);
        }
        let account = self
            .inner
            .store
            .find_account_by_appid(appid)
            .await?
            .ok_or(TokenError::UnknownAccount)?;
        self.reload_account(&account.id).await?;
        Ok(account.id)
    }

    /// The account's current token, from memory. If the account has none yet (just created)
    /// or the cached one expired while healthy, asks for a fetch and waits for it, at most
    /// [`SchedulerConfig::first_token_wait`]. Never bypasses a backoff: an account in
    /// needs-attention, quota-exhausted or retrying state without a valid token answers
    /// [`TokenError::Unavailable`] with the reason.
    pub async fn current(&self, account_id: &str) -> Result<CurrentToken, TokenError> {
        if let Some(token) = self.cached(account_id) {
            return Ok(token);
        }
        self.fetch_missing(account_id).await
    }

    /// The cached token if it is still valid at the clock's time; memory only.
    pub fn cached(&self, account_id: &str) -> Option<CurrentToken> {
        let now = self.inner.clock.now_ms();
        let entry = self.inner.cache.get(account_id)?;
        if entry.account_state != store::accounts::AccountState::Active || !entry.valid_at(now) {
            return None;
        }
        entry.token()
    }

    /// The token API's JSON body for the cached token if it is still valid at `now`; memory
    /// only (the body was serialized when the token entered the cache).
    pub(crate) fn cached_json(&self, account_id: &str, now: i64) -> Option<Vec<u8>> {
        let entry = self.inner.cache.get(account_id)?;
        if entry.account_state != store::accounts::AccountState::Active || !entry.valid_at(now) {
            return None;
        }
        entry.body(now)
    }

    /// Where the account's token stands in this replica's memory: state, errcode and reason.
    pub fn status(&self, account_id: &str) -> Option<(TokenState, Option<i64>, Option<String>)> {
        self.inner
            .cache
            .get(account_id)
            .map(|e| (e.state, e.error_code, e.reason().map(str::to_owned)))
    }

    /// A backend (holding the API key `caller`, if known) says WeChat refused `rejected`
    /// (40001/40014/42001). If it is already stale, the current token is returned at once
    /// ([`ReportOutcome::AlreadyReplaced`]). If it is the current one, WeChat is asked first
    /// (`get_api_domain_ip` with that token): a token WeChat accepts is returned as it is
    /// ([`ReportOutcome::StillAccepted`]); one it rejects is refreshed — single flight in this
    /// process, one lease across replicas, at most once per
    /// [`RefreshPolicy::rejected_min_age`] — and the new token returned
    /// ([`ReportOutcome::Refreshed`]). Each question to WeChat counts against `caller`'s
    /// [`SchedulerConfig::reports_per_key_per_hour`].
    pub async fn report_rejected(
        &self,
        account_id: &str,
        rejected: &wechat::AccessToken,
        caller: Option<&str>,
    ) -> Result<Reported, TokenError> {
        self.refresh_rejected(account_id, rejected, engine::Evidence::Report { caller })
            .await
    }

    /// wxhub's own call (the proxy, the login gateway) got 40001/40014/42001 from WeChat for
    /// `rejected`: as [`TokenService::report_rejected`], but WeChat's answer is already the
    /// confirmation and no key's cap applies.
    pub async fn rejected_by_wechat(
        &self,
        account_id: &str,
        rejected: &wechat::AccessToken,
    ) -> Result<Reported, TokenError> {
        self.refresh_rejected(account_id, rejected, engine::Evidence::Observed)
            .await
    }

    /// The owner changed the account's credentials (or fixed the whitelist): an account in
    /// needs-attention state is retried at once instead of at its slow schedule.
    pub async fn credentials_changed(&self, account_id: &str) -> Result<(), TokenError> {
        let now = self.inner.clock.now_ms();
        let row = self
            .inner
            .store
            .get_core_token(account_id)
            .await?
            .ok_or(TokenError::UnknownAccount)?;
        if matches!(
            row.state,
            TokenState::NeedsAttention | TokenState::Retrying | TokenState::Pending
        ) {
            self.inner
                .store
                .reschedule_token_refresh(account_id, row.state, now, now)
                .await?;
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Wakes the background loop (after adding an account, for instance).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// When the background loop last made progress — finished a pass over the due refreshes,
    /// or ended one refresh of a long pass — by the injected clock; `None` before it first
    /// ran. A replica whose loop stopped (a hung database, a panicked task) stops moving it:
    /// `/readyz` reports that.
    pub fn last_progress(&self) -> Option<i64> {
        match self
            .inner
            .progress_at
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            at => Some(at),
        }
    }

    pub(crate) fn note_progress(&self) {
        self.inner.progress_at.store(
            self.inner.clock.now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// **Tests only; production never sets it.** Runs `hook` with the account id each time this
    /// replica has claimed a lease, before it re-checks the claimed row, so a test can change
    /// what the engine sees in between deterministically (deliver another replica's
    /// notification, say) instead of hoping for the timing. `None` removes it.
    #[doc(hidden)]
    pub fn set_after_claim_hook(&self, hook: Option<AfterClaimHook>) {
        *self
            .inner
            .after_claim
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hook;
    }
}
