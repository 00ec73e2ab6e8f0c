//! One account's page and everything done on it: token health, refresh now, clear quota,
//! replacing the AppSecret, push credentials, API keys, websites, gateway settings, end
//! users, disabling and deleting.
//!
//! Owners and operators share the page. What it offers follows the tenancy layer's own table
//! ([`tenancy::policy::authorize`]): an operator sees the health, the keys (and may revoke
//! them), the websites and the settings, and may disable or enable the account; every other
//! form is left out — and the layer refuses it anyway when posted. Every action goes through
//! the layer; a credential it makes is shown once, on the page its form answers with.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use store::accounts::{Account, AccountKind, AccountState};
use store::api_keys::KeyScopes;
use store::gateway::PushMode;
use store::oidc::{LoginMode, LoginSurface, SigningAlg};
use tenancy::keys::KeyRequest;
use tenancy::settings::SettingsChange;
use tenancy::websites::{NewWebsite, WebsiteChanges};
use tenancy::{Operation, Principal, TenancyError};
use vault::SecretString;

use crate::accounts::{self, AccountRow};
use crate::csrf::CsrfForm;
use crate::error::DashboardError;
use crate::layout::{self, Ctx, Flash};
use crate::session::SignedIn;
use crate::{Dashboard, PREFIX, fields, time};

/// End users per page.
const END_USER_PAGE: u32 = 50;

/// What the page offers this person, as the tenancy layer's table says.
pub(crate) struct Can {
    pub(crate) refresh: bool,
    pub(crate) clear_quota: bool,
    pub(crate) replace_secret: bool,
    pub(crate) push: bool,
    pub(crate) create_key: bool,
    pub(crate) revoke_key: bool,
    pub(crate) create_website: bool,
    pub(crate) edit_website: bool,
    pub(crate) edit_settings: bool,
    pub(crate) end_users: bool,
    pub(crate) disable: bool,
    pub(crate) delete: bool,
}

pub(crate) fn may(principal: &Principal, operation: Operation, account: &Account) -> bool {
    tenancy::policy::authorize(principal, operation, Some(account)).is_ok()
}

impl Can {
    fn of(principal: &Principal, account: &Account) -> Can {
        let may = |operation| may(principal, operation, account);
        Can {
            refresh: may(Operation::AccountRefreshNow),
            clear_quota: may(Operation::AccountClearQuota),
            replace_secret: may(Operation::AccountReplaceSecret),
            push: may(Operation::AccountSetPushCredentials),
            create_key: may(Operation::ApiKeyCreate),
            revoke_key: may(Operation::ApiKeyRevoke),
            create_website: may(Operation::WebsiteCreate),
            edit_website: may(Operation::WebsiteEdit),
            edit_settings: may(Operation::SettingsUpdate),
            end_users: may(Operation::EndUserList),
            disable: may(Operation::AccountDisable) && may(Operation::AccountEnable),
            delete: may(Operation::AccountDelete),
        }
    }
}

/// One value shown once, with its copy button.
pub(crate) struct OnceValue {
    pub(crate) id: &'static str,
    pub(crate) label: String,
    pub(crate) value: String,
    pub(crate) rows: usize,
}

/// A credential just made: shown on this page only.
pub(crate) struct Once {
    pub(crate) title: String,
    pub(crate) text: String,
    pub(crate) values: Vec<OnceValue>,
}

pub(crate) struct KeyRow {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) scopes: String,
    /// The proxy paths it is limited to, when it is.
    pub(crate) paths: Option<String>,
    pub(crate) created: String,
    pub(crate) last_used: String,
    pub(crate) revoked: Option<String>,
}

pub(crate) struct WebsiteRow {
    pub(crate) client_id: String,
    pub(crate) name: String,
    pub(crate) userinfo: bool,
    pub(crate) mode: String,
    pub(crate) public: bool,
    pub(crate) uris: String,
    pub(crate) issuer: String,
    pub(crate) snippet: String,
    /// The form's values of the ID token algorithm, login surface and scan confirmation.
    pub(crate) alg: &'static str,
    pub(crate) surface: &'static str,
    pub(crate) confirmation: &'static str,
}

