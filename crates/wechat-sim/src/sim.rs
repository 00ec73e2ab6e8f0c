//! [`Simulator`]: the cheap-to-clone handle on the simulated platform, and its Rust API — the
//! same operations the control API offers, so Rust tests can set up without HTTP.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use wechat::crypto::{EncodingAesKey, MsgCrypt};

use crate::calls::{CallRecord, Counter, CounterRow};
use crate::config::{MAX_CLOCK_MS, MIN_CLOCK_MS, SimConfig};
use crate::error::SimError;
use crate::faults::{FaultRule, FaultSpec};
use crate::model::{AccountSpec, FollowOptions, NextAuthorization, PushMode, QrScan, UserSpec};
use crate::probe::Probe;
use crate::push::{self, Delivery, PushEvent, PushJob};
use crate::qr::{self, QrCodeView, QrScene};
use crate::quota::{self, QuotaRow};
use rand::RngExt;

use crate::state::{AccountState, Follower, State, TokenKind, TokenView};
use crate::users;

pub(crate) struct Inner {
    pub config: SimConfig,
    state: Mutex<State>,
    http: reqwest::Client,
}

/// The simulated platform. Clones share state.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").finish_non_exhaustive()
    }
}

/// What a scan of a parametric QR code did (docs/wechat-2.md §3.1, §4.4).
#[derive(Debug, Clone, Serialize)]
pub struct QrScanOutcome {
    /// The code's account.
    pub appid: String,
    /// The code's ticket (what the push carries in `Ticket`).
    pub ticket: String,
    /// The simulated person.
    pub user: String,
    /// Their openid at the account.
    pub openid: String,
    /// `subscribe` (a new follower), `SCAN` (a follower), or `None` (a non-follower who did
    /// not follow: WeChat pushes nothing).
    pub event: Option<&'static str>,
    /// The delivery record; `None` when nothing was pushed (no event, no push URL).
    pub delivery: Option<Delivery>,
}

/// The result of a simulated user action that may push.
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    /// The user's openid at the account.
    pub openid: String,
    /// The delivery record, once every attempt finished; `None` when nothing was pushed (no
    /// push URL, or `push: false`).
    pub delivery: Option<Delivery>,
}

fn validate_account(spec: &AccountSpec) -> Result<(), SimError> {
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !id_ok(&spec.appid) {
        return Err(SimError::invalid("appid must be 1..=64 of [A-Za-z0-9_-]"));
    }
    if spec.secret.is_empty() {
        return Err(SimError::invalid("secret must not be empty"));
    }
    if let Some(key) = &spec.encoding_aes_key {
        EncodingAesKey::parse(key)
            .map_err(|e| SimError::invalid(format!("encoding_aes_key {e}")))?;
    } else if spec.push_mode != PushMode::Plain {
        return Err(SimError::invalid(
            "compatible and safe push modes need an encoding_aes_key",
        ));
    }
    if let Some(u) = &spec.push_url {
        let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(SimError::invalid("push_url must be an http(s) URL"));
        }
        // §6.1: the console accepts a Token of 3–32 letters and digits.
        let token = &spec.push_token;
        if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SimError::invalid(
                "push_token must be 3..=32 characters of [A-Za-z0-9] when push_url is set (§6.1)",
            ));
        }
    }
    for (what, limits) in [
        ("daily_limits", &spec.daily_limits),
        ("minute_limits", &spec.minute_limits),
    ] {
        if let Some((path, _)) = limits.iter().find(|(_, l)| **l < 0) {
            return Err(SimError::invalid(format!(
                "{what}[{path:?}] must not be negative"
            )));
        }
    }
    for ip in &spec.ip_whitelist {
        ip.trim()
            .parse::<IpAddr>()
            .map_err(|_| SimError::invalid(format!("ip_whitelist entry {ip:?} is not an IP")))?;
    }
    Ok(())
}

