//! Logging in on a PC by scanning a QR code with WeChat, driven by the `openidconnect` crate as
//! the relying party, with the simulator's scan hook as the person's phone: new and existing
//! followers, expired and used codes, forged and foreign pushes, a push on one replica while
//! the page waits on another, the QR creation limits, the confirmation step, the follow page's
//! own code, and where each website's logins happen.

use std::time::Duration;

use store::oidc::{LoginMode, LoginSurface};
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat_sim::{FollowOptions, PushMode, QrScan};

use crate::common::*;

/// A PC login waiting on its scan page.
struct PcLogin {
    attempt: Attempt,
    /// The scan page (under the public URL).
    page: String,
    /// The code's ticket and what it encodes, read from the page.
    ticket: String,
    url: String,
}

/// The value of attribute `name` of the element with `id` in `html`.
fn attribute(html: &str, id: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let value = &tag[start..start + tag[start..].find('"')?];
    Some(value.replace("&amp;", "&").replace("&quot;", "\""))
}

/// The ticket and url of the code shown on a scan page.
fn shown_code(html: &str) -> (String, String) {
    let src = attribute(html, "scan-qr", "src").expect("the page shows a code");
    assert!(src.contains("/mp/cgi-bin/showqrcode?ticket="), "{src}");
    let ticket = query_param(&src, "ticket").unwrap();
    (ticket, attribute(html, "scan-qr", "data-url").unwrap())
}

impl PcLogin {
    /// The RP starts a login from a PC browser; the browser lands on the scan page.
    async fn start(env: &Env, rp: &Rp) -> PcLogin {
        let attempt = rp.start();
        let r = env.pc_get(&attempt.url).await;
        assert_eq!(r.status(), 303, "a PC browser is sent to the scan page");
        let page = location(&r);
        assert!(page.contains("/login/scan/"), "{page}");
        let r = env.pc_get(&page).await;
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(html.contains("用微信扫码登录") && html.contains("Sign in to"));
        let (ticket, url) = shown_code(&html);
        PcLogin {
            attempt,
            page,
            ticket,
            url,
        }
    }

    async fn events(&self, env: &Env, replica: usize) -> Events {
        let r = env
            .send_with_cookies(
                env.browser
                    .get(env.on_replica(&format!("{}/events", self.page), replica))
                    .header("user-agent", PC_UA),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Events {
            response: r,
            buf: String::new(),
        }
    }

    async fn status(&self, env: &Env) -> serde_json::Value {
        env.pc_get(&format!("{}/status", self.page))
            .await
            .json()
            .await
            .unwrap()
    }

    /// The page's "continue" (what its script submits once the scan is reported).
    async fn continue_(&self, env: &Env, replica: usize) -> reqwest::Response {
        continue_page(env, &self.page, replica).await
    }
}

async fn continue_page(env: &Env, page: &str, replica: usize) -> reqwest::Response {
    env.send_with_cookies(
        env.browser
            .post(env.on_replica(&format!("{page}/continue"), replica))
            .header("user-agent", PC_UA),
    )
    .await
}

/// The text the scanner got in WeChat (the simulator decrypts and checks the reply).
fn reply_text(outcome: &wechat_sim::QrScanOutcome) -> String {
    let delivery = outcome.delivery.as_ref().expect("a push was delivered");
    assert!(delivery.acknowledged, "{delivery:?}");
    assert_eq!(delivery.reply_valid, Some(true), "{delivery:?}");
    let reply = delivery.attempts[0].reply.as_ref().unwrap();
    assert_eq!(reply.msg_type.as_deref(), Some("text"), "{reply:?}");
    reply.content.clone().unwrap()
}

/// Posts a hand-made safe-mode scan push for `appid` (as WeChat would, signed and encrypted);
/// returns the decrypted passive reply's text, or `None` for `success`.
async fn craft_scan_push(
    env: &Env,
    appid: &str,
    openid: &str,
    event: &str,
    event_key: &str,
    ticket: &str,
) -> Option<String> {
    let ts = env.now_secs().to_string();
    let nonce = format!("n{}", rand_suffix());
    let message = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[{event}]]></Event><EventKey><![CDATA[{event_key}]]></EventKey>\
         <Ticket><![CDATA[{ticket}]]></Ticket></xml>",
        original_id_of(appid)
    );
    let r = safe_push(
        env,
        &format!("{}/wechat/push", env.issuer(appid)),
        appid,
        &message,
        &nonce,
    )
    .send()
    .await
    .unwrap();
    let crypt = MsgCrypt::new(EncodingAesKey::parse(AES_KEY).unwrap(), appid);
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    match wechat::xml::parse_reply(&body, Some((&crypt, PUSH_TOKEN))).unwrap() {
        wechat::xml::Reply::Success => None,
        wechat::xml::Reply::Encrypted {
            message: Some(m), ..
        } => m.content,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn calls(env: &Env, endpoint: &str) -> u64 {
    env.sim().counter(APPID, endpoint).calls
}

/// A new follower: scanning makes carol follow (`subscribe` + `qrscene_`), the push
/// pre-registers her, the waiting page is told at once, and the RP logs her in — with one
/// `qrcode/create` and one `user/info`.
async fn pc_login_of_a_new_follower_completes_through_the_subscribe_push(env: Env) {
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    // A reload shows the same code.
    let again = env.pc_get(&pc.page).await.text().await.unwrap();
    assert_eq!(shown_code(&again).0, pc.ticket);
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 1);
    let mut events = pc.events(&env, 0).await;
    assert_eq!(events.next().await["state"], "waiting");

    let outcome = env
        .sim()
        .scan_qrcode(QrScan::new(&pc.url, "carol"))
        .await
        .unwrap();
    assert_eq!(outcome.event, Some("subscribe"));
    let text = reply_text(&outcome);
    assert!(
        text.contains("已在电脑上登录") && text.contains("Signed in"),
        "{text}"
    );
    assert_eq!(events.next().await["state"], "ready");
    let user = env
        .store()
        .get_end_user(&env.account_id(APPID).await, &outcome.openid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.created_via, store::end_users::CreatedVia::Push);

    let done = pc.continue_(&env, 0).await;
    assert_eq!(done.status(), 302);
    let login = rp.finish(pc.attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, outcome.openid);
    assert!(login.userinfo.additional_claims().follows_account);
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 1);
    assert_eq!(calls(&env, "/cgi-bin/user/info"), 1);
    env.assert_gateway_never_fetched_a_token(APPID);
}

