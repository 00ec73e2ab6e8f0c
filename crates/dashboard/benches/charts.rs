//! The statistics pages with a year of history on 100,000 accounts: an account's charts over
//! 365 days (by day and by month), 30 days and the last 24 hours, and the operators'
//! overview, each asked over HTTP on loopback as a signed-in person, on an SQLite file and
//! (with `WXHUB_TEST_POSTGRES_URL`) on PostgreSQL. Also prints what a year of history costs
//! per account in the database.
//!
//! The history: every account refreshed its token every day of the year (one daily row a
//! day, what an idle account has); one account in 1,000, the measured one among them, is busy
//! — 38 counters a day (refreshes and their errors, token reads by 3 keys, proxy calls,
//! errors and latency by 6 endpoints, the login funnel of 2 websites, pushes, end users), 35
//! days of the same hour by hour, and a year of WeChat's follower statistics. The platform's
//! daily totals and this week's and month's ranks of every account are there too. The busy
//! rows go in through the store's own flush ([`Store::add_stats`]), the idle ones and the
//! follower statistics through the store's bulk fixtures (`test-fixtures`: a year of 100,000
//! accounts through the flush would take longer than the measurement).
//!
//! Run with `cargo bench -p dashboard --bench charts` (`WXHUB_BENCH_ACCOUNTS=N`,
//! `WXHUB_BENCH_REQUESTS=N` to change the defaults of 100,000 and 200;
//! `WXHUB_BENCH_DATABASES=sqlite` or `postgres` for one of the two). The goal is p99 ≤ 50 ms.
//!
//! [`Store::add_stats`]: store::Store::add_stats

#[path = "../tests/dashboard/common.rs"]
mod common;
mod fixture;

use std::time::Instant;

use common::{Browser, Env, OPERATOR, PASSWORD, START};
use fixture::{appid, env_usize, fill, measure};
use store::people::Role;
use store::stats::{CounterRow, PlatformRow, RankPeriod, RankRow, StatsBatch};
use testkit::TestDatabase;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;
/// One account in this many is busy.
const BUSY_EVERY: usize = 1_000;
const DAYS: i64 = 365;

/// A busy account's counters of one hour or day, `scale` of them a day's worth.
fn busy_counters(account_id: &str, start: i64, scale: i64, n: i64) -> Vec<CounterRow> {
    let row = |metric: &str, label: &str, value: i64| CounterRow {
        account_id: account_id.to_owned(),
        start,
        metric: metric.to_owned(),
        label: label.to_owned(),
        value: (value * scale / 24).max(1),
    };
    // A weekly rhythm, so the charts are not flat.
    let wave = 1 + (n % 7);
    let mut rows = vec![
        row("token.refresh.ok", "", 12),
        row("token.refresh.failed", "45009", 1),
    ];
    for key in ["key-billing", "key-shop", "key-crm"] {
        rows.push(row("token.reads", key, 4_000 * wave));
    }
    for endpoint in [
        "/cgi-bin/message/custom/send",
        "/cgi-bin/user/info",
        "/cgi-bin/menu/get",
        "/cgi-bin/qrcode/create",
        "/cgi-bin/material/batchget_material",
        "/cgi-bin/tags/get",
    ] {
        rows.push(row("proxy.calls", endpoint, 300 * wave));
        rows.push(row("proxy.latency_ms", endpoint, 9_000 * wave));
    }
    rows.push(row("proxy.errors", "45009", 2));
    rows.push(row("proxy.errors", "40001", 1));
    for site in ["follow_required/site-a", "userinfo/site-b"] {
        rows.push(row("login.started", site, 240 * wave));
        rows.push(row("login.returned", site, 230 * wave));
        rows.push(row("login.follow_page", site, 40 * wave));
        rows.push(row("login.followed", site, 30 * wave));
        rows.push(row("login.completed", site, 210 * wave));
        rows.push(row("login.failed.not_following", site, 10));
    }
    for kind in ["subscribe", "subscribe_scene", "unsubscribe", "scan"] {
        rows.push(row("push.received", kind, 50 * wave));
    }
    rows.push(row("users.created", "push", 40 * wave));
    rows.push(row("users.created", "login_userinfo", 20 * wave));
    rows.push(row("users.unsubscribed", "", 10));
    rows
}

