//! What every page shares: the context each template gets (language, translations, the form
//! token, who is signed in), flash messages, the language switch, and rendering — of pages and
//! of the error page.

use std::sync::Arc;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use store::people::Role;
use store::sign_in::SessionStage;

use crate::context::Visitor;
use crate::error::ErrorPage;
use crate::i18n::{Lang, Translations};
use crate::{Dashboard, PREFIX, assets};

/// A one-line message shown after a redirect, named in the URL (`?flash=signed_out`): only
/// these exist, so a link cannot make the dashboard say anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flash {
    SignedOut,
    SignedOutEverywhere,
    PasswordSet,
    TotpEnabled,
    AccountAdded,
    RefreshRequested,
    QuotaCleared,
    SecretReplaced,
    KeyRevoked,
    WebsiteSaved,
    WebsiteDeleted,
    SettingsSaved,
    AccountDisabled,
    AccountEnabled,
    AccountDeleted,
    OwnerDisabled,
    OwnerEnabled,
    TotpReset,
    NoTotpToReset,
    RouteSaved,
    RouteDeleted,
    CopyResent,
}

impl Flash {
    pub(crate) const ALL: [Flash; 22] = [
        Flash::SignedOut,
        Flash::SignedOutEverywhere,
        Flash::PasswordSet,
        Flash::TotpEnabled,
        Flash::AccountAdded,
        Flash::RefreshRequested,
        Flash::QuotaCleared,
        Flash::SecretReplaced,
        Flash::KeyRevoked,
        Flash::WebsiteSaved,
        Flash::WebsiteDeleted,
        Flash::SettingsSaved,
        Flash::AccountDisabled,
        Flash::AccountEnabled,
        Flash::AccountDeleted,
        Flash::OwnerDisabled,
        Flash::OwnerEnabled,
        Flash::TotpReset,
        Flash::NoTotpToReset,
        Flash::RouteSaved,
        Flash::RouteDeleted,
        Flash::CopyResent,
    ];

    pub(crate) fn code(self) -> &'static str {
        match self {
            Flash::SignedOut => "signed_out",
            Flash::SignedOutEverywhere => "signed_out_everywhere",
            Flash::PasswordSet => "password_set",
            Flash::TotpEnabled => "totp_enabled",
            Flash::AccountAdded => "account_added",
            Flash::RefreshRequested => "refresh_requested",
            Flash::QuotaCleared => "quota_cleared",
            Flash::SecretReplaced => "secret_replaced",
            Flash::KeyRevoked => "key_revoked",
            Flash::WebsiteSaved => "website_saved",
            Flash::WebsiteDeleted => "website_deleted",
            Flash::SettingsSaved => "settings_saved",
            Flash::AccountDisabled => "account_disabled",
            Flash::AccountEnabled => "account_enabled",
            Flash::AccountDeleted => "account_deleted",
            Flash::OwnerDisabled => "owner_disabled",
            Flash::OwnerEnabled => "owner_enabled",
            Flash::TotpReset => "totp_reset",
            Flash::NoTotpToReset => "no_totp_to_reset",
            Flash::RouteSaved => "route_saved",
            Flash::RouteDeleted => "route_deleted",
            Flash::CopyResent => "copy_resent",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Flash> {
        Flash::ALL.into_iter().find(|f| f.code() == code)
    }

    /// Its translation key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Flash::SignedOut => "flash.signed_out",
            Flash::SignedOutEverywhere => "flash.signed_out_everywhere",
            Flash::PasswordSet => "flash.password_set",
            Flash::TotpEnabled => "flash.totp_enabled",
            Flash::AccountAdded => "flash.account_added",
            Flash::RefreshRequested => "flash.refresh_requested",
            Flash::QuotaCleared => "flash.quota_cleared",
            Flash::SecretReplaced => "flash.secret_replaced",
            Flash::KeyRevoked => "flash.key_revoked",
            Flash::WebsiteSaved => "flash.website_saved",
            Flash::WebsiteDeleted => "flash.website_deleted",
            Flash::SettingsSaved => "flash.settings_saved",
            Flash::AccountDisabled => "flash.account_disabled",
            Flash::AccountEnabled => "flash.account_enabled",
            Flash::AccountDeleted => "flash.account_deleted",
            Flash::OwnerDisabled => "flash.owner_disabled",
            Flash::OwnerEnabled => "flash.owner_enabled",
            Flash::TotpReset => "flash.totp_reset",
            Flash::NoTotpToReset => "flash.no_totp_to_reset",
            Flash::RouteSaved => "flash.route_saved",
            Flash::RouteDeleted => "flash.route_deleted",
            Flash::CopyResent => "flash.copy_resent",
        }
    }

    /// `path` with this flash.
    pub(crate) fn on(self, path: &str) -> String {
        format!("{path}?flash={}", self.code())
    }
}

