//! [`GatewayError`]: everything a gateway request can end in other than success, and its one
//! mapping to HTTP.
//!
//! Three audiences, three shapes:
//! - a person in WeChat's browser gets a zh-CN/en page on wxhub's own origin saying what went
//!   wrong and what to do — in particular whenever the client or its redirect_uri is not
//!   verified, because redirecting to an unverified URI would make wxhub an open redirector
//!   (RFC 6749 §4.1.2.1);
//! - a relying party gets RFC 6749 errors: a redirect with `error=` once its redirect_uri is
//!   verified (§4.1.2.1), JSON from the token endpoint (§5.2), `WWW-Authenticate` from
//!   userinfo (RFC 6750 §3.1);
//! - WeChat's push delivery gets a short status and text.
//!
//! The internal cause is logged here, never returned, and never contains a secret.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::pages::{self, Page};

/// Why a push was refused (nothing is stored for any of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRejection {
    /// The body exceeds 64 KiB.
    TooLarge,
    /// The account has no push Token (or no EncodingAESKey for an encrypted push).
    NotConfigured,
    /// `signature` or `msg_signature` does not verify.
    BadSignature,
    /// `timestamp` is missing, malformed or outside the window.
    Stale,
    /// This `(timestamp, nonce)` was already used.
    Replay,
    /// The XML is malformed, has a DOCTYPE, or misses fields.
    BadXml,
    /// Decryption failed, or the message is for another appid or original id.
    WrongAccount,
    /// The account is in safe (or compatible) mode but the push is not (fully) encrypted: a
    /// downgrade to a body nothing signs.
    NotEncrypted,
    /// A plain or compatible-mode push for an account whose original id is not configured:
    /// `ToUserName` cannot be checked.
    OriginalIdMissing,
}

impl PushRejection {
    fn status(self) -> StatusCode {
        match self {
            PushRejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PushRejection::NotConfigured => StatusCode::NOT_FOUND,
            PushRejection::BadSignature
            | PushRejection::Replay
            | PushRejection::Stale
            | PushRejection::NotEncrypted => StatusCode::FORBIDDEN,
            PushRejection::BadXml | PushRejection::WrongAccount => StatusCode::BAD_REQUEST,
            PushRejection::OriginalIdMissing => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn text(self) -> &'static str {
        match self {
            PushRejection::TooLarge => "push body too large",
            PushRejection::NotConfigured => "push is not configured for this account",
            PushRejection::BadSignature => "bad signature",
            PushRejection::Stale => "timestamp outside the accepted window",
            PushRejection::Replay => "replayed request",
            PushRejection::BadXml => "malformed push",
            PushRejection::WrongAccount => "push is not for this account",
            PushRejection::NotEncrypted => {
                "the account is configured for encrypted pushes; unencrypted push refused"
            }
            PushRejection::OriginalIdMissing => {
                "the account's original id (gh_...) is not configured in wxhub; plain and \
                 compatible-mode pushes are refused until it is"
            }
        }
    }
}

/// Token endpoint error codes (RFC 6749 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
}

impl TokenErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            TokenErrorCode::InvalidRequest => "invalid_request",
            TokenErrorCode::InvalidClient => "invalid_client",
            TokenErrorCode::InvalidGrant => "invalid_grant",
            TokenErrorCode::UnsupportedGrantType => "unsupported_grant_type",
        }
    }
}

/// Why an account cannot offer web login (docs/wechat.md §4: verified service accounts only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    SubscriptionAccount,
    Unverified,
}