#[tokio::test]
async fn existing_follower_logs_in_with_a_scan_and_gets_told_in_wechat() {
    let env = Env::sqlite().await;
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    let outcome = env
        .sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "bob"))
        .await
        .unwrap();
    assert_eq!(outcome.event, Some("SCAN"));
    assert!(reply_text(&outcome).contains("已在电脑上登录"));
    assert_eq!(pc.status(&env).await["state"], "ready");
    let done = pc.continue_(&env, 0).await;
    let login = rp.finish(pc.attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, outcome.openid);
}

/// The funnel counts a PC login's scan as its return from WeChat, and a scanner who followed
/// through the code as a follow.
#[tokio::test]
async fn pc_logins_are_counted_in_the_login_funnel() {
    let env = Env::sqlite().await;
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    for (person, event) in [("bob", "SCAN"), ("carol", "subscribe")] {
        let pc = PcLogin::start(&env, &rp).await;
        let outcome = env
            .sim()
            .scan_qrcode(QrScan::new(&pc.ticket, person))
            .await
            .unwrap();
        assert_eq!(outcome.event, Some(event));
        let done = pc.continue_(&env, 0).await;
        rp.finish(pc.attempt, &location(&done)).await.unwrap();
    }
    // An abandoned code: started, never scanned.
    PcLogin::start(&env, &rp).await;
    let label = format!("follow_required/{}", crate::stats::website(&env, &id).await);
    let funnel: Vec<_> = crate::stats::counts(&env)
        .await
        .into_iter()
        .filter(|(metric, _, _)| metric.starts_with("login."))
        .collect();
    use crate::stats::row;
    assert_eq!(
        funnel,
        [
            row("login.completed", &label, 2),
            row("login.followed", &label, 1),
            row("login.returned", &label, 2),
            row("login.started", &label, 3),
        ]
    );
}

