//! Round trips, tamper detection and strict decoding of field ciphertexts and wrapped DEKs.

mod common;

use common::{key_id, vault_k1};
use proptest::prelude::*;
use vault::{Keyring, Vault, VaultError, WrappedDek};

#[test]
fn field_round_trips_and_binds_account_and_field() {
    let vault = vault_k1();
    let (dek, wrapped) = vault.create_dek("acct-1");
    let ct = dek.encrypt("acct-1", "appsecret", b"s3cr3t-value");

    let dek_again = vault.unwrap_dek("acct-1", &wrapped).expect("unwrap");
    assert_eq!(dek_again.id(), dek.id());
    let plain = dek_again
        .decrypt_string("acct-1", "appsecret", &ct)
        .expect("decrypt");
    assert_eq!(plain.expose(), "s3cr3t-value");

    assert!(matches!(
        dek.decrypt("acct-2", "appsecret", &ct),
        Err(VaultError::Decrypt)
    ));
    assert!(matches!(
        dek.decrypt("acct-1", "push_token", &ct),
        Err(VaultError::Decrypt)
    ));
}

#[test]
fn empty_plaintext_round_trips() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("a");
    let ct = dek.encrypt("a", "f", b"");
    assert!(dek.decrypt("a", "f", &ct).expect("decrypt").is_empty());
}

#[test]
fn same_plaintext_encrypts_to_different_ciphertexts() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("a");
    assert_ne!(dek.encrypt("a", "f", b"x"), dek.encrypt("a", "f", b"x"));
}

#[test]
fn account_and_field_split_points_are_distinct() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("ab");
    let ct = dek.encrypt("ab", "c", b"secret");
    assert!(matches!(
        dek.decrypt("a", "bc", &ct),
        Err(VaultError::Decrypt)
    ));
    assert!(dek.decrypt("ab", "c", &ct).is_ok());
}

#[test]
fn wrapped_dek_copied_to_another_account_fails_to_unwrap() {
    let vault = vault_k1();
    let (_, wrapped) = vault.create_dek("acct-1");
    assert!(matches!(
        vault.unwrap_dek("acct-2", &wrapped),
        Err(VaultError::Decrypt)
    ));
    assert!(matches!(
        vault.rewrap("acct-2", &wrapped),
        Ok(None) // already under the active key: rewrap does not even open it
    ));
}

