//! Statistics: hourly and daily counters per account, daily platform totals, and per-period
//! ranks of accounts — written by the `stats` crate's flusher, read by the dashboard's charts.
//!
//! Writing is additive (`ON CONFLICT … DO UPDATE SET value = value + excluded.value`): a
//! flush adds what one replica counted since its last flush, so any number of replicas
//! writing the same hour add up, and a row is never read before it is written. One flush is
//! one transaction over all four tables ([`Store::add_stats`]): it lands whole or not at all,
//! and the caller keeps what did not land for its next flush — the sum of the rows is the sum
//! of the events. The rows of a batch are bound as arrays (PostgreSQL `unnest`) or as one JSON
//! array (SQLite `json_each`), so a flush is a handful of statements whatever its size.
//! Counts for an account deleted meanwhile are dropped (`WHERE EXISTS`), never an error.
//!
//! The calendar (which hour, day, week or month a count belongs to) is the caller's: this
//! module stores and sums the starts it is given (Unix ms).
//!
//! Reads, for charts: an account's hourly or daily series ([`Store::account_series`]) and its
//! totals over a range ([`Store::account_totals`]), platform totals per day
//! ([`Store::platform_series`]), the busiest and the most failing accounts of a period
//! ([`Store::top_accounts`]). Each reads a primary-key range or an index scan with a limit,
//! so its cost does not grow with the number of accounts.

use crate::db::{Backend, BeginWrite, Dialect, Sql, StoreRow};
use crate::{Store, StoreError};

/// The buckets of a series: the hourly or daily rows as they are, or the daily rows summed
/// by week or month in the database (a year of an account's counters is thousands of rows,
/// its weeks a few hundred).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// `stats_hourly`: starts of UTC hours (kept for weeks).
    Hour,
    /// `stats_daily`: starts of China-time days (kept for years).
    Day,
    /// `stats_daily` summed per week from Monday, China time; a bucket starts on its Monday,
    /// or at the range's start when that is later.
    Week,
    /// `stats_daily` summed per calendar month, China time; a bucket starts on the 1st, or at
    /// the range's start when that is later.
    Month,
}

/// The start of the week (Monday, China time) holding the row's `day`, not before the range's
/// start `$from`: days since 1970-01-01 (a Thursday, so Monday-based weekday 3) in China time.
macro_rules! week_bucket {
    ($max:literal, $from:literal) => {
        concat!(
            $max,
            "(",
            $from,
            ", day - (((day + 28800000) / 86400000 + 3) % 7) * 86400000)"
        )
    };
}

/// The start of the calendar month (China time) holding `day`, not before `$from`.
macro_rules! month_bucket {
    (sqlite, $from:literal) => {
        concat!(
            "MAX(",
            $from,
            ", CAST(strftime('%s', date((day + 28800000) / 1000, 'unixepoch', 'start of month')) \
             AS INTEGER) * 1000 - 28800000)"
        )
    };
    (postgres, $from:literal) => {
        concat!(
            "GREATEST(",
            $from,
            ", CAST(EXTRACT(EPOCH FROM date_trunc('month', \
             to_timestamp((day + 28800000) / 1000.0) AT TIME ZONE 'UTC')) AS BIGINT) * 1000 \
             - 28800000)"
        )
    };
}

/// A summing statement over `stats_daily` or `stats_platform_daily`: `$bucket` the start
/// expression, `$filter` the rest of the WHERE clause.
macro_rules! rolled_sql {
    ($bucket_sqlite:expr, $bucket_pg:expr, $table:literal, $filter_sqlite:literal, $filter_pg:literal) => {
        Sql {
            sqlite: concat!(
                "SELECT ",
                $bucket_sqlite,
                " AS start, metric, label, SUM(value) AS value FROM ",
                $table,
                " WHERE ",
                $filter_sqlite,
                " GROUP BY 1, metric, label ORDER BY 1, metric, label"
            ),
            postgres: concat!(
                "SELECT ",
                $bucket_pg,
                " AS start, metric, label, CAST(SUM(value) AS BIGINT) AS value FROM ",
                $table,
                " WHERE ",
                $filter_pg,
                " GROUP BY 1, metric, label ORDER BY 1, metric, label"
            ),
        }
    };
}

