//! Accounts (tenants), their encrypted secrets, and the queries vault rotation needs.
//!
//! Secrets are kept in `account_secrets`, apart from the account row, so listing and counting
//! accounts (dashboard, server start-up) never reads a ciphertext; [`Store::load_account_secrets`]
//! is the one way to get them. Everything in that table is opaque vault output: the wrapped
//! DEK (with the id of the KEK that wrapped it, in its own column so rotation can find DEKs by
//! key) and the field ciphertexts. The DEK columns are written only when the account is created
//! and by [`Store::replace_wrapped_dek`]; updating fields never touches them, so a secret edit
//! cannot undo a concurrent rotation.
//!
//! Deleting an account deletes its wrapped DEK with it (crypto-shredding) and, through
//! `ON DELETE CASCADE`, every row that belongs to the account.

use std::fmt;

use crate::audit::AuditRecord;
use crate::db::{BeginWrite, DbEnum, MAX_PAGE, Sql, StoreRow, page_limit};
use crate::error::on_constraint;
use crate::tokens::TokenState;
use crate::{Store, StoreError};

/// A token refresh that failed for want of good credentials (or is still waiting for its
/// first token) is due at once after the credentials change. Binds: now, account id.
const RETRY_FAILED_REFRESH_NOW: Sql = Sql {
    sqlite: "UPDATE core_tokens SET next_refresh_at = ?1, updated_at = ?1 \
             WHERE account_id = ?2 AND state IN ('needs_attention', 'retrying', 'pending')",
    postgres: "UPDATE core_tokens SET next_refresh_at = $1, updated_at = $1 \
               WHERE account_id = $2 AND state IN ('needs_attention', 'retrying', 'pending')",
};

db_enum! {
    /// WeChat's kind of official account.
    pub enum AccountKind {
        /// 服务号.
        Service = "service",
        /// 订阅号.
        Subscription = "subscription",
    }
}

db_enum! {
    /// Which WeChat endpoint fetches the core token.
    pub enum TokenMode {
        /// `/cgi-bin/token`.
        Token = "token",
        /// `/cgi-bin/stable_token`.
        StableToken = "stable_token",
    }
}

db_enum! {
    /// Whether wxhub serves the account.
    pub enum AccountState {
        /// Tokens are refreshed and logins served.
        Active = "active",
        /// Kept but not served (no refreshes, no logins).
        Disabled = "disabled",
    }
}

/// Which accounts a listing shows; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    /// Only this owner's.
    pub owner_user_id: Option<String>,
    /// Only those whose core token is in this state (`pending` also for never fetched).
    pub token_state: Option<TokenState>,
    /// Only active or only disabled ones.
    pub state: Option<AccountState>,
    pub kind: Option<AccountKind>,
    /// An AppID (matched exactly), or else part of the name (case-insensitive for ASCII
    /// letters).
    pub search: Option<String>,
}

/// `text` as a LIKE pattern matching names that contain it, lower-cased, with `%`, `_` and
/// the escape character taken literally.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// An account without its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub owner_user_id: String,
    pub appid: String,
    pub name: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
    pub state: AccountState,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An account to create, with its secrets already encrypted under its new DEK.
///
/// `id` must be the id the DEK and ciphertexts were bound to (generate it with
/// [`crate::new_id`] before calling the vault).
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: String,
    pub owner_user_id: String,
    pub appid: String,
    pub name: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
    pub secrets: AccountSecrets,
    /// What may be shown of the AppSecret after entry (see [`appsecret_hint`]).
    pub appsecret_hint: Option<String>,
}

/// The last four characters of an AppSecret: all the dashboard ever shows of it again, so
/// an owner can tell which secret is stored.
pub fn appsecret_hint(appsecret: &str) -> String {
    let chars: Vec<char> = appsecret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// What can be said of an account's secrets without decrypting any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsPresent {
    /// The AppSecret's last four characters, when kept (see [`appsecret_hint`]).
    pub appsecret_hint: Option<String>,
    pub push_token: bool,
    pub encoding_aes_key: bool,
}

/// The editable profile of an account.
#[derive(Debug, Clone)]
pub struct AccountProfile {
    pub name: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
}

