//! Logging in on a PC by scanning a parametric QR code with WeChat (docs/wechat-2.md §4.2),
//! and the per-login QR code of the in-WeChat follow page.
//!
//! Outside WeChat's browser WeChat's authorize page cannot open, so `/authorize` sends the
//! browser to a **scan page** instead. Its login (a row of `oidc_scan_logins`, bound to the
//! login cookie through its pending authorization) gets a temporary `QR_STR_SCENE` code with a
//! random scene, created with the scheduler's core token — never a fresh `/cgi-bin/token`,
//! which would supersede the token the account's own backends use (docs/wechat.md §1). A
//! reload shows the same code while it lives; a new one is created only when it expired (or
//! is about to), and creation is limited per browser and per client IP ([`crate::limits`]),
//! so anonymous page loads cannot spend the account's 100 000 daily creates.
//!
//! The push that reports the scan — `subscribe` with `qrscene_<scene>` for a new follower
//! (who the push also pre-registers), `SCAN` with the bare scene for a follower — must carry
//! the code's `Ticket` **and** its scene: a known ticket with another scene is a forged or
//! foreign push, logged and ignored. It marks the login scanned on whichever replica it lands,
//! and [`crate::events`] tells the waiting page at once. The scanner gets a passive reply in
//! WeChat (encrypted in safe and compatible mode): signed in, or the code expired or was used,
//! or — when the website or the account's plain push mode asks for it — a link to confirm.
//!
//! **Confirmation** (against QR-jacking, docs/wechat-2.md §4.2 b): the reply's link opens in
//! the scanner's WeChat and goes through WeChat's silent `snsapi_base`, which proves who opened
//! it; only the scanner can confirm, and the PC finishes only after. It is the default for
//! accounts in plain push mode, where nothing signs a push's body, so the scanner's openid is
//! only as trustworthy as the channel it came through.
//!
//! The PC then finishes as follow-required logins do: `user/info` with the core token, the end
//! user recorded with the code. One PC login costs one `qrcode/create` and one `user/info`.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use store::accounts::Account;
use store::gateway::PushMode;
use store::oidc::{OidcClient, PendingAuthorization};
use store::scan_logins::{NewScanLogin, ScanLogin, ScanMark, ScanQr};
use wechat::api::{QrCodeKind, QrCodeTicket};
use wechat::xml::QrScan;
use wechat::{AppSecret, ErrorClass};

use crate::{Gateway, GatewayError, random_alnum, random_token, token_hash};

/// How long a scan page's code lives (docs/wechat-2.md §4.2: a few minutes).
pub const QR_LIFETIME_SECS: u32 = 300;
/// A code with less than this left is replaced rather than shown: the person needs time to
/// take out their phone.
const QR_MIN_REMAINING_MS: i64 = 30_000;
/// The scene prefix of scan-page codes. Distinctive, so the account's own codes' pushes are
/// never taken for a login's.
pub const LOGIN_SCENE_PREFIX: &str = "wxhub-login:";
/// The scene prefix of follow-page codes.
pub const FOLLOW_SCENE_PREFIX: &str = "wxhub-follow:";

/// A fresh scene: the prefix and 128 random bits (well within the 64 characters of
/// `scene_str`, docs/wechat-2.md §1.1).
fn new_scene(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 16]>())
    )
}

/// `qrcode/create` with the scheduler's core token; a rejected token is reported and the call
/// retried once, as for `user/info`.
pub(crate) async fn create_qr(
    gw: &Gateway,
    account_id: &str,
    scene: &str,
    lifetime_secs: u32,
) -> Result<QrCodeTicket, GatewayError> {
    let kind = QrCodeKind::TemporaryStr {
        scene_str: scene.to_owned(),
        expire_seconds: Some(lifetime_secs),
    };
    let token = gw.core_tokens.current(account_id).await?;
    match gw.wechat.create_qrcode(&token, &kind).await {
        Err(e) if e.class() == ErrorClass::TokenRejected => {
            let fresh = gw.core_tokens.report_rejected(account_id, &token).await?;
            Ok(gw.wechat.create_qrcode(&fresh, &kind).await?)
        }
        other => Ok(other?),
    }
}

