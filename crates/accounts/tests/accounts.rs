//! Registering accounts, reading their secrets and rotating master keys, on SQLite and (when
//! `WXHUB_TEST_POSTGRES_URL` is set) PostgreSQL. Each case runs as `sqlite::<name>` and
//! `postgres::<name>`.

mod harness;

use std::sync::Arc;

use accounts::rotation::{self, RotationError};
use accounts::{AccountError, AccountInput, register_account};
use harness::{NOW, TestDb};
use store::accounts::{AccountKind, TokenMode};
use vault::{KeyId, Keyring, SecretString, Vault};
use wechat::ManualClock;

const SECRET: &str = testkit::canary::APP_SECRET;
const PUSH_TOKEN: &str = testkit::canary::PUSH_TOKEN;
const AES_KEY: &str = testkit::canary::ENCODING_AES_KEY;

fn key(id: &str) -> KeyId {
    KeyId::new(id).unwrap()
}

fn input(owner: &str, appid: &str, secret: &str) -> AccountInput {
    AccountInput {
        owner_user_id: owner.to_owned(),
        appid: appid.to_owned(),
        name: "Test Account".to_owned(),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        appsecret: SecretString::new(secret.to_owned()),
        push_token: Some(SecretString::new(PUSH_TOKEN.to_owned())),
        encoding_aes_key: Some(SecretString::new(AES_KEY.to_owned())),
    }
}

/// `wx` + 16 hex digits from a number.
fn appid(n: usize) -> String {
    format!("wx{n:016x}")
}

/// Each keyring key with how many data keys (of every kind) it wraps.
fn totals(status: &rotation::VaultStatus) -> Vec<(String, i64)> {
    status
        .keys
        .iter()
        .map(|k| (k.kek_id.clone(), k.total()))
        .collect()
}

/// A distinct 32-hex-digit secret per number.
fn secret(n: usize) -> String {
    format!("{n:032x}")
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
    registered_secrets_read_back,
    appsecret_is_nowhere_in_the_stored_bytes,
    invalid_input_is_refused_with_a_fix_and_nothing_is_stored,
    duplicate_appid_is_refused,
    rewrap_moves_every_data_key_and_the_old_key_can_go,
    rotation_under_concurrent_reads_and_writes_loses_nothing,
    keyring_missing_a_used_key_is_refused_by_name,
    deleting_an_account_shreds_its_data_key,
);

async fn registered_secrets_read_back(db: &TestDb) {
    let owner = db.owner().await;
    let vault = Vault::new(Keyring::generate(key("k1")));
    let account = register_account(&db.store, &vault, &input(&owner, &appid(1), SECRET), NOW)
        .await
        .unwrap();
    let secrets = accounts::read_secrets(&db.store, &vault, &account.id)
        .await
        .unwrap();
    assert_eq!(secrets.appsecret.expose(), SECRET);
    assert_eq!(secrets.push_token.unwrap().expose(), PUSH_TOKEN);
    assert_eq!(secrets.encoding_aes_key.unwrap().expose(), AES_KEY);
    // Another keyring cannot read them.
    let other = Vault::new(Keyring::generate(key("k1")));
    assert!(
        accounts::read_secrets(&db.store, &other, &account.id)
            .await
            .is_err()
    );
}

async fn appsecret_is_nowhere_in_the_stored_bytes(db: &TestDb) {
    let owner = db.owner().await;
    let vault = Vault::new(Keyring::generate(key("k1")));
    // A distinctive secret, looked for as text and in the encodings a leak would take.
    let secret = "5ec2e7a5ec2e7a5ec2e7a5ec2e7a5ec2";
    register_account(&db.store, &vault, &input(&owner, &appid(7), secret), NOW)
        .await
        .unwrap();
    let bytes = db.all_bytes().await;
    assert!(
        bytes.windows(12).any(|w| w == b"wx0000000000"),
        "the dump should hold the account's appid (is this the right database?)"
    );
    let hex_of_secret = hex::encode(secret.as_bytes());
    for needle in [
        secret.as_bytes(),
        &secret.as_bytes()[..16],
        hex_of_secret.as_bytes(),
        PUSH_TOKEN.as_bytes(),
        AES_KEY.as_bytes(),
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a secret was found in the stored bytes"
        );
    }
}

