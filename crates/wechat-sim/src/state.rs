//! The simulator's in-memory world: accounts with their tokens, quotas and followers, users,
//! OAuth grants, the call log, faults and push deliveries — all behind one mutex.
//!
//! One `std::sync::Mutex` keeps every rule simple to reason about (a token mint, a quota
//! charge and a counter update are one atomic step). It is never held across an `.await`:
//! handlers lock, decide, unlock, and only then sleep (latency faults) or send (pushes).
//! Everything here is bounded by [`crate::SimLimits`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::calls::CallLog;
use crate::datacube::Stats;
use crate::faults::Faults;
use crate::model::{AccountSpec, NextAuthorization, UserSpec};
use crate::probe::Probe;
use crate::push::Delivery;
use crate::qr::{QrCode, QrScene};
use crate::quota::QuotaState;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// `len` random characters from `alphabet` (thread RNG: tokens must not follow the fault seed).
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A fresh opaque access/refresh token shaped like WeChat's: `86_` + 150 url-safe chars (§0).
pub(crate) fn new_token() -> String {
    let token = format!("86_{}", random_string(TOKEN_CHARS, 150));
    crate::issued::record(&token);
    token
}

/// Whether `s` could be a token the simulator minted; anything else is "malformed" (40014).
pub(crate) fn looks_like_token(s: &str) -> bool {
    s.len() == 153 && s.starts_with("86_") && s.bytes().all(|b| TOKEN_CHARS.contains(&b))
}

/// A fresh OAuth code (32 alphanumerics, like WeChat's).
pub(crate) fn new_code() -> String {
    let code = random_string(ALNUM, 32);
    crate::issued::record(&code);
    code
}

/// A request id in WeChat's `rid:` shape (`654df33c-64386a2f-29857782`).
pub(crate) fn new_rid() -> String {
    let mut rng = rand::rng();
    format!(
        "{:08x}-{:08x}-{:08x}",
        rng.random::<u32>(),
        rng.random::<u32>(),
        rng.random::<u32>()
    )
}

/// A deterministic `len`-character alphanumeric digest of `input`: openids, unionids and
/// `gh_` ids are derived with it so they are stable across runs.
pub(crate) fn short_hash(input: &str, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut round: u64 = 0;
    while out.len() < len {
        let mut h = std::hash::DefaultHasher::new();
        input.hash(&mut h);
        round.hash(&mut h);
        let mut v = h.finish();
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALNUM[(v % 62) as usize]));
            v /= 62;
        }
        round += 1;
    }
    out
}

/// The openid of person `user_id` at account `appid` (28 characters, `o` first, like WeChat).
pub(crate) fn derive_openid(appid: &str, user_id: &str) -> String {
    format!("o{}", short_hash(&format!("{appid}\u{0}{user_id}"), 27))
}

/// The virtual openid a snapshot-page user gets (§4.3).
pub(crate) fn derive_snapshot_openid(appid: &str, user_id: &str) -> String {
    format!(
        "o{}",
        short_hash(&format!("{appid}\u{0}{user_id}\u{0}snapshot"), 27)
    )
}

/// Which kind of credential a token string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// From `/cgi-bin/token`.
    Core,
    /// From `/cgi-bin/stable_token`.
    Stable,
    /// An OAuth user access token.
    User,
}

/// Who a token belongs to (the global index over all minted tokens).
#[derive(Debug, Clone)]
pub(crate) struct TokenOwner {
    pub appid: String,
    pub kind: TokenKind,
}

/// A minted core or stable token and its life. `Debug` redacts the token.
#[derive(Clone)]
pub(crate) struct IssuedToken {
    pub token: String,
    pub issued_at: i64,
    /// Natural end of life (issue + 7200 s).
    pub expires_at: i64,
    /// When superseding ended its grace (never later than `expires_at`).
    pub dead_at: Option<i64>,
    /// Calls that presented this token.
    pub uses: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("dead_at", &self.dead_at)
            .field("uses", &self.uses)
            .finish()
    }
}

/// Why a token is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenStatus {
    Valid,
    /// Superseded and past its grace (§1 rule 2 → 40001).
    Superseded,
    /// Past its natural lifetime (§1 rule 3 → 42001).
    Expired,
}

