//! Complete logins in both modes, driven by a real relying party.

use store::oidc::LoginMode;
use wechat_sim::{FaultAction, FaultSpec, FollowOptions, PushMode};

use crate::common::*;

#[tokio::test]
async fn userinfo_mode_login_creates_the_user_with_profile_claims() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    assert_eq!(back.status(), 302);
    assert_eq!(back.headers()["referrer-policy"], "no-referrer");
    let callback = location(&back);
    assert!(callback.starts_with(REDIRECT));
    let login = rp.finish(attempt, &callback).await.unwrap();

    let openid = env.sim().openid(APPID, "alice").unwrap();
    assert_eq!(login.sub, openid);
    assert_eq!(login.nickname.as_deref(), Some("nick-alice"));
    assert!(login.picture.unwrap().contains("/alice/"));
    assert!(!login.userinfo.additional_claims().follows_account);
    let user = env
        .store()
        .get_end_user(&env.account_id(APPID).await, &openid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.nickname.as_deref(), Some("nick-alice"));
    assert_eq!(
        user.created_via,
        store::end_users::CreatedVia::LoginUserinfo
    );
    assert_eq!(user.first_login_at, Some(env.now()));
    // A userinfo login needs no core token at all.
    assert_eq!(env.sim().counter(APPID, "/cgi-bin/token").calls, 0);
}

#[tokio::test]
async fn follow_required_login_of_a_follower_completes_with_the_schedulers_token() {
    let env = Env::sqlite().await;
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    for round in 0..2 {
        let attempt = rp.start();
        let back = browse_to_callback(&env, &attempt.url.clone(), "bob", "allow").await;
        let login = rp.finish(attempt, &location(&back)).await.unwrap();
        assert_eq!(login.sub, env.sim().openid(APPID, "bob").unwrap());
        assert!(
            login.userinfo.additional_claims().follows_account,
            "round {round}"
        );
    }
    let user = env
        .store()
        .get_end_user(
            &env.account_id(APPID).await,
            &env.sim().openid(APPID, "bob").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    // Pre-registered by the subscribe push, then logged in twice.
    assert_eq!(user.created_via, store::end_users::CreatedVia::Push);
    assert!(user.subscribed && user.last_login_at.is_some());
    assert_eq!(
        env.tokens.fetches.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    env.assert_gateway_never_fetched_a_token(APPID);
}

#[tokio::test]
async fn not_following_waits_on_the_follow_page_and_continues_after_the_subscribe_push() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "carol", "allow").await;
    assert_eq!(back.status(), 303);
    let page_url = location(&back);
    let page = env.get(&page_url).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    // This login's own code, to long-press (its follow push names this login).
    assert!(html.contains(&format!("Account {APPID}")) && html.contains("id=\"login-qr\""));
    assert!(html.contains("长按识别") && html.contains("for this login only"));
    let status: serde_json::Value = env
        .get(&format!("{page_url}/status"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["followed"], false);

    // Carol follows; WeChat (the simulator) pushes the signed, encrypted subscribe event.
    let outcome = env
        .sim()
        .follow(APPID, "carol", FollowOptions::default())
        .await
        .unwrap();
    assert!(outcome.delivery.unwrap().acknowledged);
    let status: serde_json::Value = env
        .get(&format!("{page_url}/status"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["followed"], true);

    // The page's script now submits the continue form.
    let done = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(done.status(), 302);
    let login = rp.finish(attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, outcome.openid);
    assert!(login.userinfo.additional_claims().follows_account);
    // The wait is finished: its page is gone and a second continue cannot issue another code.
    assert_eq!(env.get(&page_url).await.status(), 404);
    assert_eq!(
        env.post(&format!("{page_url}/continue")).await.status(),
        404
    );
    env.assert_gateway_never_fetched_a_token(APPID);
}

#[tokio::test]
async fn ive_followed_rechecks_user_info_when_no_push_arrived() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "carol", "allow").await;
    let page_url = location(&back);
    // Not yet following: the page comes back with a notice.
    let again = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("not-yet"));
    // Follows without a push reaching wxhub; "I've followed" asks WeChat again.
    env.sim()
        .follow(
            APPID,
            "carol",
            FollowOptions {
                push: false,
                ..FollowOptions::default()
            },
        )
        .await
        .unwrap();
    // Re-checks of one wait are at least 5 s apart.
    env.clock.advance(std::time::Duration::from_secs(5));
    let done = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(done.status(), 302);
    rp.finish(attempt, &location(&done)).await.unwrap();
    env.assert_gateway_never_fetched_a_token(APPID);
}

