//! What people sign in to the dashboard with: one-time password links, TOTP second factors,
//! and sessions with their stage.
//!
//! Like [`crate::people`], this module never sees a password, a link token, a session token or
//! a TOTP secret in the clear: links and sessions are stored as hashes of their tokens,
//! passwords as argon2id PHC strings, TOTP secrets as vault ciphertext under a data key of their
//! own ([`crate::sealed::DekHolder::TotpSecret`]).

use crate::audit::AuditRecord;
use crate::db::{BeginWrite, DbEnum, MAX_PAGE, Sql, StoreRow, page_limit};
use crate::error::on_constraint;
use crate::people::{NewUser, Role, Session, User, user_from_row};
use crate::{Store, StoreError};

/// The password hash of a person who has never set a password: not a PHC string, so nothing
/// verifies against it.
pub const NO_PASSWORD: &str = "!";

db_enum! {
    /// What a one-time password link is for.
    pub enum LinkPurpose {
        /// An operator's setup link (the first operator's, or `wxhub operator create`).
        Setup = "setup",
        /// An operator's invitation of an owner.
        Invitation = "invitation",
    }
}

db_enum! {
    /// How far a session has signed in.
    pub enum SessionStage {
        /// The password was right; the TOTP code is still to be entered.
        SecondFactor = "second_factor",
        /// Signed in, but may only enrol a second factor (required and missing).
        Enrol = "enrol",
        /// Signed in.
        Full = "full",
    }
}

/// A link to create, its token already hashed.
#[derive(Debug, Clone)]
pub struct NewPasswordLink {
    /// Hex SHA-256 of the token in the link.
    pub id: String,
    pub purpose: LinkPurpose,
    /// Whose password it sets; `None` for the first operator's setup link, which creates the
    /// person when used.
    pub user_id: Option<String>,
    pub role: Role,
    /// A user id, `cli` or `system`.
    pub created_by: String,
    pub expires_at: i64,
}

/// A link that can still be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordLink {
    pub id: String,
    pub purpose: LinkPurpose,
    pub user_id: Option<String>,
    /// The email of the person it is for, when it names one.
    pub email: Option<String>,
    pub role: Role,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What using a link sets.
#[derive(Debug, Clone)]
pub struct LinkUse {
    /// The new argon2id PHC string.
    pub password_hash: String,
    /// For a link that names nobody: the id and email of the person to create (with the
    /// link's role). Ignored for a link that names a person.
    pub new_user: Option<(String, String)>,
}

/// A TOTP secret as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTotp {
    pub user_id: String,
    pub wrapped_dek: Vec<u8>,
    pub dek_kek_id: String,
    /// Vault ciphertext of the shared secret.
    pub secret: Vec<u8>,
    /// `None` while enrolling.
    pub confirmed_at: Option<i64>,
    /// The last step a code was accepted for.
    pub last_used_step: i64,
    pub created_at: i64,
}

impl std::fmt::Debug for StoredTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTotp")
            .field("user_id", &self.user_id)
            .field("dek_kek_id", &self.dek_kek_id)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_used_step", &self.last_used_step)
            .finish_non_exhaustive()
    }
}

/// A session to start. `id` is the hash of the token given to the browser.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub user_id: String,
    pub stage: SessionStage,
    pub expires_at: i64,
}

/// A session that is still live, with its stage and its person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub session: Session,
    pub stage: SessionStage,
    pub user: User,
}

fn totp_from_row(row: &impl StoreRow) -> Result<StoredTotp, sqlx::Error> {
    Ok(StoredTotp {
        user_id: row.text("user_id")?,
        wrapped_dek: row.bytes("wrapped_dek")?,
        dek_kek_id: row.text("dek_kek_id")?,
        secret: row.bytes("secret")?,
        confirmed_at: row.opt_int("confirmed_at")?,
        last_used_step: row.int("last_used_step")?,
        created_at: row.int("created_at")?,
    })
}

fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Store {
    /// Issues a one-time link, with its audit entry, in one transaction: creates `new_user`
    /// first when given, and retires the unused links it supersedes — those for the same
    /// person, or, for a link naming nobody, the other unused links naming nobody — so only
    /// the newest link works. Returns the created person, if any.
    /// Errors: [`StoreError::Duplicate`] when `new_user`'s email is taken.
    pub async fn issue_password_link(
        &self,
        new_user: Option<&NewUser>,
        link: &NewPasswordLink,
        now: i64,
        record: &AuditRecord,
    ) -> Result<Option<User>, StoreError> {
        const INSERT_USER: Sql = Sql {
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
        const RETIRE_OF_USER: Sql = Sql {
            sqlite: "DELETE FROM password_links WHERE user_id = ? AND used_at IS NULL",
            postgres: "DELETE FROM password_links WHERE user_id = $1 AND used_at IS NULL",
        };
        const RETIRE_UNNAMED: Sql = Sql {
            sqlite: "DELETE FROM password_links WHERE user_id IS NULL AND used_at IS NULL",
            postgres: "DELETE FROM password_links WHERE user_id IS NULL AND used_at IS NULL",
        };
        const INSERT_LINK: Sql = Sql {
            sqlite: "INSERT INTO password_links \
                     (id, purpose, user_id, role, created_by, created_at, expires_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO password_links \
                       (id, purpose, user_id, role, created_by, created_at, expires_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7)",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let created = match new_user {
                Some(user) => {
                    let row = sqlx::query(INSERT_USER.get(d))
                        .bind(&user.id)
                        .bind(user.email.trim())
                        .bind(email_key(&user.email))
                        .bind(&user.password_hash)
                        .bind(user.role.as_db())
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| on_constraint(e, "user email", "user"))?;
                    Some(user_from_row(&row)?)
                }
                None => None,
            };
            match &link.user_id {
                Some(user_id) => {
                    sqlx::query(RETIRE_OF_USER.get(d))
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query(RETIRE_UNNAMED.get(d)).execute(&mut *tx).await?;
                }
            }
            sqlx::query(INSERT_LINK.get(d))
                .bind(&link.id)
                .bind(link.purpose.as_db())
                .bind(link.user_id.as_deref())
                .bind(link.role.as_db())
                .bind(&link.created_by)
                .bind(now)
                .bind(link.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "password link", "user"))?;
            commit_audited!(self, tx, d, record, now);
            Ok(created)
        })
    }

    /// The link with token hash `id` if it can still be used at `now`: not used, not
    /// expired, and, when it names a person, that person is enabled and has no password yet.
    pub async fn find_password_link(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<PasswordLink>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT l.id, l.purpose, l.user_id, u.email, l.role, l.created_by, \
                     l.created_at, l.expires_at \
                     FROM password_links l LEFT JOIN users u ON u.id = l.user_id \
                     WHERE l.id = ?1 AND l.used_at IS NULL AND l.expires_at > ?2 \
                     AND (l.user_id IS NULL OR (u.disabled = FALSE AND u.password_hash = '!'))",
            postgres: "SELECT l.id, l.purpose, l.user_id, u.email, l.role, l.created_by, \
                       l.created_at, l.expires_at \
                       FROM password_links l LEFT JOIN users u ON u.id = l.user_id \
                       WHERE l.id = $1 AND l.used_at IS NULL AND l.expires_at > $2 \
                       AND (l.user_id IS NULL OR (u.disabled = FALSE AND u.password_hash = '!'))",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            let link = row
                .map(|row| -> Result<PasswordLink, sqlx::Error> {
                    Ok(PasswordLink {
                        id: row.text("id")?,
                        purpose: row.enumerated("purpose")?,
                        user_id: row.opt_text("user_id")?,
                        email: row.opt_text("email")?,
                        role: row.enumerated("role")?,
                        created_by: row.text("created_by")?,
                        created_at: row.int("created_at")?,
                        expires_at: row.int("expires_at")?,
                    })
                })
                .transpose()?;
            Ok(link)
        })
    }

    /// Uses the link with token hash `id`, once: marks it used and sets the password of the
    /// person it names (who must still have none), or creates the person it is for, with its
    /// audit entry (`record`'s actor and target are filled in with the person's id), all in
    /// one transaction. Returns the person.
    ///
    /// Errors: [`StoreError::NotFound`] (`"link"`) when the link is unknown, used, expired,
    /// or its person is disabled or already has a password; [`StoreError::Duplicate`] when
    /// the email of a person to create is taken.
    pub async fn use_password_link(
        &self,
        id: &str,
        now: i64,
        link_use: &LinkUse,
        record: &AuditRecord,
    ) -> Result<User, StoreError> {
        const SPEND: Sql = Sql {
            sqlite: "UPDATE password_links SET used_at = ?1 \
                     WHERE id = ?2 AND used_at IS NULL AND expires_at > ?1 \
                     RETURNING user_id, role",
            postgres: "UPDATE password_links SET used_at = $1 \
                       WHERE id = $2 AND used_at IS NULL AND expires_at > $1 \
                       RETURNING user_id, role",
        };
        const SET_PASSWORD: Sql = Sql {
            sqlite: concat!(
                "UPDATE users SET password_hash = ? \
                 WHERE id = ? AND password_hash = '!' AND disabled = FALSE RETURNING ",
                user_columns!()
            ),
            postgres: concat!(
                "UPDATE users SET password_hash = $1 \
                 WHERE id = $2 AND password_hash = '!' AND disabled = FALSE RETURNING ",
                user_columns!()
            ),
        };
        const INSERT_USER: Sql = Sql {
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
        let gone = || StoreError::NotFound { what: "link" };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let spent = sqlx::query(SPEND.get(d))
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(gone)?;
            let named = spent.opt_text("user_id")?;
            let role: Role = spent.enumerated("role")?;
            let user = match named {
                Some(user_id) => {
                    let row = sqlx::query(SET_PASSWORD.get(d))
                        .bind(&link_use.password_hash)
                        .bind(&user_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(gone)?;
                    user_from_row(&row)?
                }
                None => {
                    let (user_id, email) =
                        link_use.new_user.as_ref().ok_or(StoreError::NotFound {
                            what: "email for the new person",
                        })?;
                    let row = sqlx::query(INSERT_USER.get(d))
                        .bind(user_id)
                        .bind(email.trim())
                        .bind(email_key(email))
                        .bind(&link_use.password_hash)
                        .bind(role.as_db())
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| on_constraint(e, "user email", "user"))?;
                    user_from_row(&row)?
                }
            };
            let mut record = record.clone();
            record.actor = user.id.clone();
            record.target = Some(user.id.clone());
            commit_audited!(self, tx, d, &record, now);
            Ok(user)
        })
    }

    /// How many people have `role`.
    pub async fn count_users_with_role(&self, role: Role) -> Result<i64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT COUNT(*) AS n FROM users WHERE role = ?",
            postgres: "SELECT COUNT(*) AS n FROM users WHERE role = $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(role.as_db())
                .fetch_one(pool)
                .await?
                .int("n")?)
        })
    }

    /// People with `role` ordered by id, after `after_id`, at most `limit` (capped at 1000).
    pub async fn list_users_with_role_page(
        &self,
        role: Role,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE role = ? AND id > ? ORDER BY id LIMIT ?"
            ),
            postgres: concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE role = $1 AND id > $2 ORDER BY id LIMIT $3"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(role.as_db())
                .bind(after_id.unwrap_or(""))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// Starts (or restarts) a TOTP enrolment: stores `totp` as the person's unconfirmed
    /// secret, replacing an earlier unconfirmed one. Returns `false`, changing nothing, when
    /// the person already has a confirmed secret.
    pub async fn begin_totp_enrolment(
        &self,
        totp: &StoredTotp,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO user_totp \
                     (user_id, wrapped_dek, dek_kek_id, secret, confirmed_at, last_used_step, created_at) \
                     VALUES (?1, ?2, ?3, ?4, NULL, 0, ?5) \
                     ON CONFLICT (user_id) DO UPDATE SET wrapped_dek = excluded.wrapped_dek, \
                     dek_kek_id = excluded.dek_kek_id, secret = excluded.secret, \
                     last_used_step = 0, created_at = excluded.created_at \
                     WHERE user_totp.confirmed_at IS NULL",
            postgres: "INSERT INTO user_totp \
                       (user_id, wrapped_dek, dek_kek_id, secret, confirmed_at, last_used_step, created_at) \
                       VALUES ($1, $2, $3, $4, NULL, 0, $5) \
                       ON CONFLICT (user_id) DO UPDATE SET wrapped_dek = excluded.wrapped_dek, \
                       dek_kek_id = excluded.dek_kek_id, secret = excluded.secret, \
                       last_used_step = 0, created_at = excluded.created_at \
                       WHERE user_totp.confirmed_at IS NULL",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(&totp.user_id)
                .bind(&totp.wrapped_dek)
                .bind(&totp.dek_kek_id)
                .bind(&totp.secret)
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "TOTP secret", "user"))?
                .rows_affected()
                == 1)
        })
    }

    /// The person's TOTP secret, confirmed or not.
    pub async fn user_totp(&self, user_id: &str) -> Result<Option<StoredTotp>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT user_id, wrapped_dek, dek_kek_id, secret, confirmed_at, \
                     last_used_step, created_at FROM user_totp WHERE user_id = ?",
            postgres: "SELECT user_id, wrapped_dek, dek_kek_id, secret, confirmed_at, \
                       last_used_step, created_at FROM user_totp WHERE user_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(user_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| totp_from_row(&r)).transpose()?)
        })
    }

    /// Confirms the person's pending TOTP secret with the code of `step`, with its audit
    /// entry. Returns `false` when there is no pending secret (none, or already confirmed).
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        step: i64,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE user_totp SET confirmed_at = ?1, last_used_step = ?2 \
                     WHERE user_id = ?3 AND confirmed_at IS NULL",
            postgres: "UPDATE user_totp SET confirmed_at = $1, last_used_step = $2 \
                       WHERE user_id = $3 AND confirmed_at IS NULL",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(step)
                .bind(user_id)
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

    /// Accepts a code of `step` for the person's confirmed secret once: returns `false` when
    /// a code of this step or a later one was accepted already (a replayed code), on any
    /// replica.
    pub async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE user_totp SET last_used_step = ?1 \
                     WHERE user_id = ?2 AND confirmed_at IS NOT NULL AND last_used_step < ?1",
            postgres: "UPDATE user_totp SET last_used_step = $1 \
                       WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_used_step < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(step)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Starts a session at `stage`. When `replaces` names a session, it ends in the same
    /// transaction: signing in and each step up give the browser a new session id, so an id
    /// planted before sign-in is worth nothing after it.
    pub async fn start_session(
        &self,
        session: &NewSession,
        now: i64,
        replaces: Option<&str>,
    ) -> Result<Session, StoreError> {
        const END: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE id = ?",
            postgres: "DELETE FROM sessions WHERE id = $1",
        };
        const START: Sql = Sql {
            sqlite: "INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at, stage) \
                     VALUES (?1, ?2, ?3, ?4, ?3, ?5) \
                     RETURNING id, user_id, created_at, expires_at, last_seen_at",
            postgres: "INSERT INTO sessions (id, user_id, created_at, expires_at, last_seen_at, stage) \
                       VALUES ($1, $2, $3, $4, $3, $5) \
                       RETURNING id, user_id, created_at, expires_at, last_seen_at",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            if let Some(old) = replaces {
                sqlx::query(END.get(d)).bind(old).execute(&mut *tx).await?;
            }
            let row = sqlx::query(START.get(d))
                .bind(&session.id)
                .bind(&session.user_id)
                .bind(now)
                .bind(session.expires_at)
                .bind(session.stage.as_db())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| on_constraint(e, "session", "user"))?;
            tx.commit().await?;
            Ok(Session {
                id: row.text("id")?,
                user_id: row.text("user_id")?,
                created_at: row.int("created_at")?,
                expires_at: row.int("expires_at")?,
                last_seen_at: row.int("last_seen_at")?,
            })
        })
    }

    /// The session with this id if it is live at `now` — not past its absolute expiry, used
    /// after `idle_since`, its person enabled — recording `now` as its last use.
    pub async fn live_session(
        &self,
        session_id: &str,
        now: i64,
        idle_since: i64,
    ) -> Result<Option<LiveSession>, StoreError> {
        const TOUCH: Sql = Sql {
            sqlite: "UPDATE sessions SET last_seen_at = ?1 \
                     WHERE id = ?2 AND expires_at > ?1 AND last_seen_at > ?3 \
                     AND user_id IN (SELECT id FROM users WHERE disabled = FALSE) \
                     RETURNING id, user_id, created_at, expires_at, last_seen_at, stage",
            postgres: "UPDATE sessions SET last_seen_at = $1 \
                       WHERE id = $2 AND expires_at > $1 AND last_seen_at > $3 \
                       AND user_id IN (SELECT id FROM users WHERE disabled = FALSE) \
                       RETURNING id, user_id, created_at, expires_at, last_seen_at, stage",
        };
        let touched = on_backend!(self, |pool, d| {
            let row = sqlx::query(TOUCH.get(d))
                .bind(now)
                .bind(session_id)
                .bind(idle_since)
                .fetch_optional(pool)
                .await?;
            row.map(|row| -> Result<(Session, SessionStage), sqlx::Error> {
                Ok((
                    Session {
                        id: row.text("id")?,
                        user_id: row.text("user_id")?,
                        created_at: row.int("created_at")?,
                        expires_at: row.int("expires_at")?,
                        last_seen_at: row.int("last_seen_at")?,
                    },
                    row.enumerated("stage")?,
                ))
            })
            .transpose()?
        });
        let Some((session, stage)) = touched else {
            return Ok(None);
        };
        Ok(self
            .get_user(&session.user_id)
            .await?
            .filter(|user| !user.disabled)
            .map(|user| LiveSession {
                session,
                stage,
                user,
            }))
    }

    /// Ends every session of a person ("sign out everywhere"); returns how many.
    pub async fn end_sessions_of_user(&self, user_id: &str) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE user_id = ?",
            postgres: "DELETE FROM sessions WHERE user_id = $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Removes a person's TOTP secret (confirmed or not) and ends their sessions, with its
    /// audit entry, for a person who lost their authenticator: they sign in with their
    /// password and enrol again. Returns `false`, changing nothing, when there was none.
    pub async fn reset_totp(
        &self,
        user_id: &str,
        now: i64,
        record: &AuditRecord,
    ) -> Result<bool, StoreError> {
        const TOTP: Sql = Sql {
            sqlite: "DELETE FROM user_totp WHERE user_id = ?",
            postgres: "DELETE FROM user_totp WHERE user_id = $1",
        };
        const SESSIONS: Sql = Sql {
            sqlite: "DELETE FROM sessions WHERE user_id = ?",
            postgres: "DELETE FROM sessions WHERE user_id = $1",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let removed = sqlx::query(TOTP.get(d))
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if removed == 0 {
                return Ok(false);
            }
            sqlx::query(SESSIONS.get(d))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            commit_audited!(self, tx, d, record, now);
            Ok(true)
        })
    }
}
