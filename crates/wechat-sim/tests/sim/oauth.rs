//! §4 OAuth web authorization.

use wechat::{Lang, Scope};
use wechat_sim::{AuthorizeAnswer, NextAuthorization};

use crate::common::{Env, code, secret};

const CALLBACK: &str = "https://app.example/cb";

/// Opens the authorize URL the client builds, with the test hook appended.
async fn authorize(
    env: &Env,
    appid: &str,
    redirect: &str,
    scope: Scope,
    state: &str,
    hook: &str,
) -> reqwest::Response {
    let url = env
        .client
        .authorize_url(appid, redirect, scope, state, false)
        .unwrap();
    let (base, fragment) = url.split_once('#').unwrap();
    assert_eq!(fragment, "wechat_redirect");
    env.http.get(format!("{base}{hook}")).send().await.unwrap()
}

fn location(resp: &reqwest::Response) -> String {
    assert_eq!(resp.status(), 302, "expected a redirect");
    resp.headers()["location"].to_str().unwrap().to_owned()
}

fn code_of(location: &str) -> String {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code")
}

async fn error_page(resp: reqwest::Response) -> (i64, String) {
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = resp.text().await.unwrap();
    let start = body.find("data-errcode=\"").expect("an error page") + 14;
    let end = start + body[start..].find('"').unwrap();
    (body[start..end].parse().unwrap(), body)
}

async fn code_for(env: &Env, appid: &str, scope: Scope, answer: &str) -> String {
    let resp = authorize(
        env,
        appid,
        CALLBACK,
        scope,
        "st1",
        &format!("&sim_user=u1&sim_answer={answer}"),
    )
    .await;
    code_of(&location(&resp))
}

fn setup(env: &Env) {
    env.account("wx1");
    env.user("u1");
}

#[tokio::test]
async fn base_scope_is_silent_and_redirects_with_code_and_state() {
    let env = Env::new().await;
    setup(&env);
    let resp = authorize(
        &env,
        "wx1",
        CALLBACK,
        Scope::SnsapiBase,
        "abc123",
        "&sim_user=u1",
    )
    .await;
    let loc = location(&resp);
    assert!(loc.starts_with("https://app.example/cb?code="), "{loc}");
    assert!(loc.ends_with("&state=abc123"), "{loc}");
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &code_of(&loc))
        .await
        .unwrap();
    assert_eq!(tok.openid, env.sim().openid("wx1", "u1").unwrap());
    assert_eq!(tok.scope, "snsapi_base");
    assert_eq!(tok.expires_in, 7200);
    assert!(!tok.is_snapshotuser);
    assert_eq!(tok.unionid, None);
}

#[tokio::test]
async fn redirect_uri_with_a_query_gets_an_ampersand() {
    let env = Env::new().await;
    setup(&env);
    let resp = authorize(
        &env,
        "wx1",
        "https://app.example/cb?x=1",
        Scope::SnsapiBase,
        "s",
        "&sim_user=u1",
    )
    .await;
    let loc = location(&resp);
    assert!(loc.starts_with("https://app.example/cb?x=1&code="), "{loc}");
}

#[tokio::test]
async fn user_refuses_consent_redirects_with_state_only() {
    let env = Env::new().await;
    setup(&env);
    let resp = authorize(
        &env,
        "wx1",
        CALLBACK,
        Scope::SnsapiUserinfo,
        "xyz",
        "&sim_user=u1&sim_answer=deny",
    )
    .await;
    assert_eq!(location(&resp), "https://app.example/cb?state=xyz");
}

#[tokio::test]
async fn consent_gives_a_userinfo_token_that_reads_sns_userinfo() {
    let env = Env::new().await;
    env.account_with("wx1", |a| a.unionid_bound = true);
    env.user("u1");
    let code = code_for(&env, "wx1", Scope::SnsapiUserinfo, "allow").await;
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &code)
        .await
        .unwrap();
    assert!(tok.has_scope(Scope::SnsapiUserinfo));
    let unionid = env.sim().user("u1").unwrap().unionid();
    assert_eq!(tok.unionid.as_deref(), Some(unionid.as_str()));
    let info = env
        .client
        .sns_userinfo(&tok.access_token, &tok.openid, Lang::ZhCn)
        .await
        .unwrap();
    assert_eq!(info.nickname, "nick-u1");
    assert_eq!(info.sex, 0);
    assert_eq!(info.city, "");
    assert_eq!(info.unionid, Some(unionid));
}

