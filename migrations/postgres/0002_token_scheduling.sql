-- Stable-token force refreshes are limited by WeChat to 20 per day, at least 30 s apart
-- (wechat-api.md §2). They are counted per account in the database, like the upstream token
-- calls, so every replica sees one budget.
ALTER TABLE core_tokens ADD COLUMN force_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE core_tokens ADD COLUMN force_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE core_tokens ADD COLUMN last_force_at BIGINT;
