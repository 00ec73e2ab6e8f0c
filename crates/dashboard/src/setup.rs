//! One-time links: an operator's setup link and an owner's invitation open a page where the
//! person chooses their password (and, for the first operator, their email). Using the link
//! is the only way a password is ever set on a person created without one; the link works
//! once, and the person is signed in at once (with a fresh session).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use store::people::Role;
use store::sign_in::{LinkPurpose, PasswordLink, SessionStage};
use tenancy::TenancyError;

use crate::context::Visitor;
use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx, Flash};
use crate::session::redirect_with_cookie;
use crate::{Dashboard, PREFIX, password};

#[derive(Template)]
#[template(path = "setup/password.html")]
struct PasswordPage {
    ctx: Ctx,
    /// Where the form posts: back to the same link, or the sign-up page.
    action: String,
    /// Open sign-up rather than a link.
    sign_up: bool,
    /// The person's email when the link names them; `None`: the page asks for it.
    email: Option<String>,
    /// What was typed into the email field.
    typed_email: String,
    operator: bool,
    email_error: Option<String>,
    password_error: Option<String>,
    min_length: usize,
    password_hint: String,
}

fn kind_of(purpose: LinkPurpose) -> &'static str {
    match purpose {
        LinkPurpose::Setup => "setup",
        LinkPurpose::Invitation => "invitation",
    }
}

/// The link behind `token`, if it works and is of `purpose`.
async fn link(
    dashboard: &Dashboard,
    token: &str,
    purpose: LinkPurpose,
) -> Result<PasswordLink, DashboardError> {
    match dashboard.tenancy().password_link(token).await {
        Ok(link) if link.purpose == purpose => Ok(link),
        Ok(_) | Err(TenancyError::NotFound { .. }) => Err(DashboardError::LinkInvalid),
        Err(error) => Err(error.into()),
    }
}

fn blank(ctx: Ctx, link: &PasswordLink, token: String) -> PasswordPage {
    PasswordPage {
        action: format!("{PREFIX}/{}/{token}", kind_of(link.purpose)),
        sign_up: false,
        email: link.email.clone(),
        typed_email: String::new(),
        operator: link.role == Role::Operator,
        email_error: None,
        password_error: None,
        min_length: password::MIN_LENGTH,
        password_hint: ctx.tf(
            "setup.password_hint",
            &[("min", &password::MIN_LENGTH.to_string())],
        ),
        ctx,
    }
}

