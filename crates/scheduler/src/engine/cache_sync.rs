//! Cache sync: database rows into this replica's token cache — one account after a
//! notification or a miss ([`TokenService::reload_account`]), every account at start-up and
//! periodically ([`TokenService::reload_all`]). Decrypts a row's token only when the cache does
//! not already hold it.

use store::tokens::TokenCacheRow;

use super::EngineEvent;
use crate::cache::{CurrentToken, Entry};
use crate::{TokenError, TokenService};

impl TokenService {
    fn open_row_token(&self, row: &TokenCacheRow) -> Result<Option<CurrentToken>, TokenError> {
        let (Some(ciphertext), Some(issued_at), Some(expires_at)) =
            (&row.token, row.issued_at, row.expires_at)
        else {
            return Ok(None);
        };
        let vault = self.inner.vault.for_wrapped_dek(&row.wrapped_dek);
        let access_token =
            accounts::open_core_token(&vault, &row.account_id, &row.wrapped_dek, ciphertext)?;
        Ok(Some(CurrentToken {
            access_token,
            issued_at,
            expires_at,
            generation: row.generation,
        }))
    }

    /// Puts a database row into the cache (decrypting its token). Returns whether a waiter
    /// would see a difference (the cache then woke the account's waiters).
    fn put_row(&self, row: &TokenCacheRow) -> Result<bool, TokenError> {
        // The cached token keeps the generation it was first seen with (a failed claim bumps
        // the row's generation without changing the token).
        let mut token = self.open_row_token(row)?;
        let cached = self.inner.cache.get(&row.account_id);
        if let (Some(token), Some(old)) = (token.as_mut(), cached.as_deref())
            && old.token_is(&token.access_token)
            && let Some(generation) = old.token_generation()
        {
            token.generation = generation;
        }
        let adopted = token.as_ref().map(|t| t.generation);
        let changed = cached.map(|e| e.token_generation()) != Some(adopted);
        let seen = self.inner.cache.put(
            &row.account_id,
            Entry::new(
                &row.appid,
                row.token_mode,
                row.account_state,
                token,
                row.state,
                row.last_error_code,
                row.last_error_message.clone(),
            ),
        );
        if changed && let Some(generation) = adopted {
            self.emit(EngineEvent::Adopted {
                account_id: row.account_id.clone(),
                generation,
            });
        }
        Ok(seen)
    }

    /// Reloads one account's row into the cache (after a notification, or on a cache miss).
    pub async fn reload_account(&self, account_id: &str) -> Result<(), TokenError> {
        self.reload_row(account_id).await.map(|_| ())
    }

    /// [`TokenService::reload_account`], returning the row's lease: `Some((holder, until))`
    /// while a holder has it (by the row; it may have lapsed at the clock's time).
    pub(super) async fn reload_row(
        &self,
        account_id: &str,
    ) -> Result<Option<(String, i64)>, TokenError> {
        let row = self
            .inner
            .store
            .get_token_cache_row(account_id)
            .await?
            .ok_or(TokenError::UnknownAccount)?;
        self.put_row(&row)?;
        Ok(row.lease_holder.zip(row.lease_until))
    }

    /// Reloads a row another replica announced. Waiters wake even when the cache shows no
    /// difference: the announcement may be of a lease given back, which they wait for.
    pub(super) async fn reload_announced(&self, account_id: &str) -> Result<(), TokenError> {
        let row = self
            .inner
            .store
            .get_token_cache_row(account_id)
            .await?
            .ok_or(TokenError::UnknownAccount)?;
        if !self.put_row(&row)? {
            self.inner.cache.signal(account_id);
        }
        Ok(())
    }

    /// Reloads every account's row into the cache: at start-up, and periodically as the
    /// fallback for lost notifications. Rows whose token the cache already holds are not
    /// decrypted again. The next page is read while this one is decrypted (on SQLite the read
    /// runs on the driver's own thread), so with a million accounts start-up takes about the
    /// longer of the two instead of their sum.
    pub async fn reload_all(&self) -> Result<usize, TokenError> {
        const PAGE: u32 = 1000;
        let fetch = |after: Option<String>| {
            let store = self.inner.store.clone();
            tokio::spawn(async move { store.list_token_cache_rows(after.as_deref(), PAGE).await })
        };
        let mut next = Some(fetch(None));
        let mut count = 0;
        while let Some(reading) = next.take() {
            let page = match reading.await {
                Ok(page) => page?,
                // Nothing aborts the read; a panic in it is passed on.
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
            if page.len() == PAGE as usize {
                next = Some(fetch(page.last().map(|r| r.account_id.clone())));
            }
            for row in &page {
                let unchanged = self.inner.cache.get(&row.account_id).is_some_and(|e| {
                    e.state == row.state
                        && e.account_state == row.account_state
                        && e.token_times() == row.issued_at.zip(row.expires_at)
                });
                if !unchanged && let Err(error) = self.put_row(row) {
                    tracing::error!(account_id = %row.account_id, %error, "cannot load an account's token");
                }
                count += 1;
            }
        }
        Ok(count)
    }
}
