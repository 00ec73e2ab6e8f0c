//! docs/wechat-2.md §5–§7: the statistics endpoints, derived from the simulator's own follows,
//! unfollows and push deliveries, read with the typed client calls. The clock moves; nothing
//! sleeps except push attempts against a hanging receiver (200 ms timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use wechat::clock::{CHINA_UTC_OFFSET_SECS, day_start_ms};
use wechat::{
    AccessToken, InterfaceSummaryHourRow, InterfaceSummaryRow, NaiveDate, QrCodeKind,
    UserCumulateRow, UserSource, UserSummaryRow, WechatError,
};
use wechat_sim::{
    CancelUserSource, FaultAction, FaultSpec, FollowOptions, InterfaceCounting, QrScan, SimLimits,
};

use crate::common::{Env, code};

/// A day of January 2026 (the fixtures' clock starts on the 15th at 12:00 China time).
fn jan(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, d).unwrap()
}

/// `hh:mm` China time on `date`, as Unix ms.
fn at(date: NaiveDate, hh: i64, mm: i64) -> i64 {
    day_start_ms(date, CHINA_UTC_OFFSET_SECS) + (hh * 60 + mm) * 60_000
}

fn set(env: &Env, ms: i64) {
    env.sim().set_clock(ms).unwrap();
}

fn summary(date: NaiveDate, source: i64, new: i64, cancel: i64) -> UserSummaryRow {
    UserSummaryRow {
        ref_date: date,
        user_source: UserSource(source),
        new_user: new,
        cancel_user: cancel,
    }
}

fn cumulate(date: NaiveDate, n: i64) -> UserCumulateRow {
    UserCumulateRow {
        ref_date: date,
        cumulate_user: n,
    }
}

async fn user_summary(env: &Env, begin: NaiveDate, end: NaiveDate) -> Vec<UserSummaryRow> {
    let token = env.token("wx1").await;
    env.client.user_summary(&token, begin, end).await.unwrap()
}

async fn user_cumulate(env: &Env, begin: NaiveDate, end: NaiveDate) -> Vec<UserCumulateRow> {
    let token = env.token("wx1").await;
    env.client.user_cumulate(&token, begin, end).await.unwrap()
}

