//! Core access tokens: one row per account, with the refresh lease and its fence.
//!
//! Every replica runs a scheduler; the database decides which one refreshes an account.
//! The protocol:
//!
//! 1. [`Store::claim_token_refresh`] is one conditional `UPDATE … RETURNING` that takes the
//!    lease only if it is free or expired, increments `generation` and takes one unit of the
//!    day's upstream budget in the same statement (so the budget holds across replicas with no
//!    extra write), and returns the sealed AppSecret the call needs. Exactly one concurrent
//!    claimer gets a row back; it holds the lease until `lease_until` and is identified by the
//!    returned generation (the fence).
//! 2. The holder calls WeChat — outside any transaction.
//! 3. It writes the result with [`Store::store_refreshed_token`] or
//!    [`Store::record_refresh_failure`], both conditional on `generation` still being the one it
//!    got. If its lease expired and another replica claimed the account meanwhile, the
//!    generation moved and the write fails with [`StoreError::StaleFence`]: a slow holder can
//!    never overwrite a newer token.
//!
//! On PostgreSQL every statement that ends a lease — the write-backs and the releases — also
//! announces the account on [`crate::notify::TOKEN_CHANNEL`] (in the same statement, only if
//! it matched), so replicas waiting for the lease act at once rather than when it lapses.
//!
//! The token itself is vault ciphertext; the store never sees it in clear.

use std::fmt;

use crate::accounts::{AccountState, TokenMode};
use crate::db::{DbEnum, Dialect, MAX_PAGE, Sql, StoreRow, page_limit};
use crate::{Store, StoreError};

db_enum! {
    /// Where an account's core token stands.
    pub enum TokenState {
        /// Never fetched yet.
        Pending = "pending",
        /// A valid token is stored.
        Healthy = "healthy",
        /// The last attempt failed transiently; another is scheduled.
        Retrying = "retrying",
        /// Failing in a way a person must fix (wrong secret, IP not whitelisted).
        NeedsAttention = "needs_attention",
        /// WeChat's daily quota is used up; the next attempt is after the reset.
        QuotaExhausted = "quota_exhausted",
    }
}

/// An account's core-token row.
#[derive(Clone, PartialEq, Eq)]
pub struct CoreToken {
    pub account_id: String,
    /// Vault ciphertext of the access_token, once one was fetched.
    pub token: Option<Vec<u8>>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// The fence: incremented by every lease claim.
    pub generation: i64,
    pub lease_holder: Option<String>,
    pub lease_until: Option<i64>,
    pub next_refresh_at: i64,
    pub state: TokenState,
    pub last_error_code: Option<i64>,
    pub last_error_message: Option<String>,
    /// The IP WeChat reported for an IP-whitelist error (errcode 40164).
    pub last_error_ip: Option<String>,
    pub failure_count: i64,
    pub upstream_calls_today: i64,
    /// The day `upstream_calls_today` counts for.
    pub quota_day: i64,
    pub updated_at: i64,
}

impl fmt::Debug for CoreToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoreToken")
            .field("account_id", &self.account_id)
            .field("token", &self.token.as_ref().map(|_| "<ciphertext>"))
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .field("lease_holder", &self.lease_holder)
            .field("lease_until", &self.lease_until)
            .field("next_refresh_at", &self.next_refresh_at)
            .field("state", &self.state)
            .field("last_error_code", &self.last_error_code)
            .field("last_error_message", &self.last_error_message)
            .field("last_error_ip", &self.last_error_ip)
            .field("failure_count", &self.failure_count)
            .field("upstream_calls_today", &self.upstream_calls_today)
            .field("quota_day", &self.quota_day)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A freshly fetched token to store.
#[derive(Clone)]
pub struct RefreshedToken {
    /// Vault ciphertext of the access_token.
    pub token: Vec<u8>,
    pub issued_at: i64,
    pub expires_at: i64,
    /// When to refresh next (ahead of expiry, with jitter).
    pub next_refresh_at: i64,
}

