//! Every stored data key the vault wraps, whatever it protects, behind one list.
//!
//! Master-key rotation must see every data key (DEK) wrapped under a master key (KEK): the
//! start-up and reload checks ("does this keyring hold every KEK the database uses?"),
//! `wxhub vault status`, the re-wrap and `drop-key` all ask the same three questions of each
//! kind of sealed row — how many DEKs each KEK wraps, which DEKs are not under a given KEK,
//! and "replace this wrapped DEK if it is still what I read". A kind of sealed data is one
//! [`DekHolder`]: a table whose rows keep their wrapped DEK in `wrapped_dek` and the id of the
//! KEK that wrapped it in `dek_kek_id`, plus the vault subject each DEK is bound to. Adding a
//! kind of sealed data means adding one variant here (and those two columns to its table);
//! everything rotation does then covers it, with no further code path.
//!
//! Only wrapped DEKs pass through here, never what they protect, and the bytes stay opaque.

use std::fmt;

use crate::db::{MAX_PAGE, Sql, StoreRow, page_limit};
use crate::{Store, StoreError};

/// A kind of stored data sealed under data keys of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DekHolder {
    /// `account_secrets`: one DEK per account (its AppSecret, push Token, EncodingAESKey and
    /// core token), bound to the account id.
    AccountSecrets,
    /// `oidc_signing_keys`: one DEK per ID-token signing key, bound to
    /// `oidc-signing-key:{kid}`.
    SigningKey,
    /// `user_totp`: one DEK per person's TOTP secret, bound to `totp:{user_id}`.
    TotpSecret,
}

/// The three statements rotation runs against one holder's table.
struct HolderSql {
    count_by_kek: Sql,
    list_not_under: Sql,
    replace: Sql,
    /// Whether `replace` also sets an `updated_at` column (bound after the new KEK id).
    touches_updated_at: bool,
}

/// Builds a holder's statements from its table, its id column and the parts of the
/// conditional replace that differ between holders (both dialects side by side).
macro_rules! holder_sql {
    (
        table: $table:literal,
        id: $id:literal,
        extra_set: ($set_sqlite:literal, $set_postgres:literal),
        touches_updated_at: $touches:literal,
        unchanged: ($unchanged_sqlite:literal, $unchanged_postgres:literal) $(,)?
    ) => {
        HolderSql {
            count_by_kek: Sql {
                sqlite: concat!(
                    "SELECT dek_kek_id, COUNT(*) AS n FROM ",
                    $table,
                    " GROUP BY dek_kek_id ORDER BY dek_kek_id"
                ),
                postgres: concat!(
                    "SELECT dek_kek_id, COUNT(*) AS n FROM ",
                    $table,
                    " GROUP BY dek_kek_id ORDER BY dek_kek_id"
                ),
            },
            list_not_under: Sql {
                sqlite: concat!(
                    "SELECT ",
                    $id,
                    " AS id, wrapped_dek, dek_kek_id FROM ",
                    $table,
                    " WHERE dek_kek_id <> ?1 AND ",
                    $id,
                    " > ?2 ORDER BY ",
                    $id,
                    " LIMIT ?3"
                ),
                postgres: concat!(
                    "SELECT ",
                    $id,
                    " AS id, wrapped_dek, dek_kek_id FROM ",
                    $table,
                    " WHERE dek_kek_id <> $1 AND ",
                    $id,
                    " > $2 ORDER BY ",
                    $id,
                    " LIMIT $3"
                ),
            },
            replace: Sql {
                sqlite: concat!(
                    "UPDATE ",
                    $table,
                    " SET wrapped_dek = ?1, dek_kek_id = ?2",
                    $set_sqlite,
                    " WHERE ",
                    $unchanged_sqlite
                ),
                postgres: concat!(
                    "UPDATE ",
                    $table,
                    " SET wrapped_dek = $1, dek_kek_id = $2",
                    $set_postgres,
                    " WHERE ",
                    $unchanged_postgres
                ),
            },
            touches_updated_at: $touches,
        }
    };
}

const ACCOUNT_SECRETS: HolderSql = holder_sql! {
    table: "account_secrets",
    id: "account_id",
    // The row's `updated_at` records a re-wrap like any other change of the row.
    extra_set: (", updated_at = ?3", ", updated_at = $3"),
    touches_updated_at: true,
    unchanged: (
        "account_id = ?4 AND wrapped_dek = ?5 AND dek_kek_id = ?6",
        "account_id = $4 AND wrapped_dek = $5 AND dek_kek_id = $6"
    ),
};

const SIGNING_KEYS: HolderSql = holder_sql! {
    table: "oidc_signing_keys",
    id: "kid",
    extra_set: ("", ""),
    touches_updated_at: false,
    unchanged: (
        "kid = ?3 AND wrapped_dek = ?4 AND dek_kek_id = ?5",
        "kid = $3 AND wrapped_dek = $4 AND dek_kek_id = $5"
    ),
};

