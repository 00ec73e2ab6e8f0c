//! [`SimConfig`]: every behaviour knob of the simulator, with the defaults docs/wechat.md §12 suggests.
//!
//! Where docs/wechat.md marks a behaviour as not confirmed (§12), the simulator picks the
//! model it suggests by default and exposes a field here so a test can flip it. Real
//! waits (push timeouts) are configured here too, so tests can shorten them.

use std::collections::BTreeMap;
use std::time::Duration;

use wechat::NaiveDate;
use wechat::api::DATACUBE_FIRST_DATE;
use wechat::clock::{CHINA_UTC_OFFSET_SECS, ManualClock, SharedClock, SystemClock};

/// Earliest simulator time accepted (2000-01-01T00:00:00Z, Unix ms). `set_clock`/
/// `advance_clock` refuse to leave `[MIN_CLOCK_MS, MAX_CLOCK_MS]`, and a shared clock moved
/// outside it by other means is read clamped into it, so no time arithmetic can overflow.
pub const MIN_CLOCK_MS: i64 = 946_684_800_000;
/// Latest simulator time accepted (2200-12-31T23:59:59.999Z, Unix ms).
pub const MAX_CLOCK_MS: i64 = 7_289_654_399_999;

/// Per-minute call limits per (appid, path) (§2: stable_token 10 000/min; §3.8: the three
/// web-authorization APIs 50 000/min each). Over → 45011.
pub const DEFAULT_MINUTE_LIMITS: &[(&str, i64)] = &[
    ("/cgi-bin/stable_token", 10_000),
    ("/sns/oauth2/access_token", 50_000),
    ("/sns/oauth2/refresh_token", 50_000),
    ("/sns/userinfo", 50_000),
];

/// Configuration of a [`crate::Simulator`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The clock every lifetime, quota day and month reads.
    pub clock: SharedClock,
    /// The same clock as a [`ManualClock`], when the simulator may move it (control API
    /// `/__sim/clock/advance` and `/__sim/clock/set`).
    pub manual_clock: Option<ManualClock>,
    /// Core and stable token lifetime (§1: 7200 s).
    pub token_lifetime: Duration,
    /// How long the previous token keeps working after a new one is minted (§1: 300 s). Also
    /// the stable token's pre-rotation window (§2).
    pub token_grace: Duration,
    /// §12 item 2: whether tokens older than the previous one keep the rest of their grace
    /// (default `false`: they die the moment a newer token is minted).
    pub older_tokens_keep_grace: bool,
    /// §12 item 2: grace of a stable token superseded by `force_refresh` (default 0: it dies).
    pub stable_force_grace: Duration,
    /// Stable-token force refreshes allowed per day (§2: 20).
    pub stable_force_daily_limit: u32,
    /// Minimum spacing of force refreshes; a closer one returns the current token (§2: 30 s).
    pub stable_force_min_interval: Duration,
    /// §12 item 7: whether `stable_token` enforces the IP whitelist (default `true`).
    pub whitelist_on_stable_token: bool,
    /// Offset east of UTC of the time zone whose midnight resets daily quotas and whose
    /// calendar month bounds the `clear_quota` budget (§1, §12 item 1: UTC+8).
    pub quota_utc_offset_secs: i64,
    /// §12 item 1: whether failed calls consume daily quota — and per-minute limits, which
    /// count the same calls (default `false`).
    pub count_failed_calls: bool,
    /// Per-minute limits per (appid, path), defaults [`DEFAULT_MINUTE_LIMITS`]; an account's
    /// `minute_limits` override these. A minute is a minute of the simulator clock
    /// (`now_ms / 60 000`). Over → 45011 `api minute-quota reach limit mostly N times per
    /// minute`.
    pub minute_limits: BTreeMap<String, i64>,
    /// `clear_quota` + `clear_quota/v2` resets per account per month (§3.2: 10).
    pub clear_quota_monthly_limit: u32,
    /// OAuth code lifetime (§4.2: 300 s).
    pub oauth_code_lifetime: Duration,
    /// §12 item 5: errcode for an expired OAuth code (default 40029; 42003 is the alternative).
    pub expired_code_errcode: i64,
    /// OAuth user token lifetime (§4.4: 7200 s).
    pub user_token_lifetime: Duration,
    /// OAuth refresh token lifetime (§4.5: 30 days).
    pub refresh_token_lifetime: Duration,
    /// `user/get` page size (§5.3: 10 000); tests shrink it to page through few followers.
    pub user_get_page_size: usize,
    /// Per-attempt wait for a push URL's answer (§6.4: 5 s). A real wall-clock timeout.
    pub push_timeout: Duration,
    /// Deliveries per push when unanswered (§6.4, §12 item 4: 3 in total).
    pub push_attempts: u32,
    /// `getcallbackip` answer (§3.6): where pushes come from.
    pub callback_ips: Vec<String>,
    /// `get_api_domain_ip` answer (§3.6).
    pub api_domain_ips: Vec<String>,
    /// The carrier `callback/check` (§3.7) reports for every address of a push URL
    /// (`real_operator`), and probes from under `check_operator: DEFAULT` ("CHINANET"; the
    /// simulator has no carriers, so this is only a label).
    pub push_url_operator: String,
    /// docs/wechat-2.md §1.2: lifetime of a temporary QR code whose `expire_seconds` is left
    /// out (60 s observed; the documentation says 30 s).
    pub qr_default_expire: Duration,
    /// docs/wechat-2.md §1.2: what a temporary `expire_seconds` above 2 592 000 gets.
    pub qr_over_max: QrOverMax,
    /// docs/wechat-2.md §1.4: lenient (WeChat's observed behaviour: unreadable scenes become
    /// scene 0) or strict input handling of `qrcode/create`.
    pub qr_input_mode: QrInputMode,
    /// docs/wechat-2.md §1.6 item 2: whether a permanent create for a scene that already has a
    /// code returns that code (no new slot) or mints a new one (a new slot).
    pub permanent_same_scene: PermanentSameScene,
    /// docs/wechat-2.md §1.3: whether the answer's `expire_seconds` is the lifetime applied or
    /// `0` (observed in 2016, while the code still lived as long as requested).
    pub expire_seconds_echo: ExpireSecondsEcho,
    /// docs/wechat-2.md §1.2: permanent QR codes per account over its whole life (100 000).
    pub qr_permanent_limit: u32,
    /// docs/wechat-2.md §5.2: offset east of UTC of the zone whose days and hours the
    /// statistics count in (UTC+8).
    pub datacube_utc_offset_secs: i64,
    /// docs/wechat-2.md §5.2: a day's figures appear at this hour of the next day (8, i.e.
    /// 08:00 China time); until then the day is left out of every answer, without an error.
    pub datacube_ready_hour: u32,
    /// docs/wechat-2.md §5.2: the first date with figures (2014-12-01); a range beginning
    /// earlier is 61501.
    pub datacube_first_date: NaiveDate,
    /// docs/wechat-2.md §5.2: whether figures start on the day the account was created in the
    /// simulator (default `true`: earlier days are left out), or on `datacube_first_date`
    /// (earlier days report zero followers and zero activity).
    pub datacube_history_from_creation: bool,
    /// docs/wechat-2.md §6.1: whether a day without follows or unfollows still gets one
    /// `getusersummary` row `user_source: 0` with zeros (observed; default `true`).
    pub datacube_quiet_day_row: bool,
    /// docs/wechat-2.md §6.3: which channel an unfollow is counted under.
    pub cancel_user_source: CancelUserSource,
    /// docs/wechat-2.md §7.3: what one `callback_count` of the interface statistics is.
    pub interface_counting: InterfaceCounting,
    /// Seed of the RNG that decides probabilistic faults (reseed with `/__sim/faults/seed`).
    pub fault_seed: u64,
    /// Bounds that keep all state in memory small.
    pub limits: SimLimits,
}

