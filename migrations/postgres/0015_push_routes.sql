-- Push routes: the owner's own servers that keep receiving the account's pushes through wxhub
-- (crates/gateway/src/routes.rs). Same file name in migrations/sqlite.

-- One route per target, in `position` order. A route matches a push on `MsgType`, `Event`
-- (both exact, case-insensitive; NULL: any) and an `EventKey` prefix (NULL: any). `delivery`
-- 'reply': forwarded synchronously and its answer returned to WeChat (at most one per push);
-- 'copy': delivered from the durable queue below. The route's own Token and EncodingAESKey
-- are vault ciphertext under the account's data key (bound to the route id); both NULL on the
-- account's relay route (`relay`), which signs with the account's own push credentials as
-- the former `push_relay_url` did.
CREATE TABLE push_routes (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    position               BIGINT NOT NULL,
    target_url             TEXT NOT NULL,
    match_msg_type         TEXT,
    match_event            TEXT,
    match_event_key_prefix TEXT,
    delivery               TEXT NOT NULL CHECK (delivery IN ('reply', 'copy')),
    push_mode              TEXT CHECK (push_mode IN ('plain', 'compatible', 'safe')),
    token                  BYTEA,
    encoding_aes_key       BYTEA,
    relay                  BOOLEAN NOT NULL DEFAULT FALSE,
    enabled                BOOLEAN NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    CHECK (relay OR token IS NOT NULL)
);
CREATE INDEX push_routes_account ON push_routes (account_id, position);
CREATE UNIQUE INDEX push_routes_one_relay ON push_routes (account_id) WHERE relay;

-- Copies waiting for delivery to a copy route. WeChat has been answered and will not resend
-- the push, so its plain message XML is kept (vault ciphertext bound to the copy id) until it
-- is delivered (the row is deleted) or dead-lettered (`state` 'dead', kept for a re-send).
-- One copy per route and push (`dedup_key`, as in received_pushes). A worker claims a due copy
-- with a lease (`lease_until`), so replicas share the queue and a killed one's copies are
-- taken over when the lease ends.
CREATE TABLE push_copies (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    route_id        TEXT NOT NULL REFERENCES push_routes (id) ON DELETE CASCADE,
    dedup_key       TEXT NOT NULL,
    openid          TEXT,
    body            BYTEA NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (route_id, dedup_key)
);
CREATE INDEX push_copies_due ON push_copies (state, next_attempt_at);
CREATE INDEX push_copies_order ON push_copies (route_id, openid, state, id);
CREATE INDEX push_copies_account ON push_copies (account_id, state);

-- The reply a reply route gave to a push, so WeChat's retries of that push (on any replica)
-- wait for the one call or answer from it instead of calling the route again. `reply` is the
-- plain reply XML (vault ciphertext), NULL for `success`.
CREATE TABLE push_replies (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    dedup_key   TEXT NOT NULL,
    route_id    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'done')),
    reply       BYTEA,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (account_id, dedup_key)
);
CREATE INDEX push_replies_started_at ON push_replies (started_at);

-- The last failures of each route, with their cause (no secrets, no message content).
CREATE TABLE push_route_failures (
    id         TEXT PRIMARY KEY,
    route_id   TEXT NOT NULL REFERENCES push_routes (id) ON DELETE CASCADE,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    at         BIGINT NOT NULL,
    copy_id    TEXT,
    cause      TEXT NOT NULL
);
CREATE INDEX push_route_failures_route ON push_route_failures (route_id, at);

-- The relay URL becomes the account's relay route (a copy route of every push, signed with
-- the account's own credentials), so nothing configured before is lost. Done here rather than
-- at start-up: it needs no secret, and runs exactly once whichever replica migrates first.
INSERT INTO push_routes (id, account_id, position, target_url, delivery, relay, enabled,
                         created_at, updated_at)
    SELECT 'relay-' || account_id, account_id, 0, push_relay_url, 'copy', TRUE, TRUE, updated_at,
           updated_at
    FROM gateway_account_settings WHERE push_relay_url IS NOT NULL;
UPDATE gateway_account_settings SET push_relay_url = NULL WHERE push_relay_url IS NOT NULL;
