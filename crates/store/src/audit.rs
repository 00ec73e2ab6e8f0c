//! The audit log: who did what to which account and object, and when.
//!
//! Entries are append-only and outlive what they describe (no foreign keys), so the log still
//! says who deleted an account after the account is gone. A change and its entry are written
//! in one transaction: the store functions that change what the tenancy layer manages take an
//! [`AuditRecord`] and write it with [`commit_audited!`], so a change is never without its
//! entry and an entry never describes a change that was rolled back. Callers must not put
//! secrets in `details`; it is shown to owners and operators as is.

use crate::changes::ChangeKind;
use crate::db::{MAX_PAGE, Sql, StoreRow, page_limit};
use crate::{Store, StoreError};

/// One audit entry, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// UUIDv7: ids sort by time.
    pub id: String,
    /// Who: a user id, `cli`, `system` or `scheduler`.
    pub actor: String,
    /// What, as a stable dotted name: `account.register`, `api_key.revoke`.
    pub action: String,
    /// The account concerned, if any.
    pub account_id: Option<String>,
    /// The object within it, if any (a key id, a client id, a user id).
    pub target: Option<String>,
    pub at: i64,
    /// A before/after summary without secrets.
    pub details: serde_json::Value,
    /// The actor's email, when the actor is a person who still exists.
    pub actor_email: Option<String>,
    /// The account's AppID, when it still exists (an account's deletion entry keeps its
    /// AppID in `details`).
    pub appid: Option<String>,
}

/// An entry to write together with a change, and whether other replicas must hear of it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub actor: String,
    pub action: String,
    pub account_id: Option<String>,
    pub target: Option<String>,
    pub details: serde_json::Value,
    /// Set when every replica must apply the change (it is then also written to the change
    /// feed, see [`crate::changes`]). Needs `account_id`.
    pub announce: Option<ChangeKind>,
}

impl AuditRecord {
    /// An entry by `actor` for `action`, about nothing in particular yet.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            account_id: None,
            target: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
            announce: None,
        }
    }

    /// About this account.
    pub fn account(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = Some(account_id.into());
        self
    }

    /// About this object within the account.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// With this summary (no secrets).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Announced to every replica as a change of `kind` to the account.
    pub fn announce(mut self, kind: ChangeKind) -> Self {
        self.announce = Some(kind);
        self
    }
}

/// Which entries to list; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub account_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Entries at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Entries before this time (Unix ms).
    pub until: Option<i64>,
}

pub(crate) const INSERT_AUDIT: Sql = Sql {
    sqlite: "INSERT INTO audit_log (id, actor, action, account_id, target, at, details) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
    postgres: "INSERT INTO audit_log (id, actor, action, account_id, target, at, details) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)",
};

/// Writes `$record` (an `&AuditRecord`) into the transaction `$tx`, with its change-feed row
/// when it is announced, commits, and wakes this process's change-feed readers. Used inside
/// an [`on_backend!`] body of a function returning `Result<_, StoreError>`.
macro_rules! commit_audited {
    ($store:expr, $tx:ident, $dialect:ident, $record:expr, $now:expr) => {{
        let record: &$crate::audit::AuditRecord = $record;
        sqlx::query($crate::audit::INSERT_AUDIT.get($dialect))
            .bind($crate::db::new_id())
            .bind(&record.actor)
            .bind(&record.action)
            .bind(record.account_id.as_deref())
            .bind(record.target.as_deref())
            .bind($now)
            .bind(record.details.to_string())
            .execute(&mut *$tx)
            .await?;
        let announced = $crate::changes::write_change!($tx, $dialect, record, $now);
        $tx.commit().await?;
        if announced {
            $store.changes_committed();
        }
    }};
}

fn audit_from_row(row: &impl StoreRow) -> Result<AuditEntry, sqlx::Error> {
    let details = row.text("details")?;
    Ok(AuditEntry {
        id: row.text("id")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        account_id: row.opt_text("account_id")?,
        target: row.opt_text("target")?,
        at: row.int("at")?,
        details: serde_json::from_str(&details).map_err(|e| sqlx::Error::ColumnDecode {
            index: "details".to_owned(),
            source: Box::new(e),
        })?,
        actor_email: row.opt_text("actor_email")?,
        appid: row.opt_text("appid")?,
    })
}

impl Store {
    /// Appends an entry on its own, for an action that changes nothing in the database (a
    /// WeChat call such as clearing the quota) and for tests. Announces it when asked.
    pub async fn append_audit(&self, record: &AuditRecord, now: i64) -> Result<(), StoreError> {
        on_backend!(self, |pool, d| {
            use crate::db::BeginWrite;
            let mut tx = pool.begin_write().await?;
            commit_audited!(self, tx, d, record, now);
            Ok(())
        })
    }

    /// Entries matching `filter`, newest first, older than the entry `before_id` when given
    /// (keyset pagination), at most `limit` (capped at 1000).
    pub async fn list_audit_page(
        &self,
        filter: &AuditFilter,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // UUIDv7 text sorts by time; '~' sorts after every id, so "no cursor" lists from the top.
        const SQL: Sql = Sql {
            sqlite: "SELECT l.id, l.actor, l.action, l.account_id, l.target, l.at, l.details, \
                     u.email AS actor_email, a.appid AS appid FROM audit_log l \
                     LEFT JOIN users u ON u.id = l.actor LEFT JOIN accounts a ON a.id = l.account_id \
                     WHERE l.id < ?1 AND (?2 IS NULL OR l.account_id = ?2) \
                     AND (?3 IS NULL OR l.actor = ?3) AND (?4 IS NULL OR l.action = ?4) \
                     AND l.at >= ?5 AND l.at < ?6 ORDER BY l.id DESC LIMIT ?7",
            postgres: "SELECT l.id, l.actor, l.action, l.account_id, l.target, l.at, l.details, \
                       u.email AS actor_email, a.appid AS appid FROM audit_log l \
                       LEFT JOIN users u ON u.id = l.actor \
                       LEFT JOIN accounts a ON a.id = l.account_id \
                       WHERE l.id < $1 AND ($2::TEXT IS NULL OR l.account_id = $2) \
                       AND ($3::TEXT IS NULL OR l.actor = $3) AND ($4::TEXT IS NULL OR l.action = $4) \
                       AND l.at >= $5 AND l.at < $6 ORDER BY l.id DESC LIMIT $7",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(before_id.unwrap_or("~"))
                .bind(filter.account_id.as_deref())
                .bind(filter.actor.as_deref())
                .bind(filter.action.as_deref())
                .bind(filter.from.unwrap_or(i64::MIN))
                .bind(filter.until.unwrap_or(i64::MAX))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
        })
    }
}
