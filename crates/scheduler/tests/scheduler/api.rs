//! The token API and the proxy over real HTTP, against the simulator, on SQLite.

use reqwest::StatusCode;
use serde_json::Value;
use store::accounts::TokenMode;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::{Acct, Hub};

struct Api {
    hub: Hub,
    base: String,
    http: reqwest::Client,
    a: Acct,
    b: Acct,
    key_a: String,
    key_b: String,
    key_a_id: String,
}

async fn api_with(config: impl FnOnce(&mut scheduler::SchedulerConfig)) -> Api {
    let hub = Hub::sqlite().await;
    let mut accounts = hub.accounts(0, 2, TokenMode::Token).await;
    let b = accounts.pop().unwrap();
    let a = accounts.pop().unwrap();
    let mut cfg = Hub::config(20);
    config(&mut cfg);
    let service = hub.service(cfg).await;
    let mut keys = Vec::new();
    for acct in [&a, &b] {
        let key = crate::common::api_key();
        let record = hub
            .store
            .create_api_key(
                &store::api_keys::NewApiKey::with_all_scopes(&acct.id, &key.hash, "test"),
                hub.now(),
                &store::audit::AuditRecord::new("test", "api_key.create"),
            )
            .await
            .unwrap();
        keys.push((key.secret.expose().to_owned(), record.id));
    }
    let base = crate::common::serve(service.clone()).await;
    let (key_b, _) = keys.pop().unwrap();
    let (key_a, key_a_id) = keys.pop().unwrap();
    Api {
        hub,
        base,
        http: reqwest::Client::new(),
        a,
        b,
        key_a,
        key_b,
        key_a_id,
    }
}

async fn api() -> Api {
    api_with(|_| {}).await
}

impl Api {
    fn url(&self, appid: &str, rest: &str) -> String {
        format!("{}/api/v1/accounts/{appid}/{rest}", self.base)
    }

