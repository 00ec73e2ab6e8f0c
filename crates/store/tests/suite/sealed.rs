use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Executor};
use store::sealed::{DekCount, DekHolder, SealedDek};
use store::{DatabaseKind, Store};
use testkit::TestDatabase;
use vault::{KeyId, Keyring, Vault, WrappedDek};

use crate::harness::{NOW, TestDb, new_account, owner, secrets};
use store::oidc::{SigningKey, SigningKeyStatus};

/// A signing key row with stand-in vault output under `kek_id`.
fn signing_key(kid: &str, kek_id: &str, status: SigningKeyStatus) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        wrapped_dek: format!("wrapped-dek-of-{kid}-under-{kek_id}").into_bytes(),
        dek_kek_id: kek_id.to_owned(),
        private_key: format!("encrypted-{kid}").into_bytes(),
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        status,
        created_at: NOW,
        retired_at: None,
    }
}

fn count(holder: DekHolder, kek_id: &str, count: i64) -> DekCount {
    DekCount {
        holder,
        kek_id: kek_id.to_owned(),
        count,
    }
}

/// Every holder's DEKs under `kek_id`, read page by page.
async fn all_not_under(store: &Store, holder: DekHolder, kek_id: &str) -> Vec<SealedDek> {
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_sealed_deks_not_under(holder, kek_id, after.as_deref(), 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        listed.extend(page);
    }
    listed
}

pub async fn sealed_deks_are_counted_per_holder_and_kek(db: TestDb) {
    assert_eq!(db.store.count_sealed_deks_by_kek().await.unwrap(), vec![]);
    let owner = owner(&db.store).await;
    for (i, kek) in ["kek-1", "kek-2", "kek-1"].into_iter().enumerate() {
        let mut new = new_account(&owner, &format!("wx-count-{i}"));
        new.secrets = secrets(kek);
        db.store.create_account(&new, NOW).await.unwrap();
    }
    assert!(
        db.store
            .create_first_signing_key(&signing_key("a", "kek-2", SigningKeyStatus::Active))
            .await
            .unwrap()
    );
    db.store
        .publish_next_signing_key(&signing_key("b", "kek-3", SigningKeyStatus::Next))
        .await
        .unwrap();
    assert_eq!(
        db.store.count_sealed_deks_by_kek().await.unwrap(),
        vec![
            count(DekHolder::AccountSecrets, "kek-1", 2),
            count(DekHolder::AccountSecrets, "kek-2", 1),
            count(DekHolder::SigningKey, "kek-2", 1),
            count(DekHolder::SigningKey, "kek-3", 1),
        ]
    );
}

