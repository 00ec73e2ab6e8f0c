//! Accounts: registering them (after the live check), their health, renaming, replacing
//! secrets, disabling, deleting, and the token actions "refresh now" and "clear quota".

use accounts::AccountInput;
use accounts::registry::{FIELD_APPSECRET, FIELD_ENCODING_AES_KEY, FIELD_PUSH_TOKEN};
use serde_json::json;
use store::accounts::{Account, AccountFilter, AccountKind, AccountState, TokenHealth, TokenMode};
use store::changes::ChangeKind;
use store::people::{NewUser, Role};
use store::tokens::TokenState;
use vault::SecretString;
use wechat::AppSecret;

use crate::check::{self, CheckFailure, Fix};
use crate::credentials::{self, PushCredentials};
use crate::policy::{self, Operation};
use crate::{Principal, Tenancy, TenancyError};

/// Who owns a new account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewOwner {
    /// The owner registering it (the only choice an owner has).
    Caller,
    /// The owner with this email, created without a password if missing (CLI only: the
    /// dashboard invites owners instead).
    Email(String),
}

/// Whether to ask WeChat before storing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveCheck {
    /// Ask WeChat (always, from the dashboard).
    Check,
    /// Store without asking (the CLI on a host that cannot reach WeChat yet); audited.
    Skip,
}

/// An account to register.
#[derive(Debug)]
pub struct Registration {
    pub appid: String,
    pub name: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
    pub appsecret: SecretString,
    pub push_token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
    pub owner: NewOwner,
    pub check: LiveCheck,
}

/// One account of an import: a line of the operator's file.
#[derive(Debug)]
pub struct ImportLine {
    /// Its line number in the file (1 is the first), for the errors.
    pub line: u64,
    pub appid: String,
    pub name: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
    pub appsecret: SecretString,
    pub push_token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
}

/// What is wrong with one line of an import, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: u64,
    /// The column at fault (`appid`, `appsecret`, `name`, …).
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.message)
    }
}

/// Accounts written per transaction by [`Tenancy::import_accounts`].
pub const IMPORT_BATCH: usize = 10_000;

/// Which accounts to list; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuery {
    /// Only this owner's (operators only).
    pub owner_email: Option<String>,
    /// Only those whose core token is in this state.
    pub token_state: Option<TokenState>,
    /// Only active or only disabled ones.
    pub state: Option<AccountState>,
    pub kind: Option<AccountKind>,
    /// The exact AppID, or part of the name.
    pub search: Option<String>,
}

/// An account with where its core token stands: what owners and operators see.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountView {
    pub account: Account,
    pub health: Health,
}

/// An account's token health.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub state: TokenState,
    /// When the current token expires (Unix ms), if there is one.
    pub expires_at: Option<i64>,
    /// Token fetches from WeChat today (Asia/Shanghai day), and the daily budget.
    pub fetches_today: i64,
    pub daily_budget: i64,
    /// The last failure's errcode and the scheduler's description of it.
    pub last_error_code: Option<i64>,
    pub last_error: Option<String>,
    /// What to do about the last failure, when it is one a person can fix.
    pub fix: Option<Fix>,
}

/// The name, trimmed, if it has 1 to 64 characters (it is shown to end users on the follow
/// page).
fn checked_account_name(name: &str) -> Result<&str, TenancyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(TenancyError::invalid(
            "name",
            "the account needs a name of 1 to 64 characters (shown to end users on the follow \
             page)",
        ));
    }
    Ok(name)
}

/// Only the CLI, on the server host, may store credentials WeChat has not accepted.
fn allow_skipping(
    principal: &Principal,
    check: LiveCheck,
    operation: &'static str,
) -> Result<(), TenancyError> {
    if check == LiveCheck::Skip && *principal != Principal::Cli {
        return Err(TenancyError::Denied { operation });
    }
    Ok(())
}

