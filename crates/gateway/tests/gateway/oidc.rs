//! The provider's rules: codes, redirect URIs, state, PKCE, client authentication, keys.

use std::time::Duration;

use base64::Engine;
use store::oidc::LoginMode;

use crate::common::*;
use crate::login::urlencode;

/// Runs a userinfo-mode login up to the client's callback URL (with code and state).
async fn callback_url(env: &Env, rp: &Rp) -> (Attempt, String) {
    let attempt = rp.start();
    let back = browse_to_callback(env, &attempt.url.clone(), "alice", "allow").await;
    assert_eq!(back.status(), 302);
    let url = location(&back);
    (attempt, url)
}

async fn token_request(
    env: &Env,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut req = env
        .browser
        .post(format!("{}/token", env.issuer(APPID)))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn reused_code_is_rejected_and_revokes_tokens() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret.clone()).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    let code = query_param(&callback, "code").unwrap();
    let verifier = attempt.verifier.secret().clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let first = token_request(&env, &form, Some((&id, secret.as_deref().unwrap()))).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "no-store");
    let body: serde_json::Value = first.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let userinfo = |token: String| {
        let env = &env;
        async move {
            env.browser
                .get(format!("{}/userinfo", env.issuer(APPID)))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(userinfo(access.clone()).await, 200);

    let second = token_request(&env, &form, Some((&id, secret.as_deref().unwrap()))).await;
    assert_eq!(second.status(), 400);
    let err: serde_json::Value = second.json().await.unwrap();
    assert_eq!(err["error"], "invalid_grant");
    // What the code issued is revoked.
    assert_eq!(userinfo(access).await, 401);
}

#[tokio::test]
async fn code_expires_after_sixty_seconds() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    env.clock.advance(Duration::from_secs(61));
    assert!(
        rp.finish(attempt, &callback)
            .await
            .unwrap_err()
            .contains("invalid_grant")
    );
}

#[tokio::test]
async fn redirect_uri_variants_get_an_error_page_on_wxhub_never_a_redirect() {
    let env = Env::sqlite().await;
    let (id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    let variants = [
        "HTTP://127.0.0.1:9/cb",
        "http://127.0.0.1:9/CB",
        "http://127.0.0.1:9/cb/",
        "http://127.0.0.1:9/cb?extra=1",
        "http://user@127.0.0.1:9/cb",
        "http://127.0.0.1:9@evil.example/cb",
        "http://127.0.0.1:10/cb",
        "http://127.0.0.1:9/cb#frag",
        "",
    ];
    for variant in variants {
        let url = format!(
            "{}/authorize?response_type=code&client_id={id}&redirect_uri={}&scope=openid&state=s1&code_challenge={}&code_challenge_method=S256",
            env.issuer(APPID),
            urlencode(variant),
            "a".repeat(43)
        );
        let page = env.get(&url).await;
        assert_eq!(page.status(), 400, "{variant}");
        assert!(page.headers().get("location").is_none(), "{variant}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("回调地址不匹配") && html.contains("redirect_uri"),
            "{variant}"
        );
    }
    // An unknown client is a page too.
    let page = env
        .get(&format!(
            "{}/authorize?response_type=code&client_id=nope&redirect_uri={}&scope=openid",
            env.issuer(APPID),
            urlencode(REDIRECT)
        ))
        .await;
    assert_eq!(page.status(), 400);
    assert!(page.headers().get("location").is_none());
}

#[tokio::test]
async fn missing_forged_expired_and_cross_account_state_are_refused() {
    let env = Env::sqlite().await;
    env.account(OTHER_APPID, wechat_sim::PushMode::Plain, |_| {})
        .await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;

    let callback = format!("{}/wechat/callback", env.issuer(APPID));
    let missing = env.get(&format!("{callback}?code=abc")).await;
    assert_eq!(missing.status(), 400);
    assert!(missing.text().await.unwrap().contains("state"));
    let forged = env
        .get(&format!("{callback}?code=abc&state=forged123"))
        .await;
    assert_eq!(forged.status(), 400);
    assert!(forged.text().await.unwrap().contains("已过期"));

    // A real state, presented at another account's callback.
    let attempt = rp.start();
    let wechat = location(&env.get(&attempt.url).await);
    let back = location(&env.get(&as_user(&wechat, "alice", "allow")).await);
    let cross = back.replace(&format!("/t/{APPID}/"), &format!("/t/{OTHER_APPID}/"));
    let refused = env.get(&cross).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.headers().get("location").is_none());

    // The same state after the login expired.
    env.clock.advance(Duration::from_secs(16 * 60));
    let expired = env.get(&back).await;
    assert_eq!(expired.status(), 400);
    assert!(
        expired
            .text()
            .await
            .unwrap()
            .contains("This login has expired")
    );
    assert_eq!(
        env.store()
            .count_end_users(&env.account_id(APPID).await)
            .await
            .unwrap()
            .0,
        0,
        "nothing about the refused logins was written"
    );
}

