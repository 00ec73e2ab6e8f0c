//! Logins by scanning a parametric QR code (docs/wechat-2.md §4.2): the scan page's login on a
//! PC, and the QR code of the in-WeChat follow page.
//!
//! A scan login belongs to one pending authorization (and so to the browser that started it)
//! and holds its current QR code: scene, ticket, the `url` it encodes, and its expiry. The
//! push that reports the scan finds the row by ticket and must carry the same scene; every
//! write is one conditional UPDATE, so of two pushes, two pages or two replicas racing, one
//! wins. Rows are found by the hash of the token in the page's URL; the token itself is never
//! stored.
//!
//! **Waking the waiting page.** A replica that marks a login scanned announces it with
//! [`Store::notify_scan_login`]: on PostgreSQL `NOTIFY wxhub_scan_login, '<row id>'` (the
//! payload is the row id, a hash, and nothing else), which every replica's
//! [`ScanLoginListener`] receives; on SQLite there is one process and the gateway wakes its
//! own pages in memory, so sending is a no-op.

use sqlx::postgres::PgListener;

use crate::db::{Backend, Sql, StoreRow};
use crate::error::on_constraint;
use crate::gateway::FollowWait;
use crate::{Store, StoreError};

/// The channel scans are announced on.
pub const SCAN_CHANNEL: &str = "wxhub_scan_login";

/// A QR code shown for a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanQr {
    /// The `scene_str` it was created with (what the push's `EventKey` carries).
    pub scene: String,
    /// The ticket `qrcode/create` returned (the push's `Ticket`).
    pub ticket: String,
    /// What the image encodes.
    pub url: String,
    /// When it stops working (Unix ms), computed from the lifetime asked for.
    pub expires_at: i64,
}

/// A new scan login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScanLogin {
    /// Hash of the token in the scan page's URL.
    pub id: String,
    pub pending_id: String,
    pub account_id: String,
    pub created_at: i64,
    /// When the login itself expires (its pending authorization's expiry).
    pub expires_at: i64,
    /// Whether the scanner must confirm in WeChat before the PC is logged in.
    pub needs_confirmation: bool,
}

/// A scan login as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanLogin {
    pub id: String,
    pub pending_id: String,
    pub account_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub needs_confirmation: bool,
    /// The current code, once one was created.
    pub qr: Option<ScanQr>,
    /// How many codes this login was given (the first and each refresh).
    pub qr_count: i64,
    /// Who scanned, once someone did.
    pub openid: Option<String>,
    pub scanned_at: Option<i64>,
    /// The scan was a follow through the code (`subscribe`), not a follower's `SCAN`.
    pub new_follower: Option<bool>,
    /// The scan's push was authenticated (safe/compatible mode).
    pub scan_authenticated: Option<bool>,
    /// The `state` of the confirmation's trip through WeChat's authorize page.
    pub confirm_state: Option<String>,
    pub confirmed_at: Option<i64>,
    /// When the login finished (a code was issued).
    pub finished_at: Option<i64>,
}

impl ScanLogin {
    /// Whether the PC may finish the login now: scanned, confirmed if it must be, not
    /// finished, and not expired at `now`.
    pub fn ready(&self, now: i64) -> bool {
        self.scanned_at.is_some()
            && (!self.needs_confirmation || self.confirmed_at.is_some())
            && self.finished_at.is_none()
            && self.expires_at > now
    }
}

/// What marking a login scanned found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMark {
    /// This scan is the login's scan (`first`: it was not known before — a retried push, or
    /// the same person scanning again, is not first).
    Marked { first: bool },
    /// The login already finished: the code was used.
    Used,
    /// The code, or the login, has expired.
    Expired,
    /// Someone else scanned the code first.
    TakenByAnother,
}

macro_rules! scan_columns {
    () => {
        "id, pending_id, account_id, created_at, expires_at, needs_confirmation, scene, ticket, \
         qr_url, qr_expires_at, qr_count, openid, scanned_at, new_follower, scan_authenticated, \
         confirm_state, confirmed_at, finished_at"
    };
}

