//! docs/wechat.md §3.7 `callback/check`: the simulator resolves the account's push URL and
//! sends each address the signed URL-verification GET of §6.2, against a tiny hub that
//! verifies the signature like wxhub's push route would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use wechat::{AccessToken, CallbackCheckAction, CheckOperator};

use crate::common::{Env, code};

const TOKEN: &str = "pushtoken";

#[derive(Clone, Copy)]
enum Hub {
    /// Verifies the signature, then answers the raw `echostr` (§6.2).
    Echo,
    /// Verifies the signature, then answers something else.
    WrongEcho,
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct HubState {
    mode: Hub,
    token: &'static str,
    seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

async fn verify(State(h): State<HubState>, Query(q): Query<HashMap<String, String>>) -> Response {
    h.seen.lock().unwrap().push(q.clone());
    let field = |k: &str| q.get(k).map_or("", String::as_str);
    if !wechat::push::verify_signature(
        h.token,
        field("timestamp"),
        field("nonce"),
        field("signature"),
    ) {
        return (StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    match h.mode {
        Hub::Echo => field("echostr").to_owned().into_response(),
        Hub::WrongEcho => "success".into_response(),
        Hub::Hang => std::future::pending().await,
    }
}

type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// A hub on 127.0.0.1 verifying with `token`; returns its push URL path `/wx` on that port.
async fn hub(mode: Hub, token: &'static str) -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/wx", get(verify))
        .with_state(HubState {
            mode,
            token,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

async fn env_with_push_url(url: Option<String>) -> (Env, AccessToken) {
    let env = Env::new().await;
    env.account_with("wx1", |a| a.push_url = url);
    let token = env.token("wx1").await;
    (env, token)
}

async fn check(env: &Env, token: &AccessToken) -> wechat::CallbackCheck {
    env.client
        .check_callback(token, CallbackCheckAction::All, CheckOperator::Default)
        .await
        .unwrap()
}

async fn raw(env: &Env, token: &AccessToken, body: &'static str) -> Value {
    env.http
        .post(env.url(&format!(
            "/cgi-bin/callback/check?access_token={}",
            token.expose()
        )))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_hub_that_echoes_echostr_is_reachable_and_got_a_signed_verification_get() {
    let (addr, seen) = hub(Hub::Echo, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let c = check(&env, &token).await;
    assert_eq!(c.dns.len(), 1);
    assert_eq!(c.dns[0].ip, "127.0.0.1");
    assert_eq!(c.dns[0].real_operator, "CHINANET");
    assert_eq!(c.ping.len(), 1);
    let p = &c.ping[0];
    assert_eq!(p.ip, "127.0.0.1");
    // DEFAULT probes from the address's own carrier.
    assert_eq!(p.from_operator, "CHINANET");
    assert_eq!(p.package_loss, "0%");
    assert!(p.time_ms().is_some_and(|t| t > 0.0), "{}", p.time);
    assert!(c.reachable());

    // The hub saw exactly the GET of §6.2, timestamped by the simulator clock.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let q = &seen[0];
    let mut keys: Vec<&str> = q.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["echostr", "nonce", "signature", "timestamp"]);
    assert_eq!(q["timestamp"], (env.sim().now_ms() / 1000).to_string());
    assert!(q["echostr"].bytes().all(|b| b.is_ascii_digit()));

    let probes = env.sim().probes(Some("wx1"));
    assert_eq!(probes.len(), 1);
    let a = &probes[0].attempts[0];
    assert!(a.echoed);
    assert_eq!(a.status, Some(200));
    assert_eq!(a.echostr, q["echostr"]);
    assert_eq!(a.signature, q["signature"]);
    assert_eq!(probes[0].answer, c);
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/callback/check").ok, 1);
}

#[tokio::test]
async fn a_hub_answering_something_else_than_echostr_loses_the_probe() {
    let (addr, seen) = hub(Hub::WrongEcho, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let c = check(&env, &token).await;
    assert_eq!(c.ping.len(), 1);
    assert_eq!(c.ping[0].package_loss, "100%");
    assert_eq!(c.ping[0].time, "0.000ms");
    assert!(!c.reachable());
    assert_eq!(seen.lock().unwrap().len(), 1);
    let a = &env.sim().probes(Some("wx1"))[0].attempts[0];
    assert_eq!(a.status, Some(200));
    assert_eq!(a.body.as_deref(), Some("success"));
    assert!(!a.echoed);
    // The call itself succeeded: the probe's finding is the answer, not an error.
    assert_eq!(env.sim().counter("wx1", "/cgi-bin/callback/check").ok, 1);
}

#[tokio::test]
async fn the_probe_is_signed_with_the_accounts_push_token() {
    // The hub expects another token, so it refuses the probe as forged.
    let (addr, seen) = hub(Hub::Echo, "othertoken").await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let c = check(&env, &token).await;
    assert_eq!(c.ping[0].package_loss, "100%");
    assert_eq!(seen.lock().unwrap().len(), 1);
    let a = &env.sim().probes(Some("wx1"))[0].attempts[0];
    assert_eq!(a.status, Some(403));
    assert_eq!(
        a.signature,
        wechat::push::signature(TOKEN, &a.timestamp.to_string(), &a.nonce)
    );
}

#[tokio::test]
async fn an_unreachable_push_url_loses_the_probe() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (env, token) = env_with_push_url(Some(format!("http://127.0.0.1:{port}/wx"))).await;
    let c = check(&env, &token).await;
    assert_eq!(c.dns[0].ip, "127.0.0.1");
    assert_eq!(c.ping[0].package_loss, "100%");
    let a = &env.sim().probes(Some("wx1"))[0].attempts[0];
    assert_eq!(a.error.as_deref(), Some("connect"));
    assert_eq!(a.status, None);
}

#[tokio::test]
async fn a_hub_that_never_answers_loses_the_probe_at_the_push_timeout() {
    let (addr, _seen) = hub(Hub::Hang, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let c = tokio::time::timeout(Duration::from_secs(5), check(&env, &token))
        .await
        .unwrap();
    assert_eq!(c.ping[0].package_loss, "100%");
    let a = &env.sim().probes(Some("wx1"))[0].attempts[0];
    assert_eq!(a.error.as_deref(), Some("timeout"));
}

#[tokio::test]
async fn a_host_name_is_resolved_and_every_address_is_probed() {
    let (addr, _seen) = hub(Hub::Echo, TOKEN).await;
    let (env, token) =
        env_with_push_url(Some(format!("http://localhost:{}/wx", addr.port()))).await;
    let c = check(&env, &token).await;
    let ips: Vec<&str> = c.dns.iter().map(|d| d.ip.as_str()).collect();
    assert!(ips.contains(&"127.0.0.1"), "{ips:?}");
    assert_eq!(c.ping.len(), c.dns.len());
    // The hub listens on 127.0.0.1 only: that address answers, any other (::1) does not.
    for p in &c.ping {
        let expected = if p.ip == "127.0.0.1" { "0%" } else { "100%" };
        assert_eq!(p.package_loss, expected, "{p:?}");
    }
}

#[tokio::test]
async fn dns_and_ping_actions_fill_only_their_list_and_operators_name_the_egress() {
    let (addr, seen) = hub(Hub::Echo, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let dns = env
        .client
        .check_callback(&token, CallbackCheckAction::Dns, CheckOperator::Unicom)
        .await
        .unwrap();
    assert_eq!(dns.dns.len(), 1);
    assert!(dns.ping.is_empty());
    // Resolving sends nothing to the hub.
    assert!(seen.lock().unwrap().is_empty());
    let ping = env
        .client
        .check_callback(&token, CallbackCheckAction::Ping, CheckOperator::Cap)
        .await
        .unwrap();
    assert!(ping.dns.is_empty());
    assert_eq!(ping.ping.len(), 1);
    assert_eq!(ping.ping[0].from_operator, "CAP");
    assert_eq!(ping.ping[0].package_loss, "0%");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_carrier_of_push_url_addresses_is_a_knob() {
    let (addr, _seen) = hub(Hub::Echo, TOKEN).await;
    let env = Env::with(|c| c.push_url_operator = "UNICOM".into()).await;
    env.account_with("wx1", |a| a.push_url = Some(format!("http://{addr}/wx")));
    let token = env.token("wx1").await;
    let c = check(&env, &token).await;
    assert_eq!(c.dns[0].real_operator, "UNICOM");
    assert_eq!(c.ping[0].from_operator, "UNICOM");
}

#[tokio::test]
async fn no_push_url_configured_is_40201() {
    let (env, token) = env_with_push_url(None).await;
    let err = env
        .client
        .check_callback(&token, CallbackCheckAction::All, CheckOperator::Default)
        .await
        .unwrap_err();
    assert_eq!(code(err.clone()), 40201);
    assert_eq!(err.class(), wechat::ErrorClass::Credential);
    assert!(env.sim().probes(None).is_empty());
}

#[tokio::test]
async fn bad_access_tokens_are_refused_like_every_cgi_bin_call() {
    let (addr, seen) = hub(Hub::Echo, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let call = |t: AccessToken| {
        let client = env.client.clone();
        async move {
            code(
                client
                    .check_callback(&t, CallbackCheckAction::All, CheckOperator::Default)
                    .await
                    .unwrap_err(),
            )
        }
    };
    assert_eq!(call(AccessToken::new("garbage")).await, 40014);
    assert_eq!(call(AccessToken::new("")).await, 41001);
    // A superseded token past its grace, then an expired one.
    let newer = env.token("wx1").await;
    env.advance(301);
    assert_eq!(call(token).await, 40001);
    env.advance(7200);
    assert_eq!(call(newer).await, 42001);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_arguments_are_40202_40203_and_malformed_bodies_44002_47001_43002() {
    let (addr, seen) = hub(Hub::Echo, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    let errcode = |v: Value| v["errcode"].as_i64().unwrap();
    for (body, expected) in [
        (r#"{"action":"trace","check_operator":"DEFAULT"}"#, 40202),
        (r#"{"action":"ALL","check_operator":"DEFAULT"}"#, 40202),
        (r#"{"check_operator":"DEFAULT"}"#, 40202),
        (r#"{"action":1,"check_operator":"DEFAULT"}"#, 40202),
        (r#"{"action":"all","check_operator":"MOBILE"}"#, 40203),
        (r#"{"action":"all","check_operator":"default"}"#, 40203),
        (r#"{"action":"all"}"#, 40203),
        // The action is checked first.
        (r#"{"action":"x","check_operator":"y"}"#, 40202),
        ("", 44002),
        ("not json", 47001),
        ("[1]", 47001),
    ] {
        assert_eq!(errcode(raw(&env, &token, body).await), expected, "{body}");
    }
    let get: Value = env
        .get_json(&format!(
            "/cgi-bin/callback/check?access_token={}",
            token.expose()
        ))
        .await;
    assert_eq!(errcode(get), 43002);
    // A good body succeeds with the same token; nothing was probed before.
    assert!(seen.lock().unwrap().is_empty());
    let ok = raw(
        &env,
        &token,
        r#"{"action":"all","check_operator":"DEFAULT"}"#,
    )
    .await;
    assert_eq!(ok["ping"][0]["package_loss"], json!("0%"));
    assert!(ok.get("errcode").is_none());
}

#[tokio::test]
async fn the_control_api_lists_probes() {
    let (addr, _seen) = hub(Hub::Echo, TOKEN).await;
    let (env, token) = env_with_push_url(Some(format!("http://{addr}/wx"))).await;
    check(&env, &token).await;
    let listed = env.get_json("/__sim/probes?appid=wx1").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["attempts"][0]["echoed"], json!(true));
    assert_eq!(listed[0]["answer"]["ping"][0]["package_loss"], json!("0%"));
    assert!(
        env.get_json("/__sim/probes?appid=other")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
}