/// An account's vault output: its wrapped DEK and encrypted fields, all opaque bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountSecrets {
    /// The DEK wrapped by a KEK.
    pub wrapped_dek: Vec<u8>,
    /// The id of the KEK that wrapped it.
    pub dek_kek_id: String,
    /// Ciphertext of the APPSECRET.
    pub appsecret: Vec<u8>,
    /// Ciphertext of the push Token, if push is configured.
    pub push_token: Option<Vec<u8>>,
    /// Ciphertext of the EncodingAESKey, if safe mode is configured.
    pub encoding_aes_key: Option<Vec<u8>>,
}

impl fmt::Debug for AccountSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lengths only: ciphertext has no place in logs either.
        f.debug_struct("AccountSecrets")
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("dek_kek_id", &self.dek_kek_id)
            .field("appsecret_len", &self.appsecret.len())
            .field(
                "push_token",
                &self.push_token.as_ref().map(|_| "<ciphertext>"),
            )
            .field(
                "encoding_aes_key",
                &self.encoding_aes_key.as_ref().map(|_| "<ciphertext>"),
            )
            .finish()
    }
}

/// Where an account's core token stands, without the token: what listings show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHealth {
    pub state: crate::tokens::TokenState,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// Token fetches on `quota_day`.
    pub upstream_calls_today: i64,
    pub quota_day: i64,
    pub last_error_code: Option<i64>,
    pub last_error_message: Option<String>,
    pub last_error_ip: Option<String>,
}

macro_rules! account_columns_as_a {
    () => {
        "a.id AS id, a.owner_user_id AS owner_user_id, a.appid AS appid, a.name AS name, \
         a.kind AS kind, a.verified AS verified, a.token_mode AS token_mode, a.state AS state, \
         a.created_at AS created_at, a.updated_at AS updated_at"
    };
}

macro_rules! account_columns {
    () => {
        "id, owner_user_id, appid, name, kind, verified, token_mode, state, created_at, updated_at"
    };
}