fn scan_from_row(row: &impl StoreRow) -> Result<ScanLogin, sqlx::Error> {
    let qr = match (
        row.opt_text("scene")?,
        row.opt_text("ticket")?,
        row.opt_text("qr_url")?,
        row.opt_int("qr_expires_at")?,
    ) {
        (Some(scene), Some(ticket), Some(url), Some(expires_at)) => Some(ScanQr {
            scene,
            ticket,
            url,
            expires_at,
        }),
        _ => None,
    };
    Ok(ScanLogin {
        id: row.text("id")?,
        pending_id: row.text("pending_id")?,
        account_id: row.text("account_id")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        needs_confirmation: row.flag("needs_confirmation")?,
        qr,
        qr_count: row.int("qr_count")?,
        openid: row.opt_text("openid")?,
        scanned_at: row.opt_int("scanned_at")?,
        new_follower: row.opt_flag("new_follower")?,
        scan_authenticated: row.opt_flag("scan_authenticated")?,
        confirm_state: row.opt_text("confirm_state")?,
        confirmed_at: row.opt_int("confirmed_at")?,
        finished_at: row.opt_int("finished_at")?,
    })
}

impl Store {
    /// Stores a new scan login (without a code yet).
    pub async fn create_scan_login(&self, login: &NewScanLogin) -> Result<(), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO oidc_scan_logins (id, pending_id, account_id, created_at, \
                     expires_at, needs_confirmation) VALUES (?, ?, ?, ?, ?, ?)",
            postgres: "INSERT INTO oidc_scan_logins (id, pending_id, account_id, created_at, \
                       expires_at, needs_confirmation) VALUES ($1, $2, $3, $4, $5, $6)",
        };
        on_backend!(self, |pool, d| {
            sqlx::query(SQL.get(d))
                .bind(&login.id)
                .bind(&login.pending_id)
                .bind(&login.account_id)
                .bind(login.created_at)
                .bind(login.expires_at)
                .bind(login.needs_confirmation)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "scan login", "pending authorization"))?;
            Ok(())
        })
    }

    /// The scan login with this id, whatever its state.
    pub async fn get_scan_login(&self, id: &str) -> Result<Option<ScanLogin>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                scan_columns!(),
                " FROM oidc_scan_logins WHERE id = ?"
            ),
            postgres: concat!(
                "SELECT ",
                scan_columns!(),
                " FROM oidc_scan_logins WHERE id = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| scan_from_row(&r)).transpose()?)
        })
    }

    /// The account's scan login whose current code has this ticket, whatever its state.
    pub async fn find_scan_login_by_ticket(
        &self,
        account_id: &str,
        ticket: &str,
    ) -> Result<Option<ScanLogin>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                scan_columns!(),
                " FROM oidc_scan_logins WHERE account_id = ? AND ticket = ?"
            ),
            postgres: concat!(
                "SELECT ",
                scan_columns!(),
                " FROM oidc_scan_logins WHERE account_id = $1 AND ticket = $2"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(ticket)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| scan_from_row(&r)).transpose()?)
        })
    }

    /// Gives the login a new code (its first, or a refresh replacing the old one, whose
    /// pushes then find nothing) — only while nobody has scanned and the login is open.
    /// Returns whether it did.
    pub async fn set_scan_login_qr(
        &self,
        id: &str,
        qr: &ScanQr,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_scan_logins SET scene = ?1, ticket = ?2, qr_url = ?3, \
                     qr_expires_at = ?4, qr_count = qr_count + 1 WHERE id = ?5 \
                     AND scanned_at IS NULL AND finished_at IS NULL AND expires_at > ?6",
            postgres: "UPDATE oidc_scan_logins SET scene = $1, ticket = $2, qr_url = $3, \
                       qr_expires_at = $4, qr_count = qr_count + 1 WHERE id = $5 \
                       AND scanned_at IS NULL AND finished_at IS NULL AND expires_at > $6",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(&qr.scene)
                .bind(&qr.ticket)
                .bind(&qr.url)
                .bind(qr.expires_at)
                .bind(id)
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "scan login scene", "scan login"))?
                .rows_affected()
                == 1)
        })
    }

    /// Records that `openid` scanned the login's current code (`ticket` **and** `scene` must
    /// both be the code's), unless someone else did first or the code or login is over. See
    /// [`ScanMark`].
    #[allow(clippy::too_many_arguments)]
    pub async fn mark_scan_login_scanned(
        &self,
        id: &str,
        ticket: &str,
        scene: &str,
        openid: &str,
        new_follower: bool,
        authenticated: bool,
        now: i64,
    ) -> Result<ScanMark, StoreError> {
        const MARK: Sql = Sql {
            sqlite: "UPDATE oidc_scan_logins SET openid = ?1, scanned_at = ?2, \
                     new_follower = ?3, scan_authenticated = ?4 WHERE id = ?5 AND ticket = ?6 \
                     AND scene = ?7 AND scanned_at IS NULL AND finished_at IS NULL \
                     AND qr_expires_at > ?2 AND expires_at > ?2",
            postgres: "UPDATE oidc_scan_logins SET openid = $1, scanned_at = $2, \
                       new_follower = $3, scan_authenticated = $4 WHERE id = $5 AND ticket = $6 \
                       AND scene = $7 AND scanned_at IS NULL AND finished_at IS NULL \
                       AND qr_expires_at > $2 AND expires_at > $2",
        };
        let marked = on_backend!(self, |pool, d| {
            sqlx::query(MARK.get(d))
                .bind(openid)
                .bind(now)
                .bind(new_follower)
                .bind(authenticated)
                .bind(id)
                .bind(ticket)
                .bind(scene)
                .execute(pool)
                .await?
                .rows_affected()
                == 1
        });
        if marked {
            return Ok(ScanMark::Marked { first: true });
        }
        let Some(login) = self.get_scan_login(id).await? else {
            return Ok(ScanMark::Expired);
        };
        Ok(if login.finished_at.is_some() {
            ScanMark::Used
        } else if login.scanned_at.is_some() {
            if login.openid.as_deref() == Some(openid) {
                ScanMark::Marked { first: false }
            } else {
                ScanMark::TakenByAnother
            }
        } else {
            ScanMark::Expired
        })
    }

    /// Sets the `state` of the confirmation's trip through WeChat (replacing an earlier one),
    /// while the login is scanned, unconfirmed and open. Returns whether it did.
    pub async fn set_scan_login_confirm_state(
        &self,
        id: &str,
        state: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_scan_logins SET confirm_state = ?1 WHERE id = ?2 \
                     AND scanned_at IS NOT NULL AND confirmed_at IS NULL \
                     AND finished_at IS NULL AND expires_at > ?3",
            postgres: "UPDATE oidc_scan_logins SET confirm_state = $1 WHERE id = $2 \
                       AND scanned_at IS NOT NULL AND confirmed_at IS NULL \
                       AND finished_at IS NULL AND expires_at > $3",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(state)
                .bind(id)
                .bind(now)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "scan confirmation state", "scan login"))?
                .rows_affected()
                == 1)
        })
    }

    /// The scan login whose confirmation went to WeChat with this `state`.
    pub async fn find_scan_login_by_confirm_state(
        &self,
        state: &str,
    ) -> Result<Option<ScanLogin>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                scan_columns!(),
                " FROM oidc_scan_logins WHERE confirm_state = ?"
            ),
            postgres: concat!(
                "SELECT ",
                scan_columns!(),
                " FROM oidc_scan_logins WHERE confirm_state = $1"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(state)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| scan_from_row(&r)).transpose()?)
        })
    }

    /// Confirms the scan, if `openid` is the scanner and the login is open and unconfirmed.
    /// Returns whether it did.
    pub async fn confirm_scan_login(
        &self,
        id: &str,
        openid: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_scan_logins SET confirmed_at = ?1, confirm_state = NULL \
                     WHERE id = ?2 AND openid = ?3 AND scanned_at IS NOT NULL \
                     AND confirmed_at IS NULL AND finished_at IS NULL AND expires_at > ?1",
            postgres: "UPDATE oidc_scan_logins SET confirmed_at = $1, confirm_state = NULL \
                       WHERE id = $2 AND openid = $3 AND scanned_at IS NOT NULL \
                       AND confirmed_at IS NULL AND finished_at IS NULL AND expires_at > $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .bind(id)
                .bind(openid)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Finishes a ready login (scanned, confirmed if it must be, open): single use, so of two
    /// concurrent continues one wins. Returns whether it did.
    pub async fn finish_scan_login(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_scan_logins SET finished_at = ?1 WHERE id = ?2 \
                     AND scanned_at IS NOT NULL AND finished_at IS NULL AND expires_at > ?1 \
                     AND (NOT needs_confirmation OR confirmed_at IS NOT NULL)",
            postgres: "UPDATE oidc_scan_logins SET finished_at = $1 WHERE id = $2 \
                       AND scanned_at IS NOT NULL AND finished_at IS NULL AND expires_at > $1 \
                       AND (NOT needs_confirmation OR confirmed_at IS NOT NULL)",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// Deletes scan logins that expired or finished before `cutoff`; returns how many.
    pub async fn delete_stale_scan_logins(&self, cutoff: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "DELETE FROM oidc_scan_logins WHERE expires_at < ?1 OR finished_at < ?1",
            postgres: "DELETE FROM oidc_scan_logins WHERE expires_at < $1 OR finished_at < $1",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Announces that scan login `id` changed (scanned, confirmed). PostgreSQL: `pg_notify`;
    /// SQLite: no-op (one process; the gateway wakes its own pages).
    pub async fn notify_scan_login(&self, id: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => {
                self.count_operation();
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(SCAN_CHANNEL)
                    .bind(id)
                    .execute(pool)
                    .await?;
                Ok(())
            }
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// Announces several ids at once, in one statement. Nothing on SQLite, as above.
    pub async fn notify_scan_logins(&self, ids: &[String]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pool) if !ids.is_empty() => {
                self.count_operation();
                sqlx::query("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id")
                    .bind(SCAN_CHANNEL)
                    .bind(ids)
                    .execute(pool)
                    .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Starts listening for scan announcements from every replica (this one's included).
    /// `None` on SQLite.
    pub async fn listen_scan_logins(&self) -> Result<Option<ScanLoginListener>, StoreError> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(SCAN_CHANNEL).await?;
                Ok(Some(ScanLoginListener { listener }))
            }
            Backend::Sqlite(_) => Ok(None),
        }
    }

    /// Gives a follow wait its own QR code (`scene`, `ticket`, expiry), while it is open.
    /// Returns whether it did.
    pub async fn set_follow_wait_qr(
        &self,
        id: &str,
        scene: &str,
        ticket: &str,
        qr_expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_follow_waits SET scene = ?1, ticket = ?2, qr_expires_at = ?3 \
                     WHERE id = ?4 AND finished_at IS NULL AND expires_at > ?5",
            postgres: "UPDATE oidc_follow_waits SET scene = $1, ticket = $2, qr_expires_at = $3 \
                       WHERE id = $4 AND finished_at IS NULL AND expires_at > $5",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(scene)
                .bind(ticket)
                .bind(qr_expires_at)
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
                == 1)
        })
    }

    /// A follow wait's own QR code: `(scene, ticket, expires_at)`, if it has one.
    pub async fn follow_wait_qr(
        &self,
        id: &str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT scene, ticket, qr_expires_at FROM oidc_follow_waits WHERE id = ?",
            postgres: "SELECT scene, ticket, qr_expires_at FROM oidc_follow_waits WHERE id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => match (
                    r.opt_text("scene")?,
                    r.opt_text("ticket")?,
                    r.opt_int("qr_expires_at")?,
                ) {
                    (Some(scene), Some(ticket), Some(at)) => Some((scene, ticket, at)),
                    _ => None,
                },
                None => None,
            })
        })
    }

    /// Marks the open follow wait whose own code has `ticket` and `scene` followed by
    /// `openid` — only if `openid` is the wait's user (someone else scanning a screenshot of
    /// the code changes nothing). Returns the wait if it did.
    pub async fn mark_follow_wait_followed_by_scan(
        &self,
        account_id: &str,
        ticket: &str,
        scene: &str,
        openid: &str,
        authenticated: bool,
        now: i64,
    ) -> Result<Option<FollowWait>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE oidc_follow_waits SET followed_at = COALESCE(followed_at, ?1), \
                     follow_verified = (follow_verified OR ?2) WHERE account_id = ?3 \
                     AND ticket = ?4 AND scene = ?5 AND openid = ?6 AND finished_at IS NULL \
                     AND expires_at > ?1 RETURNING id, pending_id, account_id, openid, \
                     created_at, expires_at, followed_at, follow_verified, finished_at",
            postgres: "UPDATE oidc_follow_waits SET followed_at = COALESCE(followed_at, $1), \
                       follow_verified = (follow_verified OR $2) WHERE account_id = $3 \
                       AND ticket = $4 AND scene = $5 AND openid = $6 AND finished_at IS NULL \
                       AND expires_at > $1 RETURNING id, pending_id, account_id, openid, \
                       created_at, expires_at, followed_at, follow_verified, finished_at",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(authenticated)
                .bind(account_id)
                .bind(ticket)
                .bind(scene)
                .bind(openid)
                .fetch_optional(pool)
                .await?;
            Ok(row
                .map(|r| crate::gateway::follow_wait_from_row(&r))
                .transpose()?)
        })
    }
}

/// A PostgreSQL session listening on [`SCAN_CHANNEL`].
pub struct ScanLoginListener {
    listener: PgListener,
}

impl std::fmt::Debug for ScanLoginListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanLoginListener")
            .field("channel", &SCAN_CHANNEL)
            .finish()
    }
}

impl ScanLoginListener {
    /// The next announced scan login id. Reconnects after a lost connection (announcements
    /// made meanwhile are lost; waiting pages also poll).
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        let notification = self.listener.recv().await?;
        Ok(notification.payload().to_owned())
    }
}
