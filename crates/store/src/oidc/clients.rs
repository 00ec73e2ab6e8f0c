//! Registered OIDC clients (tenant websites): each belongs to one account and is found by its
//! public client_id, alone or together with the account whose issuer it is used at.

use crate::accounts::Account;
use crate::audit::AuditRecord;
use crate::db::{BeginWrite, DbEnum, Sql, StoreRow};
use crate::error::on_constraint;
use crate::{Store, StoreError};

use super::account_from_prefixed_row;
use super::signing_keys::SigningAlg;

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
    /// Where a client's logins happen.
    pub enum LoginSurface {
        /// By the browser: WeChat's authorize page inside WeChat's browser, the scan page
        /// (a parametric QR code) in any other browser.
        Auto = "auto",
        /// Always WeChat's authorize page (the site is only ever opened in WeChat).
        Wechat = "wechat",
        /// Always the scan page (the site is for PCs, or wants the scan in WeChat too).
        Scan = "scan",
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
    /// The algorithm of its ID tokens (`id_token_signed_response_alg`).
    pub id_token_signed_response_alg: SigningAlg,
    /// Where its logins happen.
    pub login_surface: LoginSurface,
    /// Whether a scan on the scan page must be confirmed in WeChat before the PC is logged
    /// in; `None`: the default (on for accounts whose pushes are in plain mode).
    pub scan_confirmation: Option<bool>,
}

/// What an edit of a client replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEdit {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub login_mode: LoginMode,
    pub id_token_signed_response_alg: SigningAlg,
    pub login_surface: LoginSurface,
    pub scan_confirmation: Option<bool>,
}

impl From<&OidcClient> for ClientEdit {
    /// An edit that keeps everything, to change one field of.
    fn from(client: &OidcClient) -> Self {
        ClientEdit {
            name: client.name.clone(),
            redirect_uris: client.redirect_uris.clone(),
            login_mode: client.login_mode,
            id_token_signed_response_alg: client.id_token_signed_response_alg,
            login_surface: client.login_surface,
            scan_confirmation: client.scan_confirmation,
        }
    }
}

macro_rules! client_columns {
    () => {
        "id, account_id, client_id, client_secret_hash, redirect_uris, login_mode, name, created_at, \
         id_token_signed_response_alg, login_surface, scan_confirmation"
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
        id_token_signed_response_alg: row.enumerated("id_token_signed_response_alg")?,
        login_surface: row.enumerated("login_surface")?,
        scan_confirmation: row.opt_flag("scan_confirmation")?,
    })
}

