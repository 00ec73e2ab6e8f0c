//! Statistics pages: an account's charts for its owner (and operators), the platform's for
//! operators. Every chart is an SVG drawn on the server (`charts`), with its numbers as a
//! table and as a CSV download; the range is the last 7, 30, 90 or 365 China-time days.

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

const DAY_MS: i64 = 86_400_000;
/// The ranges offered, in days.
const RANGES: [i64; 4] = [7, 30, 90, 365];
/// Accounts in each ranking.
const TOP: u32 = 10;

/// `?days=30&chart=logins`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Params {
    days: Option<i64>,
    chart: String,
}

impl Params {
    fn days(&self) -> i64 {
        self.days.filter(|d| RANGES.contains(d)).unwrap_or(30)
    }
}

/// The days of a range ending today: their starts, and `[from, to)`.
struct Days {
    starts: Vec<i64>,
    from: i64,
    to: i64,
}

impl Days {
    fn ending_today(now: i64, days: i64) -> Days {
        let today = stats::calendar::day_start(now);
        let from = today - (days - 1) * DAY_MS;
        Days {
            starts: (0..days).map(|d| from + d * DAY_MS).collect(),
            from,
            to: today + DAY_MS,
        }
    }

    /// `MM-DD` (China time), or `YYYY-MM-DD` for a year's range.
    fn labels(&self) -> Vec<String> {
        let long = self.starts.len() > 90;
        self.starts
            .iter()
            .map(|&start| {
                let text = time::format(start);
                if long {
                    text[..10].to_owned()
                } else {
                    text[5..10].to_owned()
                }
            })
            .collect()
    }

    /// The sum per day of the points whose metric and label `keep` accepts.
    fn sum_where(&self, points: &[SeriesPoint], keep: impl Fn(&SeriesPoint) -> bool) -> Vec<i64> {
        let mut values = vec![0; self.starts.len()];
        for point in points.iter().filter(|p| keep(p)) {
            let i = (point.start - self.from).div_euclid(DAY_MS);
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| values.get_mut(i)) {
                *slot += point.value;
            }
        }
        values
    }

    /// The sum per day of `metric`'s points whose label `keep` accepts.
    fn sum(&self, points: &[SeriesPoint], metric: &str, keep: impl Fn(&str) -> bool) -> Vec<i64> {
        self.sum_where(points, |p| p.metric == metric && keep(&p.label))
    }

    /// The sum per day of every metric starting with `prefix`.
    fn sum_prefix(&self, points: &[SeriesPoint], prefix: &str) -> Vec<i64> {
        self.sum_where(points, |p| p.metric.starts_with(prefix))
    }
}

fn series(ctx: &Ctx, key: &str, values: Vec<i64>) -> Series {
    Series {
        label: ctx.t(key).to_owned(),
        values,
    }
}

/// The charts every statistics page shows, from `points` (an account's or the platform's).
fn charts(ctx: &Ctx, days: &Days, points: &[SeriesPoint]) -> Vec<Chart> {
    let any = |_: &str| true;
    let buckets = days.labels();
    let chart = |id: &'static str, key: &str, kind: Kind, series: Vec<Series>| Chart {
        id,
        title: ctx.t(key).to_owned(),
        kind,
        buckets: buckets.clone(),
        series,
    };
    vec![
        chart(
            "refreshes",
            "stats.refreshes",
            Kind::StackedBars,
            vec![
                series(ctx, "stats.ok", days.sum(points, "token.refresh.ok", any)),
                series(
                    ctx,
                    "stats.failed",
                    days.sum(points, "token.refresh.failed", any),
                ),
            ],
        ),
        chart(
            "token_reads",
            "stats.token_reads",
            Kind::StackedBars,
            vec![series(
                ctx,
                "stats.reads",
                days.sum(points, "token.reads", any),
            )],
        ),
        chart(
            "proxy",
            "stats.proxy",
            Kind::Lines,
            vec![
                series(ctx, "stats.calls", days.sum(points, "proxy.calls", any)),
                series(ctx, "stats.errors", days.sum(points, "proxy.errors", any)),
            ],
        ),
        chart(
            "logins",
            "stats.logins",
            Kind::StackedBars,
            vec![
                series(
                    ctx,
                    "stats.completed",
                    days.sum(points, "login.completed", any),
                ),
                series(
                    ctx,
                    "stats.failed",
                    days.sum_prefix(points, "login.failed."),
                ),
            ],
        ),
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
                values: days.sum(points, "push.received", |l| l == kind),
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
                    days.sum(points, "users.created", |l| l == "push"),
                ),
                series(
                    ctx,
                    "stats.users_login",
                    days.sum(points, "users.created", |l| l.starts_with("login")),
                ),
                series(
                    ctx,
                    "stats.unsubscribed",
                    days.sum(points, "users.unsubscribed", any),
                ),
            ],
        ),
    ]
}

