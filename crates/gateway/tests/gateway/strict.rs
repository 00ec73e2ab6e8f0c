//! What strict relying parties and the OpenID Foundation's "Basic OP" profile require of the
//! provider beyond a happy login: discovery as OIDC Discovery §3 demands it, RS256 and ES256,
//! POST to `/authorize`, `prompt`, `max_age`, `login_hint`, `iss` in every authorization
//! response (RFC 9207), request objects refused by name, and the documented error shapes for
//! repeated parameters, wrong methods and values that are not UTF-8.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::CoreJwsSigningAlgorithm;
use sha2::{Digest, Sha256};
use store::oidc::{LoginMode, SigningAlg};
use wechat_sim::FollowOptions;

use crate::common::*;
use crate::login::urlencode;

const VERIFIER: &str = "verifier-verifier-verifier-verifier-verifier";

fn challenge() -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()))
}

/// An authorization request's parameters (code flow, PKCE with [`VERIFIER`], state `s1`) plus
/// `extra`.
fn authorize_params(client_id: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "s1"),
        ("code_challenge", challenge().as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    params
}

fn authorize_url(env: &Env, client_id: &str, extra: &[(&str, &str)]) -> String {
    let query: Vec<String> = authorize_params(client_id, extra)
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    format!("{}/authorize?{}", env.issuer(APPID), query.join("&"))
}

/// The `Location` of a redirect to the client, checked to carry `iss` (RFC 9207).
fn to_client(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 302, "a redirect to the client");
    let to = location(r);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert_eq!(
        query_param(&to, "iss").as_deref(),
        Some(format!("{}/t/{APPID}", r.url().origin().ascii_serialization()).as_str()),
        "every authorization response names the issuer: {to}"
    );
    to
}

/// Checks the headers every gateway page has.
fn assert_page_headers(r: &reqwest::Response) {
    let h = r.headers();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.get("location").is_none());
}

async fn redeem(env: &Env, id: &str, secret: &str, code: &str) -> serde_json::Value {
    let r = env
        .browser
        .post(format!("{}/token", env.issuer(APPID)))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn jwt_part(jwt: &str, i: usize) -> serde_json::Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn discovery_has_what_oidc_discovery_requires_and_rs256_first() {
    let env = Env::sqlite().await;
    let r = env
        .get(&format!(
            "{}/.well-known/openid-configuration",
            env.issuer(APPID)
        ))
        .await;
    assert_eq!(r.status(), 200);
    let d: serde_json::Value = r.json().await.unwrap();
    // Discovery §3 REQUIRED fields.
    for field in [
        "issuer",
        "authorization_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(!d[field].is_null(), "{field}");
    }
    // Discovery §4.3: the issuer is exactly the URL discovery was fetched under.
    assert_eq!(d["issuer"], env.issuer(APPID));
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256", "ES256"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["request_parameter_supported"], false);
    assert_eq!(d["request_uri_parameter_supported"], false);
    // The JWKS publishes one key of each algorithm, public halves only.
    let jwks: serde_json::Value = env
        .get(&format!("{}/jwks", env.issuer(APPID)))
        .await
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort();
    assert_eq!(algs, ["ES256", "RS256"]);
    for key in keys {
        assert!(key["kid"].is_string() && key["use"] == "sig");
        assert!(key.get("d").is_none() && key.get("p").is_none());
    }
}

#[tokio::test]
async fn new_clients_get_rs256_tokens_and_es256_clients_get_es256() {
    let env = Env::sqlite().await;
    // A library left at its defaults accepts only RS256 (Rp::discover does not widen it).
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret.clone()).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    let callback = location(&back);
    rp.finish(attempt, &callback).await.unwrap();

    // Switch the client to ES256: its tokens are ES256, which the RS256-only RP refuses and
    // an RP allowing ES256 verifies against the same JWKS.
    let account = env.account_id(APPID).await;
    let client = env.store().find_oidc_client(&id).await.unwrap().unwrap();
    assert_eq!(client.id_token_signed_response_alg, SigningAlg::Rs256);
    let edit = store::oidc::ClientEdit {
        id_token_signed_response_alg: SigningAlg::Es256,
        ..store::oidc::ClientEdit::from(&client)
    };
    let edited = env
        .store()
        .update_oidc_client(
            &account,
            &client.id,
            &edit,
            env.now(),
            &store::audit::AuditRecord::new("test", "website.update"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.id_token_signed_response_alg, SigningAlg::Es256);
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    let refused = rp.finish(attempt, &location(&back)).await.unwrap_err();
    assert!(refused.contains("id token"), "{refused}");

    let mut es_rp = Rp::discover(&env, APPID, &id, secret).await;
    es_rp.allowed_algs = vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256];
    let attempt = es_rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    es_rp.finish(attempt, &location(&back)).await.unwrap();
}

