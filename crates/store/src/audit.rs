//! The audit log: who did what to which target, and when.
//!
//! Entries are append-only and outlive what they describe (no foreign keys), so the log still
//! says who deleted an account after the account is gone. Callers must not pass secrets in
//! `details`; it is shown to operators as is.

use crate::db::{MAX_PAGE, Sql, StoreRow, new_id, page_limit};
use crate::{Store, StoreError};

/// One audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// UUIDv7: ids sort by time.
    pub id: String,
    /// Who: a user id, `system`, or `scheduler`.
    pub actor: String,
    /// What, as a stable dotted name: `account.create`, `key.rotate`.
    pub action: String,
    /// Which object, if any (an account id, a user id).
    pub target: Option<String>,
    pub at: i64,
    /// Structured details without secrets.
    pub details: serde_json::Value,
}

fn audit_from_row(row: &impl StoreRow) -> Result<AuditEntry, sqlx::Error> {
    let details = row.text("details")?;
    Ok(AuditEntry {
        id: row.text("id")?,
        actor: row.text("actor")?,
        action: row.text("action")?,
        target: row.opt_text("target")?,
        at: row.int("at")?,
        details: serde_json::from_str(&details).map_err(|e| sqlx::Error::ColumnDecode {
            index: "details".to_owned(),
            source: Box::new(e),
        })?,
    })
}

impl Store {
    /// Appends an entry; returns its id.
    pub async fn append_audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        details: &serde_json::Value,
        now: i64,
    ) -> Result<String, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO audit_log (id, actor, action, target, at, details) \
                     VALUES (?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO audit_log (id, actor, action, target, at, details) \
                       VALUES ($1, $2, $3, $4, $5, $6)",
        };
        let id = new_id();
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&id)
                .bind(actor)
                .bind(action)
                .bind(target)
                .bind(now)
                .bind(details.to_string())
                .execute(pool)
                .await?;
        });
        Ok(id)
    }

    /// Entries newest first, older than the entry `before_id` when given, at most `limit`
    /// (capped at 1000).
    pub async fn list_audit_page(
        &self,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // UUIDv7 text sorts by time; '~' sorts after every id, so "no cursor" lists from the top.
        const SQL: Sql = Sql {
            sqlite: "SELECT id, actor, action, target, at, details FROM audit_log \
                     WHERE id < ? ORDER BY id DESC LIMIT ?",
            postgres: "SELECT id, actor, action, target, at, details FROM audit_log \
                       WHERE id < $1 ORDER BY id DESC LIMIT $2",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(before_id.unwrap_or("~"))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
        })
    }
}
