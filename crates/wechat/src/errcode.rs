//! WeChat's global error codes (docs/wechat.md §8) and how wxhub classifies them.
//!
//! WeChat answers business errors with HTTP 200 and `{"errcode": N, "errmsg": "..."}`. The code is
//! the only stable part: `errmsg` is free text that grows request ids (`rid: ...`) and hints, so
//! nothing here or elsewhere matches on it. The simulator answers with [`ErrCode::message`], the
//! text real WeChat is observed to send.

use std::fmt;

/// A WeChat `errcode`. Known codes have constants; any other value is kept as it came.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrCode(pub i64);

/// What a caller should do about an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The access_token was rejected (superseded, malformed or expired): refresh it — once, and
    /// only if the rejected token is still the current one — and retry.
    TokenRejected,
    /// The platform is busy or rate-limiting: retry later with backoff.
    Transient,
    /// The account's credentials or console configuration are wrong (appid, secret, frozen
    /// secret, IP whitelist): a person must fix it; retrying soon is pointless.
    Credential,
    /// A daily quota is used up: wait for the daily reset (or clear the quota).
    Quota,
    /// The request itself is wrong (a missing parameter, a bad or reused OAuth code, an openid
    /// of another account): fix the request; retrying the same one fails the same way.
    Request,
    /// The account may not use this API (unverified account, wrong token type, missing scope).
    Permission,
    /// A code wxhub does not know.
    Unknown,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $code:expr, $class:ident, $msg:expr; )*) => {
        impl ErrCode {
            $( $(#[$doc])* pub const $name: ErrCode = ErrCode($code); )*

            /// Every code in docs/wechat.md §8 (and the IP-confirmation codes of §1) that wxhub
            /// meets, with the push-URL probe codes of §3.7, the QR codes of docs/wechat-2.md
            /// §1.5 and the statistics codes of its §5.3, in table order.
            pub const KNOWN: &'static [ErrCode] = &[$(ErrCode::$name),*];

            /// The constant's name for a known code (`"INVALID_CREDENTIAL"`), for logs.
            pub fn name(self) -> Option<&'static str> {
                match self.0 { $( $code => Some(stringify!($name)), )* _ => None }
            }

            /// How wxhub treats the code.
            pub fn class(self) -> ErrorClass {
                match self.0 { $( $code => ErrorClass::$class, )* _ => ErrorClass::Unknown }
            }

            /// The errmsg real WeChat sends with this code (without the `rid:` suffix).
            pub fn message(self) -> &'static str {
                match self.0 { $( $code => $msg, )* _ => "unknown error" }
            }
        }
    };
}

