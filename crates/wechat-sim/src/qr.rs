//! Parametric QR codes (docs/wechat-2.md §1, §2): `qrcode/create` with its four action names,
//! limits, lenient or strict input, the permanent budget and the daily quota; `showqrcode`
//! drawing a real QR image of the code's `url`; and the lookups the scan hook (§4.4) needs.
//!
//! Codes live in one map over all accounts, keyed by ticket, because `showqrcode` names no
//! account. Temporary codes expire on the simulator clock; nothing is purged until the store
//! reaches `SimLimits::max_qrcodes` (so a scan of an expired code can still say "expired").
//! Permanent codes are never dropped: the 100 000 budget bounds them per account.

use std::io::Cursor;

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value, json};
use wechat::errcode::ErrCode;

use crate::config::{ExpireSecondsEcho, PermanentSameScene, QrInputMode, QrOverMax, SimConfig};
use crate::model::AccountKind;
use crate::quota;
use crate::state::{AccountState, State, random_string};
use crate::tokens;
use crate::wire::{ApiError, Reply, WireRequest, json_str};

/// Path of the endpoint (its counter and quota key).
const PATH: &str = "/cgi-bin/qrcode/create";
/// Longest temporary lifetime (docs/wechat-2.md §1.2: 30 days).
pub const MAX_EXPIRE_SECONDS: i64 = 2_592_000;
/// Highest permanent integer scene (docs/wechat-2.md §1.1).
pub const MAX_PERMANENT_SCENE_ID: u64 = 100_000;
/// Longest `scene_str`, in characters (docs/wechat-2.md §1.1).
pub const MAX_SCENE_STR_CHARS: usize = 64;
/// What the `url` of every code starts with (docs/wechat-2.md §1.3).
pub const URL_PREFIX: &str = "http://weixin.qq.com/q/";

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The four action names (docs/wechat-2.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QrAction {
    /// Temporary, integer scene.
    #[serde(rename = "QR_SCENE")]
    Scene,
    /// Temporary, string scene.
    #[serde(rename = "QR_STR_SCENE")]
    StrScene,
    /// Permanent, integer scene.
    #[serde(rename = "QR_LIMIT_SCENE")]
    LimitScene,
    /// Permanent, string scene.
    #[serde(rename = "QR_LIMIT_STR_SCENE")]
    LimitStrScene,
}

impl QrAction {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "QR_SCENE" => Some(Self::Scene),
            "QR_STR_SCENE" => Some(Self::StrScene),
            "QR_LIMIT_SCENE" => Some(Self::LimitScene),
            "QR_LIMIT_STR_SCENE" => Some(Self::LimitStrScene),
            _ => None,
        }
    }

    /// The action name as sent.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scene => "QR_SCENE",
            Self::StrScene => "QR_STR_SCENE",
            Self::LimitScene => "QR_LIMIT_SCENE",
            Self::LimitStrScene => "QR_LIMIT_STR_SCENE",
        }
    }

    fn permanent(self) -> bool {
        matches!(self, Self::LimitScene | Self::LimitStrScene)
    }

    fn string_scene(self) -> bool {
        matches!(self, Self::StrScene | Self::LimitStrScene)
    }
}

/// A code's scene: what the pushes carry in `EventKey` (docs/wechat-2.md §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QrScene {
    /// `scene_id`, pushed as its decimal text.
    Id(u32),
    /// `scene_str`, pushed exactly.
    Str(String),
}

impl QrScene {
    /// The `EventKey` of a `SCAN` push (a `subscribe` adds `qrscene_`).
    pub fn event_key(&self) -> String {
        match self {
            Self::Id(n) => n.to_string(),
            Self::Str(s) => s.clone(),
        }
    }
}

/// One QR code (docs/wechat-2.md §1.6 item 3).
#[derive(Debug, Clone)]
pub(crate) struct QrCode {
    pub appid: String,
    pub ticket: String,
    pub url: String,
    pub action: QrAction,
    pub scene: QrScene,
    pub created_at: i64,
    /// `None` for permanent codes.
    pub expires_at: Option<i64>,
}