/// Caps on what the simulator keeps; beyond them the oldest entries are dropped (tokens,
/// codes, call log, deliveries) or creation is refused (accounts, users).
#[derive(Debug, Clone)]
pub struct SimLimits {
    /// Most accounts.
    pub max_accounts: usize,
    /// Most simulated WeChat users.
    pub max_users: usize,
    /// Core (and, separately, stable) tokens remembered per account, newest kept. Forgotten
    /// tokens answer 40001 like any superseded token, but lose their use counters.
    pub tokens_per_account: usize,
    /// Outstanding OAuth codes (expired ones are purged first).
    pub max_oauth_codes: usize,
    /// OAuth user access tokens and refresh tokens, each.
    pub max_user_tokens: usize,
    /// Entries of the call log ring buffer.
    pub call_log: usize,
    /// Push delivery records kept, and separately `callback/check` probe records.
    pub deliveries: usize,
    /// Largest push reply read, judged and kept in a delivery record; a longer reply is read
    /// no further and judged invalid.
    pub reply_body_bytes: usize,
    /// Most fault rules at once; adding one more is refused (`SimError::Capacity`).
    pub max_faults: usize,
    /// Days of statistics kept per account (follow figures and push callbacks, docs/wechat-2.md
    /// §6.3, §7.3); older days are dropped and then left out of the answers.
    pub stats_days: usize,
    /// QR codes kept over all accounts. At the cap expired codes are dropped first, then the
    /// oldest temporary ones; when only permanent codes are left a create answers `-1`.
    pub max_qrcodes: usize,
}