impl fmt::Debug for RefreshedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshedToken")
            .field("token", &"<ciphertext>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("next_refresh_at", &self.next_refresh_at)
            .finish()
    }
}

/// A failed refresh attempt to record.
#[derive(Debug, Clone)]
pub struct RefreshFailure {
    /// `Retrying`, `NeedsAttention` or `QuotaExhausted`.
    pub state: TokenState,
    /// WeChat's errcode, if it answered with one.
    pub error_code: Option<i64>,
    /// A human-readable reason (no secrets).
    pub error_message: String,
    /// The caller IP WeChat reported, for whitelist errors.
    pub error_ip: Option<String>,
    /// When to try again.
    pub next_refresh_at: i64,
}

/// An account whose token is due for refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRefresh {
    pub account_id: String,
    pub next_refresh_at: i64,
}

macro_rules! token_columns {
    () => {
        "account_id, token, issued_at, expires_at, generation, lease_holder, lease_until, \
         next_refresh_at, state, last_error_code, last_error_message, last_error_ip, \
         failure_count, upstream_calls_today, quota_day, updated_at"
    };
}

fn token_from_row(row: &impl StoreRow) -> Result<CoreToken, sqlx::Error> {
    Ok(CoreToken {
        account_id: row.text("account_id")?,
        token: row.opt_bytes("token")?,
        issued_at: row.opt_int("issued_at")?,
        expires_at: row.opt_int("expires_at")?,
        generation: row.int("generation")?,
        lease_holder: row.opt_text("lease_holder")?,
        lease_until: row.opt_int("lease_until")?,
        next_refresh_at: row.int("next_refresh_at")?,
        state: row.enumerated("state")?,
        last_error_code: row.opt_int("last_error_code")?,
        last_error_message: row.opt_text("last_error_message")?,
        last_error_ip: row.opt_text("last_error_ip")?,
        failure_count: row.int("failure_count")?,
        upstream_calls_today: row.int("upstream_calls_today")?,
        quota_day: row.int("quota_day")?,
        updated_at: row.int("updated_at")?,
    })
}

