//! Everything sealed follows the master key: account secrets and ID-token signing keys alike
//! are counted, re-wrapped and kept from a keyring that lacks their key — at start, on the
//! periodic reload, and when a data key turns up under a key added moments ago. On SQLite and
//! (when `WXHUB_TEST_POSTGRES_URL` is set) PostgreSQL.

mod harness;

use std::path::Path;

use accounts::rotation::{self, RotationError};
use accounts::{AccountInput, ReloadError, VaultHandle, register_account};
use harness::{NOW, TestDb};
use store::accounts::{AccountKind, TokenMode};
use store::oidc::{SigningKey, SigningKeyStatus};
use store::sealed::DekHolder;
use testkit::TempDir;
use vault::{KeyId, Keyring, SecretString, Vault, VaultError, WrappedDek};
use wechat::ManualClock;

/// The field name the gateway seals private keys under.
const KEY_FIELD: &str = "oidc_signing_key";

fn key(id: &str) -> KeyId {
    KeyId::new(id).unwrap()
}

fn input(owner: &str, n: usize) -> AccountInput {
    AccountInput {
        owner_user_id: owner.to_owned(),
        appid: format!("wx{n:016x}"),
        name: "Sealed Test".to_owned(),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        appsecret: SecretString::new(format!("{n:032x}")),
        push_token: None,
        encoding_aes_key: None,
    }
}

/// A signing key row sealed as the gateway seals one: its own DEK, bound to its kid.
fn signing_key(vault: &Vault, kid: &str, status: SigningKeyStatus) -> SigningKey {
    let subject = DekHolder::SigningKey.vault_subject(kid);
    let (dek, wrapped) = vault.create_dek(&subject);
    SigningKey {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        dek_kek_id: wrapped.kek_id().to_owned(),
        private_key: dek.encrypt(&subject, KEY_FIELD, format!("private-{kid}").as_bytes()),
        wrapped_dek: wrapped.into_bytes(),
        public_jwk: "{}".to_owned(),
        status,
        created_at: NOW,
        retired_at: None,
    }
}

