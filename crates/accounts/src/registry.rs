//! Registering accounts and reading their secrets: the one place where the vault and the store
//! meet for account secrets.
//!
//! A secret is encrypted before it reaches the store and decrypted only when a caller asks for
//! it (the scheduler, when it calls WeChat). Nothing here logs a secret, and nothing here is on
//! the start-up path: opening the store never decrypts anything.

use store::Store;
use store::accounts::{Account, AccountKind, AccountSecrets, NewAccount, TokenMode};
use vault::{SecretString, Vault, VaultError};
use wechat::AccessToken;

/// Associated-data names binding each ciphertext to its column (a ciphertext copied into
/// another column fails to decrypt). Changing one makes existing data unreadable.
pub const FIELD_APPSECRET: &str = "appsecret";
/// See [`FIELD_APPSECRET`].
pub const FIELD_PUSH_TOKEN: &str = "push_token";
/// See [`FIELD_APPSECRET`].
pub const FIELD_ENCODING_AES_KEY: &str = "encoding_aes_key";
/// Associated-data name of the core access_token ciphertext in `core_tokens.token`.
pub const FIELD_CORE_TOKEN: &str = "core_token";

/// What goes wrong when registering an account or reading its secrets.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The input breaks one of WeChat's format rules; the message says which and how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// The vault refused (e.g. the keyring lacks the key an account's data key is wrapped
    /// under).
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The store refused (e.g. the appid is already registered).
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// An account to register, with its secrets in the clear (they are encrypted here).
#[derive(Debug)]
pub struct AccountInput {
    pub owner_user_id: String,
    pub appid: String,
    pub name: String,
    pub kind: AccountKind,
    pub verified: bool,
    pub token_mode: TokenMode,
    pub appsecret: SecretString,
    pub push_token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
}

/// An account's secrets, decrypted. Redacted in `Debug`, wiped on drop.
#[derive(Debug)]
pub struct PlainSecrets {
    pub appsecret: SecretString,
    pub push_token: Option<SecretString>,
    pub encoding_aes_key: Option<SecretString>,
}

/// Checks an appid: WeChat's are `wx` followed by 16 lowercase hex digits.
pub fn validate_appid(appid: &str) -> Result<(), AccountError> {
    let ok = appid.len() == 18
        && appid.starts_with("wx")
        && appid[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid(format!(
            "appid {appid:?} is not a WeChat appid: expected \"wx\" followed by 16 lowercase \
             hex digits, as shown in the WeChat console under 开发 → 基本配置"
        )))
    }
}

/// Checks an AppSecret's format (32 hex digits) without echoing it.
pub fn validate_appsecret(secret: &SecretString) -> Result<(), AccountError> {
    let secret = secret.expose();
    if secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AccountError::Invalid(format!(
            "the AppSecret must be the 32 hex digits shown in the WeChat console \
             (got {} characters); the value was not stored",
            secret.len()
        )));
    }
    Ok(())
}

