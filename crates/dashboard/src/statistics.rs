//! Statistics pages: an account's charts for its owner (and operators), the platform's for
//! operators. Every chart is an SVG drawn on the server (`charts`), with its numbers as a
//! table and as a CSV download. The range is the last 24 hours (hour by hour, from the hourly
//! rows) or the last 7, 30, 90 or 365 China-time days, summed by day, week or month.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use store::stats::{Granularity, RankBy, RankPeriod, RankedAccount, SeriesPoint};

use crate::charts::{Chart, Kind, Series, Size};
use crate::error::DashboardError;
use crate::layout::{self, Ctx};
use crate::session::{OperatorSession, SignedIn};
use crate::{Dashboard, time};
use tenancy::Principal;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// The ranges offered, in days; `1` is the last 24 hours, hour by hour (accounts only: the
/// platform's totals are daily).
const RANGES: [i64; 5] = [1, 7, 30, 90, 365];
/// Accounts in each ranking.
const TOP: u32 = 10;
/// Series drawn on their own in a chart split by label (website, endpoint, API key); the
/// rest are summed as "other", so colours stay distinguishable.
const SPLIT: usize = 5;

/// How the values of a range are summed: one bucket per hour (the 24-hour range), day, week
/// (from Monday) or month, China time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roll {
    Hour,
    Day,
    Week,
    Month,
}

impl Roll {
    fn as_str(self) -> &'static str {
        match self {
            Roll::Hour => "hour",
            Roll::Day => "day",
            Roll::Week => "week",
            Roll::Month => "month",
        }
    }
}

/// `?days=30&by=week&chart=logins`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Params {
    days: Option<i64>,
    by: String,
    chart: String,
}

impl Params {
    fn days(&self, hourly: bool) -> i64 {
        self.days
            .filter(|d| RANGES.contains(d) && (hourly || *d > 1))
            .unwrap_or(30)
    }

    /// The roll-up asked for, when the range allows it: weeks from 30 days, months from 90.
    fn roll(&self, days: i64) -> Roll {
        match (days, self.by.as_str()) {
            (1, _) => Roll::Hour,
            (d, "week") if d >= 30 => Roll::Week,
            (d, "month") if d >= 90 => Roll::Month,
            _ => Roll::Day,
        }
    }
}

/// The buckets of a range ending now: their starts, their labels, and `[from, to)`.
struct Buckets {
    roll: Roll,
    starts: Vec<i64>,
    labels: Vec<String>,
    from: i64,
    to: i64,
}

impl Buckets {
    fn ending_now(now: i64, days: i64, roll: Roll) -> Buckets {
        let (from, to) = if roll == Roll::Hour {
            let hour = stats::calendar::hour_start(now);
            (hour - 23 * HOUR_MS, hour + HOUR_MS)
        } else {
            let today = stats::calendar::day_start(now);
            (today - (days - 1) * DAY_MS, today + DAY_MS)
        };
        let mut starts = Vec::new();
        let mut at = from;
        while at < to {
            starts.push(at);
            at = match roll {
                Roll::Hour => at + HOUR_MS,
                Roll::Day => at + DAY_MS,
                Roll::Week => stats::calendar::week_start(at) + 7 * DAY_MS,
                Roll::Month => stats::calendar::next_month_start(at),
            };
        }
        // A week or month that began before the range is labelled by the range's first day.
        let labels = starts
            .iter()
            .map(|&start| {
                let text = time::format(start);
                match roll {
                    Roll::Hour => text[11..16].to_owned(),
                    Roll::Day if days <= 90 => text[5..10].to_owned(),
                    Roll::Day | Roll::Week => text[..10].to_owned(),
                    Roll::Month => text[..7].to_owned(),
                }
            })
            .collect();
        Buckets {
            roll,
            starts,
            labels,
            from,
            to,
        }
    }