impl QrCode {
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|end| now >= end)
    }

    pub fn view(&self, now: i64) -> QrCodeView {
        QrCodeView {
            appid: self.appid.clone(),
            ticket: self.ticket.clone(),
            url: self.url.clone(),
            action_name: self.action,
            scene_id: match self.scene {
                QrScene::Id(n) => Some(n),
                QrScene::Str(_) => None,
            },
            scene_str: match &self.scene {
                QrScene::Str(s) => Some(s.clone()),
                QrScene::Id(_) => None,
            },
            created_at_ms: self.created_at,
            expires_at_ms: self.expires_at,
            status: if self.expired(now) { "expired" } else { "live" },
        }
    }
}

/// A QR code as the control API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QrCodeView {
    /// The account.
    pub appid: String,
    /// The ticket `qrcode/create` returned.
    pub ticket: String,
    /// The text the image encodes.
    pub url: String,
    /// `QR_SCENE`, `QR_STR_SCENE`, `QR_LIMIT_SCENE` or `QR_LIMIT_STR_SCENE`.
    pub action_name: QrAction,
    /// The integer scene, for integer codes (and for string codes whose scene lenient input
    /// handling turned into 0).
    pub scene_id: Option<u32>,
    /// The string scene, for string codes.
    pub scene_str: Option<String>,
    /// Creation time (Unix ms, simulator clock).
    pub created_at_ms: i64,
    /// End of life of a temporary code; `None` for permanent codes.
    pub expires_at_ms: Option<i64>,
    /// `live` or `expired` at the current simulator time.
    pub status: &'static str,
}

/// 40053 invalid action info, with what was wrong.
fn invalid_action(why: &str) -> ApiError {
    ApiError::with_msg(
        ErrCode::INVALID_ACTION_INFO,
        format!("{} hint: [{why}]", ErrCode::INVALID_ACTION_INFO.message()),
    )
}

/// 40035 invalid parameter, with what was wrong.
fn invalid_arg(why: &str) -> ApiError {
    ApiError::with_msg(
        ErrCode::INVALID_ARGS,
        format!("{} hint: [{why}]", ErrCode::INVALID_ARGS.message()),
    )
}

/// An unsigned integer a JSON value holds: a number, or in lenient mode a string of digits.
/// `Ok(None)` = readable, but not a whole number ≥ 0 (negative); `Err(())` = unreadable.
fn read_integer(v: &Value, mode: QrInputMode) -> Result<Option<u64>, ()> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                Ok(None)
            } else if mode == QrInputMode::Lenient
                && let Some(f) = n.as_f64()
                && f >= u64::MAX as f64
            {
                // serde_json keeps integers above u64::MAX as floats: still "a large number".
                Ok(Some(u64::MAX))
            } else {
                Err(())
            }
        }
        Value::String(s) if mode == QrInputMode::Lenient => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Some(t.parse::<u64>().unwrap_or(u64::MAX)))
            } else if t.starts_with('-')
                && t.len() > 1
                && t[1..].bytes().all(|b| b.is_ascii_digit())
            {
                Ok(None)
            } else {
                Err(())
            }
        }
        _ => Err(()),
    }
}

