//! What operators see: every account with its health (keyset pages, so a page costs the same
//! at account 100,000 as at account 1), every owner, and the invitation of new owners.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::people::{Role, User};
use store::sign_in::NO_PASSWORD;
use tenancy::TenancyError;

use crate::accounts::{self, After, PAGE};
use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx, Flash};
use crate::session::OperatorSession;
use crate::{Dashboard, PREFIX, link_url, time};
use ::accounts::rotation;
use store::DbEnum;
use store::sealed::DekHolder;

#[derive(Template)]
#[template(path = "operator/accounts.html")]
struct AccountsPage {
    ctx: Ctx,
    list: accounts::Listing,
}

/// `GET /dashboard/operator/accounts`: every account, filtered by state, owner, kind or a
/// search.
pub(crate) async fn accounts(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(filters): Query<accounts::Filters>,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(&dashboard, &operator.visitor).in_section("all_accounts");
    let list = accounts::listing(&dashboard, &ctx, &operator, filters).await?;
    Ok(layout::page(list.status(), &AccountsPage { ctx, list }))
}

/// An owner as the list shows them.
struct OwnerRow {
    id: String,
    email: String,
    disabled: bool,
    /// Their accounts in the list of every account.
    accounts: String,
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
                id: user.id.clone(),
                email: user.email.clone(),
                disabled: user.disabled,
                accounts: format!(
                    "/dashboard/operator/accounts?{}",
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("owner", &user.email)
                        .finish()
                ),
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

/// `POST /dashboard/operator/owners/{id}/disable`: the owner can no longer sign in; their
/// sessions end. Their accounts keep being served.
pub(crate) async fn disable_owner(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Path(id): Path<String>,
) -> Result<Response, DashboardError> {
    set_owner_disabled(&dashboard, &operator, &id, true).await
}

/// `POST /dashboard/operator/owners/{id}/reset-totp`: the owner lost their authenticator;
/// they sign in with their password and enrol a new one.
pub(crate) async fn reset_owner_totp(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Path(id): Path<String>,
) -> Result<Response, DashboardError> {
    let flash = match dashboard
        .tenancy()
        .reset_person_totp(&operator.principal, &id)
        .await
    {
        Ok(()) => Flash::TotpReset,
        // Nothing to reset (never enrolled): said on the page, nothing changed.
        Err(TenancyError::Invalid { field: "user", .. }) => Flash::NoTotpToReset,
        Err(error) => return Err(error.into()),
    };
    Ok(Redirect::to(&flash.on(&format!("{PREFIX}/operator/owners"))).into_response())
}

/// `POST /dashboard/operator/owners/{id}/enable`.
pub(crate) async fn enable_owner(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Path(id): Path<String>,
) -> Result<Response, DashboardError> {
    set_owner_disabled(&dashboard, &operator, &id, false).await
}

async fn set_owner_disabled(
    dashboard: &Dashboard,
    operator: &crate::session::SignedIn,
    id: &str,
    disabled: bool,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .set_person_disabled(&operator.principal, id, disabled)
        .await?;
    let flash = if disabled {
        Flash::OwnerDisabled
    } else {
        Flash::OwnerEnabled
    };
    Ok(Redirect::to(&flash.on(&format!("{PREFIX}/operator/owners"))).into_response())
}

/// One count of the health page.
struct CountRow {
    label: String,
    tone: &'static str,
    count: i64,
    /// The list of every account, filtered to these.
    link: String,
}

/// One master key and what it wraps.
struct KeyRow {
    id: String,
    active: bool,
    missing: bool,
    wraps: String,
}

/// One ID-token signing key.
struct SigningRow {
    kid: String,
    algorithm: String,
    status: String,
    since: String,
}

#[derive(Template)]
#[template(path = "operator/health.html")]
struct HealthPage {
    ctx: Ctx,
    intro: String,
    counts: Vec<CountRow>,
    attention: Vec<accounts::AccountRow>,
    /// Links to the full lists of the states with more accounts than shown.
    more: Vec<CountRow>,
    keys: Vec<KeyRow>,
    /// What re-wrapping still has to do, when anything.
    pending_rewrap: Option<String>,
    signing: Vec<SigningRow>,
}

/// `GET /dashboard/operator/health`.
pub(crate) async fn health(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
) -> Result<Response, DashboardError> {
    use store::oidc::signing_keys::SigningKeyStatus;
    use store::tokens::TokenState;

    let health = dashboard
        .tenancy()
        .platform_health(&operator.principal)
        .await?;
    let ctx = Ctx::new(&dashboard, &operator.visitor).in_section("health");
    let count_row = |state: &'static str, count: i64| CountRow {
        label: ctx.t(accounts::state_label(state)).to_owned(),
        tone: accounts::state_tone(state),
        count,
        link: format!("/dashboard/operator/accounts?state={state}"),
    };
    let mut counts: Vec<CountRow> = [
        TokenState::Healthy,
        TokenState::Pending,
        TokenState::Retrying,
        TokenState::NeedsAttention,
        TokenState::QuotaExhausted,
    ]
    .into_iter()
    .map(|state| count_row(state.as_db(), health.count(state)))
    .collect();
    counts.push(count_row("disabled", health.disabled()));
    let more = health
        .attention_more
        .iter()
        .map(|state| {
            let mut row = count_row(state.as_db(), health.count(*state));
            row.label = ctx.tf(
                "platform.all_in_state",
                &[("n", &row.count.to_string()), ("state", &row.label)],
            );
            row
        })
        .collect();
    let describe = |key: &rotation::KeyUse| {
        let parts: Vec<String> = key
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(holder, n)| {
                let label = match holder {
                    DekHolder::AccountSecrets => "platform.wraps_accounts",
                    DekHolder::SigningKey => "platform.wraps_signing_keys",
                    DekHolder::TotpSecret => "platform.wraps_totp",
                };
                ctx.tf(label, &[("n", &n.to_string())])
            })
            .collect();
        if parts.is_empty() {
            ctx.t("platform.wraps_nothing").to_owned()
        } else {
            parts.join(" · ")
        }
    };
    let keys = health
        .vault
        .keys
        .iter()
        .map(|key| (key, false))
        .chain(health.vault.missing.iter().map(|key| (key, true)))
        .map(|(key, missing)| KeyRow {
            id: key.kek_id.clone(),
            active: key.kek_id == health.vault.active,
            missing,
            wraps: describe(key),
        })
        .collect();
    let signing = health
        .signing_keys
        .iter()
        .map(|key| SigningRow {
            kid: key.kid.clone(),
            algorithm: key.algorithm.clone(),
            status: ctx
                .t(match key.status {
                    SigningKeyStatus::Next => "platform.signing_next",
                    SigningKeyStatus::Active => "platform.signing_active",
                    SigningKeyStatus::Retired => "platform.signing_retired",
                })
                .to_owned(),
            since: time::format(key.retired_at.unwrap_or(key.created_at)),
        })
        .collect();
    let pending = health.vault.pending_rewrap();
    let page = HealthPage {
        intro: ctx.tf("platform.intro", &[("n", &health.total().to_string())]),
        attention: accounts::rows(&ctx, &health.attention, dashboard.now()),
        pending_rewrap: (pending > 0)
            .then(|| ctx.tf("platform.rewrap_pending", &[("n", &pending.to_string())])),
        counts,
        more,
        keys,
        signing,
        ctx,
    };
    Ok(layout::page(StatusCode::OK, &page))
}