    fn granularity(&self) -> Granularity {
        if self.roll == Roll::Hour {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }

    /// The bucket of the hour or day starting at `start`, if it is in the range.
    fn index(&self, start: i64) -> Option<usize> {
        if start < self.from || start >= self.to {
            return None;
        }
        self.starts.partition_point(|&s| s <= start).checked_sub(1)
    }

    /// The sum per bucket of the points whose metric and label `keep` accepts.
    fn sum_where(&self, points: &[SeriesPoint], keep: impl Fn(&SeriesPoint) -> bool) -> Vec<i64> {
        let mut values = vec![0; self.starts.len()];
        for point in points.iter().filter(|p| keep(p)) {
            if let Some(i) = self.index(point.start) {
                values[i] += point.value;
            }
        }
        values
    }

    /// The sum per bucket of `metric`'s points whose label `keep` accepts.
    fn sum(&self, points: &[SeriesPoint], metric: &str, keep: impl Fn(&str) -> bool) -> Vec<i64> {
        self.sum_where(points, |p| p.metric == metric && keep(&p.label))
    }

    /// The sum per bucket of every metric starting with `prefix`.
    fn sum_prefix(&self, points: &[SeriesPoint], prefix: &str) -> Vec<i64> {
        self.sum_where(points, |p| p.metric.starts_with(prefix))
    }

    /// `metric` split by label: the [`SPLIT`] largest labels over the range each as a series
    /// named by `name`, the rest together as "other".
    fn split(
        &self,
        ctx: &Ctx,
        points: &[SeriesPoint],
        metric: &str,
        name: impl Fn(&str) -> String,
    ) -> Vec<Series> {
        let mut totals: Vec<(&str, i64)> = Vec::new();
        for point in points.iter().filter(|p| p.metric == metric) {
            match totals.iter_mut().find(|(label, _)| *label == point.label) {
                Some((_, total)) => *total += point.value,
                None => totals.push((&point.label, point.value)),
            }
        }
        totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let own: Vec<&str> = totals.iter().take(SPLIT).map(|(l, _)| *l).collect();
        let mut out: Vec<Series> = own
            .iter()
            .map(|label| Series {
                label: name(label),
                values: self.sum(points, metric, |l| l == *label),
            })
            .collect();
        if totals.len() > SPLIT {
            out.push(Series {
                label: ctx.t("stats.other").to_owned(),
                values: self.sum(points, metric, |l| !own.contains(&l)),
            });
        }
        out
    }

    /// What the bucket column is called in tables and CSV files.
    fn header<'a>(&self, ctx: &'a Ctx) -> &'a str {
        ctx.t(match self.roll {
            Roll::Hour => "stats.hour",
            Roll::Day => "stats.day",
            Roll::Week => "stats.week",
            Roll::Month => "stats.month",
        })
    }
}

fn series(ctx: &Ctx, key: &str, values: Vec<i64>) -> Series {
    Series {
        label: ctx.t(key).to_owned(),
        values,
    }
}

/// Names of an account's websites and API keys, for the series split by them.
#[derive(Default)]
struct Names {
    websites: Vec<(String, String)>,
    keys: Vec<(String, String)>,
}

impl Names {
    fn find<'a>(list: &'a [(String, String)], id: &str) -> Option<&'a str> {
        list.iter().find(|(i, _)| i == id).map(|(_, n)| n.as_str())
    }

    /// `follow_required/{website id}` → "Tea shop · follow required"; the platform's labels
    /// are the mode alone.
    fn login(&self, ctx: &Ctx, label: &str) -> String {
        let (mode, website) = label.split_once('/').unwrap_or((label, ""));
        let mode = match mode {
            "follow_required" => ctx.t("stats.mode_follow_required"),
            "userinfo" => ctx.t("stats.mode_userinfo"),
            other => other,
        };
        if website.is_empty() {
            return mode.to_owned();
        }
        let site = Self::find(&self.websites, website).unwrap_or(ctx.t("stats.deleted_website"));
        format!("{site} · {mode}")
    }

    fn key(&self, ctx: &Ctx, id: &str) -> String {
        if id.is_empty() {
            return ctx.t("stats.reads").to_owned();
        }
        Self::find(&self.keys, id)
            .unwrap_or(ctx.t("stats.deleted_key"))
            .to_owned()
    }
}

