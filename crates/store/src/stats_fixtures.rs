//! Bulk statistics for benchmarks (`test-fixtures` only): a year of rows for every account in
//! one statement, where the flush's path ([`Store::add_stats`]) would take longer than what is
//! measured, and the size the statistics take on disk.

use crate::db::{Backend, Sql};
use crate::{Store, StoreError};

impl Store {
    /// Adds `days` daily rows of `metric` (label `''`, `value` each) from `first_day` on, for
    /// every account, in one statement (rows already there are kept). Returns the rows added.
    pub async fn fill_daily_stats_of_every_account(
        &self,
        first_day: i64,
        days: i64,
        metric: &str,
        value: i64,
    ) -> Result<u64, StoreError> {
        // On SQLite CROSS JOIN keeps the accounts as the outer loop: rows arrive in key order.
        const SQL: Sql = Sql {
            sqlite: "WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < ?2) \
                     INSERT INTO stats_daily (account_id, day, metric, label, value) \
                     SELECT a.id, ?1 + d.n * 86400000, ?3, '', ?4 \
                     FROM accounts a CROSS JOIN d WHERE true ON CONFLICT DO NOTHING",
            postgres: "INSERT INTO stats_daily (account_id, day, metric, label, value) \
                       SELECT a.id, $1 + d * 86400000, $3, '', $4 \
                       FROM accounts a CROSS JOIN generate_series(0, $2) AS d \
                       ON CONFLICT DO NOTHING",
        };
        on_backend!(self, |pool, d| {
            Ok(sqlx::query(SQL.get(d))
                .bind(first_day)
                .bind(days - 1)
                .bind(metric)
                .bind(value)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Adds `days` of WeChat's follower statistics for one account from `first_day` on: new
    /// followers from two sources, those lost, and a growing total.
    pub async fn fill_follower_stats(
        &self,
        account_id: &str,
        first_day: i64,
        days: i64,
    ) -> Result<(), StoreError> {
        const SUMMARY: Sql = Sql {
            sqlite: "WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < ?3) \
                     INSERT INTO datacube_user_summary \
                     (account_id, day, user_source, new_user, cancel_user) \
                     SELECT ?1, ?2 + n * 86400000, s.source, 30 + (n % 7) - s.source / 3, \
                     10 + n % 3 \
                     FROM d CROSS JOIN (SELECT 0 AS source UNION ALL SELECT 30) AS s WHERE true",
            postgres: "INSERT INTO datacube_user_summary \
                       (account_id, day, user_source, new_user, cancel_user) \
                       SELECT $1, $2 + n * 86400000, s.source, 30 + (n % 7) - s.source / 3, \
                       10 + n % 3 \
                       FROM generate_series(0, $3) AS n CROSS JOIN (VALUES (0), (30)) AS s (source)",
        };
        const CUMULATE: Sql = Sql {
            sqlite: "WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < ?3) \
                     INSERT INTO datacube_user_cumulate (account_id, day, cumulate_user) \
                     SELECT ?1, ?2 + n * 86400000, 10000 + n * 40 FROM d WHERE true",
            postgres: "INSERT INTO datacube_user_cumulate (account_id, day, cumulate_user) \
                       SELECT $1, $2 + n * 86400000, 10000 + n * 40 \
                       FROM generate_series(0, $3) AS n",
        };
        on_backend!(self, |pool, d| {
            for sql in [&SUMMARY, &CUMULATE] {
                sqlx::query(sql.get(d))
                    .bind(account_id)
                    .bind(first_day)
                    .bind(days - 1)
                    .execute(pool)
                    .await?;
            }
            Ok(())
        })
    }

    /// Every account's id, in id order.
    pub async fn all_account_ids(&self) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT id FROM accounts ORDER BY id";
        on_backend!(self, |pool, _d| Ok(sqlx::query_scalar(SQL)
            .fetch_all(pool)
            .await?))
    }

    /// Bytes on disk: the SQLite file's pages, or PostgreSQL's statistics tables with their
    /// indexes (the rest of a PostgreSQL database is not the statistics').
    pub async fn statistics_bytes(&self) -> Result<i64, StoreError> {
        self.count_operation();
        match &self.backend {
            Backend::Sqlite(pool) => {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(pool)
                    .await?;
                let size: i64 = sqlx::query_scalar("PRAGMA page_size")
                    .fetch_one(pool)
                    .await?;
                Ok(pages * size)
            }
            Backend::Postgres(pool) => Ok(sqlx::query_scalar(
                "SELECT CAST(SUM(pg_total_relation_size(c)) AS BIGINT) FROM unnest(ARRAY[\
                 'stats_daily', 'stats_hourly', 'stats_platform_daily', 'stats_account_ranks', \
                 'datacube_user_summary', 'datacube_user_cumulate']::regclass[]) AS c",
            )
            .fetch_one(pool)
            .await?),
        }
    }
}
