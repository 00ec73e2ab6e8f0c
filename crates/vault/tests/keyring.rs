//! Keyring loading and validation, development mode, saving, and rotation helpers.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{TempDir, key_id};
use vault::{DEV_KEY_ID, KeyId, Keyring, KeyringProblem, Vault, VaultError};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // 32 bytes

fn problem_of(content: &str) -> KeyringProblem {
    match Keyring::from_toml_str(content, "test.toml") {
        Err(VaultError::Keyring { origin, problem }) => {
            assert_eq!(origin, "test.toml");
            problem
        }
        other => panic!("expected a keyring error, got {other:?}"),
    }
}

#[test]
fn valid_keyring_parses_with_active_key() {
    let content = format!(
        "active = \"k2\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n[[keys]]\nid = \"k2\"\nkey = \"{KEY_B}\"\n"
    );
    let keyring = Keyring::from_toml_str(&content, "test.toml").expect("valid");
    assert_eq!(keyring.active_id().as_str(), "k2");
    let ids: Vec<&str> = keyring.key_ids().map(KeyId::as_str).collect();
    assert_eq!(ids, ["k1", "k2"]);
    let debug = format!("{keyring:?}");
    assert!(!debug.contains(KEY_A) && !debug.contains(KEY_B), "{debug}");
}

#[test]
fn bad_base64_names_the_key() {
    let problem = problem_of("active = \"k1\"\n[[keys]]\nid = \"k2\"\nkey = \"not*base64\"\n");
    assert_eq!(problem, KeyringProblem::KeyNotBase64 { id: "k2".into() });
}

#[test]
fn key_of_wrong_length_names_the_key_and_length() {
    let short = BASE64.encode([7u8; 16]);
    let problem = problem_of(&format!(
        "active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{short}\"\n"
    ));
    assert_eq!(
        problem,
        KeyringProblem::KeyWrongLength {
            id: "k1".into(),
            len: 16
        }
    );
}

#[test]
fn duplicate_id_is_rejected() {
    let problem = problem_of(&format!(
        "active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_B}\"\n"
    ));
    assert_eq!(problem, KeyringProblem::DuplicateId { id: "k1".into() });
}

#[test]
fn missing_active_is_rejected() {
    let problem = problem_of(&format!("[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n"));
    assert_eq!(problem, KeyringProblem::NoActiveKey);
}

#[test]
fn active_id_not_present_is_rejected() {
    let problem = problem_of(&format!(
        "active = \"k3\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n"
    ));
    assert_eq!(
        problem,
        KeyringProblem::ActiveKeyMissing { id: "k3".into() }
    );
}

#[test]
fn no_keys_is_rejected() {
    assert_eq!(problem_of("active = \"k1\"\n"), KeyringProblem::NoKeys);
    assert_eq!(
        problem_of("active = \"k1\"\nkeys = []\n"),
        KeyringProblem::NoKeys
    );
}

#[test]
fn unknown_fields_are_rejected_at_both_levels() {
    let problem = problem_of(&format!(
        "active = \"k1\"\nactiv = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n"
    ));
    assert!(
        matches!(&problem, KeyringProblem::UnknownField { field, location } if field == "activ" && location == "at top level"),
        "{problem:?}"
    );
    let problem = problem_of(&format!(
        "active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\ncreated = 1\n"
    ));
    assert!(
        matches!(&problem, KeyringProblem::UnknownField { field, location } if field == "created" && location.contains("entry 1")),
        "{problem:?}"
    );
}

#[test]
fn invalid_key_id_is_rejected() {
    let problem = problem_of(&format!(
        "active = \"k 1\"\n[[keys]]\nid = \"k 1\"\nkey = \"{KEY_A}\"\n"
    ));
    assert_eq!(
        problem,
        KeyringProblem::InvalidKeyId {
            id: "k 1".into(),
            entry: 1
        }
    );
}

#[test]
fn wrong_types_and_missing_fields_are_named() {
    assert!(matches!(
        problem_of(&format!(
            "active = 1\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n"
        )),
        KeyringProblem::WrongType {
            field: "active",
            ..
        }
    ));
    assert!(matches!(
        problem_of("active = \"k1\"\n[[keys]]\nid = \"k1\"\n"),
        KeyringProblem::MissingField { field: "key", .. }
    ));
    assert!(matches!(
        problem_of(&format!("active = \"k1\"\nkeys = \"{KEY_A}\"\n")),
        KeyringProblem::WrongType { field: "keys", .. }
    ));
}

#[test]
fn syntax_error_reports_line_without_echoing_key_material() {
    let content = format!("active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\n");
    let err = Keyring::from_toml_str(&content, "test.toml").expect_err("unterminated string");
    let msg = err.to_string();
    assert!(msg.contains("test.toml") && msg.contains("line 4"), "{msg}");
    assert!(!msg.contains(&KEY_A[..12]), "{msg}");
}

