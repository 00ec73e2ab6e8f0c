//! The change feed: how every replica learns what the tenancy layer changed.
//!
//! A change that other replicas must apply (an account disabled or deleted, a secret replaced,
//! an API key revoked, a website edited, "refresh now") is written as a row of
//! `account_changes` in the transaction of the change itself (see [`crate::audit`]), so a
//! change is announced exactly when it commits. Readers ([`ChangeFeed`]) are woken
//!
//! - on PostgreSQL by `NOTIFY wxhub_account_changed` (sent in the same transaction, so it is
//!   delivered at commit), within milliseconds;
//! - in the writing process by an in-memory signal, at once;
//! - in every case by a poll every [`FEED_POLL`], which covers a lost notification and another
//!   process writing an SQLite file (the CLI beside a running server).
//!
//! Rows are read by time with an overlap of [`FEED_OVERLAP`] and filtered by the sequence
//! numbers already seen: PostgreSQL hands out sequence numbers at insert, not at commit, so a
//! transaction that commits late may carry a smaller number than one already read. Applying a
//! change is idempotent (reload the account, forget its keys), and the payload carries nothing
//! but the account id and the kind of change — never a secret.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::db::{Backend, Sql, StoreRow};
use crate::{Store, StoreError};

/// The PostgreSQL channel changes are announced on (the payload is empty: readers read the
/// table).
pub const CHANGE_CHANNEL: &str = "wxhub_account_changed";

/// How often a feed looks at the table when nothing woke it.
pub const FEED_POLL: Duration = Duration::from_secs(1);

/// How far back (by the writers' clock) a feed re-reads, for rows that committed late.
pub const FEED_OVERLAP: Duration = Duration::from_secs(60);

/// How long change rows are kept.
pub const CHANGE_RETENTION: Duration = Duration::from_secs(24 * 3600);

db_enum! {
    /// What changed about an account.
    pub enum ChangeKind {
        /// The account row: enabled, disabled, renamed, deleted.
        Account = "account",
        /// Its AppSecret, push Token or EncodingAESKey.
        Credentials = "credentials",
        /// An API key was created or revoked.
        ApiKeys = "api_keys",
        /// A website (OIDC client) was created, edited, rotated or deleted.
        Websites = "websites",
        /// The login gateway's settings.
        Settings = "settings",
        /// The owner asked for a token refresh now (or the quota was cleared).
        Refresh = "refresh",
    }
}

/// One announced change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub account_id: String,
    pub kind: ChangeKind,
    /// When it was written, by the writer's clock (Unix ms).
    pub at: i64,
}

pub(crate) const INSERT_CHANGE: Sql = Sql {
    sqlite: "INSERT INTO account_changes (account_id, kind, at) VALUES (?, ?, ?)",
    postgres: "INSERT INTO account_changes (account_id, kind, at) VALUES ($1, $2, $3)",
};

/// Inside a transaction `$tx`: writes the change row of `$record` (an `&AuditRecord`) when it
/// is announced, and on PostgreSQL the NOTIFY delivered at commit. Evaluates to whether it
/// wrote one.
macro_rules! write_change {
    ($tx:ident, $dialect:ident, $record:expr, $now:expr) => {{
        let record: &$crate::audit::AuditRecord = $record;
        match (record.announce, record.account_id.as_deref()) {
            (Some(kind), Some(account_id)) => {
                sqlx::query($crate::changes::INSERT_CHANGE.get($dialect))
                    .bind(account_id)
                    .bind($crate::db::DbEnum::as_db(kind))
                    .bind($now)
                    .execute(&mut *$tx)
                    .await?;
                if $dialect == $crate::db::Dialect::Postgres {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind($crate::changes::CHANGE_CHANNEL)
                        .execute(&mut *$tx)
                        .await?;
                }
                true
            }
            _ => false,
        }
    }};
}
pub(crate) use write_change;

fn change_from_row(row: &impl StoreRow) -> Result<Change, sqlx::Error> {
    Ok(Change {
        seq: row.int("seq")?,
        account_id: row.text("account_id")?,
        kind: row.enumerated("kind")?,
        at: row.int("at")?,
    })
}

impl Store {
    /// Wakes this process's feeds after a commit that wrote a change row.
    pub(crate) fn changes_committed(&self) {
        self.change_signal.notify_waiters();
    }

