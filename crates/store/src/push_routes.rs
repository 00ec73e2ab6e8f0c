//! Push routes to owners' own servers: the routes themselves, the durable queue of copies, the
//! replies of reply routes (single flight across replicas) and each route's last failures.
//!
//! Route credentials, queued push bodies and stored replies arrive as vault ciphertext (sealed
//! under the account's data key by the caller); nothing here sees them in the clear. Claiming
//! a copy is a conditional UPDATE on its lease, so replicas share the queue without a lock.

use crate::audit::AuditRecord;
use crate::db::{Backend, BeginWrite, DbEnum, Sql, StoreRow, page_limit};
use crate::error::on_constraint;
use crate::gateway::PushMode;
use crate::{Store, StoreError};

db_enum! {
    /// How a route receives a push.
    pub enum Delivery {
        /// Synchronously, its answer returned to WeChat as the passive reply.
        Reply = "reply",
        /// Asynchronously, from the durable queue; its answer is ignored.
        Copy = "copy",
    }
}

/// Several pushes' replies, done: one statement for a whole batch (rows as one JSON array of
/// `[account_id, dedup_key, hex of the sealed XML or null]` on SQLite, arrays on PostgreSQL).
/// One statement rather than one per reply because the batch is written while the push
/// callback records new pushes: on SQLite the batch holds the write lock throughout, and one
/// statement per reply (a hand-over to the connection's thread each) held it for
/// milliseconds at a few hundred replies a second (docs/performance.md, push routes).
const FINISH_REPLIES: Sql = Sql {
    sqlite: "UPDATE push_replies SET state = 'done', reply = unhex(r.value ->> 2), \
             finished_at = ?2 FROM json_each(?1) AS r \
             WHERE push_replies.account_id = r.value ->> 0 \
             AND push_replies.dedup_key = r.value ->> 1",
    postgres: "UPDATE push_replies p SET state = 'done', reply = r.reply, finished_at = $4 \
               FROM unnest($1::text[], $2::text[], $3::bytea[]) AS r(account_id, dedup_key, reply) \
               WHERE p.account_id = r.account_id AND p.dedup_key = r.dedup_key",
};

/// Replies per statement of [`Store::finish_push_replies`].
const REPLIES_PER_STATEMENT: usize = 1000;

/// Lowercase hex, for blobs inside SQLite JSON (`unhex`).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// One route, credentials sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRoute {
    pub id: String,
    pub account_id: String,
    /// Routes are tried in ascending position (then id).
    pub position: i64,
    pub target_url: String,
    /// `MsgType` to match (case-insensitive); `None`: any.
    pub match_msg_type: Option<String>,
    /// `Event` to match (case-insensitive); `None`: any.
    pub match_event: Option<String>,
    /// `EventKey` prefix to match; `None`: any.
    pub match_event_key_prefix: Option<String>,
    pub delivery: Delivery,
    /// How the owner's server expects pushes; `None`: safe with an EncodingAESKey, else plain
    /// (for the relay route: the account's own mode).
    pub push_mode: Option<PushMode>,
    /// Sealed Token (`None` only on the relay route).
    pub token: Option<Vec<u8>>,
    /// Sealed EncodingAESKey.
    pub encoding_aes_key: Option<Vec<u8>>,
    /// The account's relay route: signs with the account's own push credentials.
    pub relay: bool,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The column names a route is read from: its own, or prefixed in a join
/// ([`Store::push_account`]).
pub(crate) struct RouteColumns {
    pub(crate) id: &'static str,
    account_id: &'static str,
    position: &'static str,
    target_url: &'static str,
    match_msg_type: &'static str,
    match_event: &'static str,
    match_event_key_prefix: &'static str,
    delivery: &'static str,
    push_mode: &'static str,
    token: &'static str,
    encoding_aes_key: &'static str,
    relay: &'static str,
    enabled: &'static str,
    created_at: &'static str,
    updated_at: &'static str,
}