#[tokio::test]
async fn user_refusing_gets_a_clear_page_and_access_denied_goes_back_to_the_client() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let page = browse_to_callback(&env, &attempt.url.clone(), "alice", "deny").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("你已拒绝授权") && html.contains("You declined"));
    let start = html.find("id=\"back\" href=\"").unwrap() + "id=\"back\" href=\"".len();
    let back = html[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(back.starts_with(REDIRECT));
    assert_eq!(
        rp.finish(attempt, &back).await.err().as_deref(),
        Some("access_denied")
    );
    assert!(
        query_param(&back, "state").is_some(),
        "state is carried back with the error"
    );
}

#[tokio::test]
async fn snapshot_page_user_is_not_logged_in_and_is_told_what_to_do() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let page = browse_to_callback(&env, &attempt.url, "alice", "snapshot").await;
    assert_eq!(page.status(), 403);
    let html = page.text().await.unwrap();
    assert!(html.contains("使用完整服务") && html.contains("snapshot"));
    let (users, _) = env
        .store()
        .count_end_users(&env.account_id(APPID).await)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn rejected_core_token_is_reported_once_and_the_call_retried() {
    let env = Env::sqlite().await;
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    env.sim()
        .add_fault(FaultSpec {
            endpoint: Some("/cgi-bin/user/info".into()),
            appid: Some(APPID.into()),
            action: FaultAction::Errcode {
                code: 42001,
                errmsg: None,
            },
            next: Some(1),
            rate: None,
        })
        .unwrap();
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "bob", "allow").await;
    rp.finish(attempt, &location(&back)).await.unwrap();
    // One fetch for the first token, one after the report.
    assert_eq!(
        env.tokens.fetches.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert_eq!(env.sim().counter(APPID, "/cgi-bin/user/info").calls, 2);
    env.assert_gateway_never_fetched_a_token(APPID);
}

#[tokio::test]
async fn subscription_and_unverified_accounts_are_refused_with_a_page() {
    let env = Env::sqlite().await;
    env.account("wx1111111111111111", PushMode::Plain, |s| {
        s.kind = wechat_sim::AccountKind::Subscription
    })
    .await;
    env.account("wx2222222222222222", PushMode::Plain, |s| {
        s.verified = false
    })
    .await;
    for appid in ["wx1111111111111111", "wx2222222222222222"] {
        // Registering a client is refused up front...
        let refused = env.create_client(appid, LoginMode::Userinfo, false).await;
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("verified service accounts")
        );
    }
    // ...and a client that exists from before the account changed gets a page, not WeChat.
    let (id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    let account = env
        .store()
        .find_account_by_appid(APPID)
        .await
        .unwrap()
        .unwrap();
    env.store()
        .update_account_profile(
            &account.id,
            &store::accounts::AccountProfile {
                name: account.name.clone(),
                kind: store::accounts::AccountKind::Subscription,
                verified: true,
                token_mode: account.token_mode,
            },
            env.now(),
        )
        .await
        .unwrap();
    let url = format!(
        "{}/authorize?response_type=code&client_id={id}&redirect_uri={}&scope=openid&state=s1",
        env.issuer(APPID),
        urlencode(REDIRECT)
    );
    let page = env.get(&url).await;
    assert_eq!(page.status(), 403);
    let html = page.text().await.unwrap();
    assert!(html.contains("订阅号") && html.contains("Subscription accounts"));
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Runs a follow-required login of `user` (not following) up to the follow page's URL.
async fn to_follow_page(env: &Env, rp: &Rp, user: &str) -> (Attempt, String) {
    let attempt = rp.start();
    let back = browse_to_callback(env, &attempt.url.clone(), user, "allow").await;
    assert_eq!(back.status(), 303);
    let page = location(&back);
    (attempt, page)
}

#[tokio::test]
async fn follow_page_without_the_login_cookie_is_refused() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let (attempt, page_url) = to_follow_page(&env, &rp, "carol").await;
    let cookies = env.cookies.lock().unwrap().clone();
    // The page's URL leaked to another browser: every step refuses it.
    env.clear_cookies();
    let page = env.get(&page_url).await;
    assert_eq!(page.status(), 403);
    let html = page.text().await.unwrap();
    assert!(html.contains("请从网站重新登录") && html.contains("start the login again"));
    assert_eq!(env.get(&format!("{page_url}/status")).await.status(), 403);
    env.sim()
        .follow(APPID, "carol", FollowOptions::default())
        .await
        .unwrap();
    assert_eq!(
        env.post(&format!("{page_url}/continue")).await.status(),
        403
    );
    // A forged cookie value does not help either.
    env.cookies
        .lock()
        .unwrap()
        .insert("wxhub_login".into(), "A".repeat(43));
    assert_eq!(
        env.post(&format!("{page_url}/continue")).await.status(),
        403
    );
    // The browser that started the login still finishes it.
    *env.cookies.lock().unwrap() = cookies;
    let done = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(done.status(), 302);
    rp.finish(attempt, &location(&done)).await.unwrap();
}

