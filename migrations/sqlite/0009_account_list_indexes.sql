-- Indexes for the dashboard's account lists at 100,000 accounts and more.
-- Accounts in one token state, in id order: the "needs attention" list and the state
-- filter read only the matching rows instead of every account.
CREATE INDEX core_tokens_state_account ON core_tokens (state, account_id);
