//! ID-token signing keys, one set per algorithm: RS256 (RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit
//! keys; RFC 7518 §3.3) and ES256 (ECDSA P-256 with SHA-256; RFC 7518 §3.4). Each client's
//! tokens are signed with the algorithm it is registered with (`id_token_signed_response_alg`,
//! RS256 for new clients); the JWKS publishes both algorithms' keys, each with a `kid`.
//!
//! The private key never reaches the database in the clear: each key gets its own vault data
//! key, bound to `oidc-signing-key:{kid}` (`DekHolder::SigningKey`), stored wrapped in the
//! row's `wrapped_dek` with its master key's id in `dek_kek_id`, beside the key's ciphertext.
//! Master-key rotation re-wraps those data keys like every account's (`wxhub vault rewrap`),
//! and a key wrapped under a master key this replica has not loaded yet is opened after
//! reloading the keyring file (`VaultHandle::for_kek`). Without the keyring the row is useless.
//! Rotation is two steps, so no relying party ever sees a token signed by a key missing from
//! the JWKS it cached: [`rotate_signing_keys`] publishes a `next` key of each algorithm (in
//! the JWKS, not signing), and [`activate_next_signing_keys`], once the next keys have been
//! published long enough for caches to refresh, makes them the active keys and retires the
//! old ones, which stay in the JWKS so ID tokens they signed still verify until they expire.
//! A unique index keeps at most one active and one next key per algorithm, on SQLite and
//! PostgreSQL alike, whatever replicas race.
//!
//! A JWS here is always the same shape (one algorithm per key, fixed header), so it is
//! assembled by hand over the signers rather than through a general JOSE library. RSA keys are
//! generated with the `rsa` crate (`ring` cannot generate them) and used through `ring`, whose
//! private-key operation is constant-time and blinded (the `rsa` crate's is not,
//! RUSTSEC-2023-0071); generation runs on a blocking thread, as it takes a while.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accounts::VaultHandle;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey as EcKey};
use rand::RngExt;
use ring::signature::RsaKeyPair;
use serde_json::{Value, json};
use store::Store;
use store::oidc::SigningKey as StoredKey;
use store::sealed::DekHolder;
use vault::Vault;

use crate::GatewayError;

pub use store::oidc::SigningAlg;

/// How long a next key is published before [`activate_next_signing_keys`] activates it by
/// default: relying parties commonly cache a JWKS for up to a day.
pub const DEFAULT_NEXT_KEY_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Size of generated RSA keys (RFC 7518 §3.3: 2048 bits or larger).
pub const RSA_BITS: usize = 2048;
/// Field name binding the key's ciphertext (vault associated data).
const FIELD: &str = "oidc_signing_key";

/// A private key in usable form.
enum Signer {
    /// The P-256 scalar.
    Es256(EcKey),
    /// The RSA key pair, as ring uses it.
    Rs256(RsaKeyPair),
}

/// A decrypted signing key.
pub struct LoadedKey {
    pub kid: String,
    pub alg: SigningAlg,
    signer: Signer,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    /// Signs `claims` as a compact JWS (`header.payload.signature`, RFC 7515 §7.1).
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, GatewayError> {
        let header = json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = match &self.signer {
            // RFC 7518 §3.4: the signature is R || S, 32 bytes each.
            Signer::Es256(key) => {
                let signature: Signature = key.sign(out.as_bytes());
                signature.to_bytes().to_vec()
            }
            // RFC 7518 §3.3: the PKCS#1 v1.5 signature, as long as the modulus.
            Signer::Rs256(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    out.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| GatewayError::Internal("RSA signing failed"))?;
                signature
            }
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(out)
    }
}

/// The decrypted active key of each algorithm, so each ID token does not decrypt it again.
/// Checked against the database's active kid on every use, so a rotation on any replica takes
/// effect at once.
#[derive(Default)]
pub struct KeyCache {
    current: Mutex<HashMap<SigningAlg, Arc<LoadedKey>>>,
}

