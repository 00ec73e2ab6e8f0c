//! Background tasks: the due pass ([`TokenService::run_due`]) and the loop that runs it, the
//! PostgreSQL listener for other replicas' refreshes, and the periodic full reload (the
//! fallback for lost notifications).

use std::collections::HashSet;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use super::shutdown::Phase;
use super::{Outcome, Reason, RunReport};
use crate::{TokenError, TokenService};

/// Background tasks of a [`TokenService`]. [`BackgroundTasks::shutdown`] stops them
/// cooperatively; dropping this aborts them (refreshes in flight included).
#[derive(Debug)]
pub struct BackgroundTasks {
    service: TokenService,
    /// The listener and the periodic reload: nothing to finish.
    cache_tasks: Vec<JoinHandle<()>>,
    /// The due loop (with the refreshes it runs), when started by [`TokenService::start`].
    due: Option<JoinHandle<()>>,
}

impl BackgroundTasks {
    /// Shuts the engine down cooperatively: from now on no refresh starts (on any path —
    /// schedule, first use, report), refreshes in flight and write-backs being retried get
    /// `grace` to finish and store their token, then everything stops. The cache keeps
    /// serving meanwhile. Returns how many refreshes were still in flight at the deadline
    /// (0: none was cut short; one that was leaves its lease to lapse).
    ///
    /// Shutdown is final for the service (every clone): call it when the process stops.
    pub async fn shutdown(mut self, grace: Duration) -> usize {
        for task in self.cache_tasks.drain(..) {
            task.abort();
        }
        let left = self.service.inner.inflight.drain(grace).await;
        if let Some(due) = self.due.take() {
            // Idle now (no refresh starts), or past the deadline.
            due.abort();
        }
        if left == 0 {
            tracing::info!("token scheduler stopped; no refresh was cut short");
        } else {
            tracing::warn!(
                left,
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "token scheduler stopped with refreshes still in flight; their leases lapse"
            );
        }
        left
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in self.cache_tasks.iter().chain(&self.due) {
            task.abort();
        }
    }
}

impl TokenService {
    /// Processes every refresh due at the clock's current time and returns when all are done
    /// (bounded by [`crate::SchedulerConfig::concurrency`]). The background loop calls this;
    /// tests call it after moving a `ManualClock` instead of sleeping.
    ///
    /// The due list is read a page at a time, and the next page is read as soon as the last
    /// account of the current one has started — not after the whole page finished — so the
    /// permits stay busy across pages instead of draining at each page's end.
    pub async fn run_due(&self) -> Result<RunReport, TokenError> {
        const PAGE: u32 = 1000;
        let mut report = RunReport::default();
        let mut seen = HashSet::new();
        let mut set = JoinSet::new();
        loop {
            if self.inner.inflight.phase() != Phase::Running {
                // Shutting down: finish what runs, list nothing more.
                while let Some(joined) = set.join_next().await {
                    Self::tally(&mut report, joined);
                }
                break;
            }
            let now = self.inner.clock.now_ms();
            let due = self.inner.store.list_due_refreshes(now, PAGE).await?;
            let fresh: Vec<String> = due
                .into_iter()
                .map(|d| d.account_id)
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if fresh.is_empty() {
                // Nothing new (what is listed is already running here): once the running ones
                // are done, look once more — a refresh that failed early is due again only
                // after its backoff, so this ends.
                if set.is_empty() {
                    break;
                }
                while let Some(joined) = set.join_next().await {
                    Self::tally(&mut report, joined);
                }
                continue;
            }
            report.due += fresh.len();
            for account_id in fresh {
                // Wait for a permit while collecting finished refreshes.
                let permit = loop {
                    tokio::select! {
                        permit = self.inner.permits.clone().acquire_owned() => {
                            break permit.expect("the semaphore is never closed");
                        }
                        Some(joined) = set.join_next() => {
                            self.note_progress();
                            Self::tally(&mut report, joined);
                        }
                    }
                };
                let service = self.clone();
                set.spawn(async move {
                    let outcome = service.refresh_scheduled(&account_id).await;
                    drop(permit);
                    (account_id, outcome)
                });
            }
        }
        // During an outage, some expired account is due again within the probe interval.
        self.arrange_probe().await;
        Ok(report)
    }

