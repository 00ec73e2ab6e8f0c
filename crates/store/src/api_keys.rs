//! API keys with which tenant backends read their account's core token or use the proxy.
//!
//! Only a hash of each key is stored; the key is shown to the owner once, at creation, by the
//! caller. A revoked key stays listed (with `revoked_at`) so the dashboard can show its history,
//! but never authenticates again.

use crate::db::{Sql, StoreRow};
use crate::error::on_constraint;
use crate::{Store, StoreError};

/// An API key's record (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub key_hash: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

macro_rules! api_key_columns {
    () => {
        "id, account_id, key_hash, label, created_at, last_used_at, revoked_at"
    };
}

fn api_key_from_row(row: &impl StoreRow) -> Result<ApiKey, sqlx::Error> {
    Ok(ApiKey {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        key_hash: row.text("key_hash")?,
        label: row.text("label")?,
        created_at: row.int("created_at")?,
        last_used_at: row.opt_int("last_used_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

impl Store {
    /// Stores a new key's hash. Errors: [`StoreError::Duplicate`] if the hash exists (a
    /// collision means the key generator is broken), [`StoreError::NotFound`] for an unknown
    /// account.
    pub async fn create_api_key(
        &self,
        id: &str,
        account_id: &str,
        key_hash: &str,
        label: &str,
        now: i64,
    ) -> Result<ApiKey, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "INSERT INTO api_keys (id, account_id, key_hash, label, created_at) \
                 VALUES (?, ?, ?, ?, ?) RETURNING ",
                api_key_columns!()
            ),
            postgres: concat!(
                "INSERT INTO api_keys (id, account_id, key_hash, label, created_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING ",
                api_key_columns!()
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .bind(account_id)
                .bind(key_hash)
                .bind(label)
                .bind(now)
                .fetch_one(pool)
                .await
                .map_err(|e| on_constraint(e, "api key", "account"))?;
            Ok(api_key_from_row(&row)?)
        })
    }

    /// Authenticates a key by its hash: the unrevoked key with this hash, with `now` recorded
    /// as its last use.
    pub async fn use_api_key(
        &self,
        key_hash: &str,
        now: i64,
    ) -> Result<Option<ApiKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "UPDATE api_keys SET last_used_at = ? WHERE key_hash = ? AND revoked_at IS NULL \
                 RETURNING ",
                api_key_columns!()
            ),
            postgres: concat!(
                "UPDATE api_keys SET last_used_at = $1 WHERE key_hash = $2 AND revoked_at IS NULL \
                 RETURNING ",
                api_key_columns!()
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(key_hash)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| api_key_from_row(&r)).transpose()?)
        })
    }

    /// Revokes one of an account's keys. Returns `false` if there is no such unrevoked key.
    pub async fn revoke_api_key(
        &self,
        account_id: &str,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE api_keys SET revoked_at = ? \
                     WHERE account_id = ? AND id = ? AND revoked_at IS NULL",
            postgres: "UPDATE api_keys SET revoked_at = $1 \
                       WHERE account_id = $2 AND id = $3 AND revoked_at IS NULL",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .bind(account_id)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// An account's keys, revoked ones included, oldest first.
    pub async fn list_api_keys(&self, account_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE account_id = ? ORDER BY created_at, id"
            ),
            postgres: concat!(
                "SELECT ",
                api_key_columns!(),
                " FROM api_keys WHERE account_id = $1 ORDER BY created_at, id"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(api_key_from_row)
                .collect::<Result<_, _>>()?)
        })
    }
}
