//! OpenID Connect provider state, one module per part of the flow:
//!
//! - [`clients`]: registered clients (tenant websites) and their lookup at an issuer;
//! - [`logins`]: pending authorizations (the trip to WeChat and back) and authorization codes;
//! - [`access_tokens`]: issued access tokens, as userinfo reads them;
//! - [`signing_keys`]: the ID-token signing keys, sealed by the vault.
//!
//! Codes and access tokens are stored only as hashes. A code is single use: redemption is one
//! conditional `UPDATE … WHERE used_at IS NULL AND expires_at > now`, so of two concurrent
//! redemptions exactly one succeeds, on any replica. A second redemption of a used code is an
//! attack or a bug (RFC 6749 §4.1.2), so it revokes every access token issued for that code.
//! Private signing keys arrive encrypted by the vault. Every item is re-exported here, so
//! callers name them `store::oidc::…` whatever module holds them.

use crate::accounts::Account;
use crate::db::{Sql, StoreRow};
use crate::{Store, StoreError};

/// The account's columns aliased `a_…`, for joins.
macro_rules! account_prefixed_columns {
    () => {
        "a.id AS a_id, a.owner_user_id AS a_owner_user_id, a.appid AS a_appid, a.name AS a_name, \
         a.kind AS a_kind, a.verified AS a_verified, a.token_mode AS a_token_mode, \
         a.state AS a_state, a.created_at AS a_created_at, a.updated_at AS a_updated_at"
    };
}

pub mod access_tokens;
pub mod clients;
pub mod logins;
pub mod signing_keys;

#[cfg(feature = "test-fixtures")]
#[doc(hidden)]
pub use access_tokens::AccessToken;
pub use access_tokens::{NewAccessToken, UserinfoGrant};
pub use clients::{ClientEdit, LoginMode, LoginSurface, OidcClient};
pub(crate) use logins::pending_from_row;
pub use logins::{
    AuthCode, CallbackContext, CodeRedemption, PendingAuthorization, PendingStatus,
    RedemptionContext,
};
pub use signing_keys::{SigningAlg, SigningKey, SigningKeyStatus};

fn account_from_prefixed_row(row: &impl StoreRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: row.text("a_id")?,
        owner_user_id: row.text("a_owner_user_id")?,
        appid: row.text("a_appid")?,
        name: row.text("a_name")?,
        kind: row.enumerated("a_kind")?,
        verified: row.flag("a_verified")?,
        token_mode: row.enumerated("a_token_mode")?,
        state: row.enumerated("a_state")?,
        created_at: row.int("a_created_at")?,
        updated_at: row.int("a_updated_at")?,
    })
}

impl Store {
    /// Removes pending authorizations, codes and access tokens that expired before `cutoff`;
    /// returns how many rows in all. Pass a cutoff some minutes in the past so a late reuse of
    /// a code still finds it and revokes its tokens. Deletes in batches
    /// ([`OIDC_SWEEP_BATCH`] rows, at most [`OIDC_SWEEP_MAX_BATCHES`] per table and call): a
    /// flood of abandoned logins is cleared over several sweeps instead of by one statement
    /// that holds the write lock for as long as it takes.
    pub async fn delete_expired_oidc_rows(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.delete_expired_oidc_rows_in_batches(cutoff, OIDC_SWEEP_BATCH, OIDC_SWEEP_MAX_BATCHES)
            .await
    }

    /// [`Store::delete_expired_oidc_rows`] with the batch size and the number of batches per
    /// table given.
    pub async fn delete_expired_oidc_rows_in_batches(
        &self,
        cutoff: i64,
        batch: u32,
        max_batches: u32,
    ) -> Result<u64, StoreError> {
        // By primary key through the `expires_at` index: each statement touches at most
        // `batch` rows and commits on its own, so other writers get the lock in between.
        const PENDING: Sql = Sql {
            sqlite: "DELETE FROM oidc_pending_authorizations WHERE id IN \
                     (SELECT id FROM oidc_pending_authorizations WHERE expires_at < ? LIMIT ?)",
            postgres: "DELETE FROM oidc_pending_authorizations WHERE id IN \
                       (SELECT id FROM oidc_pending_authorizations WHERE expires_at < $1 LIMIT $2)",
        };
        const CODES: Sql = Sql {
            sqlite: "DELETE FROM oidc_auth_codes WHERE code_hash IN \
                     (SELECT code_hash FROM oidc_auth_codes WHERE expires_at < ? LIMIT ?)",
            postgres: "DELETE FROM oidc_auth_codes WHERE code_hash IN \
                       (SELECT code_hash FROM oidc_auth_codes WHERE expires_at < $1 LIMIT $2)",
        };
        const TOKENS: Sql = Sql {
            sqlite: "DELETE FROM oidc_access_tokens WHERE token_hash IN \
                     (SELECT token_hash FROM oidc_access_tokens WHERE expires_at < ? LIMIT ?)",
            postgres: "DELETE FROM oidc_access_tokens WHERE token_hash IN \
                       (SELECT token_hash FROM oidc_access_tokens WHERE expires_at < $1 LIMIT $2)",
        };
        let mut deleted = 0;
        for sql in [&PENDING, &CODES, &TOKENS] {
            deleted += self
                .delete_in_batches(sql, cutoff, batch, max_batches)
                .await?;
        }
        Ok(deleted)
    }

    /// Runs `sql` — a `DELETE … WHERE key IN (SELECT key … WHERE <older than ?1> LIMIT ?2)` —
    /// with `cutoff` and `batch` until it deletes fewer than `batch` rows or has run
    /// `max_batches` times; returns how many rows in all. Each statement commits on its own,
    /// so other writers get the lock in between.
    pub(crate) async fn delete_in_batches(
        &self,
        sql: &Sql,
        cutoff: i64,
        batch: u32,
        max_batches: u32,
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1);
        let mut deleted = 0;
        for _ in 0..max_batches {
            let n = on_backend!(self, |pool, d| {
                sqlx::query(sql.get(d))
                    .bind(cutoff)
                    .bind(i64::from(batch))
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            deleted += n;
            if n < u64::from(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(deleted)
    }
}

/// Rows one statement of the expired-login sweep deletes at most.
pub const OIDC_SWEEP_BATCH: u32 = 1000;
/// Batches per table one sweep runs at most (so 100 000 rows a table a minute).
pub const OIDC_SWEEP_MAX_BATCHES: u32 = 100;
