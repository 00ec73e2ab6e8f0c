//! wxhub's web dashboard: account owners and operators sign in, and see and run their
//! accounts. Server-rendered HTML (askama templates under `web/templates/`, compiled in; one
//! CSS file under `web/static/`, embedded), zh-CN and English, usable without JavaScript.
//!
//! What it must never do:
//! - decide who may do what: every operation goes to the tenancy layer with the
//!   [`tenancy::Principal`] of the signed-in person ([`tenancy::Tenancy::principal_for_user`]);
//! - hold SQL: sign-in data (sessions, one-time links, TOTP secrets) goes through `store`;
//! - read a form without its CSRF token checked ([`csrf::CsrfForm`] is the only way);
//! - keep a password, session token, link token or TOTP secret in the clear anywhere but in
//!   the request that carries it.
//!
//! Modules: [`routes`] (the route table every route is mounted from), `context` (the one
//! middleware: the visitor, the CSRF check, security headers, error pages), `session`
//! (cookies and the session extractors), [`csrf`], [`limits`] (sign-in rate limits),
//! [`password`] (argon2id and the password policy), [`totp`], [`i18n`], `layout` (what every
//! page shares), `error`, and one module per page group: `sign_in`, `setup`, `security`,
//! `accounts`, `register` (adding an account), `account` (one account's page and actions),
//! `operator`, `audit` (the operator's audit log and its CSV export), `assets`; `fields`
//! (field-level errors of the tenancy layer) and `time` (how times are shown).

mod account;
mod accounts;
mod assets;
mod audit;
mod charts;
mod console;
mod context;
pub mod csrf;
mod error;
mod fields;
pub mod i18n;
mod layout;
pub mod limits;
mod operator;
pub mod password;
mod push_routes;
mod register;
pub mod routes;
mod security;
mod session;
mod setup;
mod sign_in;
mod statistics;
mod time;
pub mod totp;

use std::sync::Arc;
use std::time::Duration;

use ::accounts::VaultHandle;
use axum::Router;
use store::sign_in::LinkPurpose;
use tenancy::Tenancy;
use url::Url;
use wechat::SharedClock;

pub use error::DashboardError;
pub use routes::{Access, ROUTES, Route};

/// Where the dashboard lives under the hub's public URL.
pub const PREFIX: &str = "/dashboard";

/// Settings of the dashboard.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The hub's public URL: links and the origin forms must come from.
    pub public_url: Url,
    /// Operators must enrol TOTP before they can do anything else.
    pub require_totp_for_operators: bool,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however busy.
    pub absolute_timeout: Duration,
    /// How long the step between a right password and the TOTP code may take.
    pub second_factor_timeout: Duration,
    pub limits: limits::LimitConfig,
    pub password_hashing: password::HashingCost,
}

impl DashboardConfig {
    /// Defaults for a hub at `public_url`: TOTP required for operators when it is https.
    pub fn new(public_url: Url) -> Self {
        Self {
            require_totp_for_operators: public_url.scheme() == "https",
            public_url,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            second_factor_timeout: Duration::from_secs(5 * 60),
            limits: limits::LimitConfig::default(),
            password_hashing: password::HashingCost::default(),
        }
    }

    /// Whether cookies are sent over https only (with the `__Host-` prefix).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }
}

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Translations(#[from] i18n::TranslationError),
    #[error("the password hashing cost is not valid: {0}")]
    Hashing(String),
}

/// The dashboard's state. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) tenancy: Tenancy,
    pub(crate) vault: Arc<VaultHandle>,
    pub(crate) clock: SharedClock,
    pub(crate) config: DashboardConfig,
    pub(crate) translations: Arc<i18n::Translations>,
    pub(crate) limits: limits::SignInLimits,
    pub(crate) passwords: password::Passwords,
    pub(crate) cookies: session::CookieNames,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("public_url", &self.inner.config.public_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// The dashboard over `tenancy`, sealing TOTP secrets with `vault`.
    pub fn new(
        tenancy: Tenancy,
        vault: Arc<VaultHandle>,
        clock: SharedClock,
        config: DashboardConfig,
    ) -> Result<Self, StartError> {
        let translations = i18n::Translations::embedded()?;
        let passwords = password::Passwords::new(config.password_hashing)
            .map_err(|e| StartError::Hashing(e.to_string()))?;
        let limits = limits::SignInLimits::new(&config.limits, clock.clone());
        let cookies = session::CookieNames::new(config.secure_cookies());
        Ok(Self {
            inner: Arc::new(Inner {
                tenancy,
                vault,
                clock,
                config,
                translations,
                limits,
                passwords,
                cookies,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The state itself, for work moved to the blocking pool.
    pub(crate) fn shared(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    pub(crate) fn tenancy(&self) -> &Tenancy {
        &self.inner.tenancy
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Its settings.
    pub fn config(&self) -> &DashboardConfig {
        &self.inner.config
    }
}

/// The page a one-time link opens: `{public_url}/dashboard/setup/{token}` for setup links,
/// `…/invitation/{token}` for invitations.
pub fn link_url(public_url: &Url, purpose: LinkPurpose, token: &str) -> String {
    let page = match purpose {
        LinkPurpose::Setup => "setup",
        LinkPurpose::Invitation => "invitation",
    };
    format!(
        "{}{PREFIX}/{page}/{token}",
        public_url.as_str().trim_end_matches('/')
    )
}

/// The dashboard's router: every route of [`ROUTES`] (the hub's root among them, which
/// leads to the dashboard), behind the one middleware that knows the visitor, checks CSRF
/// tokens, sets the security headers and renders error pages.
pub fn router(dashboard: Dashboard) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, (route.handler)());
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            context::around,
        ))
        .with_state(dashboard)
}
