//! The push-routes page: the owner's own servers that keep receiving the account's pushes and
//! answering its users through wxhub — the list in delivery order with each route's counts of
//! the last 7 days, the forms to add, change and delete a route, the recorded failures, and
//! the dead letters with their re-send button.
//!
//! Operators read the page (the tenancy layer lets them list routes and failures) but change
//! nothing. A route's Token and EncodingAESKey are typed once and never shown again: the edit
//! form replaces them only when a new Token is typed.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::gateway::PushMode;
use tenancy::push_routes::{Delivery, NewRoute, RouteChange, RouteCredentials, RouteView};
use tenancy::{Operation, Principal, TenancyError};
use vault::SecretString;

use crate::account::may;
use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx, Flash};
use crate::session::SignedIn;
use crate::{Dashboard, PREFIX, fields, time};

/// The days the routes' counts cover (today included).
const COUNT_DAYS: i64 = 7;

/// One route as the page lists it.
pub(crate) struct RouteRow {
    pub(crate) id: String,
    /// 1-based place in the delivery order.
    pub(crate) number: usize,
    pub(crate) position: i64,
    pub(crate) target_url: String,
    pub(crate) matches: String,
    pub(crate) reply: bool,
    pub(crate) mode: String,
    /// The push mode's form value (`""`: as the route's key decides).
    pub(crate) mode_value: &'static str,
    pub(crate) has_aes_key: bool,
    pub(crate) relay: bool,
    pub(crate) enabled: bool,
    pub(crate) msg_type: String,
    pub(crate) event: String,
    pub(crate) key_prefix: String,
    pub(crate) counts: Counts,
}

/// A route's deliveries over the last [`COUNT_DAYS`] days.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) delivered: i64,
    pub(crate) failed: i64,
    pub(crate) dead: i64,
    pub(crate) dropped: i64,
    pub(crate) late: i64,
    pub(crate) refused: i64,
    /// Reply routes: the mean answer time (`12 ms`), when it was called.
    pub(crate) reply_ms: Option<String>,
}

pub(crate) struct FailureRow {
    pub(crate) route: String,
    pub(crate) at: String,
    pub(crate) cause: String,
}

pub(crate) struct DeadRow {
    pub(crate) id: String,
    pub(crate) route: String,
    pub(crate) created: String,
    pub(crate) attempts: i64,
    pub(crate) error: String,
}

/// What a refused form typed, to show again (never the Token or the EncodingAESKey).
#[derive(Default)]
pub(crate) struct Typed {
    pub(crate) target_url: String,
    pub(crate) msg_type: String,
    pub(crate) event: String,
    pub(crate) key_prefix: String,
    pub(crate) copy: bool,
    pub(crate) mode: String,
}

#[derive(Template)]
#[template(path = "account/push_routes.html")]
pub(crate) struct PushRoutesPage {
    pub(crate) ctx: Ctx,
    pub(crate) appid: String,
    pub(crate) name: String,
    pub(crate) routes: Vec<RouteRow>,
    pub(crate) failures: Vec<FailureRow>,
    pub(crate) dead: Vec<DeadRow>,
    pub(crate) pending: i64,
    /// The person may add, change and delete routes.
    pub(crate) edit: bool,
    pub(crate) resend: bool,
    pub(crate) errors: Vec<(&'static str, String)>,
    pub(crate) typed: Typed,
    /// The route whose edit form was refused: its form opens with the error.
    pub(crate) refused_route: String,
}

impl PushRoutesPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, text)| text.as_str())
    }
}

/// The match in the page's words.
fn describe(ctx: &Ctx, route: &RouteView) -> String {
    if route.match_msg_type.is_none()
        && route.match_event.is_none()
        && route.match_event_key_prefix.is_none()
    {
        ctx.t("routes.everything").to_owned()
    } else {
        route.describe_match()
    }
}

fn mode_text(ctx: &Ctx, route: &RouteView) -> String {
    ctx.t(match (route.relay, route.push_mode) {
        (true, _) => "routes.mode_account",
        (false, Some(PushMode::Plain)) => "settings.mode_plain",
        (false, Some(PushMode::Compatible)) => "settings.mode_compatible",
        (false, Some(PushMode::Safe)) => "settings.mode_safe",
        (false, None) if route.has_aes_key => "routes.mode_safe_by_key",
        (false, None) => "routes.mode_plain_no_key",
    })
    .to_owned()
}

