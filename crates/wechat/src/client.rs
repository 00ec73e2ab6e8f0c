//! [`Client`]: typed async calls to the WeChat API (docs/wechat.md §1–§5, docs/wechat-2.md §1,
//! §2 and §5–§7).
//!
//! Success is decided by the body — `errcode` absent or 0 — never by the HTTP status (§0): a
//! 200 with `errcode: 40001` is an [`WechatError::Api`], and a 5xx whose body still carries an
//! errcode is too. A body that is neither an error nor the expected JSON is a
//! [`WechatError::Http`] (non-2xx) or [`WechatError::Decode`] (2xx).
//!
//! The client never retries and keeps no tokens: deciding when to refresh, retry or give up
//! belongs to the caller (the scheduler), guided by [`WechatError::class`]. It must never log
//! or return a request URL, because the query carries `secret=` or `access_token=`.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use reqwest::redirect::Policy;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::{
    BATCHGET_MAX, BatchUserRequest, BatchUserRequestItem, BatchUserResponse, CallbackCheck,
    CallbackCheckAction, CallbackCheckRequest, CheckOperator, DatacubeEndpoint, DatacubeList,
    DatacubeRequest, ErrorBody, FollowerPage, FollowerPageRaw, InterfaceSummaryHourRow,
    InterfaceSummaryRow, IpListResponse, Lang, OAuthToken, QrCodeKind, QrCodeTicket, QuotaResponse,
    Scope, SnsUserInfo, StableTokenRequest, TokenResponse, UserCumulateRow, UserInfo,
    UserSummaryRow,
};
use crate::errcode::ErrCode;
use crate::error::{WechatError, describe_json_error};
use crate::secret::{AccessToken, AppSecret, RefreshToken};

/// Largest response body read (8 MiB). A full follower page is ~10 000 × 30 bytes.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Longest OAuth `state` WeChat accepts (§4.1).
pub const MAX_STATE_BYTES: usize = 128;

/// Where the client sends requests and how it behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base of the API (`https://api.weixin.qq.com`); point it at the simulator in tests.
    pub api_base: Url,
    /// Base of the OAuth authorize page (`https://open.weixin.qq.com`).
    pub open_base: Url,
    /// Base of WeChat's `mp` host (`https://mp.weixin.qq.com`), which serves the QR images
    /// (docs/wechat-2.md §2).
    pub mp_base: Url,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_base: Url::parse("https://api.weixin.qq.com").expect("valid constant URL"),
            open_base: Url::parse("https://open.weixin.qq.com").expect("valid constant URL"),
            mp_base: Url::parse("https://mp.weixin.qq.com").expect("valid constant URL"),
            timeout: Duration::from_secs(10),
            user_agent: concat!("wxhub/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl ClientConfig {
    /// The default configuration pointing at one server (the simulator, which serves the API
    /// and the authorize page side by side, and the `mp` host's endpoints under `/mp`).
    pub fn for_base(base: Url) -> Self {
        Self {
            api_base: base.clone(),
            mp_base: join(&base, "/mp"),
            open_base: base,
            ..Self::default()
        }
    }
}

/// An async WeChat API client. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
}

/// Joins an absolute API path onto a base that may itself have a path prefix.
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn check_base(what: &str, url: &Url) -> Result<(), WechatError> {
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(WechatError::InvalidInput {
            what: format!("{what} must be an http(s) URL"),
        });
    }
    Ok(())
}