/// Everything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No active account with this appid.
    #[error("unknown or disabled account")]
    UnknownAccount,
    /// The client_id is missing, unknown, or registered for another account.
    #[error("unknown client")]
    UnknownClient,
    /// The redirect_uri is missing or not one of the client's registered URIs.
    #[error("redirect_uri is not registered for the client")]
    RedirectUriMismatch,
    /// The account cannot use WeChat web login.
    #[error("account cannot offer web login: {0:?}")]
    AccountCannotLogin(LoginRefusal),
    /// An authorization error to send back to the verified redirect_uri (RFC 6749 §4.1.2.1).
    #[error("authorization error {error}: {description}")]
    AuthorizeRedirect {
        redirect_uri: String,
        state: Option<String>,
        /// The issuer, sent as `iss` (RFC 9207).
        issuer: String,
        error: &'static str,
        description: &'static str,
    },
    /// A login request whose `client_id` or `redirect_uri` (or, on a later step, whose
    /// `code` or `state`) is repeated or not valid UTF-8: nothing can be verified, so it gets a
    /// page.
    #[error("malformed login request (repeated or non-UTF-8 parameter)")]
    MalformedLoginRequest,
    /// The scan page's login is unknown, expired or finished.
    #[error("scan login unknown, expired or finished")]
    ScanLoginUnknown,
    /// A confirmation link whose sign-in is unknown, expired, already confirmed or finished.
    #[error("scan confirmation unknown, expired or done")]
    ConfirmationUnknown,
    /// The confirmation link was opened by someone other than the person who scanned.
    #[error("scan confirmation by someone other than the scanner")]
    NotTheScanner,
    /// A method the route does not answer; `allow` is the `Allow` header (RFC 9110 §15.5.6).
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// The WeChat callback came without a `state`.
    #[error("login callback without state")]
    StateMissing,
    /// The `state` is unknown, expired, already used, or belongs to another account.
    #[error("login state unknown, expired, used or for another account")]
    StateUnknown,
    /// WeChat answered the login with a snapshot-page (virtual) user (§4.3).
    #[error("snapshot-page user")]
    SnapshotUser,
    /// The follow page's wait is unknown, expired or finished.
    #[error("follow wait unknown or expired")]
    FollowWaitUnknown,
    /// A login step came from another browser than the one that started the login (no or
    /// another login cookie).
    #[error("login step from another browser than the one that started it")]
    BrowserMismatch,
    /// WeChat refused or failed a login call.
    #[error("WeChat call failed: {0}")]
    Wechat(#[from] wechat::WechatError),
    /// The scheduler has no core token for the account.
    #[error(transparent)]
    CoreToken(#[from] crate::CoreTokenError),
    /// Token endpoint error (RFC 6749 §5.2).
    #[error("token request refused: {code:?}: {description}")]
    Token {
        code: TokenErrorCode,
        description: &'static str,
    },
    /// Userinfo with a missing, unknown, expired or revoked access token (RFC 6750 §3.1).
    #[error("invalid access token")]
    InvalidAccessToken,
    /// A push was refused.
    #[error("push refused: {0:?}")]
    Push(PushRejection),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The vault or the account's secrets failed.
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
    /// A stored signing key could not be opened (a master key missing from the keyring, or
    /// damaged ciphertext).
    #[error("signing key {kid} cannot be opened")]
    SigningKey {
        kid: String,
        #[source]
        source: vault::VaultError,
    },
    /// The HTTP client for push routes could not be built.
    #[error("the push routes' HTTP client cannot be built")]
    HttpClient(#[source] reqwest::Error),
    /// Too many requests from this client IP or at this account
    /// ([`crate::limits::GatewayLimits`]); answered 429 with `Retry-After`.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    /// A broken invariant of wxhub's own data (never the caller's fault).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl GatewayError {
    pub(crate) fn token(code: TokenErrorCode, description: &'static str) -> Self {
        GatewayError::Token { code, description }
    }

    fn page(&self) -> Page {
        match self {
            GatewayError::UnknownAccount => Page::error(
                StatusCode::NOT_FOUND,
                ("找不到这个公众号", "Unknown account"),
                (
                    "这个登录地址对应的公众号不存在或已停用。",
                    "The Official Account in this login address does not exist or is disabled.",
                ),
                (
                    "请回到网站重新点击登录；如果问题持续，请联系网站管理员。",
                    "Go back to the website and start the login again; if it keeps happening, contact the website's administrator.",
                ),
            ),
            GatewayError::UnknownClient => Page::error(
                StatusCode::BAD_REQUEST,
                ("网站未登记", "Unknown website"),
                (
                    "发起登录的网站（client_id）没有在这个公众号下登记。",
                    "The website that started this login (its client_id) is not registered with this Official Account.",
                ),
                (
                    "请联系网站管理员检查 OIDC 配置。",
                    "Ask the website's administrator to check its OpenID Connect settings.",
                ),
            ),
            GatewayError::RedirectUriMismatch => Page::error(
                StatusCode::BAD_REQUEST,
                ("回调地址不匹配", "Redirect address not registered"),
                (
                    "网站提供的回调地址（redirect_uri）与登记的地址不完全一致，为了安全，登录已停止。",
                    "The website's redirect address (redirect_uri) does not exactly match a registered one, so the login was stopped for your safety.",
                ),
                (
                    "请回到网站重新登录；如果问题持续，请网站管理员登记正确的回调地址。",
                    "Go back to the website and try again; if it keeps happening, the administrator must register the exact redirect address.",
                ),
            ),
            GatewayError::AccountCannotLogin(LoginRefusal::SubscriptionAccount) => Page::error(
                StatusCode::FORBIDDEN,
                (
                    "此公众号不支持微信登录",
                    "This account cannot offer WeChat login",
                ),
                (
                    "订阅号不能使用微信网页授权，只有已认证的服务号可以。",
                    "Subscription accounts cannot use WeChat web authorization; only verified service accounts can.",
                ),
                (
                    "请网站管理员改用已认证的服务号。",
                    "The website's administrator needs to use a verified service account.",
                ),
            ),
            GatewayError::AccountCannotLogin(LoginRefusal::Unverified) => Page::error(
                StatusCode::FORBIDDEN,
                ("此公众号尚未认证", "This account is not verified"),
                (
                    "未认证的服务号不能使用微信网页授权。",
                    "An unverified service account cannot use WeChat web authorization.",
                ),
                (
                    "请公众号管理员完成微信认证后再试。",
                    "The account's administrator must complete WeChat verification first.",
                ),
            ),
            GatewayError::MalformedLoginRequest => Page::error(
                StatusCode::BAD_REQUEST,
                ("登录链接有误", "Malformed login link"),
                (
                    "登录地址中有重复或无法识别的参数，为了安全，登录已停止。",
                    "The login address has a repeated or unreadable parameter, so the login was stopped for your safety.",
                ),
                (
                    "请回到网站重新点击登录；如果问题持续，请联系网站管理员。",
                    "Go back to the website and start the login again; if it keeps happening, contact the website's administrator.",
                ),
            ),
            GatewayError::ScanLoginUnknown => Page::error(
                StatusCode::NOT_FOUND,
                ("登录已失效", "This login has expired"),
                (
                    "这个扫码登录已过期或已经完成。",
                    "This scan-to-sign-in has expired or was already completed.",
                ),
                (
                    "请回到网站重新点击登录。",
                    "Go back to the website and start the login again.",
                ),
            ),
            GatewayError::ConfirmationUnknown => Page::error(
                StatusCode::NOT_FOUND,
                ("无需确认", "Nothing to confirm"),
                (
                    "这次电脑登录已经确认过、已过期或已经完成。",
                    "This sign-in on a computer was already confirmed, has expired, or is complete.",
                ),
                (
                    "如需登录，请在电脑上刷新页面后重新扫码。",
                    "To sign in, refresh the page on your computer and scan again.",
                ),
            ),
            GatewayError::NotTheScanner => Page::error(
                StatusCode::FORBIDDEN,
                ("无法确认", "You cannot confirm this"),
                (
                    "只有扫描二维码的人才能确认这次电脑登录。",
                    "Only the person who scanned the code can confirm this sign-in on a computer.",
                ),
                (
                    "如果是你要登录，请用自己的微信扫描电脑上的二维码。",
                    "If you are the one signing in, scan the code on the computer with your own WeChat.",
                ),
            ),
            GatewayError::MethodNotAllowed { .. } => Page::error(
                StatusCode::METHOD_NOT_ALLOWED,
                ("无法以这种方式打开", "This page cannot be opened this way"),
                (
                    "这个地址不接受这种请求方式。",
                    "This address does not accept this kind of request.",
                ),
                (
                    "请回到网站重新点击登录。",
                    "Go back to the website and start the login again.",
                ),
            ),
            GatewayError::StateMissing => Page::error(
                StatusCode::BAD_REQUEST,
                ("登录链接不完整", "Incomplete login link"),
                (
                    "微信返回的地址缺少 state 参数。",
                    "The address WeChat returned to is missing its state parameter.",
                ),
                (
                    "请回到网站重新点击登录。",
                    "Go back to the website and start the login again.",
                ),
            ),
            GatewayError::StateUnknown => Page::error(
                StatusCode::BAD_REQUEST,
                ("登录已失效", "This login has expired"),
                (
                    "这个登录请求已过期、已经完成，或不属于这个公众号。",
                    "This login request has expired, was already completed, or belongs to another account.",
                ),
                (
                    "请回到网站重新点击登录。",
                    "Go back to the website and start the login again.",
                ),
            ),
            GatewayError::SnapshotUser => Page::error(
                StatusCode::FORBIDDEN,
                ("请使用完整服务", "Please open the full page"),
                (
                    "你正在浏览页面快照，快照中无法登录。",
                    "You are viewing a page snapshot, where logging in is not possible.",
                ),
                (
                    "请点击页面底部的“使用完整服务”，然后重新登录。",
                    "Tap “使用完整服务” (use full service) at the bottom of the page, then log in again.",
                ),
            ),
            GatewayError::FollowWaitUnknown => Page::error(
                StatusCode::NOT_FOUND,
                ("登录已失效", "This login has expired"),
                (
                    "等待关注的登录已过期或已经完成。",
                    "This follow-to-continue login has expired or was already completed.",
                ),
                (
                    "请回到网站重新点击登录。",
                    "Go back to the website and start the login again.",
                ),
            ),
            GatewayError::BrowserMismatch => Page::error(
                StatusCode::FORBIDDEN,
                (
                    "请从网站重新登录",
                    "Please start the login from the website",
                ),
                (
                    "这个登录不是在当前浏览器中开始的（或浏览器没有保存登录所需的 Cookie），为了你的安全，登录已停止。",
                    "This login was not started in this browser (or the browser did not keep the login cookie), so it was stopped for your safety.",
                ),
                (
                    "请回到网站，在同一个浏览器中重新点击登录。",
                    "Go back to the website and start the login again, in this same browser.",
                ),
            ),
            GatewayError::Wechat(e) => {
                let used = matches!(e.code().map(|c| c.code()), Some(40029 | 40163 | 42003));
                if used {
                    Page::error(
                        StatusCode::BAD_REQUEST,
                        ("微信授权已失效", "WeChat authorization expired"),
                        (
                            "微信返回的授权码已使用或已过期。",
                            "The authorization code from WeChat was already used or has expired.",
                        ),
                        (
                            "请回到网站重新点击登录。",
                            "Go back to the website and start the login again.",
                        ),
                    )
                } else {
                    Page::error(
                        StatusCode::BAD_GATEWAY,
                        (
                            "微信暂时无法完成登录",
                            "WeChat could not complete the login",
                        ),
                        (
                            "向微信确认你的身份时出错。",
                            "Checking your identity with WeChat failed.",
                        ),
                        (
                            "请稍后重新登录；如果问题持续，请联系公众号管理员。",
                            "Try again in a moment; if it keeps happening, contact the account's administrator.",
                        ),
                    )
                }
            }
            GatewayError::RateLimited { .. } => Page::error(
                StatusCode::TOO_MANY_REQUESTS,
                ("请稍后再试", "Please wait a moment"),
                (
                    "短时间内从你的网络或在这个公众号上发起的登录太多。",
                    "Too many logins were started from your network, or at this account, in a short time.",
                ),
                (
                    "请稍等片刻，然后回到网站重新点击登录。",
                    "Wait a moment, then go back to the website and start the login again.",
                ),
            ),
            GatewayError::CoreToken(_) => Page::error(
                StatusCode::SERVICE_UNAVAILABLE,
                ("公众号暂时不可用", "The account is temporarily unavailable"),
                (
                    "公众号的微信接口凭证暂时不可用，无法确认你是否已关注。",
                    "The account's WeChat API credential is unavailable right now, so following cannot be checked.",
                ),
                (
                    "请稍后重试；如果问题持续，请联系公众号管理员。",
                    "Try again in a few minutes; if it keeps happening, contact the account's administrator.",
                ),
            ),
            _ => Page::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ("系统错误", "Something went wrong"),
                (
                    "登录服务出现内部错误，你的登录没有完成。",
                    "The login service had an internal error; your login did not complete.",
                ),
                (
                    "请稍后重新登录。",
                    "Please start the login again in a moment.",
                ),
            ),
        }
    }

    fn log(&self) {
        match self {
            GatewayError::Store(_)
            | GatewayError::Accounts(_)
            | GatewayError::SigningKey { .. }
            | GatewayError::HttpClient(_)
            | GatewayError::Internal(_)
            | GatewayError::CoreToken(_) => {
                // The whole chain, for the operator; the page says nothing of it.
                let mut chain = self.to_string();
                let mut source = std::error::Error::source(self);
                while let Some(inner) = source {
                    chain.push_str(": ");
                    chain.push_str(&inner.to_string());
                    source = inner.source();
                }
                tracing::error!(error = %chain, "gateway request failed")
            }
            GatewayError::Wechat(_) => tracing::warn!(error = %self, "gateway request failed"),
            _ => tracing::info!(error = %self, "gateway request refused"),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.log();
        match self {
            GatewayError::AuthorizeRedirect {
                redirect_uri,
                state,
                issuer,
                error,
                description,
            } => {
                let mut params = vec![("error", error), ("error_description", description)];
                if let Some(state) = state.as_deref() {
                    params.push(("state", state));
                }
                params.push(("iss", issuer.as_str()));
                pages::redirect_to(&pages::append_query(&redirect_uri, &params))
            }
            GatewayError::MethodNotAllowed { allow } => {
                let mut response = GatewayError::MethodNotAllowed { allow }
                    .page()
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
            GatewayError::Token { code, description } => {
                let status = if code == TokenErrorCode::InvalidClient {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::BAD_REQUEST
                };
                let mut response = (
                    status,
                    axum::Json(json!({"error": code.as_str(), "error_description": description})),
                )
                    .into_response();
                let headers = response.headers_mut();
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                if status == StatusCode::UNAUTHORIZED {
                    headers.insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"wxhub\""),
                    );
                }
                response
            }
            GatewayError::InvalidAccessToken => {
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({
                        "error": "invalid_token",
                        "error_description": "the access token is missing, unknown, expired or revoked",
                    })),
                )
                    .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
                response
            }
            GatewayError::Push(rejection) => (rejection.status(), rejection.text()).into_response(),
            GatewayError::RateLimited { retry_after } => {
                let mut response = GatewayError::RateLimited { retry_after }
                    .page()
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_value(retry_after));
                response
            }
            other => other.page().into_response(),
        }
    }
}

