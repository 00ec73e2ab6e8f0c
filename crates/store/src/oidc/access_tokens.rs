//! Issued access tokens (stored as hashes): what userinfo reads, and revocation.

use crate::db::{Sql, StoreRow};
use crate::end_users::{UserClaims, user_claims_from_row};
#[cfg(feature = "test-fixtures")]
use crate::error::on_constraint;
use crate::{Store, StoreError};

/// An access token to issue together with a code's redemption (the token is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessToken {
    pub token_hash: String,
    pub expires_at: i64,
}

/// A live access token as userinfo needs it, with its end user's claims (one query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserinfoGrant {
    pub openid: String,
    pub scope: String,
    pub user: Option<UserClaims>,
}

/// Test fixture: an issued access token's record (the token itself is never stored).
#[cfg(feature = "test-fixtures")]
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token_hash: String,
    /// The code it was issued for.
    pub code_hash: Option<String>,
    pub oidc_client_id: String,
    pub account_id: String,
    pub openid: String,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

#[cfg(feature = "test-fixtures")]
macro_rules! access_token_columns {
    () => {
        "token_hash, code_hash, oidc_client_id, account_id, openid, scope, created_at, \
         expires_at, revoked_at"
    };
}

#[cfg(feature = "test-fixtures")]
fn access_token_from_row(row: &impl StoreRow) -> Result<AccessToken, sqlx::Error> {
    Ok(AccessToken {
        token_hash: row.text("token_hash")?,
        code_hash: row.opt_text("code_hash")?,
        oidc_client_id: row.text("oidc_client_id")?,
        account_id: row.text("account_id")?,
        openid: row.text("openid")?,
        scope: row.text("scope")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

impl Store {
    /// The live (unexpired, unrevoked) access token with this hash, if it was issued at the
    /// active account with `appid`, with its end user's claims (one query for userinfo).
    pub async fn find_userinfo_grant(
        &self,
        appid: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<UserinfoGrant>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT t.openid, t.scope, u.id AS u_id, u.unionid AS u_unionid, \
                     u.nickname AS u_nickname, u.avatar_url AS u_avatar_url, \
                     u.subscribed AS u_subscribed \
                     FROM oidc_access_tokens t JOIN accounts a ON a.id = t.account_id \
                     LEFT JOIN end_users u ON u.account_id = t.account_id AND u.openid = t.openid \
                     WHERE t.token_hash = ? AND t.expires_at > ? AND t.revoked_at IS NULL \
                     AND a.appid = ? AND a.state = 'active'",
            postgres: "SELECT t.openid, t.scope, u.id AS u_id, u.unionid AS u_unionid, \
                       u.nickname AS u_nickname, u.avatar_url AS u_avatar_url, \
                       u.subscribed AS u_subscribed \
                       FROM oidc_access_tokens t JOIN accounts a ON a.id = t.account_id \
                       LEFT JOIN end_users u ON u.account_id = t.account_id AND u.openid = t.openid \
                       WHERE t.token_hash = $1 AND t.expires_at > $2 AND t.revoked_at IS NULL \
                       AND a.appid = $3 AND a.state = 'active'",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(token_hash)
                .bind(now)
                .bind(appid)
                .fetch_optional(pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(UserinfoGrant {
                openid: row.text("openid")?,
                scope: row.text("scope")?,
                user: user_claims_from_row(&row)?,
            }))
        })
    }

    /// Revokes one access token (e.g. issued with a redemption whose later checks failed);
    /// returns whether it was live.
    pub async fn revoke_access_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_access_tokens SET revoked_at = ? \
                     WHERE token_hash = ? AND revoked_at IS NULL",
            postgres: "UPDATE oidc_access_tokens SET revoked_at = $1 \
                       WHERE token_hash = $2 AND revoked_at IS NULL",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .bind(token_hash)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Test fixture: stores an access token directly (the gateway issues them only with a
    /// code's redemption). `revoked_at` is ignored.
    #[cfg(feature = "test-fixtures")]
    #[doc(hidden)]
    pub async fn create_access_token(&self, token: &AccessToken) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_access_tokens (token_hash, code_hash, oidc_client_id, \
                     account_id, openid, scope, created_at, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO oidc_access_tokens (token_hash, code_hash, oidc_client_id, \
                       account_id, openid, scope, created_at, expires_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&token.token_hash)
                .bind(token.code_hash.as_deref())
                .bind(&token.oidc_client_id)
                .bind(&token.account_id)
                .bind(&token.openid)
                .bind(&token.scope)
                .bind(token.created_at)
                .bind(token.expires_at)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "access token", "oidc client or account"))?;
            Ok(())
        })
    }

    /// Test fixture: the access token with this hash if it is neither expired at `now` nor
    /// revoked.
    #[cfg(feature = "test-fixtures")]
    #[doc(hidden)]
    pub async fn find_valid_access_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<AccessToken>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                access_token_columns!(),
                " FROM oidc_access_tokens \
                 WHERE token_hash = ? AND expires_at > ? AND revoked_at IS NULL"
            ),
            postgres: concat!(
                "SELECT ",
                access_token_columns!(),
                " FROM oidc_access_tokens \
                 WHERE token_hash = $1 AND expires_at > $2 AND revoked_at IS NULL"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| access_token_from_row(&r)).transpose()?)
        })
    }
}
