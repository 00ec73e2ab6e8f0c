//! The refresh engine: leases, single flight, the per-account state machine, write-back with
//! a fence, and the background tasks (due loop, PostgreSQL listener, periodic reload).
//!
//! One refresh, whatever triggered it (schedule, first use, rejected report):
//!
//! 1. take the account's in-process mutex (single flight) and re-check memory;
//! 2. claim the lease, bump the fence and take one unit of today's upstream budget in one
//!    conditional UPDATE (`claim_token_refresh`), which also returns the sealed AppSecret — no
//!    claim, no WeChat call;
//! 3. re-check the claimed row: another replica may have refreshed between our look and our
//!    claim (WxJava #1222: no double-check after the lock → two fetches); if so adopt its token
//!    and give the lease and the budget unit back;
//! 4. unwrap the DEK once, decrypt the AppSecret, call WeChat — outside any transaction;
//! 5. write back fenced: a success stores the sealed token and the next refresh time; a
//!    failure records the state machine's next state. A lapsed lease makes the write fail
//!    (`StaleFence`) and the result is dropped;
//! 6. update the cache; on PostgreSQL the write-back statement itself NOTIFYs the replicas.
//!
//! State machine (`core_tokens.state`): pending → healthy on the first success; healthy →
//! healthy on each scheduled refresh; any → retrying on a transient error (-1, 45011, 5xx,
//! timeouts, connection errors; exponential backoff with full jitter, landing before expiry);
//! any → needs_attention on a credential/configuration error (hourly retry, at once after
//! `credentials_changed`); any → quota_exhausted on 45009 or an exhausted daily budget (until
//! 00:00 Asia/Shanghai). In every failed state a still-valid token keeps being served.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use store::StoreError;
use store::accounts::{AccountState, TokenMode};
use store::tokens::{ClaimedRefresh, RefreshFailure, RefreshedToken, TokenCacheRow, TokenState};
use tokio::task::{JoinHandle, JoinSet};
use wechat::{AccessToken, AppSecret, ErrCode, ErrorClass, WechatError};

use crate::cache::{CurrentToken, Entry};
use crate::policy::ms;
use crate::{TokenError, TokenService};

/// Something the engine did, for tests and metrics. Carries ids and numbers, never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// This replica claimed an account's lease (about to call WeChat).
    LeaseClaimed { account_id: String, generation: i64 },
    /// A new token was stored under `generation`.
    Refreshed { account_id: String, generation: i64 },
    /// A refresh failed; the account is now in `state`.
    Failed {
        account_id: String,
        state: TokenState,
        code: Option<i64>,
    },
    /// A write-back lost its fence: the lease lapsed and another replica owns the refresh.
    StaleWrite { account_id: String, generation: i64 },
    /// The cache took a token written by another replica (notification or reload).
    Adopted { account_id: String, generation: i64 },
}

/// What one [`TokenService::run_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Accounts found due.
    pub due: usize,
    /// New tokens stored.
    pub refreshed: usize,
    /// Failed attempts recorded.
    pub failed: usize,
    /// Accounts skipped: lease held elsewhere, refresh already in flight here, or refreshed by
    /// another replica meanwhile.
    pub skipped: usize,
}

/// What the engine needs to know of an account to refresh it (from the cache).
struct AccountFacts {
    appid: String,
    mode: TokenMode,
    account_state: AccountState,
}

/// Why a refresh was asked for.
#[derive(Debug)]
enum Reason {
    Scheduled,
    Missing,
    /// A backend reported the cached token as rejected (the caller checked, under the
    /// account's flight mutex, that it is still the cached one).
    Rejected,
}

/// How a refresh attempt ended.
#[derive(Debug)]
enum Outcome {
    Refreshed,
    Failed,
    /// Nothing to do: memory or the row already had what was needed.
    Unneeded,
    /// Another replica holds the lease.
    Busy,
    /// Our write lost the fence.
    Stale,
}