/// An error on the token or userinfo endpoint, always answered as OAuth JSON
/// (`{"error", "error_description"}`, RFC 6749 §5.2, RFC 6750 §3.1) — never an HTML page,
/// whatever failed: relying parties' libraries parse these bodies.
#[derive(Debug)]
pub(crate) struct OAuthError(pub(crate) GatewayError);

impl From<GatewayError> for OAuthError {
    fn from(error: GatewayError) -> Self {
        OAuthError(error)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        match self.0 {
            error @ (GatewayError::Token { .. } | GatewayError::InvalidAccessToken) => {
                error.into_response()
            }
            GatewayError::RateLimited { retry_after } => {
                GatewayError::RateLimited { retry_after }.log();
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({
                        "error": "temporarily_unavailable",
                        "error_description": "too many token requests; retry after the time in Retry-After",
                    })),
                )
                    .into_response();
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, retry_after_value(retry_after));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                response
            }
            GatewayError::MethodNotAllowed { allow } => {
                let mut response = (
                    StatusCode::METHOD_NOT_ALLOWED,
                    axum::Json(json!({
                        "error": "invalid_request",
                        "error_description": format!("this endpoint accepts {allow}"),
                    })),
                )
                    .into_response();
                let headers = response.headers_mut();
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            other => {
                other.log();
                let (status, code, description) = match &other {
                    GatewayError::CoreToken(_) | GatewayError::Wechat(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the service is temporarily unavailable; try again later",
                    ),
                    _ => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the server could not complete the request",
                    ),
                };
                let mut response = (
                    status,
                    axum::Json(json!({"error": code, "error_description": description})),
                )
                    .into_response();
                let headers = response.headers_mut();
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                response
            }
        }
    }
}

/// Whole seconds, rounded up (RFC 9110 §10.2.3), at least 1.
fn retry_after_value(wait: std::time::Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}
