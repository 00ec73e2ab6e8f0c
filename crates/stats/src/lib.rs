//! wxhub's statistics: what happens on every account, counted in memory and kept as hourly
//! and daily rows.
//!
//! - [`Stats`]: the handle the scheduler and the gateway count with (cheap to clone; a
//!   disabled one counts nothing). Typed helpers name each event (`token_refreshed`,
//!   `proxy_call`, `login`, `push`…); [`metric`] is the vocabulary that ends up in the
//!   database.
//! - Counting never waits: counts go into atomics ([`counters`]); hot paths hold a
//!   [`Counter`] and take no lock.
//! - [`Stats::flush`] moves the counts into the database every
//!   [`StatsConfig::flush_interval`] (and at every hour's start) as additive upserts, so any
//!   number of replicas writing the same hour add up: the sum of the rows is the sum of the
//!   events. A flush that fails is kept and retried with the next one. **What a crash
//!   loses** is what was counted since the last successful flush: at most one flush interval
//!   (5 s by default), plus anything held while the database was unreachable. A graceful stop
//!   flushes first ([`FlushTask::shutdown`]).
//! - Rows past their retention are pruned ([`Stats::prune`], hourly by the flush task).
//!
//! It must never block a request on the database, and never label a count with anything
//! unbounded (a user, a token, a request path an owner can vary without end).

pub mod calendar;
mod counters;
pub mod datacube;
pub mod metric;
pub mod prometheus;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use store::Store;
use store::stats::{CounterRow, PlatformRow, PruneReport, RankPeriod, RankRow, StatsBatch};
use tokio::task::JoinHandle;
use wechat::SharedClock;

pub use counters::{Counter, OTHER_LABEL};
pub use metric::{LoginFailure, LoginStage, Metric, PushKind, RouteOutcome};

use crate::calendar::{day_start, month_start, week_start};
use crate::counters::{Drained, Key, Registry};

/// Settings of [`Stats`]. `Default` suits production.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// How often counts are written to the database (default 5 s). Also the most a crash can
    /// lose.
    pub flush_interval: Duration,
    /// How long hourly rows are kept (default 35 days: the 24-hour and 7-day charts, and a
    /// month to compare with).
    pub hourly_retention: Duration,
    /// How long daily rows, platform totals and ranks are kept (default 3 years).
    pub daily_retention: Duration,
    /// Distinct labels an account may have per open-ended metric (proxied paths, errcodes)
    /// before further ones count as [`OTHER_LABEL`] (default 64).
    pub max_labels: usize,
    /// Counts (key × hour) held in memory while the database refuses them; beyond this the
    /// oldest hours are dropped, logged and counted in [`Stats::dropped`] (default 1,000,000).
    pub max_pending: usize,
    /// The Prometheus metrics the same events are counted in (default none).
    pub metrics: Option<prometheus::Metrics>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(5),
            hourly_retention: Duration::from_secs(35 * 24 * 3600),
            daily_retention: Duration::from_secs(3 * 366 * 24 * 3600),
            max_labels: 64,
            max_pending: 1_000_000,
            metrics: None,
        }
    }
}

/// What can go wrong in statistics.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The database refused a write or a read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The statistics of one process. Cheap to clone; [`Stats::disabled`] (also `Default`)
/// counts nothing.
#[derive(Clone, Default)]
pub struct Stats {
    inner: Option<Arc<Inner>>,
}

