//! The gateway's routes. Each handler parses its input, calls one function of [`crate::oidc`],
//! [`crate::login`] or [`crate::push`], and maps the result to a response; errors map in
//! `error.rs` (the token and userinfo endpoints always answer OAuth JSON, through
//! `OAuthError`).
//!
//! Discovery, JWKS, token and userinfo allow cross-origin requests from any origin, without
//! credentials, so single-page public clients can use them (they authenticate with PKCE or a
//! bearer token, never with cookies).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use crate::error::{OAuthError, TokenErrorCode};
use crate::login::LoginStep;
use crate::oidc::{AuthorizeParams, BasicCredentials, TokenParams};
use crate::push::{MAX_PUSH_BYTES, PushQuery};
use crate::{Gateway, GatewayError, pages};

type Gw = State<Arc<Gateway>>;

/// The gateway's router, with its state applied; merge it into the hub's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    // Endpoints a browser-based public client calls cross-origin.
    let cross_origin = Router::new()
        .route(
            "/t/{appid}/.well-known/openid-configuration",
            get(discovery).options(preflight),
        )
        .route("/t/{appid}/jwks", get(jwks).options(preflight))
        .route("/t/{appid}/token", post(token).options(preflight))
        .route(
            "/t/{appid}/userinfo",
            get(userinfo).post(userinfo).options(preflight),
        )
        .layer(axum::middleware::map_response(allow_any_origin));
    Router::new()
        .merge(cross_origin)
        .route("/t/{appid}/authorize", get(authorize))
        .route("/t/{appid}/wechat/callback", get(callback))
        .route("/t/{appid}/login/follow/{wait}", get(follow_page))
        .route("/t/{appid}/login/follow/{wait}/status", get(follow_status))
        .route(
            "/t/{appid}/login/follow/{wait}/continue",
            post(follow_continue),
        )
        .route(
            "/t/{appid}/wechat/push",
            get(push_verify)
                .post(push_receive)
                // Refuse oversize bodies before reading them whole (the handler checks too).
                .layer(DefaultBodyLimit::max(MAX_PUSH_BYTES)),
        )
        .with_state(gateway)
}

/// CORS for the cross-origin endpoints: any origin, no credentials.
async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A CORS preflight for the cross-origin endpoints.
async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

fn json_no_store(value: serde_json::Value) -> Response {
    let mut response = Json(value).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn discovery(State(gw): Gw, Path(appid): Path<String>) -> Result<Response, GatewayError> {
    gw.active_account(&appid).await?;
    Ok(Json(crate::oidc::discovery(&gw, &appid)).into_response())
}

async fn jwks(State(gw): Gw, Path(appid): Path<String>) -> Result<Response, GatewayError> {
    gw.active_account(&appid).await?;
    // Make sure there is a key to publish before the first login needs one.
    gw.keys.active(&gw.store, &gw.vault, gw.now()).await?;
    Ok(Json(crate::keys::jwks(&gw.store).await?).into_response())
}

async fn authorize(
    State(gw): Gw,
    Path(appid): Path<String>,
    Query(params): Query<AuthorizeParams>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let authorized = crate::oidc::authorize(&gw, &appid, params, browser).await?;
    let mut response = pages::redirect_to(&authorized.wechat_url);
    let cookie = HeaderValue::from_str(&authorized.set_cookie)
        .map_err(|_| GatewayError::Internal("login cookie is not a header value"))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// The credentials after an `Authorization` scheme, matched case-insensitively
/// (RFC 9110 §11.1).
fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<Result<&'a str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(()));
    };
    let (given, rest) = value.split_once(' ').unwrap_or((value, ""));
    if given.eq_ignore_ascii_case(scheme) {
        Some(Ok(rest.trim()))
    } else {
        Some(Err(()))
    }
}