db_enum! {
    /// A calendar period accounts are ranked over.
    pub enum RankPeriod {
        Day = "day",
        Week = "week",
        Month = "month",
    }
}

/// What accounts are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RankBy {
    /// Requests served: token reads, proxy calls, logins, pushes.
    Activity,
    /// Failed refreshes, proxy errors, failed logins, failed relays.
    Failures,
}

/// One counter of one account in one hour or day (a row to add, or a row read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub account_id: String,
    /// Unix ms of the start of the hour or day.
    pub start: i64,
    pub metric: String,
    pub label: String,
    pub value: i64,
}

/// One value of a series: its bucket's start, metric, label and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    pub start: i64,
    pub metric: String,
    pub label: String,
    pub value: i64,
}

/// A metric's total over a range, per label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub metric: String,
    pub label: String,
    pub value: i64,
}

/// A platform total to add for one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRow {
    pub day: i64,
    pub metric: String,
    pub label: String,
    pub value: i64,
}

/// What to add to an account's rank row of one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankRow {
    pub period: RankPeriod,
    /// Unix ms of the period's start.
    pub start: i64,
    pub account_id: String,
    pub activity: i64,
    pub failures: i64,
}

/// An account in a ranking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankedAccount {
    pub account_id: String,
    pub appid: String,
    pub name: String,
    pub activity: i64,
    pub failures: i64,
}

/// Everything one flush adds, written in one transaction by [`Store::add_stats`]. Each list
/// must hold each key once (the caller sums first): PostgreSQL refuses to upsert one row
/// twice in a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsBatch {
    pub hourly: Vec<CounterRow>,
    pub daily: Vec<CounterRow>,
    pub platform: Vec<PlatformRow>,
    pub ranks: Vec<RankRow>,
}

impl StatsBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.hourly.is_empty()
            && self.daily.is_empty()
            && self.platform.is_empty()
            && self.ranks.is_empty()
    }

    /// Sorts every list by its key, so that concurrent flushes of several replicas take their
    /// row locks in one order (PostgreSQL: no deadlock between them).
    fn sort(&mut self) {
        let counter = |a: &CounterRow, b: &CounterRow| {
            (&a.account_id, a.start, &a.metric, &a.label).cmp(&(
                &b.account_id,
                b.start,
                &b.metric,
                &b.label,
            ))
        };
        self.hourly.sort_by(counter);
        self.daily.sort_by(counter);
        self.platform
            .sort_by(|a, b| (a.day, &a.metric, &a.label).cmp(&(b.day, &b.metric, &b.label)));
        self.ranks.sort_by(|a, b| {
            (a.period.as_str(), a.start, &a.account_id).cmp(&(
                b.period.as_str(),
                b.start,
                &b.account_id,
            ))
        });
    }
}

/// Rows bound per statement: large flushes are several statements of one transaction.
const CHUNK: usize = 5000;

/// The hourly and daily upserts differ only in table and time column.
macro_rules! counter_upsert {
    ($table:literal, $time:literal) => {
        Sql {
            sqlite: concat!(
                "INSERT INTO ", $table, " (account_id, ", $time, ", metric, label, value) \
                 SELECT json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), \
                 json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'), \
                 json_extract(r.value, '$[4]') FROM json_each(?1) AS r \
                 WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = json_extract(r.value, '$[0]')) \
                 ON CONFLICT (account_id, ", $time, ", metric, label) \
                 DO UPDATE SET value = ", $table, ".value + excluded.value"
            ),
            postgres: concat!(
                "INSERT INTO ", $table, " (account_id, ", $time, ", metric, label, value) \
                 SELECT v.account_id, v.t, v.metric, v.label, v.value \
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[]) \
                 WITH ORDINALITY AS v(account_id, t, metric, label, value, n) \
                 WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = v.account_id) ORDER BY v.n \
                 ON CONFLICT (account_id, ", $time, ", metric, label) \
                 DO UPDATE SET value = ", $table, ".value + excluded.value"
            ),
        }
    };
}