impl Tenancy {
    /// Registers an account after checking its credentials with WeChat (unless the CLI
    /// skips the check). Nothing is stored when the check or a format rule fails.
    pub async fn register_account(
        &self,
        principal: &Principal,
        registration: Registration,
    ) -> Result<AccountView, TenancyError> {
        policy::authorize(principal, Operation::AccountRegister, None)?;
        allow_skipping(
            principal,
            registration.check,
            "account.register without the credential check",
        )?;
        let appid = registration.appid.trim().to_owned();
        accounts::registry::validate_appid(&appid).map_err(invalid("appid"))?;
        accounts::registry::validate_appsecret(&registration.appsecret)
            .map_err(invalid("appsecret"))?;
        if let Some(token) = &registration.push_token {
            accounts::registry::validate_push_token(token).map_err(invalid("push_token"))?;
        }
        if let Some(key) = &registration.encoding_aes_key {
            accounts::registry::validate_encoding_aes_key(key)
                .map_err(invalid("encoding_aes_key"))?;
        }
        let name = checked_account_name(&registration.name)?;
        if self.store().find_account_by_appid(&appid).await?.is_some() {
            // For an owner this may reveal that someone registered the appid; WeChat's
            // appids are public (they appear in every OAuth URL), and one appid can only be
            // hosted once.
            return Err(TenancyError::Conflict {
                what: "account appid",
            });
        }
        if registration.check == LiveCheck::Check {
            let secret = AppSecret::new(registration.appsecret.expose());
            check::check_credentials(&self.inner.wechat, &appid, &secret)
                .await
                .map_err(TenancyError::CredentialCheck)?;
        }
        let owner_user_id = match (&registration.owner, principal) {
            (_, Principal::Owner { user_id }) => user_id.clone(),
            (NewOwner::Email(email), _) => self.owner_by_email(principal, email).await?,
            (NewOwner::Caller, _) => {
                return Err(TenancyError::invalid(
                    "owner",
                    "name the owner's email: only an owner registers accounts for themselves",
                ));
            }
        };
        let record = self
            .record(principal, Operation::AccountRegister, None)
            .details(json!({
                "appid": appid,
                "name": name,
                "kind": registration.kind.as_str(),
                "verified": registration.verified,
                "token_mode": registration.token_mode.as_str(),
                "owner_user_id": owner_user_id,
                "push_token": registration.push_token.is_some(),
                "encoding_aes_key": registration.encoding_aes_key.is_some(),
                "credential_check": registration.check == LiveCheck::Check,
            }))
            .announce(ChangeKind::Account);
        let input = AccountInput {
            owner_user_id,
            appid,
            name: name.to_owned(),
            kind: registration.kind,
            verified: registration.verified,
            token_mode: registration.token_mode,
            appsecret: registration.appsecret,
            push_token: registration.push_token,
            encoding_aes_key: registration.encoding_aes_key,
        };
        let vault = self.inner.vault.current();
        let account =
            accounts::register_account_audited(self.store(), &vault, &input, self.now(), &record)
                .await?;
        self.view(account).await
    }

