//! The refresh engine: leases, single flight, the per-account state machine, write-back with
//! a fence, and the background tasks (due loop, PostgreSQL listener, periodic reload).
//!
//! One refresh, whatever triggered it (schedule, first use, rejected report):
//!
//! 1. take the account's in-process mutex (single flight) and re-check memory;
//! 2. claim the lease, bump the fence and take one unit of today's upstream budget in one
//!    conditional UPDATE (`claim_token_refresh`), which also returns the sealed AppSecret — no
//!    claim, no WeChat call;
//! 3. re-check the claimed row: another replica may have refreshed between our look and our
//!    claim (WxJava #1222: no double-check after the lock → two fetches); if so adopt its token
//!    and give the lease and the budget unit back;
//! 4. unwrap the DEK once, decrypt the AppSecret, call WeChat — outside any transaction;
//! 5. write back fenced: a success stores the sealed token and the next refresh time; a
//!    failure records the state machine's next state. A lapsed lease makes the write fail
//!    (`StaleFence`) and the result is dropped;
//! 6. update the cache; on PostgreSQL the write-back statement itself NOTIFYs the replicas.
//!
//! State machine (`core_tokens.state`): pending → healthy on the first success; healthy →
//! healthy on each scheduled refresh; any → retrying on a transient error (-1, 45011, 5xx,
//! timeouts, connection errors; exponential backoff with full jitter, landing before expiry);
//! any → needs_attention on a credential/configuration error (hourly retry, at once after
//! `credentials_changed`); any → quota_exhausted on 45009 or an exhausted daily budget (until
//! 00:00 Asia/Shanghai). In every failed state a still-valid token keeps being served.
//!
//! The submodules follow those lines: [`failure`] (errcode → state and a human reason),
//! [`waiting`] (a request waiting for a token, its own fetch or another replica's), [`refresh`]
//! (claim, call, fenced write-back), [`reports`] (confirming a reported token with WeChat, the
//! per-key cap), [`cache_sync`] (rows into the cache), [`background`]
//! (the due loop, the listener, the periodic reload), [`shutdown`] (refreshes in flight,
//! finished before the process stops), [`outage`] (WeChat down for every account: a probe,
//! and a spread recovery) and [`write_back`] (a fetched token whose write failed,
//! served from memory and stored later).

mod background;
mod cache_sync;
mod failure;
mod outage;
mod refresh;
mod reports;
mod shutdown;
mod waiting;
mod write_back;

use std::sync::{Arc, PoisonError};

pub use background::BackgroundTasks;
pub(crate) use outage::UpstreamHealth;
pub(crate) use reports::{Evidence, ReportLedger};
pub use reports::{ReportOutcome, Reported};
pub(crate) use shutdown::InFlight;
use store::tokens::TokenState;

use crate::TokenService;

/// A handle on one account's single-flight mutex. The map holds a mutex only while someone
/// holds a handle: with a million accounts a mutex kept per account refreshed once would
/// outweigh its cached token.
pub(super) struct Flight<'a> {
    service: &'a TokenService,
    account_id: String,
    /// Always `Some` until dropped.
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Flight<'_> {
    fn mutex(&self) -> &tokio::sync::Mutex<()> {
        self.mutex.as_deref().expect("taken only on drop")
    }

    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.mutex().lock().await
    }

    pub fn try_lock(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, tokio::sync::TryLockError> {
        self.mutex().try_lock()
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self
            .service
            .inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Handles are cloned and dropped only under this lock, so the count is exact: 1 left
        // means only the map holds it, and nobody can be waiting on it.
        drop(self.mutex.take());
        if flights
            .get(&self.account_id)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            flights.remove(&self.account_id);
        }
    }
}

