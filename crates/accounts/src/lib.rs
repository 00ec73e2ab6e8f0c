//! Where the vault and the store meet: registering accounts with their secrets encrypted,
//! reading a secret when it is needed, and rotating the master keys under stored data.
//!
//! - [`registry`]: [`register_account`], [`read_secrets`] and the format rules for appids
//!   and secrets;
//! - [`rotation`]: the keyring/database consistency check, [`rotation::rewrap_all`] and the
//!   status report behind `wxhub vault …`, over every kind of sealed data the store lists
//!   (`store::sealed::DekHolder`: account secrets, signing keys);
//! - [`VaultHandle`]: the reloadable vault a running server uses, so a rotated keyring file
//!   reaches it without a restart, checked against the database before it is used.
//!
//! Nothing here decrypts anything unless asked for that one account's secret, and nothing
//! here logs a secret.

pub mod registry;
pub mod rotation;
mod vault_handle;

pub use registry::{
    AccountError, AccountInput, PlainSecrets, open_core_token, open_secrets, prepare_account,
    read_secrets, register_account, register_account_audited, seal_core_token, seal_field,
};
pub use vault_handle::{ReloadError, VaultHandle};
