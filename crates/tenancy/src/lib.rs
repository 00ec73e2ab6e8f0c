//! wxhub's application layer: every operation that owners, operators and the CLI perform on
//! accounts, API keys, websites, gateway settings and people, typed, authorized and audited.
//!
//! The dashboard, the CLI and any future API call this crate and nothing below it for these
//! operations. Each operation
//!
//! 1. takes a [`Principal`] and asks [`policy::authorize`] whether it may proceed — the one
//!    table of who may do what lives in [`policy`];
//! 2. checks its input and says what to fix ([`TenancyError::Invalid`]);
//! 3. writes its change and its audit entry in one transaction, and when other replicas must
//!    apply the change (an account disabled, a key revoked…), its row in the change feed
//!    (`store::changes`), which every replica reads within a second;
//! 4. returns typed results; a credential it creates (an API key, a website secret, generated
//!    push credentials) is returned once and never again. No operation returns a stored
//!    secret, to anyone.
//!
//! Registering an account and replacing its AppSecret first ask WeChat whether the
//! credentials work, in a way that invalidates nothing ([`check`]).

pub mod check;
pub mod console;
pub mod credentials;
mod error;
pub mod invitations;
pub mod keys;
pub mod people;
pub mod platform;
pub mod policy;
mod principal;
pub mod push_routes;
pub mod settings;
pub mod statistics;
pub mod targets;
pub mod tenants;
pub mod websites;

use std::sync::Arc;

use accounts::VaultHandle;
use store::Store;
use store::accounts::Account;
use store::audit::AuditRecord;
use wechat::SharedClock;

pub use check::{CheckFailure, Fix};
pub use error::TenancyError;
pub use policy::Operation;
pub use principal::Principal;

/// Settings of the layer.
#[derive(Debug, Clone)]
pub struct TenancyConfig {
    /// The hub's public URL (issuers and push URLs are shown under it).
    pub public_url: url::Url,
    /// The scheduler's daily budget of token fetches per account, shown beside the count.
    pub daily_token_budget: i64,
    /// The shortest time between two "refresh now" of one account (each one supersedes the
    /// token every backend uses and spends the daily quota).
    pub refresh_now_min_interval: std::time::Duration,
    /// The time zone of WeChat's daily quota day, as the scheduler counts it (UTC+8).
    pub quota_utc_offset_secs: i64,
    /// The addresses WeChat sees this hub's calls come from: the IP whitelist entries the
    /// console-settings page lists.
    pub egress_ips: Vec<std::net::IpAddr>,
    /// Anyone may sign up as an owner from the dashboard (off: operators invite owners).
    pub open_sign_up: bool,
    /// Hosts push routes and relays may reach on non-public addresses (`--push-allow-host`);
    /// a target with another non-public literal address is refused when entered.
    pub push_allow_hosts: Vec<String>,
}

impl TenancyConfig {
    /// Defaults for a hub at `public_url`.
    pub fn new(public_url: url::Url) -> Self {
        Self {
            public_url,
            daily_token_budget: 200,
            refresh_now_min_interval: std::time::Duration::from_secs(300),
            quota_utc_offset_secs: wechat::clock::CHINA_UTC_OFFSET_SECS,
            egress_ips: Vec::new(),
            open_sign_up: false,
            push_allow_hosts: Vec::new(),
        }
    }
}

/// The layer's handle. Cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    vault: Arc<VaultHandle>,
    wechat: wechat::Client,
    clock: SharedClock,
    config: TenancyConfig,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// The layer over `store`, sealing with `vault`, asking WeChat through `wechat`.
    pub fn new(
        store: Store,
        vault: Arc<VaultHandle>,
        wechat: wechat::Client,
        clock: SharedClock,
        config: TenancyConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                vault,
                wechat,
                clock,
                config,
            }),
        }
    }

    /// The store it writes to.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The hosts pushes may reach on non-public addresses.
    pub(crate) fn push_targets(&self) -> targets::AllowList {
        targets::AllowList::new(&self.inner.config.push_allow_hosts)
    }

    /// Its settings.
    pub fn config(&self) -> &TenancyConfig {
        &self.inner.config
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The audit record of `operation` by `principal`, about `account` when given.
    fn record(
        &self,
        principal: &Principal,
        operation: Operation,
        account: Option<&Account>,
    ) -> AuditRecord {
        let record = AuditRecord::new(principal.actor(), operation.name());
        match account {
            Some(account) => record.account(account.id.clone()),
            None => record,
        }
    }

    /// The account registered under `appid`, if `principal` may perform `operation` on it.
    async fn authorized_account(
        &self,
        principal: &Principal,
        operation: Operation,
        appid: &str,
    ) -> Result<Account, TenancyError> {
        let account = self
            .store()
            .find_account_by_appid(appid)
            .await?
            .ok_or(TenancyError::NotFound { what: "account" })?;
        policy::authorize(principal, operation, Some(&account))?;
        Ok(account)
    }
}