pub async fn every_holder_lists_other_keks_and_replaces_only_unchanged_rows(db: TestDb) {
    let owner = owner(&db.store).await;
    let mut old_accounts = Vec::new();
    for i in 0..3 {
        let mut new = new_account(&owner, &format!("wx-sealed-{i}"));
        new.secrets = secrets(if i == 1 { "kek-2" } else { "kek-1" });
        if i != 1 {
            old_accounts.push(new.id.clone());
        }
        db.store.create_account(&new, NOW).await.unwrap();
    }
    old_accounts.sort();
    db.store
        .create_first_signing_key(&signing_key("key-a", "kek-1", SigningKeyStatus::Active))
        .await
        .unwrap();
    db.store
        .publish_next_signing_key(&signing_key("key-b", "kek-1", SigningKeyStatus::Next))
        .await
        .unwrap();

    let accounts = all_not_under(&db.store, DekHolder::AccountSecrets, "kek-2").await;
    assert_eq!(
        accounts.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        old_accounts
    );
    let keys = all_not_under(&db.store, DekHolder::SigningKey, "kek-2").await;
    assert_eq!(
        keys.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["key-a", "key-b"]
    );
    assert!(
        keys.iter()
            .chain(&accounts)
            .all(|r| r.dek_kek_id == "kek-1")
    );
    assert_eq!(keys[0].wrapped_dek, b"wrapped-dek-of-key-a-under-kek-1");

    for old in [&accounts[0], &keys[0]] {
        assert!(
            db.store
                .replace_sealed_dek(old, b"rewrapped-under-kek-2", "kek-2", NOW + 1)
                .await
                .unwrap(),
            "{old:?}"
        );
        // A second writer holding the old record loses: the row changed under it.
        assert!(
            !db.store
                .replace_sealed_dek(old, b"other-rewrap", "kek-2", NOW + 2)
                .await
                .unwrap()
        );
    }
    // Matching KEK id but different bytes also loses.
    let tampered = SealedDek {
        wrapped_dek: b"not-what-is-stored".to_vec(),
        ..keys[1].clone()
    };
    assert!(
        !db.store
            .replace_sealed_dek(&tampered, b"x", "kek-2", NOW)
            .await
            .unwrap()
    );

    let secrets = db
        .store
        .load_account_secrets(&accounts[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secrets.wrapped_dek, b"rewrapped-under-kek-2");
    assert_eq!(secrets.dek_kek_id, "kek-2");
    let active = db.store.active_signing_key().await.unwrap().unwrap();
    assert_eq!(active.wrapped_dek, b"rewrapped-under-kek-2");
    assert_eq!(active.dek_kek_id, "kek-2");
    assert_eq!(active.private_key, b"encrypted-key-a", "only the DEK moves");
    let next = db.store.next_signing_key().await.unwrap().unwrap();
    assert_eq!(next.dek_kek_id, "kek-1");
    assert_eq!(
        all_not_under(&db.store, DekHolder::SigningKey, "kek-2")
            .await
            .len(),
        1
    );
}

/// Before migration 6 a signing key's private_key column held its wrapped DEK and its
/// ciphertext in one blob: `u16` length of the wrapped DEK, the wrapped DEK, the ciphertext.
pub async fn migration_6_splits_signing_keys_sealed_in_one_blob(db: TestDb) {
    let fresh = match db.kind() {
        DatabaseKind::Sqlite => TestDatabase::sqlite(),
        DatabaseKind::Postgres => {
            TestDatabase::postgres_on(&testkit::postgres_admin_url().expect("PostgreSQL URL")).await
        }
    };
    let dialect = match db.kind() {
        DatabaseKind::Sqlite => "sqlite",
        DatabaseKind::Postgres => "postgres",
    };
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(dialect);
    let before_6 = Migrator::new(migrations.as_path()).await.unwrap();

    // Two keys sealed as the gateway sealed them, under master keys with ids of two lengths.
    let vault = Vault::new(
        Keyring::generate(KeyId::new("k1").unwrap())
            .add_key(KeyId::new("master-key-2026-with-a-long-id").unwrap())
            .unwrap(),
    );
    let old_vault = Vault::new(
        vault
            .keyring()
            .with_active(&KeyId::new("k1").unwrap())
            .unwrap(),
    );
    let mut rows = Vec::new();
    for (kid, vault, status) in [
        ("old-key", &old_vault, "retired"),
        ("new-key", &vault, "active"),
    ] {
        let subject = DekHolder::SigningKey.vault_subject(kid);
        let (dek, wrapped) = vault.create_dek(&subject);
        let ciphertext = dek.encrypt(&subject, "oidc_signing_key", format!("d-{kid}").as_bytes());
        let mut blob = (wrapped.as_bytes().len() as u16).to_be_bytes().to_vec();
        blob.extend_from_slice(wrapped.as_bytes());
        blob.extend_from_slice(&ciphertext);
        rows.push((kid, status, blob, wrapped, ciphertext));
    }
    let insert = |kid: &str, status: &str, blob: &[u8]| {
        let bytes: String = blob.iter().map(|b| format!("{b:02x}")).collect();
        let value = match dialect {
            "sqlite" => format!("X'{bytes}'"),
            _ => format!("'\\x{bytes}'::bytea"),
        };
        format!(
            "INSERT INTO oidc_signing_keys (kid, algorithm, private_key, public_jwk, status, \
             created_at, retired_at) VALUES ('{kid}', 'ES256', {value}, '{{}}', '{status}', 1, \
             {retired})",
            retired = if status == "retired" { "2" } else { "NULL" }
        )
    };
    match db.kind() {
        DatabaseKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", fresh.url()))
                .await
                .unwrap();
            before_6.run_to(5, &pool).await.unwrap();
            for (kid, status, blob, ..) in &rows {
                pool.execute(AssertSqlSafe(insert(kid, status, blob)))
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        DatabaseKind::Postgres => {
            let pool = sqlx::PgPool::connect(fresh.url()).await.unwrap();
            before_6.run_to(5, &pool).await.unwrap();
            for (kid, status, blob, ..) in &rows {
                pool.execute(AssertSqlSafe(insert(kid, status, blob)))
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }

    let store = Store::connect(fresh.url()).await.unwrap();
    let keys = store.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    for (kid, _, _, wrapped, ciphertext) in &rows {
        let key = keys.iter().find(|k| k.kid == *kid).unwrap();
        assert_eq!(key.wrapped_dek, wrapped.as_bytes(), "{kid}");
        assert_eq!(key.dek_kek_id, wrapped.kek_id(), "{kid}");
        assert_eq!(&key.private_key, ciphertext, "{kid}");
        // And it still opens.
        let subject = DekHolder::SigningKey.vault_subject(kid);
        let dek = vault
            .unwrap_dek(
                &subject,
                &WrappedDek::from_bytes(key.wrapped_dek.clone()).unwrap(),
            )
            .unwrap();
        let plain = dek
            .decrypt(&subject, "oidc_signing_key", &key.private_key)
            .unwrap();
        assert_eq!(plain.expose(), format!("d-{kid}").as_bytes());
    }
    assert_eq!(
        store.count_sealed_deks_by_kek().await.unwrap(),
        vec![
            count(DekHolder::SigningKey, "k1", 1),
            count(DekHolder::SigningKey, "master-key-2026-with-a-long-id", 1),
        ]
    );
    // The one-key-per-live-status index survived the rebuild.
    store
        .publish_next_signing_key(&signing_key("n1", "k1", SigningKeyStatus::Next))
        .await
        .unwrap();
    assert!(matches!(
        store
            .publish_next_signing_key(&signing_key("n2", "k1", SigningKeyStatus::Next))
            .await,
        Err(store::StoreError::Duplicate { .. })
    ));
    store.close().await;
    fresh.finish().await;
}
