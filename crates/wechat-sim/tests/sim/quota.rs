//! §1 daily limit, §3.1–§3.3 quota tools, §1 IP whitelist.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use crate::common::{BEFORE_MIDNIGHT_CHINA, Env, code, secret};

fn limit_tokens(env: &Env, appid: &str, n: i64) {
    env.account_with(appid, |a| {
        a.daily_limits.insert("/cgi-bin/token".into(), n);
    });
}

#[tokio::test]
async fn token_quota_exhausted_returns_45009() {
    let env = Env::new().await;
    limit_tokens(&env, "wx1", 3);
    for _ in 0..3 {
        env.token("wx1").await;
    }
    assert_eq!(env.token_error("wx1").await, 45009);
}

#[tokio::test]
async fn default_token_quota_is_2000_per_day() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    let q = env
        .client
        .get_api_quota(&t, "/cgi-bin/token")
        .await
        .unwrap();
    assert_eq!(q.quota.daily_limit, 2000);
    assert_eq!(q.quota.used, 1);
    assert_eq!(q.quota.remain, 1999);
}

#[tokio::test]
async fn daily_quota_resets_at_midnight_china_time() {
    let env = Env::new().await;
    env.clock.set(BEFORE_MIDNIGHT_CHINA);
    limit_tokens(&env, "wx1", 2);
    env.token("wx1").await;
    env.token("wx1").await;
    env.advance(59);
    assert_eq!(env.token_error("wx1").await, 45009);
    env.advance(1); // 00:00:00 in Shanghai, 16:00 UTC
    env.token("wx1").await;
}