/// The scene of a create (docs/wechat-2.md §1.1, §1.2, §1.4).
fn read_scene(
    body: &Map<String, Value>,
    action: QrAction,
    mode: QrInputMode,
) -> Result<QrScene, ApiError> {
    let lenient = mode == QrInputMode::Lenient;
    let scene = body
        .get("action_info")
        .and_then(Value::as_object)
        .and_then(|info| info.get("scene"))
        .and_then(Value::as_object);
    let Some(scene) = scene else {
        // §1.4: `{"action_info":{"scene_id":123}}` succeeds with scene 0.
        return if lenient {
            Ok(QrScene::Id(0))
        } else {
            Err(invalid_action("action_info.scene must be an object"))
        };
    };
    if action.string_scene() {
        let value = match scene.get("scene_str") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) if lenient => Some(n.to_string()),
            Some(Value::String(_)) if !lenient => {
                return Err(invalid_arg("scene_str must be 1 to 64 characters"));
            }
            _ => None,
        };
        return match value {
            Some(s) if s.chars().count() > MAX_SCENE_STR_CHARS => {
                Err(invalid_arg("scene_str must be 1 to 64 characters"))
            }
            Some(s) => Ok(QrScene::Str(s)),
            None if lenient => Ok(QrScene::Id(0)),
            None => Err(invalid_action("scene.scene_str must be a string")),
        };
    }
    let read = scene
        .get("scene_id")
        .map_or(Err(()), |v| read_integer(v, mode));
    let n = match read {
        Err(()) if lenient => return Ok(QrScene::Id(0)),
        Err(()) => return Err(invalid_action("scene.scene_id must be an integer")),
        Ok(n) => n,
    };
    if action.permanent() {
        return match n {
            Some(n @ 1..=MAX_PERMANENT_SCENE_ID) => Ok(QrScene::Id(n as u32)),
            _ => Err(invalid_arg("a permanent scene_id must be 1 to 100000")),
        };
    }
    match n {
        Some(n @ 1..=0xFFFF_FFFF) => Ok(QrScene::Id(n as u32)),
        // §1.2, observed: larger values saturate.
        Some(n) if lenient && n > 0 => Ok(QrScene::Id(u32::MAX)),
        _ if lenient => Ok(QrScene::Id(0)),
        _ => Err(invalid_arg("a temporary scene_id must be 1 to 4294967295")),
    }
}

/// The lifetime of a temporary code in seconds (docs/wechat-2.md §1.2).
fn read_expire(body: &Map<String, Value>, cfg: &SimConfig) -> Result<i64, ApiError> {
    let lenient = cfg.qr_input_mode == QrInputMode::Lenient;
    let default = i64::try_from(cfg.qr_default_expire.as_secs()).unwrap_or(MAX_EXPIRE_SECONDS);
    let value = match body.get("expire_seconds") {
        None | Some(Value::Null) => return Ok(default),
        Some(v) => read_integer(v, cfg.qr_input_mode),
    };
    match value {
        Ok(Some(0)) | Ok(None) | Err(()) if lenient => Ok(default),
        Ok(Some(n)) if n > 0 && n <= MAX_EXPIRE_SECONDS as u64 => Ok(n as i64),
        Ok(Some(n)) if n > 0 => match cfg.qr_over_max {
            QrOverMax::Clamp => Ok(MAX_EXPIRE_SECONDS),
            QrOverMax::Reject => Err(invalid_arg("expire_seconds must be at most 2592000")),
        },
        _ => Err(invalid_arg("expire_seconds must be 1 to 2592000")),
    }
}