impl Store {
    /// Stores a refreshed token and releases the lease, if `generation` is still current.
    /// Resets the failure state. On PostgreSQL the same statement announces the change to the
    /// other replicas (`pg_notify` on [`crate::notify::TOKEN_CHANNEL`] with the account id,
    /// delivered when it commits, and only if the fenced update happened): one round trip.
    ///
    /// Errors: [`StoreError::StaleFence`] if the lease was claimed again since (the caller
    /// must drop its token: a newer holder owns the refresh).
    pub async fn store_refreshed_token(
        &self,
        account_id: &str,
        generation: i64,
        token: &RefreshedToken,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET token = ?, issued_at = ?, expires_at = ?, \
                     next_refresh_at = ?, state = 'healthy', last_error_code = NULL, \
                     last_error_message = NULL, last_error_ip = NULL, failure_count = 0, \
                     lease_holder = NULL, lease_until = NULL, updated_at = ? \
                     WHERE account_id = ? AND generation = ? RETURNING account_id",
            // PostgreSQL only: the NOTIFY rides on the fenced UPDATE (no row, no notification).
            postgres: "WITH updated AS (UPDATE core_tokens SET token = $1, issued_at = $2, \
                       expires_at = $3, next_refresh_at = $4, state = 'healthy', \
                       last_error_code = NULL, last_error_message = NULL, last_error_ip = NULL, \
                       failure_count = 0, lease_holder = NULL, lease_until = NULL, \
                       updated_at = $5 WHERE account_id = $6 AND generation = $7 \
                       RETURNING account_id) \
                       SELECT updated.account_id, pg_notify($8, updated.account_id) IS NULL \
                       AS notified FROM updated",
        };
        let updated = on_backend!(self, |pool, d| {
            let mut query = sqlx::query(SQL.get(d))
                .bind(&token.token)
                .bind(token.issued_at)
                .bind(token.expires_at)
                .bind(token.next_refresh_at)
                .bind(now)
                .bind(account_id)
                .bind(generation);
            if d == Dialect::Postgres {
                query = query.bind(crate::notify::TOKEN_CHANNEL);
            }
            query.fetch_optional(pool).await?.is_some()
        });
        if !updated {
            return Err(StoreError::StaleFence {
                account_id: account_id.to_owned(),
                generation,
            });
        }
        Ok(())
    }

    /// Records a failed refresh and releases the lease, if `generation` is still current.
    /// Returns the new consecutive failure count (for backoff). On PostgreSQL the statement
    /// also announces the change, like [`Store::store_refreshed_token`]: replicas waiting for
    /// this refresh learn at once that it failed (and why) instead of at the lease's end.
    ///
    /// Errors: [`StoreError::StaleFence`] as for [`Store::store_refreshed_token`].
    pub async fn record_refresh_failure(
        &self,
        account_id: &str,
        generation: i64,
        failure: &RefreshFailure,
        now: i64,
    ) -> Result<i64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET state = ?, last_error_code = ?, \
                     last_error_message = ?, last_error_ip = ?, next_refresh_at = ?, \
                     failure_count = failure_count + 1, lease_holder = NULL, \
                     lease_until = NULL, updated_at = ? \
                     WHERE account_id = ? AND generation = ? RETURNING failure_count",
            postgres: "WITH updated AS (UPDATE core_tokens SET state = $1, last_error_code = $2, \
                       last_error_message = $3, last_error_ip = $4, next_refresh_at = $5, \
                       failure_count = failure_count + 1, lease_holder = NULL, \
                       lease_until = NULL, updated_at = $6 \
                       WHERE account_id = $7 AND generation = $8 \
                       RETURNING account_id, failure_count) \
                       SELECT updated.failure_count, \
                       pg_notify($9, updated.account_id) IS NULL AS notified FROM updated",
        };
        let count = on_backend!(self, |pool, d| {
            let mut query = sqlx::query(SQL.get(d))
                .bind(failure.state.as_db())
                .bind(failure.error_code)
                .bind(&failure.error_message)
                .bind(failure.error_ip.as_deref())
                .bind(failure.next_refresh_at)
                .bind(now)
                .bind(account_id)
                .bind(generation);
            if d == Dialect::Postgres {
                query = query.bind(crate::notify::TOKEN_CHANNEL);
            }
            let row = query.fetch_optional(pool).await?;
            row.map(|r| r.int("failure_count")).transpose()?
        });
        count.ok_or_else(|| StoreError::StaleFence {
            account_id: account_id.to_owned(),
            generation,
        })
    }

    /// Gives the lease back without writing a result (e.g. shutting down mid-refresh).
    /// Returns `false` if `generation` is no longer current (nothing to release). On
    /// PostgreSQL a release is announced: replicas waiting for the lease try at once.
    pub async fn release_token_lease(
        &self,
        account_id: &str,
        generation: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET lease_holder = NULL, lease_until = NULL \
                     WHERE account_id = ? AND generation = ? RETURNING account_id",
            postgres: "WITH released AS (UPDATE core_tokens SET lease_holder = NULL, \
                       lease_until = NULL WHERE account_id = $1 AND generation = $2 \
                       RETURNING account_id) \
                       SELECT pg_notify($3, released.account_id) IS NULL AS notified \
                       FROM released",
        };
        on_backend!(self, |pool, d| {
            let mut query = sqlx::query(SQL.get(d)).bind(account_id).bind(generation);
            if d == Dialect::Postgres {
                query = query.bind(crate::notify::TOKEN_CHANNEL);
            }
            Ok(query.fetch_optional(pool).await?.is_some())
        })
    }

    /// Up to `limit` (capped at 1000) active accounts whose token is due at `now` and not
    /// leased, most overdue first. Claimed accounts drop out of the next call, so a scheduler
    /// takes batches by calling this again.
    pub async fn list_due_refreshes(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<DueRefresh>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT t.account_id, t.next_refresh_at FROM core_tokens t \
                     JOIN accounts a ON a.id = t.account_id \
                     WHERE a.state = 'active' AND t.next_refresh_at <= ?1 \
                     AND (t.lease_until IS NULL OR t.lease_until < ?1) \
                     ORDER BY t.next_refresh_at, t.account_id LIMIT ?2",
            postgres: "SELECT t.account_id, t.next_refresh_at FROM core_tokens t \
                       JOIN accounts a ON a.id = t.account_id \
                       WHERE a.state = 'active' AND t.next_refresh_at <= $1 \
                       AND (t.lease_until IS NULL OR t.lease_until < $1) \
                       ORDER BY t.next_refresh_at, t.account_id LIMIT $2",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(DueRefresh {
                        account_id: row.text("account_id")?,
                        next_refresh_at: row.int("next_refresh_at")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// One account's token row.
    pub async fn get_core_token(&self, account_id: &str) -> Result<Option<CoreToken>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                token_columns!(),
                " FROM core_tokens WHERE account_id = ?"
            ),
            postgres: concat!(
                "SELECT ",
                token_columns!(),
                " FROM core_tokens WHERE account_id = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| token_from_row(&r)).transpose()?)
        })
    }

    /// Sets an account's token state and next attempt outside a lease, for an operator's
    /// action (e.g. "retry now" after fixing the secret). Clears the failure count.
    pub async fn reschedule_token_refresh(
        &self,
        account_id: &str,
        state: TokenState,
        next_refresh_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET state = ?, next_refresh_at = ?, failure_count = 0, \
                     updated_at = ? WHERE account_id = ?",
            postgres: "UPDATE core_tokens SET state = $1, next_refresh_at = $2, failure_count = 0, \
                       updated_at = $3 WHERE account_id = $4",
        };
        on_backend!(self, |pool, d| {
            let updated = sqlx::query(SQL.get(d))
                .bind(state.as_db())
                .bind(next_refresh_at)
                .bind(now)
                .bind(account_id)
                .execute(pool)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound { what: "core token" });
            }
            Ok(())
        })
    }
}

