//! Containers for decrypted secrets.
//!
//! A decrypted APPSECRET or EncodingAESKey lives in one of these until it is handed to the
//! code that puts it on the wire. They zeroize their whole allocation on drop, print
//! `[redacted]` in `Debug` and `Display`, compare in constant time only through explicit
//! exposure, and offer no serialisation, so a secret cannot reach a log line or a JSON body by
//! accident. [`secrecy::ExposeSecret`] is implemented so they fit APIs built on `secrecy`.

use std::fmt;

use secrecy::ExposeSecret;
use zeroize::Zeroizing;

/// Decrypted secret bytes. Zeroized on drop (the full capacity of the buffer).
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are wiped when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub(crate) fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// The secret bytes, for the one place that must use them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Converts to text, or gives the bytes back if they are not UTF-8. No copy is made, so no
    /// unwiped duplicate is left behind.
    pub fn into_string(mut self) -> Result<SecretString, SecretBytes> {
        let bytes = std::mem::take(&mut *self.0);
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SecretString::new(text)),
            Err(err) => Err(SecretBytes::new(err.into_bytes())),
        }
    }
}

impl ExposeSecret<[u8]> for SecretBytes {
    fn expose_secret(&self) -> &[u8] {
        self.expose()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Decrypted secret text. Zeroized on drop (the full capacity of the buffer).
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `text`; it is wiped when the value is dropped.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The secret text, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ExposeSecret<str> for SecretString {
    fn expose_secret(&self) -> &str {
        self.expose()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let text = SecretString::new("appsecret-0123456789".to_owned());
        let bytes = SecretBytes::new(b"appsecret-0123456789".to_vec());
        for shown in [
            format!("{text:?}"),
            format!("{text}"),
            format!("{bytes:?}"),
            format!("{bytes}"),
            format!("{:#?}", Some(&text)),
        ] {
            assert!(!shown.contains("appsecret"), "leaked in {shown:?}");
            assert!(shown.contains("[redacted]"), "{shown:?}");
        }
    }

    #[test]
    fn into_string_keeps_utf8_and_returns_other_bytes() {
        let ok = SecretBytes::new("秘密".as_bytes().to_vec()).into_string();
        assert_eq!(
            ok.map(|s| s.expose().to_owned()).ok().as_deref(),
            Some("秘密")
        );
        let bad = SecretBytes::new(vec![0xff, 0xfe]).into_string();
        assert_eq!(
            bad.err().map(|b| b.expose().to_vec()),
            Some(vec![0xff, 0xfe])
        );
    }
}
