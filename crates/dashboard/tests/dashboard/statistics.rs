//! The statistics pages with known counters: each chart's SVG carries the numbers in its
//! titles, its table and its CSV agree, and only the account's owner and operators see them.

use reqwest::StatusCode;
use store::stats::{CounterRow, PlatformRow, RankPeriod, RankRow, StatsBatch};
use testkit::TestDatabase;

use crate::common::{APPID_A, APPID_B, Env, OPERATOR, OWNER_A, OWNER_B, START};

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

pub async fn charts_show_the_counted_numbers_to_owners_and_operators(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let store = env.tenancy.store();
    let a = store.find_account_by_appid(APPID_A).await.unwrap().unwrap();
    // Today and yesterday (China-time days) of the manual clock.
    let today = stats::calendar::day_start(START);
    let yesterday = today - DAY;
    let row = |day: i64, metric: &str, label: &str, value: i64| CounterRow {
        account_id: a.id.clone(),
        start: day,
        metric: metric.to_owned(),
        label: label.to_owned(),
        value,
    };
    store
        .add_stats(&StatsBatch {
            hourly: vec![row(
                stats::calendar::hour_start(START) - 2 * HOUR,
                "token.reads",
                "a-key-since-deleted",
                4,
            )],
            daily: vec![
                row(yesterday, "token.refresh.ok", "", 12),
                row(yesterday, "token.refresh.failed", "40164", 3),
                row(today, "token.refresh.ok", "", 7),
                row(today, "login.started", "follow_required/site", 9),
                row(today, "login.completed", "follow_required/site", 5),
                row(
                    today,
                    "login.failed.not_following",
                    "follow_required/site",
                    2,
                ),
                row(today, "push.received", "subscribe_scene", 4),
            ],
            platform: vec![PlatformRow {
                day: today,
                metric: "token.refresh.ok".to_owned(),
                label: String::new(),
                value: 70,
            }],
            ranks: vec![RankRow {
                period: RankPeriod::Month,
                start: stats::calendar::month_start(START),
                account_id: a.id.clone(),
                activity: 21,
                failures: 3,
            }],
        })
        .await
        .unwrap();
    let mut owner = env.signed_in(OWNER_A).await;
    let base = format!("/dashboard/accounts/{APPID_A}/stats");
    let page = owner.get(&format!("{base}?days=7")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let label = time_label;
    // The refreshes chart: yesterday 12 ok and 3 failed, today 7 ok, as SVG titles.
    let refreshes = page
        .between("id=\"chart-refreshes\"", "</section>")
        .unwrap();
    assert!(
        refreshes.contains(&format!("<title>{} · 成功: 12</title>", label(yesterday))),
        "{refreshes}"
    );
    assert!(refreshes.contains(&format!("<title>{} · 失败: 3</title>", label(yesterday))));
    assert!(refreshes.contains(&format!("<title>{} · 成功: 7</title>", label(today))));
    // Three bars, in the wide drawing and in the narrow one for phones.
    assert_eq!(refreshes.matches("<rect ").count(), 6);
    // A chart with nothing counted says so instead of drawing nothing.
    let reads = page
        .between("id=\"chart-token_reads\"", "</section>")
        .unwrap();
    assert!(
        reads.contains("此范围内没有数据") && !reads.contains("<svg"),
        "{reads}"
    );
    // Its table, and the funnel's totals.
    assert!(refreshes.contains(&format!(
        "<th scope=\"row\">{}</th><td>12</td><td>3</td>",
        label(yesterday)
    )));
    // The funnel and the reasons as pictures (a bar per step) with their tables.
    let funnel = page.between("id=\"chart-funnel\"", "</section>").unwrap();
    assert!(funnel.contains("<title>开始: 9</title>"), "{funnel}");
    assert!(funnel.contains("<title>已登录: 5</title>"), "{funnel}");
    assert!(
        funnel.contains("<th scope=\"row\">开始</th><td>9</td>"),
        "{funnel}"
    );
    let failures = page
        .between("id=\"chart-login_failures\"", "</section>")
        .unwrap();
    assert!(failures.contains("<th scope=\"row\">未关注</th><td>2</td>"));
    // Logins by website and mode: the website is gone, its logins are not.
    let by_site = page
        .between("id=\"chart-logins_by_site\"", "</section>")
        .unwrap();
    assert!(
        by_site.contains(&format!(
            "<title>{} · 已删除的网站 · 须关注: 5</title>",
            label(today)
        )),
        "{by_site}"
    );
    // The last 24 hours, hour by hour, from the hourly rows.
    let hours = owner.get(&format!("{base}?days=1")).await;
    let reads = hours
        .between("id=\"chart-token_reads\"", "</section>")
        .unwrap();
    assert!(
        reads.contains(&format!(
            "<title>{} · 已删除的密钥: 4</title>",
            hour_label(stats::calendar::hour_start(START) - 2 * HOUR)
        )),
        "{reads}"
    );
    assert!(!hours.body.contains("id=\"chart-followers\""));
    // Summed by week: the CSV's buckets are weeks, the first labelled by the range's first day.
    let weeks = owner
        .get(&format!("{base}.csv?days=30&by=week&chart=refreshes"))
        .await;
    let lines: Vec<&str> = weeks.body.lines().collect();
    assert_eq!(lines[0], "周（起）,成功,失败");
    let from = today - 29 * DAY;
    let mut week = stats::calendar::week_start(from);
    let mut expected = Vec::new();
    while week < today + DAY {
        let start = week.max(from);
        let (ok, failed) = [(yesterday, 12, 3), (today, 7, 0)]
            .iter()
            .filter(|(day, _, _)| *day >= start && *day < week + 7 * DAY)
            .fold((0, 0), |(o, f), (_, ok, fail)| (o + ok, f + fail));
        expected.push(format!("{},{ok},{failed}", date_label(start)));
        week += 7 * DAY;
    }
    assert_eq!(lines[1..], expected[..]);
    // The CSV of one chart.
    let csv = owner
        .get(&format!("{base}.csv?days=7&chart=refreshes"))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "日期,成功,失败");
    assert_eq!(lines.len(), 8, "a header and seven days");
    assert_eq!(lines[6], format!("{},12,3", label(yesterday)));
    assert_eq!(lines[7], format!("{},7,0", label(today)));
    assert_eq!(
        owner.get(&format!("{base}.csv?chart=nothing")).await.status,
        StatusCode::NOT_FOUND
    );
    // Another owner is told the account does not exist; an operator sees it.
    let mut b = env.signed_in(OWNER_B).await;
    assert_eq!(b.get(&base).await.status, StatusCode::NOT_FOUND);
    let mut operator = env.signed_in(OPERATOR).await;
    assert_eq!(operator.get(&base).await.status, StatusCode::OK);
    // The platform page: the day's total and the month's busiest account.
    let platform = operator.get("/dashboard/operator/stats?days=30").await;
    assert_eq!(platform.status, StatusCode::OK);
    assert!(
        platform
            .body
            .contains(&format!("<title>{} · 成功: 70</title>", label(today)))
    );
    let top = platform.between("id=\"top\"", "</section>").unwrap();
    assert!(top.contains(APPID_A) && !top.contains(APPID_B), "{top}");
    assert_eq!(
        owner.get("/dashboard/operator/stats").await.status,
        StatusCode::FORBIDDEN
    );
    env.finish().await;
}

/// `MM-DD` of a China-time day start, as the charts label it.
fn time_label(day: i64) -> String {
    date_label(day)[5..].to_owned()
}

/// `HH:00` of an hour's start, China time.
fn hour_label(hour: i64) -> String {
    format!("{:02}:00", (hour + 8 * HOUR).rem_euclid(DAY) / HOUR)
}

/// `YYYY-MM-DD` of a China-time day.
fn date_label(day: i64) -> String {
    let local = day + 8 * 3_600_000;
    let days = local.div_euclid(DAY);
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
