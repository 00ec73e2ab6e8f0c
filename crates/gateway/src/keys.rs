//! ID-token signing keys: ES256 (ECDSA P-256, SHA-256; RFC 7518 §3.4), kept in the database
//! sealed by the vault, published in the JWKS with a `kid`, rotatable.
//!
//! The private key never reaches the database in the clear: each key gets its own vault data
//! key, bound to `oidc-signing-key:{kid}` (`DekHolder::SigningKey`), stored wrapped in the
//! row's `wrapped_dek` with its master key's id in `dek_kek_id`, beside the key's ciphertext.
//! Master-key rotation re-wraps those data keys like every account's (`wxhub vault rewrap`),
//! and a key wrapped under a master key this replica has not loaded yet is opened after
//! reloading the keyring file (`VaultHandle::for_kek`). Without the keyring the row is useless.
//! Rotation is two steps, so no relying party ever sees a token signed by a key missing from
//! the JWKS it cached: [`rotate_signing_key`] publishes a `next` key (in the JWKS, not
//! signing), and [`activate_next_signing_key`], once the next key has been published long
//! enough for caches to refresh, makes it the active key and retires the old one, which stays
//! in the JWKS so ID tokens it signed still verify until they expire. A unique index keeps at
//! most one active and one next key, on SQLite and PostgreSQL alike, whatever replicas race.
//!
//! A JWS here is always the same shape (one algorithm, fixed header), so it is assembled by
//! hand over the `p256` crate's signer rather than through a general JOSE library.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use accounts::VaultHandle;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::RngExt;
use serde_json::{Value, json};
use store::Store;
use store::oidc::SigningKey as StoredKey;
use store::sealed::DekHolder;
use vault::Vault;

use crate::GatewayError;

/// The only algorithm the gateway signs with.
pub const ALGORITHM: &str = "ES256";
/// How long a next key is published before [`activate_next_signing_key`] activates it by
/// default: relying parties commonly cache a JWKS for up to a day.
pub const DEFAULT_NEXT_KEY_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Field name binding the key's ciphertext (vault associated data).
const FIELD: &str = "oidc_signing_key";

/// A decrypted signing key.
pub struct LoadedKey {
    pub kid: String,
    key: SigningKey,
}

impl LoadedKey {
    /// Signs `claims` as a compact JWS (`header.payload.signature`, RFC 7515 §7.1).
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let header = json!({"alg": ALGORITHM, "typ": "JWT", "kid": self.kid});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        // RFC 7518 §3.4: the signature is R || S, 32 bytes each.
        let signature: Signature = self.key.sign(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        out
    }
}

/// The decrypted active key, so each ID token does not decrypt it again. Checked against the
/// database's active kid on every use, so a rotation on any replica takes effect at once.
#[derive(Default)]
pub struct KeyCache {
    current: Mutex<Option<Arc<LoadedKey>>>,
}

/// A private key sealed under a fresh data key of its own: the wrapped data key, the id of the
/// master key that wrapped it, and the key's ciphertext.
struct Sealed {
    wrapped_dek: Vec<u8>,
    dek_kek_id: String,
    private_key: Vec<u8>,
}

fn seal(vault: &Vault, kid: &str, key: &SigningKey) -> Sealed {
    let subject = DekHolder::SigningKey.vault_subject(kid);
    let (dek, wrapped) = vault.create_dek(&subject);
    Sealed {
        private_key: dek.encrypt(&subject, FIELD, &key.to_bytes()[..]),
        dek_kek_id: wrapped.kek_id().to_owned(),
        wrapped_dek: wrapped.into_bytes(),
    }
}

