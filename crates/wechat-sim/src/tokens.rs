//! Core access tokens (`/cgi-bin/token`, docs/wechat.md §1), stable tokens (`/cgi-bin/stable_token`,
//! §2), the credential checks in front of them (appid, secret, frozen secret, IP whitelist)
//! and the validation every token-authenticated API runs.
//!
//! The two token families are independent (§1 rule 5): each has its own list per account, and
//! minting one never touches the other. A token is only ever valid for the account that
//! minted it (§1 rule 6) because every API resolves the account *from* the token.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::json;
use wechat::errcode::ErrCode;

use crate::config::{SimConfig, ms};
use crate::model::WhitelistMode;
use crate::quota;
use crate::state::{
    AccountState, IssuedToken, State, TokenKind, TokenOwner, TokenStatus, looks_like_token,
    new_token,
};
use crate::wire::{ApiError, Reply, WireRequest, json_str};

/// Resolves `access_token` to the account that owns it, counting the use (§1 rules 2–4).
/// Only core and stable tokens are accepted.
pub(crate) fn authenticate(
    st: &mut State,
    now: i64,
    req: &WireRequest,
) -> Result<String, ApiError> {
    let token = req
        .param("access_token")
        .ok_or(ApiError::new(ErrCode::ACCESS_TOKEN_MISSING))?;
    let Some(owner) = st.tokens.get(token) else {
        // §1 rule 4: garbage → 40014; a well-formed token we no longer know was superseded
        // long ago → 40001.
        return Err(ApiError::new(if looks_like_token(token) {
            ErrCode::INVALID_CREDENTIAL
        } else {
            ErrCode::INVALID_ACCESS_TOKEN
        }));
    };
    if owner.kind == TokenKind::User {
        return Err(ApiError::new(ErrCode::INVALID_CREDENTIAL));
    }
    let (appid, kind) = (owner.appid.clone(), owner.kind);
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    let issued = acct
        .tokens_mut(kind)
        .iter_mut()
        .find(|t| t.token == token)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    issued.uses += 1;
    match issued.status(now) {
        TokenStatus::Valid => Ok(appid),
        TokenStatus::Superseded => Err(ApiError::new(ErrCode::INVALID_CREDENTIAL)),
        TokenStatus::Expired => Err(ApiError::new(ErrCode::ACCESS_TOKEN_EXPIRED)),
    }
}

/// appid known (40013), then secret right (40125). The frozen-secret check (40243) is
/// separate ([`check_frozen`]) because WeChat checks the IP whitelist between the two.
pub(crate) fn check_credentials<'s>(
    st: &'s mut State,
    appid: &str,
    secret: &str,
) -> Result<&'s mut AccountState, ApiError> {
    let acct = st
        .accounts
        .get_mut(appid)
        .ok_or(ApiError::new(ErrCode::INVALID_APPID))?;
    if acct.spec.secret != secret {
        return Err(ApiError::new(ErrCode::INVALID_APPSECRET));
    }
    Ok(acct)
}

/// 40243 when the account's AppSecret is frozen (§1).
pub(crate) fn check_frozen(acct: &AccountState) -> Result<(), ApiError> {
    if acct.spec.secret_frozen {
        Err(ApiError::new(ErrCode::APPSECRET_FROZEN))
    } else {
        Ok(())
    }
}

/// [`check_credentials`] then [`check_frozen`], for calls without an IP whitelist (the OAuth
/// code exchange).
pub(crate) fn check_secret<'s>(
    st: &'s mut State,
    appid: &str,
    secret: &str,
) -> Result<&'s mut AccountState, ApiError> {
    let acct = check_credentials(st, appid, secret)?;
    check_frozen(acct)?;
    Ok(acct)
}