#[tokio::test]
async fn second_code_exchange_returns_40163() {
    let env = Env::new().await;
    setup(&env);
    let code = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    env.client
        .exchange_code("wx1", &secret("wx1"), &code)
        .await
        .unwrap();
    let err = env
        .client
        .exchange_code("wx1", &secret("wx1"), &code)
        .await
        .unwrap_err();
    assert_eq!(super::common::code(err), 40163);
}

#[tokio::test]
async fn code_older_than_300s_returns_40029() {
    let env = Env::new().await;
    setup(&env);
    let fresh = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    let stale = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    env.advance(299);
    env.client
        .exchange_code("wx1", &secret("wx1"), &fresh)
        .await
        .unwrap();
    env.advance(1);
    let err = env
        .client
        .exchange_code("wx1", &secret("wx1"), &stale)
        .await
        .unwrap_err();
    assert_eq!(code(err), 40029);
}

#[tokio::test]
async fn another_accounts_code_returns_40029() {
    let env = Env::new().await;
    setup(&env);
    env.account("wx2");
    let c = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    let err = env
        .client
        .exchange_code("wx2", &secret("wx2"), &c)
        .await
        .unwrap_err();
    assert_eq!(code(err), 40029);
    let err = env
        .client
        .exchange_code("wx1", &secret("bad"), &c)
        .await
        .unwrap_err();
    assert_eq!(code(err), 40125);
    // Neither failure used the code up.
    env.client
        .exchange_code("wx1", &secret("wx1"), &c)
        .await
        .unwrap();
}

#[tokio::test]
async fn missing_code_returns_41008() {
    let env = Env::new().await;
    setup(&env);
    let body = env
        .get_json(
            "/sns/oauth2/access_token?appid=wx1&secret=secret-wx1&grant_type=authorization_code",
        )
        .await;
    assert_eq!(body["errcode"], 41008);
}

#[tokio::test]
async fn base_token_on_userinfo_returns_48001() {
    let env = Env::new().await;
    setup(&env);
    let c = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c)
        .await
        .unwrap();
    let err = env
        .client
        .sns_userinfo(&tok.access_token, &tok.openid, Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 48001);
}

#[tokio::test]
async fn refresh_returns_new_access_token_and_same_refresh_token_without_extension() {
    let env = Env::new().await;
    setup(&env);
    let c = code_for(&env, "wx1", Scope::SnsapiUserinfo, "allow").await;
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c)
        .await
        .unwrap();
    env.advance(7200);
    assert_eq!(
        code(
            env.client
                .check_oauth_token(&tok.access_token, &tok.openid)
                .await
                .unwrap_err()
        ),
        42001
    );
    let r = env
        .client
        .refresh_oauth_token("wx1", &tok.refresh_token)
        .await
        .unwrap();
    assert_ne!(r.access_token, tok.access_token);
    assert_eq!(r.refresh_token, tok.refresh_token);
    assert_eq!(r.openid, tok.openid);
    env.client
        .check_oauth_token(&r.access_token, &r.openid)
        .await
        .unwrap();
    // 30 days after the code exchange, not after the refresh.
    env.advance(30 * 86_400 - 7200);
    let err = env
        .client
        .refresh_oauth_token("wx1", &tok.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(code(err), 42002);
    let err = env
        .client
        .refresh_oauth_token("wx1", &wechat::RefreshToken::new("nope"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40030);
}

#[tokio::test]
async fn sns_auth_checks_token_and_openid() {
    let env = Env::new().await;
    setup(&env);
    let c = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c)
        .await
        .unwrap();
    env.client
        .check_oauth_token(&tok.access_token, &tok.openid)
        .await
        .unwrap();
    let err = env
        .client
        .check_oauth_token(&tok.access_token, "oOTHER")
        .await
        .unwrap_err();
    assert_eq!(code(err), 40003);
    let err = env
        .client
        .check_oauth_token(&wechat::AccessToken::new("bad"), &tok.openid)
        .await
        .unwrap_err();
    assert_eq!(code(err), 40014);
}

