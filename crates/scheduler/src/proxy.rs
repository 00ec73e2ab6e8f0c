//! `/api/v1/accounts/{appid}/wechat/{*path}`: the WeChat API with the access_token injected.
//!
//! A backend calls `…/wechat/cgi-bin/user/info?openid=…` with its API key instead of
//! `https://api.weixin.qq.com/cgi-bin/user/info?access_token=…&openid=…`. The proxy passes the
//! method, the query, the `Content-Type` and the body through and streams the answer back. On
//! 40001/40014/42001 it reports the token as rejected (compare-and-swap refresh, docs/wechat.md §10.3)
//! and retries **once** with the new token — never more, so a broken token cannot loop
//! (WxJava #313).
//!
//! What it refuses (400 `proxy_path_refused`), because the proxy must only ever reach the
//! configured API base's `/cgi-bin/` API with the account's own token:
//! - anything not under `cgi-bin/`; segments `.`/`..`, empty segments, or characters outside
//!   `[A-Za-z0-9._-]` (so no absolute URL, no encoded traversal, no host change);
//! - `cgi-bin/token` and `cgi-bin/stable_token` themselves: wxhub is the only token fetcher;
//! - a query that already carries `access_token`.
//!
//! Request bodies are read up to `max_proxy_body` (413 beyond) and kept, because the one retry
//! must resend them; answers stream, except that the first 64 KiB are looked at for an errcode.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use wechat::AccessToken;

use crate::TokenService;
use crate::api::{ApiError, Scope};

/// Answers up to this size are read whole and checked for a token error before forwarding.
const PEEK_LIMIT: usize = 64 * 1024;

/// Response headers passed back to the caller.
const PASSED_HEADERS: [header::HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
];

/// Checks a proxied path (without the leading `/`): `Ok(())` or why it is refused.
pub(crate) fn check_path(path: &str) -> Result<(), &'static str> {
    let mut segments = path.split('/');
    if segments.next() != Some("cgi-bin") {
        return Err("only WeChat API paths under cgi-bin/ are proxied");
    }
    let rest: Vec<&str> = segments.collect();
    if rest.is_empty() {
        return Err("the path names no API");
    }
    for segment in &rest {
        if segment.is_empty() || *segment == "." || *segment == ".." {
            return Err("empty, '.' and '..' path segments are not allowed");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("path segments may only hold letters, digits, '.', '_' and '-'");
        }
    }
    if matches!(rest[0], "token" | "stable_token") {
        return Err("wxhub fetches the access_token itself; use GET /access_token instead");
    }
    Ok(())
}

/// The WeChat URL a proxied call goes to (before its `access_token` is added): `path`, already
/// accepted by [`check_path`], under the API base's path, with the caller's query.
pub(crate) fn upstream_url(api_base: &url::Url, path: &str, query: &str) -> url::Url {
    let mut url = api_base.clone();
    let joined = format!("{}/{}", url.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url.set_query((!query.is_empty()).then_some(query));
    url.set_fragment(None);
    url
}

/// Whether the query already names an `access_token` (in any letter case).
pub(crate) fn query_has_token(query: &str) -> bool {
    url::form_urlencoded::parse(query.as_bytes())
        .any(|(key, _)| key.trim().eq_ignore_ascii_case("access_token"))
}

/// The errcode of a (small, complete) WeChat answer, if it has one.
fn errcode_of(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        errcode: Option<i64>,
    }
    serde_json::from_slice::<Probe>(body)
        .ok()
        .and_then(|p| p.errcode)
}

/// Whether a (small, complete) WeChat answer says the token was rejected (docs/wechat.md §8).
fn is_token_rejected(body: &[u8]) -> bool {
    errcode_of(body)
        .is_some_and(|c| wechat::ErrCode(c).class() == wechat::ErrorClass::TokenRejected)
}

impl Upstream {
    /// WeChat's errcode, when the answer was small enough to be read whole.
    fn errcode(&self) -> Option<i64> {
        if self.rest.is_some() {
            return None;
        }
        errcode_of(&self.head)
    }
}

struct Upstream {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    head: Bytes,
    /// The rest of the body when it was longer than [`PEEK_LIMIT`].
    rest: Option<reqwest::Response>,
}

