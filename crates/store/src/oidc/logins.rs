//! A login in progress: the pending authorization that sends the user to WeChat and brings
//! them back, then the single-use authorization code the relying party redeems.

use crate::accounts::{Account, AccountSecrets};
use crate::db::{BeginWrite, DbEnum, Sql, StoreRow};
use crate::end_users::{UserClaims, user_claims_from_row};
use crate::error::on_constraint;
use crate::{Store, StoreError};

use super::access_tokens::NewAccessToken;
use super::account_from_prefixed_row;
use super::clients::LoginMode;

db_enum! {
    /// Where a pending authorization stands.
    pub enum PendingStatus {
        /// Waiting for the user to come back from WeChat.
        Pending = "pending",
        /// The user was identified; a code was issued.
        Completed = "completed",
        /// The user declined or was refused (e.g. not following).
        Denied = "denied",
    }
}

/// An authorization request waiting for the user to return from WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    pub id: String,
    /// The `oidc_clients.id` (not the public client_id).
    pub oidc_client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: String,
    /// The `state` sent to WeChat's authorize page.
    pub wechat_state: String,
    pub status: PendingStatus,
    pub openid: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// SHA-256 of the random value in the browser's login cookie, set at `/authorize`: every
    /// later step must come from the same browser (login CSRF).
    pub browser_binding_hash: Option<String>,
    /// The client asked for `prompt=none`: no page may be shown, so a step that needs one
    /// ends the login with `interaction_required` (OIDC Core §3.1.2.6).
    pub prompt_none: bool,
}

/// An authorization code's record (the code itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub code_hash: String,
    pub oidc_client_id: String,
    pub account_id: String,
    pub redirect_uri: String,
    pub openid: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What redeeming a code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use: the code is now spent; issue tokens.
    Redeemed(Box<AuthCode>),
    /// The code had been used already; the access tokens issued for it (this many) are now
    /// revoked.
    AlreadyUsed { revoked_tokens: u64 },
    /// The code expired unused.
    Expired,
    /// No such code for this client.
    NotFound,
}

/// What [`Store::redeem_auth_code_with_claims`] read along with the redemption, so the token
/// endpoint needs no further query: the end user's claims and the active signing key's kid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedemptionContext {
    /// The code's end user (`None` if unknown or the code was not redeemed).
    pub user: Option<UserClaims>,
    /// The kid of the active signing key of the client's algorithm when the code was spent
    /// (`None` if there is none or the code was not redeemed).
    pub active_signing_kid: Option<String>,
}

/// A pending authorization as the WeChat callback needs it, read in one query: the pending
/// row, its client's login mode, the account (by appid) and the account's sealed secrets.
#[derive(Debug, Clone)]
pub struct CallbackContext {
    pub pending: PendingAuthorization,
    pub login_mode: LoginMode,
    pub account: Account,
    /// `None` when the account has no secrets row.
    pub secrets: Option<AccountSecrets>,
}

macro_rules! pending_columns {
    () => {
        "id, oidc_client_id, redirect_uri, state, nonce, code_challenge, code_challenge_method, \
         scope, wechat_state, status, openid, created_at, expires_at, browser_binding_hash, \
         prompt_none"
    };
}

macro_rules! code_columns {
    () => {
        "code_hash, oidc_client_id, account_id, redirect_uri, openid, nonce, code_challenge, \
         code_challenge_method, scope, created_at, expires_at, used_at"
    };
}

pub(crate) fn pending_from_row(row: &impl StoreRow) -> Result<PendingAuthorization, sqlx::Error> {
    Ok(PendingAuthorization {
        id: row.text("id")?,
        oidc_client_id: row.text("oidc_client_id")?,
        redirect_uri: row.text("redirect_uri")?,
        state: row.opt_text("state")?,
        nonce: row.opt_text("nonce")?,
        code_challenge: row.opt_text("code_challenge")?,
        code_challenge_method: row.opt_text("code_challenge_method")?,
        scope: row.text("scope")?,
        wechat_state: row.text("wechat_state")?,
        status: row.enumerated("status")?,
        openid: row.opt_text("openid")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        browser_binding_hash: row.opt_text("browser_binding_hash")?,
        prompt_none: row.flag("prompt_none")?,
    })
}