async fn invalid_input_is_refused_with_a_fix_and_nothing_is_stored(db: &TestDb) {
    let owner = db.owner().await;
    let vault = Vault::new(Keyring::generate(key("k1")));
    let cases: Vec<(AccountInput, &str)> = vec![
        (
            input(&owner, "wxNOTHEX0000000000", SECRET),
            "16 lowercase hex",
        ),
        (input(&owner, &appid(1), "short"), "32 hex digits"),
        (
            AccountInput {
                push_token: Some(SecretString::new("a b".to_owned())),
                ..input(&owner, &appid(1), SECRET)
            },
            "3 to 32 letters or digits",
        ),
        (
            AccountInput {
                encoding_aes_key: Some(SecretString::new("tooshort".to_owned())),
                ..input(&owner, &appid(1), SECRET)
            },
            "43 letters or digits",
        ),
        (
            AccountInput {
                name: "  ".to_owned(),
                ..input(&owner, &appid(1), SECRET)
            },
            "needs a name",
        ),
    ];
    for (bad, hint) in cases {
        match register_account(&db.store, &vault, &bad, NOW).await {
            Err(AccountError::Invalid(message)) => {
                assert!(message.contains(hint), "{message:?} should say {hint:?}");
                assert!(!message.contains(SECRET), "the message echoes the secret");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(db.store.count_accounts().await.unwrap(), 0);
}

async fn duplicate_appid_is_refused(db: &TestDb) {
    let owner = db.owner().await;
    let vault = Vault::new(Keyring::generate(key("k1")));
    register_account(&db.store, &vault, &input(&owner, &appid(3), SECRET), NOW)
        .await
        .unwrap();
    let again = register_account(&db.store, &vault, &input(&owner, &appid(3), SECRET), NOW).await;
    assert!(
        matches!(
            again,
            Err(AccountError::Store(store::StoreError::Duplicate { .. }))
        ),
        "{again:?}"
    );
    assert_eq!(db.store.count_accounts().await.unwrap(), 1);
}

async fn rewrap_moves_every_data_key_and_the_old_key_can_go(db: &TestDb) {
    let owner = db.owner().await;
    let old = Keyring::generate(key("old"));
    let vault = Vault::new(old.clone());
    let mut ids = Vec::new();
    for n in 0..25 {
        let account = register_account(
            &db.store,
            &vault,
            &input(&owner, &appid(n), &secret(n)),
            NOW,
        )
        .await
        .unwrap();
        ids.push(account.id);
    }
    let rotated = old.add_key(key("new")).unwrap();
    let before = rotation::status(&db.store, &rotated).await.unwrap();
    assert_eq!(before.pending_rewrap(), 25);

    let clock = ManualClock::new(NOW);
    // A small batch size so the run spans several pages.
    let report = rotation::rewrap_all(&db.store, &Vault::new(rotated.clone()), &clock, 7)
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 25);
    assert_eq!(report.remaining, 0);
    let after = rotation::status(&db.store, &rotated).await.unwrap();
    assert_eq!(totals(&after), [("old".into(), 0), ("new".into(), 25)]);

    // Dropping the old key is allowed now, and every secret still reads without it.
    let in_use: Vec<KeyId> = after.in_use().map(|k| key(&k.kek_id)).collect();
    let without_old = rotated.remove_key(&key("old"), &in_use).unwrap();
    let vault = Vault::new(without_old);
    for (n, id) in ids.iter().enumerate() {
        let secrets = accounts::read_secrets(&db.store, &vault, id).await.unwrap();
        assert_eq!(secrets.appsecret.expose(), secret(n));
    }
    // A second run has nothing to do.
    let again = rotation::rewrap_all(&db.store, &vault, &clock, 7)
        .await
        .unwrap();
    assert_eq!(again.rewrapped, 0);
}

async fn rotation_under_concurrent_reads_and_writes_loses_nothing(db: &TestDb) {
    let owner = db.owner().await;
    let old = Keyring::generate(key("old"));
    let rotated = old.add_key(key("new")).unwrap();
    let old_vault = Arc::new(Vault::new(old));
    let new_vault = Arc::new(Vault::new(rotated.clone()));
    let mut existing = Vec::new();
    for n in 0..60 {
        let account = register_account(
            &db.store,
            &old_vault,
            &input(&owner, &appid(n), &secret(n)),
            NOW,
        )
        .await
        .unwrap();
        existing.push((account.id, secret(n)));
    }
    let existing = Arc::new(existing);

    // Writers: a replica that still runs the old keyring keeps registering accounts.
    let writer = {
        let (store, vault, owner) = (db.store.clone(), old_vault.clone(), owner.clone());
        tokio::spawn(async move {
            let mut created = Vec::new();
            for n in 100..140 {
                let account =
                    register_account(&store, &vault, &input(&owner, &appid(n), &secret(n)), NOW)
                        .await
                        .unwrap();
                created.push((account.id, secret(n)));
            }
            created
        })
    };
    // Readers: a replica with the new keyring (holding both keys) reads secrets throughout.
    let reader = {
        let (store, vault, existing) = (db.store.clone(), new_vault.clone(), existing.clone());
        tokio::spawn(async move {
            for _ in 0..3 {
                for (id, expected) in existing.iter() {
                    let secrets = accounts::read_secrets(&store, &vault, id).await.unwrap();
                    assert_eq!(secrets.appsecret.expose(), expected.as_str());
                }
            }
        })
    };
    let clock = ManualClock::new(NOW);
    let first = rotation::rewrap_all(&db.store, &new_vault, &clock, 10)
        .await
        .unwrap();
    let created = writer.await.unwrap();
    reader.await.unwrap();
    // Accounts created with the old keyring after the first run are caught by the next.
    let second = rotation::rewrap_all(&db.store, &new_vault, &clock, 10)
        .await
        .unwrap();
    assert_eq!(first.rewrapped + second.rewrapped, 100);
    assert_eq!(
        rotation::status(&db.store, &rotated)
            .await
            .unwrap()
            .pending_rewrap(),
        0
    );
    let only_new = Vault::new(rotated.remove_key(&key("old"), &[key("new")]).unwrap());
    for (id, expected) in existing.iter().chain(created.iter()) {
        let secrets = accounts::read_secrets(&db.store, &only_new, id)
            .await
            .unwrap();
        assert_eq!(secrets.appsecret.expose(), expected.as_str());
    }
}

async fn keyring_missing_a_used_key_is_refused_by_name(db: &TestDb) {
    let owner = db.owner().await;
    let vault = Vault::new(Keyring::generate(key("prod-2025")));
    register_account(&db.store, &vault, &input(&owner, &appid(9), SECRET), NOW)
        .await
        .unwrap();
    let stranger = Keyring::generate(key("other"));
    let err = rotation::check_keyring_matches(&db.store, &stranger)
        .await
        .unwrap_err();
    assert!(matches!(err, RotationError::MissingKeys { .. }));
    assert!(
        err.to_string().contains("`prod-2025` (1 account(s))"),
        "{err}"
    );
    // A re-wrap with that keyring refuses before writing.
    let clock = ManualClock::new(NOW);
    assert!(
        rotation::rewrap_all(&db.store, &Vault::new(stranger), &clock, 10)
            .await
            .is_err()
    );
    let status = rotation::status(&db.store, vault.keyring()).await.unwrap();
    assert_eq!(totals(&status), [("prod-2025".into(), 1)]);
}

async fn deleting_an_account_shreds_its_data_key(db: &TestDb) {
    let owner = db.owner().await;
    let vault = Vault::new(Keyring::generate(key("k1")));
    let account = register_account(&db.store, &vault, &input(&owner, &appid(4), SECRET), NOW)
        .await
        .unwrap();
    db.store
        .delete_account(
            &account.id,
            NOW,
            &store::audit::AuditRecord::new("test", "account.delete"),
        )
        .await
        .unwrap();
    assert!(
        db.store
            .load_account_secrets(&account.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        rotation::status(&db.store, vault.keyring())
            .await
            .unwrap()
            .keys
            .iter()
            .all(|k| k.total() == 0)
    );
}