/// `Authorization: Basic` client credentials; both parts are form-urlencoded
/// (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, GatewayError> {
    use crate::error::TokenErrorCode::InvalidClient;
    let bad = || GatewayError::token(InvalidClient, "malformed Basic credentials");
    let encoded = match authorization(headers, "Basic") {
        None => return Ok(None),
        Some(Ok(encoded)) => encoded,
        Some(Err(())) => return Err(bad()),
    };
    let decoded = STANDARD.decode(encoded).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let form = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some(BasicCredentials {
        client_id: form(id),
        client_secret: form(secret),
    }))
}

async fn token(
    State(gw): Gw,
    Path(appid): Path<String>,
    headers: HeaderMap,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Ok(Form(params)) = form else {
        return Err(GatewayError::token(
            TokenErrorCode::InvalidRequest,
            "the body must be application/x-www-form-urlencoded token request parameters",
        )
        .into());
    };
    let basic = basic_credentials(&headers)?;
    let response = crate::oidc::token(&gw, &appid, basic, params).await?;
    Ok(json_no_store(json!(response)))
}

async fn userinfo(
    State(gw): Gw,
    Path(appid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let bearer = match authorization(&headers, "Bearer") {
        Some(Ok(token)) if !token.is_empty() => Some(token),
        _ => None,
    };
    let claims = crate::oidc::userinfo(&gw, &appid, bearer).await?;
    Ok(json_no_store(claims))
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
}

fn login_step(step: LoginStep) -> Response {
    match step {
        LoginStep::ToClient(url) => pages::redirect_to(&url),
        // 303 so that reloading the follow page does not replay the WeChat callback.
        LoginStep::FollowPage(url) => {
            let mut r = pages::redirect_to(&url);
            *r.status_mut() = StatusCode::SEE_OTHER;
            r
        }
        LoginStep::Denied(back) => pages::denied_page(&back).into_response(),
    }
}

async fn callback(
    State(gw): Gw,
    Path(appid): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let step =
        crate::login::wechat_callback(&gw, &appid, q.code, q.state, browser.as_deref()).await?;
    Ok(login_step(step))
}

fn render_follow_page(view: &crate::login::FollowView, still_not_following: bool) -> Response {
    pages::follow_page(&pages::FollowPage {
        account_name: &view.account_name,
        qr_url: view.qr_url.as_deref(),
        follow_link: view.follow_link.as_deref(),
        status_url: &view.status_url,
        continue_url: &view.continue_url,
        still_not_following,
    })
    .into_response()
}

async fn follow_page(
    State(gw): Gw,
    Path((appid, wait)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let view = crate::login::follow_view(&gw, &appid, &wait, browser.as_deref()).await?;
    Ok(render_follow_page(&view, false))
}

async fn follow_status(
    State(gw): Gw,
    Path((appid, wait)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    Ok(
        match crate::login::follow_status(&gw, &appid, &wait, browser.as_deref()).await? {
            Some(followed) => json_no_store(json!({ "followed": followed })),
            None => {
                let mut r = json_no_store(json!({ "followed": false, "expired": true }));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        },
    )
}

async fn follow_continue(
    State(gw): Gw,
    Path((appid, wait)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    match crate::login::follow_continue(&gw, &appid, &wait, browser.as_deref()).await? {
        Some(to_client) => Ok(pages::redirect_to(&to_client)),
        None => {
            let view = crate::login::follow_view(&gw, &appid, &wait, browser.as_deref()).await?;
            Ok(render_follow_page(&view, true))
        }
    }
}

async fn push_verify(
    State(gw): Gw,
    Path(appid): Path<String>,
    Query(q): Query<PushQuery>,
) -> Result<Response, GatewayError> {
    let echostr = crate::push::verify_url(&gw, &appid, q).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], echostr).into_response())
}

async fn push_receive(
    State(gw): Gw,
    Path(appid): Path<String>,
    Query(q): Query<PushQuery>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let answer = crate::push::receive(&gw, &appid, q, body).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], answer).into_response())
}
