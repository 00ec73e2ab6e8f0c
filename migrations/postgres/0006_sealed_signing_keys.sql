-- Each signing key's wrapped data key, and the id of the master key that wraps it, move out of
-- the private_key blob into columns of their own, as account_secrets keeps them, so master-key
-- rotation sees signing keys too (vault status, rewrap, drop-key, the keyring checks at start
-- and on reload). Same file name in migrations/sqlite.
--
-- Until now private_key held a 2-byte big-endian length n, then the wrapped data key (n bytes:
-- version byte, key id length L, the L-byte master key id, nonce, ciphertext, tag), then the
-- private key's ciphertext under that data key. It now holds that ciphertext alone.
ALTER TABLE oidc_signing_keys
    -- the key's own data key, wrapped under a master key (vault record)
    ADD COLUMN wrapped_dek BYTEA,
    -- the id of that master key (also inside wrapped_dek), so rotation can find keys by it
    ADD COLUMN dek_kek_id TEXT;
-- Every expression reads the row as it was before this UPDATE.
UPDATE oidc_signing_keys SET
    wrapped_dek = substring(private_key FROM 3
                            FOR get_byte(private_key, 0) * 256 + get_byte(private_key, 1)),
    dek_kek_id = convert_from(substring(private_key FROM 5 FOR get_byte(private_key, 3)), 'UTF8'),
    private_key = substring(private_key
                            FROM 3 + get_byte(private_key, 0) * 256 + get_byte(private_key, 1));
ALTER TABLE oidc_signing_keys
    ALTER COLUMN wrapped_dek SET NOT NULL,
    ALTER COLUMN dek_kek_id SET NOT NULL;
