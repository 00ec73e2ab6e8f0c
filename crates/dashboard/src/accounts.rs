//! An owner's accounts, each with its health badge: where its core token stands, when it
//! expires, today's token fetches against the daily budget, and — when the last failure is
//! one a person can fix — what to do, in the page's language. The rows are shared with the
//! operator's list of every account.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use store::accounts::AccountState;
use store::tokens::TokenState;
use tenancy::tenants::AccountView;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::i18n::Lang;
use crate::layout::{self, Ctx};
use crate::session::OwnerSession;

/// Accounts per page.
pub(crate) const PAGE: u32 = 50;

/// One account as a list shows it.
pub(crate) struct AccountRow {
    pub(crate) appid: String,
    pub(crate) name: String,
    pub(crate) disabled: bool,
    /// `ok`, `busy`, `bad` or `idle`: the badge's colour.
    pub(crate) tone: &'static str,
    pub(crate) state: String,
    pub(crate) expires: String,
    pub(crate) fetches: String,
    pub(crate) fix: Option<String>,
}

fn state_key(state: TokenState) -> &'static str {
    match state {
        TokenState::Pending => "health.pending",
        TokenState::Healthy => "health.healthy",
        TokenState::Retrying => "health.retrying",
        TokenState::NeedsAttention => "health.needs_attention",
        TokenState::QuotaExhausted => "health.quota_exhausted",
    }
}

/// Every token state's translation key (the translation test walks these).
#[cfg(test)]
pub(crate) const STATE_KEYS: [&str; 5] = [
    "health.pending",
    "health.healthy",
    "health.retrying",
    "health.needs_attention",
    "health.quota_exhausted",
];

fn tone(state: TokenState) -> &'static str {
    match state {
        TokenState::Healthy => "ok",
        TokenState::Retrying => "busy",
        TokenState::NeedsAttention | TokenState::QuotaExhausted => "bad",
        TokenState::Pending => "idle",
    }
}

/// "in 1 h 5 min", "in 3 min", "expired", or "—" without a token.
fn expires_in(ctx: &Ctx, expires_at: Option<i64>, now: i64) -> String {
    let Some(at) = expires_at else {
        return "—".to_owned();
    };
    let minutes = (at - now).div_euclid(60_000);
    if minutes < 0 {
        return ctx.t("health.expired").to_owned();
    }
    let (hours, minutes) = (minutes / 60, minutes % 60);
    if hours > 0 {
        ctx.tf(
            "health.expires_hours",
            &[("h", &hours.to_string()), ("m", &minutes.to_string())],
        )
    } else {
        ctx.tf("health.expires_minutes", &[("m", &minutes.to_string())])
    }
}

/// The rows of `views`.
pub(crate) fn rows(ctx: &Ctx, views: &[AccountView], now: i64) -> Vec<AccountRow> {
    views
        .iter()
        .map(|view| {
            let health = &view.health;
            AccountRow {
                appid: view.account.appid.clone(),
                name: view.account.name.clone(),
                disabled: view.account.state == AccountState::Disabled,
                tone: tone(health.state),
                state: ctx.t(state_key(health.state)).to_owned(),
                expires: expires_in(ctx, health.expires_at, now),
                fetches: ctx.tf(
                    "health.fetches_of",
                    &[
                        ("n", &health.fetches_today.to_string()),
                        ("budget", &health.daily_budget.to_string()),
                    ],
                ),
                fix: health.fix.as_ref().map(|fix| match ctx.lang {
                    Lang::ZhCn => fix.zh.clone(),
                    Lang::En => fix.en.clone(),
                }),
            }
        })
        .collect()
}

/// `?after=ID`: the page after the account with this id.
#[derive(Deserialize, Default)]
pub(crate) struct After {
    pub(crate) after: Option<String>,
}

#[derive(Template)]
#[template(path = "accounts/list.html")]
struct ListPage {
    ctx: Ctx,
    rows: Vec<AccountRow>,
    /// The link to the next page, when this one is full.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first is shown).
    later: bool,
}

/// The `after` of the next page, when `views` fills a page.
pub(crate) fn next_after(views: &[AccountView]) -> Option<String> {
    (views.len() == PAGE as usize)
        .then(|| views.last().map(|v| v.account.id.clone()))
        .flatten()
}

/// `GET /dashboard/accounts`.
pub(crate) async fn list(
    State(dashboard): State<Dashboard>,
    OwnerSession(owner): OwnerSession,
    Query(page): Query<After>,
) -> Result<Response, DashboardError> {
    let views = dashboard
        .tenancy()
        .list_accounts(&owner.principal, page.after.as_deref(), PAGE)
        .await?;
    let ctx = Ctx::new(&dashboard, &owner.visitor).in_section("accounts");
    let rows = rows(&ctx, &views, dashboard.now());
    let next = next_after(&views).map(|after| format!("?after={after}"));
    Ok(layout::page(
        StatusCode::OK,
        &ListPage {
            ctx,
            rows,
            next,
            later: page.after.is_some(),
        },
    ))
}
