//! Credentials wxhub makes for people: API keys, website (client) secrets and push
//! credentials. Each is drawn from the operating system's random source, shown once, and —
//! except the push credentials, which wxhub itself must use — stored only as a hash.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use vault::SecretString;

use crate::TenancyError;

/// Every API key starts with this, so a leaked key is recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "wxk_";
/// Length of an API key: the prefix and 43 base64url characters (32 bytes).
pub const API_KEY_LEN: usize = API_KEY_PREFIX.len() + 43;

/// A fresh credential: the value to show once, and the hash to store.
#[derive(Debug)]
pub struct Generated {
    /// The value (redacted in `Debug`, zeroized on drop).
    pub secret: SecretString,
    /// Hex SHA-256 of the value: what the database stores.
    pub hash: String,
}

fn random_bytes() -> Result<[u8; 32], TenancyError> {
    let mut bytes = [0u8; 32];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| TenancyError::Random)?;
    Ok(bytes)
}

/// The stored form of a credential: hex SHA-256. API keys and client secrets carry 256
/// random bits, so a fast hash is as safe as a password hash and keeps each check cheap.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new API key (`wxk_` + 43 base64url characters).
pub fn generate_api_key() -> Result<Generated, TenancyError> {
    let mut bytes = random_bytes()?;
    let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    bytes.fill(0);
    let hash = hash_secret(&key);
    Ok(Generated {
        secret: SecretString::new(key),
        hash,
    })
}

/// Whether `key` has the shape of a wxhub API key (checked before hashing).
pub fn looks_like_api_key(key: &str) -> bool {
    key.len() == API_KEY_LEN
        && key.starts_with(API_KEY_PREFIX)
        && key[API_KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new website client secret (43 base64url characters).
pub fn generate_client_secret() -> Result<Generated, TenancyError> {
    let mut bytes = random_bytes()?;
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    bytes.fill(0);
    let hash = hash_secret(&secret);
    Ok(Generated {
        secret: SecretString::new(secret),
        hash,
    })
}

/// A new token for a one-time password link (43 base64url characters: 256 random bits, so the
/// stored SHA-256 of it cannot be reversed).
pub fn generate_link_token() -> Result<Generated, TenancyError> {
    generate_client_secret()
}

/// A new public client id (`wxc_` + 24 letters and digits).
pub fn generate_client_id() -> Result<String, TenancyError> {
    Ok(format!("wxc_{}", alphanumeric(24)?))
}

/// `len` random letters and digits.
fn alphanumeric(len: usize) -> Result<String, TenancyError> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        // Rejection sampling: 248 is the largest multiple of 62 below 256, so every
        // character is equally likely.
        for byte in random_bytes()? {
            if byte < 248 && out.len() < len {
                out.push(char::from(ALNUM[usize::from(byte % 62)]));
            }
        }
    }
    Ok(out)
}

/// Push credentials for the owner to paste into WeChat's console (docs/wechat.md §6.1, §7.1):
/// a Token of 32 letters and digits and an EncodingAESKey of 43, which is the base64 of 32
/// random bytes without padding — the shape the console itself generates.
#[derive(Debug)]
pub struct PushCredentials {
    pub token: SecretString,
    pub encoding_aes_key: SecretString,
}

/// Generates [`PushCredentials`].
pub fn generate_push_credentials() -> Result<PushCredentials, TenancyError> {
    let token = alphanumeric(32)?;
    // The console only issues keys of letters and digits; draw until base64 has neither
    // '+' nor '/' (about one draw in four succeeds).
    let key = loop {
        let mut bytes = random_bytes()?;
        let candidate = STANDARD_NO_PAD.encode(bytes);
        bytes.fill(0);
        if candidate.bytes().all(|b| b.is_ascii_alphanumeric()) {
            break candidate;
        }
    };
    Ok(PushCredentials {
        token: SecretString::new(token),
        encoding_aes_key: SecretString::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_distinct_well_formed_and_hash_stably() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert!(looks_like_api_key(a.secret.expose()));
        assert_eq!(a.hash, hash_secret(a.secret.expose()));
        assert!(!format!("{a:?}").contains(&a.secret.expose()[4..]));
        assert!(!looks_like_api_key("wxk_short"));
        assert!(!looks_like_api_key(&format!("wxk_{}", "/".repeat(43))));
    }

    #[test]
    fn generated_push_credentials_pass_wechats_format_rules() {
        for _ in 0..50 {
            let creds = generate_push_credentials().unwrap();
            accounts::registry::validate_push_token(&creds.token).unwrap();
            accounts::registry::validate_encoding_aes_key(&creds.encoding_aes_key).unwrap();
        }
    }

    #[test]
    fn client_ids_and_secrets_have_their_shapes() {
        let id = generate_client_id().unwrap();
        assert!(id.starts_with("wxc_") && id.len() == 28);
        assert!(id[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let secret = generate_client_secret().unwrap();
        assert_eq!(secret.secret.len(), 43);
    }
}