/// A private key sealed under a fresh data key of its own: the wrapped data key, the id of the
/// master key that wrapped it, and the key's ciphertext.
struct Sealed {
    wrapped_dek: Vec<u8>,
    dek_kek_id: String,
    private_key: Vec<u8>,
}

fn seal(vault: &Vault, kid: &str, private_key: &[u8]) -> Sealed {
    let subject = DekHolder::SigningKey.vault_subject(kid);
    let (dek, wrapped) = vault.create_dek(&subject);
    Sealed {
        private_key: dek.encrypt(&subject, FIELD, private_key),
        dek_kek_id: wrapped.kek_id().to_owned(),
        wrapped_dek: wrapped.into_bytes(),
    }
}

fn open(vault: &Vault, stored: &StoredKey) -> Result<LoadedKey, GatewayError> {
    let bad = || GatewayError::Internal("a stored signing key is malformed");
    let alg: SigningAlg = stored.algorithm.parse().map_err(|_| bad())?;
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
    let signer = match alg {
        SigningAlg::Es256 => Signer::Es256(EcKey::from_slice(secret.expose()).map_err(|_| bad())?),
        SigningAlg::Rs256 => {
            Signer::Rs256(RsaKeyPair::from_der(secret.expose()).map_err(|_| bad())?)
        }
    };
    Ok(LoadedKey {
        kid: stored.kid.clone(),
        alg,
        signer,
    })
}

/// A freshly generated private key: its stored form and its public JWK.
struct Generated {
    /// ES256: the 32-byte scalar; RS256: the PKCS#1 `RSAPrivateKey` DER.
    private_key: zeroize::Zeroizing<Vec<u8>>,
    public_jwk: Value,
}

fn generate_es256(kid: &str) -> Generated {
    let key = loop {
        // A random 32-byte string is a valid P-256 scalar except with negligible probability.
        if let Ok(key) = EcKey::from_slice(&rand::rng().random::<[u8; 32]>()) {
            break key;
        }
    };
    let point = key.verifying_key().to_encoded_point(false);
    let coordinate = |c: Option<&p256::FieldBytes>| {
        URL_SAFE_NO_PAD.encode(c.map(|b| &b[..]).unwrap_or_default())
    };
    Generated {
        private_key: zeroize::Zeroizing::new(key.to_bytes().to_vec()),
        public_jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": coordinate(point.x()), "y": coordinate(point.y()),
        }),
    }
}

fn generate_rs256(kid: &str) -> Result<Generated, GatewayError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
        .map_err(|_| GatewayError::Internal("RSA key generation failed"))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|_| GatewayError::Internal("RSA key encoding failed"))?;
    Ok(Generated {
        private_key: zeroize::Zeroizing::new(der.as_bytes().to_vec()),
        public_jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }),
    })
}

/// A new sealed key of `alg` with status `status`.
async fn new_stored_key(
    vault: &Vault,
    alg: SigningAlg,
    status: store::oidc::SigningKeyStatus,
    now: i64,
) -> Result<StoredKey, GatewayError> {
    let kid = hex::encode(rand::rng().random::<[u8; 8]>());
    let generated = match alg {
        SigningAlg::Es256 => generate_es256(&kid),
        SigningAlg::Rs256 => {
            let for_thread = kid.clone();
            tokio::task::spawn_blocking(move || generate_rs256(&for_thread))
                .await
                .map_err(|_| GatewayError::Internal("RSA key generation was interrupted"))??
        }
    };
    let sealed = seal(vault, &kid, &generated.private_key);
    Ok(StoredKey {
        wrapped_dek: sealed.wrapped_dek,
        dek_kek_id: sealed.dek_kek_id,
        private_key: sealed.private_key,
        public_jwk: generated.public_jwk.to_string(),
        kid,
        algorithm: alg.as_str().to_owned(),
        status,
        created_at: now,
        retired_at: None,
    })
}

/// A key published by [`rotate_signing_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub alg: SigningAlg,
    pub kid: String,
}

