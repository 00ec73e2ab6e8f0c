//! §1 core token and §2 stable token rules.

use wechat::{AccessToken, Lang};

use crate::common::{Env, code, secret};

#[tokio::test]
async fn every_token_call_mints_a_new_7200s_token() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env.client.get_token("wx1", &secret("wx1")).await.unwrap();
    let b = env.client.get_token("wx1", &secret("wx1")).await.unwrap();
    assert_eq!(a.expires_in, 7200);
    assert_eq!(b.expires_in, 7200);
    assert_ne!(a.access_token, b.access_token);
    assert!(a.access_token.len() >= 100);
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/token").calls, 2);
}

#[tokio::test]
async fn old_token_works_300s_after_refetch_then_40001() {
    let env = Env::new().await;
    env.account("wx1");
    let old = env.token("wx1").await;
    env.advance(1000);
    let new = env.token("wx1").await;
    env.advance(299);
    env.client.callback_ips(&old).await.unwrap();
    env.client.callback_ips(&new).await.unwrap();
    env.advance(1);
    assert_eq!(
        code(env.client.callback_ips(&old).await.unwrap_err()),
        40001
    );
    env.client.callback_ips(&new).await.unwrap();
}

#[tokio::test]
async fn tokens_older_than_the_previous_die_at_refetch_with_40001() {
    let env = Env::new().await;
    env.account("wx1");
    let first = env.token("wx1").await;
    let second = env.token("wx1").await;
    let _third = env.token("wx1").await;
    assert_eq!(
        code(env.client.callback_ips(&first).await.unwrap_err()),
        40001
    );
    env.client.callback_ips(&second).await.unwrap();
}

#[tokio::test]
async fn token_past_7200s_returns_42001() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    env.advance(7199);
    env.client.callback_ips(&t).await.unwrap();
    env.advance(1);
    let err = env.client.callback_ips(&t).await.unwrap_err();
    assert_eq!(code(err), 42001);
}

#[tokio::test]
async fn garbage_token_returns_40014_and_missing_token_41001() {
    let env = Env::new().await;
    env.account("wx1");
    let err = env
        .client
        .callback_ips(&AccessToken::new("garbage"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40014);
    let body = env.get_json("/cgi-bin/getcallbackip").await;
    assert_eq!(body["errcode"], 41001);
    let forgotten = format!("86_{}", "A".repeat(150));
    let err = env
        .client
        .callback_ips(&AccessToken::new(forgotten))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40001);
}

#[tokio::test]
async fn missing_params_return_41002_41004_and_bad_grant_type_40002() {
    let env = Env::new().await;
    env.account("wx1");
    let cases = [
        (
            "/cgi-bin/token?grant_type=client_credential&secret=s",
            41002,
        ),
        (
            "/cgi-bin/token?grant_type=client_credential&appid=wx1",
            41004,
        ),
        (
            "/cgi-bin/token?grant_type=password&appid=wx1&secret=secret-wx1",
            40002,
        ),
        ("/cgi-bin/token?appid=wx1&secret=secret-wx1", 40002),
    ];
    for (path, want) in cases {
        let body = env.get_json(path).await;
        assert_eq!(body["errcode"], want, "{path}");
    }
}

#[tokio::test]
async fn unknown_appid_returns_40013() {
    let env = Env::new().await;
    assert_eq!(env.token_error("wxnone").await, 40013);
}

