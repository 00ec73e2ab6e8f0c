//! §6 pushes and §7 safe-mode crypto, against a tiny receiver that verifies like wxhub would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::xml::{self, EncryptedReply, PushBody, PushKind};
use wechat_sim::{FollowOptions, PushMode};

use crate::common::Env;

pub(crate) const TOKEN: &str = "pushtoken";
pub(crate) const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    Success,
    Hang,
    Garbage,
    TextReply,
    EncryptedTextReply,
    /// A text reply whose `Content` is empty.
    EmptyTextReply,
    /// A swapped-To/From reply whose `MsgType` is `event` (not a passive-reply type).
    EventReply,
    /// A zero-byte body.
    ZeroBytes,
    /// HTTP 500.
    ServerError,
    /// 4 MiB streamed in 64 KiB chunks.
    Huge,
}

/// Bytes streamed by `Answer::Huge`.
const HUGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub query: HashMap<String, String>,
    pub body: String,
    pub signature_ok: bool,
    /// The message: the body in plain mode, the decrypted `Encrypt` otherwise.
    pub message: xml::PushMessage,
    pub encrypted: bool,
}

/// What a receiver captured, and a wake-up for tests waiting on it.
#[derive(Default)]
pub(crate) struct Got {
    list: Mutex<Vec<Captured>>,
    arrived: tokio::sync::Notify,
}

impl Got {
    pub fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Vec<Captured>>> {
        self.list.lock()
    }

    fn push(&self, captured: Captured) {
        self.list.lock().unwrap().push(captured);
        self.arrived.notify_waiters();
    }

    /// Waits until `n` pushes have arrived (the caller bounds it with a timeout).
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            // Registered before the check, so a push in between is not missed.
            notified.as_mut().enable();
            if self.list.lock().unwrap().len() >= n {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Clone)]
struct Receiver {
    answer: Answer,
    appid: String,
    got: Arc<Got>,
}

async fn receive(
    State(r): State<Receiver>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let ts = q.get("timestamp").cloned().unwrap_or_default();
    let nonce = q.get("nonce").cloned().unwrap_or_default();
    let signature_ok =
        wechat::push::verify_signature(TOKEN, &ts, &nonce, q.get("signature").map_or("", |s| s));
    let crypt = MsgCrypt::new(EncodingAesKey::parse(KEY).unwrap(), &r.appid);
    let (message, encrypted) = match xml::parse_push(&body).unwrap() {
        PushBody::Message(m) => {
            if let Some(enc) = &m.encrypt {
                // Compatible mode: the encrypted copy must match the plain fields.
                assert!(wechat::push::verify_msg_signature(
                    TOKEN,
                    &ts,
                    &nonce,
                    enc,
                    &q["msg_signature"]
                ));
                let inner = xml::parse_message(crypt.decrypt(enc).unwrap().as_bytes()).unwrap();
                assert_eq!(inner.kind, m.kind);
            }
            (m, false)
        }
        PushBody::Encrypted(env) => {
            let ok = wechat::push::verify_msg_signature(
                TOKEN,
                &ts,
                &nonce,
                &env.encrypt,
                &q["msg_signature"],
            );
            assert!(ok, "msg_signature must verify");
            let plain = crypt.decrypt(&env.encrypt).unwrap();
            (xml::parse_message(plain.as_bytes()).unwrap(), true)
        }
    };
    // Recorded before answering: a hanging answer is abandoned by the sender.
    r.got.push(Captured {
        query: q,
        body: String::from_utf8_lossy(&body).into_owned(),
        signature_ok,
        message: message.clone(),
        encrypted,
    });
    match r.answer {
        Answer::Success => "success".into_response(),
        Answer::Garbage => "{\"json\": true}".into_response(),
        // Never answers: the sender gives up at its timeout and drops the connection.
        Answer::Hang => std::future::pending().await,
        Answer::TextReply => message.text_reply("hello", 1).into_response(),
        Answer::EncryptedTextReply => {
            EncryptedReply::seal(&crypt, TOKEN, &message.text_reply("secret hi", 1), 1, "n1")
                .to_xml()
                .into_response()
        }
        Answer::EmptyTextReply => message.text_reply("", 1).into_response(),
        Answer::EventReply => format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{}]]></FromUserName>\
             <CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[x]]></Event></xml>",
            message.from_user, message.to_user
        )
        .into_response(),
        Answer::ZeroBytes => Response::new(Body::empty()),
        Answer::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Answer::Huge => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = (0..HUGE_BYTES / chunk.len())
                .map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone()));
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        }
    }
}

