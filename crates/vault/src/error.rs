//! The vault's one error type.
//!
//! Every message is safe to log: it may name a file, a key id, an account's field or a byte
//! count, but never key material, plaintext, or which part of an authentication check failed.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The keyring's content is invalid. `origin` names where it came from (a file path or the
    /// `WXHUB_KEYRING` environment variable); `problem` says what is wrong with it.
    #[error("keyring {origin}: {problem}")]
    Keyring {
        /// A file path, or `environment variable WXHUB_KEYRING`.
        origin: String,
        /// What is wrong.
        problem: KeyringProblem,
    },

    /// Reading or writing a keyring file failed.
    #[error("keyring file {}: cannot {action}: {source}", path.display())]
    Io {
        /// The file (or its directory) involved.
        path: PathBuf,
        /// What was being attempted ("open", "read", "write", "rename", ...).
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },

    /// The keyring file can be read by users other than its owner, so the master keys may
    /// already have leaked; the vault refuses to use it until its mode is fixed.
    #[error(
        "keyring file {} is accessible by group or others (mode {mode:04o}); \
         run `chmod 600` on it and consider the keys it holds exposed",
        path.display()
    )]
    InsecurePermissions {
        /// The keyring file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key id does not match `[A-Za-z0-9_-]{1,32}`.
    #[error("invalid key id {id:?}: expected 1 to 32 characters from A-Z a-z 0-9 _ -")]
    InvalidKeyId {
        /// The rejected id (ids are not secret).
        id: String,
    },

    /// `add_key` was asked for an id the keyring already holds.
    #[error("the keyring already holds a key with id `{id}`")]
    DuplicateKey {
        /// The id.
        id: String,
    },

    /// `remove_key` was asked to remove a key that data keys are still wrapped under.
    #[error(
        "key `{id}` still wraps data keys; re-wrap them under the active key \
         before removing it"
    )]
    KeyInUse {
        /// The id.
        id: String,
    },

    /// `remove_key` was asked to remove the active key.
    #[error("key `{id}` is the active key; add and activate another key before removing it")]
    ActiveKeyRemoval {
        /// The id.
        id: String,
    },

    /// The stored data names a key that is not available: a KEK missing from the keyring (the
    /// keyring does not match the database), or a field encrypted under another data key.
    #[error(
        "stored data was encrypted under key `{id}`, which is not available: \
         the keyring (or the account's data key) does not match the stored data"
    )]
    UnknownKey {
        /// The key id named by the ciphertext.
        id: String,
    },

    /// The ciphertext starts with a format version this build does not know.
    #[error("unsupported vault format version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },

    /// The ciphertext is not a well-formed vault record (truncated, trailing bytes, bad
    /// lengths).
    #[error("malformed vault record: {what}")]
    Malformed {
        /// Which part is wrong.
        what: &'static str,
    },

    /// Authentication failed: wrong key, wrong account or field, or the bytes were altered.
    /// Deliberately carries no detail.
    #[error(
        "decryption failed: the data is corrupt, altered, or bound to another account or field"
    )]
    Decrypt,

    /// A field decrypted correctly but was requested as text and is not UTF-8.
    #[error("field `{field}` decrypted but is not valid UTF-8")]
    NotUtf8 {
        /// The field name.
        field: String,
    },
}

/// What is wrong with a keyring's content. Never includes key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringProblem {
    /// The environment variable's value is not base64.
    #[error("the value is not valid base64 (it must hold the keyring TOML, base64-encoded)")]
    EnvNotBase64,
    /// The content is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// The content is not valid TOML.
    #[error("TOML syntax error at line {line}: {message}")]
    Syntax {
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// The parser's description (without the offending source text).
        message: String,
    },
    /// A field the format does not define (a typo, or content meant for another file).
    #[error("unknown field `{field}` {location}")]
    UnknownField {
        /// The field name.
        field: String,
        /// `at top level` or `in [[keys]] entry N`.
        location: String,
    },
    /// A required field is missing.
    #[error("missing field `{field}` {location}")]
    MissingField {
        /// The field name.
        field: &'static str,
        /// Where.
        location: String,
    },
    /// A field has the wrong TOML type.
    #[error("field `{field}` {location} must be {expected}")]
    WrongType {
        /// The field name.
        field: &'static str,
        /// Where.
        location: String,
        /// The expected type.
        expected: &'static str,
    },
    /// A key id is not `[A-Za-z0-9_-]{1,32}`.
    #[error(
        "key id {id:?} in [[keys]] entry {entry} is invalid: expected 1 to 32 characters from A-Z a-z 0-9 _ -"
    )]
    InvalidKeyId {
        /// The id.
        id: String,
        /// 1-based entry number.
        entry: usize,
    },
    /// Two entries share an id.
    #[error("duplicate key id `{id}`")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// A key's `key` is not base64.
    #[error("key `{id}`: `key` is not valid base64")]
    KeyNotBase64 {
        /// The key's id.
        id: String,
    },
    /// A key does not decode to 32 bytes.
    #[error("key `{id}`: `key` decodes to {len} bytes, expected 32")]
    KeyWrongLength {
        /// The key's id.
        id: String,
        /// The decoded length.
        len: usize,
    },
    /// The keyring holds no keys.
    #[error("no keys: add at least one [[keys]] entry")]
    NoKeys,
    /// `active` is missing.
    #[error("no active key: set `active = \"<id>\"` at top level")]
    NoActiveKey,
    /// `active` names an id that is not in `[[keys]]`.
    #[error("active key `{id}` is not among the [[keys]] entries")]
    ActiveKeyMissing {
        /// The id.
        id: String,
    },
}