fn open(vault: &Vault, stored: &StoredKey) -> Result<LoadedKey, GatewayError> {
    let bad = || GatewayError::Internal("a stored signing key is malformed");
    let subject = DekHolder::SigningKey.vault_subject(&stored.kid);
    let vault_err = |source: vault::VaultError| GatewayError::SigningKey {
        kid: stored.kid.clone(),
        source,
    };
    let wrapped = vault::WrappedDek::from_bytes(stored.wrapped_dek.clone()).map_err(vault_err)?;
    let dek = vault.unwrap_dek(&subject, &wrapped).map_err(vault_err)?;
    let secret = dek
        .decrypt(&subject, FIELD, &stored.private_key)
        .map_err(vault_err)?;
    let key = SigningKey::from_slice(secret.expose()).map_err(|_| bad())?;
    Ok(LoadedKey {
        kid: stored.kid.clone(),
        key,
    })
}

fn public_jwk(kid: &str, key: &SigningKey) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    let coordinate = |c: Option<&p256::FieldBytes>| {
        URL_SAFE_NO_PAD.encode(c.map(|b| &b[..]).unwrap_or_default())
    };
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": ALGORITHM, "kid": kid,
        "x": coordinate(point.x()), "y": coordinate(point.y()),
    })
}

/// A new sealed key with status `status`.
fn new_stored_key(vault: &Vault, status: store::oidc::SigningKeyStatus, now: i64) -> StoredKey {
    let key = loop {
        // A random 32-byte string is a valid P-256 scalar except with negligible probability.
        if let Ok(key) = SigningKey::from_slice(&rand::rng().random::<[u8; 32]>()) {
            break key;
        }
    };
    let kid = hex::encode(rand::rng().random::<[u8; 8]>());
    let sealed = seal(vault, &kid, &key);
    StoredKey {
        wrapped_dek: sealed.wrapped_dek,
        dek_kek_id: sealed.dek_kek_id,
        private_key: sealed.private_key,
        public_jwk: public_jwk(&kid, &key).to_string(),
        kid,
        algorithm: ALGORITHM.to_owned(),
        status,
        created_at: now,
        retired_at: None,
    }
}

/// Generates a new key, seals it and publishes it as the next key: it appears in the JWKS at
/// once but signs nothing until [`activate_next_signing_key`]. Returns its kid; if a next key
/// is already published, returns that one's kid and publishes nothing.
pub async fn rotate_signing_key(
    store: &Store,
    vault: &Vault,
    now: i64,
) -> Result<String, GatewayError> {
    let stored = new_stored_key(vault, store::oidc::SigningKeyStatus::Next, now);
    match store.publish_next_signing_key(&stored).await {
        Ok(()) => {
            tracing::info!(kid = %stored.kid, "next OIDC signing key published");
            Ok(stored.kid)
        }
        Err(store::StoreError::Duplicate { .. }) => store
            .next_signing_key()
            .await?
            .map(|k| k.kid)
            .ok_or_else(|| GatewayError::Internal("next signing key vanished")),
        Err(e) => Err(e.into()),
    }
}

/// What [`activate_next_signing_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyActivation {
    /// The next key `kid` now signs; the previous active key is retired (still published).
    Activated { kid: String },
    /// The next key has not been published for `min_published` yet; try at `ready_at` (ms).
    NotYet { kid: String, ready_at: i64 },
    /// There is no published next key (run [`rotate_signing_key`] first).
    NoNextKey,
}

/// Makes the published next key the active one once it has been in the JWKS for
/// `min_published` ([`DEFAULT_NEXT_KEY_DELAY`] normally; shorter only when the active key must
/// go at once, e.g. after a compromise). Atomic: the old key is retired in the same
/// transaction, so there is never more than one active key.
pub async fn activate_next_signing_key(
    store: &Store,
    now: i64,
    min_published: Duration,
) -> Result<KeyActivation, GatewayError> {
    let Some(next) = store.next_signing_key().await? else {
        return Ok(KeyActivation::NoNextKey);
    };
    let delay = i64::try_from(min_published.as_millis()).unwrap_or(i64::MAX);
    let ready_at = next.created_at.saturating_add(delay);
    if now < ready_at {
        return Ok(KeyActivation::NotYet {
            kid: next.kid,
            ready_at,
        });
    }
    if store.promote_next_signing_key(&next.kid, now).await? {
        tracing::info!(kid = %next.kid, "OIDC signing key activated");
        Ok(KeyActivation::Activated { kid: next.kid })
    } else {
        Ok(KeyActivation::NoNextKey)
    }
}

