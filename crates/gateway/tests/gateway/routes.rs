//! Push routes: an owner's bot answering users through wxhub (reply routes), copies from the
//! durable queue (copy routes), WeChat's retries, and request-forgery refusals.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::push_routes::Delivery;
use tenancy::Principal;
use tenancy::push_routes::{NewRoute, RouteCredentials};
use tenancy::settings::PushMode as RouteMode;
use tokio::sync::mpsc;
use vault::SecretString;
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::push as sig;
use wechat::xml::{self, Reply};
use wechat_sim::{FollowOptions, PushMode};

use crate::common::*;

const ROUTE_TOKEN: &str = "ca9a27ca9a27route9";
const ROUTE_AES_KEY: &str = testkit::canary::OTHER_ENCODING_AES_KEY;

/// One request the owner's server received: its query and body, and whether the signature
/// (and `msg_signature`) verified with the route's Token.
#[derive(Debug, Clone)]
struct Call {
    query: HashMap<String, String>,
    signed: bool,
    /// The plain message XML (decrypted with the route's key when encrypted).
    message: Option<xml::PushMessage>,
}

type Answer = Pin<Box<dyn Future<Output = (u16, String)> + Send>>;
type Behaviour = Arc<dyn Fn(Call) -> Answer + Send + Sync>;

