//! docs/wechat-2.md §1–§4: `qrcode/create`, `showqrcode` and the scan hook, through the
//! `wechat` client where it has the call (raw HTTP only for input the typed client refuses to
//! send), with pushes checked by the verifying receiver of `push.rs`.

use std::time::Duration;

use serde_json::{Value, json};
use wechat::api::QrCodeKind;
use wechat::xml::{PushKind, QrScan as PushedScan};
use wechat::{AccessToken, Lang, WechatError};
use wechat_sim::{
    AccountKind, ExpireSecondsEcho, FollowOptions, PermanentSameScene, PushMode, QrInputMode,
    QrOverMax, QrScan, SimConfig,
};

use crate::common::{Env, code};
use crate::push::{Answer, setup};

const CREATE: &str = "/cgi-bin/qrcode/create";

fn temporary_str(scene: &str, expire: Option<u32>) -> QrCodeKind {
    QrCodeKind::TemporaryStr {
        scene_str: scene.into(),
        expire_seconds: expire,
    }
}

/// POSTs `body` to `qrcode/create` as it is (for input the typed client will not send).
async fn raw_create(env: &Env, token: &AccessToken, body: impl Into<reqwest::Body>) -> Value {
    env.http
        .post(env.url(&format!("{CREATE}?access_token={}", token.expose())))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(0)
}

/// The image of `ticket` as the client addresses it: status, content type, body.
async fn image(env: &Env, ticket: &str) -> (u16, String, Vec<u8>) {
    let resp = env
        .http
        .get(env.client.qrcode_image_url(ticket))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.bytes().await.unwrap().to_vec())
}

/// Reads a QR code back out of a PNG.
fn decode_qr(png: &[u8]) -> String {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        img.width() as usize,
        img.height() as usize,
        |x, y| img.get_pixel(x as u32, y as u32)[0],
    );
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

// ---- qrcode/create: the four action names and the answer (§1.1, §1.3) ----

#[tokio::test]
async fn each_action_name_creates_a_code_with_the_documented_answer() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let kinds = [
        QrCodeKind::Temporary {
            scene_id: 4_294_967_295,
            expire_seconds: Some(600),
        },
        temporary_str("l:Zq3vX0aW9r1bLkTt2mQe8w", Some(600)),
        QrCodeKind::Permanent { scene_id: 100_000 },
        QrCodeKind::PermanentStr {
            scene_str: "字".repeat(64),
        },
    ];
    let mut tickets = Vec::new();
    for kind in &kinds {
        let t = env.client.create_qrcode(&token, kind).await.unwrap();
        assert!(t.url.starts_with("http://weixin.qq.com/q/02"), "{}", t.url);
        // Padded URL-safe base64: a client must percent-encode it (§1.3).
        assert!(t.ticket.ends_with("=="), "{}", t.ticket);
        assert!(
            t.ticket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b))
        );
        assert_eq!(
            t.expire_seconds,
            (!kind.is_permanent()).then_some(600),
            "{kind:?}"
        );
        let view = env.sim().qrcode(&t.ticket).unwrap();
        assert_eq!(view.action_name.name(), kind.action_name());
        assert_eq!(
            view.scene_id
                .map(|n| n.to_string())
                .or(view.scene_str.clone())
                .unwrap(),
            kind.scene()
        );
        assert_eq!(view.url, t.url);
        tickets.push(t.ticket);
    }
    tickets.sort();
    tickets.dedup();
    assert_eq!(tickets.len(), 4, "every code has its own ticket");

    // The exact key sets of §1.3: a permanent code has no expire_seconds at all.
    let temp = raw_create(
        &env,
        &token,
        r#"{"expire_seconds":600,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":7}}}"#,
    )
    .await;
    let keys: Vec<&str> = temp
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["expire_seconds", "ticket", "url"]);
    let permanent = raw_create(
        &env,
        &token,
        r#"{"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":7}}}"#,
    )
    .await;
    let keys: Vec<&str> = permanent
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["ticket", "url"]);
}

#[tokio::test]
async fn every_temporary_create_mints_a_new_ticket_even_for_the_same_scene() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let kind = temporary_str("same-for-everyone", Some(300));
    let a = env.client.create_qrcode(&token, &kind).await.unwrap();
    let b = env.client.create_qrcode(&token, &kind).await.unwrap();
    assert_ne!(a.ticket, b.ticket);
    assert_ne!(a.url, b.url);
    for t in [&a.ticket, &b.ticket] {
        assert_eq!(image(&env, t).await.0, 200, "both codes live");
    }
}

// ---- lifetimes (§1.2) ----

#[tokio::test]
async fn a_temporary_code_without_expire_seconds_lives_60_seconds_on_the_clock() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("s", None))
        .await
        .unwrap();
    assert_eq!(t.expire_seconds, Some(60));
    env.advance(59);
    assert_eq!(image(&env, &t.ticket).await.0, 200);
    env.advance(1);
    assert_eq!(image(&env, &t.ticket).await.0, 404);
    assert_eq!(
        env.sim().qrcode(&t.ticket).unwrap().status,
        "expired",
        "kept, so a scan can say so"
    );
}