/// The signed-in person, as the navigation bar shows them.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(crate) email: String,
    pub(crate) operator: bool,
    /// Fully signed in (not only enrolling a second factor): the navigation is shown.
    pub(crate) full: bool,
}

/// A link of the language switch.
pub(crate) struct LangLink {
    pub(crate) name: &'static str,
    pub(crate) code: &'static str,
    pub(crate) href: String,
    pub(crate) current: bool,
}

/// What every template gets as `ctx`.
pub(crate) struct Ctx {
    pub(crate) lang: Lang,
    translations: Arc<Translations>,
    /// The form token: every `<form method="post">` carries it.
    pub(crate) csrf: String,
    pub(crate) person: Option<Person>,
    pub(crate) path: String,
    pub(crate) flash: Option<&'static str>,
    /// Which part of the navigation is current.
    pub(crate) section: &'static str,
}

impl Ctx {
    pub(crate) fn new(dashboard: &Dashboard, visitor: &Visitor) -> Ctx {
        let person = visitor.session.as_ref().and_then(|s| match s.live.stage {
            SessionStage::SecondFactor => None,
            stage => Some(Person {
                email: s.live.user.email.clone(),
                operator: s.live.user.role == Role::Operator,
                full: stage == SessionStage::Full,
            }),
        });
        Ctx {
            lang: visitor.lang,
            translations: dashboard.inner().translations.clone(),
            csrf: visitor.csrf.clone(),
            person,
            path: visitor.path.clone(),
            flash: visitor.flash.map(Flash::key),
            section: "",
        }
    }

    /// For a page rendered before the visitor is known (the database did not answer).
    pub(crate) fn bare(dashboard: &Dashboard, lang: Lang) -> Ctx {
        Ctx {
            lang,
            translations: dashboard.inner().translations.clone(),
            csrf: String::new(),
            person: None,
            path: format!("{PREFIX}/"),
            flash: None,
            section: "",
        }
    }

    /// The same, with `section` current in the navigation.
    pub(crate) fn in_section(mut self, section: &'static str) -> Ctx {
        self.section = section;
        self
    }

    /// The text of `key` in the page's language.
    pub(crate) fn t<'a>(&'a self, key: &'a str) -> &'a str {
        self.translations.get(self.lang, key)
    }

    /// The text of `key` with its `{name}` placeholders filled.
    pub(crate) fn tf(&self, key: &str, values: &[(&str, &str)]) -> String {
        crate::i18n::fill(self.translations.get(self.lang, key), values)
    }

    /// The URL of the stylesheet (with its content hash, so it can be cached for good).
    pub(crate) fn stylesheet(&self) -> String {
        assets::stylesheet_url()
    }

    /// The URL of the copy buttons' script.
    pub(crate) fn script(&self) -> String {
        assets::script_url()
    }

    /// The language switch.
    pub(crate) fn languages(&self) -> Vec<LangLink> {
        let back: String =
            url::form_urlencoded::byte_serialize(self.path.as_bytes()).collect::<String>();
        Lang::ALL
            .into_iter()
            .map(|lang| LangLink {
                name: lang.own_name(),
                code: lang.code(),
                href: format!("{PREFIX}/language/{}?back={back}", lang.code()),
                current: lang == self.lang,
            })
            .collect()
    }

    pub(crate) fn is(&self, section: &str) -> bool {
        self.section == section
    }
}

/// Renders `template` with `status`.
pub(crate) fn page<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate<'a> {
    ctx: &'a Ctx,
    title: &'a str,
    text: &'a str,
}

/// The error page for `error`.
pub(crate) fn error_page(ctx: &Ctx, error: &ErrorPage) -> Response {
    page(
        error.status,
        &ErrorTemplate {
            ctx,
            title: ctx.t(error.title),
            text: ctx.t(error.text),
        },
    )
}
