//! WeChat's own statistics (datacube, docs/wechat-2.md §5–§7) kept per account and day, and
//! the per-account state of their nightly sync.
//!
//! The sync state row is claimed with a lease like a core token's
//! ([`Store::claim_datacube_sync`]: a conditional UPDATE that works on both databases), so each
//! account is synced by one replica at a time, and its progress (`synced_through`,
//! `backfill_before`) is written back under that lease ([`Store::finish_datacube_sync`]). The
//! figures themselves are WeChat's and replace what is stored for their day (a re-fetch is
//! harmless).

use crate::db::{BeginWrite, Sql, StoreRow};
use crate::{Store, StoreError};

/// An account's sync state, as claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacubeSyncState {
    pub account_id: String,
    pub next_run_at: i64,
    /// The last day fetched going forward.
    pub synced_through: Option<i64>,
    /// The earliest day fetched going back.
    pub backfill_before: Option<i64>,
    /// WeChat has nothing older (or retention reached).
    pub backfill_done: bool,
    pub failures: i64,
    pub last_error: Option<String>,
    /// The day `calls_used` counts for.
    pub calls_day: Option<i64>,
    pub calls_used: i64,
}

/// What a sync run leaves behind (written with [`Store::finish_datacube_sync`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacubeSyncUpdate {
    pub next_run_at: i64,
    pub synced_through: Option<i64>,
    pub backfill_before: Option<i64>,
    pub backfill_done: bool,
    pub failures: i64,
    pub last_error: Option<String>,
    pub calls_day: Option<i64>,
    pub calls_used: i64,
}

/// One day and channel of `getusersummary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummaryDay {
    pub day: i64,
    pub user_source: i64,
    pub new_user: i64,
    pub cancel_user: i64,
}

/// One day of `getusercumulate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCumulateDay {
    pub day: i64,
    pub cumulate_user: i64,
}

/// One day (`ref_hour` `None`) or hour of `getinterfacesummary(hour)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceFigures {
    pub day: i64,
    /// `None` for a whole day; 0, 100 … 2300 for an hour.
    pub ref_hour: Option<i64>,
    pub callback_count: i64,
    pub fail_count: i64,
    pub total_time_cost: i64,
    pub max_time_cost: i64,
}

/// A day WeChat did not give although it should be ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingDay {
    pub day: i64,
    pub endpoint: String,
    pub reason: String,
    pub recorded_at: i64,
}

/// One account's figures from a sync run, stored together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatacubeRows {
    pub user_summary: Vec<UserSummaryDay>,
    pub user_cumulate: Vec<UserCumulateDay>,
    pub interface: Vec<InterfaceFigures>,
    /// Days now held that were recorded as missing, per endpoint path.
    pub found: Vec<(i64, String)>,
    pub missing: Vec<(i64, String, String)>,
}

fn state_from_row(row: &impl StoreRow) -> Result<DatacubeSyncState, sqlx::Error> {
    Ok(DatacubeSyncState {
        account_id: row.text("account_id")?,
        next_run_at: row.int("next_run_at")?,
        synced_through: row.opt_int("synced_through")?,
        backfill_before: row.opt_int("backfill_before")?,
        backfill_done: row.flag("backfill_done")?,
        failures: row.int("failures")?,
        last_error: row.opt_text("last_error")?,
        calls_day: row.opt_int("calls_day")?,
        calls_used: row.int("calls_used")?,
    })
}

