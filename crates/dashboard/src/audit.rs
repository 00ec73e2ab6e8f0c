//! The audit log: the operator's across the platform and each account's own (which its owner
//! sees), with filters (actor, account, action, time range), keyset pages, and a CSV export of
//! what the filters select, streamed page by page through the tenancy layer (never built in
//! memory). People and accounts are shown by email and AppID, not by internal id.

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use store::audit::AuditEntry;
use tenancy::people::AuditQuery;
use tenancy::{Operation, Principal, Tenancy, TenancyError};

use crate::error::DashboardError;
use crate::layout::{self, Ctx};
use crate::session::{OperatorSession, SignedIn};
use crate::{Dashboard, fields, time};

/// Entries per page.
const PAGE: u32 = 50;
/// Entries per database page of the export.
const EXPORT_PAGE: u32 = 500;

/// The filters as typed (the query string of the page, the export and the next page).
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct Filters {
    actor: String,
    appid: String,
    action: String,
    from: String,
    until: String,
    before: Option<String>,
}

impl Filters {
    /// The tenancy query, or the field that cannot be read; `scope` is the account of an
    /// account's own log, which replaces the AppID filter.
    fn query(&self, scope: Option<&str>) -> Result<AuditQuery, &'static str> {
        let text = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        let day = |field: &'static str, v: &str| match text(v) {
            None => Ok(None),
            Some(v) => time::day_start(&v).map(Some).ok_or(field),
        };
        let action = text(&self.action);
        if action
            .as_deref()
            .is_some_and(|a| !Operation::ALL.iter().any(|o| o.name() == a))
        {
            return Err("action");
        }
        Ok(AuditQuery {
            appid: scope.map(str::to_owned).or_else(|| text(&self.appid)),
            actor: text(&self.actor),
            action,
            from: day("from", &self.from)?,
            // The whole last day.
            until: day("until", &self.until)?.map(|start| start + 86_400_000 - 1),
        })
    }

    /// The filters as a query string, without the page.
    fn encoded(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("actor", self.actor.trim())
            .append_pair("appid", self.appid.trim())
            .append_pair("action", self.action.trim())
            .append_pair("from", self.from.trim())
            .append_pair("until", self.until.trim())
            .finish()
    }
}

pub(crate) struct EntryRow {
    pub(crate) at: String,
    /// A person's email, `cli`, `system` or `scheduler`.
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) account: String,
    pub(crate) target: String,
    pub(crate) details: String,
}

struct ActionOption {
    name: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "operator/audit.html")]
struct AuditPage {
    ctx: Ctx,
    title: String,
    /// The account of an account's own log (the AppID filter is then not shown).
    account: Option<String>,
    /// Where the filter form goes.
    action_url: String,
    filters: Filters,
    actions: Vec<ActionOption>,
    rows: Vec<EntryRow>,
    next: Option<String>,
    later: bool,
    export: String,
    /// The first page with these filters.
    first: String,
    error: Option<(&'static str, String)>,
}

impl AuditPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.error
            .as_ref()
            .filter(|(f, _)| *f == field)
            .map(|(_, text)| text.as_str())
    }
}

/// Who did it, as people know them: the person's email, or `cli`, `system`, `scheduler` (a
/// person since removed shows their id).
fn actor_label(entry: &AuditEntry) -> &str {
    entry.actor_email.as_deref().unwrap_or(&entry.actor)
}

/// The account, as people know it: its AppID, also after its deletion (the deletion's entry
/// keeps it); the internal id only when neither is known.
fn account_label(entry: &AuditEntry) -> &str {
    entry
        .appid
        .as_deref()
        .or_else(|| entry.details.get("appid").and_then(|v| v.as_str()))
        .or(entry.account_id.as_deref())
        .unwrap_or("")
}

/// The entries as a page lists them.
pub(crate) fn entry_rows(entries: &[AuditEntry]) -> Vec<EntryRow> {
    entries
        .iter()
        .map(|entry| EntryRow {
            at: time::format(entry.at),
            actor: actor_label(entry).to_owned(),
            action: entry.action.clone(),
            account: account_label(entry).to_owned(),
            target: target_label(entry).to_owned(),
            details: entry.details.to_string(),
        })
        .collect()
}

