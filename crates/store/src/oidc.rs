//! OpenID Connect provider state: clients, pending authorizations, authorization codes,
//! issued access tokens and signing keys.
//!
//! Codes and access tokens are stored only as hashes. A code is single use: redemption is one
//! conditional `UPDATE … WHERE used_at IS NULL AND expires_at > now`, so of two concurrent
//! redemptions exactly one succeeds, on any replica. A second redemption of a used code is an
//! attack or a bug (RFC 6749 §4.1.2), so it revokes every access token issued for that code.
//! Private signing keys arrive encrypted by the vault.

use std::fmt;

use crate::accounts::{Account, AccountSecrets};
use crate::db::{BeginWrite, DbEnum, Sql, StoreRow};
use crate::end_users::{UserClaims, user_claims_from_row};
use crate::error::on_constraint;
use crate::{Store, StoreError};

db_enum! {
    /// How a client's users log in through WeChat.
    pub enum LoginMode {
        /// `snsapi_base`, then the user must follow the account.
        FollowRequired = "follow_required",
        /// `snsapi_userinfo`, no follow needed.
        Userinfo = "userinfo",
    }
}

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

db_enum! {
    /// Whether a signing key signs new tokens.
    pub enum SigningKeyStatus {
        /// Published in the JWKS, not yet signing: relying parties pick it up before it is
        /// activated.
        Next = "next",
        /// Signs new ID tokens.
        Active = "active",
        /// Only published in the JWKS so tokens it signed still verify.
        Retired = "retired",
    }
}

/// A registered OIDC client (a tenant website).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    pub id: String,
    pub account_id: String,
    pub client_id: String,
    /// `None` for a public client (PKCE only).
    pub client_secret_hash: Option<String>,
    /// Exact redirect URIs; authorize requests must match one byte for byte.
    pub redirect_uris: Vec<String>,
    pub login_mode: LoginMode,
    pub name: String,
    pub created_at: i64,
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
}

/// An access token to issue together with a code's redemption (the token is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccessToken {
    pub token_hash: String,
    pub expires_at: i64,
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
    /// The kid of the active signing key when the code was spent (`None` if there is none or
    /// the code was not redeemed).
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

/// A live access token as userinfo needs it, with its end user's claims (one query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserinfoGrant {
    pub openid: String,
    pub scope: String,
    pub user: Option<UserClaims>,
}

/// An issued access token's record (the token itself is never stored).
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

/// A signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// JOSE algorithm, e.g. `RS256` or `ES256`.
    pub algorithm: String,
    /// Vault ciphertext of the private key.
    pub private_key: Vec<u8>,
    /// The public JWK as JSON text.
    pub public_jwk: String,
    pub status: SigningKeyStatus,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key", &"<ciphertext>")
            .field("public_jwk", &self.public_jwk)
            .field("status", &self.status)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

macro_rules! client_columns {
    () => {
        "id, account_id, client_id, client_secret_hash, redirect_uris, login_mode, name, created_at"
    };
}

macro_rules! pending_columns {
    () => {
        "id, oidc_client_id, redirect_uri, state, nonce, code_challenge, code_challenge_method, \
         scope, wechat_state, status, openid, created_at, expires_at, browser_binding_hash"
    };
}

macro_rules! code_columns {
    () => {
        "code_hash, oidc_client_id, account_id, redirect_uri, openid, nonce, code_challenge, \
         code_challenge_method, scope, created_at, expires_at, used_at"
    };
}

macro_rules! access_token_columns {
    () => {
        "token_hash, code_hash, oidc_client_id, account_id, openid, scope, created_at, \
         expires_at, revoked_at"
    };
}

macro_rules! signing_key_columns {
    () => {
        "kid, algorithm, private_key, public_jwk, status, created_at, retired_at"
    };
}

