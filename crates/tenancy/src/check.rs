//! The live credential check, and what to do when WeChat refuses: one table of fixes, in
//! Chinese and English, shared by the CLI, the dashboard and the token scheduler (whose
//! needs-attention reason is the English fix).
//!
//! Registering an account or replacing its AppSecret asks WeChat whether the credentials work
//! before anything is stored. The check calls `/cgi-bin/stable_token` with
//! `force_refresh=false` (docs/wechat.md §2): in that mode WeChat hands back the current stable
//! token without rotating it, and stable tokens are independent of `/cgi-bin/token` ones, so
//! the check invalidates nothing that the owner's current backend may still be using. It never
//! calls `/cgi-bin/token`, which would supersede the backend's token within 5 minutes.

use wechat::{AppSecret, ErrCode, WechatError};

/// Why WeChat refused the credentials (or could not be asked), with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", fix_for(self).en)]
pub struct CheckFailure {
    /// WeChat's errcode, when it answered with one.
    pub code: Option<i64>,
    /// The caller IP WeChat named (40164), to add to the whitelist.
    pub ip: Option<String>,
    /// Whether WeChat could not be reached at all (network error, time-out, 5xx).
    pub unreachable: bool,
}

/// What to do, in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    pub zh: String,
    pub en: String,
}

