//! Login-gateway state beyond the OIDC tables of `oidc.rs`: per-account gateway settings,
//! follow waits, the push nonce cache, and the two writes that must be atomic — a push with
//! its effect on the end user, and a finished login with its authorization code.
//!
//! Everything a login step needs lives here, so any replica can continue any step. Wait ids
//! are hashes of the bearer token in the follow page's URL; the token itself is never stored.

use crate::accounts::{Account, AccountSecrets, account_from_row, secrets_from_row};
use crate::audit::AuditRecord;
use crate::db::{Backend, BeginWrite, DbEnum, Sql, StoreRow, new_id};
use crate::end_users::{EndUserLogin, RECORD_LOGIN, RECORD_SUBSCRIPTION, Subscription, bind_login};
use crate::error::on_constraint;
use crate::oidc::{AuthCode, PendingAuthorization, pending_from_row};
use crate::push_routes::{JOINED_ROUTE, PushRoute, route_from_row};
use crate::pushes::ReceivedPush;
use crate::{Store, StoreError};

db_enum! {
    /// The message encryption mode configured for the account in WeChat's console
    /// (docs/wechat.md §6.5).
    pub enum PushMode {
        /// 明文: the body is readable and not authenticated (the URL signature does not cover
        /// it).
        Plain = "plain",
        /// 兼容: readable fields and an `Encrypt` copy covered by `msg_signature`.
        Compatible = "compatible",
        /// 安全: only `ToUserName` and `Encrypt`.
        Safe = "safe",
    }
}

/// An account's gateway settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewaySettings {
    /// The account's original id (`gh_…`), the `ToUserName` of its pushes.
    pub original_id: Option<String>,
    /// The owner's own server, which receives a re-signed copy of every push: the target of
    /// the account's relay route (`store::push_routes`), signed with the account's own Token.
    pub push_relay_url: Option<String>,
    /// The push mode configured in WeChat's console; `None`: safe when the account has an
    /// EncodingAESKey, plain otherwise.
    pub push_mode: Option<PushMode>,
    /// An https URL of the account's QR code image (as downloaded from WeChat's console),
    /// shown on the follow page.
    pub follow_qr_url: Option<String>,
    /// An optional https link to the account's profile, shown on the follow page.
    pub follow_link: Option<String>,
}

/// What recording a `(timestamp, nonce)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceUse {
    /// First time this pair is seen for the account.
    First,
    /// Seen before, for the same message (WeChat retrying with the same query).
    SameMessage,
    /// Seen before, for another message: a replay of a captured signature.
    OtherMessage,
}

/// A verified push, ready to be recorded with its nonce and effect.
#[derive(Debug, Clone)]
pub struct IncomingPush<'a> {
    pub push: &'a ReceivedPush,
    /// The effect on the end user, for subscribe/unsubscribe.
    pub subscription: Option<&'a Subscription>,
    /// The push's `timestamp` (Unix seconds) and `nonce`.
    pub push_time: i64,
    pub nonce: &'a str,
    /// Whether the message itself was authenticated (`msg_signature` over the encrypted
    /// message), as opposed to a plain-mode body that nothing signs.
    pub authenticated: bool,
    /// The reply route that will be called for it, if any: the first delivery announces the
    /// call in `push_replies` in the same transaction, so WeChat's retries on any replica
    /// wait for it (`store::push_routes`).
    pub reply_route: Option<&'a str>,
    /// Copies for the account's copy routes, queued with the first delivery in the same
    /// transaction (so a crash cannot record the push and lose its copies), while the account
    /// has fewer than `copy_limit` waiting.
    pub copies: &'a [crate::push_routes::NewCopy<'a>],
    pub copy_limit: i64,
}

/// What recording a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRecording {
    /// First delivery: recorded and applied; `user_created` when its subscribe created the
    /// end user (a pre-registration, counted by statistics). `copies_dropped` lists the
    /// indices of `IncomingPush::copies` not queued (the account's queue was full).
    Processed {
        user_created: bool,
        copies_dropped: Vec<usize>,
    },
    /// A retry (same dedup key, or same nonce and message): acknowledged, not reapplied.
    Retry,
    /// The `(timestamp, nonce)` was used for another message: nothing was stored.
    NonceReused,
}

