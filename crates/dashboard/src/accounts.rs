//! An owner's accounts, each with its health badge: where its core token stands, when it
//! expires, today's token fetches against the daily budget, and — when the last failure is
//! one a person can fix — what to do, in the page's language. The rows are shared with the
//! operator's list of every account.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use store::DbEnum;
use store::accounts::{AccountKind, AccountState};
use store::tokens::TokenState;
use tenancy::TenancyError;
use tenancy::tenants::{AccountQuery, AccountView};

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

/// `?after=ID`: the page after the row with this id.
#[derive(Deserialize, Default)]
pub(crate) struct After {
    pub(crate) after: Option<String>,
}

/// The `state` choices of the filter form, in the form's order: the token states of active
/// accounts, then disabled accounts.
const STATE_CHOICES: [(&str, &str); 6] = [
    ("healthy", "health.healthy"),
    ("pending", "health.pending"),
    ("retrying", "health.retrying"),
    ("needs_attention", "health.needs_attention"),
    ("quota_exhausted", "health.quota_exhausted"),
    ("disabled", "accounts.disabled"),
];

const KIND_CHOICES: [(&str, &str); 2] = [
    ("service", "accounts.kind_service"),
    ("subscription", "accounts.kind_subscription"),
];

/// The translation key of a `state` filter value.
pub(crate) fn state_label(value: &str) -> &'static str {
    STATE_CHOICES
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("accounts.any_state", |(_, key)| key)
}

/// The badge colour of a `state` filter value.
pub(crate) fn state_tone(value: &str) -> &'static str {
    TokenState::from_db(value).map_or("idle", tone)
}

/// One option of a `<select>`.
pub(crate) struct Choice {
    pub(crate) value: &'static str,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

fn choices(ctx: &Ctx, all: &[(&'static str, &'static str)], current: &str) -> Vec<Choice> {
    all.iter()
        .map(|&(value, key)| Choice {
            value,
            label: ctx.t(key).to_owned(),
            selected: value == current.trim(),
        })
        .collect()
}

/// The filters of an account list as typed (the query string of the page and its next page).
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct Filters {
    /// An exact AppID or part of the name.
    pub(crate) q: String,
    /// An owner's email (operators only).
    pub(crate) owner: String,
    pub(crate) state: String,
    pub(crate) kind: String,
    pub(crate) after: Option<String>,
}

impl Filters {
    /// The tenancy query, or the field that cannot be read.
    fn query(&self) -> Result<AccountQuery, &'static str> {
        let text = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        let (token_state, state) = match self.state.trim() {
            "" => (None, None),
            "disabled" => (None, Some(AccountState::Disabled)),
            other => (
                Some(TokenState::from_db(other).ok_or("state")?),
                Some(AccountState::Active),
            ),
        };
        let kind = match self.kind.trim() {
            "" => None,
            other => Some(AccountKind::from_db(other).ok_or("kind")?),
        };
        Ok(AccountQuery {
            owner_email: text(&self.owner),
            token_state,
            state,
            kind,
            search: text(&self.q),
        })
    }

    /// The filters as a query string, without the page.
    fn encoded(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("owner", &self.owner),
            ("state", &self.state),
            ("kind", &self.kind),
        ] {
            if !value.trim().is_empty() {
                out.append_pair(name, value.trim());
            }
        }
        out.finish()
    }

    fn is_empty(&self) -> bool {
        self.encoded().is_empty()
    }
}

/// A filtered page of accounts, as both lists show it.
pub(crate) struct Listing {
    pub(crate) rows: Vec<AccountRow>,
    pub(crate) filters: Filters,
    pub(crate) states: Vec<Choice>,
    pub(crate) kinds: Vec<Choice>,
    /// The link to the next page, when this one is full.
    pub(crate) next: Option<String>,
    /// The first page with these filters, on a later page.
    pub(crate) first: Option<String>,
    /// Whether any filter is set (the empty text then says "no account matches").
    pub(crate) filtered: bool,
    /// The field a filter could not be read from, and why.
    pub(crate) error: Option<(&'static str, String)>,
}

impl Listing {
    pub(crate) fn err(&self, field: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|(f, _)| *f == field)
            .map(|(_, text)| text.as_str())
    }

    /// 422 when a filter was refused.
    pub(crate) fn status(&self) -> StatusCode {
        if self.error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }
}

/// Lists the accounts `person` may see that match `filters`: a filter that cannot be read,
/// or that the tenancy layer refuses (an unknown owner), is a field error, not a failed page.
pub(crate) async fn listing(
    dashboard: &Dashboard,
    ctx: &Ctx,
    person: &crate::session::SignedIn,
    filters: Filters,
) -> Result<Listing, DashboardError> {
    let mut error = None;
    let mut views = Vec::new();
    match filters.query() {
        Err(field) => error = Some((field, ctx.t("accounts.bad_filter").to_owned())),
        Ok(query) => match dashboard
            .tenancy()
            .list_accounts(&person.principal, &query, filters.after.as_deref(), PAGE)
            .await
        {
            Ok(found) => views = found,
            Err(TenancyError::Invalid { field: "owner", .. }) => {
                error = Some((
                    "owner",
                    ctx.tf("accounts.no_owner", &[("email", filters.owner.trim())]),
                ));
            }
            Err(other) => return Err(other.into()),
        },
    }
    let encoded = filters.encoded();
    let sep = if encoded.is_empty() { "" } else { "&" };
    Ok(Listing {
        rows: rows(ctx, &views, dashboard.now()),
        next: next_after(&views).map(|after| format!("?{encoded}{sep}after={after}")),
        first: filters.after.is_some().then(|| format!("?{encoded}")),
        filtered: !filters.is_empty(),
        states: choices(ctx, &STATE_CHOICES, &filters.state),
        kinds: choices(ctx, &KIND_CHOICES, &filters.kind),
        filters,
        error,
    })
}

#[derive(Template)]
#[template(path = "accounts/list.html")]
struct ListPage {
    ctx: Ctx,
    list: Listing,
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
    Query(mut filters): Query<Filters>,
) -> Result<Response, DashboardError> {
    // Owners list their own accounts; the owner filter is the operators'.
    filters.owner.clear();
    let ctx = Ctx::new(&dashboard, &owner.visitor).in_section("accounts");
    let list = listing(&dashboard, &ctx, &owner, filters).await?;
    Ok(layout::page(list.status(), &ListPage { ctx, list }))
}
