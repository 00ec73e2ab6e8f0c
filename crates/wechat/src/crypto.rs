//! Safe-mode (安全模式) message encryption, the WXBizMsgCrypt scheme (docs/wechat.md §7).
//!
//! `Encrypt = base64(AES-256-CBC(pkcs7_32(random16 || msg_len_be32 || msg || appid)))` with
//! `IV = key[0..16]`. The PKCS#7 padding is to a **32-byte** multiple (§7.1), not the AES block
//! size, so it is done here by hand and the cipher runs without padding.
//!
//! CBC is not authenticated: always verify `msg_signature` (see [`crate::push`]) before calling
//! [`MsgCrypt::decrypt`], so nobody without the push Token can probe the decryptor. Decryption is
//! still strict — every malformed input is a typed error, never a panic or a silently truncated
//! message. Key material never appears in `Debug` output or errors and is zeroized on drop.

use std::fmt;

use aes::Aes256;
use aes::cipher::array::Array;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use rand::TryRng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// Length of an EncodingAESKey as the console shows it (§7.1).
pub const ENCODING_AES_KEY_LEN: usize = 43;
/// WeChat pads to multiples of 32 bytes, not 16 (§7.1).
const PAD_BLOCK: usize = 32;
/// AES block size.
const AES_BLOCK: usize = 16;
/// `random(16) || msg_len(4)` precede the message (§7.2).
const HEADER_LEN: usize = 20;

/// Decodes the EncodingAESKey. 43 base64 characters carry 258 bits for a 256-bit key; the two
/// spare bits are ignored, as every WeChat SDK does (the docs/wechat.md §7.5 key has them set).
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// What can go wrong parsing a key or decrypting a safe-mode message. No variant carries key
/// material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The EncodingAESKey is not 43 characters of `[A-Za-z0-9]` decoding to 32 bytes.
    #[error("invalid EncodingAESKey: {reason}")]
    InvalidKey {
        /// Which rule the key broke (never the key itself).
        reason: &'static str,
    },
    /// The `Encrypt` value is not valid standard base64.
    #[error("encrypted message is not valid base64")]
    Base64,
    /// The ciphertext is empty or not a whole number of AES blocks.
    #[error("ciphertext length {len} is not a non-zero multiple of 16")]
    CiphertextLength {
        /// Decoded ciphertext length in bytes.
        len: usize,
    },
    /// The PKCS#7 padding is out of range or inconsistent (wrong key, or tampered data).
    #[error("invalid padding in decrypted message")]
    Padding,
    /// The embedded message length points outside the decrypted data.
    #[error("embedded message length is out of bounds")]
    MessageLength,
    /// The decrypted message is not UTF-8.
    #[error("decrypted message is not valid UTF-8")]
    Utf8,
    /// The trailing appid is not ours: the message was meant for another account (or the
    /// key belongs to another account). Official samples call this −40005 (§7.2, §7.6).
    #[error("decrypted message belongs to a different appid")]
    AppIdMismatch,
}

/// An account's 32-byte AES key, parsed from its 43-character EncodingAESKey.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EncodingAesKey {
    bytes: [u8; 32],
}

