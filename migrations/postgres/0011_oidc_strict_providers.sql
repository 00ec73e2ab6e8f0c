-- OpenID Connect as strict relying-party libraries expect it. Same file name in
-- migrations/sqlite.

-- The ID-token signature algorithm of each client (the OIDC dynamic-registration name
-- `id_token_signed_response_alg`). RS256 is the algorithm every OIDC library accepts by
-- default (OIDC Core §15.1, Discovery §3), so new clients get it; clients registered before
-- were given ES256 tokens and keep them, so their libraries keep verifying.
ALTER TABLE oidc_clients ADD COLUMN id_token_signed_response_alg TEXT NOT NULL DEFAULT 'RS256'
    CHECK (id_token_signed_response_alg IN ('RS256', 'ES256'));
UPDATE oidc_clients SET id_token_signed_response_alg = 'ES256';

-- Signing keys: one active and one next key per algorithm (there was one of each in all).
DROP INDEX oidc_signing_keys_one_per_live_status;
CREATE UNIQUE INDEX oidc_signing_keys_one_per_algorithm_and_live_status
    ON oidc_signing_keys (algorithm, status) WHERE status IN ('next', 'active');

-- `prompt=none` (OIDC Core §3.1.2.1): the login must not show any page; where one would be
-- needed (the follow page), the client gets `interaction_required` instead.
ALTER TABLE oidc_pending_authorizations ADD COLUMN prompt_none BOOLEAN NOT NULL DEFAULT FALSE;
