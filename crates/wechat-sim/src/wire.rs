//! WeChat's wire conventions (docs/wechat.md §0) on the simulator's side: which endpoints exist, how a
//! request is read (query, JSON body, caller IP) and how answers are written — business
//! errors as HTTP 200 `{"errcode","errmsg"}` with a ` rid: ...` suffix and the Content-Type
//! `application/json; encoding=utf-8`; authorize-page errors as HTML.
//!
//! Nothing here decides a rule; it only translates between HTTP and the rule modules.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use wechat::api::DatacubeEndpoint;
use wechat::errcode::ErrCode;

use crate::html;
use crate::state::new_rid;

/// Content-Type WeChat is observed to send (§0).
pub const JSON_CONTENT_TYPE: &str = "application/json; encoding=utf-8";

/// The endpoints the simulator serves (every one `wechat::Client` calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /cgi-bin/token` (§1).
    Token,
    /// `POST /cgi-bin/stable_token` (§2).
    StableToken,
    /// `POST /cgi-bin/openapi/quota/get` (§3.1).
    QuotaGet,
    /// `POST /cgi-bin/clear_quota` (§3.2).
    ClearQuota,
    /// `POST /cgi-bin/clear_quota/v2` (§3.3).
    ClearQuotaV2,
    /// `GET /cgi-bin/getcallbackip` (§3.6).
    CallbackIp,
    /// `GET /cgi-bin/get_api_domain_ip` (§3.6).
    ApiDomainIp,
    /// `POST /cgi-bin/callback/check` (§3.7).
    CallbackCheck,
    /// `GET /cgi-bin/user/info` (§5.1).
    UserInfo,
    /// `POST /cgi-bin/user/info/batchget` (§5.2).
    UserInfoBatch,
    /// `GET /cgi-bin/user/get` (§5.3).
    UserGet,
    /// `GET /connect/oauth2/authorize` (§4.1), the HTML page.
    Authorize,
    /// `GET /sns/oauth2/access_token` (§4.4).
    SnsAccessToken,
    /// `GET /sns/oauth2/refresh_token` (§4.5).
    SnsRefreshToken,
    /// `GET /sns/auth` (§4.6).
    SnsAuth,
    /// `GET /sns/userinfo` (§4.7).
    SnsUserinfo,
    /// `POST /cgi-bin/qrcode/create` (docs/wechat-2.md §1).
    QrcodeCreate,
    /// `GET /cgi-bin/showqrcode` (docs/wechat-2.md §2), served under [`crate::MP_PREFIX`]
    /// because WeChat serves it from another host (`mp.weixin.qq.com`).
    ShowQrcode,
    /// `POST /datacube/...` (docs/wechat-2.md §5–§7).
    Datacube(DatacubeEndpoint),
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 22] = [
        Endpoint::Token,
        Endpoint::StableToken,
        Endpoint::QuotaGet,
        Endpoint::ClearQuota,
        Endpoint::ClearQuotaV2,
        Endpoint::CallbackIp,
        Endpoint::ApiDomainIp,
        Endpoint::CallbackCheck,
        Endpoint::UserInfo,
        Endpoint::UserInfoBatch,
        Endpoint::UserGet,
        Endpoint::Authorize,
        Endpoint::SnsAccessToken,
        Endpoint::SnsRefreshToken,
        Endpoint::SnsAuth,
        Endpoint::SnsUserinfo,
        Endpoint::QrcodeCreate,
        Endpoint::ShowQrcode,
        Endpoint::Datacube(DatacubeEndpoint::UserSummary),
        Endpoint::Datacube(DatacubeEndpoint::UserCumulate),
        Endpoint::Datacube(DatacubeEndpoint::InterfaceSummary),
        Endpoint::Datacube(DatacubeEndpoint::InterfaceSummaryHour),
    ];

    /// The path, which is also the endpoint's name in counters, the call log and faults.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/cgi-bin/token",
            Endpoint::StableToken => "/cgi-bin/stable_token",
            Endpoint::QuotaGet => "/cgi-bin/openapi/quota/get",
            Endpoint::ClearQuota => "/cgi-bin/clear_quota",
            Endpoint::ClearQuotaV2 => "/cgi-bin/clear_quota/v2",
            Endpoint::CallbackIp => "/cgi-bin/getcallbackip",
            Endpoint::ApiDomainIp => "/cgi-bin/get_api_domain_ip",
            Endpoint::CallbackCheck => crate::probe::PATH,
            Endpoint::UserInfo => "/cgi-bin/user/info",
            Endpoint::UserInfoBatch => "/cgi-bin/user/info/batchget",
            Endpoint::UserGet => "/cgi-bin/user/get",
            Endpoint::Authorize => "/connect/oauth2/authorize",
            Endpoint::SnsAccessToken => "/sns/oauth2/access_token",
            Endpoint::SnsRefreshToken => "/sns/oauth2/refresh_token",
            Endpoint::SnsAuth => "/sns/auth",
            Endpoint::SnsUserinfo => "/sns/userinfo",
            Endpoint::QrcodeCreate => "/cgi-bin/qrcode/create",
            Endpoint::ShowQrcode => "/cgi-bin/showqrcode",
            Endpoint::Datacube(d) => d.path(),
        }
    }

    /// Where the router serves the endpoint: its path, under [`crate::MP_PREFIX`] for the
    /// endpoints of WeChat's `mp` host, so a client pointed at the API base cannot reach them.
    pub fn route(self) -> String {
        match self {
            Endpoint::ShowQrcode => format!("{}{}", crate::MP_PREFIX, self.path()),
            _ => self.path().to_owned(),
        }
    }

    /// The endpoint serving `path`.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Endpoints WeChat serves only as POST with a JSON body (§0, §2, §3).
    pub fn post_only(self) -> bool {
        matches!(
            self,
            Endpoint::StableToken
                | Endpoint::QuotaGet
                | Endpoint::ClearQuota
                | Endpoint::ClearQuotaV2
                | Endpoint::UserInfoBatch
                | Endpoint::QrcodeCreate
                | Endpoint::CallbackCheck
                | Endpoint::Datacube(_)
        )
    }
}

