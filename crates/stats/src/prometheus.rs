//! Prometheus metrics of one replica, exposed by `/metrics` in the OpenMetrics text format
//! (which Prometheus scrapes natively), with the Prometheus project's own client
//! (`prometheus-client`).
//!
//! Every label has a bounded set of values: routes are the router's patterns (never a
//! request's path), methods and statuses HTTP's, modes, steps, reasons and kinds fixed sets,
//! errcodes WeChat's. No series is per account or per user unless
//! [`MetricsConfig::per_account`] is set (for small installs: then refreshes, logins and
//! pushes carry an `account` label).
//!
//! Counts come from the same calls that feed the statistics tables ([`crate::Stats`] holds a
//! [`Metrics`]) and from the HTTP layer ([`Metrics::http_request`]); gauges that the database
//! knows (accounts by token state, the datacube sync's lag, the pool) are set by the scrape
//! handler just before [`Metrics::encode`].

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metric::{LoginFailure, LoginStage, PushKind};

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Settings of [`Metrics`].
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Label refreshes, logins and pushes with the account id (default off: with many
    /// accounts that is too many series).
    pub per_account: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    result: &'static str,
    errcode: String,
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    mode: String,
    outcome: &'static str,
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    kind: &'static str,
    outcome: &'static str,
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The metrics of one process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("per_account", &self.inner.config.per_account)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: MetricsConfig,
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: HistogramFamily,
    token_refreshes: Family<RefreshLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
    pushes: Family<PushLabels, Counter>,
    accounts: Family<StateLabels, Gauge>,
    db_connections: Family<StateLabels, Gauge>,
    datacube_lag: Gauge,
    datacube_accounts: Gauge,
    scheduler_pass_age: Gauge,
    stats_written: Counter,
    stats_dropped: Counter,
    process_cpu: Counter<f64, AtomicU64>,
    process_rss: Gauge,
    process_fds: Gauge,
    process_start: Gauge,
    last_cpu: Mutex<f64>,
}

impl Metrics {
    /// A fresh set of metrics, all at zero.
    pub fn new(config: MetricsConfig) -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "wxhub_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "wxhub_http_request_duration_seconds",
            "Time to answer HTTP requests, by route pattern and method",
            http_seconds.clone(),
        );
        let token_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "wxhub_token_refreshes",
            "Core-token fetches from WeChat, by result and errcode",
            token_refreshes.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "wxhub_logins",
            "Login steps and failures, by mode and outcome (a step or a reason)",
            logins.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "wxhub_pushes",
            "Pushes from WeChat by kind and outcome (processed, duplicate), and relays to \
             owners' servers (kind relay, outcome ok or failed)",
            pushes.clone(),
        );
        let accounts = Family::<StateLabels, Gauge>::default();
        registry.register(
            "wxhub_accounts",
            "Accounts by the state of their core token",
            accounts.clone(),
        );
        let db_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "wxhub_db_connections",
            "Database pool connections, idle and in use",
            db_connections.clone(),
        );
        let datacube_lag = Gauge::default();
        registry.register(
            "wxhub_datacube_sync_lag_seconds",
            "Time from the end of the oldest day every synced account has from WeChat's \
             statistics to now (0 when none is synced yet)",
            datacube_lag.clone(),
        );
        let datacube_accounts = Gauge::default();
        registry.register(
            "wxhub_datacube_sync_accounts",
            "Accounts whose WeChat statistics are synced",
            datacube_accounts.clone(),
        );
        let scheduler_pass_age = Gauge::default();
        registry.register(
            "wxhub_scheduler_last_pass_age_seconds",
            "Seconds since the core-token scheduler last finished a pass",
            scheduler_pass_age.clone(),
        );
        let stats_written = Counter::default();
        registry.register(
            "wxhub_stats_written",
            "Statistics values written to the database",
            stats_written.clone(),
        );
        let stats_dropped = Counter::default();
        registry.register(
            "wxhub_stats_dropped",
            "Statistics values dropped because the database refused them for too long",
            stats_dropped.clone(),
        );
        // The process_* names are the Prometheus convention, without wxhub's prefix.
        let process_cpu = Counter::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time spent",
            process_cpu.clone(),
        );
        let process_rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size",
            process_rss.clone(),
        );
        let process_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            process_fds.clone(),
        );
        let process_start = Gauge::default();
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            process_start.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                config,
                registry,
                http_requests,
                http_seconds,
                token_refreshes,
                logins,
                pushes,
                accounts,
                db_connections,
                datacube_lag,
                datacube_accounts,
                scheduler_pass_age,
                stats_written,
                stats_dropped,
                process_cpu,
                process_rss,
                process_fds,
                process_start,
                last_cpu: Mutex::new(0.0),
            }),
        }
    }

    fn account(&self, account_id: &str) -> String {
        if self.inner.config.per_account {
            account_id.to_owned()
        } else {
            String::new()
        }
    }

    /// An HTTP request answered: `route` is the matched route's pattern (`/t/{appid}/token`),
    /// never the request's path.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn token_refresh(&self, account_id: &str, errcode: Option<&str>) {
        let (result, errcode) = match errcode {
            None => ("ok", String::new()),
            Some(code) => ("failed", code.to_owned()),
        };
        self.inner
            .token_refreshes
            .get_or_create(&RefreshLabels {
                result,
                errcode,
                account: self.account(account_id),
            })
            .inc();
    }

    pub(crate) fn login(&self, account_id: &str, mode: &str, outcome: &'static str) {
        self.inner
            .logins
            .get_or_create(&LoginLabels {
                mode: mode.to_owned(),
                outcome,
                account: self.account(account_id),
            })
            .inc();
    }

    pub(crate) fn push(&self, account_id: &str, kind: &'static str, outcome: &'static str) {
        self.inner
            .pushes
            .get_or_create(&PushLabels {
                kind,
                outcome,
                account: self.account(account_id),
            })
            .inc();
    }

    pub(crate) fn stats_written(&self, values: u64) {
        self.inner.stats_written.inc_by(values);
    }

    pub(crate) fn stats_dropped(&self, values: u64) {
        self.inner.stats_dropped.inc_by(values);
    }

    /// Sets the accounts per token state (`(state, count)`; states not given go to 0).
    pub fn set_accounts_by_token_state(&self, counts: &[(&str, i64)]) {
        self.inner.accounts.clear();
        for (state, n) in counts {
            self.inner
                .accounts
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(*n);
        }
    }

    /// Sets the database pool's connections.
    pub fn set_db_connections(&self, idle: i64, in_use: i64) {
        for (state, n) in [("idle", idle), ("in_use", in_use)] {
            self.inner
                .db_connections
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(n);
        }
    }

    /// Sets the datacube sync's lag (seconds) and how many accounts it syncs.
    pub fn set_datacube(&self, lag_secs: i64, accounts: i64) {
        self.inner.datacube_lag.set(lag_secs);
        self.inner.datacube_accounts.set(accounts);
    }

    /// Sets the seconds since the scheduler's last pass.
    pub fn set_scheduler_pass_age(&self, secs: i64) {
        self.inner.scheduler_pass_age.set(secs);
    }

    /// The whole exposition, with the process metrics read now.
    pub fn encode(&self) -> String {
        self.sample_process();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// CPU time, memory, descriptors and start time from `/proc` (Linux; elsewhere they
    /// stay at 0).
    fn sample_process(&self) {
        let Some(process) = read_process() else {
            return;
        };
        let mut last = self
            .inner
            .last_cpu
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if process.cpu_seconds > *last {
            self.inner.process_cpu.inc_by(process.cpu_seconds - *last);
            *last = process.cpu_seconds;
        }
        self.inner.process_rss.set(process.rss_bytes);
        self.inner.process_fds.set(process.open_fds);
        self.inner.process_start.set(process.start_time);
    }
}