/// A login that [`Store::complete_login`] completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedLogin {
    /// The login created the end user (its first login; not known from a push before).
    pub user_created: bool,
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
    /// Whether that push's message was authenticated (safe/compatible mode). A follow learned
    /// from a plain-mode push is re-checked with user/info.
    pub follow_verified: bool,
    /// When the login finished (a code was issued).
    pub finished_at: Option<i64>,
}

pub(crate) fn follow_wait_from_row(row: &impl StoreRow) -> Result<FollowWait, sqlx::Error> {
    Ok(FollowWait {
        id: row.text("id")?,
        pending_id: row.text("pending_id")?,
        account_id: row.text("account_id")?,
        openid: row.text("openid")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        followed_at: row.opt_int("followed_at")?,
        follow_verified: row.flag("follow_verified")?,
        finished_at: row.opt_int("finished_at")?,
    })
}

/// Settings columns `original_id`, `push_relay_url`, `push_mode`, `follow_qr_url` and
/// `follow_link`; all NULL (an outer join without a row) reads as the default.
fn settings_from_row(r: &impl StoreRow) -> Result<GatewaySettings, sqlx::Error> {
    Ok(GatewaySettings {
        original_id: r.opt_text("original_id")?,
        push_relay_url: r.opt_text("push_relay_url")?,
        push_mode: match r.opt_text("push_mode")? {
            Some(_) => Some(r.enumerated("push_mode")?),
            None => None,
        },
        follow_qr_url: r.opt_text("follow_qr_url")?,
        follow_link: r.opt_text("follow_link")?,
    })
}

/// What the push callback reads before it verifies a push (see [`Store::push_account`]).
#[derive(Debug, Clone)]
pub struct PushAccount {
    pub account: Account,
    pub secrets: AccountSecrets,
    pub settings: GatewaySettings,
    /// The account's push routes in order (enabled or not).
    pub routes: Vec<PushRoute>,
}