/// POSTs `body` to `/datacube/<name>` and returns the JSON answer.
async fn raw(env: &Env, token: &AccessToken, name: &str, body: &str) -> Value {
    env.http
        .post(env.url(&format!("/datacube/{name}?access_token={}", token.expose())))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn range(begin: &str, end: &str) -> String {
    json!({"begin_date": begin, "end_date": end}).to_string()
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

/// Users `u1`…`u5` and a verified account `wx1` without a push URL.
async fn env_with(change: impl FnOnce(&mut wechat_sim::SimConfig)) -> Env {
    let env = Env::with(change).await;
    env.account("wx1");
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        env.user(u);
    }
    env
}

#[tokio::test]
async fn follows_and_unfollows_are_counted_per_channel_once_the_day_is_ready_at_0800() {
    let env = env_with(|_| {}).await;
    let sim = env.sim();
    // 15 January, from 12:00: a search follow, two follows through QR codes (one hook, one
    // real scan of a code made by qrcode/create), a profile-card follow, and an unfollow.
    sim.follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let qr = FollowOptions {
        qr_scene_str: Some("promo".into()),
        ..FollowOptions::default()
    };
    sim.follow("wx1", "u2", qr).await.unwrap();
    let token = env.token("wx1").await;
    let kind = QrCodeKind::TemporaryStr {
        scene_str: "login".into(),
        expire_seconds: Some(600),
    };
    let ticket = env.client.create_qrcode(&token, &kind).await.unwrap();
    sim.scan_qrcode(QrScan::new(&ticket.ticket, "u3"))
        .await
        .unwrap();
    let card = FollowOptions {
        scene: Some("ADD_SCENE_PROFILE_CARD".into()),
        ..FollowOptions::default()
    };
    sim.follow("wx1", "u4", card).await.unwrap();
    sim.unfollow("wx1", "u1", true).await.unwrap();

    // Before 08:00 on the 16th the 15th is not ready: an empty list, no error.
    set(&env, at(jan(16), 7, 59));
    assert!(user_summary(&env, jan(15), jan(15)).await.is_empty());
    assert!(user_cumulate(&env, jan(15), jan(15)).await.is_empty());
    set(&env, at(jan(16), 8, 0));
    assert_eq!(
        user_summary(&env, jan(15), jan(15)).await,
        vec![
            // The unfollow counts under the channel of u1's latest follow (search).
            summary(jan(15), 1, 1, 1),
            summary(jan(15), 17, 1, 0),
            // docs/wechat-2.md §6.3: a follow through a QR code is user_source 30.
            summary(jan(15), 30, 2, 0),
        ]
    );
    assert_eq!(
        user_cumulate(&env, jan(15), jan(15)).await,
        vec![cumulate(jan(15), 3)]
    );
}

#[tokio::test]
async fn a_quiet_day_gets_one_zero_row_and_the_cumulative_count_carries_over() {
    let env = env_with(|_| {}).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    set(&env, at(jan(17), 10, 0));
    env.sim().unfollow("wx1", "u1", false).await.unwrap();
    env.sim().seed_followers("wx1", &["u2", "u3"]).unwrap();
    set(&env, at(jan(20), 9, 0));
    assert_eq!(
        user_summary(&env, jan(15), jan(19)).await,
        vec![
            summary(jan(15), 1, 1, 0),
            summary(jan(16), 0, 0, 0),
            summary(jan(17), 1, 2, 1),
            summary(jan(18), 0, 0, 0),
            summary(jan(19), 0, 0, 0),
        ]
    );
    assert_eq!(
        user_cumulate(&env, jan(15), jan(19)).await,
        vec![
            cumulate(jan(15), 1),
            cumulate(jan(16), 1),
            cumulate(jan(17), 2),
            cumulate(jan(18), 2),
            cumulate(jan(19), 2),
        ]
    );
}

#[tokio::test]
async fn without_the_quiet_day_knob_quiet_days_have_no_summary_row() {
    let env = env_with(|c| c.datacube_quiet_day_row = false).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    set(&env, at(jan(18), 9, 0));
    assert_eq!(
        user_summary(&env, jan(15), jan(17)).await,
        vec![summary(jan(15), 1, 1, 0)]
    );
    // Cumulative figures are per day regardless.
    assert_eq!(user_cumulate(&env, jan(15), jan(17)).await.len(), 3);
}

#[tokio::test]
async fn unfollows_go_under_0_with_the_other_knob_and_deleted_users_count_as_unfollows() {
    let env = env_with(|c| c.cancel_user_source = CancelUserSource::Other).await;
    let qr = FollowOptions {
        qr_scene: Some(7),
        ..FollowOptions::default()
    };
    env.sim().follow("wx1", "u1", qr).await.unwrap();
    env.sim()
        .follow("wx1", "u2", FollowOptions::default())
        .await
        .unwrap();
    env.sim().unfollow("wx1", "u1", false).await.unwrap();
    env.sim().delete_user("u2").unwrap();
    set(&env, at(jan(16), 8, 30));
    assert_eq!(
        user_summary(&env, jan(15), jan(15)).await,
        vec![
            summary(jan(15), 0, 0, 2),
            summary(jan(15), 1, 1, 0),
            summary(jan(15), 30, 1, 0),
        ]
    );
    assert_eq!(
        user_cumulate(&env, jan(15), jan(15)).await,
        vec![cumulate(jan(15), 0)]
    );
}

#[tokio::test]
async fn the_readiness_hour_is_a_knob_and_end_date_must_be_yesterday_or_earlier() {
    let env = env_with(|c| c.datacube_ready_hour = 0).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    set(&env, at(jan(16), 0, 0));
    assert_eq!(user_summary(&env, jan(15), jan(15)).await.len(), 1);
    // Today is refused with 61501, also as part of a range.
    let token = env.token("wx1").await;
    for (b, e) in [(16, 16), (14, 16), (16, 17)] {
        let err = env
            .client
            .user_summary(&token, jan(b), jan(e))
            .await
            .unwrap_err();
        assert_eq!(code(err), 61501, "{b}..{e}");
    }
}

#[tokio::test]
async fn a_range_ending_yesterday_before_0800_returns_the_older_days_only() {
    let env = env_with(|_| {}).await;
    set(&env, at(jan(20), 7, 0));
    let rows = user_summary(&env, jan(15), jan(19)).await;
    let dates: Vec<NaiveDate> = rows.iter().map(|r| r.ref_date).collect();
    assert_eq!(dates, [jan(15), jan(16), jan(17), jan(18)]);
}

#[tokio::test]
async fn spans_are_7_7_30_and_1_days_with_both_ends_counted() {
    let env = env_with(|_| {}).await;
    set(&env, at(jan(31), 12, 0));
    let token = env.token("wx1").await;
    for (name, ok, refused) in [
        (
            "getusersummary",
            ("2026-01-24", "2026-01-30"),
            ("2026-01-23", "2026-01-30"),
        ),
        (
            "getusercumulate",
            ("2026-01-24", "2026-01-30"),
            ("2026-01-23", "2026-01-30"),
        ),
        (
            "getinterfacesummary",
            ("2026-01-01", "2026-01-30"),
            ("2025-12-31", "2026-01-30"),
        ),
        (
            "getinterfacesummaryhour",
            ("2026-01-30", "2026-01-30"),
            ("2026-01-29", "2026-01-30"),
        ),
    ] {
        let answer = raw(&env, &token, name, &range(ok.0, ok.1)).await;
        assert_eq!(errcode(&answer), 0, "{name} {ok:?}: {answer}");
        assert!(answer["list"].is_array(), "{name}: {answer}");
        let answer = raw(&env, &token, name, &range(refused.0, refused.1)).await;
        assert_eq!(errcode(&answer), 61501, "{name} {refused:?}: {answer}");
        assert!(
            answer["errmsg"]
                .as_str()
                .unwrap()
                .starts_with("date range error"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn reversed_ranges_and_dates_before_2014_12_01_are_61501() {
    let env = env_with(|c| c.datacube_history_from_creation = false).await;
    let token = env.token("wx1").await;
    let reversed = raw(
        &env,
        &token,
        "getusersummary",
        &range("2026-01-10", "2026-01-09"),
    )
    .await;
    assert_eq!(errcode(&reversed), 61501);
    let early = raw(
        &env,
        &token,
        "getusercumulate",
        &range("2014-11-30", "2014-12-01"),
    )
    .await;
    assert_eq!(errcode(&early), 61501);
    let first = raw(
        &env,
        &token,
        "getusercumulate",
        &range("2014-12-01", "2014-12-02"),
    )
    .await;
    assert_eq!(errcode(&first), 0);
    assert_eq!(first["list"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn malformed_dates_are_61500_and_malformed_bodies_44002_47001_43002() {
    let env = env_with(|_| {}).await;
    let token = env.token("wx1").await;
    for body in [
        r#"{"begin_date":"20260110","end_date":"20260110"}"#,
        r#"{"begin_date":"2026-01-10","end_date":"2026-02-30"}"#,
        r#"{"begin_date":"2026-1-10","end_date":"2026-01-10"}"#,
        r#"{"begin_date":"2026-01-10"}"#,
        r#"{"begin_date":20260110,"end_date":"2026-01-10"}"#,
        r#"{}"#,
    ] {
        let answer = raw(&env, &token, "getusersummary", body).await;
        assert_eq!(errcode(&answer), 61500, "{body}: {answer}");
    }
    assert_eq!(
        errcode(&raw(&env, &token, "getusersummary", "").await),
        44002
    );
    assert_eq!(
        errcode(&raw(&env, &token, "getusersummary", "begin=1").await),
        47001
    );
    let get = env
        .get_json(&format!(
            "/datacube/getusercumulate?access_token={}",
            token.expose()
        ))
        .await;
    assert_eq!(errcode(&get), 43002);
}

#[tokio::test]
async fn unverified_accounts_get_48001_before_their_body_is_read() {
    let env = Env::new().await;
    env.account_with("wx1", |a| a.verified = false);
    let token = env.token("wx1").await;
    for name in [
        "getusersummary",
        "getusercumulate",
        "getinterfacesummary",
        "getinterfacesummaryhour",
    ] {
        assert_eq!(errcode(&raw(&env, &token, name, "").await), 48001, "{name}");
    }
    let err = env
        .client
        .user_cumulate(&token, jan(14), jan(14))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(wechat::ErrCode::API_UNAUTHORIZED));
    assert_eq!(err.class(), wechat::ErrorClass::Permission);
}

#[tokio::test]
async fn statistics_check_the_token_like_every_api() {
    let env = env_with(|_| {}).await;
    let call = |t: AccessToken| {
        let client = env.client.clone();
        async move { code(client.user_summary(&t, jan(14), jan(14)).await.unwrap_err()) }
    };
    assert_eq!(call(AccessToken::new("")).await, 41001);
    assert_eq!(call(AccessToken::new("nonsense")).await, 40014);
    let old = env.token("wx1").await;
    env.advance(7200);
    assert_eq!(call(old).await, 42001);
}

#[tokio::test]
async fn days_before_the_account_existed_are_left_out_unless_history_starts_on_the_first_date() {
    for from_creation in [true, false] {
        let env = env_with(|c| c.datacube_history_from_creation = from_creation).await;
        env.sim()
            .follow("wx1", "u1", FollowOptions::default())
            .await
            .unwrap();
        set(&env, at(jan(17), 9, 0));
        let dates: Vec<NaiveDate> = user_summary(&env, jan(10), jan(16))
            .await
            .iter()
            .map(|r| r.ref_date)
            .collect();
        let cumulated = user_cumulate(&env, jan(10), jan(16)).await;
        if from_creation {
            assert_eq!(dates, [jan(15), jan(16)]);
            assert_eq!(cumulated, [cumulate(jan(15), 1), cumulate(jan(16), 1)]);
        } else {
            assert_eq!(dates.len(), 7);
            assert_eq!(cumulated[0], cumulate(jan(10), 0));
            assert_eq!(cumulated[6], cumulate(jan(16), 1));
        }
    }
}

#[tokio::test]
async fn days_beyond_stats_days_are_dropped_and_the_running_total_is_kept() {
    let env = env_with(|c| {
        c.limits = SimLimits {
            stats_days: 2,
            ..SimLimits::default()
        }
    })
    .await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    set(&env, at(jan(17), 10, 0));
    // Recording on the 17th keeps the 16th and 17th only.
    env.sim()
        .follow("wx1", "u2", FollowOptions::default())
        .await
        .unwrap();
    set(&env, at(jan(18), 9, 0));
    assert_eq!(
        user_summary(&env, jan(15), jan(17)).await,
        vec![summary(jan(16), 0, 0, 0), summary(jan(17), 1, 1, 0)]
    );
    assert_eq!(
        user_cumulate(&env, jan(15), jan(17)).await,
        vec![cumulate(jan(16), 1), cumulate(jan(17), 2)]
    );
}

#[tokio::test]
async fn a_daily_limit_applies_when_configured_and_faults_inject_other_codes() {
    let env = Env::new().await;
    env.account_with("wx1", |a| {
        a.daily_limits.insert("/datacube/getusersummary".into(), 1);
    });
    let token = env.token("wx1").await;
    env.client
        .user_summary(&token, jan(14), jan(14))
        .await
        .unwrap();
    let err = env
        .client
        .user_summary(&token, jan(14), jan(14))
        .await
        .unwrap_err();
    assert_eq!(code(err), 45009);
    // The other endpoints keep no limit.
    env.client
        .user_cumulate(&token, jan(14), jan(14))
        .await
        .unwrap();
    env.sim()
        .add_fault(FaultSpec {
            endpoint: Some("/datacube/getusercumulate".into()),
            appid: None,
            action: FaultAction::Errcode {
                code: -1,
                errmsg: None,
            },
            next: Some(1),
            rate: None,
        })
        .unwrap();
    let err = env
        .client
        .user_cumulate(&token, jan(14), jan(14))
        .await
        .unwrap_err();
    assert_eq!(code(err), -1);
}

#[tokio::test]
async fn the_client_refuses_a_range_over_the_span_without_calling() {
    let env = env_with(|_| {}).await;
    let token = env.token("wx1").await;
    let err = env
        .client
        .user_summary(&token, jan(1), jan(8))
        .await
        .unwrap_err();
    assert!(matches!(err, WechatError::InvalidInput { .. }), "{err:?}");
    assert_eq!(
        env.sim().counter("wx1", "/datacube/getusersummary").calls,
        0
    );
}

// ---- interface statistics (§7) ----

const SUCCESS: u8 = 0;
const GARBAGE: u8 = 1;
const ERROR_500: u8 = 2;
const HANG: u8 = 3;

/// A push receiver whose answer can be switched between pushes.
async fn switchable_receiver() -> (String, Arc<AtomicU8>) {
    let mode = Arc::new(AtomicU8::new(SUCCESS));
    let m = mode.clone();
    let app = Router::new().route(
        "/push",
        post(move || {
            let m = m.clone();
            async move {
                let r: Response = match m.load(Ordering::SeqCst) {
                    SUCCESS => "success".into_response(),
                    GARBAGE => "{\"not\":\"xml\"}".into_response(),
                    ERROR_500 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
                    _ => std::future::pending().await,
                };
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/push"), mode)
}

/// `wx1` pushing to a switchable receiver, with follower `u1`.
async fn pushing_env(change: impl FnOnce(&mut wechat_sim::SimConfig)) -> (Env, Arc<AtomicU8>) {
    let env = Env::with(change).await;
    let (url, mode) = switchable_receiver().await;
    env.account_with("wx1", |a| a.push_url = Some(url));
    env.user("u1");
    (env, mode)
}

async fn interface(env: &Env, begin: NaiveDate, end: NaiveDate) -> Vec<InterfaceSummaryRow> {
    let token = env.token("wx1").await;
    env.client
        .interface_summary(&token, begin, end)
        .await
        .unwrap()
}

async fn interface_hours(env: &Env, date: NaiveDate) -> Vec<InterfaceSummaryHourRow> {
    let token = env.token("wx1").await;
    env.client
        .interface_summary_hour(&token, date)
        .await
        .unwrap()
}

/// On the 15th: at 12:00 a follow answered `success`; at 13:10 a text answered with JSON
/// (invalid, not retried), one answered 500 (three attempts) and one never answered (three
/// attempts at the 200 ms timeout).
async fn four_pushes(env: &Env, mode: &AtomicU8) {
    let sim = env.sim();
    sim.follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    set(env, at(jan(15), 13, 10));
    for m in [GARBAGE, ERROR_500, HANG] {
        mode.store(m, Ordering::SeqCst);
        sim.send_text("wx1", "u1", "hi", None).await.unwrap();
    }
}

#[tokio::test]
async fn every_push_attempt_is_a_callback_with_failures_and_latency_capped_at_the_timeout() {
    let (env, mode) = pushing_env(|_| {}).await;
    four_pushes(&env, &mode).await;
    set(&env, at(jan(16), 7, 59));
    assert!(interface(&env, jan(15), jan(15)).await.is_empty());
    assert!(interface_hours(&env, jan(15)).await.is_empty());
    set(&env, at(jan(16), 8, 0));
    let days = interface(&env, jan(1), jan(15)).await;
    assert_eq!(days.len(), 1, "{days:?}");
    let d = days[0];
    assert_eq!(d.ref_date, jan(15));
    assert_eq!((d.callback_count, d.fail_count), (8, 7));
    // The hanging attempts cost the whole timeout, and no more.
    assert!((150..=200).contains(&d.max_time_cost), "{d:?}");
    assert!(d.total_time_cost >= 3 * 150, "{d:?}");
    let hours = interface_hours(&env, jan(15)).await;
    assert_eq!(
        hours
            .iter()
            .map(|h| (h.ref_hour, h.callback_count, h.fail_count))
            .collect::<Vec<_>>(),
        [(1200, 1, 0), (1300, 7, 7)]
    );
    assert_eq!(hours[0].hour(), 12);
    assert!(hours[0].total_time_cost <= 200);
    assert_eq!(hours[1].max_time_cost, d.max_time_cost);
    assert_eq!(
        hours.iter().map(|h| h.total_time_cost).sum::<i64>(),
        d.total_time_cost
    );
}

#[tokio::test]
async fn with_the_pushes_knob_every_push_is_one_callback() {
    let (env, mode) = pushing_env(|c| c.interface_counting = InterfaceCounting::Pushes).await;
    four_pushes(&env, &mode).await;
    set(&env, at(jan(16), 9, 0));
    let d = interface(&env, jan(15), jan(15)).await[0];
    assert_eq!((d.callback_count, d.fail_count), (4, 3));
}

#[tokio::test]
async fn days_without_pushes_have_no_interface_rows_and_the_hour_follows_china_time() {
    let (env, _mode) = pushing_env(|_| {}).await;
    // 23:30 on the 15th in China is 15:30 UTC: it belongs to the 15th, hour 2300.
    set(&env, at(jan(15), 23, 30));
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    set(&env, at(jan(18), 9, 0));
    let days = interface(&env, jan(14), jan(17)).await;
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].ref_date, jan(15));
    let hours = interface_hours(&env, jan(15)).await;
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].ref_hour, 2300);
    assert!(interface_hours(&env, jan(16)).await.is_empty());
}