/// Whether `text` is an AppID (`wx` and 16 hex digits): a search for it is an exact match.
fn looks_like_appid(text: &str) -> bool {
    text.len() == 18 && text.starts_with("wx") && text[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The statement of [`Store::list_account_health_page`] for the filters that are set. Binds,
/// in order: after, then owner, token state, account state, kind, AppID, name pattern (each
/// only when set), then the limit.
fn health_page_sql(
    dialect: crate::db::Dialect,
    filter: &AccountFilter,
    appid: bool,
    pattern: bool,
) -> String {
    use std::fmt::Write as _;
    let mut n = 0;
    let mut param = || {
        n += 1;
        match dialect {
            crate::db::Dialect::Sqlite => format!("?{n}"),
            crate::db::Dialect::Postgres => format!("${n}"),
        }
    };
    let columns = concat!(
        account_columns_as_a!(),
        ", t.account_id AS t_account_id, t.state AS t_state, \
         t.issued_at AS t_issued_at, t.expires_at AS t_expires_at, \
         t.upstream_calls_today AS t_calls, t.quota_day AS t_quota_day, \
         t.last_error_code AS t_error_code, t.last_error_message AS t_error_message, \
         t.last_error_ip AS t_error_ip"
    );
    // Every account has its token row from its creation on, so a token-state filter can
    // start from the token rows (in id order from their state index). Without one, the page
    // of accounts is chosen first and only its rows are joined: a planner that joined first
    // (PostgreSQL did, with 100,000 accounts) would read every token row for one page.
    let token_driven = filter.token_state.is_some();
    let mut sql = if token_driven {
        format!(
            "SELECT {columns} FROM core_tokens t JOIN accounts a ON a.id = t.account_id \
             WHERE t.account_id > {}",
            param()
        )
    } else {
        format!(
            "SELECT {columns} FROM (SELECT * FROM accounts a WHERE a.id > {}",
            param()
        )
    };
    let mut and = |condition: &str| {
        let _ = write!(sql, " AND {condition} {}", param());
    };
    if filter.owner_user_id.is_some() {
        and("a.owner_user_id =");
    }
    if token_driven {
        and("t.state =");
    }
    if filter.state.is_some() {
        and("a.state =");
    }
    if filter.kind.is_some() {
        and("a.kind =");
    }
    if appid {
        and("a.appid =");
    }
    if pattern {
        and("lower(a.name) LIKE");
        sql.push_str(" ESCAPE '\\'");
    }
    if token_driven {
        let _ = write!(sql, " ORDER BY t.account_id LIMIT {}", param());
    } else {
        let _ = write!(
            sql,
            " ORDER BY a.id LIMIT {}) a LEFT JOIN core_tokens t ON t.account_id = a.id \
             ORDER BY a.id",
            param()
        );
    }
    sql
}

pub(crate) fn secrets_from_row(row: &impl StoreRow) -> Result<AccountSecrets, sqlx::Error> {
    Ok(AccountSecrets {
        wrapped_dek: row.bytes("wrapped_dek")?,
        dek_kek_id: row.text("dek_kek_id")?,
        appsecret: row.bytes("appsecret")?,
        push_token: row.opt_bytes("push_token")?,
        encoding_aes_key: row.opt_bytes("encoding_aes_key")?,
    })
}

pub(crate) fn account_from_row(row: &impl StoreRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: row.text("id")?,
        owner_user_id: row.text("owner_user_id")?,
        appid: row.text("appid")?,
        name: row.text("name")?,
        kind: row.enumerated("kind")?,
        verified: row.flag("verified")?,
        token_mode: row.enumerated("token_mode")?,
        state: row.enumerated("state")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

impl Store {
    /// Creates an account with its secrets and its (empty, due now) core-token row, in one
    /// transaction.
    ///
    /// Errors: [`StoreError::Duplicate`] (`"account appid"`) if the appid is registered;
    /// [`StoreError::NotFound`] (`"owner user"`) if the owner does not exist.
    pub async fn create_account(
        &self,
        account: &NewAccount,
        now: i64,
    ) -> Result<Account, StoreError> {
        self.insert_account(account, now, None).await
    }

    /// [`Store::create_account`] with its audit entry, in the same transaction.
    pub async fn create_account_audited(
        &self,
        account: &NewAccount,
        now: i64,
        record: &AuditRecord,
    ) -> Result<Account, StoreError> {
        self.insert_account(account, now, Some(record)).await
    }

    /// Registers many accounts at once (an operator's import): for each, the rows
    /// [`Store::create_account`] writes, with multi-row statements, in one transaction — all
    /// of them or none (a duplicate appid, in the batch or already registered, fails the whole
    /// batch with [`StoreError::Duplicate`]). `record`, if any, is written in the same
    /// transaction (one entry for the batch). Returns how many were created.
    pub async fn create_accounts(
        &self,
        accounts: &[NewAccount],
        now: i64,
        record: Option<&AuditRecord>,
    ) -> Result<u64, StoreError> {
        // 8 binds a row: far below SQLite's and PostgreSQL's limits on binds per statement.
        const ROWS_PER_STATEMENT: usize = 500;
        if accounts.is_empty() {
            return Ok(0);
        }
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO accounts (id, owner_user_id, appid, name, kind, verified, \
                     token_mode, state, created_at, updated_at) ",
                );
                insert.push_values(chunk, |mut row, a| {
                    row.push_bind(a.id.as_str())
                        .push_bind(a.owner_user_id.as_str())
                        .push_bind(a.appid.as_str())
                        .push_bind(a.name.as_str())
                        .push_bind(a.kind.as_db())
                        .push_bind(a.verified)
                        .push_bind(a.token_mode.as_db())
                        .push("'active'")
                        .push_bind(now)
                        .push_bind(now);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| on_constraint(e, "account appid", "owner user"))?;
                let mut secrets = sqlx::QueryBuilder::new(
                    "INSERT INTO account_secrets (account_id, wrapped_dek, dek_kek_id, appsecret, \
                     push_token, encoding_aes_key, updated_at, appsecret_hint) ",
                );
                secrets.push_values(chunk, |mut row, a| {
                    row.push_bind(a.id.as_str())
                        .push_bind(a.secrets.wrapped_dek.as_slice())
                        .push_bind(a.secrets.dek_kek_id.as_str())
                        .push_bind(a.secrets.appsecret.as_slice())
                        .push_bind(a.secrets.push_token.as_deref())
                        .push_bind(a.secrets.encoding_aes_key.as_deref())
                        .push_bind(now)
                        .push_bind(a.appsecret_hint.as_deref());
                });
                secrets.build().execute(&mut *tx).await?;
                // As for one account: its token is due at once.
                let mut tokens = sqlx::QueryBuilder::new(
                    "INSERT INTO core_tokens (account_id, next_refresh_at, state, updated_at) ",
                );
                tokens.push_values(chunk, |mut row, a| {
                    row.push_bind(a.id.as_str())
                        .push_bind(now)
                        .push("'pending'")
                        .push_bind(now);
                });
                tokens.build().execute(&mut *tx).await?;
            }
            match record {
                Some(record) => commit_audited!(self, tx, d, record, now),
                None => tx.commit().await?,
            }
            Ok(accounts.len() as u64)
        })
    }

    /// Which of `appids` are registered already (for checking an import before writing it).
    pub async fn registered_appids(&self, appids: &[&str]) -> Result<Vec<String>, StoreError> {
        const PER_STATEMENT: usize = 1000;
        let mut found = Vec::new();
        for chunk in appids.chunks(PER_STATEMENT) {
            on_backend!(self, |pool, _d| {
                let mut sql =
                    sqlx::QueryBuilder::new("SELECT appid FROM accounts WHERE appid IN (");
                let mut list = sql.separated(", ");
                for appid in chunk {
                    list.push_bind(*appid);
                }
                sql.push(")");
                for row in sql.build().fetch_all(pool).await? {
                    found.push(row.text("appid")?);
                }
            });
        }
        Ok(found)
    }

    async fn insert_account(
        &self,
        account: &NewAccount,
        now: i64,
        record: Option<&AuditRecord>,
    ) -> Result<Account, StoreError> {
        const INSERT_ACCOUNT: Sql = Sql {
            sqlite: concat!(
                "INSERT INTO accounts (id, owner_user_id, appid, name, kind, verified, token_mode, \
                 state, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8, ?8) RETURNING ",
                account_columns!()
            ),
            postgres: concat!(
                "INSERT INTO accounts (id, owner_user_id, appid, name, kind, verified, token_mode, \
                 state, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $8) RETURNING ",
                account_columns!()
            ),
        };
        const INSERT_SECRETS: Sql = Sql {
            sqlite: "INSERT INTO account_secrets (account_id, wrapped_dek, dek_kek_id, appsecret, \
                     push_token, encoding_aes_key, updated_at, appsecret_hint) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO account_secrets (account_id, wrapped_dek, dek_kek_id, appsecret, \
                       push_token, encoding_aes_key, updated_at, appsecret_hint) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        };
        // A new account's token is due at once; the scheduler picks it up on its next pass.
        const INSERT_TOKEN: Sql = Sql {
            sqlite: "INSERT INTO core_tokens (account_id, next_refresh_at, state, updated_at) \
                     VALUES (?1, ?2, 'pending', ?2)",
            postgres: "INSERT INTO core_tokens (account_id, next_refresh_at, state, updated_at) \
                       VALUES ($1, $2, 'pending', $2)",
        };
        let secrets = &account.secrets;
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(INSERT_ACCOUNT.get(d))
                .bind(&account.id)
                .bind(&account.owner_user_id)
                .bind(&account.appid)
                .bind(&account.name)
                .bind(account.kind.as_db())
                .bind(account.verified)
                .bind(account.token_mode.as_db())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "account appid", "owner user"))?;
            let created = account_from_row(&row)?;
            sqlx::query(INSERT_SECRETS.get(d))
                .bind(&account.id)
                .bind(&secrets.wrapped_dek)
                .bind(&secrets.dek_kek_id)
                .bind(&secrets.appsecret)
                .bind(secrets.push_token.as_deref())
                .bind(secrets.encoding_aes_key.as_deref())
                .bind(now)
                .bind(account.appsecret_hint.as_deref())
                .execute(&mut *tx)
                .await?;
            sqlx::query(INSERT_TOKEN.get(d))
                .bind(&account.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            match record {
                Some(record) => commit_audited!(self, tx, d, record, now),
                None => tx.commit().await?,
            }
            Ok(created)
        })
    }

    /// The account with this id.
    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!("SELECT ", account_columns!(), " FROM accounts WHERE id = ?"),
            postgres: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| account_from_row(&r)).transpose()?)
        })
    }

    /// The account with this appid.
    pub async fn find_account_by_appid(&self, appid: &str) -> Result<Option<Account>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE appid = ?"
            ),
            postgres: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE appid = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(appid)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| account_from_row(&r)).transpose()?)
        })
    }

    /// Accounts ordered by id, after `after_id` (keyset pagination), at most `limit` (capped
    /// at 1000). Reads no secrets.
    pub async fn list_accounts_page(
        &self,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Account>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id > ? ORDER BY id LIMIT ?"
            ),
            postgres: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE id > $1 ORDER BY id LIMIT $2"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(after_id.unwrap_or(""))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(account_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// The accounts a user owns, ordered by id.
    pub async fn list_accounts_of_owner(
        &self,
        owner_user_id: &str,
    ) -> Result<Vec<Account>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE owner_user_id = ? ORDER BY id"
            ),
            postgres: concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE owner_user_id = $1 ORDER BY id"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(owner_user_id)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(account_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// Accounts with their token health that match `filter`, ordered by id after `after_id`
    /// (keyset pagination), at most `limit` (capped at 1000). One query, no ciphertext: what
    /// account listings show.
    ///
    /// The statement names only the filters that are set, so each combination gets a plan
    /// that can use its index: a token state is read from `core_tokens (state, account_id)`
    /// in id order, an AppID from its unique index; only a search in names reads every name.
    pub async fn list_account_health_page(
        &self,
        filter: &AccountFilter,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(Account, Option<TokenHealth>)>, StoreError> {
        let search = filter
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let appid = search.filter(|s| looks_like_appid(s));
        let pattern = search.filter(|s| !looks_like_appid(s)).map(like_pattern);
        on_backend!(self, |pool, d| {
            let sql = health_page_sql(d, filter, appid.is_some(), pattern.is_some());
            // Built from fixed fragments only; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after_id.unwrap_or(""));
            if let Some(owner) = &filter.owner_user_id {
                query = query.bind(owner);
            }
            if let Some(state) = filter.token_state {
                query = query.bind(state.as_db());
            }
            if let Some(state) = filter.state {
                query = query.bind(state.as_db());
            }
            if let Some(kind) = filter.kind {
                query = query.bind(kind.as_db());
            }
            if let Some(appid) = appid {
                query = query.bind(appid);
            }
            if let Some(pattern) = &pattern {
                query = query.bind(pattern);
            }
            let rows = query
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    let account = account_from_row(row)?;
                    let health = match row.opt_text("t_account_id")? {
                        None => None,
                        Some(_) => Some(TokenHealth {
                            state: row.enumerated("t_state")?,
                            issued_at: row.opt_int("t_issued_at")?,
                            expires_at: row.opt_int("t_expires_at")?,
                            upstream_calls_today: row.int("t_calls")?,
                            quota_day: row.int("t_quota_day")?,
                            last_error_code: row.opt_int("t_error_code")?,
                            last_error_message: row.opt_text("t_error_message")?,
                            last_error_ip: row.opt_text("t_error_ip")?,
                        }),
                    };
                    Ok((account, health))
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// How many accounts there are in each (account state, token state). Pairs without
    /// accounts are left out. Every account has its token row from its creation on, so the
    /// counts come from the token-state index, less the (few) disabled accounts counted
    /// apart: no statement reads every account.
    pub async fn count_accounts_by_health(
        &self,
    ) -> Result<Vec<(AccountState, TokenState, i64)>, StoreError> {
        const ALL: Sql = Sql {
            sqlite: "SELECT state AS token_state, COUNT(*) AS n FROM core_tokens GROUP BY state",
            postgres: "SELECT state AS token_state, COUNT(*) AS n FROM core_tokens GROUP BY state",
        };
        const DISABLED: Sql = Sql {
            sqlite: "SELECT t.state AS token_state, COUNT(*) AS n FROM accounts a \
                     JOIN core_tokens t ON t.account_id = a.id WHERE a.state = 'disabled' \
                     GROUP BY t.state",
            postgres: "SELECT t.state AS token_state, COUNT(*) AS n FROM accounts a \
                       JOIN core_tokens t ON t.account_id = a.id WHERE a.state = 'disabled' \
                       GROUP BY t.state",
        };
        let (all, disabled) = on_backend!(self, |pool, d| {
            let mut counts = [Vec::new(), Vec::new()];
            for (sql, out) in [ALL, DISABLED].iter().zip(counts.iter_mut()) {
                for row in sqlx::query(sql.get(d)).fetch_all(pool).await? {
                    out.push((row.enumerated::<TokenState>("token_state")?, row.int("n")?));
                }
            }
            let [all, disabled] = counts;
            (all, disabled)
        });
        let mut counts = Vec::new();
        for (state, n) in &all {
            let off = disabled
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            if n - off > 0 {
                counts.push((AccountState::Active, *state, n - off));
            }
        }
        counts.extend(
            disabled
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(state, n)| (AccountState::Disabled, state, n)),
        );
        counts.sort_by_key(|(a, t, _)| (a.as_db(), t.as_db()));
        Ok(counts)
    }

    /// Refreshes the query planner's statistics (SQLite `ANALYZE`, PostgreSQL `ANALYZE`),
    /// for after a bulk import: PostgreSQL's autovacuum does it in time anyway, SQLite never
    /// on its own.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "ANALYZE",
            postgres: "ANALYZE",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d)).execute(pool).await?;
            Ok(())
        })
    }

    /// How many accounts exist.
    pub async fn count_accounts(&self) -> Result<i64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT COUNT(*) AS n FROM accounts",
            postgres: "SELECT COUNT(*) AS n FROM accounts",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d)).fetch_one(pool).await?.int("n")?)
        })
    }

    /// Replaces an account's editable profile.
    pub async fn update_account_profile(
        &self,
        id: &str,
        profile: &AccountProfile,
        now: i64,
    ) -> Result<Account, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "UPDATE accounts SET name = ?, kind = ?, verified = ?, token_mode = ?, updated_at = ? \
                 WHERE id = ? RETURNING ",
                account_columns!()
            ),
            postgres: concat!(
                "UPDATE accounts SET name = $1, kind = $2, verified = $3, token_mode = $4, \
                 updated_at = $5 WHERE id = $6 RETURNING ",
                account_columns!()
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(&profile.name)
                .bind(profile.kind.as_db())
                .bind(profile.verified)
                .bind(profile.token_mode.as_db())
                .bind(now)
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or(StoreError::NotFound { what: "account" })?;
            Ok(account_from_row(&row)?)
        })
    }

    /// Activates or disables an account, with its audit entry.
    pub async fn set_account_state(
        &self,
        id: &str,
        state: AccountState,
        now: i64,
        record: &AuditRecord,
    ) -> Result<Account, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "UPDATE accounts SET state = ?, updated_at = ? WHERE id = ? RETURNING ",
                account_columns!()
            ),
            postgres: concat!(
                "UPDATE accounts SET state = $1, updated_at = $2 WHERE id = $3 RETURNING ",
                account_columns!()
            ),
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(SQL.get(d))
                .bind(state.as_db())
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound { what: "account" })?;
            let account = account_from_row(&row)?;
            commit_audited!(self, tx, d, record, now);
            Ok(account)
        })
    }

    /// Renames an account, with its audit entry.
    pub async fn rename_account(
        &self,
        id: &str,
        name: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<Account, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "UPDATE accounts SET name = ?, updated_at = ? WHERE id = ? RETURNING ",
                account_columns!()
            ),
            postgres: concat!(
                "UPDATE accounts SET name = $1, updated_at = $2 WHERE id = $3 RETURNING ",
                account_columns!()
            ),
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(SQL.get(d))
                .bind(name)
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound { what: "account" })?;
            let account = account_from_row(&row)?;
            commit_audited!(self, tx, d, record, now);
            Ok(account)
        })
    }

    /// An account's wrapped DEK and encrypted fields, for the one caller about to decrypt them.
    pub async fn load_account_secrets(
        &self,
        account_id: &str,
    ) -> Result<Option<AccountSecrets>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT wrapped_dek, dek_kek_id, appsecret, push_token, encoding_aes_key \
                     FROM account_secrets WHERE account_id = ?",
            postgres: "SELECT wrapped_dek, dek_kek_id, appsecret, push_token, encoding_aes_key \
                       FROM account_secrets WHERE account_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| secrets_from_row(&r)).transpose()?)
        })
    }

    /// Replaces an account's AppSecret ciphertext (sealed under its existing DEK; the wrapped
    /// DEK is left alone, so this cannot undo a concurrent rotation), with its audit entry. A
    /// token refresh that failed for want of a good secret is retried at once.
    pub async fn replace_appsecret(
        &self,
        account_id: &str,
        appsecret: &[u8],
        hint: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE account_secrets SET appsecret = ?, appsecret_hint = ?, updated_at = ? \
                     WHERE account_id = ?",
            postgres: "UPDATE account_secrets SET appsecret = $1, appsecret_hint = $2, \
                       updated_at = $3 WHERE account_id = $4",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(SQL.get(d))
                .bind(appsecret)
                .bind(hint)
                .bind(now)
                .bind(account_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound { what: "account" });
            }
            sqlx::query(RETRY_FAILED_REFRESH_NOW.get(d))
                .bind(now)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            commit_audited!(self, tx, d, record, now);
            Ok(())
        })
    }

    /// Which of the account's secrets are stored, and the AppSecret's hint; reads no
    /// ciphertext.
    pub async fn secrets_present(&self, account_id: &str) -> Result<SecretsPresent, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT appsecret_hint, push_token IS NOT NULL AS has_push_token, \
                     encoding_aes_key IS NOT NULL AS has_aes_key FROM account_secrets \
                     WHERE account_id = ?",
            postgres: "SELECT appsecret_hint, push_token IS NOT NULL AS has_push_token, \
                       encoding_aes_key IS NOT NULL AS has_aes_key FROM account_secrets \
                       WHERE account_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?
                .ok_or(StoreError::NotFound { what: "account" })?;
            Ok(SecretsPresent {
                appsecret_hint: row.opt_text("appsecret_hint")?,
                push_token: row.flag("has_push_token")?,
                encoding_aes_key: row.flag("has_aes_key")?,
            })
        })
    }

    /// Replaces an account's push Token and EncodingAESKey ciphertexts (`None` clears one),
    /// with its audit entry.
    pub async fn replace_push_credentials(
        &self,
        account_id: &str,
        push_token: Option<&[u8]>,
        encoding_aes_key: Option<&[u8]>,
        now: i64,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE account_secrets SET push_token = ?, encoding_aes_key = ?, \
                     updated_at = ? WHERE account_id = ?",
            postgres: "UPDATE account_secrets SET push_token = $1, encoding_aes_key = $2, \
                       updated_at = $3 WHERE account_id = $4",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(SQL.get(d))
                .bind(push_token)
                .bind(encoding_aes_key)
                .bind(now)
                .bind(account_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound { what: "account" });
            }
            commit_audited!(self, tx, d, record, now);
            Ok(())
        })
    }

    /// Makes an account's token refresh due now, unless a refresh holds its lease (that one
    /// is about to deliver), with its audit entry. Returns whether it was rescheduled; when it
    /// was not, nothing is written (the entry neither).
    pub async fn request_refresh_now(
        &self,
        account_id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE core_tokens SET next_refresh_at = ?1, updated_at = ?1 \
                     WHERE account_id = ?2 AND (lease_until IS NULL OR lease_until < ?1)",
            postgres: "UPDATE core_tokens SET next_refresh_at = $1, updated_at = $1 \
                       WHERE account_id = $2 AND (lease_until IS NULL OR lease_until < $1)",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(account_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            commit_audited!(self, tx, d, record, now);
            Ok(true)
        })
    }

    /// Deletes an account: its wrapped DEK and ciphertexts (so its secrets can never be
    /// decrypted again) and every row that belongs to it (tokens, end users, OIDC clients and
    /// codes, API keys, pushes, statistics), with its audit entry. The audit log keeps its
    /// entries.
    pub async fn delete_account(
        &self,
        id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM accounts WHERE id = ?",
            postgres: "DELETE FROM accounts WHERE id = $1",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query(SQL.get(d))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound { what: "account" });
            }
            commit_audited!(self, tx, d, record, now);
            Ok(())
        })
    }
}
