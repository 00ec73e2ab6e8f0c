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
//!   for one user (each user's copies in order, one at a time);
//! - **push acknowledgements** of an account without routes (safe mode): the most 4 senders
//!   at once get acknowledged a second, and the latency at a steady 2,000 pushes a second sent
//!   in an open loop (each push on its own task, timed from when it was due, so a slow answer
//!   does not hide the ones queued behind it). Goal: ≥ 2,000/s with p99 ≤ 1 ms.
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
const PUSHES: usize = 2000;
const WARM_UP: usize = 20;
const COPIES: usize = 400;
/// Pushes for each acknowledgement figure.
const ACKS: usize = 6000;
const ACK_RATE: f64 = 2000.0;

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

/// Safe-mode pushes to the account without routes from `senders` senders at once, each sending
/// its share one after the other: acknowledgements a second, and their p50 / p99 in ms.
async fn ack_throughput(env: &Env, total: usize, senders: usize, first_id: u64) -> (f64, f64, f64) {
    let url = format!("{}/wechat/push", env.issuer(OTHER_APPID));
    let now = env.now_secs();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let url = url.clone();
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .unwrap();
            let mut times = Vec::new();
            for i in (s..total).step_by(senders) {
                let request = push_request_for(
                    OTHER_APPID,
                    &client,
                    &url,
                    now,
                    (PUSH_TOKEN, AES_KEY),
                    &format!("o_ack_{}", i % 100),
                    first_id + i as u64,
                );
                times.push(timed(request, false).await);
            }
            times
        });
    }
    let mut times: Vec<f64> = tasks.join_all().await.into_iter().flatten().collect();
    let rate = total as f64 / start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    (rate, percentile(&times, 50), percentile(&times, 99))
}

/// `total` pushes to the account without routes at `rate` a second in an open loop: each on
/// its own task at its due time, timed from that time. Returns p50 / p99 in ms and the rate
/// actually sent.
async fn ack_latency_at(env: &Env, rate: f64, total: usize, first_id: u64) -> (f64, f64, f64) {
    let url = format!("{}/wechat/push", env.issuer(OTHER_APPID));
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let now = env.now_secs();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let request = push_request_for(
            OTHER_APPID,
            &client,
            &url,
            now,
            (PUSH_TOKEN, AES_KEY),
            &format!("o_ack_{}", i % 100),
            first_id + i as u64,
        );
        tasks.spawn(async move {
            let body = request.send().await.unwrap().text().await.unwrap();
            assert_eq!(body, "success");
            due.elapsed().as_secs_f64() * 1000.0
        });
    }
    let sent = total as f64 / start.elapsed().as_secs_f64();
    let mut times = tasks.join_all().await;
    times.sort_by(f64::total_cmp);
    (percentile(&times, 50), percentile(&times, 99), sent)
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
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
    /// Acknowledgements a second with 4 senders, and their p50 / p99.
    acks: (f64, f64, f64),
    /// p50 / p99 at [`ACK_RATE`] in an open loop, and the rate sent.
    acks_at_rate: (f64, f64, f64),
    /// The 1-minute load average before and after.
    load: (String, String),
}

async fn measure(env: Env, db: &'static str) -> Figures {
    let load_before = load_average();
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
    ack_throughput(&env, 200, 4, 9_200_000_000_000_000).await; // warm-up
    let acks = ack_throughput(&env, ACKS, 4, 9_300_000_000_000_000).await;
    let acks_at_rate = ack_latency_at(&env, ACK_RATE, ACKS, 9_400_000_000_000_000).await;
    println!("{db}: acks/s with 4 senders {acks:?}; at {ACK_RATE}/s p50/p99/sent {acks_at_rate:?}");
    Figures {
        db,
        direct,
        via,
        own,
        copies_many,
        copies_one,
        acks,
        acks_at_rate,
        load: (load_before, load_average()),
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
             cores; the 1-minute load average before and after each database's run is in the first table). \
             **Reply route**: {PUSHES} safe-mode text pushes (after {WARM_UP} to warm up), each sent straight to an \
             owner's bot (signed and encrypted with the bot's Token and key, as WeChat would), then to wxhub \
             (verified, decrypted, recorded with its nonce, dedup key and the reply route's announcement in one \
             transaction, forwarded to the same bot as the account's reply route — re-signed and re-encrypted \
             with the route's credentials — the bot's reply checked, stored for WeChat's retries and re-encrypted \
             for WeChat), and to an account without routes (wxhub's own handling, `success`), the three \
             interleaved. The goal is at most 2 ms added at p99.\n\n\
             | database | load | bot directly p50 / p99 | through wxhub p50 / p99 | **added** p50 / p99 | account without routes p50 / p99 |\n\
             |---|---|---|---|---|---|\n"
        );
        for f in &all {
            section.push_str(&format!(
                "| {} | {} → {} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | **{:.2} / {:.2} ms** | {:.2} / {:.2} ms |\n",
                f.db,
                f.load.0,
                f.load.1,
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
        section.push_str(&format!(
            "\n**Push acknowledgements** (an account without routes, safe mode: each push verified, decrypted, \
             recorded with its nonce and dedup key in one transaction, answered `success`; {ACKS} pushes per \
             figure from 100 users, the senders on the same 2 cores). The goal is at least 2,000 a second with a \
             p99 of at most 1 ms.\n\n\
             | database | 4 senders at once: acks/s (p50 / p99) | open loop at {ACK_RATE:.0}/s: p50 / p99 (rate sent) |\n|---|---|---|\n",
        ));
        for f in &all {
            section.push_str(&format!(
                "| {} | {:.0}/s ({:.2} / {:.2} ms) | {:.2} / {:.2} ms ({:.0}/s) |\n",
                f.db, f.acks.0, f.acks.1, f.acks.2, f.acks_at_rate.0, f.acks_at_rate.1, f.acks_at_rate.2
            ));
        }
        section.push('\n');
        write_section(&section);
    });
}
