//! Master-key rotation against the database: the keyring/database consistency check, the
//! online re-wrap of every data key, and the status report.
//!
//! "Every data key" is every [`DekHolder`] the store lists — account secrets, ID-token signing
//! keys, and whatever is sealed later: each function here loops over [`DekHolder::ALL`], so a
//! new kind of sealed data is covered by adding it there.
//!
//! Re-wrapping replaces only the small wrapped-DEK record of each row, never the data itself
//! (it stays encrypted under the unchanged DEK). Each row is replaced with a conditional
//! UPDATE that only succeeds if the row still holds what was read, so the re-wrap can run
//! while the service serves and writes, can be interrupted at any point, and resumes by simply
//! running again: it only ever looks for DEKs not yet under the active key.

use std::collections::BTreeMap;

use store::Store;
use store::sealed::{DekHolder, SealedDek};
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
        describe_keys(.missing)
    )]
    MissingKeys {
        /// Each missing key with what it wraps.
        missing: Vec<KeyUse>,
    },
    /// The vault refused one row's data key.
    #[error("{} {id}: {source}", .holder.noun())]
    Vault {
        holder: DekHolder,
        /// The row's id (account id, kid).
        id: String,
        #[source]
        source: VaultError,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// `` `k1` (2 account(s), 1 signing key(s)) ``, for each key.
pub fn describe_keys(keys: &[KeyUse]) -> String {
    keys.iter()
        .map(|key| format!("`{}` ({})", key.kek_id, key.describe_counts()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many data keys of each kind one master key wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub kek_id: String,
    /// One entry per holder, in [`DekHolder::ALL`] order.
    pub counts: Vec<(DekHolder, i64)>,
}

impl KeyUse {
    fn new(kek_id: String, counts: &BTreeMap<DekHolder, i64>) -> Self {
        Self {
            kek_id,
            counts: DekHolder::ALL
                .iter()
                .map(|h| (*h, counts.get(h).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Data keys of every kind under this master key.
    pub fn total(&self) -> i64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// Data keys of `holder` under this master key.
    pub fn count(&self, holder: DekHolder) -> i64 {
        self.counts
            .iter()
            .find(|(h, _)| *h == holder)
            .map_or(0, |(_, n)| *n)
    }

    /// `2 account(s), 1 signing key(s)` (the kinds it wraps; `nothing` when none).
    pub fn describe_counts(&self) -> String {
        let parts: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(h, n)| format!("{n} {}(s)", h.noun()))
            .collect();
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// How the stored data keys are spread over the keyring's master keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultStatus {
    /// The keyring's active key.
    pub active: String,
    /// Every key of the keyring with what it wraps, in keyring order.
    pub keys: Vec<KeyUse>,
    /// Key ids that wrap data keys but are missing from the keyring.
    pub missing: Vec<KeyUse>,
}

impl VaultStatus {
    /// Data keys not yet under the active key (what a re-wrap still has to do).
    pub fn pending_rewrap(&self) -> i64 {
        self.keys
            .iter()
            .chain(&self.missing)
            .filter(|key| key.kek_id != self.active)
            .map(KeyUse::total)
            .sum()
    }

    /// The keyring's keys that still wrap a data key of any kind.
    pub fn in_use(&self) -> impl Iterator<Item = &KeyUse> {
        self.keys.iter().filter(|key| key.total() > 0)
    }
}

/// Reads how many data keys of each kind each master key wraps.
pub async fn status(store: &Store, keyring: &Keyring) -> Result<VaultStatus, RotationError> {
    let mut by_kek: BTreeMap<String, BTreeMap<DekHolder, i64>> = BTreeMap::new();
    for count in store.count_sealed_deks_by_kek().await? {
        *by_kek
            .entry(count.kek_id)
            .or_default()
            .entry(count.holder)
            .or_default() += count.count;
    }
    let keys = keyring
        .key_ids()
        .map(|id| {
            let counts = by_kek.remove(id.as_str()).unwrap_or_default();
            KeyUse::new(id.to_string(), &counts)
        })
        .collect();
    Ok(VaultStatus {
        active: keyring.active_id().to_string(),
        keys,
        missing: by_kek
            .into_iter()
            .map(|(id, counts)| KeyUse::new(id, &counts))
            .collect(),
    })
}

/// Refuses a keyring that lacks a key the database uses, naming the missing key ids. Run at
/// start, and before a reloaded keyring replaces the one in use, before anything is written
/// with the keyring.
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Data keys now wrapped under the active key by this run.
    pub rewrapped: u64,
    /// Of those, how many of each kind (kinds with none are left out).
    pub rewrapped_by_holder: BTreeMap<DekHolder, u64>,
    /// Rows that changed between read and write (deleted, or re-wrapped by another process);
    /// they are looked at again on the next pass.
    pub raced: u64,
    /// Data keys still under another key when the run gave up (0 when it finished).
    pub remaining: u64,
}

/// Re-wraps every data key of every kind that is not under the vault's active key, in batches
/// of `batch`, until a full pass finds none. Safe to run while the service serves and to
/// interrupt.
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
        for holder in DekHolder::ALL {
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .list_sealed_deks_not_under(holder, &active, after.as_deref(), batch)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                found += page.len() as u64;
                for record in &page {
                    if rewrap_one(store, vault, clock, record).await? {
                        report.rewrapped += 1;
                        *report.rewrapped_by_holder.entry(holder).or_default() += 1;
                    } else {
                        report.raced += 1;
                    }
                }
                tracing::info!(
                    rewrapped = report.rewrapped,
                    holder = holder.plural(),
                    "re-wrapping data keys"
                );
            }
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
    record: &SealedDek,
) -> Result<bool, RotationError> {
    let vault_error = |source| RotationError::Vault {
        holder: record.holder,
        id: record.id.clone(),
        source,
    };
    let subject = record.holder.vault_subject(&record.id);
    let wrapped = WrappedDek::from_bytes(record.wrapped_dek.clone()).map_err(vault_error)?;
    let Some(new) = vault.rewrap(&subject, &wrapped).map_err(vault_error)? else {
        return Ok(true);
    };
    Ok(store
        .replace_sealed_dek(record, new.as_bytes(), new.kek_id(), clock.now_ms())
        .await?)
}
