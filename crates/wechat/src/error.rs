//! [`WechatError`]: everything a call to the WeChat API can end in, other than success.
//!
//! The rule of this module: no error may carry a secret. Request URLs carry `secret=` and
//! `access_token=` in their query, so they never enter an error — reqwest errors are stripped
//! with `without_url()` and only their kind is kept; JSON decoding errors are reduced to their
//! category and position, because serde quotes offending values.

use std::net::IpAddr;

use crate::errcode::{ErrCode, ErrorClass};

/// Errmsg longer than this is cut, so a misbehaving server cannot flood logs.
const MAX_ERRMSG: usize = 512;

/// A failed WeChat API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// WeChat answered with a non-zero `errcode` (whatever the HTTP status, docs/wechat.md §0).
    #[error("WeChat {endpoint} returned errcode {code}: {errmsg}{}", rid.as_ref().map(|r| format!(" (rid {r})")).unwrap_or_default())]
    Api {
        /// The API path, e.g. `/cgi-bin/token`.
        endpoint: &'static str,
        /// The `errcode`.
        code: ErrCode,
        /// The `errmsg` without its `rid:` suffix.
        errmsg: String,
        /// The request id WeChat appends to errmsg (`rid: ...`), for support tickets.
        rid: Option<String>,
    },
    /// A non-2xx HTTP status without a WeChat error body.
    #[error("WeChat {endpoint} answered HTTP {status}")]
    Http {
        /// The API path.
        endpoint: &'static str,
        /// The HTTP status code.
        status: u16,
    },
    /// No answer within the configured timeout.
    #[error("WeChat {endpoint} timed out")]
    Timeout {
        /// The API path.
        endpoint: &'static str,
    },
    /// The connection could not be established (DNS, TCP, TLS).
    #[error("could not connect to WeChat for {endpoint}")]
    Connect {
        /// The API path.
        endpoint: &'static str,
    },
    /// The request failed in transit for another reason (connection reset, body error, ...).
    #[error("request to WeChat {endpoint} failed: {detail}")]
    Transport {
        /// The API path.
        endpoint: &'static str,
        /// What failed (never the URL).
        detail: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("unexpected response from WeChat {endpoint}: {detail}")]
    Decode {
        /// The API path.
        endpoint: &'static str,
        /// What did not match (never a field's value).
        detail: String,
    },
    /// The call was refused before sending because an argument breaks a documented rule.
    #[error("invalid input: {what}")]
    InvalidInput {
        /// Which rule was broken.
        what: String,
    },
}

impl WechatError {
    /// Builds an [`WechatError::Api`] from a raw errcode/errmsg, splitting off the `rid:`.
    pub fn api(endpoint: &'static str, code: ErrCode, errmsg: &str) -> Self {
        let (errmsg, rid) = split_rid(errmsg);
        let mut errmsg = errmsg.to_owned();
        if errmsg.len() > MAX_ERRMSG {
            let mut end = MAX_ERRMSG;
            while !errmsg.is_char_boundary(end) {
                end -= 1;
            }
            errmsg.truncate(end);
        }
        WechatError::Api {
            endpoint,
            code,
            errmsg,
            rid,
        }
    }

    /// What a caller should do about it. Timeouts, connection failures, other transport
    /// failures, HTTP 5xx and 429 are [`ErrorClass::Transient`]; API errors follow
    /// [`ErrCode::class`].
    pub fn class(&self) -> ErrorClass {
        match self {
            WechatError::Api { code, .. } => code.class(),
            WechatError::Http { status, .. } if *status >= 500 || *status == 429 => {
                ErrorClass::Transient
            }
            WechatError::Http { .. } => ErrorClass::Unknown,
            WechatError::Timeout { .. }
            | WechatError::Connect { .. }
            | WechatError::Transport { .. } => ErrorClass::Transient,
            WechatError::Decode { .. } => ErrorClass::Unknown,
            WechatError::InvalidInput { .. } => ErrorClass::Request,
        }
    }

