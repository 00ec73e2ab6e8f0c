//! The gateway's routes. Each handler parses its input, calls one function of [`crate::oidc`],
//! [`crate::login`] or [`crate::push`], and maps the result to a response; errors map in
//! `error.rs` (the token and userinfo endpoints always answer OAuth JSON, through
//! `OAuthError`).
//!
//! Discovery, JWKS, token and userinfo allow cross-origin requests from any origin, without
//! credentials, so single-page public clients can use them (they authenticate with PKCE or a
//! bearer token, never with cookies).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::json;

use crate::error::{OAuthError, TokenErrorCode};
use crate::login::LoginStep;
use crate::oidc::{AuthorizeParams, BasicCredentials, Browser, TokenParams};
use crate::params::Params;
use crate::push::{MAX_PUSH_BYTES, PushQuery};
use crate::{Gateway, GatewayError, pages};

type Gw = State<Arc<Gateway>>;

/// Largest authorization request body (a form POST, OIDC Core §3.1.2.1) read.
const MAX_AUTHORIZE_BODY: usize = 16 * 1024;
/// Largest token request body read.
const MAX_TOKEN_BODY: usize = 16 * 1024;

/// Any other method on a page route: a bilingual page, 405 with `Allow`.
fn pages_only(allow: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready(GatewayError::MethodNotAllowed { allow }.into_response())
}

/// Any other method on an OAuth endpoint: OAuth JSON, 405 with `Allow`.
fn oauth_only(allow: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready(OAuthError(GatewayError::MethodNotAllowed { allow }).into_response())
}

/// The gateway's router, with its state applied; merge it into the hub's router.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let page =
        |route: MethodRouter<Arc<Gateway>>, allow: &'static str| route.fallback(pages_only(allow));
    let oauth = |route: MethodRouter<Arc<Gateway>>, allow: &'static str| {
        route.options(preflight).fallback(oauth_only(allow))
    };
    // Endpoints a browser-based public client calls cross-origin.
    let cross_origin = Router::new()
        .route(
            "/t/{appid}/.well-known/openid-configuration",
            oauth(get(discovery), "GET, OPTIONS"),
        )
        .route("/t/{appid}/jwks", oauth(get(jwks), "GET, OPTIONS"))
        .route("/t/{appid}/token", oauth(post(token), "POST, OPTIONS"))
        .route(
            "/t/{appid}/userinfo",
            oauth(get(userinfo).post(userinfo), "GET, POST, OPTIONS"),
        )
        .layer(axum::middleware::map_response(allow_any_origin));
    Router::new()
        .merge(cross_origin)
        .route(
            "/t/{appid}/authorize",
            page(
                get(authorize_get)
                    .post(authorize_post)
                    .layer(DefaultBodyLimit::max(MAX_AUTHORIZE_BODY)),
                "GET, POST",
            ),
        )
        .route("/t/{appid}/wechat/callback", page(get(callback), "GET"))
        .route(
            "/t/{appid}/login/follow/{wait}",
            page(get(follow_page), "GET"),
        )
        .route(
            "/t/{appid}/login/follow/{wait}/status",
            get(follow_status).fallback(|| async {
                follow_status_json(FollowState::Error, StatusCode::METHOD_NOT_ALLOWED)
            }),
        )
        .route(
            "/t/{appid}/login/follow/{wait}/continue",
            page(post(follow_continue), "POST"),
        )
        .route("/t/{appid}/login/scan/{token}", page(get(scan_page), "GET"))
        .route(
            "/t/{appid}/login/scan/{token}/refresh",
            page(post(scan_refresh), "POST"),
        )
        .route(
            "/t/{appid}/login/scan/{token}/continue",
            page(post(scan_continue), "POST"),
        )
        .route(
            "/t/{appid}/login/scan/{token}/status",
            get(scan_status)
                .fallback(|| async { scan_error_json(StatusCode::METHOD_NOT_ALLOWED, "error") }),
        )
        .route(
            "/t/{appid}/login/scan/{token}/events",
            get(scan_events)
                .fallback(|| async { scan_error_json(StatusCode::METHOD_NOT_ALLOWED, "error") }),
        )
        .route(
            "/t/{appid}/login/scan/confirm/{id}",
            page(get(scan_confirm), "GET"),
        )
        .route(
            "/t/{appid}/login/scan/confirmed",
            page(get(scan_confirmed), "GET"),
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
    gw.keys.ensure_all(&gw.store, &gw.vault, gw.now()).await?;
    Ok(Json(crate::keys::jwks(&gw.store).await?).into_response())
}

