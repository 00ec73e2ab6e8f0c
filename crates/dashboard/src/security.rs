//! A person's own security: TOTP enrolment (start, scan or type the secret, confirm with a
//! code) and "sign out everywhere". An operator who must have TOTP and has none can reach only
//! this page until they enrol; confirming gives them a fresh, fully signed-in session.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use store::audit::AuditRecord;
use store::sign_in::SessionStage;

use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx, Flash};
use crate::session::{Enrolling, redirect_with_cookie};
use crate::sign_in::Nothing;
use crate::totp::{self, Enrolment};
use crate::{Dashboard, PREFIX};

/// The audit action of a confirmed enrolment.
pub const TOTP_ENROLLED: &str = "person.totp_enrol";

#[derive(Template)]
#[template(path = "security/security.html")]
struct SecurityPage {
    ctx: Ctx,
    /// TOTP is confirmed.
    enabled: bool,
    /// An enrolment waits for its code.
    pending: Option<Enrolment>,
    /// The person must enrol before anything else.
    required: bool,
    error: Option<String>,
}

async fn render(
    dashboard: &Dashboard,
    person: &Enrolling,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(dashboard, &person.visitor).in_section("security");
    let opened = dashboard.open_totp(&person.user.id).await?;
    let enabled = opened
        .as_ref()
        .is_some_and(|(stored, _)| stored.confirmed_at.is_some());
    let pending = match &opened {
        Some((stored, secret)) if stored.confirmed_at.is_none() => {
            Some(dashboard.enrolment(secret, &person.user.email)?)
        }
        _ => None,
    };
    Ok(layout::page(
        status,
        &SecurityPage {
            ctx,
            enabled,
            pending,
            required: person.stage == SessionStage::Enrol,
            error,
        },
    ))
}

/// `GET /dashboard/security`.
pub(crate) async fn page(
    State(dashboard): State<Dashboard>,
    person: Enrolling,
) -> Result<Response, DashboardError> {
    render(&dashboard, &person, StatusCode::OK, None).await
}

/// `POST /dashboard/security/totp`: a fresh secret to enrol (replacing an unconfirmed one).
pub(crate) async fn totp_start(
    State(dashboard): State<Dashboard>,
    person: Enrolling,
    CsrfForm(Nothing {}): CsrfForm<Nothing>,
) -> Result<Response, DashboardError> {
    if !dashboard.begin_totp(&person.user.id).await? {
        tracing::info!(user = %person.user.id, "TOTP is already enrolled");
    }
    Ok(Redirect::to(&format!("{PREFIX}/security")).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Code {
    code: String,
}

/// `POST /dashboard/security/totp/confirm`: the first code confirms the enrolment.
pub(crate) async fn totp_confirm(
    State(dashboard): State<Dashboard>,
    person: Enrolling,
    CsrfForm(form): CsrfForm<Code>,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let Some((stored, secret)) = dashboard.open_totp(&person.user.id).await? else {
        return Ok(Redirect::to(&format!("{PREFIX}/security")).into_response());
    };
    if stored.confirmed_at.is_some() {
        return Ok(Redirect::to(&format!("{PREFIX}/security")).into_response());
    }
    let Some(step) = totp::check_code(secret.expose(), &form.code, dashboard.now()) else {
        let error = Some(ctx.t("security.code_wrong").to_owned());
        return render(&dashboard, &person, StatusCode::UNPROCESSABLE_ENTITY, error).await;
    };
    let record = AuditRecord::new(person.user.id.clone(), TOTP_ENROLLED)
        .target(person.user.id.clone())
        .details(json!({ "email": person.user.email }));
    dashboard
        .tenancy()
        .store()
        .confirm_totp(&person.user.id, step, dashboard.now(), &record)
        .await?;
    // A stronger sign-in: a new session id (and the end of the enrolment-only stage).
    let cookie = dashboard
        .begin_session(&person.visitor, &person.user, SessionStage::Full)
        .await?;
    Ok(redirect_with_cookie(
        &Flash::TotpEnabled.on(&Dashboard::home_of(person.user.role)),
        cookie,
    ))
}
