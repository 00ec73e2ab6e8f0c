//! The simulator's configuration objects as the control API and the Rust API see them:
//! accounts, simulated WeChat users, follow options, authorization answers.
//!
//! These are plain serde types (JSON in and out of `/__sim/...`). They hold test fixtures'
//! secrets (AppSecret, push Token, EncodingAESKey) in the clear because a simulator's job is
//! to know them; they must still never be logged, so nothing here derives a `Debug` that
//! prints them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Service account (服务号) or subscription account (订阅号) (§4: OAuth needs a verified
/// service account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// 服务号.
    #[default]
    Service,
    /// 订阅号.
    Subscription,
}

/// Push encryption mode (§6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// 明文: plain XML.
    #[default]
    Plain,
    /// 兼容: plain fields plus `<Encrypt>`.
    Compatible,
    /// 安全: only `ToUserName` and `<Encrypt>`.
    Safe,
}

/// How the IP whitelist is applied to token calls (§1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhitelistMode {
    /// No check.
    #[default]
    Off,
    /// Callers outside `ip_whitelist` get 40164 naming their IP.
    Enforce,
    /// Callers outside `ip_whitelist` get 89503 (needs administrator confirmation).
    Confirm,
}

fn yes() -> bool {
    true
}

/// One simulated Official Account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// The account's appid (required, unique).
    pub appid: String,
    /// The AppSecret (required).
    pub secret: String,
    /// Push Token used for signatures (§6.2); 3–32 characters of `[A-Za-z0-9]` (§6.1),
    /// required when `push_url` is set.
    #[serde(default)]
    pub push_token: String,
    /// 43-character EncodingAESKey; required for compatible and safe modes (§7.1).
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    /// Push mode (§6.5).
    #[serde(default)]
    pub push_mode: PushMode,
    /// Push URL; pushes are skipped when absent.
    #[serde(default)]
    pub push_url: Option<String>,
    /// OAuth domain (网页授权域名): a bare host the redirect_uri's host must equal (§4).
    #[serde(default)]
    pub oauth_domain: Option<String>,
    /// IP whitelist (exact addresses).
    #[serde(default)]
    pub ip_whitelist: Vec<String>,
    /// How the whitelist applies.
    #[serde(default)]
    pub whitelist_mode: WhitelistMode,
    /// Per-path daily limits overriding the defaults of §3.8 (`{"/cgi-bin/token": 2000}`).
    #[serde(default)]
    pub daily_limits: BTreeMap<String, i64>,
    /// Per-path per-minute limits overriding `SimConfig::minute_limits`
    /// (`{"/cgi-bin/stable_token": 10000}`); over → 45011.
    #[serde(default)]
    pub minute_limits: BTreeMap<String, i64>,
    /// 认证: verified accounts may use OAuth and the user APIs.
    #[serde(default = "yes")]
    pub verified: bool,
    /// Service or subscription account.
    #[serde(default)]
    pub kind: AccountKind,
    /// Original id (`gh_...`), the `ToUserName` of pushes; derived from the appid when absent.
    #[serde(default)]
    pub original_id: Option<String>,
    /// Bound to an Open Platform account: `unionid` is returned (§4.4, §5.1).
    #[serde(default)]
    pub unionid_bound: bool,
    /// The AppSecret is frozen: token calls answer 40243.
    #[serde(default)]
    pub secret_frozen: bool,
    /// `user/info` in the legacy shape: profile keys present (empty for non-followers,
    /// nickname/avatar for followers) (§5.1, §12 item 9).
    #[serde(default)]
    pub legacy_user_info: bool,
}

impl AccountSpec {
    /// A verified service account with the given credentials and everything else defaulted.
    pub fn new(appid: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.into(),
            push_token: String::new(),
            encoding_aes_key: None,
            push_mode: PushMode::Plain,
            push_url: None,
            oauth_domain: None,
            ip_whitelist: Vec::new(),
            whitelist_mode: WhitelistMode::Off,
            daily_limits: BTreeMap::new(),
            minute_limits: BTreeMap::new(),
            verified: true,
            kind: AccountKind::Service,
            original_id: None,
            unionid_bound: false,
            secret_frozen: false,
            legacy_user_info: false,
        }
    }

    /// The `gh_` id used as `ToUserName`.
    pub fn original_id(&self) -> String {
        self.original_id
            .clone()
            .unwrap_or_else(|| format!("gh_{}", crate::state::short_hash(&self.appid, 12)))
    }
}