/// A test owner server: checks each push as the owner's own server checks WeChat's, and
/// answers with `behaviour`.
struct Owner {
    url: String,
    calls: mpsc::UnboundedReceiver<Call>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn crypt(appid: &str) -> MsgCrypt {
    MsgCrypt::new(EncodingAesKey::parse(ROUTE_AES_KEY).unwrap(), appid)
}

impl Owner {
    async fn start(appid: &str, behaviour: Behaviour) -> Owner {
        let (tx, calls) = mpsc::unbounded_channel();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let current = behaviour.clone();
        let appid = appid.to_owned();
        let app = axum::Router::new().route(
            "/wechat",
            axum::routing::post(
                move |axum::extract::Query(query): axum::extract::Query<
                    HashMap<String, String>,
                >,
                      body: String| {
                    let tx = tx.clone();
                    let current = current.clone();
                    let appid = appid.clone();
                    async move {
                        let call = inspect(&appid, query, &body);
                        let _ = tx.send(call.clone());
                        let answer = (current.lock().unwrap().clone())(call);
                        let (status, body) = answer.await;
                        (axum::http::StatusCode::from_u16(status).unwrap(), body)
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/wechat", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Owner {
            url,
            calls,
            behaviour,
            task,
        }
    }

    fn answer_with(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    async fn next_call(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(10), self.calls.recv())
            .await
            .expect("the owner's server is called")
            .unwrap()
    }

    fn no_call_yet(&mut self) -> bool {
        self.calls.try_recv().is_err()
    }
}

/// What the owner's server sees of a push: signatures checked with the route's Token, the
/// message decrypted with the route's key.
fn inspect(appid: &str, query: HashMap<String, String>, body: &str) -> Call {
    let mut signed = sig::verify_signature(
        ROUTE_TOKEN,
        &query["timestamp"],
        &query["nonce"],
        &query["signature"],
    );
    let message = match xml::parse_push(body.as_bytes()) {
        Ok(xml::PushBody::Message(m)) if m.encrypt.is_none() => Some(m),
        Ok(xml::PushBody::Message(xml::PushMessage {
            encrypt: Some(e), ..
        }))
        | Ok(xml::PushBody::Encrypted(xml::EncryptedPush { encrypt: e, .. })) => {
            signed &= query.get("msg_signature").is_some_and(|ms| {
                sig::verify_msg_signature(ROUTE_TOKEN, &query["timestamp"], &query["nonce"], &e, ms)
            });
            crypt(appid)
                .decrypt(&e)
                .ok()
                .and_then(|plain| xml::parse_message(plain.as_bytes()).ok())
        }
        _ => None,
    };
    Call {
        query,
        signed,
        message,
    }
}

/// A bot: answers a verified text with "echo: <text>" (encrypted when the push was).
fn echo_bot(appid: &str) -> Behaviour {
    let appid = appid.to_owned();
    Arc::new(move |call: Call| {
        let appid = appid.clone();
        Box::pin(async move {
            let Some(m) = call.message.filter(|_| call.signed) else {
                return (403, "bad signature".to_owned());
            };
            let content = m.fields.get("Content").unwrap_or("menu").to_owned();
            let reply = m.text_reply(&format!("echo: {content}"), m.create_time);
            if call.query.contains_key("msg_signature") {
                let sealed =
                    xml::EncryptedReply::seal(&crypt(&appid), ROUTE_TOKEN, &reply, 1, "n1");
                (200, sealed.to_xml())
            } else {
                (200, reply)
            }
        })
    })
}

fn answer(status: u16, body: &str) -> Behaviour {
    let body = body.to_owned();
    Arc::new(move |_| {
        let body = body.clone();
        Box::pin(async move { (status, body) })
    })
}

fn route(url: &str, delivery: Delivery, mode: RouteMode, msg_type: Option<&str>) -> NewRoute {
    NewRoute {
        target_url: url.to_owned(),
        match_msg_type: msg_type.map(str::to_owned),
        match_event: None,
        match_event_key_prefix: None,
        delivery,
        push_mode: Some(mode),
        credentials: RouteCredentials {
            token: SecretString::new(ROUTE_TOKEN.to_owned()),
            encoding_aes_key: (mode != RouteMode::Plain)
                .then(|| SecretString::new(ROUTE_AES_KEY.to_owned())),
        },
        position: None,
        enabled: true,
    }
}

async fn add_route(env: &Env, appid: &str, new: NewRoute) -> String {
    env.tenancy
        .create_push_route(&Principal::cli(), appid, new)
        .await
        .unwrap()
        .id
}

async fn follow(env: &Env, appid: &str, user: &str) {
    env.sim()
        .follow(appid, user, FollowOptions::default())
        .await
        .unwrap();
}

/// What the simulated user read in the chat after sending `text`.
async fn send_text(env: &Env, appid: &str, user: &str, text: &str) -> wechat_sim::Delivery {
    env.sim()
        .send_text(appid, user, text, None)
        .await
        .unwrap()
        .delivery
        .unwrap()
}

fn reply_content(d: &wechat_sim::Delivery) -> Option<String> {
    let reply = d.attempts.last()?.reply.as_ref()?;
    assert!(reply.valid, "WeChat accepts the answer: {reply:?}");
    reply.content.clone()
}

/// Waits (bounded) until `check` holds, re-reading the database between looks.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn failures(env: &Env, appid: &str) -> Vec<String> {
    env.tenancy
        .push_route_problems(&Principal::cli(), appid)
        .await
        .unwrap()
        .failures
        .into_iter()
        .map(|f| f.cause)
        .collect()
}

// ---- reply routes ----

async fn a_bot_answers_users_through_wxhub_in_plain_compatible_and_safe_mode(env: Env) {
    let plain = "wx5555555555555555";
    let compatible = "wx6666666666666666";
    env.account(plain, PushMode::Plain, |_| {}).await;
    env.account(compatible, PushMode::Compatible, |_| {}).await;
    for (appid, route_mode) in [
        (plain, RouteMode::Plain),
        (compatible, RouteMode::Compatible),
        (APPID, RouteMode::Safe),
    ] {
        let mut owner = Owner::start(appid, echo_bot(appid)).await;
        add_route(
            &env,
            appid,
            route(&owner.url, Delivery::Reply, route_mode, Some("text")),
        )
        .await;
        follow(&env, appid, "alice").await;
        let d = send_text(&env, appid, "alice", "hello").await;
        assert_eq!(reply_content(&d).as_deref(), Some("echo: hello"), "{appid}");
        let call = owner.next_call().await;
        assert!(call.signed, "signed with the route's own Token ({appid})");
        assert_eq!(
            call.query.contains_key("encrypt_type"),
            route_mode != RouteMode::Plain
        );
        // The follow is not a text: the route did not get it.
        assert!(owner.no_call_yet(), "{appid}");
    }
}

async fn a_slow_owner_server_yields_success_within_the_deadline(env: Env) {
    let owner = Owner::start(
        APPID,
        Arc::new(|_| {
            Box::pin(async {
                // Never answers: far beyond the hub's deadline (300 ms in this test).
                std::future::pending::<()>().await;
                (200, "success".to_owned())
            })
        }),
    )
    .await;
    add_route(
        &env,
        APPID,
        route(&owner.url, Delivery::Reply, RouteMode::Safe, None),
    )
    .await;
    follow(&env, APPID, "alice").await;
    let d = send_text(&env, APPID, "alice", "anyone?").await;
    let last = d.attempts.last().unwrap();
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(last.reply.as_ref().unwrap().kind, "success", "{last:?}");
    eventually("the late answer is recorded", || async {
        failures(&env, APPID)
            .await
            .iter()
            .any(|c| c.contains("reply deadline"))
    })
    .await;
}

async fn malformed_or_foreign_replies_are_refused(env: Env) {
    let plain = "wx7777777777777777";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let owner = Owner::start(plain, answer(200, "success")).await;
    add_route(
        &env,
        plain,
        route(&owner.url, Delivery::Reply, RouteMode::Plain, None),
    )
    .await;
    follow(&env, plain, "alice").await;
    let gh = original_id_of(plain);
    let alice = env.sim().openid(plain, "alice").unwrap();
    for (body, cause) in [
        (
            xml::text_reply("o_someone_else", &gh, 1, "not yours"),
            "ToUserName",
        ),
        (
            xml::text_reply(&alice, "gh_000000000000", 1, "from elsewhere"),
            "FromUserName",
        ),
        ("<xml><ToUserName>".to_owned(), "not a valid reply"),
        (xml::text_reply(&alice, &gh, 1, " "), "without Content"),
    ] {
        owner.answer_with(answer(200, &body));
        let d = send_text(&env, plain, "alice", "hi").await;
        let reply = d.attempts.last().unwrap().reply.clone().unwrap();
        assert_eq!(reply.kind, "success", "{cause}: the user sees nothing");
        eventually(&format!("{cause} recorded"), || async {
            failures(&env, plain)
                .await
                .iter()
                .any(|c| c.contains(cause))
        })
        .await;
    }
    // A good reply passes.
    owner.answer_with(answer(200, &xml::text_reply(&alice, &gh, 1, "ok")));
    let d = send_text(&env, plain, "alice", "hi").await;
    assert_eq!(reply_content(&d).as_deref(), Some("ok"));
}

async fn wechat_retries_wait_for_one_call_of_the_reply_route(env: Env) {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let bot = echo_bot(APPID);
    let mut owner = Owner::start(
        APPID,
        Arc::new(move |call| {
            let mut release = release_rx.clone();
            let bot = bot.clone();
            Box::pin(async move {
                let _ = release.wait_for(|r| *r).await;
                bot(call).await
            })
        }),
    )
    .await;
    add_route(
        &env,
        APPID,
        route(&owner.url, Delivery::Reply, RouteMode::Safe, Some("text")),
    )
    .await;
    follow(&env, APPID, "alice").await;
    let openid = env.sim().openid(APPID, "alice").unwrap();
    let message = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[again]]></Content>\
         <MsgId>7000000000000001</MsgId></xml>",
        original_id_of(APPID),
        env.now_secs()
    );
    let wechat = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), APPID);
    let encrypt = wechat.encrypt(&message);
    let attempt = |replica: usize, nonce: &'static str| {
        let ts = env.now_secs().to_string();
        let query = vec![
            ("signature", sig::signature(PUSH_TOKEN, &ts, nonce)),
            ("timestamp", ts.clone()),
            ("nonce", nonce.to_owned()),
            ("encrypt_type", "aes".to_owned()),
            (
                "msg_signature",
                sig::msg_signature(PUSH_TOKEN, &ts, nonce, &encrypt),
            ),
        ];
        let body = format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
            original_id_of(APPID)
        );
        let request = env
            .browser
            .post(format!(
                "http://{}/t/{APPID}/wechat/push",
                env.hubs[replica].addr
            ))
            .query(&query)
            .body(body);
        tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
    };
    // WeChat's first attempt; then, while the owner's server is still thinking, its retries
    // (one on each replica).
    let first = attempt(0, "try1");
    let _ = owner.next_call().await;
    // The call is announced in the database for the other replica's retries.
    let account = env.account_id(APPID).await;
    eventually("the reply is announced", || async {
        env.store()
            .push_reply(&account, "msg:7000000000000001")
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let second = attempt(0, "try2");
    let third = attempt(env.hubs.len() - 1, "try3");
    release_tx.send(true).unwrap();
    for answer in [first, second, third] {
        let body = answer.await.unwrap();
        match xml::parse_reply(body.as_bytes(), Some((&wechat, PUSH_TOKEN))).unwrap() {
            Reply::Encrypted {
                message: Some(m), ..
            } => assert_eq!(m.content.as_deref(), Some("echo: again")),
            other => panic!("every attempt gets the reply: {other:?}"),
        }
    }
    // A late retry answers from the stored reply.
    let late = attempt(0, "try4").await.unwrap();
    assert!(late.contains("<Encrypt>"));
    assert!(
        owner.no_call_yet(),
        "one call of the reply route for every attempt"
    );
}

// ---- copy routes ----

async fn copies_survive_a_killed_replica_and_are_delivered_once(env: Env) {
    let appid = APPID;
    let mut owner = Owner::start(appid, answer(500, "down")).await;
    add_route(
        &env,
        appid,
        route(&owner.url, Delivery::Copy, RouteMode::Safe, None),
    )
    .await;
    env.hubs[1].kill_copy_worker();
    follow(&env, appid, "bob").await;
    let d = send_text(&env, appid, "bob", "keep me").await;
    assert_eq!(
        d.attempts.last().unwrap().reply.as_ref().unwrap().kind,
        "success"
    );
    let account = env.account_id(appid).await;
    // Replica 0 tries the subscribe's copy, and the owner's server fails it; the text's copy
    // waits behind it (each user's copies in order).
    assert!(owner.next_call().await.signed);
    eventually("the failure recorded", || async {
        failures(&env, appid).await.len() == 1
    })
    .await;
    assert!(owner.no_call_yet());
    // Replica 0 dies; replica 1 continues once the retry is due.
    env.hubs[0].kill_copy_worker();
    owner.answer_with(answer(200, "success"));
    env.hubs[1].start_copy_worker();
    env.clock.advance(Duration::from_secs(60));
    env.hubs[1].gateway.wake_copies();
    let mut got = Vec::new();
    for _ in 0..2 {
        let call = owner.next_call().await;
        got.push(call.message.unwrap().msg_type().to_owned());
    }
    assert_eq!(got, ["event", "text"], "each user's copies in order");
    eventually("the queue drained", || async {
        env.store().pending_push_copies(&account).await.unwrap() == 0
    })
    .await;
    // WeChat retrying the text adds no copy.
    let retry = &d.attempts[0];
    let encrypt = d
        .body
        .split("<Encrypt><![CDATA[")
        .nth(1)
        .unwrap()
        .split("]]>")
        .next()
        .unwrap();
    let r = env
        .browser
        .post(format!("{}/wechat/push", env.issuer(appid)))
        .query(&[
            (
                "signature",
                sig::signature(PUSH_TOKEN, &retry.timestamp.to_string(), "again1"),
            ),
            ("timestamp", retry.timestamp.to_string()),
            ("nonce", "again1".to_owned()),
            ("encrypt_type", "aes".to_owned()),
            (
                "msg_signature",
                sig::msg_signature(PUSH_TOKEN, &retry.timestamp.to_string(), "again1", encrypt),
            ),
        ])
        .body(d.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "success");
    assert_eq!(env.store().pending_push_copies(&account).await.unwrap(), 0);
    env.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        gateway::routes::deliver_due_copies(&env.hubs[1].gateway)
            .await
            .unwrap(),
        0
    );
    assert!(owner.no_call_yet(), "delivered once");
}

