//! What an owner enters in WeChat's console (公众平台 → 设置与开发 → 基本配置 and 接口权限) so
//! that wxhub serves the account: the server URL with its Token and EncodingAESKey, the
//! message encryption mode, the web-authorization domain and the IP whitelist — and WeChat's
//! own probe of the server URL (docs/wechat.md §3.7).

use store::accounts::{Account, SecretsPresent};
use store::gateway::PushMode;
use wechat::{AccessToken, CallbackCheckAction, CheckOperator};

use crate::policy::Operation;
use crate::{Principal, Tenancy, TenancyError};

/// Everything the console-settings page lists, without a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub appid: String,
    /// 服务器地址(URL).
    pub push_url: String,
    /// Which push credentials are stored; the AppSecret's hint only for its owner (and the
    /// CLI), never for operators.
    pub secrets: SecretsPresent,
    /// 消息加解密方式 as configured, or what wxhub assumes (safe with an EncodingAESKey).
    pub push_mode: PushMode,
    /// Whether `push_mode` was set by the owner rather than assumed.
    pub push_mode_set: bool,
    /// 网页授权域名: the host (and port, if any) of the hub's public URL.
    pub web_auth_domain: String,
    /// IP白名单 entries: the configured egress addresses, then any address WeChat reported
    /// refusing (40164) that is not among them.
    pub whitelist: Vec<String>,
    /// Whether the account may use web authorization at all (a verified service account).
    pub web_login: bool,
}

/// What WeChat's probe of the server URL reported (docs/wechat.md §3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The addresses the URL's host resolved to, with the network operator seen.
    pub dns: Vec<(String, String)>,
    /// Per address probed: the address, from which operator, packet loss and time.
    pub ping: Vec<ProbeHop>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeHop {
    pub ip: String,
    pub from_operator: String,
    pub package_loss: String,
    pub time: String,
}

impl ProbeReport {
    /// Whether every probe got through (no packet lost).
    pub fn reachable(&self) -> bool {
        !self.ping.is_empty() && self.ping.iter().all(|hop| hop.package_loss == "0%")
    }
}

/// The host (and port) of `url`, as WeChat's console takes a domain.
fn domain_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    }
}

/// The whitelist entries: `configured`, then the address WeChat last refused, if new.
fn whitelist(configured: &[std::net::IpAddr], refused: Option<String>) -> Vec<String> {
    let mut entries: Vec<String> = configured.iter().map(ToString::to_string).collect();
    if let Some(ip) = refused
        && !entries.contains(&ip)
    {
        entries.push(ip);
    }
    entries
}

impl Tenancy {
    /// The account's console settings.
    pub async fn console_settings(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<ConsoleSettings, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::SettingsView, appid)
            .await?;
        let store = self.store();
        let settings = store.gateway_settings(&account.id).await?;
        let mut secrets = store.secrets_present(&account.id).await?;
        if matches!(principal, Principal::Operator { .. }) {
            secrets.appsecret_hint = None;
        }
        let refused_ip = store
            .get_core_token(&account.id)
            .await?
            .and_then(|token| token.last_error_ip);
        let push_mode = settings.push_mode.unwrap_or(if secrets.encoding_aes_key {
            PushMode::Safe
        } else {
            PushMode::Plain
        });
        Ok(ConsoleSettings {
            push_url: self.push_url(&account.appid),
            push_mode,
            push_mode_set: settings.push_mode.is_some(),
            web_auth_domain: domain_of(&self.config().public_url),
            whitelist: whitelist(&self.config().egress_ips, refused_ip),
            web_login: crate::websites::web_login_refusal(&account).is_none(),
            appid: account.appid,
            secrets,
        })
    }

    /// Asks WeChat to probe the account's server URL from its side (DNS, then a signed
    /// verification request to each address) with the core token, and reports what it saw.
    /// Changes nothing; audited, since it is a call in the account's name.
    pub async fn probe_push_url(
        &self,
        principal: &Principal,
        appid: &str,
    ) -> Result<ProbeReport, TenancyError> {
        let account = self
            .authorized_account(principal, Operation::SettingsProbe, appid)
            .await?;
        let token = self.current_core_token(&account).await?;
        let result = self
            .inner
            .wechat
            .check_callback(&token, CallbackCheckAction::All, CheckOperator::Default)
            .await;
        let outcome = match &result {
            Ok(check) if check.reachable() => "reachable".to_owned(),
            Ok(_) => "unreachable".to_owned(),
            Err(error) => format!("refused: {error}"),
        };
        let record = self
            .record(principal, Operation::SettingsProbe, Some(&account))
            .details(serde_json::json!({ "appid": account.appid, "outcome": outcome }));
        self.store().append_audit(&record, self.now()).await?;
        let check = result.map_err(TenancyError::Wechat)?;
        Ok(ProbeReport {
            dns: check
                .dns
                .into_iter()
                .map(|d| (d.ip, d.real_operator))
                .collect(),
            ping: check
                .ping
                .into_iter()
                .map(|p| ProbeHop {
                    ip: p.ip,
                    from_operator: p.from_operator,
                    package_loss: p.package_loss,
                    time: p.time,
                })
                .collect(),
        })
    }

    /// The account's current core token, read from the store as the scheduler keeps it
    /// (never fetched here: a fresh fetch would supersede the token every backend uses).
    async fn current_core_token(&self, account: &Account) -> Result<AccessToken, TenancyError> {
        let row = self.store().get_core_token(&account.id).await?;
        let now = self.now();
        match row {
            Some(store::tokens::CoreToken {
                token: Some(ciphertext),
                expires_at: Some(expires_at),
                ..
            }) if expires_at > now => {
                let sealed = self
                    .store()
                    .load_account_secrets(&account.id)
                    .await?
                    .ok_or(TenancyError::NotFound { what: "account" })?;
                let vault = self.inner.vault.for_wrapped_dek(&sealed.wrapped_dek);
                Ok(accounts::open_core_token(
                    &vault,
                    &account.id,
                    &sealed.wrapped_dek,
                    &ciphertext,
                )?)
            }
            _ => Err(TenancyError::invalid(
                "token",
                "the account has no valid access token yet: fix what its health says, then \
                 try again",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_is_the_public_host_with_its_port() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            domain_of(&url("https://hub.example.com/")),
            "hub.example.com"
        );
        assert_eq!(domain_of(&url("http://127.0.0.1:8080/")), "127.0.0.1:8080");
    }

    #[test]
    fn the_whitelist_adds_the_address_wechat_refused_once() {
        let configured = ["203.0.113.7".parse().unwrap()];
        assert_eq!(
            whitelist(&configured, Some("198.51.100.2".to_owned())),
            ["203.0.113.7", "198.51.100.2"]
        );
        assert_eq!(
            whitelist(&configured, Some("203.0.113.7".to_owned())),
            ["203.0.113.7"]
        );
        assert!(whitelist(&[], None).is_empty());
    }
}
