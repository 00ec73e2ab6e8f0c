-- WeChat's own statistics (docs/wechat-2.md §5–§7), synced once a day per verified service
-- account and kept beyond WeChat's windows. Days are the start (Unix ms) of a China-time
-- (UTC+8) day, as in the statistics tables. Same file name in migrations/postgres.

-- One row per account being synced: when it is due, who holds it (a lease, as for core
-- tokens: a conditional UPDATE claims it on either database), how far it got both ways, and
-- today's calls against the account's daily budget.
CREATE TABLE datacube_sync (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    next_run_at     INTEGER NOT NULL,
    lease_holder    TEXT,
    lease_until     INTEGER,
    -- the last day fetched going forward (the nightly sync continues after it)
    synced_through  INTEGER,
    -- the earliest day fetched going back (the backfill continues before it)
    backfill_before INTEGER,
    backfill_done   INTEGER NOT NULL DEFAULT 0 CHECK (backfill_done IN (0, 1)),
    failures        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- the China-time day (start, Unix ms) `calls_used` counts for
    calls_day       INTEGER,
    calls_used      INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX datacube_sync_due ON datacube_sync (next_run_at);

-- Days WeChat did not give although they should be ready, per endpoint.
CREATE TABLE datacube_missing (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day         INTEGER NOT NULL,
    endpoint    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, day, endpoint)
) STRICT, WITHOUT ROWID;

-- getusersummary: follows and unfollows per day and channel (user_source).
CREATE TABLE datacube_user_summary (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day         INTEGER NOT NULL,
    user_source INTEGER NOT NULL,
    new_user    INTEGER NOT NULL,
    cancel_user INTEGER NOT NULL,
    PRIMARY KEY (account_id, day, user_source)
) STRICT, WITHOUT ROWID;

-- getusercumulate: followers at the end of each day.
CREATE TABLE datacube_user_cumulate (
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day           INTEGER NOT NULL,
    cumulate_user INTEGER NOT NULL,
    PRIMARY KEY (account_id, day)
) STRICT, WITHOUT ROWID;

-- getinterfacesummary: how the push server answered WeChat per day (time costs in ms).
CREATE TABLE datacube_interface_summary (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day             INTEGER NOT NULL,
    callback_count  INTEGER NOT NULL,
    fail_count      INTEGER NOT NULL,
    total_time_cost INTEGER NOT NULL,
    max_time_cost   INTEGER NOT NULL,
    PRIMARY KEY (account_id, day)
) STRICT, WITHOUT ROWID;

-- getinterfacesummaryhour: the same per hour (`ref_hour` as WeChat writes it: 0, 100 … 2300).
CREATE TABLE datacube_interface_hour (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day             INTEGER NOT NULL,
    ref_hour        INTEGER NOT NULL,
    callback_count  INTEGER NOT NULL,
    fail_count      INTEGER NOT NULL,
    total_time_cost INTEGER NOT NULL,
    max_time_cost   INTEGER NOT NULL,
    PRIMARY KEY (account_id, day, ref_hour)
) STRICT, WITHOUT ROWID;
