//! A token WeChat issued is never dropped: when storing a freshly fetched token fails (the
//! database is down, a disk is full), WeChat has already superseded the old token, so the
//! new one is served from memory and its fenced write is retried in the background — with
//! exponential backoff, by real time (this waits for the database, not for a schedule) —
//! until it lands or a newer generation supersedes it (then the write fails its fence and the
//! token is let go: another holder owns the refresh). The retries count as work in flight:
//! shutdown waits for them, and tries once more at once when it begins.
//!
//! Only a database failure defers a write. A lost fence ([`store::StoreError::StaleFence`])
//! still drops the result at once: a newer holder owns the refresh.

use std::time::Duration;

use store::StoreError;
use store::tokens::RefreshedToken;

use super::EngineEvent;
use super::shutdown::Phase;
use crate::TokenService;

/// The longest pause between two attempts to store a deferred token.
const WRITE_RETRY_CAP: Duration = Duration::from_secs(30);

impl TokenService {
    /// Whether `account_id`'s token is served from memory while its write is retried.
    pub(super) fn write_deferred(&self, account_id: &str) -> bool {
        self.inner
            .deferred_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(account_id)
    }

    /// Starts retrying the write of `token` under `generation` (its first write failed with
    /// `error`). The caller puts the token into the cache.
    pub(super) fn defer_write_back(
        &self,
        account_id: &str,
        generation: i64,
        token: RefreshedToken,
        error: &StoreError,
    ) {
        tracing::error!(
            %account_id,
            generation,
            %error,
            "cannot store the new core token; serving it from memory and retrying the write"
        );
        self.emit(EngineEvent::WriteDeferred {
            account_id: account_id.to_owned(),
            generation,
            attempt: 1,
        });
        self.inner
            .deferred_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(account_id.to_owned());
        // Taken while the refresh's own guard is still held: a drain cannot miss it.
        let guard = self.inner.inflight.enter_always();
        let service = self.clone();
        let account_id = account_id.to_owned();
        tokio::spawn(async move {
            service.retry_write(&account_id, generation, &token).await;
            service
                .inner
                .deferred_writes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&account_id);
            drop(guard);
        });
    }

    async fn retry_write(&self, account_id: &str, generation: i64, token: &RefreshedToken) {
        let mut delay = self.inner.config.write_retry;
        let mut phase = self.inner.inflight.watch();
        let mut attempt = 1;
        loop {
            let running = *phase.borrow_and_update() == Phase::Running;
            if *phase.borrow() == Phase::Stopped {
                tracing::error!(%account_id, generation, attempt, "shutdown deadline passed before the new core token could be stored; it is lost");
                return;
            }
            if running {
                // Shutdown beginning interrupts the pause: one more try at once.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = phase.changed() => {}
                }
            } else {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    stopped = phase.wait_for(|p| *p == Phase::Stopped) => {
                        // Let go of the channel's read lock before reading it again.
                        drop(stopped);
                        continue;
                    }
                }
            }
            let now = self.inner.clock.now_ms();
            match self
                .inner
                .store
                .store_refreshed_token(account_id, generation, token, now)
                .await
            {
                Ok(()) => {
                    tracing::info!(%account_id, generation, attempt, "core token stored after its write-back failed");
                    self.emit(EngineEvent::Refreshed {
                        account_id: account_id.to_owned(),
                        generation,
                    });
                    return;
                }
                Err(StoreError::StaleFence { .. }) => {
                    tracing::warn!(%account_id, generation, "a newer lease superseded the core token whose write-back failed; letting it go");
                    self.emit(EngineEvent::StaleWrite {
                        account_id: account_id.to_owned(),
                        generation,
                    });
                    return;
                }
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(%account_id, generation, attempt, %error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "storing the new core token failed again");
                    self.emit(EngineEvent::WriteDeferred {
                        account_id: account_id.to_owned(),
                        generation,
                        attempt,
                    });
                    delay = (delay * 2).min(WRITE_RETRY_CAP);
                }
            }
        }
    }
}