#[tokio::test]
async fn wechat_callback_without_the_login_cookie_is_refused() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let to_wechat = env.get(&attempt.url).await;
    let set_cookie = to_wechat.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Lax")
            && set_cookie.contains(&format!("Path=/t/{APPID}")),
        "{set_cookie}"
    );
    let wechat = location(&to_wechat);
    let back = location(&env.get(&as_user(&wechat, "alice", "allow")).await);
    // Login CSRF: the attacker's callback URL opened in the victim's browser (no cookie).
    let victim = env.browser.get(&back).send().await.unwrap();
    assert_eq!(victim.status(), 403);
    assert!(victim.headers().get("location").is_none());
    let html = victim.text().await.unwrap();
    assert!(
        html.contains("请从网站重新登录")
            && html.contains("Please start the login from the website")
    );
    assert_eq!(
        env.store()
            .count_end_users(&env.account_id(APPID).await)
            .await
            .unwrap()
            .0,
        0,
        "nothing was recorded"
    );
    // The browser that started it continues.
    let ok = env.get(&back).await;
    assert_eq!(ok.status(), 302);
    rp.finish(attempt, &location(&ok)).await.unwrap();
}

#[tokio::test]
async fn follow_page_falls_back_to_the_configured_qr_code_and_profile_link() {
    let env = Env::sqlite().await;
    // WeChat refuses this login's own code (daily quota spent): the configured image instead.
    env.sim()
        .add_fault(FaultSpec {
            endpoint: Some("/cgi-bin/qrcode/create".into()),
            appid: Some(APPID.into()),
            action: FaultAction::Errcode {
                code: 45009,
                errmsg: None,
            },
            next: Some(10),
            rate: None,
        })
        .unwrap();
    let account = env.account_id(APPID).await;
    let mut settings = env.store().gateway_settings(&account).await.unwrap();
    settings.follow_qr_url = Some("https://mmbiz.qpic.cn/qr/\"onload=x.jpg".into());
    settings.follow_link = Some("https://mp.weixin.qq.com/mp/profile_ext?__biz=MzA".into());
    env.update_settings(&account, &settings).await.unwrap();
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let (_, page_url) = to_follow_page(&env, &rp, "carol").await;
    let html = env.get(&page_url).await.text().await.unwrap();
    assert!(html.contains("<img id=\"qr\" src=\"https://mmbiz.qpic.cn/qr/&quot;onload=x.jpg\""));
    assert!(
        html.contains("id=\"profile\" href=\"https://mp.weixin.qq.com/mp/profile_ext?__biz=MzA\"")
    );
    assert!(html.contains("扫描下面的二维码") && html.contains("scan the QR code"));
    assert!(!html.contains("login-qr"));
    // The status URL sits in the script as a JSON string.
    assert!(html.contains(&format!("var s=\"{page_url}/status\"")));
    // Without an image either, the page says how to find the account by name.
    let mut bare = settings.clone();
    bare.follow_qr_url = None;
    env.update_settings(&account, &bare).await.unwrap();
    let html = env.get(&page_url).await.text().await.unwrap();
    assert!(!html.contains("<img"));
    assert!(html.contains("搜索公众号名称") && html.contains("search for the account's name"));
    // Settings are validated: no http images, no malformed original ids.
    settings.follow_qr_url = Some("http://mmbiz.qpic.cn/qr.jpg".into());
    assert!(env.update_settings(&account, &settings).await.is_err());
    settings.follow_qr_url = None;
    settings.original_id = Some("gh_short".into());
    assert!(env.update_settings(&account, &settings).await.is_err());
}

#[tokio::test]
async fn a_follow_from_a_forged_plain_push_is_rechecked_with_user_info() {
    let env = Env::sqlite().await;
    let plain = "wx3333333333333333";
    env.account(plain, PushMode::Plain, |_| {}).await;
    let (id, secret) = env.client(plain, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, plain, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "carol", "allow").await;
    assert_eq!(back.status(), 303);
    let page_url = location(&back);
    // Someone with a (signature, timestamp, nonce) posts a subscribe for carol, who does not
    // follow: a plain body is signed by nothing.
    let openid = env.sim().openid(plain, "carol").unwrap();
    let ts = env.now_secs().to_string();
    let forged = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe]]></Event></xml>",
        original_id_of(plain)
    );
    let r = env
        .browser
        .post(format!("{}/wechat/push", env.issuer(plain)))
        .query(&[
            (
                "signature",
                wechat::push::signature(PUSH_TOKEN, &ts, "forged"),
            ),
            ("timestamp", ts.clone()),
            ("nonce", "forged".into()),
        ])
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: serde_json::Value = env
        .get(&format!("{page_url}/status"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["followed"], true);
    // Continue asks WeChat, which says carol does not follow: no code.
    let again = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains("not-yet"));
    assert_eq!(env.sim().counter(plain, "/cgi-bin/user/info").calls, 2);
    // Once carol really follows, the login finishes.
    env.sim()
        .follow(
            plain,
            "carol",
            FollowOptions {
                push: false,
                ..FollowOptions::default()
            },
        )
        .await
        .unwrap();
    env.clock.advance(std::time::Duration::from_secs(5));
    let done = env.post(&format!("{page_url}/continue")).await;
    assert_eq!(done.status(), 302);
    rp.finish(attempt, &location(&done)).await.unwrap();
}

