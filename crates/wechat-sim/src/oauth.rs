//! OAuth2 web authorization (网页授权, docs/wechat.md §4): the authorize page, code exchange, user-token
//! refresh, `sns/auth` and `sns/userinfo`.
//!
//! The authorize step is an HTML page, as in WeChat: its errors are pages, never JSON (§4.1).
//! A person picks a simulated user (and, for `snsapi_userinfo`, consents or refuses) on a
//! form; tests skip the form with `sim_user=ID&sim_answer=allow|deny|snapshot` on the
//! authorize URL, or queue an answer with [`crate::Simulator::queue_authorization`].
//!
//! Codes are single use (40163), live 300 s (40029, §12 item 5), and belong to one appid
//! (a foreign code is 40029). Refresh keeps the same refresh token and never extends it
//! (§4.5, §12 item 6).

use serde_json::json;
use wechat::client::is_valid_state;
use wechat::errcode::ErrCode;

use crate::config::{SimConfig, ms};
use crate::html::{self, PickerUser};
use crate::model::{AccountKind, AuthorizeAnswer, NextAuthorization};
use crate::state::{
    OAuthCode, State, UserGrant, derive_snapshot_openid, make_room, new_code, new_token,
};
use crate::wire::{ApiError, Reply, WireRequest};
use crate::{quota, tokens};

/// Most users listed on the picker page.
const PICKER_MAX_USERS: usize = 200;

fn page_error(code: i64, message: &str) -> Result<Reply, ApiError> {
    Ok(Reply::ErrorPage {
        code,
        message: message.to_owned(),
    })
}