async fn a_dead_letter_is_kept_and_can_be_sent_again(env: Env) {
    let mut owner = Owner::start(APPID, answer(503, "busy")).await;
    let route_id = add_route(
        &env,
        APPID,
        route(&owner.url, Delivery::Copy, RouteMode::Plain, Some("text")),
    )
    .await;
    follow(&env, APPID, "carol").await;
    send_text(&env, APPID, "carol", "lost?").await;
    let _ = owner.next_call().await;
    // The options allow 2 attempts: the second failure makes it a dead letter.
    eventually("a retry is scheduled", || async {
        !failures(&env, APPID).await.is_empty()
    })
    .await;
    env.clock.advance(Duration::from_secs(60));
    env.hubs[0].gateway.wake_copies();
    let _ = owner.next_call().await;
    let problems = || async {
        env.tenancy
            .push_route_problems(&Principal::cli(), APPID)
            .await
            .unwrap()
    };
    eventually("dead-lettered", || async {
        problems().await.dead_letters.len() == 1
    })
    .await;
    let dead = problems().await.dead_letters.remove(0);
    assert_eq!(dead.route_id, route_id);
    assert!(dead.last_error.unwrap().contains("HTTP 503"));
    // Kept for 30 days, then swept.
    let retention = gateway::maintenance::Retention::default();
    let retention = &retention;
    let day = 24 * 3600 * 1000;
    let swept = |days: i64| {
        let store = env.store().clone();
        let at = wechat::Clock::now_ms(&env.clock) + days * day;
        async move {
            gateway::maintenance::sweep(&store, at, retention)
                .await
                .unwrap()
                .dead_letters
        }
    };
    assert_eq!(swept(29).await, 0);
    assert_eq!(problems().await.dead_letters.len(), 1);
    owner.answer_with(answer(200, "success"));
    env.tenancy
        .resend_dead_letter(&Principal::cli(), APPID, &dead.id)
        .await
        .unwrap();
    env.hubs[0].gateway.wake_copies();
    let call = owner.next_call().await;
    assert_eq!(call.message.unwrap().fields.get("Content"), Some("lost?"));
    eventually("delivered", || async {
        let p = problems().await;
        p.dead_letters.is_empty() && p.pending == 0
    })
    .await;
    // Counted per route.
    env.hubs[0].stats.flush().await.unwrap();
    let counts = env
        .store()
        .account_series(
            &env.account_id(APPID).await,
            store::stats::Granularity::Day,
            0,
            i64::MAX,
            &[],
        )
        .await
        .unwrap();
    let count = |outcome: &str| {
        counts
            .iter()
            .filter(|p| p.metric == "push.route" && p.label == format!("{route_id}/{outcome}"))
            .map(|p| p.value)
            .sum::<i64>()
    };
    assert_eq!(
        (count("failed"), count("dead_lettered"), count("delivered")),
        (1, 1, 1)
    );
    // A dead letter nobody re-sends is swept after its 30 days.
    let account_id = env.account_id(APPID).await;
    let now = wechat::Clock::now_ms(&env.clock);
    let copy = store::push_routes::NewCopy {
        id: "old-dead-letter",
        account_id: &account_id,
        route_id: &route_id,
        dedup_key: "old-push",
        openid: Some("o-old"),
        body: b"sealed",
    };
    env.store()
        .enqueue_push_copy(&copy, 100, now)
        .await
        .unwrap();
    env.store()
        .fail_push_copy("old-dead-letter", 2, None, "HTTP 503")
        .await
        .unwrap();
    assert_eq!(swept(31).await, 1);
    assert!(problems().await.dead_letters.is_empty());
}

