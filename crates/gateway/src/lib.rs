//! wxhub's login gateway: one OpenID Connect issuer per account (`{public_url}/t/{appid}`) in
//! front of WeChat's two web-login modes, and the account's push callback.
//!
//! Tenant websites speak standard OIDC (authorization code flow, PKCE S256, RS256 or ES256 ID tokens);
//! the gateway turns that into WeChat's OAuth (docs/wechat.md §4) and, for follow-required clients,
//! `/cgi-bin/user/info` with the account's core token (§5.1). The push callback (§6, §7)
//! pre-registers users as they follow and wakes logins waiting for a follow.
//!
//! What it must never do:
//! - call `/cgi-bin/token`: the core token belongs to the scheduler, reached through
//!   [`CoreTokens`] (a second fetcher would invalidate the scheduler's token, docs/wechat.md §10);
//! - keep flow state in memory: pending authorizations, follow waits, codes and tokens are in
//!   the database, so any replica continues any step;
//! - log or show a secret, token or code (only their hashes are stored).
//!
//! Modules: [`oidc`] (provider endpoints' logic), [`login`] (the WeChat side of a login),
//! [`push`] (push callback), [`routes`] (the owner's own servers behind the push callback:
//! reply routes, the durable copy queue, request-forgery protection), [`scan`] (logging in on a PC by scanning a QR code, and the
//! follow page's own code), [`keys`] (signing keys sealed by the vault), [`limits`] (what
//! anonymous visitors may make wxhub spend of WeChat's quotas), `events` (waking scan pages
//! on every replica), [`settings`]
//! (per-account gateway settings, validated), [`maintenance`] (the periodic sweep of expired
//! rows), [`error`] (the one error type and its HTTP mapping), `binding` (the login cookie
//! that ties a login to one browser), `pages` (server-rendered zh-CN/en HTML), `http` (thin
//! handlers and the router).

mod binding;
mod credentials;
pub mod error;
mod events;
pub mod fuzzing;
mod http;
pub mod keys;
pub mod limits;
pub mod login;
pub mod maintenance;
pub mod oidc;
mod pages;
mod params;
pub mod push;
pub mod routes;
pub mod scan;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use accounts::VaultHandle;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use sha2::{Digest, Sha256};
use store::Store;
use url::Url;
use wechat::{AccessToken, SharedClock};

pub use error::GatewayError;
pub use http::router;

/// A boxed future, so [`CoreTokens`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the scheduler could not hand out an account's core token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the account's core token is unavailable: {reason}")]
pub struct CoreTokenError {
    /// A human reason without secrets (e.g. "wrong AppSecret", "daily quota exhausted").
    pub reason: String,
}

/// The scheduler's side of the core token, as the gateway needs it.
///
/// The gateway never fetches a core token itself. Implementations must make
/// [`report_rejected`](CoreTokens::report_rejected) single flight: of many concurrent reports
/// of the same rejected token, at most one causes a refresh, and a report of a token that is
/// no longer current only returns the current one (ARCHITECTURE "Core-token refresh").
pub trait CoreTokens: Send + Sync + 'static {
    /// The account's current core token.
    fn current<'a>(
        &'a self,
        account_id: &'a str,
    ) -> BoxFuture<'a, Result<AccessToken, CoreTokenError>>;

    /// WeChat rejected `rejected` (40001/40014/42001): refresh if it is still the current
    /// token, and return the token to retry with.
    fn report_rejected<'a>(
        &'a self,
        account_id: &'a str,
        rejected: &'a AccessToken,
    ) -> BoxFuture<'a, Result<AccessToken, CoreTokenError>>;
}

/// What the gateway is built from.
pub struct GatewayConfig {
    pub store: Store,
    pub vault: Arc<VaultHandle>,
    pub clock: SharedClock,
    /// WeChat client (API and authorize page; the simulator in tests).
    pub wechat: wechat::Client,
    /// The scheduler's core tokens.
    pub core_tokens: Arc<dyn CoreTokens>,
    /// wxhub's public base URL; issuers are `{public_url}/t/{appid}`.
    pub public_url: Url,
    /// Where the login funnel, pushes and end users are counted.
    pub stats: stats::Stats,
}