/// Whether scans at this account and website must be confirmed in WeChat: as the website
/// says, else when the account's pushes are in plain mode.
pub(crate) async fn needs_confirmation(
    gw: &Gateway,
    account: &Account,
    client: &OidcClient,
) -> Result<bool, GatewayError> {
    if let Some(explicit) = client.scan_confirmation {
        return Ok(explicit);
    }
    let settings = gw.store.gateway_settings(&account.id).await?;
    let mode = match settings.push_mode {
        Some(mode) => mode,
        None => {
            let secrets = gw.vault.read_secrets(&gw.store, &account.id).await?;
            crate::push::push_mode(None, secrets.encoding_aes_key.is_some())
        }
    };
    Ok(mode == PushMode::Plain)
}

/// Starts the scan login of `pending`; returns the scan page's path token.
pub(crate) async fn start(
    gw: &Gateway,
    account: &Account,
    client: &OidcClient,
    pending: &PendingAuthorization,
) -> Result<String, GatewayError> {
    let token = random_token();
    gw.store
        .create_scan_login(&NewScanLogin {
            id: token_hash(&token),
            pending_id: pending.id.clone(),
            account_id: account.id.clone(),
            created_at: gw.now(),
            expires_at: pending.expires_at,
            needs_confirmation: needs_confirmation(gw, account, client).await?,
        })
        .await?;
    Ok(token)
}

/// Where a scan login stands, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanState {
    /// The code is shown; nobody scanned yet.
    Waiting,
    /// The code expired before anyone scanned: a new one is needed.
    CodeExpired,
    /// Scanned; the scanner must confirm in WeChat.
    Confirm,
    /// Scanned (and confirmed if needed): the page goes on.
    Ready,
    /// The login finished or expired: start again from the website.
    Over,
}

impl ScanState {
    /// The name the page's script and the poll use.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanState::Waiting => "waiting",
            ScanState::CodeExpired => "code_expired",
            ScanState::Confirm => "confirm",
            ScanState::Ready => "ready",
            ScanState::Over => "expired",
        }
    }
}

/// The state of `login` at `now`.
pub(crate) fn state_of(login: &ScanLogin, now: i64) -> ScanState {
    if login.finished_at.is_some() || login.expires_at <= now {
        ScanState::Over
    } else if login.scanned_at.is_some() {
        if login.ready(now) {
            ScanState::Ready
        } else {
            ScanState::Confirm
        }
    } else if login.qr.as_ref().is_some_and(|qr| qr.expires_at > now) {
        ScanState::Waiting
    } else {
        ScanState::CodeExpired
    }
}

/// The open scan login behind a page token, its account and pending authorization — only
/// for the browser that started the login.
pub(crate) async fn open(
    gw: &Gateway,
    appid: &str,
    page_token: &str,
    browser: Option<&str>,
) -> Result<(Account, ScanLogin, PendingAuthorization), GatewayError> {
    let account = gw.active_account(appid).await?;
    let now = gw.now();
    let login = gw
        .store
        .get_scan_login(&token_hash(page_token))
        .await?
        .filter(|l| l.account_id == account.id && l.finished_at.is_none() && l.expires_at > now)
        .ok_or(GatewayError::ScanLoginUnknown)?;
    let pending = gw
        .store
        .get_pending_authorization(&login.pending_id, now)
        .await?
        .ok_or(GatewayError::ScanLoginUnknown)?;
    crate::binding::check(&pending, browser)?;
    Ok((account, login, pending))
}

/// What the scan page shows.
pub struct ScanView {
    pub account_name: String,
    pub site_name: String,
    /// The code's image (WeChat's `showqrcode`), when there is a live code.
    pub qr_image: Option<String>,
    /// What the code encodes.
    pub qr_url: Option<String>,
    /// Seconds until the code expires.
    pub qr_expires_in: i64,
    pub state: ScanState,
    /// A new code was needed but not created (too many codes): try again after this long.
    pub limited: Option<Duration>,
    pub page_url: String,
}

