//! Binding a login to the browser that started it (login CSRF; RFC 9700 §4.7.1).
//!
//! `/authorize` sets a cookie with a random value and stores its SHA-256 on the pending
//! authorization. The WeChat callback, the follow page, its status poll and "continue" each
//! require the cookie and compare its hash in constant time, so a victim cannot be made to
//! finish a login an attacker started (and end up logged in as the attacker), and a leaked
//! follow-page URL is useless in another browser.
//!
//! With an https public URL the cookie is `__Host-wxhub_login` (`Secure`, `Path=/`, no
//! `Domain`: no subdomain or plain-http page can set or overwrite it). On plain http (loopback
//! tests) it is `wxhub_login` with `Path=/t/{appid}`. Always `HttpOnly` and `SameSite=Lax`
//! (sent on WeChat's top-level redirect back to the callback, not on cross-site POSTs). A
//! browser that already carries a well-formed value keeps it, so two logins in two tabs do not
//! break each other.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use store::oidc::PendingAuthorization;
use subtle::ConstantTimeEq;

use crate::oidc::PENDING_LIFETIME_MS;
use crate::{Gateway, GatewayError, random_token, token_hash};

/// The cookie's name with an https public URL.
pub(crate) const SECURE_NAME: &str = "__Host-wxhub_login";
/// The cookie's name on plain http (loopback tests).
pub(crate) const PLAIN_NAME: &str = "wxhub_login";

/// Whether `value` looks like one of our cookie values (256 bits, base64url).
fn well_formed(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Gateway {
    fn binding_cookie_name(&self) -> &'static str {
        if self.https { SECURE_NAME } else { PLAIN_NAME }
    }

    /// The browser's binding value from its `Cookie` headers, if well formed.
    pub(crate) fn browser_binding(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.binding_cookie_name();
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, v)| *k == name && well_formed(v))
            .map(|(_, v)| v.to_owned())
    }

    /// The browser's binding value to use for a new login: the one it has, else a new one.
    pub(crate) fn binding_for_new_login(&self, existing: Option<String>) -> String {
        existing.unwrap_or_else(random_token)
    }

    /// The `Set-Cookie` value that (re)sets the binding cookie for logins at `appid`.
    pub(crate) fn binding_set_cookie(&self, appid: &str, value: &str) -> String {
        let max_age = PENDING_LIFETIME_MS / 1000;
        if self.https {
            format!(
                "{SECURE_NAME}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"
            )
        } else {
            format!(
                "{PLAIN_NAME}={value}; Path=/t/{appid}; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            )
        }
    }
}

/// Checks that the request comes from the browser that started `pending`.
pub(crate) fn check(
    pending: &PendingAuthorization,
    browser: Option<&str>,
) -> Result<(), GatewayError> {
    let (Some(stored), Some(value)) = (pending.browser_binding_hash.as_deref(), browser) else {
        return Err(GatewayError::BrowserMismatch);
    };
    let ok: bool = token_hash(value).as_bytes().ct_eq(stored.as_bytes()).into();
    if ok {
        Ok(())
    } else {
        Err(GatewayError::BrowserMismatch)
    }
}
