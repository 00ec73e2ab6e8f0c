//! Failure text: what a failed token call means for the account (the next state) and what the
//! owner should do about it, in words a person can act on. Holds no secret: WeChat's errmsg is
//! quoted only through `WechatError`'s redacting `Display`.

use store::tokens::TokenState;
use tenancy::CheckFailure;
use wechat::{ErrorClass, WechatError};

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
        // What to do comes from the one table the CLI and the dashboard show too.
        ErrorClass::Quota => (
            TokenState::QuotaExhausted,
            code,
            CheckFailure::from_error(error).fix().en,
            None,
        ),
        ErrorClass::Credential | ErrorClass::Request | ErrorClass::Permission => {
            let failure = CheckFailure::from_error(error);
            let reason = format!("WeChat refused to issue a token. {}", failure.fix().en);
            (TokenState::NeedsAttention, code, reason, failure.ip)
        }
    }
}