/// A request as the rule modules see it. Its `Debug` redacts credentials (see
/// [`SENSITIVE_PARAMS`]) and shows only the body's length.
#[derive(Clone)]
pub struct WireRequest {
    /// HTTP method.
    pub method: Method,
    /// Query parameters (first occurrence wins).
    pub query: HashMap<String, String>,
    /// Raw body.
    pub body: Bytes,
    /// The caller's IP (TCP peer).
    pub caller: IpAddr,
}

/// Query parameters whose values are credentials and never printed.
pub const SENSITIVE_PARAMS: &[&str] = &[
    "secret",
    "appsecret",
    "access_token",
    "refresh_token",
    "code",
    "component_access_token",
];

impl std::fmt::Debug for WireRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut query: Vec<(&str, &str)> = self
            .query
            .iter()
            .map(|(k, v)| {
                let shown = if SENSITIVE_PARAMS.contains(&k.as_str()) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        query.sort_unstable();
        f.debug_struct("WireRequest")
            .field("method", &self.method)
            .field("query", &query)
            .field("body_len", &self.body.len())
            .field("caller", &self.caller)
            .finish()
    }
}

impl WireRequest {
    /// Reads the query string.
    pub fn new(method: Method, query: Option<&str>, body: Bytes, caller: IpAddr) -> Self {
        let mut map = HashMap::new();
        if let Some(q) = query {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Self {
            method,
            query: map,
            body,
            caller,
        }
    }

    /// A query parameter, `None` when absent or empty (WeChat treats both as missing).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The body as a JSON object; `Err(47001 data format error)` otherwise.
    pub fn json_body(&self) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(ApiError::new(ErrCode(47001))),
        }
    }
}

/// A string field of a JSON body, `None` when absent, empty or not a string.
pub fn json_str<'a>(
    body: &'a serde_json::Map<String, serde_json::Value>,
    k: &str,
) -> Option<&'a str> {
    body.get(k)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A business error: `{"errcode": code, "errmsg": "<msg> rid: ..."}` with HTTP 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code.
    pub code: ErrCode,
    /// Message without the rid; [`errmsg_for`] when `None`.
    pub msg: Option<String>,
}

impl ApiError {
    /// The code with its usual message.
    pub fn new(code: ErrCode) -> Self {
        Self { code, msg: None }
    }

    /// The code with a specific message.
    pub fn with_msg(code: ErrCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: Some(msg.into()),
        }
    }

    /// The errmsg without rid.
    pub fn message(&self) -> String {
        self.msg.clone().unwrap_or_else(|| errmsg_for(self.code))
    }
}

