//! The keyring of master keys (KEKs) that wrap the accounts' data keys.
//!
//! A keyring holds one or more 256-bit keys, each with a short id, and exactly one of them is
//! active (new data keys are wrapped under it). It comes from a TOML file readable only by its
//! owner, or from the `WXHUB_KEYRING` environment variable (the same TOML, base64-encoded) —
//! never from the database it protects. See the crate README for the file format.
//!
//! This module must never print key material: errors name files, ids and lengths only, and the
//! base64 text of keys is wiped from the parsed document once decoded. Its only I/O is reading
//! and (atomically, mode 0600) writing the keyring file.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{is_valid_key_id, os_random};
use crate::error::{KeyringProblem, VaultError};
use crate::secret::SecretString;

/// The environment variable through which the binary passes a keyring (its TOML,
/// base64-encoded) when no keyring file is used. The crate never reads the environment itself;
/// the binary passes the value to [`Keyring::from_env_value`].
pub const KEYRING_ENV_VAR: &str = "WXHUB_KEYRING";

/// The id given to the key of a development keyring.
pub const DEV_KEY_ID: &str = "dev-1";

/// Length of a master key in bytes (AES-256).
const KEY_LEN: usize = 32;

/// A validated key id: 1 to 32 characters from `[A-Za-z0-9_-]`. Ids are not secret; they are
/// stored next to wrapped data keys so "which data keys use key k1" is a query.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, VaultError> {
        let id = id.into();
        if is_valid_key_id(&id) {
            Ok(Self(id))
        } else {
            Err(VaultError::InvalidKeyId { id })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = VaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for KeyId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for KeyId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({:?})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One master key. The raw bytes are kept (zeroized on drop) only so the keyring can be saved;
/// the expanded cipher is kept so wrapping does not redo the key schedule each time (the
/// `zeroize` feature of `aes-gcm` wipes it on drop).
#[derive(Clone)]
pub(crate) struct MasterKey {
    id: KeyId,
    material: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn from_bytes(id: KeyId, bytes: &[u8; KEY_LEN]) -> Self {
        let material = Zeroizing::new(*bytes);
        let cipher = Aes256Gcm::new(&(*material).into());
        Self {
            id,
            material,
            cipher,
        }
    }

    fn generate(id: KeyId) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        os_random(&mut *bytes);
        Self::from_bytes(id, &bytes)
    }

    pub(crate) fn id(&self) -> &KeyId {
        &self.id
    }

    pub(crate) fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }
}