#[tokio::test]
async fn quota_reset_offset_is_configurable() {
    let env = Env::with(|c| c.quota_utc_offset_secs = 0).await;
    env.clock.set(BEFORE_MIDNIGHT_CHINA);
    limit_tokens(&env, "wx1", 1);
    env.token("wx1").await;
    env.advance(60); // midnight in Shanghai, but not in UTC
    assert_eq!(env.token_error("wx1").await, 45009);
    // The reset does happen at the configured midnight: 00:00 UTC.
    env.clock.set(UTC_MIDNIGHT_JAN_16 - 1000);
    let err = env
        .client
        .get_token("wx1", &secret("wx1"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 45009, "23:59:59 UTC is still the same day");
    env.advance(1);
    env.token("wx1").await;
}

/// 2026-01-16 00:00 UTC.
const UTC_MIDNIGHT_JAN_16: i64 = 1_768_521_600_000;
/// 2026-02-01 00:00 in Shanghai (2026-01-31 16:00 UTC).
const FEB_1_CHINA: i64 = 1_769_875_200_000;
/// 2026-02-01 00:00 UTC.
const FEB_1_UTC: i64 = 1_769_904_000_000;

#[tokio::test]
async fn clear_quota_month_boundary_is_the_1st_at_0000_in_the_configured_zone() {
    for (offset, new_month_at) in [(8 * 3600, FEB_1_CHINA), (0, FEB_1_UTC)] {
        let env = Env::with(|c| {
            c.quota_utc_offset_secs = offset;
            c.clear_quota_monthly_limit = 1;
        })
        .await;
        env.account("wx1");
        env.clock.set(new_month_at - 1000);
        env.client
            .clear_quota_v2("wx1", &secret("wx1"))
            .await
            .unwrap();
        let err = env
            .client
            .clear_quota_v2("wx1", &secret("wx1"))
            .await
            .unwrap_err();
        assert_eq!(code(err), 48006, "offset {offset}: still January");
        if offset == 0 {
            // 00:00 on Feb 1 in Shanghai is still January in UTC.
            env.clock.set(FEB_1_CHINA);
            let err = env
                .client
                .clear_quota_v2("wx1", &secret("wx1"))
                .await
                .unwrap_err();
            assert_eq!(code(err), 48006, "UTC: Feb 1 in Shanghai is January");
        }
        env.clock.set(new_month_at);
        env.client
            .clear_quota_v2("wx1", &secret("wx1"))
            .await
            .unwrap_or_else(|e| panic!("offset {offset}: a new month, a new budget: {e}"));
    }
}

#[tokio::test]
async fn quotas_of_other_paths_are_independent_of_cgi_bin_token() {
    let env = Env::new().await;
    env.account_with("wx1", |a| {
        a.daily_limits.insert("/cgi-bin/token".into(), 1);
        a.daily_limits.insert("/cgi-bin/getcallbackip".into(), 2);
    });
    let t = env.token("wx1").await;
    assert_eq!(
        code(
            env.client
                .get_token("wx1", &secret("wx1"))
                .await
                .unwrap_err()
        ),
        45009
    );
    // The exhausted token quota does not touch the other paths.
    env.client.callback_ips(&t).await.unwrap();
    env.client.api_domain_ips(&t).await.unwrap();
    env.client.callback_ips(&t).await.unwrap();
    assert_eq!(code(env.client.callback_ips(&t).await.unwrap_err()), 45009);
    // ... and exhausting getcallbackip leaves get_api_domain_ip and the counters of the others.
    env.client.api_domain_ips(&t).await.unwrap();
    let used = |path: &str| {
        env.sim()
            .quota("wx1")
            .unwrap()
            .into_iter()
            .find(|r| r.cgi_path == path)
            .unwrap()
            .used
    };
    assert_eq!(used("/cgi-bin/token"), 1);
    assert_eq!(used("/cgi-bin/getcallbackip"), 2);
    assert_eq!(used("/cgi-bin/get_api_domain_ip"), 2);
    assert_eq!(used("/cgi-bin/stable_token"), 0);
    env.client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn minute_limits_default_to_the_spec_values() {
    let cfg = wechat_sim::SimConfig::default();
    let limit = |p: &str| cfg.minute_limits.get(p).copied();
    assert_eq!(limit("/cgi-bin/stable_token"), Some(10_000));
    assert_eq!(limit("/sns/oauth2/access_token"), Some(50_000));
    assert_eq!(limit("/sns/oauth2/refresh_token"), Some(50_000));
    assert_eq!(limit("/sns/userinfo"), Some(50_000));
    assert_eq!(limit("/cgi-bin/token"), None);
}

#[tokio::test]
async fn stable_token_minute_limit_answers_45011_until_the_next_clock_minute() {
    let env = Env::new().await; // NOON_CHINA is on a minute boundary
    env.account_with("wx1", |a| {
        a.minute_limits.insert("/cgi-bin/stable_token".into(), 3);
    });
    for _ in 0..3 {
        env.client
            .get_stable_token("wx1", &secret("wx1"), false)
            .await
            .unwrap();
    }
    env.advance(59);
    let err = env
        .client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap_err();
    match &err {
        wechat::WechatError::Api { errmsg, .. } => assert_eq!(
            errmsg,
            "api minute-quota reach limit mostly 3 times per minute"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(code(err), 45011);
    // Other accounts and /cgi-bin/token are not limited.
    env.token("wx1").await;
    env.advance(1); // the next minute of the simulator clock
    env.client
        .get_stable_token("wx1", &secret("wx1"), false)
        .await
        .unwrap();
    // The minute counters are not daily quotas: the daily counter counted every success.
    let t = env.token("wx1").await;
    let q = env
        .client
        .get_api_quota(&t, "/cgi-bin/stable_token")
        .await
        .unwrap();
    assert_eq!(q.quota.used, 4);
}

#[tokio::test]
async fn quota_get_returns_rate_limits_the_client_decodes() {
    let env = Env::new().await;
    env.account_with("wx1", |a| {
        a.minute_limits.insert("/cgi-bin/user/get".into(), 77);
    });
    let t = env.token("wx1").await;
    let q = env
        .client
        .get_api_quota(&t, "/cgi-bin/stable_token")
        .await
        .unwrap();
    let rate = q.rate_limit.expect("rate_limit");
    assert_eq!((rate.call_count, rate.refresh_second), (10_000, 60));
    let comp = q.component_rate_limit.expect("component_rate_limit");
    assert_eq!((comp.call_count, comp.refresh_second), (10_000, 60));
    let q = env
        .client
        .get_api_quota(&t, "/cgi-bin/token")
        .await
        .unwrap();
    assert_eq!(q.rate_limit.unwrap().call_count, 0, "no minute limit");
    let q = env
        .client
        .get_api_quota(&t, "/cgi-bin/user/get")
        .await
        .unwrap();
    assert_eq!(q.rate_limit.unwrap().call_count, 77, "per-account override");
}

#[tokio::test]
async fn failed_calls_do_not_consume_quota_by_default() {
    let env = Env::new().await;
    limit_tokens(&env, "wx1", 1);
    for _ in 0..5 {
        let err = env
            .client
            .get_token("wx1", &secret("bad"))
            .await
            .unwrap_err();
        assert_eq!(code(err), 40125);
    }
    env.token("wx1").await;
}

#[tokio::test]
async fn failed_calls_consume_quota_when_configured() {
    let env = Env::with(|c| c.count_failed_calls = true).await;
    limit_tokens(&env, "wx1", 1);
    env.client
        .get_token("wx1", &secret("bad"))
        .await
        .unwrap_err();
    assert_eq!(env.token_error("wx1").await, 45009);
}

#[tokio::test]
async fn quota_get_unknown_path_76021_and_sns_path_76022() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    let err = env
        .client
        .get_api_quota(&t, "/cgi-bin/nope")
        .await
        .unwrap_err();
    assert_eq!(code(err), 76021);
    let err = env
        .client
        .get_api_quota(&t, "/sns/userinfo")
        .await
        .unwrap_err();
    assert_eq!(code(err), 76022);
    let body = env
        .post_json(
            &format!("/cgi-bin/openapi/quota/get?access_token={}", t.expose()),
            json!({"cgi_path": "cgi-bin/token"}),
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(body["errcode"], 76003);
}

#[tokio::test]
async fn clear_quota_restores_an_exhausted_quota() {
    let env = Env::new().await;
    limit_tokens(&env, "wx1", 2);
    let t = env.token("wx1").await;
    env.token("wx1").await;
    assert_eq!(
        code(
            env.client
                .get_token("wx1", &secret("wx1"))
                .await
                .unwrap_err()
        ),
        45009
    );
    // `t` was superseded, but still within its grace.
    env.client.clear_quota(&t, "wx1").await.unwrap();
    env.token("wx1").await;
}

#[tokio::test]
async fn clear_quota_for_another_appid_returns_40013() {
    let env = Env::new().await;
    env.account("wx1");
    env.account("wx2");
    let t = env.token("wx1").await;
    let err = env.client.clear_quota(&t, "wx2").await.unwrap_err();
    assert_eq!(code(err), 40013);
}

#[tokio::test]
async fn clear_quota_11th_in_month_returns_48006() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    for _ in 0..5 {
        env.client.clear_quota(&t, "wx1").await.unwrap();
    }
    // v2 shares the monthly budget (§3.3).
    for _ in 0..5 {
        env.client
            .clear_quota_v2("wx1", &secret("wx1"))
            .await
            .unwrap();
    }
    assert_eq!(
        code(env.client.clear_quota(&t, "wx1").await.unwrap_err()),
        48006
    );
    assert_eq!(
        code(
            env.client
                .clear_quota_v2("wx1", &secret("wx1"))
                .await
                .unwrap_err()
        ),
        48006
    );
    // February brings a new budget.
    env.advance(20 * 86_400);
    let t = env.token("wx1").await;
    env.client.clear_quota(&t, "wx1").await.unwrap();
}

#[tokio::test]
async fn clear_quota_v2_checks_the_secret() {
    let env = Env::new().await;
    env.account("wx1");
    let err = env
        .client
        .clear_quota_v2("wx1", &secret("bad"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40125);
    let err = env
        .client
        .clear_quota_v2("wxnone", &secret("x"))
        .await
        .unwrap_err();
    assert_eq!(code(err), 40013);
}

#[tokio::test]
async fn clear_quota_resets_the_stable_force_count() {
    let env = Env::new().await;
    env.account("wx1");
    for _ in 0..20 {
        env.client
            .get_stable_token("wx1", &secret("wx1"), true)
            .await
            .unwrap();
        env.advance(30);
    }
    assert_eq!(
        code(
            env.client
                .get_stable_token("wx1", &secret("wx1"), true)
                .await
                .unwrap_err()
        ),
        45009
    );
    env.client
        .clear_quota_v2("wx1", &secret("wx1"))
        .await
        .unwrap();
    env.client
        .get_stable_token("wx1", &secret("wx1"), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn whitelist_enforce_returns_40164_naming_caller_ip() {
    let env = Env::new().await;
    env.account_with("wx1", |a| {
        a.whitelist_mode = wechat_sim::WhitelistMode::Enforce;
        a.ip_whitelist = vec!["10.1.2.3".into()];
    });
    let err = env
        .client
        .get_token("wx1", &secret("wx1"))
        .await
        .unwrap_err();
    assert_eq!(err.caller_ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    match &err {
        wechat::WechatError::Api { errmsg, .. } => assert_eq!(
            errmsg,
            "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(code(err), 40164);
    // §12 item 7: stable_token enforces it too.
    assert_eq!(env.stable_token_error("wx1", false).await, 40164);
}

#[tokio::test]
async fn whitelisted_caller_gets_a_token() {
    let env = Env::new().await;
    env.account_with("wx1", |a| {
        a.whitelist_mode = wechat_sim::WhitelistMode::Enforce;
        a.ip_whitelist = vec!["10.1.2.3".into(), "127.0.0.1".into()];
    });
    env.token("wx1").await;
}

#[tokio::test]
async fn whitelist_confirm_returns_89503() {
    let env = Env::new().await;
    env.account_with("wx1", |a| {
        a.whitelist_mode = wechat_sim::WhitelistMode::Confirm
    });
    assert_eq!(env.token_error("wx1").await, 89503);
}