async fn receiver(answer: Answer, appid: &str) -> (String, Arc<Got>) {
    let got = Arc::new(Got::default());
    let app = Router::new()
        .route("/push", post(receive))
        .with_state(Receiver {
            answer,
            appid: appid.to_owned(),
            got: got.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/push"), got)
}

pub(crate) async fn setup(env: &Env, answer: Answer, mode: PushMode) -> Arc<Got> {
    let (url, got) = receiver(answer, "wx1").await;
    env.account_with("wx1", |a| {
        a.push_url = Some(url);
        a.push_mode = mode;
        a.encoding_aes_key = Some(KEY.into());
        a.original_id = Some("gh_123456789abc".into());
    });
    env.user("u1");
    got
}

#[tokio::test]
async fn subscribe_push_is_signed_and_delivered_once_when_acknowledged() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    let out = env
        .sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let d = out.delivery.unwrap();
    assert_eq!(d.attempts.len(), 1);
    assert!(d.acknowledged);
    assert_eq!(d.reply_valid, Some(true));
    assert_eq!(d.attempts[0].reply.as_ref().unwrap().kind, "success");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let c = &got[0];
    assert!(c.signature_ok);
    assert!(!c.encrypted);
    assert_eq!(c.query["openid"], out.openid);
    assert_eq!(
        c.query["timestamp"],
        (env.sim().now_ms() / 1000).to_string()
    );
    assert!(!c.query.contains_key("encrypt_type"));
    assert_eq!(c.message.to_user, "gh_123456789abc");
    assert_eq!(c.message.from_user, out.openid);
    assert_eq!(
        c.message.kind,
        PushKind::Subscribe {
            event_key: None,
            ticket: None
        }
    );
    assert_eq!(env.sim().followers("wx1").unwrap().len(), 1);
}

#[tokio::test]
async fn subscribe_push_is_signed_and_delivered_three_times_when_unanswered() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Hang, PushMode::Plain).await;
    let out = env
        .sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let d = out.delivery.unwrap();
    assert_eq!(d.attempts.len(), 3);
    assert!(!d.acknowledged);
    assert_eq!(d.reply_valid, None);
    for (i, a) in d.attempts.iter().enumerate() {
        assert_eq!(a.attempt, i as u32 + 1);
        assert_eq!(a.error.as_deref(), Some("timeout"));
        assert!(a.elapsed_ms >= 150, "waited about the 200 ms timeout");
    }
    // Every attempt reached the receiver with a valid signature and the same message.
    tokio::time::timeout(Duration::from_secs(5), got.wait_for(3))
        .await
        .unwrap();
    let got = got.lock().unwrap().clone();
    assert!(got.iter().all(|c| c.signature_ok));
    assert!(
        got.iter()
            .all(|c| c.message.dedup_key() == got[0].message.dedup_key())
    );
    assert_eq!(env.sim().deliveries(Some("wx1")).len(), 1);
}

#[tokio::test]
async fn push_attempts_are_configurable() {
    let env = Env::with(|c| c.push_attempts = 2).await;
    setup(&env, Answer::Hang, PushMode::Plain).await;
    let d = env
        .sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.attempts.len(), 2);
}

#[tokio::test]
async fn qr_follow_push_has_qrscene_event_key_and_ticket() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    let opts = FollowOptions {
        qr_scene_str: Some("promo42".into()),
        ticket: Some("TICKET1".into()),
        ..FollowOptions::default()
    };
    env.sim().follow("wx1", "u1", opts).await.unwrap();
    let c = got.lock().unwrap()[0].clone();
    assert!(
        c.body
            .contains("<EventKey><![CDATA[qrscene_promo42]]></EventKey>")
    );
    assert_eq!(
        c.message.kind,
        PushKind::Subscribe {
            event_key: Some("promo42".into()),
            ticket: Some("TICKET1".into())
        }
    );
}

