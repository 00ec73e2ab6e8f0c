//! The `Authorization` header of the token and userinfo endpoints, parsed from its raw bytes
//! by pure functions (the fuzz targets in `fuzz/` call them through [`crate::fuzzing`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::oidc::BasicCredentials;
use crate::params::decode_form_value;

/// The credentials after `scheme` in an `Authorization` value, the scheme matched
/// case-insensitively (RFC 9110 §11.1) and the credentials trimmed. `Err` for another scheme
/// or a value that is not visible ASCII (what `HeaderValue::to_str` accepts).
pub(crate) fn scheme_credentials<'a>(value: &'a [u8], scheme: &str) -> Result<&'a str, ()> {
    if !value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        return Err(());
    }
    let value = std::str::from_utf8(value).map_err(|_| ())?;
    let (given, rest) = value.split_once(' ').unwrap_or((value, ""));
    if given.eq_ignore_ascii_case(scheme) {
        Ok(rest.trim())
    } else {
        Err(())
    }
}

/// `Authorization: Basic` client credentials (RFC 6749 §2.3.1): base64 of
/// `client_id:client_secret`, each part form-urlencoded. Both parts are decoded whole and
/// strictly (an `&` is part of the value, a non-UTF-8 escape is refused), so what is checked
/// is exactly what the client sent.
pub(crate) fn basic(value: &[u8]) -> Result<BasicCredentials, ()> {
    let encoded = scheme_credentials(value, "Basic")?;
    let decoded = STANDARD.decode(encoded).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = decoded.split_once(':').ok_or(())?;
    Ok(BasicCredentials {
        client_id: decode_form_value(id.as_bytes()).map_err(|_| ())?,
        client_secret: decode_form_value(secret.as_bytes()).map_err(|_| ())?,
    })
}

/// The token of an `Authorization: Bearer` value (RFC 6750 §2.1), if the scheme is Bearer and
/// a token follows it.
pub(crate) fn bearer(value: &[u8]) -> Option<&str> {
    scheme_credentials(value, "Bearer")
        .ok()
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic_of(raw: &str) -> Result<(String, String), ()> {
        let value = format!("Basic {}", STANDARD.encode(raw));
        basic(value.as_bytes()).map(|c| (c.client_id, c.client_secret))
    }

    #[test]
    fn basic_parts_are_form_decoded() {
        assert_eq!(
            basic_of("my%20client:s%3Ac+r"),
            Ok(("my client".to_owned(), "s:c r".to_owned()))
        );
        assert_eq!(basic_of("id:"), Ok(("id".to_owned(), String::new())));
        // The scheme is case-insensitive and surrounding blanks go.
        let value = format!("bAsIc  {} ", STANDARD.encode("a:b"));
        assert!(basic(value.as_bytes()).is_ok());
    }

    #[test]
    fn an_ampersand_is_part_of_the_secret_not_its_end() {
        // Decoding each part as a form (`x=<part>`) used to stop at the `&`, so the secret
        // `abc` was also accepted as `abc&anything`.
        assert_eq!(
            basic_of("id:abc&anything"),
            Ok(("id".to_owned(), "abc&anything".to_owned()))
        );
        assert_eq!(
            basic_of("id&x=1:s"),
            Ok(("id&x=1".to_owned(), "s".to_owned()))
        );
    }

    #[test]
    fn a_part_that_is_not_utf8_is_refused_not_replaced() {
        // `%FF` and `%FE` used to both become U+FFFD: two different secrets, one value.
        assert_eq!(basic_of("id:%FF"), Err(()));
        assert_eq!(basic_of("%FE:s"), Err(()));
    }

    #[test]
    fn malformed_basic_values_are_refused() {
        assert!(basic(b"Basic").is_err());
        assert!(basic(b"Basic !!!").is_err());
        assert!(basic(format!("Basic {}", STANDARD.encode("no-colon")).as_bytes()).is_err());
        assert!(basic(format!("Bearer {}", STANDARD.encode("a:b")).as_bytes()).is_err());
        assert!(
            basic(format!("Basic {}", STANDARD.encode([0xff, b':', b'a'])).as_bytes()).is_err()
        );
        assert!(basic("Basic YTpi\u{e9}".as_bytes()).is_err());
    }

    #[test]
    fn bearer_takes_the_token_after_the_scheme() {
        assert_eq!(bearer(b"Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer(b"BEARER  abc "), Some("abc"));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Bearer a\x7f"), None);
    }
}
