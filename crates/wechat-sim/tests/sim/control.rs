//! The control API, bulk seeding, bounds and robustness.

use serde_json::json;
use wechat_sim::{AccountSpec, SimConfig, SimLimits, Simulator};

use crate::common::{Env, NOON_CHINA, code, secret};

#[tokio::test]
async fn bulk_seeding_10000_accounts_then_the_router_serves() {
    let env = Env::new().await;
    let specs =
        (0..10_000).map(|i| AccountSpec::new(format!("wx{i:05}"), format!("secret-wx{i:05}")));
    assert_eq!(env.sim().create_accounts(specs).unwrap(), 10_000);
    assert_eq!(env.sim().appids().len(), 10_000);
    env.token("wx09999").await;
    env.token("wx00000").await;
    let health = env.get_json("/__sim/health").await;
    assert_eq!(health["ok"], true);
}

#[tokio::test]
async fn accounts_and_users_can_be_managed_over_http() {
    let env = Env::new().await;
    let resp = env
        .post_json(
            "/__sim/accounts",
            json!({"appid": "wxh", "secret": "secret-wxh", "oauth_domain": "app.example"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    env.token("wxh").await;
    let dup = env
        .post_json("/__sim/accounts", json!({"appid": "wxh", "secret": "x"}))
        .await;
    assert_eq!(dup.status(), 409);
    let resp = env
        .http
        .patch(env.url("/__sim/accounts/wxh"))
        .json(&json!({"secret_frozen": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        code(
            env.client
                .get_token("wxh", &secret("wxh"))
                .await
                .unwrap_err()
        ),
        40243
    );
    let acct = env.get_json("/__sim/accounts/wxh").await;
    assert_eq!(acct["secret_frozen"], true);
    assert_eq!(acct["oauth_domain"], "app.example");

    let resp = env
        .post_json("/__sim/users", json!({"id": "u1", "nickname": "Ann"}))
        .await;
    assert_eq!(resp.status(), 201);
    let openid = env.get_json("/__sim/accounts/wxh/users/u1/openid").await;
    assert!(openid["openid"].as_str().unwrap().starts_with('o'));
    let resp = env
        .post_json(
            "/__sim/accounts/wxh/users/u1/follow",
            json!({"push": false}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let followers = env.get_json("/__sim/accounts/wxh/followers").await;
    assert_eq!(followers.as_array().unwrap().len(), 1);

    let counters = env
        .get_json("/__sim/counters?appid=wxh&endpoint=/cgi-bin/token")
        .await;
    assert_eq!(counters[0]["calls"], 2);
    assert_eq!(counters[0]["ok"], 1);
    let calls = env.get_json("/__sim/calls?appid=wxh").await;
    assert_eq!(calls.as_array().unwrap().len(), 2);
    let tokens = env.get_json("/__sim/accounts/wxh/tokens").await;
    assert_eq!(tokens[0]["uses"], 0);
    let quota = env.get_json("/__sim/accounts/wxh/quota").await;
    assert!(
        quota
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["cgi_path"] == "/cgi-bin/token" && r["used"] == 1)
    );

    let del = env
        .http
        .delete(env.url("/__sim/accounts/wxh"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(
        code(
            env.client
                .get_token("wxh", &secret("wxh"))
                .await
                .unwrap_err()
        ),
        40013
    );
}

#[tokio::test]
async fn control_clock_moves_token_lifetimes() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    let clock = env.get_json("/__sim/clock").await;
    assert_eq!(clock["now_ms"], NOON_CHINA);
    assert_eq!(clock["manual"], true);
    let moved = env
        .post_json("/__sim/clock/advance", json!({"secs": 7200}))
        .await;
    assert_eq!(moved.status(), 200);
    assert_eq!(code(env.client.callback_ips(&t).await.unwrap_err()), 42001);
    let set = env
        .post_json("/__sim/clock/set", json!({"now_ms": NOON_CHINA + 1000}))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(set["now_ms"], NOON_CHINA + 1000);
    env.client.callback_ips(&t).await.unwrap();
}

#[tokio::test]
async fn system_clock_cannot_be_moved() {
    let sim = Simulator::new(SimConfig::default());
    assert!(
        sim.advance_clock(std::time::Duration::from_secs(1))
            .is_err()
    );
}

#[tokio::test]
async fn call_log_is_a_bounded_ring_but_counters_keep_counting() {
    let env = Env::with(|c| {
        c.limits = SimLimits {
            call_log: 5,
            ..SimLimits::default()
        }
    })
    .await;
    env.account("wx1");
    for _ in 0..12 {
        env.token("wx1").await;
    }
    let calls = env.sim().calls(None, None, 100);
    assert_eq!(calls.len(), 5);
    assert_eq!(calls.last().unwrap().seq, 12);
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/token").calls, 12);
    // Tokens per account are bounded too.
    assert!(env.sim().tokens("wx1").unwrap().len() <= SimLimits::default().tokens_per_account);
}

#[tokio::test]
async fn account_cap_is_enforced() {
    let env = Env::with(|c| c.limits.max_accounts = 2).await;
    env.account("wx1");
    env.account("wx2");
    let err = env
        .sim()
        .create_account(AccountSpec::new("wx3", "s"))
        .unwrap_err();
    assert!(matches!(err, wechat_sim::SimError::Capacity { .. }));
}

#[tokio::test]
async fn invalid_account_specs_are_refused() {
    let env = Env::new().await;
    let mut safe = AccountSpec::new("wx1", "s");
    safe.push_mode = wechat_sim::PushMode::Safe;
    assert!(
        env.sim().create_account(safe).is_err(),
        "safe mode needs a key"
    );
    let mut bad_key = AccountSpec::new("wx1", "s");
    bad_key.encoding_aes_key = Some("short".into());
    assert!(env.sim().create_account(bad_key).is_err());
    let resp = env
        .post_json("/__sim/accounts", json!({"appid": "wx1"}))
        .await;
    assert_eq!(resp.status(), 422);
    let resp = env
        .http
        .post(env.url("/__sim/accounts"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "invalid");
}

#[tokio::test]
async fn reset_forgets_everything() {
    let env = Env::new().await;
    env.account("wx1");
    env.token("wx1").await;
    let resp = env.http.post(env.url("/__sim/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(env.sim().appids().is_empty());
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/token").calls, 0);
}

#[tokio::test]
async fn no_input_produces_a_5xx_or_a_panic() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    let tok = t.expose().to_owned();
    let paths = [
        "/cgi-bin/token",
        "/cgi-bin/stable_token",
        "/cgi-bin/openapi/quota/get",
        "/cgi-bin/clear_quota",
        "/cgi-bin/clear_quota/v2",
        "/cgi-bin/getcallbackip",
        "/cgi-bin/get_api_domain_ip",
        "/cgi-bin/user/info",
        "/cgi-bin/user/info/batchget",
        "/cgi-bin/user/get",
        "/connect/oauth2/authorize",
        "/sns/oauth2/access_token",
        "/sns/oauth2/refresh_token",
        "/sns/auth",
        "/sns/userinfo",
        "/nope",
        "/__sim/accounts/wx1/users/nobody/follow",
        "/__sim/faults",
        "/__sim/clock/advance",
        "/__sim/deliveries/abc",
    ];
    let queries = [
        String::new(),
        format!("?access_token={tok}"),
        format!("?access_token={tok}&openid=%FF%FE&next_openid=\u{0}"),
        "?appid=wx1&secret=secret-wx1&grant_type=client_credential&code=x&redirect_uri=%%%".into(),
        "?appid=wx1&redirect_uri=https%3A%2F%2F%5B%3A%3A1&scope=snsapi_base&response_type=code"
            .into(),
    ];
    let bodies: [&[u8]; 5] = [
        b"",
        b"{",
        b"[1,2]",
        b"{\"user_list\":\"x\",\"cgi_path\":5,\"appid\":[]}",
        &[0xff, 0xfe, 0x00],
    ];
    for path in paths {
        for q in &queries {
            for body in bodies {
                for method in [
                    reqwest::Method::GET,
                    reqwest::Method::POST,
                    reqwest::Method::PUT,
                ] {
                    let resp = env
                        .http
                        .request(method.clone(), env.url(&format!("{path}{q}")))
                        .body(body.to_vec())
                        .send()
                        .await
                        .unwrap();
                    assert!(
                        !resp.status().is_server_error(),
                        "{method} {path}{q} gave {}",
                        resp.status()
                    );
                }
            }
        }
    }
    // Still alive and consistent (the fuzzing minted tokens, so fetch a fresh one).
    let t = env.token("wx1").await;
    env.client.callback_ips(&t).await.unwrap();
}

#[tokio::test]
async fn extreme_clock_values_are_refused_without_panic_or_5xx() {
    let env = Env::new().await;
    env.account("wx1");
    let refused = [
        ("/__sim/clock/set", json!({"now_ms": i64::MAX})),
        ("/__sim/clock/set", json!({"now_ms": i64::MIN})),
        ("/__sim/clock/set", json!({"now_ms": 0})),
        ("/__sim/clock/set", json!({"now_ms": -1})),
        (
            "/__sim/clock/set",
            json!({"now_ms": wechat_sim::MAX_CLOCK_MS + 1}),
        ),
        ("/__sim/clock/advance", json!({"secs": u64::MAX})),
        ("/__sim/clock/advance", json!({"ms": u64::MAX})),
        (
            "/__sim/clock/advance",
            json!({"secs": u64::MAX, "ms": u64::MAX}),
        ),
        (
            "/__sim/clock/advance",
            json!({"secs": 200u64 * 366 * 86_400}),
        ),
    ];
    for (path, body) in refused {
        let resp = env.post_json(path, body.clone()).await;
        assert_eq!(resp.status(), 422, "{path} {body}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["kind"], "invalid");
        assert!(err["error"].as_str().unwrap().contains("2000..=2200"));
    }
    // Numbers that are not even i64/u64 are a JSON error, also 422.
    let resp = env
        .http
        .post(env.url("/__sim/clock/set"))
        .body(r#"{"now_ms": 1e300}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(env.sim().now_ms(), NOON_CHINA, "nothing moved");
    // The bounds themselves are accepted, and the simulator works there.
    for edge in [wechat_sim::MIN_CLOCK_MS, wechat_sim::MAX_CLOCK_MS] {
        let resp = env
            .post_json("/__sim/clock/set", json!({"now_ms": edge}))
            .await;
        assert_eq!(resp.status(), 200);
        let t = env.token("wx1").await;
        env.client.callback_ips(&t).await.unwrap();
        env.client
            .get_stable_token("wx1", &secret("wx1"), true)
            .await
            .unwrap();
    }
    let resp = env
        .post_json("/__sim/clock/advance", json!({"ms": 1}))
        .await;
    assert_eq!(resp.status(), 422, "past the end of 2200");
}

#[tokio::test]
async fn a_shared_clock_moved_to_extremes_is_read_clamped_without_panic() {
    let env = Env::new().await;
    env.account("wx1");
    env.user("u1");
    for extreme in [i64::MAX, i64::MIN] {
        env.clock.set(extreme); // bypasses the control API
        let clamped = env.get_json("/__sim/clock").await["now_ms"]
            .as_i64()
            .unwrap();
        assert!(
            (wechat_sim::MIN_CLOCK_MS..=wechat_sim::MAX_CLOCK_MS).contains(&clamped),
            "{clamped}"
        );
        let t = env.token("wx1").await;
        env.client.callback_ips(&t).await.unwrap();
        env.client
            .get_stable_token("wx1", &secret("wx1"), true)
            .await
            .unwrap();
        env.client
            .get_api_quota(&t, "/cgi-bin/token")
            .await
            .unwrap();
        let resp = env
            .get(
                "/connect/oauth2/authorize?appid=wx1&redirect_uri=https%3A%2F%2Fapp.example%2Fcb\
                 &response_type=code&scope=snsapi_userinfo&state=s&sim_user=u1",
            )
            .await;
        assert_eq!(resp.status(), 302);
        let resp = env
            .post_json("/__sim/clock/advance", json!({"secs": 1}))
            .await;
        assert!(!resp.status().is_server_error());
    }
}

#[tokio::test]
async fn unknown_appids_are_counted_under_the_empty_appid() {
    let env = Env::new().await;
    env.account("wx1");
    for i in 0..50 {
        env.get_json(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid=wxnobody{i}&secret=x"
        ))
        .await;
        env.post_json(
            "/cgi-bin/stable_token",
            json!({"grant_type": "client_credential", "appid": format!("wxghost{i}"), "secret": "x"}),
        )
        .await;
    }
    // A fault answering for an unknown appid is recorded under "" too.
    env.sim()
        .add_fault(wechat_sim::FaultSpec {
            endpoint: Some("/cgi-bin/token".into()),
            appid: Some("wxfaulty".into()),
            action: wechat_sim::FaultAction::Errcode {
                code: -1,
                errmsg: None,
            },
            next: Some(1),
            rate: None,
        })
        .unwrap();
    let body = env
        .get_json("/cgi-bin/token?grant_type=client_credential&appid=wxfaulty&secret=x")
        .await;
    assert_eq!(body["errcode"], -1);
    env.token("wx1").await;
    let rows = env.sim().counters(None, None);
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.appid.as_str(), r.endpoint.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("", "/cgi-bin/stable_token"),
            ("", "/cgi-bin/token"),
            ("wx1", "/cgi-bin/token"),
        ]
    );
    assert_eq!(env.sim().counter("", "/cgi-bin/token").calls, 51);
    assert!(env.sim().calls(Some("wxnobody3"), None, 100).is_empty());
}

#[tokio::test]
async fn deleting_an_account_drops_its_counters() {
    let env = Env::new().await;
    env.account("wx1");
    env.account("wx2");
    env.token("wx1").await;
    env.token("wx2").await;
    env.sim().delete_account("wx1").unwrap();
    assert!(env.sim().counters(Some("wx1"), None).is_empty());
    assert_eq!(env.sim().counter("wx2", "/cgi-bin/token").calls, 1);
    // Calls naming the deleted account do not bring its counters back.
    env.client
        .get_token("wx1", &secret("wx1"))
        .await
        .unwrap_err();
    assert!(env.sim().counters(Some("wx1"), None).is_empty());
    assert_eq!(env.sim().counter("", "/cgi-bin/token").calls, 1);
}

#[tokio::test]
async fn fault_rules_are_capped() {
    let env = Env::with(|c| c.limits.max_faults = 2).await;
    let spec = json!({"action": {"kind": "drop"}, "rate": 0.0});
    for _ in 0..2 {
        assert_eq!(
            env.post_json("/__sim/faults", spec.clone()).await.status(),
            201
        );
    }
    let resp = env.post_json("/__sim/faults", spec.clone()).await;
    assert_eq!(resp.status(), 507);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "capacity");
    assert_eq!(env.sim().faults().len(), 2);
    env.sim().clear_faults();
    assert_eq!(env.post_json("/__sim/faults", spec).await.status(), 201);
}

#[tokio::test]
async fn push_token_must_be_3_to_32_alphanumerics_when_push_url_is_set() {
    let env = Env::new().await;
    let with = |token: &str| {
        let mut a = AccountSpec::new("wxp", "s");
        a.push_url = Some("http://127.0.0.1:9/push".into());
        a.push_token = token.into();
        a
    };
    for bad in ["", "ab", &"a".repeat(33), "bad-token", "tök"] {
        let err = env.sim().create_account(with(bad)).unwrap_err();
        assert!(
            matches!(&err, wechat_sim::SimError::Invalid { reason } if reason.contains("push_token")),
            "{bad:?}: {err:?}"
        );
    }
    env.sim().create_account(with("abc")).unwrap();
    env.sim().delete_account("wxp").unwrap();
    env.sim().create_account(with(&"Z9".repeat(16))).unwrap();
    // Over HTTP: 422, for creation and for a patch that sets push_url without a token.
    let resp = env
        .post_json(
            "/__sim/accounts",
            json!({"appid": "wxq", "secret": "s", "push_url": "http://127.0.0.1:9/p"}),
        )
        .await;
    assert_eq!(resp.status(), 422);
    env.sim()
        .create_account(AccountSpec::new("wxr", "s"))
        .unwrap();
    let resp = env
        .http
        .patch(env.url("/__sim/accounts/wxr"))
        .json(&json!({"push_url": "http://127.0.0.1:9/p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    // Without a push URL the token is not needed.
    assert_eq!(env.sim().account("wxr").unwrap().push_token, "");
}

#[tokio::test]
async fn token_views_do_not_print_the_token_in_debug() {
    let env = Env::new().await;
    env.account("wx1");
    let t = env.token("wx1").await;
    let views = env.sim().tokens("wx1").unwrap();
    let shown = format!("{views:?}");
    assert!(!shown.contains(t.expose()), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[tokio::test]
async fn phone_page_follows_and_unfollows_with_a_click() {
    let env = Env::new().await;
    env.account("wxphone");
    env.user("ann");
    let page = env.get("/__sim/phone").await.text().await.unwrap();
    assert!(page.contains("nick-ann"), "{page}");
    assert!(page.contains("未关注 not following"), "{page}");

    let resp = env
        .http
        .post(env.url("/__sim/phone/follow"))
        .form(&[("appid", "wxphone"), ("user", "ann")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    // Resolved as a browser does, against the form's address.
    let back = resp
        .url()
        .join(resp.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(back.path(), "/__sim/phone", "{back}");
    assert!(back.query().unwrap().starts_with("done="), "{back}");
    let followers = env.sim().followers("wxphone").unwrap();
    assert_eq!(followers.len(), 1);
    assert_eq!(followers[0].user, "ann");
    let page = env
        .http
        .get(back)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("已关注 following"), "{page}");
    assert!(page.contains("no push URL"), "{page}");

    env.http
        .post(env.url("/__sim/phone/unfollow"))
        .form(&[("appid", "wxphone"), ("user", "ann")])
        .send()
        .await
        .unwrap();
    assert!(env.sim().followers("wxphone").unwrap().is_empty());
}

#[tokio::test]
async fn phone_page_chats_with_the_account_by_text_and_menu_click() {
    // The account's server: a bot that answers every text and click with a passive reply.
    let bot = axum::Router::new().route(
        "/push",
        axum::routing::post(|body: String| async move {
            let msg = wechat::xml::parse_message(body.as_bytes()).unwrap();
            let said = match msg.event_key() {
                Some(key) => format!("menu {key}"),
                None => msg.fields.get("Content").unwrap_or_default().to_owned(),
            };
            msg.text_reply(&format!("echo: {said}"), msg.create_time)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_url = format!("http://{}/push", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, bot).await.unwrap() });
    let env = Env::new().await;
    env.account_with("wxchat", |spec| {
        spec.push_url = Some(push_url);
        spec.push_token = "chattoken".into();
        spec.push_mode = wechat_sim::PushMode::Plain;
    });
    env.user("ann");
    env.sim()
        .follow("wxchat", "ann", Default::default())
        .await
        .unwrap();
    for (path, field, value) in [
        ("/__sim/phone/text", "content", "hello"),
        ("/__sim/phone/click", "key", "menu_help"),
    ] {
        let resp = env
            .http
            .post(env.url(path))
            .form(&[("appid", "wxchat"), ("user", "ann"), (field, value)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
    }
    let page = env.get("/__sim/phone").await.text().await.unwrap();
    for line in [
        "<p class=\"me\">hello</p>",
        "<p class=\"bot\">echo: hello</p>",
        "<p class=\"me\">[菜单 menu] menu_help</p>",
        "<p class=\"bot\">echo: menu menu_help</p>",
        "action=\"phone/text\"",
        "action=\"phone/click\"",
    ] {
        assert!(page.contains(line), "{line} in\n{page}");
    }
    let clicks: Vec<_> = env
        .sim()
        .deliveries(Some("wxchat"))
        .into_iter()
        .filter(|d| d.event == "CLICK")
        .collect();
    assert_eq!(clicks.len(), 1);
    assert!(
        clicks[0]
            .message_xml
            .contains("<Event><![CDATA[CLICK]]></Event>")
    );
    server.abort();
}