/// The charts every statistics page shows, from `points` (an account's or the platform's).
fn charts(ctx: &Ctx, buckets: &Buckets, points: &[SeriesPoint], names: &Names) -> Vec<Chart> {
    let any = |_: &str| true;
    let chart = |id: &'static str, key: &str, kind: Kind, series: Vec<Series>| Chart {
        id,
        title: ctx.t(key).to_owned(),
        kind,
        buckets: buckets.labels.clone(),
        series,
    };
    let over_range = |id: &'static str, key: &str, steps: &[(&str, &str)]| Chart {
        id,
        title: ctx.t(key).to_owned(),
        kind: Kind::Funnel,
        buckets: steps.iter().map(|(_, k)| ctx.t(k).to_owned()).collect(),
        series: vec![Series {
            label: ctx.t("stats.logins").to_owned(),
            values: steps
                .iter()
                .map(|(metric, _)| {
                    points
                        .iter()
                        .filter(|p| p.metric == *metric && buckets.index(p.start).is_some())
                        .map(|p| p.value)
                        .sum()
                })
                .collect(),
        }],
    };
    vec![
        chart(
            "refreshes",
            "stats.refreshes",
            Kind::StackedBars,
            vec![
                series(
                    ctx,
                    "stats.ok",
                    buckets.sum(points, "token.refresh.ok", any),
                ),
                series(
                    ctx,
                    "stats.failed",
                    buckets.sum(points, "token.refresh.failed", any),
                ),
            ],
        ),
        chart(
            "token_reads",
            "stats.token_reads",
            Kind::StackedBars,
            buckets.split(ctx, points, "token.reads", |id| names.key(ctx, id)),
        ),
        chart(
            "proxy",
            "stats.proxy",
            Kind::Lines,
            vec![
                series(ctx, "stats.calls", buckets.sum(points, "proxy.calls", any)),
                series(
                    ctx,
                    "stats.errors",
                    buckets.sum(points, "proxy.errors", any),
                ),
            ],
        ),
        chart(
            "proxy_endpoints",
            "stats.proxy_endpoints",
            Kind::StackedBars,
            buckets.split(ctx, points, "proxy.calls", str::to_owned),
        ),
        chart(
            "logins",
            "stats.logins",
            Kind::StackedBars,
            vec![
                series(
                    ctx,
                    "stats.completed",
                    buckets.sum(points, "login.completed", any),
                ),
                series(
                    ctx,
                    "stats.failed",
                    buckets.sum_prefix(points, "login.failed."),
                ),
            ],
        ),
        chart(
            "logins_by_site",
            "stats.logins_by_site",
            Kind::StackedBars,
            buckets.split(ctx, points, "login.completed", |l| names.login(ctx, l)),
        ),
        over_range("funnel", "stats.funnel", &FUNNEL),
        over_range("login_failures", "stats.why_failed", &FAILURES),
        chart(
            "pushes",
            "stats.pushes",
            Kind::StackedBars,
            [
                "subscribe",
                "subscribe_scene",
                "unsubscribe",
                "scan",
                "other",
            ]
            .into_iter()
            .map(|kind| Series {
                label: ctx.t(&format!("stats.push_{kind}")).to_owned(),
                values: buckets.sum(points, "push.received", |l| l == kind),
            })
            .collect(),
        ),
        chart(
            "users",
            "stats.users",
            Kind::StackedBars,
            vec![
                series(
                    ctx,
                    "stats.users_push",
                    buckets.sum(points, "users.created", |l| l == "push"),
                ),
                series(
                    ctx,
                    "stats.users_login",
                    buckets.sum(points, "users.created", |l| l.starts_with("login")),
                ),
                series(
                    ctx,
                    "stats.unsubscribed",
                    buckets.sum(points, "users.unsubscribed", any),
                ),
            ],
        ),
    ]
}

