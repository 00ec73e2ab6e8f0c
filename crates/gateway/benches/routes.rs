//! Push routes benchmark (`cargo bench -p gateway --bench routes`).
//!
//! Measures, in one run and on one machine (SQLite, one replica):
//! - **reply-route overhead**: a safe-mode text push POSTed straight to an owner's bot (signed
//!   and encrypted as WeChat would, with the bot's Token and key) against the same push POSTed
//!   to wxhub, which verifies, records and deduplicates it, forwards it to the same bot as its
//!   reply route and re-encrypts the bot's passive reply for WeChat. p50 and p99 of each, and
//!   the difference (goal: ≤ 2 ms added at p99 on loopback);
//! - **copy throughput per account**: copies queued while no worker runs, then drained by one
//!   replica's worker to a bot answering `success` — for many users (copies in parallel) and
//!   for one user (each user's copies in order, one at a time).
//!
//! Writes its figures to `docs/performance.md` (its own section, replaced on each run).

#[path = "../tests/gateway/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use store::push_routes::Delivery;
use tenancy::push_routes::{NewRoute, RouteCredentials};
use vault::SecretString;
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::push as sig;
use wechat::xml;

const ROUTE_TOKEN: &str = "benchtoken1";
const ROUTE_AES_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
const PUSHES: usize = 400;
const WARM_UP: usize = 20;
const COPIES: usize = 400;

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p).div_ceil(100) - 1]
}