impl fmt::Debug for AccountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSpec")
            .field("appid", &self.appid)
            .field("push_mode", &self.push_mode)
            .field("push_url", &self.push_url)
            .field("oauth_domain", &self.oauth_domain)
            .field("whitelist_mode", &self.whitelist_mode)
            .field("verified", &self.verified)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A simulated WeChat user (a person, across all accounts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The simulator's id of the person (not an openid; openids are per account).
    pub id: String,
    /// Nickname shown by `sns/userinfo` (and legacy `user/info`).
    #[serde(default)]
    pub nickname: String,
    /// Avatar URL.
    #[serde(default)]
    pub headimgurl: String,
    /// Unionid; derived from the id when absent. Returned only by Open-Platform-bound accounts.
    #[serde(default)]
    pub unionid: Option<String>,
}

impl UserSpec {
    /// A user with a nickname and no avatar.
    pub fn new(id: impl Into<String>, nickname: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            nickname: nickname.into(),
            headimgurl: String::new(),
            unionid: None,
        }
    }

    /// The unionid reported for this user.
    pub fn unionid(&self) -> String {
        self.unionid
            .clone()
            .unwrap_or_else(|| format!("oU{}", crate::state::short_hash(&self.id, 26)))
    }
}

/// How a simulated follow happened (§5.1 fields, §6.3 pushes). The default pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowOptions {
    /// `subscribe_scene`; `ADD_SCENE_QR_CODE` when a QR scene is given, else `ADD_SCENE_SEARCH`.
    #[serde(default)]
    pub scene: Option<String>,
    /// Numeric QR scene (`qrscene_<n>` in the push, `qr_scene` in user/info).
    #[serde(default)]
    pub qr_scene: Option<i64>,
    /// String QR scene (`qrscene_<s>` in the push, `qr_scene_str` in user/info).
    #[serde(default)]
    pub qr_scene_str: Option<String>,
    /// QR ticket sent with a QR follow; derived when absent.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Tag ids for user/info.
    #[serde(default)]
    pub tagid_list: Vec<i64>,
    /// Operator's remark for user/info.
    #[serde(default)]
    pub remark: String,
    /// Set `false` to change state without sending the push.
    #[serde(default = "yes")]
    pub push: bool,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            scene: None,
            qr_scene: None,
            qr_scene_str: None,
            ticket: None,
            tagid_list: Vec::new(),
            remark: String::new(),
            push: true,
        }
    }
}

/// What the simulated person does on the authorize page (§4.2, §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizeAnswer {
    /// Consent (or the silent snsapi_base flow).
    #[default]
    Allow,
    /// Refuse the snsapi_userinfo popup: redirect with `state` only.
    Deny,
    /// Snapshot-page mode: a virtual user, `is_snapshotuser: 1`.
    Snapshot,
}

impl AuthorizeAnswer {
    /// Parses `allow`, `deny` or `snapshot`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            "snapshot" => Some(Self::Snapshot),
            _ => None,
        }
    }
}

/// A queued answer for the next authorization of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextAuthorization {
    /// The simulated user's id.
    pub user: String,
    /// Their answer.
    #[serde(default)]
    pub answer: AuthorizeAnswer,
}

/// A person scanning a parametric QR code with WeChat (docs/wechat-2.md §4.4, the scan hook).
/// Name the code by `ticket` or `url`, and the person by `user` (a simulated user's id) or
/// `openid` (their openid at the code's account).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrScan {
    /// The ticket `qrcode/create` returned.
    #[serde(default)]
    pub ticket: Option<String>,
    /// The code's `url` (what the image encodes), instead of the ticket.
    #[serde(default)]
    pub url: Option<String>,
    /// The simulated person who scans.
    #[serde(default)]
    pub user: Option<String>,
    /// The person's openid at the code's account, instead of `user`.
    #[serde(default)]
    pub openid: Option<String>,
    /// When given, the code must belong to this account.
    #[serde(default)]
    pub appid: Option<String>,
    /// Whether a person who does not follow taps Follow (no push otherwise, §3.1). Absent
    /// means `true`; it does not matter for followers.
    #[serde(default)]
    pub follow: Option<bool>,
}

impl QrScan {
    /// `user` scans the code with this ticket or url, following if they do not yet.
    pub fn new(ticket_or_url: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            ticket: Some(ticket_or_url.into()),
            user: Some(user.into()),
            ..Self::default()
        }
    }
}
