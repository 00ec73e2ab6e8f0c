//! The console-settings page: everything an owner pastes into WeChat's console for wxhub to
//! serve the account, each with a copy button, the push credentials generated on request
//! (shown once), and WeChat's probe of the server URL.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use store::gateway::PushMode;
use tenancy::Principal;
use tenancy::console::{ConsoleSettings, ProbeReport};

use crate::account::{Once, OnceValue};
use crate::error::DashboardError;
use crate::layout::{self, Ctx};
use crate::session::SignedIn;
use crate::{Dashboard, fields};

/// One value to paste, with its copy button.
pub(crate) struct Paste {
    pub(crate) id: &'static str,
    pub(crate) label: String,
    pub(crate) value: String,
}

/// What the probe found, as the page shows it.
pub(crate) struct ProbeView {
    pub(crate) ok: bool,
    pub(crate) summary: String,
    pub(crate) lines: Vec<String>,
}

#[derive(Template)]
#[template(path = "account/console.html")]
pub(crate) struct ConsolePage {
    pub(crate) ctx: Ctx,
    pub(crate) appid: String,
    pub(crate) name: String,
    pub(crate) basic: Vec<Paste>,
    pub(crate) server: Vec<Paste>,
    pub(crate) web: Vec<Paste>,
    /// The AppSecret as the page may show it ("ends in …ab12").
    pub(crate) appsecret: String,
    pub(crate) token_state: String,
    pub(crate) aes_key_state: String,
    pub(crate) mode: String,
    /// The IP whitelist is unknown: the page says how to learn it.
    pub(crate) whitelist_unknown: bool,
    pub(crate) web_login: bool,
    pub(crate) token_api: String,
    /// Owners may generate credentials and ask for the probe; operators only read.
    pub(crate) owner: bool,
    pub(crate) once: Option<Once>,
    pub(crate) probe: Option<ProbeView>,
    pub(crate) probe_error: Option<String>,
}

fn mode_text(ctx: &Ctx, mode: PushMode, set: bool) -> String {
    let name = ctx.t(match mode {
        PushMode::Plain => "console.mode_plain",
        PushMode::Compatible => "console.mode_compatible",
        PushMode::Safe => "console.mode_safe",
    });
    if set {
        name.to_owned()
    } else {
        ctx.tf("console.mode_assumed", &[("mode", name)])
    }
}

fn present(ctx: &Ctx, stored: bool) -> String {
    ctx.t(if stored {
        "console.stored"
    } else {
        "console.not_stored"
    })
    .to_owned()
}