/// What the scheduler's in-memory token cache needs of one account, in one row: the token row,
/// the account's appid, mode and state, and its wrapped DEK (to decrypt the token).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenCacheRow {
    pub account_id: String,
    pub appid: String,
    pub token_mode: TokenMode,
    pub account_state: AccountState,
    /// The account's DEK, wrapped by a KEK (opaque vault output).
    pub wrapped_dek: Vec<u8>,
    /// Vault ciphertext of the access_token, once one was fetched.
    pub token: Option<Vec<u8>>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub generation: i64,
    /// Who holds the refresh lease, and until when (it may have lapsed since).
    pub lease_holder: Option<String>,
    pub lease_until: Option<i64>,
    pub state: TokenState,
    pub next_refresh_at: i64,
    pub last_error_code: Option<i64>,
    pub last_error_message: Option<String>,
    pub last_error_ip: Option<String>,
}

impl fmt::Debug for TokenCacheRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheRow")
            .field("account_id", &self.account_id)
            .field("appid", &self.appid)
            .field("token_mode", &self.token_mode)
            .field("account_state", &self.account_state)
            .field("token", &self.token.as_ref().map(|_| "<ciphertext>"))
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .field("lease_holder", &self.lease_holder)
            .field("lease_until", &self.lease_until)
            .field("state", &self.state)
            .field("next_refresh_at", &self.next_refresh_at)
            .field("last_error_code", &self.last_error_code)
            .field("last_error_message", &self.last_error_message)
            .field("last_error_ip", &self.last_error_ip)
            .finish()
    }
}

macro_rules! cache_select {
    () => {
        "SELECT t.account_id, a.appid, a.token_mode, a.state AS account_state, s.wrapped_dek, \
         t.token, t.issued_at, t.expires_at, t.generation, t.lease_holder, t.lease_until, \
         t.state, t.next_refresh_at, t.last_error_code, t.last_error_message, t.last_error_ip \
         FROM core_tokens t JOIN accounts a ON a.id = t.account_id \
         JOIN account_secrets s ON s.account_id = t.account_id "
    };
}