const TOTP_SECRETS: HolderSql = holder_sql! {
    table: "user_totp",
    id: "user_id",
    extra_set: ("", ""),
    touches_updated_at: false,
    unchanged: (
        "user_id = ?3 AND wrapped_dek = ?4 AND dek_kek_id = ?5",
        "user_id = $3 AND wrapped_dek = $4 AND dek_kek_id = $5"
    ),
};

impl DekHolder {
    /// Every kind of sealed data, in the order reports list them.
    pub const ALL: [DekHolder; 3] = [
        DekHolder::AccountSecrets,
        DekHolder::SigningKey,
        DekHolder::TotpSecret,
    ];

    /// What one of its DEKs protects, for reports: `account`, `signing key`.
    pub fn noun(self) -> &'static str {
        match self {
            DekHolder::AccountSecrets => "account",
            DekHolder::SigningKey => "signing key",
            DekHolder::TotpSecret => "TOTP secret",
        }
    }

    /// The plural of [`Self::noun`], for column headings.
    pub fn plural(self) -> &'static str {
        match self {
            DekHolder::AccountSecrets => "accounts",
            DekHolder::SigningKey => "signing keys",
            DekHolder::TotpSecret => "TOTP secrets",
        }
    }

    /// The vault subject (associated data) the DEK of row `id` is bound to: the same string
    /// must be given when the DEK is created, unwrapped and re-wrapped, or it does not open.
    pub fn vault_subject(self, id: &str) -> String {
        match self {
            DekHolder::AccountSecrets => id.to_owned(),
            DekHolder::SigningKey => format!("oidc-signing-key:{id}"),
            DekHolder::TotpSecret => format!("totp:{id}"),
        }
    }

    fn sql(self) -> &'static HolderSql {
        match self {
            DekHolder::AccountSecrets => &ACCOUNT_SECRETS,
            DekHolder::SigningKey => &SIGNING_KEYS,
            DekHolder::TotpSecret => &TOTP_SECRETS,
        }
    }
}

/// How many of one holder's DEKs one KEK wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DekCount {
    pub holder: DekHolder,
    pub kek_id: String,
    pub count: i64,
}

/// One stored wrapped DEK, as rotation reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedDek {
    pub holder: DekHolder,
    /// The row's id in its table (account id, kid).
    pub id: String,
    /// The vault's wrapped-DEK record.
    pub wrapped_dek: Vec<u8>,
    /// The id of the KEK that wrapped it.
    pub dek_kek_id: String,
}

impl fmt::Debug for SealedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedDek")
            .field("holder", &self.holder)
            .field("id", &self.id)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("dek_kek_id", &self.dek_kek_id)
            .finish()
    }
}

impl Store {
    /// For every [`DekHolder`], how many DEKs each KEK wraps, by holder then KEK id. A KEK
    /// that appears nowhere wraps nothing and may be dropped from the keyring.
    pub async fn count_sealed_deks_by_kek(&self) -> Result<Vec<DekCount>, StoreError> {
        let mut counts = Vec::new();
        for holder in DekHolder::ALL {
            let sql = &holder.sql().count_by_kek;
            on_backend!(self, |pool, d| {
                for row in sqlx::query(sql.get(d)).fetch_all(pool).await? {
                    counts.push(DekCount {
                        holder,
                        kek_id: row.text("dek_kek_id")?,
                        count: row.int("n")?,
                    });
                }
            });
        }
        Ok(counts)
    }

    /// Rotation step: the next `limit` (capped at 1000) of `holder`'s DEKs not wrapped by
    /// `kek_id`, ordered by row id after `after_id` (keyset pagination).
    pub async fn list_sealed_deks_not_under(
        &self,
        holder: DekHolder,
        kek_id: &str,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SealedDek>, StoreError> {
        let sql = &holder.sql().list_not_under;
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(sql.get(d))
                .bind(kek_id)
                .bind(after_id.unwrap_or(""))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(SealedDek {
                        holder,
                        id: row.text("id")?,
                        wrapped_dek: row.bytes("wrapped_dek")?,
                        dek_kek_id: row.text("dek_kek_id")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Rotation step: stores a re-wrapped DEK only if the row still holds `old` (bytes and KEK
    /// id), so a concurrent rotation, a deleted row or a row written since is never
    /// overwritten. Returns whether the row was replaced.
    pub async fn replace_sealed_dek(
        &self,
        old: &SealedDek,
        new_wrapped_dek: &[u8],
        new_kek_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sql = old.holder.sql();
        on_backend!(self, |pool, d| {
            let mut query = sqlx::query(sql.replace.get(d))
                .bind(new_wrapped_dek)
                .bind(new_kek_id);
            if sql.touches_updated_at {
                query = query.bind(now);
            }
            Ok(query
                .bind(&old.id)
                .bind(&old.wrapped_dek)
                .bind(&old.dek_kek_id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }
}