/// The errmsg real WeChat sends for `code` (codes `wechat::ErrCode` lacks are added here).
pub fn errmsg_for(code: ErrCode) -> String {
    match code.0 {
        41003 => "refresh_token missing".into(),
        41009 => "missing openid".into(),
        43002 => "require POST method".into(),
        44002 => "empty post data".into(),
        47001 => "data format error".into(),
        _ => code.message().into(),
    }
}

/// What a rule module answers.
#[derive(Debug)]
pub enum Reply {
    /// A JSON success body (HTTP 200).
    Json(serde_json::Value),
    /// An HTML page (the authorize step).
    Html(StatusCode, String),
    /// `302 Location:` (the authorize step's redirect back).
    Redirect(String),
    /// The authorize step's HTML error page (§4.1) — WeChat shows these instead of JSON.
    ErrorPage { code: i64, message: String },
    /// A QR image encoding `text` (docs/wechat-2.md §2), drawn when the response is written.
    QrImage { text: String },
    /// A bare status without a body (`showqrcode`'s 404 for an unknown or expired ticket).
    Status(StatusCode),
}

impl Reply {
    /// The errcode the reply stands for, for counters (0 for success).
    pub fn errcode(&self) -> i64 {
        match self {
            Reply::ErrorPage { code, .. } => *code,
            _ => 0,
        }
    }
}

/// JSON response with WeChat's Content-Type.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    resp
}

/// The error body with a fresh rid (§0).
pub fn error_response(err: &ApiError) -> Response {
    let body = serde_json::json!({
        "errcode": err.code.0,
        "errmsg": format!("{} rid: {}", err.message(), new_rid()),
    });
    json_response(StatusCode::OK, &body)
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json(v) => json_response(StatusCode::OK, &v),
            Reply::Html(status, page) => (status, axum::response::Html(page)).into_response(),
            Reply::Redirect(location) => match HeaderValue::from_str(&location) {
                Ok(v) => {
                    let mut r = StatusCode::FOUND.into_response();
                    r.headers_mut().insert(header::LOCATION, v);
                    r
                }
                Err(_) => html::error_page(10003, "redirect_uri is not a valid header value")
                    .into_response(),
            },
            Reply::ErrorPage { code, message } => html::error_page(code, &message).into_response(),
            Reply::QrImage { text } => match crate::qr::png(&text) {
                Some(png) => {
                    let mut r = (StatusCode::OK, png).into_response();
                    let headers = r.headers_mut();
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
                    // docs/wechat-2.md §2: WeChat lets the image be cached for 7 days.
                    headers.insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("max-age=604800"),
                    );
                    r
                }
                None => error_response(&ApiError::with_msg(
                    ErrCode(-1),
                    "system error (the simulator could not draw the QR image)",
                )),
            },
            Reply::Status(status) => status.into_response(),
        }
    }
}

/// A response whose body fails before its first byte, so hyper closes the connection without
/// completing a response: the client sees a dropped connection (fault injection).
pub fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(std::future::ready(Err::<Bytes, std::io::Error>(
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated drop"),
    )));
    Response::new(Body::from_stream(stream))
}

/// The caller's IP: the TCP peer from `ConnectInfo<SocketAddr>` (what `serve` installs);
/// without it (a router served another way), the first `X-Forwarded-For` entry, else
/// 127.0.0.1. IPv4-mapped IPv6 peers are reported as IPv4, like WeChat's errmsg does.
#[derive(Debug, Clone, Copy)]
pub struct CallerIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for CallerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .or_else(|| {
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        Ok(CallerIp(ip.to_canonical()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_request_debug_redacts_credentials_and_the_body() {
        let req = WireRequest::new(
            Method::POST,
            Some(
                "appid=wx1&secret=TOPSECRET&access_token=TOKENVALUE&code=CODEVALUE&refresh_token=RT",
            ),
            Bytes::from_static(b"{\"secret\":\"BODYSECRET\"}"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        );
        let shown = format!("{req:?}");
        for secret in [
            "TOPSECRET",
            "TOKENVALUE",
            "CODEVALUE",
            "BODYSECRET",
            "\"RT\"",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("wx1"), "{shown}");
        assert!(shown.contains("body_len: 23"), "{shown}");
    }
}