impl KeyCache {
    /// The active signing key when the caller already read the active kid (`active_kid`)
    /// from the database: the cached decrypted key if it is that key, else as [`Self::active`].
    pub(crate) async fn for_active_kid(
        &self,
        store: &Store,
        vault: &VaultHandle,
        active_kid: Option<&str>,
        now: i64,
    ) -> Result<Arc<LoadedKey>, GatewayError> {
        if let Some(kid) = active_kid
            && let Some(cached) = self.current.lock().expect("key cache lock").as_ref()
            && cached.kid == kid
        {
            return Ok(cached.clone());
        }
        self.active(store, vault, now).await
    }

    /// The active signing key, creating the first one if there is none.
    pub(crate) async fn active(
        &self,
        store: &Store,
        vault: &VaultHandle,
        now: i64,
    ) -> Result<Arc<LoadedKey>, GatewayError> {
        let stored = match store.active_signing_key().await? {
            Some(k) => k,
            None => {
                // Another replica may create the first key at the same moment: whichever
                // insert wins is used by both.
                let first =
                    new_stored_key(&vault.current(), store::oidc::SigningKeyStatus::Active, now);
                if store.create_first_signing_key(&first).await? {
                    tracing::info!(kid = %first.kid, "first OIDC signing key created");
                }
                store
                    .active_signing_key()
                    .await?
                    .ok_or_else(|| GatewayError::Internal("no active signing key"))?
            }
        };
        if let Some(cached) = self.current.lock().expect("key cache lock").as_ref()
            && cached.kid == stored.kid
        {
            return Ok(cached.clone());
        }
        // Another replica may have sealed it under a master key added moments ago.
        let loaded = Arc::new(open(&vault.for_kek(&stored.dek_kek_id), &stored)?);
        *self.current.lock().expect("key cache lock") = Some(loaded.clone());
        Ok(loaded)
    }
}

/// The JWKS document: every next, active and retired key's public half (RFC 7517 §5).
pub async fn jwks(store: &Store) -> Result<Value, GatewayError> {
    let keys = store
        .list_signing_keys()
        .await?
        .into_iter()
        .filter_map(|k| serde_json::from_str::<Value>(&k.public_jwk).ok())
        .collect::<Vec<_>>();
    Ok(json!({ "keys": keys }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier;

    fn vault() -> Vault {
        Vault::new(vault::Keyring::generate(vault::KeyId::new("k1").unwrap()))
    }

    #[test]
    fn sealed_key_opens_only_as_itself_and_signs_verifiable_tokens() {
        let vault = vault();
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sealed = seal(&vault, "kid1", &key);
        assert_eq!(sealed.dek_kek_id, "k1");
        let stored = StoredKey {
            kid: "kid1".into(),
            algorithm: ALGORITHM.into(),
            wrapped_dek: sealed.wrapped_dek,
            dek_kek_id: sealed.dek_kek_id,
            private_key: sealed.private_key,
            public_jwk: public_jwk("kid1", &key).to_string(),
            status: store::oidc::SigningKeyStatus::Active,
            created_at: 0,
            retired_at: None,
        };
        for bytes in [&stored.private_key, &stored.wrapped_dek] {
            assert!(!bytes.windows(32).any(|w| w == [7u8; 32]));
        }
        let loaded = open(&vault, &stored).unwrap();
        let jwt = loaded.sign_jwt(&json!({"sub": "o1"}));
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        VerifyingKey::from(&key)
            .verify(signed.as_bytes(), &sig)
            .unwrap();
        // The same sealed key under another kid (moved to another row) does not open.
        let moved = StoredKey {
            kid: "kid2".into(),
            ..stored
        };
        assert!(open(&vault, &moved).is_err());
    }
}
