//! API keys with which tenant backends read their account's core token or use the proxy.
//!
//! Only a hash of each key is stored; the key is shown to the owner once, at creation, by the
//! caller. A revoked key stays listed (with `revoked_at`) so the dashboard can show its history,
//! but never authenticates again. Each key carries its scopes: what it may do, and for the
//! proxy optionally which WeChat paths.

use crate::audit::AuditRecord;
use crate::db::{BeginWrite, Sql, StoreRow};
use crate::error::on_constraint;
use crate::{Store, StoreError};

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyScopes {
    /// Read the core token (`GET …/access_token`).
    pub token: bool,
    /// Report the token as rejected (`POST …/access_token/invalid`).
    pub report: bool,
    /// Call WeChat through the proxy.
    pub proxy: bool,
}

impl KeyScopes {
    /// Every scope (what keys created before scopes existed have).
    pub const ALL: KeyScopes = KeyScopes {
        token: true,
        report: true,
        proxy: true,
    };

    /// The stored form: the scope names, comma-separated, in a fixed order.
    pub fn to_db(self) -> String {
        let mut names = Vec::new();
        for (on, name) in [
            (self.token, "token"),
            (self.report, "report"),
            (self.proxy, "proxy"),
        ] {
            if on {
                names.push(name);
            }
        }
        names.join(",")
    }

    /// Parses the stored form (or a user's `token,proxy`); `None` names an unknown scope.
    pub fn parse(text: &str) -> Option<KeyScopes> {
        let mut scopes = KeyScopes {
            token: false,
            report: false,
            proxy: false,
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "token" => scopes.token = true,
                "report" => scopes.report = true,
                "proxy" => scopes.proxy = true,
                _ => return None,
            }
        }
        Some(scopes)
    }

    /// Whether the key may do nothing at all.
    pub fn is_empty(self) -> bool {
        !(self.token || self.report || self.proxy)
    }
}

/// An API key's record (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub key_hash: String,
    pub label: String,
    pub scopes: KeyScopes,
    /// The WeChat paths (`/cgi-bin/…`) the proxy may call with this key; `None`: any.
    pub proxy_paths: Option<Vec<String>>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key to store (its hash, never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub account_id: String,
    pub key_hash: String,
    pub label: String,
    pub scopes: KeyScopes,
    pub proxy_paths: Option<Vec<String>>,
}

impl NewApiKey {
    /// A key with every scope and no path limit, under a fresh id.
    pub fn with_all_scopes(account_id: &str, key_hash: &str, label: &str) -> Self {
        Self {
            id: crate::new_id(),
            account_id: account_id.to_owned(),
            key_hash: key_hash.to_owned(),
            label: label.to_owned(),
            scopes: KeyScopes::ALL,
            proxy_paths: None,
        }
    }
}

macro_rules! api_key_columns {
    () => {
        "id, account_id, key_hash, label, scopes, proxy_paths, created_at, last_used_at, \
         revoked_at"
    };
}

fn api_key_from_row(row: &impl StoreRow) -> Result<ApiKey, sqlx::Error> {
    let scopes = row.text("scopes")?;
    let proxy_paths = row
        .opt_text("proxy_paths")?
        .map(|json| serde_json::from_str::<Vec<String>>(&json))
        .transpose()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: "proxy_paths".to_owned(),
            source: Box::new(e),
        })?;
    Ok(ApiKey {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        key_hash: row.text("key_hash")?,
        label: row.text("label")?,
        scopes: KeyScopes::parse(&scopes).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "scopes".to_owned(),
            source: format!("unknown scope in {scopes:?}").into(),
        })?,
        proxy_paths,
        created_at: row.int("created_at")?,
        last_used_at: row.opt_int("last_used_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

impl Store {
    /// Stores a new key's hash, with its audit entry. Errors: [`StoreError::Duplicate`] if
    /// the hash exists (a collision means the key generator is broken),
    /// [`StoreError::NotFound`] for an unknown account.
    pub async fn create_api_key(
        &self,
        key: &NewApiKey,
        now: i64,
        record: &AuditRecord,
    ) -> Result<ApiKey, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "INSERT INTO api_keys (id, account_id, key_hash, label, scopes, proxy_paths, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING ",
                api_key_columns!()
            ),
            postgres: concat!(
                "INSERT INTO api_keys (id, account_id, key_hash, label, scopes, proxy_paths, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
                api_key_columns!()
            ),
        };
        let proxy_paths = key
            .proxy_paths
            .as_ref()
            .map(|paths| serde_json::Value::from(paths.clone()).to_string());
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(SQL.get(d))
                .bind(&key.id)
                .bind(&key.account_id)
                .bind(&key.key_hash)
                .bind(&key.label)
                .bind(key.scopes.to_db())
                .bind(proxy_paths.as_deref())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "api key", "account"))?;
            let created = api_key_from_row(&row)?;
            commit_audited!(self, tx, d, record, now);
            Ok(created)
        })
    }

    /// Authenticates a key by its hash: the unrevoked key with this hash, with `now` recorded
    /// as its last use. An unknown hash costs one read and no write: anyone can present a
    /// well-formed key, and a write per attempt would make a flood of them contend with every
    /// token write-back for the database's write lock.
    pub async fn use_api_key(
        &self,
        key_hash: &str,
        now: i64,
    ) -> Result<Option<ApiKey>, StoreError> {
        const FIND: Sql = Sql {
            sqlite: "SELECT 1 FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            postgres: "SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        };
        let known = on_backend!(self, |pool, d| {
            Ok::<_, StoreError>(
                sqlx::query(FIND.get(d))
                    .bind(key_hash)
                    .fetch_optional(pool)
                    .await?
                    .is_some(),
            )
        })?;
        if !known {
            return Ok(None);
        }
        // Revoked in between: the update finds no row, and the key is refused.
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

    /// Revokes one of an account's keys, with its audit entry. Returns `false` (and writes
    /// nothing) if there is no such unrevoked key.
    pub async fn revoke_api_key(
        &self,
        account_id: &str,
        id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE api_keys SET revoked_at = ? \
                     WHERE account_id = ? AND id = ? AND revoked_at IS NULL",
            postgres: "UPDATE api_keys SET revoked_at = $1 \
                       WHERE account_id = $2 AND id = $3 AND revoked_at IS NULL",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let revoked = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(account_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !revoked {
                return Ok(false);
            }
            commit_audited!(self, tx, d, record, now);
            Ok(true)
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
