//! What operators see: every account with its health (keyset pages, so a page costs the same
//! at account 100,000 as at account 1), every owner, and the invitation of new owners.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use store::people::{Role, User};
use store::sign_in::NO_PASSWORD;
use tenancy::TenancyError;

use crate::accounts::{self, AccountRow, After, PAGE};
use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx};
use crate::session::OperatorSession;
use crate::{Dashboard, link_url};

#[derive(Template)]
#[template(path = "operator/accounts.html")]
struct AccountsPage {
    ctx: Ctx,
    rows: Vec<AccountRow>,
    next: Option<String>,
    later: bool,
}

/// `GET /dashboard/operator/accounts`.
pub(crate) async fn accounts(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(page): Query<After>,
) -> Result<Response, DashboardError> {
    let views = dashboard
        .tenancy()
        .list_accounts(&operator.principal, page.after.as_deref(), PAGE)
        .await?;
    let ctx = Ctx::new(&dashboard, &operator.visitor).in_section("all_accounts");
    let rows = accounts::rows(&ctx, &views, dashboard.now());
    let next = accounts::next_after(&views).map(|after| format!("?after={after}"));
    Ok(layout::page(
        StatusCode::OK,
        &AccountsPage {
            ctx,
            rows,
            next,
            later: page.after.is_some(),
        },
    ))
}

/// An owner as the list shows them.
struct OwnerRow {
    email: String,
    /// `active`, `invited` or `disabled`: the badge.
    tone: &'static str,
    state: String,
}

/// The invitation just made, shown once.
struct Invited {
    title: String,
    link: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "operator/owners.html")]
struct OwnersPage {
    ctx: Ctx,
    rows: Vec<OwnerRow>,
    next: Option<String>,
    later: bool,
    email: String,
    email_error: Option<String>,
    invited: Option<Invited>,
}

fn owner_rows(ctx: &Ctx, people: &[User]) -> Vec<OwnerRow> {
    people
        .iter()
        .map(|user| {
            let (tone, key) = if user.disabled {
                ("disabled", "owners.disabled")
            } else if user.password_hash == NO_PASSWORD {
                ("invited", "owners.invited")
            } else {
                ("active", "owners.active")
            };
            OwnerRow {
                email: user.email.clone(),
                tone,
                state: ctx.t(key).to_owned(),
            }
        })
        .collect()
}

async fn owners_page(
    dashboard: &Dashboard,
    operator: &crate::session::SignedIn,
    after: Option<&str>,
) -> Result<OwnersPage, DashboardError> {
    let people = dashboard
        .tenancy()
        .list_people_with_role(&operator.principal, Role::Owner, after, PAGE)
        .await?;
    let ctx = Ctx::new(dashboard, &operator.visitor).in_section("owners");
    let next = (people.len() == PAGE as usize)
        .then(|| people.last().map(|p| format!("?after={}", p.id)))
        .flatten();
    Ok(OwnersPage {
        rows: owner_rows(&ctx, &people),
        ctx,
        next,
        later: after.is_some(),
        email: String::new(),
        email_error: None,
        invited: None,
    })
}

/// `GET /dashboard/operator/owners`.
pub(crate) async fn owners(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(page): Query<After>,
) -> Result<Response, DashboardError> {
    let page = owners_page(&dashboard, &operator, page.after.as_deref()).await?;
    Ok(layout::page(StatusCode::OK, &page))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Invite {
    email: String,
}

/// `POST /dashboard/operator/owners`: invites an owner and shows their link once.
pub(crate) async fn invite(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    CsrfForm(form): CsrfForm<Invite>,
) -> Result<Response, DashboardError> {
    let result = dashboard
        .tenancy()
        .invite_person(&operator.principal, &form.email, Role::Owner)
        .await;
    let (status, email_error, invited) = match result {
        Ok(invitation) => {
            let link = link_url(
                &dashboard.config().public_url,
                invitation.link.purpose,
                invitation.link.token.expose(),
            );
            // Rounded up: a link valid for 7 days less a millisecond says 7.
            let days =
                ((invitation.link.expires_at - dashboard.now() + 86_399_999) / 86_400_000).max(1);
            (
                StatusCode::OK,
                None,
                Some((invitation.person.email, link, days)),
            )
        }
        Err(TenancyError::Invalid {
            field: "email",
            message,
        }) => (StatusCode::UNPROCESSABLE_ENTITY, Some(message), None),
        Err(TenancyError::Conflict { .. }) => (
            StatusCode::CONFLICT,
            Some("owners.email_taken".to_owned()),
            None,
        ),
        Err(error) => return Err(error.into()),
    };
    let mut page = owners_page(&dashboard, &operator, None).await?;
    page.email_error = email_error.map(|message| invite_error(&page.ctx, &form.email, &message));
    if page.email_error.is_some() {
        page.email = form.email.trim().to_owned();
    }
    page.invited = invited.map(|(email, link, days)| Invited {
        expires: page
            .ctx
            .tf("owners.link_expires", &[("days", &days.to_string())]),
        title: page.ctx.tf("owners.invited_title", &[("email", &email)]),
        link,
    });
    Ok(layout::page(status, &page))
}

/// The field error of an invitation the tenancy layer refused, in the page's language.
fn invite_error(ctx: &Ctx, email: &str, message: &str) -> String {
    let key = if message == "owners.email_taken" {
        "owners.email_taken"
    } else if message.contains("not an email address") {
        "owners.email_invalid"
    } else if message.contains("set a password already") {
        "owners.has_password"
    } else if message.contains("is disabled") {
        "owners.is_disabled"
    } else if message.contains("registered as an") {
        "owners.is_operator"
    } else {
        return message.to_owned();
    };
    ctx.tf(key, &[("email", email.trim())])
}