const ADD_HOURLY: Sql = counter_upsert!("stats_hourly", "hour");
const ADD_DAILY: Sql = counter_upsert!("stats_daily", "day");

const ADD_PLATFORM: Sql = Sql {
    sqlite: "INSERT INTO stats_platform_daily (day, metric, label, value) \
             SELECT json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), \
             json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]') \
             FROM json_each(?1) AS r WHERE TRUE \
             ON CONFLICT (day, metric, label) \
             DO UPDATE SET value = stats_platform_daily.value + excluded.value",
    postgres: "INSERT INTO stats_platform_daily (day, metric, label, value) \
               SELECT v.day, v.metric, v.label, v.value \
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
               WITH ORDINALITY AS v(day, metric, label, value, n) ORDER BY v.n \
               ON CONFLICT (day, metric, label) \
               DO UPDATE SET value = stats_platform_daily.value + excluded.value",
};

const ADD_RANKS: Sql = Sql {
    sqlite: "INSERT INTO stats_account_ranks (period, start, account_id, activity, failures) \
             SELECT json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), \
             json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'), \
             json_extract(r.value, '$[4]') FROM json_each(?1) AS r \
             WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = json_extract(r.value, '$[2]')) \
             ON CONFLICT (period, start, account_id) DO UPDATE SET \
             activity = stats_account_ranks.activity + excluded.activity, \
             failures = stats_account_ranks.failures + excluded.failures",
    postgres: "INSERT INTO stats_account_ranks (period, start, account_id, activity, failures) \
               SELECT v.period, v.start, v.account_id, v.activity, v.failures \
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) \
               WITH ORDINALITY AS v(period, start, account_id, activity, failures, n) \
               WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.id = v.account_id) ORDER BY v.n \
               ON CONFLICT (period, start, account_id) DO UPDATE SET \
               activity = stats_account_ranks.activity + excluded.activity, \
               failures = stats_account_ranks.failures + excluded.failures",
};

fn counters_json(rows: &[CounterRow]) -> String {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| serde_json::json!([r.account_id, r.start, r.metric, r.label, r.value]))
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// The time columns of the series tables, by granularity.
fn series_sql(granularity: Granularity) -> Sql {
    match granularity {
        Granularity::Hour => Sql {
            sqlite: "SELECT hour AS start, metric, label, value FROM stats_hourly \
                     WHERE account_id = ?1 AND hour >= ?2 AND hour < ?3 \
                     AND (?4 = '[]' OR metric IN (SELECT value FROM json_each(?4))) \
                     ORDER BY hour, metric, label",
            postgres: "SELECT hour AS start, metric, label, value FROM stats_hourly \
                       WHERE account_id = $1 AND hour >= $2 AND hour < $3 \
                       AND (cardinality($4::text[]) = 0 OR metric = ANY($4::text[])) \
                       ORDER BY hour, metric, label",
        },
        Granularity::Day => Sql {
            sqlite: "SELECT day AS start, metric, label, value FROM stats_daily \
                     WHERE account_id = ?1 AND day >= ?2 AND day < ?3 \
                     AND (?4 = '[]' OR metric IN (SELECT value FROM json_each(?4))) \
                     ORDER BY day, metric, label",
            postgres: "SELECT day AS start, metric, label, value FROM stats_daily \
                       WHERE account_id = $1 AND day >= $2 AND day < $3 \
                       AND (cardinality($4::text[]) = 0 OR metric = ANY($4::text[])) \
                       ORDER BY day, metric, label",
        },
        Granularity::Week => rolled_sql!(
            week_bucket!("MAX", "?2"),
            week_bucket!("GREATEST", "$2"),
            "stats_daily",
            "account_id = ?1 AND day >= ?2 AND day < ?3 \
             AND (?4 = '[]' OR metric IN (SELECT value FROM json_each(?4)))",
            "account_id = $1 AND day >= $2 AND day < $3 \
             AND (cardinality($4::text[]) = 0 OR metric = ANY($4::text[]))"
        ),
        Granularity::Month => rolled_sql!(
            month_bucket!(sqlite, "?2"),
            month_bucket!(postgres, "$2"),
            "stats_daily",
            "account_id = ?1 AND day >= ?2 AND day < ?3 \
             AND (?4 = '[]' OR metric IN (SELECT value FROM json_each(?4)))",
            "account_id = $1 AND day >= $2 AND day < $3 \
             AND (cardinality($4::text[]) = 0 OR metric = ANY($4::text[]))"
        ),
    }
}