/// The busy accounts' year of daily rows and the platform's daily totals.
async fn busy_year(env: &Env, accounts: usize, first_day: i64) -> (Vec<String>, i64) {
    let store = env.tenancy.store();
    let mut busy = Vec::new();
    let mut rows = 0_i64;
    for n in (0..accounts).step_by(BUSY_EVERY) {
        let account = store
            .find_account_by_appid(&appid(n))
            .await
            .unwrap()
            .unwrap();
        for month in 0..(DAYS / 30 + 1) {
            let mut batch = StatsBatch::default();
            for d in (month * 30)..((month + 1) * 30).min(DAYS) {
                batch
                    .daily
                    .extend(busy_counters(&account.id, first_day + d * DAY, 24, d));
            }
            rows += batch.daily.len() as i64;
            store.add_stats(&batch).await.unwrap();
        }
        busy.push(account.id);
    }
    // Platform totals: what a year of the busy accounts and the idle ones adds up to.
    let mut platform = StatsBatch::default();
    for d in 0..DAYS {
        let day = first_day + d * DAY;
        for row in busy_counters("", day, 24, d) {
            let label = match row.metric.as_str() {
                "token.reads" => String::new(),
                m if m.starts_with("login.") => {
                    row.label.split('/').next().unwrap_or_default().to_owned()
                }
                _ => row.label,
            };
            let value = row.value * busy.len() as i64
                + if row.metric == "token.refresh.ok" {
                    12 * (accounts - busy.len()) as i64
                } else {
                    0
                };
            match platform
                .platform
                .iter_mut()
                .find(|p| p.day == day && p.metric == row.metric && p.label == label)
            {
                Some(p) => p.value += value,
                None => platform.platform.push(PlatformRow {
                    day,
                    metric: row.metric,
                    label,
                    value,
                }),
            }
        }
    }
    store.add_stats(&platform).await.unwrap();
    (busy, rows)
}

/// This week's and month's ranks of every account, in batches as flushes would add them.
async fn ranks(env: &Env, busy: &[String], today: i64) {
    let store = env.tenancy.store();
    let ids = store.all_account_ids().await.unwrap();
    for chunk in ids.chunks(5_000) {
        let mut batch = StatsBatch::default();
        for (i, id) in chunk.iter().enumerate() {
            let activity = if busy.contains(id) {
                500_000
            } else {
                (i % 97) as i64
            };
            for (period, start) in [
                (RankPeriod::Week, stats::calendar::week_start(today)),
                (RankPeriod::Month, stats::calendar::month_start(today)),
            ] {
                batch.ranks.push(RankRow {
                    period,
                    start,
                    account_id: id.clone(),
                    activity,
                    failures: (i % 13) as i64,
                });
            }
        }
        store.add_stats(&batch).await.unwrap();
    }
}

/// The measured account's 35 days of hourly rows (what the 24-hour range reads), as the
/// flush writes them.
async fn busy_hours(env: &Env, account_id: &str) -> i64 {
    let store = env.tenancy.store();
    let hour_now = stats::calendar::hour_start(START);
    let mut rows = 0;
    for day in 0..35 {
        let mut batch = StatsBatch::default();
        for h in 0..24 {
            let start = hour_now - (day * 24 + h) * HOUR;
            batch
                .hourly
                .extend(busy_counters(account_id, start, 1, day * 24 + h));
        }
        rows += batch.hourly.len() as i64;
        store.add_stats(&batch).await.unwrap();
    }
    rows
}