pub(crate) async fn proxy(
    State(service): State<TokenService>,
    Path((appid, path)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let verified = service
        .authenticate(
            &appid,
            request.headers(),
            crate::api::peer(&request),
            Scope::Proxy,
        )
        .await?;
    let account_id = verified.account_id.as_str();
    check_path(&path).map_err(ApiError::PathRefused)?;
    if let Some(allowed) = &verified.proxy_paths
        && !allowed
            .iter()
            .any(|p| p.strip_prefix('/') == Some(path.as_str()))
    {
        return Err(ApiError::ScopeMissing(
            "this API key may not call this WeChat path through the proxy",
        ));
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    let url = upstream_url(&service.inner.api_base, &path, &query);
    // Checked on the URL as it will be sent: URL parsing drops tabs and newlines, so a query
    // checked before it could still name an access_token after.
    if query_has_token(url.query().unwrap_or("")) {
        return Err(ApiError::PathRefused(
            "the query must not carry an access_token: the proxy adds the account's own",
        ));
    }
    let method = request.method().clone();
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let limit = service.inner.config.max_proxy_body;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let body = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::BodyTooLarge { limit }
            } else {
                ApiError::BadRequest("the request body could not be read".to_owned())
            }
        })?
        .to_bytes();

    let now = service.now();
    let token = service
        .current(account_id)
        .await
        .map_err(|e| ApiError::from_token(e, now))?;
    let send = |token: AccessToken| {
        let mut url = url.clone();
        url.query_pairs_mut()
            .append_pair("access_token", token.expose());
        let mut builder = service
            .inner
            .proxy_http
            .request(method.clone(), url)
            .body(body.clone());
        if let Some(ct) = &content_type {
            builder = builder.header(header::CONTENT_TYPE, ct.clone());
        }
        async move { read_upstream(builder).await }
    };
    // Counted once per call, retry included, with WeChat's last answer.
    let started = std::time::Instant::now();
    let count = |errcode: Result<Option<i64>, ()>, retried: bool| {
        service.inner.config.stats.proxy_call(
            account_id,
            &path,
            errcode,
            started.elapsed(),
            retried,
        );
    };
    let first = send(token.access_token.clone()).await.inspect_err(|_| {
        count(Err(()), false);
    })?;
    if first.rest.is_none() && is_token_rejected(&first.head) {
        // Compare-and-swap refresh: only if the rejected token is still current.
        match service
            .rejected_by_wechat(account_id, &token.access_token)
            .await
        {
            Ok(fresh) if fresh.token.access_token != token.access_token => {
                let second = send(fresh.token.access_token)
                    .await
                    .inspect_err(|_| count(Err(()), true))?;
                count(Ok(second.errcode()), true);
                let mut response = respond(second);
                response
                    .headers_mut()
                    .insert("x-wxhub-retried", HeaderValue::from_static("1"));
                return Ok(response);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%account_id, %error, "proxy: token rejected and not refreshed; passing WeChat's answer on");
            }
        }
    }
    count(Ok(first.errcode()), false);
    Ok(respond(first))
}

async fn read_upstream(request: reqwest::RequestBuilder) -> Result<Upstream, ApiError> {
    // reqwest errors are stripped of their URL: it carries the access_token.
    let upstream = |e: reqwest::Error| ApiError::Upstream(e.without_url().to_string());
    let mut response = request.send().await.map_err(upstream)?;
    let status = response.status();
    let headers = response.headers().clone();
    let mut head = Vec::new();
    loop {
        match response.chunk().await.map_err(upstream)? {
            Some(chunk) => {
                head.extend_from_slice(&chunk);
                if head.len() > PEEK_LIMIT {
                    return Ok(Upstream {
                        status,
                        headers,
                        head: head.into(),
                        rest: Some(response),
                    });
                }
            }
            None => {
                return Ok(Upstream {
                    status,
                    headers,
                    head: head.into(),
                    rest: None,
                });
            }
        }
    }
}

fn respond(upstream: Upstream) -> Response {
    let body = match upstream.rest {
        None => Body::from(upstream.head),
        Some(rest) => {
            let head =
                futures_util::stream::once(async move { Ok::<_, reqwest::Error>(upstream.head) });
            Body::from_stream(
                head.chain(rest.bytes_stream().map(|r| r.map_err(|e| e.without_url()))),
            )
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    for name in PASSED_HEADERS {
        if let Some(value) = upstream.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cgi_bin_api_paths_pass() {
        assert!(check_path("cgi-bin/user/info").is_ok());
        assert!(check_path("cgi-bin/getcallbackip").is_ok());
        assert!(check_path("cgi-bin/media/get.jpg").is_ok());
        for refused in [
            "sns/userinfo",
            "cgi-bin",
            "cgi-bin/",
            "cgi-bin/../sns/userinfo",
            "cgi-bin/./user",
            "cgi-bin//user",
            "cgi-bin/token",
            "cgi-bin/stable_token",
            "cgi-bin/token/extra",
            "http://evil.example/cgi-bin/user",
            "cgi-bin/user%2finfo",
            "cgi-bin/user\\info",
            "/cgi-bin/user/info",
        ] {
            assert!(check_path(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn an_access_token_that_url_parsing_reassembles_is_found() {
        // Found by the proxy_path fuzz target: `acc<CR>ess_token` is not `access_token`, but
        // URL parsing removes the CR, and WeChat would have received the caller's token first.
        let base = url::Url::parse("https://api.weixin.qq.com").unwrap();
        let query = "openid=o1&acc\ress_token=theirs";
        assert!(!query_has_token(query));
        let url = upstream_url(&base, "cgi-bin/user/info", query);
        assert!(query_has_token(url.query().unwrap_or("")));
    }

    #[test]
    fn access_token_in_the_query_is_found_in_any_case() {
        assert!(query_has_token("openid=o1&access_token=x"));
        assert!(query_has_token("ACCESS_TOKEN=x"));
        assert!(query_has_token("access%5Ftoken=x"));
        assert!(!query_has_token("openid=o1&lang=zh_CN"));
    }

    #[test]
    fn token_errors_are_recognised_in_answers() {
        assert!(is_token_rejected(
            br#"{"errcode":40001,"errmsg":"invalid credential"}"#
        ));
        assert!(is_token_rejected(
            br#"{"errcode":42001,"errmsg":"access_token expired"}"#
        ));
        assert!(is_token_rejected(
            br#"{"errcode":40014,"errmsg":"invalid access_token"}"#
        ));
        assert!(!is_token_rejected(br#"{"errcode":45009,"errmsg":"quota"}"#));
        assert!(!is_token_rejected(br#"{"ip_list":["1.2.3.4"]}"#));
        assert!(!is_token_rejected(b"not json"));
    }
}