/// Makes sure an unscanned login has a live code, creating one if it has none or it is about
/// to expire — unless the browser or IP created too many. Returns the login as it is now and
/// the wait when limited.
async fn ensure_code(
    gw: &Gateway,
    account: &Account,
    login: ScanLogin,
    pending: &PendingAuthorization,
    ip: Option<IpAddr>,
) -> Result<(ScanLogin, Option<Duration>), GatewayError> {
    let now = gw.now();
    let live = login
        .qr
        .as_ref()
        .is_some_and(|qr| qr.expires_at - now >= QR_MIN_REMAINING_MS);
    if live || login.scanned_at.is_some() {
        return Ok((login, None));
    }
    let browser = pending.browser_binding_hash.as_deref().unwrap_or_default();
    if let Err(wait) = gw.limits.qr_create(browser, ip) {
        return Ok((login, Some(wait)));
    }
    // The code lives no longer than the login.
    let left_secs = (login.expires_at - now).div_euclid(1000);
    let lifetime =
        u32::try_from(left_secs.clamp(1, i64::from(QR_LIFETIME_SECS))).unwrap_or(QR_LIFETIME_SECS);
    let scene = new_scene(LOGIN_SCENE_PREFIX);
    let ticket = create_qr(gw, &account.id, &scene, lifetime).await?;
    let qr = ScanQr {
        scene,
        ticket: ticket.ticket,
        url: ticket.url,
        // docs/wechat-2.md §1.3: the answer's expire_seconds cannot be trusted.
        expires_at: now + i64::from(lifetime) * 1000,
    };
    gw.store.set_scan_login_qr(&login.id, &qr, now).await?;
    let login = gw
        .store
        .get_scan_login(&login.id)
        .await?
        .ok_or(GatewayError::ScanLoginUnknown)?;
    Ok((login, None))
}