#[tokio::test]
async fn wrong_secret_returns_40125() {
    let env = Env::new().await;
    env.account("wx1");
    let err = env
        .client
        .get_token("wx1", &secret("other"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40125);
}

#[tokio::test]
async fn frozen_secret_returns_40243() {
    let env = Env::new().await;
    env.account_with("wx1", |a| a.secret_frozen = true);
    assert_eq!(env.token_error("wx1").await, 40243);
    assert_eq!(env.stable_token_error("wx1", false).await, 40243);
}

#[tokio::test]
async fn business_errors_are_http_200_json_with_rid_and_wechat_content_type() {
    let env = Env::new().await;
    let resp = env
        .get("/cgi-bin/token?grant_type=client_credential&appid=nobody&secret=x")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; encoding=utf-8"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], 40013);
    let msg = body["errmsg"].as_str().unwrap();
    assert!(msg.starts_with("invalid appid rid: "), "{msg}");
    let err = env
        .client
        .get_token("nobody", &secret("x"))
        .await
        .unwrap_err();
    match err {
        wechat::WechatError::Api { rid, .. } => assert!(rid.is_some()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn token_is_valid_only_for_its_own_account() {
    let env = Env::new().await;
    env.account("wxa");
    env.account("wxb");
    env.user("u1");
    let openid_b = env.sim().openid("wxb", "u1").unwrap();
    let token_a = env.token("wxa").await;
    let err = env
        .client
        .user_info(&token_a, &openid_b, Lang::ZhCn)
        .await
        .unwrap_err();
    assert_eq!(code(err), 40003);
}

#[tokio::test]
async fn stable_and_core_tokens_are_independent() {
    let env = Env::new().await;
    env.account("wx1");
    let stable = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    for _ in 0..3 {
        env.token("wx1").await;
    }
    env.client.callback_ips(&stable.access_token).await.unwrap();
    let core = env.token("wx1").await;
    env.client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    env.advance(31);
    env.client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    env.client.callback_ips(&core).await.unwrap();
}

#[tokio::test]
async fn stable_token_normal_mode_returns_same_token() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    env.advance(1000);
    let b = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    assert_eq!(a.access_token, b.access_token);
    assert_eq!(a.expires_in, 7200);
    assert_eq!(b.expires_in, 6200);
}

#[tokio::test]
async fn stable_token_rotates_in_last_300s_with_overlap() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    env.advance(6899);
    let same = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    assert_eq!(same.access_token, a.access_token);
    assert_eq!(same.expires_in, 301);
    env.advance(1);
    let b = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    assert_ne!(b.access_token, a.access_token);
    assert_eq!(b.expires_in, 7200);
    // Both work during the hand-over; the old one until its natural end.
    env.advance(299);
    env.client.callback_ips(&a.access_token).await.unwrap();
    env.client.callback_ips(&b.access_token).await.unwrap();
    env.advance(1);
    assert_eq!(
        code(env.client.callback_ips(&a.access_token).await.unwrap_err()),
        42001
    );
    env.client.callback_ips(&b.access_token).await.unwrap();
}

#[tokio::test]
async fn stable_force_refresh_invalidates_the_previous_stable_token() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    let b = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    assert_ne!(a.access_token, b.access_token);
    assert_eq!(
        code(env.client.callback_ips(&a.access_token).await.unwrap_err()),
        40001
    );
    env.client.callback_ips(&b.access_token).await.unwrap();
}

#[tokio::test]
async fn stable_force_within_30s_returns_current() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    env.advance(29);
    let b = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    assert_eq!(a.access_token, b.access_token);
    assert_eq!(b.expires_in, 7171);
    env.advance(1);
    let c = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    assert_ne!(c.access_token, a.access_token);
}

