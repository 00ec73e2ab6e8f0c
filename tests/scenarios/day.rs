//! Scenario 3 of the reliability plan: a simulated day — three replicas, 1,000 accounts,
//! 24 hours of the simulator's manual clock — with every replica's scheduler running.
//!
//! - 0 duplicate refreshes: no account's token is fetched twice within a refresh window
//!   (75 % of the 7200 s lifetime: 5400 s), whichever replicas fetched.
//! - Fetches per account per day within the schedule's expectation. The policy
//!   (crates/scheduler/src/policy.rs) refreshes a token at a uniformly drawn 75–85 % of its
//!   lifetime, 5400–6120 s after it was fetched, and this test's clock moves in [`STEP`]s of
//!   120 s, so a refresh lands at most one step late: 5400–6240 s apart. After the first fetch
//!   a day holds 13 to 16 refreshes (86 400 / 6240 and 86 400 / 5400), about 14.6 on average
//!   (86 400 / 5880, the mean gap with half a step's lag, rounded down by the day's end): each
//!   account makes 14 to 17 fetches, about 15.5 on average.
//! - The daily budget (200 upstream calls per account per quota day) is never exceeded.
//!
//! After each step every replica runs a pass over what is due (`POST /__test/run-due`, answered
//! when the pass is over), besides its own scheduler loop, which the clock's move wakes too: the
//! replicas race for the same accounts, as they do in production. Before the next step the test
//! waits until no replica holds a lease (a refresh its loop started may still be at WeChat): in
//! production a lease (60 s) outlives any call, so simulated time must not lap one either.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e::{APPID, Topology};
use serde_json::Value;

const ACCOUNTS: u32 = 1000;
const STEP: Duration = Duration::from_secs(120);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// The shortest gap between two scheduled fetches of one account.
const WINDOW_MS: i64 = 5_400_000;
const DAILY_BUDGET: u64 = 200;
/// The simulator's call log keeps 10,000 calls: it is read often enough to miss none.
const READ_LOG_EVERY: Duration = Duration::from_secs(3600);

/// Token calls of the simulator's log not yet seen: `(seq, appid, at_ms)`.
async fn token_calls(topology: &Topology, seen: &mut BTreeMap<u64, (String, i64)>) {
    let calls = topology
        .sim_get("/__sim/calls?endpoint=/cgi-bin/token&limit=10000")
        .await;
    for call in calls.as_array().expect("the call log") {
        let seq = call["seq"].as_u64().expect("a seq");
        seen.entry(seq).or_insert_with(|| {
            (
                call["appid"].as_str().unwrap_or_default().to_owned(),
                call["at_ms"].as_i64().unwrap_or_default(),
            )
        });
        assert_eq!(
            call["errcode"],
            Value::from(0),
            "a failed token call: {call}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulated_day_of_three_replicas_and_1000_accounts_refreshes_each_window_once() {
    let started = Instant::now();
    let Some(topology) = Topology::start_manual(3).await else {
        eprintln!("{}", testkit::DID_NOT_RUN);
        return;
    };
    let mut appids = topology.add_accounts(0xd4, ACCOUNTS - 1).await;
    appids.push(APPID.to_owned());
    let registered = started.elapsed();
    // The first tokens, all at the day's first instant.
    let mut first = topology.run_due().await;
    while first.due > 0 {
        first = topology.run_due().await;
    }
    let pool = topology.database_pool().await;
    let mut holders = Vec::new();
    for replica in &topology.replicas {
        holders.push(topology.holder_of(&replica.base).await);
    }
    let mut calls = BTreeMap::new();
    token_calls(&topology, &mut calls).await;
    let day_start = topology.sim_now().await;
    let mut last_log_read = day_start;
    let mut now = day_start;
    let mut steps = 0u64;
    while now < day_start + DAY.as_millis() as i64 {
        topology.wait_leases_released(&pool, &holders).await;
        now = topology.advance(STEP).await;
        topology.run_due().await;
        steps += 1;
        if now - last_log_read >= READ_LOG_EVERY.as_millis() as i64 {
            token_calls(&topology, &mut calls).await;
            last_log_read = now;
        }
    }
    token_calls(&topology, &mut calls).await;

    // Every call WeChat counted is in what the log gave.
    let counters = topology.sim_counters("/cgi-bin/token").await;
    let counted: u64 = counters.values().map(|c| c.0).sum();
    assert_eq!(calls.len() as u64, counted, "token calls missed in the log");

    let mut by_account: HashMap<&str, Vec<i64>> = HashMap::new();
    for (appid, at) in calls.values() {
        by_account.entry(appid.as_str()).or_default().push(*at);
    }
    let mut duplicates = Vec::new();
    let mut per_day: BTreeMap<usize, u64> = BTreeMap::new();
    let mut budget_max = 0u64;
    for appid in &appids {
        let mut times = by_account.remove(appid.as_str()).unwrap_or_default();
        times.sort_unstable();
        for pair in times.windows(2) {
            if pair[1] - pair[0] < WINDOW_MS {
                duplicates.push((appid.clone(), pair[0], pair[1]));
            }
        }
        // Quota days start at 00:00 in Shanghai (UTC+8).
        let mut by_quota_day: HashMap<i64, u64> = HashMap::new();
        for at in &times {
            *by_quota_day
                .entry((at + 8 * 3_600_000).div_euclid(86_400_000))
                .or_default() += 1;
        }
        budget_max = budget_max.max(by_quota_day.values().copied().max().unwrap_or(0));
        *per_day.entry(times.len()).or_default() += 1;
    }
    assert!(by_account.is_empty(), "calls for unknown accounts");
    let total: u64 = per_day.iter().map(|(n, a)| *n as u64 * a).sum();
    println!(
        "a simulated day: {ACCOUNTS} accounts on 3 replicas, {steps} steps of {} s; {total} token \
         fetches, {:.2} per account (accounts by fetches: {per_day:?}); {} duplicates within a \
         window; at most {budget_max} calls of one account in a quota day (budget \
         {DAILY_BUDGET}); registering took {} s, the whole scenario {} s",
        STEP.as_secs(),
        total as f64 / f64::from(ACCOUNTS),
        duplicates.len(),
        registered.as_secs(),
        started.elapsed().as_secs()
    );
    if !duplicates.is_empty() {
        // What the replicas said about those accounts, for the failure's reader.
        let store = store::Store::connect(topology.database_url())
            .await
            .unwrap();
        for (appid, _, _) in &duplicates {
            let account = store.find_account_by_appid(appid).await.unwrap().unwrap();
            for n in 0..3 {
                let log =
                    std::fs::read_to_string(topology.dir.path().join(format!("replica-{n}.log")))
                        .unwrap_or_default();
                for line in log.lines().filter(|l| l.contains(&account.id)) {
                    eprintln!("replica {n}: {line}");
                }
            }
        }
    }
    assert!(duplicates.is_empty(), "duplicate refreshes: {duplicates:?}");
    let fewest = *per_day.keys().next().unwrap();
    let most = *per_day.keys().next_back().unwrap();
    assert!(
        (14..=17).contains(&fewest) && (14..=17).contains(&most),
        "fetches per account per day outside 14..=17: {per_day:?}"
    );
    assert!(budget_max <= DAILY_BUDGET);
    topology.finish().await;
}
