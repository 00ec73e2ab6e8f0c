//! Signing in and out: the hub's root, the sign-in form, the TOTP code step, sign out and
//! sign out everywhere, and the language switch.
//!
//! A wrong password, an unknown email, a disabled person and a person who never set a
//! password all get the same page, after the same argon2id work; the rate limits count the
//! email typed whether or not anyone has it.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::sign_in::SessionStage;

use crate::context::Visitor;
use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::i18n::{LANG_COOKIE, Lang};
use crate::layout::{self, Ctx, Flash};
use crate::session::{AwaitingCode, Enrolling, redirect_with_cookie};
use crate::{Dashboard, PREFIX, password};

/// `GET /`: the hub's root leads to the dashboard.
pub(crate) async fn hub_root() -> Redirect {
    Redirect::to(&format!("{PREFIX}/"))
}

/// `GET /dashboard/`: the person's first page, or the sign-in form.
pub(crate) async fn start(visitor: Visitor) -> Redirect {
    match visitor.session.as_ref().map(|s| &s.live) {
        Some(live) if live.stage == SessionStage::Full => {
            Redirect::to(&Dashboard::home_of(live.user.role))
        }
        Some(live) if live.stage == SessionStage::Enrol => {
            Redirect::to(&format!("{PREFIX}/security"))
        }
        Some(_) => Redirect::to(&format!("{PREFIX}/sign-in/code")),
        None => Redirect::to(&format!("{PREFIX}/sign-in")),
    }
}

#[derive(Deserialize)]
pub(crate) struct Back {
    back: Option<String>,
}

/// `GET /dashboard/language/{lang}?back=…`: remembers the choice in a cookie (a preference,
/// no server state) and returns to the page it came from, if that is a dashboard page.
pub(crate) async fn switch_language(
    State(dashboard): State<Dashboard>,
    Path(code): Path<String>,
    Query(back): Query<Back>,
) -> Result<Response, DashboardError> {
    let lang = Lang::from_code(&code).ok_or(DashboardError::NotFound)?;
    let back = back
        .back
        .filter(|b| {
            (b == PREFIX || b.starts_with(&format!("{PREFIX}/")))
                && !b.contains("//")
                && !b.contains('\\')
        })
        .unwrap_or_else(|| format!("{PREFIX}/"));
    let secure = dashboard.config().secure_cookies();
    let cookie = format!(
        "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax{}",
        lang.code(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&back).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "sign_in/sign_in.html")]
struct SignInPage {
    ctx: Ctx,
    /// Open sign-up is on: the page links to it.
    sign_up: bool,
    email: String,
    /// Translation key of the error, if any.
    error: Option<String>,
}