impl EncodingAesKey {
    /// Parses the console's 43-character key: exactly 43 characters of `[A-Za-z0-9]` whose
    /// base64 decoding (after appending `=`) is 32 bytes (§7.1).
    pub fn parse(encoded: &str) -> Result<Self, CryptoError> {
        if encoded.len() != ENCODING_AES_KEY_LEN {
            return Err(CryptoError::InvalidKey {
                reason: "must be exactly 43 characters",
            });
        }
        if !encoded.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CryptoError::InvalidKey {
                reason: "must contain only A-Z, a-z and 0-9",
            });
        }
        let mut padded = Zeroizing::new(String::with_capacity(ENCODING_AES_KEY_LEN + 1));
        padded.push_str(encoded);
        padded.push('=');
        let decoded = Zeroizing::new(KEY_ENGINE.decode(padded.as_bytes()).map_err(|_| {
            CryptoError::InvalidKey {
                reason: "is not valid base64",
            }
        })?);
        let bytes: [u8; 32] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::InvalidKey {
                    reason: "does not decode to 32 bytes",
                })?;
        Ok(Self { bytes })
    }

    /// Builds a key from raw bytes (for generating new keys).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    /// A fresh random EncodingAESKey in the console's 43-character form, from the OS RNG.
    ///
    /// Keys are generated as text, not as 32 random bytes, because only keys whose base64 form
    /// is purely alphanumeric are valid EncodingAESKeys (§7.1). The result is a secret: store
    /// it encrypted, parse it with [`EncodingAesKey::parse`], never log it.
    pub fn generate_encoded() -> Zeroizing<String> {
        const ALPHABET: &[u8; 62] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = Zeroizing::new(String::with_capacity(ENCODING_AES_KEY_LEN));
        let mut pool = Zeroizing::new([0u8; 64]);
        while out.len() < ENCODING_AES_KEY_LEN {
            fill_random(pool.as_mut_slice());
            // Rejection sampling: 248 = 4 * 62, so accepted bytes map uniformly onto ALPHABET.
            for &b in pool.iter().filter(|&&b| b < 248) {
                if out.len() == ENCODING_AES_KEY_LEN {
                    break;
                }
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        out
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.bytes[..16]);
        iv
    }
}

impl PartialEq for EncodingAesKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for EncodingAesKey {}

impl fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncodingAesKey(<redacted>)")
    }
}

/// Encrypts and decrypts one account's safe-mode messages.
#[derive(Clone)]
pub struct MsgCrypt {
    key: EncodingAesKey,
    appid: String,
}

impl fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("key", &self.key)
            .field("appid", &self.appid)
            .finish()
    }
}

impl MsgCrypt {
    /// A crypter for `appid` (for a third-party platform: its component_appid, §7.2).
    pub fn new(key: EncodingAesKey, appid: &str) -> Self {
        Self {
            key,
            appid: appid.to_owned(),
        }
    }

    /// The appid this crypter writes and expects.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// Encrypts `msg` with 16 fresh random bytes from the OS RNG; returns the base64 `Encrypt`.
    ///
    /// # Panics
    ///
    /// If the OS RNG fails, or `msg` is 4 GiB or longer.
    pub fn encrypt(&self, msg: &str) -> String {
        let mut random = [0u8; 16];
        fill_random(&mut random);
        self.encrypt_with_random(msg, &random)
    }

    /// Encrypts `msg` with the given 16 random prefix bytes (deterministic; for tests and vectors).
    ///
    /// # Panics
    ///
    /// If `msg` is 4 GiB or longer (its length must fit the 32-bit length field, §7.2); push
    /// bodies are capped far below that.
    pub fn encrypt_with_random(&self, msg: &str, random: &[u8; 16]) -> String {
        let msg_len = u32::try_from(msg.len()).expect("a push message is far below 4 GiB");
        let body_len = HEADER_LEN + msg.len() + self.appid.len();
        let pad = PAD_BLOCK - body_len % PAD_BLOCK; // 1..=32, never 0 (§7.1)
        let mut buf = Zeroizing::new(Vec::with_capacity(body_len + pad));
        buf.extend_from_slice(random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(msg.as_bytes());
        buf.extend_from_slice(self.appid.as_bytes());
        buf.resize(body_len + pad, pad as u8);

        let mut cipher = Aes256CbcEnc::new(&self.key.bytes.into(), &self.key.iv().into());
        let (blocks, rest) = Array::slice_as_chunks_mut(buf.as_mut_slice());
        debug_assert!(rest.is_empty());
        cipher.encrypt_blocks(blocks);
        STANDARD.encode(buf.as_slice())
    }

    /// Decrypts a base64 `Encrypt` value and returns the message, checking everything: base64,
    /// block alignment, PKCS#7 padding (1..=32, all bytes equal), the embedded length, UTF-8,
    /// and that the trailing appid is ours.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypt_b64.trim().as_bytes())
            .map_err(|_| CryptoError::Base64)?;
        if buf.is_empty() || buf.len() % AES_BLOCK != 0 {
            return Err(CryptoError::CiphertextLength { len: buf.len() });
        }
        let mut cipher = Aes256CbcDec::new(&self.key.bytes.into(), &self.key.iv().into());
        let (blocks, _) = Array::slice_as_chunks_mut(buf.as_mut_slice());
        cipher.decrypt_blocks(blocks);
        let plain = Zeroizing::new(buf);

        let pad = usize::from(*plain.last().ok_or(CryptoError::Padding)?);
        if !(1..=PAD_BLOCK).contains(&pad) || pad > plain.len() {
            return Err(CryptoError::Padding);
        }
        let (content, padding) = plain.split_at(plain.len() - pad);
        if padding.iter().any(|&b| usize::from(b) != pad) {
            return Err(CryptoError::Padding);
        }
        if content.len() < HEADER_LEN {
            return Err(CryptoError::MessageLength);
        }
        let msg_len = u32::from_be_bytes([content[16], content[17], content[18], content[19]]);
        let msg_end = usize::try_from(msg_len)
            .ok()
            .and_then(|len| HEADER_LEN.checked_add(len))
            .filter(|&end| end <= content.len())
            .ok_or(CryptoError::MessageLength)?;
        let msg =
            std::str::from_utf8(&content[HEADER_LEN..msg_end]).map_err(|_| CryptoError::Utf8)?;
        let appid = &content[msg_end..];
        if appid != self.appid.as_bytes() {
            return Err(CryptoError::AppIdMismatch);
        }
        Ok(msg.to_owned())
    }
}