    async fn get_token(&self, appid: &str, key: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.url(appid, "access_token"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_api_serves_the_current_token_to_the_accounts_key() {
    let api = api().await;
    let (status, body) = api.get_token(&api.a.appid, &api.key_a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert!(api.hub.accepted(&api.a.appid, token));
    assert_eq!(body["expires_in"], 7200);
    assert!(body["generation"].as_i64().unwrap() >= 1);
    assert!(body["expires_at"].as_i64().unwrap() > api.hub.now());
    // Served from memory: asking again fetches nothing.
    let (_, again) = api.get_token(&api.a.appid, &api.key_a).await;
    assert_eq!(again["access_token"], body["access_token"]);
    assert_eq!(api.hub.fetches(&api.a.appid), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fake_keys_gets_429_while_a_verified_key_keeps_reading() {
    let api = api_with(|c| {
        c.unknown_keys_per_ip = scheduler::limits::Rate {
            burst: 3,
            every: std::time::Duration::from_secs(10),
        };
    })
    .await;
    // The real key's first use is one of the address's three lookups.
    let (status, _) = api.get_token(&api.a.appid, &api.key_a).await;
    assert_eq!(status, StatusCode::OK);
    for n in 0..2 {
        let fake = format!("wxk_{}", format!("{n}").repeat(43));
        let (status, _) = api.get_token(&api.a.appid, &fake).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let flood = api
        .http
        .get(api.url(&api.a.appid, "access_token"))
        .bearer_auth(format!("wxk_{}", "Z".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(flood.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(flood.headers()["retry-after"], "10");
    let body: Value = flood.json().await.unwrap();
    assert_eq!(body["error"], "too_many_unknown_keys");
    // Past the cache's lifetime the verified key is looked up again, and is not limited.
    api.hub
        .clock
        .advance(scheduler::SchedulerConfig::default().api_key_cache_ttl * 2);
    let (status, body) = api.get_token(&api.a.appid, &api.key_a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Once the address's allowance refills, keys are looked up again.
    api.hub.clock.advance(std::time::Duration::from_secs(10));
    let (status, _) = api.get_token(&api.b.appid, &api.key_b).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_foreign_and_revoked_keys_and_unknown_appids_get_the_same_401() {
    let api = api().await;
    let (status, reference) = api.get_token(&api.a.appid, "wxk_nonsense").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reference["error"], "unauthorized");
    let forged = format!("wxk_{}", "A".repeat(43));
    let cases = [
        (api.a.appid.clone(), forged.clone()),
        // B's key for A's account.
        (api.a.appid.clone(), api.key_b.clone()),
        // A valid key for an appid that does not exist.
        ("wx00000000deadbeef".to_owned(), api.key_a.clone()),
        (api.a.appid.clone(), String::new()),
    ];
    for (appid, key) in &cases {
        let (status, body) = api.get_token(appid, key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{appid}");
        assert_eq!(body, reference, "{appid}: the answer must not differ");
    }
    let no_header = api
        .http
        .get(api.url(&api.a.appid, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), StatusCode::UNAUTHORIZED);
    // The proxy and the report refuse the same way.
    let proxied = api
        .http
        .get(api.url(&api.a.appid, "wechat/cgi-bin/getcallbackip"))
        .bearer_auth(&api.key_b)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::UNAUTHORIZED);
    // Revoked: refused once the cache entry is gone (the change feed drops it within a
    // second on every replica; the cache's time-to-live is the last resort).
    assert_eq!(
        api.get_token(&api.a.appid, &api.key_a).await.0,
        StatusCode::OK
    );
    assert!(
        api.hub
            .store
            .revoke_api_key(
                &api.a.id,
                &api.key_a_id,
                api.hub.now(),
                &store::audit::AuditRecord::new("test", "api_key.revoke")
            )
            .await
            .unwrap()
    );
    api.hub.advance(11);
    assert_eq!(
        api.get_token(&api.a.appid, &api.key_a).await.0,
        StatusCode::UNAUTHORIZED
    );
    // …and on a replica that did not revoke it, once its cache entry ages out.
    let other = api.hub.service(crate::common::Hub::config(21)).await;
    let key = crate::common::api_key();
    let record = api
        .hub
        .store
        .create_api_key(
            &store::api_keys::NewApiKey::with_all_scopes(&api.b.id, &key.hash, "second"),
            api.hub.now(),
            &store::audit::AuditRecord::new("test", "api_key.create"),
        )
        .await
        .unwrap();
    let other_base = crate::common::serve(other.clone()).await;
    let get = |base: String| {
        let http = api.http.clone();
        let key = key.secret.expose().to_owned();
        let appid = api.b.appid.clone();
        async move {
            http.get(format!("{base}/api/v1/accounts/{appid}/access_token"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(other_base.clone()).await, StatusCode::OK);
    api.hub
        .store
        .revoke_api_key(
            &api.b.id,
            &record.id,
            api.hub.now(),
            &store::audit::AuditRecord::new("test", "api_key.revoke"),
        )
        .await
        .unwrap();
    api.hub.advance(11);
    assert_eq!(get(other_base).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_report_refreshes_the_current_token_once_and_returns_the_new_one() {
    let api = api_with(|c| c.reports_per_key_per_hour = 3).await;
    let (_, first) = api.get_token(&api.a.appid, &api.key_a).await;
    api.hub.advance(120);
    let report = |token: Value| {
        api.http
            .post(api.url(&api.a.appid, "access_token/invalid"))
            .bearer_auth(&api.key_a)
            .json(&serde_json::json!({ "access_token": token }))
            .send()
    };
    let outcome = |response: &reqwest::Response| {
        response.headers()["x-wxhub-report"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // The token works: WeChat says so, and it comes back unchanged.
    let response = report(first["access_token"].clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(outcome(&response), "still_accepted");
    let same: Value = response.json().await.unwrap();
    assert_eq!(same["access_token"], first["access_token"]);
    assert_eq!(api.hub.fetches(&api.a.appid), (1, 1));

    // Something outside wxhub fetched a token: now WeChat rejects it, and it is replaced.
    api.hub.supersede_outside(&api.a).await;
    let response = report(first["access_token"].clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(outcome(&response), "refreshed");
    let second: Value = response.json().await.unwrap();
    assert_ne!(second["access_token"], first["access_token"]);
    assert!(second["generation"].as_i64() > first["generation"].as_i64());
    // The stale token again: the current one comes back without a fetch or a question.
    let response = report(first["access_token"].clone()).await.unwrap();
    assert_eq!(outcome(&response), "already_replaced");
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["access_token"], second["access_token"]);
    assert_eq!(api.hub.fetches(&api.a.appid), (3, 3));
    assert_eq!(api.hub.confirmations(&api.a.appid), 2);
    // The brand-new token reported at once, and WeChat rejects it: 429 with Retry-After.
    api.hub.confirmations_reject(&api.a.appid, Some(1));
    let limited = report(second["access_token"].clone()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "refresh_rate_limited");
    // That was this key's third question to WeChat this hour: the fourth is refused.
    api.hub.advance(11);
    let capped = report(second["access_token"].clone()).await.unwrap();
    assert_eq!(capped.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: i64 = capped.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = capped.json().await.unwrap();
    assert_eq!(body["error"], "too_many_reports");
    assert_eq!(api.hub.confirmations(&api.a.appid), 3);
    // A body that is not the report shape.
    let bad = api
        .http
        .post(api.url(&api.a.appid, "access_token/invalid"))
        .bearer_auth(&api.key_a)
        .body("{\"token\": \"SECRET-LOOKING\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(!bad.text().await.unwrap().contains("SECRET-LOOKING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_injects_the_token_and_retries_exactly_once_on_a_rejected_token() {
    let api = api().await;
    let ips = "/cgi-bin/getcallbackip";
    let call = || {
        api.http
            .get(api.url(&api.a.appid, "wechat/cgi-bin/getcallbackip?lang=zh_CN"))
            .bearer_auth(&api.key_a)
            .send()
    };
    let ok = call().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().get("x-wxhub-retried").is_none());
    let body: Value = ok.json().await.unwrap();
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(api.hub.sim().counter(&api.a.appid, ips).calls, 1);

    // WeChat rejects the token once: refresh, retry once, success.
    api.hub.advance(120);
    let rule = |next| FaultSpec {
        endpoint: Some(ips.into()),
        appid: None,
        action: FaultAction::Errcode {
            code: 40001,
            errmsg: None,
        },
        next: Some(next),
        rate: None,
    };
    api.hub.sim().add_fault(rule(1)).unwrap();
    let retried = call().await.unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    assert_eq!(retried.headers()["x-wxhub-retried"], "1");
    let body: Value = retried.json().await.unwrap();
    assert!(body["ip_list"].is_array(), "{body}");
    assert_eq!(api.hub.sim().counter(&api.a.appid, ips).calls, 3);
    assert_eq!(api.hub.fetches(&api.a.appid), (2, 2));

    // Rejected twice: exactly one retry, then WeChat's answer is passed on.
    api.hub.advance(120);
    api.hub.sim().add_fault(rule(5)).unwrap();
    let failed = call().await.unwrap();
    assert_eq!(failed.status(), StatusCode::OK);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["errcode"], 40001);
    assert_eq!(api.hub.sim().counter(&api.a.appid, ips).calls, 5);
    assert_eq!(api.hub.fetches(&api.a.appid), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_passes_post_bodies_and_refuses_paths_outside_the_wechat_api() {
    let api = api_with(|c| c.max_proxy_body = 1024).await;
    // A POST with a JSON body reaches WeChat.
    let post = api
        .http
        .post(api.url(&api.a.appid, "wechat/cgi-bin/openapi/quota/get"))
        .bearer_auth(&api.key_a)
        .json(&serde_json::json!({"cgi_path": "/cgi-bin/token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::OK);
    let body: Value = post.json().await.unwrap();
    assert_eq!(body["quota"]["used"], 1, "{body}");

    for path in [
        "wechat/sns/userinfo",
        "wechat/cgi-bin/token?grant_type=client_credential",
        "wechat/cgi-bin/stable_token",
        "wechat/cgi-bin/%2e%2e/sns/userinfo",
        "wechat/cgi-bin/user/info?access_token=stolen",
        "wechat/cgi-bin/user/info?ACCESS_TOKEN=stolen",
        "wechat/cgi-bin/http:%2F%2Fevil.example",
    ] {
        let response = api
            .http
            .get(api.url(&api.a.appid, path))
            .bearer_auth(&api.key_a)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "proxy_path_refused", "{path}");
    }
    let big = api
        .http
        .post(api.url(&api.a.appid, "wechat/cgi-bin/user/info/batchget"))
        .bearer_auth(&api.key_a)
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(api.hub.fetches(&api.a.appid), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_token_answers_503_with_the_reason() {
    let hub = Hub::sqlite().await;
    let mut spec = wechat_sim::AccountSpec::new(crate::common::appid(1), crate::common::secret(1));
    spec.whitelist_mode = wechat_sim::WhitelistMode::Enforce;
    hub.sim().create_account(spec).unwrap();
    let acct = hub
        .register(1, &crate::common::secret(1), TokenMode::Token)
        .await;
    let service = hub.service(Hub::config(22)).await;
    service.run_due().await.unwrap();
    let key = crate::common::api_key();
    hub.store
        .create_api_key(
            &store::api_keys::NewApiKey::with_all_scopes(&acct.id, &key.hash, "t"),
            hub.now(),
            &store::audit::AuditRecord::new("test", "api_key.create"),
        )
        .await
        .unwrap();
    let base = crate::common::serve(service).await;
    let response = reqwest::Client::new()
        .get(format!(
            "{base}/api/v1/accounts/{}/access_token",
            acct.appid
        ))
        .bearer_auth(key.secret.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "token_unavailable");
    assert_eq!(body["state"], "needs_attention");
    assert_eq!(body["wechat_errcode"], 40164);
    assert!(body["message"].as_str().unwrap().contains("add 127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_describes_the_routes() {
    let api = api().await;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", api.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/accounts/{appid}/access_token",
        "/api/v1/accounts/{appid}/access_token/invalid",
        "/api/v1/accounts/{appid}/wechat/{path}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_refused_what_its_scopes_do_not_allow_with_403() {
    let api = api().await;
    let add_key = |scopes: &str, paths: Option<Vec<String>>| {
        let store = api.hub.store.clone();
        let account_id = api.a.id.clone();
        let scopes = store::api_keys::KeyScopes::parse(scopes).unwrap();
        let now = api.hub.now();
        async move {
            let key = crate::common::api_key();
            store
                .create_api_key(
                    &store::api_keys::NewApiKey {
                        scopes,
                        proxy_paths: paths,
                        ..store::api_keys::NewApiKey::with_all_scopes(&account_id, &key.hash, "s")
                    },
                    now,
                    &store::audit::AuditRecord::new("test", "api_key.create"),
                )
                .await
                .unwrap();
            key.secret.expose().to_owned()
        }
    };
    let token_only = add_key("token", None).await;
    assert_eq!(
        api.get_token(&api.a.appid, &token_only).await.0,
        StatusCode::OK
    );
    let report = api
        .http
        .post(api.url(&api.a.appid, "access_token/invalid"))
        .bearer_auth(&token_only)
        .json(&serde_json::json!({ "access_token": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::FORBIDDEN);
    let body: Value = report.json().await.unwrap();
    assert_eq!(body["error"], "scope_missing");
    let proxied = api
        .http
        .get(api.url(&api.a.appid, "wechat/cgi-bin/get_api_domain_ip"))
        .bearer_auth(&token_only)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), StatusCode::FORBIDDEN);

    let proxy_only = add_key("proxy", Some(vec!["/cgi-bin/get_api_domain_ip".to_owned()])).await;
    assert_eq!(
        api.get_token(&api.a.appid, &proxy_only).await.0,
        StatusCode::FORBIDDEN
    );
    let allowed = api
        .http
        .get(api.url(&api.a.appid, "wechat/cgi-bin/get_api_domain_ip"))
        .bearer_auth(&proxy_only)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let other_path = api
        .http
        .get(api.url(&api.a.appid, "wechat/cgi-bin/getcallbackip"))
        .bearer_auth(&proxy_only)
        .send()
        .await
        .unwrap();
    assert_eq!(other_path.status(), StatusCode::FORBIDDEN);
}
