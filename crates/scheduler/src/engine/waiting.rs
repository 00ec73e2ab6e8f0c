//! Waiting: a request that needs a token the cache does not have — the first one, one that
//! expired while healthy, or a replacement for one a backend reported rejected — runs the
//! refresh itself (single flight) or waits for the replica that holds the lease, bounded by
//! [`crate::SchedulerConfig::first_token_wait`].
//!
//! A waiter never polls the database. When its claim finds the lease held, it reads the row
//! once (adopting whatever token it holds, and learning until when the lease runs) and then
//! sleeps until one of:
//!
//! - the account's cache entry changes, or another replica announces the row (its token
//!   written, its failure recorded, its lease given back — see [`crate::cache::Watch`]); an
//!   entry put back unchanged, as by the waiter's own reload, wakes nobody;
//! - the lease's `lease_until` passes by the injected clock (a holder that died leaves its
//!   lease until then; nothing announces that).
//!
//! Only then does it try again, so a wait costs a few statements per lease, not one per
//! wake-up — however long the lease, whatever else changes in the cache.

use std::time::Duration;

use store::accounts::AccountState;
use store::tokens::TokenState;
use wechat::AccessToken;

use super::reports::{Confirmation, Evidence, ReportOutcome, Reported};
use super::{EngineEvent, Outcome, Reason};
use crate::cache::{CurrentToken, Entry, Watch};
use crate::{TokenError, TokenService};

/// A waiter re-reads the clock at least this often while a lease is held, so that a test's
/// `ManualClock` moved past the lease's end is noticed (the wall clock needs no such help).
/// Reading the clock is an atomic load; the database is not asked.
const CLOCK_RECHECK: Duration = Duration::from_millis(200);

/// Tries in a row that found the lease held and then free at once (it ended between the claim
/// and the read) before a waiter pauses one [`CLOCK_RECHECK`] anyway: a guard against an
/// unforeseen disagreement between the claim and the row turning into a loop of statements.
const QUICK_RETRIES: u32 = 2;