impl Store {
    /// Registers a client, with its audit entry. `client.created_at` is ignored in favour of
    /// `now`.
    /// Errors: [`StoreError::Duplicate`] if the client_id is taken.
    pub async fn create_oidc_client(
        &self,
        client: &OidcClient,
        now: i64,
        record: &AuditRecord,
    ) -> Result<OidcClient, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "INSERT INTO oidc_clients (id, account_id, client_id, client_secret_hash, \
                 redirect_uris, login_mode, name, created_at, id_token_signed_response_alg, \
                 login_surface, scan_confirmation) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ",
                client_columns!()
            ),
            postgres: concat!(
                "INSERT INTO oidc_clients (id, account_id, client_id, client_secret_hash, \
                 redirect_uris, login_mode, name, created_at, id_token_signed_response_alg, \
                 login_surface, scan_confirmation) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
                client_columns!()
            ),
        };
        let uris = serde_json::Value::from(client.redirect_uris.clone()).to_string();
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(SQL.get(d))
                .bind(&client.id)
                .bind(&client.account_id)
                .bind(&client.client_id)
                .bind(client.client_secret_hash.as_deref())
                .bind(&uris)
                .bind(client.login_mode.as_db())
                .bind(&client.name)
                .bind(now)
                .bind(client.id_token_signed_response_alg.as_db())
                .bind(client.login_surface.as_db())
                .bind(client.scan_confirmation)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "oidc client_id", "account"))?;
            let created = client_from_row(&row)?;
            commit_audited!(self, tx, d, record, now);
            Ok(created)
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
                 c.login_mode, c.name, c.created_at, c.id_token_signed_response_alg, \
                 c.login_surface, c.scan_confirmation, ",
                account_prefixed_columns!(),
                " FROM oidc_clients c JOIN accounts a ON a.id = c.account_id \
                 WHERE c.client_id = ? AND a.appid = ?"
            ),
            postgres: concat!(
                "SELECT c.id, c.account_id, c.client_id, c.client_secret_hash, c.redirect_uris, \
                 c.login_mode, c.name, c.created_at, c.id_token_signed_response_alg, \
                 c.login_surface, c.scan_confirmation, ",
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

    /// Replaces a client's settings (name, redirect URIs, login mode, ID token algorithm, login
    /// surface, scan confirmation), with its audit entry. Tokens already issued keep their
    /// signatures (the JWKS publishes every algorithm's keys). Returns
    /// the client, or `None` if the account has no such client.
    pub async fn update_oidc_client(
        &self,
        account_id: &str,
        id: &str,
        edit: &ClientEdit,
        now: i64,
        record: &AuditRecord,
    ) -> Result<Option<OidcClient>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "UPDATE oidc_clients SET name = ?, redirect_uris = ?, login_mode = ?, \
                 id_token_signed_response_alg = ?, login_surface = ?, scan_confirmation = ?, \
                 updated_at = ? WHERE account_id = ? AND id = ? RETURNING ",
                client_columns!()
            ),
            postgres: concat!(
                "UPDATE oidc_clients SET name = $1, redirect_uris = $2, login_mode = $3, \
                 id_token_signed_response_alg = $4, login_surface = $5, scan_confirmation = $6, \
                 updated_at = $7 WHERE account_id = $8 AND id = $9 RETURNING ",
                client_columns!()
            ),
        };
        let uris = serde_json::Value::from(edit.redirect_uris.clone()).to_string();
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(SQL.get(d))
                .bind(&edit.name)
                .bind(&uris)
                .bind(edit.login_mode.as_db())
                .bind(edit.id_token_signed_response_alg.as_db())
                .bind(edit.login_surface.as_db())
                .bind(edit.scan_confirmation)
                .bind(now)
                .bind(account_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let updated = client_from_row(&row)?;
            commit_audited!(self, tx, d, record, now);
            Ok(Some(updated))
        })
    }

    /// Replaces a confidential client's secret hash, with its audit entry. Returns `false`
    /// if the account has no such confidential client (a public client has no secret).
    pub async fn set_oidc_client_secret(
        &self,
        account_id: &str,
        id: &str,
        secret_hash: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_clients SET client_secret_hash = ?, updated_at = ? \
                     WHERE account_id = ? AND id = ? AND client_secret_hash IS NOT NULL",
            postgres: "UPDATE oidc_clients SET client_secret_hash = $1, updated_at = $2 \
                       WHERE account_id = $3 AND id = $4 AND client_secret_hash IS NOT NULL",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(SQL.get(d))
                .bind(secret_hash)
                .bind(now)
                .bind(account_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !updated {
                return Ok(false);
            }
            commit_audited!(self, tx, d, record, now);
            Ok(true)
        })
    }

    /// Removes one of an account's clients with its pending authorizations, codes and tokens,
    /// with its audit entry. Returns `false` if there is no such client.
    pub async fn delete_oidc_client(
        &self,
        account_id: &str,
        id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_clients WHERE account_id = ? AND id = ?",
            postgres: "DELETE FROM oidc_clients WHERE account_id = $1 AND id = $2",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !deleted {
                return Ok(false);
            }
            commit_audited!(self, tx, d, record, now);
            Ok(true)
        })
    }
}