/// A fresh `url` id and ticket shaped like WeChat's (docs/wechat-2.md §1.3): URL-safe
/// base64 with `==` padding of bytes holding the url, then the creation time and lifetime as
/// little-endian u32. The padding and the `-`/`_` alphabet catch a client that puts the
/// ticket into a URL without encoding it.
fn mint(created_secs: i64, expire_secs: u32) -> (String, String) {
    let url = format!("{URL_PREFIX}02{}", random_string(ALNUM, 22));
    let mut bytes = vec![0x81, 0x01];
    bytes.extend(rand::random::<[u8; 6]>());
    bytes.push(u8::try_from(url.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(url.as_bytes());
    bytes.extend_from_slice(
        &u32::try_from(created_secs)
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    bytes.extend_from_slice(&expire_secs.to_le_bytes());
    // One byte over a multiple of 3 makes the encoding end in `==`.
    while bytes.len() % 3 != 1 {
        bytes.push(0);
    }
    let ticket = base64::engine::general_purpose::URL_SAFE.encode(&bytes);
    (url, ticket)
}

/// Makes room for one more code: expired codes go first, then the oldest temporary ones.
/// `false` when the store holds nothing but permanent codes.
fn make_room(st: &mut State, cap: usize, now: i64) -> bool {
    if st.qrcodes.len() < cap {
        return true;
    }
    st.qrcodes.retain(|_, c| !c.expired(now));
    while st.qrcodes.len() >= cap.max(1) {
        let oldest = st
            .qrcodes
            .values()
            .filter(|c| c.expires_at.is_some())
            .min_by_key(|c| c.created_at)
            .map(|c| c.ticket.clone());
        match oldest {
            Some(t) => {
                st.qrcodes.remove(&t);
            }
            None => break,
        }
    }
    let qrcodes = &st.qrcodes;
    st.qr_urls.retain(|_, t| qrcodes.contains_key(t));
    st.qrcodes.len() < cap.max(1)
}

/// 48001 for accounts without the QR permission (docs/wechat-2.md §1: service accounts only;
/// the simulator also requires verification, as the console does).
fn check_permission(acct: &AccountState) -> Result<(), ApiError> {
    if acct.spec.kind == AccountKind::Service && acct.spec.verified {
        Ok(())
    } else {
        Err(ApiError::new(ErrCode::API_UNAUTHORIZED))
    }
}

fn answer(code: &QrCode, cfg: &SimConfig) -> Reply {
    match code.expires_at {
        None => Reply::Json(json!({"ticket": code.ticket, "url": code.url})),
        Some(end) => {
            let lifetime = (end - code.created_at) / 1000;
            let echoed = match cfg.expire_seconds_echo {
                ExpireSecondsEcho::Actual => lifetime,
                ExpireSecondsEcho::Zero => 0,
            };
            Reply::Json(json!({"ticket": code.ticket, "expire_seconds": echoed, "url": code.url}))
        }
    }
}

/// `POST /cgi-bin/qrcode/create` (docs/wechat-2.md §1). Checks in this order: token →
/// permission (48001) → daily quota (45009) → minute limit → body (44002 empty, 47001 not a
/// JSON object) → action name (40053) → scene and lifetime (lenient, or 40053/40035) →
/// permanent budget (45009) → room in the store (-1).
pub(crate) fn create(
    st: &mut State,
    cfg: &SimConfig,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let appid = tokens::authenticate(st, now, req)?;
    *appid_out = Some(appid.clone());
    let acct = st
        .accounts
        .get_mut(&appid)
        .ok_or(ApiError::new(ErrCode::INVALID_CREDENTIAL))?;
    check_permission(acct)?;
    quota::check(acct, PATH, cfg, now)?;
    quota::check_minute(acct, PATH, cfg, now)?;
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(ErrCode::EMPTY_POST_DATA));
    }
    let body = req.json_body()?;
    let action = json_str(&body, "action_name")
        .and_then(QrAction::parse)
        .ok_or_else(|| {
            invalid_action(
                "action_name must be QR_SCENE, QR_STR_SCENE, QR_LIMIT_SCENE or QR_LIMIT_STR_SCENE",
            )
        })?;
    let scene = read_scene(&body, action, cfg.qr_input_mode)?;
    // §1.1: ignored for permanent codes, whatever it holds.
    let lifetime = if action.permanent() {
        None
    } else {
        Some(read_expire(&body, cfg)?)
    };
    if action.permanent() {
        let existing = acct
            .qr_permanent
            .get(&scene)
            .and_then(|t| st.qrcodes.get(t));
        if cfg.permanent_same_scene == PermanentSameScene::SameTicket
            && let Some(code) = existing
        {
            return Ok(answer(code, cfg));
        }
        if acct.qr_permanent_used >= cfg.qr_permanent_limit {
            return Err(ApiError::with_msg(
                ErrCode::DAILY_QUOTA_REACHED,
                format!(
                    "reach max permanent qrcode limit: {} in total (simulator)",
                    cfg.qr_permanent_limit
                ),
            ));
        }
    }
    if !make_room(st, cfg.limits.max_qrcodes, now) {
        return Err(ApiError::with_msg(
            ErrCode::SYSTEM_ERROR,
            "system error (the simulator's QR store is full of permanent codes: SimLimits::max_qrcodes)",
        ));
    }
    let created_secs = now.div_euclid(1000);
    let (url, ticket) = loop {
        let (url, ticket) = mint(
            created_secs,
            lifetime.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
        );
        if !st.qrcodes.contains_key(&ticket) && !st.qr_urls.contains_key(&url) {
            break (url, ticket);
        }
    };
    let code = QrCode {
        appid: appid.clone(),
        ticket: ticket.clone(),
        url: url.clone(),
        action,
        scene: scene.clone(),
        created_at: now,
        expires_at: lifetime.map(|l| now.saturating_add(l.saturating_mul(1000))),
    };
    let reply = answer(&code, cfg);
    if action.permanent()
        && let Some(acct) = st.accounts.get_mut(&appid)
    {
        acct.qr_permanent_used = acct.qr_permanent_used.saturating_add(1);
        acct.qr_permanent.insert(scene, ticket.clone());
    }
    st.qr_urls.insert(url, ticket.clone());
    st.qrcodes.insert(ticket, code);
    Ok(reply)
}

/// `GET /mp/cgi-bin/showqrcode?ticket=…` (docs/wechat-2.md §2): no token; the image of a live
/// code, 404 for an unknown or expired ticket.
pub(crate) fn show(
    st: &mut State,
    now: i64,
    appid_out: &mut Option<String>,
    req: &WireRequest,
) -> Result<Reply, ApiError> {
    let code = req.param("ticket").and_then(|t| st.qrcodes.get(t));
    *appid_out = code.map(|c| c.appid.clone());
    Ok(match code {
        Some(c) if !c.expired(now) => Reply::QrImage {
            text: c.url.clone(),
        },
        _ => Reply::Status(axum::http::StatusCode::NOT_FOUND),
    })
}

/// Finds a code by its ticket or by its `url` (the scan hook accepts either).
pub(crate) fn lookup<'s>(st: &'s State, ticket_or_url: &str) -> Option<&'s QrCode> {
    let key = ticket_or_url.trim();
    st.qrcodes.get(key).or_else(|| {
        st.qr_urls
            .get(key)
            .and_then(|ticket| st.qrcodes.get(ticket))
    })
}