/// The select list of a route's columns in `$table`, named with `$prefix`.
macro_rules! route_select {
    ($table:literal, $prefix:literal) => {
        concat!(
            $table,
            ".id AS ",
            $prefix,
            "id, ",
            $table,
            ".account_id AS ",
            $prefix,
            "account_id, ",
            $table,
            ".position AS ",
            $prefix,
            "position, ",
            $table,
            ".target_url AS ",
            $prefix,
            "target_url, ",
            $table,
            ".match_msg_type AS ",
            $prefix,
            "match_msg_type, ",
            $table,
            ".match_event AS ",
            $prefix,
            "match_event, ",
            $table,
            ".match_event_key_prefix AS ",
            $prefix,
            "match_event_key_prefix, ",
            $table,
            ".delivery AS ",
            $prefix,
            "delivery, ",
            $table,
            ".push_mode AS ",
            $prefix,
            "push_mode, ",
            $table,
            ".token AS ",
            $prefix,
            "token, ",
            $table,
            ".encoding_aes_key AS ",
            $prefix,
            "encoding_aes_key, ",
            $table,
            ".relay AS ",
            $prefix,
            "relay, ",
            $table,
            ".enabled AS ",
            $prefix,
            "enabled, ",
            $table,
            ".created_at AS ",
            $prefix,
            "created_at, ",
            $table,
            ".updated_at AS ",
            $prefix,
            "updated_at"
        )
    };
}

/// The [`RouteColumns`] of [`route_select!`] with `$prefix`.
macro_rules! route_columns {
    ($prefix:literal) => {
        RouteColumns {
            id: concat!($prefix, "id"),
            account_id: concat!($prefix, "account_id"),
            position: concat!($prefix, "position"),
            target_url: concat!($prefix, "target_url"),
            match_msg_type: concat!($prefix, "match_msg_type"),
            match_event: concat!($prefix, "match_event"),
            match_event_key_prefix: concat!($prefix, "match_event_key_prefix"),
            delivery: concat!($prefix, "delivery"),
            push_mode: concat!($prefix, "push_mode"),
            token: concat!($prefix, "token"),
            encoding_aes_key: concat!($prefix, "encoding_aes_key"),
            relay: concat!($prefix, "relay"),
            enabled: concat!($prefix, "enabled"),
            created_at: concat!($prefix, "created_at"),
            updated_at: concat!($prefix, "updated_at"),
        }
    };
}

/// A route's own columns.
const ROUTE: RouteColumns = route_columns!("");
/// A route's columns in a join with the account's (`route_select!("r", "r_")`), where `id`
/// and the times are the account's.
pub(crate) const JOINED_ROUTE: RouteColumns = route_columns!("r_");

pub(crate) fn route_from_row(
    row: &impl StoreRow,
    c: &RouteColumns,
) -> Result<PushRoute, sqlx::Error> {
    Ok(PushRoute {
        id: row.text(c.id)?,
        account_id: row.text(c.account_id)?,
        position: row.int(c.position)?,
        target_url: row.text(c.target_url)?,
        match_msg_type: row.opt_text(c.match_msg_type)?,
        match_event: row.opt_text(c.match_event)?,
        match_event_key_prefix: row.opt_text(c.match_event_key_prefix)?,
        delivery: row.enumerated(c.delivery)?,
        push_mode: match row.opt_text(c.push_mode)? {
            Some(_) => Some(row.enumerated(c.push_mode)?),
            None => None,
        },
        token: row.opt_bytes(c.token)?,
        encoding_aes_key: row.opt_bytes(c.encoding_aes_key)?,
        relay: row.flag(c.relay)?,
        enabled: row.flag(c.enabled)?,
        created_at: row.int(c.created_at)?,
        updated_at: row.int(c.updated_at)?,
    })
}

/// A copy to queue.
#[derive(Debug, Clone)]
pub struct NewCopy<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub route_id: &'a str,
    pub dedup_key: &'a str,
    /// The sender, for keeping each user's copies in order.
    pub openid: Option<&'a str>,
    /// Sealed plain message XML.
    pub body: &'a [u8],
}

/// What queueing a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// This route already has a copy of this push (WeChat's retry).
    Duplicate,
    /// The account already has `limit` copies waiting: not queued.
    Full,
}

