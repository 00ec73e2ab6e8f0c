//! The vault a running server uses, swapped when the keyring file changes.

use vault::{Keyring, Vault};

/// The vault a running server uses, reloaded when its keyring file changes, so that a key
/// added by `wxhub vault rotate` (or copied in by an operator) reaches a running server without
/// a restart. Readers take a cheap `Arc` snapshot; a failed reload keeps the current keyring.
#[derive(Debug)]
pub struct VaultHandle {
    current: std::sync::RwLock<std::sync::Arc<Vault>>,
    file: Option<std::path::PathBuf>,
    seen: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl VaultHandle {
    /// A handle over `vault`, loaded from the keyring file at `path`, which it reloads when
    /// the file changes.
    pub fn watching(vault: Vault, path: std::path::PathBuf) -> Self {
        let seen = modified(&path);
        Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(vault)),
            file: Some(path),
            seen: std::sync::Mutex::new(seen),
        }
    }

    /// A handle over a fixed keyring that never reloads (a keyring from the environment, tests).
    pub fn fixed(vault: Vault) -> Self {
        Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(vault)),
            file: None,
            seen: std::sync::Mutex::new(None),
        }
    }

    /// The vault as of now.
    pub fn current(&self) -> std::sync::Arc<Vault> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reloads the keyring file if its modification time changed. Returns whether a new
    /// keyring is in use. An unreadable or invalid file is reported and the current keyring
    /// kept: a half-written edit must not take the server down.
    pub fn reload_if_changed(&self) -> Result<bool, vault::VaultError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let now_seen = modified(path);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now_seen == *seen {
            return Ok(false);
        }
        let keyring = Keyring::load(path)?;
        *seen = now_seen;
        let active = keyring.active_id().to_string();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            std::sync::Arc::new(Vault::new(keyring));
        tracing::info!(path = %path.display(), active_key = %active, "keyring reloaded");
        Ok(true)
    }
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