#[tokio::test]
async fn the_default_lifetime_is_a_knob() {
    let env = Env::with(|c| c.qr_default_expire = Duration::from_secs(30)).await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(
            &token,
            &QrCodeKind::Temporary {
                scene_id: 1,
                expire_seconds: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(t.expire_seconds, Some(30));
    env.advance(30);
    assert_eq!(image(&env, &t.ticket).await.0, 404);
}

#[tokio::test]
async fn a_temporary_code_lives_as_long_as_asked_up_to_30_days() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("month", Some(2_592_000)))
        .await
        .unwrap();
    assert_eq!(t.expire_seconds, Some(2_592_000));
    env.advance(2_592_000 - 1);
    assert_eq!(image(&env, &t.ticket).await.0, 200);
    env.advance(1);
    assert_eq!(image(&env, &t.ticket).await.0, 404);
}

#[tokio::test]
async fn expire_seconds_above_30_days_is_clamped_by_default() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    // The typed client refuses to send it.
    let err = env
        .client
        .create_qrcode(&token, &temporary_str("x", Some(2_592_001)))
        .await
        .unwrap_err();
    assert!(matches!(err, WechatError::InvalidInput { .. }), "{err:?}");
    assert_eq!(
        env.sim().counter("wx1", CREATE).calls,
        0,
        "nothing was sent"
    );
    let v = raw_create(
        &env,
        &token,
        r#"{"expire_seconds":99999999,"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":"x"}}}"#,
    )
    .await;
    assert_eq!(v["expire_seconds"], 2_592_000);
    let view = env.sim().qrcode(v["ticket"].as_str().unwrap()).unwrap();
    assert_eq!(
        view.expires_at_ms.unwrap() - view.created_at_ms,
        2_592_000_000
    );
}

#[tokio::test]
async fn expire_seconds_above_30_days_answers_40035_with_the_reject_knob() {
    let env = Env::with(|c| c.qr_over_max = QrOverMax::Reject).await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let v = raw_create(
        &env,
        &token,
        r#"{"expire_seconds":2592001,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":5}}}"#,
    )
    .await;
    assert_eq!(errcode(&v), 40035, "{v}");
    assert!(env.sim().qrcodes("wx1").unwrap().is_empty());
}

#[tokio::test]
async fn permanent_codes_ignore_expire_seconds_and_never_expire() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    // Any expire_seconds, even a nonsensical one, is ignored (§1.1).
    let v = raw_create(
        &env,
        &token,
        r#"{"expire_seconds":"soon","action_name":"QR_LIMIT_STR_SCENE","action_info":{"scene":{"scene_str":"forever"}}}"#,
    )
    .await;
    assert!(v.get("expire_seconds").is_none(), "{v}");
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    assert_eq!(env.sim().qrcode(&ticket).unwrap().expires_at_ms, None);
    env.advance(400 * 86_400);
    assert_eq!(image(&env, &ticket).await.0, 200);
}

#[tokio::test]
async fn the_answer_says_expire_seconds_0_with_the_echo_knob_but_the_code_lives_as_asked() {
    let env = Env::with(|c| c.expire_seconds_echo = ExpireSecondsEcho::Zero).await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("x", Some(600)))
        .await
        .unwrap();
    assert_eq!(t.expire_seconds, Some(0));
    env.advance(599);
    assert_eq!(image(&env, &t.ticket).await.0, 200);
    env.advance(1);
    assert_eq!(image(&env, &t.ticket).await.0, 404);
}

// ---- the permanent budget (§1.2, §1.6) ----

#[tokio::test]
async fn a_permanent_scene_created_again_gets_the_same_ticket_without_a_new_slot() {
    let env = Env::with(|c| c.qr_permanent_limit = 2).await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let kind = QrCodeKind::Permanent { scene_id: 42 };
    let a = env.client.create_qrcode(&token, &kind).await.unwrap();
    for _ in 0..3 {
        let again = env.client.create_qrcode(&token, &kind).await.unwrap();
        assert_eq!(again, a);
    }
    // Integer 42 and string "42" are different scenes.
    let s = QrCodeKind::PermanentStr {
        scene_str: "42".into(),
    };
    let b = env.client.create_qrcode(&token, &s).await.unwrap();
    assert_ne!(b.ticket, a.ticket);
    // Two slots used, so a third scene is refused; the known ones still answer.
    let err = env
        .client
        .create_qrcode(&token, &QrCodeKind::Permanent { scene_id: 43 })
        .await
        .unwrap_err();
    assert_eq!(code(err), 45009);
    assert_eq!(env.client.create_qrcode(&token, &kind).await.unwrap(), a);
    assert_eq!(env.client.create_qrcode(&token, &s).await.unwrap(), b);
}