/// A copy claimed for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCopy {
    pub id: String,
    pub account_id: String,
    pub route_id: String,
    pub dedup_key: String,
    pub openid: Option<String>,
    pub body: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: i64,
    pub created_at: i64,
}

/// A dead letter: a copy whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadCopy {
    pub id: String,
    pub route_id: String,
    pub dedup_key: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

/// One recorded failure of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    pub route_id: String,
    pub at: i64,
    /// The copy it was about (copy routes).
    pub copy_id: Option<String>,
    pub cause: String,
}

/// Where a push's reply stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredReply {
    /// The reply route is being called (by `route_id`, since `started_at`).
    Pending { started_at: i64 },
    /// Done: the sealed reply XML, or `None` for `success`.
    Done(Option<Vec<u8>>),
}

/// Queues a copy while the account has fewer than the limit waiting (id, account, route,
/// dedup key, openid, body, now, limit); nothing for a route that has this push already.
pub(crate) const ENQUEUE_COPY: Sql = Sql {
    sqlite: "INSERT INTO push_copies (id, account_id, route_id, dedup_key, openid, body, \
             state, attempts, next_attempt_at, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7 \
             WHERE (SELECT COUNT(*) FROM push_copies WHERE account_id = ?2 \
             AND state = 'pending') < ?8 \
             ON CONFLICT (route_id, dedup_key) DO NOTHING",
    postgres: "INSERT INTO push_copies (id, account_id, route_id, dedup_key, openid, body, \
               state, attempts, next_attempt_at, created_at) \
               SELECT $1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7 \
               WHERE (SELECT COUNT(*) FROM push_copies WHERE account_id = $2 \
               AND state = 'pending') < $8 \
               ON CONFLICT (route_id, dedup_key) DO NOTHING",
};

/// Announces a reply route's call of a push (account, dedup key, route, now).
pub(crate) const ANNOUNCE_REPLY: Sql = Sql {
    sqlite: "INSERT INTO push_replies (account_id, dedup_key, route_id, state, started_at) \
             VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (account_id, dedup_key) DO NOTHING",
    postgres: "INSERT INTO push_replies (account_id, dedup_key, route_id, state, started_at) \
               VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (account_id, dedup_key) DO NOTHING",
};

/// Failures kept per route.
pub const FAILURES_KEPT: i64 = 20;

