//! Refresh: claim the lease (with the fence and the budget unit), re-check the claimed row,
//! call WeChat outside any transaction, and write the result back under the fence (steps 2–6
//! of the engine's module doc). The caller holds the account's flight mutex.

use store::StoreError;
use store::accounts::{AccountState, TokenMode};
use store::tokens::{ClaimedRefresh, RefreshFailure, RefreshedToken, TokenState};
use wechat::{AccessToken, AppSecret};

use super::failure::failure_text;
use super::{EngineEvent, Outcome, Reason};
use crate::cache::{CurrentToken, Entry};
use crate::policy::ms;
use crate::{TokenError, TokenService};

/// What the engine needs to know of an account to refresh it (from the cache).
struct AccountFacts {
    appid: String,
    mode: TokenMode,
    account_state: AccountState,
}

impl TokenService {
    /// Steps 2–6 of the module doc, with the account's flight mutex held by the caller.
    pub(super) async fn refresh_locked(
        &self,
        account_id: &str,
        reason: Reason,
    ) -> Result<Outcome, TokenError> {
        let inner = &self.inner;
        // Held until the write-back is done; refused once shutdown began (before any claim).
        let Some(_inflight) = inner.inflight.enter() else {
            return Ok(Outcome::Stopping);
        };
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
        let hook = inner
            .after_claim
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(account_id).await;
        }
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
                appid: entry.appid(),
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
        // The DEK is unwrapped once per refresh: it opens the claimed row's token (to re-check
        // a report) and the AppSecret, and seals the new token afterwards (zeroized on drop).
        let vault = inner.vault.for_wrapped_dek(&claimed.wrapped_dek);
        let dek = vault::WrappedDek::from_bytes(claimed.wrapped_dek)
            .and_then(|wrapped| vault.unwrap_dek(account_id, &wrapped))
            .map_err(accounts::AccountError::from)?;
        // Step 3: re-check the claimed row under the lease.
        let row_valid_until = claimed.expires_at.filter(|&e| e > now);
        let recheck = match &reason {
            Reason::Scheduled => claimed.next_refresh_at > now,
            Reason::Missing => row_valid_until.is_some(),
            // Against the token in the claimed row, never the cache: another replica's
            // notification may have put its new token into the cache since the caller saw the
            // reported one there, and the cache would then agree with the row and hide that
            // the reported token was already replaced.
            Reason::Rejected { reported } => match &claimed.token {
                Some(ciphertext) => {
                    let current = dek
                        .decrypt_string(
                            account_id,
                            accounts::registry::FIELD_CORE_TOKEN,
                            ciphertext,
                        )
                        .map_err(accounts::AccountError::from)?;
                    AccessToken::new(current.expose()) != *reported
                }
                None => false,
            },
        };
        if recheck {
            self.reload_account(account_id).await?;
            return Ok(Outcome::Unneeded);
        }
        // The row holds the reported token: its age decides.
        if let Reason::Rejected { .. } = reason
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
            (Reason::Rejected { .. }, TokenMode::StableToken) => {
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
                let stored = match inner
                    .store
                    .store_refreshed_token(account_id, generation, &refreshed, done)
                    .await
                {
                    Ok(()) => true,
                    Err(StoreError::StaleFence { .. }) => {
                        tracing::warn!(%account_id, generation, "token refresh lost its lease; result dropped");
                        self.emit(EngineEvent::StaleWrite {
                            account_id: account_id.to_owned(),
                            generation,
                        });
                        return Ok(Outcome::Stale);
                    }
                    Err(error) => {
                        // WeChat has already superseded the old token: dropping this one would
                        // leave the account without a working token. Serve it from memory and
                        // keep trying to store it.
                        self.defer_write_back(account_id, generation, refreshed, &error);
                        false
                    }
                };
                self.inner.cache.put(
                    account_id,
                    Entry::new(
                        &account.appid,
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
                inner.config.stats.token_refreshed(account_id);
                self.note_success(done).await;
                if stored {
                    tracing::info!(%account_id, generation, expires_at, next_refresh_at, "core token refreshed");
                    self.emit(EngineEvent::Refreshed {
                        account_id: account_id.to_owned(),
                        generation,
                    });
                }
                Ok(Outcome::Refreshed)
            }
            Err(error) => {
                let (state, code, message, ip) = failure_text(&error);
                inner.config.stats.token_refresh_failed(account_id, code);
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
                let outcome = self
                    .write_failure(account_id, generation, failure, done)
                    .await;
                if state == TokenState::Retrying {
                    self.note_transient_failure(done);
                }
                outcome
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
}
