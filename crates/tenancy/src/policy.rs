//! Who may do what: every operation of the layer, and the one table that decides it.
//!
//! Three principals exist. An **owner** works on the accounts they own and nothing else; an
//! account of another owner is answered as not found, so an owner cannot even learn that an
//! appid is registered by someone else. An **operator** runs the platform: sees every account,
//! its health and the audit log, manages people, and may stop an account (disable, enable) or
//! revoke a leaked API key — but cannot act *as* an owner: no registering accounts for them,
//! no secrets, no new keys or website secrets (each would hand the operator the account's core
//! token or its users' logins), no reading an account's end users. The **local CLI** runs on
//! the server host with the keyring in reach, so it may do everything an operator or an owner
//! may.
//!
//! Nobody, the CLI included, can read a secret back: no operation returns one after entry.
//! Operations that create a credential (an API key, a website secret, generated push
//! credentials) return it once, to whoever created it.

use store::accounts::Account;

use crate::TenancyError;
use crate::principal::Principal;

macro_rules! operations {
    ($( $(#[$doc:meta])* $name:ident = $text:literal => owner: $owner:ident, operator: $operator:ident; )+) => {
        /// Every operation of the tenancy layer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation { $( $(#[$doc])* $name ),+ }

        impl Operation {
            /// Every operation, in declaration order (the permission test walks this).
            pub const ALL: &'static [Operation] = &[$(Operation::$name),+];

            /// A stable name (audit actions use it).
            pub fn name(self) -> &'static str {
                match self { $( Operation::$name => $text ),+ }
            }

            /// What owners and operators may do with this operation.
            pub fn rule(self) -> Rule {
                match self {
                    $( Operation::$name => Rule { owner: Owner::$owner, operator: Operator::$operator } ),+
                }
            }
        }
    };
}

operations! {
    /// Register an account (with the live credential check).
    AccountRegister = "account.register" => owner: ForThemselves, operator: Deny;
    /// Register many accounts from a file, without the live check (the CLI only: it may do
    /// what an owner may, and a check per account would be a burst of calls to WeChat).
    AccountImport = "account.import" => owner: Deny, operator: Deny;
    /// List accounts with their health.
    AccountList = "account.list" => owner: OwnAccounts, operator: Allow;
    /// One account with its health.
    AccountView = "account.view" => owner: OwnAccounts, operator: Allow;
    /// Rename an account.
    AccountRename = "account.rename" => owner: OwnAccounts, operator: Deny;
    /// Replace the AppSecret (with the live check).
    AccountReplaceSecret = "account.replace_secret" => owner: OwnAccounts, operator: Deny;
    /// Set or rotate the push Token and EncodingAESKey.
    AccountSetPushCredentials = "account.set_push_credentials" => owner: OwnAccounts, operator: Deny;
    /// Stop serving an account (no refreshes, no token API, no logins).
    AccountDisable = "account.disable" => owner: OwnAccounts, operator: Allow;
    /// Serve a disabled account again.
    AccountEnable = "account.enable" => owner: OwnAccounts, operator: Allow;
    /// Delete an account and crypto-shred its secrets.
    AccountDelete = "account.delete" => owner: OwnAccounts, operator: Deny;
    /// Fetch a new core token now.
    AccountRefreshNow = "account.refresh_now" => owner: OwnAccounts, operator: Deny;
    /// Reset the account's WeChat API quota (10 a month, spent from the owner's budget).
    AccountClearQuota = "account.clear_quota" => owner: OwnAccounts, operator: Deny;
    /// Create an API key (shown once).
    ApiKeyCreate = "api_key.create" => owner: OwnAccounts, operator: Deny;
    /// List an account's API keys.
    ApiKeyList = "api_key.list" => owner: OwnAccounts, operator: Allow;
    /// Revoke an API key.
    ApiKeyRevoke = "api_key.revoke" => owner: OwnAccounts, operator: Allow;
    /// Register a website (OIDC client).
    WebsiteCreate = "website.create" => owner: OwnAccounts, operator: Deny;
    /// List an account's websites.
    WebsiteList = "website.list" => owner: OwnAccounts, operator: Allow;
    /// One website.
    WebsiteView = "website.view" => owner: OwnAccounts, operator: Allow;
    /// Change a website's name, redirect URIs or login mode.
    WebsiteEdit = "website.edit" => owner: OwnAccounts, operator: Deny;
    /// Replace a website's client secret (shown once).
    WebsiteRotateSecret = "website.rotate_secret" => owner: OwnAccounts, operator: Deny;
    /// Delete a website.
    WebsiteDelete = "website.delete" => owner: OwnAccounts, operator: Deny;
    /// Read the login gateway's settings of an account.
    SettingsView = "settings.view" => owner: OwnAccounts, operator: Allow;
    /// Change the login gateway's settings of an account.
    SettingsUpdate = "settings.update" => owner: OwnAccounts, operator: Deny;
    /// Ask WeChat to probe the account's server URL (a call in the account's name).
    SettingsProbe = "settings.probe" => owner: OwnAccounts, operator: Deny;
    /// Add a push route to the owner's own server (its Token is entered then).
    PushRouteCreate = "push_route.create" => owner: OwnAccounts, operator: Deny;
    /// List an account's push routes (never their credentials).
    PushRouteList = "push_route.list" => owner: OwnAccounts, operator: Allow;
    /// Change a push route's target, match, delivery, credentials or order, or switch it off.
    PushRouteEdit = "push_route.edit" => owner: OwnAccounts, operator: Deny;
    /// Delete a push route with its queued copies.
    PushRouteDelete = "push_route.delete" => owner: OwnAccounts, operator: Deny;
    /// Read a push route's last failures and dead letters (causes only, no message content).
    PushRouteFailures = "push_route.failures" => owner: OwnAccounts, operator: Allow;
    /// Send a dead letter again (the owner's server gets the user's message).
    PushRouteResend = "push_route.resend" => owner: OwnAccounts, operator: Deny;
    /// List and search an account's end users (their WeChat users).
    EndUserList = "end_user.list" => owner: OwnAccounts, operator: Deny;
    /// Read the audit log (owners: of their own accounts).
    AuditList = "audit.list" => owner: OwnAccounts, operator: Allow;
    /// Create an owner or an operator.
    PersonCreate = "person.create" => owner: Deny, operator: Allow;
    /// Invite a person: a one-time link to set their password (owners: 7 days; operators, and
    /// the first operator's setup link: 1 hour).
    PersonInvite = "person.invite" => owner: Deny, operator: Allow;
    /// Disable a person (ends their sessions).
    PersonDisable = "person.disable" => owner: Deny, operator: Allow;
    /// Re-enable a person.
    PersonEnable = "person.enable" => owner: Deny, operator: Allow;
    /// Remove a person's TOTP second factor (a lost authenticator); their sessions end.
    PersonResetTotp = "person.reset_totp" => owner: Deny, operator: Allow;
    /// List people.
    PersonList = "person.list" => owner: Deny, operator: Allow;
    /// An account's statistics (counters per hour and day).
    StatsView = "stats.view" => owner: OwnAccounts, operator: Allow;
    /// The platform's statistics: daily totals, busiest and most failing accounts.
    PlatformStats = "stats.platform" => owner: Deny, operator: Allow;
    /// The platform's health: accounts by state, those needing a person, key rotation.
    PlatformHealth = "platform.health" => owner: Deny, operator: Allow;
}

/// What an owner may do with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Nothing.
    Deny,
    /// On accounts they own.
    OwnAccounts,
    /// For themselves only (a new account is theirs).
    ForThemselves,
}

