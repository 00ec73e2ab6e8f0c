//! Per-account data keys (DEKs): creation, wrapping under the keyring's master keys, unwrapping,
//! re-wrapping for rotation, and field encryption.
//!
//! Each account has one DEK, created with the account and stored only wrapped. The wrapping's
//! associated data binds it to the account id and the purpose `dek`, so a wrapped DEK copied to
//! another account's row does not unwrap. Fields are encrypted under the DEK with associated
//! data binding account id and field name, so a field ciphertext moved to another row or
//! column does not decrypt.
//!
//! The wrapped plaintext is the DEK's 8-byte id followed by its 32 key bytes. The id (16 hex
//! characters) is written as the key id of every field ciphertext, so a field encrypted under
//! a different DEK is reported as such ([`VaultError::UnknownKey`]) instead of as tampering.
//!
//! Nothing here can recreate a DEK: a DEK exists only as fresh randomness or as the result of
//! unwrapping a stored record. Deleting the wrapped DEK therefore destroys the account's
//! secrets (crypto-shredding).

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;

use crate::envelope::{self, Purpose, os_random};
use crate::error::VaultError;
use crate::keyring::{KeyId, Keyring};
use crate::secret::{SecretBytes, SecretString};

/// Length of a DEK id in bytes (shown as 16 hex characters).
const DEK_ID_LEN: usize = 8;
/// Length of DEK key material (AES-256).
const DEK_KEY_LEN: usize = 32;
/// Wrapped plaintext: id then key.
const DEK_PLAINTEXT_LEN: usize = DEK_ID_LEN + DEK_KEY_LEN;

/// Envelope encryption over a keyring. Cheap to share (`Arc<Vault>`); all methods take `&self`
/// and are safe to call from many threads at once.
pub struct Vault {
    keyring: Keyring,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("keyring", &self.keyring)
            .finish()
    }
}

impl Vault {
    /// A vault using `keyring`; new DEKs are wrapped under its active key.
    pub fn new(keyring: Keyring) -> Self {
        Self { keyring }
    }

    /// The keyring in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Creates a fresh DEK for a new account: the key to encrypt its fields now, and the
    /// wrapped form to store with the account.
    ///
    /// # Panics
    /// If the operating system's random number generator fails.
    pub fn create_dek(&self, account_id: &str) -> (DataKey, WrappedDek) {
        let mut plaintext = zeroize::Zeroizing::new([0u8; DEK_PLAINTEXT_LEN]);
        os_random(&mut *plaintext);
        let key = DataKey::from_plaintext(&*plaintext);
        let wrapped = self.wrap(account_id, &*plaintext);
        (key, wrapped)
    }

    /// Unwraps an account's stored DEK.
    ///
    /// Errors: [`VaultError::UnknownKey`] if the keyring lacks the KEK the record names (the
    /// keyring does not match the database); [`VaultError::Decrypt`] if the record was altered
    /// or belongs to another account.
    pub fn unwrap_dek(
        &self,
        account_id: &str,
        wrapped: &WrappedDek,
    ) -> Result<DataKey, VaultError> {
        let plaintext = self.unwrap_plaintext(account_id, wrapped)?;
        Ok(DataKey::from_plaintext(&plaintext))
    }

    /// Rotation step 2: re-wraps a stored DEK under the active KEK. Returns `None` when it is
    /// already under the active KEK (nothing to write). The DEK itself is unchanged, so field
    /// ciphertexts stay valid; only the wrapped record is replaced.
    pub fn rewrap(
        &self,
        account_id: &str,
        wrapped: &WrappedDek,
    ) -> Result<Option<WrappedDek>, VaultError> {
        if wrapped.kek_id() == self.keyring.active_id().as_str() {
            return Ok(None);
        }
        let plaintext = self.unwrap_plaintext(account_id, wrapped)?;
        Ok(Some(self.wrap(account_id, &plaintext)))
    }

    fn wrap(&self, account_id: &str, plaintext: &[u8]) -> WrappedDek {
        let kek = self.keyring.active();
        let bytes = envelope::seal(
            kek.cipher(),
            kek.id().as_str(),
            account_id,
            Purpose::Dek,
            plaintext,
        );
        WrappedDek {
            bytes,
            kek_id: kek.id().clone(),
        }
    }

    fn unwrap_plaintext(
        &self,
        account_id: &str,
        wrapped: &WrappedDek,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
        let record = envelope::decode(&wrapped.bytes)?;
        let kek = self
            .keyring
            .get(record.key_id)
            .ok_or_else(|| VaultError::UnknownKey {
                id: record.key_id.to_owned(),
            })?;
        let plaintext = envelope::open(kek.cipher(), &record, account_id, Purpose::Dek)?;
        if plaintext.len() != DEK_PLAINTEXT_LEN {
            // Authentic but not a DEK: only possible if the KEK was used for something else.
            return Err(VaultError::Malformed {
                what: "wrapped data key has the wrong length",
            });
        }
        Ok(plaintext)
    }
}

