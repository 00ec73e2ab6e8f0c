-- WeChat's own statistics (docs/wechat-2.md §5–§7), synced once a day per verified service
-- account and kept beyond WeChat's windows. Days are the start (Unix ms) of a China-time
-- (UTC+8) day, as in the statistics tables. Same file name in migrations/sqlite.

-- One row per account being synced: when it is due, who holds it (a lease, as for core
-- tokens: a conditional UPDATE claims it on either database), how far it got both ways, and
-- today's calls against the account's daily budget.
CREATE TABLE datacube_sync (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    next_run_at     BIGINT NOT NULL,
    lease_holder    TEXT,
    lease_until     BIGINT,
    -- the last day fetched going forward (the nightly sync continues after it)
    synced_through  BIGINT,
    -- the earliest day fetched going back (the backfill continues before it)
    backfill_before BIGINT,
    backfill_done   BOOLEAN NOT NULL DEFAULT FALSE,
    failures        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- the China-time day (start, Unix ms) `calls_used` counts for
    calls_day       BIGINT,
    calls_used      BIGINT NOT NULL DEFAULT 0,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX datacube_sync_due ON datacube_sync (next_run_at);

-- Days WeChat did not give although they should be ready, per endpoint.
CREATE TABLE datacube_missing (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day         BIGINT NOT NULL,
    endpoint    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, endpoint)
);

-- getusersummary: follows and unfollows per day and channel (user_source).
CREATE TABLE datacube_user_summary (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day         BIGINT NOT NULL,
    user_source BIGINT NOT NULL,
    new_user    BIGINT NOT NULL,
    cancel_user BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, user_source)
);

-- getusercumulate: followers at the end of each day.
CREATE TABLE datacube_user_cumulate (
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day           BIGINT NOT NULL,
    cumulate_user BIGINT NOT NULL,
    PRIMARY KEY (account_id, day)
);

-- getinterfacesummary: how the push server answered WeChat per day (time costs in ms).
CREATE TABLE datacube_interface_summary (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day             BIGINT NOT NULL,
    callback_count  BIGINT NOT NULL,
    fail_count      BIGINT NOT NULL,
    total_time_cost BIGINT NOT NULL,
    max_time_cost   BIGINT NOT NULL,
    PRIMARY KEY (account_id, day)
);

-- getinterfacesummaryhour: the same per hour (`ref_hour` as WeChat writes it: 0, 100 … 2300).
CREATE TABLE datacube_interface_hour (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    day             BIGINT NOT NULL,
    ref_hour        BIGINT NOT NULL,
    callback_count  BIGINT NOT NULL,
    fail_count      BIGINT NOT NULL,
    total_time_cost BIGINT NOT NULL,
    max_time_cost   BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, ref_hour)
);