    /// The WeChat errcode, for API errors.
    pub fn code(&self) -> Option<ErrCode> {
        match self {
            WechatError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The API path the error came from (`None` for refused input).
    pub fn endpoint(&self) -> Option<&'static str> {
        match self {
            WechatError::Api { endpoint, .. }
            | WechatError::Http { endpoint, .. }
            | WechatError::Timeout { endpoint }
            | WechatError::Connect { endpoint }
            | WechatError::Transport { endpoint, .. }
            | WechatError::Decode { endpoint, .. } => Some(endpoint),
            WechatError::InvalidInput { .. } => None,
        }
    }

    /// For a 40164 (IP not whitelisted), the caller's egress IP that WeChat echoes in errmsg
    /// (`invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist`, docs/wechat.md §1), so the owner can
    /// be told exactly which address to whitelist.
    pub fn caller_ip(&self) -> Option<IpAddr> {
        match self {
            WechatError::Api { code, errmsg, .. } if *code == ErrCode::IP_NOT_IN_WHITELIST => {
                parse_caller_ip(errmsg)
            }
            _ => None,
        }
    }
}

/// Splits `"... rid: 654df33c-64386a2f-29857782"` into the message and the rid.
fn split_rid(errmsg: &str) -> (&str, Option<String>) {
    match errmsg.rfind("rid:") {
        Some(pos) => {
            let rid = errmsg[pos + 4..].trim();
            let is_rid = !rid.is_empty()
                && rid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if is_rid {
                let msg = errmsg[..pos].trim_end().trim_end_matches(',').trim_end();
                (msg, Some(rid.to_owned()))
            } else {
                (errmsg, None)
            }
        }
        None => (errmsg, None),
    }
}

fn parse_caller_ip(errmsg: &str) -> Option<IpAddr> {
    let after = |marker: &str| {
        errmsg.find(marker).and_then(|pos| {
            errmsg[pos + marker.len()..]
                .split(|c: char| c.is_whitespace() || c == ',')
                .find(|s| !s.is_empty())
                .and_then(|s| s.parse::<IpAddr>().ok())
        })
    };
    after("invalid ip ").or_else(|| {
        after("ipv6 ").map(|ip| match ip {
            // `::ffff:1.2.3.4` is how WeChat spells an IPv4 caller in the ipv6 slot.
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        })
    })
}

/// A secret-free description of a JSON decoding failure: serde's own message quotes the
/// offending value, which could be a token, so only the category and position are kept —
/// except for "missing field" messages, which name a field and nothing else.
pub(crate) fn describe_json_error(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    if msg.starts_with("missing field") {
        return msg;
    }
    let category = match err.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{category} at line {} column {}", err.line(), err.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn rid_suffix_is_split_from_errmsg() {
        let err = WechatError::api(
            "/cgi-bin/token",
            ErrCode::INVALID_CREDENTIAL,
            "invalid credential, access_token is invalid or not latest, could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r rid: 654df33c-64386a2f-29857782",
        );
        match &err {
            WechatError::Api { errmsg, rid, .. } => {
                assert_eq!(rid.as_deref(), Some("654df33c-64386a2f-29857782"));
                assert!(errmsg.ends_with("https://mmbizurl.cn/s/JtxxFh33r"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.class(), ErrorClass::TokenRejected);
        assert!(err.to_string().contains("(rid 654df33c-64386a2f-29857782)"));
    }

    #[test]
    fn errmsg_without_rid_is_kept_whole() {
        match WechatError::api("/x", ErrCode(40013), "invalid appid hint: [abc]") {
            WechatError::Api { errmsg, rid, .. } => {
                assert_eq!(errmsg, "invalid appid hint: [abc]");
                assert_eq!(rid, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn caller_ip_is_parsed_from_40164() {
        let err = WechatError::api(
            "/cgi-bin/token",
            ErrCode::IP_NOT_IN_WHITELIST,
            "invalid ip 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist rid: 6571a1b2-0c1d2e3f-4a5b6c7d",
        );
        assert_eq!(err.caller_ip(), Some(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
        assert_eq!(err.class(), ErrorClass::Credential);

        let v6_only = WechatError::api(
            "/cgi-bin/token",
            ErrCode::IP_NOT_IN_WHITELIST,
            "invalid ip  ipv6 ::ffff:10.0.0.7, not in whitelist",
        );
        assert_eq!(
            v6_only.caller_ip(),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)))
        );

        let other_code = WechatError::api("/x", ErrCode(40013), "invalid ip 1.2.3.4");
        assert_eq!(other_code.caller_ip(), None);
    }

    #[test]
    fn transport_failures_and_5xx_are_transient() {
        assert_eq!(
            WechatError::Timeout { endpoint: "/x" }.class(),
            ErrorClass::Transient
        );
        assert_eq!(
            WechatError::Connect { endpoint: "/x" }.class(),
            ErrorClass::Transient
        );
        assert_eq!(
            WechatError::Http {
                endpoint: "/x",
                status: 502
            }
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            WechatError::Http {
                endpoint: "/x",
                status: 404
            }
            .class(),
            ErrorClass::Unknown
        );
    }

    #[test]
    fn json_error_description_never_quotes_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            expires_in: i64,
        }
        let err =
            serde_json::from_str::<T>(r#"{"expires_in":"SECRET_LOOKING_VALUE"}"#).unwrap_err();
        let detail = describe_json_error(&err);
        assert!(!detail.contains("SECRET_LOOKING_VALUE"), "{detail}");
        let err = serde_json::from_str::<T>("{}").unwrap_err();
        assert!(describe_json_error(&err).contains("expires_in"));
    }
}
