//! The demo's sample tenant website: an ordinary OpenID Connect relying party, written the way
//! an account owner's site would be, so `wxhub demo` can be clicked through end to end.
//!
//! It knows nothing about WeChat. It sends the browser to the account's issuer with `state`,
//! `nonce` and PKCE, redeems the code at the token endpoint with its client secret (the back
//! channel), checks the ID token's `iss`, `aud`, `nonce` and expiry, reads `/userinfo` and
//! shows who logged in. Pending logins are kept in memory, bounded: it is a demo page, not a
//! pattern for storing sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Logins started but not finished that the site remembers at most.
const MAX_PENDING: usize = 1_000;

/// One "Log in with WeChat" button: an OIDC client registered at one account's issuer.
#[derive(Clone)]
pub struct SiteClient {
    pub label: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
}

struct Pending {
    client: usize,
    verifier: String,
    nonce: String,
}

/// The site's state. Cheap to clone.
#[derive(Clone)]
pub struct SampleSite {
    base: url::Url,
    clients: Arc<Vec<SiteClient>>,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    http: reqwest::Client,
}

impl SampleSite {
    /// A site served at `base` (its `/callback` must be registered with every client).
    pub fn new(base: url::Url, clients: Vec<SiteClient>) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            base,
            clients: Arc::new(clients),
            pending: Arc::default(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    /// The redirect URI to register for this site.
    pub fn callback_url(base: &url::Url) -> String {
        format!("{}callback", base.as_str())
    }
}

/// The site's routes.
pub fn router(site: SampleSite) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/wechat", axum::routing::post(bot))
        .with_state(site)
}

/// The Token of the sample bot's push route (a development value: the demo only).
pub const BOT_TOKEN: &str = "sampleBotToken1";

/// The owner's bot behind the first sample account's reply route: wxhub passes it the users'
/// messages and menu clicks, signed with the route's Token as WeChat would sign them, and
/// returns its passive reply to WeChat (docs/wechat.md §6.4). It checks the signature first,
/// as any WeChat server does.
async fn bot(Query(q): Query<HashMap<String, String>>, body: String) -> Response {
    let signed = match (q.get("timestamp"), q.get("nonce"), q.get("signature")) {
        (Some(ts), Some(nonce), Some(signature)) => {
            wechat::push::verify_signature(BOT_TOKEN, ts, nonce, signature)
        }
        _ => false,
    };
    if !signed {
        return (axum::http::StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    let Ok(msg) = wechat::xml::parse_message(body.as_bytes()) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not a message").into_response();
    };
    let answer = match (msg.msg_type(), msg.event()) {
        ("text", _) => format!(
            "示例机器人收到：{} (the sample bot, answering through wxhub)",
            msg.fields.get("Content").unwrap_or_default()
        ),
        (_, Some(event)) if event.eq_ignore_ascii_case("CLICK") => format!(
            "菜单 {} (the sample bot, answering a menu click through wxhub)",
            msg.event_key().unwrap_or_default()
        ),
        _ => return wechat::xml::SUCCESS.into_response(),
    };
    msg.text_reply(&answer, msg.create_time).into_response()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page of the site. Its claims wrap, so long tokens and URLs fit a phone's screen.
fn page(body: &str) -> Response {
    (
        [(header::REFERRER_POLICY, "no-referrer")],
        Html(format!(
            "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>示例网站 Sample site</title>\
             <style>pre{{white-space:pre-wrap;overflow-wrap:anywhere}}</style>\
             </head><body>{body}</body></html>"
        )),
    )
        .into_response()
}

async fn home(State(site): State<SampleSite>) -> Response {
    let buttons: String = site
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "<p><a href=\"/login?client={i}\"><button>{}</button></a></p>",
                escape(&c.label)
            )
        })
        .collect();
    page(&format!(
        "<h1>示例网站 Sample tenant site</h1>\
         <p>This site logs people in through wxhub with plain OpenID Connect.</p>{buttons}"
    ))
}

#[derive(Deserialize)]
struct LoginQuery {
    client: usize,
}

async fn login(State(site): State<SampleSite>, Query(q): Query<LoginQuery>) -> Response {
    let Some(client) = site.clients.get(q.client) else {
        return page("<p>Unknown login button.</p>");
    };
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    {
        let mut pending = site.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.clear();
        }
        pending.insert(
            state.clone(),
            Pending {
                client: q.client,
                verifier,
                nonce: nonce.clone(),
            },
        );
    }
    let mut authorize = match url::Url::parse(&format!("{}/authorize", client.issuer)) {
        Ok(url) => url,
        Err(_) => return page("<p>The issuer URL is invalid.</p>"),
    };
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.client_id)
        .append_pair("redirect_uri", &SampleSite::callback_url(&site.base))
        .append_pair("scope", "openid profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    Redirect::to(authorize.as_str()).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    id_token: String,
}