#[tokio::test]
async fn authorize_accepts_a_form_post() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let form = authorize_params(&id, &[]);
    let r = env
        .send_with_cookies(
            env.browser
                .post(format!("{}/authorize", env.issuer(APPID)))
                .form(&form),
        )
        .await;
    assert_eq!(r.status(), 302);
    let wechat = location(&r);
    assert!(wechat.contains("/connect/oauth2/authorize"), "{wechat}");
    let back = location(&env.get(&as_user(&wechat, "alice", "allow")).await);
    let done = env.get(&back).await;
    let to = to_client(&done);
    assert_eq!(query_param(&to, "state").as_deref(), Some("s1"));
    let tokens = redeem(
        &env,
        &id,
        secret.as_deref().unwrap(),
        &query_param(&to, "code").unwrap(),
    )
    .await;
    assert_eq!(
        jwt_part(tokens["id_token"].as_str().unwrap(), 0)["alg"],
        "RS256"
    );
    // A POST whose body is not a form is a malformed request: a page, not a redirect.
    let r = env
        .browser
        .post(format!("{}/authorize", env.issuer(APPID)))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_page_headers(&r);
}

#[tokio::test]
async fn prompt_none_answers_with_an_error_wherever_a_page_would_be_needed() {
    let env = Env::sqlite().await;
    let (follow_id, follow_secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let (userinfo_id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    let none = [("prompt", "none")];

    // Outside WeChat the user would have to scan or open WeChat.
    let r = env
        .send_with_cookies(
            env.browser
                .get(authorize_url(&env, &follow_id, &none))
                .header("user-agent", PC_UA),
        )
        .await;
    let to = to_client(&r);
    assert_eq!(query_param(&to, "error").as_deref(), Some("login_required"));
    assert_eq!(query_param(&to, "state").as_deref(), Some("s1"));
    // In WeChat, snsapi_userinfo may show WeChat's consent popup.
    let r = env.get(&authorize_url(&env, &userinfo_id, &none)).await;
    let to = to_client(&r);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("interaction_required")
    );
    // prompt=none with another value is malformed.
    let r = env
        .get(&authorize_url(
            &env,
            &follow_id,
            &[("prompt", "none login")],
        ))
        .await;
    assert_eq!(
        query_param(&to_client(&r), "error").as_deref(),
        Some("invalid_request")
    );

    // A follower of a follow-required site logs in silently (snsapi_base shows nothing).
    env.sim()
        .follow(APPID, "bob", FollowOptions::default())
        .await
        .unwrap();
    let r = env.get(&authorize_url(&env, &follow_id, &none)).await;
    let wechat = location(&r);
    assert!(!wechat.contains("forcePopup=true"), "{wechat}");
    let back = location(&env.get(&as_user(&wechat, "bob", "allow")).await);
    let to = to_client(&env.get(&back).await);
    redeem(
        &env,
        &follow_id,
        follow_secret.as_deref().unwrap(),
        &query_param(&to, "code").unwrap(),
    )
    .await;

    // A non-follower would need the follow page: interaction_required instead, and no wait.
    let r = env.get(&authorize_url(&env, &follow_id, &none)).await;
    let back = location(&env.get(&as_user(&location(&r), "carol", "allow")).await);
    let to = to_client(&env.get(&back).await);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("interaction_required")
    );
    assert_eq!(query_param(&to, "state").as_deref(), Some("s1"));
    // The login is over: the callback cannot be replayed into a follow page.
    assert_eq!(env.get(&back).await.status(), 400);
}

