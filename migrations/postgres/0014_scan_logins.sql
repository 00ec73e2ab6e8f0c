-- Logging in on a PC by scanning a parametric QR code with WeChat (docs/wechat-2.md §4.2), and
-- a per-login QR code on the in-WeChat follow page. Same file name in migrations/sqlite.

-- Per website: where a login happens — 'auto' (the scan page outside WeChat's browser,
-- WeChat's authorize page inside it), or always one of them — and whether a scan must be
-- confirmed in WeChat before the PC is logged in (NULL: the default, on for accounts whose
-- pushes are in plain mode, where nothing signs the scanner's openid).
ALTER TABLE oidc_clients ADD COLUMN login_surface TEXT NOT NULL DEFAULT 'auto'
    CHECK (login_surface IN ('auto', 'wechat', 'scan'));
ALTER TABLE oidc_clients ADD COLUMN scan_confirmation BOOLEAN;

-- A PC login waiting for its QR code to be scanned. Found by the hash of the token in the
-- scan page's URL (bound to the login cookie through its pending authorization) and, when the
-- push arrives, by the code's ticket — which must come with the code's scene. The current
-- code's columns are replaced when the page asks for a fresh code; a push for a replaced
-- code finds nothing.
CREATE TABLE oidc_scan_logins (
    id                 TEXT PRIMARY KEY,
    pending_id         TEXT NOT NULL REFERENCES oidc_pending_authorizations (id) ON DELETE CASCADE,
    account_id         TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    needs_confirmation BOOLEAN NOT NULL,
    scene              TEXT UNIQUE,
    ticket             TEXT,
    qr_url             TEXT,
    qr_expires_at      BIGINT,
    qr_count           BIGINT NOT NULL DEFAULT 0,
    openid             TEXT,
    scanned_at         BIGINT,
    new_follower       BOOLEAN,
    scan_authenticated BOOLEAN,
    confirm_state      TEXT UNIQUE,
    confirmed_at       BIGINT,
    finished_at        BIGINT
);
CREATE INDEX oidc_scan_logins_ticket ON oidc_scan_logins (account_id, ticket);
CREATE INDEX oidc_scan_logins_pending_id ON oidc_scan_logins (pending_id);
CREATE INDEX oidc_scan_logins_expires_at ON oidc_scan_logins (expires_at);

-- The follow page's own QR code, so the follow push names the waiting login by its scene.
ALTER TABLE oidc_follow_waits ADD COLUMN scene TEXT;
ALTER TABLE oidc_follow_waits ADD COLUMN ticket TEXT;
ALTER TABLE oidc_follow_waits ADD COLUMN qr_expires_at BIGINT;
CREATE INDEX oidc_follow_waits_ticket ON oidc_follow_waits (account_id, ticket);