/// WeChat's follower charts from the synced datacube rows (daily: none for the 24-hour
/// range). A bucket's follower count is its last day's.
fn follower_charts(
    ctx: &Ctx,
    buckets: &Buckets,
    summary: &[store::datacube::UserSummaryDay],
    cumulate: &[store::datacube::UserCumulateDay],
) -> Vec<Chart> {
    if buckets.roll == Roll::Hour {
        return Vec::new();
    }
    let n = buckets.starts.len();
    let (mut new, mut lost, mut total) = (vec![0; n], vec![0; n], vec![0; n]);
    for row in summary {
        if let Some(i) = buckets.index(row.day) {
            new[i] += row.new_user;
            lost[i] += row.cancel_user;
        }
    }
    let mut latest = vec![i64::MIN; n];
    for row in cumulate {
        if let Some(i) = buckets.index(row.day).filter(|&i| row.day > latest[i]) {
            latest[i] = row.day;
            total[i] = row.cumulate_user;
        }
    }
    let net = new.iter().zip(&lost).map(|(n, l)| n - l).collect();
    vec![
        Chart {
            id: "followers",
            title: ctx.t("stats.followers").to_owned(),
            kind: Kind::Lines,
            buckets: buckets.labels.clone(),
            series: vec![series(ctx, "stats.followers_total", total)],
        },
        Chart {
            id: "follows",
            title: ctx.t("stats.follows").to_owned(),
            kind: Kind::Lines,
            buckets: buckets.labels.clone(),
            series: vec![
                series(ctx, "stats.follows_new", new),
                series(ctx, "stats.follows_lost", lost),
                series(ctx, "stats.follows_net", net),
            ],
        },
    ]
}

/// An account's charts: wxhub's counters, then WeChat's follower statistics.
async fn account_charts(
    dashboard: &Dashboard,
    ctx: &Ctx,
    person: &SignedIn,
    appid: &str,
    buckets: &Buckets,
) -> Result<Vec<Chart>, DashboardError> {
    let tenancy = dashboard.tenancy();
    let principal = &person.principal;
    let points = tenancy
        .account_series(
            principal,
            appid,
            buckets.granularity(),
            buckets.from,
            buckets.to,
            &[],
        )
        .await?;
    let names = Names {
        websites: tenancy
            .list_websites(principal, appid)
            .await?
            .into_iter()
            .map(|w| (w.id, w.name))
            .collect(),
        // Operators see keys too (the page lists them); a refusal only drops the names.
        keys: match tenancy.list_api_keys(principal, appid).await {
            Ok(keys) => keys.into_iter().map(|k| (k.id, k.label)).collect(),
            Err(_) => Vec::new(),
        },
    };
    let mut all = charts(ctx, buckets, &points, &names);
    if buckets.roll != Roll::Hour {
        let (summary, cumulate) = tenancy
            .account_followers(principal, appid, buckets.from, buckets.to)
            .await?;
        all.extend(follower_charts(ctx, buckets, &summary, &cumulate));
    }
    Ok(all)
}

/// A chart as a page shows it.
pub(crate) struct ChartView {
    id: &'static str,
    title: String,
    /// Nothing was counted in the range: a line says so instead of an empty drawing.
    empty: bool,
    wide: String,
    narrow: String,
    legend: Vec<(String, String)>,
    /// What the table's first column holds (hours, days, weeks, months, or steps).
    bucket_header: String,
    headers: Vec<String>,
    rows: Vec<(String, Vec<i64>)>,
    csv: String,
}

/// The query of a range and roll-up, as links carry it.
fn range_query(days: i64, roll: Roll) -> String {
    match roll {
        Roll::Week | Roll::Month => format!("days={days}&by={}", roll.as_str()),
        Roll::Hour | Roll::Day => format!("days={days}"),
    }
}

fn bucket_header(ctx: &Ctx, buckets: &Buckets, chart: &Chart) -> String {
    if chart.kind == Kind::Funnel {
        ctx.t("stats.step").to_owned()
    } else {
        buckets.header(ctx).to_owned()
    }
}

