-- Indexes for the dashboard's account lists at 100,000 accounts and more.
-- Accounts in one token state, in id order: the "needs attention" list and the state
-- filter read only the matching rows, and the platform's counts by state read this index
-- alone.
CREATE INDEX core_tokens_state_account ON core_tokens (state, account_id);
-- Disabled accounts (few) are found without reading the others.
CREATE INDEX accounts_state ON accounts (state);
-- A search in names reads the names in id order from this index instead of every row.
CREATE INDEX accounts_id_name ON accounts (id, name);
