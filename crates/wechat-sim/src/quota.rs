//! Daily API quotas per (appid, cgi_path) and the tools that inspect and reset them (docs/wechat.md §1
//! "Daily limit", §3.1–§3.3, §3.8).
//!
//! A quota day starts at 00:00 in the configured time zone (UTC+8 by default, §12 item 1);
//! the first call of a new day finds yesterday's counters and drops them. By default only
//! successful calls are charged (§12 item 1). `clear_quota` and `clear_quota/v2` share a
//! budget of 10 resets per calendar month (§3.2, §3.3, §12 item 11).
//!
//! Per-minute limits (§2, §3.8) are counted per (appid, path) in minutes of the simulator
//! clock and charged like daily quotas; over → 45011. `clear_quota` does not reset them.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use wechat::clock::{day_index, year_month};
use wechat::errcode::ErrCode;

use crate::config::SimConfig;
use crate::state::{AccountState, State};
use crate::tokens;
use crate::wire::{ApiError, Reply, WireRequest, json_str};

/// Published daily limits for new accounts (§1, §3.8). Paths not listed have no daily quota
/// and are unknown to `openapi/quota/get` (76021). getcallbackip/get_api_domain_ip limits are
/// not published; 10 000 is the simulator's choice.
pub const DEFAULT_DAILY_LIMITS: &[(&str, i64)] = &[
    ("/cgi-bin/token", 2000),
    ("/cgi-bin/stable_token", 500_000),
    ("/cgi-bin/user/info", 5_000_000),
    ("/cgi-bin/user/info/batchget", 5_000_000),
    ("/cgi-bin/user/get", 500),
    ("/cgi-bin/getcallbackip", 10_000),
    ("/cgi-bin/get_api_domain_ip", 10_000),
    ("/cgi-bin/qrcode/create", 100_000),
];

/// One account's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuotaState {
    /// The quota day the counters belong to.
    pub day: i64,
    /// Calls charged today, per path.
    pub used: HashMap<String, i64>,
    /// `(year, month)` the reset count belongs to.
    pub clear_month: (i64, u32),
    /// Resets used this month.
    pub clears: u32,
    /// The clock minute (`now_ms / 60 000`) the minute counters belong to.
    pub minute: i64,
    /// Calls charged this minute, per path (only paths with a minute limit).
    pub minute_used: HashMap<String, i64>,
}

impl QuotaState {
    /// Drops yesterday's counters when `now` is in a new quota day.
    fn roll(&mut self, now: i64, offset: i64) {
        let today = day_index(now, offset);
        if self.day != today {
            self.day = today;
            self.used.clear();
        }
    }
}

/// The clock minute `now` falls in.
fn minute_of(now: i64) -> i64 {
    now.div_euclid(60_000)
}

impl QuotaState {
    /// This minute's use of `path`, dropping last minute's counters first.
    fn minute_used(&mut self, now: i64, path: &str) -> i64 {
        let minute = minute_of(now);
        if self.minute != minute {
            self.minute = minute;
            self.minute_used.clear();
        }
        self.minute_used.get(path).copied().unwrap_or(0)
    }
}

/// The per-minute limit of `path` for this account (override, else `SimConfig::minute_limits`),
/// `None` if unlimited.
pub(crate) fn minute_limit_for(acct: &AccountState, path: &str, cfg: &SimConfig) -> Option<i64> {
    acct.spec
        .minute_limits
        .get(path)
        .or_else(|| cfg.minute_limits.get(path))
        .copied()
}

/// 45011 when this minute's calls of `path` reached the account's minute limit (§2, §3.8).
pub(crate) fn check_minute(
    acct: &mut AccountState,
    path: &str,
    cfg: &SimConfig,
    now: i64,
) -> Result<(), ApiError> {
    match minute_limit_for(acct, path, cfg) {
        Some(limit) if acct.quota.minute_used(now, path) >= limit => Err(ApiError::with_msg(
            ErrCode::MINUTE_QUOTA_REACHED,
            format!("api minute-quota reach limit mostly {limit} times per minute"),
        )),
        _ => Ok(()),
    }
}

/// The daily limit of `path` for this account (override, else default), `None` if unlimited.
pub(crate) fn limit_for(acct: &AccountState, path: &str) -> Option<i64> {
    acct.spec.daily_limits.get(path).copied().or_else(|| {
        DEFAULT_DAILY_LIMITS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, l)| *l)
    })
}

/// Today's use of `path`.
pub(crate) fn used(acct: &mut AccountState, path: &str, cfg: &SimConfig, now: i64) -> i64 {
    acct.quota.roll(now, cfg.quota_utc_offset_secs);
    acct.quota.used.get(path).copied().unwrap_or(0)
}

/// 45009 when today's quota of `path` is used up (§1).
pub(crate) fn check(
    acct: &mut AccountState,
    path: &str,
    cfg: &SimConfig,
    now: i64,
) -> Result<(), ApiError> {
    match limit_for(acct, path) {
        Some(limit) if used(acct, path, cfg, now) >= limit => {
            Err(ApiError::new(ErrCode::DAILY_QUOTA_REACHED))
        }
        _ => Ok(()),
    }
}

