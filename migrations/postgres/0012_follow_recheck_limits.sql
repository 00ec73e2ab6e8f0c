-- The follow page's "I've followed" asks WeChat's user/info, which spends the account's daily
-- quota: each wait may do it a few times only, and not more often than every few seconds, on
-- whichever replica the button is pressed. Same file name in migrations/sqlite.
ALTER TABLE oidc_follow_waits ADD COLUMN rechecks BIGINT NOT NULL DEFAULT 0;
ALTER TABLE oidc_follow_waits ADD COLUMN last_recheck_at BIGINT;
