//! Dashboard users and their sessions.
//!
//! Passwords arrive already hashed (argon2id, PHC string) and session ids are hashes of the
//! session token: this module never sees a password or a token. Email uniqueness is
//! case-insensitive through `email_key`, the lower-cased email computed here, so both
//! databases compare the same way.

use crate::audit::AuditRecord;
use crate::db::{BeginWrite, DbEnum, MAX_PAGE, Sql, StoreRow, page_limit};
use crate::error::{on_constraint, on_delete_restricted};
use crate::{Store, StoreError};

db_enum! {
    /// What a dashboard user may do.
    pub enum Role {
        /// Registers and manages their own accounts.
        Owner = "owner",
        /// Sees every account's health and statistics.
        Operator = "operator",
    }
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: i64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
}

/// A login session. `id` is the hash of the session token held by the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
}

/// The key that makes emails unique regardless of case.
fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The `users` columns every user query selects (used by `sign_in` too).
macro_rules! user_columns {
    () => {
        "id, email, password_hash, role, disabled, created_at"
    };
}

pub(crate) fn user_from_row(row: &impl StoreRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.text("id")?,
        email: row.text("email")?,
        password_hash: row.text("password_hash")?,
        role: row.enumerated("role")?,
        disabled: row.flag("disabled")?,
        created_at: row.int("created_at")?,
    })
}

fn session_from_row(row: &impl StoreRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id: row.text("id")?,
        user_id: row.text("user_id")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        last_seen_at: row.int("last_seen_at")?,
    })
}

impl Store {
    /// Creates a user. Errors: [`StoreError::Duplicate`] if the email (in any case) is taken.
    pub async fn create_user(&self, user: &NewUser, now: i64) -> Result<User, StoreError> {
        self.insert_user(user, now, None).await
    }

    /// [`Store::create_user`] with its audit entry, in the same transaction.
    pub async fn create_user_audited(
        &self,
        user: &NewUser,
        now: i64,
        record: &AuditRecord,
    ) -> Result<User, StoreError> {
        self.insert_user(user, now, Some(record)).await
    }

