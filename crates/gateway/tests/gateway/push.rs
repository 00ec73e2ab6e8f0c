//! The push callback: WeChat's deliveries (through the simulator) and hand-made hostile ones.

use std::time::Duration;

use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::push as sig;
use wechat_sim::{FollowOptions, PushMode};

use crate::common::*;

pub(crate) fn subscribe_xml(appid: &str, openid: &str, create_time: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_promo]]></EventKey></xml>",
        original_id_of(appid)
    )
}

/// POSTs a push signed with `PUSH_TOKEN`; `encrypt_for` seals it in safe mode for that appid.
pub(crate) async fn send(
    env: &Env,
    appid: &str,
    message: &str,
    nonce: &str,
    encrypt_for: Option<&str>,
) -> reqwest::Response {
    let ts = (env.now_secs()).to_string();
    let mut query = vec![
        ("signature", sig::signature(PUSH_TOKEN, &ts, nonce)),
        ("timestamp", ts.clone()),
        ("nonce", nonce.to_owned()),
        ("openid", "o_test".to_owned()),
    ];
    let body = match encrypt_for {
        Some(sealed_for) => {
            let crypt = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), sealed_for);
            let encrypt = crypt.encrypt(message);
            query.push(("encrypt_type", "aes".into()));
            query.push((
                "msg_signature",
                sig::msg_signature(PUSH_TOKEN, &ts, nonce, &encrypt),
            ));
            format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
                original_id_of(appid)
            )
        }
        None => message.to_owned(),
    };
    env.browser
        .post(format!("{}/wechat/push", env.issuer(appid)))
        .query(&query)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn follow_in_plain_compatible_and_safe_mode_pre_registers_and_unfollow_marks_the_user() {
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    let compatible = "wx4444444444444444";
    env.account(plain, PushMode::Plain, |_| {}).await;
    env.account(compatible, PushMode::Compatible, |_| {}).await;
    for appid in [plain, compatible, APPID] {
        let outcome = env
            .sim()
            .follow(
                appid,
                "alice",
                FollowOptions {
                    qr_scene_str: Some("promo".into()),
                    ..FollowOptions::default()
                },
            )
            .await
            .unwrap();
        let delivery = outcome.delivery.unwrap();
        assert!(
            delivery.acknowledged && delivery.reply_valid == Some(true),
            "{appid}"
        );
        let account = env.account_id(appid).await;
        let user = env
            .store()
            .get_end_user(&account, &outcome.openid)
            .await
            .unwrap()
            .unwrap();
        assert!(user.subscribed, "{appid}");
        assert_eq!(user.qr_scene.as_deref(), Some("promo"));
        assert_eq!(user.created_via, store::end_users::CreatedVia::Push);

        env.sim().unfollow(appid, "alice", true).await.unwrap();
        let user = env
            .store()
            .get_end_user(&account, &outcome.openid)
            .await
            .unwrap()
            .unwrap();
        assert!(!user.subscribed, "{appid}");
        assert_eq!(env.pushes(appid).await.len(), 2);
    }
}

#[tokio::test]
async fn url_verification_answers_echostr_only_with_a_valid_signature() {
    let env = Env::sqlite().await;
    let ts = (env.now_secs()).to_string();
    let url = |signature: String| {
        format!(
            "{}/wechat/push?signature={signature}&timestamp={ts}&nonce=n1&echostr=4375120948345356249",
            env.issuer(APPID)
        )
    };
    let ok = env.get(&url(sig::signature(PUSH_TOKEN, &ts, "n1"))).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "4375120948345356249");
    let bad = env.get(&url(sig::signature("wrong", &ts, "n1"))).await;
    assert_eq!(bad.status(), 403);
}

#[tokio::test]
async fn the_same_push_three_times_is_processed_once_and_acknowledged_each_time() {
    let env = Env::sqlite().await;
    let message = subscribe_xml(APPID, "o_repeat", env.now_secs());
    for attempt in 0..3 {
        // WeChat's retries carry fresh timestamps/nonces (and may land on any replica).
        let r = send(
            &env,
            APPID,
            &message,
            &format!("retry{attempt}"),
            Some(APPID),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "success");
    }
    let pushes = env.pushes(APPID).await;
    assert_eq!(pushes.len(), 1);
    assert!(pushes[0].dedup_key.starts_with("evt:o_repeat:"));
    let account = env.account_id(APPID).await;
    assert_eq!(env.store().count_end_users(&account).await.unwrap(), (1, 1));
}

