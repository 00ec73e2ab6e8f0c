//! Waiting: a request that needs a token the cache does not have — the first one, one that
//! expired while healthy, or a replacement for one a backend reported rejected — runs the
//! refresh itself (single flight) or waits for the replica that holds the lease, bounded by
//! [`crate::SchedulerConfig::first_token_wait`].

use std::time::Duration;

use store::accounts::AccountState;
use store::tokens::TokenState;
use wechat::AccessToken;

use super::{Outcome, Reason};
use crate::cache::{CurrentToken, Entry};
use crate::{TokenError, TokenService};

impl TokenService {
    /// First token, or a cached token that expired while healthy: fetch (single flight) and
    /// wait, bounded.
    pub(crate) async fn fetch_missing(&self, account_id: &str) -> Result<CurrentToken, TokenError> {
        let wait = self.inner.config.first_token_wait;
        let work = async {
            let entry = match self.inner.cache.get(account_id) {
                Some(entry) => entry,
                None => {
                    self.reload_account(account_id).await?;
                    self.inner
                        .cache
                        .get(account_id)
                        .ok_or(TokenError::UnknownAccount)?
                }
            };
            if let Some(token) = self.cached(account_id) {
                return Ok(token);
            }
            self.unavailable_unless_fetchable(&entry)?;
            let mut changes = self.inner.cache.subscribe();
            loop {
                let outcome = {
                    let flight = self.flight(account_id);
                    let _guard = flight.lock().await;
                    if let Some(token) = self.cached(account_id) {
                        return Ok(token);
                    }
                    self.refresh_locked(account_id, Reason::Missing).await?
                };
                if let Some(token) = self.cached(account_id) {
                    return Ok(token);
                }
                if let Some(entry) = self.inner.cache.get(account_id) {
                    self.unavailable_unless_fetchable(&entry)?;
                }
                if matches!(outcome, Outcome::Busy | Outcome::Stale) {
                    // Another replica is fetching: wait for its token to reach the cache
                    // (notification) or for its lease to lapse.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
                    self.reload_account(account_id).await?;
                } else {
                    return Err(TokenError::Pending);
                }
            }
        };
        match tokio::time::timeout(wait, work).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Pending),
        }
    }

    fn unavailable_unless_fetchable(&self, entry: &Entry) -> Result<(), TokenError> {
        if entry.account_state != AccountState::Active {
            return Err(TokenError::AccountDisabled);
        }
        match entry.state {
            TokenState::Pending | TokenState::Healthy => Ok(()),
            state => Err(TokenError::Unavailable {
                state,
                code: entry.error_code,
                reason: entry
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no valid token".to_owned()),
                retry_at: None,
            }),
        }
    }

    pub(crate) async fn refresh_rejected(
        &self,
        account_id: &str,
        rejected: &AccessToken,
    ) -> Result<CurrentToken, TokenError> {
        let is_current = |svc: &Self| {
            svc.inner
                .cache
                .get(account_id)
                .and_then(|e| e.token.clone())
                .is_some_and(|t| t.access_token == *rejected)
        };
        if self.inner.cache.get(account_id).is_none() {
            self.reload_account(account_id).await?;
        }
        if !is_current(self) {
            return self.current(account_id).await;
        }
        let wait = self.inner.config.first_token_wait;
        let mut changes = self.inner.cache.subscribe();
        let work = async {
            loop {
                let outcome = {
                    let flight = self.flight(account_id);
                    let _guard = flight.lock().await;
                    // Compare-and-swap: while we waited, someone may have replaced it.
                    if !is_current(self) {
                        None
                    } else {
                        Some(self.refresh_locked(account_id, Reason::Rejected).await?)
                    }
                };
                match outcome {
                    None | Some(Outcome::Refreshed | Outcome::Unneeded) => {
                        if !is_current(self)
                            && let Some(token) = self.cached(account_id)
                        {
                            return Ok(token);
                        }
                        let entry = self
                            .inner
                            .cache
                            .get(account_id)
                            .ok_or(TokenError::UnknownAccount)?;
                        return Err(TokenError::Unavailable {
                            state: entry.state,
                            code: entry.error_code,
                            reason: entry.reason.clone().unwrap_or_else(|| {
                                "the rejected token is still the newest wxhub has".to_owned()
                            }),
                            retry_at: None,
                        });
                    }
                    Some(Outcome::Failed) => {
                        let entry = self
                            .inner
                            .cache
                            .get(account_id)
                            .ok_or(TokenError::UnknownAccount)?;
                        return Err(TokenError::Unavailable {
                            state: entry.state,
                            code: entry.error_code,
                            reason: entry
                                .reason
                                .clone()
                                .unwrap_or_else(|| "the refresh failed".to_owned()),
                            retry_at: None,
                        });
                    }
                    Some(Outcome::Busy | Outcome::Stale) => {
                        let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed())
                            .await;
                        self.reload_account(account_id).await?;
                    }
                }
            }
        };
        match tokio::time::timeout(wait, work).await {
            Ok(result) => result,
            Err(_) => Err(TokenError::Pending),
        }
    }
}