/// The scan page: the login's live code (created if needed, see [`ensure_code`]).
pub async fn view(
    gw: &Gateway,
    appid: &str,
    page_token: &str,
    browser: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<ScanView, GatewayError> {
    let (account, login, pending) = open(gw, appid, page_token, browser).await?;
    let (login, limited) = ensure_code(gw, &account, login, &pending, ip).await?;
    let client = crate::login::pending_client(gw, &account, &pending).await?;
    let now = gw.now();
    let state = state_of(&login, now);
    let live = login.qr.as_ref().filter(|qr| qr.expires_at > now);
    Ok(ScanView {
        account_name: account.name,
        site_name: client.name,
        qr_image: live.map(|qr| gw.wechat.qrcode_image_url(&qr.ticket).to_string()),
        qr_url: live.map(|qr| qr.url.clone()),
        qr_expires_in: live.map_or(0, |qr| (qr.expires_at - now).div_euclid(1000)),
        state,
        limited,
        page_url: format!("{}/login/scan/{page_token}", gw.issuer(appid)),
    })
}

/// The login's state for the poll and the event stream (`None`: no such open login for this
/// browser), with the scan login's id for the event stream.
pub async fn status(
    gw: &Gateway,
    appid: &str,
    page_token: &str,
    browser: Option<&str>,
) -> Result<(ScanState, String, i64), GatewayError> {
    let (_, login, _) = open(gw, appid, page_token, browser).await?;
    let now = gw.now();
    let expires_in = login
        .qr
        .as_ref()
        .map_or(0, |qr| (qr.expires_at - now).div_euclid(1000).max(0));
    Ok((state_of(&login, now), login.id, expires_in))
}

/// The state of the scan login with this id, read again (for a page woken by an event).
pub(crate) async fn state_by_id(gw: &Gateway, id: &str) -> Result<ScanState, GatewayError> {
    Ok(match gw.store.get_scan_login(id).await? {
        Some(login) => state_of(&login, gw.now()),
        None => ScanState::Over,
    })
}

/// What the page's "continue" came to.
pub enum Continued {
    /// The login finished: the redirect to the client with its code.
    ToClient(String),
    /// Not yet: the state to show.
    NotReady(ScanState),
}

/// Finishes a ready login: `user/info` with the core token (the scanner follows: they just
/// followed or scanned as a follower), the login made single use, the code issued.
pub async fn continue_login(
    gw: &Gateway,
    appid: &str,
    page_token: &str,
    browser: Option<&str>,
) -> Result<Continued, GatewayError> {
    let (account, login, pending) = open(gw, appid, page_token, browser).await?;
    let now = gw.now();
    let (true, Some(openid)) = (login.ready(now), login.openid.clone()) else {
        return Ok(Continued::NotReady(state_of(&login, now)));
    };
    let info = crate::login::user_info(gw, &account.id, &openid).await?;
    if !gw.store.finish_scan_login(&login.id, gw.now()).await? {
        return Ok(Continued::NotReady(ScanState::Over));
    }
    let mut record = crate::login::follower_login(&openid, Some(&info));
    record.subscribed = Some(info.subscribe);
    let to = crate::oidc::issue_code(gw, &account, &pending, &record, None).await?;
    Ok(Continued::ToClient(to))
}

/// Drops `<` and `>` from an owner-chosen name put into a WeChat text, where `<a …>` is
/// markup.
fn plain(name: &str) -> String {
    name.chars().filter(|c| !matches!(c, '<' | '>')).collect()
}

/// The passive reply to a QR scan push of one of the gateway's codes, if it is one; marks
/// the login scanned (or the follow wait followed) on the way. `None`: not the gateway's
/// code, or a forged one (nothing to say).
pub(crate) async fn on_qr_scan(
    gw: &Gateway,
    account: &Account,
    openid: &str,
    scan: QrScan<'_>,
    authenticated: bool,
) -> Result<Option<String>, GatewayError> {
    if scan.scene.starts_with(LOGIN_SCENE_PREFIX) {
        on_login_scan(gw, account, openid, scan, authenticated).await
    } else if scan.scene.starts_with(FOLLOW_SCENE_PREFIX) {
        on_follow_scan(gw, account, openid, scan, authenticated).await
    } else {
        Ok(None)
    }
}

const EXPIRED_REPLY: &str = "这个登录二维码已过期，请在电脑上刷新页面后重新扫码。\n\
     This sign-in code has expired: refresh the page on your computer and scan again.";
const USED_REPLY: &str = "这个登录二维码已经用过了，请在电脑上刷新页面后重新扫码。\n\
     This sign-in code was already used: refresh the page on your computer and scan again.";

async fn on_login_scan(
    gw: &Gateway,
    account: &Account,
    openid: &str,
    scan: QrScan<'_>,
    authenticated: bool,
) -> Result<Option<String>, GatewayError> {
    let Some(login) = gw
        .store
        .find_scan_login_by_ticket(&account.id, scan.ticket)
        .await?
    else {
        // A code replaced by a refresh, or a login swept after it expired.
        return Ok(Some(EXPIRED_REPLY.to_owned()));
    };
    if login.qr.as_ref().map(|qr| qr.scene.as_str()) != Some(scan.scene) {
        tracing::warn!(
            account_id = %account.id,
            "QR scan push with a login code's ticket but another scene: forged or foreign, ignored"
        );
        return Ok(None);
    }
    let now = gw.now();
    let mark = gw
        .store
        .mark_scan_login_scanned(
            &login.id,
            scan.ticket,
            scan.scene,
            openid,
            scan.new_follower,
            authenticated,
            now,
        )
        .await?;
    match mark {
        ScanMark::Marked { first } => {
            if first {
                gw.announcements.announce(&gw.store, &login.id).await;
            }
            let Some(pending) = gw
                .store
                .get_pending_authorization(&login.pending_id, now)
                .await?
            else {
                return Ok(Some(EXPIRED_REPLY.to_owned()));
            };
            let client = crate::login::pending_client(gw, account, &pending)
                .await
                .ok();
            if let (true, Some(client)) = (first, &client) {
                // In the funnel a scan is the PC's "returned from WeChat", and a scanner who
                // followed on the way is a follow.
                let (mode, website) = (client.login_mode.as_str(), client.id.as_str());
                gw.stats
                    .login(&account.id, mode, website, stats::LoginStage::Returned);
                if scan.new_follower {
                    gw.stats
                        .login(&account.id, mode, website, stats::LoginStage::Followed);
                }
            }
            let site = client.map(|c| plain(&c.name)).unwrap_or_default();
            if login.needs_confirmation && login.confirmed_at.is_none() {
                let link = format!(
                    "{}/login/scan/confirm/{}",
                    gw.issuer(&account.appid),
                    login.id
                );
                Ok(Some(format!(
                    "你正在电脑上登录“{site}”。<a href=\"{link}\">点此确认登录</a>；如果不是你本人操作，请忽略本消息。\n\
                     Signing in to {site} on a computer: tap the link above to confirm. If it was not you, ignore this message."
                )))
            } else {
                Ok(Some(format!(
                    "已在电脑上登录“{site}”。\nSigned in to {site} on your computer."
                )))
            }
        }
        ScanMark::Used | ScanMark::TakenByAnother => Ok(Some(USED_REPLY.to_owned())),
        ScanMark::Expired => Ok(Some(EXPIRED_REPLY.to_owned())),
    }
}

async fn on_follow_scan(
    gw: &Gateway,
    account: &Account,
    openid: &str,
    scan: QrScan<'_>,
    authenticated: bool,
) -> Result<Option<String>, GatewayError> {
    let marked = gw
        .store
        .mark_follow_wait_followed_by_scan(
            &account.id,
            scan.ticket,
            scan.scene,
            openid,
            authenticated,
            gw.now(),
        )
        .await?;
    Ok(Some(match marked {
        Some(_) => "关注成功，请回到网页继续登录。\nFollowed: go back to the page to continue.",
        None => {
            "这个二维码已失效，请回到网页重新登录。\nThis code is no longer valid: go back to the page and start again."
        }
    }
    .to_owned()))
}

/// The follow page's own code for `wait`: the live one, or a new one (unless limited, or
/// WeChat or the core token fails — the page then shows the account's static image). Returns
/// the image URL.
pub(crate) async fn follow_code(
    gw: &Gateway,
    account: &Account,
    wait: &store::gateway::FollowWait,
    pending: &PendingAuthorization,
    ip: Option<IpAddr>,
) -> Result<Option<String>, GatewayError> {
    let now = gw.now();
    if let Some((_, ticket, expires_at)) = gw.store.follow_wait_qr(&wait.id).await?
        && expires_at - now >= QR_MIN_REMAINING_MS
    {
        return Ok(Some(gw.wechat.qrcode_image_url(&ticket).to_string()));
    }
    let browser = pending.browser_binding_hash.as_deref().unwrap_or_default();
    if gw.limits.qr_create(browser, ip).is_err() {
        return Ok(None);
    }
    let left_secs = (wait.expires_at - now).div_euclid(1000);
    let Ok(lifetime) = u32::try_from(left_secs) else {
        return Ok(None);
    };
    if lifetime == 0 {
        return Ok(None);
    }
    let scene = new_scene(FOLLOW_SCENE_PREFIX);
    let ticket = match create_qr(gw, &account.id, &scene, lifetime).await {
        Ok(ticket) => ticket,
        Err(error) => {
            tracing::warn!(account_id = %account.id, %error, "follow page code not created; the static image is shown");
            return Ok(None);
        }
    };
    let expires_at = now + i64::from(lifetime) * 1000;
    if !gw
        .store
        .set_follow_wait_qr(&wait.id, &scene, &ticket.ticket, expires_at, now)
        .await?
    {
        return Ok(None);
    }
    Ok(Some(gw.wechat.qrcode_image_url(&ticket.ticket).to_string()))
}

/// The reply link's first step, opened in the scanner's WeChat: sends them through WeChat's
/// silent `snsapi_base` to learn who opened it. `Err(ConfirmationUnknown)` when there is
/// nothing to confirm.
pub async fn confirm_start(gw: &Gateway, appid: &str, id: &str) -> Result<String, GatewayError> {
    let account = gw.active_account(appid).await?;
    let login = gw
        .store
        .get_scan_login(id)
        .await?
        .filter(|l| l.account_id == account.id)
        .ok_or(GatewayError::ConfirmationUnknown)?;
    let state = random_alnum(32);
    if !gw
        .store
        .set_scan_login_confirm_state(&login.id, &state, gw.now())
        .await?
    {
        return Err(GatewayError::ConfirmationUnknown);
    }
    let callback = format!("{}/login/scan/confirmed", gw.issuer(appid));
    Ok(gw
        .wechat
        .authorize_url(appid, &callback, wechat::Scope::SnsapiBase, &state, false)?)
}

/// The confirmation's return from WeChat: confirms when the person is the scanner. Returns
/// the website's name.
pub async fn confirm_finish(
    gw: &Gateway,
    appid: &str,
    code: Option<String>,
    state: Option<String>,
) -> Result<String, GatewayError> {
    let account = gw.active_account(appid).await?;
    let state = state
        .filter(|s| !s.is_empty())
        .ok_or(GatewayError::ConfirmationUnknown)?;
    let login = gw
        .store
        .find_scan_login_by_confirm_state(&state)
        .await?
        .filter(|l| l.account_id == account.id)
        .ok_or(GatewayError::ConfirmationUnknown)?;
    let code = code
        .filter(|c| !c.is_empty())
        .ok_or(GatewayError::ConfirmationUnknown)?;
    let secrets = gw.vault.read_secrets(&gw.store, &account.id).await?;
    let appsecret = AppSecret::new(secrets.appsecret.expose());
    let token = gw.wechat.exchange_code(appid, &appsecret, &code).await?;
    if !gw
        .store
        .confirm_scan_login(&login.id, &token.openid, gw.now())
        .await?
    {
        return Err(if login.openid.as_deref() == Some(token.openid.as_str()) {
            GatewayError::ConfirmationUnknown
        } else {
            GatewayError::NotTheScanner
        });
    }
    gw.announcements.announce(&gw.store, &login.id).await;
    let site = match gw
        .store
        .get_pending_authorization(&login.pending_id, gw.now())
        .await?
    {
        Some(pending) => {
            crate::login::pending_client(gw, &account, &pending)
                .await?
                .name
        }
        None => String::new(),
    };
    Ok(site)
}
