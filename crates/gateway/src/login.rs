//! The WeChat side of a login: the OAuth callback (docs/wechat.md §4.2–§4.7) and, for follow-required
//! clients, `/cgi-bin/user/info` (§5.1) and the follow wait.
//!
//! Every step reads and writes its state in the database (pending authorization, follow
//! wait, end user, code), so the callback, the follow page, its status poll and the final
//! redirect may each land on a different replica.
//!
//! The core token comes from the scheduler through [`crate::CoreTokens`]; when WeChat rejects
//! it (40001/40014/42001) the rejection is reported once and the call retried once.
//!
//! Every step after `/authorize` must come from the browser that started the login (its login
//! cookie, see `binding.rs`); the end user is recorded only together with the code that
//! finishes the login.

use std::net::IpAddr;
use std::time::Duration;

use store::accounts::Account;
use store::end_users::{CreatedVia, EndUserLogin};
use store::gateway::FollowWait;
use store::oidc::{LoginMode, OidcClient, PendingAuthorization, PendingStatus};
use wechat::api::UserInfo;
use wechat::{AppSecret, ErrorClass, Lang};

use crate::{Gateway, GatewayError, random_token, token_hash};

/// Where a login step leads.
pub enum LoginStep {
    /// Back to the client with a code (or an error): a redirect.
    ToClient(String),
    /// The user must follow first: a redirect to the follow page at this path.
    FollowPage(String),
    /// The user refused: a page explaining it, with this link back to the client
    /// (`error=access_denied`).
    Denied(String),
}

/// What the follow page shows.
pub struct FollowView {
    pub account_name: String,
    /// The account's QR code image (https), when configured.
    pub qr_url: Option<String>,
    /// This login's own temporary code (its image), so the follow push names this login.
    pub login_qr: Option<String>,
    /// A link to the account's profile (https), when configured.
    pub follow_link: Option<String>,
    pub status_url: String,
    pub continue_url: String,
}

/// `user/info` with the scheduler's core token; a rejected token is reported and the call
/// retried once with the token the scheduler returns.
pub(crate) async fn user_info(
    gw: &Gateway,
    account_id: &str,
    openid: &str,
) -> Result<UserInfo, GatewayError> {
    let token = gw.core_tokens.current(account_id).await?;
    match gw.wechat.user_info(&token, openid, Lang::ZhCn).await {
        Err(e) if e.class() == ErrorClass::TokenRejected => {
            tracing::info!(account_id, code = ?e.code(), "core token rejected by WeChat; reported to the scheduler");
            let fresh = gw.core_tokens.report_rejected(account_id, &token).await?;
            Ok(gw.wechat.user_info(&fresh, openid, Lang::ZhCn).await?)
        }
        other => Ok(other?),
    }
}

/// The client a pending authorization belongs to, if it belongs to `account` (a state from
/// another account's login is treated as unknown).
pub(crate) async fn pending_client(
    gw: &Gateway,
    account: &Account,
    pending: &PendingAuthorization,
) -> Result<OidcClient, GatewayError> {
    gw.store
        .list_oidc_clients(&account.id)
        .await?
        .into_iter()
        .find(|c| c.id == pending.oidc_client_id)
        .ok_or(GatewayError::StateUnknown)
}

/// What a follow-required login records about the user (with user/info's data when the
/// follow was checked there).
pub(crate) fn follower_login(openid: &str, info: Option<&UserInfo>) -> EndUserLogin {
    EndUserLogin {
        openid: openid.to_owned(),
        via: CreatedVia::LoginBase,
        unionid: info.and_then(|i| i.unionid.clone()),
        nickname: info.and_then(|i| i.nickname.clone()),
        avatar_url: info.and_then(|i| i.headimgurl.clone()),
        subscribed: Some(true),
        subscribe_time: info
            .and_then(|i| i.subscribe_time)
            .and_then(|s| s.checked_mul(1000)),
        subscribe_scene: info.and_then(|i| i.subscribe_scene.clone()),
    }
}