impl Store {
    /// Gives every active, verified service account without a sync row one, due at `now` (a
    /// new account's backfill starts at once); returns how many were added.
    pub async fn ensure_datacube_sync_rows(&self, now: i64) -> Result<u64, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "INSERT INTO datacube_sync (account_id, next_run_at, updated_at) \
                     SELECT a.id, ?1, ?1 FROM accounts a \
                     WHERE a.state = 'active' AND a.kind = 'service' AND a.verified \
                     AND NOT EXISTS (SELECT 1 FROM datacube_sync s WHERE s.account_id = a.id) \
                     ON CONFLICT (account_id) DO NOTHING",
            postgres: "INSERT INTO datacube_sync (account_id, next_run_at, updated_at) \
                       SELECT a.id, $1, $1 FROM accounts a \
                       WHERE a.state = 'active' AND a.kind = 'service' AND a.verified \
                       AND NOT EXISTS (SELECT 1 FROM datacube_sync s WHERE s.account_id = a.id) \
                       ON CONFLICT (account_id) DO NOTHING",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Accounts whose sync is due at `now` and not leased, earliest first: active, verified
    /// service accounts only.
    pub async fn list_due_datacube_syncs(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT s.account_id FROM datacube_sync s JOIN accounts a ON a.id = s.account_id \
                     WHERE s.next_run_at <= ?1 AND (s.lease_until IS NULL OR s.lease_until < ?1) \
                     AND a.state = 'active' AND a.kind = 'service' AND a.verified \
                     ORDER BY s.next_run_at, s.account_id LIMIT ?2",
            postgres: "SELECT s.account_id FROM datacube_sync s JOIN accounts a ON a.id = s.account_id \
                       WHERE s.next_run_at <= $1 AND (s.lease_until IS NULL OR s.lease_until < $1) \
                       AND a.state = 'active' AND a.kind = 'service' AND a.verified \
                       ORDER BY s.next_run_at, s.account_id LIMIT $2",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(now)
                .bind(crate::db::page_limit(limit, crate::db::MAX_PAGE))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| r.text("account_id"))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Claims the account's sync for `holder` until `lease_until` if it is due and not leased
    /// by another; returns its state, or `None` when another replica has it or it is not due.
    pub async fn claim_datacube_sync(
        &self,
        account_id: &str,
        holder: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<DatacubeSyncState>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "UPDATE datacube_sync SET lease_holder = ?2, lease_until = ?4, updated_at = ?3 \
                     WHERE account_id = ?1 AND next_run_at <= ?3 \
                     AND (lease_until IS NULL OR lease_until < ?3) \
                     RETURNING account_id, next_run_at, synced_through, backfill_before, \
                     backfill_done, failures, last_error, calls_day, calls_used",
            postgres: "UPDATE datacube_sync SET lease_holder = $2, lease_until = $4, updated_at = $3 \
                       WHERE account_id = $1 AND next_run_at <= $3 \
                       AND (lease_until IS NULL OR lease_until < $3) \
                       RETURNING account_id, next_run_at, synced_through, backfill_before, \
                       backfill_done, failures, last_error, calls_day, calls_used",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(holder)
                .bind(now)
                .bind(lease_until)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| state_from_row(&r)).transpose()?)
        })
    }

    /// Writes a run's figures and its progress, and gives the lease back, in one transaction
    /// — only while `holder` still holds the lease (a holder whose lease lapsed writes
    /// nothing, as another replica may be syncing the account). Returns whether it did.
    pub async fn finish_datacube_sync(
        &self,
        account_id: &str,
        holder: &str,
        rows: &DatacubeRows,
        update: &DatacubeSyncUpdate,
        now: i64,
    ) -> Result<bool, StoreError> {
        const STATE: Sql = Sql {
            sqlite: "UPDATE datacube_sync SET next_run_at = ?3, synced_through = ?4, \
                     backfill_before = ?5, backfill_done = ?6, failures = ?7, last_error = ?8, \
                     calls_day = ?9, calls_used = ?10, lease_holder = NULL, lease_until = NULL, \
                     updated_at = ?11 WHERE account_id = ?1 AND lease_holder = ?2 \
                     AND lease_until >= ?11",
            postgres: "UPDATE datacube_sync SET next_run_at = $3, synced_through = $4, \
                       backfill_before = $5, backfill_done = $6, failures = $7, last_error = $8, \
                       calls_day = $9, calls_used = $10, lease_holder = NULL, lease_until = NULL, \
                       updated_at = $11 WHERE account_id = $1 AND lease_holder = $2 \
                       AND lease_until >= $11",
        };
        const SUMMARY: Sql = Sql {
            sqlite: "INSERT INTO datacube_user_summary (account_id, day, user_source, new_user, \
                     cancel_user) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, day, user_source) \
                     DO UPDATE SET new_user = excluded.new_user, cancel_user = excluded.cancel_user",
            postgres: "INSERT INTO datacube_user_summary (account_id, day, user_source, new_user, \
                       cancel_user) VALUES ($1, $2, $3, $4, $5) \
                       ON CONFLICT (account_id, day, user_source) \
                       DO UPDATE SET new_user = excluded.new_user, cancel_user = excluded.cancel_user",
        };
        const CUMULATE: Sql = Sql {
            sqlite: "INSERT INTO datacube_user_cumulate (account_id, day, cumulate_user) \
                     VALUES (?, ?, ?) ON CONFLICT (account_id, day) \
                     DO UPDATE SET cumulate_user = excluded.cumulate_user",
            postgres: "INSERT INTO datacube_user_cumulate (account_id, day, cumulate_user) \
                       VALUES ($1, $2, $3) ON CONFLICT (account_id, day) \
                       DO UPDATE SET cumulate_user = excluded.cumulate_user",
        };
        const INTERFACE_DAY: Sql = Sql {
            sqlite: "INSERT INTO datacube_interface_summary (account_id, day, callback_count, \
                     fail_count, total_time_cost, max_time_cost) VALUES (?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (account_id, day) DO UPDATE SET \
                     callback_count = excluded.callback_count, fail_count = excluded.fail_count, \
                     total_time_cost = excluded.total_time_cost, \
                     max_time_cost = excluded.max_time_cost",
            postgres: "INSERT INTO datacube_interface_summary (account_id, day, callback_count, \
                       fail_count, total_time_cost, max_time_cost) VALUES ($1, $2, $3, $4, $5, $6) \
                       ON CONFLICT (account_id, day) DO UPDATE SET \
                       callback_count = excluded.callback_count, fail_count = excluded.fail_count, \
                       total_time_cost = excluded.total_time_cost, \
                       max_time_cost = excluded.max_time_cost",
        };
        const INTERFACE_HOUR: Sql = Sql {
            sqlite: "INSERT INTO datacube_interface_hour (account_id, day, ref_hour, callback_count, \
                     fail_count, total_time_cost, max_time_cost) VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (account_id, day, ref_hour) DO UPDATE SET \
                     callback_count = excluded.callback_count, fail_count = excluded.fail_count, \
                     total_time_cost = excluded.total_time_cost, \
                     max_time_cost = excluded.max_time_cost",
            postgres: "INSERT INTO datacube_interface_hour (account_id, day, ref_hour, \
                       callback_count, fail_count, total_time_cost, max_time_cost) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7) \
                       ON CONFLICT (account_id, day, ref_hour) DO UPDATE SET \
                       callback_count = excluded.callback_count, fail_count = excluded.fail_count, \
                       total_time_cost = excluded.total_time_cost, \
                       max_time_cost = excluded.max_time_cost",
        };
        const MISSING: Sql = Sql {
            sqlite: "INSERT INTO datacube_missing (account_id, day, endpoint, reason, recorded_at) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, day, endpoint) \
                     DO UPDATE SET reason = excluded.reason, recorded_at = excluded.recorded_at",
            postgres: "INSERT INTO datacube_missing (account_id, day, endpoint, reason, recorded_at) \
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, day, endpoint) \
                       DO UPDATE SET reason = excluded.reason, recorded_at = excluded.recorded_at",
        };
        const FOUND: Sql = Sql {
            sqlite: "DELETE FROM datacube_missing WHERE account_id = ? AND day = ? AND endpoint = ?",
            postgres: "DELETE FROM datacube_missing WHERE account_id = $1 AND day = $2 \
                       AND endpoint = $3",
        };
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            let held = sqlx::query(STATE.get(d))
                .bind(account_id)
                .bind(holder)
                .bind(update.next_run_at)
                .bind(update.synced_through)
                .bind(update.backfill_before)
                .bind(update.backfill_done)
                .bind(update.failures)
                .bind(update.last_error.as_deref())
                .bind(update.calls_day)
                .bind(update.calls_used)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !held {
                tx.rollback().await?;
                return Ok(false);
            }
            for r in &rows.user_summary {
                sqlx::query(SUMMARY.get(d))
                    .bind(account_id)
                    .bind(r.day)
                    .bind(r.user_source)
                    .bind(r.new_user)
                    .bind(r.cancel_user)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &rows.user_cumulate {
                sqlx::query(CUMULATE.get(d))
                    .bind(account_id)
                    .bind(r.day)
                    .bind(r.cumulate_user)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in &rows.interface {
                let query = match r.ref_hour {
                    None => sqlx::query(INTERFACE_DAY.get(d))
                        .bind(account_id)
                        .bind(r.day),
                    Some(hour) => sqlx::query(INTERFACE_HOUR.get(d))
                        .bind(account_id)
                        .bind(r.day)
                        .bind(hour),
                };
                query
                    .bind(r.callback_count)
                    .bind(r.fail_count)
                    .bind(r.total_time_cost)
                    .bind(r.max_time_cost)
                    .execute(&mut *tx)
                    .await?;
            }
            for (day, endpoint) in &rows.found {
                sqlx::query(FOUND.get(d))
                    .bind(account_id)
                    .bind(*day)
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
            }
            for (day, endpoint, reason) in &rows.missing {
                sqlx::query(MISSING.get(d))
                    .bind(account_id)
                    .bind(*day)
                    .bind(endpoint)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The account's sync state, if it has one.
    pub async fn datacube_sync_state(
        &self,
        account_id: &str,
    ) -> Result<Option<DatacubeSyncState>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT account_id, next_run_at, synced_through, backfill_before, \
                     backfill_done, failures, last_error, calls_day, calls_used \
                     FROM datacube_sync WHERE account_id = ?",
            postgres: "SELECT account_id, next_run_at, synced_through, backfill_before, \
                       backfill_done, failures, last_error, calls_day, calls_used \
                       FROM datacube_sync WHERE account_id = $1",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| state_from_row(&r)).transpose()?)
        })
    }

    /// The oldest `synced_through` over the accounts being synced (`None`: none has synced a
    /// day yet, or there are none), and how many accounts are synced: the sync's lag.
    pub async fn datacube_sync_progress(&self) -> Result<(Option<i64>, i64), StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT MIN(s.synced_through) AS oldest, COUNT(*) AS n FROM datacube_sync s \
                     JOIN accounts a ON a.id = s.account_id \
                     WHERE a.state = 'active' AND a.kind = 'service' AND a.verified",
            postgres: "SELECT MIN(s.synced_through) AS oldest, COUNT(*) AS n FROM datacube_sync s \
                       JOIN accounts a ON a.id = s.account_id \
                       WHERE a.state = 'active' AND a.kind = 'service' AND a.verified",
        };
        on_backend!(self, |pool, d| {
            let row = sqlx::query(SQL.get(d)).fetch_one(pool).await?;
            Ok((row.opt_int("oldest")?, row.int("n")?))
        })
    }

    /// Follows and unfollows per day and channel for days in `[from, to)`, by day then channel.
    pub async fn datacube_user_summary(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UserSummaryDay>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT day, user_source, new_user, cancel_user FROM datacube_user_summary \
                     WHERE account_id = ? AND day >= ? AND day < ? ORDER BY day, user_source",
            postgres: "SELECT day, user_source, new_user, cancel_user FROM datacube_user_summary \
                       WHERE account_id = $1 AND day >= $2 AND day < $3 ORDER BY day, user_source",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(UserSummaryDay {
                        day: r.int("day")?,
                        user_source: r.int("user_source")?,
                        new_user: r.int("new_user")?,
                        cancel_user: r.int("cancel_user")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Followers at the end of each day in `[from, to)`, by day.
    pub async fn datacube_user_cumulate(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UserCumulateDay>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT day, cumulate_user FROM datacube_user_cumulate \
                     WHERE account_id = ? AND day >= ? AND day < ? ORDER BY day",
            postgres: "SELECT day, cumulate_user FROM datacube_user_cumulate \
                       WHERE account_id = $1 AND day >= $2 AND day < $3 ORDER BY day",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(UserCumulateDay {
                        day: r.int("day")?,
                        cumulate_user: r.int("cumulate_user")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Push-handling figures per day in `[from, to)` (`hourly`: per hour instead), by day then
    /// hour.
    pub async fn datacube_interface(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
        hourly: bool,
    ) -> Result<Vec<InterfaceFigures>, StoreError> {
        const DAYS: Sql = Sql {
            sqlite: "SELECT day, NULL AS ref_hour, callback_count, fail_count, total_time_cost, \
                     max_time_cost FROM datacube_interface_summary \
                     WHERE account_id = ? AND day >= ? AND day < ? ORDER BY day",
            postgres: "SELECT day, CAST(NULL AS BIGINT) AS ref_hour, callback_count, fail_count, \
                       total_time_cost, max_time_cost FROM datacube_interface_summary \
                       WHERE account_id = $1 AND day >= $2 AND day < $3 ORDER BY day",
        };
        const HOURS: Sql = Sql {
            sqlite: "SELECT day, ref_hour, callback_count, fail_count, total_time_cost, \
                     max_time_cost FROM datacube_interface_hour \
                     WHERE account_id = ? AND day >= ? AND day < ? ORDER BY day, ref_hour",
            postgres: "SELECT day, ref_hour, callback_count, fail_count, total_time_cost, \
                       max_time_cost FROM datacube_interface_hour \
                       WHERE account_id = $1 AND day >= $2 AND day < $3 ORDER BY day, ref_hour",
        };
        let sql = if hourly { &HOURS } else { &DAYS };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(sql.get(d))
                .bind(account_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(InterfaceFigures {
                        day: r.int("day")?,
                        ref_hour: r.opt_int("ref_hour")?,
                        callback_count: r.int("callback_count")?,
                        fail_count: r.int("fail_count")?,
                        total_time_cost: r.int("total_time_cost")?,
                        max_time_cost: r.int("max_time_cost")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The days recorded as missing for the account, by day then endpoint.
    pub async fn datacube_missing(&self, account_id: &str) -> Result<Vec<MissingDay>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT day, endpoint, reason, recorded_at FROM datacube_missing \
                     WHERE account_id = ? ORDER BY day, endpoint",
            postgres: "SELECT day, endpoint, reason, recorded_at FROM datacube_missing \
                       WHERE account_id = $1 ORDER BY day, endpoint",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(MissingDay {
                        day: r.int("day")?,
                        endpoint: r.text("endpoint")?,
                        reason: r.text("reason")?,
                        recorded_at: r.int("recorded_at")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Deletes the synced figures and missing-day records of days before `before`; returns
    /// how many rows. Goes through the accounts a page at a time along the primary keys (no
    /// statement scans a whole table). Idempotent.
    pub async fn prune_datacube(&self, before: i64) -> Result<u64, StoreError> {
        const PAGE: Sql = Sql {
            sqlite: "SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT 500",
            postgres: "SELECT id FROM accounts WHERE id > $1 ORDER BY id LIMIT 500",
        };
        macro_rules! prune {
            ($table:literal) => {
                Sql {
                    sqlite: concat!(
                        "DELETE FROM ",
                        $table,
                        " WHERE account_id IN (SELECT value FROM json_each(?1)) AND day < ?2"
                    ),
                    postgres: concat!(
                        "DELETE FROM ",
                        $table,
                        " WHERE account_id = ANY($1::text[]) AND day < $2"
                    ),
                }
            };
        }
        const TABLES: [Sql; 5] = [
            prune!("datacube_user_summary"),
            prune!("datacube_user_cumulate"),
            prune!("datacube_interface_summary"),
            prune!("datacube_interface_hour"),
            prune!("datacube_missing"),
        ];
        let mut deleted = 0;
        let mut after = String::new();
        loop {
            let ids: Vec<String> = on_backend!(self, |pool, d| {
                let rows = sqlx::query(PAGE.get(d))
                    .bind(&after)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| r.text("id"))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for sql in &TABLES {
                deleted += on_backend!(self, |pool, d| {
                    sqlx::query(sql.get(d))
                        .bind(crate::stats::TextList::new(d, &ids))
                        .bind(before)
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected())
                })?;
            }
            after = last;
        }
        Ok(deleted)
    }
}