pub(crate) struct SettingsForm {
    pub(crate) original_id: String,
    pub(crate) push_mode: String,
    pub(crate) push_relay_url: String,
    pub(crate) follow_qr_url: String,
    pub(crate) follow_link: String,
    pub(crate) push_url: String,
}

/// What a refused form typed, to show again (never a secret).
#[derive(Default)]
pub(crate) struct Typed {
    pub(crate) key_label: String,
    pub(crate) key_proxy_paths: String,
    pub(crate) website_name: String,
    pub(crate) website_uris: String,
}

#[derive(Template)]
#[template(path = "account/page.html")]
pub(crate) struct AccountPage {
    pub(crate) ctx: Ctx,
    pub(crate) appid: String,
    pub(crate) disabled: bool,
    pub(crate) kind: String,
    pub(crate) row: AccountRow,
    pub(crate) last_error: Option<String>,
    pub(crate) can: Can,
    pub(crate) keys: Vec<KeyRow>,
    pub(crate) websites: Vec<WebsiteRow>,
    pub(crate) web_login: bool,
    pub(crate) settings: SettingsForm,
    pub(crate) once: Option<Once>,
    pub(crate) errors: Vec<(&'static str, String)>,
    pub(crate) typed: Typed,
    pub(crate) token_api: String,
    /// The account's latest audit entries.
    pub(crate) rows: Vec<crate::audit::EntryRow>,
    /// The label of the typed confirmations.
    pub(crate) type_appid: String,
}

impl AccountPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, text)| text.as_str())
    }
}

/// How an owner's backend reads the account's core token from the token API.
pub(crate) fn token_api_example(dashboard: &Dashboard, appid: &str) -> String {
    format!(
        "curl -H 'Authorization: Bearer wxk_…' {}/api/v1/accounts/{appid}/access_token",
        dashboard.config().public_url.as_str().trim_end_matches('/'),
    )
}

/// Audit entries the account page shows; the rest are on the account's audit page.
const RECENT_ACTIVITY: u32 = 5;

/// The configuration of a standard OIDC library for a website.
fn snippet(issuer: &str, client_id: &str, redirect: &str, public: bool) -> String {
    let secret = if public {
        "# public client: no secret, PKCE (S256) required\n".to_owned()
    } else {
        "client_secret: <client_secret>\n".to_owned()
    };
    format!(
        "issuer: {issuer}\nclient_id: {client_id}\n{secret}redirect_uri: {redirect}\nscope: openid profile\n"
    )
}

fn mode_key(mode: LoginMode) -> &'static str {
    match mode {
        LoginMode::FollowRequired => "websites.mode_follow",
        LoginMode::Userinfo => "websites.mode_userinfo",
    }
}

fn scopes_text(scopes: KeyScopes) -> String {
    scopes.to_db().replace(',', ", ")
}