#[tokio::test]
async fn snapshot_user_gets_flag_virtual_openid_and_48001_on_userinfo() {
    let env = Env::new().await;
    setup(&env);
    let c = code_for(&env, "wx1", Scope::SnsapiUserinfo, "snapshot").await;
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c)
        .await
        .unwrap();
    assert!(tok.is_snapshotuser);
    assert_ne!(tok.openid, env.sim().openid("wx1", "u1").unwrap());
    let err = env
        .client
        .sns_userinfo(&tok.access_token, &tok.openid, Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 48001);
}

#[tokio::test]
async fn redirect_host_mismatch_shows_10003_page() {
    let env = Env::new().await;
    setup(&env);
    for bad in [
        "https://evil.example/cb",
        "https://sub.app.example/cb",
        "https://example/cb",
    ] {
        let resp = authorize(&env, "wx1", bad, Scope::SnsapiBase, "s", "&sim_user=u1").await;
        assert_eq!(error_page(resp).await.0, 10003, "{bad}");
    }
}

#[tokio::test]
async fn authorize_parameter_errors_show_html_pages() {
    let env = Env::new().await;
    setup(&env);
    let cb = "https%3A%2F%2Fapp.example%2Fcb";
    let cases = [
        (
            "redirect_uri=x&response_type=code&scope=snsapi_base".to_owned(),
            10012,
        ),
        (
            "appid=wxnone&redirect_uri=x&response_type=code&scope=snsapi_base".to_owned(),
            10012,
        ),
        (
            "appid=wx1&response_type=code&scope=snsapi_base".to_owned(),
            10011,
        ),
        (
            format!("appid=wx1&redirect_uri={cb}&response_type=code&scope="),
            10010,
        ),
        (
            format!("appid=wx1&redirect_uri={cb}&response_type=code&scope=snsapi_login"),
            10005,
        ),
        (
            format!("appid=wx1&redirect_uri={cb}&response_type=token&scope=snsapi_base"),
            10001,
        ),
        (
            format!(
                "appid=wx1&redirect_uri={cb}&response_type=code&scope=snsapi_base&state={}",
                "a".repeat(129)
            ),
            10013,
        ),
        (
            format!("appid=wx1&redirect_uri={cb}&response_type=code&scope=snsapi_base&state=a-b"),
            10013,
        ),
    ];
    for (query, want) in cases {
        let resp = env
            .get(&format!("/connect/oauth2/authorize?{query}&sim_user=u1"))
            .await;
        assert_eq!(error_page(resp).await.0, want, "{query}");
    }
    // 128 bytes is fine.
    let ok = authorize(
        &env,
        "wx1",
        CALLBACK,
        Scope::SnsapiBase,
        &"Z".repeat(128),
        "&sim_user=u1",
    )
    .await;
    assert_eq!(ok.status(), 302);
}

#[tokio::test]
async fn unverified_or_subscription_account_shows_10005_page() {
    let env = Env::new().await;
    env.user("u1");
    env.account_with("wxu", |a| a.verified = false);
    env.account_with("wxs", |a| a.kind = wechat_sim::AccountKind::Subscription);
    for appid in ["wxu", "wxs"] {
        let resp = authorize(
            &env,
            appid,
            CALLBACK,
            Scope::SnsapiBase,
            "s",
            "&sim_user=u1",
        )
        .await;
        assert_eq!(error_page(resp).await.0, 10005, "{appid}");
    }
}

#[tokio::test]
async fn authorize_without_a_choice_shows_a_picker_listing_users() {
    let env = Env::new().await;
    setup(&env);
    env.user("u<2>");
    let resp = authorize(&env, "wx1", CALLBACK, Scope::SnsapiUserinfo, "s", "").await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("value=\"u1\""));
    assert!(page.contains("nick-u1"));
    assert!(page.contains("u&lt;2&gt;"), "user ids are HTML-escaped");
    assert!(!page.contains("u<2>"));
    assert!(page.contains("value=\"deny\""));
    assert!(page.contains("name=\"redirect_uri\" value=\"https://app.example/cb\""));
}