pub(crate) struct Inner {
    store: Store,
    pub(crate) clock: SharedClock,
    config: StatsConfig,
    pub(crate) registry: Registry,
    /// Counts drained but not yet written (a failed flush keeps them here).
    pending: Mutex<Drained>,
    /// One flush at a time.
    flushing: tokio::sync::Mutex<()>,
    dropped: AtomicU64,
    flushed: AtomicU64,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("enabled", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Counts written (key × hour).
    pub counters: usize,
    /// Events they add up to.
    pub events: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    /// Statistics written to `store`, by `clock`'s time.
    pub fn new(store: Store, clock: SharedClock, config: StatsConfig) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                registry: Registry::new(config.max_labels.max(1)),
                store,
                clock,
                config,
                pending: Mutex::new(HashMap::new()),
                flushing: tokio::sync::Mutex::new(()),
                dropped: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
            })),
        }
    }

    /// Statistics that count nothing (tests and benchmarks that measure without them).
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether counts are kept.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A handle to one counter, for a hot path (see [`Counter`]).
    pub fn counter(&self, account_id: &str, metric: Metric, label: &str) -> Counter {
        Counter {
            slot: self.inner.as_ref().map(|inner| {
                let now = inner.clock.now_ms();
                (
                    inner.registry.slot(account_id, metric, label, now),
                    inner.clone(),
                )
            }),
        }
    }

    /// Adds `n` to a counter in the current hour.
    pub fn add(&self, account_id: &str, metric: Metric, label: &str, n: u64) {
        if let Some(inner) = &self.inner {
            let now = inner.clock.now_ms();
            inner.registry.add(account_id, metric, label, now, n);
        }
    }

    fn metrics(&self) -> Option<&prometheus::Metrics> {
        self.inner.as_ref()?.config.metrics.as_ref()
    }

    /// A core token fetched and stored.
    pub fn token_refreshed(&self, account_id: &str) {
        self.add(account_id, Metric::TokenRefreshOk, "", 1);
        if let Some(metrics) = self.metrics() {
            metrics.token_refresh(account_id, None);
        }
    }

    /// A core-token fetch failed with WeChat's `errcode` (`None`: no answer from WeChat).
    pub fn token_refresh_failed(&self, account_id: &str, errcode: Option<i64>) {
        let label = errcode.map_or_else(|| "transport".to_owned(), |c| c.to_string());
        self.add(account_id, Metric::TokenRefreshFailed, &label, 1);
        if let Some(metrics) = self.metrics() {
            metrics.token_refresh(account_id, Some(&label));
        }
    }

    /// The counter of token reads with one API key (held by the key's cache entry).
    pub fn token_reads(&self, account_id: &str, api_key_id: &str) -> Counter {
        self.counter(account_id, Metric::TokenReads, api_key_id)
    }

    /// A call through the proxy to `endpoint` (`cgi-bin/…`): WeChat's errcode (`Some(0)` or
    /// `None` for an answer without one counts as success; `Err(())` when WeChat was not
    /// reached), its latency, and whether it was retried after a rejected token.
    pub fn proxy_call(
        &self,
        account_id: &str,
        endpoint: &str,
        errcode: Result<Option<i64>, ()>,
        latency: Duration,
        retried: bool,
    ) {
        if self.inner.is_none() {
            return;
        }
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.add(account_id, Metric::ProxyCalls, endpoint, 1);
        self.add(account_id, Metric::ProxyLatencyMs, endpoint, ms);
        self.add(
            account_id,
            Metric::ProxyLatency,
            metric::latency_bucket(ms),
            1,
        );
        match errcode {
            Ok(None | Some(0)) => {}
            Ok(Some(code)) => self.add(account_id, Metric::ProxyErrors, &code.to_string(), 1),
            Err(()) => self.add(account_id, Metric::ProxyErrors, "upstream", 1),
        }
        if retried {
            self.add(account_id, Metric::ProxyRetries, "", 1);
        }
    }

    /// A step of a login at `website` (its OIDC client id) in `mode`.
    pub fn login(&self, account_id: &str, mode: &str, website: &str, stage: LoginStage) {
        if self.inner.is_some() {
            let label = metric::login_label(mode, website);
            self.add(account_id, Metric::Login(stage), &label, 1);
        }
        if let Some(metrics) = self.metrics() {
            metrics.login(account_id, mode, prometheus::step_outcome(stage));
        }
    }

    /// A login at `website` in `mode` that ended without success.
    pub fn login_failed(&self, account_id: &str, mode: &str, website: &str, why: LoginFailure) {
        if self.inner.is_some() {
            let label = metric::login_label(mode, website);
            self.add(account_id, Metric::LoginFailed(why), &label, 1);
        }
        if let Some(metrics) = self.metrics() {
            metrics.login(account_id, mode, prometheus::failure_outcome(why));
        }
    }

    /// A push processed (the first delivery of it).
    pub fn push(&self, account_id: &str, kind: PushKind) {
        self.add(account_id, Metric::PushReceived, kind.label(), 1);
        if let Some(metrics) = self.metrics() {
            metrics.push(account_id, prometheus::push_kind(kind), "processed");
        }
    }

    /// A push delivered again after it was processed, dropped.
    pub fn push_duplicate(&self, account_id: &str) {
        self.add(account_id, Metric::PushDuplicates, "", 1);
        if let Some(metrics) = self.metrics() {
            metrics.push(account_id, "any", "duplicate");
        }
    }

    /// A push relayed to the owner's server (`ok`: a 2xx answer).
    pub fn push_relayed(&self, account_id: &str, ok: bool) {
        let label = if ok { "ok" } else { "failed" };
        self.add(account_id, Metric::PushRelayed, label, 1);
        if let Some(metrics) = self.metrics() {
            metrics.push(account_id, "relay", label);
        }
    }

    /// A delivery to a push route, and what became of it.
    pub fn push_route(&self, account_id: &str, route_id: &str, outcome: RouteOutcome) {
        let label = format!("{route_id}/{}", outcome.label());
        self.add(account_id, Metric::PushRoute, &label, 1);
        if let Some(metrics) = self.metrics() {
            metrics.push(account_id, "route", outcome.label());
        }
    }

    /// How long a reply route took to answer (or to fail).
    pub fn push_route_reply_latency(&self, account_id: &str, route_id: &str, ms: u64) {
        self.add(account_id, Metric::PushRouteReplies, route_id, 1);
        self.add(account_id, Metric::PushRouteReplyMs, route_id, ms);
    }

    /// An end user created, `via` as stored in `end_users.created_via`.
    pub fn user_created(&self, account_id: &str, via: &str) {
        self.add(account_id, Metric::UsersCreated, via, 1);
    }

    /// An end user unfollowed.
    pub fn user_unsubscribed(&self, account_id: &str) {
        self.add(account_id, Metric::UsersUnsubscribed, "", 1);
    }

    /// Counts dropped because the database refused them for too long (see
    /// [`StatsConfig::max_pending`]).
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Events written to the database by this process so far.
    pub fn flushed(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.flushed.load(Ordering::Relaxed))
    }

    /// Writes everything counted so far (and anything a failed flush kept) in one
    /// transaction. On failure the counts are kept for the next flush.
    pub async fn flush(&self) -> Result<FlushReport, StatsError> {
        let Some(inner) = &self.inner else {
            return Ok(FlushReport::default());
        };
        let _one = inner.flushing.lock().await;
        let mut counts = std::mem::take(&mut *lock(&inner.pending));
        for (key, n) in inner.registry.drain() {
            *counts.entry(key).or_default() += n;
        }
        if counts.is_empty() {
            return Ok(FlushReport::default());
        }
        let report = FlushReport {
            counters: counts.len(),
            events: counts.values().sum(),
        };
        let batch = batch_of(&counts);
        match inner.store.add_stats(&batch).await {
            Ok(()) => {
                inner.flushed.fetch_add(report.events, Ordering::Relaxed);
                if let Some(metrics) = &inner.config.metrics {
                    metrics.stats_written(report.events);
                }
                Ok(report)
            }
            Err(error) => {
                let mut pending = lock(&inner.pending);
                for (key, n) in counts {
                    *pending.entry(key).or_default() += n;
                }
                let over = pending.len().saturating_sub(inner.config.max_pending);
                if over > 0 {
                    let mut hours: Vec<i64> = pending.keys().map(|(_, h)| *h).collect();
                    hours.sort_unstable();
                    let cutoff = hours[over - 1];
                    let mut lost = 0;
                    pending.retain(|(_, hour), n| {
                        let keep = *hour > cutoff;
                        if !keep {
                            lost += *n;
                        }
                        keep
                    });
                    inner.dropped.fetch_add(lost, Ordering::Relaxed);
                    if let Some(metrics) = &inner.config.metrics {
                        metrics.stats_dropped(lost);
                    }
                    tracing::error!(
                        lost,
                        "statistics: the database refused counts for too long; the oldest \
                         hours held in memory were dropped"
                    );
                }
                Err(error.into())
            }
        }
    }

    /// Deletes rows past their retention, as of the clock's time.
    pub async fn prune(&self) -> Result<PruneReport, StatsError> {
        let Some(inner) = &self.inner else {
            return Ok(PruneReport::default());
        };
        let now = inner.clock.now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let hourly_before = now.saturating_sub(ms(inner.config.hourly_retention));
        let daily_before = day_start(now.saturating_sub(ms(inner.config.daily_retention)));
        Ok(inner.store.prune_stats(hourly_before, daily_before).await?)
    }

    /// Starts the flush task: a flush every [`StatsConfig::flush_interval`] and just after
    /// each hour begins (real time), and a prune every hour. A disabled `Stats` starts
    /// nothing.
    pub fn spawn_flusher(&self) -> FlushTask {
        let Some(inner) = &self.inner else {
            return FlushTask {
                stats: self.clone(),
                task: None,
            };
        };
        let stats = self.clone();
        let interval = inner.config.flush_interval.max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                let wait = match &stats.inner {
                    Some(inner) => {
                        let now = inner.clock.now_ms();
                        let to_hour = calendar::hour_start(now) + calendar::HOUR_MS - now;
                        // Right after the hour turns, so an hour's last counts are not held
                        // over into the next one's flush.
                        interval.min(Duration::from_millis(
                            u64::try_from(to_hour + 20).unwrap_or(0),
                        ))
                    }
                    None => interval,
                };
                tokio::time::sleep(wait).await;
                if let Err(error) = stats.flush().await {
                    tracing::warn!(%error, "statistics flush failed; kept for the next one");
                }
                if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                    last_prune = Some(tokio::time::Instant::now());
                    match stats.prune().await {
                        Ok(report) => tracing::debug!(?report, "statistics pruned"),
                        Err(error) => tracing::warn!(%error, "statistics prune failed"),
                    }
                }
            }
        });
        FlushTask {
            stats: self.clone(),
            task: Some(task),
        }
    }
}

