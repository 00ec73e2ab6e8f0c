-- Login gateway hardening (security review). Same file name in migrations/postgres.

-- Per-account settings: the push mode configured in WeChat's console (NULL: safe when the
-- account has an EncodingAESKey, else plain), and what the follow page shows: the account's
-- QR code image as downloaded from the console (https) and an optional profile link.
ALTER TABLE gateway_account_settings ADD COLUMN push_mode TEXT
    CHECK (push_mode IN ('plain', 'compatible', 'safe'));
ALTER TABLE gateway_account_settings ADD COLUMN follow_qr_url TEXT;
ALTER TABLE gateway_account_settings ADD COLUMN follow_link TEXT;

-- The login is bound to the browser that started it: the SHA-256 of a random cookie value
-- set at /authorize, compared at every later step (login CSRF).
ALTER TABLE oidc_pending_authorizations ADD COLUMN browser_binding_hash TEXT;

-- Whether the wait's followed_at came from a push whose body was authenticated
-- (msg_signature over the encrypted message). A plain-mode push is not: the follow is
-- re-checked with user/info before the login continues.
ALTER TABLE oidc_follow_waits ADD COLUMN follow_verified INTEGER NOT NULL DEFAULT 0
    CHECK (follow_verified IN (0, 1));
CREATE INDEX oidc_follow_waits_pending_id ON oidc_follow_waits (pending_id);

-- The message a (timestamp, nonce) was used for: the same pair with the same message is
-- WeChat retrying (acknowledged), with another message a forgery (refused).
ALTER TABLE push_nonces ADD COLUMN dedup_key TEXT;

-- The event time (CreateTime, Unix ms) of the subscription state stored, so a delayed
-- subscribe cannot overwrite a later unsubscribe.
ALTER TABLE end_users ADD COLUMN subscription_changed_at INTEGER;

-- Signing keys gain 'next' (published in the JWKS before it signs). SQLite cannot alter a
-- CHECK constraint, so the table is rebuilt.
CREATE TABLE oidc_signing_keys_new (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    -- vault ciphertext of the private key
    private_key BLOB NOT NULL,
    public_jwk  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('next', 'active', 'retired')),
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;
INSERT INTO oidc_signing_keys_new (kid, algorithm, private_key, public_jwk, status, created_at,
                                   retired_at)
    SELECT kid, algorithm, private_key, public_jwk, status, created_at, retired_at
    FROM oidc_signing_keys;
DROP TABLE oidc_signing_keys;
ALTER TABLE oidc_signing_keys_new RENAME TO oidc_signing_keys;

-- Before the unique index: keep only the newest active key active (a past race may have
-- left two).
UPDATE oidc_signing_keys SET status = 'retired', retired_at = created_at
    WHERE status = 'active' AND kid <> (
        SELECT kid FROM oidc_signing_keys WHERE status = 'active'
        ORDER BY created_at DESC, kid DESC LIMIT 1);
-- At most one active and at most one next key, on every replica.
CREATE UNIQUE INDEX oidc_signing_keys_one_per_live_status ON oidc_signing_keys (status)
    WHERE status IN ('next', 'active');