fn client_from_row(row: &impl StoreRow) -> Result<OidcClient, sqlx::Error> {
    let uris = row.text("redirect_uris")?;
    Ok(OidcClient {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        client_id: row.text("client_id")?,
        client_secret_hash: row.opt_text("client_secret_hash")?,
        redirect_uris: serde_json::from_str(&uris).map_err(|e| sqlx::Error::ColumnDecode {
            index: "redirect_uris".to_owned(),
            source: Box::new(e),
        })?,
        login_mode: row.enumerated("login_mode")?,
        name: row.text("name")?,
        created_at: row.int("created_at")?,
    })
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

fn signing_key_from_row(row: &impl StoreRow) -> Result<SigningKey, sqlx::Error> {
    Ok(SigningKey {
        kid: row.text("kid")?,
        algorithm: row.text("algorithm")?,
        private_key: row.bytes("private_key")?,
        public_jwk: row.text("public_jwk")?,
        status: row.enumerated("status")?,
        created_at: row.int("created_at")?,
        retired_at: row.opt_int("retired_at")?,
    })
}

/// The account's columns aliased `a_…`, for joins.
macro_rules! account_prefixed_columns {
    () => {
        "a.id AS a_id, a.owner_user_id AS a_owner_user_id, a.appid AS a_appid, a.name AS a_name, \
         a.kind AS a_kind, a.verified AS a_verified, a.token_mode AS a_token_mode, \
         a.state AS a_state, a.created_at AS a_created_at, a.updated_at AS a_updated_at"
    };
}

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
    /// Registers a client. `client.created_at` is ignored in favour of `now`.
    /// Errors: [`StoreError::Duplicate`] if the client_id is taken.
    pub async fn create_oidc_client(
        &self,
        client: &OidcClient,
        now: i64,
    ) -> Result<OidcClient, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "INSERT INTO oidc_clients (id, account_id, client_id, client_secret_hash, \
                 redirect_uris, login_mode, name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 RETURNING ",
                client_columns!()
            ),
            postgres: concat!(
                "INSERT INTO oidc_clients (id, account_id, client_id, client_secret_hash, \
                 redirect_uris, login_mode, name, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
                client_columns!()
            ),
        };
        let uris = serde_json::Value::from(client.redirect_uris.clone()).to_string();
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(&client.id)
                .bind(&client.account_id)
                .bind(&client.client_id)
                .bind(client.client_secret_hash.as_deref())
                .bind(&uris)
                .bind(client.login_mode.as_db())
                .bind(&client.name)
                .bind(now)
                .fetch_one(pool)
                .await
                .map_err(|e| on_constraint(e, "oidc client_id", "account"))?;
            Ok(client_from_row(&row)?)
        })
    }

    /// The client with this public client_id.
    pub async fn find_oidc_client(
        &self,
        client_id: &str,
    ) -> Result<Option<OidcClient>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                client_columns!(),
                " FROM oidc_clients WHERE client_id = ?"
            ),
            postgres: concat!(
                "SELECT ",
                client_columns!(),
                " FROM oidc_clients WHERE client_id = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(client_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| client_from_row(&r)).transpose()?)
        })
    }

    /// The client with public `client_id` together with its account, if the account has this
    /// `appid` (one query for the authorize and token endpoints; `None` covers an unknown
    /// account, an unknown client and another account's client alike).
    pub async fn find_client_at_issuer(
        &self,
        appid: &str,
        client_id: &str,
    ) -> Result<Option<(Account, OidcClient)>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT c.id, c.account_id, c.client_id, c.client_secret_hash, c.redirect_uris, \
                 c.login_mode, c.name, c.created_at, ",
                account_prefixed_columns!(),
                " FROM oidc_clients c JOIN accounts a ON a.id = c.account_id \
                 WHERE c.client_id = ? AND a.appid = ?"
            ),
            postgres: concat!(
                "SELECT c.id, c.account_id, c.client_id, c.client_secret_hash, c.redirect_uris, \
                 c.login_mode, c.name, c.created_at, ",
                account_prefixed_columns!(),
                " FROM oidc_clients c JOIN accounts a ON a.id = c.account_id \
                 WHERE c.client_id = $1 AND a.appid = $2"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(client_id)
                .bind(appid)
                .fetch_optional(pool)
                .await?;
            Ok(row
                .map(|r| {
                    Ok::<_, sqlx::Error>((account_from_prefixed_row(&r)?, client_from_row(&r)?))
                })
                .transpose()?)
        })
    }

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
                 p.created_at, p.expires_at, p.browser_binding_hash, c.login_mode AS c_login_mode, \
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
                 p.created_at, p.expires_at, p.browser_binding_hash, c.login_mode AS c_login_mode, \
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

    /// An account's clients, oldest first.
    pub async fn list_oidc_clients(&self, account_id: &str) -> Result<Vec<OidcClient>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                client_columns!(),
                " FROM oidc_clients WHERE account_id = ? ORDER BY created_at, id"
            ),
            postgres: concat!(
                "SELECT ",
                client_columns!(),
                " FROM oidc_clients WHERE account_id = $1 ORDER BY created_at, id"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(client_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// Removes one of an account's clients with its pending authorizations, codes and tokens.
    pub async fn delete_oidc_client(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_clients WHERE account_id = ? AND id = ?",
            postgres: "DELETE FROM oidc_clients WHERE account_id = $1 AND id = $2",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
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
                     status, created_at, expires_at, browser_binding_hash) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            postgres: "INSERT INTO oidc_pending_authorizations (id, oidc_client_id, redirect_uri, \
                       state, nonce, code_challenge, code_challenge_method, scope, wechat_state, \
                       status, created_at, expires_at, browser_binding_hash) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12)",
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

    /// Stores an issued authorization code. `used_at` is ignored (a new code is unused).
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

    /// Redeems a code for the client with row id `oidc_client_id`: marks it used if it is
    /// unused and unexpired at `now` and, in the same transaction, stores `token` as the access
    /// token issued for it (user and scope from the code). A second redemption revokes the
    /// tokens issued for the code — and since the token is written with the spend, a
    /// concurrent second redemption always sees it. See [`CodeRedemption`].
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

    /// [`Store::redeem_auth_code`], also reading — in the statement that spends the code —
    /// the code's end user and the active signing key's kid, so issuing the ID token needs no
    /// further query. On PostgreSQL the spend, the token insert and those reads are one
    /// statement; on SQLite one transaction.
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

    /// Stores an issued access token. `revoked_at` is ignored.
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

    /// The access token with this hash if it is neither expired at `now` nor revoked.
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

    /// Removes pending authorizations, codes and access tokens that expired before `cutoff`;
    /// returns how many rows in all. Pass a cutoff some minutes in the past so a late reuse of
    /// a code still finds it and revokes its tokens.
    pub async fn delete_expired_oidc_rows(&self, cutoff: i64) -> Result<u64, StoreError> {
        const PENDING: Sql = Sql {
            sqlite: "DELETE FROM oidc_pending_authorizations WHERE expires_at < ?",
            postgres: "DELETE FROM oidc_pending_authorizations WHERE expires_at < $1",
        };
        const CODES: Sql = Sql {
            sqlite: "DELETE FROM oidc_auth_codes WHERE expires_at < ?",
            postgres: "DELETE FROM oidc_auth_codes WHERE expires_at < $1",
        };
        const TOKENS: Sql = Sql {
            sqlite: "DELETE FROM oidc_access_tokens WHERE expires_at < ?",
            postgres: "DELETE FROM oidc_access_tokens WHERE expires_at < $1",
        };
        let mut deleted = 0;
        for sql in [&PENDING, &CODES, &TOKENS] {
            deleted += on_backend!(self, |pool, d| {
                sqlx::query(sql.get(d))
                    .bind(cutoff)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
        }
        Ok(deleted)
    }

    /// Adds a signing key as the active one and retires the previously active keys, in one
    /// transaction. `key.status` and `key.retired_at` are ignored.
    pub async fn activate_new_signing_key(
        &self,
        key: &SigningKey,
        now: i64,
    ) -> Result<(), StoreError> {
        const RETIRE: Sql = Sql {
            sqlite: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = ? \
                     WHERE status = 'active'",
            postgres: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = $1 \
                       WHERE status = 'active'",
        };
        const INSERT: Sql = Sql {
            sqlite: "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, \
                     status, created_at) VALUES (?, ?, ?, ?, 'active', ?)",
            postgres: "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, \
                       status, created_at) VALUES ($1, $2, $3, $4, 'active', $5)",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(RETIRE.get(d))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(INSERT.get(d))
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "signing key kid", "signing key"))?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Stores the first signing key as active, unless an active key exists (another replica
    /// may have created one at the same moment; the unique index on live statuses decides).
    /// Returns whether this key became the active one.
    pub async fn create_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, \
                     status, created_at) SELECT ?, ?, ?, ?, 'active', ? \
                     WHERE NOT EXISTS (SELECT 1 FROM oidc_signing_keys WHERE status = 'active')",
            postgres: "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, \
                       status, created_at) SELECT $1, $2, $3, $4, 'active', $5 \
                       WHERE NOT EXISTS (SELECT 1 FROM oidc_signing_keys WHERE status = 'active')",
        };
        let inserted = on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(key.created_at)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match inserted.map_err(|e| on_constraint(e, "active signing key", "signing key")) {
            Ok(rows) => Ok(rows == 1),
            Err(StoreError::Duplicate { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Publishes `key` as the next signing key (in the JWKS, not signing yet).
    /// Errors: [`StoreError::Duplicate`] when a next key is already published.
    pub async fn publish_next_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, \
                     status, created_at) VALUES (?, ?, ?, ?, 'next', ?)",
            postgres: "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, \
                       status, created_at) VALUES ($1, $2, $3, $4, 'next', $5)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.private_key)
                .bind(&key.public_jwk)
                .bind(key.created_at)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "next signing key", "signing key"))?;
            Ok(())
        })
    }

    /// The published next key, if any.
    pub async fn next_signing_key(&self) -> Result<Option<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'next'"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'next'"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d)).fetch_optional(pool).await?;
            Ok(row.map(|r| signing_key_from_row(&r)).transpose()?)
        })
    }

    /// Makes the next key `kid` the active one and retires the active key, in one
    /// transaction. Returns whether `kid` was the next key (nothing changes otherwise).
    pub async fn promote_next_signing_key(&self, kid: &str, now: i64) -> Result<bool, StoreError> {
        const RETIRE: Sql = Sql {
            sqlite: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = ? \
                     WHERE status = 'active'",
            postgres: "UPDATE oidc_signing_keys SET status = 'retired', retired_at = $1 \
                       WHERE status = 'active'",
        };
        const PROMOTE: Sql = Sql {
            sqlite: "UPDATE oidc_signing_keys SET status = 'active' \
                     WHERE kid = ? AND status = 'next'",
            postgres: "UPDATE oidc_signing_keys SET status = 'active' \
                       WHERE kid = $1 AND status = 'next'",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(RETIRE.get(d))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let promoted = sqlx::query(PROMOTE.get(d))
                .bind(kid)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "active signing key", "signing key"))?
                .rows_affected()
                == 1;
            if promoted {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            Ok(promoted)
        })
    }

    /// The key that signs new tokens, if any.
    pub async fn active_signing_key(&self) -> Result<Option<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'active' ORDER BY created_at DESC LIMIT 1"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys WHERE status = 'active' ORDER BY created_at DESC LIMIT 1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d)).fetch_optional(pool).await?;
            Ok(row.map(|r| signing_key_from_row(&r)).transpose()?)
        })
    }

    /// Every stored key, next, active and retired, newest first (for the JWKS).
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys ORDER BY created_at DESC, kid"
            ),
            postgres: concat!(
                "SELECT ",
                signing_key_columns!(),
                " FROM oidc_signing_keys ORDER BY created_at DESC, kid"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d)).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(signing_key_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// Deletes keys retired before `cutoff` (once no token they signed can still be valid);
    /// returns how many.
    pub async fn delete_signing_keys_retired_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_signing_keys WHERE status = 'retired' AND retired_at < ?",
            postgres: "DELETE FROM oidc_signing_keys WHERE status = 'retired' AND retired_at < $1",
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