/// Sums the route counters of the last days per route id.
fn counts_by_route(totals: &[store::stats::Total]) -> std::collections::HashMap<&str, Counts> {
    let mut counts: std::collections::HashMap<&str, Counts> = std::collections::HashMap::new();
    let mut reply_ms: std::collections::HashMap<&str, (i64, i64)> =
        std::collections::HashMap::new();
    for total in totals {
        match total.metric.as_str() {
            "push.route" => {
                let Some((route, outcome)) = total.label.rsplit_once('/') else {
                    continue;
                };
                let c = counts.entry(route).or_default();
                let slot = match outcome {
                    "delivered" => &mut c.delivered,
                    "failed" => &mut c.failed,
                    "dead_lettered" => &mut c.dead,
                    "dropped" => &mut c.dropped,
                    "late" => &mut c.late,
                    "refused" => &mut c.refused,
                    _ => continue,
                };
                *slot += total.value;
            }
            "push.route.reply_ms" => reply_ms.entry(&total.label).or_default().0 += total.value,
            "push.route.replies" => reply_ms.entry(&total.label).or_default().1 += total.value,
            _ => {}
        }
    }
    for (route, (ms, calls)) in reply_ms {
        if calls > 0 {
            counts.entry(route).or_default().reply_ms = Some(format!("{} ms", ms / calls));
        }
    }
    counts
}

pub(crate) async fn render(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    errors: Vec<(&'static str, String)>,
    typed: Typed,
    refused_route: String,
) -> Result<PushRoutesPage, DashboardError> {
    let tenancy = dashboard.tenancy();
    let principal = &person.principal;
    let view = tenancy.account(principal, appid).await?;
    let account = &view.account;
    let ctx = Ctx::new(dashboard, &person.visitor).in_section(match principal {
        Principal::Operator { .. } => "all_accounts",
        _ => "accounts",
    });
    let routes = tenancy.list_push_routes(principal, appid).await?;
    let problems = tenancy.push_route_problems(principal, appid).await?;
    let today = stats::calendar::day_start(dashboard.now());
    let totals = tenancy
        .account_totals(
            principal,
            appid,
            today - (COUNT_DAYS - 1) * stats::calendar::DAY_MS,
            today + stats::calendar::DAY_MS,
            &["push.route", "push.route.reply_ms", "push.route.replies"],
        )
        .await?;
    let mut counts = counts_by_route(&totals);
    // A failure or dead letter names its route by its place in the list (ids mean nothing to
    // people), or says it was deleted.
    let route_name = |id: &str| match routes.iter().position(|r| r.id == id) {
        Some(n) => ctx.tf(
            "routes.route_n",
            &[("n", &(n + 1).to_string()), ("url", &routes[n].target_url)],
        ),
        None => ctx.t("routes.deleted_route").to_owned(),
    };
    let failures = problems
        .failures
        .iter()
        .map(|f| FailureRow {
            route: route_name(&f.route_id),
            at: time::format(f.at),
            cause: f.cause.clone(),
        })
        .collect();
    let dead = problems
        .dead_letters
        .iter()
        .map(|d| DeadRow {
            id: d.id.clone(),
            route: route_name(&d.route_id),
            created: time::format(d.created_at),
            attempts: d.attempts,
            error: d.last_error.clone().unwrap_or_default(),
        })
        .collect();
    let rows = routes
        .iter()
        .enumerate()
        .map(|(n, route)| RouteRow {
            id: route.id.clone(),
            number: n + 1,
            position: route.position,
            target_url: route.target_url.clone(),
            matches: describe(&ctx, route),
            reply: route.delivery == Delivery::Reply,
            mode: mode_text(&ctx, route),
            mode_value: route.push_mode.map_or("", PushMode::as_str),
            has_aes_key: route.has_aes_key,
            relay: route.relay,
            enabled: route.enabled,
            msg_type: route.match_msg_type.clone().unwrap_or_default(),
            event: route.match_event.clone().unwrap_or_default(),
            key_prefix: route.match_event_key_prefix.clone().unwrap_or_default(),
            counts: counts.remove(route.id.as_str()).unwrap_or_default(),
        })
        .collect::<Vec<_>>();
    Ok(PushRoutesPage {
        appid: account.appid.clone(),
        name: account.name.clone(),
        routes: rows,
        failures,
        dead,
        pending: problems.pending,
        edit: may(principal, Operation::PushRouteEdit, account),
        resend: may(principal, Operation::PushRouteResend, account),
        errors,
        typed,
        refused_route,
        ctx,
    })
}

fn page_url(appid: &str) -> String {
    format!("{PREFIX}/accounts/{appid}/push-routes")
}

fn back(appid: &str, flash: Flash) -> Response {
    Redirect::to(&flash.on(&page_url(appid))).into_response()
}

/// `GET /dashboard/accounts/{appid}/push-routes`.
pub(crate) async fn page(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    let page = render(
        &dashboard,
        &person,
        &appid,
        Vec::new(),
        Typed::default(),
        String::new(),
    )
    .await?;
    Ok(layout::page(StatusCode::OK, &page))
}

/// A route's form, to add one or change one.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RouteForm {
    target_url: String,
    msg_type: String,
    event: String,
    key_prefix: String,
    delivery: String,
    push_mode: String,
    token: String,
    encoding_aes_key: String,
    /// Edit form only: the place in the order (lower first).
    position: Option<String>,
    enabled: Option<String>,
}