/// Something the engine did, for tests and metrics. Carries ids and numbers, never a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// This replica claimed an account's lease (about to call WeChat).
    LeaseClaimed { account_id: String, generation: i64 },
    /// A new token was stored under `generation`.
    Refreshed { account_id: String, generation: i64 },
    /// A new token could not be stored (the database failed): it is served from memory and
    /// its write is retried. `attempt` counts the failed writes (1: the first).
    WriteDeferred {
        account_id: String,
        generation: i64,
        attempt: u32,
    },
    /// A refresh failed; the account is now in `state`.
    Failed {
        account_id: String,
        state: TokenState,
        code: Option<i64>,
    },
    /// A write-back lost its fence: the lease lapsed and another replica owns the refresh
    /// (also when a deferred write is superseded).
    StaleWrite { account_id: String, generation: i64 },
    /// The cache took a token written by another replica (notification or reload).
    Adopted { account_id: String, generation: i64 },
    /// A change announced by the tenancy layer (on any replica) was applied to the caches.
    ChangeApplied {
        account_id: String,
        kind: store::changes::ChangeKind,
    },
    /// A request waits for another holder's lease (another replica fetching, or a process
    /// that stopped while holding it) until `until` (Unix ms) at the latest.
    WaitingForLease {
        account_id: String,
        holder: String,
        until: i64,
    },
}

/// What one [`TokenService::run_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Accounts found due.
    pub due: usize,
    /// New tokens stored.
    pub refreshed: usize,
    /// Failed attempts recorded.
    pub failed: usize,
    /// Accounts skipped: lease held elsewhere, refresh already in flight here, or refreshed by
    /// another replica meanwhile.
    pub skipped: usize,
}

/// Why a refresh was asked for.
#[derive(Debug)]
enum Reason {
    Scheduled,
    Missing,
    /// A backend reported `reported` as rejected (the caller checked, under the account's
    /// flight mutex, that it is the cached one; the claim re-checks it against the row).
    Rejected {
        reported: wechat::AccessToken,
    },
}

/// How a refresh attempt ended.
#[derive(Debug)]
enum Outcome {
    Refreshed,
    Failed,
    /// Nothing to do: memory or the row already had what was needed.
    Unneeded,
    /// Another replica holds the lease.
    Busy,
    /// Our write lost the fence.
    Stale,
    /// Shutting down: no refresh starts.
    Stopping,
}

impl TokenService {
    /// The account's single-flight mutex, shared by every caller that holds a [`Flight`] of it
    /// at the same time.
    pub(super) fn flight(&self, account_id: &str) -> Flight<'_> {
        let mutex = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(account_id.to_owned())
            .or_default()
            .clone();
        Flight {
            service: self,
            account_id: account_id.to_owned(),
            mutex: Some(mutex),
        }
    }

    pub(super) fn emit(&self, event: EngineEvent) {
        let _ = self.inner.events.send(event);
    }

    pub(super) fn jitter<T>(&self, f: impl FnOnce(&mut rand::rngs::StdRng) -> T) -> T {
        let mut rng = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut rng)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{SchedulerConfig, TokenService};

    #[tokio::test]
    async fn a_single_flight_mutex_lives_only_while_someone_holds_it() {
        let db = testkit::TestDatabase::sqlite();
        let store = store::Store::connect(db.url()).await.unwrap();
        let client = wechat::Client::new(wechat::ClientConfig::for_base(
            "http://127.0.0.1:9/".parse().unwrap(),
        ))
        .unwrap();
        let service = TokenService::open(
            store,
            testkit::fixtures::vault(),
            client,
            Arc::new(wechat::SystemClock),
            SchedulerConfig::default(),
        )
        .await
        .unwrap();
        let held = |s: &TokenService| s.inner.flights.lock().unwrap().len();
        let first = service.flight("a");
        let guard = first.lock().await;
        let second = service.flight("a");
        // Both handles share the one mutex: the second cannot take it while the first holds it.
        assert!(second.try_lock().is_err());
        assert_eq!(held(&service), 1);
        drop(guard);
        drop(first);
        assert_eq!(held(&service), 1, "still held by the second handle");
        assert!(second.try_lock().is_ok());
        drop(second);
        assert_eq!(held(&service), 0, "gone with the last handle");
        db.finish().await;
    }
}