/// `GET /dashboard/sign-in`.
pub(crate) async fn form(State(dashboard): State<Dashboard>, visitor: Visitor) -> Response {
    let ctx = Ctx::new(&dashboard, &visitor);
    layout::page(
        StatusCode::OK,
        &SignInPage {
            sign_up: dashboard.tenancy().config().open_sign_up,
            ctx,
            email: String::new(),
            error: None,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Credentials {
    email: String,
    password: String,
}

fn too_many(ctx: &Ctx, wait: std::time::Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1).to_string();
    ctx.tf("sign_in.too_many", &[("minutes", &minutes)])
}

/// `POST /dashboard/sign-in`.
pub(crate) async fn submit(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
    CsrfForm(form): CsrfForm<Credentials>,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(&dashboard, &visitor);
    let email = form.email.trim().to_owned();
    let refuse = |ctx: Ctx, status: StatusCode, error: String, email: String| {
        layout::page(
            status,
            &SignInPage {
                sign_up: dashboard.tenancy().config().open_sign_up,
                ctx,
                email,
                error: Some(error),
            },
        )
    };
    if let Err(wait) = dashboard.inner().limits.attempt(visitor.ip, &email) {
        let message = too_many(&ctx, wait);
        let mut response = refuse(ctx, StatusCode::TOO_MANY_REQUESTS, message, email);
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let user = dashboard
        .tenancy()
        .store()
        .find_user_by_email(&email)
        .await?
        .filter(|user| !user.disabled);
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let right = password::verify(dashboard.shared(), stored, form.password).await;
    let Some(user) = user.filter(|_| right) else {
        let message = ctx.t("sign_in.wrong").to_owned();
        return Ok(refuse(ctx, StatusCode::UNAUTHORIZED, message, email));
    };
    let stage = dashboard.stage_after_password(&user).await?;
    let cookie = dashboard.begin_session(&visitor, &user, stage).await?;
    let to = match stage {
        SessionStage::SecondFactor => format!("{PREFIX}/sign-in/code"),
        SessionStage::Enrol => format!("{PREFIX}/security"),
        SessionStage::Full => Dashboard::home_of(user.role),
    };
    Ok(redirect_with_cookie(&to, cookie))
}

#[derive(Template)]
#[template(path = "sign_in/code.html")]
struct CodePage {
    ctx: Ctx,
    error: Option<String>,
}

/// `GET /dashboard/sign-in/code`.
pub(crate) async fn code_form(
    State(dashboard): State<Dashboard>,
    waiting: AwaitingCode,
) -> Response {
    let ctx = Ctx::new(&dashboard, &waiting.visitor);
    layout::page(StatusCode::OK, &CodePage { ctx, error: None })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Code {
    code: String,
}

/// `POST /dashboard/sign-in/code`.
pub(crate) async fn code_submit(
    State(dashboard): State<Dashboard>,
    waiting: AwaitingCode,
    CsrfForm(form): CsrfForm<Code>,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(&dashboard, &waiting.visitor);
    let user = &waiting.user;
    if let Err(wait) = dashboard
        .inner()
        .limits
        .attempt(waiting.visitor.ip, &user.email)
    {
        let error = Some(too_many(&ctx, wait));
        return Ok(layout::page(
            StatusCode::TOO_MANY_REQUESTS,
            &CodePage { ctx, error },
        ));
    }
    if !dashboard.accept_sign_in_code(&user.id, &form.code).await? {
        let error = Some(ctx.t("sign_in.code_wrong").to_owned());
        return Ok(layout::page(
            StatusCode::UNAUTHORIZED,
            &CodePage { ctx, error },
        ));
    }
    let cookie = dashboard
        .begin_session(&waiting.visitor, user, SessionStage::Full)
        .await?;
    Ok(redirect_with_cookie(&Dashboard::home_of(user.role), cookie))
}

/// No fields: the form only carries its token.
#[derive(Deserialize, Default)]
pub(crate) struct Nothing {}

/// `POST /dashboard/sign-out`.
pub(crate) async fn sign_out(
    State(dashboard): State<Dashboard>,
    person: Enrolling,
    CsrfForm(Nothing {}): CsrfForm<Nothing>,
) -> Result<Response, DashboardError> {
    if let Some(session) = &person.visitor.session {
        dashboard
            .tenancy()
            .store()
            .delete_session(&session.live.session.id)
            .await?;
    }
    Ok(redirect_with_cookie(
        &Flash::SignedOut.on(&format!("{PREFIX}/sign-in")),
        dashboard.clear_session_cookie(),
    ))
}

/// `POST /dashboard/sign-out-everywhere`: ends every session of the person, on every device.
pub(crate) async fn sign_out_everywhere(
    State(dashboard): State<Dashboard>,
    person: Enrolling,
    CsrfForm(Nothing {}): CsrfForm<Nothing>,
) -> Result<Response, DashboardError> {
    let ended = dashboard
        .tenancy()
        .store()
        .end_sessions_of_user(&person.user.id)
        .await?;
    tracing::info!(user = %person.user.id, ended, "signed out everywhere");
    Ok(redirect_with_cookie(
        &Flash::SignedOutEverywhere.on(&format!("{PREFIX}/sign-in")),
        dashboard.clear_session_cookie(),
    ))
}
