//! User management APIs (docs/wechat.md §5): `user/info`, `user/info/batchget`, `user/get`, and the
//! follow-state changes the push driver makes.
//!
//! Openids are per account: a person has a different openid at every account, so an openid
//! of account B sent with account A's token is unknown to A (40003, §1 rule 6). The response
//! shape is the modern one (no nickname/avatar, §5.1) unless the account asks for the legacy
//! shape (§12 item 9).

use serde_json::{Value, json};
use wechat::api::{BATCHGET_MAX, UserInfo, UserSource};
use wechat::errcode::ErrCode;

use crate::config::{CancelUserSource, SimConfig};
use crate::model::FollowOptions;
use crate::quota;
use crate::state::{AccountState, Follower, State};
use crate::tokens;
use crate::wire::{ApiError, Reply, WireRequest};

/// 48001 for accounts that may not use the user APIs (§5.1: e.g. unverified) [obs].
fn check_permission(acct: &AccountState) -> Result<(), ApiError> {
    if acct.spec.verified {
        Ok(())
    } else {
        Err(ApiError::new(ErrCode::API_UNAUTHORIZED))
    }
}

/// The `user/info` object for `openid` at this account (40003 if the openid is not its).
fn info_object(st: &State, acct: &AccountState, openid: &str) -> Result<Value, ApiError> {
    let user_id = acct
        .openids
        .get(openid)
        .ok_or(ApiError::new(ErrCode::INVALID_OPENID))?;
    let legacy = acct.spec.legacy_user_info;
    let person = st.users.get(user_id);
    let Some(f) = acct.followers.get(openid) else {
        // §5.1: for non-followers nothing but openid is guaranteed.
        let base = UserInfo {
            openid: openid.to_owned(),
            ..UserInfo::default()
        };
        let mut v = serde_json::to_value(base).unwrap_or_else(|_| json!({}));
        if legacy && let Value::Object(m) = &mut v {
            for (k, e) in [
                ("nickname", json!("")),
                ("sex", json!(0)),
                ("language", json!("")),
                ("city", json!("")),
                ("province", json!("")),
                ("country", json!("")),
                ("headimgurl", json!("")),
                ("subscribe_time", json!(0)),
                ("remark", json!("")),
                ("groupid", json!(0)),
                ("subscribe_scene", json!("")),
                ("qr_scene", json!(0)),
                ("qr_scene_str", json!("")),
            ] {
                m.insert(k.into(), e);
            }
        }
        return Ok(v);
    };
    let info = UserInfo {
        subscribe: true,
        openid: openid.to_owned(),
        language: None,
        subscribe_time: Some(f.subscribe_time),
        unionid: if acct.spec.unionid_bound {
            person.map(|p| p.unionid())
        } else {
            None
        },
        remark: None,
        groupid: Some(0),
        tagid_list: f.tagid_list.clone(),
        subscribe_scene: Some(f.subscribe_scene.clone()),
        qr_scene: Some(f.qr_scene),
        qr_scene_str: None,
        nickname: None,
        headimgurl: None,
    };
    let mut v = serde_json::to_value(info).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        // WeChat sends these even when empty (§5.1 example).
        m.insert("remark".into(), json!(f.remark));
        m.insert("qr_scene_str".into(), json!(f.qr_scene_str));
        if legacy {
            m.insert(
                "nickname".into(),
                json!(person.map(|p| p.nickname.clone()).unwrap_or_default()),
            );
            m.insert(
                "headimgurl".into(),
                json!(person.map(|p| p.headimgurl.clone()).unwrap_or_default()),
            );
            m.insert("language".into(), json!("zh_CN"));
            for k in ["city", "province", "country"] {
                m.insert(k.into(), json!(""));
            }
            m.insert("sex".into(), json!(0));
        }
    }
    Ok(v)
}

/// `GET /cgi-bin/user/info` (§5.1).
pub(crate) fn user_info(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let openid = req.param("openid").ok_or(ApiError::new(ErrCode(41009)))?;
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    check_permission(acct)?;
    quota::check(acct, "/cgi-bin/user/info", cfg, now)?;
    quota::check_minute(acct, "/cgi-bin/user/info", cfg, now)?;
    let acct = &st.accounts[&appid];
    info_object(st, acct, openid).map(Reply::Json)
}