impl Default for SimLimits {
    fn default() -> Self {
        Self {
            max_accounts: 100_000,
            max_users: 100_000,
            tokens_per_account: 8,
            max_oauth_codes: 100_000,
            max_user_tokens: 100_000,
            call_log: 10_000,
            deliveries: 1_000,
            reply_body_bytes: 64 * 1024,
            max_faults: 1_000,
            max_qrcodes: 200_000,
            stats_days: 1830,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            clock: std::sync::Arc::new(SystemClock),
            manual_clock: None,
            token_lifetime: Duration::from_secs(7200),
            token_grace: Duration::from_secs(300),
            older_tokens_keep_grace: false,
            stable_force_grace: Duration::ZERO,
            stable_force_daily_limit: 20,
            stable_force_min_interval: Duration::from_secs(30),
            whitelist_on_stable_token: true,
            quota_utc_offset_secs: CHINA_UTC_OFFSET_SECS,
            count_failed_calls: false,
            minute_limits: DEFAULT_MINUTE_LIMITS
                .iter()
                .map(|(p, l)| ((*p).to_owned(), *l))
                .collect(),
            clear_quota_monthly_limit: 10,
            oauth_code_lifetime: Duration::from_secs(300),
            expired_code_errcode: 40029,
            user_token_lifetime: Duration::from_secs(7200),
            refresh_token_lifetime: Duration::from_secs(30 * 86_400),
            user_get_page_size: 10_000,
            push_timeout: Duration::from_secs(5),
            push_attempts: 3,
            callback_ips: vec!["127.0.0.1".into()],
            api_domain_ips: vec!["127.0.0.1".into()],
            push_url_operator: "CHINANET".into(),
            qr_default_expire: Duration::from_secs(60),
            qr_over_max: QrOverMax::Clamp,
            qr_input_mode: QrInputMode::Lenient,
            permanent_same_scene: PermanentSameScene::SameTicket,
            expire_seconds_echo: ExpireSecondsEcho::Actual,
            qr_permanent_limit: 100_000,
            datacube_utc_offset_secs: CHINA_UTC_OFFSET_SECS,
            datacube_ready_hour: 8,
            datacube_first_date: DATACUBE_FIRST_DATE,
            datacube_history_from_creation: true,
            datacube_quiet_day_row: true,
            cancel_user_source: CancelUserSource::LatestFollow,
            interface_counting: InterfaceCounting::Attempts,
            fault_seed: 0x5EED,
            limits: SimLimits::default(),
        }
    }
}

/// `qr_over_max`: a temporary `expire_seconds` above 2 592 000 (docs/wechat-2.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrOverMax {
    /// Lower it to 2 592 000 (what SDKs do before sending).
    Clamp,
    /// Answer 40035 invalid parameter.
    Reject,
}

/// `cancel_user_source` (docs/wechat-2.md §6.3, §11 item 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelUserSource {
    /// Under the channel of the user's latest follow.
    LatestFollow,
    /// All under `user_source: 0`.
    Other,
}

/// `interface_counting` (docs/wechat-2.md §7.3, §11 item 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceCounting {
    /// Every delivery attempt is a callback (a push retried three times counts three).
    Attempts,
    /// Every push is one callback, failed unless its last answer was a valid reply, timed by
    /// its last attempt.
    Pushes,
}

/// `qr_input_mode` (docs/wechat-2.md §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrInputMode {
    /// WeChat's observed leniency: a scene that cannot be read (no `scene` wrapper, a missing
    /// value, the wrong type, a non-numeric string) becomes integer scene 0, numeric strings
    /// are accepted, temporary scene ids above 2³²−1 saturate, and an unreadable temporary
    /// `expire_seconds` gets the default lifetime.
    Lenient,
    /// Unreadable action info → 40053; out-of-range values → 40035.
    Strict,
}

/// `permanent_same_scene` (docs/wechat-2.md §1.6 item 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermanentSameScene {
    /// The existing code again; no new slot of the permanent budget.
    SameTicket,
    /// A new code and a new slot; the older codes keep working.
    NewTicket,
}

/// `expire_seconds_echo` (docs/wechat-2.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireSecondsEcho {
    /// The lifetime applied.
    Actual,
    /// Always `0` for temporary codes (permanent codes have no `expire_seconds` either way).
    Zero,
}

impl SimConfig {
    /// The defaults, on a [`ManualClock`] shared with the caller (and movable through the
    /// control API).
    pub fn with_manual_clock(clock: ManualClock) -> Self {
        Self {
            clock: std::sync::Arc::new(clock.clone()),
            manual_clock: Some(clock),
            ..Self::default()
        }
    }

    /// The defaults on any clock (not movable through the control API).
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }
}

impl SimConfig {
    /// The simulator's current time (Unix ms), clamped into `[MIN_CLOCK_MS, MAX_CLOCK_MS]`.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms().clamp(MIN_CLOCK_MS, MAX_CLOCK_MS)
    }

    /// The current time in whole Unix seconds (clamped like [`SimConfig::now_ms`]).
    pub(crate) fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// Whole milliseconds of a duration, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
