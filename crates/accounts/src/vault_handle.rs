//! The vault a running server uses, swapped when the keyring file changes.
//!
//! Two ways a changed keyring file comes into use, and the rule that makes both safe:
//! - [`VaultHandle::reload_if_changed`], every few seconds: the new keyring replaces the
//!   current one only if it holds every master key the database still uses (the check
//!   start-up makes), so a keyring edited too early (a key dropped while data keys are still
//!   wrapped under it) is refused and the working one kept. Only this path changes the active
//!   key or lets a key go;
//! - [`VaultHandle::for_kek`], at once, when a data key is wrapped under a master key the
//!   current keyring lacks (`wxhub vault rotate` on this host has just added it and re-wrapped
//!   under it, and the next periodic reload has not come round yet): the file is read again
//!   and the keys it has that the current keyring lacks are *added* to it. Adding keys can make
//!   nothing unreadable, so this needs no database check; the active key stays until the
//!   checked reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use store::Store;
use vault::{Keyring, Vault, VaultError};

use crate::rotation::{self, RotationError};
use crate::{AccountError, PlainSecrets};

/// Why a changed keyring file was not put to use (the current keyring stays in use).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or is not a valid keyring (e.g. half-written).
    #[error(transparent)]
    Keyring(#[from] VaultError),
    /// The new keyring lacks master keys the database uses (named in the message), or the
    /// database could not be asked.
    #[error(transparent)]
    Check(#[from] RotationError),
}

/// The vault a running server uses, reloaded when its keyring file changes, so that a key
/// added by `wxhub vault rotate` (or copied in by an operator) reaches a running server without
/// a restart. Readers take a cheap `Arc` snapshot; a refused reload keeps the current keyring.
#[derive(Debug)]
pub struct VaultHandle {
    current: RwLock<Arc<Vault>>,
    file: Option<PathBuf>,
    /// The file version in use.
    seen: Mutex<Option<FileVersion>>,
    /// The last file version [`Self::for_kek`] read that lacked the key it looked for (and
    /// that key), so a steady stream of requests does not re-read an unchanged file.
    passed_over: Mutex<Option<(FileVersion, String)>>,
}

impl VaultHandle {
    /// A handle over `vault`, loaded from the keyring file at `path`, which it reloads when
    /// the file changes.
    pub fn watching(vault: Vault, path: PathBuf) -> Self {
        let seen = file_version(&path);
        Self {
            current: RwLock::new(Arc::new(vault)),
            file: Some(path),
            seen: Mutex::new(seen),
            passed_over: Mutex::new(None),
        }
    }

    /// A handle over a fixed keyring that never reloads (a keyring from the environment, tests).
    pub fn fixed(vault: Vault) -> Self {
        Self {
            current: RwLock::new(Arc::new(vault)),
            file: None,
            seen: Mutex::new(None),
            passed_over: Mutex::new(None),
        }
    }

    /// The vault as of now.
    pub fn current(&self) -> Arc<Vault> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads the keyring file if it changed (time, inode or size), and puts the new keyring to
    /// use only if it holds every master key the database still uses. Returns whether a new
    /// keyring is in use. An unreadable or invalid file, or one that lacks a key the database
    /// needs, is refused with the reason (naming the missing key ids) and the current keyring
    /// kept: a half-written edit or a key dropped too early must not take the server down.
    pub async fn reload_if_changed(&self, store: &Store) -> Result<bool, ReloadError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let was_seen = *lock(&self.seen);
        let now_seen = file_version(path);
        if now_seen == was_seen {
            return Ok(false);
        }
        let keyring = Keyring::load(path)?;
        rotation::check_keyring_matches(store, &keyring).await?;
        Ok(self.install(keyring, was_seen, now_seen))
    }

    /// The vault to unwrap a data key wrapped under master key `kek_id` with: the current one
    /// if it holds that key; otherwise the keyring file is read again at once and, if it holds
    /// the key, the current keyring with the file's missing keys added (see the module
    /// documentation). Without a file that has the key, the current vault is returned and
    /// unwrapping reports the unknown key.
    pub fn for_kek(&self, kek_id: &str) -> Arc<Vault> {
        let vault = self.current();
        if vault.keyring().contains(kek_id) {
            return vault;
        }
        let Some(path) = &self.file else {
            return vault;
        };
        let version = file_version(path);
        if version == *lock(&self.seen) {
            // The file in use is the newest: it does not have the key either.
            return vault;
        }
        let looked = version.map(|v| (v, kek_id.to_owned()));
        if looked.is_some() && *lock(&self.passed_over) == looked {
            return vault;
        }
        let keyring = match Keyring::load(path) {
            Ok(keyring) if keyring.contains(kek_id) => keyring,
            outcome => {
                // Said once per file version and key, not on every request that meets it.
                let error = outcome.err().map(|e| e.to_string());
                tracing::warn!(
                    kek_id,
                    ?error,
                    "a data key is wrapped under a master key that neither this server's keyring nor its keyring file holds"
                );
                *lock(&self.passed_over) = looked;
                return vault;
            }
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if !current.keyring().contains(kek_id) {
            let added: Vec<String> = keyring
                .key_ids()
                .filter(|id| !current.keyring().contains(id.as_str()))
                .map(|id| id.to_string())
                .collect();
            *current = Arc::new(Vault::new(current.keyring().with_keys_from(&keyring)));
            tracing::info!(
                kek_id,
                ?added,
                "keys added from the keyring file: a data key is wrapped under a master key this server had not loaded yet"
            );
        }
        current.clone()
    }

    /// [`Self::for_kek`] for a stored wrapped data key, whose master key id is read from its
    /// header. A malformed record gets the current vault (which then reports it).
    pub fn for_wrapped_dek(&self, wrapped_dek: &[u8]) -> Arc<Vault> {
        match vault::WrappedDek::kek_id_of(wrapped_dek) {
            Ok(kek_id) => self.for_kek(kek_id),
            Err(_) => self.current(),
        }
    }

    /// [`crate::read_secrets`] with the vault [`Self::for_kek`] picks for the account's data
    /// key.
    pub async fn read_secrets(
        &self,
        store: &Store,
        account_id: &str,
    ) -> Result<PlainSecrets, AccountError> {
        let sealed = store
            .load_account_secrets(account_id)
            .await?
            .ok_or(store::StoreError::NotFound { what: "account" })?;
        crate::open_secrets(&self.for_kek(&sealed.dek_kek_id), account_id, &sealed)
    }

    /// Puts `keyring` to use unless another reload replaced the version `was_seen` meanwhile
    /// (it read a newer file then; this one must not undo it). Returns whether it did.
    fn install(
        &self,
        keyring: Keyring,
        was_seen: Option<FileVersion>,
        now_seen: Option<FileVersion>,
    ) -> bool {
        let mut seen = lock(&self.seen);
        if *seen != was_seen {
            return false;
        }
        *seen = now_seen;
        let active = keyring.active_id().to_string();
        let keys: Vec<String> = keyring.key_ids().map(|id| id.to_string()).collect();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Vault::new(keyring));
        drop(seen);
        let path = self.file.as_deref().unwrap_or(Path::new("")).display();
        tracing::info!(%path, active_key = %active, ?keys, "keyring file reloaded");
        true
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What tells one version of the keyring file from the next: its modification time, and —
/// because file times tick only every few milliseconds and `Keyring::save` replaces the file
/// by renaming a new one over it — its inode and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: SystemTime,
    inode: u64,
    len: u64,
}

fn file_version(path: &Path) -> Option<FileVersion> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileVersion {
        modified: metadata.modified().ok()?,
        inode,
        len: metadata.len(),
    })
}
