-- The tenancy layer: audit entries by account, the change feed that tells every replica what
-- the tenancy layer changed, and API key scopes. Same file name in migrations/postgres.

-- Audit entries are filtered by account (the dashboard's per-account history); `target` names
-- the object within it (a key id, a client id). Older entries have no account.
ALTER TABLE audit_log ADD COLUMN account_id TEXT;
CREATE INDEX audit_log_account_id ON audit_log (account_id, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);

-- One row per change that other replicas must apply (an account disabled, a key revoked…),
-- written in the transaction of the change. Readers poll by time with an overlap and skip the
-- sequence numbers they have seen, so a row that commits late is not missed. No foreign key:
-- the row that says "deleted" outlives the account. Swept after a day.
CREATE TABLE account_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('account', 'credentials', 'api_keys', 'websites',
                                             'settings', 'refresh')),
    at         INTEGER NOT NULL
) STRICT;
CREATE INDEX account_changes_at ON account_changes (at);

-- What an API key may do: a comma-separated subset of token, report, proxy; and, for the
-- proxy, an optional JSON array of the WeChat paths it may call (NULL: any).
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'token,report,proxy';
ALTER TABLE api_keys ADD COLUMN proxy_paths TEXT;

-- When a website (OIDC client) was last edited or had its secret rotated.
ALTER TABLE oidc_clients ADD COLUMN updated_at INTEGER;