/// Background tasks of a [`TokenService`]; dropping this stops them.
#[derive(Debug)]
pub struct BackgroundTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn failure_text(error: &WechatError) -> (TokenState, Option<i64>, String, Option<String>) {
    let code = error.code().map(|c| c.0);
    match error.class() {
        ErrorClass::Transient | ErrorClass::Unknown | ErrorClass::TokenRejected => (
            TokenState::Retrying,
            code,
            format!("WeChat did not issue a token ({error}); retrying with backoff"),
            None,
        ),
        ErrorClass::Quota => (
            TokenState::QuotaExhausted,
            code,
            "WeChat's daily quota for fetching the access_token is used up (45009). wxhub waits \
             for the daily reset at 00:00 Asia/Shanghai; to recover sooner, reset the API quota \
             in the WeChat console (开发 → 接口权限 / clear_quota, 10 resets a month)"
                .to_owned(),
            None,
        ),
        ErrorClass::Credential | ErrorClass::Request | ErrorClass::Permission => {
            let ip = error.caller_ip().map(|ip| ip.to_string());
            let reason = match (error.code().unwrap_or(ErrCode(0)), &ip) {
                (ErrCode::IP_NOT_IN_WHITELIST, Some(ip)) => format!(
                    "WeChat refused the token call from IP {ip} (40164, not in the whitelist): \
                     add {ip} to the IP whitelist in the WeChat console (开发 → 基本配置 → \
                     IP白名单)"
                ),
                (ErrCode::IP_NOT_IN_WHITELIST, None) => "WeChat refused the token call because \
                     this server's IP is not in the whitelist (40164): add the server's egress \
                     IP to the IP whitelist in the WeChat console (开发 → 基本配置 → IP白名单)"
                    .to_owned(),
                (ErrCode::INVALID_APPSECRET, _) => "WeChat rejected the AppSecret (40125 invalid \
                     appsecret): copy or reset the AppSecret in the WeChat console (开发 → 基本配置) \
                     and update it in wxhub"
                    .to_owned(),
                (ErrCode::INVALID_APPID, _) => "WeChat does not know this AppID (40013 invalid \
                     appid): check the AppID in the WeChat console (开发 → 基本配置) and register \
                     the account again with the right one"
                    .to_owned(),
                (ErrCode::APPSECRET_FROZEN, _) => "The AppSecret is frozen by the account's \
                     administrator (40243): unfreeze it in the WeChat console (开发 → 基本配置)"
                    .to_owned(),
                (ErrCode(89501), _) | (ErrCode(89503), _) => "WeChat wants the account \
                     administrator to confirm calls from this server's IP (89501/89503): confirm \
                     it in WeChat, or add the IP to the IP whitelist in the WeChat console"
                    .to_owned(),
                (ErrCode(89506), _) | (ErrCode(89507), _) => "The account administrator \
                     rejected calls from this server's IP (89506/89507): add the IP to the IP \
                     whitelist in the WeChat console"
                    .to_owned(),
                (code, _) => format!(
                    "WeChat refused to issue a token (errcode {}): {error}; check the account's \
                     settings in the WeChat console",
                    code.0
                ),
            };
            (TokenState::NeedsAttention, code, reason, ip)
        }
    }
}

impl TokenService {
    fn flight(&self, account_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(account_id.to_owned())
            .or_default()
            .clone()
    }

    fn emit(&self, event: EngineEvent) {
        let _ = self.inner.events.send(event);
    }