/// A disabled route gets no new pushes, and the copies it still has queued wait for it —
/// neither delivered nor spent on attempts — until it is enabled again.
async fn a_disabled_routes_copies_wait_until_it_is_enabled(env: Env) {
    let mut owner = Owner::start(APPID, answer(503, "busy")).await;
    let route_id = add_route(
        &env,
        APPID,
        route(&owner.url, Delivery::Copy, RouteMode::Plain, Some("text")),
    )
    .await;
    follow(&env, APPID, "carol").await;
    send_text(&env, APPID, "carol", "queued").await;
    let _ = owner.next_call().await;
    eventually("the first attempt failed", || async {
        !failures(&env, APPID).await.is_empty()
    })
    .await;
    let enable = |enabled: bool| {
        let env = &env;
        let route_id = route_id.clone();
        async move {
            env.tenancy
                .edit_push_route(
                    &Principal::cli(),
                    APPID,
                    &route_id,
                    tenancy::push_routes::RouteChange {
                        enabled: Some(enabled),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    };
    enable(false).await;
    // Long past the retry's backoff, the copy is not due: nothing can claim it.
    env.clock.advance(Duration::from_secs(3600));
    let now = wechat::Clock::now_ms(&env.clock);
    let claimed = env
        .store()
        .claim_push_copies(now, now + 60_000, 100)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
    // A new push no longer matches it.
    send_text(&env, APPID, "carol", "not for the route").await;
    let problems = env
        .tenancy
        .push_route_problems(&Principal::cli(), APPID)
        .await
        .unwrap();
    assert_eq!((problems.pending, problems.dead_letters.len()), (1, 0));

    owner.answer_with(answer(200, "success"));
    enable(true).await;
    env.hubs[0].gateway.wake_copies();
    let call = owner.next_call().await;
    assert_eq!(call.message.unwrap().fields.get("Content"), Some("queued"));
    eventually("delivered", || async {
        env.tenancy
            .push_route_problems(&Principal::cli(), APPID)
            .await
            .unwrap()
            .pending
            == 0
    })
    .await;
    assert!(
        owner.no_call_yet(),
        "the push sent while disabled got no copy"
    );
}

async fn two_replicas_share_the_queue(env: Env) {
    let mut owner = Owner::start(APPID, answer(200, "success")).await;
    add_route(
        &env,
        APPID,
        route(&owner.url, Delivery::Copy, RouteMode::Safe, Some("text")),
    )
    .await;
    let users = ["alice", "bob"];
    for user in users {
        follow(&env, APPID, user).await;
    }
    let mut sent = Vec::new();
    for i in 0..10 {
        let user = users[i % 2];
        let text = format!("{user} {i}");
        send_text(&env, APPID, user, &text).await;
        sent.push(text);
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        let call = owner.next_call().await;
        got.push(
            call.message
                .unwrap()
                .fields
                .get("Content")
                .unwrap()
                .to_owned(),
        );
    }
    for user in users {
        let mine = |v: &Vec<String>| {
            v.iter()
                .filter(|t| t.starts_with(user))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            mine(&got),
            mine(&sent),
            "{user}'s copies once each, in order"
        );
    }
    let account = env.account_id(APPID).await;
    eventually("the queue drained", || async {
        env.store().pending_push_copies(&account).await.unwrap() == 0
    })
    .await;
    assert!(owner.no_call_yet());
}

async fn a_full_queue_takes_no_more_copies_and_says_so(env: Env) {
    let owner = Owner::start(APPID, answer(200, "success")).await;
    add_route(
        &env,
        APPID,
        route(&owner.url, Delivery::Copy, RouteMode::Safe, Some("text")),
    )
    .await;
    env.hubs[0].kill_copy_worker();
    follow(&env, APPID, "alice").await;
    let account = env.account_id(APPID).await;
    // The options allow one waiting copy per account.
    send_text(&env, APPID, "alice", "first").await;
    let d = send_text(&env, APPID, "alice", "second").await;
    assert_eq!(
        d.attempts.last().unwrap().reply.as_ref().unwrap().kind,
        "success"
    );
    assert_eq!(env.store().pending_push_copies(&account).await.unwrap(), 1);
    eventually("the dropped copy recorded", || async {
        failures(&env, APPID)
            .await
            .iter()
            .any(|c| c.contains("copy queue is full"))
    })
    .await;
    drop(owner);
}

fn one_copy() -> gateway::routes::RouteOptions {
    gateway::routes::RouteOptions {
        copy_queue_limit: 1,
        ..test_route_options()
    }
}

// ---- request forgery ----

async fn routes_to_internal_addresses_are_refused(env: Env) {
    let mut owner = Owner::start(APPID, echo_bot(APPID)).await;
    let port = owner
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    // A literal loopback address is refused when entered, saying why; a name that resolves
    // to one is refused when delivered (names are resolved only then).
    let literal = env
        .tenancy
        .create_push_route(
            &Principal::cli(),
            APPID,
            route(&owner.url, Delivery::Copy, RouteMode::Safe, None),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&literal, tenancy::TenancyError::Invalid { field: "target_url", message }
            if message.contains("not a public address")),
        "{literal:?}"
    );
    add_route(
        &env,
        APPID,
        route(
            &format!("http://localhost:{port}/wechat"),
            Delivery::Reply,
            RouteMode::Safe,
            None,
        ),
    )
    .await;
    follow(&env, APPID, "alice").await;
    let d = send_text(&env, APPID, "alice", "hello").await;
    assert_eq!(
        d.attempts.last().unwrap().reply.as_ref().unwrap().kind,
        "success"
    );
    eventually("the refusal recorded", || async {
        failures(&env, APPID)
            .await
            .iter()
            .any(|c| c.contains("refused: the target's name resolves only to non-public addresses"))
    })
    .await;
    assert!(owner.no_call_yet(), "nothing reached the internal server");
}

fn no_loopback() -> gateway::routes::RouteOptions {
    gateway::routes::RouteOptions::default()
}

fn fast() -> gateway::routes::RouteOptions {
    gateway::routes::RouteOptions {
        reply_deadline: Duration::from_millis(300),
        copy_attempts: 2,
        ..test_route_options()
    }
}

macro_rules! on_both {
    ($( $name:ident ( $replicas:expr, $options:expr ) ),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let env = super::Env::start_with_routes(
                        super::DbKind::Sqlite, $replicas, None, Default::default(), $options,
                    )
                    .await;
                    super::$name(env).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(url) = super::postgres_url() else {
                        return;
                    };
                    let env = super::Env::start_with_routes(
                        super::DbKind::Postgres, $replicas, Some(url), Default::default(), $options,
                    )
                    .await;
                    super::$name(env).await;
                }
            )+
        }
    };
}

on_both! {
    a_bot_answers_users_through_wxhub_in_plain_compatible_and_safe_mode(1, super::test_route_options()),
    a_slow_owner_server_yields_success_within_the_deadline(1, super::fast()),
    a_disabled_routes_copies_wait_until_it_is_enabled(1, super::test_route_options()),
    malformed_or_foreign_replies_are_refused(1, super::test_route_options()),
    wechat_retries_wait_for_one_call_of_the_reply_route(2, super::test_route_options()),
    copies_survive_a_killed_replica_and_are_delivered_once(2, super::test_route_options()),
    a_dead_letter_is_kept_and_can_be_sent_again(1, super::fast()),
    two_replicas_share_the_queue(2, super::test_route_options()),
    routes_to_internal_addresses_are_refused(1, super::no_loopback()),
    a_full_queue_takes_no_more_copies_and_says_so(1, super::one_copy()),
}