impl RouteForm {
    fn delivery(&self) -> Result<Delivery, TenancyError> {
        self.delivery
            .parse()
            .map_err(|_| TenancyError::invalid("delivery", "choose reply or copy"))
    }

    /// `None`: as the route's EncodingAESKey decides.
    fn push_mode(&self) -> Result<Option<PushMode>, TenancyError> {
        match self.push_mode.as_str() {
            "" => Ok(None),
            text => text.parse().map(Some).map_err(|_| {
                TenancyError::invalid(
                    "push_mode",
                    format!("{text:?} is not one of the choices the form offers"),
                )
            }),
        }
    }

    /// The credentials typed: none when the Token is blank (an edit keeps the stored ones).
    fn credentials(&self) -> Result<Option<RouteCredentials>, TenancyError> {
        let token = self.token.trim();
        let key = self.encoding_aes_key.trim();
        if token.is_empty() {
            if !key.is_empty() {
                return Err(TenancyError::invalid(
                    "route_token",
                    "type the route's Token too: a new EncodingAESKey replaces both",
                ));
            }
            return Ok(None);
        }
        Ok(Some(RouteCredentials {
            token: SecretString::new(token.to_owned()),
            encoding_aes_key: (!key.is_empty()).then(|| SecretString::new(key.to_owned())),
        }))
    }

    fn position(&self) -> Result<Option<i64>, TenancyError> {
        match self.position.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                TenancyError::invalid("position", format!("{text:?} is not a whole number"))
            }),
        }
    }

    fn typed(&self) -> Typed {
        Typed {
            target_url: self.target_url.trim().to_owned(),
            msg_type: self.msg_type.trim().to_owned(),
            event: self.event.trim().to_owned(),
            key_prefix: self.key_prefix.trim().to_owned(),
            copy: self.delivery == "copy",
            mode: self.push_mode.clone(),
        }
    }

    fn new_route(&self) -> Result<NewRoute, TenancyError> {
        let credentials = self.credentials()?.ok_or_else(|| {
            TenancyError::invalid(
                "route_token",
                "type the Token the owner's server checks signatures with (3 to 32 letters or \
                 digits)",
            )
        })?;
        Ok(NewRoute {
            target_url: self.target_url.clone(),
            match_msg_type: Some(self.msg_type.clone()),
            match_event: Some(self.event.clone()),
            match_event_key_prefix: Some(self.key_prefix.clone()),
            delivery: self.delivery()?,
            push_mode: self.push_mode()?,
            credentials,
            position: None,
            enabled: true,
        })
    }

    fn change(&self, relay: bool) -> Result<RouteChange, TenancyError> {
        Ok(RouteChange {
            // The relay route's target is the account setting, changed on the account page.
            target_url: (!relay).then(|| self.target_url.clone()),
            match_msg_type: Some(Some(self.msg_type.clone())),
            match_event: Some(Some(self.event.clone())),
            match_event_key_prefix: Some(Some(self.key_prefix.clone())),
            delivery: Some(self.delivery()?),
            push_mode: if relay { None } else { Some(self.push_mode()?) },
            credentials: if relay { None } else { self.credentials()? },
            position: self.position()?,
            enabled: Some(self.enabled.is_some()),
        })
    }
}

/// The page again with `error` beside its field (422), or the error page when the error
/// concerns no field of the form.
async fn refused(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    error: TenancyError,
    typed: Typed,
    route: Option<&str>,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(dashboard, &person.visitor);
    let Some((field, text)) = fields::of(&ctx, &error) else {
        return Err(error.into());
    };
    // An edit form's error shows in that route's form, whatever its field.
    let field = if route.is_some() { "edit" } else { field };
    let page = render(
        dashboard,
        person,
        appid,
        vec![(field, text)],
        typed,
        route.unwrap_or_default().to_owned(),
    )
    .await?;
    Ok(layout::page(StatusCode::UNPROCESSABLE_ENTITY, &page))
}