fn views(
    ctx: &Ctx,
    charts: Vec<Chart>,
    csv_base: &str,
    buckets: &Buckets,
    days: i64,
) -> Vec<ChartView> {
    charts
        .into_iter()
        .map(|chart| ChartView {
            id: chart.id,
            empty: chart.is_empty(),
            wide: chart.svg(Size::Wide, ctx.t("stats.no_data")),
            narrow: chart.svg(Size::Narrow, ctx.t("stats.no_data")),
            legend: chart.legend(),
            bucket_header: bucket_header(ctx, buckets, &chart),
            headers: chart.series.iter().map(|s| s.label.clone()).collect(),
            rows: chart.rows(),
            csv: format!(
                "{csv_base}?{}&chart={}",
                range_query(days, buckets.roll),
                chart.id
            ),
            title: chart.title,
        })
        .collect()
}

/// A link of the range or roll-up choices.
pub(crate) struct RangeLink {
    label: String,
    href: String,
    current: bool,
}

fn ranges(ctx: &Ctx, base: &str, days: i64, hourly: bool) -> Vec<RangeLink> {
    RANGES
        .iter()
        .filter(|&&d| hourly || d > 1)
        .map(|&d| RangeLink {
            label: if d == 1 {
                ctx.t("stats.last_24h").to_owned()
            } else {
                ctx.tf("stats.last_days", &[("n", &d.to_string())])
            },
            href: format!("{base}?days={d}"),
            current: d == days,
        })
        .collect()
}