    /// Registers the accounts of an import for the owner with `owner_email` (created without
    /// a password if missing), without the live credential check. Every line is checked first
    /// as [`Tenancy::register_account`] checks one (the formats, the name, the appid neither
    /// registered nor twice in the file): if any line fails, nothing is stored and
    /// [`TenancyError::Import`] lists every fault. Then [`IMPORT_BATCH`] accounts are written
    /// per transaction, all or nothing per batch, each batch with its audit entry;
    /// `progress(stored)` is called after each. A failure later (the database) leaves the
    /// batches before it stored. Returns how many were stored.
    pub async fn import_accounts(
        &self,
        principal: &Principal,
        owner_email: &str,
        lines: Vec<ImportLine>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<usize, TenancyError> {
        policy::authorize(principal, Operation::AccountImport, None)?;
        let mut errors = Vec::new();
        let mut seen = std::collections::HashMap::new();
        let mut inputs = Vec::with_capacity(lines.len());
        let mut numbers = Vec::with_capacity(lines.len());
        for line in lines {
            let n = line.line;
            let mut fault = |field: &'static str, message: String| {
                errors.push(LineError {
                    line: n,
                    field,
                    message,
                })
            };
            let appid = line.appid.trim().to_owned();
            let checks = [
                ("appid", accounts::registry::validate_appid(&appid)),
                (
                    "appsecret",
                    accounts::registry::validate_appsecret(&line.appsecret),
                ),
                (
                    "push_token",
                    line.push_token
                        .as_ref()
                        .map_or(Ok(()), accounts::registry::validate_push_token),
                ),
                (
                    "encoding_aes_key",
                    line.encoding_aes_key
                        .as_ref()
                        .map_or(Ok(()), accounts::registry::validate_encoding_aes_key),
                ),
            ];
            for (field, check) in checks {
                if let Err(error) = check {
                    fault(field, error.to_string());
                }
            }
            let name = match checked_account_name(&line.name) {
                Ok(name) => name.to_owned(),
                Err(TenancyError::Invalid { message, .. }) => {
                    fault("name", message);
                    String::new()
                }
                Err(other) => return Err(other),
            };
            if let Some(first) = seen.insert(appid.clone(), n) {
                fault(
                    "appid",
                    format!("{appid} is also on line {first}: each account once"),
                );
            }
            numbers.push(n);
            inputs.push(AccountInput {
                owner_user_id: String::new(),
                appid,
                name,
                kind: line.kind,
                verified: line.verified,
                token_mode: line.token_mode,
                appsecret: line.appsecret,
                push_token: line.push_token,
                encoding_aes_key: line.encoding_aes_key,
            });
        }
        let appids: Vec<&str> = inputs.iter().map(|i| i.appid.as_str()).collect();
        for taken in self.store().registered_appids(&appids).await? {
            errors.push(LineError {
                line: seen[&taken],
                field: "appid",
                message: format!("{taken} is registered already; remove the line"),
            });
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(TenancyError::Import { errors });
        }
        let owner_user_id = self.owner_by_email(principal, owner_email).await?;
        let vault = self.inner.vault.current();
        let mut stored = 0;
        for (batch, lines) in inputs
            .chunks_mut(IMPORT_BATCH)
            .zip(numbers.chunks(IMPORT_BATCH))
        {
            let mut accounts = Vec::with_capacity(batch.len());
            for input in batch.iter_mut() {
                input.owner_user_id.clone_from(&owner_user_id);
                accounts.push(accounts::prepare_account(&vault, input)?);
            }
            let record = self
                .record(principal, Operation::AccountImport, None)
                .details(json!({
                    "count": accounts.len(),
                    "first_line": lines.first(),
                    "last_line": lines.last(),
                    "owner_user_id": owner_user_id,
                    "credential_check": false,
                }));
            self.store()
                .create_accounts(&accounts, self.now(), Some(&record))
                .await?;
            stored += accounts.len();
            progress(stored);
        }
        Ok(stored)
    }

    /// The owner with `email`, created (without a password, audited) when missing.
    async fn owner_by_email(
        &self,
        principal: &Principal,
        email: &str,
    ) -> Result<String, TenancyError> {
        let email = crate::people::checked_email(email)?;
        match self.store().find_user_by_email(&email).await? {
            Some(user) if user.role == Role::Owner => Ok(user.id),
            Some(_) => Err(TenancyError::invalid(
                "owner",
                format!("{email} is an operator; accounts belong to owners"),
            )),
            None => {
                let user = NewUser {
                    id: store::new_id(),
                    email: email.clone(),
                    // Not a PHC string: no password verifies until the owner sets one.
                    password_hash: "!".to_owned(),
                    role: Role::Owner,
                };
                let record = self
                    .record(principal, Operation::PersonCreate, None)
                    .target(user.id.clone())
                    .details(json!({ "email": email, "role": "owner" }));
                Ok(self
                    .store()
                    .create_user_audited(&user, self.now(), &record)
                    .await?
                    .id)
            }
        }
    }

    /// The account with its health.
    async fn view(&self, account: Account) -> Result<AccountView, TenancyError> {
        let token = self.store().get_core_token(&account.id).await?;
        let health = token.map(|t| TokenHealth {
            state: t.state,
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            upstream_calls_today: t.upstream_calls_today,
            quota_day: t.quota_day,
            last_error_code: t.last_error_code,
            last_error_message: t.last_error_message,
            last_error_ip: t.last_error_ip,
        });
        Ok(self.with_health(account, health))
    }