/// The object, as people know it: a person by email (their entries keep it in `details`),
/// anything else by its id.
fn target_label(entry: &AuditEntry) -> &str {
    let person = entry.action.starts_with("person.");
    match entry.details.get("email").and_then(|v| v.as_str()) {
        Some(email) if person => email,
        _ => entry.target.as_deref().unwrap_or(""),
    }
}

/// Which log a page shows: the platform's (operators) or one account's.
enum Scope {
    Platform,
    Account { appid: String, name: String },
}

impl Scope {
    fn base(&self) -> String {
        match self {
            Scope::Platform => "/dashboard/operator/audit".to_owned(),
            Scope::Account { appid, .. } => format!("/dashboard/accounts/{appid}/audit"),
        }
    }

    fn appid(&self) -> Option<&str> {
        match self {
            Scope::Platform => None,
            Scope::Account { appid, .. } => Some(appid),
        }
    }
}

/// `GET /dashboard/operator/audit`.
pub(crate) async fn page(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(filters): Query<Filters>,
) -> Result<Response, DashboardError> {
    render(&dashboard, &operator, Scope::Platform, filters).await
}

/// `GET /dashboard/accounts/{appid}/audit`: one account's log, for its owner and operators.
pub(crate) async fn account_page(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    Query(filters): Query<Filters>,
) -> Result<Response, DashboardError> {
    let view = dashboard
        .tenancy()
        .account(&person.principal, &appid)
        .await?;
    let scope = Scope::Account {
        appid: view.account.appid,
        name: view.account.name,
    };
    render(&dashboard, &person, scope, filters).await
}

async fn render(
    dashboard: &Dashboard,
    person: &SignedIn,
    scope: Scope,
    filters: Filters,
) -> Result<Response, DashboardError> {
    let section = match (&scope, person.principal.owner_id()) {
        (Scope::Platform, _) => "audit",
        (Scope::Account { .. }, Some(_)) => "accounts",
        (Scope::Account { .. }, None) => "all_accounts",
    };
    let ctx = Ctx::new(dashboard, &person.visitor).in_section(section);
    let mut error = None;
    let mut entries = Vec::new();
    match filters.query(scope.appid()) {
        Err(field) => {
            let key = match field {
                "action" => "audit.bad_action",
                _ => "audit.bad_date",
            };
            error = Some((field, ctx.t(key).to_owned()));
        }
        Ok(query) => match dashboard
            .tenancy()
            .list_audit(&person.principal, &query, filters.before.as_deref(), PAGE)
            .await
        {
            Ok(found) => entries = found,
            Err(TenancyError::NotFound { what: "account" }) if scope.appid().is_none() => {
                error = Some(("appid", ctx.t("audit.no_account").to_owned()));
            }
            Err(TenancyError::Invalid { field: "actor", .. }) => {
                let actor = filters.actor.trim();
                error = Some(("actor", ctx.tf("audit.no_actor", &[("email", actor)])));
            }
            Err(other) => match fields::of(&ctx, &other) {
                Some(found) => error = Some(("appid", found.1)),
                None => return Err(other.into()),
            },
        },
    }
    let encoded = filters.encoded();
    let next = (entries.len() == PAGE as usize)
        .then(|| entries.last())
        .flatten()
        .map(|last| format!("?{encoded}&before={}", last.id));
    let rows = entry_rows(&entries);
    let selected = filters.action.trim().to_owned();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let base = scope.base();
    let (title, account) = match &scope {
        Scope::Platform => (ctx.t("audit.title").to_owned(), None),
        Scope::Account { appid, name } => (
            ctx.tf("audit.account_title", &[("name", name)]),
            Some(appid.clone()),
        ),
    };
    Ok(layout::page(
        status,
        &AuditPage {
            actions: Operation::ALL
                .iter()
                .map(|o| ActionOption {
                    name: o.name(),
                    selected: o.name() == selected,
                })
                .collect(),
            later: filters.before.is_some(),
            export: format!("{base}.csv?{encoded}"),
            first: format!("?{encoded}"),
            action_url: base,
            title,
            account,
            filters,
            rows,
            next,
            error,
            ctx,
        },
    ))
}