#[test]
fn errors_never_contain_key_material() {
    let cases = [
        format!("active = \"k9\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\n"),
        format!("active = \"k1\"\nkeys = \"{KEY_A}\"\n"),
        format!("active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}A\"\n"),
        format!("active = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{KEY_A}\"\nx = \"{KEY_A}\"\n"),
    ];
    for content in cases {
        let err = Keyring::from_toml_str(&content, "test.toml").expect_err("invalid");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&KEY_A[..12]), "{shown}");
    }
}

#[test]
fn env_value_is_base64_of_the_toml() {
    let keyring = Keyring::generate(key_id("env-1"));
    let value = keyring.to_env_value();
    let parsed = Keyring::from_env_value(value.expose()).expect("round trip");
    assert_eq!(parsed.active_id().as_str(), "env-1");
    // Same key material: a DEK wrapped by one unwraps with the other.
    let (_, wrapped) = Vault::new(keyring).create_dek("a");
    assert!(Vault::new(parsed).unwrap_dek("a", &wrapped).is_ok());

    match Keyring::from_env_value("%%%") {
        Err(VaultError::Keyring { origin, problem }) => {
            assert!(origin.contains("WXHUB_KEYRING"), "{origin}");
            assert_eq!(problem, KeyringProblem::EnvNotBase64);
        }
        other => panic!("{other:?}"),
    }
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn dev_keyring_is_created_with_mode_0600_and_reloaded() {
    let dir = TempDir::new("dev");
    let path = dir.join("sub/keyring.toml");
    let created = Keyring::load_or_create_dev(&path).expect("create");
    assert_eq!(created.active_id().as_str(), DEV_KEY_ID);
    assert_eq!(mode_of(&path), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary file left behind: {leftovers:?}"
    );

    let (_, wrapped) = Vault::new(created).create_dek("a");
    let reloaded = Keyring::load_or_create_dev(&path).expect("reload");
    assert!(
        Vault::new(reloaded).unwrap_dek("a", &wrapped).is_ok(),
        "the second start must reuse the first key, not make a new one"
    );
}

#[cfg(unix)]
#[test]
fn keyring_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perm");
    let path = dir.join("keyring.toml");
    Keyring::generate(key_id("k1")).save(&path).expect("save");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    match Keyring::load(&path) {
        Err(VaultError::InsecurePermissions { mode, .. }) => assert_eq!(mode, 0o644),
        other => panic!("{other:?}"),
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Keyring::load(&path).is_ok());
}