fn code_from_row(row: &impl StoreRow) -> Result<AuthCode, sqlx::Error> {
    Ok(AuthCode {
        code_hash: row.text("code_hash")?,
        oidc_client_id: row.text("oidc_client_id")?,
        account_id: row.text("account_id")?,
        redirect_uri: row.text("redirect_uri")?,
        openid: row.text("openid")?,
        nonce: row.opt_text("nonce")?,
        code_challenge: row.opt_text("code_challenge")?,
        code_challenge_method: row.opt_text("code_challenge_method")?,
        scope: row.text("scope")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        used_at: row.opt_int("used_at")?,
    })
}

impl Store {
    /// What the WeChat callback needs for the still-pending, unexpired authorization that
    /// sent the user to WeChat with `wechat_state`, if it belongs to a client of the account
    /// with `appid` (one query; `None` covers every other case).
    pub async fn find_callback_context(
        &self,
        appid: &str,
        wechat_state: &str,
        now: i64,
    ) -> Result<Option<CallbackContext>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT p.id, p.oidc_client_id, p.redirect_uri, p.state, p.nonce, p.code_challenge, \
                 p.code_challenge_method, p.scope, p.wechat_state, p.status, p.openid, \
                 p.created_at, p.expires_at, p.browser_binding_hash, p.prompt_none, \
                 c.login_mode AS c_login_mode, \
                 s.wrapped_dek AS s_wrapped_dek, s.dek_kek_id AS s_dek_kek_id, \
                 s.appsecret AS s_appsecret, s.push_token AS s_push_token, \
                 s.encoding_aes_key AS s_encoding_aes_key, ",
                account_prefixed_columns!(),
                " FROM oidc_pending_authorizations p \
                 JOIN oidc_clients c ON c.id = p.oidc_client_id \
                 JOIN accounts a ON a.id = c.account_id \
                 LEFT JOIN account_secrets s ON s.account_id = a.id \
                 WHERE p.wechat_state = ? AND p.status = 'pending' AND p.expires_at > ? \
                 AND a.appid = ?"
            ),
            postgres: concat!(
                "SELECT p.id, p.oidc_client_id, p.redirect_uri, p.state, p.nonce, p.code_challenge, \
                 p.code_challenge_method, p.scope, p.wechat_state, p.status, p.openid, \
                 p.created_at, p.expires_at, p.browser_binding_hash, p.prompt_none, \
                 c.login_mode AS c_login_mode, \
                 s.wrapped_dek AS s_wrapped_dek, s.dek_kek_id AS s_dek_kek_id, \
                 s.appsecret AS s_appsecret, s.push_token AS s_push_token, \
                 s.encoding_aes_key AS s_encoding_aes_key, ",
                account_prefixed_columns!(),
                " FROM oidc_pending_authorizations p \
                 JOIN oidc_clients c ON c.id = p.oidc_client_id \
                 JOIN accounts a ON a.id = c.account_id \
                 LEFT JOIN account_secrets s ON s.account_id = a.id \
                 WHERE p.wechat_state = $1 AND p.status = 'pending' AND p.expires_at > $2 \
                 AND a.appid = $3"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(wechat_state)
                .bind(now)
                .bind(appid)
                .fetch_optional(pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let secrets = match row.opt_bytes("s_wrapped_dek")? {
                None => None,
                Some(wrapped_dek) => Some(AccountSecrets {
                    wrapped_dek,
                    dek_kek_id: row.text("s_dek_kek_id")?,
                    appsecret: row.bytes("s_appsecret")?,
                    push_token: row.opt_bytes("s_push_token")?,
                    encoding_aes_key: row.opt_bytes("s_encoding_aes_key")?,
                }),
            };
            Ok(Some(CallbackContext {
                pending: pending_from_row(&row)?,
                login_mode: row.enumerated("c_login_mode")?,
                account: account_from_prefixed_row(&row)?,
                secrets,
            }))
        })
    }

    /// Stores an authorization request before sending the user to WeChat. `status` and
    /// `openid` of `pending` are ignored: it starts pending with no openid.
    pub async fn create_pending_authorization(
        &self,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_pending_authorizations (id, oidc_client_id, redirect_uri, \
                     state, nonce, code_challenge, code_challenge_method, scope, wechat_state, \
                     status, created_at, expires_at, browser_binding_hash, prompt_none) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            postgres: "INSERT INTO oidc_pending_authorizations (id, oidc_client_id, redirect_uri, \
                       state, nonce, code_challenge, code_challenge_method, scope, wechat_state, \
                       status, created_at, expires_at, browser_binding_hash, prompt_none) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&pending.id)
                .bind(&pending.oidc_client_id)
                .bind(&pending.redirect_uri)
                .bind(pending.state.as_deref())
                .bind(pending.nonce.as_deref())
                .bind(pending.code_challenge.as_deref())
                .bind(pending.code_challenge_method.as_deref())
                .bind(&pending.scope)
                .bind(&pending.wechat_state)
                .bind(pending.created_at)
                .bind(pending.expires_at)
                .bind(pending.browser_binding_hash.as_deref())
                .bind(pending.prompt_none)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "pending authorization", "oidc client"))?;
            Ok(())
        })
    }

    /// The still-pending, unexpired authorization that sent the user to WeChat with
    /// `wechat_state`.
    pub async fn find_pending_authorization(
        &self,
        wechat_state: &str,
        now: i64,
    ) -> Result<Option<PendingAuthorization>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                pending_columns!(),
                " FROM oidc_pending_authorizations \
                 WHERE wechat_state = ? AND status = 'pending' AND expires_at > ?"
            ),
            postgres: concat!(
                "SELECT ",
                pending_columns!(),
                " FROM oidc_pending_authorizations \
                 WHERE wechat_state = $1 AND status = 'pending' AND expires_at > $2"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(wechat_state)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| pending_from_row(&r)).transpose()?)
        })
    }

    /// Ends a pending authorization as `status` (completed with the user's `openid`, or
    /// denied), only if it is still pending and unexpired: a replayed WeChat callback cannot
    /// complete it twice. Returns whether it did.
    pub async fn finish_pending_authorization(
        &self,
        id: &str,
        status: PendingStatus,
        openid: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_pending_authorizations SET status = ?, openid = ? \
                     WHERE id = ? AND status = 'pending' AND expires_at > ?",
            postgres: "UPDATE oidc_pending_authorizations SET status = $1, openid = $2 \
                       WHERE id = $3 AND status = 'pending' AND expires_at > $4",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(status.as_db())
                .bind(openid)
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Test fixture: stores an authorization code directly (the gateway issues codes with
    /// `Store::complete_pending_authorization`). `used_at` is ignored (a new code is unused).
    #[cfg(feature = "test-fixtures")]
    #[doc(hidden)]
    pub async fn create_auth_code(&self, code: &AuthCode) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_auth_codes (code_hash, oidc_client_id, account_id, \
                     redirect_uri, openid, nonce, code_challenge, code_challenge_method, scope, \
                     created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO oidc_auth_codes (code_hash, oidc_client_id, account_id, \
                       redirect_uri, openid, nonce, code_challenge, code_challenge_method, scope, \
                       created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&code.code_hash)
                .bind(&code.oidc_client_id)
                .bind(&code.account_id)
                .bind(&code.redirect_uri)
                .bind(&code.openid)
                .bind(code.nonce.as_deref())
                .bind(code.code_challenge.as_deref())
                .bind(code.code_challenge_method.as_deref())
                .bind(&code.scope)
                .bind(code.created_at)
                .bind(code.expires_at)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "authorization code", "oidc client or account"))?;
            Ok(())
        })
    }

    /// Test fixture: [`Store::redeem_auth_code_with_claims`] without what it reads.
    #[cfg(feature = "test-fixtures")]
    #[doc(hidden)]
    pub async fn redeem_auth_code(
        &self,
        code_hash: &str,
        oidc_client_id: &str,
        token: &NewAccessToken,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        Ok(self
            .redeem_auth_code_with_claims(code_hash, oidc_client_id, token, now)
            .await?
            .0)
    }

    /// Redeems a code for the client with row id `oidc_client_id`: marks it used if it is
    /// unused and unexpired at `now` and, in the same transaction, stores `token` as the access
    /// token issued for it (user and scope from the code). A second redemption revokes the
    /// tokens issued for the code — and since the token is written with the spend, a
    /// concurrent second redemption always sees it. See [`CodeRedemption`].
    ///
    /// It also reads, in the statement that spends the code, the code's end user and the
    /// active signing key's kid, so issuing the ID token needs no further query. On PostgreSQL
    /// the spend, the token insert and those reads are one statement; on SQLite one
    /// transaction.
    pub async fn redeem_auth_code_with_claims(
        &self,
        code_hash: &str,
        oidc_client_id: &str,
        token: &NewAccessToken,
        now: i64,
    ) -> Result<(CodeRedemption, RedemptionContext), StoreError> {
        const ISSUE_SQLITE: &str = "INSERT INTO oidc_access_tokens (token_hash, code_hash, \
             oidc_client_id, account_id, openid, scope, created_at, expires_at) \
             SELECT ?, code_hash, oidc_client_id, account_id, openid, scope, ?, ? \
             FROM oidc_auth_codes WHERE code_hash = ?";
        // SQLite: the spend returns the code with its user's claims and the active kid.
        const SPEND_SQLITE: &str = concat!(
            "UPDATE oidc_auth_codes SET used_at = ?1 \
             WHERE code_hash = ?2 AND oidc_client_id = ?3 AND used_at IS NULL \
             AND expires_at > ?1 RETURNING ",
            code_columns!(),
            ", (SELECT u.id FROM end_users u WHERE u.account_id = oidc_auth_codes.account_id \
             AND u.openid = oidc_auth_codes.openid) AS u_id, \
             (SELECT u.unionid FROM end_users u WHERE u.account_id = oidc_auth_codes.account_id \
             AND u.openid = oidc_auth_codes.openid) AS u_unionid, \
             (SELECT u.nickname FROM end_users u WHERE u.account_id = oidc_auth_codes.account_id \
             AND u.openid = oidc_auth_codes.openid) AS u_nickname, \
             (SELECT u.avatar_url FROM end_users u WHERE u.account_id = oidc_auth_codes.account_id \
             AND u.openid = oidc_auth_codes.openid) AS u_avatar_url, \
             (SELECT u.subscribed FROM end_users u WHERE u.account_id = oidc_auth_codes.account_id \
             AND u.openid = oidc_auth_codes.openid) AS u_subscribed, \
             (SELECT k.kid FROM oidc_signing_keys k WHERE k.status = 'active' \
             AND k.algorithm = (SELECT c.id_token_signed_response_alg FROM oidc_clients c \
             WHERE c.id = oidc_auth_codes.oidc_client_id) \
             ORDER BY k.created_at DESC LIMIT 1) AS active_kid"
        );
        // PostgreSQL: spend, issue and read in one statement (atomic; a concurrent second
        // redemption waits on the code's row lock and then finds it used).
        const SPEND_ISSUE_PG: &str = concat!(
            "WITH spent AS (UPDATE oidc_auth_codes SET used_at = $1 \
             WHERE code_hash = $2 AND oidc_client_id = $3 AND used_at IS NULL \
             AND expires_at > $1 RETURNING ",
            code_columns!(),
            "), issued AS (INSERT INTO oidc_access_tokens (token_hash, code_hash, \
             oidc_client_id, account_id, openid, scope, created_at, expires_at) \
             SELECT $4, code_hash, oidc_client_id, account_id, openid, scope, $1, $5 \
             FROM spent RETURNING token_hash) \
             SELECT spent.*, u.id AS u_id, u.unionid AS u_unionid, u.nickname AS u_nickname, \
             u.avatar_url AS u_avatar_url, u.subscribed AS u_subscribed, \
             (SELECT k.kid FROM oidc_signing_keys k WHERE k.status = 'active' \
             AND k.algorithm = (SELECT c.id_token_signed_response_alg FROM oidc_clients c \
             WHERE c.id = spent.oidc_client_id) \
             ORDER BY k.created_at DESC LIMIT 1) AS active_kid, \
             (SELECT COUNT(*) FROM issued) AS issued \
             FROM spent LEFT JOIN end_users u \
             ON u.account_id = spent.account_id AND u.openid = spent.openid"
        );
        const LOOK: Sql = Sql {
            sqlite: "SELECT used_at FROM oidc_auth_codes WHERE code_hash = ? AND oidc_client_id = ?",
            postgres: "SELECT used_at FROM oidc_auth_codes \
                       WHERE code_hash = $1 AND oidc_client_id = $2",
        };
        const REVOKE: Sql = Sql {
            sqlite: "UPDATE oidc_access_tokens SET revoked_at = ? \
                     WHERE code_hash = ? AND revoked_at IS NULL",
            postgres: "UPDATE oidc_access_tokens SET revoked_at = $1 \
                       WHERE code_hash = $2 AND revoked_at IS NULL",
        };
        match &self.backend {
            crate::db::Backend::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let spent = sqlx::query(SPEND_SQLITE)
                    .bind(now)
                    .bind(code_hash)
                    .bind(oidc_client_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = spent {
                    sqlx::query(ISSUE_SQLITE)
                        .bind(&token.token_hash)
                        .bind(now)
                        .bind(token.expires_at)
                        .bind(code_hash)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| on_constraint(e, "access token", "oidc client or account"))?;
                    let context = RedemptionContext {
                        user: user_claims_from_row(&row)?,
                        active_signing_kid: row.opt_text("active_kid")?,
                    };
                    let code = code_from_row(&row)?;
                    tx.commit().await?;
                    return Ok((CodeRedemption::Redeemed(Box::new(code)), context));
                }
                tx.commit().await?;
            }
            crate::db::Backend::Postgres(pool) => {
                let spent = sqlx::query(SPEND_ISSUE_PG)
                    .bind(now)
                    .bind(code_hash)
                    .bind(oidc_client_id)
                    .bind(&token.token_hash)
                    .bind(token.expires_at)
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| on_constraint(e, "access token", "oidc client or account"))?;
                if let Some(row) = spent {
                    let context = RedemptionContext {
                        user: user_claims_from_row(&row)?,
                        active_signing_kid: row.opt_text("active_kid")?,
                    };
                    return Ok((
                        CodeRedemption::Redeemed(Box::new(code_from_row(&row)?)),
                        context,
                    ));
                }
            }
        }
        // Not spent now: used before (revoke what it issued), expired, or unknown.
        let outcome = on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let found = sqlx::query(LOOK.get(d))
                .bind(code_hash)
                .bind(oidc_client_id)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match found {
                None => CodeRedemption::NotFound,
                Some(row) if row.opt_int("used_at")?.is_some() => {
                    let revoked_tokens = sqlx::query(REVOKE.get(d))
                        .bind(now)
                        .bind(code_hash)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    CodeRedemption::AlreadyUsed { revoked_tokens }
                }
                Some(_) => CodeRedemption::Expired,
            };
            tx.commit().await?;
            outcome
        });
        Ok((outcome, RedemptionContext::default()))
    }
}