/// `POST /dashboard/accounts/{appid}/push-routes`: a new route.
pub(crate) async fn create(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<RouteForm>,
) -> Result<Response, DashboardError> {
    // Asked first, so a refusal reads the same whatever was typed.
    let account = dashboard
        .tenancy()
        .account(&person.principal, &appid)
        .await?
        .account;
    tenancy::policy::authorize(
        &person.principal,
        Operation::PushRouteCreate,
        Some(&account),
    )?;
    let made = match form.new_route() {
        Ok(new) => {
            dashboard
                .tenancy()
                .create_push_route(&person.principal, &appid, new)
                .await
        }
        Err(error) => Err(error),
    };
    match made {
        Ok(_) => Ok(back(&appid, Flash::RouteSaved)),
        Err(error) => refused(&dashboard, &person, &appid, error, form.typed(), None).await,
    }
}

/// `POST /dashboard/accounts/{appid}/push-routes/{route}/edit`.
pub(crate) async fn edit(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, route)): Path<(String, String)>,
    CsrfForm(form): CsrfForm<RouteForm>,
) -> Result<Response, DashboardError> {
    let tenancy = dashboard.tenancy();
    let routes = tenancy.list_push_routes(&person.principal, &appid).await?;
    let relay = routes
        .iter()
        .find(|r| r.id == route)
        .is_some_and(|r| r.relay);
    let edited = match form.change(relay) {
        Ok(change) => {
            tenancy
                .edit_push_route(&person.principal, &appid, &route, change)
                .await
        }
        Err(error) => Err(error),
    };
    match edited {
        Ok(_) => Ok(back(&appid, Flash::RouteSaved)),
        Err(error) => {
            refused(
                &dashboard,
                &person,
                &appid,
                error,
                Typed::default(),
                Some(&route),
            )
            .await
        }
    }
}

/// `POST /dashboard/accounts/{appid}/push-routes/{route}/delete`: the route and its queued
/// copies.
pub(crate) async fn delete(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, route)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .delete_push_route(&person.principal, &appid, &route)
        .await?;
    Ok(back(&appid, Flash::RouteDeleted))
}

/// `POST /dashboard/accounts/{appid}/push-routes/dead/{copy}/resend`: a dead letter queued
/// again, due now.
pub(crate) async fn resend(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, copy)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .resend_dead_letter(&person.principal, &appid, &copy)
        .await?;
    Ok(back(&appid, Flash::CopyResent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(metric: &str, label: &str, value: i64) -> store::stats::Total {
        store::stats::Total {
            metric: metric.to_owned(),
            label: label.to_owned(),
            value,
        }
    }

    #[test]
    fn counts_are_summed_per_route_and_outcome() {
        let totals = [
            total("push.route", "r1/delivered", 5),
            total("push.route", "r1/failed", 2),
            total("push.route", "r2/dead_lettered", 1),
            total("push.route", "r2/late", 3),
            total("push.route.reply_ms", "r1", 90),
            total("push.route.replies", "r1", 4),
            total("push.route", "no-outcome", 7),
        ];
        let counts = counts_by_route(&totals);
        let r1 = &counts["r1"];
        assert_eq!((r1.delivered, r1.failed, r1.dead), (5, 2, 0));
        assert_eq!(r1.reply_ms.as_deref(), Some("22 ms"));
        let r2 = &counts["r2"];
        assert_eq!((r2.dead, r2.late, r2.delivered), (1, 3, 0));
        assert!(r2.reply_ms.is_none());
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn a_new_route_needs_its_token_and_an_edit_keeps_it_when_blank() {
        let form = RouteForm {
            target_url: "https://bot.example/wx".into(),
            delivery: "reply".into(),
            ..RouteForm::default()
        };
        assert!(matches!(
            form.new_route(),
            Err(TenancyError::Invalid {
                field: "route_token",
                ..
            })
        ));
        let change = form.change(false).unwrap();
        assert!(change.credentials.is_none());
        let only_key = RouteForm {
            encoding_aes_key: "k".repeat(43),
            ..form
        };
        assert!(matches!(
            only_key.credentials(),
            Err(TenancyError::Invalid {
                field: "route_token",
                ..
            })
        ));
    }

    #[test]
    fn the_relay_route_keeps_its_target_and_credentials() {
        let form = RouteForm {
            target_url: "https://elsewhere.example/".into(),
            delivery: "copy".into(),
            token: "abcdef".into(),
            ..RouteForm::default()
        };
        let change = form.change(true).unwrap();
        assert!(change.target_url.is_none());
        assert!(change.credentials.is_none());
        assert_eq!(change.enabled, Some(false));
    }
}