#[tokio::test]
async fn hostile_pushes_are_rejected_and_nothing_is_stored() {
    let env = Env::sqlite().await;
    env.account("wx3333333333333333", PushMode::Plain, |_| {})
        .await;
    let plain = "wx3333333333333333";
    let good = subscribe_xml(plain, "o_evil", env.now_secs());

    // Bad signature.
    let ts = (env.now_secs()).to_string();
    let r = env
        .browser
        .post(format!("{}/wechat/push", env.issuer(plain)))
        .query(&[
            ("signature", sig::signature("guess", &ts, "n")),
            ("timestamp", ts.clone()),
            ("nonce", "n".into()),
        ])
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Replay: a captured (timestamp, nonce, signature) reused with another body.
    let first = send(
        &env,
        plain,
        &subscribe_xml(plain, "o_first", env.now_secs()),
        "captured",
        None,
    )
    .await;
    assert_eq!(first.status(), 200);
    let replay = send(&env, plain, &good, "captured", None).await;
    assert_eq!(replay.status(), 403);

    // Oversize (over 64 KiB), before any parsing.
    let huge = format!("<xml>{}</xml>", "a".repeat(70 * 1024));
    assert_eq!(send(&env, plain, &huge, "big", None).await.status(), 413);

    // DOCTYPE (entity expansion attempts).
    let doctype = format!("<!DOCTYPE xml [<!ENTITY x \"boom\">]>{good}");
    assert_eq!(send(&env, plain, &doctype, "dtd", None).await.status(), 400);

    // Safe mode: a message sealed for another appid.
    let wrong_appid = send(
        &env,
        APPID,
        &subscribe_xml(APPID, "o_evil", env.now_secs()),
        "x1",
        Some(OTHER_APPID),
    )
    .await;
    assert_eq!(wrong_appid.status(), 400);

    // Safe mode: a forged msg_signature.
    let ts2 = (env.now_secs()).to_string();
    let crypt = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), APPID);
    let encrypt = crypt.encrypt(&good);
    let r = env
        .browser
        .post(format!("{}/wechat/push", env.issuer(APPID)))
        .query(&[
            ("signature", sig::signature(PUSH_TOKEN, &ts2, "x2")),
            ("timestamp", ts2.clone()),
            ("nonce", "x2".into()),
            ("encrypt_type", "aes".into()),
            (
                "msg_signature",
                sig::msg_signature("guess", &ts2, "x2", &encrypt),
            ),
        ])
        .body(format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt>{encrypt}</Encrypt></xml>",
            original_id_of(APPID)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A stale timestamp (outside the 300 s window).
    env.clock.advance(Duration::from_secs(301));
    let r = env
        .browser
        .post(format!("{}/wechat/push", env.issuer(plain)))
        .query(&[
            ("signature", sig::signature(PUSH_TOKEN, &ts, "late")),
            ("timestamp", ts.clone()),
            ("nonce", "late".into()),
        ])
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    assert_eq!(
        env.pushes(plain).await.len(),
        1,
        "only the first genuine push"
    );
    assert!(env.pushes(APPID).await.is_empty());
    let account = env.account_id(plain).await;
    assert!(
        env.store()
            .get_end_user(&account, "o_evil")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn pushes_are_relayed_to_the_owners_server_re_signed() {
    let env = Env::sqlite().await;
    type Relayed = (bool, String, std::collections::HashMap<String, String>);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Relayed>(4);
    let receiver = axum::Router::new().route(
        "/owner/push",
        axum::routing::post(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >,
                  body: String| {
                let tx = tx.clone();
                async move {
                    let ok = sig::verify_signature(
                        PUSH_TOKEN,
                        &q["timestamp"],
                        &q["nonce"],
                        &q["signature"],
                    ) && q.get("encrypt_type").map(String::as_str) == Some("aes");
                    let _ = tx.send((ok, body, q)).await;
                    "success"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let owner = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    let account = env.account_id(APPID).await;
    let settings = store::gateway::GatewaySettings {
        original_id: Some(original_id_of(APPID)),
        push_relay_url: Some(format!("http://{owner}/owner/push")),
        push_mode: Some(store::gateway::PushMode::Safe),
        ..Default::default()
    };
    // A relay must be https (http only to loopback): the copy it carries is signed.
    assert!(
        env.update_settings(
            &account,
            &store::gateway::GatewaySettings {
                push_relay_url: Some("http://owner.example/push".into()),
                ..settings.clone()
            }
        )
        .await
        .is_err()
    );
    env.update_settings(&account, &settings).await.unwrap();
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    let (signed, body, query) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the relay arrives")
        .unwrap();
    assert!(
        signed,
        "the relayed push is signed with the account's Token"
    );
    assert!(body.contains("<Encrypt>"));
    server.abort();
    // The relayed copy's (timestamp, nonce) is spent at wxhub: replayed to wxhub with another
    // message, it is refused.
    let other = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), APPID)
        .encrypt(&subscribe_xml(APPID, "o_relay_replay", env.now_secs()));
    let r = env
        .browser
        .post(format!("{}/wechat/push", env.issuer(APPID)))
        .query(&[
            ("signature", query["signature"].clone()),
            ("timestamp", query["timestamp"].clone()),
            ("nonce", query["nonce"].clone()),
            ("encrypt_type", "aes".to_owned()),
            (
                "msg_signature",
                sig::msg_signature(PUSH_TOKEN, &query["timestamp"], &query["nonce"], &other),
            ),
        ])
        .body(format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{other}]]></Encrypt></xml>",
            original_id_of(APPID)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// POSTs `body` to the push URL of `appid` with a URL signature over `ts` and `nonce`.
async fn post_signed(
    env: &Env,
    appid: &str,
    ts: &str,
    nonce: &str,
    extra: &[(&str, String)],
    body: String,
) -> reqwest::Response {
    let mut query = vec![
        ("signature", sig::signature(PUSH_TOKEN, ts, nonce)),
        ("timestamp", ts.to_owned()),
        ("nonce", nonce.to_owned()),
    ];
    query.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    env.browser
        .post(format!("{}/wechat/push", env.issuer(appid)))
        .query(&query)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn safe_mode_refuses_plain_bodies_and_compatible_mode_requires_the_encrypted_copy() {
    let env = Env::sqlite().await;
    let compatible = "wx4444444444444444";
    env.account(compatible, PushMode::Compatible, |_| {}).await;
    let ts = env.now_secs().to_string();
    // Safe mode (APPID): a readable body with a valid URL signature is a downgrade.
    let r = post_signed(
        &env,
        APPID,
        &ts,
        "down1",
        &[],
        subscribe_xml(APPID, "o_down", env.now_secs()),
    )
    .await;
    assert_eq!(r.status(), 403);
    // Compatible mode: the plain fields alone are not enough...
    let r = post_signed(
        &env,
        compatible,
        &ts,
        "down2",
        &[],
        subscribe_xml(compatible, "o_down", env.now_secs()),
    )
    .await;
    assert_eq!(r.status(), 403);
    // ...and with an Encrypt element, the decrypted message counts, not the plain fields.
    let crypt = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), compatible);
    let genuine = subscribe_xml(compatible, "o_genuine", env.now_secs());
    let encrypt = crypt.encrypt(&genuine);
    let lying = subscribe_xml(compatible, "o_lie", env.now_secs()).replace(
        "</xml>",
        &format!("<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
    );
    let r = post_signed(
        &env,
        compatible,
        &ts,
        "comp1",
        &[
            ("encrypt_type", "aes".into()),
            (
                "msg_signature",
                sig::msg_signature(PUSH_TOKEN, &ts, "comp1", &encrypt),
            ),
        ],
        lying,
    )
    .await;
    assert_eq!(r.status(), 200);
    let account = env.account_id(compatible).await;
    assert!(
        env.store()
            .get_end_user(&account, "o_genuine")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        env.store()
            .get_end_user(&account, "o_lie")
            .await
            .unwrap()
            .is_none()
    );
    assert!(env.pushes(APPID).await.is_empty());
}

#[tokio::test]
async fn a_retry_with_the_same_query_after_a_failed_attempt_is_processed() {
    use sqlx::{Connection, Executor};
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let mut db = sqlx::SqliteConnection::connect(&env.db_url).await.unwrap();
    // The first attempt fails inside the push transaction (the database refuses the insert).
    db.execute(
        "CREATE TRIGGER fail_push BEFORE INSERT ON received_pushes \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await
    .unwrap();
    let ts = env.now_secs().to_string();
    let body = subscribe_xml(plain, "o_retry", env.now_secs());
    let first = post_signed(&env, plain, &ts, "same-query", &[], body.clone()).await;
    assert_eq!(first.status(), 500);
    db.execute("DROP TRIGGER fail_push").await.unwrap();
    // WeChat retries with the very same query: its nonce was not spent by the failure.
    let retry = post_signed(&env, plain, &ts, "same-query", &[], body.clone()).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.text().await.unwrap(), "success");
    let account = env.account_id(plain).await;
    assert!(
        env.store()
            .get_end_user(&account, "o_retry")
            .await
            .unwrap()
            .unwrap()
            .subscribed
    );
    // The same query once more (a duplicate delivery): acknowledged, not reprocessed.
    let again = post_signed(&env, plain, &ts, "same-query", &[], body).await;
    assert_eq!(again.text().await.unwrap(), "success");
    assert_eq!(env.pushes(plain).await.len(), 1);
    // The same nonce with another message is a forgery.
    let forged = post_signed(
        &env,
        plain,
        &ts,
        "same-query",
        &[],
        subscribe_xml(plain, "o_forged", env.now_secs()),
    )
    .await;
    assert_eq!(forged.status(), 403);
    assert!(
        env.store()
            .get_end_user(&account, "o_forged")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn url_verification_spends_its_nonce() {
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let ts = env.now_secs().to_string();
    let url = format!(
        "{}/wechat/push?signature={}&timestamp={ts}&nonce=v1&echostr=12345",
        env.issuer(plain),
        sig::signature(PUSH_TOKEN, &ts, "v1")
    );
    assert_eq!(env.get(&url).await.text().await.unwrap(), "12345");
    // The captured verification query cannot carry a push.
    let r = post_signed(
        &env,
        plain,
        &ts,
        "v1",
        &[],
        subscribe_xml(plain, "o_v", env.now_secs()),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(env.pushes(plain).await.is_empty());
}

#[tokio::test]
async fn huge_create_time_is_refused_without_overflow() {
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let ts = env.now_secs().to_string();
    for (nonce, create_time) in [("huge", i64::MAX), ("negative", -1)] {
        let body = subscribe_xml(plain, "o_huge", 0).replace(
            "<CreateTime>0</CreateTime>",
            &format!("<CreateTime>{create_time}</CreateTime>"),
        );
        let r = post_signed(&env, plain, &ts, nonce, &[], body).await;
        assert_eq!(r.status(), 400, "{create_time}");
    }
    // A hostile timestamp far from now is stale, not an overflow.
    let r = post_signed(
        &env,
        plain,
        &i64::MIN.to_string(),
        "min",
        &[],
        subscribe_xml(plain, "o_huge", env.now_secs()),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(env.pushes(plain).await.is_empty());
}

#[tokio::test]
async fn plain_pushes_need_the_original_id_configured() {
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let account = env.account_id(plain).await;
    let mut settings = env.store().gateway_settings(&account).await.unwrap();
    settings.original_id = None;
    env.update_settings(&account, &settings).await.unwrap();
    let ts = env.now_secs().to_string();
    let r = post_signed(
        &env,
        plain,
        &ts,
        "noid",
        &[],
        subscribe_xml(plain, "o_noid", env.now_secs()),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("original id"));
    // A safe-mode account is proven by the appid inside the ciphertext instead.
    let account = env.account_id(APPID).await;
    let mut settings = env.store().gateway_settings(&account).await.unwrap();
    settings.original_id = None;
    env.update_settings(&account, &settings).await.unwrap();
    let r = send(
        &env,
        APPID,
        &subscribe_xml(APPID, "o_safe", env.now_secs()),
        "safe-noid",
        Some(APPID),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_delayed_subscribe_does_not_undo_a_later_unsubscribe() {
    let env = Env::sqlite().await;
    let t0 = env.now_secs();
    let unsubscribe =
        subscribe_xml(APPID, "o_order", t0 + 60).replace("[subscribe]", "[unsubscribe]");
    assert_eq!(
        send(&env, APPID, &unsubscribe, "o1", Some(APPID))
            .await
            .status(),
        200
    );
    // The subscribe from a minute earlier arrives late.
    assert_eq!(
        send(
            &env,
            APPID,
            &subscribe_xml(APPID, "o_order", t0),
            "o2",
            Some(APPID)
        )
        .await
        .status(),
        200
    );
    let account = env.account_id(APPID).await;
    let user = env
        .store()
        .get_end_user(&account, "o_order")
        .await
        .unwrap()
        .unwrap();
    assert!(!user.subscribed);
    assert_eq!(
        env.pushes(APPID).await.len(),
        2,
        "both recorded, the stale one not applied"
    );
}
