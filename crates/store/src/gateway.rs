//! Login-gateway state beyond the OIDC tables of `oidc.rs`: per-account gateway settings,
//! follow waits, the push nonce cache, and the two writes that must be atomic — a push with
//! its effect on the end user, and a finished login with its authorization code.
//!
//! Everything a login step needs lives here, so any replica can continue any step. Wait ids
//! are hashes of the bearer token in the follow page's URL; the token itself is never stored.

use crate::db::{BeginWrite, Sql, StoreRow, new_id};
use crate::end_users::{RECORD_SUBSCRIPTION, Subscription};
use crate::error::on_constraint;
use crate::oidc::{AuthCode, PendingAuthorization, pending_from_row};
use crate::pushes::ReceivedPush;
use crate::{Store, StoreError};

/// An account's gateway settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewaySettings {
    /// The account's original id (`gh_…`), the `ToUserName` of its pushes.
    pub original_id: Option<String>,
    /// The owner's own server, which receives a re-signed copy of every push.
    pub push_relay_url: Option<String>,
}

/// A follow-required login waiting for the user to follow the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowWait {
    /// Hash of the token in the follow page's URL.
    pub id: String,
    /// The pending authorization it continues.
    pub pending_id: String,
    pub account_id: String,
    pub openid: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// When a subscribe push for this openid arrived.
    pub followed_at: Option<i64>,
    /// When the login finished (a code was issued).
    pub finished_at: Option<i64>,
}

fn follow_wait_from_row(row: &impl StoreRow) -> Result<FollowWait, sqlx::Error> {
    Ok(FollowWait {
        id: row.text("id")?,
        pending_id: row.text("pending_id")?,
        account_id: row.text("account_id")?,
        openid: row.text("openid")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        followed_at: row.opt_int("followed_at")?,
        finished_at: row.opt_int("finished_at")?,
    })
}

