//! The login gateway's settings of an account — its original id, push mode, relay URL and
//! what the follow page shows — checked before they are stored.
//!
//! Configuration is explicit: plain and compatible-mode pushes are refused until the original
//! id is set, and the relay must be https (pushes it carries are signed).

use serde_json::json;
use store::changes::ChangeKind;
pub use store::gateway::{GatewaySettings, PushMode};

use crate::policy::Operation;
use crate::targets::{AllowList, check_target};
use crate::{Principal, Tenancy, TenancyError};

/// A change to the settings: `None` keeps a value, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub original_id: Option<Option<String>>,
    pub push_mode: Option<Option<PushMode>>,
    pub push_relay_url: Option<Option<String>>,
    pub follow_qr_url: Option<Option<String>>,
    pub follow_link: Option<Option<String>>,
}

/// An account's settings with the push URL to enter in WeChat's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsView {
    pub settings: GatewaySettings,
    pub push_url: String,
}

/// Whether `id` is an original id: `gh_` and 12 ASCII letters or digits.
pub fn is_original_id(id: &str) -> bool {
    id.strip_prefix("gh_")
        .is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `url` is https, or http to a loopback host (local development and tests), with
/// no user information or fragment. What a relay target and a redirect URI must be: both
/// carry credentials (a signed push, an authorization code), which must not travel in the
/// clear.
pub fn https_or_loopback_http(url: &url::Url) -> bool {
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

fn check_https(field: &'static str, url: &str) -> Result<(), TenancyError> {
    let bad = |reason: &str| TenancyError::invalid(field, format!("{url:?} {reason}"));
    let parsed = url::Url::parse(url).map_err(|_| bad("is not an absolute URL"))?;
    if parsed.scheme() != "https" || parsed.host().is_none() {
        return Err(bad("must be an https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("must not contain user information"));
    }
    Ok(())
}

/// Checks a push target an owner entered (a route's or the relay's), naming `field`.
pub(crate) fn check_push_target(
    field: &'static str,
    url: &str,
    allow: &AllowList,
) -> Result<(), TenancyError> {
    check_target(allow, url).map(drop).map_err(|refused| {
        TenancyError::invalid(
            field,
            format!(
                "{url:?} is refused: {refused}. Pushes go only to https (http only to a loopback \
                 host), without user information or fragment, and to public addresses unless the \
                 operator allows the host (--push-allow-host)"
            ),
        )
    })
}

/// Checks settings without storing them; `allow` are the hosts the operator lets pushes
/// reach on non-public addresses.
pub fn validate(settings: &GatewaySettings, allow: &AllowList) -> Result<(), TenancyError> {
    if let Some(id) = &settings.original_id
        && !is_original_id(id)
    {
        return Err(TenancyError::invalid(
            "original_id",
            format!(
                "{id:?} is not an original id: it is \"gh_\" followed by 12 letters or digits, \
                 as shown in the WeChat console (设置与开发 → 公众号设置 → 原始ID)"
            ),
        ));
    }
    if let Some(url) = &settings.push_relay_url {
        check_push_target("push_relay_url", url, allow)?;
    }
    if let Some(url) = &settings.follow_qr_url {
        check_https("follow_qr_url", url)?;
    }
    if let Some(url) = &settings.follow_link {
        check_https("follow_link", url)?;
    }
    Ok(())
}

fn apply<T>(target: &mut Option<T>, change: Option<Option<T>>) {
    if let Some(value) = change {
        *target = value;
    }
}

fn trimmed(value: Option<Option<String>>) -> Option<Option<String>> {
    value.map(|v| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
}

impl Tenancy {
    /// The account's server URL (服务器地址) for WeChat's console.
    pub(crate) fn push_url(&self, appid: &str) -> String {
        format!(
            "{}/t/{appid}/wechat/push",
            self.config().public_url.as_str().trim_end_matches('/')
        )
    }

    fn settings_view(&self, appid: &str, settings: GatewaySettings) -> SettingsView {
        SettingsView {
            settings,
            push_url: self.push_url(appid),
        }
    }

    /// The account's gateway settings.
    pub async fn gateway_settings(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<SettingsView, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::SettingsView, appid)
            .await?;
        let settings = self.store().gateway_settings(&account.id).await?;
        Ok(self.settings_view(&account.appid, settings))
    }

    /// Applies `change` to the account's gateway settings, checks the result and stores it.
    pub async fn update_gateway_settings(
        &self,
        principal: &Principal,
        appid: &str,
        change: SettingsChange,
    ) -> Result<SettingsView, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::SettingsUpdate, appid)
            .await?;
        let before = self.store().gateway_settings(&account.id).await?;
        let mut settings = before.clone();
        apply(&mut settings.original_id, trimmed(change.original_id));
        apply(&mut settings.push_mode, change.push_mode);
        apply(&mut settings.push_relay_url, trimmed(change.push_relay_url));
        apply(&mut settings.follow_qr_url, trimmed(change.follow_qr_url));
        apply(&mut settings.follow_link, trimmed(change.follow_link));
        validate(&settings, &self.push_targets())?;
        let summary = |s: &GatewaySettings| {
            json!({
                "original_id": s.original_id,
                "push_mode": s.push_mode.map(PushMode::as_str),
                "push_relay_url": s.push_relay_url,
                "follow_qr_url": s.follow_qr_url,
                "follow_link": s.follow_link,
            })
        };
        let record = self
            .record(principal, Operation::SettingsUpdate, Some(&account))
            .details(json!({
                "appid": account.appid,
                "before": summary(&before),
                "after": summary(&settings),
            }))
            .announce(ChangeKind::Settings);
        self.store()
            .set_gateway_settings(&account.id, &settings, self.now(), &record)
            .await?;
        Ok(self.settings_view(&account.appid, settings))
    }
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
    fn urls_must_be_https_and_relays_may_use_loopback_http_when_allowed() {
        let loopback = AllowList::new(&["127.0.0.1".to_owned()]);
        let with = |f: fn(&mut GatewaySettings)| {
            let mut s = GatewaySettings::default();
            f(&mut s);
            validate(&s, &loopback)
        };
        assert!(with(|s| s.follow_qr_url = Some("https://mmbiz.qpic.cn/qr.jpg".into())).is_ok());
        assert!(with(|s| s.follow_qr_url = Some("http://mmbiz.qpic.cn/qr.jpg".into())).is_err());
        assert!(with(|s| s.follow_link = Some("javascript:alert(1)".into())).is_err());
        assert!(with(|s| s.push_relay_url = Some("https://owner.example/push".into())).is_ok());
        assert!(with(|s| s.push_relay_url = Some("http://127.0.0.1:8080/push".into())).is_ok());
        assert!(with(|s| s.push_relay_url = Some("http://owner.example/push".into())).is_err());
        assert!(with(|s| s.push_relay_url = Some("http://10.0.0.1/push".into())).is_err());
        // Internal addresses are refused when entered, unless the operator allows the host.
        assert!(with(|s| s.push_relay_url = Some("https://10.0.0.1/push".into())).is_err());
        assert!(with(|s| s.push_relay_url = Some("https://169.254.169.254/x".into())).is_err());
        let relay = GatewaySettings {
            push_relay_url: Some("http://127.0.0.1:8080/push".into()),
            ..GatewaySettings::default()
        };
        assert!(validate(&relay, &AllowList::default()).is_err());
    }
}