/// A lease held by another holder: who, and the last instant (Unix ms) it is held.
type Lease = (String, i64);

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
            let mut watch = self.inner.cache.watch(account_id);
            let mut quick = 0;
            loop {
                // Changes from here on wake the wait below, including what our own reload
                // brings in (at most once: after it the cache matches the row).
                watch.mark_seen();
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
                if !matches!(outcome, Outcome::Busy | Outcome::Stale) {
                    return Err(TokenError::Pending);
                }
                // Another holder is fetching (or died holding the lease).
                let lease = self.reload_row(account_id).await?;
                if let Some(token) = self.cached(account_id) {
                    return Ok(token);
                }
                if let Some(entry) = self.inner.cache.get(account_id) {
                    self.unavailable_unless_fetchable(&entry)?;
                }
                self.wait_for_holder(account_id, &mut watch, lease.as_ref(), &mut quick)
                    .await;
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
                    .reason()
                    .map_or_else(|| "no valid token".to_owned(), str::to_owned),
                retry_at: None,
            }),
        }
    }

    /// Sleeps until another holder's lease may have ended (see the module doc). `lease` is
    /// what the row said after our claim failed; `quick` counts tries in a row that found no
    /// lease to wait for.
    async fn wait_for_holder(
        &self,
        account_id: &str,
        watch: &mut Watch<'_>,
        lease: Option<&Lease>,
        quick: &mut u32,
    ) {
        let now = self.inner.clock.now_ms();
        match lease.filter(|(_, until)| *until >= now) {
            Some((holder, until)) => {
                *quick = 0;
                self.emit(EngineEvent::WaitingForLease {
                    account_id: account_id.to_owned(),
                    holder: holder.clone(),
                    until: *until,
                });
                loop {
                    // Held through `until`: a claim needs `lease_until < now`.
                    let left = until + 1 - self.inner.clock.now_ms();
                    let Ok(left) = u64::try_from(left) else {
                        return;
                    };
                    if left == 0 {
                        return;
                    }
                    let sleep = Duration::from_millis(left).min(CLOCK_RECHECK);
                    tokio::select! {
                        () = watch.changed() => return,
                        () = tokio::time::sleep(sleep) => {}
                    }
                }
            }
            // The lease ended between our claim and our read: try again at once, a bounded
            // number of times.
            None if *quick < QUICK_RETRIES => *quick += 1,
            None => {
                *quick = 0;
                tokio::select! {
                    () = watch.changed() => {}
                    () = tokio::time::sleep(CLOCK_RECHECK) => {}
                }
            }
        }
    }

    /// The error for a report that could not be acted on within the wait: another holder
    /// kept the lease (`lease`, as last read), or a refresh here did not finish.
    fn report_not_refreshed(&self, account_id: &str, lease: Option<&Lease>) -> TokenError {
        let state = self
            .inner
            .cache
            .get(account_id)
            .map_or(TokenState::Pending, |e| e.state);
        let now = self.inner.clock.now_ms();
        match lease.filter(|(_, until)| *until >= now) {
            Some((holder, until)) => TokenError::Unavailable {
                state,
                code: None,
                reason: format!(
                    "the reported token is still the newest wxhub has, and it cannot be \
                     replaced yet: another wxhub process ({holder}) holds this account's refresh \
                     lease for another {} s; if that process stopped, the lease lapses then and \
                     a report is acted on",
                    (until + 1 - now + 999) / 1000
                ),
                retry_at: Some(until + 1),
            },
            None => TokenError::Unavailable {
                state,
                code: None,
                reason: "the reported token is still the newest wxhub has; its replacement is \
                         still being fetched"
                    .to_owned(),
                retry_at: Some(now + 1000),
            },
        }
    }

    /// The token reported rejected: a refresh if it is still current (and, for a backend's
    /// report, WeChat confirms it), else the current token. See
    /// [`TokenService::report_rejected`].
    pub(crate) async fn refresh_rejected(
        &self,
        account_id: &str,
        rejected: &AccessToken,
        evidence: Evidence<'_>,
    ) -> Result<Reported, TokenError> {
        let is_current = |svc: &Self| {
            svc.inner
                .cache
                .get(account_id)
                .is_some_and(|e| e.token_is(rejected))
        };
        let replaced = |token| Reported {
            token,
            outcome: ReportOutcome::AlreadyReplaced,
        };
        if self.inner.cache.get(account_id).is_none() {
            self.reload_account(account_id).await?;
        }
        if !is_current(self) {
            return self.current(account_id).await.map(replaced);
        }
        let wait = self.inner.config.first_token_wait;
        let mut watch = self.inner.cache.watch(account_id);
        let mut last_lease: Option<Lease> = None;
        let work = async {
            let mut quick = 0;
            // A backend's report is confirmed with WeChat once, before the first claim.
            let mut confirmed = matches!(evidence, Evidence::Observed);
            loop {
                watch.mark_seen();
                let outcome = {
                    let flight = self.flight(account_id);
                    let _guard = flight.lock().await;
                    // Compare-and-swap: while we waited, someone may have replaced it.
                    if !is_current(self) {
                        None
                    } else {
                        if !confirmed && let Evidence::Report { caller } = evidence {
                            if self.recently_accepted(account_id, rejected) {
                                return self.still_accepted(account_id);
                            }
                            self.take_report_allowance(caller)?;
                            match self.confirm_rejected(account_id, rejected).await {
                                Confirmation::Accepted => return self.still_accepted(account_id),
                                Confirmation::Rejected | Confirmation::Unconfirmed => {
                                    confirmed = true;
                                }
                            }
                        }
                        let reason = Reason::Rejected {
                            reported: rejected.clone(),
                        };
                        Some(self.refresh_locked(account_id, reason).await?)
                    }
                };
                match outcome {
                    None | Some(Outcome::Refreshed | Outcome::Unneeded) => {
                        if !is_current(self)
                            && let Some(token) = self.cached(account_id)
                        {
                            let outcome = if matches!(outcome, Some(Outcome::Refreshed)) {
                                ReportOutcome::Refreshed
                            } else {
                                ReportOutcome::AlreadyReplaced
                            };
                            return Ok(Reported { token, outcome });
                        }
                        let entry = self
                            .inner
                            .cache
                            .get(account_id)
                            .ok_or(TokenError::UnknownAccount)?;
                        return Err(TokenError::Unavailable {
                            state: entry.state,
                            code: entry.error_code,
                            reason: entry.reason().map_or_else(
                                || "the rejected token is still the newest wxhub has".to_owned(),
                                str::to_owned,
                            ),
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
                                .reason()
                                .map_or_else(|| "the refresh failed".to_owned(), str::to_owned),
                            retry_at: None,
                        });
                    }
                    Some(Outcome::Stopping) => {
                        return Err(TokenError::Unavailable {
                            state: self
                                .inner
                                .cache
                                .get(account_id)
                                .map_or(TokenState::Pending, |e| e.state),
                            code: None,
                            reason: "this wxhub process is shutting down and starts no refresh; \
                                     report the token again (another replica will act on it)"
                                .to_owned(),
                            retry_at: Some(self.inner.clock.now_ms() + 1000),
                        });
                    }
                    Some(Outcome::Busy | Outcome::Stale) => {
                        last_lease = self.reload_row(account_id).await?;
                        if !is_current(self)
                            && let Some(token) = self.cached(account_id)
                        {
                            return Ok(replaced(token));
                        }
                        self.wait_for_holder(
                            account_id,
                            &mut watch,
                            last_lease.as_ref(),
                            &mut quick,
                        )
                        .await;
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(wait, work).await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(self.report_not_refreshed(account_id, last_lease.as_ref())),
        }
    }

    /// The answer to a report of a token WeChat accepts: that token, still current.
    fn still_accepted(&self, account_id: &str) -> Result<Reported, TokenError> {
        let token = self.cached(account_id).ok_or(TokenError::Pending)?;
        Ok(Reported {
            token,
            outcome: ReportOutcome::StillAccepted,
        })
    }
}
