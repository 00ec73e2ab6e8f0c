-- Login gateway state that 0001 does not cover. Same file name in migrations/postgres.

-- Per-account gateway settings: the account's original id (`gh_…`, the ToUserName of its
-- pushes, and what the follow page's QR placeholder is drawn from) and where to relay pushes
-- (WeChat allows one push URL per account, so the owner's own server gets a re-signed copy).
CREATE TABLE gateway_account_settings (
    account_id     TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    original_id    TEXT,
    push_relay_url TEXT,
    updated_at     BIGINT NOT NULL
);

-- A follow-required login waiting for the user to follow the account. The row is found by the
-- hash of the token in the follow page's URL; the subscribe push sets followed_at, so any
-- replica's status endpoint sees it.
CREATE TABLE oidc_follow_waits (
    id          TEXT PRIMARY KEY,
    pending_id  TEXT NOT NULL REFERENCES oidc_pending_authorizations (id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    openid      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    followed_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX oidc_follow_waits_account_openid ON oidc_follow_waits (account_id, openid);
CREATE INDEX oidc_follow_waits_expires_at ON oidc_follow_waits (expires_at);

-- Push nonces seen within the timestamp window: a captured signature (which does not cover
-- the body in plain mode) cannot be replayed with another body, on any replica.
CREATE TABLE push_nonces (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    push_time  BIGINT NOT NULL,
    nonce      TEXT NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, push_time, nonce)
);
CREATE INDEX push_nonces_seen_at ON push_nonces (seen_at);