impl IssuedToken {
    pub fn status(&self, now: i64) -> TokenStatus {
        match self.dead_at {
            Some(dead) if dead < self.expires_at && now >= dead => TokenStatus::Superseded,
            _ if now >= self.expires_at => TokenStatus::Expired,
            _ => TokenStatus::Valid,
        }
    }

    /// Ends the grace at `at` unless it already ends earlier.
    pub fn end_by(&mut self, at: i64) {
        let end = self.dead_at.unwrap_or(self.expires_at).min(at);
        self.dead_at = Some(end.min(self.expires_at));
    }
}

/// What the control API shows about a minted token. `Debug` redacts the token (the JSON
/// form carries it: that is what the control API is for).
#[derive(Clone, Serialize)]
pub struct TokenView {
    /// The token (a test fixture; never logged).
    pub access_token: String,
    /// `core` or `stable`.
    pub kind: TokenKind,
    /// Mint time (Unix ms, simulator clock).
    pub issued_at_ms: i64,
    /// Natural expiry.
    pub expires_at_ms: i64,
    /// End of grace after being superseded, if superseded.
    pub dead_at_ms: Option<i64>,
    /// `valid`, `superseded` or `expired` at the current simulator time.
    pub status: &'static str,
    /// Calls that presented this token.
    pub uses: u64,
}

impl std::fmt::Debug for TokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenView")
            .field("access_token", &"<redacted>")
            .field("kind", &self.kind)
            .field("issued_at_ms", &self.issued_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("dead_at_ms", &self.dead_at_ms)
            .field("status", &self.status)
            .field("uses", &self.uses)
            .finish()
    }
}

impl IssuedToken {
    pub fn view(&self, kind: TokenKind, now: i64) -> TokenView {
        TokenView {
            access_token: self.token.clone(),
            kind,
            issued_at_ms: self.issued_at,
            expires_at_ms: self.expires_at,
            dead_at_ms: self.dead_at,
            status: match self.status(now) {
                TokenStatus::Valid => "valid",
                TokenStatus::Superseded => "superseded",
                TokenStatus::Expired => "expired",
            },
            uses: self.uses,
        }
    }
}

/// Force-refresh bookkeeping of the stable token (§2).
#[derive(Debug, Clone, Default)]
pub(crate) struct ForceState {
    pub day: i64,
    pub count: u32,
    pub last_at: Option<i64>,
}

/// Follow state of one user at one account (§5.1).
#[derive(Debug, Clone, Serialize)]
pub struct Follower {
    /// The openid.
    pub openid: String,
    /// The simulated person.
    pub user: String,
    /// Unix seconds of the latest follow.
    pub subscribe_time: i64,
    /// `ADD_SCENE_...`.
    pub subscribe_scene: String,
    /// Numeric QR scene (0 when none).
    pub qr_scene: i64,
    /// String QR scene ("" when none).
    pub qr_scene_str: String,
    /// Tag ids.
    pub tagid_list: Vec<i64>,
    /// Operator's remark.
    pub remark: String,
}

/// One account and everything the platform keeps about it.
#[derive(Debug)]
pub(crate) struct AccountState {
    pub spec: AccountSpec,
    /// Oldest first; the last one is current.
    pub core_tokens: VecDeque<IssuedToken>,
    pub stable_tokens: VecDeque<IssuedToken>,
    pub force: ForceState,
    pub quota: QuotaState,
    /// Persons with an openid at this account: openid → user id.
    pub openids: HashMap<String, String>,
    /// Current followers by openid (ordered, so `user/get` pages are stable).
    pub followers: BTreeMap<String, Follower>,
    /// Answers queued for the next authorizations (§4 test hook).
    pub next_auth: VecDeque<NextAuthorization>,
    /// The latest permanent QR ticket of each scene (docs/wechat-2.md §1.6 item 2).
    pub qr_permanent: HashMap<QrScene, String>,
    /// Slots of the permanent QR budget used, over the account's life (never given back).
    pub qr_permanent_used: u32,
    /// When the account was created in the simulator (Unix ms): its statistics start that day
    /// (docs/wechat-2.md §5.2).
    pub created_at: i64,
    /// Follow and push figures for the datacube endpoints (docs/wechat-2.md §6.3, §7.3).
    pub stats: Stats,
}

