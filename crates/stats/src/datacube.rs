//! The nightly sync of WeChat's own statistics (docs/wechat-2.md §5–§7): follower growth per
//! channel, followers per day, and how the push server answered, kept per account and day
//! beyond WeChat's windows.
//!
//! - **Who**: every active, verified service account (unverified ones get 48001, §5.2).
//! - **When**: yesterday's figures are ready after 08:00 China time (§5.2), so each account
//!   has its own time of day after that, spread over [`DatacubeConfig::spread`] by a hash of
//!   its id: 100,000 accounts make about two syncs a second, never a burst.
//! - **Backfill**: a new account's first run fetches the last 7 ready days, then goes back
//!   7 days at a time (the span of `getusersummary`/`getusercumulate`) until WeChat has
//!   nothing older, the history's start (2014-12-01) or the retention is reached — a little at
//!   every run, within the budget.
//! - **Budget**: at most [`DatacubeConfig::daily_budget`] calls per account and China-time day
//!   (WeChat publishes no limit, §5.2), and [`DatacubeConfig::calls_per_run`] per run.
//! - **Failures**: a transient one (-1, 5xx, timeout) retries with exponential backoff; a
//!   rejected token is reported to the scheduler and the call retried once; 45009 and 48001
//!   wait for the next day. A day WeChat does not give although it should is recorded as
//!   missing (`datacube_missing`); yesterday still missing is asked again an hour later (WeChat
//!   answers a day that is not ready with nothing, not an error, §5.2).
//! - **Replicas**: each account's sync is claimed with a lease (as core-token refreshes are),
//!   and its progress is written back under it, so each day is fetched once.
//! - **Retention**: figures older than [`DatacubeConfig::retention`] (3 years) are pruned.
//!
//! The core token comes from the scheduler ([`CoreTokenSource`]); this module never fetches
//! one.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use store::Store;
use store::datacube::{
    DatacubeRows, DatacubeSyncState, DatacubeSyncUpdate, InterfaceFigures, UserCumulateDay,
    UserSummaryDay,
};
use tokio::task::{JoinHandle, JoinSet};
use wechat::api::DATACUBE_FIRST_DATE;
use wechat::{AccessToken, DatacubeEndpoint, ErrorClass, SharedClock, WechatError};

use crate::StatsError;
use crate::calendar::{HOUR_MS, date_of, day_start, start_of_date};

/// A boxed future, so [`CoreTokenSource`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The scheduler's core tokens, as the sync needs them. Errors are human reasons without
/// secrets.
pub trait CoreTokenSource: Send + Sync + 'static {
    /// The account's current core token.
    fn current<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<AccessToken, String>>;

    /// WeChat rejected `rejected` (40001/40014/42001): the token to retry with.
    fn rejected<'a>(
        &'a self,
        account_id: &'a str,
        rejected: &'a AccessToken,
    ) -> BoxFuture<'a, Result<AccessToken, String>>;
}

/// Settings of [`DatacubeSync`]. `Default` suits production.
#[derive(Debug, Clone)]
pub struct DatacubeConfig {
    /// This replica's name in lease rows (default: a fresh UUIDv7-like name per process).
    pub holder: String,
    /// Yesterday's figures are ready from this hour, China time (default 8, §5.2).
    pub ready_hour: u32,
    /// The accounts' sync times start this long after the ready hour (default 15 min).
    pub ready_margin: Duration,
    /// …and are spread over this long (default 14 h: 08:15 to 22:15).
    pub spread: Duration,
    /// Calls per account and China-time day, at most (default 60).
    pub daily_budget: u32,
    /// Calls per run, at most (default 12); a backfill continues at the next run.
    pub calls_per_run: u32,
    /// Between two runs of a backfill (default 1 min), so it is spread too.
    pub backfill_pause: Duration,
    /// First backoff after a transient failure (default 5 min), doubling up to `retry_max`.
    pub retry_base: Duration,
    /// Longest backoff (default 6 h).
    pub retry_max: Duration,
    /// When yesterday is not ready yet, ask again after this (default 1 h).
    pub not_ready_retry: Duration,
    /// How long a claimed sync is held (default 5 min): longer than `calls_per_run` calls.
    pub lease: Duration,
    /// How long synced figures are kept (default 3 years).
    pub retention: Duration,
    /// Accounts synced at once by this replica (default 8).
    pub concurrency: usize,
    /// How often the background loop looks for due accounts (default 30 s, real time).
    pub poll_interval: Duration,
}

