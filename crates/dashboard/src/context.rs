//! The one middleware around every dashboard route. Before the handler it works out who the
//! visitor is (language, live session, the value their forms are bound to) and, for every
//! request that may change something (any method but GET/HEAD/OPTIONS), refuses it unless it
//! comes from the dashboard's own origin and carries the form token bound to this browser —
//! whether or not the handler reads a form. After the handler it renders error pages in the
//! visitor's language, sets the security headers, and sets or clears cookies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use store::sign_in::LiveSession;

use crate::csrf::{self, CheckedForm};
use crate::error::{DashboardError, ErrorPage};
use crate::i18n::{LANG_COOKIE, Lang};
use crate::layout::{self, Ctx, Flash};
use crate::session::{self, cookie};
use crate::{Dashboard, PREFIX};

/// The largest form body accepted.
const FORM_LIMIT: usize = 64 * 1024;

/// The signed-in part of a visitor.
#[derive(Debug)]
pub(crate) struct CurrentSession {
    pub(crate) live: LiveSession,
}

/// Who is asking, as the middleware found out.
#[derive(Clone)]
pub(crate) struct Visitor {
    pub(crate) lang: Lang,
    pub(crate) session: Option<Arc<CurrentSession>>,
    /// The form token of this browser (bound to its session, or to its anonymous binding
    /// cookie before sign-in).
    pub(crate) csrf: String,
    pub(crate) ip: Option<IpAddr>,
    /// The path asked for (where the language switch returns to).
    pub(crate) path: String,
    pub(crate) flash: Option<Flash>,
}