#[tokio::test]
async fn queued_authorization_answers_the_next_authorize() {
    let env = Env::new().await;
    setup(&env);
    env.sim()
        .queue_authorization(
            "wx1",
            NextAuthorization {
                user: "u1".into(),
                answer: AuthorizeAnswer::Deny,
            },
        )
        .unwrap();
    let resp = authorize(&env, "wx1", CALLBACK, Scope::SnsapiUserinfo, "q", "").await;
    assert_eq!(location(&resp), "https://app.example/cb?state=q");
    // The queue is consumed: the next one shows the picker.
    let resp = authorize(&env, "wx1", CALLBACK, Scope::SnsapiUserinfo, "q", "").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn snsapi_base_is_silent_even_when_the_user_would_deny() {
    let env = Env::new().await;
    setup(&env);
    // §4.1: snsapi_base shows no consent step, so there is nothing to refuse.
    let resp = authorize(
        &env,
        "wx1",
        CALLBACK,
        Scope::SnsapiBase,
        "st",
        "&sim_user=u1&sim_answer=deny",
    )
    .await;
    let loc = location(&resp);
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &code_of(&loc))
        .await
        .unwrap();
    assert_eq!(tok.scope, "snsapi_base");
    assert_eq!(tok.openid, env.sim().openid("wx1", "u1").unwrap());
    // A queued refusal is ignored the same way.
    env.sim()
        .queue_authorization(
            "wx1",
            NextAuthorization {
                user: "u1".into(),
                answer: AuthorizeAnswer::Deny,
            },
        )
        .unwrap();
    let resp = authorize(&env, "wx1", CALLBACK, Scope::SnsapiBase, "st", "").await;
    code_of(&location(&resp));
}

#[tokio::test]
async fn concurrent_exchanges_of_one_code_yield_exactly_one_success() {
    const N: usize = 16;
    let env = Env::new().await;
    setup(&env);
    let c = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    let url = env.url(&format!(
        "/sns/oauth2/access_token?appid=wx1&secret=secret-wx1&code={c}&grant_type=authorization_code"
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (http, url) = (env.http.clone(), url.clone());
        tasks.spawn(async move {
            let body: serde_json::Value = http.get(url).send().await?.json().await?;
            Ok::<_, reqwest::Error>(body)
        });
    }
    let mut codes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let body = done.unwrap().unwrap();
        codes.push(body["errcode"].as_i64().unwrap_or(0));
        if body["errcode"].is_null() {
            assert!(body["access_token"].is_string(), "{body}");
        }
    }
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 40163).count(),
        N - 1,
        "{codes:?}"
    );
}

#[tokio::test]
async fn expired_code_errcode_knob_answers_42003() {
    let env = Env::with(|c| c.expired_code_errcode = 42003).await;
    setup(&env);
    let c = code_for(&env, "wx1", Scope::SnsapiBase, "allow").await;
    env.advance(300);
    // Default: 40029 (code_older_than_300s_returns_40029).
    let err = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c)
        .await
        .unwrap_err();
    assert_eq!(code(err), 42003);
}

#[tokio::test]
async fn sns_minute_limits_answer_45011() {
    let env = Env::with(|c| {
        c.minute_limits.insert("/sns/oauth2/access_token".into(), 1);
    })
    .await;
    // The other two through the per-account override.
    env.account_with("wx1", |a| {
        a.minute_limits
            .insert("/sns/oauth2/refresh_token".into(), 1);
        a.minute_limits.insert("/sns/userinfo".into(), 1);
    });
    env.user("u1");
    let c1 = code_for(&env, "wx1", Scope::SnsapiUserinfo, "allow").await;
    let c2 = code_for(&env, "wx1", Scope::SnsapiUserinfo, "allow").await;
    let tok = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c1)
        .await
        .unwrap();
    let err = env
        .client
        .exchange_code("wx1", &secret("wx1"), &c2)
        .await
        .unwrap_err();
    assert_eq!(code(err), 45011, "sns/oauth2/access_token");
    env.client
        .sns_userinfo(&tok.access_token, &tok.openid, Lang::ZhCn)
        .await
        .unwrap();
    let err = env
        .client
        .sns_userinfo(&tok.access_token, &tok.openid, Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 45011, "sns/userinfo");
    env.client
        .refresh_oauth_token("wx1", &tok.refresh_token)
        .await
        .unwrap();
    let err = env
        .client
        .refresh_oauth_token("wx1", &tok.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(code(err), 45011, "sns/oauth2/refresh_token");
    // A new minute: c2 (still fresh and unused) exchanges fine.
    env.advance(60);
    env.client
        .exchange_code("wx1", &secret("wx1"), &c2)
        .await
        .unwrap();
}