#[tokio::test]
async fn pkce_mismatch_and_half_pkce_are_refused() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let secret = secret.unwrap();
    let rp = Rp::discover(&env, APPID, &id, Some(secret.clone())).await;

    // Wrong verifier.
    let (_, callback) = callback_url(&env, &rp).await;
    let code = query_param(&callback, "code").unwrap();
    let wrong = "b".repeat(43);
    let r = token_request(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &wrong),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // Challenge without verifier.
    let (_, callback) = callback_url(&env, &rp).await;
    let code = query_param(&callback, "code").unwrap();
    let r = token_request(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // A confidential client without PKCE is refused too (RFC 9700 §2.1.1).
    let url = format!(
        "{}/authorize?response_type=code&client_id={id}&redirect_uri={}&scope=openid&state=s1",
        env.issuer(APPID),
        urlencode(REDIRECT)
    );
    let r = env.get(&url).await;
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );

    // A public client without PKCE is sent back with invalid_request; `plain` is refused.
    let (public_id, _) = env.client(APPID, LoginMode::Userinfo, true).await;
    for extra in [
        "",
        "&code_challenge=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&code_challenge_method=plain",
    ] {
        let url = format!(
            "{}/authorize?response_type=code&client_id={public_id}&redirect_uri={}&scope=openid&state=s9{extra}",
            env.issuer(APPID),
            urlencode(REDIRECT)
        );
        let r = env.get(&url).await;
        assert_eq!(r.status(), 302);
        let to = location(&r);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request")
        );
        assert_eq!(query_param(&to, "state").as_deref(), Some("s9"));
    }
}

#[tokio::test]
async fn public_client_logs_in_with_pkce_and_client_secret_post_works() {
    let env = Env::sqlite().await;
    let (public_id, none) = env.client(APPID, LoginMode::Userinfo, true).await;
    assert!(none.is_none());
    let rp = Rp::discover(&env, APPID, &public_id, None).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    rp.finish(attempt, &callback).await.unwrap();

    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let secret = secret.unwrap();
    let rp = Rp::discover(&env, APPID, &id, Some(secret.clone())).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    let code = query_param(&callback, "code").unwrap();
    let verifier = attempt.verifier.secret().clone();
    let bad = token_request(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &id),
            ("client_secret", "wrong"),
        ],
        None,
    )
    .await;
    assert_eq!(bad.status(), 401);
    let ok = token_request(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(
        ok.status(),
        200,
        "a failed client authentication does not spend the code"
    );
}

