//! API keys for owners' backends: generation, hashing, and the in-memory verification cache.
//!
//! A key is `wxk_` followed by 43 base64url characters of 256 random bits from the OS. Only
//! its SHA-256 (hex) is stored: with 256 bits of entropy a fast hash is as safe as a password
//! hash, and it keeps the per-request check cheap. The key is shown once, at creation.
//!
//! Verified keys are remembered for [`crate::SchedulerConfig::api_key_cache_ttl`] (by the
//! injected clock) so the token API does not touch the database per request; a key revoked
//! elsewhere (another replica, the CLI) stops working within that time, and at once on the
//! replica that revoked it through [`crate::TokenService::revoke_api_key`].

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vault::SecretString;

/// Every key starts with this, so a leaked key is recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "wxk_";
/// Length of a key: the prefix and 43 base64url characters (32 bytes).
pub const API_KEY_LEN: usize = API_KEY_PREFIX.len() + 43;

/// A freshly generated key: the secret to show once, and the hash to store.
#[derive(Debug)]
pub struct GeneratedApiKey {
    /// The key (redacted in `Debug`, zeroized on drop).
    pub key: SecretString,
    /// Hex SHA-256 of the key: what the database stores.
    pub hash: String,
}

/// Generates a key from the OS random source.
pub fn generate_api_key() -> Result<GeneratedApiKey, rand::rngs::SysError> {
    let mut bytes = [0u8; 32];
    SysRng.try_fill_bytes(&mut bytes)?;
    let key = format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    bytes.fill(0);
    let hash = hash_api_key(&key);
    Ok(GeneratedApiKey {
        key: SecretString::new(key),
        hash,
    })
}

/// The stored form of a key: hex SHA-256.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(hash_api_key_bytes(key))
}

/// The raw SHA-256 of a key: the verification cache's index (no allocation per request).
pub(crate) fn hash_api_key_bytes(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A key's SHA-256.
pub(crate) type KeyHash = [u8; 32];

/// Whether `key` has the shape of a wxhub API key (checked before hashing).
pub fn looks_like_api_key(key: &str) -> bool {
    key.len() == API_KEY_LEN
        && key.starts_with(API_KEY_PREFIX)
        && key[API_KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Clone)]
pub(crate) struct VerifiedKey {
    pub key_hash: KeyHash,
    pub account_id: String,
    pub appid: String,
    pub checked_at: i64,
}

/// Hash → verified key, with the time of the database check.
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<KeyHash, Arc<VerifiedKey>>>,
}

impl KeyCache {
    /// The entry for `hash`, if it was checked within `ttl_ms` of `now`. The stored hash is
    /// compared in constant time with the presented one.
    pub fn fresh(&self, hash: &KeyHash, now: i64, ttl_ms: i64) -> Option<Arc<VerifiedKey>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(hash)?;
        let same: bool = entry.key_hash.ct_eq(hash).into();
        (same && now - entry.checked_at < ttl_ms && now >= entry.checked_at).then(|| entry.clone())
    }

    pub fn insert(&self, entry: Arc<VerifiedKey>) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.key_hash, entry);
    }

    pub fn forget(&self, hash: &KeyHash) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
    }

    /// [`KeyCache::forget`] by the stored (hex) form of the hash.
    pub fn forget_hex(&self, hex_hash: &str) {
        let mut hash = KeyHash::default();
        if hex::decode_to_slice(hex_hash, &mut hash).is_ok() {
            self.forget(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_well_formed_and_hash_stably() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a.key.expose(), b.key.expose());
        assert!(looks_like_api_key(a.key.expose()), "{}", a.key.len());
        assert_eq!(a.hash, hash_api_key(a.key.expose()));
        assert_eq!(a.hash.len(), 64);
        assert!(!format!("{a:?}").contains(&a.key.expose()[4..]));
    }

    #[test]
    fn malformed_keys_are_recognised() {
        assert!(!looks_like_api_key("wxk_short"));
        assert!(!looks_like_api_key(&format!("xxx_{}", "a".repeat(43))));
        assert!(!looks_like_api_key(&format!("wxk_{}", "/".repeat(43))));
    }

    #[test]
    fn cache_entries_expire() {
        let cache = KeyCache::default();
        let hash = hash_api_key_bytes("wxk_example");
        cache.insert(Arc::new(VerifiedKey {
            key_hash: hash,
            account_id: "a".into(),
            appid: "wx".into(),
            checked_at: 1_000,
        }));
        assert!(cache.fresh(&hash, 1_500, 10_000).is_some());
        assert!(cache.fresh(&hash, 11_000, 10_000).is_none());
        cache.forget_hex(&hash_api_key("wxk_example"));
        assert!(cache.fresh(&hash, 1_500, 10_000).is_none());
    }
}