impl Store {
    /// The account's routes in order.
    pub async fn push_routes(&self, account_id: &str) -> Result<Vec<PushRoute>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                route_select!("push_routes", ""),
                " FROM push_routes WHERE account_id = ? ORDER BY position, id"
            ),
            postgres: concat!(
                "SELECT ",
                route_select!("push_routes", ""),
                " FROM push_routes WHERE account_id = $1 ORDER BY position, id"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(|r| route_from_row(r, &ROUTE))
                .collect::<Result<_, _>>()?)
        })
    }

    /// One route of the account.
    pub async fn push_route(
        &self,
        account_id: &str,
        route_id: &str,
    ) -> Result<Option<PushRoute>, StoreError> {
        Ok(self
            .push_routes(account_id)
            .await?
            .into_iter()
            .find(|r| r.id == route_id))
    }

    /// Stores a new route (or, with `replace`, every field of an existing one), with its audit
    /// entry.
    pub async fn save_push_route(
        &self,
        route: &PushRoute,
        replace: bool,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        const INSERT: Sql = Sql {
            sqlite: "INSERT INTO push_routes (id, account_id, position, target_url, match_msg_type, \
                     match_event, match_event_key_prefix, delivery, push_mode, token, \
                     encoding_aes_key, relay, enabled, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            postgres: "INSERT INTO push_routes (id, account_id, position, target_url, match_msg_type, \
                       match_event, match_event_key_prefix, delivery, push_mode, token, \
                       encoding_aes_key, relay, enabled, created_at, updated_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        };
        const UPDATE: Sql = Sql {
            sqlite: "UPDATE push_routes SET position = ?3, target_url = ?4, match_msg_type = ?5, \
                     match_event = ?6, match_event_key_prefix = ?7, delivery = ?8, push_mode = ?9, \
                     token = ?10, encoding_aes_key = ?11, relay = ?12, enabled = ?13, \
                     updated_at = ?15 WHERE id = ?1 AND account_id = ?2 AND created_at = ?14",
            postgres: "UPDATE push_routes SET position = $3, target_url = $4, match_msg_type = $5, \
                       match_event = $6, match_event_key_prefix = $7, delivery = $8, push_mode = $9, \
                       token = $10, encoding_aes_key = $11, relay = $12, enabled = $13, \
                       updated_at = $15 WHERE id = $1 AND account_id = $2 AND created_at = $14",
        };
        let sql = if replace { &UPDATE } else { &INSERT };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(sql.get(d))
                .bind(&route.id)
                .bind(&route.account_id)
                .bind(route.position)
                .bind(&route.target_url)
                .bind(route.match_msg_type.as_deref())
                .bind(route.match_event.as_deref())
                .bind(route.match_event_key_prefix.as_deref())
                .bind(route.delivery.as_db())
                .bind(route.push_mode.map(PushMode::as_db))
                .bind(route.token.as_deref())
                .bind(route.encoding_aes_key.as_deref())
                .bind(route.relay)
                .bind(route.enabled)
                .bind(route.created_at)
                .bind(route.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "push route", "account"))?
                .rows_affected();
            if done != 1 {
                tx.rollback().await?;
                return Err(StoreError::NotFound { what: "push route" });
            }
            commit_audited!(self, tx, d, record, route.updated_at);
            Ok(())
        })
    }

    /// Deletes a route with its queued copies and failures; returns whether it existed.
    pub async fn delete_push_route(
        &self,
        account_id: &str,
        route_id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM push_routes WHERE account_id = ? AND id = ?",
            postgres: "DELETE FROM push_routes WHERE account_id = $1 AND id = $2",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let gone = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(route_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !gone {
                tx.rollback().await?;
                return Ok(false);
            }
            commit_audited!(self, tx, d, record, now);
            Ok(true)
        })
    }

    /// Queues a copy unless the route has one of this push already or the account has
    /// `limit` copies waiting.
    pub async fn enqueue_push_copy(
        &self,
        copy: &NewCopy<'_>,
        limit: i64,
        now: i64,
    ) -> Result<Enqueued, StoreError> {
        const INSERT: Sql = ENQUEUE_COPY;
        const EXISTS: Sql = Sql {
            sqlite: "SELECT id FROM push_copies WHERE route_id = ? AND dedup_key = ?",
            postgres: "SELECT id FROM push_copies WHERE route_id = $1 AND dedup_key = $2",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let queued = sqlx::query(INSERT.get(d))
                .bind(copy.id)
                .bind(copy.account_id)
                .bind(copy.route_id)
                .bind(copy.dedup_key)
                .bind(copy.openid)
                .bind(copy.body)
                .bind(now)
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "push copy", "route"))?
                .rows_affected()
                == 1;
            let outcome = if queued {
                Enqueued::Queued
            } else if sqlx::query(EXISTS.get(d))
                .bind(copy.route_id)
                .bind(copy.dedup_key)
                .fetch_optional(&mut *tx)
                .await?
                .is_some()
            {
                Enqueued::Duplicate
            } else {
                Enqueued::Full
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Claims up to `limit` due copies until `lease_until`. A copy is due when it waits, its
    /// next attempt time has come, nobody holds its lease, no older copy of the same route
    /// and user waits (so each user's copies arrive in order), and its route is enabled (a
    /// disabled route's copies wait for it, neither delivered nor spent on failed attempts).
    pub async fn claim_push_copies(
        &self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<QueuedCopy>, StoreError> {
        const DUE: Sql = Sql {
            sqlite: "SELECT c.id FROM push_copies c WHERE c.state = 'pending' \
                     AND c.next_attempt_at <= ?1 AND (c.lease_until IS NULL OR c.lease_until <= ?1) \
                     AND NOT EXISTS (SELECT 1 FROM push_copies o WHERE o.route_id = c.route_id \
                     AND o.openid = c.openid AND o.state = 'pending' AND o.id < c.id) \
                     AND EXISTS (SELECT 1 FROM push_routes r WHERE r.id = c.route_id AND r.enabled = 1) \
                     ORDER BY c.next_attempt_at, c.id LIMIT ?2",
            postgres: "SELECT c.id FROM push_copies c WHERE c.state = 'pending' \
                       AND c.next_attempt_at <= $1 AND (c.lease_until IS NULL OR c.lease_until <= $1) \
                       AND NOT EXISTS (SELECT 1 FROM push_copies o WHERE o.route_id = c.route_id \
                       AND o.openid = c.openid AND o.state = 'pending' AND o.id < c.id) \
                       AND EXISTS (SELECT 1 FROM push_routes r WHERE r.id = c.route_id AND r.enabled) \
                       ORDER BY c.next_attempt_at, c.id LIMIT $2",
        };
        const CLAIM: Sql = Sql {
            sqlite: "UPDATE push_copies SET lease_until = ?1 WHERE id = ?2 AND state = 'pending' \
                     AND (lease_until IS NULL OR lease_until <= ?3) \
                     RETURNING id, account_id, route_id, dedup_key, openid, body, attempts, created_at",
            postgres: "UPDATE push_copies SET lease_until = $1 WHERE id = $2 AND state = 'pending' \
                       AND (lease_until IS NULL OR lease_until <= $3) \
                       RETURNING id, account_id, route_id, dedup_key, openid, body, attempts, created_at",
        };
        on_backend!(self, |pool, d| {
            let ids: Vec<String> = sqlx::query(DUE.get(d))
                .bind(now)
                .bind(page_limit(limit, 1000))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| r.text("id"))
                .collect::<Result<_, _>>()?;
            let mut claimed = Vec::new();
            for id in ids {
                // Each claim is its own conditional UPDATE: of two replicas racing for a copy,
                // one updates the row and the other matches nothing.
                let row = sqlx::query(CLAIM.get(d))
                    .bind(lease_until)
                    .bind(&id)
                    .bind(now)
                    .fetch_optional(pool)
                    .await?;
                if let Some(r) = row {
                    claimed.push(QueuedCopy {
                        id: r.text("id")?,
                        account_id: r.text("account_id")?,
                        route_id: r.text("route_id")?,
                        dedup_key: r.text("dedup_key")?,
                        openid: r.opt_text("openid")?,
                        body: r.bytes("body")?,
                        attempts: r.int("attempts")?,
                        created_at: r.int("created_at")?,
                    });
                }
            }
            Ok(claimed)
        })
    }

    /// A delivered copy: removed with its body.
    pub async fn finish_push_copy(&self, id: &str) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM push_copies WHERE id = ?",
            postgres: "DELETE FROM push_copies WHERE id = $1",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d)).bind(id).execute(pool).await?;
            Ok(())
        })
    }

    /// A failed attempt: retried at `next_attempt_at`, or dead-lettered when `None`.
    pub async fn fail_push_copy(
        &self,
        id: &str,
        attempts: i64,
        next_attempt_at: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE push_copies SET attempts = ?1, state = ?2, next_attempt_at = \
                     COALESCE(?3, next_attempt_at), lease_until = NULL, last_error = ?4 WHERE id = ?5",
            postgres: "UPDATE push_copies SET attempts = $1, state = $2, next_attempt_at = \
                       COALESCE($3, next_attempt_at), lease_until = NULL, last_error = $4 WHERE id = $5",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(attempts)
                .bind(if next_attempt_at.is_some() {
                    "pending"
                } else {
                    "dead"
                })
                .bind(next_attempt_at)
                .bind(error)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Puts a dead letter back in the queue, due now, with fresh attempts; returns whether
    /// there was such a dead letter.
    pub async fn resend_push_copy(
        &self,
        account_id: &str,
        copy_id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE push_copies SET state = 'pending', attempts = 0, next_attempt_at = ?, \
                     lease_until = NULL WHERE account_id = ? AND id = ? AND state = 'dead'",
            postgres: "UPDATE push_copies SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                       lease_until = NULL WHERE account_id = $2 AND id = $3 AND state = 'dead'",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let found = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(account_id)
                .bind(copy_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !found {
                tx.rollback().await?;
                return Ok(false);
            }
            commit_audited!(self, tx, d, record, now);
            Ok(true)
        })
    }

    /// The account's dead letters, newest first.
    pub async fn dead_push_copies(
        &self,
        account_id: &str,
        limit: u32,
    ) -> Result<Vec<DeadCopy>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT id, route_id, dedup_key, attempts, last_error, created_at \
                     FROM push_copies WHERE account_id = ? AND state = 'dead' \
                     ORDER BY id DESC LIMIT ?",
            postgres: "SELECT id, route_id, dedup_key, attempts, last_error, created_at \
                       FROM push_copies WHERE account_id = $1 AND state = 'dead' \
                       ORDER BY id DESC LIMIT $2",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(page_limit(limit, 1000))
                .fetch_all(pool)
                .await?;
            let dead = rows
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(DeadCopy {
                        id: r.text("id")?,
                        route_id: r.text("route_id")?,
                        dedup_key: r.text("dedup_key")?,
                        attempts: r.int("attempts")?,
                        last_error: r.opt_text("last_error")?,
                        created_at: r.int("created_at")?,
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(dead)
        })
    }

    /// How many copies the account has waiting (not dead).
    pub async fn pending_push_copies(&self, account_id: &str) -> Result<i64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT COUNT(*) AS n FROM push_copies WHERE account_id = ? AND state = 'pending'",
            postgres: "SELECT COUNT(*) AS n FROM push_copies WHERE account_id = $1 AND state = 'pending'",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_one(pool)
                .await?;
            Ok(row.int("n")?)
        })
    }

    /// Marks that `route_id` is computing the reply to a push; `false` when another attempt of
    /// the push already did (WeChat's retry, on any replica). The push callback announces it
    /// with the push itself (`IncomingPush::reply_route`); this is the same on its own.
    pub async fn begin_push_reply(
        &self,
        account_id: &str,
        dedup_key: &str,
        route_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(ANNOUNCE_REPLY.get(d))
                .bind(account_id)
                .bind(dedup_key)
                .bind(route_id)
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "push reply", "account"))?
                .rows_affected()
                == 1)
        })
    }

    /// Stores several pushes' replies (account, dedup key, sealed XML or `None` for
    /// `success`) in one transaction.
    pub async fn finish_push_replies(
        &self,
        replies: &[(&str, &str, Option<&[u8]>)],
        now: i64,
    ) -> Result<(), StoreError> {
        if replies.is_empty() {
            return Ok(());
        }
        self.count_operation();
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in replies.chunks(REPLIES_PER_STATEMENT) {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|(account_id, dedup_key, reply)| {
                            serde_json::json!([account_id, dedup_key, reply.map(hex)])
                        })
                        .collect();
                    sqlx::query(FINISH_REPLIES.sqlite)
                        .bind(serde_json::Value::Array(rows).to_string())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                for chunk in replies.chunks(REPLIES_PER_STATEMENT) {
                    let accounts: Vec<&str> = chunk.iter().map(|r| r.0).collect();
                    let keys: Vec<&str> = chunk.iter().map(|r| r.1).collect();
                    let bodies: Vec<Option<&[u8]>> = chunk.iter().map(|r| r.2).collect();
                    sqlx::query(FINISH_REPLIES.postgres)
                        .bind(accounts)
                        .bind(keys)
                        .bind(bodies)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// The reply of a push, if a reply route was called for it.
    pub async fn push_reply(
        &self,
        account_id: &str,
        dedup_key: &str,
    ) -> Result<Option<StoredReply>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT state, reply, started_at FROM push_replies \
                     WHERE account_id = ? AND dedup_key = ?",
            postgres: "SELECT state, reply, started_at FROM push_replies \
                       WHERE account_id = $1 AND dedup_key = $2",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(dedup_key)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                None => None,
                Some(r) if r.text("state")? == "done" => {
                    Some(StoredReply::Done(r.opt_bytes("reply")?))
                }
                Some(r) => Some(StoredReply::Pending {
                    started_at: r.int("started_at")?,
                }),
            })
        })
    }

    /// Deletes dead letters made before `cutoff`, at most `batch` rows a statement and
    /// `max_batches` statements ([`Store::delete_in_batches`]); returns how many.
    pub async fn delete_dead_push_copies_before(
        &self,
        cutoff: i64,
        batch: u32,
        max_batches: u32,
    ) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM push_copies WHERE id IN (SELECT id FROM push_copies \
                     WHERE state = 'dead' AND created_at < ? LIMIT ?)",
            postgres: "DELETE FROM push_copies WHERE id IN (SELECT id FROM push_copies \
                       WHERE state = 'dead' AND created_at < $1 LIMIT $2)",
        };
        self.delete_in_batches(&SQL, cutoff, batch, max_batches)
            .await
    }

    /// Forgets replies started before `cutoff` (WeChat stopped retrying long ago).
    pub async fn delete_push_replies_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM push_replies WHERE started_at < ?",
            postgres: "DELETE FROM push_replies WHERE started_at < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Records a failure of a route, keeping its last [`FAILURES_KEPT`].
    pub async fn record_push_route_failure(
        &self,
        failure: &RouteFailure,
        account_id: &str,
    ) -> Result<(), StoreError> {
        const INSERT: Sql = Sql {
            sqlite: "INSERT INTO push_route_failures (id, route_id, account_id, at, copy_id, cause) \
                     SELECT ?, id, account_id, ?, ?, ? FROM push_routes WHERE id = ? AND account_id = ?",
            postgres: "INSERT INTO push_route_failures (id, route_id, account_id, at, copy_id, cause) \
                       SELECT $1, id, account_id, $2, $3, $4 FROM push_routes WHERE id = $5 AND account_id = $6",
        };
        const TRIM: Sql = Sql {
            sqlite: "DELETE FROM push_route_failures WHERE route_id = ?1 AND id NOT IN \
                     (SELECT id FROM push_route_failures WHERE route_id = ?1 \
                     ORDER BY at DESC, id DESC LIMIT ?2)",
            postgres: "DELETE FROM push_route_failures WHERE route_id = $1 AND id NOT IN \
                       (SELECT id FROM push_route_failures WHERE route_id = $1 \
                       ORDER BY at DESC, id DESC LIMIT $2)",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(INSERT.get(d))
                .bind(crate::new_id())
                .bind(failure.at)
                .bind(failure.copy_id.as_deref())
                .bind(&failure.cause)
                .bind(&failure.route_id)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(TRIM.get(d))
                .bind(&failure.route_id)
                .bind(FAILURES_KEPT)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The account's recorded route failures, newest first.
    pub async fn push_route_failures(
        &self,
        account_id: &str,
    ) -> Result<Vec<RouteFailure>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT route_id, at, copy_id, cause FROM push_route_failures \
                     WHERE account_id = ? ORDER BY at DESC, id DESC",
            postgres: "SELECT route_id, at, copy_id, cause FROM push_route_failures \
                       WHERE account_id = $1 ORDER BY at DESC, id DESC",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            let failures = rows
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>(RouteFailure {
                        route_id: r.text("route_id")?,
                        at: r.int("at")?,
                        copy_id: r.opt_text("copy_id")?,
                        cause: r.text("cause")?,
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(failures)
        })
    }
}

/// The vault field a route's Token is sealed under (bound to the route, so a ciphertext moved
/// to another route fails to open).
pub fn token_field(route_id: &str) -> String {
    format!("push_route_token:{route_id}")
}

/// The vault field a route's EncodingAESKey is sealed under.
pub fn aes_key_field(route_id: &str) -> String {
    format!("push_route_aes_key:{route_id}")
}

/// The vault field a queued copy's body is sealed under.
pub fn copy_field(copy_id: &str) -> String {
    format!("push_copy:{copy_id}")
}

/// The vault field a stored reply is sealed under.
pub fn reply_field(dedup_key: &str) -> String {
    format!("push_reply:{dedup_key}")
}
