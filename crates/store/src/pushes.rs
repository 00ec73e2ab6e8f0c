//! Received pushes: WeChat retries a push it got no timely answer for (up to three times), so
//! each push is recorded under a dedup key (`MsgId`, or `FromUserName + CreateTime` for
//! events) and handled only the first time. The gateway records a push together with what it
//! changes, in one transaction (`Store::record_push_with_subscription` in `gateway.rs`).
//!
//! Stored summaries are for the dashboard; callers must not put message content or secrets in
//! them.

use crate::db::{MAX_PAGE, Sql, StoreRow, page_limit};
#[cfg(feature = "test-fixtures")]
use crate::error::on_constraint;
use crate::{Store, StoreError};

/// A push as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPush {
    pub account_id: String,
    pub dedup_key: String,
    pub msg_type: String,
    pub event: Option<String>,
    pub openid: Option<String>,
    pub received_at: i64,
    /// A short description without secrets or message content.
    pub summary: String,
}

fn push_from_row(row: &impl StoreRow) -> Result<ReceivedPush, sqlx::Error> {
    Ok(ReceivedPush {
        account_id: row.text("account_id")?,
        dedup_key: row.text("dedup_key")?,
        msg_type: row.text("msg_type")?,
        event: row.opt_text("event")?,
        openid: row.opt_text("openid")?,
        received_at: row.int("received_at")?,
        summary: row.text("summary")?,
    })
}

impl Store {
    /// Test fixture: records a push unless its dedup key was seen for this account. Returns
    /// `true` the first time and `false` for a retry — never an error for a repeat.
    #[cfg(feature = "test-fixtures")]
    #[doc(hidden)]
    pub async fn record_push_once(&self, push: &ReceivedPush) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
                     received_at, summary) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (account_id, dedup_key) DO NOTHING",
            postgres: "INSERT INTO received_pushes (account_id, dedup_key, msg_type, event, openid, \
                       received_at, summary) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                       ON CONFLICT (account_id, dedup_key) DO NOTHING",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(&push.account_id)
                .bind(&push.dedup_key)
                .bind(&push.msg_type)
                .bind(push.event.as_deref())
                .bind(push.openid.as_deref())
                .bind(push.received_at)
                .bind(&push.summary)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "push", "account"))?
                .rows_affected()
                == 1)
        })
    }

    /// An account's most recent pushes, newest first, at most `limit` (capped at 1000).
    pub async fn list_recent_pushes(
        &self,
        account_id: &str,
        limit: u32,
    ) -> Result<Vec<ReceivedPush>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT account_id, dedup_key, msg_type, event, openid, received_at, summary \
                     FROM received_pushes WHERE account_id = ? \
                     ORDER BY received_at DESC, dedup_key DESC LIMIT ?",
            postgres: "SELECT account_id, dedup_key, msg_type, event, openid, received_at, summary \
                       FROM received_pushes WHERE account_id = $1 \
                       ORDER BY received_at DESC, dedup_key DESC LIMIT $2",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(push_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// Forgets pushes received before `cutoff` (older than any retry window); returns how many.
    pub async fn delete_pushes_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM received_pushes WHERE received_at < ?",
            postgres: "DELETE FROM received_pushes WHERE received_at < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}
