//! The versioned binary format shared by wrapped data keys and field ciphertexts, and the
//! AES-256-GCM sealing behind both.
//!
//! Layout (version 1; see the crate README for the full description):
//!
//! ```text
//! offset  size  content
//! 0       1     version = 0x01
//! 1       1     L = key id length, 1..=32
//! 2       L     key id, ASCII [A-Za-z0-9_-]   (KEK id for a wrapped DEK, DEK id for a field)
//! 2+L     12    nonce, random per encryption
//! 14+L    n     AES-256-GCM ciphertext
//! 14+L+n  16    GCM tag
//! ```
//!
//! The associated data authenticates the header bytes (version and key id), the purpose
//! (`dek` or `field`), the account id and, for fields, the field name. Every component is
//! length-prefixed so no two different (account, field) pairs produce the same associated
//! data. Decoding checks structure before any key lookup or decryption and never panics.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, Nonce, Tag};
use rand::TryRng;
use rand::rngs::SysRng;
use zeroize::Zeroizing;

use crate::error::VaultError;

/// The only format version this build writes and reads.
pub(crate) const VERSION_1: u8 = 1;
/// AES-GCM nonce length (96 bits).
pub(crate) const NONCE_LEN: usize = 12;
/// AES-GCM tag length (128 bits).
pub(crate) const TAG_LEN: usize = 16;
/// Longest key id.
pub(crate) const MAX_KEY_ID_LEN: usize = 32;

/// Domain label mixed into every associated data, so vault ciphertexts cannot be confused with
/// any other AES-GCM use of the same key material.
const AAD_DOMAIN: &[u8] = b"wxhub-vault";

/// What a sealed record protects; part of the associated data.
#[derive(Clone, Copy)]
pub(crate) enum Purpose<'a> {
    /// A data key wrapped under a master key.
    Dek,
    /// A field of an account, encrypted under its data key.
    Field(&'a str),
}

/// A decoded (not yet authenticated) record, borrowing from the input.
pub(crate) struct Envelope<'a> {
    /// Version byte, length byte and key id: authenticated as associated data.
    header: &'a [u8],
    /// The key id named by the record.
    pub(crate) key_id: &'a str,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

/// Whether `id` is a valid key id: `[A-Za-z0-9_-]{1,32}`.
pub(crate) fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Fills `buf` from the operating system's random number generator.
///
/// # Panics
/// If the operating system cannot provide randomness. Continuing with weak keys or repeated
/// nonces would be worse than stopping.
pub(crate) fn os_random(buf: &mut [u8]) {
    if let Err(err) = SysRng.try_fill_bytes(buf) {
        panic!("the operating system random number generator failed: {err}");
    }
}

/// Parses the structure of a record. Checks lengths and the key id's syntax; does not look the
/// key up or authenticate anything.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope<'_>, VaultError> {
    let (&version, rest) = bytes.split_first().ok_or(VaultError::Malformed {
        what: "empty input: missing version byte",
    })?;
    if version != VERSION_1 {
        return Err(VaultError::UnsupportedVersion { version });
    }
    let (&id_len, rest) = rest.split_first().ok_or(VaultError::Malformed {
        what: "truncated before the key id length",
    })?;
    let id_len = usize::from(id_len);
    if id_len == 0 || id_len > MAX_KEY_ID_LEN {
        return Err(VaultError::Malformed {
            what: "key id length out of range 1..=32",
        });
    }
    let (id_bytes, rest) = rest.split_at_checked(id_len).ok_or(VaultError::Malformed {
        what: "truncated key id",
    })?;
    let key_id = std::str::from_utf8(id_bytes)
        .ok()
        .filter(|id| is_valid_key_id(id))
        .ok_or(VaultError::Malformed {
            what: "key id has characters outside [A-Za-z0-9_-]",
        })?;
    let (nonce, rest) = rest
        .split_at_checked(NONCE_LEN)
        .ok_or(VaultError::Malformed {
            what: "truncated nonce",
        })?;
    let tag_start = rest
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(VaultError::Malformed {
            what: "truncated authentication tag",
        })?;
    let (ciphertext, tag) = rest.split_at(tag_start);
    Ok(Envelope {
        header: &bytes[..2 + id_len],
        key_id,
        nonce,
        ciphertext,
        tag,
    })
}