/// Opens every stored signing key with `vault`, as the gateway does.
async fn open_signing_keys(db: &TestDb, vault: &Vault) -> Result<Vec<String>, VaultError> {
    let mut opened = Vec::new();
    for stored in db.store.list_signing_keys().await.unwrap() {
        let subject = DekHolder::SigningKey.vault_subject(&stored.kid);
        let dek = vault.unwrap_dek(&subject, &WrappedDek::from_bytes(stored.wrapped_dek)?)?;
        let plain = dek.decrypt(&subject, KEY_FIELD, &stored.private_key)?;
        opened.push(String::from_utf8(plain.expose().to_vec()).unwrap());
    }
    opened.sort();
    Ok(opened)
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crate::harness::TestDb::sqlite().await;
                    crate::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::harness::TestDb::postgres().await else { return };
                    crate::$name(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

both_backends!(
    signing_keys_are_counted_and_rewrapped_with_account_secrets,
    a_key_wrapping_only_a_signing_key_cannot_be_dropped,
    reloaded_keyring_lacking_a_needed_key_is_refused_and_the_old_one_kept,
    a_data_key_under_a_key_the_file_just_gained_opens_without_waiting,
);

async fn signing_keys_are_counted_and_rewrapped_with_account_secrets(db: &TestDb) {
    let owner = db.owner().await;
    let old = Keyring::generate(key("old"));
    let old_vault = Vault::new(old.clone());
    let mut ids = Vec::new();
    for n in 0..3 {
        let account = register_account(&db.store, &old_vault, &input(&owner, n), NOW)
            .await
            .unwrap();
        ids.push(account.id);
    }
    let active = signing_key(&old_vault, "sk-active", SigningKeyStatus::Active);
    assert!(db.store.create_first_signing_key(&active).await.unwrap());
    let next = signing_key(&old_vault, "sk-next", SigningKeyStatus::Next);
    db.store.publish_next_signing_key(&next).await.unwrap();

    let rotated = old.add_key(key("new")).unwrap();
    let before = rotation::status(&db.store, &rotated).await.unwrap();
    assert_eq!(before.keys[0].kek_id, "old");
    assert_eq!(before.keys[0].count(DekHolder::AccountSecrets), 3);
    assert_eq!(before.keys[0].count(DekHolder::SigningKey), 2);
    assert_eq!(before.keys[1].total(), 0);
    assert_eq!(before.pending_rewrap(), 5);

    let clock = ManualClock::new(NOW);
    // Batches of 2, so each kind spans pages.
    let report = rotation::rewrap_all(&db.store, &Vault::new(rotated.clone()), &clock, 2)
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 5);
    assert_eq!(
        report.rewrapped_by_holder.into_iter().collect::<Vec<_>>(),
        [(DekHolder::AccountSecrets, 3), (DekHolder::SigningKey, 2)]
    );
    let after = rotation::status(&db.store, &rotated).await.unwrap();
    assert_eq!(after.pending_rewrap(), 0);
    assert_eq!(after.keys[1].count(DekHolder::SigningKey), 2);

    // The old key can go, and everything opens without it; a leaked old key opens nothing.
    let in_use: Vec<KeyId> = after.in_use().map(|k| key(&k.kek_id)).collect();
    let only_new = Vault::new(rotated.remove_key(&key("old"), &in_use).unwrap());
    assert_eq!(
        open_signing_keys(db, &only_new).await.unwrap(),
        ["private-sk-active", "private-sk-next"]
    );
    for id in &ids {
        accounts::read_secrets(&db.store, &only_new, id)
            .await
            .unwrap();
    }
    assert!(matches!(
        open_signing_keys(db, &old_vault).await,
        Err(VaultError::UnknownKey { .. })
    ));
}

async fn a_key_wrapping_only_a_signing_key_cannot_be_dropped(db: &TestDb) {
    let owner = db.owner().await;
    let both = Keyring::generate(key("old")).add_key(key("new")).unwrap();
    let old_vault = Vault::new(both.with_active(&key("old")).unwrap());
    register_account(&db.store, &Vault::new(both.clone()), &input(&owner, 1), NOW)
        .await
        .unwrap();
    db.store
        .create_first_signing_key(&signing_key(&old_vault, "sk", SigningKeyStatus::Active))
        .await
        .unwrap();

    let status = rotation::status(&db.store, &both).await.unwrap();
    let old = &status.keys[0];
    assert_eq!(
        (
            old.count(DekHolder::AccountSecrets),
            old.count(DekHolder::SigningKey)
        ),
        (0, 1)
    );
    assert_eq!(old.describe_counts(), "1 signing key(s)");
    let in_use: Vec<KeyId> = status.in_use().map(|k| key(&k.kek_id)).collect();
    assert!(matches!(
        both.remove_key(&key("old"), &in_use),
        Err(VaultError::KeyInUse { .. })
    ));
    // A keyring without the old key is refused at start, naming what it wraps.
    let err = rotation::check_keyring_matches(&db.store, &Keyring::generate(key("new")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("`old` (1 signing key(s))"),
        "{err}"
    );
}

async fn reloaded_keyring_lacking_a_needed_key_is_refused_and_the_old_one_kept(db: &TestDb) {
    let dir = TempDir::new();
    let path = dir.path().join("keyring.toml");
    let k1 = Keyring::generate(key("k1"));
    k1.save(&path).unwrap();
    let handle = VaultHandle::watching(Vault::new(Keyring::load(&path).unwrap()), path.clone());
    let owner = db.owner().await;
    let account = register_account(&db.store, &handle.current(), &input(&owner, 1), NOW)
        .await
        .unwrap();
    let sealed_key = signing_key(&handle.current(), "sk", SigningKeyStatus::Active);
    db.store
        .create_first_signing_key(&sealed_key)
        .await
        .unwrap();
    assert!(!handle.reload_if_changed(&db.store).await.unwrap());

    // A keyring that lacks k1 — a stranger's, or one edited too early — is refused, by name.
    Keyring::generate(key("stranger")).save(&path).unwrap();
    let err = handle.reload_if_changed(&db.store).await.unwrap_err();
    assert!(
        matches!(&err, ReloadError::Check(RotationError::MissingKeys { missing }) if missing[0].kek_id == "k1"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("`k1` (1 account(s), 1 signing key(s))"),
        "{err}"
    );
    assert_eq!(handle.current().keyring().active_id().as_str(), "k1");
    handle.read_secrets(&db.store, &account.id).await.unwrap();
    // The early path only adds its key: k1 stays, and stays active; the file stays refused.
    let merged = handle.for_kek("stranger");
    assert!(merged.keyring().contains("stranger") && merged.keyring().contains("k1"));
    assert_eq!(merged.keyring().active_id().as_str(), "k1");
    assert!(handle.reload_if_changed(&db.store).await.is_err());
    handle.read_secrets(&db.store, &account.id).await.unwrap();

    // The rotated keyring (k1 kept, k2 added) is taken.
    k1.add_key(key("k2")).unwrap().save(&path).unwrap();
    assert!(handle.reload_if_changed(&db.store).await.unwrap());
    let vault = handle.current();
    assert_eq!(vault.keyring().active_id().as_str(), "k2");
    assert!(vault.keyring().contains("k1"));
    assert!(
        !vault.keyring().contains("stranger"),
        "the checked file replaces it all"
    );

    // Once nothing is under k1, a keyring without it is taken too.
    let clock = ManualClock::new(NOW);
    rotation::rewrap_all(&db.store, &vault, &clock, 10)
        .await
        .unwrap();
    let only_k2 = vault.keyring().remove_key(&key("k1"), &[]).unwrap();
    only_k2.save(&path).unwrap();
    assert!(handle.reload_if_changed(&db.store).await.unwrap());
    assert!(!handle.current().keyring().contains("k1"));
    handle.read_secrets(&db.store, &account.id).await.unwrap();
    assert_eq!(
        open_signing_keys(db, &handle.current()).await.unwrap(),
        ["private-sk"]
    );
}

/// `wxhub vault rotate` on this host writes the keyring file and wraps under the new key at
/// once; a server on the same file must not fail until its periodic reload.
async fn a_data_key_under_a_key_the_file_just_gained_opens_without_waiting(db: &TestDb) {
    let dir = TempDir::new();
    let path = dir.path().join("keyring.toml");
    let k1 = Keyring::generate(key("k1"));
    k1.save(&path).unwrap();
    let server = VaultHandle::watching(Vault::new(k1.clone()), path.clone());
    let owner = db.owner().await;

    let rotated = rotate_file(&path, &k1, "k2");
    let cli = Vault::new(rotated);
    let account = register_account(&db.store, &cli, &input(&owner, 2), NOW)
        .await
        .unwrap();
    db.store
        .create_first_signing_key(&signing_key(&cli, "sk", SigningKeyStatus::Active))
        .await
        .unwrap();

    // No periodic reload has run: the server reads the file the moment it meets k2.
    let secrets = server.read_secrets(&db.store, &account.id).await.unwrap();
    assert_eq!(secrets.appsecret.expose(), format!("{:032x}", 2));
    let stored = db.store.active_signing_key().await.unwrap().unwrap();
    let vault = server.for_wrapped_dek(&stored.wrapped_dek);
    assert_eq!(open_signing_keys(db, &vault).await.unwrap(), ["private-sk"]);
    // Keys were only added: the active key moves with the checked, periodic reload.
    assert_eq!(vault.keyring().active_id().as_str(), "k1");
    assert!(server.reload_if_changed(&db.store).await.unwrap());
    assert_eq!(server.current().keyring().active_id().as_str(), "k2");
    // A key the file does not have either still fails, without a reload.
    assert!(!server.for_kek("k9").keyring().contains("k9"));

    // The same when the file dropped a key already: k3 added, k2 re-wrapped away and dropped
    // before this server came round to reload.
    let rotated = rotate_file(&path, server.current().keyring(), "k3");
    let cli = Vault::new(rotated.clone());
    rotation::rewrap_all(&db.store, &cli, &ManualClock::new(NOW), 10)
        .await
        .unwrap();
    let k3_only = rotated.remove_key(&key("k1"), &[]).unwrap();
    let k3_only = k3_only.remove_key(&key("k2"), &[]).unwrap();
    k3_only.save(&path).unwrap();
    server.read_secrets(&db.store, &account.id).await.unwrap();
    assert_eq!(
        open_signing_keys(db, &server.current()).await.unwrap(),
        ["private-sk"]
    );
    assert!(server.reload_if_changed(&db.store).await.unwrap());
    let ids: Vec<String> = server
        .current()
        .keyring()
        .key_ids()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(ids, ["k3"]);
}

/// Writes `keyring` plus a new active key `id` to `path`, as `wxhub vault rotate` does.
fn rotate_file(path: &Path, keyring: &Keyring, id: &str) -> Keyring {
    let rotated = keyring.add_key(key(id)).unwrap();
    rotated.save(path).unwrap();
    rotated
}