#[tokio::test]
async fn prompt_login_and_max_age_zero_ask_wechat_to_confirm_and_auth_time_is_fresh() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    for extra in [[("prompt", "login")], [("max_age", "0")]] {
        let r = env.get(&authorize_url(&env, &id, &extra)).await;
        assert!(location(&r).contains("forcePopup=true"), "{extra:?}");
    }
    let r = env
        .get(&authorize_url(&env, &id, &[("max_age", "ten")]))
        .await;
    assert_eq!(
        query_param(&to_client(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // max_age: the ID token carries auth_time, the moment WeChat identified the user — a
    // fresh identification on every login, so even max_age=1 is met.
    for max_age in ["1", "10000"] {
        env.clock.advance(std::time::Duration::from_secs(5));
        let r = env
            .get(&authorize_url(&env, &id, &[("max_age", max_age)]))
            .await;
        let back = location(&env.get(&as_user(&location(&r), "alice", "allow")).await);
        let to = to_client(&env.get(&back).await);
        let tokens = redeem(
            &env,
            &id,
            secret.as_deref().unwrap(),
            &query_param(&to, "code").unwrap(),
        )
        .await;
        let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
        assert_eq!(claims["auth_time"], env.now_secs(), "max_age={max_age}");
    }
}

#[tokio::test]
async fn unused_parameters_and_unknown_scopes_are_accepted_and_login_hint_never_echoed() {
    let env = Env::sqlite().await;
    let (id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    let hint = "<script>alert(1)</script>@evil.example";
    let extra = [
        ("login_hint", hint),
        ("display", "popup"),
        ("ui_locales", "zh-CN en"),
        ("claims_locales", "en"),
        ("acr_values", "urn:mace:incommon:iap:silver"),
        ("id_token_hint", "not.a.token"),
        ("nonce", "n-1"),
        ("claims", r#"{"id_token":{"email":{"essential":true}}}"#),
        ("unknown_extension", "1"),
    ];
    // Scopes the provider has no claims for, in any order, are accepted (and give none).
    let url = authorize_url(&env, &id, &extra).replace(
        "scope=openid%20profile",
        &format!("scope={}", urlencode("email phone openid address profile")),
    );
    assert!(url.contains("email"));
    let r = env.get(&url).await;
    assert_eq!(r.status(), 302);
    let wechat = location(&r);
    assert!(!wechat.contains("evil") && !wechat.contains("script"));
    let back = location(&env.get(&as_user(&wechat, "alice", "allow")).await);
    let to = to_client(&env.get(&back).await);
    assert!(query_param(&to, "code").is_some());
    assert!(!to.contains("evil"), "{to}");
    // Without a redirect_uri at all: a page, never a redirect.
    let url = authorize_url(&env, &id, &[])
        .replace(&format!("redirect_uri={}&", urlencode(REDIRECT)), "");
    assert!(!url.contains("redirect_uri"));
    let r = env.get(&url).await;
    assert_eq!(r.status(), 400);
    assert_page_headers(&r);
}

#[tokio::test]
async fn request_objects_are_refused_by_their_own_error_codes() {
    let env = Env::sqlite().await;
    let (id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    for (param, error) in [
        ("request", "request_not_supported"),
        ("request_uri", "request_uri_not_supported"),
        ("registration", "registration_not_supported"),
    ] {
        let r = env
            .get(&authorize_url(
                &env,
                &id,
                &[(param, "eyJhbGciOiJub25lIn0.e30.")],
            ))
            .await;
        let to = to_client(&r);
        assert_eq!(query_param(&to, "error").as_deref(), Some(error), "{param}");
        assert_eq!(query_param(&to, "state").as_deref(), Some("s1"));
    }
    // response_mode other than query (the only one offered).
    let r = env
        .get(&authorize_url(&env, &id, &[("response_mode", "form_post")]))
        .await;
    assert_eq!(
        query_param(&to_client(&r), "error").as_deref(),
        Some("invalid_request")
    );
    // A missing response_type is invalid_request, an unknown one unsupported_response_type.
    let url = authorize_url(&env, &id, &[]).replace("response_type=code&", "");
    let r = env.get(&url).await;
    assert_eq!(
        query_param(&to_client(&r), "error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test]
async fn repeated_parameters_get_the_documented_error_shapes() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    // The client or its redirect URI repeated: nothing is verified, so a page.
    for param in ["client_id", "redirect_uri"] {
        let value = if param == "client_id" {
            id.clone()
        } else {
            urlencode(REDIRECT)
        };
        let url = format!("{}&{param}={value}", authorize_url(&env, &id, &[]));
        let r = env.get(&url).await;
        assert_eq!(r.status(), 400, "{param}");
        assert_page_headers(&r);
        let html = r.text().await.unwrap();
        assert!(html.contains("登录链接有误") && html.contains("Malformed login link"));
    }
    // Any other parameter repeated: invalid_request at the verified redirect URI; a
    // repeated state is not echoed (which of the two would it be?).
    let url = format!("{}&scope=openid", authorize_url(&env, &id, &[]));
    let to = to_client(&env.get(&url).await);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&to, "state").as_deref(), Some("s1"));
    let url = format!("{}&state=s2", authorize_url(&env, &id, &[]));
    let to = to_client(&env.get(&url).await);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&to, "state"), None);

    // The token endpoint: OAuth JSON.
    let r = env
        .browser
        .post(format!("{}/token", env.issuer(APPID)))
        .basic_auth(&id, secret.as_deref())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&code=a&code=b&redirect_uri=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("repeated")
    );

    // WeChat's callback with a repeated state: a page.
    let r = env
        .get(&format!(
            "{}/wechat/callback?code=c&state=a&state=b",
            env.issuer(APPID)
        ))
        .await;
    assert_eq!(r.status(), 400);
    assert_page_headers(&r);

    // The push URL with a repeated nonce: a short text refusal, nothing stored.
    let r = env
        .browser
        .post(format!(
            "{}/wechat/push?signature=a&timestamp=1&nonce=n&nonce=m",
            env.issuer(APPID)
        ))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "malformed push");
    assert!(env.pushes(APPID).await.is_empty());
}

#[tokio::test]
async fn a_state_that_is_not_utf8_is_refused_never_mangled() {
    let env = Env::sqlite().await;
    let (id, _) = env.client(APPID, LoginMode::Userinfo, false).await;
    let url = authorize_url(&env, &id, &[]).replace("state=s1", "state=%FF%FEs1");
    let to = to_client(&env.get(&url).await);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(
        query_param(&to, "state"),
        None,
        "not echoed with replacement characters"
    );
    // A client_id that is not UTF-8: a page.
    let url = authorize_url(&env, &id, &[]).replace(&format!("client_id={id}"), "client_id=%C3%28");
    let r = env.get(&url).await;
    assert_eq!(r.status(), 400);
    assert_page_headers(&r);
    // At WeChat's callback: the login state is unknown, a page.
    let r = env
        .get(&format!(
            "{}/wechat/callback?code=c&state=%FF",
            env.issuer(APPID)
        ))
        .await;
    assert_eq!(r.status(), 400);
    assert_page_headers(&r);
}

#[tokio::test]
async fn wrong_methods_get_oauth_json_on_oauth_endpoints_and_pages_elsewhere() {
    let env = Env::sqlite().await;
    let base = env.issuer(APPID);
    for (method, path, allow) in [
        (reqwest::Method::GET, "token", "POST, OPTIONS"),
        (reqwest::Method::PUT, "token", "POST, OPTIONS"),
        (reqwest::Method::DELETE, "userinfo", "GET, POST, OPTIONS"),
        (reqwest::Method::POST, "jwks", "GET, OPTIONS"),
        (
            reqwest::Method::POST,
            ".well-known/openid-configuration",
            "GET, OPTIONS",
        ),
    ] {
        let r = env
            .browser
            .request(method.clone(), format!("{base}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{method} {path}");
    }
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "authorize", "GET, POST"),
        (reqwest::Method::POST, "wechat/callback", "GET"),
        (reqwest::Method::GET, "login/follow/x/continue", "POST"),
    ] {
        let r = env
            .browser
            .request(method.clone(), format!("{base}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow);
        assert_page_headers(&r);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("This page cannot be opened this way")
        );
    }
}

#[tokio::test]
async fn userinfo_takes_the_token_from_a_form_body_but_not_twice() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    let login = rp.finish(attempt, &location(&back)).await.unwrap();
    let token = login.access_token.secret().clone();
    let url = format!("{}/userinfo", env.issuer(APPID));
    // POST with the header only.
    let r = env
        .browser
        .post(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .browser
        .post(&url)
        .form(&[("access_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["sub"],
        login.sub
    );
    let r = env
        .browser
        .post(&url)
        .bearer_auth(&token)
        .form(&[("access_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn follow_status_answers_json_in_every_case_and_the_page_says_what_to_do() {
    let env = Env::sqlite().await;
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let back = browse_to_callback(&env, &attempt.url, "carol", "allow").await;
    let page_url = location(&back);
    let status_url = format!("{page_url}/status");
    let json = |r: reqwest::Response| async move {
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(r.headers()["cache-control"], "no-store");
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, body) = json(env.get(&status_url).await).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("waiting")));
    // Without the login cookie: JSON saying to start again in the same browser.
    let (status, body) = json(env.browser.get(&status_url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (403, Some("wrong_browser"))
    );
    assert!(
        body["message"]["en"]
            .as_str()
            .unwrap()
            .contains("this browser")
    );
    assert!(body["message"]["zh-CN"].is_string());
    // A wrong method: JSON too.
    let (status, body) = json(env.post(&status_url).await).await;
    assert_eq!((status, body["state"].as_str()), (405, Some("error")));
    // The page shows the poll's message and stops on anything but waiting/followed.
    let html = env.get(&page_url).await.text().await.unwrap();
    assert!(html.contains("id=\"status-msg\""));
    assert!(html.contains("j.message[\"zh-CN\"]") && html.contains("fails>=5"));
    // Expired: 404 and JSON.
    env.clock.advance(std::time::Duration::from_secs(16 * 60));
    let (status, body) = json(env.get(&status_url).await).await;
    assert_eq!((status, body["state"].as_str()), (404, Some("expired")));
    assert_eq!(body["expired"], true);
}