pub(crate) async fn render(
    dashboard: &Dashboard,
    person: &SignedIn,
    appid: &str,
    once: Option<Once>,
    probe: Result<Option<ProbeReport>, String>,
) -> Result<ConsolePage, DashboardError> {
    let tenancy = dashboard.tenancy();
    let view = tenancy.account(&person.principal, appid).await?;
    let settings: ConsoleSettings = tenancy.console_settings(&person.principal, appid).await?;
    let owner = !matches!(person.principal, Principal::Operator { .. });
    let ctx = Ctx::new(dashboard, &person.visitor).in_section(if owner {
        "accounts"
    } else {
        "all_accounts"
    });
    let mut basic = vec![Paste {
        id: "console-appid",
        label: "AppID".to_owned(),
        value: settings.appid.clone(),
    }];
    for (n, ip) in settings.whitelist.iter().enumerate() {
        basic.push(Paste {
            id: [
                "console-ip-1",
                "console-ip-2",
                "console-ip-3",
                "console-ip-4",
            ]
            .get(n)
            .copied()
            .unwrap_or("console-ip-more"),
            label: ctx.t("console.whitelist").to_owned(),
            value: ip.clone(),
        });
    }
    let server = vec![Paste {
        id: "console-url",
        label: ctx.t("console.url").to_owned(),
        value: settings.push_url.clone(),
    }];
    let web = vec![Paste {
        id: "console-domain",
        label: ctx.t("console.domain").to_owned(),
        value: settings.web_auth_domain.clone(),
    }];
    let appsecret = match &settings.secrets.appsecret_hint {
        Some(hint) => ctx.tf("console.secret_ends", &[("hint", hint)]),
        None => ctx.t("console.stored").to_owned(),
    };
    let (probe, probe_error) = match probe {
        Ok(None) => (None, None),
        Ok(Some(report)) => {
            let ok = report.reachable();
            let mut lines: Vec<String> = report
                .dns
                .iter()
                .map(|(ip, operator)| ctx.tf("console.probe_dns", &[("ip", ip), ("op", operator)]))
                .collect();
            lines.extend(report.ping.iter().map(|hop| {
                ctx.tf(
                    "console.probe_ping",
                    &[
                        ("ip", &hop.ip),
                        ("op", &hop.from_operator),
                        ("loss", &hop.package_loss),
                        ("time", &hop.time),
                    ],
                )
            }));
            let summary = ctx
                .t(if ok {
                    "console.probe_ok"
                } else {
                    "console.probe_failed"
                })
                .to_owned();
            (Some(ProbeView { ok, summary, lines }), None)
        }
        Err(message) => (None, Some(message)),
    };
    Ok(ConsolePage {
        appid: settings.appid.clone(),
        name: view.account.name,
        basic,
        server,
        web,
        appsecret,
        token_state: present(&ctx, settings.secrets.push_token),
        aes_key_state: present(&ctx, settings.secrets.encoding_aes_key),
        mode: mode_text(&ctx, settings.push_mode, settings.push_mode_set),
        whitelist_unknown: settings.whitelist.is_empty(),
        web_login: settings.web_login,
        token_api: crate::account::token_api_example(dashboard, &settings.appid),
        owner,
        once,
        probe,
        probe_error,
        ctx,
    })
}

/// `GET /dashboard/accounts/{appid}/console`.
pub(crate) async fn page(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    let page = render(&dashboard, &person, &appid, None, Ok(None)).await?;
    Ok(layout::page(StatusCode::OK, &page))
}

/// `POST /dashboard/accounts/{appid}/console/push-credentials`: a new Token and
/// EncodingAESKey, shown once on the console page beside where they go.
pub(crate) async fn push_credentials(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    let made = dashboard
        .tenancy()
        .rotate_push_credentials(&person.principal, &appid)
        .await?;
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let once = Once {
        title: ctx.t("push.made_title").to_owned(),
        text: ctx.t("push.made_text").to_owned(),
        values: vec![
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
    let page = render(&dashboard, &person, &appid, Some(once), Ok(None)).await?;
    Ok(layout::page(StatusCode::OK, &page))
}

/// `POST /dashboard/accounts/{appid}/console/probe`: asks WeChat to probe the server URL
/// and shows what it saw; a refusal (no URL configured yet, no token yet) is said in place.
pub(crate) async fn probe(
    State(dashboard): State<Dashboard>,
    person: SignedIn,
    Path(appid): Path<String>,
) -> Result<Response, DashboardError> {
    let result = dashboard
        .tenancy()
        .probe_push_url(&person.principal, &appid)
        .await;
    let ctx = Ctx::new(&dashboard, &person.visitor);
    let (status, probe) = match result {
        Ok(report) => (StatusCode::OK, Ok(Some(report))),
        Err(error) if error.is_refusal() => return Err(error.into()),
        Err(error) => match fields::of(&ctx, &error) {
            Some((_, message)) => (StatusCode::UNPROCESSABLE_ENTITY, Err(message)),
            None => match error {
                tenancy::TenancyError::Wechat(wechat) => {
                    // 40201: WeChat has no (or a wrong) server URL for the account yet.
                    let text = if wechat.code().is_some_and(|code| code.0 == 40201) {
                        ctx.t("console.probe_no_url").to_owned()
                    } else {
                        ctx.tf("console.probe_refused", &[("error", &wechat.to_string())])
                    };
                    (StatusCode::BAD_GATEWAY, Err(text))
                }
                other => return Err(other.into()),
            },
        },
    };
    let page = render(&dashboard, &person, &appid, None, probe).await?;
    Ok(layout::page(status, &page))
}