#[tokio::test]
async fn an_expired_code_is_answered_in_wechat_and_the_page_gets_a_new_one() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    let login_id = gateway::token_hash(pc.page.rsplit('/').next().unwrap());
    let scene = env
        .store()
        .get_scan_login(&login_id)
        .await
        .unwrap()
        .unwrap()
        .qr
        .unwrap()
        .scene;
    assert!(scene.starts_with("wxhub-login:"));

    // Five minutes on, the code is dead: the page says so, and a scan push for it (WeChat's
    // behaviour for expired codes is not documented) is answered "expired".
    env.clock.advance(Duration::from_secs(301));
    assert_eq!(pc.status(&env).await["state"], "code_expired");
    let openid = env.sim().openid(APPID, "carol").unwrap();
    let text = craft_scan_push(&env, APPID, &openid, "SCAN", &scene, &pc.ticket)
        .await
        .unwrap();
    assert!(
        text.contains("已过期") && text.contains("refresh the page"),
        "{text}"
    );
    assert_eq!(pc.status(&env).await["state"], "code_expired");

    // "Refresh code" makes a new one; then the old one, still alive at WeChat when replaced
    // early, is answered "expired" through the simulator too.
    let refreshed = env
        .send_with_cookies(
            env.browser
                .post(format!("{}/refresh", pc.page))
                .header("user-agent", PC_UA),
        )
        .await;
    assert_eq!(refreshed.status(), 303);
    let html = env.pc_get(&pc.page).await.text().await.unwrap();
    let (second, second_url) = shown_code(&html);
    assert_ne!(second, pc.ticket);
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 2);
    env.clock.advance(Duration::from_secs(280));
    let html = env.pc_get(&pc.page).await.text().await.unwrap();
    let (third, _) = shown_code(&html);
    assert_ne!(third, second, "a code about to expire is replaced");
    let outcome = env
        .sim()
        .scan_qrcode(QrScan::new(&second_url, "carol"))
        .await
        .unwrap();
    assert!(reply_text(&outcome).contains("已过期"));
    assert_eq!(pc.status(&env).await["state"], "waiting");
}

#[tokio::test]
async fn a_used_code_is_answered_as_used_and_issues_nothing_more() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    env.sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "carol"))
        .await
        .unwrap();
    let done = pc.continue_(&env, 0).await;
    let page = pc.page.clone();
    let ticket = pc.ticket.clone();
    rp.finish(pc.attempt, &location(&done)).await.unwrap();
    let pc_page = page;
    // Scanned again (carol now follows: SCAN): "already used".
    let again = env
        .sim()
        .scan_qrcode(QrScan::new(&ticket, "carol"))
        .await
        .unwrap();
    assert_eq!(again.event, Some("SCAN"));
    let text = reply_text(&again);
    assert!(
        text.contains("已经用过") && text.contains("already used"),
        "{text}"
    );
    // The page is over; continuing again issues no second code.
    let page = env.pc_get(&pc_page).await;
    assert_eq!(page.status(), 404);
    assert_eq!(continue_page(&env, &pc_page, 0).await.status(), 404);
    assert_eq!(calls(&env, "/cgi-bin/user/info"), 1);
}

#[tokio::test]
async fn a_foreign_or_forged_ticket_or_scene_logs_nobody_in() {
    let env = Env::sqlite().await;
    env.account(OTHER_APPID, PushMode::Safe, |_| {}).await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    let carol = env.sim().openid(APPID, "carol").unwrap();
    // The right ticket with another scene: forged; ignored and not answered.
    let forged = craft_scan_push(
        &env,
        APPID,
        &carol,
        "SCAN",
        "wxhub-login:AAAAAAAAAAAAAAAAAAAAAA",
        &pc.ticket,
    )
    .await;
    assert_eq!(forged, None);
    // The account's own (non-login) scene with this ticket: not the gateway's business.
    assert_eq!(
        craft_scan_push(&env, APPID, &carol, "SCAN", "promo", &pc.ticket).await,
        None
    );
    // This ticket at another account: unknown there.
    let other = env.sim().openid(OTHER_APPID, "carol").unwrap();
    let scene = env
        .store()
        .find_scan_login_by_ticket(&env.account_id(APPID).await, &pc.ticket)
        .await
        .unwrap()
        .unwrap()
        .qr
        .unwrap()
        .scene;
    let text = craft_scan_push(&env, OTHER_APPID, &other, "SCAN", &scene, &pc.ticket)
        .await
        .unwrap();
    assert!(text.contains("已过期"));
    assert_eq!(pc.status(&env).await["state"], "waiting");

    // Carol scans; then alice scans the same code: it is taken, the login stays carol's.
    env.sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "carol"))
        .await
        .unwrap();
    let alice = env
        .sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "alice"))
        .await
        .unwrap();
    assert!(reply_text(&alice).contains("已经用过"));
    let done = pc.continue_(&env, 0).await;
    let login = rp.finish(pc.attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, carol);
}