#[tokio::test]
async fn with_the_new_ticket_knob_every_permanent_create_spends_a_slot() {
    let env = Env::with(|c| {
        c.qr_permanent_limit = 3;
        c.permanent_same_scene = PermanentSameScene::NewTicket;
    })
    .await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let kind = QrCodeKind::PermanentStr {
        scene_str: "shop".into(),
    };
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(
            env.client
                .create_qrcode(&token, &kind)
                .await
                .unwrap()
                .ticket,
        );
    }
    tickets.dedup();
    assert_eq!(tickets.len(), 3);
    let err = env.client.create_qrcode(&token, &kind).await.unwrap_err();
    assert_eq!(code(err), 45009);
    // The older codes keep working.
    for t in &tickets {
        assert_eq!(image(&env, t).await.0, 200);
    }
}

#[tokio::test]
async fn the_permanent_budget_is_100000_per_account_and_temporary_codes_do_not_spend_it() {
    assert_eq!(SimConfig::default().qr_permanent_limit, 100_000);
    let env = Env::with(|c| c.qr_permanent_limit = 3).await;
    env.account("wx1");
    env.account("wx2");
    let token = env.token("wx1").await;
    for i in 0..10 {
        let kind = QrCodeKind::Temporary {
            scene_id: i + 1,
            expire_seconds: Some(60),
        };
        env.client.create_qrcode(&token, &kind).await.unwrap();
    }
    for id in 1..=3 {
        let kind = QrCodeKind::Permanent { scene_id: id };
        env.client.create_qrcode(&token, &kind).await.unwrap();
    }
    let fourth = QrCodeKind::Permanent { scene_id: 4 };
    let err = env.client.create_qrcode(&token, &fourth).await.unwrap_err();
    assert_eq!(code(err), 45009);
    // The budget is the account's over its life: a new quota day does not restore it.
    env.advance(86_400);
    let token = env.token("wx1").await;
    let err = env.client.create_qrcode(&token, &fourth).await.unwrap_err();
    assert_eq!(code(err), 45009);
    // Another account has its own.
    let other = env.token("wx2").await;
    env.client.create_qrcode(&other, &fourth).await.unwrap();
}

// ---- the daily quota (§1.2, part 1 §3) ----

#[tokio::test]
async fn qrcode_create_has_a_daily_quota_of_100000_that_refuses_with_45009() {
    let env = Env::new().await;
    env.account("wx1");
    env.account_with("wx2", |a| {
        a.daily_limits.insert(CREATE.into(), 2);
    });
    let token = env.token("wx1").await;
    let quota = env.client.get_api_quota(&token, CREATE).await.unwrap();
    assert_eq!(quota.quota.daily_limit, 100_000);

    let token = env.token("wx2").await;
    let kind = temporary_str("x", Some(60));
    for _ in 0..2 {
        env.client.create_qrcode(&token, &kind).await.unwrap();
    }
    // A refused call costs nothing (part 1 §3): the refusals below leave `used` at 2.
    let bad = raw_create(&env, &token, "{}").await;
    assert_eq!(errcode(&bad), 45009, "the quota is checked before the body");
    let err = env.client.create_qrcode(&token, &kind).await.unwrap_err();
    assert_eq!(code(err), 45009);
    let quota = env.client.get_api_quota(&token, CREATE).await.unwrap();
    assert_eq!((quota.quota.used, quota.quota.remain), (2, 0));
    // The next quota day (00:00 UTC+8) starts afresh.
    env.advance(12 * 3600);
    let token = env.token("wx2").await;
    env.client.create_qrcode(&token, &kind).await.unwrap();
}

// ---- the checks every cgi-bin call has (§0, part 1 §1) ----

#[tokio::test]
async fn qrcode_create_checks_the_token_like_every_cgi_bin_call() {
    let env = Env::new().await;
    env.account("wx1");
    let kind = temporary_str("x", Some(60));
    let call = |t: AccessToken| {
        let env = &env;
        let kind = &kind;
        async move { code(env.client.create_qrcode(&t, kind).await.unwrap_err()) }
    };
    // 41001: no token at all.
    let v: Value = env
        .http
        .post(env.url(CREATE))
        .body(r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1}}}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&v), 41001);
    assert_eq!(call(AccessToken::new("garbage")).await, 40014);
    let old = env.token("wx1").await;
    let _new = env.token("wx1").await;
    env.advance(300);
    assert_eq!(call(old).await, 40001, "superseded and past its grace");
    let current = env.token("wx1").await;
    env.advance(7200);
    assert_eq!(call(current).await, 42001);
    assert!(env.sim().qrcodes("wx1").unwrap().is_empty());
}

#[tokio::test]
async fn a_stable_token_is_accepted_too() {
    let env = Env::new().await;
    env.account("wx1");
    let stable = env
        .client
        .get_stable_token("wx1", &crate::common::secret("wx1"), false)
        .await
        .unwrap()
        .access_token;
    env.client
        .create_qrcode(&stable, &temporary_str("x", Some(60)))
        .await
        .unwrap();
}