/// Charges one call of `path` to the daily and the minute counters (only paths with a limit
/// of that kind are tracked, so the counter maps stay bounded).
pub(crate) fn charge(acct: &mut AccountState, path: &str, cfg: &SimConfig, now: i64) {
    if limit_for(acct, path).is_some() {
        acct.quota.roll(now, cfg.quota_utc_offset_secs);
        let used = acct.quota.used.entry(path.to_owned()).or_insert(0);
        *used = used.saturating_add(1);
    }
    if minute_limit_for(acct, path, cfg).is_some() {
        let n = acct.quota.minute_used(now, path).saturating_add(1);
        acct.quota.minute_used.insert(path.to_owned(), n);
    }
}

/// Resets every daily counter of the account, including the stable-token daily force count
/// (§2: "recoverable via clear_quota"), spending one of the month's resets (48006 when none
/// left). The 30 s force spacing and the minute counters are not daily quotas and stay.
pub(crate) fn clear_all(
    acct: &mut AccountState,
    cfg: &SimConfig,
    now: i64,
) -> Result<(), ApiError> {
    let month = year_month(now, cfg.quota_utc_offset_secs);
    if acct.quota.clear_month != month {
        acct.quota.clear_month = month;
        acct.quota.clears = 0;
    }
    if acct.quota.clears >= cfg.clear_quota_monthly_limit {
        return Err(ApiError::new(ErrCode::CLEAR_QUOTA_LIMIT));
    }
    acct.quota.clears += 1;
    acct.quota.used.clear();
    acct.force.count = 0;
    Ok(())
}

/// One row of the control API's quota view.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaRow {
    /// API path.
    pub cgi_path: String,
    /// Daily limit.
    pub daily_limit: i64,
    /// Used today.
    pub used: i64,
    /// Left today.
    pub remain: i64,
}

/// The account's quotas today (control API).
pub(crate) fn rows(acct: &mut AccountState, cfg: &SimConfig, now: i64) -> Vec<QuotaRow> {
    let mut paths: Vec<String> = DEFAULT_DAILY_LIMITS
        .iter()
        .map(|(p, _)| (*p).to_owned())
        .collect();
    for p in acct.spec.daily_limits.keys() {
        if !paths.contains(p) {
            paths.push(p.clone());
        }
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let limit = limit_for(acct, &p)?;
            let used = used(acct, &p, cfg, now);
            Some(QuotaRow {
                cgi_path: p,
                daily_limit: limit,
                used,
                remain: limit.saturating_sub(used).max(0),
            })
        })
        .collect()
}

/// `POST /cgi-bin/openapi/quota/get` (§3.1).
pub(crate) fn quota_get(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let body = req.json_body()?;
    let path = json_str(&body, "cgi_path").ok_or(ApiError::new(ErrCode::CGI_PATH_INVALID))?;
    if !path.starts_with('/') {
        return Err(ApiError::new(ErrCode::CGI_PATH_INVALID));
    }
    // §3.1: web-authorization APIs are not covered by this tool.
    if path.starts_with("/sns/") {
        return Err(ApiError::new(ErrCode::CGI_PATH_NO_PERMISSION));
    }
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    let limit = limit_for(acct, path).ok_or(ApiError::new(ErrCode::CGI_PATH_NOT_FOUND))?;
    let used = used(acct, path, cfg, now);
    // §3.1 newer doc: the periodic limits. The simulator reports the path's minute limit
    // (0 when it has none) over 60 s for both; it has no separate third-party limit.
    let rate = json!({
        "call_count": minute_limit_for(acct, path, cfg).unwrap_or(0),
        "refresh_second": 60,
    });
    Ok(Reply::Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "quota": {"daily_limit": limit, "used": used, "remain": limit.saturating_sub(used).max(0)},
        "rate_limit": rate,
        "component_rate_limit": rate,
    })))
}

/// `POST /cgi-bin/clear_quota` (§3.2): body appid must be the token's account (else 40013).
pub(crate) fn clear_quota(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let body = req.json_body()?;
    let named = json_str(&body, "appid").ok_or(ApiError::new(ErrCode::APPID_MISSING))?;
    if named != appid {
        return Err(ApiError::new(ErrCode::INVALID_APPID));
    }
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_APPID))?;
    clear_all(acct, cfg, now)?;
    Ok(Reply::Json(json!({"errcode": 0, "errmsg": "ok"})))
}

/// `POST /cgi-bin/clear_quota/v2` (§3.3): authenticated by the AppSecret; same budget.
pub(crate) fn clear_quota_v2(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let body = req.json_body()?;
    let appid = json_str(&body, "appid").ok_or(ApiError::new(ErrCode::APPID_MISSING))?;
    let secret = json_str(&body, "appsecret").ok_or(ApiError::new(ErrCode::APPSECRET_MISSING))?;
    // Same order as the token calls: unknown appid → wrong secret → frozen secret. The IP
    // whitelist is not applied: §1 ties it to token calls only (simulator's choice).
    let acct = tokens::check_credentials(st, appid, secret)?;
    *appid_out = Some(appid.to_owned());
    tokens::check_frozen(acct)?;
    clear_all(acct, cfg, now)?;
    Ok(Reply::Json(json!({"errcode": 0, "errmsg": "ok"})))
}