    pub(crate) fn with_health(&self, account: Account, token: Option<TokenHealth>) -> AccountView {
        let budget = self.config().daily_token_budget;
        let today = wechat::clock::day_index(self.now(), self.config().quota_utc_offset_secs);
        let health = match token {
            Some(token) => {
                let fix = match token.state {
                    TokenState::NeedsAttention | TokenState::QuotaExhausted => Some(
                        CheckFailure {
                            code: token.last_error_code,
                            ip: token.last_error_ip.clone(),
                            unreachable: false,
                        }
                        .fix(),
                    ),
                    _ => None,
                };
                Health {
                    state: token.state,
                    expires_at: token.expires_at,
                    // The count is of the day it was last taken on.
                    fetches_today: if token.quota_day == today {
                        token.upstream_calls_today
                    } else {
                        0
                    },
                    daily_budget: budget,
                    last_error_code: token.last_error_code,
                    last_error: token.last_error_message,
                    fix,
                }
            }
            None => Health {
                state: TokenState::Pending,
                expires_at: None,
                fetches_today: 0,
                daily_budget: budget,
                last_error_code: None,
                last_error: None,
                fix: None,
            },
        };
        AccountView { account, health }
    }

    /// The accounts `principal` may see that match `query`, ordered by id after `after_id`,
    /// at most `limit`.
    pub async fn list_accounts(
        &self,
        principal: &Principal,
        query: &AccountQuery,
        after_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccountView>, TenancyError> {
        policy::authorize(principal, Operation::AccountList, None)?;
        let owner_user_id = match (principal.owner_id(), query.owner_email.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(TenancyError::invalid(
                    "owner",
                    "owners see their own accounts only; leave the owner out",
                ));
            }
            (Some(own), None) => Some(own.to_owned()),
            (None, None) => None,
            (None, Some(email)) => match self.store().find_user_by_email(email.trim()).await? {
                Some(user) if user.role == Role::Owner => Some(user.id),
                _ => {
                    return Err(TenancyError::invalid(
                        "owner",
                        format!("no owner has the email {:?}", email.trim()),
                    ));
                }
            },
        };
        let filter = AccountFilter {
            owner_user_id,
            token_state: query.token_state,
            state: query.state,
            kind: query.kind,
            search: query.search.clone(),
        };
        let rows = self
            .store()
            .list_account_health_page(&filter, after_id, limit)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(account, health)| self.with_health(account, health))
            .collect())
    }

    /// One account with its health.
    pub async fn account(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<AccountView, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountView, appid)
            .await?;
        self.view(account).await
    }

    /// Renames an account.
    pub async fn rename_account(
        &self,
        principal: &Principal,
        appid: &str,
        name: &str,
    ) -> Result<Account, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountRename, appid)
            .await?;
        let name = checked_account_name(name)?;
        let record = self
            .record(principal, Operation::AccountRename, Some(&account))
            .details(json!({ "appid": account.appid, "before": account.name, "after": name }))
            .announce(ChangeKind::Account);
        Ok(self
            .store()
            .rename_account(&account.id, name, self.now(), &record)
            .await?)
    }

    /// Replaces the AppSecret after checking it with WeChat; a token refresh that failed for
    /// want of a good secret is retried at once, on whichever replica claims it.
    pub async fn replace_appsecret(
        &self,
        principal: &Principal,
        appid: &str,
        appsecret: SecretString,
        check: LiveCheck,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountReplaceSecret, appid)
            .await?;
        allow_skipping(
            principal,
            check,
            "account.replace_secret without the credential check",
        )?;
        accounts::registry::validate_appsecret(&appsecret).map_err(invalid("appsecret"))?;
        if check == LiveCheck::Check {
            let secret = AppSecret::new(appsecret.expose());
            check::check_credentials(&self.inner.wechat, &account.appid, &secret)
                .await
                .map_err(TenancyError::CredentialCheck)?;
        }
        let sealed = self.sealed(&account).await?;
        let vault = self.inner.vault.for_wrapped_dek(&sealed.wrapped_dek);
        let ciphertext = accounts::seal_field(
            &vault,
            &account.id,
            &sealed.wrapped_dek,
            FIELD_APPSECRET,
            &appsecret,
        )?;
        let record = self
            .record(principal, Operation::AccountReplaceSecret, Some(&account))
            .details(json!({
                "appid": account.appid,
                "appsecret": "replaced",
                "credential_check": check == LiveCheck::Check,
            }))
            .announce(ChangeKind::Credentials);
        self.store()
            .replace_appsecret(
                &account.id,
                &ciphertext,
                &store::accounts::appsecret_hint(appsecret.expose()),
                self.now(),
                &record,
            )
            .await?;
        Ok(())
    }

    /// Sets (or with `None`, clears) the push Token and EncodingAESKey. WeChat's console is
    /// the other half: the owner enters the same values there.
    pub async fn set_push_credentials(
        &self,
        principal: &Principal,
        appid: &str,
        push_token: Option<SecretString>,
        encoding_aes_key: Option<SecretString>,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountSetPushCredentials, appid)
            .await?;
        if let Some(token) = &push_token {
            accounts::registry::validate_push_token(token).map_err(invalid("push_token"))?;
        }
        if let Some(key) = &encoding_aes_key {
            accounts::registry::validate_encoding_aes_key(key)
                .map_err(invalid("encoding_aes_key"))?;
        }
        if encoding_aes_key.is_some() && push_token.is_none() {
            return Err(TenancyError::invalid(
                "push_token",
                "an EncodingAESKey needs a push Token too: WeChat signs every push with the Token",
            ));
        }
        let sealed = self.sealed(&account).await?;
        let vault = self.inner.vault.for_wrapped_dek(&sealed.wrapped_dek);
        let seal = |field: &str, value: &SecretString| {
            accounts::seal_field(&vault, &account.id, &sealed.wrapped_dek, field, value)
        };
        let token_ct = push_token
            .as_ref()
            .map(|v| seal(FIELD_PUSH_TOKEN, v))
            .transpose()?;
        let key_ct = encoding_aes_key
            .as_ref()
            .map(|v| seal(FIELD_ENCODING_AES_KEY, v))
            .transpose()?;
        let change = |before: bool, after: bool| match (before, after) {
            (false, false) => "unset",
            (false, true) => "set",
            (true, true) => "replaced",
            (true, false) => "cleared",
        };
        let record = self
            .record(
                principal,
                Operation::AccountSetPushCredentials,
                Some(&account),
            )
            .details(json!({
                "appid": account.appid,
                "push_token": change(sealed.push_token.is_some(), token_ct.is_some()),
                "encoding_aes_key": change(sealed.encoding_aes_key.is_some(), key_ct.is_some()),
            }))
            .announce(ChangeKind::Credentials);
        self.store()
            .replace_push_credentials(
                &account.id,
                token_ct.as_deref(),
                key_ct.as_deref(),
                self.now(),
                &record,
            )
            .await?;
        Ok(())
    }

    /// Generates strong push credentials, stores them, and returns them once for the owner
    /// to paste into WeChat's console.
    pub async fn rotate_push_credentials(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<PushCredentials, TenancyError> {
        // Authorize before drawing anything.
        self.authorized_account(principal, Operation::AccountSetPushCredentials, appid)
            .await?;
        let generated = credentials::generate_push_credentials()?;
        self.set_push_credentials(
            principal,
            appid,
            Some(SecretString::new(generated.token.expose().to_owned())),
            Some(SecretString::new(
                generated.encoding_aes_key.expose().to_owned(),
            )),
        )
        .await?;
        Ok(generated)
    }

    /// Stops serving an account: no refreshes, the token API answers 403, logins are
    /// refused — on every replica within a second.
    pub async fn disable_account(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<Account, TenancyError> {
        self.set_state(
            principal,
            Operation::AccountDisable,
            appid,
            AccountState::Disabled,
        )
        .await
    }

    /// Serves a disabled account again.
    pub async fn enable_account(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<Account, TenancyError> {
        self.set_state(
            principal,
            Operation::AccountEnable,
            appid,
            AccountState::Active,
        )
        .await
    }

    async fn set_state(
        &self,
        principal: &Principal,
        operation: Operation,
        appid: &str,
        state: AccountState,
    ) -> Result<Account, TenancyError> {
        let account = self.authorized_account(principal, operation, appid).await?;
        let record = self
            .record(principal, operation, Some(&account))
            .details(json!({
                "appid": account.appid,
                "before": account.state.as_str(),
                "after": state.as_str(),
            }))
            .announce(ChangeKind::Account);
        Ok(self
            .store()
            .set_account_state(&account.id, state, self.now(), &record)
            .await?)
    }

    /// Deletes an account and everything that belongs to it; its data key goes with it, so
    /// its secrets can never be decrypted again (crypto-shredding). The audit log keeps the
    /// record.
    pub async fn delete_account(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountDelete, appid)
            .await?;
        let record = self
            .record(principal, Operation::AccountDelete, Some(&account))
            .details(json!({
                "appid": account.appid,
                "name": account.name,
                "owner_user_id": account.owner_user_id,
            }))
            .announce(ChangeKind::Account);
        self.store()
            .delete_account(&account.id, self.now(), &record)
            .await?;
        Ok(())
    }

    /// Asks for a new core token now (the scheduler of whichever replica claims the lease
    /// fetches it). Refused within [`crate::TenancyConfig::refresh_now_min_interval`] of the
    /// last fetch: each fetch supersedes the token every backend uses and spends the quota.
    pub async fn refresh_now(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountRefreshNow, appid)
            .await?;
        if account.state != AccountState::Active {
            return Err(TenancyError::invalid(
                "account",
                "the account is disabled; enable it first",
            ));
        }
        let now = self.now();
        let min =
            i64::try_from(self.config().refresh_now_min_interval.as_millis()).unwrap_or(i64::MAX);
        if let Some(token) = self.store().get_core_token(&account.id).await?
            && let Some(issued) = token.issued_at
            && now - issued < min
        {
            return Err(TenancyError::TooSoon {
                message: format!(
                    "the token was fetched {} s ago; a new fetch is allowed {} s after the last",
                    (now - issued) / 1000,
                    min / 1000
                ),
            });
        }
        let record = self
            .record(principal, Operation::AccountRefreshNow, Some(&account))
            .details(json!({ "appid": account.appid }))
            .announce(ChangeKind::Refresh);
        if !self
            .store()
            .request_refresh_now(&account.id, now, &record)
            .await?
        {
            return Err(TenancyError::TooSoon {
                message: "a refresh of this account is in progress right now".to_owned(),
            });
        }
        Ok(())
    }

    /// Resets the account's daily API quotas at WeChat (`/cgi-bin/clear_quota/v2` with the
    /// AppSecret, which works when no token can be fetched any more; 10 a month,
    /// docs/wechat.md §3.2–§3.3). An account waiting for the daily reset is retried at once.
    pub async fn clear_quota(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<(), TenancyError> {
        let account = self
            .authorized_account(principal, Operation::AccountClearQuota, appid)
            .await?;
        let sealed = self.sealed(&account).await?;
        let secret = {
            let vault = self.inner.vault.for_wrapped_dek(&sealed.wrapped_dek);
            let plain = accounts::open_secrets(&vault, &account.id, &sealed)?;
            AppSecret::new(plain.appsecret.expose())
        };
        let result = self
            .inner
            .wechat
            .clear_quota_v2(&account.appid, &secret)
            .await;
        drop(secret);
        let details = |outcome: &str| json!({ "appid": account.appid, "outcome": outcome });
        let now = self.now();
        match result {
            Ok(()) => {
                let waiting = self
                    .store()
                    .get_core_token(&account.id)
                    .await?
                    .is_some_and(|t| t.state == TokenState::QuotaExhausted);
                let record = self
                    .record(principal, Operation::AccountClearQuota, Some(&account))
                    .details(details("cleared"));
                let rescheduled = waiting
                    && self
                        .store()
                        .request_refresh_now(
                            &account.id,
                            now,
                            &record.clone().announce(ChangeKind::Refresh),
                        )
                        .await?;
                if !rescheduled {
                    // Nothing to retry (or a refresh is under way): the reset is still
                    // recorded.
                    self.store().append_audit(&record, now).await?;
                }
                Ok(())
            }
            Err(error) => {
                // A refused reset is recorded too: it may have spent one of the ten.
                let record = self
                    .record(principal, Operation::AccountClearQuota, Some(&account))
                    .details(details(&format!("refused: {error}")));
                self.store().append_audit(&record, now).await?;
                Err(TenancyError::Wechat(error))
            }
        }
    }

    async fn sealed(
        &self,
        account: &Account,
    ) -> Result<store::accounts::AccountSecrets, TenancyError> {
        self.store()
            .load_account_secrets(&account.id)
            .await?
            .ok_or(TenancyError::NotFound { what: "account" })
    }
}

/// Maps a format error of `accounts` to this layer's error for `field`.
fn invalid(field: &'static str) -> impl Fn(accounts::AccountError) -> TenancyError {
    move |error| match error {
        accounts::AccountError::Invalid(message) => TenancyError::Invalid { field, message },
        other => other.into(),
    }
}