/// Appends `extra` to the query of `uri`, keeping any fragment last (§4.2: `&` when the URI
/// already has a query).
fn append_query(uri: &str, extra: &str) -> String {
    let (base, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}{extra}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `GET /connect/oauth2/authorize` (§4.1, §4.2, §4.3).
pub(crate) fn authorize(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let Some(appid) = req.param("appid") else {
        return page_error(10012, "appid 参数为空 (appid is empty)");
    };
    let Some(acct) = st.accounts.get_mut(appid) else {
        return page_error(10012, "appid 参数错误 (unknown appid)");
    };
    *appid_out = Some(appid.to_owned());
    let Some(redirect_uri) = req.param("redirect_uri") else {
        return page_error(10011, "redirect_uri 参数为空 (redirect_uri is empty)");
    };
    let host_ok = url::Url::parse(redirect_uri).ok().is_some_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && acct
                .spec
                .oauth_domain
                .as_deref()
                .zip(u.host_str())
                .is_some_and(|(domain, host)| domain.eq_ignore_ascii_case(host))
    });
    if !host_ok {
        return page_error(
            10003,
            "redirect_uri 域名与后台配置不一致 (redirect_uri host differs from the OAuth domain)",
        );
    }
    if req.param("response_type") != Some("code") {
        return page_error(10001, "response_type 参数错误 (response_type must be code)");
    }
    let userinfo_scope = match req.param("scope") {
        None => return page_error(10010, "scope 参数为空 (scope is empty)"),
        Some("snsapi_base") => false,
        Some("snsapi_userinfo") => true,
        Some(_) => return page_error(10005, "scope 参数错误或没有 scope 权限 (invalid scope)"),
    };
    let state = req.query.get("state").map(String::as_str).unwrap_or("");
    if !is_valid_state(state) {
        return page_error(
            10013,
            "state 参数错误 (state must be at most 128 bytes of [A-Za-z0-9])",
        );
    }
    // §4: only verified service accounts may use web authorization.
    if !acct.spec.verified || acct.spec.kind != AccountKind::Service {
        return page_error(
            10005,
            "此公众号并没有这些 scope 的权限 (account lacks this scope)",
        );
    }

    // Who is the person, and what do they answer?
    let choice = match (req.param("sim_user"), req.param("sim_answer")) {
        (Some(user), answer) => {
            let answer = match answer {
                None => AuthorizeAnswer::Allow,
                Some(a) => match AuthorizeAnswer::parse(a) {
                    Some(a) => a,
                    None => {
                        return Ok(Reply::Html(
                            axum::http::StatusCode::BAD_REQUEST,
                            "sim_answer must be allow, deny or snapshot".into(),
                        ));
                    }
                },
            };
            Some(NextAuthorization {
                user: user.to_owned(),
                answer,
            })
        }
        (None, _) => acct.next_auth.pop_front(),
    };
    let Some(choice) = choice else {
        let params: Vec<(String, String)> = {
            let mut p: Vec<(String, String)> = req
                .query
                .iter()
                .filter(|(k, _)| !k.starts_with("sim_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            p.sort();
            p
        };
        let users: Vec<PickerUser<'_>> = st
            .users
            .values()
            .take(PICKER_MAX_USERS)
            .map(|u| PickerUser {
                id: &u.id,
                nickname: &u.nickname,
            })
            .collect();
        return Ok(Reply::Html(
            axum::http::StatusCode::OK,
            html::picker_page("", &params, &users, userinfo_scope),
        ));
    };
    if !st.users.contains_key(&choice.user) {
        return Ok(Reply::Html(
            axum::http::StatusCode::BAD_REQUEST,
            format!("unknown simulated user {}", html::escape(&choice.user)),
        ));
    }
    // snsapi_base is silent (§4.1): no popup to refuse, no snapshot page.
    let answer = if userinfo_scope {
        choice.answer
    } else {
        AuthorizeAnswer::Allow
    };
    if answer == AuthorizeAnswer::Deny {
        // §4.2: refusal returns state only, no code.
        return Ok(Reply::Redirect(append_query(
            redirect_uri,
            &format!("state={state}"),
        )));
    }
    let snapshot = answer == AuthorizeAnswer::Snapshot;
    let openid = if snapshot {
        derive_snapshot_openid(appid, &choice.user)
    } else {
        st.openid_for(appid, &choice.user).unwrap_or_default()
    };
    let lifetime = ms(cfg.oauth_code_lifetime);
    make_room(
        &mut st.codes,
        cfg.limits.max_oauth_codes,
        |c| now.saturating_sub(c.created_at) >= lifetime,
        |c| c.created_at,
    );
    let code = new_code();
    st.codes.insert(
        code.clone(),
        OAuthCode {
            appid: appid.to_owned(),
            openid,
            user: choice.user,
            userinfo_scope,
            snapshot,
            created_at: now,
            used: false,
        },
    );
    Ok(Reply::Redirect(append_query(
        redirect_uri,
        &format!("code={code}&state={state}"),
    )))
}

fn oauth_reply(st: &State, grant: &UserGrant, access: &str, refresh: &str, now: i64) -> Reply {
    let mut body = json!({
        "access_token": access,
        "expires_in": grant.expires_at.saturating_sub(now).div_euclid(1000),
        "refresh_token": refresh,
        "openid": grant.openid,
        "scope": if grant.userinfo_scope { "snsapi_userinfo" } else { "snsapi_base" },
    });
    if grant.snapshot {
        body["is_snapshotuser"] = json!(1);
    }
    // §4.4: unionid only for snsapi_userinfo on accounts bound to an Open Platform account.
    let bound = st
        .accounts
        .get(&grant.appid)
        .is_some_and(|a| a.spec.unionid_bound);
    if bound
        && grant.userinfo_scope
        && let Some(u) = st.users.get(&grant.user)
    {
        body["unionid"] = json!(if grant.snapshot {
            format!("oU{}", crate::state::short_hash(&grant.openid, 26))
        } else {
            u.unionid()
        });
    }
    Reply::Json(body)
}

fn store_user_token(st: &mut State, cfg: &SimConfig, now: i64, grant: UserGrant) -> String {
    make_room(
        &mut st.user_tokens,
        cfg.limits.max_user_tokens,
        |g| g.expires_at <= now,
        |g| g.expires_at,
    );
    let token = new_token();
    st.user_tokens.insert(token.clone(), grant);
    token
}

/// `GET /sns/oauth2/access_token` (§4.4).
pub(crate) fn exchange_code(
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
    let code = req
        .param("code")
        .ok_or(ApiError::new(ErrCode::CODE_MISSING))?;
    if req.param("grant_type") != Some("authorization_code") {
        return Err(ApiError::new(ErrCode::INVALID_GRANT_TYPE));
    }
    let acct = tokens::check_secret(st, appid, secret)?;
    *appid_out = Some(appid.to_owned());
    quota::check_minute(acct, "/sns/oauth2/access_token", cfg, now)?;
    let rec = st
        .codes
        .get_mut(code)
        .filter(|c| c.appid == appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CODE))?;
    if rec.used {
        return Err(ApiError::new(ErrCode::CODE_BEEN_USED));
    }
    if now.saturating_sub(rec.created_at) >= ms(cfg.oauth_code_lifetime) {
        return Err(ApiError::new(ErrCode(cfg.expired_code_errcode)));
    }
    rec.used = true;
    let grant = UserGrant {
        appid: appid.to_owned(),
        openid: rec.openid.clone(),
        user: rec.user.clone(),
        userinfo_scope: rec.userinfo_scope,
        snapshot: rec.snapshot,
        expires_at: now.saturating_add(ms(cfg.user_token_lifetime)),
    };
    let access = store_user_token(st, cfg, now, grant.clone());
    make_room(
        &mut st.refresh_tokens,
        cfg.limits.max_user_tokens,
        |g| g.expires_at <= now,
        |g| g.expires_at,
    );
    let refresh = new_token();
    st.refresh_tokens.insert(
        refresh.clone(),
        UserGrant {
            expires_at: now.saturating_add(ms(cfg.refresh_token_lifetime)),
            ..grant.clone()
        },
    );
    Ok(oauth_reply(st, &grant, &access, &refresh, now))
}