/// A set of master keys with exactly one active. Immutable: rotation helpers return an updated
/// keyring, which the operator saves and deploys.
#[derive(Clone)]
pub struct Keyring {
    /// In file order; never empty.
    keys: Vec<MasterKey>,
    /// Index of the active key in `keys`.
    active: usize,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active_id().as_str())
            .field(
                "keys",
                &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// A new keyring with one freshly generated key, which is active.
    pub fn generate(id: KeyId) -> Self {
        Self {
            keys: vec![MasterKey::generate(id)],
            active: 0,
        }
    }

    /// Loads a keyring file.
    ///
    /// On Unix the file must not be accessible by group or others (mode `0600` or stricter):
    /// a world-readable keyring is refused with [`VaultError::InsecurePermissions`] rather than
    /// merely warned about, because by then the keys may already have been copied.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, VaultError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(io_error(path, "open"))?;
        check_owner_only(&file, path)?;
        let mut content = Zeroizing::new(Vec::new());
        file.read_to_end(&mut content)
            .map_err(io_error(path, "read"))?;
        let origin = path.display().to_string();
        let text = std::str::from_utf8(&content).map_err(|_| VaultError::Keyring {
            origin: origin.clone(),
            problem: KeyringProblem::NotUtf8,
        })?;
        Self::from_toml_str(text, &origin)
    }

    /// Parses the value of the [`KEYRING_ENV_VAR`] environment variable: the keyring TOML,
    /// base64-encoded (standard alphabet, padded; surrounding whitespace is ignored).
    pub fn from_env_value(value: &str) -> Result<Self, VaultError> {
        let origin = format!("from environment variable {KEYRING_ENV_VAR}");
        let decoded =
            Zeroizing::new(
                BASE64
                    .decode(value.trim())
                    .map_err(|_| VaultError::Keyring {
                        origin: origin.clone(),
                        problem: KeyringProblem::EnvNotBase64,
                    })?,
            );
        let text = std::str::from_utf8(&decoded).map_err(|_| VaultError::Keyring {
            origin: origin.clone(),
            problem: KeyringProblem::NotUtf8,
        })?;
        Self::from_toml_str(text, &origin)
    }

    /// Parses keyring TOML. `origin` names where it came from, for error messages.
    ///
    /// Validation is strict: unknown fields, duplicate ids, invalid ids, keys that are not
    /// base64 or not 32 bytes, a missing or unknown `active` id are all errors naming the
    /// problem (and the key id), never the key material.
    pub fn from_toml_str(content: &str, origin: &str) -> Result<Self, VaultError> {
        let mut table: toml::Table = content.parse().map_err(|err: toml::de::Error| {
            let line = err
                .span()
                .map(|span| {
                    // Count bytes, not chars: a span may start inside a multi-byte character.
                    let before = &content.as_bytes()[..span.start.min(content.len())];
                    before.iter().filter(|&&b| b == b'\n').count() + 1
                })
                .unwrap_or(0);
            // `message()` is the parser's description without the source excerpt that
            // `Display` would add, which could contain key material.
            VaultError::Keyring {
                origin: origin.to_owned(),
                problem: KeyringProblem::Syntax {
                    line,
                    message: err.message().to_owned(),
                },
            }
        })?;
        let result = parse_table(&table).map_err(|problem| VaultError::Keyring {
            origin: origin.to_owned(),
            problem,
        });
        wipe_key_strings(&mut table);
        result
    }

    /// Development mode: loads the keyring at `path`, creating it with one fresh key if it
    /// does not exist.
    ///
    /// The file is written to a temporary file created with mode `0600` (never widened then
    /// narrowed), synced, and linked into place without overwriting, so a concurrent start
    /// either wins or loads the winner's keyring. Always logs a warning: a keyring generated
    /// next to the data it protects guards against nothing once both are copied together.
    pub fn load_or_create_dev(path: impl AsRef<Path>) -> Result<Self, VaultError> {
        let path = path.as_ref();
        match fs::symlink_metadata(path) {
            Ok(_) => {
                tracing::warn!(
                    path = %path.display(),
                    "using a development keyring; do not use development mode in production"
                );
                return Self::load(path);
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(path, "inspect")(err)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let keyring = Self::generate(KeyId(DEV_KEY_ID.to_owned()));
        let created = write_atomically(path, keyring.to_toml().as_bytes(), Replace::Never)?;
        if created {
            tracing::warn!(
                path = %path.display(),
                key_id = DEV_KEY_ID,
                "created a development keyring with a fresh master key; for development only: \
                 anyone who copies this file together with the database can read every secret"
            );
            Ok(keyring)
        } else {
            // Another process created it between our check and our link: use theirs.
            tracing::warn!(
                path = %path.display(),
                "using a development keyring; do not use development mode in production"
            );
            Self::load(path)
        }
    }

    /// Writes the keyring to `path` only if no file is there yet (`wxhub vault init`): an
    /// existing keyring is never replaced, because the keys in it may be the only way to read
    /// the database. The directory is created owner-only if missing.
    pub fn create_new(&self, path: impl AsRef<Path>) -> Result<(), VaultError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        if write_atomically(path, self.to_toml().as_bytes(), Replace::Never)? {
            Ok(())
        } else {
            Err(VaultError::Io {
                path: path.to_path_buf(),
                action: "create",
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a keyring already exists there; it was left untouched",
                ),
            })
        }
    }

    /// Writes the keyring to `path` atomically: a temporary file in the same directory created
    /// with mode `0600`, written and synced, then renamed over `path`, then the directory
    /// synced. A crash leaves either the old or the new keyring, never a partial one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), VaultError> {
        write_atomically(path.as_ref(), self.to_toml().as_bytes(), Replace::Always).map(|_| ())
    }

    /// The keyring's TOML, base64-encoded: the value to put in [`KEYRING_ENV_VAR`]. The result
    /// contains every master key; show it only to an operator who asked for it.
    pub fn to_env_value(&self) -> SecretString {
        SecretString::new(BASE64.encode(self.to_toml().as_bytes()))
    }

    /// Rotation step 1: a copy of this keyring with a freshly generated key `id`, made active.
    /// The old keys stay, so data keys wrapped under them still unwrap.
    pub fn add_key(&self, id: KeyId) -> Result<Keyring, VaultError> {
        if self.get(id.as_str()).is_some() {
            return Err(VaultError::DuplicateKey { id: id.0 });
        }
        let mut keys = self.keys.clone();
        keys.push(MasterKey::generate(id));
        let active = keys.len() - 1;
        Ok(Keyring { keys, active })
    }

    /// A copy of this keyring with `id` as the active key. Lets several replicas receive a new
    /// key (added, then the previous key re-activated) before any of them wraps under it.
    pub fn with_active(&self, id: &KeyId) -> Result<Keyring, VaultError> {
        let active = self.position(id)?;
        Ok(Keyring {
            keys: self.keys.clone(),
            active,
        })
    }

    /// A copy of this keyring that also holds every key of `other` it lacks (appended in
    /// `other`'s order); the active key stays this keyring's, and a key id both hold keeps
    /// this keyring's material. Everything either keyring can unwrap, the result can: a
    /// running server takes keys from a newer keyring file this way before that file has been
    /// checked against the database.
    pub fn with_keys_from(&self, other: &Keyring) -> Keyring {
        let mut keys = self.keys.clone();
        for key in &other.keys {
            if self.get(key.id.as_str()).is_none() {
                keys.push(key.clone());
            }
        }
        Keyring {
            keys,
            active: self.active,
        }
    }

    /// Rotation step 3: a copy of this keyring without key `id`.
    ///
    /// `in_use` is the set of KEK ids that stored wrapped data keys still reference (the store
    /// answers this from its `kek_id` column). Removing a key in use would make those accounts'
    /// secrets unreadable, so it is refused, as is removing the active key.
    pub fn remove_key(&self, id: &KeyId, in_use: &[KeyId]) -> Result<Keyring, VaultError> {
        let index = self.position(id)?;
        if index == self.active {
            return Err(VaultError::ActiveKeyRemoval { id: id.0.clone() });
        }
        if in_use.contains(id) {
            return Err(VaultError::KeyInUse { id: id.0.clone() });
        }
        let mut keys = self.keys.clone();
        keys.remove(index);
        let active = if index < self.active {
            self.active - 1
        } else {
            self.active
        };
        Ok(Keyring { keys, active })
    }

    /// The active key's id.
    pub fn active_id(&self) -> &KeyId {
        &self.keys[self.active].id
    }

    /// All key ids, in file order.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|k| &k.id)
    }

    /// Whether the keyring holds a key with this id.
    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub(crate) fn active(&self) -> &MasterKey {
        &self.keys[self.active]
    }

    pub(crate) fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id.as_str() == id)
    }

    fn position(&self, id: &KeyId) -> Result<usize, VaultError> {
        self.keys
            .iter()
            .position(|k| k.id == *id)
            .ok_or_else(|| VaultError::UnknownKey { id: id.0.clone() })
    }

    /// A keyring with fixed keys, for the fuzz body (which needs reproducible inputs).
    pub(crate) fn from_fixed(id: &str, bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            keys: vec![MasterKey::from_bytes(KeyId(id.to_owned()), bytes)],
            active: 0,
        }
    }

    /// Renders the keyring file. Ids are `[A-Za-z0-9_-]` and keys base64, so neither needs
    /// TOML escaping.
    fn to_toml(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(128 + 80 * self.keys.len()));
        out.push_str(
            "# wxhub master keyring. Keep this file mode 0600 and out of database backups.\n",
        );
        out.push_str(&format!("active = \"{}\"\n", self.active_id()));
        for key in &self.keys {
            let encoded = Zeroizing::new(BASE64.encode(*key.material));
            out.push_str("\n[[keys]]\n");
            out.push_str(&format!("id = \"{}\"\n", key.id));
            out.push_str("key = \"");
            out.push_str(&encoded);
            out.push_str("\"\n");
        }
        out
    }
}

