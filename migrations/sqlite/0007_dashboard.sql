-- The dashboard's sign-in: one-time password links, TOTP second factors and the stage of a
-- session. Same file name in migrations/postgres.

-- A one-time link that lets a person set their password: the first operator's setup link
-- (printed by `wxhub serve` while no operator exists), `wxhub operator create`, and an
-- operator's invitation of an owner. Only a hash of the link's token is stored.
CREATE TABLE password_links (
    -- hex SHA-256 of the token in the link
    id         TEXT PRIMARY KEY NOT NULL,
    purpose    TEXT NOT NULL CHECK (purpose IN ('setup', 'invitation')),
    -- whose password it sets; NULL for the first operator's setup link, which creates the
    -- person with the email given on the page
    user_id    TEXT REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'operator')),
    -- who made it: a user id, `cli` or `system`
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- set once, when the link is used; a used link never works again
    used_at    INTEGER
) STRICT;
CREATE INDEX password_links_user_id ON password_links (user_id);

-- A person's TOTP second factor. The shared secret is sealed by the vault under a data key of
-- its own (bound to `totp:{user_id}`), which master-key rotation re-wraps like every other.
CREATE TABLE user_totp (
    user_id        TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    wrapped_dek    BLOB NOT NULL,
    dek_kek_id     TEXT NOT NULL,
    -- vault ciphertext of the shared secret, under the data key above
    secret         BLOB NOT NULL,
    -- NULL while the person enrols (the secret is shown but no code was entered yet)
    confirmed_at   INTEGER,
    -- the last 30-second step a code was accepted for: a code is accepted once
    last_used_step INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
) STRICT;

-- A session is signed in fully, waits for the second factor, or may only enrol one (an
-- operator without TOTP where it is required).
ALTER TABLE sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full'
    CHECK (stage IN ('second_factor', 'enrol', 'full'));