#[tokio::test]
async fn subscription_and_unverified_accounts_get_48001() {
    let env = Env::new().await;
    env.account_with("wxsub", |a| a.kind = AccountKind::Subscription);
    env.account_with("wxunv", |a| a.verified = false);
    for appid in ["wxsub", "wxunv"] {
        let token = env.token(appid).await;
        let err = env
            .client
            .create_qrcode(&token, &temporary_str("x", Some(60)))
            .await
            .unwrap_err();
        assert_eq!(code(err), 48001, "{appid}");
    }
}

#[tokio::test]
async fn empty_unparseable_and_get_requests_get_44002_47001_and_43002() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    assert_eq!(errcode(&raw_create(&env, &token, "").await), 44002);
    assert_eq!(errcode(&raw_create(&env, &token, "  \n").await), 44002);
    assert_eq!(errcode(&raw_create(&env, &token, "{not json").await), 47001);
    assert_eq!(errcode(&raw_create(&env, &token, "[1,2]").await), 47001);
    let v: Value = env
        .http
        .get(env.url(&format!("{CREATE}?access_token={}", token.expose())))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(errcode(&v), 43002);
}

#[tokio::test]
async fn a_missing_or_unknown_action_name_is_40053_in_either_mode() {
    for mode in [QrInputMode::Lenient, QrInputMode::Strict] {
        let env = Env::with(|c| c.qr_input_mode = mode).await;
        env.account("wx1");
        let token = env.token("wx1").await;
        for body in [
            r#"{"action_info":{"scene":{"scene_id":1}}}"#,
            r#"{"action_name":"QR_TEMP_SCENE","action_info":{"scene":{"scene_id":1}}}"#,
            r#"{"action_name":"qr_scene","action_info":{"scene":{"scene_id":1}}}"#,
            r#"{"action_name":7}"#,
        ] {
            let v = raw_create(&env, &token, body).await;
            assert_eq!(errcode(&v), 40053, "{mode:?} {body}: {v}");
        }
    }
}

#[tokio::test]
async fn a_busy_platform_reaches_the_client_as_minus_1() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let fault = json!({"endpoint": CREATE, "action": {"kind": "errcode", "code": -1}, "next": 1});
    env.sim()
        .add_fault(serde_json::from_value(fault).unwrap())
        .unwrap();
    let err = env
        .client
        .create_qrcode(&token, &temporary_str("x", Some(60)))
        .await
        .unwrap_err();
    assert_eq!(code(err), -1);
    assert!(env.sim().qrcodes("wx1").unwrap().is_empty());
    env.client
        .create_qrcode(&token, &temporary_str("x", Some(60)))
        .await
        .unwrap();
}

// ---- lenient and strict input (§1.4) ----

/// The scene a created code got, as `(scene_id, scene_str)`.
async fn scene_of(env: &Env, token: &AccessToken, body: &str) -> (Option<u32>, Option<String>) {
    let v = raw_create(env, token, body.to_owned()).await;
    assert_eq!(errcode(&v), 0, "{body}: {v}");
    let view = env.sim().qrcode(v["ticket"].as_str().unwrap()).unwrap();
    (view.scene_id, view.scene_str)
}

#[tokio::test]
async fn lenient_input_succeeds_with_scene_0_and_takes_numeric_strings() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let cases = [
        // §1.4: no `scene` wrapper → scene 0.
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene_id":123}}"#,
            Some(0),
        ),
        (r#"{"action_name":"QR_SCENE"}"#, Some(0)),
        // §1.4: a non-numeric string scene_id → 0; a numeric one is taken.
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":"abc"}}}"#,
            Some(0),
        ),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":"123"}}}"#,
            Some(123),
        ),
        (
            r#"{"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":"77"}}}"#,
            Some(77),
        ),
        // §1.2 observed: larger temporary ids saturate.
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1099511627776}}}"#,
            Some(4_294_967_295),
        ),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":0}}}"#,
            Some(0),
        ),
        // A string code whose scene cannot be read is a scene-0 code too.
        (
            r#"{"action_name":"QR_STR_SCENE","action_info":{"scene_str":"x"}}"#,
            Some(0),
        ),
        (
            r#"{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":""}}}"#,
            Some(0),
        ),
    ];
    for (body, want) in cases {
        assert_eq!(scene_of(&env, &token, body).await, (want, None), "{body}");
    }
    assert_eq!(
        scene_of(
            &env,
            &token,
            r#"{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":12}}}"#
        )
        .await,
        (None, Some("12".into()))
    );
    // An unreadable expire_seconds gets the default lifetime; a numeric string is taken.
    let v = raw_create(
        &env,
        &token,
        r#"{"expire_seconds":"later","action_name":"QR_SCENE","action_info":{"scene":{"scene_id":9}}}"#,
    )
    .await;
    assert_eq!(v["expire_seconds"], 60);
    let v = raw_create(
        &env,
        &token,
        r#"{"expire_seconds":"600","action_name":"QR_SCENE","action_info":{"scene":{"scene_id":9}}}"#,
    )
    .await;
    assert_eq!(v["expire_seconds"], 600);
}