#[tokio::test]
async fn rotated_signing_key_is_published_and_old_tokens_still_verify() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret.clone()).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    rp.finish(attempt, &callback).await.unwrap();
    let jwks: serde_json::Value = env
        .get(&format!("{}/jwks", env.issuer(APPID)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "RS256 and ES256");

    let rs256 = gateway::keys::SigningAlg::Rs256;
    let old_kid = env
        .store()
        .active_signing_key_for(rs256)
        .await
        .unwrap()
        .unwrap()
        .kid;
    let published =
        gateway::keys::rotate_signing_keys(env.store(), &env.vault.current(), env.now())
            .await
            .unwrap();
    assert_eq!(published.len(), 2, "one next key per algorithm");
    let new_kid = published
        .iter()
        .find(|k| k.alg == rs256)
        .unwrap()
        .kid
        .clone();
    // Rotating again before activation publishes nothing new.
    assert_eq!(
        gateway::keys::rotate_signing_keys(env.store(), &env.vault.current(), env.now())
            .await
            .unwrap(),
        published
    );
    let jwks: serde_json::Value = env
        .get(&format!("{}/jwks", env.issuer(APPID)))
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 4, "two active and two next keys");
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));
    // Published but not signing yet; activation waits for caches to pick it up.
    assert_eq!(
        gateway::keys::activate_next_signing_key(
            env.store(),
            rs256,
            env.now(),
            gateway::keys::DEFAULT_NEXT_KEY_DELAY
        )
        .await
        .unwrap(),
        gateway::keys::KeyActivation::NotYet {
            kid: new_kid.clone(),
            ready_at: env.now() + 24 * 3600 * 1000
        }
    );
    assert_eq!(
        env.store()
            .active_signing_key_for(rs256)
            .await
            .unwrap()
            .unwrap()
            .kid,
        old_kid
    );
    let activated =
        gateway::keys::activate_next_signing_keys(env.store(), env.now(), Duration::ZERO)
            .await
            .unwrap();
    assert!(activated.contains(&(
        rs256,
        gateway::keys::KeyActivation::Activated {
            kid: new_kid.clone()
        }
    )));
    assert_eq!(
        gateway::keys::activate_next_signing_key(env.store(), rs256, env.now(), Duration::ZERO)
            .await
            .unwrap(),
        gateway::keys::KeyActivation::NoNextKey
    );

    // A fresh RP (new JWKS) verifies a token signed by the new key.
    let rp = Rp::discover(&env, APPID, &id, secret.clone()).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    let code = query_param(&callback, "code").unwrap();
    let verifier = attempt.verifier.secret().clone();
    let body: serde_json::Value = token_request(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        Some((&id, secret.as_deref().unwrap())),
    )
    .await
    .json()
    .await
    .unwrap();
    let header = body["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid);
    assert_eq!(header["alg"], "RS256");
    // The private key is not in the database in the clear.
    let keys = env.store().list_signing_keys().await.unwrap();
    assert!(
        keys.iter()
            .all(|k| k.private_key.len() > 32 && !k.public_jwk.contains("\"d\""))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_of_one_code_issue_one_token_and_it_is_revoked() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let secret = secret.unwrap();
    let rp = Rp::discover(&env, APPID, &id, Some(secret.clone())).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    let code = query_param(&callback, "code").unwrap();
    let verifier = attempt.verifier.secret().clone();
    let url = format!("{}/token", env.issuer(APPID));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (http, url, id, secret) =
            (env.browser.clone(), url.clone(), id.clone(), secret.clone());
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", verifier.clone()),
        ];
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }));
    }
    let mut issued = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => issued.push(body["access_token"].as_str().unwrap().to_owned()),
            400 => assert_eq!(body["error"], "invalid_grant"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(issued.len(), 1, "exactly one redemption succeeds");
    // Every other redemption saw the code spent and revoked the winner's token.
    let r = env
        .browser
        .get(format!("{}/userinfo", env.issuer(APPID)))
        .bearer_auth(&issued[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn token_and_userinfo_errors_are_oauth_json_and_cors_is_open() {
    let env = Env::sqlite().await;
    // A body that is not a form: JSON error, not a plain-text rejection.
    let r = env
        .browser
        .post(format!("{}/token", env.issuer(APPID)))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"].is_string());
    // Userinfo without or with a bad token: JSON too, with WWW-Authenticate.
    let r = env
        .browser
        .get(format!("{}/userinfo", env.issuer(APPID)))
        .header("authorization", "bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_token"
    );
    // Preflight for an SPA on another origin; no credentials are allowed.
    for path in [
        "token",
        "userinfo",
        "jwks",
        ".well-known/openid-configuration",
    ] {
        let r = env
            .browser
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/{path}", env.issuer(APPID)),
            )
            .header("origin", "https://spa.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert!(
            r.headers()["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
        assert!(!r.headers().contains_key("access-control-allow-credentials"));
    }
    // The bearer scheme is case-insensitive.
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    let login = rp.finish(attempt, &callback).await.unwrap();
    let r = env
        .browser
        .get(format!("{}/userinfo", env.issuer(APPID)))
        .header(
            "authorization",
            format!("BEARER {}", login.access_token.secret()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn oversized_scope_is_refused() {
    let env = Env::sqlite().await;
    let (id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    let url = format!(
        "{}/authorize?response_type=code&client_id={id}&redirect_uri={}&scope=openid+{}&state=s1&code_challenge={}&code_challenge_method=S256",
        env.issuer(APPID),
        urlencode(REDIRECT),
        "x".repeat(1100),
        "a".repeat(43)
    );
    let r = env.get(&url).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        query_param(&location(&r), "error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test]
async fn sweep_deletes_what_expired_and_keeps_what_may_still_be_used() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret.clone()).await;
    let (attempt, callback) = callback_url(&env, &rp).await;
    rp.finish(attempt, &callback).await.unwrap();
    let retention = gateway::maintenance::Retention::default();
    // Right after the login nothing is old enough.
    let report = gateway::maintenance::sweep(env.store(), env.now(), &retention)
        .await
        .unwrap();
    assert_eq!(report, gateway::maintenance::SweepReport::default());

    // A code that expired a minute ago is still there, so its reuse is still detected.
    env.clock.advance(Duration::from_secs(120));
    gateway::maintenance::sweep(env.store(), env.now(), &retention)
        .await
        .unwrap();
    let code = query_param(&callback, "code").unwrap();
    let r = token_request(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        Some((&id, secret.as_deref().unwrap())),
    )
    .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // A retired key, an old push and its nonce.
    let rs256 = gateway::keys::SigningAlg::Rs256;
    gateway::keys::rotate_signing_key(env.store(), &env.vault.current(), rs256, env.now())
        .await
        .unwrap();
    gateway::keys::activate_next_signing_key(env.store(), rs256, env.now(), Duration::ZERO)
        .await
        .unwrap();
    env.sim()
        .follow(APPID, "bob", wechat_sim::FollowOptions::default())
        .await
        .unwrap();
    assert_eq!(env.pushes(APPID).await.len(), 1);

    env.clock.advance(Duration::from_secs(8 * 24 * 3600));
    let report = gateway::maintenance::sweep(env.store(), env.now(), &retention)
        .await
        .unwrap();
    // Pending authorization, code and access token; the retired key; the push; its nonce.
    assert_eq!(report.oidc_rows, 3, "{report:?}");
    assert_eq!(report.signing_keys, 1, "{report:?}");
    assert_eq!(report.received_pushes, 1, "{report:?}");
    assert_eq!(report.push_nonces, 1, "{report:?}");
    assert!(env.pushes(APPID).await.is_empty());
    // The active RS256 and ES256 keys remain.
    assert_eq!(env.store().list_signing_keys().await.unwrap().len(), 2);
    // A second sweep finds nothing more.
    let report = gateway::maintenance::sweep(env.store(), env.now(), &retention)
        .await
        .unwrap();
    assert_eq!(report, gateway::maintenance::SweepReport::default());
}