/// Validates a parsed keyring document.
fn parse_table(table: &toml::Table) -> Result<Keyring, KeyringProblem> {
    const TOP: &str = "at top level";
    for field in table.keys() {
        if field != "active" && field != "keys" {
            return Err(KeyringProblem::UnknownField {
                field: field.clone(),
                location: TOP.to_owned(),
            });
        }
    }
    let entries = match table.get("keys") {
        None => return Err(KeyringProblem::NoKeys),
        Some(toml::Value::Array(entries)) => entries,
        Some(_) => {
            return Err(KeyringProblem::WrongType {
                field: "keys",
                location: TOP.to_owned(),
                expected: "an array of tables ([[keys]])",
            });
        }
    };
    if entries.is_empty() {
        return Err(KeyringProblem::NoKeys);
    }
    let mut keys: Vec<MasterKey> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let number = index + 1;
        let location = format!("in [[keys]] entry {number}");
        let toml::Value::Table(entry) = entry else {
            return Err(KeyringProblem::WrongType {
                field: "keys",
                location: TOP.to_owned(),
                expected: "an array of tables ([[keys]])",
            });
        };
        for field in entry.keys() {
            if field != "id" && field != "key" {
                return Err(KeyringProblem::UnknownField {
                    field: field.clone(),
                    location,
                });
            }
        }
        let id = string_field(entry, "id", &location)?;
        if !is_valid_key_id(id) {
            return Err(KeyringProblem::InvalidKeyId {
                id: id.to_owned(),
                entry: number,
            });
        }
        let id = KeyId(id.to_owned());
        if keys.iter().any(|k| k.id == id) {
            return Err(KeyringProblem::DuplicateId { id: id.0 });
        }
        let encoded = string_field(entry, "key", &location)?;
        let decoded = Zeroizing::new(
            BASE64
                .decode(encoded.trim())
                .map_err(|_| KeyringProblem::KeyNotBase64 { id: id.0.clone() })?,
        );
        let bytes: &[u8; KEY_LEN] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| KeyringProblem::KeyWrongLength {
                    id: id.0.clone(),
                    len: decoded.len(),
                })?;
        keys.push(MasterKey::from_bytes(id, bytes));
    }
    let active = match table.get("active") {
        None => return Err(KeyringProblem::NoActiveKey),
        Some(toml::Value::String(active)) => active,
        Some(_) => {
            return Err(KeyringProblem::WrongType {
                field: "active",
                location: TOP.to_owned(),
                expected: "a string (a key id)",
            });
        }
    };
    let active = keys
        .iter()
        .position(|k| k.id.as_str() == active)
        .ok_or_else(|| KeyringProblem::ActiveKeyMissing { id: active.clone() })?;
    Ok(Keyring { keys, active })
}