#[cfg(unix)]
#[test]
fn save_replaces_atomically_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("save");
    let path = dir.join("keyring.toml");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let keyring = Keyring::generate(key_id("k1"))
        .add_key(key_id("k2"))
        .expect("add");
    keyring.save(&path).expect("save");
    assert_eq!(mode_of(&path), 0o600);
    let loaded = Keyring::load(&path).expect("load");
    assert_eq!(loaded.active_id().as_str(), "k2");
    assert_eq!(loaded.key_ids().count(), 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn create_new_writes_mode_0600_and_never_replaces_an_existing_keyring() {
    let dir = TempDir::new("init");
    let path = dir.join("keys/keyring.toml");
    let first = Keyring::generate(key_id("prod-1"));
    first.create_new(&path).expect("create");
    assert_eq!(mode_of(&path), 0o600);
    let before = std::fs::read(&path).unwrap();

    let err = Keyring::generate(key_id("prod-2"))
        .create_new(&path)
        .expect_err("a second init must be refused");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the existing keyring changed"
    );
    assert_eq!(Keyring::load(&path).unwrap().active_id().as_str(), "prod-1");
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.join("nope.toml");
    match Keyring::load(&path) {
        Err(err @ VaultError::Io { .. }) => assert!(err.to_string().contains("nope.toml")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn add_key_makes_the_new_key_active_and_keeps_old_ones() {
    let k1 = Keyring::generate(key_id("k1"));
    let k2 = k1.add_key(key_id("k2")).expect("add");
    assert_eq!(k2.active_id().as_str(), "k2");
    assert!(k2.contains("k1") && k2.contains("k2"));
    assert_eq!(k1.active_id().as_str(), "k1", "the original is unchanged");
    assert!(matches!(
        k2.add_key(key_id("k1")),
        Err(VaultError::DuplicateKey { id }) if id == "k1"
    ));
}

#[test]
fn key_id_validation() {
    assert!(KeyId::new("2026-11-a").is_ok());
    assert!(matches!(
        KeyId::new(""),
        Err(VaultError::InvalidKeyId { .. })
    ));
    assert!(matches!(
        KeyId::new("a".repeat(33)),
        Err(VaultError::InvalidKeyId { .. })
    ));
    assert!(matches!(
        "k.1".parse::<KeyId>(),
        Err(VaultError::InvalidKeyId { .. })
    ));
}

#[test]
fn rotation_rewraps_deks_which_still_decrypt_old_fields() {
    let old = Vault::new(Keyring::generate(key_id("k1")));
    let (dek, wrapped) = old.create_dek("acct");
    let ct = dek.encrypt("acct", "appsecret", b"the-secret");

    let rotated = Vault::new(old.keyring().add_key(key_id("k2")).expect("add"));
    let rewrapped = rotated
        .rewrap("acct", &wrapped)
        .expect("rewrap")
        .expect("under the old key, so rewrapped");
    assert_eq!(rewrapped.kek_id(), "k2");
    assert_eq!(rotated.rewrap("acct", &rewrapped).expect("rewrap"), None);

    let dek2 = rotated.unwrap_dek("acct", &rewrapped).expect("unwrap");
    assert_eq!(dek2.id(), dek.id());
    let plain = dek2
        .decrypt_string("acct", "appsecret", &ct)
        .expect("decrypt");
    assert_eq!(plain.expose(), "the-secret");

    // Once nothing uses k1 it can go, and the rewrapped DEK still works without it.
    let without_k1 = rotated
        .keyring()
        .remove_key(&key_id("k1"), &[key_id("k2")])
        .expect("remove");
    assert!(!without_k1.contains("k1"));
    let final_vault = Vault::new(without_k1);
    assert!(final_vault.unwrap_dek("acct", &rewrapped).is_ok());
    assert!(matches!(
        final_vault.unwrap_dek("acct", &wrapped),
        Err(VaultError::UnknownKey { id }) if id == "k1"
    ));
}

#[test]
fn remove_key_is_refused_while_in_use_or_active() {
    let keyring = Keyring::generate(key_id("k1"))
        .add_key(key_id("k2"))
        .unwrap();
    assert!(matches!(
        keyring.remove_key(&key_id("k1"), &[key_id("k2"), key_id("k1")]),
        Err(VaultError::KeyInUse { id }) if id == "k1"
    ));
    assert!(matches!(
        keyring.remove_key(&key_id("k2"), &[]),
        Err(VaultError::ActiveKeyRemoval { id }) if id == "k2"
    ));
    assert!(matches!(
        keyring.remove_key(&key_id("k7"), &[]),
        Err(VaultError::UnknownKey { id }) if id == "k7"
    ));
    let removed = keyring.remove_key(&key_id("k1"), &[]).expect("unused");
    assert_eq!(removed.active_id().as_str(), "k2");
}

#[test]
fn with_active_switches_the_wrapping_key() {
    let keyring = Keyring::generate(key_id("k1"))
        .add_key(key_id("k2"))
        .unwrap();
    let staged = keyring.with_active(&key_id("k1")).expect("present");
    let (_, wrapped) = Vault::new(staged).create_dek("a");
    assert_eq!(wrapped.kek_id(), "k1");
    assert!(matches!(
        keyring.with_active(&key_id("k3")),
        Err(VaultError::UnknownKey { .. })
    ));
}

#[test]
fn keys_taken_from_a_newer_keyring_keep_everything_readable_and_the_active_key() {
    let k1 = Keyring::generate(key_id("k1"));
    let (_, under_k1) = Vault::new(k1.clone()).create_dek("a");
    // The newer file: k2 added and active, k1 already dropped.
    let newer = k1
        .add_key(key_id("k2"))
        .unwrap()
        .remove_key(&key_id("k1"), &[])
        .unwrap();
    let (_, under_k2) = Vault::new(newer.clone()).create_dek("b");
    assert!(Vault::new(k1.clone()).unwrap_dek("b", &under_k2).is_err());

    let merged = k1.with_keys_from(&newer);
    assert_eq!(
        merged.active_id().as_str(),
        "k1",
        "the active key does not move"
    );
    let ids: Vec<&str> = merged.key_ids().map(KeyId::as_str).collect();
    assert_eq!(ids, ["k1", "k2"]);
    let vault = Vault::new(merged);
    assert!(vault.unwrap_dek("a", &under_k1).is_ok());
    assert!(vault.unwrap_dek("b", &under_k2).is_ok());
    // Nothing to take: the same keyring back.
    let same = k1.with_keys_from(&k1);
    assert_eq!(same.key_ids().count(), 1);
    // A key id both hold keeps this keyring's material.
    let impostor = Keyring::generate(key_id("k1"));
    assert!(
        Vault::new(k1.with_keys_from(&impostor))
            .unwrap_dek("a", &under_k1)
            .is_ok()
    );
}

#[test]
fn syntax_error_after_multibyte_text_is_reported_not_panicked() {
    let problem = problem_of("active = \"k1\" # 主密钥\n键 = = \"x\"\n");
    assert!(
        matches!(problem, KeyringProblem::Syntax { line: 2, .. }),
        "{problem:?}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

    #[test]
    fn keyring_parser_never_panics(content in "(active|keys|id|key|\\[\\[keys\\]\\]|=|\"|\\n| |k1|主|[A-Za-z0-9+/=]{0,44}){0,24}") {
        let _ = Keyring::from_toml_str(&content, "fuzz.toml");
        let _ = Keyring::from_env_value(&content);
    }
}