#[tokio::test]
async fn strict_input_answers_40053_for_unreadable_action_info_and_40035_out_of_range() {
    let env = Env::with(|c| c.qr_input_mode = QrInputMode::Strict).await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let cases = [
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene_id":123}}"#,
            40053,
        ),
        (r#"{"action_name":"QR_SCENE"}"#, 40053),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":"abc"}}}"#,
            40053,
        ),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":"123"}}}"#,
            40053,
        ),
        (
            r#"{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_id":5}}}"#,
            40053,
        ),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":0}}}"#,
            40035,
        ),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":4294967296}}}"#,
            40035,
        ),
        (
            r#"{"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":-4}}}"#,
            40035,
        ),
        (
            r#"{"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":""}}}"#,
            40035,
        ),
        (
            r#"{"expire_seconds":0,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1}}}"#,
            40035,
        ),
        (
            r#"{"expire_seconds":"600","action_name":"QR_SCENE","action_info":{"scene":{"scene_id":1}}}"#,
            40035,
        ),
    ];
    for (body, want) in cases {
        let v = raw_create(&env, &token, body).await;
        assert_eq!(errcode(&v), want, "{body}: {v}");
    }
    assert!(env.sim().qrcodes("wx1").unwrap().is_empty());
    // Well-formed input still works.
    let ok = r#"{"expire_seconds":600,"action_name":"QR_SCENE","action_info":{"scene":{"scene_id":4294967295}}}"#;
    assert_eq!(
        scene_of(&env, &token, ok).await,
        (Some(4_294_967_295), None)
    );
}

#[tokio::test]
async fn documented_ranges_are_refused_with_40035_in_either_mode() {
    for mode in [QrInputMode::Lenient, QrInputMode::Strict] {
        let env = Env::with(|c| c.qr_input_mode = mode).await;
        env.account("wx1");
        let token = env.token("wx1").await;
        let long = "a".repeat(65);
        let max = "字".repeat(64);
        for body in [
            json!({"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":100_001}}}),
            json!({"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":0}}}),
            json!({"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":long}}}),
            json!({"action_name":"QR_LIMIT_STR_SCENE","action_info":{"scene":{"scene_str":long}}}),
        ] {
            let v = raw_create(&env, &token, body.to_string()).await;
            assert_eq!(errcode(&v), 40035, "{mode:?} {body}: {v}");
        }
        // 64 characters are fine, however many bytes they take.
        let body = json!({"action_name":"QR_STR_SCENE","action_info":{"scene":{"scene_str":max}}});
        assert_eq!(
            scene_of(&env, &token, &body.to_string()).await,
            (None, Some(max.clone()))
        );
    }
}

// ---- showqrcode (§2) ----

#[tokio::test]
async fn showqrcode_serves_a_png_that_encodes_the_url_on_the_mp_base() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("l:abc", Some(600)))
        .await
        .unwrap();
    let url = env.client.qrcode_image_url(&t.ticket);
    assert_eq!(
        url.as_str(),
        format!(
            "{}cgi-bin/showqrcode?ticket={}",
            env.running.mp_base_url(),
            t.ticket.replace('=', "%3D")
        )
    );
    let resp = env.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.headers()["cache-control"], "max-age=604800");
    let png = resp.bytes().await.unwrap();
    assert_eq!(decode_qr(&png), t.url);
    // No token is needed, and the image is counted under the code's account.
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/showqrcode").ok, 1);
}

#[tokio::test]
async fn showqrcode_is_404_for_unknown_expired_or_missing_tickets_and_not_on_the_api_host() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("x", Some(60)))
        .await
        .unwrap();
    assert_eq!(image(&env, "gQunknown==").await.0, 404);
    let resp = env.get("/mp/cgi-bin/showqrcode").await;
    assert_eq!(resp.status(), 404);
    // A client that builds the image URL on the API base finds nothing there.
    let wrong = env
        .get(&format!(
            "/cgi-bin/showqrcode?ticket={}",
            t.ticket.replace('=', "%3D")
        ))
        .await;
    assert_eq!(wrong.status(), 404);
    let (status, ctype, _) = image(&env, &t.ticket).await;
    assert_eq!((status, ctype.as_str()), (200, "image/png"));
    env.advance(60);
    let (status, _, body) = image(&env, &t.ticket).await;
    assert_eq!(status, 404);
    assert!(body.is_empty());
    let counter = env.sim().counter("wx1", "/cgi-bin/showqrcode");
    assert_eq!((counter.ok, counter.errors), (1, 1));
}

#[tokio::test]
async fn a_ticket_cut_at_its_padding_names_no_code() {
    // What a client that forgets to encode and then splits on `=` ends up sending.
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("x", Some(60)))
        .await
        .unwrap();
    assert_eq!(image(&env, t.ticket.trim_end_matches('=')).await.0, 404);
    assert_eq!(image(&env, &t.ticket).await.0, 200);
}

