//! OpenID Connect provider state: clients, pending authorizations, authorization codes,
//! issued access tokens and signing keys.
//!
//! Codes and access tokens are stored only as hashes. A code is single use: redemption is one
//! conditional `UPDATE … WHERE used_at IS NULL AND expires_at > now`, so of two concurrent
//! redemptions exactly one succeeds, on any replica. A second redemption of a used code is an
//! attack or a bug (RFC 6749 §4.1.2), so it revokes every access token issued for that code.
//! Private signing keys arrive encrypted by the vault.

use std::fmt;

use crate::db::{BeginWrite, DbEnum, Sql, StoreRow};
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
         scope, wechat_state, status, openid, created_at, expires_at"
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
                     status, created_at, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            postgres: "INSERT INTO oidc_pending_authorizations (id, oidc_client_id, redirect_uri, \
                       state, nonce, code_challenge, code_challenge_method, scope, wechat_state, \
                       status, created_at, expires_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11)",
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
    /// unused and unexpired at `now`. A second redemption revokes the tokens issued for the
    /// code. See [`CodeRedemption`].
    pub async fn redeem_auth_code(
        &self,
        code_hash: &str,
        oidc_client_id: &str,
        now: i64,
    ) -> Result<CodeRedemption, StoreError> {
        const SPEND: Sql = Sql {
            sqlite: concat!(
                "UPDATE oidc_auth_codes SET used_at = ?1 \
                 WHERE code_hash = ?2 AND oidc_client_id = ?3 AND used_at IS NULL \
                 AND expires_at > ?1 RETURNING ",
                code_columns!()
            ),
            postgres: concat!(
                "UPDATE oidc_auth_codes SET used_at = $1 \
                 WHERE code_hash = $2 AND oidc_client_id = $3 AND used_at IS NULL \
                 AND expires_at > $1 RETURNING ",
                code_columns!()
            ),
        };
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
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let spent = sqlx::query(SPEND.get(d))
                .bind(now)
                .bind(code_hash)
                .bind(oidc_client_id)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = if let Some(row) = spent {
                CodeRedemption::Redeemed(Box::new(code_from_row(&row)?))
            } else {
                let found = sqlx::query(LOOK.get(d))
                    .bind(code_hash)
                    .bind(oidc_client_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                match found {
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
                }
            };
            tx.commit().await?;
            Ok(outcome)
        })
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

    /// Every stored key, active and retired, newest first (for the JWKS).
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