/// The running flush task of [`Stats::spawn_flusher`]. Dropping it stops it without a last
/// flush; [`FlushTask::shutdown`] flushes first.
pub struct FlushTask {
    stats: Stats,
    task: Option<JoinHandle<()>>,
}

impl FlushTask {
    /// Stops the task and writes what was counted since its last flush.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Err(error) = self.stats.flush().await {
            tracing::warn!(%error, "last statistics flush failed; those counts are lost");
        }
    }
}

impl Drop for FlushTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The rows of one flush: hourly and daily per account, daily platform totals, and the
/// accounts' day, week and month ranks — each key once.
fn batch_of(counts: &Drained) -> StatsBatch {
    type CounterKey = (Arc<str>, i64, Metric, Arc<str>);
    let mut daily: HashMap<CounterKey, i64> = HashMap::new();
    let mut platform: HashMap<(i64, Metric, String), i64> = HashMap::new();
    let mut ranks: HashMap<(RankPeriod, i64, Arc<str>), (i64, i64)> = HashMap::new();
    let mut batch = StatsBatch::default();
    for ((key, hour), &n) in counts {
        let Key {
            account_id,
            metric,
            label,
        } = key;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        batch.hourly.push(CounterRow {
            account_id: account_id.to_string(),
            start: *hour,
            metric: metric.name().to_owned(),
            label: label.to_string(),
            value: n,
        });
        let day = day_start(*hour);
        *daily
            .entry((account_id.clone(), day, *metric, label.clone()))
            .or_default() += n;
        *platform
            .entry((day, *metric, metric.platform_label(label).to_owned()))
            .or_default() += n;
        let (activity, failures) = (
            if metric.is_activity() { n } else { 0 },
            if metric.is_failure(label) { n } else { 0 },
        );
        if activity > 0 || failures > 0 {
            for (period, start) in [
                (RankPeriod::Day, day),
                (RankPeriod::Week, week_start(*hour)),
                (RankPeriod::Month, month_start(*hour)),
            ] {
                let entry = ranks
                    .entry((period, start, account_id.clone()))
                    .or_default();
                entry.0 += activity;
                entry.1 += failures;
            }
        }
    }
    batch.daily = daily
        .into_iter()
        .map(|((account_id, day, metric, label), value)| CounterRow {
            account_id: account_id.to_string(),
            start: day,
            metric: metric.name().to_owned(),
            label: label.to_string(),
            value,
        })
        .collect();
    batch.platform = platform
        .into_iter()
        .map(|((day, metric, label), value)| PlatformRow {
            day,
            metric: metric.name().to_owned(),
            label,
            value,
        })
        .collect();
    batch.ranks = ranks
        .into_iter()
        .map(
            |((period, start, account_id), (activity, failures))| RankRow {
                period,
                start,
                account_id: account_id.to_string(),
                activity,
                failures,
            },
        )
        .collect();
    batch
}
