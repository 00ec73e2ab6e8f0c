//! The platform's health as operators see it: accounts by state, the accounts that need a
//! person, and where key rotation stands (master keys and ID-token signing keys).

use accounts::rotation::{self, RotationError, VaultStatus};
use store::accounts::{AccountFilter, AccountState};
use store::oidc::signing_keys::SigningKeyStatus;
use store::tokens::TokenState;

use crate::policy::{self, Operation};
use crate::tenants::AccountView;
use crate::{Principal, Tenancy, TenancyError};

/// Accounts listed per token state in "needs attention".
pub const ATTENTION_PER_STATE: u32 = 20;

/// The token states a person should look at, most urgent first.
pub const ATTENTION_STATES: [TokenState; 3] = [
    TokenState::NeedsAttention,
    TokenState::QuotaExhausted,
    TokenState::Retrying,
];

/// How many accounts are in one (account state, token state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCount {
    pub state: AccountState,
    pub token_state: TokenState,
    pub count: i64,
}

/// One ID-token signing key, without its private part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyInfo {
    pub kid: String,
    pub algorithm: String,
    pub status: SigningKeyStatus,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// What the platform-health page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformHealth {
    pub counts: Vec<StateCount>,
    /// Active accounts in [`ATTENTION_STATES`], up to [`ATTENTION_PER_STATE`] each, in that
    /// order; `attention_more` says which states had more.
    pub attention: Vec<AccountView>,
    pub attention_more: Vec<TokenState>,
    pub vault: VaultStatus,
    pub signing_keys: Vec<SigningKeyInfo>,
}

impl PlatformHealth {
    /// Accounts in `token_state`, active or not.
    pub fn count(&self, token_state: TokenState) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.token_state == token_state && c.state == AccountState::Active)
            .map(|c| c.count)
            .sum()
    }

    /// Disabled accounts, whatever their token.
    pub fn disabled(&self) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.state == AccountState::Disabled)
            .map(|c| c.count)
            .sum()
    }

    pub fn total(&self) -> i64 {
        self.counts.iter().map(|c| c.count).sum()
    }
}

impl Tenancy {
    /// The platform's health (operators only).
    pub async fn platform_health(
        &self,
        principal: &Principal,
    ) -> Result<PlatformHealth, TenancyError> {
        policy::authorize(principal, Operation::PlatformHealth, None)?;
        let store = self.store();
        let counts = store
            .count_accounts_by_health()
            .await?
            .into_iter()
            .map(|(state, token_state, count)| StateCount {
                state,
                token_state,
                count,
            })
            .collect();
        let mut attention = Vec::new();
        let mut attention_more = Vec::new();
        for token_state in ATTENTION_STATES {
            let filter = AccountFilter {
                token_state: Some(token_state),
                state: Some(AccountState::Active),
                ..AccountFilter::default()
            };
            let mut page = store
                .list_account_health_page(&filter, None, ATTENTION_PER_STATE + 1)
                .await?;
            if page.len() > ATTENTION_PER_STATE as usize {
                page.truncate(ATTENTION_PER_STATE as usize);
                attention_more.push(token_state);
            }
            attention.extend(
                page.into_iter()
                    .map(|(account, health)| self.with_health(account, health)),
            );
        }
        let keyring = self.inner.vault.current().keyring().clone();
        let vault = rotation::status(store, &keyring)
            .await
            .map_err(|error| match error {
                RotationError::Store(error) => TenancyError::from(error),
                other => TenancyError::Rotation(other),
            })?;
        let signing_keys = store
            .list_signing_keys()
            .await?
            .into_iter()
            .map(|key| SigningKeyInfo {
                kid: key.kid,
                algorithm: key.algorithm,
                status: key.status,
                created_at: key.created_at,
                retired_at: key.retired_at,
            })
            .collect();
        Ok(PlatformHealth {
            counts,
            attention,
            attention_more,
            vault,
            signing_keys,
        })
    }
}
