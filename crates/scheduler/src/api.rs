//! The token API for owners' backends, and the one place its errors become HTTP.
//!
//! Routes (all under `/api/v1`, authenticated with `Authorization: Bearer wxk_…`, a key scoped
//! to one account):
//!
//! - `GET  /accounts/{appid}/access_token` → `{access_token, expires_at, expires_in, generation}`
//! - `POST /accounts/{appid}/access_token/invalid` `{"access_token": "…"}` → the same shape
//! - `ANY  /accounts/{appid}/wechat/{*path}` → the WeChat API proxy (see `proxy.rs`)
//! - `GET  /openapi.json` → the OpenAPI description (no key needed)
//!
//! An unknown appid, a missing/malformed/revoked key and another account's key all answer the
//! same 401, so the API tells nobody whether an account exists. Handlers are thin: parse,
//! call one [`TokenService`] method, map the result. Nothing here logs a token or a key.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use store::tokens::TokenState;
use wechat::AccessToken;

use crate::apikey::{VerifiedKey, hash_api_key_bytes, looks_like_api_key};
use crate::cache::CurrentToken;
use crate::policy::ms;
use crate::{ReportOutcome, TokenError, TokenService};

/// The OpenAPI 3.1 description of these routes (hand-written).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The token API and the proxy, with their state applied; merge it into the hub's router.
pub fn router(service: TokenService) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/accounts/{appid}/access_token", get(get_token))
        .route(
            "/api/v1/accounts/{appid}/access_token/invalid",
            post(report_invalid),
        )
        .route(
            "/api/v1/accounts/{appid}/wechat/{*path}",
            any(crate::proxy::proxy),
        )
        .with_state(service)
}

/// Everything the API can answer other than success, mapped to HTTP in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or invalid API key for this account")]
    Unauthorized,
    #[error("{0}")]
    ScopeMissing(&'static str),
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("this path cannot be proxied: {0}")]
    PathRefused(&'static str),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no valid token")]
    Unavailable {
        state: TokenState,
        code: Option<i64>,
        reason: String,
        retry_after_secs: Option<i64>,
    },
    #[error("token refresh rate-limited")]
    RateLimited { retry_after_secs: i64 },
    #[error("this API key reported more than {limit} rejected tokens in the last hour")]
    TooManyReports { limit: u32, retry_after_secs: i64 },
    #[error("too many unknown API keys from this address or for this account")]
    UnknownKeysLimited { retry_after_secs: i64 },
    #[error("the first token is still being fetched")]
    Pending,
    #[error("WeChat could not be reached: {0}")]
    Upstream(String),
    /// A failure inside wxhub; the source is logged (with its chain), never returned.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wechat_errcode: Option<i64>,
}