codes! {
    /// `-1` system error: the platform is busy.
    SYSTEM_ERROR = -1, Transient, "system error";
    /// `0` success.
    OK = 0, Unknown, "ok";
    /// Token superseded or invalid (older docs: wrong AppSecret when fetching a token).
    INVALID_CREDENTIAL = 40001, TokenRejected,
        "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r";
    /// `grant_type` is not the expected value.
    INVALID_GRANT_TYPE = 40002, Request, "invalid grant_type";
    /// The openid does not belong to this account (or is not a follower where required).
    INVALID_OPENID = 40003, Request, "invalid openid";
    /// Unknown appid, or an appid that differs from the token's owner.
    INVALID_APPID = 40013, Credential, "invalid appid";
    /// A malformed or illegal access_token.
    INVALID_ACCESS_TOKEN = 40014, TokenRejected, "invalid access_token";
    /// Unknown or expired OAuth code.
    INVALID_CODE = 40029, Request, "invalid code";
    /// Unknown OAuth refresh token.
    INVALID_REFRESH_TOKEN = 40030, Request, "invalid refresh_token";
    /// An invalid parameter (docs/wechat-2.md §1.5: out-of-range QR values, strict input).
    INVALID_ARGS = 40035, Request, "invalid args";
    /// Invalid `action_info` of a QR create (docs/wechat-2.md §1.5, strict input).
    INVALID_ACTION_INFO = 40053, Request, "invalid action info";
    /// `callback/check` found no push URL configured, or one it cannot use (docs/wechat.md
    /// §3.7): the console's server configuration must be fixed.
    INVALID_CALLBACK_URL = 40201, Credential, "invalid url";
    /// `callback/check` with an `action` other than `all`, `dns`, `ping` (docs/wechat.md §3.7).
    INVALID_CHECK_ACTION = 40202, Request, "invalid action";
    /// `callback/check` with a `check_operator` other than `DEFAULT`, `CHINANET`, `UNICOM`,
    /// `CAP` (docs/wechat.md §3.7).
    INVALID_CHECK_OPERATOR = 40203, Request, "invalid check_operator";
    /// Wrong AppSecret.
    INVALID_APPSECRET = 40125, Credential, "invalid appsecret";
    /// The OAuth code was already exchanged.
    CODE_BEEN_USED = 40163, Request, "code been used";
    /// The caller's IP is not in the account's whitelist; errmsg names the IP.
    IP_NOT_IN_WHITELIST = 40164, Credential, "not in whitelist";
    /// The AppSecret was frozen by the account's administrator.
    APPSECRET_FROZEN = 40243, Credential, "AppSecret is frozen";
    /// No access_token parameter.
    ACCESS_TOKEN_MISSING = 41001, Request, "access_token missing";
    /// No appid parameter.
    APPID_MISSING = 41002, Request, "appid missing";
    /// No secret parameter.
    APPSECRET_MISSING = 41004, Request, "appsecret missing";
    /// No OAuth code parameter.
    CODE_MISSING = 41008, Request, "missing code";
    /// The access_token outlived its 7200 s.
    ACCESS_TOKEN_EXPIRED = 42001, TokenRejected, "access_token expired";
    /// The OAuth refresh token outlived its 30 days.
    REFRESH_TOKEN_EXPIRED = 42002, Request, "refresh_token expired";
    /// The OAuth code timed out.
    CODE_EXPIRED = 42003, Request, "code expired";
    /// The user changed their password; their OAuth tokens were revoked.
    USER_TOKENS_REVOKED = 42007, Request, "access_token and refresh_token exception";
    /// The recipient must follow the account.
    REQUIRE_SUBSCRIBE = 43004, Request, "require subscribe";
    /// The POST body is empty.
    EMPTY_POST_DATA = 44002, Request, "empty post data";
    /// A daily quota is used up.
    DAILY_QUOTA_REACHED = 45009, Quota, "reach max api daily quota limit";
    /// A per-minute frequency limit was hit.
    MINUTE_QUOTA_REACHED = 45011, Transient, "api minute-quota reach limit  mustslower  retry next minute";
    /// The POST body is not the JSON expected.
    DATA_FORMAT_ERROR = 47001, Request, "data format error";
    /// The API is not permitted for this account or token.
    API_UNAUTHORIZED = 48001, Permission, "api unauthorized";
    /// The monthly budget of quota resets is used up.
    CLEAR_QUOTA_LIMIT = 48006, Quota, "forbid to clear quota because of reaching the limit";
    /// The user has not authorized this API.
    USER_UNAUTHORIZED = 50001, Permission, "user unauthorized";
    /// A statistics date is not `YYYY-MM-DD` or not a real date (docs/wechat-2.md §5.3).
    DATE_FORMAT_ERROR = 61500, Request, "date format error";
    /// A statistics range is refused: longer than the endpoint's span, ending today or later,
    /// beginning after its end or before 2014-12-01 (docs/wechat-2.md §5.2, §5.3).
    DATE_RANGE_ERROR = 61501, Request, "date range error";
    /// `cgi_path` is unknown to the quota API.
    CGI_PATH_NOT_FOUND = 76021, Request, "cgi_path not found, please check";
    /// The token may not inspect this `cgi_path`.
    CGI_PATH_NO_PERMISSION = 76022, Request, "could not use this cgi_path,no permission";
    /// `cgi_path` lacks its leading `/`.
    CGI_PATH_INVALID = 76003, Request, "invalid cgi_path";
    /// An administrator confirmation for this IP is pending.
    IP_CONFIRMATION_PENDING = 89501, Credential, "this IP is pending administrator confirmation";
    /// This call from a new IP needs an administrator's confirmation.
    IP_NEEDS_CONFIRMATION = 89503, Credential, "this call requires administrator confirmation";
    /// The administrator rejected this IP; retry after 24 h.
    IP_REJECTED_24H = 89506, Credential, "this IP was rejected by the administrator, retry after 24 hours";
    /// The administrator rejected this IP; retry after 1 h.
    IP_REJECTED_1H = 89507, Credential, "this IP was rejected by the administrator, retry after 1 hour";
}

impl ErrCode {
    /// The numeric value.
    pub fn code(self) -> i64 {
        self.0
    }

    /// Whether wxhub has a name and a class for this code.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// Success is an absent errcode or 0 (docs/wechat.md §0).
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i64> for ErrCode {
    fn from(code: i64) -> Self {
        ErrCode(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_what_callers_must_do() {
        for code in [40001, 40014, 42001] {
            assert_eq!(ErrCode(code).class(), ErrorClass::TokenRejected, "{code}");
        }
        for code in [-1, 45011] {
            assert_eq!(ErrCode(code).class(), ErrorClass::Transient, "{code}");
        }
        for code in [40013, 40125, 40243, 40164, 89503] {
            assert_eq!(ErrCode(code).class(), ErrorClass::Credential, "{code}");
        }
        assert_eq!(ErrCode(45009).class(), ErrorClass::Quota);
        assert_eq!(ErrCode(123_456).class(), ErrorClass::Unknown);
        assert!(!ErrCode(123_456).is_known());
    }

    #[test]
    fn known_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrCode::KNOWN {
            assert!(seen.insert(code.0), "{code:?} listed twice");
        }
    }
}