/// The IP whitelist (§1): 40164 naming the caller (`invalid ip X ipv6 ::ffff:X, not in
/// whitelist`) in enforce mode, 89503 in confirm mode.
pub(crate) fn check_whitelist(acct: &AccountState, caller: IpAddr) -> Result<(), ApiError> {
    let mode = acct.spec.whitelist_mode;
    if mode == WhitelistMode::Off {
        return Ok(());
    }
    let listed = acct
        .spec
        .ip_whitelist
        .iter()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .any(|ip| ip.to_canonical() == caller);
    if listed {
        return Ok(());
    }
    match mode {
        WhitelistMode::Off => Ok(()),
        WhitelistMode::Enforce => {
            let v6 = match caller {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().to_string(),
                IpAddr::V6(v6) => v6.to_string(),
            };
            Err(ApiError::with_msg(
                ErrCode::IP_NOT_IN_WHITELIST,
                format!("invalid ip {caller} ipv6 {v6}, not in whitelist"),
            ))
        }
        WhitelistMode::Confirm => Err(ApiError::new(ErrCode::IP_NEEDS_CONFIRMATION)),
    }
}

/// Mints a token of `kind`: the current one keeps `previous_grace_ms` more (capped at its
/// natural expiry), older ones die now unless configured otherwise (§1 rule 1, §12 item 2).
/// Keeps at most `tokens_per_account`, forgetting the oldest.
fn mint(
    index: &mut HashMap<String, TokenOwner>,
    acct: &mut AccountState,
    kind: TokenKind,
    cfg: &SimConfig,
    now: i64,
    previous_grace_ms: i64,
) -> String {
    let appid = acct.spec.appid.clone();
    let list = acct.tokens_mut(kind);
    let n = list.len();
    for (i, t) in list.iter_mut().enumerate() {
        if i + 1 == n {
            t.end_by(now.saturating_add(previous_grace_ms));
        } else if !cfg.older_tokens_keep_grace {
            t.end_by(now);
        }
    }
    let token = new_token();
    list.push_back(IssuedToken {
        token: token.clone(),
        issued_at: now,
        expires_at: now.saturating_add(ms(cfg.token_lifetime)),
        dead_at: None,
        uses: 0,
    });
    while list.len() > cfg.limits.tokens_per_account.max(2) {
        if let Some(old) = list.pop_front() {
            index.remove(&old.token);
        }
    }
    index.insert(token.clone(), TokenOwner { appid, kind });
    token
}

fn token_reply(token: &str, expires_at: i64, now: i64) -> Reply {
    Reply::Json(json!({
        "access_token": token,
        "expires_in": expires_at.saturating_sub(now).div_euclid(1000),
    }))
}

/// The credential checks of the token calls, in WeChat's order (§1): unknown appid (40013) →
/// wrong secret (40125) → IP whitelist (40164/89503, skipped when `whitelist` is false) →
/// frozen secret (40243). Missing parameters and `grant_type` are checked before, quotas
/// after. Attributes the call to the appid once it is known to exist.
fn check_token_call<'s>(
    st: &'s mut State,
    appid: &str,
    secret: &str,
    caller: IpAddr,
    whitelist: bool,
    appid_out: &mut Option<String>,
) -> Result<&'s mut AccountState, ApiError> {
    if st.accounts.contains_key(appid) {
        // Attributed even if the secret is wrong: with `count_failed_calls` it is charged.
        *appid_out = Some(appid.to_owned());
    }
    let acct = check_credentials(st, appid, secret)?;
    if whitelist {
        check_whitelist(acct, caller)?;
    }
    check_frozen(acct)?;
    Ok(acct)
}

/// `GET /cgi-bin/token` (§1). Order: missing appid/secret (41002/41004) → `grant_type`
/// (40002) → [`check_token_call`] → daily quota (45009).
pub(crate) fn core_token(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = req
        .param("appid")
        .ok_or(ApiError::new(ErrCode::APPID_MISSING))?;
    let secret = req
        .param("secret")
        .ok_or(ApiError::new(ErrCode::APPSECRET_MISSING))?;
    if req.param("grant_type") != Some("client_credential") {
        return Err(ApiError::new(ErrCode::INVALID_GRANT_TYPE));
    }
    check_token_call(st, appid, secret, req.caller, true, appid_out)?;
    let State {
        accounts, tokens, ..
    } = st;
    let acct = accounts
        .get_mut(appid)
        .ok_or(ApiError::new(ErrCode::INVALID_APPID))?;
    quota::check(acct, "/cgi-bin/token", cfg, now)?;
    quota::check_minute(acct, "/cgi-bin/token", cfg, now)?;
    let token = mint(tokens, acct, TokenKind::Core, cfg, now, ms(cfg.token_grace));
    Ok(token_reply(
        &token,
        now.saturating_add(ms(cfg.token_lifetime)),
        now,
    ))
}