fn check_clock(ms: i64) -> Result<(), SimError> {
    if (MIN_CLOCK_MS..=MAX_CLOCK_MS).contains(&ms) {
        Ok(())
    } else {
        Err(SimError::invalid(format!(
            "clock time {ms} ms is outside years 2000..=2200 ({MIN_CLOCK_MS}..={MAX_CLOCK_MS})"
        )))
    }
}

impl Simulator {
    /// A simulator with no accounts or users.
    pub fn new(config: SimConfig) -> Self {
        // reqwest is built without a TLS provider; install ring like `wechat::Client` does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let state = State::new(config.fault_seed, config.limits.call_log);
        Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                http,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Locks the state; a poisoned lock is recovered (state stays consistent per operation).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> i64 {
        self.inner.config.now_ms()
    }

    // ---- clock ----

    /// Current simulator time (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.now()
    }

    /// Moves the manual clock forward; returns the new time. Refused (`SimError::Invalid`)
    /// when the result would leave years 2000..=2200 ([`crate::MIN_CLOCK_MS`]..=
    /// [`crate::MAX_CLOCK_MS`]).
    pub fn advance_clock(&self, by: Duration) -> Result<i64, SimError> {
        let clock = self
            .inner
            .config
            .manual_clock
            .as_ref()
            .ok_or(SimError::ClockNotManual)?;
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let target = wechat::clock::Clock::now_ms(clock).saturating_add(by_ms);
        check_clock(target)?;
        clock.advance(by);
        Ok(self.now())
    }

    /// Puts the manual clock at `ms` (Unix ms); refused (`SimError::Invalid`) outside years
    /// 2000..=2200 ([`crate::MIN_CLOCK_MS`]..=[`crate::MAX_CLOCK_MS`]).
    pub fn set_clock(&self, ms: i64) -> Result<i64, SimError> {
        let clock = self
            .inner
            .config
            .manual_clock
            .as_ref()
            .ok_or(SimError::ClockNotManual)?;
        check_clock(ms)?;
        clock.set(ms);
        Ok(self.now())
    }

    // ---- accounts ----

    /// Creates one account (409 if the appid exists).
    pub fn create_account(&self, spec: AccountSpec) -> Result<(), SimError> {
        self.create_accounts([spec]).map(drop)
    }

    /// Creates many accounts at once (all validated first; none created if any is refused).
    pub fn create_accounts(
        &self,
        specs: impl IntoIterator<Item = AccountSpec>,
    ) -> Result<usize, SimError> {
        let specs: Vec<AccountSpec> = specs.into_iter().collect();
        for s in &specs {
            validate_account(s)?;
        }
        let mut st = self.lock();
        let mut seen = std::collections::HashSet::new();
        for s in &specs {
            if st.accounts.contains_key(&s.appid) || !seen.insert(s.appid.as_str()) {
                return Err(SimError::conflict(format!("account {} exists", s.appid)));
            }
        }
        if st.accounts.len() + specs.len() > self.inner.config.limits.max_accounts {
            return Err(SimError::Capacity {
                what: format!("max_accounts = {}", self.inner.config.limits.max_accounts),
            });
        }
        let n = specs.len();
        let now = self.now();
        st.accounts.reserve(n);
        for s in specs {
            st.accounts
                .insert(s.appid.clone(), AccountState::new(s, now));
        }
        Ok(n)
    }

    /// An account's configuration.
    pub fn account(&self, appid: &str) -> Option<AccountSpec> {
        self.lock().accounts.get(appid).map(|a| a.spec.clone())
    }

