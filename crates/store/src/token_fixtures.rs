//! Bulk token rows for benchmarks (`test-fixtures` only): a valid token for a million
//! accounts, where the refresh path (a fenced write per account, after a WeChat call) would
//! take longer than the start-up that is measured.

use crate::db::BeginWrite;
use crate::{Store, StoreError};

/// One account's sealed token, for [`Store::fill_core_tokens`].
pub struct FilledToken<'a> {
    pub account_id: &'a str,
    /// Vault ciphertext, as the scheduler seals it.
    pub token: &'a [u8],
    pub issued_at: i64,
    pub expires_at: i64,
    pub next_refresh_at: i64,
}

impl Store {
    /// Stores each token as a successful refresh would (state healthy, generation 1), in one
    /// transaction of multi-row statements. Returns the rows updated.
    pub async fn fill_core_tokens(
        &self,
        tokens: &[FilledToken<'_>],
        now: i64,
    ) -> Result<u64, StoreError> {
        const ROWS_PER_STATEMENT: usize = 1000;
        on_backend!(self, |pool, _d| {
            let mut tx = pool.begin_write().await?;
            let mut updated = 0;
            for chunk in tokens.chunks(ROWS_PER_STATEMENT) {
                let mut sql =
                    sqlx::QueryBuilder::new("WITH v (id, token, issued_at, expires_at, due) AS (");
                sql.push_values(chunk, |mut row, t| {
                    row.push_bind(t.account_id)
                        .push_bind(t.token)
                        .push_bind(t.issued_at)
                        .push_bind(t.expires_at)
                        .push_bind(t.next_refresh_at);
                });
                sql.push(
                    ") UPDATE core_tokens SET token = v.token, issued_at = v.issued_at, \
                     expires_at = v.expires_at, next_refresh_at = v.due, state = 'healthy', \
                     generation = 1, failure_count = 0, updated_at = ",
                );
                sql.push_bind(now);
                sql.push(" FROM v WHERE core_tokens.account_id = v.id");
                updated += sql.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(updated)
        })
    }
}