struct ProcessSample {
    cpu_seconds: f64,
    rss_bytes: i64,
    open_fds: i64,
    start_time: i64,
}

fn read_process() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14 and 15 (1-based), starttime 22, rss 24; `rest` starts at 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();
    // The kernel's clock ticks and page size are 100 and 4096 on every Linux wxhub runs on.
    const TICKS: f64 = 100.0;
    const PAGE: i64 = 4096;
    let cpu_seconds = (field(14)? + field(15)?) as f64 / TICKS;
    let rss_bytes = field(24)? * PAGE;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<i64>()
        .ok()?;
    let start_time = boot + field(22)? / 100;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| i64::try_from(d.count()).unwrap_or(0))
        .unwrap_or(0);
    Some(ProcessSample {
        cpu_seconds,
        rss_bytes,
        open_fds,
        start_time,
    })
}

/// The outcome label of a login step.
pub(crate) fn step_outcome(stage: LoginStage) -> &'static str {
    match stage {
        LoginStage::Started => "started",
        LoginStage::Returned => "returned",
        LoginStage::FollowPage => "follow_page",
        LoginStage::Followed => "followed",
        LoginStage::Completed => "completed",
    }
}

/// The outcome label of a failed login.
pub(crate) fn failure_outcome(why: LoginFailure) -> &'static str {
    match why {
        LoginFailure::NotFollowing => "failed_not_following",
        LoginFailure::ConsentRefused => "failed_consent_refused",
        LoginFailure::SnapshotUser => "failed_snapshot_user",
        LoginFailure::Expired => "failed_expired",
        LoginFailure::Pkce => "failed_pkce",
        LoginFailure::RedirectUri => "failed_redirect_uri",
        LoginFailure::Other => "failed_other",
    }
}

/// The kind label of a push.
pub(crate) fn push_kind(kind: PushKind) -> &'static str {
    kind.label()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_without_accounts_unless_asked_for() {
        let metrics = Metrics::new(MetricsConfig::default());
        metrics.token_refresh("acct-1", None);
        metrics.token_refresh("acct-1", Some("40164"));
        metrics.login("acct-1", "userinfo", step_outcome(LoginStage::Completed));
        metrics.login(
            "acct-1",
            "follow_required",
            failure_outcome(LoginFailure::Pkce),
        );
        metrics.push("acct-1", push_kind(PushKind::Scan), "processed");
        metrics.http_request("/t/{appid}/token", "POST", 200, Duration::from_millis(3));
        let text = metrics.encode();
        for line in [
            r#"wxhub_token_refreshes_total{result="ok",errcode="",account=""} 1"#,
            r#"wxhub_token_refreshes_total{result="failed",errcode="40164",account=""} 1"#,
            r#"wxhub_logins_total{mode="userinfo",outcome="completed",account=""} 1"#,
            r#"wxhub_logins_total{mode="follow_required",outcome="failed_pkce",account=""} 1"#,
            r#"wxhub_pushes_total{kind="scan",outcome="processed",account=""} 1"#,
            r#"wxhub_http_requests_total{route="/t/{appid}/token",method="POST",status="200"} 1"#,
            r#"wxhub_http_request_duration_seconds_bucket{le="0.005",route="/t/{appid}/token",method="POST"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("acct-1"));
        let small = Metrics::new(MetricsConfig { per_account: true });
        small.login("acct-1", "userinfo", "started");
        assert!(small.encode().contains(r#"account="acct-1""#));
    }
}