fn cache_row_from_row(row: &impl StoreRow) -> Result<TokenCacheRow, sqlx::Error> {
    Ok(TokenCacheRow {
        account_id: row.text("account_id")?,
        appid: row.text("appid")?,
        token_mode: row.enumerated("token_mode")?,
        account_state: row.enumerated("account_state")?,
        wrapped_dek: row.bytes("wrapped_dek")?,
        token: row.opt_bytes("token")?,
        issued_at: row.opt_int("issued_at")?,
        expires_at: row.opt_int("expires_at")?,
        generation: row.int("generation")?,
        lease_holder: row.opt_text("lease_holder")?,
        lease_until: row.opt_int("lease_until")?,
        state: row.enumerated("state")?,
        next_refresh_at: row.int("next_refresh_at")?,
        last_error_code: row.opt_int("last_error_code")?,
        last_error_message: row.opt_text("last_error_message")?,
        last_error_ip: row.opt_text("last_error_ip")?,
    })
}

/// The scheduler's queries beyond the lease protocol: the cache's view of token rows, the
/// strict daily budget of upstream calls, the stable-token force budget and the next due time.
impl Store {
    /// Token cache rows ordered by account id after `after_account_id`, at most `limit`
    /// (capped at 1000): for filling and reloading the scheduler's cache page by page.
    pub async fn list_token_cache_rows(
        &self,
        after_account_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TokenCacheRow>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                cache_select!(),
                "WHERE t.account_id > ? ORDER BY t.account_id LIMIT ?"
            ),
            // The page from the primary key first, then one index lookup per row in each
            // other table. Written as a plain three-table join, PostgreSQL merge-joined the
            // cursor's side (`t.account_id > $1`) with the other two tables scanned from their
            // first row, so every page read all rows before it (2.7 s a page halfway through a
            // million, 631 s to load them all). `LIMIT 1` keeps the lookups from being pulled
            // up into that join again.
            postgres: "SELECT t.account_id, a.appid, a.token_mode, a.account_state, \
                       s.wrapped_dek, t.token, t.issued_at, t.expires_at, t.generation, \
                       t.lease_holder, t.lease_until, t.state, t.next_refresh_at, \
                       t.last_error_code, t.last_error_message, t.last_error_ip \
                       FROM (SELECT * FROM core_tokens WHERE account_id > $1 \
                       ORDER BY account_id LIMIT $2) t \
                       CROSS JOIN LATERAL (SELECT appid, token_mode, state AS account_state \
                       FROM accounts WHERE id = t.account_id LIMIT 1) a \
                       CROSS JOIN LATERAL (SELECT wrapped_dek FROM account_secrets \
                       WHERE account_id = t.account_id LIMIT 1) s \
                       ORDER BY t.account_id",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(after_account_id.unwrap_or(""))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(cache_row_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// One account's token cache row.
    pub async fn get_token_cache_row(
        &self,
        account_id: &str,
    ) -> Result<Option<TokenCacheRow>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(cache_select!(), "WHERE t.account_id = ?"),
            postgres: concat!(cache_select!(), "WHERE t.account_id = $1"),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| cache_row_from_row(&r)).transpose()?)
        })
    }

    /// Takes one stable-token force refresh (docs/wechat.md §2: at most `daily_limit` per `day`, at least
    /// `min_interval_ms` apart). Returns whether it was granted; one conditional statement.
    pub async fn take_stable_force(
        &self,
        account_id: &str,
        day: i64,
        now: i64,
        min_interval_ms: i64,
        daily_limit: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET force_count = \
                     CASE WHEN force_day = ?1 THEN force_count + 1 ELSE 1 END, \
                     force_day = ?1, last_force_at = ?2 \
                     WHERE account_id = ?3 AND (force_day <> ?1 OR force_count < ?4) \
                     AND (last_force_at IS NULL OR last_force_at <= ?2 - ?5)",
            postgres: "UPDATE core_tokens SET force_count = \
                       CASE WHEN force_day = $1 THEN force_count + 1 ELSE 1 END, \
                       force_day = $1, last_force_at = $2 \
                       WHERE account_id = $3 AND (force_day <> $1 OR force_count < $4) \
                       AND (last_force_at IS NULL OR last_force_at <= $2 - $5)",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(day)
                .bind(now)
                .bind(account_id)
                .bind(daily_limit)
                .bind(min_interval_ms)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// The earliest instant at which some active account's refresh is due and its lease free,
    /// or `None` when there are no active accounts: how long a scheduler may sleep.
    pub async fn earliest_refresh_due(&self) -> Result<Option<i64>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT MIN(MAX(t.next_refresh_at, COALESCE(t.lease_until + 1, 0))) AS due \
                     FROM core_tokens t JOIN accounts a ON a.id = t.account_id \
                     WHERE a.state = 'active'",
            postgres: "SELECT MIN(GREATEST(t.next_refresh_at, COALESCE(t.lease_until + 1, 0))) \
                       AS due FROM core_tokens t JOIN accounts a ON a.id = t.account_id \
                       WHERE a.state = 'active'",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d)).fetch_one(pool).await?;
            Ok(row.opt_int("due")?)
        })
    }
}