/// Checks a push Token's format (3 to 32 letters or digits) without echoing it.
pub fn validate_push_token(token: &SecretString) -> Result<(), AccountError> {
    let token = token.expose();
    if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AccountError::Invalid(
            "the push Token must be 3 to 32 letters or digits, as the WeChat console \
             requires; the value was not stored"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Checks an EncodingAESKey's format (43 letters or digits) without echoing it.
pub fn validate_encoding_aes_key(key: &SecretString) -> Result<(), AccountError> {
    if wechat::crypto::EncodingAesKey::parse(key.expose()).is_err() {
        return Err(AccountError::Invalid(
            "the EncodingAESKey must be exactly 43 letters or digits, as generated in the \
             WeChat console; the value was not stored"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Checks the secrets' formats without echoing them.
fn validate_secrets(input: &AccountInput) -> Result<(), AccountError> {
    validate_appsecret(&input.appsecret)?;
    if let Some(token) = &input.push_token {
        validate_push_token(token)?;
    }
    if let Some(key) = &input.encoding_aes_key {
        validate_encoding_aes_key(key)?;
    }
    Ok(())
}

/// Registers an account: a fresh data key for it, its secrets encrypted under that key and
/// bound to the account and column, all written in one transaction.
pub async fn register_account(
    store: &Store,
    vault: &Vault,
    input: &AccountInput,
    now: i64,
) -> Result<Account, AccountError> {
    let account = seal_new_account(vault, input)?;
    Ok(store.create_account(&account, now).await?)
}

/// [`register_account`] with its audit entry written in the same transaction (the tenancy
/// layer's path).
pub async fn register_account_audited(
    store: &Store,
    vault: &Vault,
    input: &AccountInput,
    now: i64,
    record: &store::audit::AuditRecord,
) -> Result<Account, AccountError> {
    let account = seal_new_account(vault, input)?;
    // The record names the account, whose id is only known now.
    let record = record.clone().account(account.id.clone());
    Ok(store.create_account_audited(&account, now, &record).await?)
}

/// [`register_account`]'s checks and sealing without the write, for a caller that writes many
/// accounts in one batch ([`Store::create_accounts`]): the same validation, a fresh data key
/// and a new account id for each.
pub fn prepare_account(vault: &Vault, input: &AccountInput) -> Result<NewAccount, AccountError> {
    seal_new_account(vault, input)
}

/// Checks `input` and seals its secrets under a fresh data key for a new account id.
fn seal_new_account(vault: &Vault, input: &AccountInput) -> Result<NewAccount, AccountError> {
    validate_appid(&input.appid)?;
    validate_secrets(input)?;
    if input.name.trim().is_empty() {
        return Err(AccountError::Invalid(
            "the account needs a name (shown to end users on the follow page)".to_owned(),
        ));
    }
    let id = store::new_id();
    let (dek, wrapped) = vault.create_dek(&id);
    let seal =
        |field: &str, value: &SecretString| dek.encrypt(&id, field, value.expose().as_bytes());
    let secrets = AccountSecrets {
        dek_kek_id: wrapped.kek_id().to_owned(),
        appsecret: seal(FIELD_APPSECRET, &input.appsecret),
        push_token: input.push_token.as_ref().map(|v| seal(FIELD_PUSH_TOKEN, v)),
        encoding_aes_key: input
            .encoding_aes_key
            .as_ref()
            .map(|v| seal(FIELD_ENCODING_AES_KEY, v)),
        wrapped_dek: wrapped.into_bytes(),
    };
    let account = NewAccount {
        id,
        owner_user_id: input.owner_user_id.clone(),
        appid: input.appid.clone(),
        name: input.name.trim().to_owned(),
        kind: input.kind,
        verified: input.verified,
        token_mode: input.token_mode,
        secrets,
        appsecret_hint: Some(store::accounts::appsecret_hint(input.appsecret.expose())),
    };
    Ok(account)
}

/// Seals `value` for the account's `field` (one of the `FIELD_…` names) under the account's
/// existing data key, for replacing a secret.
pub fn seal_field(
    vault: &Vault,
    account_id: &str,
    wrapped_dek: &[u8],
    field: &str,
    value: &SecretString,
) -> Result<Vec<u8>, AccountError> {
    let wrapped = vault::WrappedDek::from_bytes(wrapped_dek.to_vec())?;
    let dek = vault.unwrap_dek(account_id, &wrapped)?;
    Ok(dek.encrypt(account_id, field, value.expose().as_bytes()))
}

/// Decrypts an account's secrets. Reads one row; call it when the secret is needed, not
/// ahead of time.
pub async fn read_secrets(
    store: &Store,
    vault: &Vault,
    account_id: &str,
) -> Result<PlainSecrets, AccountError> {
    let sealed = store
        .load_account_secrets(account_id)
        .await?
        .ok_or(store::StoreError::NotFound { what: "account" })?;
    open_secrets(vault, account_id, &sealed)
}

/// Decrypts secrets already read with [`Store::load_account_secrets`] (for a caller that also
/// needs the wrapped DEK from the same row, like the token scheduler).
pub fn open_secrets(
    vault: &Vault,
    account_id: &str,
    sealed: &AccountSecrets,
) -> Result<PlainSecrets, AccountError> {
    let wrapped = vault::WrappedDek::from_bytes(sealed.wrapped_dek.clone())?;
    let dek = vault.unwrap_dek(account_id, &wrapped)?;
    let open = |field: &str, ct: &[u8]| dek.decrypt_string(account_id, field, ct);
    Ok(PlainSecrets {
        appsecret: open(FIELD_APPSECRET, &sealed.appsecret)?,
        push_token: sealed
            .push_token
            .as_deref()
            .map(|ct| open(FIELD_PUSH_TOKEN, ct))
            .transpose()?,
        encoding_aes_key: sealed
            .encoding_aes_key
            .as_deref()
            .map(|ct| open(FIELD_ENCODING_AES_KEY, ct))
            .transpose()?,
    })
}

/// Encrypts an account's core access_token under its DEK (bound to the account and the
/// `core_token` field), so the token is never plaintext in the database.
pub fn seal_core_token(
    vault: &Vault,
    account_id: &str,
    wrapped_dek: &[u8],
    token: &AccessToken,
) -> Result<Vec<u8>, AccountError> {
    let wrapped = vault::WrappedDek::from_bytes(wrapped_dek.to_vec())?;
    let dek = vault.unwrap_dek(account_id, &wrapped)?;
    Ok(dek.encrypt(account_id, FIELD_CORE_TOKEN, token.expose().as_bytes()))
}

/// Decrypts a core access_token sealed by [`seal_core_token`].
pub fn open_core_token(
    vault: &Vault,
    account_id: &str,
    wrapped_dek: &[u8],
    ciphertext: &[u8],
) -> Result<AccessToken, AccountError> {
    let wrapped = vault::WrappedDek::from_bytes(wrapped_dek.to_vec())?;
    let dek = vault.unwrap_dek(account_id, &wrapped)?;
    let plain = dek.decrypt_string(account_id, FIELD_CORE_TOKEN, ciphertext)?;
    Ok(AccessToken::new(plain.expose()))
}