impl Default for DatacubeConfig {
    fn default() -> Self {
        Self {
            holder: format!("wxhub-datacube-{}", std::process::id()),
            ready_hour: 8,
            ready_margin: Duration::from_secs(15 * 60),
            spread: Duration::from_secs(14 * 3600),
            daily_budget: 60,
            calls_per_run: 12,
            backfill_pause: Duration::from_secs(60),
            retry_base: Duration::from_secs(5 * 60),
            retry_max: Duration::from_secs(6 * 3600),
            not_ready_retry: Duration::from_secs(3600),
            lease: Duration::from_secs(5 * 60),
            retention: Duration::from_secs(3 * 366 * 24 * 3600),
            concurrency: 8,
            poll_interval: Duration::from_secs(30),
        }
    }
}

/// What one [`DatacubeSync::run_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Accounts claimed and synced.
    pub synced: usize,
    /// Accounts another replica held (or no longer due).
    pub skipped: usize,
    /// Calls made to WeChat.
    pub calls: u64,
    /// Runs that ended in a failure (retried later).
    pub failed: usize,
}

/// The sync of one process. Cheap to clone.
#[derive(Clone)]
pub struct DatacubeSync {
    inner: Arc<SyncInner>,
}

struct SyncInner {
    store: Store,
    client: wechat::Client,
    tokens: Arc<dyn CoreTokenSource>,
    clock: SharedClock,
    config: DatacubeConfig,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A stable hash of an account id (FNV-1a): its place in the day's spread, the same on every
/// replica and after every restart.
fn spread_hash(account_id: &str) -> u64 {
    account_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Why a run stopped early.
enum Stop {
    /// Today's budget (or this run's) is used.
    Budget,
    /// Retry with backoff.
    Transient(String),
    /// 45009: wait for the next day.
    Quota(String),
    /// 48001 and the like: the account may not use the datacube; ask again tomorrow.
    Permission(String),
    /// WeChat refused the range (61500/61501): recorded, asked again tomorrow.
    Refused(String),
}

/// One run's calls and what they brought.
struct Run<'a> {
    sync: &'a SyncInner,
    account_id: &'a str,
    token: AccessToken,
    calls_left: u32,
    calls_used: i64,
    made: u64,
    rows: DatacubeRows,
}

impl Run<'_> {
    /// One call with the budget checked and counted; a rejected token is reported to the
    /// scheduler and the call retried once with the token it returns.
    async fn call<T, F, Fut>(&mut self, call: F) -> Result<T, Stop>
    where
        F: Fn(wechat::Client, AccessToken) -> Fut,
        Fut: Future<Output = Result<T, WechatError>>,
    {
        let mut retried = false;
        loop {
            if self.calls_left == 0 {
                return Err(Stop::Budget);
            }
            self.calls_left -= 1;
            self.calls_used += 1;
            self.made += 1;
            match call(self.sync.client.clone(), self.token.clone()).await {
                Ok(value) => return Ok(value),
                Err(error) if error.class() == ErrorClass::TokenRejected && !retried => {
                    retried = true;
                    self.token = self
                        .sync
                        .tokens
                        .rejected(self.account_id, &self.token)
                        .await
                        .map_err(Stop::Transient)?;
                }
                Err(error) => {
                    let text = error.to_string();
                    return Err(match error.class() {
                        ErrorClass::Quota => Stop::Quota(text),
                        ErrorClass::Permission | ErrorClass::Credential => Stop::Permission(text),
                        ErrorClass::Request => Stop::Refused(text),
                        ErrorClass::Transient | ErrorClass::Unknown | ErrorClass::TokenRejected => {
                            Stop::Transient(text)
                        }
                    });
                }
            }
        }
    }

