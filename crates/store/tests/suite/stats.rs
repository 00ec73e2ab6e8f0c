//! Statistics rows: additive upserts from several writers, the chart reads, ranks, pruning.

use store::stats::{
    CounterRow, Granularity, PlatformRow, RankBy, RankPeriod, RankRow, SeriesPoint, StatsBatch,
    Total,
};

use crate::harness::{NOW, TestDb, account};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn row(account_id: &str, start: i64, metric: &str, label: &str, value: i64) -> CounterRow {
    CounterRow {
        account_id: account_id.to_owned(),
        start,
        metric: metric.to_owned(),
        label: label.to_owned(),
        value,
    }
}

fn point(start: i64, metric: &str, label: &str, value: i64) -> SeriesPoint {
    SeriesPoint {
        start,
        metric: metric.to_owned(),
        label: label.to_owned(),
        value,
    }
}

fn rank(period: RankPeriod, start: i64, account_id: &str, activity: i64, failures: i64) -> RankRow {
    RankRow {
        period,
        start,
        account_id: account_id.to_owned(),
        activity,
        failures,
    }
}

/// A batch of one count in each table.
fn one_of_each(account_id: &str, value: i64) -> StatsBatch {
    StatsBatch {
        hourly: vec![row(account_id, NOW, "token.reads", "k1", value)],
        daily: vec![row(account_id, NOW, "token.reads", "k1", value)],
        platform: vec![PlatformRow {
            day: NOW,
            metric: "token.reads".to_owned(),
            label: String::new(),
            value,
        }],
        ranks: vec![rank(RankPeriod::Day, NOW, account_id, value, 0)],
    }
}