/// A DEK as stored: the versioned record of the DEK wrapped under a KEK. Not secret on its own
/// (useless without the keyring), but it is what makes the account's secrets readable:
/// deleting it shreds them.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    bytes: Vec<u8>,
    kek_id: KeyId,
}

impl WrappedDek {
    /// Parses a stored wrapped DEK. Checks the structure strictly (version, lengths, key id
    /// syntax, exact size); authenticity is checked by [`Vault::unwrap_dek`].
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, VaultError> {
        let bytes = bytes.into();
        let record = envelope::decode(&bytes)?;
        if bytes.len() != envelope::sealed_len(record.key_id, DEK_PLAINTEXT_LEN) {
            return Err(VaultError::Malformed {
                what: "wrapped data key has the wrong length",
            });
        }
        let kek_id = KeyId::new(record.key_id)?;
        Ok(Self { bytes, kek_id })
    }

    /// The KEK id named in the header of stored wrapped-DEK bytes, without copying them or
    /// checking more than the header (for picking the keyring before [`Self::from_bytes`]).
    pub fn kek_id_of(bytes: &[u8]) -> Result<&str, VaultError> {
        Ok(envelope::decode(bytes)?.key_id)
    }

    /// The id of the KEK this DEK is wrapped under, readable without decrypting, so the store
    /// can keep it in a column and answer "which DEKs use key k1".
    pub fn kek_id(&self) -> &str {
        self.kek_id.as_str()
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes to store, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDek")
            .field("kek_id", &self.kek_id.as_str())
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// An unwrapped DEK: encrypts and decrypts one account's fields. The key schedule is wiped on
/// drop; `Debug` shows only the DEK id.
#[derive(Clone)]
pub struct DataKey {
    /// 16 lowercase hex characters; written as the key id of field ciphertexts.
    id: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl DataKey {
    /// Builds a DEK from its wrapped plaintext (id then key bytes).
    fn from_plaintext(plaintext: &[u8]) -> Self {
        let (id, key) = plaintext.split_at(DEK_ID_LEN);
        let id = id.iter().map(|b| format!("{b:02x}")).collect();
        let cipher = Aes256Gcm::new_from_slice(&key[..DEK_KEY_LEN])
            .expect("a data key is 32 bytes, the AES-256 key size");
        Self { id, cipher }
    }

    /// A DEK with fixed material, for the fuzz body only.
    pub(crate) fn from_fixed(plaintext: &[u8; DEK_PLAINTEXT_LEN]) -> Self {
        Self::from_plaintext(plaintext)
    }

    /// The DEK's id (16 hex characters), as written in its field ciphertexts. Not secret.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts one field of an account. The result is a version-1 record naming this DEK; it
    /// decrypts only with this DEK, the same account id and the same field name.
    ///
    /// # Panics
    /// If the plaintext exceeds 64 GiB (the AES-GCM limit) or the OS random generator fails.
    pub fn encrypt(&self, account_id: &str, field: &str, plaintext: &[u8]) -> Vec<u8> {
        envelope::seal(
            &self.cipher,
            &self.id,
            account_id,
            Purpose::Field(field),
            plaintext,
        )
    }

    /// Decrypts one field of an account.
    ///
    /// Errors: [`VaultError::UnsupportedVersion`] / [`VaultError::Malformed`] for bytes that
    /// are not a vault record; [`VaultError::UnknownKey`] if it was encrypted under another
    /// DEK; [`VaultError::Decrypt`] if it was altered or belongs to another account or field.
    pub fn decrypt(
        &self,
        account_id: &str,
        field: &str,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, VaultError> {
        let record = envelope::decode(ciphertext)?;
        if record.key_id != self.id {
            return Err(VaultError::UnknownKey {
                id: record.key_id.to_owned(),
            });
        }
        let plaintext = envelope::open(&self.cipher, &record, account_id, Purpose::Field(field))?;
        Ok(SecretBytes::from_zeroizing(plaintext))
    }

    /// [`decrypt`](Self::decrypt) for text fields; [`VaultError::NotUtf8`] if the plaintext is
    /// not UTF-8.
    pub fn decrypt_string(
        &self,
        account_id: &str,
        field: &str,
        ciphertext: &[u8],
    ) -> Result<SecretString, VaultError> {
        self.decrypt(account_id, field, ciphertext)?
            .into_string()
            .map_err(|_| VaultError::NotUtf8 {
                field: field.to_owned(),
            })
    }
}