    /// `getusercumulate`, `getusersummary` and `getinterfacesummary` over `[begin, end]`;
    /// returns the days WeChat gave followers for (the day's figures are complete).
    async fn window(
        &mut self,
        begin: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeSet<NaiveDate>, Stop> {
        let cumulate = self
            .call(|c, t| async move { c.user_cumulate(&t, begin, end).await })
            .await?;
        let summary = self
            .call(|c, t| async move { c.user_summary(&t, begin, end).await })
            .await?;
        let interface = self
            .call(|c, t| async move { c.interface_summary(&t, begin, end).await })
            .await?;
        let days: BTreeSet<NaiveDate> = cumulate.iter().map(|r| r.ref_date).collect();
        for day in &days {
            self.rows.found.push((
                start_of_date(*day),
                DatacubeEndpoint::UserCumulate.path().to_owned(),
            ));
        }
        self.rows
            .user_cumulate
            .extend(cumulate.into_iter().map(|r| UserCumulateDay {
                day: start_of_date(r.ref_date),
                cumulate_user: r.cumulate_user,
            }));
        self.rows
            .user_summary
            .extend(summary.into_iter().map(|r| UserSummaryDay {
                day: start_of_date(r.ref_date),
                user_source: r.user_source.0,
                new_user: r.new_user,
                cancel_user: r.cancel_user,
            }));
        self.rows
            .interface
            .extend(interface.into_iter().map(|r| InterfaceFigures {
                day: start_of_date(r.ref_date),
                ref_hour: None,
                callback_count: r.callback_count,
                fail_count: r.fail_count,
                total_time_cost: r.total_time_cost,
                max_time_cost: r.max_time_cost,
            }));
        Ok(days)
    }

    /// `getinterfacesummaryhour` for one day.
    async fn hours(&mut self, day: NaiveDate) -> Result<(), Stop> {
        let hours = self
            .call(|c, t| async move { c.interface_summary_hour(&t, day).await })
            .await?;
        self.rows
            .interface
            .extend(hours.into_iter().map(|r| InterfaceFigures {
                day: start_of_date(r.ref_date),
                ref_hour: Some(i64::from(r.ref_hour)),
                callback_count: r.callback_count,
                fail_count: r.fail_count,
                total_time_cost: r.total_time_cost,
                max_time_cost: r.max_time_cost,
            }));
        Ok(())
    }

    fn missing(&mut self, day: NaiveDate, reason: &str) {
        self.rows.missing.push((
            start_of_date(day),
            DatacubeEndpoint::UserCumulate.path().to_owned(),
            reason.to_owned(),
        ));
    }
}

fn add_days(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_add_days(Days::new(n)).unwrap_or(date)
}

fn sub_days(date: NaiveDate, n: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(n)).unwrap_or(date)
}

/// Where a run got to.
struct Progress {
    synced_through: Option<NaiveDate>,
    backfill_before: Option<NaiveDate>,
    backfill_done: bool,
    /// The latest ready day was not given yet: ask again soon.
    not_ready: bool,
}