/// Whether `state` satisfies WeChat's rule: at most 128 bytes of `[A-Za-z0-9]` (§4.1).
pub fn is_valid_state(state: &str) -> bool {
    state.len() <= MAX_STATE_BYTES && state.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `encodeURIComponent`-style escaping: everything but RFC 3986 unreserved characters.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Client {
    /// Builds a client. Installs rustls' `ring` provider as the process default if none is
    /// installed yet (reqwest is built without one).
    pub fn new(config: ClientConfig) -> Result<Self, WechatError> {
        // Err means another provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(config.user_agent.clone())
            // WeChat does not redirect API calls; following one could carry the secret-bearing
            // query to another host.
            .redirect(Policy::none())
            .build()
            .map_err(|e| WechatError::InvalidInput {
                what: format!("HTTP client configuration: {}", e.without_url()),
            })?;
        Self::with_http(config, http)
    }

    /// A client over an existing `reqwest::Client` (its own timeout and TLS settings apply).
    pub fn with_http(config: ClientConfig, http: reqwest::Client) -> Result<Self, WechatError> {
        check_base("api_base", &config.api_base)?;
        check_base("open_base", &config.open_base)?;
        check_base("mp_base", &config.mp_base)?;
        Ok(Self { http, config })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends a request and decodes a successful body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, WechatError> {
        let started = Instant::now();
        let result = self.call_inner(endpoint, request).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(endpoint, elapsed_ms, "wechat call succeeded"),
            Err(error) => {
                tracing::debug!(endpoint, elapsed_ms, %error, "wechat call failed");
            }
        }
        result
    }

    async fn call_inner<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, WechatError> {
        let map_transport = |e: reqwest::Error| {
            let e = e.without_url();
            if e.is_timeout() {
                WechatError::Timeout { endpoint }
            } else if e.is_connect() {
                WechatError::Connect { endpoint }
            } else {
                WechatError::Transport {
                    endpoint,
                    detail: e.to_string(),
                }
            }
        };
        let mut response = request.send().await.map_err(map_transport)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(map_transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(WechatError::Decode {
                    endpoint,
                    detail: format!("response body exceeds {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        decode_body(endpoint, status.as_u16(), &body)
    }

    fn get(&self, path: &'static str) -> reqwest::RequestBuilder {
        self.http.get(join(&self.config.api_base, path))
    }

    fn post_json(
        &self,
        path: &'static str,
        query: &[(&str, &str)],
        body: &impl Serialize,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(join(&self.config.api_base, path))
            .query(query)
            .json(body)
    }

    /// `GET /cgi-bin/token`: mints a new core token, superseding the previous one after a
    /// 300 s grace (§1). Counts against the 2000/day quota — call it from the scheduler only.
    pub async fn get_token(
        &self,
        appid: &str,
        secret: &AppSecret,
    ) -> Result<TokenResponse, WechatError> {
        const EP: &str = "/cgi-bin/token";
        let request = self.get(EP).query(&[
            ("grant_type", "client_credential"),
            ("appid", appid),
            ("secret", secret.expose()),
        ]);
        self.call(EP, request).await
    }

    /// `POST /cgi-bin/stable_token` (§2): idempotent in normal mode; `force_refresh`
    /// invalidates the current stable token (20/day, ≥ 30 s apart).
    pub async fn get_stable_token(
        &self,
        appid: &str,
        secret: &AppSecret,
        force_refresh: bool,
    ) -> Result<TokenResponse, WechatError> {
        const EP: &str = "/cgi-bin/stable_token";
        let body = StableTokenRequest {
            grant_type: "client_credential".into(),
            appid: appid.into(),
            secret: secret.clone(),
            force_refresh,
        };
        let request = self.post_json(EP, &[], &body);
        self.call(EP, request).await
    }

    /// `POST /cgi-bin/openapi/quota/get` (§3.1): the daily quota of one API path, which must
    /// start with `/` (e.g. `/cgi-bin/token`).
    pub async fn get_api_quota(
        &self,
        access_token: &AccessToken,
        cgi_path: &str,
    ) -> Result<QuotaResponse, WechatError> {
        const EP: &str = "/cgi-bin/openapi/quota/get";
        if !cgi_path.starts_with('/') {
            return Err(WechatError::InvalidInput {
                what: "cgi_path must start with '/'".into(),
            });
        }
        #[derive(Serialize)]
        struct Body<'a> {
            cgi_path: &'a str,
        }
        let request = self.post_json(
            EP,
            &[("access_token", access_token.expose())],
            &Body { cgi_path },
        );
        self.call(EP, request).await
    }

    /// `POST /cgi-bin/clear_quota` (§3.2): resets all daily counters of the token's account
    /// (10 per month).
    pub async fn clear_quota(
        &self,
        access_token: &AccessToken,
        appid: &str,
    ) -> Result<(), WechatError> {
        const EP: &str = "/cgi-bin/clear_quota";
        #[derive(Serialize)]
        struct Body<'a> {
            appid: &'a str,
        }
        let request = self.post_json(
            EP,
            &[("access_token", access_token.expose())],
            &Body { appid },
        );
        self.call::<ErrorBody>(EP, request).await.map(drop)
    }

    /// `POST /cgi-bin/clear_quota/v2` (§3.3): the same reset authenticated by the AppSecret,
    /// for when the token quota itself is exhausted.
    pub async fn clear_quota_v2(&self, appid: &str, secret: &AppSecret) -> Result<(), WechatError> {
        const EP: &str = "/cgi-bin/clear_quota/v2";
        #[derive(Serialize)]
        struct Body<'a> {
            appid: &'a str,
            appsecret: &'a str,
        }
        let request = self.post_json(
            EP,
            &[],
            &Body {
                appid,
                appsecret: secret.expose(),
            },
        );
        self.call::<ErrorBody>(EP, request).await.map(drop)
    }

    /// The OAuth authorize URL to send the user's WeChat browser to (§4.1), parameters in the
    /// template's order, ending in `#wechat_redirect`. `state` must be at most 128 bytes of
    /// `[A-Za-z0-9]`; `force_popup` adds `forcePopup=true`.
    pub fn authorize_url(
        &self,
        appid: &str,
        redirect_uri: &str,
        scope: Scope,
        state: &str,
        force_popup: bool,
    ) -> Result<String, WechatError> {
        if appid.is_empty() {
            return Err(WechatError::InvalidInput {
                what: "appid must not be empty".into(),
            });
        }
        let redirect = Url::parse(redirect_uri).map_err(|_| WechatError::InvalidInput {
            what: "redirect_uri must be an absolute URL".into(),
        })?;
        if !matches!(redirect.scheme(), "http" | "https") {
            return Err(WechatError::InvalidInput {
                what: "redirect_uri must be http(s)".into(),
            });
        }
        if !is_valid_state(state) {
            return Err(WechatError::InvalidInput {
                what: format!("state must be at most {MAX_STATE_BYTES} bytes of [A-Za-z0-9]"),
            });
        }
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, COMPONENT).to_string();
        let mut url = join(&self.config.open_base, "/connect/oauth2/authorize").to_string();
        url.push_str(&format!(
            "?appid={}&redirect_uri={}&response_type=code&scope={}&state={}",
            enc(appid),
            enc(redirect_uri),
            scope.as_str(),
            state
        ));
        if force_popup {
            url.push_str("&forcePopup=true");
        }
        url.push_str("#wechat_redirect");
        Ok(url)
    }

    /// `GET /sns/oauth2/access_token` (§4.4): exchanges a single-use OAuth code for the user's
    /// token. A reused code is errcode 40163, an unknown or expired one 40029.
    pub async fn exchange_code(
        &self,
        appid: &str,
        secret: &AppSecret,
        code: &str,
    ) -> Result<OAuthToken, WechatError> {
        const EP: &str = "/sns/oauth2/access_token";
        if code.is_empty() {
            return Err(WechatError::InvalidInput {
                what: "OAuth code must not be empty".into(),
            });
        }
        let request = self.get(EP).query(&[
            ("appid", appid),
            ("secret", secret.expose()),
            ("code", code),
            ("grant_type", "authorization_code"),
        ]);
        self.call(EP, request).await
    }

    /// `GET /sns/oauth2/refresh_token` (§4.5): a new user access token from a refresh token.
    pub async fn refresh_oauth_token(
        &self,
        appid: &str,
        refresh_token: &RefreshToken,
    ) -> Result<OAuthToken, WechatError> {
        const EP: &str = "/sns/oauth2/refresh_token";
        let request = self.get(EP).query(&[
            ("appid", appid),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ]);
        self.call(EP, request).await
    }

    /// `GET /sns/auth` (§4.6): `Ok(())` when the user token is valid for `openid`.
    pub async fn check_oauth_token(
        &self,
        access_token: &AccessToken,
        openid: &str,
    ) -> Result<(), WechatError> {
        const EP: &str = "/sns/auth";
        let request = self
            .get(EP)
            .query(&[("access_token", access_token.expose()), ("openid", openid)]);
        self.call::<ErrorBody>(EP, request).await.map(drop)
    }

    /// `GET /sns/userinfo` (§4.7): the profile behind a `snsapi_userinfo` user token
    /// (a `snsapi_base` token gets 48001).
    pub async fn sns_userinfo(
        &self,
        access_token: &AccessToken,
        openid: &str,
        lang: Lang,
    ) -> Result<SnsUserInfo, WechatError> {
        const EP: &str = "/sns/userinfo";
        let request = self.get(EP).query(&[
            ("access_token", access_token.expose()),
            ("openid", openid),
            ("lang", lang.as_str()),
        ]);
        self.call(EP, request).await
    }

    /// `GET /cgi-bin/user/info` (§5.1) with the core token: whether `openid` follows the
    /// account, and what WeChat still tells about them.
    pub async fn user_info(
        &self,
        access_token: &AccessToken,
        openid: &str,
        lang: Lang,
    ) -> Result<UserInfo, WechatError> {
        const EP: &str = "/cgi-bin/user/info";
        let request = self.get(EP).query(&[
            ("access_token", access_token.expose()),
            ("openid", openid),
            ("lang", lang.as_str()),
        ]);
        self.call(EP, request).await
    }

    /// `POST /cgi-bin/user/info/batchget` (§5.2): 1 to 100 users per call, checked here.
    pub async fn user_info_batch(
        &self,
        access_token: &AccessToken,
        openids: &[&str],
        lang: Lang,
    ) -> Result<Vec<UserInfo>, WechatError> {
        const EP: &str = "/cgi-bin/user/info/batchget";
        if openids.is_empty() || openids.len() > BATCHGET_MAX {
            return Err(WechatError::InvalidInput {
                what: format!(
                    "user/info/batchget takes 1 to {BATCHGET_MAX} openids, got {}",
                    openids.len()
                ),
            });
        }
        let body = BatchUserRequest {
            user_list: openids
                .iter()
                .map(|openid| BatchUserRequestItem {
                    openid: (*openid).to_owned(),
                    lang: lang.as_str().to_owned(),
                })
                .collect(),
        };
        let request = self.post_json(EP, &[("access_token", access_token.expose())], &body);
        self.call::<BatchUserResponse>(EP, request)
            .await
            .map(|r| r.user_info_list)
    }

    /// `GET /cgi-bin/user/get` (§5.3): one page of up to 10 000 follower openids. Start with
    /// `None`; continue with the previous page's `next_openid` until it is `None`.
    pub async fn followers(
        &self,
        access_token: &AccessToken,
        next_openid: Option<&str>,
    ) -> Result<FollowerPage, WechatError> {
        const EP: &str = "/cgi-bin/user/get";
        let request = self.get(EP).query(&[
            ("access_token", access_token.expose()),
            ("next_openid", next_openid.unwrap_or_default()),
        ]);
        self.call::<FollowerPageRaw>(EP, request)
            .await
            .map(FollowerPage::from)
    }

    /// `POST /cgi-bin/qrcode/create` (docs/wechat-2.md §1) with the core token: a parametric
    /// QR code. Service accounts only; counts against the 100 000/day quota, and a permanent
    /// code also against the account's 100 000 permanent codes. The limits of §1.1 are
    /// checked before sending ([`QrCodeKind::check`]).
    pub async fn create_qrcode(
        &self,
        access_token: &AccessToken,
        kind: &QrCodeKind,
    ) -> Result<QrCodeTicket, WechatError> {
        const EP: &str = "/cgi-bin/qrcode/create";
        kind.check()?;
        let request = self.post_json(
            EP,
            &[("access_token", access_token.expose())],
            &kind.request(),
        );
        self.call(EP, request).await
    }

    /// The image of a QR code: `GET {mp_base}/cgi-bin/showqrcode?ticket=…` (docs/wechat-2.md
    /// §2), the ticket percent-encoded (tickets hold `=`, and in other shapes `+` and `/`).
    /// No token: the URL can be given to a browser as it is.
    pub fn qrcode_image_url(&self, ticket: &str) -> Url {
        let mut url = join(&self.config.mp_base, "/cgi-bin/showqrcode");
        let ticket = percent_encoding::utf8_percent_encode(ticket, COMPONENT);
        url.set_query(Some(&format!("ticket={ticket}")));
        url
    }

    /// `GET /cgi-bin/getcallbackip` (§3.6): the addresses WeChat pushes from.
    pub async fn callback_ips(
        &self,
        access_token: &AccessToken,
    ) -> Result<Vec<String>, WechatError> {
        const EP: &str = "/cgi-bin/getcallbackip";
        let request = self
            .get(EP)
            .query(&[("access_token", access_token.expose())]);
        self.call::<IpListResponse>(EP, request)
            .await
            .map(|r| r.ip_list)
    }

    /// `POST /cgi-bin/callback/check` (§3.7): WeChat resolves the account's push URL and
    /// probes each address from `operator`'s network. 40201 when no push URL is configured.
    /// [`CallbackCheck::reachable`] says whether every probe was answered.
    pub async fn check_callback(
        &self,
        access_token: &AccessToken,
        action: CallbackCheckAction,
        operator: CheckOperator,
    ) -> Result<CallbackCheck, WechatError> {
        const EP: &str = "/cgi-bin/callback/check";
        let body = CallbackCheckRequest {
            action: action.as_str(),
            check_operator: operator.as_str(),
        };
        let request = self.post_json(EP, &[("access_token", access_token.expose())], &body);
        self.call(EP, request).await
    }

    /// One statistics call (docs/wechat-2.md §5): the range rules that need no clock are
    /// checked before sending ([`DatacubeEndpoint::check_range`]).
    async fn datacube<T: DeserializeOwned>(
        &self,
        endpoint: DatacubeEndpoint,
        access_token: &AccessToken,
        begin_date: NaiveDate,
        end_date: NaiveDate,
    ) -> Result<Vec<T>, WechatError> {
        endpoint.check_range(begin_date, end_date)?;
        let body = DatacubeRequest {
            begin_date,
            end_date,
        };
        let ep = endpoint.path();
        let request = self.post_json(ep, &[("access_token", access_token.expose())], &body);
        self.call::<DatacubeList<T>>(ep, request)
            .await
            .map(|l| l.list)
    }

    /// `POST /datacube/getusersummary` (docs/wechat-2.md §6.1): follows and unfollows per day
    /// and channel, at most 7 days, `end` at most yesterday (China time). Yesterday's rows
    /// appear only after 08:00 China time; until then they are missing, without an error.
    /// Verified accounts only (48001); a refused range is 61501.
    pub async fn user_summary(
        &self,
        access_token: &AccessToken,
        begin: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<UserSummaryRow>, WechatError> {
        self.datacube(DatacubeEndpoint::UserSummary, access_token, begin, end)
            .await
    }

    /// `POST /datacube/getusercumulate` (docs/wechat-2.md §6.2): followers at the end of each
    /// day; the rules of [`Client::user_summary`].
    pub async fn user_cumulate(
        &self,
        access_token: &AccessToken,
        begin: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<UserCumulateRow>, WechatError> {
        self.datacube(DatacubeEndpoint::UserCumulate, access_token, begin, end)
            .await
    }

    /// `POST /datacube/getinterfacesummary` (docs/wechat-2.md §7.1): how the push server
    /// answered per day, at most 30 days; otherwise the rules of [`Client::user_summary`].
    pub async fn interface_summary(
        &self,
        access_token: &AccessToken,
        begin: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<InterfaceSummaryRow>, WechatError> {
        self.datacube(DatacubeEndpoint::InterfaceSummary, access_token, begin, end)
            .await
    }

    /// `POST /datacube/getinterfacesummaryhour` (docs/wechat-2.md §7.2): the same per hour of
    /// one day (`begin_date == end_date == date`).
    pub async fn interface_summary_hour(
        &self,
        access_token: &AccessToken,
        date: NaiveDate,
    ) -> Result<Vec<InterfaceSummaryHourRow>, WechatError> {
        self.datacube(
            DatacubeEndpoint::InterfaceSummaryHour,
            access_token,
            date,
            date,
        )
        .await
    }

    /// `GET /cgi-bin/get_api_domain_ip` (§3.6): the addresses of `api.weixin.qq.com`.
    pub async fn api_domain_ips(
        &self,
        access_token: &AccessToken,
    ) -> Result<Vec<String>, WechatError> {
        const EP: &str = "/cgi-bin/get_api_domain_ip";
        let request = self
            .get(EP)
            .query(&[("access_token", access_token.expose())]);
        self.call::<IpListResponse>(EP, request)
            .await
            .map(|r| r.ip_list)
    }
}

/// Turns an HTTP status and body into the decoded success type or the right error (§0):
/// a non-zero `errcode` wins over everything, then a non-2xx status, then the JSON shape.
pub fn decode_body<T: DeserializeOwned>(
    endpoint: &'static str,
    status: u16,
    body: &[u8],
) -> Result<T, WechatError> {
    let success_status = (200..300).contains(&status);
    let probe = serde_json::from_slice::<ErrorBody>(body);
    if let Ok(ErrorBody {
        errcode: Some(code),
        errmsg,
    }) = &probe
        && *code != 0
    {
        return Err(WechatError::api(
            endpoint,
            ErrCode(*code),
            errmsg.as_deref().unwrap_or_default(),
        ));
    }
    if !success_status {
        return Err(WechatError::Http { endpoint, status });
    }
    serde_json::from_slice::<T>(body).map_err(|e| WechatError::Decode {
        endpoint,
        detail: describe_json_error(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errcode::ErrorClass;

    fn client() -> Client {
        Client::new(ClientConfig::default()).unwrap()
    }

    #[test]
    fn errcode_in_a_200_body_is_an_api_error() {
        let err = decode_body::<TokenResponse>(
            "/cgi-bin/token",
            200,
            br#"{"errcode":40125,"errmsg":"invalid appsecret rid: 1-2-3"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            WechatError::Api {
                endpoint: "/cgi-bin/token",
                code: ErrCode::INVALID_APPSECRET,
                errmsg: "invalid appsecret".into(),
                rid: Some("1-2-3".into()),
            }
        );
        assert_eq!(err.class(), ErrorClass::Credential);
    }

    #[test]
    fn errcode_in_a_5xx_body_is_still_an_api_error() {
        let err = decode_body::<TokenResponse>(
            "/cgi-bin/token",
            503,
            br#"{"errcode":-1,"errmsg":"system error"}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), Some(ErrCode::SYSTEM_ERROR));
        assert_eq!(err.class(), ErrorClass::Transient);
    }

    #[test]
    fn errcode_zero_is_success() {
        let ok: ErrorBody =
            decode_body("/sns/auth", 200, br#"{"errcode":0,"errmsg":"ok"}"#).unwrap();
        assert_eq!(ok.errcode, Some(0));
    }

    #[test]
    fn non_json_5xx_is_an_http_error_and_transient() {
        let err = decode_body::<TokenResponse>("/cgi-bin/token", 502, b"<html>Bad Gateway</html>")
            .unwrap_err();
        assert_eq!(
            err,
            WechatError::Http {
                endpoint: "/cgi-bin/token",
                status: 502
            }
        );
        assert_eq!(err.class(), ErrorClass::Transient);
    }

    #[test]
    fn non_json_200_is_a_decode_error() {
        let err = decode_body::<TokenResponse>("/cgi-bin/token", 200, b"hello").unwrap_err();
        assert!(matches!(err, WechatError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn wrong_shape_decode_error_does_not_echo_the_token() {
        let err = decode_body::<TokenResponse>(
            "/cgi-bin/token",
            200,
            br#"{"access_token":"86_SECRETTOKEN","expires_in":"soon"}"#,
        )
        .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRETTOKEN"), "{shown}");
        assert!(!shown.contains("soon"), "{shown}");
    }

    #[test]
    fn token_success_body_decodes() {
        let t: TokenResponse = decode_body(
            "/cgi-bin/token",
            200,
            br#"{"access_token":"ACCESS_TOKEN","expires_in":7200}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, 7200);
    }

    #[test]
    fn authorize_url_follows_the_template() {
        let url = client()
            .authorize_url(
                "wx520c15f417810387",
                "https://chong.qq.com/a/b?x=1&y=2",
                Scope::SnsapiBase,
                "123",
                false,
            )
            .unwrap();
        assert_eq!(
            url,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx520c15f417810387\
             &redirect_uri=https%3A%2F%2Fchong.qq.com%2Fa%2Fb%3Fx%3D1%26y%3D2\
             &response_type=code&scope=snsapi_base&state=123#wechat_redirect"
        );
        let popup = client()
            .authorize_url(
                "wx1",
                "https://a.example/cb",
                Scope::SnsapiUserinfo,
                "s",
                true,
            )
            .unwrap();
        assert!(popup.ends_with("&scope=snsapi_userinfo&state=s&forcePopup=true#wechat_redirect"));
    }

    #[test]
    fn authorize_url_rejects_bad_state() {
        let c = client();
        let long = "a".repeat(129);
        for state in [long.as_str(), "a-b", "中文", "a b"] {
            assert!(matches!(
                c.authorize_url(
                    "wx1",
                    "https://a.example/cb",
                    Scope::SnsapiBase,
                    state,
                    false
                ),
                Err(WechatError::InvalidInput { .. })
            ));
        }
        let max = "Z".repeat(128);
        assert!(
            c.authorize_url(
                "wx1",
                "https://a.example/cb",
                Scope::SnsapiBase,
                &max,
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn authorize_url_keeps_a_base_path_prefix() {
        let c = Client::new(ClientConfig::for_base(
            Url::parse("http://127.0.0.1:9000/sim/").unwrap(),
        ))
        .unwrap();
        let url = c
            .authorize_url("wx1", "http://127.0.0.1/cb", Scope::SnsapiBase, "s", false)
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:9000/sim/connect/oauth2/authorize?appid=wx1&"));
    }

    #[test]
    fn qrcode_image_url_percent_encodes_the_ticket_on_the_mp_base() {
        let url = client().qrcode_image_url("gQ+a/b_c-d==");
        assert_eq!(
            url.as_str(),
            "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQ%2Ba%2Fb_c-d%3D%3D"
        );
        let ticket: Vec<_> = url.query_pairs().collect();
        assert_eq!(ticket, [("ticket".into(), "gQ+a/b_c-d==".into())]);
        let sim = Client::new(ClientConfig::for_base(
            Url::parse("http://127.0.0.1:9000/sim/").unwrap(),
        ))
        .unwrap();
        assert!(
            sim.qrcode_image_url("t")
                .as_str()
                .starts_with("http://127.0.0.1:9000/sim/mp/cgi-bin/showqrcode?ticket=t")
        );
    }

    #[tokio::test]
    async fn qrcode_limits_are_checked_before_sending() {
        let long = "字".repeat(65);
        for kind in [
            QrCodeKind::Temporary {
                scene_id: 0,
                expire_seconds: Some(60),
            },
            QrCodeKind::Temporary {
                scene_id: 1,
                expire_seconds: Some(0),
            },
            QrCodeKind::TemporaryStr {
                scene_str: "x".into(),
                expire_seconds: Some(2_592_001),
            },
            QrCodeKind::TemporaryStr {
                scene_str: String::new(),
                expire_seconds: None,
            },
            QrCodeKind::Permanent { scene_id: 0 },
            QrCodeKind::Permanent { scene_id: 100_001 },
            QrCodeKind::PermanentStr {
                scene_str: long.clone(),
            },
        ] {
            let err = client()
                .create_qrcode(&AccessToken::new("t"), &kind)
                .await
                .unwrap_err();
            assert!(matches!(err, WechatError::InvalidInput { .. }), "{kind:?}");
        }
        let max = QrCodeKind::PermanentStr {
            scene_str: "字".repeat(64),
        };
        assert_eq!(max.check(), Ok(()));
        assert!(matches!(
            QrCodeKind::Permanent { scene_id: 0 }.check(),
            Err(WechatError::InvalidInput { .. })
        ));
    }

    #[tokio::test]
    async fn create_qrcode_posts_the_documented_body() {
        let (base, request) = one_shot_server(
            200,
            Some(r#"{"ticket":"gQ==","expire_seconds":600,"url":"http://weixin.qq.com/q/02x"}"#),
        )
        .await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let kind = QrCodeKind::TemporaryStr {
            scene_str: "l:abc".into(),
            expire_seconds: Some(600),
        };
        let t = c
            .create_qrcode(&AccessToken::new("TOKENVALUE"), &kind)
            .await
            .unwrap();
        assert_eq!(t.ticket, "gQ==");
        assert_eq!(t.expire_seconds, Some(600));
        let request = request.await.unwrap();
        assert!(
            request.starts_with("POST /cgi-bin/qrcode/create?access_token=TOKENVALUE HTTP/1.1"),
            "{request}"
        );
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"expire_seconds":600,"action_name":"QR_STR_SCENE",
                "action_info":{"scene":{"scene_str":"l:abc"}}})
        );
        let permanent = QrCodeKind::Permanent { scene_id: 42 };
        assert_eq!(
            serde_json::to_value(permanent.request()).unwrap(),
            serde_json::json!({"action_name":"QR_LIMIT_SCENE","action_info":{"scene":{"scene_id":42}}})
        );
    }

    #[tokio::test]
    async fn check_callback_posts_the_documented_body_and_decodes_the_probes() {
        let (base, request) = one_shot_server(
            200,
            Some(
                r#"{"dns":[{"ip":"127.0.0.1","real_operator":"CAP"}],"ping":[{"ip":"127.0.0.1","from_operator":"UNICOM","package_loss":"0%","time":"1.500ms"}]}"#,
            ),
        )
        .await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let check = c
            .check_callback(
                &AccessToken::new("TOKENVALUE"),
                CallbackCheckAction::All,
                CheckOperator::Unicom,
            )
            .await
            .unwrap();
        assert!(check.reachable());
        assert_eq!(check.ping[0].time_ms(), Some(1.5));
        let request = request.await.unwrap();
        assert!(
            request.starts_with("POST /cgi-bin/callback/check?access_token=TOKENVALUE HTTP/1.1"),
            "{request}"
        );
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"action":"all","check_operator":"UNICOM"})
        );
    }

    #[tokio::test]
    async fn user_summary_posts_both_dates_and_decodes_the_rows() {
        let (base, request) = one_shot_server(
            200,
            Some(
                r#"{"list":[{"ref_date":"2026-01-14","user_source":30,"new_user":2,"cancel_user":1}]}"#,
            ),
        )
        .await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let day = |d| NaiveDate::from_ymd_opt(2026, 1, d).unwrap();
        let rows = c
            .user_summary(&AccessToken::new("TOKENVALUE"), day(8), day(14))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].user_source, crate::api::UserSource::QR_CODE);
        let request = request.await.unwrap();
        assert!(
            request.starts_with("POST /datacube/getusersummary?access_token=TOKENVALUE HTTP/1.1"),
            "{request}"
        );
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"begin_date":"2026-01-08","end_date":"2026-01-14"})
        );
    }

    #[tokio::test]
    async fn datacube_ranges_over_the_span_or_reversed_are_refused_before_sending() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 1, d).unwrap();
        let t = AccessToken::new("t");
        let c = client();
        for err in [
            c.user_summary(&t, day(7), day(14)).await.unwrap_err(),
            c.user_cumulate(&t, day(14), day(13)).await.unwrap_err(),
            c.interface_summary(&t, NaiveDate::from_ymd_opt(2025, 12, 15).unwrap(), day(14))
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(err, WechatError::InvalidInput { .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn batchget_over_100_is_refused_before_sending() {
        let ids: Vec<String> = (0..101).map(|i| format!("o{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let err = client()
            .user_info_batch(&AccessToken::new("t"), &refs, Lang::ZhCn)
            .await
            .unwrap_err();
        assert!(matches!(err, WechatError::InvalidInput { .. }));
        let err = client()
            .user_info_batch(&AccessToken::new("t"), &[], Lang::ZhCn)
            .await
            .unwrap_err();
        assert!(matches!(err, WechatError::InvalidInput { .. }));
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error_without_the_secret() {
        // Bind then drop a listener to get a local port nobody listens on.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let err = c
            .get_token("wx1", &AppSecret::new("TOPSECRET"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WechatError::Connect {
                endpoint: "/cgi-bin/token"
            }
        );
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(!format!("{err} {err:?}").contains("TOPSECRET"));
    }

    #[test]
    fn join_handles_base_paths() {
        let base = Url::parse("http://h/prefix/").unwrap();
        assert_eq!(
            join(&base, "/cgi-bin/token").as_str(),
            "http://h/prefix/cgi-bin/token"
        );
        let base = Url::parse("https://api.weixin.qq.com").unwrap();
        assert_eq!(
            join(&base, "/sns/auth").as_str(),
            "https://api.weixin.qq.com/sns/auth"
        );
    }

    /// A one-shot HTTP/1.1 responder on 127.0.0.1: hands back the raw request it received
    /// and answers with `status` and `body` (or never answers when `body` is `None`).
    async fn one_shot_server(
        status: u16,
        body: Option<&'static str>,
    ) -> (Url, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let content_length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + content_length {
                        break;
                    }
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
            match body {
                Some(body) => {
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json; encoding=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                }
                // Hold the connection open without answering until the client gives up.
                None => {
                    let _ = socket.read(&mut buf).await;
                }
            }
        });
        (base, rx)
    }

    #[tokio::test]
    async fn get_token_sends_the_documented_query_and_decodes_the_token() {
        let (base, request) = one_shot_server(
            200,
            Some(r#"{"access_token":"86_TOKEN","expires_in":7200}"#),
        )
        .await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let token = c.get_token("wx1", &AppSecret::new("SEC")).await.unwrap();
        assert_eq!(token.access_token.expose(), "86_TOKEN");
        assert_eq!(token.expires_in, 7200);
        let request = request.await.unwrap();
        assert!(
            request.starts_with(
                "GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=SEC HTTP/1.1"
            ),
            "{request}"
        );
    }

    #[tokio::test]
    async fn stable_token_posts_json_with_force_refresh() {
        let (base, request) =
            one_shot_server(200, Some(r#"{"access_token":"T","expires_in":6000}"#)).await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let token = c
            .get_stable_token("wx1", &AppSecret::new("SEC"), true)
            .await
            .unwrap();
        assert_eq!(token.expires_in, 6000);
        let request = request.await.unwrap();
        assert!(
            request.starts_with("POST /cgi-bin/stable_token HTTP/1.1"),
            "{request}"
        );
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"grant_type":"client_credential","appid":"wx1","secret":"SEC","force_refresh":true})
        );
    }

    #[tokio::test]
    async fn api_error_over_http_keeps_code_and_rid_but_not_the_secret() {
        let (base, _request) = one_shot_server(
            200,
            Some(r#"{"errcode":40164,"errmsg":"invalid ip 203.0.113.9 ipv6 ::ffff:203.0.113.9, not in whitelist rid: 65a-b-c"}"#),
        )
        .await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let err = c
            .get_token("wx1", &AppSecret::new("TOPSECRET"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrCode::IP_NOT_IN_WHITELIST));
        assert_eq!(err.caller_ip(), Some("203.0.113.9".parse().unwrap()));
        match &err {
            WechatError::Api { rid, .. } => assert_eq!(rid.as_deref(), Some("65a-b-c")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!format!("{err} {err:?}").contains("TOPSECRET"));
    }

    #[tokio::test]
    async fn unanswered_request_is_a_timeout_without_the_token() {
        let (base, _request) = one_shot_server(200, None).await;
        let config = ClientConfig {
            timeout: Duration::from_millis(300),
            ..ClientConfig::for_base(base)
        };
        let c = Client::new(config).unwrap();
        let err = c
            .user_info(&AccessToken::new("TOKENVALUE"), "o1", Lang::ZhCn)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            WechatError::Timeout {
                endpoint: "/cgi-bin/user/info"
            }
        );
        assert!(!format!("{err} {err:?}").contains("TOKENVALUE"));
    }

    #[tokio::test]
    async fn html_502_is_a_transient_http_error() {
        let (base, _request) = one_shot_server(502, Some("<html>bad gateway</html>")).await;
        let c = Client::new(ClientConfig::for_base(base)).unwrap();
        let err = c.followers(&AccessToken::new("t"), None).await.unwrap_err();
        assert_eq!(
            err,
            WechatError::Http {
                endpoint: "/cgi-bin/user/get",
                status: 502
            }
        );
        assert_eq!(err.class(), ErrorClass::Transient);
    }
}
