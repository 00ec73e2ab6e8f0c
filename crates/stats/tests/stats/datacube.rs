//! The nightly datacube sync against the simulator, with the shared manual clock (nothing
//! sleeps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stats::calendar::{DAY_MS, HOUR_MS, date_of};
use stats::datacube::{BoxFuture, CoreTokenSource, DatacubeConfig, DatacubeSync};
use store::Store;
use wechat::{AccessToken, AppSecret};
use wechat_sim::{AccountSpec, FaultAction, FaultSpec, FollowOptions, SimConfig, UserSpec};

use crate::common::{Env, START};

const APPIDS: [&str; 2] = ["wxstats1", "wxstats2"];

fn secret(appid: &str) -> String {
    format!("secret-of-{appid}")
}

/// Stands in for the scheduler: one token per account from the simulator, kept until
/// WeChat rejects it.
struct SimTokens {
    client: wechat::Client,
    appids: HashMap<String, String>,
    tokens: Mutex<HashMap<String, AccessToken>>,
}

impl SimTokens {
    async fn fetch(&self, account_id: &str) -> Result<AccessToken, String> {
        let appid = &self.appids[account_id];
        let token = self
            .client
            .get_token(appid, &AppSecret::new(secret(appid)))
            .await
            .map_err(|e| e.to_string())?
            .access_token;
        self.tokens
            .lock()
            .unwrap()
            .insert(account_id.to_owned(), token.clone());
        Ok(token)
    }
}

impl CoreTokenSource for SimTokens {
    fn current<'a>(&'a self, account_id: &'a str) -> BoxFuture<'a, Result<AccessToken, String>> {
        Box::pin(async move {
            let cached = self.tokens.lock().unwrap().get(account_id).cloned();
            match cached {
                Some(token) => Ok(token),
                None => self.fetch(account_id).await,
            }
        })
    }

    fn rejected<'a>(
        &'a self,
        account_id: &'a str,
        _rejected: &'a AccessToken,
    ) -> BoxFuture<'a, Result<AccessToken, String>> {
        Box::pin(self.fetch(account_id))
    }
}

struct Cube {
    running: wechat_sim::RunningSim,
    tokens: Arc<SimTokens>,
}

impl Cube {
    fn sim(&self) -> &wechat_sim::Simulator {
        &self.running.sim
    }

    fn client(&self) -> wechat::Client {
        wechat::Client::new(wechat::ClientConfig::for_base(self.running.base_url())).unwrap()
    }

    fn sync(&self, env: &Env, store: &Store, config: DatacubeConfig) -> DatacubeSync {
        DatacubeSync::new(
            store.clone(),
            self.client(),
            self.tokens.clone(),
            env.shared_clock(),
            config,
        )
    }

    /// Calls the simulator answered for `appid` on `path` (`/datacube/...`).
    fn calls(&self, appid: &str, path: &str) -> u64 {
        self.sim().counter(appid, path).calls
    }

    fn datacube_calls(&self, appid: &str) -> u64 {
        [
            "getusersummary",
            "getusercumulate",
            "getinterfacesummary",
            "getinterfacesummaryhour",
        ]
        .iter()
        .map(|name| self.calls(appid, &format!("/datacube/{name}")))
        .sum()
    }
}

/// The simulator, sharing the test's clock; its accounts are created `history_days` before
/// `START`, and one person follows the first account at noon of each of those days.
async fn cube(env: &Env, history_days: i64, tweak: impl FnOnce(&mut SimConfig)) -> Cube {
    let mut config = SimConfig::with_manual_clock(env.clock.clone());
    tweak(&mut config);
    let running = testkit::fixtures::simulator(config).await;
    let sim = &running.sim;
    env.clock.set(START - history_days * DAY_MS);
    for appid in APPIDS {
        sim.create_account(AccountSpec::new(appid, secret(appid)))
            .unwrap();
    }
    for day in 0..history_days {
        env.clock
            .set(START - (history_days - day) * DAY_MS + 12 * HOUR_MS);
        let user = format!("u{day}");
        sim.create_user(UserSpec::new(user.clone(), user.clone()))
            .unwrap();
        sim.follow(
            APPIDS[0],
            &user,
            FollowOptions {
                push: false,
                ..FollowOptions::default()
            },
        )
        .await
        .unwrap();
    }
    let client = wechat::Client::new(wechat::ClientConfig::for_base(running.base_url())).unwrap();
    let appids = env
        .accounts
        .iter()
        .cloned()
        .zip(APPIDS.map(str::to_owned))
        .collect();
    Cube {
        running,
        tokens: Arc::new(SimTokens {
            client,
            appids,
            tokens: Mutex::new(HashMap::new()),
        }),
    }
}