/// Moving retries forward when WeChat's token endpoint is down for every account, and when it
/// is back (the scheduler's outage rules).
impl Store {
    /// Moves the soonest retry of an active account whose token has expired (or that never had
    /// one) forward to `probe_at`, if it lies later — so that while WeChat is down one such
    /// account is always tried within a probe interval. Only accounts that have used fewer than
    /// `calls_below` upstream calls on `day` are probed. Returns whether a retry was moved.
    pub async fn hasten_soonest_dead_retry(
        &self,
        now: i64,
        probe_at: i64,
        day: i64,
        calls_below: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET next_refresh_at = ?1 WHERE next_refresh_at > ?1 \
                     AND account_id = (SELECT t.account_id FROM core_tokens t \
                     JOIN accounts a ON a.id = t.account_id \
                     WHERE a.state = 'active' AND t.state = 'retrying' \
                     AND (t.expires_at IS NULL OR t.expires_at <= ?2) \
                     AND (t.quota_day <> ?3 OR t.upstream_calls_today < ?4) \
                     ORDER BY t.next_refresh_at LIMIT 1)",
            postgres: "UPDATE core_tokens SET next_refresh_at = $1 WHERE next_refresh_at > $1 \
                       AND account_id = (SELECT t.account_id FROM core_tokens t \
                       JOIN accounts a ON a.id = t.account_id \
                       WHERE a.state = 'active' AND t.state = 'retrying' \
                       AND (t.expires_at IS NULL OR t.expires_at <= $2) \
                       AND (t.quota_day <> $3 OR t.upstream_calls_today < $4) \
                       ORDER BY t.next_refresh_at LIMIT 1)",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(probe_at)
                .bind(now)
                .bind(day)
                .bind(calls_below)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Moves every retry of an account that failed transiently since `since` and is due later
    /// than `now + spread_ms` to a moment drawn uniformly from `[now, now + spread_ms)`, each
    /// row its own: after an outage the accounts come back spread out, not at once. Returns how
    /// many retries were moved.
    pub async fn hasten_retries_since(
        &self,
        now: i64,
        spread_ms: i64,
        since: i64,
    ) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET next_refresh_at = ?1 + (abs(random()) % ?2) \
                     WHERE state = 'retrying' AND updated_at >= ?3 AND next_refresh_at > ?1 + ?2",
            postgres: "UPDATE core_tokens \
                       SET next_refresh_at = $1 + floor(random() * $2)::BIGINT \
                       WHERE state = 'retrying' AND updated_at >= $3 \
                       AND next_refresh_at > $1 + $2",
        };
        let spread_ms = spread_ms.max(1);
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .bind(spread_ms)
                .bind(since)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}