/// The platform's statements by granularity; it has daily totals only, so `Hour` reads days.
fn platform_sql(granularity: Granularity) -> Sql {
    match granularity {
        Granularity::Hour | Granularity::Day => Sql {
            sqlite: "SELECT day AS start, metric, label, value FROM stats_platform_daily \
                     WHERE day >= ?1 AND day < ?2 \
                     AND (?3 = '[]' OR metric IN (SELECT value FROM json_each(?3))) \
                     ORDER BY day, metric, label",
            postgres: "SELECT day AS start, metric, label, value FROM stats_platform_daily \
                       WHERE day >= $1 AND day < $2 \
                       AND (cardinality($3::text[]) = 0 OR metric = ANY($3::text[])) \
                       ORDER BY day, metric, label",
        },
        Granularity::Week => rolled_sql!(
            week_bucket!("MAX", "?1"),
            week_bucket!("GREATEST", "$1"),
            "stats_platform_daily",
            "day >= ?1 AND day < ?2 \
             AND (?3 = '[]' OR metric IN (SELECT value FROM json_each(?3)))",
            "day >= $1 AND day < $2 \
             AND (cardinality($3::text[]) = 0 OR metric = ANY($3::text[]))"
        ),
        Granularity::Month => rolled_sql!(
            month_bucket!(sqlite, "?1"),
            month_bucket!(postgres, "$1"),
            "stats_platform_daily",
            "day >= ?1 AND day < ?2 \
             AND (?3 = '[]' OR metric IN (SELECT value FROM json_each(?3)))",
            "day >= $1 AND day < $2 \
             AND (cardinality($3::text[]) = 0 OR metric = ANY($3::text[]))"
        ),
    }
}

fn series_point(row: &impl StoreRow) -> Result<SeriesPoint, sqlx::Error> {
    Ok(SeriesPoint {
        start: row.int("start")?,
        metric: row.text("metric")?,
        label: row.text("label")?,
        value: row.int("value")?,
    })
}

/// A list of texts bound as one parameter: a JSON array on SQLite (read with `json_each`), a
/// `text[]` on PostgreSQL. One type for both, so a statement's binds are written once.
pub(crate) enum TextList {
    Json(String),
    Array(Vec<String>),
}

impl TextList {
    pub(crate) fn new(dialect: Dialect, texts: &[String]) -> Self {
        match dialect {
            Dialect::Sqlite => TextList::Json(serde_json::Value::from(texts.to_vec()).to_string()),
            Dialect::Postgres => TextList::Array(texts.to_vec()),
        }
    }
}

/// `metrics` as one parameter.
fn metric_list(dialect: Dialect, metrics: &[&str]) -> TextList {
    let owned: Vec<String> = metrics.iter().map(|m| (*m).to_owned()).collect();
    TextList::new(dialect, &owned)
}

