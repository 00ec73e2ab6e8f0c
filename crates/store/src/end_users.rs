//! End users: the WeChat users an account knows, keyed by (account, openid).
//!
//! Users arrive two ways: from subscribe/unsubscribe pushes ([`Store::record_subscription`])
//! and from logins through the gateway ([`Store::record_end_user_login`]). Both are single
//! upserts (`INSERT … ON CONFLICT (account_id, openid) DO UPDATE`), so concurrent pushes and
//! logins for the same user never create two rows; what each one may overwrite is spelled out
//! in its statement. `created_via` records the first way the user arrived and never changes.

use crate::db::{MAX_PAGE, Sql, StoreRow, new_id, page_limit};
use crate::error::on_constraint;
use crate::{Store, StoreError};

db_enum! {
    /// How an end user first became known.
    pub enum CreatedVia {
        /// A subscribe event push.
        Push = "push",
        /// A follow-required login (`snsapi_base`).
        LoginBase = "login_base",
        /// A userinfo login (`snsapi_userinfo`).
        LoginUserinfo = "login_userinfo",
    }
}

/// An end user of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub id: String,
    pub account_id: String,
    pub openid: String,
    pub unionid: Option<String>,
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    pub subscribed: bool,
    pub subscribe_time: Option<i64>,
    pub subscribe_scene: Option<String>,
    pub qr_scene: Option<String>,
    pub first_login_at: Option<i64>,
    pub last_login_at: Option<i64>,
    pub created_via: CreatedVia,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What an ID token or userinfo says about an end user: the few columns of [`EndUser`] that
/// become claims, read together with the code or access token they are for (one query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    pub unionid: Option<String>,
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    pub subscribed: bool,
}

impl From<&EndUser> for UserClaims {
    fn from(user: &EndUser) -> Self {
        Self {
            unionid: user.unionid.clone(),
            nickname: user.nickname.clone(),
            avatar_url: user.avatar_url.clone(),
            subscribed: user.subscribed,
        }
    }
}

/// The end user's claims from `u_`-prefixed columns of a LEFT JOIN (`u_id` NULL: no such
/// user).
pub(crate) fn user_claims_from_row(row: &impl StoreRow) -> Result<Option<UserClaims>, sqlx::Error> {
    if row.opt_text("u_id")?.is_none() {
        return Ok(None);
    }
    Ok(Some(UserClaims {
        unionid: row.opt_text("u_unionid")?,
        nickname: row.opt_text("u_nickname")?,
        avatar_url: row.opt_text("u_avatar_url")?,
        subscribed: row.flag("u_subscribed")?,
    }))
}

/// A subscribe or unsubscribe event.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub openid: String,
    pub subscribed: bool,
    /// WeChat's subscribe time, when the event or user/info gives one.
    pub subscribe_time: Option<i64>,
    pub subscribe_scene: Option<String>,
    /// The scene of the QR code scanned to follow, if any.
    pub qr_scene: Option<String>,
    /// When the event happened (the push's `CreateTime`, Unix ms). An event older than the
    /// subscription state already stored is ignored, so a delayed subscribe cannot undo a
    /// later unsubscribe.
    pub event_time: i64,
}

/// What a login learned about the user. `None` fields keep what is stored.
#[derive(Debug, Clone)]
pub struct EndUserLogin {
    pub openid: String,
    pub via: CreatedVia,
    pub unionid: Option<String>,
    pub nickname: Option<String>,
    pub avatar_url: Option<String>,
    /// Whether the user follows the account, when the login checked it.
    pub subscribed: Option<bool>,
    pub subscribe_time: Option<i64>,
    pub subscribe_scene: Option<String>,
}

macro_rules! end_user_columns {
    () => {
        "id, account_id, openid, unionid, nickname, avatar_url, subscribed, subscribe_time, \
         subscribe_scene, qr_scene, first_login_at, last_login_at, created_via, created_at, \
         updated_at"
    };
}