/// The roll-ups the range allows (none for 24 hours and 7 days).
fn rolls(ctx: &Ctx, base: &str, days: i64, roll: Roll) -> Vec<RangeLink> {
    let allowed: &[Roll] = match days {
        ..=7 => &[],
        8..=89 => &[Roll::Day, Roll::Week],
        _ => &[Roll::Day, Roll::Week, Roll::Month],
    };
    allowed
        .iter()
        .map(|&r| RangeLink {
            label: ctx.t(&format!("stats.by_{}", r.as_str())).to_owned(),
            href: format!("{base}?{}", range_query(days, r)),
            current: r == roll,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "stats/stats.html")]
struct StatsPage {
    ctx: Ctx,
    title: String,
    back: Option<(String, String)>,
    ranges: Vec<RangeLink>,
    rolls: Vec<RangeLink>,
    charts: Vec<ChartView>,
    busiest: Vec<RankedAccount>,
    failing: Vec<RankedAccount>,
    platform: bool,
}

const FUNNEL: [(&str, &str); 5] = [
    ("login.started", "stats.funnel_started"),
    ("login.returned", "stats.funnel_returned"),
    ("login.follow_page", "stats.funnel_follow_page"),
    ("login.followed", "stats.funnel_followed"),
    ("login.completed", "stats.funnel_completed"),
];

const FAILURES: [(&str, &str); 7] = [
    ("login.failed.not_following", "stats.why_not_following"),
    ("login.failed.consent_refused", "stats.why_consent_refused"),
    ("login.failed.snapshot_user", "stats.why_snapshot_user"),
    ("login.failed.expired", "stats.why_expired"),
    ("login.failed.pkce", "stats.why_pkce"),
    ("login.failed.redirect_uri", "stats.why_redirect_uri"),
    ("login.failed.other", "stats.why_other"),
];

/// `GET /dashboard/accounts/{appid}/stats`.
pub(crate) async fn account(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, DashboardError> {
    let view = dashboard
        .tenancy()
        .account(&person.principal, &appid)
        .await?;
    let days = params.days(true);
    let buckets = Buckets::ending_now(dashboard.now(), days, params.roll(days));
    let section = if person.principal.owner_id().is_some() {
        "accounts"
    } else {
        "all_accounts"
    };
    let ctx = Ctx::new(&dashboard, &person.visitor).in_section(section);
    let all = account_charts(&dashboard, &ctx, &person, &appid, &buckets).await?;
    let base = format!("/dashboard/accounts/{}/stats", view.account.appid);
    let page = StatsPage {
        title: ctx.tf("stats.account_title", &[("name", &view.account.name)]),
        back: Some((
            format!("/dashboard/accounts/{}", view.account.appid),
            view.account.name.clone(),
        )),
        ranges: ranges(&ctx, &base, days, true),
        rolls: rolls(&ctx, &base, days, buckets.roll),
        charts: views(&ctx, all, &format!("{base}.csv"), &buckets, days),
        busiest: Vec::new(),
        failing: Vec::new(),
        platform: false,
        ctx,
    };
    Ok(layout::page(StatusCode::OK, &page))
}

/// The platform's charts over `buckets`.
async fn platform_charts(
    dashboard: &Dashboard,
    ctx: &Ctx,
    operator: &Principal,
    buckets: &Buckets,
) -> Result<Vec<Chart>, DashboardError> {
    let points = dashboard
        .tenancy()
        .platform_series(operator, buckets.from, buckets.to, &[])
        .await?;
    Ok(charts(ctx, buckets, &points, &Names::default()))
}

/// `GET /dashboard/operator/stats`.
pub(crate) async fn platform(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(params): Query<Params>,
) -> Result<Response, DashboardError> {
    let now = dashboard.now();
    let days = params.days(false);
    let buckets = Buckets::ending_now(now, days, params.roll(days));
    let tenancy = dashboard.tenancy();
    // The rankings of this week for the 7-day range, of this month otherwise.
    let (period, start) = if days == 7 {
        (RankPeriod::Week, stats::calendar::week_start(now))
    } else {
        (RankPeriod::Month, stats::calendar::month_start(now))
    };
    let busiest = tenancy
        .top_accounts(&operator.principal, period, start, RankBy::Activity, TOP)
        .await?;
    let failing = tenancy
        .top_accounts(&operator.principal, period, start, RankBy::Failures, TOP)
        .await?;
    let ctx = Ctx::new(&dashboard, &operator.visitor).in_section("stats");
    let all = platform_charts(&dashboard, &ctx, &operator.principal, &buckets).await?;
    let base = "/dashboard/operator/stats";
    let page = StatsPage {
        title: ctx.t("stats.platform_title").to_owned(),
        back: None,
        ranges: ranges(&ctx, base, days, false),
        rolls: rolls(&ctx, base, days, buckets.roll),
        charts: views(&ctx, all, &format!("{base}.csv"), &buckets, days),
        busiest,
        failing,
        platform: true,
        ctx,
    };
    Ok(layout::page(StatusCode::OK, &page))
}

fn csv_response(chart: &Chart, file: &str, bucket_header: &str) -> Response {
    let mut response = chart.csv(bucket_header).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

fn pick(charts: Vec<Chart>, id: &str) -> Result<Chart, DashboardError> {
    charts
        .into_iter()
        .find(|c| c.id == id)
        .ok_or(DashboardError::NotFound)
}

/// `GET /dashboard/accounts/{appid}/stats.csv?chart=…`: one chart's numbers.
pub(crate) async fn account_csv(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, DashboardError> {
    let view = dashboard
        .tenancy()
        .account(&person.principal, &appid)
        .await?;
    let days = params.days(true);
    let buckets = Buckets::ending_now(dashboard.now(), days, params.roll(days));
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let all = account_charts(&dashboard, &ctx, &person, &appid, &buckets).await?;
    let chart = pick(all, &params.chart)?;
    let file = format!(
        "wxhub-{}-{}-{}d-{}.csv",
        view.account.appid,
        chart.id,
        days,
        buckets.roll.as_str()
    );
    Ok(csv_response(
        &chart,
        &file,
        &bucket_header(&ctx, &buckets, &chart),
    ))
}

/// `GET /dashboard/operator/stats.csv?chart=…`.
pub(crate) async fn platform_csv(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(params): Query<Params>,
) -> Result<Response, DashboardError> {
    let days = params.days(false);
    let buckets = Buckets::ending_now(dashboard.now(), days, params.roll(days));
    let ctx = Ctx::new(&dashboard, &operator.visitor);
    let all = platform_charts(&dashboard, &ctx, &operator.principal, &buckets).await?;
    let chart = pick(all, &params.chart)?;
    let file = format!(
        "wxhub-platform-{}-{}d-{}.csv",
        chart.id,
        days,
        buckets.roll.as_str()
    );
    Ok(csv_response(
        &chart,
        &file,
        &bucket_header(&ctx, &buckets, &chart),
    ))
}