impl AccountState {
    pub fn new(spec: AccountSpec, created_at: i64) -> Self {
        Self {
            spec,
            core_tokens: VecDeque::new(),
            stable_tokens: VecDeque::new(),
            force: ForceState::default(),
            quota: QuotaState::default(),
            openids: HashMap::new(),
            followers: BTreeMap::new(),
            next_auth: VecDeque::new(),
            qr_permanent: HashMap::new(),
            qr_permanent_used: 0,
            created_at,
            stats: Stats::new(),
        }
    }

    pub fn tokens_mut(&mut self, kind: TokenKind) -> &mut VecDeque<IssuedToken> {
        match kind {
            TokenKind::Stable => &mut self.stable_tokens,
            TokenKind::Core | TokenKind::User => &mut self.core_tokens,
        }
    }
}

/// A pending or used OAuth code (§4.2).
#[derive(Debug, Clone)]
pub(crate) struct OAuthCode {
    pub appid: String,
    pub openid: String,
    pub user: String,
    pub userinfo_scope: bool,
    pub snapshot: bool,
    pub created_at: i64,
    pub used: bool,
}

/// What an OAuth user token or refresh token grants.
#[derive(Debug, Clone)]
pub(crate) struct UserGrant {
    pub appid: String,
    pub openid: String,
    pub user: String,
    pub userinfo_scope: bool,
    pub snapshot: bool,
    pub expires_at: i64,
}

/// The whole simulated platform.
pub(crate) struct State {
    pub accounts: HashMap<String, AccountState>,
    pub users: BTreeMap<String, UserSpec>,
    /// Every remembered core/stable/user token → owner.
    pub tokens: HashMap<String, TokenOwner>,
    pub codes: HashMap<String, OAuthCode>,
    pub user_tokens: HashMap<String, UserGrant>,
    pub refresh_tokens: HashMap<String, UserGrant>,
    pub calls: CallLog,
    pub faults: Faults,
    pub deliveries: VecDeque<Delivery>,
    pub next_delivery_id: u64,
    /// `callback/check` records, oldest first (cap: `SimLimits::deliveries`).
    pub probes: VecDeque<Probe>,
    pub next_probe_id: u64,
    /// Every QR code of every account by ticket (`showqrcode` names no account).
    pub qrcodes: HashMap<String, QrCode>,
    /// The ticket of each QR code's `url` (the scan hook takes either).
    pub qr_urls: HashMap<String, String>,
}

impl State {
    pub fn new(fault_seed: u64, call_log_cap: usize) -> Self {
        Self {
            accounts: HashMap::new(),
            users: BTreeMap::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            user_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            calls: CallLog::new(call_log_cap),
            faults: Faults::new(StdRng::seed_from_u64(fault_seed)),
            deliveries: VecDeque::new(),
            next_delivery_id: 1,
            probes: VecDeque::new(),
            next_probe_id: 1,
            qrcodes: HashMap::new(),
            qr_urls: HashMap::new(),
        }
    }

    /// The openid of `user` at `appid`, remembering that the person is known there.
    pub fn openid_for(&mut self, appid: &str, user: &str) -> Option<String> {
        let account = self.accounts.get_mut(appid)?;
        let openid = derive_openid(appid, user);
        account
            .openids
            .entry(openid.clone())
            .or_insert_with(|| user.to_owned());
        Some(openid)
    }

    /// Forgets an account and every token, code and grant that belongs to it.
    pub fn remove_account(&mut self, appid: &str) -> bool {
        if self.accounts.remove(appid).is_none() {
            return false;
        }
        self.tokens.retain(|_, owner| owner.appid != appid);
        self.codes.retain(|_, c| c.appid != appid);
        self.user_tokens.retain(|_, g| g.appid != appid);
        self.refresh_tokens.retain(|_, g| g.appid != appid);
        self.qrcodes.retain(|_, c| c.appid != appid);
        let qrcodes = &self.qrcodes;
        self.qr_urls
            .retain(|_, ticket| qrcodes.contains_key(ticket));
        true
    }
}

/// Drops entries of `map` for which `expired` holds; if still at `cap`, drops arbitrary
/// (oldest-looking) entries until there is room for one more.
pub(crate) fn make_room<V>(
    map: &mut HashMap<String, V>,
    cap: usize,
    expired: impl Fn(&V) -> bool,
    age: impl Fn(&V) -> i64,
) {
    if map.len() < cap {
        return;
    }
    map.retain(|_, v| !expired(v));
    while map.len() >= cap.max(1) {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}