    /// Changes written at or after `from` (Unix ms) with a sequence number above `after_seq`,
    /// in sequence order, at most `limit` (capped at 1000).
    pub async fn list_changes_since(
        &self,
        from: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT seq, account_id, kind, at FROM account_changes \
                     WHERE at >= ? AND seq > ? ORDER BY seq LIMIT ?",
            postgres: "SELECT seq, account_id, kind, at FROM account_changes \
                       WHERE at >= $1 AND seq > $2 ORDER BY seq LIMIT $3",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(from)
                .bind(after_seq)
                .bind(crate::db::page_limit(limit, crate::db::MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(change_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// The time of the newest change row, if any.
    pub async fn latest_change_at(&self) -> Result<Option<i64>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT MAX(at) AS at FROM account_changes",
            postgres: "SELECT MAX(at) AS at FROM account_changes",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .fetch_one(pool)
                .await?
                .opt_int("at")?)
        })
    }

    /// Deletes change rows written before `cutoff`; returns how many.
    pub async fn delete_changes_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM account_changes WHERE at < ?",
            postgres: "DELETE FROM account_changes WHERE at < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// A feed of the changes written from now on, by any process on this database.
    pub async fn change_feed(&self) -> Result<ChangeFeed, StoreError> {
        let listener = match &self.backend {
            Backend::Postgres(pool) => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(CHANGE_CHANNEL).await?;
                Some(listener)
            }
            Backend::Sqlite(_) => None,
        };
        let mut feed = ChangeFeed {
            store: self.clone(),
            listener,
            seen: HashMap::new(),
            high_at: self.latest_change_at().await?.unwrap_or(i64::MIN),
            poll: FEED_POLL,
            swept_at: None,
        };
        // What is already there was applied by whoever loaded the state this process runs on.
        feed.read_unseen().await?;
        Ok(feed)
    }
}

/// The changes announced by every replica, in the order they are seen. See the module docs.
pub struct ChangeFeed {
    store: Store,
    listener: Option<PgListener>,
    /// Sequence numbers read within the overlap window, with their time.
    seen: HashMap<i64, i64>,
    /// The newest change time read so far: the window is measured back from it, so readers
    /// and writers need not share a clock.
    high_at: i64,
    poll: Duration,
    /// When this feed last deleted old rows.
    swept_at: Option<std::time::Instant>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("listening", &self.listener.is_some())
            .field("seen", &self.seen.len())
            .finish()
    }
}

impl ChangeFeed {
    /// Waits for the next changes and returns them (never an empty batch). A database error
    /// is returned as is; the feed stays usable and the next call catches up.
    pub async fn next(&mut self) -> Result<Vec<Change>, StoreError> {
        self.sweep_hourly().await;
        loop {
            // Register for the in-process signal before reading, so a commit between the read
            // and the wait still wakes this feed.
            let signal = self.store.change_signal.clone();
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = self.read_unseen().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let poll = tokio::time::sleep(self.poll);
            match &mut self.listener {
                Some(listener) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = poll => {}
                        received = listener.recv() => {
                            if let Err(error) = received {
                                // The listener reconnects on its next use; the poll covers
                                // what was announced meanwhile.
                                tracing::warn!(%error, "change notification listener failed");
                            }
                        }
                    }
                }
                None => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = poll => {}
                    }
                }
            }
        }
    }

    /// Deletes rows older than [`CHANGE_RETENTION`] once an hour. Every replica does it; the
    /// DELETE is idempotent and cheap.
    async fn sweep_hourly(&mut self) {
        if self
            .swept_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.swept_at = Some(std::time::Instant::now());
        let retention = i64::try_from(CHANGE_RETENTION.as_millis()).unwrap_or(i64::MAX);
        if let Err(error) = self
            .store
            .delete_changes_before(self.high_at.saturating_sub(retention))
            .await
        {
            tracing::warn!(%error, "cannot delete old change rows");
        }
    }

    async fn read_unseen(&mut self) -> Result<Vec<Change>, StoreError> {
        let window = i64::try_from(FEED_OVERLAP.as_millis()).unwrap_or(i64::MAX);
        let from = self.high_at.saturating_sub(window);
        let mut fresh = Vec::new();
        let mut after_seq = i64::MIN;
        loop {
            let page = self.store.list_changes_since(from, after_seq, 1000).await?;
            let full = page.len() == 1000;
            for change in page {
                after_seq = change.seq;
                if self.seen.insert(change.seq, change.at).is_none() {
                    self.high_at = self.high_at.max(change.at);
                    fresh.push(change);
                }
            }
            if !full {
                break;
            }
        }
        let from = self.high_at.saturating_sub(window);
        self.seen.retain(|_, at| *at >= from);
        Ok(fresh)
    }
}