#[tokio::test]
async fn stable_force_21st_of_day_returns_45009() {
    let env = Env::new().await;
    env.account("wx1");
    for i in 0..20 {
        env.client
            .get_stable_token("wx1", &secret("wx1"), true)
            .await
            .unwrap_or_else(|e| panic!("force #{}: {e}", i + 1));
        env.advance(30);
    }
    assert_eq!(env.stable_token_error("wx1", true).await, 45009);
    // Normal mode still works.
    env.client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn stable_token_accepts_only_post_json() {
    let env = Env::new().await;
    env.account("wx1");
    let body = env
        .get_json("/cgi-bin/stable_token?grant_type=client_credential&appid=wx1&secret=secret-wx1")
        .await;
    assert_eq!(body["errcode"], 43002);
    let resp = env
        .http
        .post(env.url("/cgi-bin/stable_token"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errcode"], 47001);
    let body = env
        .post_json(
            "/cgi-bin/stable_token",
            serde_json::json!({"grant_type": "client_credential", "secret": "x"}),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(body["errcode"], 41002);
}

#[tokio::test]
async fn each_minted_token_counts_its_own_uses() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env.token("wx1").await;
    env.client.callback_ips(&a).await.unwrap();
    env.client.api_domain_ips(&a).await.unwrap();
    let b = env.token("wx1").await;
    env.client.callback_ips(&b).await.unwrap();
    let views = env.sim().tokens("wx1").unwrap();
    let use_of = |t: &AccessToken| {
        views
            .iter()
            .find(|v| v.access_token == t.expose())
            .map(|v| v.uses)
            .unwrap()
    };
    assert_eq!(use_of(&a), 2);
    assert_eq!(use_of(&b), 1);
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/token").ok, 2);
}

#[tokio::test]
async fn callback_ips_and_api_domain_ips_are_served() {
    let env = Env::with(|c| {
        c.callback_ips = vec!["101.89.47.18".into()];
        c.api_domain_ips = vec!["101.91.34.103".into(), "101.91.34.104".into()];
    })
    .await;
    env.account("wx1");
    let t = env.token("wx1").await;
    assert_eq!(
        env.client.callback_ips(&t).await.unwrap(),
        vec!["101.89.47.18"]
    );
    assert_eq!(env.client.api_domain_ips(&t).await.unwrap().len(), 2);
}

/// An account for the check-order tests: `wxw` with secret `secret-wxw`.
fn order_account(env: &Env, frozen: bool, whitelisted_out: bool, quota_spent: bool) {
    env.account_with("wxw", |a| {
        a.secret_frozen = frozen;
        if whitelisted_out {
            a.whitelist_mode = wechat_sim::WhitelistMode::Enforce;
            a.ip_whitelist = vec!["10.9.9.9".into()];
        }
        if quota_spent {
            a.daily_limits.insert("/cgi-bin/token".into(), 0);
            a.daily_limits.insert("/cgi-bin/stable_token".into(), 0);
        }
    });
}

async fn stable_raw(env: &Env, body: serde_json::Value) -> i64 {
    env.post_json("/cgi-bin/stable_token", body)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap()["errcode"]
        .as_i64()
        .unwrap_or(0)
}

/// WeChat's order: missing params → grant_type → unknown appid → wrong secret → IP whitelist
/// → frozen secret → quota. Each case sets the two adjacent conditions; the earlier wins.
#[tokio::test]
async fn check_order_earlier_condition_wins_for_each_adjacent_pair() {
    let env = Env::new().await;
    // Every later condition holds too: frozen, caller not whitelisted, quota spent.
    order_account(&env, true, true, true);
    let token = |q: &str| format!("/cgi-bin/token?{q}");
    let cases: [(&str, String, i64); 6] = [
        (
            "missing appid > bad grant_type",
            token("grant_type=password&secret=secret-wxw"),
            41002,
        ),
        (
            "missing secret > bad grant_type",
            token("grant_type=password&appid=wxw"),
            41004,
        ),
        (
            "bad grant_type > unknown appid",
            token("grant_type=password&appid=wxnone&secret=x"),
            40002,
        ),
        (
            "unknown appid > wrong secret",
            token("grant_type=client_credential&appid=wxnone&secret=wrong"),
            40013,
        ),
        (
            "wrong secret > IP whitelist",
            token("grant_type=client_credential&appid=wxw&secret=wrong"),
            40125,
        ),
        (
            "IP whitelist > frozen secret",
            token("grant_type=client_credential&appid=wxw&secret=secret-wxw"),
            40164,
        ),
    ];
    for (what, path, want) in cases {
        assert_eq!(env.get_json(&path).await["errcode"], want, "{what}");
    }
    // stable_token follows the same order.
    let stable = |appid: Option<&str>, secret: Option<&str>, grant: &str| {
        let mut b = serde_json::json!({"grant_type": grant});
        if let Some(a) = appid {
            b["appid"] = a.into();
        }
        if let Some(s) = secret {
            b["secret"] = s.into();
        }
        b
    };
    let stable_cases = [
        (
            "missing appid",
            stable(None, Some("secret-wxw"), "x"),
            41002,
        ),
        ("missing secret", stable(Some("wxw"), None, "x"), 41004),
        ("grant_type", stable(Some("wxnone"), Some("x"), "x"), 40002),
        (
            "unknown appid",
            stable(Some("wxnone"), Some("wrong"), "client_credential"),
            40013,
        ),
        (
            "wrong secret",
            stable(Some("wxw"), Some("wrong"), "client_credential"),
            40125,
        ),
        (
            "whitelist",
            stable(Some("wxw"), Some("secret-wxw"), "client_credential"),
            40164,
        ),
    ];
    for (what, body, want) in stable_cases {
        assert_eq!(stable_raw(&env, body).await, want, "stable_token: {what}");
    }
}

#[tokio::test]
async fn check_order_frozen_secret_wins_over_quota() {
    let env = Env::new().await;
    order_account(&env, true, false, true);
    assert_eq!(env.token_error("wxw").await, 40243);
    assert_eq!(env.stable_token_error("wxw", false).await, 40243);
    // Unfrozen, the quota is what remains.
    env.sim()
        .modify_account("wxw", |a| a.secret_frozen = false)
        .unwrap();
    assert_eq!(env.token_error("wxw").await, 45009);
}

#[tokio::test]
async fn frozen_account_from_a_non_whitelisted_ip_answers_40164() {
    let env = Env::new().await;
    order_account(&env, true, true, false);
    assert_eq!(env.token_error("wxw").await, 40164);
    // Whitelisting the caller reveals the frozen secret.
    env.sim()
        .modify_account("wxw", |a| a.ip_whitelist.push("127.0.0.1".into()))
        .unwrap();
    assert_eq!(env.token_error("wxw").await, 40243);
}

#[tokio::test]
async fn clear_quota_v2_checks_unknown_appid_then_secret_then_frozen() {
    let env = Env::new().await;
    order_account(&env, true, true, false);
    let err = env
        .client
        .clear_quota_v2("wxnone", &secret("wrong"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40013);
    let err = env
        .client
        .clear_quota_v2("wxw", &secret("wrong"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40125);
    // No IP whitelist on clear_quota/v2 (simulator's choice): the frozen secret answers.
    let err = env
        .client
        .clear_quota_v2("wxw", &secret("wxw"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40243);
    let body = env
        .post_json(
            "/cgi-bin/clear_quota/v2",
            serde_json::json!({"appsecret": "x"}),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(body["errcode"], 41002);
}

#[tokio::test]
async fn stable_force_refresh_that_is_not_a_boolean_returns_47001() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    for bad in [
        serde_json::json!("true"),
        serde_json::json!(1),
        serde_json::json!(null),
        serde_json::json!({}),
    ] {
        let body = serde_json::json!({
            "grant_type": "client_credential", "appid": "wx1", "secret": "secret-wx1",
            "force_refresh": bad,
        });
        let resp = env
            .post_json("/cgi-bin/stable_token", body)
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(resp["errcode"], 47001, "force_refresh = {bad}");
        assert!(
            resp["errmsg"]
                .as_str()
                .unwrap()
                .starts_with("data format error")
        );
    }
    // Nothing was forced: the stable token is unchanged and still valid.
    env.client.callback_ips(&a.access_token).await.unwrap();
    let b = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    assert_eq!(a.access_token, b.access_token);
}

#[tokio::test]
async fn older_tokens_keep_grace_knob_lets_older_tokens_finish_their_grace() {
    let env = Env::with(|c| c.older_tokens_keep_grace = true).await;
    env.account("wx1");
    let first = env.token("wx1").await;
    let _second = env.token("wx1").await;
    let _third = env.token("wx1").await;
    // Default: `first` would be dead now (see tokens_older_than_the_previous_die_at_refetch).
    env.client.callback_ips(&first).await.unwrap();
    env.advance(299);
    env.client.callback_ips(&first).await.unwrap();
    env.advance(1);
    assert_eq!(
        code(env.client.callback_ips(&first).await.unwrap_err()),
        40001
    );
}

#[tokio::test]
async fn stable_force_grace_knob_keeps_the_forced_out_token_working() {
    let env = Env::with(|c| c.stable_force_grace = std::time::Duration::from_secs(60)).await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    env.client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    // Default: 40001 at once (stable_force_refresh_invalidates_the_previous_stable_token).
    env.advance(59);
    env.client.callback_ips(&a.access_token).await.unwrap();
    env.advance(1);
    assert_eq!(
        code(env.client.callback_ips(&a.access_token).await.unwrap_err()),
        40001
    );
}

#[tokio::test]
async fn whitelist_on_stable_token_false_skips_the_whitelist_for_stable_token_only() {
    let env = Env::with(|c| c.whitelist_on_stable_token = false).await;
    env.account_with("wx1", |a| {
        a.whitelist_mode = wechat_sim::WhitelistMode::Enforce;
        a.ip_whitelist = vec!["10.1.2.3".into()];
    });
    // Default: 40164 (whitelist_enforce_returns_40164_naming_caller_ip).
    env.client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    assert_eq!(env.token_error("wx1").await, 40164);
}

#[tokio::test]
async fn stable_force_count_resets_the_next_day() {
    let env = Env::new().await;
    env.account("wx1");
    for _ in 0..20 {
        env.client
            .get_stable_token("wx1", &secret("wx1"), true)
            .await
            .unwrap();
        env.advance(30);
    }
    env.clock.set(crate::common::BEFORE_MIDNIGHT_CHINA + 59_000);
    let err = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap_err();
    assert_eq!(code(err), 45009, "23:59:59 is still the same day");
    env.advance(1); // 00:00 in Shanghai
    env.client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn clear_quota_keeps_the_30s_force_spacing() {
    let env = Env::new().await;
    env.account("wx1");
    let a = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    env.client
        .clear_quota_v2("wx1", &secret("wx1"))
        .await
        .unwrap();
    env.advance(10);
    let b = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    assert_eq!(a.access_token, b.access_token, "still within 30 s");
    env.advance(20);
    let c = env
        .client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
    assert_ne!(a.access_token, c.access_token);
}
