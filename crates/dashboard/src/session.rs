//! Sessions and cookies: starting, rotating and ending sessions, and the extractors that let a
//! handler run only for the right kind of visitor.
//!
//! A session is a random 256-bit token in a cookie; the database keeps only its SHA-256, so a
//! copy of the database signs nobody in. On https the cookie is `__Host-wxhub_session` with
//! `Secure; HttpOnly; SameSite=Lax; Path=/` (the prefix makes browsers refuse it from plain
//! http or another domain); on plain http (the demo on loopback) it is `wxhub_session` without
//! `Secure`. Every step up — password accepted, TOTP code accepted, second factor enrolled —
//! starts a new session and ends the previous one, so an id known before sign-in is worth
//! nothing after it.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng;
use rand::rngs::SysRng;
use store::people::{Role, User};
use store::sign_in::{NewSession, SessionStage};
use tenancy::Principal;

use crate::context::Visitor;
use crate::error::DashboardError;
use crate::{Dashboard, PREFIX};

/// The names of the dashboard's cookies, by whether they are https-only.
#[derive(Debug, Clone)]
pub(crate) struct CookieNames {
    pub(crate) session: &'static str,
    /// The random value that binds an anonymous visitor's forms (sign-in, setup) to their
    /// browser, as the session token does once signed in.
    pub(crate) binding: &'static str,
    pub(crate) secure: bool,
}

impl CookieNames {
    pub(crate) fn new(secure: bool) -> Self {
        if secure {
            Self {
                session: "__Host-wxhub_session",
                binding: "__Host-wxhub_form",
                secure,
            }
        } else {
            Self {
                session: "wxhub_session",
                binding: "wxhub_form",
                secure,
            }
        }
    }
}

/// A fresh random token: 32 bytes from the operating system, base64url.
pub(crate) fn random_token() -> Result<String, DashboardError> {
    let mut bytes = [0u8; 32];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| DashboardError::Internal("the system random source failed"))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    bytes.fill(0);
    Ok(token)
}

/// What the database stores of a token.
pub(crate) fn token_hash(token: &str) -> String {
    tenancy::credentials::hash_secret(token)
}

/// The value of cookie `name` in the request, if sent.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// A `Set-Cookie` value. `max_age` `None` is a cookie for the browser session; `Some(0)`
/// removes it.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    secure: bool,
    max_age: Option<Duration>,
) -> HeaderValue {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        text.push_str("; Secure");
    }
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Dashboard {
    /// Starts a session for `user` at `stage`, ending the visitor's current one, and returns
    /// the `Set-Cookie` header that hands the new token to the browser.
    pub(crate) async fn begin_session(
        &self,
        visitor: &Visitor,
        user: &User,
        stage: SessionStage,
    ) -> Result<HeaderValue, DashboardError> {
        let token = random_token()?;
        let config = &self.inner().config;
        let lifetime = match stage {
            SessionStage::SecondFactor => config.second_factor_timeout,
            SessionStage::Enrol | SessionStage::Full => config.absolute_timeout,
        };
        let now = self.now();
        let session = NewSession {
            id: token_hash(&token),
            user_id: user.id.clone(),
            stage,
            expires_at: now.saturating_add(millis(lifetime)),
        };
        let replaces = visitor.session.as_ref().map(|s| s.live.session.id.as_str());
        self.tenancy()
            .store()
            .start_session(&session, now, replaces)
            .await?;
        Ok(self.session_cookie(&token))
    }

    /// The stage a person's session starts at once their password is right.
    pub(crate) async fn stage_after_password(
        &self,
        user: &User,
    ) -> Result<SessionStage, DashboardError> {
        let totp = self.tenancy().store().user_totp(&user.id).await?;
        Ok(if totp.is_some_and(|t| t.confirmed_at.is_some()) {
            SessionStage::SecondFactor
        } else if user.role == Role::Operator && self.inner().config.require_totp_for_operators {
            SessionStage::Enrol
        } else {
            SessionStage::Full
        })
    }

    pub(crate) fn session_cookie(&self, token: &str) -> HeaderValue {
        let names = &self.inner().cookies;
        set_cookie(names.session, token, names.secure, None)
    }

    pub(crate) fn clear_session_cookie(&self) -> HeaderValue {
        let names = &self.inner().cookies;
        set_cookie(names.session, "", names.secure, Some(Duration::ZERO))
    }

    /// Where a person goes once fully signed in.
    pub(crate) fn home_of(role: Role) -> String {
        match role {
            Role::Owner => format!("{PREFIX}/accounts"),
            Role::Operator => format!("{PREFIX}/operator/accounts"),
        }
    }
}

