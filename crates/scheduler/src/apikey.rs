//! API keys for owners' backends: generation, hashing, and the in-memory verification cache.
//!
//! A key is `wxk_` followed by 43 base64url characters of 256 random bits from the OS. Only
//! its SHA-256 (hex) is stored: with 256 bits of entropy a fast hash is as safe as a password
//! hash, and it keeps the per-request check cheap. The key is shown once, at creation.
//!
//! The key format and its generation belong to the tenancy layer (`tenancy::credentials`),
//! which creates keys; this module verifies them. Verified keys are remembered for
//! [`crate::SchedulerConfig::api_key_cache_ttl`] (by the injected clock) so the token API does
//! not touch the database per request; a revoke anywhere reaches every replica through the
//! change feed within a second and drops the account's cached keys (`changes.rs`), the TTL
//! being only the last resort.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use store::api_keys::KeyScopes;
use subtle::ConstantTimeEq;

pub use tenancy::credentials::{
    API_KEY_LEN, API_KEY_PREFIX, Generated as GeneratedApiKey, generate_api_key,
    hash_secret as hash_api_key, looks_like_api_key,
};

/// The raw SHA-256 of a key: the verification cache's index (no allocation per request).
pub(crate) fn hash_api_key_bytes(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A key's SHA-256.
pub(crate) type KeyHash = [u8; 32];

#[derive(Debug, Clone)]
pub(crate) struct VerifiedKey {
    pub key_hash: KeyHash,
    /// The key's id (reports are counted per key).
    pub id: String,
    pub account_id: String,
    pub appid: String,
    pub scopes: KeyScopes,
    /// The WeChat paths the proxy may call with this key; `None`: any.
    pub proxy_paths: Option<Arc<[String]>>,
    pub checked_at: i64,
    /// Token reads with this key (the token API counts here without a lock).
    pub reads: stats::Counter,
}

/// Hash → verified key, with the time of the database check.
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<KeyHash, Arc<VerifiedKey>>>,
    /// Keys verified here whose entries were dropped by [`KeyCache::forget_account`]: they are
    /// checked with the database again, but are not unknown keys. Without this, creating a
    /// second key for an account (a rotation) made every connection of the backend still using
    /// the first key count against the limit on unknown keys at once, and those past it were
    /// answered 429 for a second.
    known: RwLock<HashSet<KeyHash>>,
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

    /// The entry for `hash` however long ago it was checked: what a request may use while the
    /// database cannot be asked (a key is revoked through the database, so none can have been
    /// revoked since, unless the revoke's notice was lost just before).
    pub fn remembered(&self, hash: &KeyHash) -> Option<Arc<VerifiedKey>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(hash)?;
        let same: bool = entry.key_hash.ct_eq(hash).into();
        same.then(|| entry.clone())
    }

    /// Whether `hash` was verified on this replica (however long ago): such a key skips the
    /// unknown-key limit ([`crate::limits`]).
    pub fn knows(&self, hash: &KeyHash) -> bool {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(hash)
            || self
                .known
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(hash)
    }

    pub fn insert(&self, entry: Arc<VerifiedKey>) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.key_hash, entry);
    }

    /// Forgets a key the database no longer has (revoked): it is unknown from now on.
    pub fn forget(&self, hash: &KeyHash) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
    }

    /// Drops every key of an account (after a key of it was created or revoked anywhere): the
    /// next request with each asks the database, and is not counted as an unknown key's. It is
    /// not [`KeyCache::remembered`] either, so a key revoked just now is not trusted while the
    /// database is away.
    pub fn forget_account(&self, account_id: &str) {
        let mut dropped = Vec::new();
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|hash, entry| {
                let keep = entry.account_id != account_id;
                if !keep {
                    dropped.push(*hash);
                }
                keep
            });
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(account_id: &str, key: &str) -> Arc<VerifiedKey> {
        Arc::new(VerifiedKey {
            key_hash: hash_api_key_bytes(key),
            id: key.to_owned(),
            account_id: account_id.into(),
            appid: "wx".into(),
            scopes: KeyScopes::ALL,
            proxy_paths: None,
            checked_at: 1_000,
            reads: stats::Counter::default(),
        })
    }

    #[test]
    fn cache_entries_expire_and_are_forgotten_per_account() {
        let cache = KeyCache::default();
        cache.insert(entry("a", "wxk_one"));
        cache.insert(entry("b", "wxk_two"));
        let one = hash_api_key_bytes("wxk_one");
        let two = hash_api_key_bytes("wxk_two");
        assert!(cache.fresh(&one, 1_500, 10_000).is_some());
        assert!(cache.fresh(&one, 11_000, 10_000).is_none());
        assert!(cache.remembered(&one).is_some());
        cache.forget_account("a");
        assert!(cache.remembered(&one).is_none());
        assert!(cache.fresh(&one, 1_500, 10_000).is_none());
        assert!(cache.fresh(&two, 1_500, 10_000).is_some());
        // Checked again, but not an unknown key; once the database says it is gone, it is.
        assert!(cache.knows(&one));
        cache.forget(&one);
        assert!(!cache.knows(&one));
        assert!(!cache.knows(&hash_api_key_bytes("wxk_never")));
    }

    #[test]
    fn the_stored_hash_is_the_hex_of_the_cache_index() {
        assert_eq!(
            hash_api_key("wxk_x"),
            hex::encode(hash_api_key_bytes("wxk_x"))
        );
    }
}
