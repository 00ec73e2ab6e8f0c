-- Statistics: what happens on every account, counted in memory and flushed every few seconds
-- as additive upserts (`value = value + excluded.value`), so several replicas writing the
-- same hour add up. Replaces `stats_counters`, which nothing ever wrote.
--
-- Times are Unix milliseconds: `hour` is the start of a UTC hour; `day`, and a rank's
-- `start`, the start of a China-time (UTC+8) day, Monday-based week or month, the calendar of
-- WeChat's own statistics and quotas. `label` is the one dimension of a metric (an errcode, a
-- WeChat endpoint, an API key id, "mode/website"...), '' when it has none. Pruning goes by
-- account through the primary keys (no secondary index on the time columns).
-- Same file name in migrations/postgres.
DROP TABLE stats_counters;

CREATE TABLE stats_hourly (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    hour       INTEGER NOT NULL,
    metric     TEXT NOT NULL,
    label      TEXT NOT NULL,
    value      INTEGER NOT NULL,
    PRIMARY KEY (account_id, hour, metric, label)
) STRICT, WITHOUT ROWID;

CREATE TABLE stats_daily (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day        INTEGER NOT NULL,
    metric     TEXT NOT NULL,
    label      TEXT NOT NULL,
    value      INTEGER NOT NULL,
    PRIMARY KEY (account_id, day, metric, label)
) STRICT, WITHOUT ROWID;

-- Totals over every account per day (labels that name an account's own things, such as API
-- keys and websites, folded away), so the operators' overview reads a year in a few hundred
-- rows whatever the number of accounts. Kept after an account is deleted.
CREATE TABLE stats_platform_daily (
    day    INTEGER NOT NULL,
    metric TEXT NOT NULL,
    label  TEXT NOT NULL,
    value  INTEGER NOT NULL,
    PRIMARY KEY (day, metric, label)
) STRICT, WITHOUT ROWID;

-- Per account and calendar period, what it served (activity) and what failed: the busiest
-- and most failing accounts of a day, week or month are an index scan with a LIMIT. No
-- foreign key (a cascade would scan this table for every deleted account): readers join
-- accounts, and pruning removes a deleted account's rows with their period.
CREATE TABLE stats_account_ranks (
    period     TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    start      INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    activity   INTEGER NOT NULL,
    failures   INTEGER NOT NULL,
    PRIMARY KEY (period, start, account_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX stats_account_ranks_by_activity ON stats_account_ranks (period, start, activity DESC);
CREATE INDEX stats_account_ranks_by_failures ON stats_account_ranks (period, start, failures DESC);
