//! Per-account gateway settings, validated before they are stored: the account's original id,
//! its push mode, where pushes are relayed, and what the follow page shows. `wxhub` exposes
//! [`update`] on its command line.
//!
//! Configuration is explicit: plain and compatible-mode pushes are refused until the original
//! id is set, and the relay must be https (pushes it carries are signed).

use store::Store;
pub use store::gateway::{GatewaySettings, PushMode};

/// Why settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "original id {0:?} is not valid: it is \"gh_\" followed by 12 letters or digits, as shown \
         in the WeChat console (设置与开发 → 公众号设置 → 原始ID)"
    )]
    BadOriginalId(String),
    #[error("{field} {url:?} is not acceptable: {reason}")]
    BadUrl {
        field: &'static str,
        url: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Whether `id` is an original id: `gh_` and 12 ASCII letters or digits.
pub fn is_original_id(id: &str) -> bool {
    id.strip_prefix("gh_")
        .is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn check_https(field: &'static str, url: &str) -> Result<(), SettingsError> {
    let bad = |reason| SettingsError::BadUrl {
        field,
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|_| bad("not an absolute URL"))?;
    if parsed.scheme() != "https" || parsed.host().is_none() {
        return Err(bad("must be an https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not contain user information"));
    }
    Ok(())
}

/// Checks settings without storing them.
pub fn validate(settings: &GatewaySettings) -> Result<(), SettingsError> {
    if let Some(id) = &settings.original_id
        && !is_original_id(id)
    {
        return Err(SettingsError::BadOriginalId(id.clone()));
    }
    if let Some(url) = &settings.push_relay_url
        && !crate::push::relay_url_allowed(url)
    {
        return Err(SettingsError::BadUrl {
            field: "push relay URL",
            url: url.clone(),
            reason: "must be https (http only to a loopback host), without user information or \
                     fragment",
        });
    }
    if let Some(url) = &settings.follow_qr_url {
        check_https("follow QR code image URL", url)?;
    }
    if let Some(url) = &settings.follow_link {
        check_https("follow link", url)?;
    }
    Ok(())
}

/// Validates and stores an account's gateway settings (every field; `None` clears it). The
/// account is wxhub's account id (not the appid).
pub async fn update(
    store: &Store,
    account_id: &str,
    settings: &GatewaySettings,
    now: i64,
) -> Result<(), SettingsError> {
    validate(settings)?;
    store
        .set_gateway_settings(account_id, settings, now)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_ids_are_gh_and_twelve_alphanumerics() {
        assert!(is_original_id("gh_0123456789ab"));
        assert!(is_original_id("gh_ABCDEFabcdef"));
        for bad in [
            "gh_0123456789a",
            "gh_0123456789abc",
            "0123456789abcd",
            "gh_01234567-9ab",
        ] {
            assert!(!is_original_id(bad), "{bad}");
        }
    }

    #[test]
    fn urls_must_be_https_and_relays_may_use_loopback_http() {
        let base = GatewaySettings::default();
        let with = |f: fn(&mut GatewaySettings)| {
            let mut s = base.clone();
            f(&mut s);
            validate(&s)
        };
        assert!(with(|s| s.follow_qr_url = Some("https://mmbiz.qpic.cn/qr.jpg".into())).is_ok());
        assert!(with(|s| s.follow_qr_url = Some("http://mmbiz.qpic.cn/qr.jpg".into())).is_err());
        assert!(with(|s| s.follow_link = Some("javascript:alert(1)".into())).is_err());
        assert!(with(|s| s.push_relay_url = Some("https://owner.example/push".into())).is_ok());
        assert!(with(|s| s.push_relay_url = Some("http://127.0.0.1:8080/push".into())).is_ok());
        assert!(with(|s| s.push_relay_url = Some("http://owner.example/push".into())).is_err());
        assert!(with(|s| s.push_relay_url = Some("http://10.0.0.1/push".into())).is_err());
    }
}