fn config(holder: &str) -> DatacubeConfig {
    DatacubeConfig {
        holder: holder.to_owned(),
        ..DatacubeConfig::default()
    }
}

/// Followers per stored day of the first account, oldest first.
async fn followers(env: &Env) -> Vec<(i64, i64)> {
    env.store
        .datacube_user_cumulate(&env.accounts[0], 0, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.day, d.cumulate_user))
        .collect()
}

fn advance(env: &Env, ms: i64) {
    env.clock
        .advance(Duration::from_millis(u64::try_from(ms).unwrap()));
}

pub async fn a_new_account_is_backfilled_in_7_day_windows_then_synced_nightly(env: Env) {
    let cube = cube(&env, 20, |_| {}).await;
    // Registered at 10:00 China time: yesterday is ready.
    env.clock.set(START + 10 * HOUR_MS);
    let sync = cube.sync(&env, &env.store, config("replica-a"));
    let first = sync.run_due().await.unwrap();
    // Per account: the last 7 days (3 calls for the window, 7 for their hours), then the
    // 12-call run budget leaves too little for another window.
    assert_eq!((first.synced, first.calls), (2, 2 * 10), "{first:?}");
    advance(&env, 60_000);
    let second = sync.run_due().await.unwrap();
    // Per account, two windows back: 7 days, then the 6 days where its history starts.
    assert_eq!(second.calls, 2 * 6, "{second:?}");
    assert_eq!(
        cube.calls(APPIDS[0], "/datacube/getusercumulate"),
        3,
        "one call per 7-day window"
    );
    let days = followers(&env).await;
    assert_eq!(days.len(), 20, "every day since the account exists");
    assert_eq!(days.first(), Some(&(START - 20 * DAY_MS, 1)));
    assert_eq!(days.last(), Some(&(START - DAY_MS, 20)));
    let summary = env
        .store
        .datacube_user_summary(&env.accounts[0], 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(summary.iter().map(|d| d.new_user).sum::<i64>(), 20);
    assert!(
        summary
            .iter()
            .all(|d| d.user_source == 1 || d.new_user == 0)
    );
    assert!(
        env.store
            .datacube_missing(&env.accounts[0])
            .await
            .unwrap()
            .is_empty(),
        "days before the account existed are not missing"
    );
    let state = env
        .store
        .datacube_sync_state(&env.accounts[0])
        .await
        .unwrap()
        .unwrap();
    assert!(state.backfill_done);
    assert_eq!(state.synced_through, Some(START - DAY_MS));
    assert_eq!(state.calls_used, 16);
    assert_eq!(cube.datacube_calls(APPIDS[0]), 16);
    // Nothing is due until the account's time after 08:00 of a day with a new ready day.
    let slot = sync.slot(&env.accounts[0], date_of(START + DAY_MS));
    assert!(state.next_run_at <= slot);
    env.clock.set(START + 12 * HOUR_MS);
    cube.sim()
        .create_user(UserSpec::new("late", "late"))
        .unwrap();
    cube.sim()
        .follow(
            APPIDS[0],
            "late",
            FollowOptions {
                push: false,
                ..FollowOptions::default()
            },
        )
        .await
        .unwrap();
    env.clock.set(START + DAY_MS + 7 * HOUR_MS);
    let early = sync.run_due().await.unwrap();
    assert_eq!(early.calls, 0, "today's figures are not ready before 08:00");
    // Past both accounts' times of that day.
    let other = sync.slot(&env.accounts[1], date_of(START + DAY_MS));
    env.clock.set(slot.max(other) + 1);
    let nightly = sync.run_due().await.unwrap();
    // Per account, one day: three calls and its hours — and the first call once more: the
    // token given the day before has expired (42001), so it is reported and the call retried
    // with the one the scheduler (here its stand-in) returns.
    assert_eq!(nightly.calls, 2 * (4 + 1), "{nightly:?}");
    assert_eq!(followers(&env).await.last(), Some(&(START, 21)));
    assert_eq!(cube.calls(APPIDS[0], "/cgi-bin/token"), 2);
}

pub async fn yesterday_not_ready_yet_is_asked_again_later(env: Env) {
    // WeChat is late: yesterday's figures appear only at 11:00.
    let cube = cube(&env, 3, |c| c.datacube_ready_hour = 11).await;
    env.clock.set(START + 9 * HOUR_MS);
    let sync = cube.sync(&env, &env.store, config("replica-a"));
    sync.run_due().await.unwrap();
    let days = followers(&env).await;
    assert_eq!(
        days.last().map(|d| d.0),
        Some(START - 2 * DAY_MS),
        "yesterday is left out"
    );
    let state = env
        .store
        .datacube_sync_state(&env.accounts[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.synced_through, Some(START - 2 * DAY_MS));
    assert!(
        state.next_run_at <= START + 10 * HOUR_MS,
        "asked again within the hour"
    );
    env.clock.set(START + 11 * HOUR_MS);
    sync.run_due().await.unwrap();
    assert_eq!(followers(&env).await.last(), Some(&(START - DAY_MS, 3)));
    assert!(
        env.store
            .datacube_missing(&env.accounts[0])
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn the_daily_call_budget_is_never_exceeded(env: Env) {
    let cube = cube(&env, 60, |_| {}).await;
    env.clock.set(START + 9 * HOUR_MS);
    let sync = cube.sync(
        &env,
        &env.store,
        DatacubeConfig {
            daily_budget: 13,
            ..config("replica-a")
        },
    );
    for _ in 0..60 {
        sync.run_due().await.unwrap();
        advance(&env, 60_000);
    }
    assert_eq!(cube.datacube_calls(APPIDS[0]), 13, "the first day's budget");
    // The next day the budget is there again, and the backfill goes on.
    env.clock.set(START + DAY_MS + 23 * HOUR_MS);
    for _ in 0..60 {
        sync.run_due().await.unwrap();
        advance(&env, 60_000);
    }
    let calls = cube.datacube_calls(APPIDS[0]);
    assert!(calls > 13 && calls <= 26, "{calls}");
}

pub async fn transient_failures_back_off_and_the_sync_resumes(env: Env) {
    let cube = cube(&env, 5, |_| {}).await;
    cube.sim()
        .add_fault(FaultSpec {
            endpoint: Some("/datacube/getusersummary".into()),
            appid: Some(APPIDS[0].into()),
            action: FaultAction::Errcode {
                code: -1,
                errmsg: None,
            },
            next: Some(2),
            rate: None,
        })
        .unwrap();
    env.clock.set(START + 9 * HOUR_MS);
    let sync = cube.sync(&env, &env.store, config("replica-a"));
    let first = sync.run_due().await.unwrap();
    assert_eq!(first.failed, 1);
    let state = |env: &Env| {
        let store = env.store.clone();
        let id = env.accounts[0].clone();
        async move { store.datacube_sync_state(&id).await.unwrap().unwrap() }
    };
    let failed = state(&env).await;
    assert_eq!(failed.failures, 1);
    assert!(failed.last_error.unwrap().contains("-1"));
    assert_eq!(failed.next_run_at, START + 9 * HOUR_MS + 5 * 60_000);
    // Not before the backoff; the second failure doubles it.
    advance(&env, 60_000);
    assert_eq!(
        sync.run_due().await.unwrap().calls,
        0,
        "waiting for the backoff"
    );
    advance(&env, 4 * 60_000);
    sync.run_due().await.unwrap();
    let again = state(&env).await;
    assert_eq!(again.failures, 2);
    assert_eq!(again.next_run_at, START + 9 * HOUR_MS + 15 * 60_000);
    advance(&env, 10 * 60_000);
    sync.run_due().await.unwrap();
    let ok = state(&env).await;
    assert_eq!((ok.failures, ok.last_error), (0, None));
    assert_eq!(followers(&env).await.len(), 5);
}

pub async fn two_replicas_fetch_each_day_once(env: Env) {
    let cube = cube(&env, 10, |_| {}).await;
    env.clock.set(START + 9 * HOUR_MS);
    let second = Store::connect(&env.url).await.unwrap();
    let a = cube.sync(&env, &env.store, config("replica-a"));
    let b = cube.sync(&env, &second, config("replica-b"));
    for _ in 0..4 {
        let (ra, rb) = tokio::join!(a.run_due(), b.run_due());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.synced + rb.synced <= 2, "{ra:?} {rb:?}");
        advance(&env, 60_000);
    }
    // One replica's work: the last 7 days and their hours, then 3 more days back.
    assert_eq!(cube.calls(APPIDS[0], "/datacube/getusercumulate"), 2);
    assert_eq!(
        cube.calls(APPIDS[0], "/datacube/getinterfacesummaryhour"),
        7
    );
    assert_eq!(followers(&env).await.len(), 10);
    second.close().await;
}

pub async fn an_unverified_account_answering_48001_waits_for_the_next_day(env: Env) {
    let cube = cube(&env, 2, |_| {}).await;
    cube.sim()
        .patch_account(APPIDS[1], serde_json::json!({"verified": false}))
        .unwrap();
    env.clock.set(START + 9 * HOUR_MS);
    let sync = cube.sync(&env, &env.store, config("replica-a"));
    sync.run_due().await.unwrap();
    let state = env
        .store
        .datacube_sync_state(&env.accounts[1])
        .await
        .unwrap()
        .unwrap();
    assert!(state.last_error.unwrap().contains("48001"));
    assert_eq!(
        state.next_run_at,
        sync.slot(&env.accounts[1], date_of(START + DAY_MS))
    );
    assert_eq!(cube.calls(APPIDS[1], "/datacube/getusercumulate"), 1);
}

pub async fn synced_figures_are_pruned_after_their_retention(env: Env) {
    let cube = cube(&env, 20, |_| {}).await;
    env.clock.set(START + 9 * HOUR_MS);
    let sync = cube.sync(
        &env,
        &env.store,
        DatacubeConfig {
            retention: Duration::from_millis(u64::try_from(12 * DAY_MS).unwrap()),
            ..config("replica-a")
        },
    );
    for _ in 0..3 {
        sync.run_due().await.unwrap();
        advance(&env, 60_000);
    }
    // The backfill stops at the retention: 12 days back from today.
    assert_eq!(
        followers(&env).await.first().map(|d| d.0),
        Some(START - 12 * DAY_MS)
    );
    env.clock.set(START + 5 * DAY_MS + 9 * HOUR_MS);
    assert!(sync.prune().await.unwrap() > 0);
    assert_eq!(
        followers(&env).await.first().map(|d| d.0),
        Some(START - 7 * DAY_MS)
    );
}

/// A stand-in for WeChat's datacube that leaves out one day of the first week before START.
async fn gappy_wechat() -> url::Url {
    use axum::routing::post;
    let day = |n: i64| stats::calendar::date_of(START - n * DAY_MS).to_string();
    let cumulate: Vec<serde_json::Value> = [7, 6, 5, 3, 2, 1]
        .iter()
        .map(|&n| serde_json::json!({"ref_date": day(n), "cumulate_user": 10 - n}))
        .collect();
    let empty = || async { axum::Json(serde_json::json!({"list": []})) };
    let app = axum::Router::new()
        .route(
            "/datacube/getusercumulate",
            post(move || {
                let list = cumulate.clone();
                async move { axum::Json(serde_json::json!({ "list": list })) }
            }),
        )
        .route("/datacube/getusersummary", post(empty))
        .route("/datacube/getinterfacesummary", post(empty))
        .route("/datacube/getinterfacesummaryhour", post(empty));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url::Url::parse(&format!("http://{addr}")).unwrap()
}

/// A token that WeChat's stand-in accepts.
struct FixedToken;

impl CoreTokenSource for FixedToken {
    fn current<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AccessToken, String>> {
        Box::pin(async { Ok(AccessToken::new("TOKEN")) })
    }

    fn rejected<'a>(
        &'a self,
        _: &'a str,
        _: &'a AccessToken,
    ) -> BoxFuture<'a, Result<AccessToken, String>> {
        Box::pin(async { Err("not expected".to_owned()) })
    }
}

pub async fn a_day_wechat_leaves_out_is_recorded_as_missing(env: Env) {
    let base = gappy_wechat().await;
    env.clock.set(START + 9 * HOUR_MS);
    let sync = DatacubeSync::new(
        env.store.clone(),
        wechat::Client::new(wechat::ClientConfig::for_base(base)).unwrap(),
        Arc::new(FixedToken),
        env.shared_clock(),
        config("replica-a"),
    );
    sync.run_due().await.unwrap();
    let missing = env.store.datacube_missing(&env.accounts[0]).await.unwrap();
    assert_eq!(
        missing
            .iter()
            .map(|m| (m.day, m.endpoint.as_str()))
            .collect::<Vec<_>>(),
        [(START - 4 * DAY_MS, "/datacube/getusercumulate")]
    );
    assert_eq!(followers(&env).await.len(), 6);
    let state = env
        .store
        .datacube_sync_state(&env.accounts[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.synced_through,
        Some(START - DAY_MS),
        "the gap is not waited for"
    );
}