impl Store {
    /// The account with `appid`, its sealed secrets, its gateway settings and its push routes,
    /// in one statement (a row per route): the push callback's reads before it verifies a push.
    /// One statement rather than four because on SQLite each is a hand-over to the
    /// connection's thread and back, and pushes come in bursts (docs/performance.md).
    /// `None` when no account has the appid.
    pub async fn push_account(&self, appid: &str) -> Result<Option<PushAccount>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                account_columns_as_a!(),
                ", sec.wrapped_dek, sec.dek_kek_id, sec.appsecret, sec.push_token, \
                 sec.encoding_aes_key, s.original_id, (SELECT r.target_url FROM push_routes r \
                 WHERE r.account_id = a.id AND r.relay = 1) AS push_relay_url, s.push_mode, \
                 s.follow_qr_url, s.follow_link, ",
                route_select!("r", "r_"),
                " FROM accounts a JOIN account_secrets sec ON sec.account_id = a.id \
                 LEFT JOIN gateway_account_settings s ON s.account_id = a.id \
                 LEFT JOIN push_routes r ON r.account_id = a.id \
                 WHERE a.appid = ? ORDER BY r.position, r.id"
            ),
            postgres: concat!(
                "SELECT ",
                account_columns_as_a!(),
                ", sec.wrapped_dek, sec.dek_kek_id, sec.appsecret, sec.push_token, \
                 sec.encoding_aes_key, s.original_id, (SELECT r.target_url FROM push_routes r \
                 WHERE r.account_id = a.id AND r.relay) AS push_relay_url, s.push_mode, \
                 s.follow_qr_url, s.follow_link, ",
                route_select!("r", "r_"),
                " FROM accounts a JOIN account_secrets sec ON sec.account_id = a.id \
                 LEFT JOIN gateway_account_settings s ON s.account_id = a.id \
                 LEFT JOIN push_routes r ON r.account_id = a.id \
                 WHERE a.appid = $1 ORDER BY r.position, r.id"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d)).bind(appid).fetch_all(pool).await?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let mut routes = Vec::new();
            for row in &rows {
                // One row with no route when the account has none (the outer join).
                if row.opt_text(JOINED_ROUTE.id)?.is_some() {
                    routes.push(route_from_row(row, &JOINED_ROUTE)?);
                }
            }
            Ok(Some(PushAccount {
                account: account_from_row(r)?,
                secrets: secrets_from_row(r)?,
                settings: settings_from_row(r)?,
                routes,
            }))
        })
    }

    /// Sets an account's gateway settings (every field; `None` clears), with its audit entry.
    pub async fn set_gateway_settings(
        &self,
        account_id: &str,
        settings: &GatewaySettings,
        now: i64,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO gateway_account_settings (account_id, original_id, \
                     push_relay_url, push_mode, follow_qr_url, follow_link, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (account_id) DO UPDATE SET original_id = excluded.original_id, \
                     push_relay_url = excluded.push_relay_url, push_mode = excluded.push_mode, \
                     follow_qr_url = excluded.follow_qr_url, follow_link = excluded.follow_link, \
                     updated_at = excluded.updated_at",
            postgres: "INSERT INTO gateway_account_settings (account_id, original_id, \
                       push_relay_url, push_mode, follow_qr_url, follow_link, updated_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7) \
                       ON CONFLICT (account_id) DO UPDATE SET original_id = excluded.original_id, \
                       push_relay_url = excluded.push_relay_url, push_mode = excluded.push_mode, \
                       follow_qr_url = excluded.follow_qr_url, follow_link = excluded.follow_link, \
                       updated_at = excluded.updated_at",
        };
        // The relay URL is the account's relay route: a copy route of every push, signed with
        // the account's own push credentials (crates/gateway/src/routes.rs).
        const UPSERT_RELAY: Sql = Sql {
            sqlite: "INSERT INTO push_routes (id, account_id, position, target_url, delivery, \
                     relay, enabled, created_at, updated_at) VALUES (?1, ?2, 0, ?3, 'copy', ?4, ?4, \
                     ?5, ?5) ON CONFLICT (id) DO UPDATE SET target_url = excluded.target_url, \
                     updated_at = excluded.updated_at",
            postgres: "INSERT INTO push_routes (id, account_id, position, target_url, delivery, \
                       relay, enabled, created_at, updated_at) VALUES ($1, $2, 0, $3, 'copy', $4, $4, \
                       $5, $5) ON CONFLICT (id) DO UPDATE SET target_url = excluded.target_url, \
                       updated_at = excluded.updated_at",
        };
        const DELETE_RELAY: Sql = Sql {
            sqlite: "DELETE FROM push_routes WHERE account_id = ? AND relay = 1",
            postgres: "DELETE FROM push_routes WHERE account_id = $1 AND relay",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(settings.original_id.as_deref())
                // Kept in the account's relay route below, not in this column.
                .bind(None::<&str>)
                .bind(settings.push_mode.map(PushMode::as_db))
                .bind(settings.follow_qr_url.as_deref())
                .bind(settings.follow_link.as_deref())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "gateway settings", "account"))?;
            match settings.push_relay_url.as_deref() {
                Some(url) => {
                    sqlx::query(UPSERT_RELAY.get(d))
                        .bind(format!("relay-{account_id}"))
                        .bind(account_id)
                        .bind(url)
                        .bind(true)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| on_constraint(e, "push route", "account"))?;
                }
                None => {
                    sqlx::query(DELETE_RELAY.get(d))
                        .bind(account_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            commit_audited!(self, tx, d, record, now);
            Ok(())
        })
    }

    /// An account's gateway settings (all `None` when never set).
    pub async fn gateway_settings(&self, account_id: &str) -> Result<GatewaySettings, StoreError> {
        const SQL: Sql = Sql {
            // The relay URL is the target of the account's relay route (migration 0015).
            sqlite: "SELECT s.original_id, (SELECT r.target_url FROM push_routes r \
                     WHERE r.account_id = s.account_id AND r.relay = 1) AS push_relay_url, \
                     s.push_mode, s.follow_qr_url, s.follow_link \
                     FROM gateway_account_settings s WHERE s.account_id = ?",
            postgres: "SELECT s.original_id, (SELECT r.target_url FROM push_routes r \
                       WHERE r.account_id = s.account_id AND r.relay) AS push_relay_url, \
                       s.push_mode, s.follow_qr_url, s.follow_link \
                       FROM gateway_account_settings s WHERE s.account_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => settings_from_row(&r)?,
                None => GatewaySettings::default(),
            })
        })
    }

    /// Records a `(timestamp, nonce)` for the account, used for the message with `dedup_key`
    /// (URL verifications and relayed copies use their own keys). See [`NonceUse`].
    pub async fn remember_push_nonce(
        &self,
        account_id: &str,
        push_time: i64,
        nonce: &str,
        dedup_key: &str,
        now: i64,
    ) -> Result<NonceUse, StoreError> {
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let used = sqlx::query(INSERT_NONCE.get(d))
                .bind(account_id)
                .bind(push_time)
                .bind(nonce)
                .bind(now)
                .bind(dedup_key)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "push nonce", "account"))?
                .rows_affected();
            let outcome = if used == 1 {
                NonceUse::First
            } else {
                let stored = sqlx::query(NONCE_KEY.get(d))
                    .bind(account_id)
                    .bind(push_time)
                    .bind(nonce)
                    .fetch_optional(&mut *tx)
                    .await?;
                match stored {
                    Some(r) if r.opt_text("dedup_key")?.as_deref() == Some(dedup_key) => {
                        NonceUse::SameMessage
                    }
                    _ => NonceUse::OtherMessage,
                }
            };
            tx.commit().await?;
            Ok(outcome)
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

    /// Records a push with its `(timestamp, nonce)` and, the first time only, its effect on
    /// the end user — in one transaction, so a crash cannot leave a push marked as handled
    /// without its effect, nor a nonce spent for a push that was not recorded (WeChat's retry
    /// with the same query is then processed). A subscribe that is applied also marks the
    /// user's open follow waits as followed (verified when the message was authenticated).
    /// See [`PushRecording`].
    pub async fn record_push_with_subscription(
        &self,
        incoming: &IncomingPush<'_>,
        now: i64,
    ) -> Result<PushRecording, StoreError> {
        const INSERT: Sql = Sql {
            sqlite: "INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
                     received_at, summary) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (account_id, dedup_key) DO NOTHING",
            postgres: "INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
                       received_at, summary) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                       ON CONFLICT (account_id, dedup_key) DO NOTHING",
        };
        const FOLLOWED: Sql = Sql {
            sqlite: "UPDATE oidc_follow_waits SET followed_at = ?1, follow_verified = ?4 \
                     WHERE account_id = ?2 AND openid = ?3 AND followed_at IS NULL \
                     AND finished_at IS NULL AND expires_at > ?1",
            postgres: "UPDATE oidc_follow_waits SET followed_at = $1, follow_verified = $4 \
                       WHERE account_id = $2 AND openid = $3 AND followed_at IS NULL \
                       AND finished_at IS NULL AND expires_at > $1",
        };
        let push = incoming.push;
        if let Backend::Postgres(pool) = &self.backend
            && incoming.subscription.is_none()
            && incoming.copies.is_empty()
        {
            self.count_operation();
            if let Some(recording) = record_push_in_one_statement(pool, incoming, now).await? {
                return Ok(recording);
            }
        }
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let nonce_new = sqlx::query(INSERT_NONCE.get(d))
                .bind(&push.account_id)
                .bind(incoming.push_time)
                .bind(incoming.nonce)
                .bind(now)
                .bind(&push.dedup_key)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "push nonce", "account"))?
                .rows_affected()
                == 1;
            if !nonce_new {
                let stored = sqlx::query(NONCE_KEY.get(d))
                    .bind(&push.account_id)
                    .bind(incoming.push_time)
                    .bind(incoming.nonce)
                    .fetch_optional(&mut *tx)
                    .await?;
                let same = match stored {
                    Some(r) => r.opt_text("dedup_key")?.as_deref() == Some(&push.dedup_key),
                    None => false,
                };
                tx.rollback().await?;
                return Ok(if same {
                    PushRecording::Retry
                } else {
                    PushRecording::NonceReused
                });
            }
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
            let mut user_created = false;
            if first && let Some(sub) = incoming.subscription {
                let id = new_id();
                let stored = sqlx::query(RECORD_SUBSCRIPTION.get(d))
                    .bind(&id)
                    .bind(&push.account_id)
                    .bind(&sub.openid)
                    .bind(sub.subscribed)
                    .bind(sub.subscribe_time)
                    .bind(sub.subscribe_scene.as_deref())
                    .bind(sub.qr_scene.as_deref())
                    .bind(now)
                    .bind(sub.event_time)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| on_constraint(e, "end user", "account"))?;
                let applied = stored.is_some();
                // The row carries the id bound here only if this statement inserted it.
                user_created = match &stored {
                    Some(row) => row.text("id")? == id,
                    None => false,
                };
                if applied && sub.subscribed {
                    sqlx::query(FOLLOWED.get(d))
                        .bind(now)
                        .bind(&push.account_id)
                        .bind(&sub.openid)
                        .bind(incoming.authenticated)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if first && let Some(route_id) = incoming.reply_route {
                sqlx::query(crate::push_routes::ANNOUNCE_REPLY.get(d))
                    .bind(&push.account_id)
                    .bind(&push.dedup_key)
                    .bind(route_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut copies_dropped = Vec::new();
            if first {
                for (i, copy) in incoming.copies.iter().enumerate() {
                    let queued = sqlx::query(crate::push_routes::ENQUEUE_COPY.get(d))
                        .bind(copy.id)
                        .bind(copy.account_id)
                        .bind(copy.route_id)
                        .bind(copy.dedup_key)
                        .bind(copy.openid)
                        .bind(copy.body)
                        .bind(now)
                        .bind(incoming.copy_limit)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| on_constraint(e, "push copy", "route"))?
                        .rows_affected();
                    if queued == 0 {
                        copies_dropped.push(i);
                    }
                }
            }
            tx.commit().await?;
            Ok(if first {
                PushRecording::Processed {
                    user_created,
                    copies_dropped,
                }
            } else {
                PushRecording::Retry
            })
        })
    }

    /// Deletes the follow waits that expired before `cutoff` without the user following or the
    /// login finishing — logins abandoned on the follow page — and returns each one's account
    /// and website (`oidc_clients.id`; empty when its pending login is gone). Each wait is
    /// returned once, whichever replica deletes it.
    pub async fn delete_abandoned_follow_waits(
        &self,
        cutoff: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_follow_waits WHERE expires_at < ?1 \
                     AND followed_at IS NULL AND finished_at IS NULL \
                     RETURNING account_id, COALESCE((SELECT p.oidc_client_id \
                     FROM oidc_pending_authorizations p \
                     WHERE p.id = oidc_follow_waits.pending_id), '') AS website",
            postgres: "DELETE FROM oidc_follow_waits WHERE expires_at < $1 \
                       AND followed_at IS NULL AND finished_at IS NULL \
                       RETURNING account_id, COALESCE((SELECT p.oidc_client_id \
                       FROM oidc_pending_authorizations p \
                       WHERE p.id = oidc_follow_waits.pending_id), '') AS website",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d)).bind(cutoff).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.text("account_id")?, r.text("website")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Deletes follow waits that expired or finished before `cutoff`, and waits whose pending
    /// authorization is gone; returns how many.
    pub async fn delete_stale_follow_waits(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_follow_waits WHERE expires_at < ?1 \
                     OR finished_at < ?1 OR NOT EXISTS \
                     (SELECT 1 FROM oidc_pending_authorizations p \
                     WHERE p.id = oidc_follow_waits.pending_id)",
            postgres: "DELETE FROM oidc_follow_waits WHERE expires_at < $1 \
                       OR finished_at < $1 OR NOT EXISTS \
                       (SELECT 1 FROM oidc_pending_authorizations p \
                       WHERE p.id = oidc_follow_waits.pending_id)",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Stores a follow wait. `followed_at`, `follow_verified` and `finished_at` are ignored
    /// (a new wait has none).
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

    /// Takes one of the wait's `user/info` re-checks ("I've followed"): allowed when the wait
    /// is open, has had fewer than `max` re-checks, and none in the last `min_interval_ms`.
    /// One conditional UPDATE, so replicas share the allowance. Returns whether it was taken,
    /// or, when not, `Some(ms)` until the next one is allowed (`None`: none will be).
    pub async fn take_follow_recheck(
        &self,
        wait_id: &str,
        now: i64,
        min_interval_ms: i64,
        max: i64,
    ) -> Result<Result<(), Option<i64>>, StoreError> {
        const TAKE: Sql = Sql {
            sqlite: "UPDATE oidc_follow_waits SET rechecks = rechecks + 1, last_recheck_at = ?1 \
                     WHERE id = ?2 AND finished_at IS NULL AND expires_at > ?1 AND rechecks < ?3 \
                     AND (last_recheck_at IS NULL OR last_recheck_at <= ?1 - ?4)",
            postgres: "UPDATE oidc_follow_waits SET rechecks = rechecks + 1, last_recheck_at = $1 \
                       WHERE id = $2 AND finished_at IS NULL AND expires_at > $1 AND rechecks < $3 \
                       AND (last_recheck_at IS NULL OR last_recheck_at <= $1 - $4)",
        };
        const LOOK: Sql = Sql {
            sqlite: "SELECT rechecks, last_recheck_at FROM oidc_follow_waits WHERE id = ?",
            postgres: "SELECT rechecks, last_recheck_at FROM oidc_follow_waits WHERE id = $1",
        };
        on_backend!(self, |pool, d| {
            let taken = sqlx::query(TAKE.get(d))
                .bind(now)
                .bind(wait_id)
                .bind(max)
                .bind(min_interval_ms)
                .execute(pool)
                .await?
                .rows_affected()
                == 1;
            if taken {
                return Ok(Ok(()));
            }
            let row = sqlx::query(LOOK.get(d))
                .bind(wait_id)
                .fetch_optional(pool)
                .await?;
            Ok(Err(match row {
                Some(r) if r.int("rechecks")? < max => r
                    .opt_int("last_recheck_at")?
                    .map(|last| (last + min_interval_ms - now).max(1)),
                _ => None,
            }))
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
                     followed_at, follow_verified, finished_at FROM oidc_follow_waits \
                     WHERE id = ? AND finished_at IS NULL AND expires_at > ?",
            postgres: "SELECT id, pending_id, account_id, openid, created_at, expires_at, \
                       followed_at, follow_verified, finished_at FROM oidc_follow_waits \
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
                     expires_at, browser_binding_hash, prompt_none FROM oidc_pending_authorizations \
                     WHERE id = ? AND status = 'pending' AND expires_at > ?",
            postgres: "SELECT id, oidc_client_id, redirect_uri, state, nonce, code_challenge, \
                       code_challenge_method, scope, wechat_state, status, openid, created_at, \
                       expires_at, browser_binding_hash, prompt_none \
                       FROM oidc_pending_authorizations WHERE id = $1 AND status = 'pending' AND expires_at > $2",
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
    /// with `code.openid`, the follow wait (if the login went through one) is finished, the
    /// end user is recorded (`login`, as [`Store::record_end_user_login`]) and the code is
    /// stored. Only if the pending authorization (and wait) are still open and unexpired — so a
    /// replayed callback or a double click cannot issue two codes, and a login that issues no
    /// code records nothing. Returns whether it did.
    pub async fn complete_pending_authorization(
        &self,
        pending_id: &str,
        code: &AuthCode,
        follow_wait_id: Option<&str>,
        login: &EndUserLogin,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .complete_login(pending_id, code, follow_wait_id, login, now)
            .await?
            .is_some())
    }

    /// [`Store::complete_pending_authorization`], telling also whether the login created the
    /// end user (`None`: nothing was completed).
    pub async fn complete_login(
        &self,
        pending_id: &str,
        code: &AuthCode,
        follow_wait_id: Option<&str>,
        login: &EndUserLogin,
        now: i64,
    ) -> Result<Option<CompletedLogin>, StoreError> {
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
        // PostgreSQL, no follow wait: the whole completion is one statement (atomic, one
        // round trip); the user and the code are written only if the pending row was.
        const COMPLETE_PG: &str = "WITH fin AS (UPDATE oidc_pending_authorizations SET status = 'completed', \
             openid = $23 WHERE id = $13 AND status = 'pending' AND expires_at > $10 \
             RETURNING id), \
             usr AS (INSERT INTO end_users (id, account_id, openid, unionid, nickname, avatar_url, \
             subscribed, subscribe_time, subscribe_scene, first_login_at, last_login_at, \
             created_via, created_at, updated_at, subscription_changed_at) \
             SELECT $1, $2, $3, $4, $5, $6, COALESCE($7, FALSE), $8, $9, $10, $10, $11, $10, $10, \
             CASE WHEN $7 IS NULL THEN NULL ELSE $12 END FROM fin \
             ON CONFLICT (account_id, openid) DO UPDATE SET \
             unionid = COALESCE(excluded.unionid, end_users.unionid), \
             nickname = COALESCE(excluded.nickname, end_users.nickname), \
             avatar_url = COALESCE(excluded.avatar_url, end_users.avatar_url), \
             subscribed = COALESCE($7, end_users.subscribed), \
             subscribe_time = COALESCE(excluded.subscribe_time, end_users.subscribe_time), \
             subscribe_scene = COALESCE(excluded.subscribe_scene, end_users.subscribe_scene), \
             subscription_changed_at = CASE WHEN $7 IS NULL THEN end_users.subscription_changed_at \
             ELSE $12 END, \
             first_login_at = COALESCE(end_users.first_login_at, excluded.first_login_at), \
             last_login_at = excluded.last_login_at, \
             updated_at = excluded.updated_at \
             RETURNING id), \
             code AS (INSERT INTO oidc_auth_codes (code_hash, oidc_client_id, account_id, \
             redirect_uri, openid, nonce, code_challenge, code_challenge_method, scope, \
             created_at, expires_at) SELECT $14, $15, $2, $16, $23, $17, $18, $19, $20, $21, $22 \
             FROM fin RETURNING code_hash) \
             SELECT (SELECT COUNT(*) FROM fin) AS finished, (SELECT COUNT(*) FROM usr) AS users, \
             (SELECT COUNT(*) FROM usr WHERE usr.id = $1) AS created, \
             (SELECT COUNT(*) FROM code) AS codes";
        if let (crate::db::Backend::Postgres(pool), None) = (&self.backend, follow_wait_id) {
            let user_id = new_id();
            let row = bind_login!(
                sqlx::query(COMPLETE_PG),
                &user_id,
                &code.account_id,
                login,
                now
            )
            .bind(pending_id)
            .bind(&code.code_hash)
            .bind(&code.oidc_client_id)
            .bind(&code.redirect_uri)
            .bind(code.nonce.as_deref())
            .bind(code.code_challenge.as_deref())
            .bind(code.code_challenge_method.as_deref())
            .bind(&code.scope)
            .bind(code.created_at)
            .bind(code.expires_at)
            .bind(&code.openid)
            .fetch_one(pool)
            .await
            .map_err(|e| on_constraint(e, "authorization code", "oidc client or account"))?;
            let done = row.int("finished")? == 1 && row.int("codes")? == 1;
            return Ok(done.then_some(CompletedLogin {
                user_created: row.int("created")? == 1,
            }));
        }
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
                return Ok(None);
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
                    return Ok(None);
                }
            }
            let user_id = new_id();
            let user = bind_login!(
                sqlx::query(RECORD_LOGIN.get(d)),
                &user_id,
                &code.account_id,
                login,
                now
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| on_constraint(e, "end user", "account"))?;
            // The row carries the id bound here only if this statement inserted it.
            let user_created = user.text("id")? == user_id;
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
            Ok(Some(CompletedLogin { user_created }))
        })
    }
}

