//! Bodies of the cargo-fuzz targets in `fuzz/`, as plain functions so the normal test suite
//! can run the same code over a seed corpus. Not part of the supported API.

use crate::crypto::{EncodingAesKey, MsgCrypt};
use crate::xml;

/// Fixed key of the `safe_mode_decrypt` target (the docs/wechat.md §7.5 vector key).
pub const FUZZ_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// Fixed appid of the `safe_mode_decrypt` target.
pub const FUZZ_APPID: &str = "wxb11529c136998cb6";

/// Parses arbitrary bytes as a push body and as a push reply; must never panic.
pub fn push_xml(data: &[u8]) {
    if let Ok(xml::PushBody::Message(message)) = xml::parse_push(data) {
        // Exercise everything a handler does with a parsed push.
        let _ = message.dedup_key();
        if let Some(scan) = message.qr_scan() {
            // docs/wechat-2.md §4.3: the scene is the key without `qrscene_` on a follow, the
            // whole key on SCAN, and a QR scan always names its ticket.
            let key = message.event_key().expect("a QR scan has an EventKey");
            let expected = if scan.new_follower {
                key.strip_prefix("qrscene_")
            } else {
                Some(key)
            };
            assert_eq!(Some(scan.scene), expected);
            assert!(!scan.scene.is_empty() && !scan.ticket.is_empty());
        }
        let reply = message.text_reply("ok", message.create_time);
        assert!(
            matches!(
                xml::parse_reply(reply.as_bytes(), None),
                Ok(xml::Reply::Message(_)) | Err(xml::XmlError::TooLarge { .. })
            ),
            "a reply built from a parsed push must parse"
        );
    }
    let _ = xml::parse_reply(data, None);
}

/// Decrypts arbitrary input with a fixed key, both as the base64 text it arrives as and as raw
/// ciphertext bytes; must never panic, and anything that decrypts must re-encrypt to itself.
pub fn safe_mode_decrypt(data: &[u8]) {
    let crypt = MsgCrypt::new(
        EncodingAesKey::parse(FUZZ_KEY).expect("the fuzz key is valid"),
        FUZZ_APPID,
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crypt.decrypt(text);
    }
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    if let Ok(message) = crypt.decrypt(&encoded) {
        let again = crypt.encrypt(&message);
        assert_eq!(crypt.decrypt(&again).as_deref(), Ok(message.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seed corpus {} unreadable: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn push_xml_target_survives_its_seed_corpus() {
        let corpus = seeds("push_xml");
        assert!(corpus.len() >= 5, "seed corpus went missing");
        for (_name, data) in corpus {
            push_xml(&data);
        }
    }

    #[test]
    fn push_xml_seeds_parse_as_the_spec_says() {
        for (name, data) in seeds("push_xml") {
            let parsed = xml::parse_push(&data);
            match name.as_str() {
                "doctype.xml" => assert_eq!(parsed, Err(xml::XmlError::Doctype)),
                "safe_mode.xml" => assert!(matches!(parsed, Ok(xml::PushBody::Encrypted(_)))),
                "success.txt" | "encrypted_reply.xml" => assert!(parsed.is_err(), "{name}"),
                _ => assert!(matches!(parsed, Ok(xml::PushBody::Message(_))), "{name}"),
            }
        }
    }

    #[test]
    fn safe_mode_decrypt_target_survives_its_seed_corpus() {
        let corpus = seeds("safe_mode_decrypt");
        assert!(!corpus.is_empty(), "seed corpus went missing");
        for (_name, data) in corpus {
            safe_mode_decrypt(&data);
        }
        let crypt = MsgCrypt::new(EncodingAesKey::parse(FUZZ_KEY).unwrap(), FUZZ_APPID);
        let vector = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/safe_mode_decrypt/vector.b64"),
        )
        .unwrap();
        assert_eq!(crypt.decrypt(&vector).unwrap(), "我是中文abcd123");
    }
}