impl CheckFailure {
    /// The failure of `error`.
    pub fn from_error(error: &WechatError) -> Self {
        Self {
            code: error.code().map(|c| c.0),
            ip: error.caller_ip().map(|ip| ip.to_string()),
            unreachable: error.code().is_none(),
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> Fix {
        fix_for(self)
    }
}

const CONSOLE_BASIC: (&str, &str) = (
    "微信公众平台 → 设置与开发 → 基本配置",
    "WeChat Official Accounts Platform → Settings and Development → Basic Configuration",
);

/// The table: errcode (and caller IP) → what a person can do.
fn fix_for(failure: &CheckFailure) -> Fix {
    let (zh_console, en_console) = CONSOLE_BASIC;
    let fix = |zh: String, en: String| Fix { zh, en };
    if failure.unreachable {
        return fix(
            "无法连接微信服务器（网络错误或超时），凭据尚未验证，未保存任何内容。请检查本服务器能否访问 \
             api.weixin.qq.com 后重试。"
                .to_owned(),
            "WeChat could not be reached (network error or time-out), so the credentials were not \
             checked and nothing was stored. Check that this server can reach api.weixin.qq.com, \
             then try again."
                .to_owned(),
        );
    }
    match failure.code.map(ErrCode) {
        Some(ErrCode::INVALID_APPID) => fix(
            format!("微信不认识这个 AppID（40013）。请在 {zh_console} 中核对“开发者ID(AppID)”后重新填写。"),
            format!(
                "WeChat does not know this AppID (40013). Copy the AppID again from {en_console} \
                 (Developer ID)."
            ),
        ),
        Some(ErrCode::INVALID_APPSECRET) | Some(ErrCode::INVALID_CREDENTIAL) => fix(
            format!(
                "AppSecret 不正确（{}）。请在 {zh_console} 中重置“开发者密码(AppSecret)”，复制新值后重新填写。",
                failure.code.unwrap_or_default()
            ),
            format!(
                "WeChat rejected the AppSecret ({}). Reset the AppSecret in {en_console} \
                 (Developer Password) and enter the new value in wxhub.",
                failure.code.unwrap_or_default()
            ),
        ),
        Some(ErrCode::IP_NOT_IN_WHITELIST) => match &failure.ip {
            Some(ip) => fix(
                format!("本服务器的 IP {ip} 不在白名单中（40164）。请在 {zh_console} → IP白名单 中加入 {ip}，然后重试。"),
                format!(
                    "This server's IP {ip} is not in the account's IP whitelist (40164): add {ip} \
                     to the IP whitelist under {en_console} → IP Whitelist, then try again."
                ),
            ),
            None => fix(
                format!("本服务器的出口 IP 不在白名单中（40164）。请在 {zh_console} → IP白名单 中加入本服务器的出口 IP，然后重试。"),
                format!(
                    "This server's egress IP is not in the account's IP whitelist (40164): add it \
                     to the IP whitelist under {en_console} → IP Whitelist, then try again."
                ),
            ),
        },
        Some(ErrCode::APPSECRET_FROZEN) => fix(
            format!("AppSecret 已被管理员冻结（40243）。请在 {zh_console} 中解冻（或重置）AppSecret 后重试。"),
            format!(
                "The AppSecret is frozen by the account's administrator (40243): unfreeze (or \
                 reset) it in {en_console}, then try again."
            ),
        ),
        Some(ErrCode::IP_CONFIRMATION_PENDING) | Some(ErrCode::IP_NEEDS_CONFIRMATION) => fix(
            format!(
                "微信要求公众号管理员确认来自本服务器 IP 的调用（{}）。请管理员在微信中确认，或在 {zh_console} → IP白名单 中加入该 IP，然后重试。",
                failure.code.unwrap_or_default()
            ),
            format!(
                "WeChat wants the account's administrator to confirm calls from this server's IP \
                 ({}): confirm it in WeChat, or add the IP under {en_console} → IP Whitelist, \
                 then try again.",
                failure.code.unwrap_or_default()
            ),
        ),
        Some(ErrCode::IP_REJECTED_24H) | Some(ErrCode::IP_REJECTED_1H) => fix(
            format!(
                "公众号管理员拒绝了来自本服务器 IP 的调用（{}）。请在 {zh_console} → IP白名单 中加入该 IP 后重试。",
                failure.code.unwrap_or_default()
            ),
            format!(
                "The account's administrator rejected calls from this server's IP ({}): add the \
                 IP under {en_console} → IP Whitelist, then try again.",
                failure.code.unwrap_or_default()
            ),
        ),
        Some(ErrCode::DAILY_QUOTA_REACHED) => fix(
            "该公众号今日的接口调用次数已用完（45009）。北京时间 0 点重置后 wxhub 会自动重试；如需提前恢复，请在 微信公众平台 → 设置与开发 → 接口权限 中清零调用次数（每月 10 次），或在 wxhub 中执行“清零配额”。"
                .to_owned(),
            "The account's daily API quota is used up (45009). It resets at 00:00 \
             Asia/Shanghai, when wxhub tries again; to recover sooner, reset it in the WeChat \
             console (Settings and Development → API Permissions; 10 resets a month) or with \
             wxhub's clear quota."
                .to_owned(),
        ),
        Some(ErrCode::API_UNAUTHORIZED) => fix(
            "该公众号没有此接口的权限（48001）。wxhub 需要已认证的服务号；请确认账号类型与认证状态。"
                .to_owned(),
            "The account lacks the permission for this API (48001). wxhub needs a verified \
             service account; check the account's type and verification."
                .to_owned(),
        ),
        Some(code) => fix(
            format!("微信拒绝了这组凭据（错误码 {}）。请在 {zh_console} 中检查账号设置后重试。", code.0),
            format!(
                "WeChat refused the credentials (errcode {}). Check the account's settings in \
                 {en_console}, then try again.",
                code.0
            ),
        ),
        None => fix(
            "微信返回了无法识别的应答，凭据尚未验证，未保存任何内容。请稍后重试。".to_owned(),
            "WeChat answered in an unexpected way, so the credentials were not checked and \
             nothing was stored. Try again later."
                .to_owned(),
        ),
    }
}

/// Asks WeChat whether `appid` and `secret` work, without invalidating any token.
pub async fn check_credentials(
    client: &wechat::Client,
    appid: &str,
    secret: &AppSecret,
) -> Result<(), CheckFailure> {
    // force_refresh=false: no rotation, nothing superseded (see the module docs).
    client
        .get_stable_token(appid, secret, false)
        .await
        .map(drop)
        .map_err(|error| CheckFailure::from_error(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i64) -> CheckFailure {
        CheckFailure {
            code: Some(code),
            ip: None,
            unreachable: false,
        }
    }

    #[test]
    fn whitelist_fix_names_the_ip_wechat_reported() {
        let fix = CheckFailure {
            code: Some(40164),
            ip: Some("203.0.113.7".to_owned()),
            unreachable: false,
        }
        .fix();
        assert!(fix.en.contains("203.0.113.7") && fix.en.contains("IP Whitelist"));
        assert!(fix.zh.contains("203.0.113.7") && fix.zh.contains("IP白名单"));
    }

    #[test]
    fn every_listed_code_has_its_own_fix_in_both_languages() {
        let codes = [
            40013, 40125, 40001, 40164, 40243, 89501, 89503, 89506, 45009, 48001,
        ];
        for code in codes {
            let fix = failure(code).fix();
            assert!(fix.en.contains(&code.to_string()), "{code}: {}", fix.en);
            assert!(fix.zh.contains(&code.to_string()), "{code}: {}", fix.zh);
            assert!(
                !fix.en.contains("errcode"),
                "{code} fell through: {}",
                fix.en
            );
        }
        let unreachable = CheckFailure {
            code: None,
            ip: None,
            unreachable: true,
        };
        assert!(unreachable.fix().en.contains("could not be reached"));
    }
}
