-- wxhub schema, PostgreSQL dialect. Keep in step with migrations/sqlite/0001_initial_schema.sql:
-- same tables, columns, constraints and indexes; only the types differ
-- (BIGINT and BOOLEAN where SQLite has INTEGER, BYTEA where it has BLOB). Every time is
-- integer Unix milliseconds.

-- People: dashboard users and their sessions.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    -- the lower-cased email, computed by the store, so uniqueness is case-insensitive
    -- the same way on both databases
    email_key     TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'operator')),
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    -- a hash of the session token; the token itself is never stored
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Accounts (tenants) and their encrypted secrets.
CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    owner_user_id TEXT NOT NULL REFERENCES users (id),
    appid         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('service', 'subscription')),
    verified      BOOLEAN NOT NULL,
    token_mode    TEXT NOT NULL CHECK (token_mode IN ('token', 'stable_token')),
    state         TEXT NOT NULL CHECK (state IN ('active', 'disabled')),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX accounts_owner_user_id ON accounts (owner_user_id);

-- Opaque vault output: the wrapped DEK and field ciphertexts. Deleting the account deletes this
-- row (crypto-shredding).
CREATE TABLE account_secrets (
    account_id       TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    wrapped_dek      BYTEA NOT NULL,
    dek_kek_id       TEXT NOT NULL,
    appsecret        BYTEA NOT NULL,
    push_token       BYTEA,
    encoding_aes_key BYTEA,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX account_secrets_dek_kek_id ON account_secrets (dek_kek_id);

-- Core access_token per account, with the refresh lease and its fence (generation).
CREATE TABLE core_tokens (
    account_id           TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    token                BYTEA,
    issued_at            BIGINT,
    expires_at           BIGINT,
    generation           BIGINT NOT NULL DEFAULT 0,
    lease_holder         TEXT,
    lease_until          BIGINT,
    next_refresh_at      BIGINT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('pending', 'healthy', 'retrying',
                             'needs_attention', 'quota_exhausted')),
    last_error_code      BIGINT,
    last_error_message   TEXT,
    last_error_ip        TEXT,
    failure_count        BIGINT NOT NULL DEFAULT 0,
    upstream_calls_today BIGINT NOT NULL DEFAULT 0,
    -- the day upstream_calls_today counts for (a day number chosen by the caller)
    quota_day            BIGINT NOT NULL DEFAULT 0,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX core_tokens_next_refresh_at ON core_tokens (next_refresh_at);

-- End users (WeChat users known to an account).
CREATE TABLE end_users (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    openid          TEXT NOT NULL,
    unionid         TEXT,
    nickname        TEXT,
    avatar_url      TEXT,
    subscribed      BOOLEAN NOT NULL,
    subscribe_time  BIGINT,
    subscribe_scene TEXT,
    qr_scene        TEXT,
    first_login_at  BIGINT,
    last_login_at   BIGINT,
    created_via     TEXT NOT NULL CHECK (created_via IN ('push', 'login_base', 'login_userinfo')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (account_id, openid)
);

-- OpenID Connect provider state.
CREATE TABLE oidc_clients (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    client_id          TEXT NOT NULL UNIQUE,
    -- NULL for public clients (PKCE only)
    client_secret_hash TEXT,
    -- JSON array of exact redirect URIs
    redirect_uris      TEXT NOT NULL,
    login_mode         TEXT NOT NULL CHECK (login_mode IN ('follow_required', 'userinfo')),
    name               TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX oidc_clients_account_id ON oidc_clients (account_id);

CREATE TABLE oidc_pending_authorizations (
    id                    TEXT PRIMARY KEY,
    oidc_client_id        TEXT NOT NULL REFERENCES oidc_clients (id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    state                 TEXT,
    nonce                 TEXT,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    scope                 TEXT NOT NULL,
    -- the state sent to WeChat's authorize page, to find this row on the way back
    wechat_state          TEXT NOT NULL UNIQUE,
    status                TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'denied')),
    openid                TEXT,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL
);
CREATE INDEX oidc_pending_authorizations_expires_at ON oidc_pending_authorizations (expires_at);

CREATE TABLE oidc_auth_codes (
    code_hash             TEXT PRIMARY KEY,
    oidc_client_id        TEXT NOT NULL REFERENCES oidc_clients (id) ON DELETE CASCADE,
    account_id            TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    redirect_uri          TEXT NOT NULL,
    openid                TEXT NOT NULL,
    nonce                 TEXT,
    code_challenge        TEXT,
    code_challenge_method TEXT,
    scope                 TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT NOT NULL,
    used_at               BIGINT
);
CREATE INDEX oidc_auth_codes_expires_at ON oidc_auth_codes (expires_at);

CREATE TABLE oidc_access_tokens (
    token_hash     TEXT PRIMARY KEY,
    -- the code this token was issued for; a second redemption of that code revokes it.
    -- Not a foreign key: expired codes are purged while their tokens may still be live.
    code_hash      TEXT,
    oidc_client_id TEXT NOT NULL REFERENCES oidc_clients (id) ON DELETE CASCADE,
    account_id     TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    openid         TEXT NOT NULL,
    scope          TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT
);
CREATE INDEX oidc_access_tokens_code_hash ON oidc_access_tokens (code_hash);
CREATE INDEX oidc_access_tokens_expires_at ON oidc_access_tokens (expires_at);

CREATE TABLE oidc_signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    -- vault ciphertext of the private key
    private_key BYTEA NOT NULL,
    public_jwk  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- API keys for tenant backends (token API, proxy).
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL UNIQUE,
    label        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_account_id ON api_keys (account_id);

-- Received pushes, for deduplicating WeChat's retries and for the dashboard.
CREATE TABLE received_pushes (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    dedup_key   TEXT NOT NULL,
    msg_type    TEXT NOT NULL,
    event       TEXT,
    openid      TEXT,
    received_at BIGINT NOT NULL,
    summary     TEXT NOT NULL,
    PRIMARY KEY (account_id, dedup_key)
);
CREATE INDEX received_pushes_received_at ON received_pushes (received_at);

-- Audit log. No foreign keys: entries outlive what they describe.
CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    at      BIGINT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Hourly statistics counters.
CREATE TABLE stats_counters (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- Unix milliseconds of the start of the hour
    hour       BIGINT NOT NULL,
    metric     TEXT NOT NULL,
    value      BIGINT NOT NULL,
    PRIMARY KEY (account_id, hour, metric)
);