/// A redirect that also sets a cookie.
pub(crate) fn redirect_with_cookie(to: &str, cookie: HeaderValue) -> Response {
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Where a visitor who may not see a page is sent instead: to sign in, to the code, or to
/// enrol a second factor.
fn elsewhere(visitor: &Visitor) -> Response {
    let to = match visitor.session.as_ref().map(|s| s.live.stage) {
        None => format!("{PREFIX}/sign-in"),
        Some(SessionStage::SecondFactor) => format!("{PREFIX}/sign-in/code"),
        Some(SessionStage::Enrol) | Some(SessionStage::Full) => format!("{PREFIX}/security"),
    };
    Redirect::to(&to).into_response()
}

/// A fully signed-in person with their principal.
#[derive(Clone)]
pub(crate) struct SignedIn {
    pub(crate) visitor: Visitor,
    pub(crate) principal: Principal,
}

impl FromRequestParts<Dashboard> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_parts(parts).map_err(IntoResponse::into_response)?;
        let Some(session) = visitor
            .session
            .as_ref()
            .filter(|s| s.live.stage == SessionStage::Full)
        else {
            return Err(elsewhere(&visitor));
        };
        let user_id = session.live.user.id.clone();
        match dashboard.tenancy().principal_for_user(&user_id).await {
            Ok(principal) => Ok(SignedIn { visitor, principal }),
            Err(tenancy::TenancyError::NotFound { .. }) => {
                Err(Redirect::to(&format!("{PREFIX}/sign-in")).into_response())
            }
            Err(error) => Err(DashboardError::from(error).into_response()),
        }
    }
}

/// A signed-in owner.
pub(crate) struct OwnerSession(pub(crate) SignedIn);

impl FromRequestParts<Dashboard> for OwnerSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let signed_in = SignedIn::from_request_parts(parts, dashboard).await?;
        match signed_in.principal {
            Principal::Owner { .. } => Ok(OwnerSession(signed_in)),
            _ => Err(DashboardError::Forbidden.into_response()),
        }
    }
}

/// A signed-in operator.
pub(crate) struct OperatorSession(pub(crate) SignedIn);

impl FromRequestParts<Dashboard> for OperatorSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        dashboard: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let signed_in = SignedIn::from_request_parts(parts, dashboard).await?;
        match signed_in.principal {
            Principal::Operator { .. } => Ok(OperatorSession(signed_in)),
            _ => Err(DashboardError::Forbidden.into_response()),
        }
    }
}

/// A signed-in person, also one who may only enrol a second factor so far.
pub(crate) struct Enrolling {
    pub(crate) visitor: Visitor,
    pub(crate) user: User,
    pub(crate) stage: SessionStage,
}

impl FromRequestParts<Dashboard> for Enrolling {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _dashboard: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_parts(parts).map_err(IntoResponse::into_response)?;
        match visitor
            .session
            .as_ref()
            .map(|s| (s.live.stage, s.live.user.clone()))
        {
            Some((stage @ (SessionStage::Full | SessionStage::Enrol), user)) => Ok(Enrolling {
                visitor,
                user,
                stage,
            }),
            _ => Err(elsewhere(&visitor)),
        }
    }
}

/// A session waiting for its TOTP code.
pub(crate) struct AwaitingCode {
    pub(crate) visitor: Visitor,
    pub(crate) user: User,
}

impl FromRequestParts<Dashboard> for AwaitingCode {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _dashboard: &Dashboard,
    ) -> Result<Self, Self::Rejection> {
        let visitor = Visitor::from_parts(parts).map_err(IntoResponse::into_response)?;
        match visitor.session.as_ref() {
            Some(session) if session.live.stage == SessionStage::SecondFactor => {
                let user = session.live.user.clone();
                Ok(AwaitingCode { visitor, user })
            }
            _ => Err(elsewhere(&visitor)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; wxhub_session=abc"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("wxhub_lang=en"));
        assert_eq!(cookie(&headers, "wxhub_session"), Some("abc"));
        assert_eq!(cookie(&headers, "wxhub_lang"), Some("en"));
        assert_eq!(cookie(&headers, "wxhub"), None);
    }

    #[test]
    fn https_cookies_carry_the_host_prefix_and_secure() {
        let names = CookieNames::new(true);
        assert_eq!(names.session, "__Host-wxhub_session");
        let value = set_cookie(names.session, "t", true, None);
        assert_eq!(
            value.to_str().unwrap(),
            "__Host-wxhub_session=t; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = set_cookie(CookieNames::new(false).session, "t", false, None);
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }
}