impl sqlx::Type<sqlx::Sqlite> for TextList {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for TextList {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            TextList::Json(json) => {
                <String as sqlx::Encode<sqlx::Sqlite>>::encode_by_ref(json, buf)
            }
            TextList::Array(texts) => {
                let json = serde_json::Value::from(texts.clone()).to_string();
                <String as sqlx::Encode<sqlx::Sqlite>>::encode(json, buf)
            }
        }
    }
}

impl sqlx::Type<sqlx::Postgres> for TextList {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Vec<String> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for TextList {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        match self {
            TextList::Array(texts) => {
                <Vec<String> as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(texts, buf)
            }
            TextList::Json(json) => {
                let texts: Vec<String> = serde_json::from_str(json)?;
                <Vec<String> as sqlx::Encode<sqlx::Postgres>>::encode(texts, buf)
            }
        }
    }
}

/// One column of a chunk of rows, as a PostgreSQL array parameter.
fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// Accounts pruned per statement.
const PRUNE_PAGE: i64 = 500;

/// How many rows one [`Store::prune_stats`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub hourly: u64,
    pub daily: u64,
    pub platform: u64,
    pub ranks: u64,
}

impl Store {
    /// Adds a flush's counts, in one transaction (see the module doc). Counts of accounts
    /// that no longer exist are dropped.
    pub async fn add_stats(&self, batch: &StatsBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut batch = batch.clone();
        batch.sort();
        self.count_operation();
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                for (sql, rows) in [(&ADD_HOURLY, &batch.hourly), (&ADD_DAILY, &batch.daily)] {
                    for chunk in rows.chunks(CHUNK) {
                        sqlx::query(sql.sqlite)
                            .bind(counters_json(chunk))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                for chunk in batch.platform.chunks(CHUNK) {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|r| serde_json::json!([r.day, r.metric, r.label, r.value]))
                        .collect();
                    sqlx::query(ADD_PLATFORM.sqlite)
                        .bind(serde_json::Value::Array(rows).to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                for chunk in batch.ranks.chunks(CHUNK) {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|r| {
                            serde_json::json!([
                                r.period.as_str(),
                                r.start,
                                r.account_id,
                                r.activity,
                                r.failures
                            ])
                        })
                        .collect();
                    sqlx::query(ADD_RANKS.sqlite)
                        .bind(serde_json::Value::Array(rows).to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                for (sql, rows) in [(&ADD_HOURLY, &batch.hourly), (&ADD_DAILY, &batch.daily)] {
                    for chunk in rows.chunks(CHUNK) {
                        sqlx::query(sql.postgres)
                            .bind(column(chunk, |r| r.account_id.clone()))
                            .bind(column(chunk, |r| r.start))
                            .bind(column(chunk, |r| r.metric.clone()))
                            .bind(column(chunk, |r| r.label.clone()))
                            .bind(column(chunk, |r| r.value))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                for chunk in batch.platform.chunks(CHUNK) {
                    sqlx::query(ADD_PLATFORM.postgres)
                        .bind(column(chunk, |r| r.day))
                        .bind(column(chunk, |r| r.metric.clone()))
                        .bind(column(chunk, |r| r.label.clone()))
                        .bind(column(chunk, |r| r.value))
                        .execute(&mut *tx)
                        .await?;
                }
                for chunk in batch.ranks.chunks(CHUNK) {
                    sqlx::query(ADD_RANKS.postgres)
                        .bind(column(chunk, |r| r.period.as_str().to_owned()))
                        .bind(column(chunk, |r| r.start))
                        .bind(column(chunk, |r| r.account_id.clone()))
                        .bind(column(chunk, |r| r.activity))
                        .bind(column(chunk, |r| r.failures))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// An account's counters in `[from, to)` (Unix ms) per hour, day, week or month (see
    /// [`Granularity`]), limited to `metrics` (all when empty), ordered by start, metric,
    /// label. Empty buckets have no row.
    pub async fn account_series(
        &self,
        account_id: &str,
        granularity: Granularity,
        from: i64,
        to: i64,
        metrics: &[&str],
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let sql = series_sql(granularity);
        on_backend!(self, |pool, d| {
            let query = sqlx::query(sql.get(d)).bind(account_id).bind(from).bind(to);
            let query = query.bind(metric_list(d, metrics));
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(series_point)
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// An account's totals per metric and label over the days in `[from, to)`, limited to
    /// `metrics` (all when empty), ordered by metric then label (the funnel, calls by
    /// endpoint over a range).
    pub async fn account_totals(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
        metrics: &[&str],
    ) -> Result<Vec<Total>, StoreError> {
        // PostgreSQL's SUM over BIGINT is NUMERIC; cast back so both decode as i64.
        const SQL: Sql = Sql {
            sqlite: "SELECT metric, label, SUM(value) AS total FROM stats_daily \
                     WHERE account_id = ?1 AND day >= ?2 AND day < ?3 \
                     AND (?4 = '[]' OR metric IN (SELECT value FROM json_each(?4))) \
                     GROUP BY metric, label ORDER BY metric, label",
            postgres: "SELECT metric, label, CAST(SUM(value) AS BIGINT) AS total FROM stats_daily \
                       WHERE account_id = $1 AND day >= $2 AND day < $3 \
                       AND (cardinality($4::text[]) = 0 OR metric = ANY($4::text[])) \
                       GROUP BY metric, label ORDER BY metric, label",
        };
        on_backend!(self, |pool, d| {
            let query = sqlx::query(SQL.get(d)).bind(account_id).bind(from).bind(to);
            let query = query.bind(metric_list(d, metrics));
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(Total {
                        metric: row.text("metric")?,
                        label: row.text("label")?,
                        value: row.int("total")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Platform totals for days in `[from, to)` per day, week or month (`Hour` reads days:
    /// the platform has daily totals only), limited to `metrics` (all when empty), ordered by
    /// start, metric, label.
    pub async fn platform_series(
        &self,
        granularity: Granularity,
        from: i64,
        to: i64,
        metrics: &[&str],
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let sql = platform_sql(granularity);
        on_backend!(self, |pool, d| {
            let query = sqlx::query(sql.get(d)).bind(from).bind(to);
            let query = query.bind(metric_list(d, metrics));
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(series_point)
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The `limit` (at most 100) accounts with the most activity or failures in the period
    /// starting at `start`, most first (ties by account id); accounts with none are left out.
    /// Deleted accounts are skipped.
    pub async fn top_accounts(
        &self,
        period: RankPeriod,
        start: i64,
        by: RankBy,
        limit: u32,
    ) -> Result<Vec<RankedAccount>, StoreError> {
        const BY_ACTIVITY: Sql = Sql {
            sqlite: "SELECT r.account_id, a.appid, a.name, r.activity, r.failures \
                     FROM stats_account_ranks r JOIN accounts a ON a.id = r.account_id \
                     WHERE r.period = ?1 AND r.start = ?2 AND r.activity > 0 \
                     ORDER BY r.activity DESC, r.account_id LIMIT ?3",
            postgres: "SELECT r.account_id, a.appid, a.name, r.activity, r.failures \
                       FROM stats_account_ranks r JOIN accounts a ON a.id = r.account_id \
                       WHERE r.period = $1 AND r.start = $2 AND r.activity > 0 \
                       ORDER BY r.activity DESC, r.account_id LIMIT $3",
        };
        const BY_FAILURES: Sql = Sql {
            sqlite: "SELECT r.account_id, a.appid, a.name, r.activity, r.failures \
                     FROM stats_account_ranks r JOIN accounts a ON a.id = r.account_id \
                     WHERE r.period = ?1 AND r.start = ?2 AND r.failures > 0 \
                     ORDER BY r.failures DESC, r.account_id LIMIT ?3",
            postgres: "SELECT r.account_id, a.appid, a.name, r.activity, r.failures \
                       FROM stats_account_ranks r JOIN accounts a ON a.id = r.account_id \
                       WHERE r.period = $1 AND r.start = $2 AND r.failures > 0 \
                       ORDER BY r.failures DESC, r.account_id LIMIT $3",
        };
        let sql = match by {
            RankBy::Activity => &BY_ACTIVITY,
            RankBy::Failures => &BY_FAILURES,
        };
        on_backend!(self, |pool, d| {
            let rows = sqlx::query(sql.get(d))
                .bind(period.as_str())
                .bind(start)
                .bind(crate::db::page_limit(limit, 100))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(RankedAccount {
                        account_id: row.text("account_id")?,
                        appid: row.text("appid")?,
                        name: row.text("name")?,
                        activity: row.int("activity")?,
                        failures: row.int("failures")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Deletes hourly rows of hours before `hourly_before`, and daily rows, platform totals
    /// and ranks of periods starting before `daily_before`. Goes through the accounts a page
    /// at a time along the primary keys, so no statement scans a whole table or holds the
    /// write lock long. Idempotent: replicas may prune at once.
    pub async fn prune_stats(
        &self,
        hourly_before: i64,
        daily_before: i64,
    ) -> Result<PruneReport, StoreError> {
        const PAGE: Sql = Sql {
            sqlite: "SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2",
            postgres: "SELECT id FROM accounts WHERE id > $1 ORDER BY id LIMIT $2",
        };
        const HOURLY: Sql = Sql {
            sqlite: "DELETE FROM stats_hourly WHERE account_id IN \
                     (SELECT value FROM json_each(?1)) AND hour < ?2",
            postgres: "DELETE FROM stats_hourly WHERE account_id = ANY($1::text[]) AND hour < $2",
        };
        const DAILY: Sql = Sql {
            sqlite: "DELETE FROM stats_daily WHERE account_id IN \
                     (SELECT value FROM json_each(?1)) AND day < ?2",
            postgres: "DELETE FROM stats_daily WHERE account_id = ANY($1::text[]) AND day < $2",
        };
        const PLATFORM: Sql = Sql {
            sqlite: "DELETE FROM stats_platform_daily WHERE day < ?1",
            postgres: "DELETE FROM stats_platform_daily WHERE day < $1",
        };
        const RANKS: Sql = Sql {
            sqlite: "DELETE FROM stats_account_ranks WHERE period = ?1 AND start < ?2",
            postgres: "DELETE FROM stats_account_ranks WHERE period = $1 AND start < $2",
        };
        let mut report = PruneReport::default();
        let mut after = String::new();
        loop {
            let ids: Vec<String> = on_backend!(self, |pool, d| {
                let rows = sqlx::query(PAGE.get(d))
                    .bind(&after)
                    .bind(PRUNE_PAGE)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| r.text("id"))
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            })?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for (sql, before, count) in [
                (&HOURLY, hourly_before, &mut report.hourly),
                (&DAILY, daily_before, &mut report.daily),
            ] {
                *count += on_backend!(self, |pool, d| {
                    sqlx::query(sql.get(d))
                        .bind(TextList::new(d, &ids))
                        .bind(before)
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected())
                })?;
            }
            after = last;
        }
        report.platform = on_backend!(self, |pool, d| {
            sqlx::query(PLATFORM.get(d))
                .bind(daily_before)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        for period in [RankPeriod::Day, RankPeriod::Week, RankPeriod::Month] {
            report.ranks += on_backend!(self, |pool, d| {
                sqlx::query(RANKS.get(d))
                    .bind(period.as_str())
                    .bind(daily_before)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })?;
        }
        Ok(report)
    }
}