impl DatacubeSync {
    /// The sync over `store`, calling WeChat with `client` and the scheduler's `tokens`.
    pub fn new(
        store: Store,
        client: wechat::Client,
        tokens: Arc<dyn CoreTokenSource>,
        clock: SharedClock,
        config: DatacubeConfig,
    ) -> Self {
        Self {
            inner: Arc::new(SyncInner {
                store,
                client,
                tokens,
                clock,
                config,
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &DatacubeConfig {
        &self.inner.config
    }

    /// The account's time of day on `date`: the ready hour, the margin, and its place in the
    /// spread.
    pub fn slot(&self, account_id: &str, date: NaiveDate) -> i64 {
        let c = &self.inner.config;
        let spread = u64::try_from(ms(c.spread).max(1)).unwrap_or(1);
        let offset = i64::try_from(spread_hash(account_id) % spread).unwrap_or(0);
        start_of_date(date) + i64::from(c.ready_hour) * HOUR_MS + ms(c.ready_margin) + offset
    }

    /// The account's first slot after `now`.
    fn next_slot(&self, account_id: &str, now: i64) -> i64 {
        let today = date_of(now);
        let slot = self.slot(account_id, today);
        if slot > now {
            slot
        } else {
            self.slot(account_id, add_days(today, 1))
        }
    }

    /// Syncs every account due at the clock's time (and gives new accounts their row) and
    /// returns when all are done, at most [`DatacubeConfig::concurrency`] at once. The
    /// background loop calls it; tests call it after moving a `ManualClock`.
    pub async fn run_due(&self) -> Result<SyncReport, StatsError> {
        let now = self.inner.clock.now_ms();
        self.inner.store.ensure_datacube_sync_rows(now).await?;
        let mut report = SyncReport::default();
        let due = self.inner.store.list_due_datacube_syncs(now, 1000).await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.inner.config.concurrency.max(1),
        ));
        let mut set = JoinSet::new();
        for account_id in due {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let sync = self.clone();
            set.spawn(async move {
                let outcome = sync.sync_account(&account_id).await;
                drop(permit);
                (account_id, outcome)
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, Ok(Some((calls, failed))))) => {
                    report.synced += 1;
                    report.calls += calls;
                    report.failed += usize::from(failed);
                }
                Ok((_, Ok(None))) => report.skipped += 1,
                Ok((account_id, Err(error))) => {
                    report.failed += 1;
                    tracing::warn!(%account_id, %error, "statistics sync failed inside wxhub");
                }
                Err(error) => {
                    report.failed += 1;
                    tracing::error!(%error, "statistics sync task failed");
                }
            }
        }
        Ok(report)
    }

    /// Claims and syncs one account: `None` when another replica holds it; else the calls
    /// made and whether the run ended in a failure.
    async fn sync_account(&self, account_id: &str) -> Result<Option<(u64, bool)>, StatsError> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let Some(state) = inner
            .store
            .claim_datacube_sync(
                account_id,
                &inner.config.holder,
                now,
                now + ms(inner.config.lease),
            )
            .await?
        else {
            return Ok(None);
        };
        let (rows, update, calls, failed) = self.run(account_id, &state, now).await;
        let done = inner.clock.now_ms();
        let held = inner
            .store
            .finish_datacube_sync(account_id, &inner.config.holder, &rows, &update, done)
            .await?;
        if !held {
            tracing::warn!(%account_id, "statistics sync lost its lease; its results were dropped");
        }
        Ok(Some((calls, failed)))
    }