impl std::fmt::Debug for Visitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visitor")
            .field("lang", &self.lang)
            .field("session", &self.session)
            .field("ip", &self.ip)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Visitor {
    /// The visitor the middleware stored for this request.
    pub(crate) fn from_parts(parts: &Parts) -> Result<Visitor, DashboardError> {
        parts
            .extensions
            .get::<Visitor>()
            .cloned()
            .ok_or(DashboardError::Internal(
                "a dashboard route ran outside the dashboard's middleware",
            ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Visitor::from_parts(parts)
    }
}

/// Cookies to set on the way out.
#[derive(Default)]
struct Cookies {
    /// A new anonymous binding, for a browser that had none.
    binding: Option<String>,
    /// The session cookie named no live session: remove it.
    clear_session: bool,
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware.
pub(crate) async fn around(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let lang = Lang::negotiate(
        cookie(&parts.headers, LANG_COOKIE),
        parts
            .headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let is_page = !parts.uri.path().starts_with(&format!("{PREFIX}/static/"));
    let (mut response, visitor, cookies) = match handle(&dashboard, parts, body, lang, next).await {
        Ok(done) => done,
        Err((error, visitor, cookies)) => (error.into_response(), visitor, cookies),
    };
    if let Some(page) = response.extensions().get::<ErrorPage>().cloned() {
        let ctx = match &visitor {
            Some(visitor) => Ctx::new(&dashboard, visitor),
            None => Ctx::bare(&dashboard, lang),
        };
        let mut rendered = layout::error_page(&ctx, &page);
        for value in response.headers().get_all(header::SET_COOKIE) {
            rendered
                .headers_mut()
                .append(header::SET_COOKIE, value.clone());
        }
        if let Some(retry) = response.headers().get(header::RETRY_AFTER) {
            rendered
                .headers_mut()
                .insert(header::RETRY_AFTER, retry.clone());
        }
        response = rendered;
    }
    let names = &dashboard.inner().cookies;
    let headers = response.headers_mut();
    // A handler that started a session has set the cookie already.
    if cookies.clear_session && !headers.contains_key(header::SET_COOKIE) {
        headers.append(header::SET_COOKIE, dashboard.clear_session_cookie());
    }
    if let Some(binding) = cookies.binding {
        headers.append(
            header::SET_COOKIE,
            session::set_cookie(names.binding, &binding, names.secure, None),
        );
    }
    security_headers(headers, is_page);
    response
}

type Handled = (Response, Option<Visitor>, Cookies);

async fn handle(
    dashboard: &Dashboard,
    mut parts: Parts,
    body: Body,
    lang: Lang,
    next: Next,
) -> Result<Handled, (DashboardError, Option<Visitor>, Cookies)> {
    let (visitor, cookies) = match find_visitor(dashboard, &parts, lang).await {
        Ok(found) => found,
        Err(error) => return Err((error, None, Cookies::default())),
    };
    let body = if is_safe(&parts.method) {
        body
    } else {
        let checked = match check_request(dashboard, &parts, &visitor, body).await {
            Ok(checked) => checked,
            Err(error) => return Err((error, Some(visitor), cookies)),
        };
        parts.extensions.insert(checked);
        Body::empty()
    };
    parts.extensions.insert(visitor.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    Ok((response, Some(visitor), cookies))
}

/// The visitor of a request: language, live session (touching it), form binding.
async fn find_visitor(
    dashboard: &Dashboard,
    parts: &Parts,
    lang: Lang,
) -> Result<(Visitor, Cookies), DashboardError> {
    let inner = dashboard.inner();
    let mut cookies = Cookies::default();
    let now = dashboard.now();
    let idle = i64::try_from(inner.config.idle_timeout.as_millis()).unwrap_or(i64::MAX);
    let session_token = cookie(&parts.headers, inner.cookies.session).filter(|t| !t.is_empty());
    let mut current = None;
    if let Some(token) = session_token {
        current = inner
            .tenancy
            .store()
            .live_session(&session::token_hash(token), now, now.saturating_sub(idle))
            .await?;
        cookies.clear_session = current.is_none();
    }
    // Forms are bound to the session once there is one, and to a random cookie before.
    let binding = match (&current, session_token) {
        (Some(_), Some(token)) => token.to_owned(),
        _ => match cookie(&parts.headers, inner.cookies.binding).filter(|b| b.len() >= 32) {
            Some(binding) => binding.to_owned(),
            None => {
                let minted = session::random_token()?;
                cookies.binding = Some(minted.clone());
                minted
            }
        },
    };
    let flash = parts
        .uri
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "flash"))
        .and_then(|(_, v)| Flash::from_code(&v));
    let visitor = Visitor {
        lang,
        session: current.map(|live| Arc::new(CurrentSession { live })),
        csrf: csrf::token_for(&binding),
        ip: client_ip(parts),
        path: parts.uri.path().to_owned(),
        flash,
    };
    Ok((visitor, cookies))
}

fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// A request that may change something: from the dashboard's own origin, with this
/// browser's form token. Returns the form's other fields.
async fn check_request(
    dashboard: &Dashboard,
    parts: &Parts,
    visitor: &Visitor,
    body: Body,
) -> Result<CheckedForm, DashboardError> {
    let origin = dashboard.config().public_url.origin().ascii_serialization();
    // The route, not the path: setup and invitation paths carry their link's token.
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("?", MatchedPath::as_str);
    if csrf::is_cross_site(&parts.headers, &origin) {
        tracing::info!(route, "cross-site request refused");
        return Err(DashboardError::CrossSite);
    }
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| DashboardError::BadForm)?;
    csrf::check(&bytes, &visitor.csrf).inspect_err(|_| {
        tracing::info!(route, "form without a valid token refused");
    })
}

/// Headers on every dashboard response. The policy allows the dashboard's own stylesheet and
/// script file and nothing else: no inline script, no framing, no form posting elsewhere. Pages are never cached (they show who is signed in); the referrer is never sent
/// to another site (setup and invitation links carry their token in the path). Not
/// `no-referrer`: under it browsers send `Origin: null` with every form post (Fetch standard,
/// "serializing a request origin"), which the CSRF check must refuse.
fn security_headers(headers: &mut HeaderMap, is_page: bool) {
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if is_page {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
}