async fn callback(State(site): State<SampleSite>, Query(q): Query<CallbackQuery>) -> Response {
    let pending = q.state.as_deref().and_then(|state| {
        site.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
    });
    let Some(pending) = pending else {
        return page(
            "<p>This login was not started here (unknown state). <a href=\"/\">Start again</a></p>",
        );
    };
    if let Some(error) = q.error {
        return page(&format!(
            "<h1>未登录 Not logged in</h1><p>The issuer answered <code>{}</code>.</p>\
             <p><a href=\"/\">Back</a></p>",
            escape(&error)
        ));
    }
    let Some(code) = q.code else {
        return page("<p>No code in the redirect.</p>");
    };
    match redeem(&site, &pending, &code).await {
        Ok((claims, userinfo)) => page(&format!(
            "<h1>已登录 Logged in</h1><h2>ID token claims</h2><pre id=\"claims\">{}</pre>\
             <h2>/userinfo</h2><pre id=\"userinfo\">{}</pre><p><a href=\"/\">Back</a></p>",
            escape(&serde_json::to_string_pretty(&claims).unwrap_or_default()),
            escape(&serde_json::to_string_pretty(&userinfo).unwrap_or_default()),
        )),
        Err(err) => page(&format!(
            "<h1>Login failed</h1><p>{}</p><p><a href=\"/\">Back</a></p>",
            escape(&format!("{err:#}"))
        )),
    }
}

/// The back channel: code → tokens → checked claims and userinfo.
async fn redeem(
    site: &SampleSite,
    pending: &Pending,
    code: &str,
) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let client = &site.clients[pending.client];
    let redirect_uri = SampleSite::callback_url(&site.base);
    let tokens: TokenResponse = site
        .http
        .post(format!("{}/token", client.issuer))
        .basic_auth(&client.client_id, Some(&client.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    // Received straight from the token endpoint, so the claims are checked but the signature
    // is left to real sites' OIDC libraries (OpenID Connect Core §3.1.3.7 allows this over
    // TLS; the demo runs on loopback).
    let payload = tokens
        .id_token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("the ID token is not a JWT"))?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    anyhow::ensure!(claims["iss"] == client.issuer.as_str(), "wrong issuer");
    anyhow::ensure!(claims["aud"] == client.client_id.as_str(), "wrong audience");
    anyhow::ensure!(claims["nonce"] == pending.nonce.as_str(), "wrong nonce");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    anyhow::ensure!(
        claims["exp"].as_u64().is_some_and(|exp| exp > now),
        "the ID token has expired"
    );
    let userinfo = site
        .http
        .get(format!("{}/userinfo", client.issuer))
        .bearer_auth(&tokens.access_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((claims, userinfo))
}

/// Reads one login button from what `wxhub client create` printed: its `client_id:`,
/// `client_secret:` and `issuer:` lines (`wxhub sample-site --client-file`, where a setup
/// step saved that output).
pub fn client_from_create_output(label: &str, text: &str) -> anyhow::Result<SiteClient> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| anyhow::anyhow!("no `{name}:` line (a confidential client's output of `wxhub client create` is expected)"))
    };
    Ok(SiteClient {
        label: label.to_owned(),
        issuer: field("issuer")?,
        client_id: field("client_id")?,
        client_secret: field("client_secret")?,
    })
}

/// `wxhub sample-site`: the sample site alone, served at `listen` and reached by browsers
/// at `public_url`, with one button per client file, until SIGINT/SIGTERM.
pub async fn run(
    listen: std::net::SocketAddr,
    public_url: url::Url,
    client_files: &[std::path::PathBuf],
) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut clients = Vec::new();
    for path in client_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the client file {}", path.display()))?;
        let label = format!("用微信登录 Log in with WeChat ({})", clients.len() + 1);
        clients.push(
            client_from_create_output(&label, &text)
                .with_context(|| format!("the client file {}", path.display()))?,
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the sample site"))?;
    println!(
        "sample site at {public_url}, listening on {} (register {} as a redirect URI)",
        listener.local_addr()?,
        SampleSite::callback_url(&public_url)
    );
    let site = SampleSite::new(public_url, clients)?;
    axum::serve(listener, router(site))
        .with_graceful_shutdown(crate::server::shutdown_signal())
        .await
        .context("the sample site failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_read_from_what_client_create_prints() {
        let printed = "client_id:     c_123\nname:          Sample\nissuer:        http://hub.localhost:8080/t/wx0123456789abcdef\n\
                       login mode:    follow-required\nclient_secret: s3cret\n\nThe secret is shown only this once\n";
        let client = client_from_create_output("Log in", printed).unwrap();
        assert_eq!(client.client_id, "c_123");
        assert_eq!(client.client_secret, "s3cret");
        assert_eq!(
            client.issuer,
            "http://hub.localhost:8080/t/wx0123456789abcdef"
        );
        let public = "client_id:     c_1\nissuer:        http://h/t/wx\npublic client: no secret\n";
        let Err(err) = client_from_create_output("Log in", public) else {
            panic!("a public client has no secret to log in with");
        };
        assert!(err.to_string().contains("client_secret"), "{err}");
    }
}