#[tokio::test]
async fn qr_creation_is_limited_per_browser_and_per_ip() {
    let env = Env::sqlite_with_limits(gateway::limits::GatewayLimits {
        qr_creates_per_browser: gateway::limits::Rate {
            burst: 2,
            every: Duration::from_secs(3600),
        },
        qr_creates_per_ip: gateway::limits::Rate {
            burst: 3,
            every: Duration::from_secs(3600),
        },
        ..Default::default()
    })
    .await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    // Reloads never create.
    for _ in 0..5 {
        env.pc_get(&pc.page).await;
    }
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 1);
    // An expired code is replaced once, then the browser is out of codes.
    env.clock.advance(Duration::from_secs(301));
    assert_eq!(env.pc_get(&pc.page).await.status(), 200);
    env.clock.advance(Duration::from_secs(301));
    let limited = env.pc_get(&pc.page).await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600);
    assert!(limited.text().await.unwrap().contains("id=\"too-many\""));
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 2);
    // Another browser from the same address gets one more code (the address's third).
    env.clear_cookies();
    PcLogin::start(&env, &rp).await;
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 3);
    env.clear_cookies();
    let attempt = rp.start();
    let page = location(&env.pc_get(&attempt.url).await);
    assert_eq!(env.pc_get(&page).await.status(), 429);
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 3);
}

#[tokio::test]
async fn plain_mode_accounts_confirm_the_scan_in_wechat_before_the_pc_logs_in() {
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let (id, secret) = env.client(plain, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, plain, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    let mut events = pc.events(&env, 0).await;
    assert_eq!(events.next().await["state"], "waiting");
    let outcome = env
        .sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "carol"))
        .await
        .unwrap();
    // Plain mode: the reply is plain XML, with the confirmation link.
    let text = reply_text(&outcome);
    assert!(
        text.contains("点此确认登录") && text.contains("tap the link"),
        "{text}"
    );
    let link = text
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(events.next().await["state"], "confirm");
    // Not yet: the page says to confirm in WeChat.
    let not_yet = pc.continue_(&env, 0).await;
    assert_eq!(not_yet.status(), 200);
    assert!(not_yet.text().await.unwrap().contains("确认链接"));

    // Someone else who got the link cannot confirm (WeChat tells who opened it).
    let to_wechat = env.get(&link).await;
    assert_eq!(to_wechat.status(), 302);
    let back = location(
        &env.get(&as_user(&location(&to_wechat), "bob", "allow"))
            .await,
    );
    assert!(back.contains("/login/scan/confirmed"), "{back}");
    let refused = env.get(&back).await;
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Only the person who scanned")
    );
    assert_eq!(pc.status(&env).await["state"], "confirm");
    // The scanner confirms.
    let to_wechat = env.get(&link).await;
    let back = location(
        &env.get(&as_user(&location(&to_wechat), "carol", "allow"))
            .await,
    );
    let confirmed = env.get(&back).await;
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().await.unwrap().contains("id=\"confirmed\""));
    assert_eq!(events.next().await["state"], "ready");
    let done = pc.continue_(&env, 0).await;
    let login = rp.finish(pc.attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, outcome.openid);
    // The link is spent.
    assert_eq!(env.get(&link).await.status(), 404);
}

#[tokio::test]
async fn a_website_may_require_confirmation_or_choose_where_logins_happen() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let account = env.account_id(APPID).await;
    let client = env.store().find_oidc_client(&id).await.unwrap().unwrap();
    assert_eq!(client.login_surface, LoginSurface::Auto);
    let edit_client_id = client.id.clone();
    let set = |surface, confirmation| {
        let env = &env;
        let edit_client_id = edit_client_id.clone();
        let account = account.clone();
        let edit = store::oidc::ClientEdit {
            login_surface: surface,
            scan_confirmation: confirmation,
            ..store::oidc::ClientEdit::from(&client)
        };
        async move {
            env.store()
                .update_oidc_client(
                    &account,
                    &edit_client_id,
                    &edit,
                    env.now(),
                    &store::audit::AuditRecord::new("test", "website.update"),
                )
                .await
                .unwrap()
                .expect("the website exists");
        }
    };
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    // Confirmation asked for by the website, on a safe-mode account.
    set(LoginSurface::Auto, Some(true)).await;
    let pc = PcLogin::start(&env, &rp).await;
    let outcome = env
        .sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "carol"))
        .await
        .unwrap();
    assert!(reply_text(&outcome).contains("点此确认登录"));
    assert_eq!(pc.status(&env).await["state"], "confirm");
    // Always the scan page, even in WeChat's browser.
    set(LoginSurface::Scan, None).await;
    let r = env.get(&rp.start().url).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("/login/scan/"));
    // Always WeChat's page, even on a PC.
    set(LoginSurface::Wechat, None).await;
    let r = env.pc_get(&rp.start().url).await;
    assert_eq!(r.status(), 302);
    assert!(location(&r).contains("/connect/oauth2/authorize"));
}

