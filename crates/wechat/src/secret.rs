//! Types for the secrets the WeChat API deals in: the AppSecret, access tokens (the account's
//! core token and users' OAuth tokens) and OAuth refresh tokens.
//!
//! Each wraps a [`secrecy::SecretString`]: the text is zeroized on drop, `Debug` and `Display`
//! print `<redacted>`, and the only way to read it is an explicit [`expose`](AppSecret::expose)
//! at the point where it goes on the wire. Equality is constant-time, so a caller can compare a
//! rejected token with the current one without a timing side channel. Being distinct types, a
//! refresh token cannot be passed where an access token is expected.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The secret text, for the one place that must send or store it.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }

            /// Length in bytes (safe to log).
            pub fn len(&self) -> usize {
                self.expose().len()
            }

            /// Whether the value is empty.
            pub fn is_empty(&self) -> bool {
                self.expose().is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(<redacted>)", stringify!($name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.expose().as_bytes().ct_eq(other.expose().as_bytes()).into()
            }
        }

        impl Eq for $name {}

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

secret_type! {
    /// An Official Account's AppSecret (开发者密码).
    AppSecret
}

secret_type! {
    /// An access token: the account's core token (`/cgi-bin/token`, `/cgi-bin/stable_token`)
    /// or a user's OAuth token (`/sns/oauth2/access_token`). Opaque, up to 512+ characters (docs/wechat.md §0).
    AccessToken
}

secret_type! {
    /// A user's OAuth refresh token (30 days, docs/wechat.md §4.5).
    RefreshToken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = AppSecret::new("s3cr3t-value");
        let token = AccessToken::new("86_tokenvalue");
        let shown = format!("{secret:?} {secret} {token:?} {token}");
        assert!(!shown.contains("s3cr3t"));
        assert!(!shown.contains("tokenvalue"));
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert_eq!(secret.expose(), "s3cr3t-value");
    }

    #[test]
    fn equality_compares_the_values() {
        assert_eq!(AccessToken::new("a"), AccessToken::new("a"));
        assert_ne!(AccessToken::new("a"), AccessToken::new("b"));
        assert_ne!(AccessToken::new("a"), AccessToken::new("ab"));
    }

    #[test]
    fn deserializes_from_a_json_string() {
        let token: AccessToken = serde_json::from_str("\"86_abc\"").unwrap();
        assert_eq!(token.expose(), "86_abc");
    }
}