fn string_field<'t>(
    entry: &'t toml::Table,
    field: &'static str,
    location: &str,
) -> Result<&'t str, KeyringProblem> {
    match entry.get(field) {
        None => Err(KeyringProblem::MissingField {
            field,
            location: location.to_owned(),
        }),
        Some(toml::Value::String(value)) => Ok(value),
        Some(_) => Err(KeyringProblem::WrongType {
            field,
            location: location.to_owned(),
            expected: "a string",
        }),
    }
}

/// Overwrites the base64 key text in a parsed document before it is dropped.
fn wipe_key_strings(table: &mut toml::Table) {
    if let Some(toml::Value::Array(entries)) = table.get_mut("keys") {
        for entry in entries {
            if let toml::Value::Table(entry) = entry
                && let Some(toml::Value::String(key)) = entry.get_mut("key")
            {
                key.zeroize();
            }
        }
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> VaultError {
    let path = path.to_path_buf();
    move |source| VaultError::Io {
        path,
        action,
        source,
    }
}

/// Refuses a keyring file that group or others may access.
#[cfg(unix)]
fn check_owner_only(file: &File, path: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    // fstat on the opened file, not stat on the path, so the checked file is the read file.
    let mode = file
        .metadata()
        .map_err(io_error(path, "inspect"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(VaultError::InsecurePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_file: &File, _path: &Path) -> Result<(), VaultError> {
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), VaultError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(io_error(dir, "create directory"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Replace an existing file (save).
    Always,
    /// Leave an existing file alone and report that nothing was written (dev creation).
    Never,
}

/// Writes `contents` to `path` through a `0600` temporary file in the same directory.
/// Returns whether `path` now holds `contents` (false only with [`Replace::Never`] when the
/// file already existed).
fn write_atomically(path: &Path, contents: &[u8], replace: Replace) -> Result<bool, VaultError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| VaultError::Io {
        path: path.to_path_buf(),
        action: "write",
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
    })?;
    let mut suffix = [0u8; 8];
    os_random(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{suffix}"));
    let tmp = dir.join(tmp_name);

    let result = write_new_private_file(&tmp, contents).and_then(|()| match replace {
        Replace::Always => fs::rename(&tmp, path)
            .map(|()| true)
            .map_err(io_error(path, "rename the temporary file onto")),
        // A hard link never replaces an existing file, unlike rename.
        Replace::Never => match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(io_error(path, "link the temporary file to")(err)),
        },
    });
    // After a rename the temporary name is gone; otherwise it must not linger.
    if !(replace == Replace::Always && result.is_ok()) {
        let _ = fs::remove_file(&tmp);
    }
    let written = result?;
    sync_dir(&dir)?;
    Ok(written)
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), VaultError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600 from the start: there is no moment when the key is readable by others.
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(io_error(path, "create the temporary file"))?;
    file.write_all(contents)
        .map_err(io_error(path, "write the temporary file"))?;
    file.sync_all()
        .map_err(io_error(path, "sync the temporary file"))
}

/// Makes a rename or link in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), VaultError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "sync directory"))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), VaultError> {
    Ok(())
}