/// Byte length of a record with the given key id and plaintext length.
pub(crate) fn sealed_len(key_id: &str, plaintext_len: usize) -> usize {
    2 + key_id.len() + NONCE_LEN + plaintext_len + TAG_LEN
}

/// Encrypts `plaintext` into a version-1 record under `cipher`, named by `key_id`.
///
/// `key_id` must be valid (callers hold a validated id). The plaintext is copied straight into
/// the output buffer and encrypted there, so no plaintext copy is left in freed memory.
///
/// # Panics
/// If the plaintext exceeds AES-GCM's limit of 64 GiB, or the OS random generator fails.
pub(crate) fn seal(
    cipher: &Aes256Gcm,
    key_id: &str,
    account_id: &str,
    purpose: Purpose<'_>,
    plaintext: &[u8],
) -> Vec<u8> {
    debug_assert!(is_valid_key_id(key_id));
    let mut out = Vec::with_capacity(sealed_len(key_id, plaintext.len()));
    out.push(VERSION_1);
    // A valid key id is at most 32 bytes, so the cast cannot truncate.
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    let header_len = out.len();
    let mut nonce = [0u8; NONCE_LEN];
    // 96-bit random nonces: collision risk stays negligible far beyond the number of
    // encryptions one account's data key or one master key will ever perform (NIST SP 800-38D
    // allows 2^32 random-nonce encryptions per key).
    os_random(&mut nonce);
    out.extend_from_slice(&nonce);
    let body_start = out.len();
    out.extend_from_slice(plaintext);
    let aad = associated_data(&out[..header_len], account_id, purpose);
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::<Aes256Gcm>::from(nonce),
            &aad,
            (&mut out[body_start..]).into(),
        )
        .expect("plaintext within the AES-GCM length limit (64 GiB)");
    out.extend_from_slice(&tag);
    out
}

/// Authenticates and decrypts a decoded record. Any failure is [`VaultError::Decrypt`].
pub(crate) fn open(
    cipher: &Aes256Gcm,
    envelope: &Envelope<'_>,
    account_id: &str,
    purpose: Purpose<'_>,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let nonce =
        Nonce::<Aes256Gcm>::try_from(envelope.nonce).map_err(|_| VaultError::Malformed {
            what: "truncated nonce",
        })?;
    let tag = Tag::<Aes256Gcm>::try_from(envelope.tag).map_err(|_| VaultError::Malformed {
        what: "truncated authentication tag",
    })?;
    let aad = associated_data(envelope.header, account_id, purpose);
    // Zeroizing from the start: on success this buffer holds the plaintext.
    let mut buf = Zeroizing::new(envelope.ciphertext.to_vec());
    cipher
        .decrypt_inout_detached(&nonce, &aad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| VaultError::Decrypt)?;
    Ok(buf)
}

/// Builds the associated data: domain, purpose, header, account id and field name, each
/// prefixed with its length as a big-endian u64 so that ("ab", "c") and ("a", "bc") differ.
fn associated_data(header: &[u8], account_id: &str, purpose: Purpose<'_>) -> Vec<u8> {
    let (label, field): (&[u8], Option<&str>) = match purpose {
        Purpose::Dek => (b"dek", None),
        Purpose::Field(name) => (b"field", Some(name)),
    };
    let mut parts: Vec<&[u8]> = vec![AAD_DOMAIN, label, header, account_id.as_bytes()];
    if let Some(field) = field {
        parts.push(field.as_bytes());
    }
    let mut aad = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for part in parts {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_is_unambiguous_for_split_points() {
        let h = [1u8, 1, b'k'];
        assert_ne!(
            associated_data(&h, "ab", Purpose::Field("c")),
            associated_data(&h, "a", Purpose::Field("bc"))
        );
        assert_ne!(
            associated_data(&h, "a", Purpose::Dek),
            associated_data(&h, "a", Purpose::Field(""))
        );
    }

    #[test]
    fn key_id_syntax_is_enforced() {
        for ok in ["k1", "2026-11-a", "A_b-9", &"x".repeat(32)] {
            assert!(is_valid_key_id(ok), "{ok}");
        }
        for bad in ["", "k 1", "k/1", "ключ", "k1\n", &"x".repeat(33)] {
            assert!(!is_valid_key_id(bad), "{bad:?}");
        }
    }
}