    async fn run(
        &self,
        account_id: &str,
        state: &DatacubeSyncState,
        now: i64,
    ) -> (DatacubeRows, DatacubeSyncUpdate, u64, bool) {
        let c = &self.inner.config;
        let calls_day = day_start(now);
        let calls_used = if state.calls_day == Some(calls_day) {
            state.calls_used
        } else {
            0
        };
        let budget_left = i64::from(c.daily_budget).saturating_sub(calls_used).max(0);
        let mut progress = Progress {
            synced_through: state.synced_through.map(date_of),
            backfill_before: state.backfill_before.map(date_of),
            backfill_done: state.backfill_done,
            not_ready: false,
        };
        let update =
            |progress: &Progress, next_run_at: i64, failures, error, used| DatacubeSyncUpdate {
                next_run_at,
                synced_through: progress.synced_through.map(start_of_date),
                backfill_before: progress.backfill_before.map(start_of_date),
                backfill_done: progress.backfill_done,
                failures,
                last_error: error,
                calls_day: Some(calls_day),
                calls_used: used,
            };
        let token = match self.inner.tokens.current(account_id).await {
            Ok(token) => token,
            Err(reason) => {
                let failures = state.failures + 1;
                let next = now + self.backoff(failures);
                let error = format!("no core token: {reason}");
                return (
                    DatacubeRows::default(),
                    update(&progress, next, failures, Some(error), calls_used),
                    0,
                    true,
                );
            }
        };
        let mut run = Run {
            sync: &self.inner,
            account_id,
            token,
            calls_left: u32::try_from(budget_left)
                .unwrap_or(u32::MAX)
                .min(c.calls_per_run.max(4)),
            calls_used,
            made: 0,
            rows: DatacubeRows::default(),
        };
        let outcome = self.work(&mut run, &mut progress, now).await;
        let caught_up =
            progress.synced_through == Some(self.ready_through(now)) && progress.backfill_done;
        let (next, failures, error, failed) = match outcome {
            Ok(()) if progress.not_ready => (
                (now + ms(c.not_ready_retry)).min(self.next_slot(account_id, now)),
                0,
                None,
                false,
            ),
            Ok(()) if caught_up => (self.next_slot(account_id, now), 0, None, false),
            // More to do: soon, or after the budget's reset.
            Ok(()) | Err(Stop::Budget) => {
                // A window takes at least 3 calls.
                let next = if i64::from(c.daily_budget) - run.calls_used >= 3 {
                    now + ms(c.backfill_pause)
                } else {
                    self.slot(account_id, add_days(date_of(now), 1))
                };
                (next, 0, None, false)
            }
            Err(Stop::Transient(error)) => {
                let failures = state.failures + 1;
                (now + self.backoff(failures), failures, Some(error), true)
            }
            Err(Stop::Quota(error) | Stop::Permission(error) | Stop::Refused(error)) => (
                self.slot(account_id, add_days(date_of(now), 1)),
                0,
                Some(error),
                true,
            ),
        };
        let used = run.calls_used;
        let made = run.made;
        (
            run.rows,
            update(&progress, next, failures, error, used),
            made,
            failed,
        )
    }

    fn backoff(&self, failures: i64) -> i64 {
        let c = &self.inner.config;
        let doublings = u32::try_from((failures - 1).clamp(0, 20)).unwrap_or(20);
        ms(c.retry_base)
            .saturating_mul(1_i64 << doublings)
            .min(ms(c.retry_max))
    }

    /// The latest day whose figures are ready at `now`: yesterday from the ready hour on,
    /// else the day before.
    fn ready_through(&self, now: i64) -> NaiveDate {
        let today = date_of(now);
        let ready_at = start_of_date(today) + i64::from(self.inner.config.ready_hour) * HOUR_MS;
        sub_days(today, if now >= ready_at { 1 } else { 2 })
    }

    /// The oldest day worth fetching: the history's start or the retention's.
    fn floor(&self, now: i64) -> NaiveDate {
        let retained = date_of(now.saturating_sub(ms(self.inner.config.retention)));
        retained.max(DATACUBE_FIRST_DATE)
    }