    /// Every appid, sorted.
    pub fn appids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().accounts.keys().cloned().collect();
        v.sort();
        v
    }

    /// Changes an account with a closure (the appid cannot change).
    pub fn modify_account(
        &self,
        appid: &str,
        change: impl FnOnce(&mut AccountSpec),
    ) -> Result<AccountSpec, SimError> {
        let mut st = self.lock();
        let acct = st
            .accounts
            .get_mut(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        let mut spec = acct.spec.clone();
        change(&mut spec);
        if spec.appid != appid {
            return Err(SimError::invalid("appid cannot change"));
        }
        validate_account(&spec)?;
        acct.spec = spec.clone();
        Ok(spec)
    }

    /// Applies a JSON merge patch (top-level keys replace) to an account.
    pub fn patch_account(
        &self,
        appid: &str,
        patch: serde_json::Value,
    ) -> Result<AccountSpec, SimError> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(SimError::invalid("patch must be a JSON object"));
        };
        let current = self
            .account(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        let mut value =
            serde_json::to_value(&current).map_err(|e| SimError::invalid(e.to_string()))?;
        if let serde_json::Value::Object(m) = &mut value {
            for (k, v) in patch {
                m.insert(k, v);
            }
        }
        let spec: AccountSpec =
            serde_json::from_value(value).map_err(|e| SimError::invalid(e.to_string()))?;
        self.modify_account(appid, |s| *s = spec)
    }

    /// Deletes an account with its tokens, codes, counters and follows.
    pub fn delete_account(&self, appid: &str) -> Result<(), SimError> {
        let mut st = self.lock();
        if !st.remove_account(appid) {
            return Err(SimError::not_found(format!("account {appid}")));
        }
        st.calls.forget_account(appid);
        Ok(())
    }

    /// The core or stable tokens the account remembers, oldest first.
    pub fn tokens(&self, appid: &str) -> Result<Vec<TokenView>, SimError> {
        let now = self.now();
        let st = self.lock();
        let acct = st
            .accounts
            .get(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        Ok(acct
            .core_tokens
            .iter()
            .map(|t| t.view(TokenKind::Core, now))
            .chain(
                acct.stable_tokens
                    .iter()
                    .map(|t| t.view(TokenKind::Stable, now)),
            )
            .collect())
    }

    /// The account's daily quotas today.
    pub fn quota(&self, appid: &str) -> Result<Vec<QuotaRow>, SimError> {
        let now = self.now();
        let mut st = self.lock();
        let acct = st
            .accounts
            .get_mut(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        Ok(quota::rows(acct, &self.inner.config, now))
    }

    /// Queues the answer of the account's next authorization (used when the authorize URL
    /// carries no `sim_user`).
    pub fn queue_authorization(
        &self,
        appid: &str,
        next: NextAuthorization,
    ) -> Result<(), SimError> {
        let mut st = self.lock();
        if !st.users.contains_key(&next.user) {
            return Err(SimError::not_found(format!("user {}", next.user)));
        }
        let acct = st
            .accounts
            .get_mut(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        if acct.next_auth.len() >= 1000 {
            return Err(SimError::Capacity {
                what: "1000 queued authorizations".into(),
            });
        }
        acct.next_auth.push_back(next);
        Ok(())
    }

    // ---- users ----

    /// Creates a simulated WeChat user.
    pub fn create_user(&self, spec: UserSpec) -> Result<(), SimError> {
        if spec.id.is_empty() || spec.id.len() > 64 {
            return Err(SimError::invalid("user id must be 1..=64 bytes"));
        }
        let mut st = self.lock();
        if st.users.contains_key(&spec.id) {
            return Err(SimError::conflict(format!("user {} exists", spec.id)));
        }
        if st.users.len() >= self.inner.config.limits.max_users {
            return Err(SimError::Capacity {
                what: format!("max_users = {}", self.inner.config.limits.max_users),
            });
        }
        st.users.insert(spec.id.clone(), spec);
        Ok(())
    }

    /// A simulated user.
    pub fn user(&self, id: &str) -> Option<UserSpec> {
        self.lock().users.get(id).cloned()
    }

    /// Every simulated user (by id).
    pub fn users(&self) -> Vec<UserSpec> {
        self.lock().users.values().cloned().collect()
    }

    /// Deletes a user (they stop following every account).
    pub fn delete_user(&self, id: &str) -> Result<(), SimError> {
        let cfg = &self.inner.config;
        let now_secs = cfg.now_secs();
        let mut st = self.lock();
        if st.users.remove(id).is_none() {
            return Err(SimError::not_found(format!("user {id}")));
        }
        for acct in st.accounts.values_mut() {
            // Gone from WeChat is an unfollow in the statistics.
            let following: Vec<String> = acct
                .followers
                .values()
                .filter(|f| f.user == id)
                .map(|f| f.openid.clone())
                .collect();
            for openid in following {
                users::unfollow(acct, &openid, now_secs, cfg);
            }
            acct.openids.retain(|_, u| u != id);
        }
        Ok(())
    }

    /// The user's openid at the account (the person becomes known there: `user/info` answers
    /// `subscribe: 0` instead of 40003).
    pub fn openid(&self, appid: &str, user: &str) -> Result<String, SimError> {
        let mut st = self.lock();
        if !st.users.contains_key(user) {
            return Err(SimError::not_found(format!("user {user}")));
        }
        st.openid_for(appid, user)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))
    }

    /// The account's followers in openid order.
    pub fn followers(&self, appid: &str) -> Result<Vec<Follower>, SimError> {
        let st = self.lock();
        let acct = st
            .accounts
            .get(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        Ok(acct.followers.values().cloned().collect())
    }

    /// Makes many users follow without pushing (bulk seeding for paging tests).
    pub fn seed_followers(&self, appid: &str, users: &[&str]) -> Result<Vec<String>, SimError> {
        let now_secs = self.inner.config.now_secs();
        let mut st = self.lock();
        for u in users {
            if !st.users.contains_key(*u) {
                return Err(SimError::not_found(format!("user {u}")));
            }
        }
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            let openid = st
                .openid_for(appid, u)
                .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
            if let Some(acct) = st.accounts.get_mut(appid) {
                users::follow(
                    acct,
                    &openid,
                    u,
                    &FollowOptions::default(),
                    now_secs,
                    &self.inner.config,
                );
            }
            out.push(openid);
        }
        Ok(out)
    }

    // ---- push driver ----

    /// Prepares a push under the lock: checks the account and user, changes follow state with
    /// `mutate`, and returns the job when there is somewhere to send it.
    fn prepare(
        &self,
        appid: &str,
        user: &str,
        send: bool,
        mutate: impl FnOnce(&mut AccountState, &str, i64) -> Result<Option<PushEvent>, SimError>,
    ) -> Result<(String, Option<PushJob>), SimError> {
        let now_secs = self.inner.config.now_secs();
        let mut st = self.lock();
        if !st.users.contains_key(user) {
            return Err(SimError::not_found(format!("user {user}")));
        }
        let openid = st
            .openid_for(appid, user)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        let id = st.next_delivery_id;
        let acct = st
            .accounts
            .get_mut(appid)
            .ok_or_else(|| SimError::not_found(format!("account {appid}")))?;
        let event = mutate(acct, &openid, now_secs)?;
        let spec = &acct.spec;
        let job = match (&spec.push_url, send, event) {
            (Some(url), true, Some(event)) => Some(PushJob {
                id,
                appid: appid.to_owned(),
                openid: openid.clone(),
                user: user.to_owned(),
                original_id: spec.original_id(),
                url: url.clone(),
                token: spec.push_token.clone(),
                mode: spec.push_mode,
                // §6.5: plain mode encrypts nothing and accepts no encrypted reply, so it
                // gets no crypter even when a key is configured.
                crypt: match spec.push_mode {
                    PushMode::Plain => None,
                    PushMode::Compatible | PushMode::Safe => spec
                        .encoding_aes_key
                        .as_deref()
                        .and_then(|k| EncodingAesKey::parse(k).ok())
                        .map(|k| MsgCrypt::new(k, appid)),
                },
                event,
                create_time: now_secs,
            }),
            _ => None,
        };
        if job.is_some() {
            st.next_delivery_id += 1;
        }
        Ok((openid, job))
    }

    async fn run(&self, openid: String, job: Option<PushJob>) -> PushOutcome {
        let Some(job) = job else {
            return PushOutcome {
                openid,
                delivery: None,
            };
        };
        let cfg = &self.inner.config;
        let delivery = push::deliver(&self.inner.http, cfg, job).await;
        let mut st = self.lock();
        if let Some(acct) = st.accounts.get_mut(&delivery.appid) {
            acct.stats.record_delivery(cfg, &delivery);
        }
        while st.deliveries.len() >= cfg.limits.deliveries.max(1) {
            st.deliveries.pop_front();
        }
        st.deliveries.push_back(delivery.clone());
        PushOutcome {
            openid,
            delivery: Some(delivery),
        }
    }

    /// The user follows the account — plainly, or through a parametric QR code when
    /// `qr_scene`/`qr_scene_str` is set (§6.3: `EventKey` = `qrscene_<scene>` + `Ticket`).
    /// Resolves after the whole delivery sequence. 409 if already following.
    pub async fn follow(
        &self,
        appid: &str,
        user: &str,
        opts: FollowOptions,
    ) -> Result<PushOutcome, SimError> {
        let (openid, job) = self.prepare(appid, user, opts.push, |acct, openid, now| {
            if acct.followers.contains_key(openid) {
                return Err(SimError::conflict("user already follows the account"));
            }
            users::follow(acct, openid, user, &opts, now, &self.inner.config);
            let scene = opts
                .qr_scene_str
                .clone()
                .or_else(|| opts.qr_scene.map(|n| n.to_string()));
            let qr = scene.map(|s| {
                let ticket = opts
                    .ticket
                    .clone()
                    .unwrap_or_else(|| format!("gQ{}", crate::state::short_hash(&s, 40)));
                (s, ticket)
            });
            Ok(Some(PushEvent::Subscribe { qr }))
        })?;
        Ok(self.run(openid, job).await)
    }

    /// The user unfollows (§6.3 `unsubscribe`). 409 if not following.
    pub async fn unfollow(
        &self,
        appid: &str,
        user: &str,
        push: bool,
    ) -> Result<PushOutcome, SimError> {
        let (openid, job) = self.prepare(appid, user, push, |acct, openid, now| {
            users::unfollow(acct, openid, now, &self.inner.config)
                .ok_or_else(|| SimError::conflict("user does not follow the account"))?;
            Ok(Some(PushEvent::Unsubscribe))
        })?;
        Ok(self.run(openid, job).await)
    }

    /// A follower scans a parametric QR code (§6.3 `SCAN`, EventKey without prefix). 409 if
    /// not following (a non-follower's scan is a QR follow: use [`Simulator::follow`]).
    pub async fn scan(
        &self,
        appid: &str,
        user: &str,
        scene: &str,
        ticket: Option<String>,
    ) -> Result<PushOutcome, SimError> {
        let (openid, job) = self.prepare(appid, user, true, |acct, openid, _| {
            if !acct.followers.contains_key(openid) {
                return Err(SimError::conflict(
                    "user does not follow the account; a QR scan by a non-follower is a follow",
                ));
            }
            Ok(Some(PushEvent::Scan {
                scene: scene.to_owned(),
                ticket: ticket
                    .unwrap_or_else(|| format!("gQ{}", crate::state::short_hash(scene, 40))),
            }))
        })?;
        Ok(self.run(openid, job).await)
    }

    /// The account's QR codes, newest first (expired ones too, until the store purges them).
    pub fn qrcodes(&self, appid: &str) -> Result<Vec<QrCodeView>, SimError> {
        let now = self.now();
        let st = self.lock();
        if !st.accounts.contains_key(appid) {
            return Err(SimError::not_found(format!("account {appid}")));
        }
        let mut codes: Vec<QrCodeView> = st
            .qrcodes
            .values()
            .filter(|c| c.appid == appid)
            .map(|c| c.view(now))
            .collect();
        codes.sort_by(|a, b| (b.created_at_ms, &b.ticket).cmp(&(a.created_at_ms, &a.ticket)));
        Ok(codes)
    }

    /// The QR code with this ticket or url.
    pub fn qrcode(&self, ticket_or_url: &str) -> Option<QrCodeView> {
        let now = self.now();
        let st = self.lock();
        qr::lookup(&st, ticket_or_url).map(|c| c.view(now))
    }

    /// A person scans a parametric QR code with WeChat (docs/wechat-2.md §3.1, §4.4): a
    /// follower → `SCAN` with the bare scene; a non-follower who follows → they become a
    /// follower through the code (`subscribe_scene` `ADD_SCENE_QR_CODE`, `qr_scene` /
    /// `qr_scene_str`, `subscribe_time`), then `subscribe` with `qrscene_<scene>`; a
    /// non-follower who does not → nothing. Both pushes carry `Ticket`. Unknown code →
    /// `NotFound`; expired temporary code → `Expired` and no push (§3.1: the simulator's
    /// model). Resolves after the whole delivery sequence.
    pub async fn scan_qrcode(&self, scan: QrScan) -> Result<QrScanOutcome, SimError> {
        let now = self.now();
        let (appid, ticket, scene, user) = {
            let st = self.lock();
            let key = scan
                .ticket
                .as_deref()
                .or(scan.url.as_deref())
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| SimError::invalid("name the QR code by ticket or url"))?;
            let code = qr::lookup(&st, key)
                .filter(|c| scan.appid.as_deref().is_none_or(|a| a == c.appid))
                .ok_or_else(|| SimError::not_found("QR code"))?;
            if code.expired(now) {
                return Err(SimError::Expired {
                    what: "the QR code".into(),
                });
            }
            let user = match (&scan.user, &scan.openid) {
                (Some(u), _) => u.clone(),
                (None, Some(openid)) => st
                    .accounts
                    .get(&code.appid)
                    .and_then(|a| a.openids.get(openid))
                    .cloned()
                    .ok_or_else(|| {
                        SimError::not_found(format!("openid {openid} at {}", code.appid))
                    })?,
                (None, None) => return Err(SimError::invalid("name the person by user or openid")),
            };
            (
                code.appid.clone(),
                code.ticket.clone(),
                code.scene.clone(),
                user,
            )
        };
        let follow = scan.follow.unwrap_or(true);
        let mut event_name = None;
        let (openid, job) = self.prepare(&appid, &user, true, |acct, openid, now_secs| {
            if acct.followers.contains_key(openid) {
                // §3.3: the model is that a follower's scan changes nothing in user/info.
                event_name = Some("SCAN");
                return Ok(Some(PushEvent::Scan {
                    scene: scene.event_key(),
                    ticket: ticket.clone(),
                }));
            }
            if !follow {
                return Ok(None);
            }
            let (qr_scene, qr_scene_str) = match &scene {
                QrScene::Id(n) => (Some(i64::from(*n)), None),
                QrScene::Str(s) => (None, Some(s.clone())),
            };
            let opts = FollowOptions {
                scene: Some("ADD_SCENE_QR_CODE".into()),
                qr_scene,
                qr_scene_str,
                ticket: Some(ticket.clone()),
                ..FollowOptions::default()
            };
            users::follow(acct, openid, &user, &opts, now_secs, &self.inner.config);
            event_name = Some("subscribe");
            Ok(Some(PushEvent::Subscribe {
                qr: Some((scene.event_key(), ticket.clone())),
            }))
        })?;
        let outcome = self.run(openid, job).await;
        Ok(QrScanOutcome {
            appid,
            ticket,
            user,
            openid: outcome.openid,
            event: event_name,
            delivery: outcome.delivery,
        })
    }

    /// A follower sends a text message (§6.3, with a 64-bit `MsgId`; random when `None`).
    pub async fn send_text(
        &self,
        appid: &str,
        user: &str,
        content: &str,
        msg_id: Option<u64>,
    ) -> Result<PushOutcome, SimError> {
        let (openid, job) = self.prepare(appid, user, true, |acct, openid, _| {
            if !acct.followers.contains_key(openid) {
                return Err(SimError::conflict("user does not follow the account"));
            }
            // A 64-bit MsgId like WeChat's (16–19 digits).
            let msg_id = msg_id.unwrap_or_else(|| {
                rand::rng().random_range(1_000_000_000_000_000..9_000_000_000_000_000)
            });
            Ok(Some(PushEvent::Text {
                content: content.to_owned(),
                msg_id,
            }))
        })?;
        Ok(self.run(openid, job).await)
    }

    /// A follower clicks a menu button of type `click` with this `key` (docs/wechat.md §6.3:
    /// `Event` `CLICK`, `EventKey` the button's key).
    pub async fn click_menu(
        &self,
        appid: &str,
        user: &str,
        key: &str,
    ) -> Result<PushOutcome, SimError> {
        let (openid, job) = self.prepare(appid, user, true, |acct, openid, _| {
            if !acct.followers.contains_key(openid) {
                return Err(SimError::conflict("user does not follow the account"));
            }
            Ok(Some(PushEvent::Click {
                key: key.to_owned(),
            }))
        })?;
        Ok(self.run(openid, job).await)
    }

    /// Runs a `callback/check` probe without the lock, keeps its record, and returns the
    /// answer's JSON (§3.7).
    pub(crate) async fn run_probe(&self, job: crate::probe::ProbeJob) -> serde_json::Value {
        let cfg = &self.inner.config;
        let probe = crate::probe::run(&self.inner.http, cfg, job).await;
        let answer = serde_json::to_value(&probe.answer).unwrap_or_default();
        let mut st = self.lock();
        while st.probes.len() >= cfg.limits.deliveries.max(1) {
            st.probes.pop_front();
        }
        st.probes.push_back(probe);
        answer
    }

    /// What `callback/check` calls probed and saw, oldest first, optionally for one account.
    pub fn probes(&self, appid: Option<&str>) -> Vec<Probe> {
        self.lock()
            .probes
            .iter()
            .filter(|p| appid.is_none_or(|a| a == p.appid))
            .cloned()
            .collect()
    }

    /// Delivery records, oldest first, optionally for one account.
    pub fn deliveries(&self, appid: Option<&str>) -> Vec<Delivery> {
        self.lock()
            .deliveries
            .iter()
            .filter(|d| appid.is_none_or(|a| a == d.appid))
            .cloned()
            .collect()
    }

    /// One delivery record.
    pub fn delivery(&self, id: u64) -> Option<Delivery> {
        self.lock().deliveries.iter().find(|d| d.id == id).cloned()
    }

    // ---- faults ----

    /// Adds a fault rule; returns its id.
    pub fn add_fault(&self, spec: FaultSpec) -> Result<u64, SimError> {
        let max = self.inner.config.limits.max_faults;
        self.lock().faults.add(spec, max)
    }

    /// Removes a fault rule.
    pub fn remove_fault(&self, id: u64) -> Result<(), SimError> {
        if self.lock().faults.remove(id) {
            Ok(())
        } else {
            Err(SimError::not_found(format!("fault {id}")))
        }
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The fault rules.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().faults.list()
    }

    /// Restarts the fault RNG from `seed`.
    pub fn reseed_faults(&self, seed: u64) {
        self.lock().faults.reseed(seed);
    }

    // ---- counters ----

    /// Totals of one (appid, endpoint path), e.g. `("wx1", "/cgi-bin/token")`.
    pub fn counter(&self, appid: &str, endpoint: &str) -> Counter {
        self.lock().calls.counter(appid, endpoint)
    }

    /// Counter rows, optionally filtered.
    pub fn counters(&self, appid: Option<&str>, endpoint: Option<&str>) -> Vec<CounterRow> {
        self.lock().calls.rows(appid, endpoint)
    }

    /// The most recent `limit` calls, oldest first, optionally filtered.
    pub fn calls(
        &self,
        appid: Option<&str>,
        endpoint: Option<&str>,
        limit: usize,
    ) -> Vec<CallRecord> {
        self.lock().calls.recent(appid, endpoint, limit)
    }

    /// Clears counters and the call log only.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Forgets everything (accounts, users, tokens, faults, counters, deliveries); the
    /// configuration and clock stay.
    pub fn reset(&self) {
        let cfg = &self.inner.config;
        *self.lock() = State::new(cfg.fault_seed, cfg.limits.call_log);
    }
}