/// What a successful [`Store::claim_token_refresh`] hands the claimer: the fence, the row's
/// token and schedule (to re-check under the lease), whether a unit of today's upstream budget was taken,
/// and the account's sealed AppSecret with its wrapped DEK (so the refresh needs no other read).
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimedRefresh {
    /// The fence to present on write-back.
    pub generation: i64,
    /// Vault ciphertext of the token the row holds at the claim, if any: a claimer acting on a
    /// report compares it with the reported token (the row, not a cache, says what is current).
    pub token: Option<Vec<u8>>,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub next_refresh_at: i64,
    pub failure_count: i64,
    /// Whether one upstream call of `day` was taken from the budget by the claim. `false`:
    /// the budget for `day` is used up (the claimer holds the lease to record that).
    pub budget_taken: bool,
    /// The count of upstream calls of `day` after the claim.
    pub upstream_calls_today: i64,
    /// The account's DEK, wrapped by a KEK (opaque vault output).
    pub wrapped_dek: Vec<u8>,
    /// Vault ciphertext of the AppSecret.
    pub appsecret: Vec<u8>,
}

impl fmt::Debug for ClaimedRefresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedRefresh")
            .field("generation", &self.generation)
            .field("token", &self.token.as_ref().map(|_| "<ciphertext>"))
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("next_refresh_at", &self.next_refresh_at)
            .field("failure_count", &self.failure_count)
            .field("budget_taken", &self.budget_taken)
            .field("upstream_calls_today", &self.upstream_calls_today)
            .field("appsecret", &"<ciphertext>")
            .finish_non_exhaustive()
    }
}

macro_rules! claimed_returning {
    () => {
        " RETURNING generation, token, issued_at, expires_at, next_refresh_at, failure_count, \
         upstream_calls_today, \
         (SELECT s.wrapped_dek FROM account_secrets s \
          WHERE s.account_id = core_tokens.account_id) AS wrapped_dek, \
         (SELECT s.appsecret FROM account_secrets s \
          WHERE s.account_id = core_tokens.account_id) AS appsecret"
    };
}

fn claimed_from_row(row: &impl StoreRow, budget_taken: bool) -> Result<ClaimedRefresh, StoreError> {
    let missing = || StoreError::NotFound {
        what: "account secrets",
    };
    Ok(ClaimedRefresh {
        generation: row.int("generation")?,
        token: row.opt_bytes("token")?,
        issued_at: row.opt_int("issued_at")?,
        expires_at: row.opt_int("expires_at")?,
        next_refresh_at: row.int("next_refresh_at")?,
        failure_count: row.int("failure_count")?,
        budget_taken,
        upstream_calls_today: row.int("upstream_calls_today")?,
        wrapped_dek: row.opt_bytes("wrapped_dek")?.ok_or_else(missing)?,
        appsecret: row.opt_bytes("appsecret")?.ok_or_else(missing)?,
    })
}