/// The owner's bot: verifies, decrypts, answers an encrypted echo; counts what it got.
async fn start_bot(appid: &str, count: Arc<AtomicUsize>) -> String {
    let crypt = Arc::new(MsgCrypt::new(
        EncodingAesKey::parse(ROUTE_AES_KEY).unwrap(),
        appid,
    ));
    let app = axum::Router::new().route(
        "/wechat",
        axum::routing::post(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >,
                  body: String| {
                let crypt = crypt.clone();
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    let Ok(xml::PushBody::Encrypted(env)) = xml::parse_push(body.as_bytes()) else {
                        return (axum::http::StatusCode::BAD_REQUEST, String::new());
                    };
                    let ok = sig::verify_msg_signature(
                        ROUTE_TOKEN,
                        &q["timestamp"],
                        &q["nonce"],
                        &env.encrypt,
                        &q["msg_signature"],
                    );
                    if !ok {
                        return (axum::http::StatusCode::FORBIDDEN, String::new());
                    }
                    let msg = xml::parse_message(crypt.decrypt(&env.encrypt).unwrap().as_bytes())
                        .unwrap();
                    if msg.msg_type() != "text" || q.contains_key("copy") {
                        return (axum::http::StatusCode::OK, "success".to_owned());
                    }
                    let reply = msg.text_reply("echo", msg.create_time);
                    let sealed = xml::EncryptedReply::seal(&crypt, ROUTE_TOKEN, &reply, 1, "n");
                    (axum::http::StatusCode::OK, sealed.to_xml())
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wechat", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A safe-mode text push of `openid` with `msg_id`, signed with `token`, sealed with `key`.
fn push_request(
    client: &reqwest::Client,
    url: &str,
    now: i64,
    (token, key): (&str, &str),
    openid: &str,
    msg_id: u64,
) -> reqwest::RequestBuilder {
    push_request_for(APPID, client, url, now, (token, key), openid, msg_id)
}

/// [`push_request`] for the account `appid`.
fn push_request_for(
    appid: &str,
    client: &reqwest::Client,
    url: &str,
    now: i64,
    (token, key): (&str, &str),
    openid: &str,
    msg_id: u64,
) -> reqwest::RequestBuilder {
    let message = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>\
         <MsgId>{msg_id}</MsgId></xml>",
        original_id_of(appid)
    );
    let encrypt = MsgCrypt::new(EncodingAesKey::parse(key).unwrap(), appid).encrypt(&message);
    let ts = now.to_string();
    let nonce = format!("n{msg_id}");
    client
        .post(url)
        .query(&[
            ("signature", sig::signature(token, &ts, &nonce)),
            ("timestamp", ts.clone()),
            ("nonce", nonce.clone()),
            ("openid", openid.to_owned()),
            ("encrypt_type", "aes".to_owned()),
            ("msg_signature", sig::msg_signature(token, &ts, &nonce, &encrypt)),
        ])
        .body(format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
            original_id_of(appid)
        ))
}

async fn timed(request: reqwest::RequestBuilder, reply: bool) -> f64 {
    let start = Instant::now();
    let body = request.send().await.unwrap().text().await.unwrap();
    if reply {
        assert!(body.contains("<Encrypt>"), "an encrypted reply: {body}");
    } else {
        assert_eq!(body, "success");
    }
    start.elapsed().as_secs_f64() * 1000.0
}

fn route(url: &str, delivery: Delivery, msg_type: Option<&str>) -> NewRoute {
    NewRoute {
        target_url: url.to_owned(),
        match_msg_type: msg_type.map(str::to_owned),
        match_event: None,
        match_event_key_prefix: None,
        delivery,
        push_mode: Some(store::gateway::PushMode::Safe),
        credentials: RouteCredentials {
            token: SecretString::new(ROUTE_TOKEN.to_owned()),
            encoding_aes_key: Some(SecretString::new(ROUTE_AES_KEY.to_owned())),
        },
        position: None,
        enabled: true,
    }
}

/// Queues `n` copies from `users` users with the worker stopped, then times the drain.
async fn copy_throughput(env: &Env, users: usize, n: usize, first_id: u64) -> f64 {
    let client = reqwest::Client::new();
    let account = env.account_id(APPID).await;
    env.hubs[0].kill_copy_worker();
    for i in 0..n {
        let openid = format!("o_copy_user_{}", i % users);
        let r = push_request(
            &client,
            &format!("{}/wechat/push", env.issuer(APPID)),
            env.now_secs(),
            (PUSH_TOKEN, AES_KEY),
            &openid,
            first_id + i as u64,
        )
        .send()
        .await
        .unwrap();
        assert!(r.status().is_success());
    }
    assert_eq!(
        env.store().pending_push_copies(&account).await.unwrap(),
        n as i64
    );
    let start = Instant::now();
    env.hubs[0].start_copy_worker();
    env.hubs[0].gateway.wake_copies();
    while env.store().pending_push_copies(&account).await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn write_section(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/performance.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Performance\n".to_owned());
    const BEGIN: &str = "<!-- gateway-routes-bench:begin -->";
    const END: &str = "<!-- gateway-routes-bench:end -->";
    let block = format!("{BEGIN}\n{section}{END}\n");
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{block}{}",
            &existing[..b],
            &existing[e + END.len()..].trim_start_matches('\n')
        ),
        _ => match existing.find("<!-- gateway-scan-bench:end -->") {
            Some(at) => {
                let after = at + "<!-- gateway-scan-bench:end -->\n".len();
                format!("{}{block}{}", &existing[..after], &existing[after..])
            }
            None => format!("{}\n{block}", existing.trim_end_matches('\n')),
        },
    };
    std::fs::write(&path, updated).unwrap();
    println!("figures written to {}", path.display());
}

/// One database's figures.
struct Figures {
    db: &'static str,
    direct: (f64, f64),
    via: (f64, f64),
    own: (f64, f64),
    copies_many: f64,
    copies_one: f64,
}

async fn measure(env: Env, db: &'static str) -> Figures {
    let count = Arc::new(AtomicUsize::new(0));
    let bot = start_bot(APPID, count.clone()).await;
    env.tenancy
        .create_push_route(
            &tenancy::Principal::cli(),
            APPID,
            route(&bot, Delivery::Reply, Some("text")),
        )
        .await
        .unwrap();
    // An account without routes: wxhub's own handling of the same push, for comparison.
    env.account(OTHER_APPID, wechat_sim::PushMode::Safe, |_| {})
        .await;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let hub = format!("{}/wechat/push", env.issuer(APPID));
    let alone = format!("{}/wechat/push", env.issuer(OTHER_APPID));
    let (mut direct, mut via, mut own) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..(PUSHES + WARM_UP) {
        let now = env.now_secs();
        let id = 8_000_000_000_000_000 + i as u64;
        // Interleaved, so all three see the same machine load.
        let creds = (ROUTE_TOKEN, ROUTE_AES_KEY);
        let d = timed(push_request(&client, &bot, now, creds, "o_bench", id), true).await;
        let creds = (PUSH_TOKEN, AES_KEY);
        let v = timed(push_request(&client, &hub, now, creds, "o_bench", id), true).await;
        let o = timed(
            push_request_for(OTHER_APPID, &client, &alone, now, creds, "o_bench", id),
            false,
        )
        .await;
        if i >= WARM_UP {
            direct.push(d);
            via.push(v);
            own.push(o);
        }
    }
    let p = |series: &mut Vec<f64>| {
        series.sort_by(f64::total_cmp);
        (percentile(series, 50), percentile(series, 99))
    };
    let (direct, via, own) = (p(&mut direct), p(&mut via), p(&mut own));
    println!("{db}: direct {direct:?} ms; via wxhub {via:?} ms; wxhub alone {own:?} ms (p50, p99)");
    // Copies: a second, copy route for every push (the reply route stays).
    env.tenancy
        .create_push_route(
            &tenancy::Principal::cli(),
            APPID,
            route(&format!("{bot}?copy=1"), Delivery::Copy, None),
        )
        .await
        .unwrap();
    let copies_many = copy_throughput(&env, 50, COPIES, 9_000_000_000_000_000).await;
    let copies_one = copy_throughput(&env, 1, COPIES / 4, 9_100_000_000_000_000).await;
    println!("{db}: copies/s: 50 users {copies_many:.0}, one user {copies_one:.0}");
    Figures {
        db,
        direct,
        via,
        own,
        copies_many,
        copies_one,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut all = vec![measure(Env::sqlite().await, "SQLite").await];
        if let Some(url) = testkit::postgres_admin_url() {
            let env = Env::start(DbKind::Postgres, 1, Some(url)).await;
            all.push(measure(env, "PostgreSQL").await);
        }
        let mut section = format!(
            "## Push routes\n\n\
             `cargo bench -p gateway --bench routes` (one replica, everything on loopback and on the machine's 2 \
             cores, shared with other builds: the load average was about 5 during these runs). **Reply route**: \
             {PUSHES} safe-mode text pushes (after {WARM_UP} to warm up), each sent straight to an owner's bot \
             (signed and encrypted with the bot's Token and key, as WeChat would), then to wxhub (verified, \
             decrypted, recorded with its nonce, dedup key and the reply route's announcement in one transaction, \
             forwarded to the same bot as the account's reply route — re-signed and re-encrypted with the route's \
             credentials — the bot's reply checked, stored for WeChat's retries and re-encrypted for WeChat), and \
             to an account without routes (wxhub's own handling, `success`). The goal is at most 2 ms added at \
             p99.\n\n\
             | database | bot directly p50 / p99 | through wxhub p50 / p99 | **added** p50 / p99 | account without routes p50 / p99 |\n\
             |---|---|---|---|---|\n"
        );
        for f in &all {
            section.push_str(&format!(
                "| {} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | **{:.2} / {:.2} ms** | {:.2} / {:.2} ms |\n",
                f.db,
                f.direct.0,
                f.direct.1,
                f.via.0,
                f.via.1,
                f.via.0 - f.direct.0,
                f.via.1 - f.direct.1,
                f.own.0,
                f.own.1,
            ));
        }
        section.push_str(
            "\n**Copy throughput per account** (a copy route of every push; copies queued with the worker \
             stopped, then drained by one replica's worker, up to 16 at once, to a bot answering `success`):\n\n\
             | database | 400 copies from 50 users | 100 copies from one user (in order, one at a time) |\n|---|---|---|\n",
        );
        for f in &all {
            section.push_str(&format!(
                "| {} | {:.0} copies/s | {:.0} copies/s |\n",
                f.db, f.copies_many, f.copies_one
            ));
        }
        section.push('\n');
        write_section(&section);
    });
}
