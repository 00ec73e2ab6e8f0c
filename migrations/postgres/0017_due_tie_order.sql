-- The refresh engine lists due accounts ordered by their due time and then by account id
-- (`Store::list_due_refreshes`, 1,000 at a time). With only the due time in the index, every
-- account due at the same moment had to be read and sorted before the LIMIT, and after a
-- bulk import all of them are: a cold refresh of a million accounts read a million rows per
-- page of 1,000 (3.83x the ideal time, 1,292 us of CPU per refresh, against 1.53x and 569 us
-- at 100,000). With the id as the index's last column the scan is in the statement's order
-- and stops after the page. Same file name in migrations/postgres.
DROP INDEX core_tokens_next_refresh_at;
CREATE INDEX core_tokens_next_refresh_at ON core_tokens (next_refresh_at, account_id);