/// `GET /t/{appid}/wechat/callback?code=…&state=…`: WeChat sends the user back here.
///
/// `browser` is the request's login-cookie value: it must be the one `/authorize` set.
pub async fn wechat_callback(
    gw: &Gateway,
    appid: &str,
    code: Option<String>,
    state: Option<String>,
    browser: Option<&str>,
) -> Result<LoginStep, GatewayError> {
    let now = gw.now();
    // One query for the pending login, its client's mode, the account and its sealed
    // secrets; when it finds nothing, the separate lookups tell what is wrong.
    let fast = match state.as_deref().filter(|s| !s.is_empty()) {
        Some(state) => gw
            .store
            .find_callback_context(appid, state, now)
            .await?
            .filter(|c| c.account.state == store::accounts::AccountState::Active),
        None => None,
    };
    let (account, pending, login_mode, sealed) = match fast {
        Some(c) => (c.account, c.pending, c.login_mode, c.secrets),
        None => {
            let account = gw.active_account(appid).await?;
            let state = state
                .filter(|s| !s.is_empty())
                .ok_or(GatewayError::StateMissing)?;
            let Some(pending) = gw.store.find_pending_authorization(&state, now).await? else {
                // Unknown, expired or used: which website it was for is no longer known.
                gw.stats
                    .login_failed(&account.id, "unknown", "", stats::LoginFailure::Expired);
                return Err(GatewayError::StateUnknown);
            };
            let client = pending_client(gw, &account, &pending).await?;
            (account, pending, client.login_mode, None)
        }
    };
    crate::binding::check(&pending, browser)?;
    let (mode, website) = (login_mode.as_str(), pending.oidc_client_id.as_str());
    gw.stats
        .login(&account.id, mode, website, stats::LoginStage::Returned);

    let Some(code) = code.filter(|c| !c.is_empty()) else {
        gw.stats.login_failed(
            &account.id,
            mode,
            website,
            stats::LoginFailure::ConsentRefused,
        );
        // §4.2: a refusal comes back with `state` only.
        gw.store
            .finish_pending_authorization(&pending.id, PendingStatus::Denied, None, now)
            .await?;
        return Ok(LoginStep::Denied(crate::oidc::error_to_client(
            gw,
            appid,
            &pending,
            "access_denied",
            "the user declined the WeChat authorization",
        )));
    };

    let secrets = match sealed {
        Some(sealed) => {
            let vault = gw.vault.for_kek(&sealed.dek_kek_id);
            accounts::open_secrets(&vault, &account.id, &sealed)?
        }
        None => gw.vault.read_secrets(&gw.store, &account.id).await?,
    };
    let appsecret = AppSecret::new(secrets.appsecret.expose());
    let token = gw.wechat.exchange_code(appid, &appsecret, &code).await?;
    if token.is_snapshotuser {
        // §4.3: a virtual user; the pending login stays open so the full page can finish it.
        gw.stats.login_failed(
            &account.id,
            mode,
            website,
            stats::LoginFailure::SnapshotUser,
        );
        return Err(GatewayError::SnapshotUser);
    }
    let openid = token.openid.clone();
    match login_mode {
        LoginMode::Userinfo => {
            let info = gw
                .wechat
                .sns_userinfo(&token.access_token, &openid, Lang::ZhCn)
                .await?;
            let login = EndUserLogin {
                openid: openid.clone(),
                via: CreatedVia::LoginUserinfo,
                unionid: info.unionid.clone().or(token.unionid.clone()),
                nickname: Some(info.nickname.clone()).filter(|n| !n.is_empty()),
                avatar_url: info.headimgurl.clone(),
                subscribed: None,
                subscribe_time: None,
                subscribe_scene: None,
            };
            let to = crate::oidc::issue_code(gw, &account, &pending, &login, None).await?;
            Ok(LoginStep::ToClient(to))
        }
        LoginMode::FollowRequired => {
            let info = user_info(gw, &account.id, &openid).await?;
            if info.subscribe {
                let login = follower_login(&openid, Some(&info));
                let to = crate::oidc::issue_code(gw, &account, &pending, &login, None).await?;
                return Ok(LoginStep::ToClient(to));
            }
            if pending.prompt_none {
                // The follow page is a page; prompt=none forbids showing one.
                gw.store
                    .finish_pending_authorization(&pending.id, PendingStatus::Denied, None, now)
                    .await?;
                return Ok(LoginStep::ToClient(crate::oidc::error_to_client(
                    gw,
                    appid,
                    &pending,
                    "interaction_required",
                    "the user must follow the Official Account first, which needs a page",
                )));
            }
            let wait_token = random_token();
            let now = gw.now();
            gw.store
                .create_follow_wait(&FollowWait {
                    id: token_hash(&wait_token),
                    pending_id: pending.id.clone(),
                    account_id: account.id.clone(),
                    openid,
                    created_at: now,
                    expires_at: pending.expires_at,
                    followed_at: None,
                    follow_verified: false,
                    finished_at: None,
                })
                .await?;
            gw.stats
                .login(&account.id, mode, website, stats::LoginStage::FollowPage);
            Ok(LoginStep::FollowPage(format!(
                "{}/login/follow/{wait_token}",
                gw.issuer(appid)
            )))
        }
    }
}