    /// Forward to the latest ready day, then back.
    async fn work(&self, run: &mut Run<'_>, progress: &mut Progress, now: i64) -> Result<(), Stop> {
        let ready = self.ready_through(now);
        let floor = self.floor(now);
        // Forward, 7 days per window, hours for each day given.
        loop {
            let first_sync = progress.synced_through.is_none();
            let from = match progress.synced_through {
                Some(day) => add_days(day, 1),
                None => sub_days(ready, 6).max(floor),
            };
            if from > ready {
                break;
            }
            let end = add_days(from, 6).min(ready);
            if run.calls_left < 3 {
                return Err(Stop::Budget);
            }
            let days = run.window(from, end).await?;
            for day in &days {
                run.hours(*day).await?;
            }
            if first_sync && progress.backfill_before.is_none() {
                match days.first() {
                    // The history starts inside this window: nothing older to fetch.
                    Some(first) if *first > from => {
                        progress.backfill_before = Some(*first);
                        progress.backfill_done = true;
                    }
                    _ => progress.backfill_before = Some(from),
                }
            }
            let Some(last) = days.last().copied() else {
                if end == ready {
                    // Nothing at all yet: not ready, or no history yet.
                    progress.not_ready = true;
                    break;
                }
                if !first_sync {
                    let mut day = from;
                    while day <= end {
                        run.missing(day, "WeChat gave no figures for this day");
                        day = add_days(day, 1);
                    }
                }
                progress.synced_through = Some(end);
                continue;
            };
            let known_from = if first_sync {
                days.first().copied().unwrap_or(from)
            } else {
                from
            };
            let mut day = known_from;
            let through = if last < end && end == ready {
                last
            } else {
                end
            };
            while day <= through {
                if !days.contains(&day) {
                    run.missing(day, "WeChat gave no figures for this day");
                }
                day = add_days(day, 1);
            }
            progress.synced_through = Some(through);
            if through < end {
                // The latest ready day is not there yet (§5.2: left out, without an error).
                progress.not_ready = true;
                break;
            }
        }
        // Back, 7 days per window, until WeChat has nothing older.
        while !progress.backfill_done {
            let Some(before) = progress.backfill_before else {
                break;
            };
            if before <= floor {
                progress.backfill_done = true;
                break;
            }
            let begin = sub_days(before, 7).max(floor);
            let end = sub_days(before, 1);
            if run.calls_left < 3 {
                return Err(Stop::Budget);
            }
            let days = run.window(begin, end).await?;
            match days.first().copied() {
                None => progress.backfill_done = true,
                Some(first) => {
                    let mut day = first;
                    while day <= end {
                        if !days.contains(&day) {
                            run.missing(day, "WeChat gave no figures for this day");
                        }
                        day = add_days(day, 1);
                    }
                    progress.backfill_before = Some(begin);
                    progress.backfill_done = first > begin || begin <= floor;
                }
            }
        }
        Ok(())
    }

    /// Deletes figures older than the retention, as of the clock's time.
    pub async fn prune(&self) -> Result<u64, StatsError> {
        let now = self.inner.clock.now_ms();
        let before = start_of_date(self.floor(now));
        Ok(self.inner.store.prune_datacube(before).await?)
    }

    /// Starts the background loop: [`DatacubeSync::run_due`] every
    /// [`DatacubeConfig::poll_interval`] and a prune every hour, until the task is aborted.
    pub fn spawn(&self) -> JoinHandle<()> {
        let sync = self.clone();
        tokio::spawn(async move {
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                match sync.run_due().await {
                    Ok(report) if report.synced > 0 => {
                        tracing::debug!(?report, "statistics synced from WeChat");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "statistics sync pass failed"),
                }
                if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                    last_prune = Some(tokio::time::Instant::now());
                    if let Err(error) = sync.prune().await {
                        tracing::warn!(%error, "pruning synced statistics failed");
                    }
                }
                tokio::time::sleep(sync.inner.config.poll_interval).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_hash_is_stable_and_spreads() {
        assert_eq!(spread_hash(""), 0xcbf2_9ce4_8422_2325);
        let spread = 14 * 3600 * 1000;
        let mut buckets = [0u32; 14];
        for i in 0..14_000 {
            let h = spread_hash(&format!("0190a1b2-c3d4-7e5f-8a9b-{i:012x}")) % spread;
            buckets[usize::try_from(h / (3600 * 1000)).unwrap()] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