// ---- the scan hook and its pushes (§3, §4.4) ----

async fn create_for_scan(env: &Env, kind: &QrCodeKind) -> wechat::QrCodeTicket {
    let token = env.token("wx1").await;
    env.client.create_qrcode(&token, kind).await.unwrap()
}

async fn user_info(env: &Env, openid: &str) -> wechat::api::UserInfo {
    let token = env.token("wx1").await;
    env.client
        .user_info(&token, openid, Lang::ZhCn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_non_follower_who_scans_and_follows_gets_subscribe_with_qrscene_and_ticket() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Safe).await;
    let t = create_for_scan(&env, &temporary_str("l:Zq3vX0aW9r1bLkTt2mQe8w", Some(300))).await;
    let out = env
        .sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    assert_eq!(out.event, Some("subscribe"));
    assert_eq!(out.ticket, t.ticket);
    let d = out.delivery.unwrap();
    assert_eq!((d.event.as_str(), d.reply_valid), ("subscribe", Some(true)));
    assert!(d.message_xml.contains(&format!(
        "<EventKey><![CDATA[qrscene_l:Zq3vX0aW9r1bLkTt2mQe8w]]></EventKey><Ticket><![CDATA[{}]]></Ticket>",
        t.ticket
    )));
    let c = got.lock().unwrap()[0].clone();
    assert!(c.signature_ok && c.encrypted, "safe mode, signed");
    assert_eq!(
        c.message.qr_scan(),
        Some(PushedScan {
            new_follower: true,
            scene: "l:Zq3vX0aW9r1bLkTt2mQe8w",
            ticket: &t.ticket,
        })
    );
    // §3.3: user/info reflects the follow through the code.
    let info = user_info(&env, &out.openid).await;
    assert!(info.subscribe);
    assert_eq!(info.subscribe_scene.as_deref(), Some("ADD_SCENE_QR_CODE"));
    assert_eq!(info.qr_scene, Some(0));
    assert_eq!(
        info.qr_scene_str.as_deref(),
        Some("l:Zq3vX0aW9r1bLkTt2mQe8w")
    );
    assert_eq!(info.subscribe_time, Some(env.sim().now_ms() / 1000));
}

#[tokio::test]
async fn a_follower_who_scans_gets_scan_with_the_bare_scene_and_user_info_does_not_change() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    let t = create_for_scan(
        &env,
        &QrCodeKind::Temporary {
            scene_id: 4_294_967_295,
            expire_seconds: Some(600),
        },
    )
    .await;
    let first = env
        .sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    assert_eq!(first.event, Some("subscribe"));
    let info_before = user_info(&env, &first.openid).await;
    assert_eq!(info_before.qr_scene, Some(4_294_967_295));
    assert_eq!(info_before.qr_scene_str, None);

    env.advance(30);
    // Scanning again, named by url — `follow: false` does not matter to a follower.
    let again = QrScan {
        follow: Some(false),
        ..QrScan::new(&t.url, "u1")
    };
    let second = env.sim().scan_qrcode(again).await.unwrap();
    assert_eq!(second.event, Some("SCAN"));
    let c = got.lock().unwrap()[1].clone();
    assert!(c.signature_ok && !c.encrypted);
    assert_eq!(
        c.message.kind,
        PushKind::Scan {
            event_key: "4294967295".into(),
            ticket: Some(t.ticket.clone())
        }
    );
    assert_eq!(c.message.event(), Some("SCAN"), "upper case (§3.2)");
    assert_eq!(
        c.message.create_time,
        env.sim().now_ms() / 1000,
        "a new CreateTime"
    );
    assert_eq!(user_info(&env, &first.openid).await, info_before);
}

#[tokio::test]
async fn a_plain_follower_scanning_keeps_their_original_subscribe_scene() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let t = create_for_scan(&env, &QrCodeKind::Permanent { scene_id: 7 }).await;
    let out = env
        .sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    assert_eq!(out.event, Some("SCAN"));
    assert_eq!(
        got.lock().unwrap()[1].message.qr_scan().map(|s| s.scene),
        Some("7")
    );
    let info = user_info(&env, &out.openid).await;
    assert_eq!(info.subscribe_scene.as_deref(), Some("ADD_SCENE_SEARCH"));
    assert_eq!(info.qr_scene, Some(0));
}

#[tokio::test]
async fn a_non_follower_who_leaves_without_following_causes_no_push() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    let t = create_for_scan(&env, &temporary_str("x", Some(60))).await;
    let scan = QrScan {
        follow: Some(false),
        ..QrScan::new(&t.ticket, "u1")
    };
    let out = env.sim().scan_qrcode(scan).await.unwrap();
    assert_eq!(out.event, None);
    assert!(out.delivery.is_none());
    assert!(env.sim().followers("wx1").unwrap().is_empty());
    assert!(got.lock().unwrap().is_empty());
    assert!(!user_info(&env, &out.openid).await.subscribe);
}