/// Whether a request body is `application/x-www-form-urlencoded` (parameters allowed).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

async fn authorize(
    gw: &Gateway,
    appid: &str,
    params: Params,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
) -> Result<Response, GatewayError> {
    // Each login start stores a pending login: limited before anything is read or written.
    gw.limits
        .authorize(ip, appid)
        .map_err(|retry_after| GatewayError::RateLimited { retry_after })?;
    let browser = gw.browser_binding(headers);
    let from = Browser::from_user_agent(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let params = AuthorizeParams::from_params(&params);
    let authorized = crate::oidc::authorize(gw, appid, params, browser, from).await?;
    let mut response = pages::redirect_to(&authorized.location);
    if authorized.scan {
        // A page of wxhub's own: GET it, whatever method brought the request.
        *response.status_mut() = StatusCode::SEE_OTHER;
    }
    let cookie = HeaderValue::from_str(&authorized.set_cookie)
        .map_err(|_| GatewayError::Internal("login cookie is not a header value"))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

async fn authorize_get(
    State(gw): Gw,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let params = Params::from_query(query.as_deref());
    authorize(&gw, &appid, params, &headers, ip).await
}

/// OIDC Core §3.1.2.1: the same request as a form POST (parameters in the body only).
async fn authorize_post(
    State(gw): Gw,
    Path(appid): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    if !is_form(&headers) {
        return Err(GatewayError::MalformedLoginRequest);
    }
    authorize(&gw, &appid, Params::parse(&body), &headers, ip).await
}

/// `Authorization: Basic` client credentials; both parts are form-urlencoded
/// (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, GatewayError> {
    use crate::error::TokenErrorCode::InvalidClient;
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => crate::credentials::basic(value.as_bytes())
            .map(Some)
            .map_err(|()| GatewayError::token(InvalidClient, "malformed Basic credentials")),
    }
}

async fn token(
    State(gw): Gw,
    Path(appid): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, OAuthError> {
    let body = match body {
        Ok(body) if is_form(&headers) && body.len() <= MAX_TOKEN_BODY => body,
        _ => {
            return Err(GatewayError::token(
                TokenErrorCode::InvalidRequest,
                "the body must be application/x-www-form-urlencoded token request parameters",
            )
            .into());
        }
    };
    let params = TokenParams::from_params(&Params::parse(&body))?;
    let basic = basic_credentials(&headers)?;
    if basic.is_none() && params.client_secret.is_none() {
        // No secret to check before the code is redeemed in a write transaction: limited.
        // A confidential client's backend is checked by its secret first and not limited.
        gw.limits
            .public_token(ip, &appid)
            .map_err(|retry_after| GatewayError::RateLimited { retry_after })?;
    }
    let response = crate::oidc::token(&gw, &appid, basic, params).await?;
    Ok(json_no_store(json!(response)))
}

/// The access token of a userinfo request: the `Authorization: Bearer` header, or (POST) the
/// form body's `access_token` (RFC 6750 §2.1, §2.2) — one of them, never both (§2).
fn userinfo_bearer(
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Result<Option<String>, GatewayError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::credentials::bearer(v.as_bytes()))
        .map(str::to_owned);
    let in_body = match body {
        Some(body) if is_form(headers) => Params::parse(body)
            .get("access_token")
            .map_err(|p| GatewayError::token(TokenErrorCode::InvalidRequest, p.description()))?
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        _ => None,
    };
    match (header, in_body) {
        (Some(_), Some(_)) => Err(GatewayError::token(
            TokenErrorCode::InvalidRequest,
            "send the access token once: in the Authorization header or in the body",
        )),
        (header, in_body) => Ok(header.or(in_body)),
    }
}

