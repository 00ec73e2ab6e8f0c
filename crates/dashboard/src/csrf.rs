//! Cross-site request forgery: every form carries a token bound to the browser, and every
//! request that may change something is refused unless it carries it and comes from the
//! dashboard's own origin.
//!
//! The token is derived from the session token once signed in, and from a random binding
//! cookie before (so the sign-in and setup forms are bound too): SHA-256 of a fixed label and
//! that secret. Both secrets live in `HttpOnly` cookies another site cannot read, and the
//! database stores neither, so the token needs no storage of its own and changes whenever the
//! session does. The middleware (`context`) checks it for every such request; handlers read
//! the rest of the form only through [`CsrfForm`], which exists only once that check passed.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::DashboardError;

/// The name of the token's form field.
pub const FIELD: &str = "csrf";

/// The form token of a browser whose forms are bound to `binding`.
pub(crate) fn token_for(binding: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"wxhub dashboard form token\0");
    hasher.update(binding.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// Whether the browser says the request comes from another site: an `Origin` other than the
/// dashboard's, or `Sec-Fetch-Site` other than same-origin or a person's own navigation.
pub(crate) fn is_cross_site(headers: &HeaderMap, own_origin: &str) -> bool {
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null"));
    if origin.is_some_and(|origin| origin != own_origin) {
        return true;
    }
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| !matches!(site, "same-origin" | "none"))
}

/// A form's fields other than the token, once the token was found right.
#[derive(Debug, Clone)]
pub(crate) struct CheckedForm {
    fields: Vec<(String, String)>,
}

/// Checks the urlencoded `body` for the token `expected`.
pub(crate) fn check(body: &[u8], expected: &str) -> Result<CheckedForm, DashboardError> {
    let mut token = None;
    let mut fields = Vec::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        if key == FIELD {
            if token.is_some() {
                return Err(DashboardError::FormExpired);
            }
            token = Some(value.into_owned());
        } else {
            fields.push((key.into_owned(), value.into_owned()));
        }
    }
    match token {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            Ok(CheckedForm { fields })
        }
        _ => Err(DashboardError::FormExpired),
    }
}

/// A form whose CSRF token was checked: the only way a handler reads a form. (`axum::Form`
/// is refused by clippy in this crate, see `clippy.toml`.)
#[derive(Debug)]
pub struct CsrfForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for CsrfForm<T> {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only the middleware inserts a checked form, after checking it.
        let checked = parts
            .extensions
            .get::<CheckedForm>()
            .ok_or(DashboardError::FormExpired)?;
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(checked.fields.iter())
            .finish();
        serde_urlencoded::from_str(&encoded)
            .map(CsrfForm)
            .map_err(|_| DashboardError::BadForm)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_token_must_match_and_appear_once() {
        let token = token_for("binding");
        let body = format!("email=a%40b.c&csrf={token}");
        let form = check(body.as_bytes(), &token).unwrap();
        assert_eq!(form.fields, vec![("email".to_owned(), "a@b.c".to_owned())]);
        assert!(check(b"email=x", &token).is_err());
        assert!(check(format!("csrf={}", token_for("other")).as_bytes(), &token).is_err());
        assert!(check(format!("csrf={token}&csrf={token}").as_bytes(), &token).is_err());
    }

    #[test]
    fn other_origins_and_cross_site_fetches_are_cross_site() {
        let own = "https://hub.example";
        let mut headers = HeaderMap::new();
        assert!(!is_cross_site(&headers, own));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://hub.example"),
        );
        assert!(!is_cross_site(&headers, own));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(is_cross_site(&headers, own));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(is_cross_site(&headers, own));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(is_cross_site(&headers, own));
    }
}