/// Generates a new key of `alg`, seals it and publishes it as that algorithm's next key: it
/// appears in the JWKS at once but signs nothing until [`activate_next_signing_key`]. Returns
/// its kid; if a next key of `alg` is already published, returns that one's kid and publishes
/// nothing.
pub async fn rotate_signing_key(
    store: &Store,
    vault: &Vault,
    alg: SigningAlg,
    now: i64,
) -> Result<String, GatewayError> {
    if let Some(next) = store.next_signing_key_for(alg).await? {
        return Ok(next.kid);
    }
    let stored = new_stored_key(vault, alg, store::oidc::SigningKeyStatus::Next, now).await?;
    match store.publish_next_signing_key(&stored).await {
        Ok(()) => {
            tracing::info!(kid = %stored.kid, %alg, "next OIDC signing key published");
            Ok(stored.kid)
        }
        Err(store::StoreError::Duplicate { .. }) => store
            .next_signing_key_for(alg)
            .await?
            .map(|k| k.kid)
            .ok_or_else(|| GatewayError::Internal("next signing key vanished")),
        Err(e) => Err(e.into()),
    }
}

/// [`rotate_signing_key`] for every algorithm: the keys published (or already waiting).
pub async fn rotate_signing_keys(
    store: &Store,
    vault: &Vault,
    now: i64,
) -> Result<Vec<PublishedKey>, GatewayError> {
    let mut published = Vec::new();
    for alg in SigningAlg::ALL {
        let kid = rotate_signing_key(store, vault, alg, now).await?;
        published.push(PublishedKey { alg, kid });
    }
    Ok(published)
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

/// Makes the published next key of `alg` the active one once it has been in the JWKS for
/// `min_published` ([`DEFAULT_NEXT_KEY_DELAY`] normally; shorter only when the active key must
/// go at once, e.g. after a compromise). Atomic: the old key is retired in the same
/// transaction, so there is never more than one active key of an algorithm.
pub async fn activate_next_signing_key(
    store: &Store,
    alg: SigningAlg,
    now: i64,
    min_published: Duration,
) -> Result<KeyActivation, GatewayError> {
    let Some(next) = store.next_signing_key_for(alg).await? else {
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
        tracing::info!(kid = %next.kid, %alg, "OIDC signing key activated");
        Ok(KeyActivation::Activated { kid: next.kid })
    } else {
        Ok(KeyActivation::NoNextKey)
    }
}

/// [`activate_next_signing_key`] for every algorithm, in the order of [`SigningAlg::ALL`].
pub async fn activate_next_signing_keys(
    store: &Store,
    now: i64,
    min_published: Duration,
) -> Result<Vec<(SigningAlg, KeyActivation)>, GatewayError> {
    let mut outcomes = Vec::new();
    for alg in SigningAlg::ALL {
        outcomes.push((
            alg,
            activate_next_signing_key(store, alg, now, min_published).await?,
        ));
    }
    Ok(outcomes)
}

impl KeyCache {
    fn cached(&self, alg: SigningAlg, kid: &str) -> Option<Arc<LoadedKey>> {
        self.current
            .lock()
            .expect("key cache lock")
            .get(&alg)
            .filter(|k| k.kid == kid)
            .cloned()
    }

    /// The active signing key of `alg` when the caller already read the active kid
    /// (`active_kid`) from the database: the cached decrypted key if it is that key, else as
    /// [`Self::active`].
    pub(crate) async fn for_active_kid(
        &self,
        store: &Store,
        vault: &VaultHandle,
        alg: SigningAlg,
        active_kid: Option<&str>,
        now: i64,
    ) -> Result<Arc<LoadedKey>, GatewayError> {
        if let Some(kid) = active_kid
            && let Some(cached) = self.cached(alg, kid)
        {
            return Ok(cached);
        }
        self.active(store, vault, alg, now).await
    }

    /// The active signing key of `alg`, creating the first one if there is none.
    pub(crate) async fn active(
        &self,
        store: &Store,
        vault: &VaultHandle,
        alg: SigningAlg,
        now: i64,
    ) -> Result<Arc<LoadedKey>, GatewayError> {
        let stored = match store.active_signing_key_for(alg).await? {
            Some(k) => k,
            None => {
                // Another replica may create the first key at the same moment: whichever
                // insert wins is used by both.
                let first = new_stored_key(
                    &vault.current(),
                    alg,
                    store::oidc::SigningKeyStatus::Active,
                    now,
                )
                .await?;
                if store.create_first_signing_key(&first).await? {
                    tracing::info!(kid = %first.kid, %alg, "first OIDC signing key created");
                }
                store
                    .active_signing_key_for(alg)
                    .await?
                    .ok_or_else(|| GatewayError::Internal("no active signing key"))?
            }
        };
        if let Some(cached) = self.cached(alg, &stored.kid) {
            return Ok(cached);
        }
        // Another replica may have sealed it under a master key added moments ago.
        let loaded = Arc::new(open(&vault.for_kek(&stored.dek_kek_id), &stored)?);
        self.current
            .lock()
            .expect("key cache lock")
            .insert(alg, loaded.clone());
        Ok(loaded)
    }

    /// Makes sure every algorithm has an active key, so the JWKS publishes one of each before
    /// the first login needs it.
    pub(crate) async fn ensure_all(
        &self,
        store: &Store,
        vault: &VaultHandle,
        now: i64,
    ) -> Result<(), GatewayError> {
        for alg in SigningAlg::ALL {
            self.active(store, vault, alg, now).await?;
        }
        Ok(())
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

    fn stored(alg: SigningAlg, kid: &str, vault: &Vault, generated: &Generated) -> StoredKey {
        let sealed = seal(vault, kid, &generated.private_key);
        StoredKey {
            kid: kid.into(),
            algorithm: alg.as_str().into(),
            wrapped_dek: sealed.wrapped_dek,
            dek_kek_id: sealed.dek_kek_id,
            private_key: sealed.private_key,
            public_jwk: generated.public_jwk.to_string(),
            status: store::oidc::SigningKeyStatus::Active,
            created_at: 0,
            retired_at: None,
        }
    }

    #[test]
    fn sealed_es256_key_opens_only_as_itself_and_signs_verifiable_tokens() {
        let vault = vault();
        let generated = generate_es256("kid1");
        let stored = stored(SigningAlg::Es256, "kid1", &vault, &generated);
        assert_eq!(stored.dek_kek_id, "k1");
        for bytes in [&stored.private_key, &stored.wrapped_dek] {
            assert!(!bytes.windows(32).any(|w| w == &generated.private_key[..]));
        }
        let loaded = open(&vault, &stored).unwrap();
        let jwt = loaded.sign_jwt(&json!({"sub": "o1"})).unwrap();
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let key = EcKey::from_slice(&generated.private_key).unwrap();
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

    #[test]
    fn sealed_rs256_key_signs_tokens_its_published_jwk_verifies() {
        let vault = vault();
        let generated = generate_rs256("kid3").unwrap();
        let stored = stored(SigningAlg::Rs256, "kid3", &vault, &generated);
        assert!(!stored.public_jwk.contains("\"d\""));
        let loaded = open(&vault, &stored).unwrap();
        let jwt = loaded.sign_jwt(&json!({"sub": "o1"})).unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "kid3");
        // Verified with ring from the JWK's n and e alone, as a relying party would.
        let n = URL_SAFE_NO_PAD
            .decode(generated.public_jwk["n"].as_str().unwrap())
            .unwrap();
        let e = URL_SAFE_NO_PAD
            .decode(generated.public_jwk["e"].as_str().unwrap())
            .unwrap();
        assert_eq!(n.len() * 8, RSA_BITS);
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .unwrap();
        let tampered = format!("{signed}x");
        assert!(
            public
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    tampered.as_bytes(),
                    &URL_SAFE_NO_PAD.decode(sig).unwrap(),
                )
                .is_err()
        );
    }
}