async fn userinfo(
    State(gw): Gw,
    Path(appid): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let body = (method == axum::http::Method::POST).then_some(&body[..]);
    let bearer = userinfo_bearer(&headers, body)?;
    let claims = crate::oidc::userinfo(&gw, &appid, bearer.as_deref()).await?;
    Ok(json_no_store(claims))
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
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let params = Params::from_query(query.as_deref());
    let mut malformed = None;
    let code = params.take("code", &mut malformed);
    let state = params.take("state", &mut malformed);
    if malformed.is_some() {
        return Err(GatewayError::MalformedLoginRequest);
    }
    let step = crate::login::wechat_callback(&gw, &appid, code, state, browser.as_deref()).await?;
    Ok(login_step(step))
}

fn render_follow_page(
    view: &crate::login::FollowView,
    notice: pages::FollowNotice,
    status: StatusCode,
) -> Response {
    pages::follow_page(
        &pages::FollowPage {
            account_name: &view.account_name,
            qr_url: view.qr_url.as_deref(),
            login_qr: view.login_qr.as_deref(),
            follow_link: view.follow_link.as_deref(),
            status_url: &view.status_url,
            continue_url: &view.continue_url,
            notice,
        },
        status,
    )
    .into_response()
}

/// The client's IP: the connection's peer address, when the server records it
/// (`into_make_service_with_connect_info`); see [`crate::limits`] about reverse proxies.
pub(crate) struct ClientIp(pub(crate) Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

async fn follow_page(
    State(gw): Gw,
    Path((appid, wait)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let view = crate::login::follow_view(&gw, &appid, &wait, browser.as_deref(), ip).await?;
    Ok(render_follow_page(
        &view,
        pages::FollowNotice::None,
        StatusCode::OK,
    ))
}

/// What the follow page's poll reports; the page acts on `state` and shows `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FollowState {
    /// No follow seen yet: poll again.
    Waiting,
    /// The follow arrived: submit "continue".
    Followed,
    /// The login expired or finished: start again from the website.
    Expired,
    /// Another browser (or no login cookie): start again from the website in this browser.
    WrongBrowser,
    /// Something failed on wxhub's side: poll again later, or reload.
    Error,
}

/// The poll's answer: always JSON (never a page, whatever went wrong), `no-store`.
fn follow_status_json(state: FollowState, status: StatusCode) -> Response {
    let (name, zh, en) = match state {
        FollowState::Waiting => (
            "waiting",
            "关注公众号后，本页会自动继续。",
            "Follow the account; this page then continues by itself.",
        ),
        FollowState::Followed => (
            "followed",
            "已关注，正在登录……",
            "Followed; logging you in…",
        ),
        FollowState::Expired => (
            "expired",
            "这个登录已过期或已完成，请回到网站重新点击登录。",
            "This login has expired or was completed; go back to the website and start again.",
        ),
        FollowState::WrongBrowser => (
            "wrong_browser",
            "这个登录不是在当前浏览器中开始的，请回到网站，在同一个浏览器中重新登录。",
            "This login was not started in this browser; go back to the website and start again in this browser.",
        ),
        FollowState::Error => (
            "error",
            "暂时无法确认关注状态，请稍后刷新本页。",
            "Your follow cannot be checked right now; reload this page in a moment.",
        ),
    };
    let mut response = json_no_store(json!({
        "state": name,
        "followed": state == FollowState::Followed,
        "expired": state == FollowState::Expired,
        "message": {"zh-CN": zh, "en": en},
    }));
    *response.status_mut() = status;
    response
}

async fn follow_status(
    State(gw): Gw,
    Path((appid, wait)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let browser = gw.browser_binding(&headers);
    match crate::login::follow_status(&gw, &appid, &wait, browser.as_deref()).await {
        Ok(Some(true)) => follow_status_json(FollowState::Followed, StatusCode::OK),
        Ok(Some(false)) => follow_status_json(FollowState::Waiting, StatusCode::OK),
        Ok(None) => follow_status_json(FollowState::Expired, StatusCode::NOT_FOUND),
        Err(GatewayError::BrowserMismatch) => {
            follow_status_json(FollowState::WrongBrowser, StatusCode::FORBIDDEN)
        }
        Err(error) => {
            tracing::warn!(%error, "follow status failed");
            follow_status_json(FollowState::Error, StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

async fn follow_continue(
    State(gw): Gw,
    Path((appid, wait)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    use crate::login::Continued;
    let browser = gw.browser_binding(&headers);
    let (notice, status) =
        match crate::login::follow_continue(&gw, &appid, &wait, browser.as_deref(), ip).await? {
            Continued::ToClient(to_client) => return Ok(pages::redirect_to(&to_client)),
            Continued::NotYet => (pages::FollowNotice::NotYet, StatusCode::OK),
            Continued::Limited(Some(retry)) => (
                pages::FollowNotice::Wait(retry.as_secs_f64().ceil() as u64),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            Continued::Limited(None) => (
                pages::FollowNotice::NoMoreChecks,
                StatusCode::TOO_MANY_REQUESTS,
            ),
        };
    let view = crate::login::follow_view(&gw, &appid, &wait, browser.as_deref(), ip).await?;
    let mut response = render_follow_page(&view, notice, status);
    if let pages::FollowNotice::Wait(seconds) = notice {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(response)
}

fn render_scan_page(view: &crate::scan::ScanView) -> Response {
    let limited_secs = view
        .limited
        .filter(|_| view.qr_image.is_none())
        .map(|wait| wait.as_secs_f64().ceil() as u64);
    let status = if limited_secs.is_some() {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    let mut response = pages::scan_page(
        &pages::ScanPage {
            account_name: &view.account_name,
            site_name: &view.site_name,
            qr_image: view.qr_image.as_deref(),
            qr_url: view.qr_url.as_deref(),
            qr_expires_in: view.qr_expires_in,
            state: view.state,
            limited_secs,
            page_url: &view.page_url,
        },
        status,
    )
    .into_response();
    if let Some(seconds) = limited_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

async fn scan_page(
    State(gw): Gw,
    Path((appid, token)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let view = crate::scan::view(&gw, &appid, &token, browser.as_deref(), ip).await?;
    Ok(render_scan_page(&view))
}

/// "Refresh code": a new code if the current one expired (or is about to), then back to the
/// page (303, so reloading it does not post again).
async fn scan_refresh(
    State(gw): Gw,
    Path((appid, token)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    let view = crate::scan::view(&gw, &appid, &token, browser.as_deref(), ip).await?;
    if view.limited.is_some() && view.qr_image.is_none() {
        return Ok(render_scan_page(&view));
    }
    let mut response = pages::redirect_to(&view.page_url);
    *response.status_mut() = StatusCode::SEE_OTHER;
    Ok(response)
}

async fn scan_continue(
    State(gw): Gw,
    Path((appid, token)): Path<(String, String)>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let browser = gw.browser_binding(&headers);
    match crate::scan::continue_login(&gw, &appid, &token, browser.as_deref()).await? {
        crate::scan::Continued::ToClient(to) => Ok(pages::redirect_to(&to)),
        crate::scan::Continued::NotReady(_) => {
            let view = crate::scan::view(&gw, &appid, &token, browser.as_deref(), ip).await?;
            Ok(render_scan_page(&view))
        }
    }
}

/// The scan page's poll and events: JSON `{state, message}`.
fn scan_json(state: crate::scan::ScanState, expires_in: i64) -> serde_json::Value {
    let (zh, en) = pages::scan_message(state);
    json!({
        "state": state.as_str(),
        "expires_in": expires_in,
        "message": {"zh-CN": zh, "en": en},
    })
}

/// The poll's or event stream's refusal, as JSON (never a page).
fn scan_error_json(status: StatusCode, state: &str) -> Response {
    let (zh, en) = match state {
        "wrong_browser" => (
            "这个登录不是在当前浏览器中开始的，请回到网站，在同一个浏览器中重新登录。",
            "This login was not started in this browser; go back to the website and start again in this browser.",
        ),
        "expired" => pages::scan_message(crate::scan::ScanState::Over),
        _ => (
            "暂时无法确认扫码状态，请稍后刷新本页。",
            "The scan cannot be checked right now; reload this page in a moment.",
        ),
    };
    let mut response = json_no_store(json!({
        "state": state,
        "message": {"zh-CN": zh, "en": en},
    }));
    *response.status_mut() = status;
    response
}

fn scan_refusal(error: GatewayError) -> Response {
    match error {
        GatewayError::BrowserMismatch => scan_error_json(StatusCode::FORBIDDEN, "wrong_browser"),
        GatewayError::ScanLoginUnknown | GatewayError::UnknownAccount => {
            scan_error_json(StatusCode::NOT_FOUND, "expired")
        }
        error => {
            tracing::warn!(%error, "scan status failed");
            scan_error_json(StatusCode::SERVICE_UNAVAILABLE, "error")
        }
    }
}

async fn scan_status(
    State(gw): Gw,
    Path((appid, token)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let browser = gw.browser_binding(&headers);
    match crate::scan::status(&gw, &appid, &token, browser.as_deref()).await {
        Ok((state, _, expires_in)) => json_no_store(scan_json(state, expires_in)),
        Err(error) => scan_refusal(error),
    }
}

/// What the event stream carries between its events.
struct EventsState {
    gw: Arc<Gateway>,
    id: String,
    rx: tokio::sync::broadcast::Receiver<Arc<str>>,
    last: Option<crate::scan::ScanState>,
    next: Option<crate::scan::ScanState>,
    done: bool,
}

/// Server-Sent Events for the scan page: the state now, then each change — at once when a
/// scan is announced on any replica ([`crate::events`]), and at the latest after
/// `scan_page_poll`. Ends after `ready` or `expired`.
async fn scan_events(
    State(gw): Gw,
    Path((appid, token)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    use crate::scan::ScanState;
    use axum::response::sse::{Event, KeepAlive, Sse};
    let browser = gw.browser_binding(&headers);
    // Subscribe before reading, so a scan recorded in between is not missed.
    let rx = gw.announcements.subscribe(&gw.store).await;
    let (state, id, _) = match crate::scan::status(&gw, &appid, &token, browser.as_deref()).await {
        Ok(found) => found,
        Err(error) => return scan_refusal(error),
    };
    let start = EventsState {
        gw: gw.clone(),
        id,
        rx,
        last: None,
        next: Some(state),
        done: false,
    };
    let stream = futures_util::stream::unfold(start, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let state = match st.next.take() {
                Some(state) => state,
                None => {
                    let id = st.id.clone();
                    let rx = &mut st.rx;
                    let poll = st.gw.limits.config.scan_page_poll;
                    let _ = tokio::time::timeout(poll, async {
                        loop {
                            match rx.recv().await {
                                Ok(woken) if *woken == *id => return,
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    std::future::pending::<()>().await
                                }
                            }
                        }
                    })
                    .await;
                    match crate::scan::state_by_id(&st.gw, &st.id).await {
                        Ok(state) => state,
                        Err(error) => {
                            tracing::warn!(%error, "scan events: reading the login failed");
                            continue;
                        }
                    }
                }
            };
            if st.last == Some(state) {
                continue;
            }
            st.last = Some(state);
            st.done = matches!(state, ScanState::Ready | ScanState::Over);
            let event = Event::default().data(scan_json(state, 0).to_string());
            return Some((Ok::<_, std::convert::Infallible>(event), st));
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The confirmation link, opened in the scanner's WeChat: on to WeChat's silent authorize.
async fn scan_confirm(
    State(gw): Gw,
    Path((appid, id)): Path<(String, String)>,
) -> Result<Response, GatewayError> {
    let to = crate::scan::confirm_start(&gw, &appid, &id).await?;
    Ok(pages::redirect_to(&to))
}

async fn scan_confirmed(
    State(gw): Gw,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, GatewayError> {
    let params = Params::from_query(query.as_deref());
    let mut malformed = None;
    let code = params.take("code", &mut malformed);
    let state = params.take("state", &mut malformed);
    if malformed.is_some() {
        return Err(GatewayError::MalformedLoginRequest);
    }
    let site = crate::scan::confirm_finish(&gw, &appid, code, state).await?;
    Ok(pages::scan_confirmed_page(&site).into_response())
}

async fn push_verify(
    State(gw): Gw,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, GatewayError> {
    let q = PushQuery::from_params(&Params::from_query(query.as_deref()))?;
    let echostr = crate::push::verify_url(&gw, &appid, q).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], echostr).into_response())
}

async fn push_receive(
    State(gw): Gw,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let q = PushQuery::from_params(&Params::from_query(query.as_deref()))?;
    let answer = crate::push::receive(&gw, &appid, q, body).await?;
    let content_type = if answer.starts_with("<xml") {
        "application/xml"
    } else {
        "text/plain"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], answer).into_response())
}