/// Upserts an end user from a subscribe/unsubscribe event (binds: id, account, openid,
/// subscribed, subscribe_time, scene, qr_scene, now, event_time). Shared by
/// [`Store::record_subscription`] and the push transaction in `gateway.rs`.
///
/// A subscribe replaces the scene fields (a new follow's scene is not the old one's); an
/// unsubscribe keeps them. The update applies only when the event is not older than the stored
/// subscription state (`subscription_changed_at`, else `subscribe_time`), so affected rows are
/// 0 for a stale event.
pub(crate) const RECORD_SUBSCRIPTION: Sql = Sql {
    sqlite: concat!(
        "INSERT INTO end_users (id, account_id, openid, subscribed, subscribe_time, \
         subscribe_scene, qr_scene, created_via, created_at, updated_at, subscription_changed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'push', ?8, ?8, ?9) \
         ON CONFLICT (account_id, openid) DO UPDATE SET \
         subscribed = excluded.subscribed, \
         subscribe_time = COALESCE(excluded.subscribe_time, end_users.subscribe_time), \
         subscribe_scene = CASE WHEN excluded.subscribed THEN excluded.subscribe_scene \
         ELSE end_users.subscribe_scene END, \
         qr_scene = CASE WHEN excluded.subscribed THEN excluded.qr_scene \
         ELSE end_users.qr_scene END, \
         subscription_changed_at = excluded.subscription_changed_at, \
         updated_at = excluded.updated_at \
         WHERE COALESCE(end_users.subscription_changed_at, end_users.subscribe_time, \
         excluded.subscription_changed_at) <= excluded.subscription_changed_at \
         RETURNING ",
        end_user_columns!()
    ),
    postgres: concat!(
        "INSERT INTO end_users (id, account_id, openid, subscribed, subscribe_time, \
         subscribe_scene, qr_scene, created_via, created_at, updated_at, subscription_changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'push', $8, $8, $9) \
         ON CONFLICT (account_id, openid) DO UPDATE SET \
         subscribed = excluded.subscribed, \
         subscribe_time = COALESCE(excluded.subscribe_time, end_users.subscribe_time), \
         subscribe_scene = CASE WHEN excluded.subscribed THEN excluded.subscribe_scene \
         ELSE end_users.subscribe_scene END, \
         qr_scene = CASE WHEN excluded.subscribed THEN excluded.qr_scene \
         ELSE end_users.qr_scene END, \
         subscription_changed_at = excluded.subscription_changed_at, \
         updated_at = excluded.updated_at \
         WHERE COALESCE(end_users.subscription_changed_at, end_users.subscribe_time, \
         excluded.subscription_changed_at) <= excluded.subscription_changed_at \
         RETURNING ",
        end_user_columns!()
    ),
};

/// Upserts an end user from a login (binds: id, account, openid, unionid, nickname, avatar,
/// subscribed, subscribe_time, scene, now, via, checked_at). `checked_at` is `now` truncated to
/// the second (push event times have second resolution): when the login learned the
/// subscription from user/info, it becomes the subscription state's time. Shared by
/// [`Store::record_end_user_login`] and the login-completion transaction in `gateway.rs`.
pub(crate) const RECORD_LOGIN: Sql = Sql {
    sqlite: concat!(
        "INSERT INTO end_users (id, account_id, openid, unionid, nickname, avatar_url, \
         subscribed, subscribe_time, subscribe_scene, first_login_at, last_login_at, \
         created_via, created_at, updated_at, subscription_changed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, FALSE), ?8, ?9, ?10, ?10, ?11, ?10, ?10, \
         CASE WHEN ?7 IS NULL THEN NULL ELSE ?12 END) \
         ON CONFLICT (account_id, openid) DO UPDATE SET \
         unionid = COALESCE(excluded.unionid, end_users.unionid), \
         nickname = COALESCE(excluded.nickname, end_users.nickname), \
         avatar_url = COALESCE(excluded.avatar_url, end_users.avatar_url), \
         subscribed = COALESCE(?7, end_users.subscribed), \
         subscribe_time = COALESCE(excluded.subscribe_time, end_users.subscribe_time), \
         subscribe_scene = COALESCE(excluded.subscribe_scene, end_users.subscribe_scene), \
         subscription_changed_at = CASE WHEN ?7 IS NULL THEN end_users.subscription_changed_at \
         ELSE ?12 END, \
         first_login_at = COALESCE(end_users.first_login_at, excluded.first_login_at), \
         last_login_at = excluded.last_login_at, \
         updated_at = excluded.updated_at \
         RETURNING ",
        end_user_columns!()
    ),
    postgres: concat!(
        "INSERT INTO end_users (id, account_id, openid, unionid, nickname, avatar_url, \
         subscribed, subscribe_time, subscribe_scene, first_login_at, last_login_at, \
         created_via, created_at, updated_at, subscription_changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, FALSE), $8, $9, $10, $10, $11, $10, $10, \
         CASE WHEN $7 IS NULL THEN NULL ELSE $12 END) \
         ON CONFLICT (account_id, openid) DO UPDATE SET \
         unionid = COALESCE(excluded.unionid, end_users.unionid), \
         nickname = COALESCE(excluded.nickname, end_users.nickname), \
         avatar_url = COALESCE(excluded.avatar_url, end_users.avatar_url), \
         subscribed = COALESCE($7, end_users.subscribed), \
         subscribe_time = COALESCE(excluded.subscribe_time, end_users.subscribe_time), \
         subscribe_scene = COALESCE(excluded.subscribe_scene, end_users.subscribe_scene), \
         subscription_changed_at = CASE WHEN $7 IS NULL THEN end_users.subscription_changed_at \
         ELSE $12 END, \
         first_login_at = COALESCE(end_users.first_login_at, excluded.first_login_at), \
         last_login_at = excluded.last_login_at, \
         updated_at = excluded.updated_at \
         RETURNING ",
        end_user_columns!()
    ),
};