#[tokio::test]
async fn an_expired_code_cannot_be_scanned_and_pushes_nothing() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    let t = create_for_scan(&env, &temporary_str("x", Some(60))).await;
    env.advance(60);
    let resp = env
        .post_json(
            "/__sim/scan",
            json!({"ticket": t.ticket, "user": "u1", "follow": true}),
        )
        .await;
    assert_eq!(resp.status(), 410);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "expired");
    assert!(got.lock().unwrap().is_empty());
    assert!(env.sim().followers("wx1").unwrap().is_empty());
    assert!(env.sim().deliveries(Some("wx1")).is_empty());
}

#[tokio::test]
async fn the_control_route_scans_by_url_or_ticket_as_a_user_or_an_openid() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    env.account("wx2");
    let t = create_for_scan(
        &env,
        &QrCodeKind::Temporary {
            scene_id: 31,
            expire_seconds: Some(600),
        },
    )
    .await;
    // By url, as a user.
    let resp = env
        .post_json("/__sim/scan", json!({"url": t.url, "user": "u1"}))
        .await;
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["event"], "subscribe");
    assert_eq!(out["ticket"], t.ticket.as_str());
    assert_eq!(out["delivery"]["event"], "subscribe");
    // By ticket, as the same person's openid.
    let openid = out["openid"].as_str().unwrap();
    let out: Value = env
        .post_json(
            "/__sim/scan",
            json!({"ticket": t.ticket, "openid": openid, "appid": "wx1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out["event"], "SCAN");
    tokio::time::timeout(Duration::from_secs(5), got.wait_for(2))
        .await
        .unwrap();
    // Refusals: unknown code, another account's appid, unknown openid or user, nobody
    // named, no code named, an unknown field.
    for (body, status) in [
        (json!({"ticket": "gQnope==", "user": "u1"}), 404),
        (
            json!({"ticket": t.ticket, "user": "u1", "appid": "wx2"}),
            404,
        ),
        (json!({"ticket": t.ticket, "openid": "oNobody"}), 404),
        (json!({"ticket": t.ticket, "user": "nobody"}), 404),
        (json!({"ticket": t.ticket}), 422),
        (json!({"user": "u1"}), 422),
        (json!({"ticket": t.ticket, "user": "u1", "extra": 1}), 422),
    ] {
        let resp = env.post_json("/__sim/scan", body.clone()).await;
        assert_eq!(resp.status(), status, "{body}");
    }
    assert_eq!(got.lock().unwrap().len(), 2);
    // The account's codes are listed.
    let codes: Value = env.get_json("/__sim/accounts/wx1/qrcodes").await;
    assert_eq!(codes[0]["ticket"], t.ticket.as_str());
    assert_eq!(codes[0]["action_name"], "QR_SCENE");
    assert_eq!(codes[0]["scene_id"], 31);
    assert_eq!(codes[0]["status"], "live");
}

#[tokio::test]
async fn unfollowing_and_scanning_again_is_a_new_subscribe_with_qrscene() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Compatible).await;
    let t = create_for_scan(
        &env,
        &QrCodeKind::PermanentStr {
            scene_str: "poster".into(),
        },
    )
    .await;
    env.sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    env.sim().unfollow("wx1", "u1", true).await.unwrap();
    env.advance(3600);
    let out = env
        .sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    assert_eq!(out.event, Some("subscribe"));
    let kinds: Vec<PushKind> = got
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.message.kind.clone())
        .collect();
    let qr = PushKind::Subscribe {
        event_key: Some("poster".into()),
        ticket: Some(t.ticket.clone()),
    };
    assert_eq!(kinds, [qr.clone(), PushKind::Unsubscribe, qr]);
    let info = user_info(&env, &out.openid).await;
    assert_eq!(info.subscribe_time, Some(env.sim().now_ms() / 1000));
    assert_eq!(info.qr_scene_str.as_deref(), Some("poster"));
}

#[tokio::test]
async fn scan_pushes_are_retried_when_unanswered() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Hang, PushMode::Safe).await;
    let t = create_for_scan(&env, &temporary_str("x", Some(60))).await;
    let out = env
        .sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    let d = out.delivery.unwrap();
    assert_eq!(d.attempts.len(), 3);
    assert!(!d.acknowledged);
    tokio::time::timeout(Duration::from_secs(5), got.wait_for(3))
        .await
        .unwrap();
    let got = got.lock().unwrap().clone();
    assert!(got.iter().all(
        |c| c.signature_ok && c.message.qr_scan().map(|s| s.ticket) == Some(t.ticket.as_str())
    ));
    // The follow happened even though the push went unanswered.
    assert_eq!(env.sim().followers("wx1").unwrap().len(), 1);
}

#[tokio::test]
async fn an_encrypted_passive_reply_to_a_scan_is_judged_valid_in_safe_mode() {
    let env = Env::new().await;
    setup(&env, Answer::EncryptedTextReply, PushMode::Safe).await;
    let t = create_for_scan(&env, &temporary_str("x", Some(60))).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let out = env
        .sim()
        .scan_qrcode(QrScan::new(&t.ticket, "u1"))
        .await
        .unwrap();
    let d = out.delivery.unwrap();
    assert_eq!(d.event, "SCAN");
    let reply = d.attempts[0].reply.clone().unwrap();
    assert!(reply.valid, "{reply:?}");
    assert_eq!(reply.content.as_deref(), Some("secret hi"));
}