async fn run(db: TestDatabase, backend: &str, accounts: usize, requests: usize) {
    let env = Env::start(db, |_| {}).await;
    let store = env.tenancy.store().clone();
    let size = || async { store.statistics_bytes().await.unwrap() };
    println!("{backend}, {accounts} accounts, a year of history:");
    let owners = fill(&env, accounts).await;
    let today = stats::calendar::day_start(START);
    let first_day = today - (DAYS - 1) * DAY;

    let empty = size().await;
    let started = Instant::now();
    // Every account's idle year: one `token.refresh.ok` row a day.
    store
        .fill_daily_stats_of_every_account(first_day, DAYS, "token.refresh.ok", 12)
        .await
        .unwrap();
    let idle = size().await;
    let (busy, busy_rows) = busy_year(&env, accounts, first_day).await;
    let daily = size().await;
    ranks(&env, &busy, today).await;
    let ranked = size().await;
    let hour_rows = busy_hours(&env, &busy[0]).await;
    let hourly = size().await;
    store
        .fill_follower_stats(&busy[0], first_day, DAYS)
        .await
        .unwrap();
    // As a database that has been running a while: the planner knows the tables.
    store.analyze().await.unwrap();
    let full = size().await;
    eprintln!(
        "  filled a year of history in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let kib = |bytes: i64| bytes as f64 / 1024.0;
    println!(
        "  an idle account's year (365 rows): {:.1} KiB; a busy one's ({} rows): {:.0} KiB; \
         a week's and a month's rank: {:.2} KiB; 35 days of a busy account's hours \
         ({hour_rows} rows): {:.0} KiB; a year of follower statistics: {:.0} KiB",
        kib(idle - empty) / accounts as f64,
        busy_rows / busy.len() as i64,
        kib(daily - idle) / busy.len() as f64,
        kib(ranked - daily) / accounts as f64,
        kib(hourly - ranked),
        kib(full - hourly),
    );
    println!(
        "  statistics in the database: {:.0} MiB",
        (full - empty) as f64 / 1024.0 / 1024.0
    );

    env.person(OPERATOR, Role::Operator).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let mut owner = Browser::new(&env.base);
    owner.sign_in(&owners[0], PASSWORD).await;
    let page = format!("/dashboard/accounts/{}/stats", appid(0));
    for query in ["?days=365", "?days=365&by=day"] {
        let year = owner.get(&format!("{page}{query}")).await;
        assert!(year.body.contains("chart-followers"));
        println!(
            "  the account page at {query}: {:.0} KiB of HTML",
            year.body.len() as f64 / 1024.0
        );
    }
    for (label, query) in [
        ("account, 365 days (by week)", "?days=365"),
        ("account, 365 days by day", "?days=365&by=day"),
        ("account, 365 days by month", "?days=365&by=month"),
        ("account, 30 days", "?days=30"),
        ("account, last 24 hours", "?days=1"),
    ] {
        measure(&mut owner, label, &format!("{page}{query}"), requests).await;
    }
    measure(
        &mut owner,
        "account, one chart's CSV (365 days)",
        &format!("{page}.csv?days=365&chart=logins_by_site"),
        requests,
    )
    .await;
    for (label, query) in [
        ("operator overview, 365 days (by week)", "?days=365"),
        ("operator overview, 365 days by day", "?days=365&by=day"),
        ("operator overview, 30 days", "?days=30"),
    ] {
        measure(
            &mut operator,
            label,
            &format!("/dashboard/operator/stats{query}"),
            requests,
        )
        .await;
    }
    env.finish().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let accounts = env_usize("WXHUB_BENCH_ACCOUNTS", 100_000);
    let requests = env_usize("WXHUB_BENCH_REQUESTS", 200);
    // `WXHUB_BENCH_DATABASES=postgres` (or `sqlite`) runs one of the two.
    let only = std::env::var("WXHUB_BENCH_DATABASES").unwrap_or_default();
    if !only.contains("postgres") || only.contains("sqlite") {
        run(TestDatabase::sqlite(), "SQLite", accounts, requests).await;
    }
    if only.contains("sqlite") && !only.contains("postgres") {
        return;
    }
    match TestDatabase::postgres().await {
        Some(db) => run(db, "PostgreSQL", accounts, requests).await,
        None => println!("PostgreSQL: not run (set WXHUB_TEST_POSTGRES_URL)"),
    }
}