    async fn insert_user(
        &self,
        user: &NewUser,
        now: i64,
        record: Option<&AuditRecord>,
    ) -> Result<User, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "INSERT INTO users (id, email, email_key, password_hash, role, disabled, created_at) \
                 VALUES (?, ?, ?, ?, ?, FALSE, ?) RETURNING ",
                user_columns!()
            ),
            postgres: concat!(
                "INSERT INTO users (id, email, email_key, password_hash, role, disabled, created_at) \
                 VALUES ($1, $2, $3, $4, $5, FALSE, $6) RETURNING ",
                user_columns!()
            ),
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let row = sqlx::query(SQL.get(d))
                .bind(&user.id)
                .bind(user.email.trim())
                .bind(email_key(&user.email))
                .bind(&user.password_hash)
                .bind(user.role.as_db())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "user email", "user"))?;
            let created = user_from_row(&row)?;
            match record {
                Some(record) => commit_audited!(self, tx, d, record, now),
                None => tx.commit().await?,
            }
            Ok(created)
        })
    }

    /// The user with this id.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"),
            postgres: concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| user_from_row(&r)).transpose()?)
        })
    }

    /// The user with this email, compared case-insensitively.
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE email_key = ?"
            ),
            postgres: concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE email_key = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(email_key(email))
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| user_from_row(&r)).transpose()?)
        })
    }

    /// Users ordered by id, after `after_id`, at most `limit` (capped at 1000).
    pub async fn list_users_page(
        &self,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id > ? ORDER BY id LIMIT ?"
            ),
            postgres: concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(after_id.unwrap_or(""))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// How many users exist (zero means the first owner has yet to be created).
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT COUNT(*) AS n FROM users",
            postgres: "SELECT COUNT(*) AS n FROM users",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d)).fetch_one(pool).await?.int("n")?)
        })
    }

    /// Replaces a user's password hash and ends all their sessions, in one transaction.
    pub async fn set_user_password_hash(
        &self,
        user_id: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        const UPDATE: Sql = Sql {
            sqlite: "UPDATE users SET password_hash = ? WHERE id = ?",
            postgres: "UPDATE users SET password_hash = $1 WHERE id = $2",
        };
        const END_SESSIONS: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE user_id = ?",
            postgres: "DELETE FROM sessions WHERE user_id = $1",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(UPDATE.get(d))
                .bind(password_hash)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound { what: "user" });
            }
            sqlx::query(END_SESSIONS.get(d))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Disables or re-enables a user, with its audit entry. Disabling also ends their
    /// sessions.
    pub async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        now: i64,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        const UPDATE: Sql = Sql {
            sqlite: "UPDATE users SET disabled = ? WHERE id = ?",
            postgres: "UPDATE users SET disabled = $1 WHERE id = $2",
        };
        const END_SESSIONS: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE user_id = ?",
            postgres: "DELETE FROM sessions WHERE user_id = $1",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(UPDATE.get(d))
                .bind(disabled)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound { what: "user" });
            }
            if disabled {
                sqlx::query(END_SESSIONS.get(d))
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            commit_audited!(self, tx, d, record, now);
            Ok(())
        })
    }

    /// Deletes a user and their sessions. Errors: [`StoreError::InUse`] while they own
    /// accounts (delete or transfer those first).
    pub async fn delete_user(&self, user_id: &str) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM users WHERE id = ?",
            postgres: "DELETE FROM users WHERE id = $1",
        };
        on_backend!(self, |pool, d| {
            let deleted = sqlx::query(SQL.get(d))
                .bind(user_id)
                .execute(pool)
                .await
                .map_err(|e| on_delete_restricted(e, "user", "accounts"))?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound { what: "user" });
            }
            Ok(())
        })
    }

    /// Starts a session. `session_id` is the hash of the token given to the browser.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Session, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at) \
                     VALUES (?1, ?2, ?3, ?4, ?3) \
                     RETURNING id, user_id, created_at, expires_at, last_seen_at",
            postgres: "INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at) \
                       VALUES ($1, $2, $3, $4, $3) \
                       RETURNING id, user_id, created_at, expires_at, last_seen_at",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(session_id)
                .bind(user_id)
                .bind(now)
                .bind(expires_at)
                .fetch_one(pool)
                .await
                .map_err(|e| on_constraint(e, "session", "user"))?;
            Ok(session_from_row(&row)?)
        })
    }

    /// The live session with this id and its user: not expired at `now`, user not disabled.
    /// Records `now` as the session's last use.
    pub async fn touch_session(
        &self,
        session_id: &str,
        now: i64,
    ) -> Result<Option<(Session, User)>, StoreError> {
        const TOUCH: Sql = Sql {
            sqlite: "UPDATE sessions SET last_seen_at = ?1 \
                     WHERE id = ?2 AND expires_at > ?1 \
                     AND user_id IN (SELECT id FROM users WHERE disabled = FALSE) \
                     RETURNING id, user_id, created_at, expires_at, last_seen_at",
            postgres: "UPDATE sessions SET last_seen_at = $1 \
                       WHERE id = $2 AND expires_at > $1 \
                       AND user_id IN (SELECT id FROM users WHERE disabled = FALSE) \
                       RETURNING id, user_id, created_at, expires_at, last_seen_at",
        };
        let session = on_backend!(self, |pool, d| {
            let row = sqlx::query(TOUCH.get(d))
                .bind(now)
                .bind(session_id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| session_from_row(&r)).transpose()?
        });
        let Some(session) = session else {
            return Ok(None);
        };
        Ok(self
            .get_user(&session.user_id)
            .await?
            .filter(|user| !user.disabled)
            .map(|user| (session, user)))
    }

    /// Ends one session (logout). Returns whether it existed.
    pub async fn delete_session(&self, session_id: &str) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE id = ?",
            postgres: "DELETE FROM sessions WHERE id = $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(session_id)
                .execute(pool)
                .await?
                .rows_affected()
                > 0)
        })
    }

    /// Removes sessions that expired before `now`; returns how many.
    pub async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE expires_at <= ?",
            postgres: "DELETE FROM sessions WHERE expires_at <= $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}
