//! Envelope encryption for the secrets wxhub holds on behalf of its tenants (APPSECRETs,
//! message-push tokens, EncodingAESKeys).
//!
//! # Design
//!
//! - A [`Keyring`] holds master keys (KEKs), each with a short id, exactly one active. It is
//!   loaded from a file readable only by its owner or from the [`KEYRING_ENV_VAR`] value, never
//!   from the database.
//! - Each account has its own data key (DEK), created with the account
//!   ([`Vault::create_dek`]) and stored only as a [`WrappedDek`]: AES-256-GCM under the active
//!   KEK, bound to the account id.
//! - Fields are encrypted under the account's DEK ([`DataKey::encrypt`]), bound to account id
//!   and field name, so a ciphertext copied to another row or column fails to decrypt.
//! - Rotation adds a KEK ([`Keyring::add_key`]), re-wraps DEKs online ([`Vault::rewrap`]) and
//!   then removes the old KEK ([`Keyring::remove_key`], refused while a DEK still uses it).
//!   Field ciphertexts never need re-encryption for a KEK rotation.
//! - Decrypted values come back as [`SecretString`]/[`SecretBytes`], which zeroize on drop and
//!   print `[redacted]`.
//!
//! # Crypto-shredding
//!
//! A DEK exists only as fresh randomness or by unwrapping its stored record; this crate offers
//! no way to derive or recreate one. Deleting an account's wrapped DEK (the store does this
//! when it deletes the account) therefore makes every ciphertext of that account permanently
//! unreadable, including copies in old backups once the backups holding the wrapped DEK age out.
//!
//! # What it protects against
//!
//! A stolen database dump or backup: without the keyring it reveals no secret. It does not
//! protect against an attacker in control of a running host, which holds the keyring in
//! memory. See the crate README for the byte layout, keyring format and rotation procedure.
//!
//! # Example
//!
//! ```
//! use vault::{KeyId, Keyring, Vault, WrappedDek};
//!
//! # fn main() -> Result<(), vault::VaultError> {
//! let vault = Vault::new(Keyring::generate(KeyId::new("k1")?));
//!
//! // New account: create its DEK, store the wrapped form and the encrypted field.
//! let (dek, wrapped) = vault.create_dek("acct-42");
//! let stored_dek: Vec<u8> = wrapped.into_bytes();
//! let stored_secret: Vec<u8> = dek.encrypt("acct-42", "appsecret", b"0123456789abcdef");
//!
//! // Later: load the row, unwrap the DEK, decrypt the field.
//! let wrapped = WrappedDek::from_bytes(stored_dek)?;
//! assert_eq!(wrapped.kek_id(), "k1");
//! let dek = vault.unwrap_dek("acct-42", &wrapped)?;
//! let secret = dek.decrypt_string("acct-42", "appsecret", &stored_secret)?;
//! assert_eq!(secret.expose(), "0123456789abcdef");
//! assert_eq!(format!("{secret:?}"), "SecretString([redacted])");
//! # Ok(())
//! # }
//! ```
//!
//! The crate is pure: no database, no network, no environment access. Its only I/O is reading
//! (and in development mode creating) the keyring file.

mod envelope;
mod error;
pub mod fuzzing;
mod keyring;
mod secret;
mod vault;

pub use error::{KeyringProblem, VaultError};
pub use keyring::{DEV_KEY_ID, KEYRING_ENV_VAR, KeyId, Keyring};
pub use secret::{SecretBytes, SecretString};
pub use vault::{DataKey, Vault, WrappedDek};