/// One CSV field: quoted when it must be, and a leading `=`, `+`, `-` or `@` defused so a
/// spreadsheet shows it instead of evaluating it.
pub(crate) fn csv_field(out: &mut String, value: &str) {
    let defuse = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if defuse || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if defuse {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_line(out: &mut String, entry: &AuditEntry) {
    let at = time::iso_utc(entry.at);
    let details = entry.details.to_string();
    let fields = [
        entry.id.as_str(),
        at.as_str(),
        entry.actor.as_str(),
        entry.actor_email.as_deref().unwrap_or(""),
        entry.action.as_str(),
        entry.account_id.as_deref().unwrap_or(""),
        account_label(entry),
        entry.target.as_deref().unwrap_or(""),
        details.as_str(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field);
    }
    out.push_str("\r\n");
}

/// Where the export stands between two chunks.
struct Export {
    tenancy: Tenancy,
    principal: Principal,
    query: AuditQuery,
    before: Option<String>,
    header: bool,
    done: bool,
}

/// The next chunk of the export: the header, then one database page at a time.
async fn next_chunk(mut state: Export) -> Option<(Result<String, TenancyError>, Export)> {
    if state.header {
        state.header = false;
        return Some((
            Ok("id,at,actor,actor_email,action,account_id,appid,target,details\r\n".to_owned()),
            state,
        ));
    }
    if state.done {
        return None;
    }
    let page = state
        .tenancy
        .list_audit(
            &state.principal,
            &state.query,
            state.before.as_deref(),
            EXPORT_PAGE,
        )
        .await;
    match page {
        Err(error) => {
            tracing::error!(%error, "the audit export stopped");
            state.done = true;
            Some((Err(error), state))
        }
        Ok(entries) => {
            if entries.len() < EXPORT_PAGE as usize {
                state.done = true;
            }
            let last = entries.last()?;
            state.before = Some(last.id.clone());
            let mut chunk = String::with_capacity(entries.len() * 160);
            for entry in &entries {
                csv_line(&mut chunk, entry);
            }
            Some((Ok(chunk), state))
        }
    }
}

/// `GET /dashboard/operator/audit.csv`: the entries the filters select, newest first.
pub(crate) async fn export(
    State(dashboard): State<Dashboard>,
    OperatorSession(operator): OperatorSession,
    Query(filters): Query<Filters>,
) -> Result<Response, DashboardError> {
    stream_csv(&dashboard, &operator, None, &filters, "wxhub-audit.csv").await
}

/// `GET /dashboard/accounts/{appid}/audit.csv`: one account's entries the filters select.
pub(crate) async fn account_export(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    Query(filters): Query<Filters>,
) -> Result<Response, DashboardError> {
    let view = dashboard
        .tenancy()
        .account(&person.principal, &appid)
        .await?;
    let appid = view.account.appid;
    let file = format!("wxhub-audit-{appid}.csv");
    stream_csv(&dashboard, &person, Some(&appid), &filters, &file).await
}

async fn stream_csv(
    dashboard: &Dashboard,
    person: &SignedIn,
    scope: Option<&str>,
    filters: &Filters,
    file: &str,
) -> Result<Response, DashboardError> {
    let query = filters.query(scope).map_err(|_| DashboardError::BadForm)?;
    // Asked once before streaming, so an unknown account or a refusal is a page, not a cut
    // download.
    dashboard
        .tenancy()
        .list_audit(&person.principal, &query, None, 1)
        .await?;
    let state = Export {
        tenancy: dashboard.tenancy().clone(),
        principal: person.principal.clone(),
        query,
        before: None,
        header: true,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, next_chunk);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    // AppIDs are `wx` and hex digits: the file name needs no quoting beyond this.
    let disposition = format!("attachment; filename=\"{file}\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|_| DashboardError::BadForm)?,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        for value in ["plain", "a,b", "say \"hi\"", "=HYPERLINK(1)", "-1"] {
            csv_field(&mut out, value);
            out.push('|');
        }
        assert_eq!(
            out,
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"'=HYPERLINK(1)\"|\"'-1\"|"
        );
    }
}