/// `GET /sns/oauth2/refresh_token` (§4.5).
pub(crate) fn refresh(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = req
        .param("appid")
        .ok_or(ApiError::new(ErrCode::APPID_MISSING))?;
    if req.param("grant_type") != Some("refresh_token") {
        return Err(ApiError::new(ErrCode::INVALID_GRANT_TYPE));
    }
    let refresh = req
        .param("refresh_token")
        .ok_or(ApiError::new(ErrCode(41003)))?;
    let acct = st
        .accounts
        .get_mut(appid)
        .ok_or(ApiError::new(ErrCode::INVALID_APPID))?;
    *appid_out = Some(appid.to_owned());
    quota::check_minute(acct, "/sns/oauth2/refresh_token", cfg, now)?;
    let rt = st
        .refresh_tokens
        .get(refresh)
        .filter(|g| g.appid == appid)
        .cloned()
        .ok_or(ApiError::new(ErrCode::INVALID_REFRESH_TOKEN))?;
    if now >= rt.expires_at {
        return Err(ApiError::new(ErrCode::REFRESH_TOKEN_EXPIRED));
    }
    let grant = UserGrant {
        expires_at: now.saturating_add(ms(cfg.user_token_lifetime)),
        ..rt
    };
    let access = store_user_token(st, cfg, now, grant.clone());
    Ok(oauth_reply(st, &grant, &access, refresh, now))
}

/// Looks up a user token for `sns/auth` and `sns/userinfo`.
fn user_grant(
    st: &State,
    now: i64,
    req: &WireRequest,
    unknown: ErrCode,
) -> Result<(UserGrant, String), ApiError> {
    let token = req
        .param("access_token")
        .ok_or(ApiError::new(ErrCode::ACCESS_TOKEN_MISSING))?;
    let openid = req.param("openid").ok_or(ApiError::new(ErrCode(41009)))?;
    let grant = st
        .user_tokens
        .get(token)
        .cloned()
        .ok_or(ApiError::new(unknown))?;
    if now >= grant.expires_at {
        return Err(ApiError::new(ErrCode::ACCESS_TOKEN_EXPIRED));
    }
    if grant.openid != openid {
        return Err(ApiError::new(ErrCode::INVALID_OPENID));
    }
    Ok((grant, openid.to_owned()))
}

/// `GET /sns/auth` (§4.6).
pub(crate) fn sns_auth(
    st: &mut State,
    _cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    if let Some(g) = req
        .param("access_token")
        .and_then(|t| st.user_tokens.get(t))
    {
        *appid_out = Some(g.appid.clone());
    }
    user_grant(st, now, req, ErrCode::INVALID_ACCESS_TOKEN)?;
    Ok(Reply::Json(json!({"errcode": 0, "errmsg": "ok"})))
}

/// `GET /sns/userinfo` (§4.7): 48001 for snsapi_base tokens and snapshot users (§4.3);
/// 45011 past the minute limit (checked once the token is known good).
pub(crate) fn sns_userinfo(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    if let Some(g) = req
        .param("access_token")
        .and_then(|t| st.user_tokens.get(t))
    {
        *appid_out = Some(g.appid.clone());
    }
    let (grant, openid) = user_grant(st, now, req, ErrCode::INVALID_CREDENTIAL)?;
    if let Some(acct) = st.accounts.get_mut(&grant.appid) {
        quota::check_minute(acct, "/sns/userinfo", cfg, now)?;
    }
    if !grant.userinfo_scope || grant.snapshot {
        return Err(ApiError::new(ErrCode::API_UNAUTHORIZED));
    }
    let person = st.users.get(&grant.user);
    let mut body = json!({
        "openid": openid,
        "nickname": person.map(|p| p.nickname.clone()).unwrap_or_default(),
        "sex": 0,
        "province": "",
        "city": "",
        "country": "",
        "headimgurl": person.map(|p| p.headimgurl.clone()).unwrap_or_default(),
        "privilege": [],
    });
    let bound = st
        .accounts
        .get(&grant.appid)
        .is_some_and(|a| a.spec.unionid_bound);
    if bound && let Some(p) = person {
        body["unionid"] = json!(p.unionid());
    }
    Ok(Reply::Json(body))
}