/// WeChat's follower charts from the synced datacube rows.
fn follower_charts(
    ctx: &Ctx,
    days: &Days,
    summary: &[store::datacube::UserSummaryDay],
    cumulate: &[store::datacube::UserCumulateDay],
) -> Vec<Chart> {
    let index = |day: i64| usize::try_from((day - days.from).div_euclid(DAY_MS)).ok();
    let n = days.starts.len();
    let (mut new, mut lost, mut total) = (vec![0; n], vec![0; n], vec![0; n]);
    for row in summary {
        if let Some(i) = index(row.day).filter(|i| *i < n) {
            new[i] += row.new_user;
            lost[i] += row.cancel_user;
        }
    }
    for row in cumulate {
        if let Some(i) = index(row.day).filter(|i| *i < n) {
            total[i] = row.cumulate_user;
        }
    }
    let buckets = days.labels();
    vec![
        Chart {
            id: "followers",
            title: ctx.t("stats.followers").to_owned(),
            kind: Kind::Lines,
            buckets: buckets.clone(),
            series: vec![series(ctx, "stats.followers_total", total)],
        },
        Chart {
            id: "follows",
            title: ctx.t("stats.follows").to_owned(),
            kind: Kind::StackedBars,
            buckets,
            series: vec![
                series(ctx, "stats.follows_new", new),
                series(ctx, "stats.follows_lost", lost),
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
    days: &Days,
    points: &[SeriesPoint],
) -> Result<Vec<Chart>, DashboardError> {
    let (summary, cumulate) = dashboard
        .tenancy()
        .account_followers(&person.principal, appid, days.from, days.to)
        .await?;
    let mut all = charts(ctx, days, points);
    all.extend(follower_charts(ctx, days, &summary, &cumulate));
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
    headers: Vec<String>,
    rows: Vec<(String, Vec<i64>)>,
    csv: String,
}

fn views(ctx: &Ctx, charts: Vec<Chart>, csv_base: &str, days: i64) -> Vec<ChartView> {
    charts
        .into_iter()
        .map(|chart| ChartView {
            id: chart.id,
            empty: chart.is_empty(),
            wide: chart.svg(Size::Wide, ctx.t("stats.no_data")),
            narrow: chart.svg(Size::Narrow, ctx.t("stats.no_data")),
            legend: chart.legend(),
            headers: chart.series.iter().map(|s| s.label.clone()).collect(),
            rows: chart.rows(),
            csv: format!("{csv_base}?days={days}&chart={}", chart.id),
            title: chart.title,
        })
        .collect()
}

/// The range links.
pub(crate) struct RangeLink {
    label: String,
    href: String,
    current: bool,
}

fn ranges(ctx: &Ctx, base: &str, days: i64) -> Vec<RangeLink> {
    RANGES
        .iter()
        .map(|&d| RangeLink {
            label: ctx.tf("stats.last_days", &[("n", &d.to_string())]),
            href: format!("{base}?days={d}"),
            current: d == days,
        })
        .collect()
}

/// One step of the login funnel with its total over the range.
pub(crate) struct FunnelRow {
    label: String,
    total: i64,
}

#[derive(Template)]
#[template(path = "stats/stats.html")]
struct StatsPage {
    ctx: Ctx,
    title: String,
    back: Option<(String, String)>,
    ranges: Vec<RangeLink>,
    charts: Vec<ChartView>,
    funnel: Vec<FunnelRow>,
    failures: Vec<FunnelRow>,
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

fn totals(ctx: &Ctx, points: &[SeriesPoint], rows: &[(&str, &str)]) -> Vec<FunnelRow> {
    rows.iter()
        .map(|(metric, key)| FunnelRow {
            label: ctx.t(key).to_owned(),
            total: points
                .iter()
                .filter(|p| p.metric == *metric)
                .map(|p| p.value)
                .sum(),
        })
        .collect()
}

async fn account_points(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    days: &Days,
) -> Result<Vec<SeriesPoint>, DashboardError> {
    Ok(dashboard
        .tenancy()
        .account_series(
            &person.principal,
            appid,
            Granularity::Day,
            days.from,
            days.to,
            &[],
        )
        .await?)
}

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
    let days = Days::ending_today(dashboard.now(), params.days());
    let points = account_points(&dashboard, &person, &appid, &days).await?;
    let section = if person.principal.owner_id().is_some() {
        "accounts"
    } else {
        "all_accounts"
    };
    let ctx = Ctx::new(&dashboard, &person.visitor).in_section(section);
    let base = format!("/dashboard/accounts/{}/stats", view.account.appid);
    let page = StatsPage {
        title: ctx.tf("stats.account_title", &[("name", &view.account.name)]),
        back: Some((
            format!("/dashboard/accounts/{}", view.account.appid),
            view.account.name.clone(),
        )),
        ranges: ranges(&ctx, &base, params.days()),
        charts: views(
            &ctx,
            charts(&ctx, &days, &points),
            &format!("{base}.csv"),
            params.days(),
        ),
        funnel: totals(&ctx, &points, &FUNNEL),
        failures: totals(&ctx, &points, &FAILURES),
        busiest: Vec::new(),
        failing: Vec::new(),
        platform: false,
        ctx,
    };
    Ok(layout::page(StatusCode::OK, &page))
}

/// `GET /dashboard/operator/stats`.
pub(crate) async fn platform(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(params): Query<Params>,
) -> Result<Response, DashboardError> {
    let now = dashboard.now();
    let days = Days::ending_today(now, params.days());
    let tenancy = dashboard.tenancy();
    let points = tenancy
        .platform_series(&operator.principal, days.from, days.to, &[])
        .await?;
    // The rankings of the period the range is closest to.
    // The rankings of this week for the 7-day range, of this month otherwise.
    let (period, start) = if params.days() == 7 {
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
    let base = "/dashboard/operator/stats";
    let page = StatsPage {
        title: ctx.t("stats.platform_title").to_owned(),
        back: None,
        ranges: ranges(&ctx, base, params.days()),
        charts: views(
            &ctx,
            charts(&ctx, &days, &points),
            &format!("{base}.csv"),
            params.days(),
        ),
        funnel: totals(&ctx, &points, &FUNNEL),
        failures: totals(&ctx, &points, &FAILURES),
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
    let days = Days::ending_today(dashboard.now(), params.days());
    let points = account_points(&dashboard, &person, &appid, &days).await?;
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let all = account_charts(&dashboard, &ctx, &person, &appid, &days, &points).await?;
    let chart = pick(all, &params.chart)?;
    let file = format!(
        "wxhub-{}-{}-{}d.csv",
        view.account.appid,
        chart.id,
        params.days()
    );
    Ok(csv_response(&chart, &file, ctx.t("stats.day")))
}

/// `GET /dashboard/operator/stats.csv?chart=…`.
pub(crate) async fn platform_csv(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(params): Query<Params>,
) -> Result<Response, DashboardError> {
    let days = Days::ending_today(dashboard.now(), params.days());
    let points = dashboard
        .tenancy()
        .platform_series(&operator.principal, days.from, days.to, &[])
        .await?;
    let ctx = Ctx::new(&dashboard, &operator.visitor);
    let chart = pick(charts(&ctx, &days, &points), &params.chart)?;
    let file = format!("wxhub-platform-{}-{}d.csv", chart.id, params.days());
    Ok(csv_response(&chart, &file, ctx.t("stats.day")))
}