    fn jitter<T>(&self, f: impl FnOnce(&mut rand::rngs::StdRng) -> T) -> T {
        let mut rng = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut rng)
    }

    /// Processes every refresh due at the clock's current time and returns when all are done
    /// (bounded by [`crate::SchedulerConfig::concurrency`]). The background loop calls this;
    /// tests call it after moving a `ManualClock` instead of sleeping.
    ///
    /// The due list is read a page at a time, and the next page is read as soon as the last
    /// account of the current one has started — not after the whole page finished — so the
    /// permits stay busy across pages instead of draining at each page's end.
    pub async fn run_due(&self) -> Result<RunReport, TokenError> {
        const PAGE: u32 = 1000;
        let mut report = RunReport::default();
        let mut seen = HashSet::new();
        let mut set = JoinSet::new();
        loop {
            let now = self.inner.clock.now_ms();
            let due = self.inner.store.list_due_refreshes(now, PAGE).await?;
            let fresh: Vec<String> = due
                .into_iter()
                .map(|d| d.account_id)
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if fresh.is_empty() {
                // Nothing new (what is listed is already running here): once the running ones
                // are done, look once more — a refresh that failed early is due again only
                // after its backoff, so this ends.
                if set.is_empty() {
                    break;
                }
                while let Some(joined) = set.join_next().await {
                    Self::tally(&mut report, joined);
                }
                continue;
            }
            report.due += fresh.len();
            for account_id in fresh {
                // Wait for a permit while collecting finished refreshes.
                let permit = loop {
                    tokio::select! {
                        permit = self.inner.permits.clone().acquire_owned() => {
                            break permit.expect("the semaphore is never closed");
                        }
                        Some(joined) = set.join_next() => Self::tally(&mut report, joined),
                    }
                };
                let service = self.clone();
                set.spawn(async move {
                    let outcome = service.refresh_scheduled(&account_id).await;
                    drop(permit);
                    (account_id, outcome)
                });
            }
        }
        Ok(report)
    }

    fn tally(
        report: &mut RunReport,
        joined: Result<(String, Result<Outcome, TokenError>), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((_, Ok(Outcome::Refreshed))) => report.refreshed += 1,
            Ok((_, Ok(Outcome::Failed))) => report.failed += 1,
            Ok((_, Ok(_))) => report.skipped += 1,
            Ok((account_id, Err(error))) => {
                report.failed += 1;
                tracing::error!(%account_id, %error, "token refresh failed inside wxhub");
            }
            Err(join) => {
                report.failed += 1;
                tracing::error!(error = %join, "token refresh task failed");
            }
        }
    }

    async fn refresh_scheduled(&self, account_id: &str) -> Result<Outcome, TokenError> {
        let flight = self.flight(account_id);
        // A refresh of this account is already running here (a rejected report): skip.
        let Ok(_guard) = flight.try_lock() else {
            return Ok(Outcome::Busy);
        };
        self.refresh_locked(account_id, Reason::Scheduled).await
    }

    /// First token, or a cached token that expired while healthy: fetch (single flight) and
    /// wait, bounded.
    pub(crate) async fn fetch_missing(&self, account_id: &str) -> Result<CurrentToken, TokenError> {
        let wait = self.inner.config.first_token_wait;
        let work = async {
            let entry = match self.inner.cache.get(account_id) {
                Some(entry) => entry,
                None => {
                    self.reload_account(account_id).await?;
                    self.inner
                        .cache
                        .get(account_id)
                        .ok_or(TokenError::UnknownAccount)?
                }
            };
            if let Some(token) = self.cached(account_id) {
                return Ok(token);
            }
            self.unavailable_unless_fetchable(&entry)?;
            let mut changes = self.inner.cache.subscribe();
            loop {
                let outcome = {
                    let flight = self.flight(account_id);
                    let _guard = flight.lock().await;
                    if let Some(token) = self.cached(account_id) {
                        return Ok(token);
                    }
                    self.refresh_locked(account_id, Reason::Missing).await?
                };
                if let Some(token) = self.cached(account_id) {
                    return Ok(token);
                }
                if let Some(entry) = self.inner.cache.get(account_id) {
                    self.unavailable_unless_fetchable(&entry)?;
                }
                if matches!(outcome, Outcome::Busy | Outcome::Stale) {
                    // Another replica is fetching: wait for its token to reach the cache
                    // (notification) or for its lease to lapse.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
                    self.reload_account(account_id).await?;
                } else {
                    return Err(TokenError::Pending);
                }
            }
        };
        match tokio::time::timeout(wait, work).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Pending),
        }
    }

    fn unavailable_unless_fetchable(&self, entry: &Entry) -> Result<(), TokenError> {
        if entry.account_state != AccountState::Active {
            return Err(TokenError::AccountDisabled);
        }
        match entry.state {
            TokenState::Pending | TokenState::Healthy => Ok(()),
            state => Err(TokenError::Unavailable {
                state,
                code: entry.error_code,
                reason: entry
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no valid token".to_owned()),
                retry_at: None,
            }),
        }
    }

    pub(crate) async fn refresh_rejected(
        &self,
        account_id: &str,
        rejected: &AccessToken,
    ) -> Result<CurrentToken, TokenError> {
        let is_current = |svc: &Self| {
            svc.inner
                .cache
                .get(account_id)
                .and_then(|e| e.token.clone())
                .is_some_and(|t| t.access_token == *rejected)
        };
        if self.inner.cache.get(account_id).is_none() {
            self.reload_account(account_id).await?;
        }
        if !is_current(self) {
            return self.current(account_id).await;
        }
        let wait = self.inner.config.first_token_wait;
        let mut changes = self.inner.cache.subscribe();
        let work = async {
            loop {
                let outcome = {
                    let flight = self.flight(account_id);
                    let _guard = flight.lock().await;
                    // Compare-and-swap: while we waited, someone may have replaced it.
                    if !is_current(self) {
                        None
                    } else {
                        Some(self.refresh_locked(account_id, Reason::Rejected).await?)
                    }
                };
                match outcome {
                    None | Some(Outcome::Refreshed | Outcome::Unneeded) => {
                        if !is_current(self)
                            && let Some(token) = self.cached(account_id)
                        {
                            return Ok(token);
                        }
                        let entry = self
                            .inner
                            .cache
                            .get(account_id)
                            .ok_or(TokenError::UnknownAccount)?;
                        return Err(TokenError::Unavailable {
                            state: entry.state,
                            code: entry.error_code,
                            reason: entry.reason.clone().unwrap_or_else(|| {
                                "the rejected token is still the newest wxhub has".to_owned()
                            }),
                            retry_at: None,
                        });
                    }
                    Some(Outcome::Failed) => {
                        let entry = self
                            .inner
                            .cache
                            .get(account_id)
                            .ok_or(TokenError::UnknownAccount)?;
                        return Err(TokenError::Unavailable {
                            state: entry.state,
                            code: entry.error_code,
                            reason: entry
                                .reason
                                .clone()
                                .unwrap_or_else(|| "the refresh failed".to_owned()),
                            retry_at: None,
                        });
                    }
                    Some(Outcome::Busy | Outcome::Stale) => {
                        let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed())
                            .await;
                        self.reload_account(account_id).await?;
                    }
                }
            }
        };
        match tokio::time::timeout(wait, work).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Pending),
        }
    }

    /// Steps 2–6 of the module doc, with the account's flight mutex held by the caller.
    async fn refresh_locked(
        &self,
        account_id: &str,
        reason: Reason,
    ) -> Result<Outcome, TokenError> {
        let inner = &self.inner;
        let policy = &inner.config.policy;
        let now = inner.clock.now_ms();
        let lease_until = now + ms(inner.config.lease);
        let day = policy.quota_day(now);
        // One statement: the lease, the fence and one unit of today's budget.
        let Some(claimed) = inner
            .store
            .claim_token_refresh(
                account_id,
                &inner.config.holder,
                now,
                lease_until,
                day,
                policy.daily_budget,
            )
            .await?
        else {
            return Ok(Outcome::Busy);
        };
        let generation = claimed.generation;
        let budget_taken = claimed.budget_taken;
        self.emit(EngineEvent::LeaseClaimed {
            account_id: account_id.to_owned(),
            generation,
        });
        let mut called = false;
        let result = self
            .refresh_with_lease(account_id, claimed, now, reason, &mut called)
            .await;
        if !matches!(
            result,
            Ok(Outcome::Refreshed | Outcome::Failed | Outcome::Stale)
        ) {
            // Nothing was written back: give the lease back so nobody waits for it to lapse,
            // and the budget unit too if WeChat was not called after all.
            let released = if budget_taken && !called {
                inner
                    .store
                    .release_token_lease_unused(account_id, generation, day)
                    .await
            } else {
                inner
                    .store
                    .release_token_lease(account_id, generation)
                    .await
            };
            if let Err(error) = released {
                tracing::warn!(%account_id, %error, "could not release a token lease; it will lapse");
            }
        }
        result
    }

    async fn refresh_with_lease(
        &self,
        account_id: &str,
        claimed: ClaimedRefresh,
        now: i64,
        reason: Reason,
        called: &mut bool,
    ) -> Result<Outcome, TokenError> {
        let inner = &self.inner;
        let policy = &inner.config.policy;
        let generation = claimed.generation;
        let cached = inner.cache.get(account_id);
        let account = match &cached {
            Some(entry) => AccountFacts {
                appid: entry.appid.clone(),
                mode: entry.mode,
                account_state: entry.account_state,
            },
            None => {
                let row = inner
                    .store
                    .get_token_cache_row(account_id)
                    .await?
                    .ok_or(TokenError::UnknownAccount)?;
                AccountFacts {
                    appid: row.appid,
                    mode: row.token_mode,
                    account_state: row.account_state,
                }
            }
        };
        if account.account_state != AccountState::Active {
            self.reload_account(account_id).await?;
            return Ok(Outcome::Unneeded);
        }
        // Step 3: re-check the claimed row under the lease.
        let row_valid_until = claimed.expires_at.filter(|&e| e > now);
        let recheck = match &reason {
            Reason::Scheduled => claimed.next_refresh_at > now,
            Reason::Missing => row_valid_until.is_some(),
            // The caller checked that the rejected token is the cached one; the row holds
            // another token if it was issued at another time.
            Reason::Rejected => {
                cached
                    .as_ref()
                    .and_then(|e| e.token.as_ref())
                    .map(|t| t.issued_at)
                    != claimed.issued_at
                    && claimed.issued_at.is_some()
            }
        };
        if recheck {
            self.reload_account(account_id).await?;
            return Ok(Outcome::Unneeded);
        }
        if let Reason::Rejected = reason
            && let Some(issued) = claimed.issued_at
            && now - issued < ms(policy.rejected_min_age)
        {
            return Err(TokenError::RateLimited {
                retry_at: issued + ms(policy.rejected_min_age),
            });
        }
        let valid_until = row_valid_until;

        // Step 4: the budget (taken by the claim), then the call.
        if !claimed.budget_taken {
            let failure = RefreshFailure {
                state: TokenState::QuotaExhausted,
                error_code: None,
                error_message: format!(
                    "wxhub's budget of {} token calls per day for this account is used up; the \
                     next attempt is after 00:00 Asia/Shanghai",
                    policy.daily_budget
                ),
                error_ip: None,
                next_refresh_at: policy.next_quota_reset(now),
            };
            return self
                .write_failure(account_id, generation, failure, now)
                .await;
        }
        // The DEK is unwrapped once per refresh: it opens the AppSecret now and seals the new
        // token afterwards (both zeroized on drop).
        let vault = inner.vault.for_wrapped_dek(&claimed.wrapped_dek);
        let dek = vault::WrappedDek::from_bytes(claimed.wrapped_dek)
            .and_then(|wrapped| vault.unwrap_dek(account_id, &wrapped))
            .map_err(accounts::AccountError::from)?;
        let secret = {
            let plain = dek
                .decrypt_string(
                    account_id,
                    accounts::registry::FIELD_APPSECRET,
                    &claimed.appsecret,
                )
                .map_err(accounts::AccountError::from)?;
            AppSecret::new(plain.expose())
        };
        let force = match (&reason, account.mode) {
            (Reason::Rejected, TokenMode::StableToken) => {
                let day = policy.quota_day(now);
                inner
                    .store
                    .take_stable_force(
                        account_id,
                        day,
                        now,
                        ms(policy.stable_force_min_interval),
                        policy.stable_force_daily_limit,
                    )
                    .await?
            }
            _ => false,
        };
        let called_at = inner.clock.now_ms();
        *called = true;
        let response = match account.mode {
            TokenMode::Token => inner.client.get_token(&account.appid, &secret).await,
            TokenMode::StableToken => {
                inner
                    .client
                    .get_stable_token(&account.appid, &secret, force)
                    .await
            }
        };
        drop(secret);

        // Step 5: write back under the fence.
        let done = inner.clock.now_ms();
        match response {
            Ok(token) => {
                // Lifetime counted from before the call: never later than WeChat's own clock.
                let issued_at = called_at;
                let expires_at = called_at + token.expires_in.max(0) * 1000;
                let next_refresh_at = self
                    .jitter(|rng| policy.next_refresh_at(account.mode, issued_at, expires_at, rng));
                let ciphertext = dek.encrypt(
                    account_id,
                    accounts::registry::FIELD_CORE_TOKEN,
                    token.access_token.expose().as_bytes(),
                );
                drop(dek);
                let refreshed = RefreshedToken {
                    token: ciphertext,
                    issued_at,
                    expires_at,
                    next_refresh_at: next_refresh_at.max(done + 1),
                };
                // Fenced, and on PostgreSQL it also NOTIFYs the other replicas.
                match inner
                    .store
                    .store_refreshed_token(account_id, generation, &refreshed, done)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::StaleFence { .. }) => {
                        tracing::warn!(%account_id, generation, "token refresh lost its lease; result dropped");
                        self.emit(EngineEvent::StaleWrite {
                            account_id: account_id.to_owned(),
                            generation,
                        });
                        return Ok(Outcome::Stale);
                    }
                    Err(error) => return Err(error.into()),
                }
                self.inner.cache.put(
                    account_id,
                    Entry::new(
                        account.appid,
                        account.mode,
                        account.account_state,
                        Some(CurrentToken {
                            access_token: token.access_token,
                            issued_at,
                            expires_at,
                            generation,
                        }),
                        TokenState::Healthy,
                        None,
                        None,
                    ),
                );
                tracing::info!(%account_id, generation, expires_at, next_refresh_at, "core token refreshed");
                self.emit(EngineEvent::Refreshed {
                    account_id: account_id.to_owned(),
                    generation,
                });
                Ok(Outcome::Refreshed)
            }
            Err(error) => {
                let (state, code, message, ip) = failure_text(&error);
                let next_refresh_at = match state {
                    TokenState::Retrying => {
                        let failures = claimed.failure_count + 1;
                        self.jitter(|rng| {
                            policy.transient_retry_at(done, failures, valid_until, rng)
                        })
                    }
                    TokenState::QuotaExhausted => policy.next_quota_reset(done),
                    _ => done + ms(policy.attention_retry),
                };
                tracing::warn!(%account_id, ?state, code, next_refresh_at, "core token refresh failed: {message}");
                let failure = RefreshFailure {
                    state,
                    error_code: code,
                    error_message: message,
                    error_ip: ip,
                    next_refresh_at,
                };
                self.write_failure(account_id, generation, failure, done)
                    .await
            }
        }
    }

    async fn write_failure(
        &self,
        account_id: &str,
        generation: i64,
        failure: RefreshFailure,
        now: i64,
    ) -> Result<Outcome, TokenError> {
        match self
            .inner
            .store
            .record_refresh_failure(account_id, generation, &failure, now)
            .await
        {
            Ok(_) => {}
            Err(StoreError::StaleFence { .. }) => {
                self.emit(EngineEvent::StaleWrite {
                    account_id: account_id.to_owned(),
                    generation,
                });
                return Ok(Outcome::Stale);
            }
            Err(error) => return Err(error.into()),
        }
        self.inner.cache.set_state(
            account_id,
            failure.state,
            failure.error_code,
            Some(failure.error_message),
        );
        self.emit(EngineEvent::Failed {
            account_id: account_id.to_owned(),
            state: failure.state,
            code: failure.error_code,
        });
        Ok(Outcome::Failed)
    }

    fn open_row_token(&self, row: &TokenCacheRow) -> Result<Option<CurrentToken>, TokenError> {
        let (Some(ciphertext), Some(issued_at), Some(expires_at)) =
            (&row.token, row.issued_at, row.expires_at)
        else {
            return Ok(None);
        };
        let vault = self.inner.vault.for_wrapped_dek(&row.wrapped_dek);
        let access_token =
            accounts::open_core_token(&vault, &row.account_id, &row.wrapped_dek, ciphertext)?;
        Ok(Some(CurrentToken {
            access_token,
            issued_at,
            expires_at,
            generation: row.generation,
        }))
    }

    /// Puts a database row into the cache (decrypting its token).
    fn put_row(&self, row: &TokenCacheRow) -> Result<(), TokenError> {
        // The cached token keeps the generation it was first seen with (a failed claim bumps
        // the row's generation without changing the token).
        let mut token = self.open_row_token(row)?;
        if let (Some(token), Some(old)) = (
            token.as_mut(),
            self.inner
                .cache
                .get(&row.account_id)
                .and_then(|e| e.token.clone()),
        ) && old.access_token == token.access_token
        {
            token.generation = old.generation;
        }
        let adopted = token.as_ref().map(|t| t.generation);
        let changed = self
            .inner
            .cache
            .get(&row.account_id)
            .map(|e| e.token.as_ref().map(|t| t.generation))
            != Some(adopted);
        self.inner.cache.put(
            &row.account_id,
            Entry::new(
                row.appid.clone(),
                row.token_mode,
                row.account_state,
                token,
                row.state,
                row.last_error_code,
                row.last_error_message.clone(),
            ),
        );
        if changed && let Some(generation) = adopted {
            self.emit(EngineEvent::Adopted {
                account_id: row.account_id.clone(),
                generation,
            });
        }
        Ok(())
    }

    /// Reloads one account's row into the cache (after a notification, or on a cache miss).
    pub async fn reload_account(&self, account_id: &str) -> Result<(), TokenError> {
        match self.inner.store.get_token_cache_row(account_id).await? {
            Some(row) => self.put_row(&row),
            None => Err(TokenError::UnknownAccount),
        }
    }

    /// Reloads every account's row into the cache: at start-up, and periodically as the
    /// fallback for lost notifications. Rows whose token the cache already holds are not
    /// decrypted again.
    pub async fn reload_all(&self) -> Result<usize, TokenError> {
        let mut after: Option<String> = None;
        let mut count = 0;
        loop {
            let page = self
                .inner
                .store
                .list_token_cache_rows(after.as_deref(), 1000)
                .await?;
            for row in &page {
                let unchanged = self.inner.cache.get(&row.account_id).is_some_and(|e| {
                    e.state == row.state
                        && e.account_state == row.account_state
                        && e.token.as_ref().map(|t| (t.issued_at, t.expires_at))
                            == row.issued_at.zip(row.expires_at)
                });
                if !unchanged && let Err(error) = self.put_row(row) {
                    tracing::error!(account_id = %row.account_id, %error, "cannot load an account's token");
                }
                count += 1;
            }
            if page.len() < 1000 {
                return Ok(count);
            }
            after = page.last().map(|r| r.account_id.clone());
        }
    }

    /// Starts all background tasks: the due loop (sleeping on a tokio timer until the next due
    /// refresh by the injected clock, at most `poll_interval`, woken early by
    /// [`TokenService::wake`]) and the tasks of [`TokenService::listen`]. Dropping the returned
    /// value stops them.
    pub async fn start(&self) -> Result<BackgroundTasks, TokenError> {
        let mut tasks = self.listen().await?;
        let service = self.clone();
        tasks
            .tasks
            .push(tokio::spawn(async move { service.due_loop().await }));
        Ok(tasks)
    }

    /// Starts only the cache-keeping tasks: the PostgreSQL listener for other replicas'
    /// refreshes and the periodic full reload (the fallback for lost notifications). Tests that
    /// drive refreshes with [`TokenService::run_due`] use this instead of
    /// [`TokenService::start`].
    pub async fn listen(&self) -> Result<BackgroundTasks, TokenError> {
        let mut tasks = Vec::new();
        if let Some(mut listener) = self.inner.store.listen_token_refreshes().await? {
            let service = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(account_id) => {
                            if let Err(error) = service.reload_account(&account_id).await {
                                tracing::warn!(%account_id, %error, "cannot reload an announced token");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "token notification listener failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            // Announcements sent while the connection was down are lost:
                            // catch up now rather than at the next periodic reload.
                            if let Err(error) = service.reload_all().await {
                                tracing::warn!(%error, "token cache reload after a listener failure failed");
                            }
                        }
                    }
                }
            }));
        }
        let service = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(service.inner.config.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(error) = service.reload_all().await {
                    tracing::warn!(%error, "periodic token cache reload failed");
                }
            }
        }));
        Ok(BackgroundTasks { tasks })
    }

    async fn due_loop(&self) {
        let poll = self.inner.config.poll_interval;
        loop {
            if let Err(error) = self.run_due().await {
                tracing::error!(%error, "token scheduler pass failed");
            }
            let sleep = match self.inner.store.earliest_refresh_due().await {
                Ok(Some(due)) => {
                    let wait = due - self.inner.clock.now_ms();
                    Duration::from_millis(u64::try_from(wait.max(10)).unwrap_or(0)).min(poll)
                }
                Ok(None) => poll,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the next due refresh");
                    poll
                }
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.inner.wake.notified() => {}
            }
        }
    }
}