/// `POST /cgi-bin/stable_token` (§2). Order: body not a JSON object or `force_refresh` not a
/// boolean (47001) → missing appid/secret → `grant_type` → [`check_token_call`] (whitelist per
/// `whitelist_on_stable_token`) → daily quota (45009) → minute limit (45011) → the daily force
/// count (45009).
pub(crate) fn stable_token(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let body = req.json_body()?;
    // §2: force_refresh is a bool. Anything else present (a string, a number, null) is
    // answered 47001 data format error rather than read as false (simulator's choice).
    let force = match body.get("force_refresh") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::with_msg(
                ErrCode(47001),
                "data format error, force_refresh must be a boolean",
            ));
        }
    };
    let appid = json_str(&body, "appid").ok_or(ApiError::new(ErrCode::APPID_MISSING))?;
    let secret = json_str(&body, "secret").ok_or(ApiError::new(ErrCode::APPSECRET_MISSING))?;
    if json_str(&body, "grant_type") != Some("client_credential") {
        return Err(ApiError::new(ErrCode::INVALID_GRANT_TYPE));
    }
    check_token_call(
        st,
        appid,
        secret,
        req.caller,
        cfg.whitelist_on_stable_token,
        appid_out,
    )?;
    let State {
        accounts, tokens, ..
    } = st;
    let acct = accounts
        .get_mut(appid)
        .ok_or(ApiError::new(ErrCode::INVALID_APPID))?;
    quota::check(acct, "/cgi-bin/stable_token", cfg, now)?;
    quota::check_minute(acct, "/cgi-bin/stable_token", cfg, now)?;
    let grace = ms(cfg.token_grace);
    let current = acct
        .stable_tokens
        .back()
        .filter(|t| t.status(now) == TokenStatus::Valid)
        .map(|t| (t.token.clone(), t.expires_at));

    if force {
        // §2, §12 item 3: a force refresh within 30 s of the last one returns the current
        // token unchanged.
        if let (Some(last), Some((token, expires_at))) = (acct.force.last_at, &current)
            && now.saturating_sub(last) < ms(cfg.stable_force_min_interval)
        {
            return Ok(token_reply(token, *expires_at, now));
        }
        let today = wechat::clock::day_index(now, cfg.quota_utc_offset_secs);
        if acct.force.day != today {
            acct.force.day = today;
            acct.force.count = 0;
        }
        if acct.force.count >= cfg.stable_force_daily_limit {
            return Err(ApiError::new(ErrCode::DAILY_QUOTA_REACHED));
        }
        acct.force.count += 1;
        acct.force.last_at = Some(now);
        let token = mint(
            tokens,
            acct,
            TokenKind::Stable,
            cfg,
            now,
            ms(cfg.stable_force_grace),
        );
        return Ok(token_reply(
            &token,
            now.saturating_add(ms(cfg.token_lifetime)),
            now,
        ));
    }

    // Normal mode: the same token while valid; in its last 300 s a call rotates it and the
    // old one keeps working to its natural end (§2), so expires_in is always ≥ 300.
    if let Some((token, expires_at)) = current
        && now < expires_at.saturating_sub(grace)
    {
        return Ok(token_reply(&token, expires_at, now));
    }
    let token = mint(tokens, acct, TokenKind::Stable, cfg, now, grace);
    Ok(token_reply(
        &token,
        now.saturating_add(ms(cfg.token_lifetime)),
        now,
    ))
}

/// `GET /cgi-bin/getcallbackip` and `/cgi-bin/get_api_domain_ip` (§3.6).
pub(crate) fn ip_list(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
    path: &str,
    ips: &[String],
) -> Result<Reply, ApiError> {
    let appid = authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    if let Some(acct) = st.accounts.get_mut(&appid) {
        quota::check(acct, path, cfg, now)?;
        quota::check_minute(acct, path, cfg, now)?;
    }
    Ok(Reply::Json(json!({ "ip_list": ips })))
}