/// Whether an operator may do it (on any account).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Deny,
    Allow,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub owner: Owner,
    pub operator: Operator,
}

/// Decides whether `principal` may perform `operation` on `account` (`None` for operations
/// not about one account: registering, listing, people). Refusals say which operation; an
/// owner asking about another owner's account is told it does not exist.
pub fn authorize(
    principal: &Principal,
    operation: Operation,
    account: Option<&Account>,
) -> Result<(), TenancyError> {
    let rule = operation.rule();
    let denied = || TenancyError::Denied {
        operation: operation.name(),
    };
    match principal {
        Principal::Cli => Ok(()),
        Principal::Operator { .. } => match rule.operator {
            Operator::Allow => Ok(()),
            Operator::Deny => Err(denied()),
        },
        Principal::Owner { user_id } => match (rule.owner, account) {
            (Owner::Deny, _) => Err(denied()),
            (Owner::ForThemselves, _) => Ok(()),
            (Owner::OwnAccounts, Some(account)) if account.owner_user_id == *user_id => Ok(()),
            (Owner::OwnAccounts, Some(_)) => Err(TenancyError::NotFound { what: "account" }),
            // Listing: the caller restricts the listing to the owner's accounts.
            (Owner::OwnAccounts, None) => Ok(()),
        },
    }
}
