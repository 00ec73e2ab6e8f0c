//! Loading the master-key keyring from where the configuration says, and nowhere else.
//!
//! The keyring never comes from the database: an attacker with a database dump alone must not
//! be able to decrypt anything. It comes from `WXHUB_KEYRING` (base64 of the keyring TOML, for
//! secret managers that inject environment variables) or from a file readable only by its
//! owner. Development mode creates that file under the data directory when it is missing.

use accounts::VaultHandle;
use anyhow::Context;
use vault::{KEYRING_ENV_VAR, Keyring, Vault};

use crate::config::{Config, KeyringSource};

/// Loads the keyring the configuration names. Errors name the file or the variable and what
/// is wrong, never key material.
pub fn load_keyring(config: &Config) -> anyhow::Result<Keyring> {
    match &config.keyring {
        KeyringSource::Env => {
            let value = std::env::var(KEYRING_ENV_VAR).with_context(|| {
                format!("{KEYRING_ENV_VAR} is set but is not valid UTF-8 base64")
            })?;
            Ok(Keyring::from_env_value(&value)?)
        }
        KeyringSource::File { path, dev: true } => Ok(Keyring::load_or_create_dev(path)?),
        KeyringSource::File { path, dev: false } => {
            if !path.exists() {
                anyhow::bail!(
                    "no keyring at {}: create one with `wxhub vault init`, point --keyring-file \
                     or {KEYRING_ENV_VAR} at yours, or pass --dev-keyring for a throwaway \
                     development key",
                    path.display()
                );
            }
            Ok(Keyring::load(path)?)
        }
    }
}

/// Loads the keyring and builds the vault over it.
pub fn open_vault(config: &Config) -> anyhow::Result<Vault> {
    Ok(Vault::new(load_keyring(config)?))
}

/// The reloadable vault a server runs with: a keyring file is watched for rotation; a keyring
/// from the environment is fixed for the life of the process.
pub fn open_vault_handle(config: &Config) -> anyhow::Result<VaultHandle> {
    let vault = open_vault(config)?;
    Ok(match &config.keyring {
        KeyringSource::Env => VaultHandle::fixed(vault),
        KeyringSource::File { path, .. } => VaultHandle::watching(vault, path.clone()),
    })
}