#[test]
fn field_from_another_accounts_dek_is_reported_as_unknown_key() {
    let vault = vault_k1();
    let (dek_a, _) = vault.create_dek("a");
    let (dek_b, _) = vault.create_dek("b");
    let ct = dek_a.encrypt("a", "f", b"x");
    match dek_b.decrypt("a", "f", &ct) {
        Err(VaultError::UnknownKey { id }) => assert_eq!(id, dek_a.id()),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn wrapped_dek_under_a_kek_missing_from_the_keyring_names_the_key() {
    let (_, wrapped) = vault_k1().create_dek("a");
    let other = Vault::new(Keyring::generate(key_id("k9")));
    match other.unwrap_dek("a", &wrapped) {
        Err(err @ VaultError::UnknownKey { .. }) => {
            assert!(err.to_string().contains("`k1`"), "{err}");
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn wrapped_dek_exposes_kek_id_and_round_trips_through_bytes() {
    let vault = vault_k1();
    let (_, wrapped) = vault.create_dek("a");
    assert_eq!(wrapped.kek_id(), "k1");
    let parsed = WrappedDek::from_bytes(wrapped.as_bytes()).expect("parse");
    assert_eq!(parsed, wrapped);
    assert_eq!(parsed.kek_id(), "k1");
    assert!(vault.unwrap_dek("a", &parsed).is_ok());
    let debug = format!("{wrapped:?}");
    assert!(debug.contains("k1") && debug.contains("len"), "{debug}");
}

#[test]
fn version_byte_and_layout_match_the_documented_format() {
    let vault = vault_k1();
    let (dek, wrapped) = vault.create_dek("a");
    let w = wrapped.as_bytes();
    // version, id length, "k1", 12-byte nonce, 40-byte DEK record, 16-byte tag
    assert_eq!(w[0], 1);
    assert_eq!(w[1], 2);
    assert_eq!(&w[2..4], b"k1");
    assert_eq!(w.len(), 4 + 12 + 40 + 16);

    let ct = dek.encrypt("a", "f", b"hello");
    assert_eq!(ct[0], 1);
    assert_eq!(usize::from(ct[1]), 16);
    assert_eq!(&ct[2..18], dek.id().as_bytes());
    assert_eq!(ct.len(), 18 + 12 + 5 + 16);
}

#[test]
fn unknown_version_is_reported_with_its_number() {
    let vault = vault_k1();
    let (dek, wrapped) = vault.create_dek("a");
    let mut ct = dek.encrypt("a", "f", b"x");
    ct[0] = 2;
    assert!(matches!(
        dek.decrypt("a", "f", &ct),
        Err(VaultError::UnsupportedVersion { version: 2 })
    ));
    let mut w = wrapped.into_bytes();
    w[0] = 0;
    assert!(matches!(
        WrappedDek::from_bytes(w),
        Err(VaultError::UnsupportedVersion { version: 0 })
    ));
}

#[test]
fn truncation_at_every_length_is_a_typed_error() {
    let vault = vault_k1();
    let (dek, wrapped) = vault.create_dek("a");
    let ct = dek.encrypt("a", "f", b"some secret");
    for len in 0..ct.len() {
        match dek.decrypt("a", "f", &ct[..len]) {
            Err(VaultError::Malformed { .. } | VaultError::Decrypt) => {}
            other => panic!("field truncated to {len}: {other:?}"),
        }
    }
    let w = wrapped.as_bytes();
    for len in 0..w.len() {
        match WrappedDek::from_bytes(&w[..len]) {
            Err(VaultError::Malformed { .. }) => {}
            other => panic!("wrapped DEK truncated to {len}: {other:?}"),
        }
    }
    let mut longer = w.to_vec();
    longer.push(0);
    assert!(matches!(
        WrappedDek::from_bytes(longer),
        Err(VaultError::Malformed { .. })
    ));
}

#[test]
fn malformed_headers_are_named() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("a");
    let cases: [(&[u8], &str); 5] = [
        (b"", "version"),
        (&[1], "key id length"),
        (&[1, 0], "key id length"),
        (&[1, 33], "key id length"),
        (&[1, 2, b'k', b'/'], "key id"),
    ];
    for (input, expected) in cases {
        match dek.decrypt("a", "f", input) {
            Err(VaultError::Malformed { what }) => {
                assert!(what.contains(expected), "{input:?}: {what}");
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }
}

#[test]
fn decrypt_error_messages_carry_no_detail() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("acct-secret-name");
    let ct = dek.encrypt("acct-secret-name", "f", b"x");
    let err = dek
        .decrypt("zz-intruder", "f", &ct)
        .expect_err("wrong account");
    let msg = err.to_string();
    assert!(
        !msg.contains("acct-secret-name") && !msg.contains("zz-intruder"),
        "{msg}"
    );
}

#[test]
fn data_key_debug_shows_only_its_id() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("a");
    let debug = format!("{dek:?} {vault:?}");
    assert!(debug.contains(dek.id()));
    assert!(debug.contains("[redacted]"));
    assert!(!debug.contains("cipher"), "{debug}");
}

#[test]
fn non_utf8_field_requested_as_text_is_not_utf8_error() {
    let vault = vault_k1();
    let (dek, _) = vault.create_dek("a");
    let ct = dek.encrypt("a", "f", &[0xff, 0x00]);
    assert!(matches!(
        dek.decrypt_string("a", "f", &ct),
        Err(VaultError::NotUtf8 { field }) if field == "f"
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_single_bit_flip_of_a_field_ciphertext_is_detected(
        account in "[a-z0-9-]{1,24}",
        field in "[a-z_]{1,16}",
        plaintext in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let vault = vault_k1();
        let (dek, _) = vault.create_dek(&account);
        let ct = dek.encrypt(&account, &field, &plaintext);
        let decrypted = dek.decrypt(&account, &field, &ct).expect("round trip");
        prop_assert_eq!(decrypted.expose(), &plaintext[..]);
        for byte in 0..ct.len() {
            for bit in 0..8 {
                let mut flipped = ct.clone();
                flipped[byte] ^= 1 << bit;
                prop_assert!(
                    dek.decrypt(&account, &field, &flipped).is_err(),
                    "flip of bit {} in byte {} went undetected", bit, byte
                );
            }
        }
    }

    #[test]
    fn every_single_bit_flip_of_a_wrapped_dek_is_detected(account in "[a-z0-9-]{1,24}") {
        let vault = vault_k1();
        let (_, wrapped) = vault.create_dek(&account);
        let bytes = wrapped.as_bytes();
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[byte] ^= 1 << bit;
                let detected = match WrappedDek::from_bytes(flipped) {
                    Err(_) => true,
                    Ok(w) => vault.unwrap_dek(&account, &w).is_err(),
                };
                prop_assert!(detected, "flip of bit {} in byte {} went undetected", bit, byte);
            }
        }
    }

    #[test]
    fn ciphertext_moved_to_another_account_or_field_fails(
        account in "[a-z0-9]{1,12}",
        other_account in "[a-z0-9]{1,12}",
        field in "[a-z_]{1,12}",
        other_field in "[a-z_]{1,12}",
        plaintext in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        prop_assume!(account != other_account && field != other_field);
        let vault = vault_k1();
        let (dek, wrapped) = vault.create_dek(&account);
        let ct = dek.encrypt(&account, &field, &plaintext);
        prop_assert!(matches!(dek.decrypt(&other_account, &field, &ct), Err(VaultError::Decrypt)));
        prop_assert!(matches!(dek.decrypt(&account, &other_field, &ct), Err(VaultError::Decrypt)));
        prop_assert!(matches!(vault.unwrap_dek(&other_account, &wrapped), Err(VaultError::Decrypt)));
    }
}