#[tokio::test]
async fn the_scan_page_and_its_status_refuse_another_browser() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    let stranger = |url: String| env.browser.get(url).header("user-agent", PC_UA).send();
    let page = stranger(pc.page.clone()).await.unwrap();
    assert_eq!(page.status(), 403);
    for path in ["status", "events"] {
        let r = stranger(format!("{}/{path}", pc.page)).await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["state"], "wrong_browser", "{path}");
    }
    // The page's script listens to the events and falls back to polling.
    let html = env.pc_get(&pc.page).await.text().await.unwrap();
    assert!(html.contains("new EventSource(b+\"/events\")") && html.contains("fallback()"));
}

#[tokio::test]
async fn the_follow_page_shows_a_code_of_its_own_whose_scan_continues_the_login() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url, "carol", "allow").await;
    let page_url = location(&back);
    let html = env.get(&page_url).await.text().await.unwrap();
    let src = attribute(&html, "login-qr", "src").expect("a code for this login");
    assert!(html.contains("长按识别") && html.contains("for this login only"));
    let ticket = query_param(&src, "ticket").unwrap();
    // Reloading the page keeps the code.
    let again = env.get(&page_url).await.text().await.unwrap();
    assert_eq!(attribute(&again, "login-qr", "src").unwrap(), src);
    assert_eq!(calls(&env, "/cgi-bin/qrcode/create"), 1);
    // Someone else scanning (a screenshot) changes nothing for this login.
    let alice = env
        .sim()
        .scan_qrcode(QrScan::new(&ticket, "alice"))
        .await
        .unwrap();
    assert!(reply_text(&alice).contains("已失效"));
    let status: serde_json::Value = env
        .get(&format!("{page_url}/status"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "waiting");
    // Carol long-presses it and follows.
    let carol = env
        .sim()
        .scan_qrcode(QrScan::new(&ticket, "carol"))
        .await
        .unwrap();
    assert_eq!(carol.event, Some("subscribe"));
    assert!(reply_text(&carol).contains("关注成功"));
    let status: serde_json::Value = env
        .get(&format!("{page_url}/status"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "followed");
    let done = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(done.status(), 302);
    let login = rp.finish(attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, carol.openid);
}

/// The scan's push lands on replica 0 (the public URL WeChat pushes to) while the page waits
/// on replica 1: replica 1's events are woken through PostgreSQL's notifications.
async fn a_push_on_one_replica_wakes_the_page_waiting_on_another(env: Env) {
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let pc = PcLogin::start(&env, &rp).await;
    let mut events = pc.events(&env, 1).await;
    assert_eq!(events.next().await["state"], "waiting");
    let outcome = env
        .sim()
        .scan_qrcode(QrScan::new(&pc.ticket, "carol"))
        .await
        .unwrap();
    assert!(reply_text(&outcome).contains("已在电脑上登录"));
    // Woken by the notification: the fallback poll is an hour in this test.
    assert_eq!(events.next().await["state"], "ready");
    let done = pc.continue_(&env, 1).await;
    let login = rp.finish(pc.attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, outcome.openid);
}

/// Limits whose event-stream fallback poll is an hour: a page told within a test's 10 s wait
/// was woken by an announcement.
fn no_fallback_poll() -> gateway::limits::GatewayLimits {
    gateway::limits::GatewayLimits {
        scan_page_poll: Duration::from_secs(3600),
        ..Default::default()
    }
}

mod sqlite {
    use crate::common::{DbKind, Env};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pc_login_of_a_new_follower_completes_through_the_subscribe_push() {
        let env = Env::start_with(DbKind::Sqlite, 1, None, super::no_fallback_poll()).await;
        super::pc_login_of_a_new_follower_completes_through_the_subscribe_push(env).await;
    }
}

mod postgres {
    use crate::common::{DbKind, Env, postgres_url};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pc_login_of_a_new_follower_completes_through_the_subscribe_push() {
        let Some(url) = postgres_url() else { return };
        let env = Env::start_with(DbKind::Postgres, 1, Some(url), super::no_fallback_poll()).await;
        super::pc_login_of_a_new_follower_completes_through_the_subscribe_push(env).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_on_one_replica_wakes_the_page_waiting_on_another() {
        let Some(url) = postgres_url() else { return };
        let env = Env::start_with(DbKind::Postgres, 2, Some(url), super::no_fallback_poll()).await;
        super::a_push_on_one_replica_wakes_the_page_waiting_on_another(env).await;
    }
}