/// The open wait behind a follow-page token, its account and pending authorization —
/// only for the browser that started the login.
async fn open_wait(
    gw: &Gateway,
    appid: &str,
    wait_token: &str,
    browser: Option<&str>,
) -> Result<(Account, FollowWait, PendingAuthorization), GatewayError> {
    let account = gw.active_account(appid).await?;
    let now = gw.now();
    let wait = gw
        .store
        .find_follow_wait(&token_hash(wait_token), now)
        .await?
        .filter(|w| w.account_id == account.id)
        .ok_or(GatewayError::FollowWaitUnknown)?;
    let pending = gw
        .store
        .get_pending_authorization(&wait.pending_id, now)
        .await?
        .ok_or(GatewayError::FollowWaitUnknown)?;
    crate::binding::check(&pending, browser)?;
    Ok((account, wait, pending))
}

/// What the follow page shows for this wait: with this login's own QR code when one can be
/// had (see [`crate::scan::follow_code`]; `ip` for its limit), else the account's static image
/// or how to find the account.
pub async fn follow_view(
    gw: &Gateway,
    appid: &str,
    wait_token: &str,
    browser: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<FollowView, GatewayError> {
    let (account, wait, pending) = open_wait(gw, appid, wait_token, browser).await?;
    let settings = gw.store.gateway_settings(&account.id).await?;
    let login_qr = if wait.followed_at.is_none() {
        crate::scan::follow_code(gw, &account, &wait, &pending, ip).await?
    } else {
        None
    };
    let base = format!("{}/login/follow/{wait_token}", gw.issuer(appid));
    Ok(FollowView {
        account_name: account.name,
        qr_url: settings.follow_qr_url,
        login_qr,
        follow_link: settings.follow_link,
        status_url: format!("{base}/status"),
        continue_url: format!("{base}/continue"),
    })
}

/// Whether the subscribe push for this wait has arrived (`None`: unknown or expired).
pub async fn follow_status(
    gw: &Gateway,
    appid: &str,
    wait_token: &str,
    browser: Option<&str>,
) -> Result<Option<bool>, GatewayError> {
    match open_wait(gw, appid, wait_token, browser).await {
        Ok((_, wait, _)) => Ok(Some(wait.followed_at.is_some())),
        Err(GatewayError::FollowWaitUnknown | GatewayError::UnknownAccount) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What "I've followed" (the continue step) came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continued {
    /// The login finished: the redirect to the client with its code.
    ToClient(String),
    /// WeChat says the user does not follow yet.
    NotYet,
    /// Too many re-checks: the next is allowed after this long (`None`: this wait has used
    /// all of its re-checks). The subscribe push still finishes the login.
    Limited(Option<Duration>),
}

/// "I've followed" (or the page's script after the push arrived): finishes the login when
/// the user follows — known from an authenticated (safe/compatible-mode) subscribe push, or
/// else checked with `user/info`, which is also what a plain-mode push's follow gets (its body
/// is signed by nothing). Each such re-check spends one `user/info` call of the account's
/// daily quota, so it is limited per client IP (`ip`) and per wait ([`crate::limits`]).
pub async fn follow_continue(
    gw: &Gateway,
    appid: &str,
    wait_token: &str,
    browser: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<Continued, GatewayError> {
    let (account, wait, pending) = open_wait(gw, appid, wait_token, browser).await?;
    let info = if wait.followed_at.is_some() && wait.follow_verified {
        None
    } else {
        if let Some(ip) = ip
            && let Err(retry) = gw.limits.follow_rechecks_per_ip.check(&ip)
        {
            return Ok(Continued::Limited(Some(retry)));
        }
        let config = gw.limits.config;
        let interval =
            i64::try_from(config.follow_recheck_interval.as_millis()).unwrap_or(i64::MAX);
        if let Err(retry) = gw
            .store
            .take_follow_recheck(
                &wait.id,
                gw.now(),
                interval,
                i64::from(config.follow_rechecks_per_wait),
            )
            .await?
        {
            let retry = retry.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
            return Ok(Continued::Limited(retry));
        }
        let info = user_info(gw, &account.id, &wait.openid).await?;
        if !info.subscribe {
            return Ok(Continued::NotYet);
        }
        Some(info)
    };
    let client = pending_client(gw, &account, &pending).await?;
    let login = follower_login(&wait.openid, info.as_ref());
    let to = crate::oidc::issue_code(gw, &account, &pending, &login, Some(&wait.id)).await?;
    gw.stats.login(
        &account.id,
        client.login_mode.as_str(),
        &client.id,
        stats::LoginStage::Followed,
    );
    Ok(Continued::ToClient(to))
}