async fn show(
    dashboard: Dashboard,
    visitor: Visitor,
    token: String,
    purpose: LinkPurpose,
) -> Result<Response, DashboardError> {
    let link = link(&dashboard, &token, purpose).await?;
    let ctx = Ctx::new(&dashboard, &visitor);
    Ok(layout::page(StatusCode::OK, &blank(ctx, &link, token)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewPassword {
    email: String,
    password: String,
    again: String,
}

async fn submit(
    dashboard: Dashboard,
    visitor: Visitor,
    token: String,
    purpose: LinkPurpose,
    form: NewPassword,
) -> Result<Response, DashboardError> {
    let link = link(&dashboard, &token, purpose).await?;
    let ctx = Ctx::new(&dashboard, &visitor);
    let email = match &link.email {
        Some(email) => email.clone(),
        None => form.email.trim().to_owned(),
    };
    let mut page = blank(ctx, &link, token.clone());
    page.typed_email = form.email.trim().to_owned();
    if link.email.is_none() && !looks_like_email(&email) {
        page.email_error = Some(page.ctx.t("setup.email_invalid").to_owned());
    }
    page.password_error = password_problem(&dashboard, &page.ctx, &form, &email);
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok(layout::page(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(dashboard.shared(), form.password).await?;
    let new_email = link.email.is_none().then_some(email.as_str());
    let user = match dashboard
        .tenancy()
        .use_password_link(&token, new_email, &hash)
        .await
    {
        Ok(user) => user,
        Err(TenancyError::NotFound { .. }) => return Err(DashboardError::LinkInvalid),
        Err(TenancyError::Conflict { .. }) => {
            page.email_error = Some(page.ctx.t("setup.email_taken").to_owned());
            return Ok(layout::page(StatusCode::CONFLICT, &page));
        }
        Err(TenancyError::Invalid { field: "email", .. }) => {
            page.email_error = Some(page.ctx.t("setup.email_invalid").to_owned());
            return Ok(layout::page(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        Err(error) => return Err(error.into()),
    };
    signed_in_with_new_password(&dashboard, &visitor, &user).await
}

/// A person who just chose their password: a new session, whatever the browser had before,
/// and on to their next step (enrolment, the code, or their first page).
async fn signed_in_with_new_password(
    dashboard: &Dashboard,
    visitor: &Visitor,
    user: &store::people::User,
) -> Result<Response, DashboardError> {
    let stage = dashboard.stage_after_password(user).await?;
    let cookie = dashboard.begin_session(visitor, user, stage).await?;
    let to = match stage {
        SessionStage::Enrol => format!("{PREFIX}/security"),
        SessionStage::SecondFactor => format!("{PREFIX}/sign-in/code"),
        SessionStage::Full => Dashboard::home_of(user.role),
    };
    Ok(redirect_with_cookie(&Flash::PasswordSet.on(&to), cookie))
}

/// What is wrong with the password typed, in the page's language, if anything.
fn password_problem(
    dashboard: &Dashboard,
    ctx: &Ctx,
    form: &NewPassword,
    email: &str,
) -> Option<String> {
    let problem = dashboard
        .inner()
        .passwords
        .check(&form.password, &form.again, email)
        .err()?;
    Some(ctx.tf(problem.key(), &[("min", &password::MIN_LENGTH.to_string())]))
}

/// The same rule as the tenancy layer's (which has the last word): one `@`, a dotted domain.
fn looks_like_email(email: &str) -> bool {
    email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
}

/// `GET /dashboard/setup/{token}`.
pub(crate) async fn setup_form(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, DashboardError> {
    show(dashboard, visitor, token, LinkPurpose::Setup).await
}

/// `POST /dashboard/setup/{token}`.
pub(crate) async fn setup_submit(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<NewPassword>,
) -> Result<Response, DashboardError> {
    submit(dashboard, visitor, token, LinkPurpose::Setup, form).await
}

/// `GET /dashboard/invitation/{token}`.
pub(crate) async fn invitation_form(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, DashboardError> {
    show(dashboard, visitor, token, LinkPurpose::Invitation).await
}

/// `POST /dashboard/invitation/{token}`.
pub(crate) async fn invitation_submit(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
    Path(token): Path<String>,
    CsrfForm(form): CsrfForm<NewPassword>,
) -> Result<Response, DashboardError> {
    submit(dashboard, visitor, token, LinkPurpose::Invitation, form).await
}

fn sign_up_page(ctx: Ctx) -> PasswordPage {
    PasswordPage {
        action: format!("{PREFIX}/sign-up"),
        sign_up: true,
        email: None,
        typed_email: String::new(),
        operator: false,
        email_error: None,
        password_error: None,
        min_length: password::MIN_LENGTH,
        password_hint: ctx.tf(
            "setup.password_hint",
            &[("min", &password::MIN_LENGTH.to_string())],
        ),
        ctx,
    }
}

/// `GET /dashboard/sign-up`: anyone may become an owner, when the hub allows open sign-up
/// (otherwise there is no such page).
pub(crate) async fn sign_up_form(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
) -> Result<Response, DashboardError> {
    if !dashboard.tenancy().config().open_sign_up {
        return Err(DashboardError::NotFound);
    }
    let ctx = Ctx::new(&dashboard, &visitor);
    Ok(layout::page(StatusCode::OK, &sign_up_page(ctx)))
}

/// `POST /dashboard/sign-up`: a new owner with a password, signed in at once. Rate-limited
/// like sign-in, per address and per email.
pub(crate) async fn sign_up_submit(
    State(dashboard): State<Dashboard>,
    visitor: Visitor,
    CsrfForm(form): CsrfForm<NewPassword>,
) -> Result<Response, DashboardError> {
    if !dashboard.tenancy().config().open_sign_up {
        return Err(DashboardError::NotFound);
    }
    let ctx = Ctx::new(&dashboard, &visitor);
    let email = form.email.trim().to_owned();
    let mut page = sign_up_page(ctx);
    page.typed_email = email.clone();
    if let Err(wait) = dashboard
        .inner()
        .limits
        .attempt(visitor.ip, &format!("sign-up:{}", email.to_lowercase()))
    {
        let minutes = wait.as_secs().div_ceil(60).max(1).to_string();
        page.email_error = Some(page.ctx.tf("sign_in.too_many", &[("minutes", &minutes)]));
        return Ok(layout::page(StatusCode::TOO_MANY_REQUESTS, &page));
    }
    if !looks_like_email(&email) {
        page.email_error = Some(page.ctx.t("setup.email_invalid").to_owned());
    }
    page.password_error = password_problem(&dashboard, &page.ctx, &form, &email);
    if page.email_error.is_some() || page.password_error.is_some() {
        return Ok(layout::page(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(dashboard.shared(), form.password).await?;
    let user = match dashboard.tenancy().sign_up_owner(&email, &hash).await {
        Ok(user) => user,
        Err(TenancyError::Conflict { .. }) => {
            page.email_error = Some(page.ctx.t("setup.email_taken").to_owned());
            return Ok(layout::page(StatusCode::CONFLICT, &page));
        }
        Err(TenancyError::Invalid { field: "email", .. }) => {
            page.email_error = Some(page.ctx.t("setup.email_invalid").to_owned());
            return Ok(layout::page(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        Err(error) => return Err(error.into()),
    };
    signed_in_with_new_password(&dashboard, &visitor, &user).await
}