impl Store {
    /// Sets an account's gateway settings (both fields, `None` clears).
    pub async fn set_gateway_settings(
        &self,
        account_id: &str,
        settings: &GatewaySettings,
        now: i64,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO gateway_account_settings (account_id, original_id, \
                     push_relay_url, updated_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (account_id) DO UPDATE SET original_id = excluded.original_id, \
                     push_relay_url = excluded.push_relay_url, updated_at = excluded.updated_at",
            postgres: "INSERT INTO gateway_account_settings (account_id, original_id, \
                       push_relay_url, updated_at) VALUES ($1, $2, $3, $4) \
                       ON CONFLICT (account_id) DO UPDATE SET original_id = excluded.original_id, \
                       push_relay_url = excluded.push_relay_url, updated_at = excluded.updated_at",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(settings.original_id.as_deref())
                .bind(settings.push_relay_url.as_deref())
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "gateway settings", "account"))?;
            Ok(())
        })
    }

    /// An account's gateway settings (all `None` when never set).
    pub async fn gateway_settings(&self, account_id: &str) -> Result<GatewaySettings, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT original_id, push_relay_url FROM gateway_account_settings \
                     WHERE account_id = ?",
            postgres: "SELECT original_id, push_relay_url FROM gateway_account_settings \
                       WHERE account_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => GatewaySettings {
                    original_id: r.opt_text("original_id")?,
                    push_relay_url: r.opt_text("push_relay_url")?,
                },
                None => GatewaySettings::default(),
            })
        })
    }

    /// Remembers a push's `(timestamp, nonce)` for the account. `true` the first time; `false`
    /// when the pair was seen before (a replay).
    pub async fn remember_push_nonce(
        &self,
        account_id: &str,
        push_time: i64,
        nonce: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO push_nonces (account_id, push_time, nonce, seen_at) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (account_id, push_time, nonce) DO NOTHING",
            postgres: "INSERT INTO push_nonces (account_id, push_time, nonce, seen_at) \
                       VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, push_time, nonce) DO NOTHING",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(push_time)
                .bind(nonce)
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "push nonce", "account"))?
                .rows_affected()
                == 1)
        })
    }

    /// Forgets nonces seen before `cutoff` (outside the timestamp window); returns how many.
    pub async fn delete_push_nonces_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM push_nonces WHERE seen_at < ?",
            postgres: "DELETE FROM push_nonces WHERE seen_at < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Records a push and, the first time only, its effect on the end user — in one
    /// transaction, so a crash cannot leave a push marked as handled without its effect.
    /// A subscribe also marks the user's open follow waits as followed. Returns `true` the
    /// first time, `false` for a retry.
    pub async fn record_push_with_subscription(
        &self,
        push: &ReceivedPush,
        subscription: Option<&Subscription>,
        now: i64,
    ) -> Result<bool, StoreError> {
        const INSERT: Sql = Sql {
            sqlite: "INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
                     received_at, summary) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (account_id, dedup_key) DO NOTHING",
            postgres: "INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
                       received_at, summary) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                       ON CONFLICT (account_id, dedup_key) DO NOTHING",
        };
        const FOLLOWED: Sql = Sql {
            sqlite: "UPDATE oidc_follow_waits SET followed_at = ?1 \
                     WHERE account_id = ?2 AND openid = ?3 AND followed_at IS NULL \
                     AND finished_at IS NULL AND expires_at > ?1",
            postgres: "UPDATE oidc_follow_waits SET followed_at = $1 \
                       WHERE account_id = $2 AND openid = $3 AND followed_at IS NULL \
                       AND finished_at IS NULL AND expires_at > $1",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let first = sqlx::query(INSERT.get(d))
                .bind(&push.account_id)
                .bind(&push.dedup_key)
                .bind(&push.msg_type)
                .bind(push.event.as_deref())
                .bind(push.openid.as_deref())
                .bind(push.received_at)
                .bind(&push.summary)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "push", "account"))?
                .rows_affected()
                == 1;
            if first && let Some(sub) = subscription {
                sqlx::query(RECORD_SUBSCRIPTION.get(d))
                    .bind(new_id())
                    .bind(&push.account_id)
                    .bind(&sub.openid)
                    .bind(sub.subscribed)
                    .bind(sub.subscribe_time)
                    .bind(sub.subscribe_scene.as_deref())
                    .bind(sub.qr_scene.as_deref())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| on_constraint(e, "end user", "account"))?;
                if sub.subscribed {
                    sqlx::query(FOLLOWED.get(d))
                        .bind(now)
                        .bind(&push.account_id)
                        .bind(&sub.openid)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(first)
        })
    }

    /// Stores a follow wait. `followed_at` and `finished_at` are ignored (a new wait has
    /// neither).
    pub async fn create_follow_wait(&self, wait: &FollowWait) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_follow_waits (id, pending_id, account_id, openid, \
                     created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO oidc_follow_waits (id, pending_id, account_id, openid, \
                       created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&wait.id)
                .bind(&wait.pending_id)
                .bind(&wait.account_id)
                .bind(&wait.openid)
                .bind(wait.created_at)
                .bind(wait.expires_at)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "follow wait", "pending authorization"))?;
            Ok(())
        })
    }

    /// The unexpired, unfinished follow wait with this id.
    pub async fn find_follow_wait(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<FollowWait>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT id, pending_id, account_id, openid, created_at, expires_at, \
                     followed_at, finished_at FROM oidc_follow_waits \
                     WHERE id = ? AND finished_at IS NULL AND expires_at > ?",
            postgres: "SELECT id, pending_id, account_id, openid, created_at, expires_at, \
                       followed_at, finished_at FROM oidc_follow_waits \
                       WHERE id = $1 AND finished_at IS NULL AND expires_at > $2",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| follow_wait_from_row(&r)).transpose()?)
        })
    }

    /// The pending authorization with this row id, if still pending and unexpired (a follow
    /// wait continues it by id; the WeChat callback finds it by its `wechat_state`).
    pub async fn get_pending_authorization(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT id, oidc_client_id, redirect_uri, state, nonce, code_challenge, \
                     code_challenge_method, scope, wechat_state, status, openid, created_at, \
                     expires_at FROM oidc_pending_authorizations \
                     WHERE id = ? AND status = 'pending' AND expires_at > ?",
            postgres: "SELECT id, oidc_client_id, redirect_uri, state, nonce, code_challenge, \
                       code_challenge_method, scope, wechat_state, status, openid, created_at, \
                       expires_at FROM oidc_pending_authorizations \
                       WHERE id = $1 AND status = 'pending' AND expires_at > $2",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| pending_from_row(&r)).transpose()?)
        })
    }

    /// Finishes a login in one transaction: the pending authorization becomes `completed`
    /// with `code.openid`, the code is stored, and the follow wait (if the login went through
    /// one) is finished. Only if the pending authorization (and wait) are still open and
    /// unexpired — so a replayed callback or a double click cannot issue two codes. Returns
    /// whether it did.
    pub async fn complete_pending_authorization(
        &self,
        pending_id: &str,
        code: &AuthCode,
        follow_wait_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        const FINISH: Sql = Sql {
            sqlite: "UPDATE oidc_pending_authorizations SET status = 'completed', openid = ? \
                     WHERE id = ? AND status = 'pending' AND expires_at > ?",
            postgres: "UPDATE oidc_pending_authorizations SET status = 'completed', openid = $1 \
                       WHERE id = $2 AND status = 'pending' AND expires_at > $3",
        };
        const CODE: Sql = Sql {
            sqlite: "INSERT INTO oidc_auth_codes (code_hash, oidc_client_id, account_id, \
                     redirect_uri, openid, nonce, code_challenge, code_challenge_method, scope, \
                     created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO oidc_auth_codes (code_hash, oidc_client_id, account_id, \
                       redirect_uri, openid, nonce, code_challenge, code_challenge_method, scope, \
                       created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        };
        const WAIT: Sql = Sql {
            sqlite: "UPDATE oidc_follow_waits SET finished_at = ?1 \
                     WHERE id = ?2 AND pending_id = ?3 AND finished_at IS NULL AND expires_at > ?1",
            postgres: "UPDATE oidc_follow_waits SET finished_at = $1 \
                       WHERE id = $2 AND pending_id = $3 AND finished_at IS NULL AND expires_at > $1",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let finished = sqlx::query(FINISH.get(d))
                .bind(&code.openid)
                .bind(pending_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !finished {
                return Ok(false);
            }
            if let Some(wait) = follow_wait_id {
                let waited = sqlx::query(WAIT.get(d))
                    .bind(now)
                    .bind(wait)
                    .bind(pending_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if !waited {
                    return Ok(false);
                }
            }
            sqlx::query(CODE.get(d))
                .bind(&code.code_hash)
                .bind(&code.oidc_client_id)
                .bind(&code.account_id)
                .bind(&code.redirect_uri)
                .bind(&code.openid)
                .bind(code.nonce.as_deref())
                .bind(code.code_challenge.as_deref())
                .bind(code.code_challenge_method.as_deref())
                .bind(&code.scope)
                .bind(code.created_at)
                .bind(code.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "authorization code", "oidc client or account"))?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