/// Pixels per QR module and modules of quiet zone around the code.
const MODULE_PX: u32 = 10;
const QUIET_MODULES: u32 = 4;

/// A PNG of a QR code encoding `text` (error correction M), black on white with the quiet
/// zone the standard asks for. `None` only if `text` cannot be encoded (far longer than any
/// `url`).
pub(crate) fn png(text: &str) -> Option<Vec<u8>> {
    use image::ImageEncoder;
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    let modules = u32::try_from(code.width()).ok()?;
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_MODULES) * MODULE_PX;
    let img = image::GrayImage::from_fn(side, side, |x, y| {
        let (mx, my) = (x / MODULE_PX, y / MODULE_PX);
        let dark = mx >= QUIET_MODULES
            && my >= QUIET_MODULES
            && mx < QUIET_MODULES + modules
            && my < QUIET_MODULES + modules
            && colors
                .get(((my - QUIET_MODULES) * modules + (mx - QUIET_MODULES)) as usize)
                .is_some_and(|c| *c == qrcode::Color::Dark);
        image::Luma([if dark { 0 } else { 255 }])
    });
    let mut out = Cursor::new(Vec::new());
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), side, side, image::ExtendedColorType::L8)
        .ok()?;
    Some(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_padded_url_safe_base64_holding_the_url_time_and_lifetime() {
        for _ in 0..50 {
            let (url, ticket) = mint(1_767_225_600, 600);
            assert!(url.starts_with(URL_PREFIX) && url.len() == URL_PREFIX.len() + 24);
            assert!(ticket.ends_with("=="), "{ticket}");
            assert!(
                ticket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b))
            );
            let bytes = base64::engine::general_purpose::URL_SAFE
                .decode(&ticket)
                .unwrap();
            let at = bytes
                .windows(url.len())
                .position(|w| w == url.as_bytes())
                .unwrap();
            let rest = &bytes[at + url.len()..];
            assert_eq!(
                u32::from_le_bytes(rest[..4].try_into().unwrap()),
                1_767_225_600
            );
            assert_eq!(u32::from_le_bytes(rest[4..8].try_into().unwrap()), 600);
        }
    }
}