/// The gateway's shared state. Cheap to share (`Arc<Gateway>`).
pub struct Gateway {
    pub(crate) store: Store,
    pub(crate) vault: Arc<VaultHandle>,
    pub(crate) clock: SharedClock,
    pub(crate) wechat: wechat::Client,
    pub(crate) core_tokens: Arc<dyn CoreTokens>,
    pub(crate) stats: stats::Stats,
    public_base: String,
    /// Push routes to owners' own servers.
    pub(crate) routing: routes::Routing,
    pub(crate) keys: keys::KeyCache,
    /// Whether the public URL is https: the login cookie is then `__Host-` prefixed and
    /// `Secure`.
    pub(crate) https: bool,
    /// Accounts already logged as missing their original id (logged once each).
    pub(crate) warned_missing_original_id: Mutex<HashSet<String>>,
    /// What anonymous visitors may make the gateway spend of WeChat's quotas.
    pub(crate) limits: limits::Limiters,
    /// Wakes this replica's scan pages and push retries when a scan or a push's reply is
    /// recorded (on any replica).
    pub(crate) announcements: events::Announcements,
    /// This gateway, for work it hands to a task of its own (the batched reply writes).
    me: std::sync::Weak<Gateway>,
}

impl Gateway {
    /// Builds the gateway with the default [`limits::GatewayLimits`].
    pub fn new(config: GatewayConfig) -> Result<Arc<Self>, GatewayError> {
        Self::with_limits(config, limits::GatewayLimits::default())
    }

    /// Builds the gateway with these limits and the default [`routes::RouteOptions`].
    pub fn with_limits(
        config: GatewayConfig,
        limits: limits::GatewayLimits,
    ) -> Result<Arc<Self>, GatewayError> {
        Self::with_options(config, limits, routes::RouteOptions::default())
    }

    /// Builds the gateway with these limits and push-route options.
    pub fn with_options(
        config: GatewayConfig,
        limits: limits::GatewayLimits,
        route_options: routes::RouteOptions,
    ) -> Result<Arc<Self>, GatewayError> {
        let routing = routes::Routing::new(route_options).map_err(GatewayError::HttpClient)?;
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            limits: limits::Limiters::new(limits, config.clock.clone()),
            announcements: events::Announcements::default(),
            store: config.store,
            vault: config.vault,
            clock: config.clock,
            wechat: config.wechat,
            core_tokens: config.core_tokens,
            stats: config.stats,
            public_base: config.public_url.as_str().trim_end_matches('/').to_owned(),
            routing,
            keys: keys::KeyCache::default(),
            https: config.public_url.scheme() == "https",
            warned_missing_original_id: Mutex::new(HashSet::new()),
        }))
    }

    /// The issuer URL of an account: `{public_url}/t/{appid}` (no trailing slash).
    pub fn issuer(&self, appid: &str) -> String {
        format!("{}/t/{appid}", self.public_base)
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The store, for [`maintenance::sweep`] and callers holding only the
    /// gateway.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The account with this appid if wxhub serves it.
    pub(crate) async fn active_account(
        &self,
        appid: &str,
    ) -> Result<store::accounts::Account, GatewayError> {
        match self.store.find_account_by_appid(appid).await? {
            Some(a) if a.state == store::accounts::AccountState::Active => Ok(a),
            _ => Err(GatewayError::UnknownAccount),
        }
    }
}

/// 256 random bits as unpadded base64url: codes, access tokens, wait tokens, client secrets.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>())
}

/// `len` random letters and digits (WeChat's `state` allows only `[A-Za-z0-9]`, §4.1).
pub(crate) fn random_alnum(len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALNUM[rng.random_range(0..ALNUM.len())]))
        .collect()
}

/// SHA-256 as lowercase hex: how codes, tokens, wait tokens and client secrets are stored.
/// They are 256-bit random values, so a fast hash is enough (no password stretching).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
