-- What the dashboard shows of an AppSecret after entry: its last four characters, so an
-- owner can tell which secret is stored without it ever being shown again. Kept with the
-- ciphertexts, so deleting an account's secrets (crypto-shredding) deletes it too. NULL for
-- secrets stored before it was kept. Same file name in migrations/postgres.
ALTER TABLE account_secrets ADD COLUMN appsecret_hint TEXT;