pub async fn stats_batches_add_up_across_flushes_and_writers(db: TestDb) {
    let account = account(&db.store, "wx-stats").await;
    db.store
        .add_stats(&one_of_each(&account.id, 3))
        .await
        .unwrap();
    // Concurrent flushes (as from several replicas) of the same rows all count.
    let mut tasks = Vec::new();
    for i in 1..=10 {
        let store = db.store.clone();
        let batch = one_of_each(&account.id, i);
        tasks.push(tokio::spawn(async move {
            store.add_stats(&batch).await.unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected = 3 + 55;
    assert_eq!(
        db.store
            .account_series(&account.id, Granularity::Hour, NOW, NOW + HOUR, &[])
            .await
            .unwrap(),
        vec![point(NOW, "token.reads", "k1", expected)]
    );
    assert_eq!(
        db.store
            .account_series(&account.id, Granularity::Day, NOW, NOW + DAY, &[])
            .await
            .unwrap(),
        vec![point(NOW, "token.reads", "k1", expected)]
    );
    assert_eq!(
        db.store
            .platform_series(Granularity::Day, NOW, NOW + DAY, &[])
            .await
            .unwrap(),
        vec![point(NOW, "token.reads", "", expected)]
    );
    let top = db
        .store
        .top_accounts(RankPeriod::Day, NOW, RankBy::Activity, 10)
        .await
        .unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(
        (top[0].appid.as_str(), top[0].activity),
        ("wx-stats", expected)
    );
    // A large flush spans several statements of one transaction.
    let big = StatsBatch {
        hourly: (0..12_000)
            .map(|i| {
                row(
                    &account.id,
                    NOW + i * HOUR,
                    "proxy.calls",
                    "cgi-bin/user/info",
                    1,
                )
            })
            .collect(),
        ..StatsBatch::default()
    };
    db.store.add_stats(&big).await.unwrap();
    assert_eq!(db.count_rows("stats_hourly").await, 12_001);
}

pub async fn series_totals_and_platform_read_ranges_and_metrics(db: TestDb) {
    let a = account(&db.store, "wx-series").await;
    let b = account(&db.store, "wx-series-other").await;
    db.store
        .add_stats(&StatsBatch {
            hourly: vec![
                row(&a.id, NOW, "login.completed", "userinfo/w1", 2),
                row(&a.id, NOW, "login.started", "userinfo/w1", 5),
                row(&a.id, NOW + HOUR, "login.completed", "userinfo/w1", 1),
                row(&a.id, NOW + 2 * HOUR, "login.completed", "userinfo/w1", 7),
                row(&b.id, NOW, "login.completed", "userinfo/w9", 100),
            ],
            daily: vec![
                row(&a.id, NOW, "proxy.calls", "cgi-bin/user/info", 4),
                row(&a.id, NOW, "proxy.calls", "cgi-bin/menu/get", 1),
                row(&a.id, NOW + DAY, "proxy.calls", "cgi-bin/user/info", 6),
                row(&a.id, NOW + DAY, "push.received", "subscribe", 3),
                row(&a.id, NOW + 2 * DAY, "proxy.calls", "cgi-bin/user/info", 50),
            ],
            platform: vec![
                PlatformRow {
                    day: NOW,
                    metric: "proxy.calls".to_owned(),
                    label: "cgi-bin/user/info".to_owned(),
                    value: 9,
                },
                PlatformRow {
                    day: NOW + DAY,
                    metric: "push.received".to_owned(),
                    label: "subscribe".to_owned(),
                    value: 3,
                },
            ],
            ranks: vec![],
        })
        .await
        .unwrap();
    // Hours in [from, to), one metric, another account's rows not included.
    assert_eq!(
        db.store
            .account_series(
                &a.id,
                Granularity::Hour,
                NOW,
                NOW + 2 * HOUR,
                &["login.completed"]
            )
            .await
            .unwrap(),
        vec![
            point(NOW, "login.completed", "userinfo/w1", 2),
            point(NOW + HOUR, "login.completed", "userinfo/w1", 1),
        ]
    );
    assert_eq!(
        db.store
            .account_series(&a.id, Granularity::Hour, NOW, NOW + HOUR, &[])
            .await
            .unwrap()
            .len(),
        2,
        "no metric named: all of them"
    );
    assert_eq!(
        db.store
            .account_totals(&a.id, NOW, NOW + 2 * DAY, &["proxy.calls"])
            .await
            .unwrap(),
        vec![
            Total {
                metric: "proxy.calls".to_owned(),
                label: "cgi-bin/menu/get".to_owned(),
                value: 1
            },
            Total {
                metric: "proxy.calls".to_owned(),
                label: "cgi-bin/user/info".to_owned(),
                value: 10
            },
        ]
    );
    assert_eq!(
        db.store
            .platform_series(
                Granularity::Day,
                NOW,
                NOW + 2 * DAY,
                &["push.received", "token.reads"],
            )
            .await
            .unwrap(),
        vec![point(NOW + DAY, "push.received", "subscribe", 3)]
    );
}

/// Weeks (from Monday) and months, China time, summed in the database; the first bucket starts
/// where the range does.
pub async fn series_sum_by_week_and_month_on_the_china_calendar(db: TestDb) {
    // China-time midnights: Wednesday 2025-01-29, Saturday 02-01, Sunday 02-02, Monday 02-03
    // and 02-10, Tuesday 02-11.
    const JAN_29: i64 = 1_738_080_000_000;
    const FEB_01: i64 = 1_738_339_200_000;
    const FEB_02: i64 = 1_738_425_600_000;
    const FEB_03: i64 = 1_738_512_000_000;
    const FEB_10: i64 = 1_739_116_800_000;
    const FEB_11: i64 = 1_739_203_200_000;
    let a = account(&db.store, "wx-rolled").await;
    let days = [
        (JAN_29, 1),
        (FEB_02, 2),
        (FEB_03, 4),
        (FEB_10, 8),
        (FEB_11, 100),
    ];
    db.store
        .add_stats(&StatsBatch {
            daily: days
                .iter()
                .map(|&(day, v)| row(&a.id, day, "token.reads", "k", v))
                .collect(),
            platform: days
                .iter()
                .map(|&(day, v)| PlatformRow {
                    day,
                    metric: "token.reads".to_owned(),
                    label: String::new(),
                    value: v * 10,
                })
                .collect(),
            ..StatsBatch::default()
        })
        .await
        .unwrap();
    let weeks = [(JAN_29, 3), (FEB_03, 4), (FEB_10, 8)];
    let months = [(JAN_29, 1), (FEB_01, 14)];
    for (granularity, expected) in [
        (Granularity::Week, &weeks[..]),
        (Granularity::Month, &months[..]),
    ] {
        assert_eq!(
            db.store
                .account_series(&a.id, granularity, JAN_29, FEB_11, &[])
                .await
                .unwrap(),
            expected
                .iter()
                .map(|&(start, v)| point(start, "token.reads", "k", v))
                .collect::<Vec<_>>(),
            "{granularity:?}"
        );
        assert_eq!(
            db.store
                .platform_series(granularity, JAN_29, FEB_11, &["token.reads"])
                .await
                .unwrap(),
            expected
                .iter()
                .map(|&(start, v)| point(start, "token.reads", "", v * 10))
                .collect::<Vec<_>>(),
            "{granularity:?}"
        );
    }
}

pub async fn top_accounts_rank_by_activity_and_failures_per_period(db: TestDb) {
    let busy = account(&db.store, "wx-busy").await;
    let failing = account(&db.store, "wx-failing").await;
    let quiet = account(&db.store, "wx-quiet").await;
    db.store
        .add_stats(&StatsBatch {
            ranks: vec![
                rank(RankPeriod::Day, NOW, &busy.id, 900, 1),
                rank(RankPeriod::Day, NOW, &failing.id, 50, 40),
                rank(RankPeriod::Day, NOW, &quiet.id, 0, 0),
                rank(RankPeriod::Week, NOW, &failing.id, 5000, 41),
                rank(RankPeriod::Day, NOW + DAY, &quiet.id, 3, 0),
            ],
            ..StatsBatch::default()
        })
        .await
        .unwrap();
    let names = |ranked: Vec<store::stats::RankedAccount>| -> Vec<String> {
        ranked.into_iter().map(|r| r.appid).collect()
    };
    assert_eq!(
        names(
            db.store
                .top_accounts(RankPeriod::Day, NOW, RankBy::Activity, 10)
                .await
                .unwrap()
        ),
        ["wx-busy", "wx-failing"],
        "most first; an account without activity is left out"
    );
    assert_eq!(
        names(
            db.store
                .top_accounts(RankPeriod::Day, NOW, RankBy::Failures, 1)
                .await
                .unwrap()
        ),
        ["wx-failing"]
    );
    assert_eq!(
        names(
            db.store
                .top_accounts(RankPeriod::Week, NOW, RankBy::Activity, 10)
                .await
                .unwrap()
        ),
        ["wx-failing"],
        "each period ranks on its own"
    );
}

pub async fn counts_of_a_deleted_account_are_dropped_not_refused(db: TestDb) {
    let kept = account(&db.store, "wx-kept").await;
    let mut batch = one_of_each(&kept.id, 2);
    let gone = one_of_each("no-such-account", 5);
    batch.hourly.extend(gone.hourly);
    batch.daily.extend(gone.daily);
    batch.ranks.extend(gone.ranks);
    db.store.add_stats(&batch).await.unwrap();
    assert_eq!(db.count_rows("stats_hourly").await, 1);
    assert_eq!(db.count_rows("stats_daily").await, 1);
    assert_eq!(db.count_rows("stats_account_ranks").await, 1);
}

pub async fn pruning_removes_only_rows_past_retention(db: TestDb) {
    let a = account(&db.store, "wx-prune").await;
    let b = account(&db.store, "wx-prune-2").await;
    let mut batch = StatsBatch::default();
    for id in [&a.id, &b.id] {
        for day in 0..10 {
            batch
                .hourly
                .push(row(id, NOW + day * DAY, "token.reads", "", 1));
            batch
                .daily
                .push(row(id, NOW + day * DAY, "token.reads", "", 1));
            batch
                .ranks
                .push(rank(RankPeriod::Day, NOW + day * DAY, id, 1, 0));
        }
    }
    for day in 0..10 {
        batch.platform.push(PlatformRow {
            day: NOW + day * DAY,
            metric: "token.reads".to_owned(),
            label: String::new(),
            value: 2,
        });
    }
    db.store.add_stats(&batch).await.unwrap();
    let report = db
        .store
        .prune_stats(NOW + 7 * DAY, NOW + 3 * DAY)
        .await
        .unwrap();
    assert_eq!(
        (report.hourly, report.daily, report.platform, report.ranks),
        (14, 6, 3, 6)
    );
    assert_eq!(db.count_rows("stats_hourly").await, 6);
    assert_eq!(db.count_rows("stats_daily").await, 14);
    assert_eq!(db.count_rows("stats_platform_daily").await, 7);
    assert_eq!(db.count_rows("stats_account_ranks").await, 14);
    let again = db
        .store
        .prune_stats(NOW + 7 * DAY, NOW + 3 * DAY)
        .await
        .unwrap();
    assert_eq!(again, store::stats::PruneReport::default());
}