#[tokio::test]
async fn scan_push_has_scene_without_prefix() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    env.sim().scan("wx1", "u1", "123", None).await.unwrap();
    let c = got.lock().unwrap()[1].clone();
    match c.message.kind {
        PushKind::Scan { event_key, ticket } => {
            assert_eq!(event_key, "123");
            assert!(ticket.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unfollow_push_updates_follower_state() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Plain).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    env.sim().unfollow("wx1", "u1", true).await.unwrap();
    assert!(env.sim().followers("wx1").unwrap().is_empty());
    assert_eq!(got.lock().unwrap()[1].message.kind, PushKind::Unsubscribe);
    // Not following any more: a second unfollow is refused.
    assert!(env.sim().unfollow("wx1", "u1", true).await.is_err());
}

#[tokio::test]
async fn text_push_carries_msg_id_and_a_text_reply_is_valid() {
    let env = Env::new().await;
    let got = setup(&env, Answer::TextReply, PushMode::Plain).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let d = env
        .sim()
        .send_text("wx1", "u1", "hi <there>", Some(1_234_567_890_123_456))
        .await
        .unwrap()
        .delivery
        .unwrap();
    let c = got.lock().unwrap()[1].clone();
    assert_eq!(
        c.message.kind,
        PushKind::Text {
            content: "hi <there>".into(),
            msg_id: Some(1_234_567_890_123_456)
        }
    );
    let check = d.attempts[0].reply.clone().unwrap();
    assert!(check.valid, "{check:?}");
    assert_eq!(check.kind, "message");
    assert_eq!(check.content.as_deref(), Some("hello"));
}

#[tokio::test]
async fn safe_mode_push_decrypts_with_account_key() {
    let env = Env::new().await;
    let got = setup(&env, Answer::EncryptedTextReply, PushMode::Safe).await;
    let out = env
        .sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let c = got.lock().unwrap()[0].clone();
    assert!(c.encrypted);
    assert!(c.signature_ok);
    assert_eq!(c.query["encrypt_type"], "aes");
    assert!(
        !c.body.contains("FromUserName"),
        "safe mode hides the message"
    );
    assert_eq!(c.message.from_user, out.openid);
    let d = out.delivery.unwrap();
    let check = d.attempts[0].reply.clone().unwrap();
    assert!(check.valid, "{check:?}");
    assert_eq!(check.kind, "encrypted");
    assert_eq!(check.content.as_deref(), Some("secret hi"));
}

#[tokio::test]
async fn compatible_mode_push_has_plain_fields_and_encrypt() {
    let env = Env::new().await;
    let got = setup(&env, Answer::Success, PushMode::Compatible).await;
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap();
    let c = got.lock().unwrap()[0].clone();
    assert!(!c.encrypted);
    assert!(c.message.encrypt.is_some());
    assert_eq!(c.query["encrypt_type"], "aes");
    assert!(c.signature_ok);
}

#[tokio::test]
async fn plain_reply_in_safe_mode_is_flagged_invalid() {
    let env = Env::new().await;
    setup(&env, Answer::TextReply, PushMode::Safe).await;
    let d = env
        .sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.reply_valid, Some(false));
    assert_eq!(
        d.attempts.len(),
        1,
        "an answer, even a bad one, is not retried"
    );
}

#[tokio::test]
async fn garbage_reply_is_flagged_invalid() {
    let env = Env::new().await;
    setup(&env, Answer::Garbage, PushMode::Plain).await;
    let d = env
        .sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.reply_valid, Some(false));
    let check = d.attempts[0].reply.clone().unwrap();
    assert_eq!(check.kind, "invalid");
    assert!(check.error.is_some());
    assert_eq!(d.attempts[0].body.as_deref(), Some("{\"json\": true}"));
}