    fn tally(
        report: &mut RunReport,
        joined: Result<(String, Result<Outcome, TokenError>), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((_, Ok(Outcome::Refreshed))) => report.refreshed += 1,
            Ok((_, Ok(Outcome::Failed))) => report.failed += 1,
            Ok((_, Ok(_))) => report.skipped += 1,
            Ok((account_id, Err(error))) => {
                report.failed += 1;
                tracing::error!(%account_id, %error, "token refresh failed inside wxhub");
            }
            Err(join) => {
                report.failed += 1;
                tracing::error!(error = %join, "token refresh task failed");
            }
        }
    }

    async fn refresh_scheduled(&self, account_id: &str) -> Result<Outcome, TokenError> {
        // Its new token is served from memory and still being written: the row only looks
        // due (and, once our lease lapses, free). A refresh now would supersede that token.
        if self.write_deferred(account_id) {
            return Ok(Outcome::Busy);
        }
        let flight = self.flight(account_id);
        // A refresh of this account is already running here (a rejected report): skip.
        let Ok(_guard) = flight.try_lock() else {
            return Ok(Outcome::Busy);
        };
        self.refresh_locked(account_id, Reason::Scheduled).await
    }

    /// Starts all background tasks: the due loop (sleeping on a tokio timer until the next due
    /// refresh by the injected clock, at most `poll_interval`, woken early by
    /// [`TokenService::wake`]) and the tasks of [`TokenService::listen`]. Stop them with
    /// [`BackgroundTasks::shutdown`]; dropping the returned value aborts them.
    pub async fn start(&self) -> Result<BackgroundTasks, TokenError> {
        let mut tasks = self.listen().await?;
        let service = self.clone();
        tasks.due = Some(tokio::spawn(async move { service.due_loop().await }));
        Ok(tasks)
    }

    /// Starts only the cache-keeping tasks: the PostgreSQL listener for other replicas'
    /// refreshes and the periodic full reload (the fallback for lost notifications). Tests that
    /// drive refreshes with [`TokenService::run_due`] use this instead of
    /// [`TokenService::start`].
    pub async fn listen(&self) -> Result<BackgroundTasks, TokenError> {
        let mut tasks = vec![crate::changes::spawn(self).await?];
        if let Some(mut listener) = self.inner.store.listen_token_refreshes().await? {
            let service = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(account_id) => {
                            if let Err(error) = service.reload_announced(&account_id).await {
                                tracing::warn!(%account_id, %error, "cannot reload an announced token");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "token notification listener failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            // Announcements sent while the connection was down are lost:
                            // catch up now rather than at the next periodic reload.
                            if let Err(error) = service.reload_all().await {
                                tracing::warn!(%error, "token cache reload after a listener failure failed");
                            }
                        }
                    }
                }
            }));
        }
        let service = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(service.inner.config.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(error) = service.reload_all().await {
                    tracing::warn!(%error, "periodic token cache reload failed");
                }
            }
        }));
        Ok(BackgroundTasks {
            service: self.clone(),
            cache_tasks: tasks,
            due: None,
        })
    }

    async fn due_loop(&self) {
        let poll = self.inner.config.poll_interval;
        let mut phase = self.inner.inflight.watch();
        loop {
            if *phase.borrow_and_update() != Phase::Running {
                return;
            }
            match self.run_due().await {
                Ok(_) => self.note_progress(),
                Err(error) => tracing::error!(%error, "token scheduler pass failed"),
            }
            let sleep = match self.inner.store.earliest_refresh_due().await {
                Ok(Some(due)) => {
                    let wait = due - self.inner.clock.now_ms();
                    Duration::from_millis(u64::try_from(wait.max(10)).unwrap_or(0)).min(poll)
                }
                Ok(None) => poll,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the next due refresh");
                    poll
                }
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.inner.wake.notified() => {}
                _ = phase.changed() => {}
            }
        }
    }
}
