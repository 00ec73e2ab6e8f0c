//! The layer's error type: what went wrong, in terms a person can act on.

use crate::check::CheckFailure;

/// Everything an operation of the tenancy layer can end in, other than success. Messages say
/// what to fix and never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// The principal may not perform this operation at all.
    #[error("not allowed: {operation} is not permitted for this user")]
    Denied {
        /// The operation's stable name.
        operation: &'static str,
    },
    /// No such thing — or one the principal may not see.
    #[error("no such {what}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
    },
    /// Bad input; the message says which field and how to fix it.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault (`appid`, `redirect_uri`, …).
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// Something that must be unique already exists.
    #[error("{what} already exists")]
    Conflict {
        /// What is taken (`account appid`, `person email`).
        what: &'static str,
    },
    /// WeChat refused the credentials in the live check (nothing was stored).
    #[error("the credential check failed: {0}")]
    CredentialCheck(#[source] CheckFailure),
    /// WeChat refused another call the operation made (clearing the quota).
    #[error("WeChat refused: {0}")]
    Wechat(#[source] wechat::WechatError),
    /// Too soon to do this again.
    #[error("too soon: {message}")]
    TooSoon {
        /// Why, and when it can be done.
        message: String,
    },
    /// The vault refused (a master key missing from the keyring).
    #[error("the vault refused: {0}")]
    Vault(#[source] accounts::AccountError),
    /// Reading where key rotation stands failed.
    #[error("key rotation: {0}")]
    Rotation(#[source] accounts::rotation::RotationError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[source] store::StoreError),
    /// An import had lines that would not register; nothing was stored. One entry per fault,
    /// with its line number.
    #[error("{} line(s) cannot be imported; nothing was stored", errors.len())]
    Import {
        /// What is wrong with which line.
        errors: Vec<crate::tenants::LineError>,
    },
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random,
}

impl TenancyError {
    /// Whether this is a refusal by the permission rules (denied, or hidden as not found).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TenancyError::Denied { .. } | TenancyError::NotFound { what: "account" }
        )
    }

    /// A refusal of `field`'s value, saying what to fix.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        TenancyError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<store::StoreError> for TenancyError {
    fn from(error: store::StoreError) -> Self {
        match error {
            store::StoreError::NotFound { what } => TenancyError::NotFound { what },
            store::StoreError::Duplicate { what } => TenancyError::Conflict { what },
            other => TenancyError::Store(other),
        }
    }
}

impl From<accounts::AccountError> for TenancyError {
    fn from(error: accounts::AccountError) -> Self {
        match error {
            accounts::AccountError::Invalid(message) => TenancyError::Invalid {
                field: "account",
                message,
            },
            accounts::AccountError::Store(store) => store.into(),
            other => TenancyError::Vault(other),
        }
    }
}