/// Binds [`RECORD_LOGIN`]'s parameters; `$id` is the id of the row if it is inserted (the
/// returned row carries it only then).
macro_rules! bind_login {
    ($query:expr, $id:expr, $account_id:expr, $login:expr, $now:expr) => {
        $query
            .bind($id)
            .bind($account_id)
            .bind(&$login.openid)
            .bind($login.unionid.as_deref())
            .bind($login.nickname.as_deref())
            .bind($login.avatar_url.as_deref())
            .bind($login.subscribed)
            .bind($login.subscribe_time)
            .bind($login.subscribe_scene.as_deref())
            .bind($now)
            .bind($crate::db::DbEnum::as_db($login.via))
            .bind($now - $now.rem_euclid(1000))
    };
}
pub(crate) use bind_login;

pub(crate) fn end_user_from_row(row: &impl StoreRow) -> Result<EndUser, sqlx::Error> {
    Ok(EndUser {
        id: row.text("id")?,
        account_id: row.text("account_id")?,
        openid: row.text("openid")?,
        unionid: row.opt_text("unionid")?,
        nickname: row.opt_text("nickname")?,
        avatar_url: row.opt_text("avatar_url")?,
        subscribed: row.flag("subscribed")?,
        subscribe_time: row.opt_int("subscribe_time")?,
        subscribe_scene: row.opt_text("subscribe_scene")?,
        qr_scene: row.opt_text("qr_scene")?,
        first_login_at: row.opt_int("first_login_at")?,
        last_login_at: row.opt_int("last_login_at")?,
        created_via: row.enumerated("created_via")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

impl Store {
    /// Records a subscribe or unsubscribe push: creates the user on first sight, otherwise
    /// updates the subscription fields (a subscribe replaces the scene fields, an unsubscribe
    /// keeps them). An event older than the stored subscription state changes nothing. Login
    /// data is left alone. Returns the user as stored afterwards.
    pub async fn record_subscription(
        &self,
        account_id: &str,
        event: &Subscription,
        now: i64,
    ) -> Result<EndUser, StoreError> {
        let applied = on_backend!(self, |pool, d| {
            let row = sqlx::query(RECORD_SUBSCRIPTION.get(d))
                .bind(new_id())
                .bind(account_id)
                .bind(&event.openid)
                .bind(event.subscribed)
                .bind(event.subscribe_time)
                .bind(event.subscribe_scene.as_deref())
                .bind(event.qr_scene.as_deref())
                .bind(now)
                .bind(event.event_time)
                .fetch_optional(pool)
                .await
                .map_err(|e| on_constraint(e, "end user", "account"))?;
            row.map(|r| end_user_from_row(&r)).transpose()
        })?;
        match applied {
            Some(user) => Ok(user),
            // A stale event: the row exists and was left as it is.
            None => self
                .get_end_user(account_id, &event.openid)
                .await?
                .ok_or(StoreError::NotFound { what: "end user" }),
        }
    }

    /// Records a login: creates the user on first sight (with `via` as `created_via`),
    /// sets `first_login_at` once and `last_login_at` every time, and takes whatever profile
    /// and subscription data the login learned.
    pub async fn record_end_user_login(
        &self,
        account_id: &str,
        login: &EndUserLogin,
        now: i64,
    ) -> Result<EndUser, StoreError> {
        on_backend!(self, |pool, d| {
            let row = bind_login!(
                sqlx::query(RECORD_LOGIN.get(d)),
                new_id(),
                account_id,
                login,
                now
            )
            .fetch_one(pool)
            .await
            .map_err(|e| on_constraint(e, "end user", "account"))?;
            Ok(end_user_from_row(&row)?)
        })
    }

    /// The end user with this openid at this account.
    pub async fn get_end_user(
        &self,
        account_id: &str,
        openid: &str,
    ) -> Result<Option<EndUser>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                end_user_columns!(),
                " FROM end_users WHERE account_id = ? AND openid = ?"
            ),
            postgres: concat!(
                "SELECT ",
                end_user_columns!(),
                " FROM end_users WHERE account_id = $1 AND openid = $2"
            ),
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(openid)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| end_user_from_row(&r)).transpose()?)
        })
    }

    /// An account's end users ordered by openid after `after_openid`, at most `limit`
    /// (capped at 1000).
    pub async fn list_end_users_page(
        &self,
        account_id: &str,
        after_openid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EndUser>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                end_user_columns!(),
                " FROM end_users WHERE account_id = ? AND openid > ? ORDER BY openid LIMIT ?"
            ),
            postgres: concat!(
                "SELECT ",
                end_user_columns!(),
                " FROM end_users WHERE account_id = $1 AND openid > $2 ORDER BY openid LIMIT $3"
            ),
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(after_openid.unwrap_or(""))
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(end_user_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// An account's end users whose openid or nickname contains `query` (case-insensitive;
    /// every user when `None`), ordered by openid after `after_openid` (keyset pagination), at
    /// most `limit` (capped at 1000).
    pub async fn search_end_users_page(
        &self,
        account_id: &str,
        query: Option<&str>,
        after_openid: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EndUser>, StoreError> {
        // LIKE is case-insensitive for ASCII on SQLite; PostgreSQL needs ILIKE. `\` escapes
        // the pattern characters a user may type.
        const SQL: Sql = Sql {
            sqlite: concat!(
                "SELECT ",
                end_user_columns!(),
                " FROM end_users WHERE account_id = ?1 AND openid > ?2 \
                 AND (?3 IS NULL OR openid LIKE ?3 ESCAPE '\\' OR nickname LIKE ?3 ESCAPE '\\') \
                 ORDER BY openid LIMIT ?4"
            ),
            postgres: concat!(
                "SELECT ",
                end_user_columns!(),
                " FROM end_users WHERE account_id = $1 AND openid > $2 \
                 AND ($3::TEXT IS NULL OR openid ILIKE $3 ESCAPE '\\' \
                 OR nickname ILIKE $3 ESCAPE '\\') ORDER BY openid LIMIT $4"
            ),
        };
        let pattern = query
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(|q| format!("%{}%", escape_like(q)));
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(after_openid.unwrap_or(""))
                .bind(pattern.as_deref())
                .bind(page_limit(limit, MAX_PAGE))
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(end_user_from_row)
                .collect::<Result<_, _>>()?)
        })
    }

    /// How many end users an account has, and how many of them currently follow it.
    pub async fn count_end_users(&self, account_id: &str) -> Result<(i64, i64), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT COUNT(*) AS total, \
                     COALESCE(SUM(CASE WHEN subscribed THEN 1 ELSE 0 END), 0) AS following \
                     FROM end_users WHERE account_id = ?",
            postgres: "SELECT COUNT(*) AS total, \
                       CAST(COALESCE(SUM(CASE WHEN subscribed THEN 1 ELSE 0 END), 0) AS BIGINT) \
                       AS following FROM end_users WHERE account_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_one(pool)
                .await?;
            Ok((row.int("total")?, row.int("following")?))
        })
    }
}

/// `text` with LIKE's pattern characters escaped by `\\`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
