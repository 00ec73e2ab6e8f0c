//! Hourly statistics counters per account and metric.
//!
//! Counting is an additive upsert (`ON CONFLICT … DO UPDATE SET value = value + excluded.value`),
//! so concurrent increments from many requests and replicas add up without a read. The hour is
//! the Unix millisecond of its start, computed here from the caller's time.

use crate::db::{BeginWrite, Sql, StoreRow};
use crate::error::on_constraint;
use crate::{Store, StoreError};

const MS_PER_HOUR: i64 = 3_600_000;

/// The start of the hour containing `at` (Unix ms).
pub fn hour_start(at: i64) -> i64 {
    at.div_euclid(MS_PER_HOUR) * MS_PER_HOUR
}

/// One counter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatPoint {
    /// Unix ms of the start of the hour.
    pub hour: i64,
    pub metric: String,
    pub value: i64,
}

const ADD: Sql = Sql {
    sqlite: "INSERT INTO stats_counters (account_id, hour, metric, value) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account_id, hour, metric) \
             DO UPDATE SET value = stats_counters.value + excluded.value",
    postgres: "INSERT INTO stats_counters (account_id, hour, metric, value) VALUES ($1, $2, $3, $4) \
               ON CONFLICT (account_id, hour, metric) \
               DO UPDATE SET value = stats_counters.value + excluded.value",
};

impl Store {
    /// Adds `delta` to `metric` of the account in the hour containing `at`.
    pub async fn add_to_stat(
        &self,
        account_id: &str,
        metric: &str,
        at: i64,
        delta: i64,
    ) -> Result<(), StoreError> {
        on_backend!(self, |pool, d| {
            sqlx::query(ADD.get(d))
                .bind(account_id)
                .bind(hour_start(at))
                .bind(metric)
                .bind(delta)
                .execute(pool)
                .await
                .map_err(|e| on_constraint(e, "stat", "account"))?;
            Ok(())
        })
    }

    /// Adds several `(account_id, metric, at, delta)` increments in one transaction (for
    /// flushing counters collected in memory).
    pub async fn add_to_stats(
        &self,
        increments: &[(&str, &str, i64, i64)],
    ) -> Result<(), StoreError> {
        on_backend!(self, |pool, d| {
            let mut tx = pool.begin_write().await?;
            for (account_id, metric, at, delta) in increments {
                sqlx::query(ADD.get(d))
                    .bind(*account_id)
                    .bind(hour_start(*at))
                    .bind(*metric)
                    .bind(*delta)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| on_constraint(e, "stat", "account"))?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// An account's counters for hours starting in `[from, to)`, ordered by hour then metric.
    pub async fn account_stats(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<StatPoint>, StoreError> {
        const SQL: Sql = Sql {
            sqlite: "SELECT hour, metric, value FROM stats_counters \
                     WHERE account_id = ? AND hour >= ? AND hour < ? ORDER BY hour, metric",
            postgres: "SELECT hour, metric, value FROM stats_counters \
                       WHERE account_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, metric",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(account_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(StatPoint {
                        hour: row.int("hour")?,
                        metric: row.text("metric")?,
                        value: row.int("value")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Totals per metric over all accounts for hours starting in `[from, to)` (the operators'
    /// overview), ordered by metric.
    pub async fn total_stats(&self, from: i64, to: i64) -> Result<Vec<(String, i64)>, StoreError> {
        // PostgreSQL's SUM over BIGINT is NUMERIC; cast back so both decode as i64.
        const SQL: Sql = Sql {
            sqlite: "SELECT metric, SUM(value) AS total FROM stats_counters \
                     WHERE hour >= ? AND hour < ? GROUP BY metric ORDER BY metric",
            postgres: "SELECT metric, CAST(SUM(value) AS BIGINT) AS total FROM stats_counters \
                       WHERE hour >= $1 AND hour < $2 GROUP BY metric ORDER BY metric",
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(SQL.get(d))
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| Ok((row.text("metric")?, row.int("total")?)))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }
}
