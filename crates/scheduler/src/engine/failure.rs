//! Failure text: what a failed token call means for the account (the next state) and what the
//! owner should do about it, in words a person can act on. Holds no secret: WeChat's errmsg is
//! quoted only through `WechatError`'s redacting `Display`.

use store::tokens::TokenState;
use wechat::{ErrCode, ErrorClass, WechatError};

/// The state a failed call leads to, WeChat's errcode, the human reason, and the caller IP
/// WeChat reported (40164).
pub(super) fn failure_text(
    error: &WechatError,
) -> (TokenState, Option<i64>, String, Option<String>) {
    let code = error.code().map(|c| c.0);
    match error.class() {
        ErrorClass::Transient | ErrorClass::Unknown | ErrorClass::TokenRejected => (
            TokenState::Retrying,
            code,
            format!("WeChat did not issue a token ({error}); retrying with backoff"),
            None,
        ),
        ErrorClass::Quota => (
            TokenState::QuotaExhausted,
            code,
            "WeChat's daily quota for fetching the access_token is used up (45009). wxhub waits \
             for the daily reset at 00:00 Asia/Shanghai; to recover sooner, reset the API quota \
             in the WeChat console (开发 → 接口权限 / clear_quota, 10 resets a month)"
                .to_owned(),
            None,
        ),
        ErrorClass::Credential | ErrorClass::Request | ErrorClass::Permission => {
            let ip = error.caller_ip().map(|ip| ip.to_string());
            let reason = match (error.code().unwrap_or(ErrCode(0)), &ip) {
                (ErrCode::IP_NOT_IN_WHITELIST, Some(ip)) => format!(
                    "WeChat refused the token call from IP {ip} (40164, not in the whitelist): \
                     add {ip} to the IP whitelist in the WeChat console (开发 → 基本配置 → \
                     IP白名单)"
                ),
                (ErrCode::IP_NOT_IN_WHITELIST, None) => "WeChat refused the token call because \
                     this server's IP is not in the whitelist (40164): add the server's egress \
                     IP to the IP whitelist in the WeChat console (开发 → 基本配置 → IP白名单)"
                    .to_owned(),
                (ErrCode::INVALID_APPSECRET, _) => "WeChat rejected the AppSecret (40125 invalid \
                     appsecret): copy or reset the AppSecret in the WeChat console (开发 → 基本配置) \
                     and update it in wxhub"
                    .to_owned(),
                (ErrCode::INVALID_APPID, _) => "WeChat does not know this AppID (40013 invalid \
                     appid): check the AppID in the WeChat console (开发 → 基本配置) and register \
                     the account again with the right one"
                    .to_owned(),
                (ErrCode::APPSECRET_FROZEN, _) => "The AppSecret is frozen by the account's \
                     administrator (40243): unfreeze it in the WeChat console (开发 → 基本配置)"
                    .to_owned(),
                (ErrCode(89501), _) | (ErrCode(89503), _) => "WeChat wants the account \
                     administrator to confirm calls from this server's IP (89501/89503): confirm \
                     it in WeChat, or add the IP to the IP whitelist in the WeChat console"
                    .to_owned(),
                (ErrCode(89506), _) | (ErrCode(89507), _) => "The account administrator \
                     rejected calls from this server's IP (89506/89507): add the IP to the IP \
                     whitelist in the WeChat console"
                    .to_owned(),
                (code, _) => format!(
                    "WeChat refused to issue a token (errcode {}): {error}; check the account's \
                     settings in the WeChat console",
                    code.0
                ),
            };
            (TokenState::NeedsAttention, code, reason, ip)
        }
    }
}