/// The account page of `appid` for `person`, with what a form just produced.
pub(crate) async fn render(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    once: Option<Once>,
    errors: Vec<(&'static str, String)>,
    typed: Typed,
) -> Result<AccountPage, DashboardError> {
    let tenancy = dashboard.tenancy();
    let principal = &person.principal;
    let view = tenancy.account(principal, appid).await?;
    let ctx = Ctx::new(dashboard, &person.visitor).in_section(match principal {
        Principal::Operator { .. } => "all_accounts",
        _ => "accounts",
    });
    let account = &view.account;
    let can = Can::of(principal, account);
    let keys = tenancy
        .list_api_keys(principal, appid)
        .await?
        .into_iter()
        .map(|key| KeyRow {
            id: key.id,
            label: if key.label.is_empty() {
                ctx.t("keys.no_label").to_owned()
            } else {
                key.label
            },
            scopes: scopes_text(key.scopes),
            paths: key.proxy_paths.map(|paths| paths.join(" · ")),
            created: time::format(key.created_at),
            last_used: key
                .last_used_at
                .map_or_else(|| ctx.t("keys.never").to_owned(), time::format),
            revoked: key.revoked_at.map(time::format),
        })
        .collect();
    let mut websites = Vec::new();
    for client in tenancy.list_websites(principal, appid).await? {
        let issuer = tenancy
            .website(principal, appid, &client.client_id)
            .await?
            .issuer;
        let public = client.client_secret_hash.is_none();
        let first = client.redirect_uris.first().cloned().unwrap_or_default();
        websites.push(WebsiteRow {
            snippet: snippet(&issuer, &client.client_id, &first, public),
            issuer,
            mode: ctx.t(mode_key(client.login_mode)).to_owned(),
            userinfo: client.login_mode == LoginMode::Userinfo,
            public,
            uris: client.redirect_uris.join("\n"),
            alg: client.id_token_signed_response_alg.as_str(),
            surface: client.login_surface.as_str(),
            confirmation: confirmation_value(client.scan_confirmation),
            name: client.name,
            client_id: client.client_id,
        });
    }
    let settings = tenancy.gateway_settings(principal, appid).await?;
    let s = &settings.settings;
    let settings = SettingsForm {
        original_id: s.original_id.clone().unwrap_or_default(),
        push_mode: s.push_mode.map(PushMode::as_str).unwrap_or("").to_owned(),
        push_relay_url: s.push_relay_url.clone().unwrap_or_default(),
        follow_qr_url: s.follow_qr_url.clone().unwrap_or_default(),
        follow_link: s.follow_link.clone().unwrap_or_default(),
        push_url: settings.push_url.clone(),
    };
    let row = accounts::rows(&ctx, std::slice::from_ref(&view), dashboard.now())
        .pop()
        .ok_or(DashboardError::Internal("an account without its row"))?;
    let query = tenancy::people::AuditQuery {
        appid: Some(account.appid.clone()),
        ..Default::default()
    };
    let recent = tenancy
        .list_audit(principal, &query, None, RECENT_ACTIVITY)
        .await?;
    let token_api = token_api_example(dashboard, &account.appid);
    Ok(AccountPage {
        appid: account.appid.clone(),
        disabled: account.state == AccountState::Disabled,
        kind: ctx
            .t(match (account.kind, account.verified) {
                (AccountKind::Service, true) => "account.kind_service_verified",
                (AccountKind::Service, false) => "account.kind_service",
                (AccountKind::Subscription, true) => "account.kind_subscription_verified",
                (AccountKind::Subscription, false) => "account.kind_subscription",
            })
            .to_owned(),
        last_error: view
            .health
            .last_error_code
            .map(|code| ctx.tf("account.last_error", &[("code", &code.to_string())])),
        web_login: tenancy::websites::web_login_refusal(account).is_none(),
        row,
        can,
        keys,
        websites,
        settings,
        once,
        errors,
        typed,
        token_api,
        rows: crate::audit::entry_rows(&recent),
        type_appid: ctx.tf("account.type_appid", &[("appid", &account.appid)]),
        ctx,
    })
}

fn page_of(status: StatusCode, page: &AccountPage) -> Response {
    layout::page(status, page)
}

/// Back to the account page with `flash`.
fn back(appid: &str, flash: Flash) -> Response {
    Redirect::to(&flash.on(&format!("{PREFIX}/accounts/{appid}"))).into_response()
}

/// The account, when `person` may see it and perform `operation` on it. Asked before a
/// form's own checks (a typed confirmation), so a refusal reads the same whatever was typed.
async fn allowed(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    operation: Operation,
) -> Result<Account, DashboardError> {
    let view = dashboard
        .tenancy()
        .account(&person.principal, appid)
        .await?;
    tenancy::policy::authorize(&person.principal, operation, Some(&view.account))?;
    Ok(view.account)
}

/// The page again with `error` beside its field (422), or the error page when the error
/// concerns no field.
async fn refused(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    error: TenancyError,
    typed: Typed,
    field_for: impl Fn(&'static str) -> &'static str,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(dashboard, &person.visitor);
    let Some((field, text)) = fields::of(&ctx, &error) else {
        return Err(error.into());
    };
    let page = render(
        dashboard,
        person,
        appid,
        None,
        vec![(field_for(field), text)],
        typed,
    )
    .await?;
    Ok(page_of(StatusCode::UNPROCESSABLE_ENTITY, &page))
}

/// `GET /dashboard/accounts/{appid}`.
pub(crate) async fn show(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    let page = render(
        &dashboard,
        &person,
        &appid,
        None,
        Vec::new(),
        Typed::default(),
    )
    .await?;
    Ok(page_of(StatusCode::OK, &page))
}

/// `POST /dashboard/accounts/{appid}/refresh`.
pub(crate) async fn refresh(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    match dashboard
        .tenancy()
        .refresh_now(&person.principal, &appid)
        .await
    {
        Ok(()) => Ok(back(&appid, Flash::RefreshRequested)),
        Err(TenancyError::TooSoon { .. }) => {
            let ctx = Ctx::new(&dashboard, &person.visitor);
            let text = ctx.t("account.refresh_too_soon").to_owned();
            let page = render(
                &dashboard,
                &person,
                &appid,
                None,
                vec![("refresh", text)],
                Typed::default(),
            )
            .await?;
            Ok(page_of(StatusCode::TOO_MANY_REQUESTS, &page))
        }
        Err(error) => {
            refused(
                &dashboard,
                &person,
                &appid,
                error,
                Typed::default(),
                |_| "refresh",
            )
            .await
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Confirm {
    confirm: String,
}

/// The page with `error` beside the confirmation field `field` (422).
async fn confirmation_refused(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    field: &'static str,
) -> Result<Response, DashboardError> {
    let ctx = Ctx::new(dashboard, &person.visitor);
    let text = ctx.tf("account.confirm_wrong", &[("appid", appid)]);
    let page = render(
        dashboard,
        person,
        appid,
        None,
        vec![(field, text)],
        Typed::default(),
    )
    .await?;
    Ok(page_of(StatusCode::UNPROCESSABLE_ENTITY, &page))
}

/// `POST /dashboard/accounts/{appid}/clear-quota`: only with the AppID typed.
pub(crate) async fn clear_quota(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<Confirm>,
) -> Result<Response, DashboardError> {
    allowed(&dashboard, &person, &appid, Operation::AccountClearQuota).await?;
    if form.confirm.trim() != appid {
        return confirmation_refused(&dashboard, &person, &appid, "clear_quota").await;
    }
    match dashboard
        .tenancy()
        .clear_quota(&person.principal, &appid)
        .await
    {
        Ok(()) => Ok(back(&appid, Flash::QuotaCleared)),
        Err(TenancyError::Wechat(error)) => {
            let ctx = Ctx::new(&dashboard, &person.visitor);
            let code = error
                .code()
                .map_or_else(|| "—".to_owned(), |c| c.0.to_string());
            let text = ctx.tf("account.clear_refused", &[("code", &code)]);
            let page = render(
                &dashboard,
                &person,
                &appid,
                None,
                vec![("clear_quota", text)],
                Typed::default(),
            )
            .await?;
            Ok(page_of(StatusCode::BAD_GATEWAY, &page))
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewSecret {
    appsecret: String,
}

/// `POST /dashboard/accounts/{appid}/appsecret`: the live check, then the new secret.
pub(crate) async fn replace_secret(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<NewSecret>,
) -> Result<Response, DashboardError> {
    let secret = SecretString::new(form.appsecret.trim().to_owned());
    match dashboard
        .tenancy()
        .replace_appsecret(
            &person.principal,
            &appid,
            secret,
            tenancy::tenants::LiveCheck::Check,
        )
        .await
    {
        Ok(()) => Ok(back(&appid, Flash::SecretReplaced)),
        // Everything the check says is shown beside the one field there is.
        Err(error) => {
            refused(
                &dashboard,
                &person,
                &appid,
                error,
                Typed::default(),
                |_| "appsecret",
            )
            .await
        }
    }
}

/// `POST /dashboard/accounts/{appid}/push-credentials`: new Token and EncodingAESKey, shown
/// once with the push URL.
pub(crate) async fn push_credentials(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    let made = dashboard
        .tenancy()
        .rotate_push_credentials(&person.principal, &appid)
        .await?;
    let push_url = dashboard
        .tenancy()
        .gateway_settings(&person.principal, &appid)
        .await?
        .push_url;
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let once = Once {
        title: ctx.t("push.made_title").to_owned(),
        text: ctx.t("push.made_text").to_owned(),
        values: vec![
            OnceValue {
                id: "push-url",
                label: ctx.t("push.url").to_owned(),
                value: push_url,
                rows: 2,
            },
            OnceValue {
                id: "push-token",
                label: "Token".to_owned(),
                value: made.token.expose().to_owned(),
                rows: 1,
            },
            OnceValue {
                id: "push-aes-key",
                label: "EncodingAESKey".to_owned(),
                value: made.encoding_aes_key.expose().to_owned(),
                rows: 2,
            },
        ],
    };
    let page = render(
        &dashboard,
        &person,
        &appid,
        Some(once),
        Vec::new(),
        Typed::default(),
    )
    .await?;
    Ok(page_of(StatusCode::OK, &page))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct NewKey {
    label: String,
    token: Option<String>,
    report: Option<String>,
    proxy: Option<String>,
    /// One WeChat path per line; empty: any.
    proxy_paths: String,
}

/// `POST /dashboard/accounts/{appid}/keys`: a new API key, shown once.
pub(crate) async fn create_key(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<NewKey>,
) -> Result<Response, DashboardError> {
    let request = KeyRequest {
        label: form.label.clone(),
        scopes: KeyScopes {
            token: form.token.is_some(),
            report: form.report.is_some(),
            proxy: form.proxy.is_some(),
        },
        proxy_paths: {
            let paths: Vec<String> = form
                .proxy_paths
                .lines()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            (!paths.is_empty()).then_some(paths)
        },
    };
    match dashboard
        .tenancy()
        .create_api_key(&person.principal, &appid, &request)
        .await
    {
        Ok(created) => {
            let ctx = Ctx::new(&dashboard, &person.visitor);
            let once = Once {
                title: ctx.tf("keys.made_title", &[("label", &created.record.label)]),
                text: ctx.t("keys.made_text").to_owned(),
                values: vec![OnceValue {
                    id: "api-key",
                    label: ctx.t("keys.key").to_owned(),
                    value: created.key.expose().to_owned(),
                    rows: 2,
                }],
            };
            let page = render(
                &dashboard,
                &person,
                &appid,
                Some(once),
                Vec::new(),
                Typed::default(),
            )
            .await?;
            Ok(page_of(StatusCode::OK, &page))
        }
        Err(error) => {
            let typed = Typed {
                key_label: form.label.trim().to_owned(),
                key_proxy_paths: form.proxy_paths.trim().to_owned(),
                ..Typed::default()
            };
            refused(
                &dashboard,
                &person,
                &appid,
                error,
                typed,
                |field| match field {
                    "scopes" => "key_scopes",
                    "proxy_paths" => "key_proxy_paths",
                    _ => "key_label",
                },
            )
            .await
        }
    }
}

/// `POST /dashboard/accounts/{appid}/keys/{key}/revoke`.
pub(crate) async fn revoke_key(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, key)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .revoke_api_key(&person.principal, &appid, &key)
        .await?;
    Ok(back(&appid, Flash::KeyRevoked))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WebsiteForm {
    name: String,
    redirect_uris: String,
    mode: String,
    public: Option<String>,
    /// Only on the edit form; a form without them keeps what is set.
    alg: Option<String>,
    surface: Option<String>,
    confirmation: Option<String>,
}

/// The scan confirmation's form value: `default` means the account's push mode decides.
fn confirmation_value(setting: Option<bool>) -> &'static str {
    match setting {
        Some(true) => "on",
        Some(false) => "off",
        None => "default",
    }
}

/// One of a radio group's values, refused with what was sent when it is none of them (only a
/// hand-made request can send that).
fn choice<T>(
    field: &'static str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, TenancyError> {
    value
        .map(|text| {
            parse(text).ok_or_else(|| TenancyError::Invalid {
                field,
                message: format!("{text:?} is not one of the choices the form offers"),
            })
        })
        .transpose()
}

impl WebsiteForm {
    fn uris(&self) -> Vec<String> {
        self.redirect_uris
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Everything the edit form sets.
    fn changes(&self) -> Result<WebsiteChanges, TenancyError> {
        Ok(WebsiteChanges {
            name: Some(self.name.clone()),
            redirect_uris: Some(self.uris()),
            login_mode: Some(self.mode()),
            id_token_signed_response_alg: choice("alg", self.alg.as_deref(), |t| {
                t.parse::<SigningAlg>().ok()
            })?,
            login_surface: choice("surface", self.surface.as_deref(), |t| {
                t.parse::<LoginSurface>().ok()
            })?,
            scan_confirmation: choice("confirmation", self.confirmation.as_deref(), |t| match t {
                "on" => Some(Some(true)),
                "off" => Some(Some(false)),
                "default" => Some(None),
                _ => None,
            })?,
        })
    }

    fn mode(&self) -> LoginMode {
        if self.mode == "userinfo" {
            LoginMode::Userinfo
        } else {
            LoginMode::FollowRequired
        }
    }
}

fn website_field(field: &'static str) -> &'static str {
    match field {
        "name" => "website_name",
        "redirect_uri" => "website_uris",
        _ => "website",
    }
}

/// `POST /dashboard/accounts/{appid}/websites`: a new website; its secret shown once.
pub(crate) async fn create_website(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<WebsiteForm>,
) -> Result<Response, DashboardError> {
    let new = NewWebsite {
        name: form.name.clone(),
        redirect_uris: form.uris(),
        login_mode: form.mode(),
        public: form.public.is_some(),
    };
    match dashboard
        .tenancy()
        .create_website(&person.principal, &appid, &new)
        .await
    {
        Ok(made) => {
            let ctx = Ctx::new(&dashboard, &person.visitor);
            let mut values = vec![
                OnceValue {
                    id: "website-issuer",
                    label: ctx.t("websites.issuer").to_owned(),
                    value: made.issuer.clone(),
                    rows: 1,
                },
                OnceValue {
                    id: "website-client-id",
                    label: "client_id".to_owned(),
                    value: made.client.client_id.clone(),
                    rows: 1,
                },
            ];
            if let Some(secret) = &made.secret {
                values.push(OnceValue {
                    id: "website-secret",
                    label: "client_secret".to_owned(),
                    value: secret.expose().to_owned(),
                    rows: 2,
                });
            }
            let once = Once {
                title: ctx.tf("websites.made_title", &[("name", &made.client.name)]),
                text: ctx
                    .t(if made.secret.is_some() {
                        "websites.made_text"
                    } else {
                        "websites.made_text_public"
                    })
                    .to_owned(),
                values,
            };
            let page = render(
                &dashboard,
                &person,
                &appid,
                Some(once),
                Vec::new(),
                Typed::default(),
            )
            .await?;
            Ok(page_of(StatusCode::OK, &page))
        }
        Err(error) => {
            let typed = Typed {
                website_name: form.name.trim().to_owned(),
                website_uris: form.redirect_uris.trim().to_owned(),
                ..Typed::default()
            };
            refused(&dashboard, &person, &appid, error, typed, website_field).await
        }
    }
}

/// `POST /dashboard/accounts/{appid}/websites/{client}/edit`.
pub(crate) async fn edit_website(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, client)): Path<(String, String)>,
    CsrfForm(form): CsrfForm<WebsiteForm>,
) -> Result<Response, DashboardError> {
    let edited = match form.changes() {
        Ok(changes) => {
            dashboard
                .tenancy()
                .edit_website(&person.principal, &appid, &client, &changes)
                .await
        }
        Err(error) => Err(error),
    };
    match edited {
        Ok(_) => Ok(back(&appid, Flash::WebsiteSaved)),
        Err(error) => {
            refused(&dashboard, &person, &appid, error, Typed::default(), |_| {
                // One website's form among several: the error shows above the list.
                "website_edit"
            })
            .await
        }
    }
}

/// `POST /dashboard/accounts/{appid}/websites/{client}/rotate`: a new secret, shown once.
pub(crate) async fn rotate_website(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, client)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    let secret = match dashboard
        .tenancy()
        .rotate_website_secret(&person.principal, &appid, &client)
        .await
    {
        Ok(secret) => secret,
        Err(error) => {
            return refused(
                &dashboard,
                &person,
                &appid,
                error,
                Typed::default(),
                |_| "website_edit",
            )
            .await;
        }
    };
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let once = Once {
        title: ctx.tf("websites.rotated_title", &[("client", &client)]),
        text: ctx.t("websites.rotated_text").to_owned(),
        values: vec![OnceValue {
            id: "website-secret",
            label: "client_secret".to_owned(),
            value: secret.expose().to_owned(),
            rows: 2,
        }],
    };
    let page = render(
        &dashboard,
        &person,
        &appid,
        Some(once),
        Vec::new(),
        Typed::default(),
    )
    .await?;
    Ok(page_of(StatusCode::OK, &page))
}

/// `POST /dashboard/accounts/{appid}/websites/{client}/delete`.
pub(crate) async fn delete_website(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path((appid, client)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .delete_website(&person.principal, &appid, &client)
        .await?;
    Ok(back(&appid, Flash::WebsiteDeleted))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct SettingsFormIn {
    original_id: String,
    push_mode: String,
    push_relay_url: String,
    follow_qr_url: String,
    follow_link: String,
}

/// `POST /dashboard/accounts/{appid}/settings`.
pub(crate) async fn settings(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<SettingsFormIn>,
) -> Result<Response, DashboardError> {
    let push_mode = match form.push_mode.as_str() {
        "" => None,
        mode => Some(
            mode.parse::<PushMode>()
                .map_err(|_| DashboardError::BadForm)?,
        ),
    };
    let change = SettingsChange {
        original_id: Some(Some(form.original_id)),
        push_mode: Some(push_mode),
        push_relay_url: Some(Some(form.push_relay_url)),
        follow_qr_url: Some(Some(form.follow_qr_url)),
        follow_link: Some(Some(form.follow_link)),
    };
    match dashboard
        .tenancy()
        .update_gateway_settings(&person.principal, &appid, change)
        .await
    {
        Ok(_) => Ok(back(&appid, Flash::SettingsSaved)),
        Err(error) => {
            refused(
                &dashboard,
                &person,
                &appid,
                error,
                Typed::default(),
                |field| match field {
                    "original_id" => "original_id",
                    "push_relay_url" => "push_relay_url",
                    "follow_qr_url" => "follow_qr_url",
                    "follow_link" => "follow_link",
                    _ => "settings",
                },
            )
            .await
        }
    }
}

/// `POST /dashboard/accounts/{appid}/disable`.
pub(crate) async fn disable(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .disable_account(&person.principal, &appid)
        .await?;
    Ok(back(&appid, Flash::AccountDisabled))
}

/// `POST /dashboard/accounts/{appid}/enable`.
pub(crate) async fn enable(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    dashboard
        .tenancy()
        .enable_account(&person.principal, &appid)
        .await?;
    Ok(back(&appid, Flash::AccountEnabled))
}

/// `POST /dashboard/accounts/{appid}/delete`: only with the AppID typed; the account's data
/// key goes with it.
pub(crate) async fn delete(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    CsrfForm(form): CsrfForm<Confirm>,
) -> Result<Response, DashboardError> {
    allowed(&dashboard, &person, &appid, Operation::AccountDelete).await?;
    if form.confirm.trim() != appid {
        return confirmation_refused(&dashboard, &person, &appid, "delete").await;
    }
    dashboard
        .tenancy()
        .delete_account(&person.principal, &appid)
        .await?;
    let home = Dashboard::home_of(match person.principal {
        Principal::Operator { .. } => store::people::Role::Operator,
        _ => store::people::Role::Owner,
    });
    Ok(Redirect::to(&Flash::AccountDeleted.on(&home)).into_response())
}

/// An end user as the list shows them.
pub(crate) struct EndUserRow {
    pub(crate) openid: String,
    pub(crate) nickname: String,
    pub(crate) following: bool,
    pub(crate) arrived: String,
    pub(crate) first_login: String,
    pub(crate) last_login: String,
}

#[derive(Template)]
#[template(path = "account/end_users.html")]
struct EndUsersPage {
    ctx: Ctx,
    appid: String,
    name: String,
    q: String,
    rows: Vec<EndUserRow>,
    next: Option<String>,
    later: bool,
    first: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct EndUserQuery {
    q: String,
    after: Option<String>,
}

/// `GET /dashboard/accounts/{appid}/end-users`: search by openid or nickname, keyset pages.
pub(crate) async fn end_users(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
    Query(query): Query<EndUserQuery>,
) -> Result<Response, DashboardError> {
    let tenancy = dashboard.tenancy();
    let q = query.q.trim().to_owned();
    let users = tenancy
        .list_end_users(
            &person.principal,
            &appid,
            Some(q.as_str()).filter(|q| !q.is_empty()),
            query.after.as_deref(),
            END_USER_PAGE,
        )
        .await?;
    let view = tenancy.account(&person.principal, &appid).await?;
    let ctx = Ctx::new(&dashboard, &person.visitor).in_section("accounts");
    let dash = || "—".to_owned();
    let next = (users.len() == END_USER_PAGE as usize)
        .then(|| users.last())
        .flatten()
        .map(|last| {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("q", &q)
                .append_pair("after", &last.openid)
                .finish();
            format!("?{query}")
        });
    let rows = users
        .into_iter()
        .map(|user| EndUserRow {
            arrived: ctx
                .t(match user.created_via {
                    store::end_users::CreatedVia::Push => "end_users.via_push",
                    store::end_users::CreatedVia::LoginBase => "end_users.via_login_base",
                    store::end_users::CreatedVia::LoginUserinfo => "end_users.via_login_userinfo",
                })
                .to_owned(),
            first_login: user.first_login_at.map_or_else(dash, time::format),
            last_login: user.last_login_at.map_or_else(dash, time::format),
            following: user.subscribed,
            nickname: user.nickname.unwrap_or_default(),
            openid: user.openid,
        })
        .collect();
    Ok(layout::page(
        StatusCode::OK,
        &EndUsersPage {
            appid: view.account.appid,
            name: view.account.name,
            q: q.clone(),
            rows,
            next,
            later: query.after.is_some(),
            first: format!(
                "?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("q", &q)
                    .finish()
            ),
            ctx,
        },
    ))
}