/// Shared by the SQLite and PostgreSQL variants: the per-wait count lives in the database.
async fn ive_followed_is_limited_per_wait_and_the_subscribe_push_still_finishes_the_login(
    env: Env,
) {
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let (attempt, page_url) = to_follow_page(&env, &rp, "carol").await;
    let continue_url = format!("{page_url}/continue");
    let user_info_calls = || env.sim().counter(APPID, "/cgi-bin/user/info").calls;
    // The callback asked once.
    assert_eq!(user_info_calls(), 1);
    let first = env.post(&continue_url).await;
    assert_eq!(first.status(), 200);
    assert!(first.text().await.unwrap().contains("id=\"not-yet\""));
    assert_eq!(user_info_calls(), 2);
    // At once again: refused without asking WeChat, with when to try.
    let soon = env.post(&continue_url).await;
    assert_eq!(soon.status(), 429);
    assert_eq!(soon.headers()["retry-after"], "5");
    let html = soon.text().await.unwrap();
    assert!(html.contains("id=\"too-soon\"") && html.contains("in 5 s"));
    assert_eq!(user_info_calls(), 2);
    // Ten re-checks in all, five seconds apart; then none, whatever the wait.
    for n in 2..=10 {
        env.clock.advance(std::time::Duration::from_secs(5));
        assert_eq!(env.post(&continue_url).await.status(), 200, "re-check {n}");
    }
    assert_eq!(user_info_calls(), 11);
    env.clock.advance(std::time::Duration::from_secs(60));
    let spent = env.post(&continue_url).await;
    assert_eq!(spent.status(), 429);
    assert!(spent.text().await.unwrap().contains("id=\"no-more\""));
    assert_eq!(user_info_calls(), 11);
    // The subscribe push is the normal path, and needs no re-check.
    env.sim()
        .follow(APPID, "carol", FollowOptions::default())
        .await
        .unwrap();
    let done = env.post(&continue_url).await;
    assert_eq!(done.status(), 302);
    rp.finish(attempt, &location(&done)).await.unwrap();
    assert_eq!(user_info_calls(), 11);
}

#[tokio::test]
async fn ive_followed_is_limited_per_client_ip_across_logins() {
    let env = Env::sqlite_with_limits(gateway::limits::GatewayLimits {
        follow_rechecks_per_ip: gateway::limits::Rate {
            burst: 3,
            every: std::time::Duration::from_secs(30),
        },
        ..Default::default()
    })
    .await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    // Three logins waiting on the follow page, from one address (127.0.0.1).
    let mut pages = Vec::new();
    for user in ["alice", "bob", "carol"] {
        pages.push(to_follow_page(&env, &rp, user).await.1);
    }
    let calls_before = env.sim().counter(APPID, "/cgi-bin/user/info").calls;
    for page in &pages {
        assert_eq!(env.post(&format!("{page}/continue")).await.status(), 200);
    }
    let limited = env.post(&format!("{}/continue", pages[0])).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "30");
    assert_eq!(
        env.sim().counter(APPID, "/cgi-bin/user/info").calls,
        calls_before + 3
    );
    env.clock.advance(std::time::Duration::from_secs(30));
    assert_eq!(
        env.post(&format!("{}/continue", pages[1])).await.status(),
        200
    );
}

mod sqlite {
    #[tokio::test]
    async fn ive_followed_is_limited_per_wait_and_the_subscribe_push_still_finishes_the_login() {
        let env = crate::common::Env::sqlite().await;
        super::ive_followed_is_limited_per_wait_and_the_subscribe_push_still_finishes_the_login(
            env,
        )
        .await;
    }
}

mod postgres {
    #[tokio::test]
    async fn ive_followed_is_limited_per_wait_and_the_subscribe_push_still_finishes_the_login() {
        let Some(url) = crate::common::postgres_url() else {
            return;
        };
        let env = crate::common::Env::start(crate::common::DbKind::Postgres, 1, Some(url)).await;
        super::ive_followed_is_limited_per_wait_and_the_subscribe_push_still_finishes_the_login(
            env,
        )
        .await;
    }
}
