//! Signatures of WeChat's server pushes (docs/wechat.md §6.2, §6.3, §7.3).
//!
//! WeChat signs every request it sends to a push URL with the account's push Token:
//! `signature = sha1(sort(token, timestamp, nonce))`, and in safe mode additionally
//! `msg_signature = sha1(sort(token, timestamp, nonce, Encrypt))`. The same functions sign the
//! encrypted replies we send back (§7.4) and the pushes the simulator sends.
//!
//! Verification compares in constant time, so a forger learns nothing from response timing.
//! The token is a secret: nothing here logs it or returns it inside an error.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// SHA-1 of the byte-wise sorted, separator-less concatenation of `parts`, as lowercase hex.
fn sorted_sha1_hex(parts: &mut [&str]) -> String {
    // Byte-wise order is what `str`'s `Ord` gives, and what WeChat's sample code does (§6.2).
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The URL `signature` of a push or of the URL-verification GET (docs/wechat.md §6.2):
/// sha1 over the sorted concatenation of `token`, `timestamp` and `nonce`, lowercase hex.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1_hex(&mut [token, timestamp, nonce])
}

/// The safe-mode `msg_signature` (docs/wechat.md §7.3): sha1 over the sorted concatenation of `token`,
/// `timestamp`, `nonce` and the base64 `encrypt` string exactly as it appears in the XML.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1_hex(&mut [token, timestamp, nonce, encrypt])
}

/// Whether `signature` is the URL signature of `(token, timestamp, nonce)`.
///
/// The comparison is constant-time; hex case is ignored because the digest is the same.
pub fn verify_signature(token: &str, timestamp: &str, nonce: &str, signature: &str) -> bool {
    constant_time_hex_eq(&self::signature(token, timestamp, nonce), signature)
}

/// Whether `msg_signature` is the safe-mode signature of `(token, timestamp, nonce, encrypt)`.
/// Check this *before* decrypting (docs/wechat.md §7.3): an attacker without the token cannot then feed
/// chosen ciphertexts to the decryptor.
pub fn verify_msg_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    msg_signature: &str,
) -> bool {
    constant_time_hex_eq(
        &self::msg_signature(token, timestamp, nonce, encrypt),
        msg_signature,
    )
}

fn constant_time_hex_eq(expected: &str, given: &str) -> bool {
    // Length is not secret (always 40 for SHA-1 hex); only the content comparison must not leak.
    if expected.len() != given.len() {
        return false;
    }
    let given = given.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn url_verification_vector_from_spec_6_2() {
        assert_eq!(
            signature("AAAAA", "1714036504", "1514711492"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert!(verify_signature(
            "AAAAA",
            "1714036504",
            "1514711492",
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        ));
    }

    #[test]
    fn plain_push_vector_from_spec_6_3() {
        assert_eq!(
            signature("AAAAA", "1714037059", "486452656"),
            "899cf89e464efb63f54ddac96b0a0a235f53aa78"
        );
    }

    #[test]
    fn msg_signature_vector_from_spec_7_5() {
        let encrypt = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";
        let sig = msg_signature("pamtest", "1409304348", "xxxxxx", encrypt);
        assert_eq!(sig, "82c962d39941aa48552f90ef55aa323dc620cc10");
        assert!(verify_msg_signature(
            "pamtest",
            "1409304348",
            "xxxxxx",
            encrypt,
            &sig
        ));
    }

    #[test]
    fn uppercase_hex_signature_is_accepted() {
        assert!(verify_signature(
            "AAAAA",
            "1714036504",
            "1514711492",
            "F464B24FC39322E44B38AA78F5EDD27BD1441696"
        ));
    }

    #[test]
    fn truncated_or_empty_signature_is_rejected() {
        assert!(!verify_signature("AAAAA", "1714036504", "1514711492", ""));
        assert!(!verify_signature(
            "AAAAA",
            "1714036504",
            "1514711492",
            "f464b24fc39322e44b38aa78f5edd27bd144169"
        ));
    }

    fn mutate(s: &str, index: usize, replacement: char) -> Option<String> {
        let mut chars: Vec<char> = s.chars().collect();
        let i = index % chars.len().max(1);
        if chars.is_empty() || chars[i] == replacement {
            return None;
        }
        chars[i] = replacement;
        Some(chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn any_changed_character_fails_verification(
            token in "[A-Za-z0-9]{3,32}",
            timestamp in "[0-9]{10}",
            nonce in "[0-9]{1,10}",
            field in 0usize..4,
            index in any::<usize>(),
            replacement in proptest::char::range('0', 'z'),
        ) {
            let sig = signature(&token, &timestamp, &nonce);
            prop_assert!(verify_signature(&token, &timestamp, &nonce, &sig));
            let (t, ts, n, s) = match field {
                0 => (mutate(&token, index, replacement), None, None, None),
                1 => (None, mutate(&timestamp, index, replacement), None, None),
                2 => (None, None, mutate(&nonce, index, replacement), None),
                _ => (None, None, None, mutate(&sig, index, replacement)),
            };
            if t.is_none() && ts.is_none() && n.is_none() && s.is_none() {
                return Ok(());
            }
            // A changed hex digit that only differs in case is the same signature.
            if let Some(s) = &s {
                prop_assume!(!s.eq_ignore_ascii_case(&sig));
            }
            prop_assert!(!verify_signature(
                t.as_deref().unwrap_or(&token),
                ts.as_deref().unwrap_or(&timestamp),
                n.as_deref().unwrap_or(&nonce),
                s.as_deref().unwrap_or(&sig),
            ));
        }

        #[test]
        fn any_changed_character_fails_msg_signature_verification(
            token in "[A-Za-z0-9]{3,32}",
            timestamp in "[0-9]{10}",
            nonce in "[0-9]{1,10}",
            encrypt in "[A-Za-z0-9+/]{16,64}={0,2}",
            field in 0usize..5,
            index in any::<usize>(),
            replacement in proptest::char::range('0', 'z'),
        ) {
            let sig = msg_signature(&token, &timestamp, &nonce, &encrypt);
            prop_assert!(verify_msg_signature(&token, &timestamp, &nonce, &encrypt, &sig));
            let mut parts = [token.clone(), timestamp.clone(), nonce.clone(), encrypt.clone(), sig.clone()];
            let Some(changed) = mutate(&parts[field], index, replacement) else {
                return Ok(());
            };
            if field == 4 {
                prop_assume!(!changed.eq_ignore_ascii_case(&sig));
            }
            parts[field] = changed;
            prop_assert!(!verify_msg_signature(&parts[0], &parts[1], &parts[2], &parts[3], &parts[4]));
        }
    }
}