#[tokio::test]
async fn follow_via_control_api_returns_the_delivery_record() {
    let env = Env::new().await;
    setup(&env, Answer::Success, PushMode::Plain).await;
    let resp = env
        .post_json(
            "/__sim/accounts/wx1/users/u1/follow",
            serde_json::json!({"qr_scene": 7}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["delivery"]["attempts"][0]["status"], 200);
    assert_eq!(body["delivery"]["reply_valid"], true);
    let id = body["delivery"]["id"].as_u64().unwrap();
    let again = env.get_json(&format!("/__sim/deliveries/{id}")).await;
    assert_eq!(again["event"], "subscribe");
    let resp = env
        .post_json("/__sim/accounts/wx1/users/u1/follow", serde_json::json!({}))
        .await;
    assert_eq!(resp.status(), 409, "already following");
}

async fn follow_delivery(env: &Env) -> wechat_sim::Delivery {
    env.sim()
        .follow("wx1", "u1", FollowOptions::default())
        .await
        .unwrap()
        .delivery
        .unwrap()
}

#[tokio::test]
async fn encrypted_reply_in_plain_mode_is_invalid() {
    let env = Env::new().await;
    // The account has a key, but plain mode uses no crypto (§6.5).
    let got = setup(&env, Answer::EncryptedTextReply, PushMode::Plain).await;
    let d = follow_delivery(&env).await;
    assert!(!got.lock().unwrap()[0].query.contains_key("msg_signature"));
    assert!(!d.body.contains("<Encrypt>"));
    assert_eq!(d.reply_valid, Some(false));
    let check = d.attempts[0].reply.clone().unwrap();
    assert_eq!(check.kind, "invalid");
    assert!(check.error.unwrap().contains("plain mode"));
}

#[tokio::test]
async fn encrypted_reply_in_compatible_mode_is_valid() {
    let env = Env::new().await;
    setup(&env, Answer::EncryptedTextReply, PushMode::Compatible).await;
    let d = follow_delivery(&env).await;
    let check = d.attempts[0].reply.clone().unwrap();
    assert!(check.valid, "{check:?}");
    assert_eq!(check.kind, "encrypted");
}

#[tokio::test]
async fn text_reply_with_empty_content_is_invalid() {
    let env = Env::new().await;
    setup(&env, Answer::EmptyTextReply, PushMode::Plain).await;
    let d = follow_delivery(&env).await;
    assert_eq!(d.reply_valid, Some(false));
    let check = d.attempts[0].reply.clone().unwrap();
    assert!(check.error.unwrap().contains("empty Content"));
}

#[tokio::test]
async fn reply_with_a_non_passive_msg_type_is_invalid() {
    let env = Env::new().await;
    setup(&env, Answer::EventReply, PushMode::Plain).await;
    let d = follow_delivery(&env).await;
    assert_eq!(d.reply_valid, Some(false));
    let check = d.attempts[0].reply.clone().unwrap();
    assert!(check.error.unwrap().contains("not a passive reply type"));
}

#[tokio::test]
async fn zero_byte_reply_is_valid() {
    let env = Env::new().await;
    setup(&env, Answer::ZeroBytes, PushMode::Safe).await;
    let d = follow_delivery(&env).await;
    assert_eq!(d.attempts.len(), 1);
    assert!(d.acknowledged);
    assert_eq!(d.reply_valid, Some(true));
    assert_eq!(d.attempts[0].reply.as_ref().unwrap().kind, "empty");
    assert_eq!(d.attempts[0].body.as_deref(), Some(""));
}

#[tokio::test]
async fn non_2xx_answer_is_retried() {
    let env = Env::new().await;
    let got = setup(&env, Answer::ServerError, PushMode::Plain).await;
    let d = follow_delivery(&env).await;
    assert_eq!(d.attempts.len(), 3);
    assert!(!d.acknowledged);
    assert_eq!(d.reply_valid, None);
    for a in &d.attempts {
        assert_eq!(a.status, Some(500));
        assert_eq!(a.body.as_deref(), Some("oops"));
        assert!(a.reply.is_none());
    }
    assert_eq!(got.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn oversized_streamed_reply_is_read_only_to_the_cap_and_invalid() {
    let env = Env::with(|c| c.limits.reply_body_bytes = 1024).await;
    setup(&env, Answer::Huge, PushMode::Plain).await;
    let d = follow_delivery(&env).await;
    assert_eq!(d.attempts.len(), 1, "a 2xx answer is not retried");
    assert!(d.acknowledged);
    assert_eq!(d.reply_valid, Some(false));
    let a = &d.attempts[0];
    assert_eq!(a.body.as_ref().unwrap().len(), 1024, "kept up to the cap");
    let check = a.reply.clone().unwrap();
    assert!(check.error.unwrap().contains("exceeds 1024 bytes"));
}