impl ApiError {
    pub(crate) fn from_token(error: TokenError, now: i64) -> Self {
        match error {
            TokenError::UnknownAccount => ApiError::Unauthorized,
            TokenError::AccountDisabled => ApiError::AccountDisabled,
            TokenError::Unavailable {
                state,
                code,
                reason,
                retry_at,
            } => ApiError::Unavailable {
                state,
                code,
                reason,
                retry_after_secs: retry_at.map(|at| ((at - now) / 1000).max(1)),
            },
            TokenError::RateLimited { retry_at } => ApiError::RateLimited {
                retry_after_secs: ((retry_at - now + 999) / 1000).max(1),
            },
            TokenError::ReportsCapped { limit, retry_at } => ApiError::TooManyReports {
                limit,
                retry_after_secs: ((retry_at - now + 999) / 1000).max(1),
            },
            TokenError::Pending => ApiError::Pending,
            TokenError::Store(e) => ApiError::Internal(Box::new(e)),
            TokenError::Vault(e) => ApiError::Internal(Box::new(e)),
            TokenError::HttpClient(e) => ApiError::Internal(Box::new(e)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::ScopeMissing(_) => (StatusCode::FORBIDDEN, "scope_missing"),
            ApiError::AccountDisabled => (StatusCode::FORBIDDEN, "account_disabled"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::PathRefused(_) => (StatusCode::BAD_REQUEST, "proxy_path_refused"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "refresh_rate_limited"),
            ApiError::TooManyReports { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_reports"),
            ApiError::UnknownKeysLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_unknown_keys")
            }
            ApiError::Pending => (StatusCode::SERVICE_UNAVAILABLE, "token_pending"),
            ApiError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let (message, state, errcode, retry_after) = match &self {
            ApiError::Unavailable {
                state,
                code,
                reason,
                retry_after_secs,
            } => (
                reason.clone(),
                Some(state.as_str()),
                *code,
                *retry_after_secs,
            ),
            ApiError::RateLimited { retry_after_secs } => (
                format!(
                    "the current token was fetched moments ago; report it again in \
                     {retry_after_secs} s if WeChat still rejects it"
                ),
                None,
                None,
                Some(*retry_after_secs),
            ),
            ApiError::TooManyReports {
                retry_after_secs, ..
            } => (self.to_string(), None, None, Some(*retry_after_secs)),
            ApiError::UnknownKeysLimited { retry_after_secs } => {
                (self.to_string(), None, None, Some(*retry_after_secs))
            }
            ApiError::Pending => (self.to_string(), None, None, Some(1)),
            ApiError::Internal(cause) => {
                // The whole chain, for the operator; the caller gets a fixed sentence.
                let mut chain = cause.to_string();
                let mut source = cause.source();
                while let Some(inner) = source {
                    chain.push_str(": ");
                    chain.push_str(&inner.to_string());
                    source = inner.source();
                }
                tracing::error!(error = %chain, code, "token API request failed");
                (
                    "internal error; the operator can find the cause in wxhub's log".to_owned(),
                    None,
                    None,
                    None,
                )
            }
            ApiError::Upstream(cause) => {
                tracing::error!(error = %cause, code, "token API request failed");
                (
                    "WeChat could not be reached; retry later".to_owned(),
                    None,
                    None,
                    None,
                )
            }
            other => (other.to_string(), None, None, None),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code,
                message,
                state,
                wechat_errcode: errcode,
            }),
        )
            .into_response();
        if let Some(secs) = retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

fn token_response(body: Vec<u8>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// The client's address, when the server records it (`ConnectInfo`).
pub(crate) fn peer(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// What a request needs its key to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Token,
    Report,
    Proxy,
}

impl TokenService {
    /// Checks the bearer key against `appid` and `scope`: the verified key (with the account
    /// id it may act for), 401 for a wrong key, 403 for a key without the scope.
    pub(crate) async fn authenticate(
        &self,
        appid: &str,
        headers: &HeaderMap,
        peer: Option<std::net::IpAddr>,
        scope: Scope,
    ) -> Result<Arc<VerifiedKey>, ApiError> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if !looks_like_api_key(key) {
            return Err(ApiError::Unauthorized);
        }
        let hash = hash_api_key_bytes(key);
        let now = self.inner.clock.now_ms();
        let ttl = ms(self.inner.config.api_key_cache_ttl);
        let verified = match self.inner.keys.fresh(&hash, now, ttl) {
            Some(verified) => verified,
            None => 'lookup: {
                // A key never verified here costs a database read: limited, so guessing
                // keys cannot turn into a flood of queries.
                if !self.inner.keys.knows(&hash)
                    && let Err(wait) = self.inner.key_lookups.check(peer, appid)
                {
                    let secs = i64::try_from(wait.as_secs()).unwrap_or(i64::MAX);
                    return Err(ApiError::UnknownKeysLimited {
                        retry_after_secs: (secs + i64::from(wait.subsec_nanos() > 0)).max(1),
                    });
                }
                let record = match self.inner.store.use_api_key(&hex::encode(hash), now).await {
                    Ok(record) => record,
                    Err(error) => match self.inner.keys.remembered(&hash) {
                        // The database is away (a restart, a failover): a key this replica
                        // verified before keeps reading tokens from memory, as the tokens are
                        // served from memory. Trusted one more TTL, so the outage costs one
                        // database attempt per TTL rather than one per request.
                        Some(known) => {
                            tracing::warn!(%error, "cannot re-check an API key with the database; trusting this replica's earlier check");
                            let renewed = Arc::new(VerifiedKey {
                                checked_at: now,
                                ..(*known).clone()
                            });
                            self.inner.keys.insert(renewed.clone());
                            break 'lookup renewed;
                        }
                        None => return Err(ApiError::Internal(Box::new(error))),
                    },
                };
                let Some(record) = record else {
                    self.inner.keys.forget(&hash);
                    return Err(ApiError::Unauthorized);
                };
                let key_appid = match self.inner.cache.get(&record.account_id) {
                    Some(entry) => entry.appid(),
                    None => {
                        self.reload_account(&record.account_id)
                            .await
                            .map_err(|e| ApiError::from_token(e, now))?;
                        self.inner
                            .cache
                            .get(&record.account_id)
                            .map(|e| e.appid())
                            .ok_or(ApiError::Unauthorized)?
                    }
                };
                let verified = Arc::new(VerifiedKey {
                    key_hash: hash,
                    appid: key_appid,
                    scopes: record.scopes,
                    proxy_paths: record.proxy_paths.map(Arc::from),
                    checked_at: now,
                    reads: self
                        .inner
                        .config
                        .stats
                        .token_reads(&record.account_id, &record.id),
                    id: record.id,
                    account_id: record.account_id,
                });
                self.inner.keys.insert(verified.clone());
                verified
            }
        };
        // Another account's key is refused exactly like a wrong key.
        if verified.appid != appid {
            return Err(ApiError::Unauthorized);
        }
        let allowed = match scope {
            Scope::Token => verified.scopes.token,
            Scope::Report => verified.scopes.report,
            Scope::Proxy => verified.scopes.proxy,
        };
        if !allowed {
            return Err(ApiError::ScopeMissing(match scope {
                Scope::Token => "this API key may not read the access_token (scope token)",
                Scope::Report => "this API key may not report the access_token (scope report)",
                Scope::Proxy => "this API key may not use the proxy (scope proxy)",
            }));
        }
        Ok(verified)
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn get_token(
    State(service): State<TokenService>,
    Path(appid): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // `Request` rather than `HeaderMap`: the headers are read in place, not cloned.
    let verified = service
        .authenticate(&appid, request.headers(), peer(&request), Scope::Token)
        .await?;
    let account_id = verified.account_id.as_str();
    let now = service.now();
    // Fast path: the body serialized when the token entered the cache.
    if let Some(body) = service.cached_json(account_id, now) {
        verified.reads.add(1);
        return Ok(token_response(body));
    }
    let token = service
        .current(account_id)
        .await
        .map_err(|e| ApiError::from_token(e, now))?;
    verified.reads.add(1);
    Ok(token_response(token_json(&token, service.now())))
}

/// A token as the API returns it (for the slow paths; the cache holds it pre-serialized).
#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    /// Unix milliseconds.
    expires_at: i64,
    /// Seconds from now.
    expires_in: i64,
    generation: i64,
}

fn token_json(token: &CurrentToken, now: i64) -> Vec<u8> {
    serde_json::to_vec(&TokenBody {
        access_token: token.access_token.expose(),
        expires_at: token.expires_at,
        expires_in: ((token.expires_at - now) / 1000).max(0),
        generation: token.generation,
    })
    .expect("the token body always serializes")
}

#[derive(Deserialize)]
struct InvalidReport {
    access_token: String,
}

async fn report_invalid(
    State(service): State<TokenService>,
    Path(appid): Path<String>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let peer = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let verified = service
        .authenticate(&appid, &headers, peer, Scope::Report)
        .await?;
    let account_id = verified.account_id.as_str();
    // Parsed by hand: axum's JSON rejection would echo serde's message, which quotes values.
    let report: InvalidReport = serde_json::from_slice(&body).map_err(|_| {
        ApiError::BadRequest(
            "expected a JSON body {\"access_token\": \"…\"} with the token WeChat rejected"
                .to_owned(),
        )
    })?;
    tracing::debug!(%account_id, key_id = %verified.id, "access_token reported as rejected");
    let rejected = AccessToken::new(report.access_token);
    // Reports are capped per key.
    let reported = service
        .report_rejected(account_id, &rejected, Some(&verified.id))
        .await
        .map_err(|e| ApiError::from_token(e, service.now()))?;
    let mut response = token_response(token_json(&reported.token, service.now()));
    let outcome = match reported.outcome {
        ReportOutcome::Refreshed => "refreshed",
        ReportOutcome::AlreadyReplaced => "already_replaced",
        ReportOutcome::StillAccepted => "still_accepted",
    };
    response
        .headers_mut()
        .insert("x-wxhub-report", HeaderValue::from_static(outcome));
    Ok(response)
}