/// Records a nonce with the message it was used for (binds: account, push_time, nonce,
/// seen_at, dedup_key); affects no row when the pair was seen before.
const INSERT_NONCE: Sql = Sql {
    sqlite: "INSERT INTO push_nonces (account_id, push_time, nonce, seen_at, dedup_key) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, push_time, nonce) DO NOTHING",
    postgres: "INSERT INTO push_nonces (account_id, push_time, nonce, seen_at, dedup_key) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, push_time, nonce) DO NOTHING",
};

/// [`Store::record_push_with_subscription`] for a push without a subscription or copies, on
/// PostgreSQL: the nonce, the push and the reply route's announcement in one statement (one
/// round trip instead of five with `BEGIN` and `COMMIT`), each insert conditional on the one
/// before it as the transaction's steps are. `None` when the nonce was taken by an attempt that
/// committed after this statement's snapshot (so the message it was used for is not visible
/// here): the transaction, which reads committed rows, then decides.
async fn record_push_in_one_statement(
    pool: &sqlx::PgPool,
    incoming: &IncomingPush<'_>,
    now: i64,
) -> Result<Option<PushRecording>, StoreError> {
    const SQL: &str = "WITH n AS (INSERT INTO push_nonces \
        (account_id, push_time, nonce, seen_at, dedup_key) VALUES ($1, $2, $3, $4, $5) \
        ON CONFLICT (account_id, push_time, nonce) DO NOTHING RETURNING 1), \
        p AS (INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
        received_at, summary) SELECT $1, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM n) \
        ON CONFLICT (account_id, dedup_key) DO NOTHING RETURNING 1), \
        a AS (INSERT INTO push_replies (account_id, dedup_key, route_id, state, started_at) \
        SELECT $1, $5, $11, 'pending', $4 WHERE $11::text IS NOT NULL \
        AND EXISTS (SELECT 1 FROM p) ON CONFLICT (account_id, dedup_key) DO NOTHING) \
        SELECT EXISTS (SELECT 1 FROM n) AS nonce_new, EXISTS (SELECT 1 FROM p) AS first, \
        (SELECT k.dedup_key FROM push_nonces k WHERE k.account_id = $1 AND k.push_time = $2 \
        AND k.nonce = $3) AS stored_key";
    let push = incoming.push;
    let row = sqlx::query(SQL)
        .bind(&push.account_id)
        .bind(incoming.push_time)
        .bind(incoming.nonce)
        .bind(now)
        .bind(&push.dedup_key)
        .bind(&push.msg_type)
        .bind(push.event.as_deref())
        .bind(push.openid.as_deref())
        .bind(push.received_at)
        .bind(&push.summary)
        .bind(incoming.reply_route)
        .fetch_one(pool)
        .await
        .map_err(|e| on_constraint(e, "push", "account"))?;
    Ok(if row.flag("nonce_new")? {
        Some(if row.flag("first")? {
            PushRecording::Processed {
                user_created: false,
                copies_dropped: Vec::new(),
            }
        } else {
            PushRecording::Retry
        })
    } else {
        // The snapshot shows the nonce's row unless another attempt committed it meanwhile.
        match row.opt_text("stored_key")? {
            Some(key) if key == push.dedup_key => Some(PushRecording::Retry),
            Some(_) => Some(PushRecording::NonceReused),
            None => None,
        }
    })
}

/// The message a stored nonce was used for.
const NONCE_KEY: Sql = Sql {
    sqlite: "SELECT dedup_key FROM push_nonces \
             WHERE account_id = ? AND push_time = ? AND nonce = ?",
    postgres: "SELECT dedup_key FROM push_nonces \
               WHERE account_id = $1 AND push_time = $2 AND nonce = $3",
};