/// `POST /cgi-bin/user/info/batchget` (§5.2): 1..=100 entries; any foreign openid fails the
/// whole call with 40003.
pub(crate) fn user_info_batch(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let body = req.json_body()?;
    let list = body
        .get("user_list")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or(ApiError::new(ErrCode(47001)))?;
    if list.len() > BATCHGET_MAX {
        return Err(ApiError::with_msg(
            ErrCode(47001),
            format!("data format error, user_list holds more than {BATCHGET_MAX} entries"),
        ));
    }
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    check_permission(acct)?;
    quota::check(acct, "/cgi-bin/user/info/batchget", cfg, now)?;
    quota::check_minute(acct, "/cgi-bin/user/info/batchget", cfg, now)?;
    let acct = &st.accounts[&appid];
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let openid = item
            .get("openid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::new(ErrCode(41009)))?;
        out.push(info_object(st, acct, openid)?);
    }
    Ok(Reply::Json(json!({ "user_info_list": out })))
}

/// `GET /cgi-bin/user/get` (§5.3): followers in openid order, `page_size` per page,
/// `next_openid` = last openid of the page, empty once a page comes back empty.
pub(crate) fn user_get(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    use std::ops::Bound;
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    check_permission(acct)?;
    quota::check(acct, "/cgi-bin/user/get", cfg, now)?;
    quota::check_minute(acct, "/cgi-bin/user/get", cfg, now)?;
    let start = match req.param("next_openid") {
        Some(after) => Bound::Excluded(after.to_owned()),
        None => Bound::Unbounded,
    };
    let page: Vec<String> = acct
        .followers
        .range::<String, _>((start, Bound::Unbounded))
        .take(cfg.user_get_page_size.clamp(1, 10_000))
        .map(|(k, _)| k.clone())
        .collect();
    let total = acct.followers.len();
    let next = page.last().cloned().unwrap_or_default();
    let mut body = json!({"total": total, "count": page.len(), "next_openid": next});
    if !page.is_empty() {
        body["data"] = json!({ "openid": page });
    }
    Ok(Reply::Json(body))
}

/// Makes `user` a follower of the account (state only; the push driver sends the event),
/// counting a new follow in the statistics under its channel (docs/wechat-2.md §6.3). A
/// follower followed again only gets the new fields.
pub(crate) fn follow(
    acct: &mut AccountState,
    openid: &str,
    user: &str,
    opts: &FollowOptions,
    now_secs: i64,
    cfg: &SimConfig,
) {
    let via_qr = opts.qr_scene.is_some() || opts.qr_scene_str.is_some();
    let scene = opts.scene.clone().unwrap_or_else(|| {
        if via_qr {
            "ADD_SCENE_QR_CODE".into()
        } else {
            "ADD_SCENE_SEARCH".into()
        }
    });
    let source = UserSource::from_subscribe_scene(&scene);
    let before = acct.followers.insert(
        openid.to_owned(),
        Follower {
            openid: openid.to_owned(),
            user: user.to_owned(),
            subscribe_time: now_secs,
            subscribe_scene: scene,
            qr_scene: opts.qr_scene.unwrap_or(0),
            qr_scene_str: opts.qr_scene_str.clone().unwrap_or_default(),
            tagid_list: opts.tagid_list.clone(),
            remark: opts.remark.clone(),
        },
    );
    if before.is_none() {
        let followers = acct.followers.len();
        acct.stats
            .record_follow(cfg, now_secs.saturating_mul(1000), source, false, followers);
    }
}

/// Ends `openid`'s follow, counting the unfollow in the statistics under the channel of
/// their latest follow, or under 0 (`cancel_user_source`, docs/wechat-2.md §6.3). `None` when
/// they did not follow.
pub(crate) fn unfollow(
    acct: &mut AccountState,
    openid: &str,
    now_secs: i64,
    cfg: &SimConfig,
) -> Option<Follower> {
    let gone = acct.followers.remove(openid)?;
    let source = match cfg.cancel_user_source {
        CancelUserSource::LatestFollow => UserSource::from_subscribe_scene(&gone.subscribe_scene),
        CancelUserSource::Other => UserSource::OTHER,
    };
    let followers = acct.followers.len();
    acct.stats
        .record_follow(cfg, now_secs.saturating_mul(1000), source, true, followers);
    Some(gone)
}