#[tokio::test]
async fn deleting_an_account_forgets_its_codes() {
    let env = Env::new().await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let t = env
        .client
        .create_qrcode(&token, &temporary_str("x", Some(600)))
        .await
        .unwrap();
    env.sim().delete_account("wx1").unwrap();
    assert!(env.sim().qrcode(&t.ticket).is_none());
    assert!(env.sim().qrcode(&t.url).is_none());
    assert_eq!(image(&env, &t.ticket).await.0, 404);
}

#[tokio::test]
async fn the_store_drops_expired_then_oldest_temporary_codes_at_its_cap() {
    let env = Env::with(|c| c.limits.max_qrcodes = 3).await;
    env.account("wx1");
    let token = env.token("wx1").await;
    let make = |kind: QrCodeKind| {
        let env = &env;
        let token = &token;
        async move { env.client.create_qrcode(token, &kind).await }
    };
    let short = make(temporary_str("short", Some(10))).await.unwrap();
    let old = make(temporary_str("old", Some(600))).await.unwrap();
    let p1 = make(QrCodeKind::Permanent { scene_id: 1 }).await.unwrap();
    env.advance(10);
    // Full: the expired code goes first.
    let newer = make(temporary_str("newer", Some(600))).await.unwrap();
    assert!(env.sim().qrcode(&short.ticket).is_none());
    assert!(env.sim().qrcode(&old.ticket).is_some());
    // Full again, nothing expired: the oldest temporary code goes; permanent ones never do.
    make(QrCodeKind::Permanent { scene_id: 2 }).await.unwrap();
    assert!(env.sim().qrcode(&old.ticket).is_none());
    assert!(env.sim().qrcode(&newer.ticket).is_some());
    make(QrCodeKind::Permanent { scene_id: 3 }).await.unwrap();
    assert!(env.sim().qrcode(&newer.ticket).is_none());
    // Only permanent codes left: a create is refused as "busy", none is lost.
    let err = make(temporary_str("more", Some(60))).await.unwrap_err();
    assert_eq!(code(err), -1);
    assert_eq!(image(&env, &p1.ticket).await.0, 200);
    assert_eq!(env.sim().qrcodes("wx1").unwrap().len(), 3);
}

// ---- the phone page (§4.4 by hand) ----

/// POSTs the phone page's scan form and returns the page it redirects to.
async fn phone_scan(env: &Env, form: &[(&str, &str)]) -> String {
    let resp = env
        .http
        .post(env.url("/__sim/phone/scan"))
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    // Resolved as a browser does, against the form's address.
    let back = resp
        .url()
        .join(resp.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(back.path(), "/__sim/phone", "{back}");
    env.http
        .get(back)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_phone_page_lists_live_codes_and_scans_a_pasted_image_address() {
    let env = Env::new().await;
    let got = setup(&env, Answer::TextReply, PushMode::Plain).await;
    let t = create_for_scan(&env, &temporary_str("l:page", Some(600))).await;
    let page = env.get("/__sim/phone").await.text().await.unwrap();
    assert!(page.contains("扫一扫 Scan with WeChat"), "{page}");
    assert!(page.contains(&t.url), "the newest live code is offered");
    let img_src = format!(
        "../mp/cgi-bin/showqrcode?ticket={}",
        t.ticket.replace('=', "%3D")
    );
    assert!(page.contains(&img_src), "{page}");

    // Pasting the image address a website shows scans its code.
    let pasted = env.client.qrcode_image_url(&t.ticket).to_string();
    let page = phone_scan(
        &env,
        &[("code", pasted.as_str()), ("user", "u1"), ("follow", "1")],
    )
    .await;
    assert!(
        page.contains("u1 scanned a code of wx1 and followed: subscribe"),
        "{page}"
    );
    assert!(page.contains("the account replied: “hello”"), "{page}");
    assert_eq!(
        got.lock().unwrap()[0].message.qr_scan().map(|s| s.scene),
        Some("l:page")
    );

    // Without the follow box, a second person only looks.
    env.user("u2");
    let page = phone_scan(&env, &[("code", t.url.as_str()), ("user", "u2")]).await;
    assert!(page.contains("left without following"), "{page}");
    assert_eq!(env.sim().followers("wx1").unwrap().len(), 1);

    // An expired code is reported, not pushed, and no longer offered.
    env.advance(600);
    let page = phone_scan(
        &env,
        &[("code", t.ticket.as_str()), ("user", "u2"), ("follow", "1")],
    )
    .await;
    assert!(page.contains("has expired"), "{page}");
    assert!(!page.contains(&t.url), "{page}");
    assert_eq!(got.lock().unwrap().len(), 1);
}
