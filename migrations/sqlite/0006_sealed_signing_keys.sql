-- Each signing key's wrapped data key, and the id of the master key that wraps it, move out of
-- the private_key blob into columns of their own, as account_secrets keeps them, so master-key
-- rotation sees signing keys too (vault status, rewrap, drop-key, the keyring checks at start
-- and on reload). Same file name in migrations/postgres.
--
-- Until now private_key held a 2-byte big-endian length n, then the wrapped data key (n bytes:
-- version byte, key id length L, the L-byte master key id, nonce, ciphertext, tag), then the
-- private key's ciphertext under that data key. It now holds that ciphertext alone. SQLite has
-- no byte-to-integer function, so the bytes are read through hex(). It cannot add NOT NULL
-- columns without a default either, so the table is rebuilt.
CREATE TABLE oidc_signing_keys_new (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    -- the key's own data key, wrapped under a master key (vault record)
    wrapped_dek BLOB NOT NULL,
    -- the id of that master key (also inside wrapped_dek), so rotation can find keys by it
    dek_kek_id  TEXT NOT NULL,
    -- vault ciphertext of the private key, under its data key
    private_key BLOB NOT NULL,
    public_jwk  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('next', 'active', 'retired')),
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;
INSERT INTO oidc_signing_keys_new (kid, algorithm, wrapped_dek, dek_kek_id, private_key,
                                   public_jwk, status, created_at, retired_at)
    SELECT kid, algorithm,
           substr(private_key, 3, n),
           CAST(substr(private_key, 5, kek_id_len) AS TEXT),
           substr(private_key, 3 + n),
           public_jwk, status, created_at, retired_at
    FROM (
        SELECT *,
               -- bytes 0-1: n
               (instr('0123456789ABCDEF', substr(h, 1, 1)) - 1) * 4096
                   + (instr('0123456789ABCDEF', substr(h, 2, 1)) - 1) * 256
                   + (instr('0123456789ABCDEF', substr(h, 3, 1)) - 1) * 16
                   + (instr('0123456789ABCDEF', substr(h, 4, 1)) - 1) AS n,
               -- byte 3: L, the master key id's length
               (instr('0123456789ABCDEF', substr(h, 7, 1)) - 1) * 16
                   + (instr('0123456789ABCDEF', substr(h, 8, 1)) - 1) AS kek_id_len
        FROM (SELECT *, hex(substr(private_key, 1, 4)) AS h FROM oidc_signing_keys)
    );
DROP TABLE oidc_signing_keys;
ALTER TABLE oidc_signing_keys_new RENAME TO oidc_signing_keys;
-- At most one active and at most one next key, on every replica (as in 0004).
CREATE UNIQUE INDEX oidc_signing_keys_one_per_live_status ON oidc_signing_keys (status)
    WHERE status IN ('next', 'active');