/// Fills `buf` from the operating system's RNG.
fn fill_random(buf: &mut [u8]) {
    // An OS without entropy cannot run a push endpoint safely; there is nothing to fall back to.
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wxb11529c136998cb6";
    const VECTOR: &str =
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";

    fn crypt() -> MsgCrypt {
        MsgCrypt::new(EncodingAesKey::parse(KEY).unwrap(), APPID)
    }

    #[test]
    fn encrypt_with_spec_7_5_random_gives_the_published_encrypt() {
        assert_eq!(
            crypt().encrypt_with_random("我是中文abcd123", b"aaaabbbbccccdddd"),
            VECTOR
        );
    }

    #[test]
    fn spec_7_5_vector_decrypts_to_the_message() {
        assert_eq!(crypt().decrypt(VECTOR).unwrap(), "我是中文abcd123");
    }

    #[test]
    fn random_prefix_makes_each_encryption_different() {
        let c = crypt();
        let a = c.encrypt("hello");
        let b = c.encrypt("hello");
        assert_ne!(a, b);
        assert_eq!(c.decrypt(&a).unwrap(), "hello");
        assert_eq!(c.decrypt(&b).unwrap(), "hello");
    }

    #[test]
    fn key_must_be_43_alphanumeric_characters() {
        assert!(matches!(
            EncodingAesKey::parse(&KEY[..42]),
            Err(CryptoError::InvalidKey { .. })
        ));
        assert!(matches!(
            EncodingAesKey::parse(&format!("{KEY}A")),
            Err(CryptoError::InvalidKey { .. })
        ));
        let mut with_plus = KEY.to_owned();
        with_plus.replace_range(0..1, "+");
        assert!(matches!(
            EncodingAesKey::parse(&with_plus),
            Err(CryptoError::InvalidKey { .. })
        ));
        let mut with_multibyte = KEY[..41].to_owned();
        with_multibyte.push('é');
        assert_eq!(with_multibyte.len(), 43);
        assert!(EncodingAesKey::parse(&with_multibyte).is_err());
    }

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = EncodingAesKey::generate_encoded();
        let b = EncodingAesKey::generate_encoded();
        assert_eq!(a.len(), 43);
        assert_ne!(*a, *b);
        let c = MsgCrypt::new(EncodingAesKey::parse(&a).unwrap(), APPID);
        assert_eq!(c.decrypt(&c.encrypt("<xml/>")).unwrap(), "<xml/>");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let c = crypt();
        let shown = format!("{c:?} {:?}", EncodingAesKey::parse(KEY).unwrap());
        assert!(!shown.contains(KEY));
        assert!(!shown.contains("abcdefghij"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn message_for_another_appid_is_rejected() {
        let other = MsgCrypt::new(EncodingAesKey::parse(KEY).unwrap(), "wx0000000000000000");
        assert_eq!(other.decrypt(VECTOR), Err(CryptoError::AppIdMismatch));
    }

    #[test]
    fn malformed_ciphertexts_are_typed_errors() {
        let c = crypt();
        assert_eq!(c.decrypt("not base64!"), Err(CryptoError::Base64));
        assert_eq!(c.decrypt(""), Err(CryptoError::CiphertextLength { len: 0 }));
        assert_eq!(
            c.decrypt(&STANDARD.encode([0u8; 15])),
            Err(CryptoError::CiphertextLength { len: 15 })
        );
        // A key of another account garbles everything: padding or length checks catch it.
        let wrong_key = MsgCrypt::new(EncodingAesKey::from_bytes([7u8; 32]), APPID);
        assert!(wrong_key.decrypt(VECTOR).is_err());
    }

    #[test]
    fn pad_byte_above_32_is_rejected() {
        let c = crypt();
        // Build a plaintext whose last byte is 33 and encrypt it without the scheme's padding.
        let mut buf = vec![33u8; 64];
        let mut cipher = Aes256CbcEnc::new(&c.key.bytes.into(), &c.key.iv().into());
        let (blocks, _) = Array::slice_as_chunks_mut(buf.as_mut_slice());
        cipher.encrypt_blocks(blocks);
        assert_eq!(c.decrypt(&STANDARD.encode(&buf)), Err(CryptoError::Padding));
    }

    #[test]
    fn inconsistent_pad_bytes_are_rejected() {
        let c = crypt();
        let mut buf = vec![0u8; 64];
        buf[63] = 4;
        buf[62] = 4;
        buf[61] = 3; // should be 4
        buf[60] = 4;
        let mut cipher = Aes256CbcEnc::new(&c.key.bytes.into(), &c.key.iv().into());
        let (blocks, _) = Array::slice_as_chunks_mut(buf.as_mut_slice());
        cipher.encrypt_blocks(blocks);
        assert_eq!(c.decrypt(&STANDARD.encode(&buf)), Err(CryptoError::Padding));
    }

    #[test]
    fn embedded_length_beyond_the_data_is_rejected() {
        let c = crypt();
        let mut buf = vec![0u8; 64];
        buf[16..20].copy_from_slice(&1000u32.to_be_bytes());
        buf[32..].fill(32);
        let mut cipher = Aes256CbcEnc::new(&c.key.bytes.into(), &c.key.iv().into());
        let (blocks, _) = Array::slice_as_chunks_mut(buf.as_mut_slice());
        cipher.encrypt_blocks(blocks);
        assert_eq!(
            c.decrypt(&STANDARD.encode(&buf)),
            Err(CryptoError::MessageLength)
        );
    }

    proptest! {
        #[test]
        fn encrypt_then_decrypt_returns_the_message(
            msg in any::<String>(),
            appid in "[A-Za-z0-9_]{0,40}",
            key in any::<[u8; 32]>(),
        ) {
            let c = MsgCrypt::new(EncodingAesKey::from_bytes(key), &appid);
            let encrypted = c.encrypt(&msg);
            prop_assert_eq!(c.decrypt(&encrypted).unwrap(), msg);
        }

        #[test]
        fn a_flipped_ciphertext_bit_never_yields_the_original_message(
            msg in "[ -~]{0,200}",
            bit in any::<usize>(),
        ) {
            let c = crypt();
            let encrypted = c.encrypt(&msg);
            let mut raw = STANDARD.decode(&encrypted).unwrap();
            let bit = bit % (raw.len() * 8);
            raw[bit / 8] ^= 1 << (bit % 8);
            let tampered = STANDARD.encode(&raw);
            // Block 0 only carries the random prefix, but CBC turns a flip there into a flip of
            // plaintext block 1 (length and message), so no position is harmless.
            prop_assert_ne!(c.decrypt(&tampered), Ok(msg), "bit {} flipped unnoticed", bit);
        }
    }
}
