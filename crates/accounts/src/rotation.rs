//! Master-key rotation against the database: the keyring/database consistency check, the
//! online re-wrap of every account's data key, and the status report.
//!
//! Re-wrapping replaces only the small wrapped-DEK record of each account, never the secrets
//! themselves (they stay encrypted under the unchanged DEK). Each row is replaced with a
//! conditional UPDATE that only succeeds if the row still holds what was read, so the re-wrap
//! can run while the service serves and writes, can be interrupted at any point, and resumes
//! by simply running again: it only ever looks for DEKs not yet under the active key.

use std::collections::BTreeMap;

use store::Store;
use store::accounts::WrappedDekRecord;
use vault::{Keyring, Vault, VaultError, WrappedDek};
use wechat::Clock;

/// Rows read and re-wrapped per batch.
pub const DEFAULT_BATCH: u32 = 500;
/// Full passes before giving up on rows that keep appearing under an old key (a replica still
/// running with an old keyring keeps creating them; see `docs/operations.md`).
const MAX_PASSES: u32 = 5;

/// What can stop a rotation step.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// Stored data keys are wrapped under master keys the keyring lacks.
    #[error(
        "the database holds data keys wrapped under master key(s) {}, which the keyring lacks: \
         this keyring does not belong to this database (or a key was removed too early); \
         nothing was written",
        describe_missing(.missing)
    )]
    MissingKeys {
        /// Key id → number of accounts whose data key it wraps.
        missing: Vec<(String, i64)>,
    },
    /// The vault refused one account's data key.
    #[error("account {account_id}: {source}")]
    Vault {
        account_id: String,
        #[source]
        source: VaultError,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

fn describe_missing(missing: &[(String, i64)]) -> String {
    missing
        .iter()
        .map(|(id, n)| format!("`{id}` ({n} account(s))"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the stored data keys are spread over the keyring's master keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultStatus {
    /// The keyring's active key.
    pub active: String,
    /// Every key of the keyring with the number of data keys it wraps, in keyring order.
    pub keys: Vec<(String, i64)>,
    /// Key ids that wrap data keys but are missing from the keyring.
    pub missing: Vec<(String, i64)>,
}

impl VaultStatus {
    /// Data keys not yet under the active key (what a re-wrap still has to do).
    pub fn pending_rewrap(&self) -> i64 {
        self.keys
            .iter()
            .chain(&self.missing)
            .filter(|(id, _)| *id != self.active)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads how many data keys each master key wraps.
pub async fn status(store: &Store, keyring: &Keyring) -> Result<VaultStatus, RotationError> {
    let mut counts: BTreeMap<String, i64> = store.count_deks_by_kek().await?.into_iter().collect();
    let keys = keyring
        .key_ids()
        .map(|id| (id.to_string(), counts.remove(id.as_str()).unwrap_or(0)))
        .collect();
    Ok(VaultStatus {
        active: keyring.active_id().to_string(),
        keys,
        missing: counts.into_iter().collect(),
    })
}

/// Refuses a keyring that lacks a key the database uses, naming the missing key ids. Run at
/// start, before anything is written with the keyring.
pub async fn check_keyring_matches(store: &Store, keyring: &Keyring) -> Result<(), RotationError> {
    let status = status(store, keyring).await?;
    if status.missing.is_empty() {
        Ok(())
    } else {
        Err(RotationError::MissingKeys {
            missing: status.missing,
        })
    }
}

/// What a re-wrap did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Data keys now wrapped under the active key by this run.
    pub rewrapped: u64,
    /// Rows that changed between read and write (deleted, or re-wrapped by another process);
    /// they are looked at again on the next pass.
    pub raced: u64,
    /// Data keys still under another key when the run gave up (0 when it finished).
    pub remaining: u64,
}

/// Re-wraps every data key that is not under the vault's active key, in batches of `batch`,
/// until a full pass finds none. Safe to run while the service serves and to interrupt.
pub async fn rewrap_all(
    store: &Store,
    vault: &Vault,
    clock: &dyn Clock,
    batch: u32,
) -> Result<RewrapReport, RotationError> {
    check_keyring_matches(store, vault.keyring()).await?;
    let active = vault.keyring().active_id().to_string();
    let mut report = RewrapReport::default();
    for _ in 0..MAX_PASSES {
        let mut found = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_deks_not_wrapped_by(&active, after.as_deref(), batch)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.account_id.clone());
            found += page.len() as u64;
            for record in &page {
                if rewrap_one(store, vault, clock, record).await? {
                    report.rewrapped += 1;
                } else {
                    report.raced += 1;
                }
            }
            tracing::info!(rewrapped = report.rewrapped, "re-wrapping data keys");
        }
        if found == 0 {
            return Ok(report);
        }
    }
    report.remaining = status(store, vault.keyring()).await?.pending_rewrap() as u64;
    Ok(report)
}

async fn rewrap_one(
    store: &Store,
    vault: &Vault,
    clock: &dyn Clock,
    record: &WrappedDekRecord,
) -> Result<bool, RotationError> {
    let vault_error = |source| RotationError::Vault {
        account_id: record.account_id.clone(),
        source,
    };
    let wrapped = WrappedDek::from_bytes(record.wrapped_dek.clone()).map_err(vault_error)?;
    let Some(new) = vault
        .rewrap(&record.account_id, &wrapped)
        .map_err(vault_error)?
    else {
        return Ok(true);
    };
    Ok(store
        .replace_wrapped_dek(
            &record.account_id,
            record,
            new.as_bytes(),
            new.kek_id(),
            clock.now_ms(),
        )
        .await?)
}
