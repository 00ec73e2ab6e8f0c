//! Counting, flushing, several replicas, failures, shutdown and pruning.

use std::time::Duration;

use stats::{LoginFailure, LoginStage, Metric, PushKind, Stats, StatsConfig};
use store::Store;
use store::stats::{Granularity, RankBy, RankPeriod, SeriesPoint};

use crate::common::{DAY, Env, HOUR, START};

fn stats(env: &Env, store: &Store) -> Stats {
    Stats::new(store.clone(), env.shared_clock(), StatsConfig::default())
}

fn point(start: i64, metric: &str, label: &str, value: i64) -> SeriesPoint {
    SeriesPoint {
        start,
        metric: metric.to_owned(),
        label: label.to_owned(),
        value,
    }
}

/// Every hourly row's values added up.
async fn hourly_sum(store: &Store, account_id: &str) -> i64 {
    store
        .account_series(account_id, Granularity::Hour, 0, i64::MAX, &[])
        .await
        .unwrap()
        .iter()
        .map(|p| p.value)
        .sum()
}

pub async fn counts_land_in_their_hour_day_platform_total_and_ranks(env: Env) {
    let stats = stats(&env, &env.store);
    let [a, b] = env.accounts.clone();
    let reads = stats.token_reads(&a, "key-1");
    reads.add(1);
    reads.add(1);
    stats.login(&a, "userinfo", "site-1", LoginStage::Started);
    stats.login(&a, "userinfo", "site-1", LoginStage::Completed);
    stats.token_refresh_failed(&b, Some(40164));
    // The next hour, still the same China-time day.
    env.clock.advance(Duration::from_millis(HOUR as u64));
    reads.add(1);
    stats.proxy_call(
        &a,
        "cgi-bin/user/info",
        Ok(Some(45009)),
        Duration::from_millis(120),
        true,
    );
    stats.push(&b, PushKind::SubscribeWithScene);
    stats.login_failed(&b, "follow_required", "site-2", LoginFailure::NotFollowing);
    let report = stats.flush().await.unwrap();
    // Values, not events: the latency sum counts its milliseconds.
    assert_eq!(report.events, 3 + 2 + 1 + (1 + 120 + 1 + 1 + 1) + 1 + 1);
    assert_eq!(stats.flushed(), report.events);

    assert_eq!(
        env.store
            .account_series(
                &a,
                Granularity::Hour,
                START,
                START + 2 * HOUR,
                &["token.reads"]
            )
            .await
            .unwrap(),
        vec![
            point(START, "token.reads", "key-1", 2),
            point(START + HOUR, "token.reads", "key-1", 1),
        ]
    );
    let daily = env
        .store
        .account_series(&a, Granularity::Day, START, START + DAY, &[])
        .await
        .unwrap();
    assert_eq!(
        daily,
        vec![
            point(START, "login.completed", "userinfo/site-1", 1),
            point(START, "login.started", "userinfo/site-1", 1),
            point(START, "proxy.calls", "cgi-bin/user/info", 1),
            point(START, "proxy.errors", "45009", 1),
            point(START, "proxy.latency", "le_250", 1),
            point(START, "proxy.latency_ms", "cgi-bin/user/info", 120),
            point(START, "proxy.retries", "", 1),
            point(START, "token.reads", "key-1", 3),
        ]
    );
    // Platform totals fold API keys and websites, keep the login mode and errcodes.
    let platform = env
        .store
        .platform_series(
            Granularity::Day,
            START,
            START + DAY,
            &[
                "token.reads",
                "login.started",
                "login.failed.not_following",
                "token.refresh.failed",
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        platform,
        vec![
            point(START, "login.failed.not_following", "follow_required", 1),
            point(START, "login.started", "userinfo", 1),
            point(START, "token.reads", "", 3),
            point(START, "token.refresh.failed", "40164", 1),
        ]
    );
    // a: 3 reads + 1 login + 1 proxy call; b: 1 push, failures 1 refresh + 1 login.
    let busiest = env
        .store
        .top_accounts(RankPeriod::Day, START, RankBy::Activity, 5)
        .await
        .unwrap();
    assert_eq!(
        busiest
            .iter()
            .map(|r| (r.appid.as_str(), r.activity, r.failures))
            .collect::<Vec<_>>(),
        [("wxstats1", 5, 1), ("wxstats2", 1, 2)]
    );
    for period in [RankPeriod::Week, RankPeriod::Month] {
        let start = match period {
            RankPeriod::Week => stats::calendar::week_start(START),
            _ => stats::calendar::month_start(START),
        };
        let failing = env
            .store
            .top_accounts(period, start, RankBy::Failures, 1)
            .await
            .unwrap();
        assert_eq!(failing[0].appid, "wxstats2", "{period}");
    }
    // Nothing counted since: a flush writes nothing.
    assert_eq!(stats.flush().await.unwrap().events, 0);
    assert_eq!(
        Metric::from_name("login.failed.not_following"),
        Some(Metric::LoginFailed(LoginFailure::NotFollowing))
    );
}

pub async fn two_replicas_writing_the_same_hours_add_up_to_every_event(env: Env) {
    // Two replicas: separate pools onto one database, separate counters, one clock.
    let second = Store::connect(&env.url).await.unwrap();
    let replicas = [stats(&env, &env.store), stats(&env, &second)];
    let [a, b] = env.accounts.clone();
    const TASKS: u64 = 4;
    const EVENTS: u64 = 3_000;
    let mut tasks = Vec::new();
    for replica in &replicas {
        for t in 0..TASKS {
            let replica = replica.clone();
            let (a, b) = (a.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                let reads = replica.token_reads(&a, "key-1");
                for i in 0..EVENTS {
                    reads.add(1);
                    replica.push(&b, PushKind::Subscribe);
                    if i % 500 == 0 {
                        // Both replicas flush the same rows while the others keep counting.
                        replica.flush().await.unwrap();
                    }
                    if t == 0 && i % 1_000 == 999 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    // The hour turns while they count.
    tokio::task::yield_now().await;
    env.clock.advance(Duration::from_millis(HOUR as u64));
    for task in tasks {
        task.await.unwrap();
    }
    for replica in &replicas {
        replica.flush().await.unwrap();
    }
    let expected = i64::try_from(2 * TASKS * EVENTS).unwrap();
    assert_eq!(hourly_sum(&env.store, &a).await, expected);
    assert_eq!(hourly_sum(&env.store, &b).await, expected);
    let daily: i64 = env
        .store
        .account_series(&a, Granularity::Day, 0, i64::MAX, &[])
        .await
        .unwrap()
        .iter()
        .map(|p| p.value)
        .sum();
    assert_eq!(daily, expected, "the daily rows hold the same events");
    let platform: i64 = env
        .store
        .platform_series(Granularity::Day, 0, i64::MAX, &["push.received"])
        .await
        .unwrap()
        .iter()
        .map(|p| p.value)
        .sum();
    assert_eq!(platform, expected);
    let flushed: u64 = replicas.iter().map(Stats::flushed).sum();
    assert_eq!(flushed, 2 * 2 * TASKS * EVENTS);
    second.close().await;
}

pub async fn a_failed_flush_is_kept_and_written_once_by_the_next(env: Env) {
    let stats = stats(&env, &env.store);
    let a = env.accounts[0].clone();
    stats.user_created(&a, "push");
    stats.user_created(&a, "push");
    env.raw("ALTER TABLE stats_daily RENAME TO stats_daily_away")
        .await;
    assert!(stats.flush().await.is_err(), "the transaction fails whole");
    assert_eq!(hourly_sum(&env.store, &a).await, 0, "nothing half-written");
    stats.user_created(&a, "login_base");
    env.raw("ALTER TABLE stats_daily_away RENAME TO stats_daily")
        .await;
    let report = stats.flush().await.unwrap();
    assert_eq!(report.events, 3);
    assert_eq!(hourly_sum(&env.store, &a).await, 3);
    assert_eq!(stats.flush().await.unwrap().events, 0, "written once");
    assert_eq!(stats.dropped(), 0);
}

pub async fn shutdown_writes_what_was_counted_since_the_last_flush(env: Env) {
    let stats = Stats::new(
        env.store.clone(),
        env.shared_clock(),
        StatsConfig {
            // Never due during the test: only the shutdown writes.
            flush_interval: Duration::from_secs(3600),
            ..StatsConfig::default()
        },
    );
    let task = stats.spawn_flusher();
    let a = env.accounts[0].clone();
    stats.token_refreshed(&a);
    stats.user_unsubscribed(&a);
    task.shutdown().await;
    assert_eq!(hourly_sum(&env.store, &a).await, 2);
    // Disabled statistics count and write nothing.
    let off = Stats::disabled();
    off.token_refreshed(&a);
    off.token_reads(&a, "k").add(5);
    assert_eq!(off.flush().await.unwrap().events, 0);
    off.spawn_flusher().shutdown().await;
    assert_eq!(hourly_sum(&env.store, &a).await, 2);
}

pub async fn pruning_keeps_hours_and_days_within_retention(env: Env) {
    let stats = Stats::new(
        env.store.clone(),
        env.shared_clock(),
        StatsConfig {
            hourly_retention: Duration::from_millis(2 * DAY as u64),
            daily_retention: Duration::from_millis(10 * DAY as u64),
            ..StatsConfig::default()
        },
    );
    let a = env.accounts[0].clone();
    for _ in 0..20 {
        stats.push(&a, PushKind::Other);
        stats.flush().await.unwrap();
        env.clock.advance(Duration::from_millis(DAY as u64));
    }
    let report = stats.prune().await.unwrap();
    // Now is START + 20 days: hours of the last 2 days stay (days 18, 19), days 10..19 stay.
    assert_eq!((report.hourly, report.daily), (18, 10));
    let days = env
        .store
        .account_series(&a, Granularity::Day, 0, i64::MAX, &[])
        .await
        .unwrap();
    assert_eq!(days.first().map(|p| p.start), Some(START + 10 * DAY));
    assert_eq!(days.len(), 10);
}