/// The refresh claim: lease, fence and budget in one statement.
impl Store {
    /// Claims an account's refresh lease for `holder` until `lease_until` (if it is free or
    /// expired at `now`), increments the fence, and takes one upstream call from `day`'s
    /// budget of `budget` (the count restarts on a new day) — all in one conditional `UPDATE`,
    /// so concurrent replicas together never exceed the budget and exactly one of them gets
    /// the lease. The row comes back with the account's sealed AppSecret, so the claimer needs
    /// no other read before calling WeChat.
    ///
    /// Only when that fails does a second statement look at why: if the lease is free but
    /// `day`'s budget is used up, it claims the lease alone (`budget_taken: false`, so the
    /// claimer can record the exhausted state under the fence). `None`: someone else holds the
    /// lease (or the account does not exist).
    pub async fn claim_token_refresh(
        &self,
        account_id: &str,
        holder: &str,
        now: i64,
        lease_until: i64,
        day: i64,
        budget: i64,
    ) -> Result<Option<ClaimedRefresh>, StoreError> {
        const WITH_BUDGET: Sql = Sql {
            sqlite: concat!(
                "UPDATE core_tokens \
                 SET lease_holder = ?1, lease_until = ?2, generation = generation + 1, \
                 upstream_calls_today = \
                 CASE WHEN quota_day = ?5 THEN upstream_calls_today + 1 ELSE 1 END, \
                 quota_day = ?5 \
                 WHERE account_id = ?3 AND (lease_until IS NULL OR lease_until < ?4) \
                 AND (quota_day <> ?5 OR upstream_calls_today < ?6)",
                claimed_returning!()
            ),
            postgres: concat!(
                "UPDATE core_tokens \
                 SET lease_holder = $1, lease_until = $2, generation = generation + 1, \
                 upstream_calls_today = \
                 CASE WHEN quota_day = $5 THEN upstream_calls_today + 1 ELSE 1 END, \
                 quota_day = $5 \
                 WHERE account_id = $3 AND (lease_until IS NULL OR lease_until < $4) \
                 AND (quota_day <> $5 OR upstream_calls_today < $6)",
                claimed_returning!()
            ),
        };
        const BUDGET_SPENT: Sql = Sql {
            sqlite: concat!(
                "UPDATE core_tokens \
                 SET lease_holder = ?1, lease_until = ?2, generation = generation + 1 \
                 WHERE account_id = ?3 AND (lease_until IS NULL OR lease_until < ?4) \
                 AND quota_day = ?5 AND upstream_calls_today >= ?6",
                claimed_returning!()
            ),
            postgres: concat!(
                "UPDATE core_tokens \
                 SET lease_holder = $1, lease_until = $2, generation = generation + 1 \
                 WHERE account_id = $3 AND (lease_until IS NULL OR lease_until < $4) \
                 AND quota_day = $5 AND upstream_calls_today >= $6",
                claimed_returning!()
            ),
        };
        for (sql, budget_taken) in [(WITH_BUDGET, true), (BUDGET_SPENT, false)] {
            let row = on_backend!(self, |pool, d| {
                sqlx::query(sql.get(d))
                    .bind(holder)
                    .bind(lease_until)
                    .bind(account_id)
                    .bind(now)
                    .bind(day)
                    .bind(budget)
                    .fetch_optional(pool)
                    .await?
                    .map(|row| claimed_from_row(&row, budget_taken))
                    .transpose()?
            });
            if row.is_some() {
                return Ok(row);
            }
        }
        Ok(None)
    }

    /// Gives the lease back without writing a result, and returns the upstream call the claim
    /// took from `day`'s budget (the claimer decided not to call WeChat after all). Nothing
    /// happens if `generation` is no longer current: a count that stays too high only ever
    /// errs on the side of the budget. Returns whether the lease was released. Announced on
    /// PostgreSQL like [`Store::release_token_lease`].
    pub async fn release_token_lease_unused(
        &self,
        account_id: &str,
        generation: i64,
        day: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET lease_holder = NULL, lease_until = NULL, \
                     upstream_calls_today = CASE WHEN quota_day = ?1 AND upstream_calls_today > 0 \
                     THEN upstream_calls_today - 1 ELSE upstream_calls_today END \
                     WHERE account_id = ?2 AND generation = ?3 RETURNING account_id",
            postgres: "WITH released AS (UPDATE core_tokens SET lease_holder = NULL, \
                       lease_until = NULL, \
                       upstream_calls_today = CASE WHEN quota_day = $1 AND upstream_calls_today > 0 \
                       THEN upstream_calls_today - 1 ELSE upstream_calls_today END \
                       WHERE account_id = $2 AND generation = $3 RETURNING account_id) \
                       SELECT pg_notify($4, released.account_id) IS NULL AS notified \
                       FROM released",
        };
        on_backend!(self, |pool, d| {
            let mut query = sqlx::query(SQL.get(d))
                .bind(day)
                .bind(account_id)
                .bind(generation);
            if d == Dialect::Postgres {
                query = query.bind(crate::notify::TOKEN_CHANNEL);
            }
            Ok(query.fetch_optional(pool).await?.is_some())
        })
    }
}
