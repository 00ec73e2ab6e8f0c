//! Push routes: the owner's own servers keep receiving the account's pushes, and keep answering
//! its users, through wxhub (WeChat allows one server URL per account, docs/wechat.md §6.1).
//!
//! After wxhub's own handling of a push (verification, dedup, pre-registration, follow waits,
//! the PC login replies — none of which waits for an owner's server), every enabled route that
//! matches the push gets it, signed with the route's own Token (and encrypted with its own
//! EncodingAESKey in compatible and safe mode), exactly as WeChat would sign it:
//!
//! - **the reply route**: the first matching `reply` route, when the push is one WeChat lets
//!   an account answer (docs/wechat.md §6.4) and wxhub has no reply of its own. It is called
//!   synchronously until the reply deadline (by default 4 s after the push arrived, inside
//!   WeChat's 5 s); its answer is checked (a passive reply to the push's sender from the
//!   account, or `success`/empty), re-encrypted for WeChat in safe mode and returned. A late,
//!   failing or malformed answer becomes `success` and is recorded. WeChat's retries of the
//!   push wait for that one call (in this process, or through `push_replies` on any replica)
//!   or answer from its stored result, so the owner's server is called once.
//! - **copies**: every other matching route gets the push from a durable queue
//!   (`push_copies`, the body sealed under the account's data key, queued in the
//!   transaction that records the push) with retries and
//!   exponential backoff, a bounded number of attempts, a bounded queue per account and a dead
//!   letter after the last attempt. One copy per route and push (WeChat's retries add none);
//!   each user's copies to a route go out in order. Any replica's worker claims due copies
//!   with a lease, so a restart or another replica continues them.
//!
//! No server-side request forgery: targets are owner-controlled, so the HTTP client resolves
//! names itself and connects only to public addresses ([`GuardedResolver`]); a literal
//! address in a URL is checked the same way before sending. The operator may allow specific
//! hosts (for development: `localhost`, `127.0.0.1`). No proxy is used, and redirects are
//! not followed.
//!
//! What it must never do: log a Token, a key, a signature or a message's content; call an
//! owner's server while holding a transaction; let an owner's answer pass as a reply to
//! another user or from another account.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use store::accounts::{Account, AccountSecrets};
use store::gateway::{NonceUse, PushMode};
use store::push_routes::{
    Delivery, Enqueued, NewCopy, PushRoute, QueuedCopy, RouteFailure, StoredReply, aes_key_field,
    copy_field, reply_field, token_field,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use vault::SecretString;
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::push as sig;
use wechat::xml::{self, PushMessage, Reply};

use crate::{Gateway, random_alnum};

/// How push routes behave; the operator's configuration.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// How long after a push arrives its reply route may take. WeChat waits 5 s
    /// (docs/wechat.md §6.4); the rest is the margin for wxhub's own work and the network.
    pub reply_deadline: Duration,
    /// Hosts (as written in target URLs, e.g. `localhost`, `127.0.0.1`, `owner.internal`)
    /// reached even on non-public addresses. Empty: only public addresses.
    pub allow_hosts: Vec<String>,
    /// Delivery attempts of a copy before it becomes a dead letter.
    pub copy_attempts: u32,
    /// The wait after a copy's first failed attempt; doubled after each further one.
    pub copy_backoff: Duration,
    /// The longest wait between two attempts.
    pub copy_backoff_max: Duration,
    /// Copies one account may have waiting; a push beyond it gets no copy (recorded as a
    /// failure of the route, counted as dropped).
    pub copy_queue_limit: u32,
    /// How long one attempt of a copy may take.
    pub copy_timeout: Duration,
    /// How long a claimed copy is reserved for the replica delivering it: after it, another
    /// replica may take over (the first one died). Longer than `copy_timeout`.
    pub copy_lease: Duration,
    /// Copies delivered at once by one replica.
    pub copy_concurrency: u32,
    /// How often a worker looks for due copies when nothing woke it (another replica queued
    /// them, or a retry became due).
    pub copy_poll: Duration,
    /// How long a reply route's finished reply waits in memory before it is written, with the
    /// others finished meanwhile, for retries on other replicas. A retry on this replica is
    /// answered from memory; one on another replica comes when WeChat had no answer after
    /// 5 s (docs/wechat.md §6.4) and waits for the write's announcement.
    pub reply_write_delay: Duration,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            reply_deadline: Duration::from_millis(4000),
            allow_hosts: Vec::new(),
            copy_attempts: 8,
            copy_backoff: Duration::from_secs(5),
            copy_backoff_max: Duration::from_secs(30 * 60),
            copy_queue_limit: 10_000,
            copy_timeout: Duration::from_secs(10),
            copy_lease: Duration::from_secs(60),
            copy_concurrency: 16,
            copy_poll: Duration::from_secs(1),
            reply_write_delay: Duration::from_secs(1),
        }
    }
}

/// Largest answer read from a reply route (WeChat's own cap is not published; replies are a
/// few KiB at most).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// `MsgType`s of passive replies (docs/wechat.md §6.4).
const PASSIVE_REPLY_TYPES: &[&str] = &["text", "image", "voice", "video", "music", "news"];

/// Events an account may answer with a passive reply (docs/wechat.md §6.4); every ordinary
/// message may be answered too.
const ANSWERABLE_EVENTS: &[&str] = &["subscribe", "SCAN", "CLICK", "LOCATION", "scancode_waitmsg"];

/// Whether WeChat shows a passive reply to this push.
pub fn answerable(msg: &PushMessage) -> bool {
    match msg.event() {
        None => msg.msg_type() != "event",
        Some(event) => ANSWERABLE_EVENTS
            .iter()
            .any(|e| e.eq_ignore_ascii_case(event)),
    }
}

/// Whether `route` takes `msg`.
pub fn route_matches(route: &PushRoute, msg: &PushMessage) -> bool {
    let same = |want: &Option<String>, got: Option<&str>| match want {
        None => true,
        Some(w) => got.is_some_and(|g| g.eq_ignore_ascii_case(w)),
    };
    route.enabled
        && same(&route.match_msg_type, Some(msg.msg_type()))
        && same(&route.match_event, msg.event())
        && match &route.match_event_key_prefix {
            None => true,
            Some(prefix) => msg
                .event_key()
                .unwrap_or_default()
                .starts_with(prefix.as_str()),
        }
}

// ---- request forgery ----

use tenancy::targets::{AllowList, check_target};
pub use tenancy::targets::{Refused, is_public};

/// The DNS resolver of route deliveries: resolves a name and keeps only public addresses
/// (all of them for an allowed host). The connection goes to what it returns, so a name that
/// resolves to a public address when checked and to an internal one when used (DNS
/// rebinding) cannot pass: there is no second resolution.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: AllowList,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = allow.allows(&host);
            let kept: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allowed || is_public(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(Box::new(Refused(
                    "the target's name resolves only to non-public addresses",
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Builds the client route deliveries use: guarded resolution, no proxy, no redirects.
pub(crate) fn route_client(options: &RouteOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .dns_resolver(GuardedResolver {
            allow: AllowList::new(&options.allow_hosts),
        })
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
}

/// Whether wxhub would send to `url` with these options, and why not (for the relay and
/// route checks that have no name resolution at hand: the literal part only).
pub fn target_allowed(options: &RouteOptions, url: &str) -> Result<(), Refused> {
    check_target(&AllowList::new(&options.allow_hosts), url).map(drop)
}

// ---- the routing state of a gateway ----

/// The reply of an in-flight reply route: `None` while computing, then the reply XML (or
/// `None` for `success`).
type Flight = watch::Receiver<Option<Option<String>>>;

/// Push routing state of one gateway.
pub(crate) struct Routing {
    pub(crate) options: RouteOptions,
    allow: AllowList,
    http: reqwest::Client,
    /// Reply routes being called by this process, or called and not yet written to
    /// `push_replies`, by account and dedup key.
    flights: Mutex<HashMap<(String, String), Flight>>,
    /// Finished replies waiting for their batched write (see [`Gateway::write_replies`]).
    unwritten: Mutex<Vec<Unwritten>>,
    /// Wakes this process's copy worker when a copy is queued or re-sent.
    wake: Notify,
}

impl Routing {
    pub(crate) fn new(options: RouteOptions) -> Result<Self, reqwest::Error> {
        Ok(Routing {
            allow: AllowList::new(&options.allow_hosts),
            http: route_client(&options)?,
            options,
            flights: Mutex::new(HashMap::new()),
            unwritten: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }
}

/// One route's keys, opened for one delivery.
struct RouteKeys {
    token: SecretString,
    crypt: Option<MsgCrypt>,
    mode: PushMode,
    /// Signed with the account's own Token: its `(timestamp, nonce)` must be spent at wxhub
    /// first, or the signed copy could be replayed to wxhub with another body.
    account_credentials: bool,
}

/// Opens the keys of `route` for `account`.
fn open_keys(
    gw: &Gateway,
    account: &Account,
    sealed: &AccountSecrets,
    settings_mode: Option<PushMode>,
    route: &PushRoute,
) -> Result<RouteKeys, &'static str> {
    let vault = gw.vault.for_wrapped_dek(&sealed.wrapped_dek);
    let wrapped = vault::WrappedDek::from_bytes(sealed.wrapped_dek.clone())
        .map_err(|_| "the account's data key is damaged")?;
    let dek = vault
        .unwrap_dek(&account.id, &wrapped)
        .map_err(|_| "the account's data key cannot be opened")?;
    let open = |field: &str, ct: &[u8]| {
        dek.decrypt_string(&account.id, field, ct)
            .map_err(|_| "a stored credential cannot be opened")
    };
    let (token, aes, mode) = match &route.token {
        Some(ct) => {
            let token = open(&token_field(&route.id), ct)?;
            let aes = route
                .encoding_aes_key
                .as_deref()
                .map(|ct| open(&aes_key_field(&route.id), ct))
                .transpose()?;
            let mode = route.push_mode.unwrap_or(if aes.is_some() {
                PushMode::Safe
            } else {
                PushMode::Plain
            });
            (token, aes, mode)
        }
        None => {
            let token = sealed
                .push_token
                .as_deref()
                .map(|ct| open(accounts::registry::FIELD_PUSH_TOKEN, ct))
                .transpose()?
                .ok_or("the account has no push Token")?;
            let aes = sealed
                .encoding_aes_key
                .as_deref()
                .map(|ct| open(accounts::registry::FIELD_ENCODING_AES_KEY, ct))
                .transpose()?;
            let mode = crate::push::push_mode(settings_mode, aes.is_some());
            (token, aes, mode)
        }
    };
    let crypt = match (mode, aes) {
        (PushMode::Plain, _) => None,
        (_, Some(key)) => Some(MsgCrypt::new(
            EncodingAesKey::parse(key.expose())
                .map_err(|_| "a stored EncodingAESKey is invalid")?,
            &account.appid,
        )),
        (_, None) => return Err("compatible or safe mode without an EncodingAESKey"),
    };
    Ok(RouteKeys {
        token,
        crypt,
        mode,
        account_credentials: route.token.is_none(),
    })
}

/// The signed request to a route (docs/wechat.md §6.3, §7.4): the body in the route's mode,
/// fresh timestamp and nonce. Returns the request and the `(timestamp, nonce)` used.
fn signed_request(
    http: &reqwest::Client,
    url: &str,
    keys: &RouteKeys,
    now_secs: i64,
    to_user: &str,
    openid: Option<&str>,
    plain_xml: &str,
) -> (reqwest::RequestBuilder, i64, String) {
    let ts = now_secs.to_string();
    let nonce = random_alnum(16);
    let mut query = vec![
        (
            "signature",
            sig::signature(keys.token.expose(), &ts, &nonce),
        ),
        ("timestamp", ts.clone()),
        ("nonce", nonce.clone()),
    ];
    if let Some(openid) = openid {
        query.push(("openid", openid.to_owned()));
    }
    let body = match &keys.crypt {
        None => plain_xml.to_owned(),
        Some(crypt) => {
            let encrypt = crypt.encrypt(plain_xml);
            query.push(("encrypt_type", "aes".to_owned()));
            query.push((
                "msg_signature",
                sig::msg_signature(keys.token.expose(), &ts, &nonce, &encrypt),
            ));
            let mut out = String::with_capacity(plain_xml.len() * 3);
            let envelope = |out: &mut String| {
                out.push_str("<Encrypt><![CDATA[");
                out.push_str(&encrypt);
                out.push_str("]]></Encrypt>");
            };
            match keys.mode {
                PushMode::Compatible => {
                    let trimmed = plain_xml.trim_end();
                    out.push_str(trimmed.strip_suffix("</xml>").unwrap_or(trimmed));
                    envelope(&mut out);
                    out.push_str("</xml>");
                }
                _ => {
                    out.push_str("<xml><ToUserName><![CDATA[");
                    out.push_str(to_user);
                    out.push_str("]]></ToUserName>");
                    envelope(&mut out);
                    out.push_str("</xml>");
                }
            }
            out
        }
    };
    let request = http
        .post(url)
        .query(&query)
        .header("content-type", "text/xml; charset=utf-8")
        .body(body);
    (request, now_secs, nonce)
}

/// A transport error in words, without the URL (it is the owner's and may carry a secret).
fn describe_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(refused) = s.downcast_ref::<Refused>() {
                return format!("refused: {refused}");
            }
            source = s.source();
        }
        "could not connect".to_owned()
    } else {
        "the exchange failed".to_owned()
    }
}

/// What the push handler hands to routing.
pub(crate) struct RoutedPush<'a> {
    pub account: &'a Account,
    pub push_mode: Option<PushMode>,
    pub msg: &'a PushMessage,
    /// The plain message XML as WeChat sent it (decrypted in safe and compatible mode).
    pub plain_xml: &'a str,
    pub dedup_key: &'a str,
    /// When the push arrived: the reply deadline counts from here.
    pub arrived: Instant,
}

impl Gateway {
    /// Wakes this process's copy worker.
    pub fn wake_copies(&self) {
        self.routing.wake.notify_one();
    }

    fn record_failure(&self, account_id: &str, route_id: &str, copy_id: Option<&str>, cause: &str) {
        let store = self.store.clone();
        let failure = RouteFailure {
            route_id: route_id.to_owned(),
            at: self.now(),
            copy_id: copy_id.map(str::to_owned),
            cause: cause.to_owned(),
        };
        let account_id = account_id.to_owned();
        tracing::warn!(%account_id, route_id, cause, "push route failed");
        // Off the push's path: recording a failure must not delay WeChat's answer.
        tokio::spawn(async move {
            if let Err(error) = store.record_push_route_failure(&failure, &account_id).await {
                tracing::warn!(%account_id, %error, "push route failure not recorded");
            }
        });
    }

    fn seal_for(
        &self,
        account_id: &str,
        sealed: &AccountSecrets,
        field: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, &'static str> {
        let vault = self.vault.for_wrapped_dek(&sealed.wrapped_dek);
        let wrapped = vault::WrappedDek::from_bytes(sealed.wrapped_dek.clone())
            .map_err(|_| "the account's data key is damaged")?;
        let dek = vault
            .unwrap_dek(account_id, &wrapped)
            .map_err(|_| "the account's data key cannot be opened")?;
        Ok(dek.encrypt(account_id, field, value))
    }

    fn open_for(
        &self,
        account_id: &str,
        sealed: &AccountSecrets,
        field: &str,
        value: &[u8],
    ) -> Result<String, &'static str> {
        let vault = self.vault.for_wrapped_dek(&sealed.wrapped_dek);
        let wrapped = vault::WrappedDek::from_bytes(sealed.wrapped_dek.clone())
            .map_err(|_| "the account's data key is damaged")?;
        let dek = vault
            .unwrap_dek(account_id, &wrapped)
            .map_err(|_| "the account's data key cannot be opened")?;
        dek.decrypt_string(account_id, field, value)
            .map(|s| s.expose().to_owned())
            .map_err(|_| "a stored message cannot be opened")
    }
}

/// The routes a push goes to, read before it is recorded (so its reply route's call is
/// announced in the same transaction).
pub(crate) struct Plan {
    matching: Vec<PushRoute>,
    /// Index in `matching` of the reply route: the first matching reply route, when WeChat
    /// lets the account answer this push.
    reply: Option<usize>,
    /// The account's sealed secrets, read when a route matches.
    sealed: Option<AccountSecrets>,
}

/// A copy sealed before the push is recorded, queued in the push's own transaction.
pub(crate) struct StagedCopy {
    pub id: String,
    pub route_id: String,
    pub body: Vec<u8>,
}

impl Plan {
    /// The reply route's id, if the push has one.
    pub(crate) fn reply_route(&self) -> Option<&str> {
        self.reply.map(|i| self.matching[i].id.as_str())
    }

    /// A sealed copy of the push for every matching route but the reply route.
    pub(crate) fn stage_copies(
        &self,
        gw: &Gateway,
        account_id: &str,
        plain_xml: &str,
    ) -> Vec<StagedCopy> {
        let Some(sealed) = &self.sealed else {
            return Vec::new();
        };
        let mut staged = Vec::new();
        for (i, route) in self.matching.iter().enumerate() {
            if Some(i) == self.reply {
                continue;
            }
            let id = store::new_id();
            match gw.seal_for(account_id, sealed, &copy_field(&id), plain_xml.as_bytes()) {
                Ok(body) => staged.push(StagedCopy {
                    id,
                    route_id: route.id.clone(),
                    body,
                }),
                Err(cause) => gw.record_failure(account_id, &route.id, None, cause),
            }
        }
        staged
    }
}

/// Counts and records the copies a full queue did not take.
pub(crate) fn copies_dropped(gw: &Gateway, account_id: &str, route_ids: &[&str]) {
    for route_id in route_ids {
        gw.stats
            .push_route(account_id, route_id, stats::RouteOutcome::Dropped);
        gw.record_failure(
            account_id,
            route_id,
            None,
            "the account's copy queue is full: this push gets no copy",
        );
    }
}

/// Picks the routes of `routes` (the account's, read with it) that `msg` goes to.
pub(crate) fn plan(routes: Vec<PushRoute>, sealed: &AccountSecrets, msg: &PushMessage) -> Plan {
    let matching: Vec<PushRoute> = routes
        .into_iter()
        .filter(|r| route_matches(r, msg))
        .collect();
    let reply = answerable(msg)
        .then(|| matching.iter().position(|r| r.delivery == Delivery::Reply))
        .flatten();
    let sealed = (!matching.is_empty()).then(|| sealed.clone());
    Plan {
        matching,
        reply,
        sealed,
    }
}

/// A first delivery of a push (its copies were queued with it): when it has a reply route
/// and wxhub has no reply of its own (`own_reply`), returns that route's checked reply XML
/// (`None`: answer `success`); with a reply of wxhub's own, the reply route gets a copy.
pub(crate) async fn route_first(
    gw: &Gateway,
    push: &RoutedPush<'_>,
    plan: Plan,
    own_reply: bool,
) -> Option<String> {
    let account_id = push.account.id.as_str();
    let (Some(index), Some(sealed)) = (plan.reply, &plan.sealed) else {
        return None;
    };
    let route = &plan.matching[index];
    if own_reply {
        // wxhub's own reply won: the reply route gets the push as a copy, and retries have
        // nothing to wait for.
        if enqueue_copy(gw, push, sealed, route).await {
            gw.wake_copies();
        }
        store_reply(gw, account_id, push.dedup_key, None);
        return None;
    }
    // Registered at once, so a retry arriving on this replica waits for the call.
    let flight = begin_flight(gw, push);
    call_reply_route(gw, push, sealed, route, flight).await
}

/// A reply route's call of one push, registered in this process; retries on other replicas
/// learn of it from `push_replies`.
struct InFlight {
    tx: watch::Sender<Option<Option<String>>>,
}

fn begin_flight(gw: &Gateway, push: &RoutedPush<'_>) -> InFlight {
    let key = (push.account.id.clone(), push.dedup_key.to_owned());
    let (tx, rx) = watch::channel(None);
    gw.routing
        .flights
        .lock()
        .expect("flights lock")
        .insert(key, rx);
    InFlight { tx }
}

async fn enqueue_copy(
    gw: &Gateway,
    push: &RoutedPush<'_>,
    sealed: &AccountSecrets,
    route: &PushRoute,
) -> bool {
    let account_id = push.account.id.as_str();
    let id = store::new_id();
    let body = match gw.seal_for(
        account_id,
        sealed,
        &copy_field(&id),
        push.plain_xml.as_bytes(),
    ) {
        Ok(body) => body,
        Err(cause) => {
            gw.record_failure(account_id, &route.id, None, cause);
            return false;
        }
    };
    let copy = NewCopy {
        id: &id,
        account_id,
        route_id: &route.id,
        dedup_key: push.dedup_key,
        openid: Some(push.msg.from_user.as_str()),
        body: &body,
    };
    let limit = i64::from(gw.routing.options.copy_queue_limit);
    match gw.store.enqueue_push_copy(&copy, limit, gw.now()).await {
        Ok(Enqueued::Queued) => true,
        Ok(Enqueued::Duplicate) => false,
        Ok(Enqueued::Full) => {
            gw.stats
                .push_route(account_id, &route.id, stats::RouteOutcome::Dropped);
            gw.record_failure(
                account_id,
                &route.id,
                None,
                "the account's copy queue is full: this push gets no copy",
            );
            false
        }
        Err(error) => {
            tracing::warn!(%account_id, %error, "push copy not queued");
            gw.record_failure(account_id, &route.id, None, "the copy could not be stored");
            false
        }
    }
}

/// Why a reply route's answer was not used.
enum ReplyFailure {
    Late,
    Failed(String),
    Refused(String),
}

/// Calls the reply route once, records the outcome and returns the reply XML to use.
async fn call_reply_route(
    gw: &Gateway,
    push: &RoutedPush<'_>,
    sealed: &AccountSecrets,
    route: &PushRoute,
    flight: InFlight,
) -> Option<String> {
    let account_id = push.account.id.as_str();
    let InFlight { tx } = flight;
    // The call was announced in `push_replies` with the push itself; only the attempt that
    // recorded the push (the first) calls the route.
    let started = Instant::now();
    let outcome = exchange_reply(gw, push, sealed, route).await;
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    gw.stats.push_route_reply_latency(account_id, &route.id, ms);
    let reply = match outcome {
        Ok(reply) => {
            gw.stats
                .push_route(account_id, &route.id, stats::RouteOutcome::Delivered);
            reply
        }
        Err(failure) => {
            let (outcome, cause) = match failure {
                ReplyFailure::Late => (
                    stats::RouteOutcome::Late,
                    format!(
                        "no answer within the reply deadline ({} ms after the push); WeChat was answered success",
                        gw.routing.options.reply_deadline.as_millis()
                    ),
                ),
                ReplyFailure::Failed(c) => (stats::RouteOutcome::Failed, c),
                ReplyFailure::Refused(c) => (
                    stats::RouteOutcome::Refused,
                    format!("reply refused: {c}; WeChat was answered success"),
                ),
            };
            gw.stats.push_route(account_id, &route.id, outcome);
            gw.record_failure(account_id, &route.id, None, &cause);
            None
        }
    };
    let stored = match &reply {
        Some(xml) => gw
            .seal_for(
                account_id,
                sealed,
                &reply_field(push.dedup_key),
                xml.as_bytes(),
            )
            .ok(),
        None => None,
    };
    // A retry here is answered from the flight at once; the batched write (which then
    // forgets the flight) serves retries on other replicas.
    let _ = tx.send(Some(reply.clone()));
    store_reply(gw, account_id, push.dedup_key, stored);
    reply
}

/// Sends the push to the reply route and checks its answer (docs/wechat.md §6.4, §7.4).
async fn exchange_reply(
    gw: &Gateway,
    push: &RoutedPush<'_>,
    sealed: &AccountSecrets,
    route: &PushRoute,
) -> Result<Option<String>, ReplyFailure> {
    let account_id = push.account.id.as_str();
    check_target(&gw.routing.allow, &route.target_url)
        .map_err(|r| ReplyFailure::Failed(format!("refused: {r}")))?;
    let keys = open_keys(gw, push.account, sealed, push.push_mode, route)
        .map_err(|c| ReplyFailure::Failed(c.to_owned()))?;
    let deadline = push.arrived + gw.routing.options.reply_deadline;
    let (request, ts, nonce) = signed_request(
        &gw.routing.http,
        &route.target_url,
        &keys,
        gw.clock.now_secs(),
        &push.msg.to_user,
        Some(&push.msg.from_user),
        push.plain_xml,
    );
    if keys.account_credentials {
        spend_nonce(gw, account_id, ts, &nonce, push.dedup_key)
            .await
            .map_err(ReplyFailure::Failed)?;
    }
    let exchange = async {
        let mut response = request
            .send()
            .await
            .map_err(|e| ReplyFailure::Failed(describe_error(&e)))?;
        if !response.status().is_success() {
            return Err(ReplyFailure::Failed(format!(
                "the owner's server answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ReplyFailure::Failed(describe_error(&e)))?
        {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(ReplyFailure::Refused(format!(
                    "the answer is longer than {MAX_REPLY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .map_err(|_| ReplyFailure::Late)??;
    check_reply(&body, &keys, push.msg).map_err(ReplyFailure::Refused)
}

/// The plain reply XML in `body` if it is a passive reply WeChat would show for `msg`:
/// well-formed, `ToUserName` the push's sender and `FromUserName` the account, a passive-reply
/// `MsgType`, a text with content; encrypted with the route's key when the route is in safe
/// mode. `None` for `success` or an empty body.
fn check_reply(body: &[u8], keys: &RouteKeys, msg: &PushMessage) -> Result<Option<String>, String> {
    let crypto = keys.crypt.as_ref().map(|c| (c, keys.token.expose()));
    let parsed = xml::parse_reply(body, crypto).map_err(|e| format!("not a valid reply ({e})"))?;
    let (message, xml) = match parsed {
        Reply::Success | Reply::Empty => return Ok(None),
        Reply::Message(_) if keys.mode == PushMode::Safe => {
            return Err("the route is in safe mode, so its reply must be encrypted".to_owned());
        }
        Reply::Message(m) => (m, String::from_utf8_lossy(body).into_owned()),
        Reply::Encrypted {
            envelope,
            message: Some(m),
        } => {
            let crypt = keys
                .crypt
                .as_ref()
                .ok_or("an encrypted reply in plain mode")?;
            let inner = envelope
                .open(crypt, keys.token.expose())
                .map_err(|_| "the encrypted reply does not open".to_owned())?;
            (m, inner)
        }
        Reply::Encrypted { message: None, .. } => {
            return Err("an encrypted reply from a route in plain mode".to_owned());
        }
    };
    if message.to_user != msg.from_user {
        return Err("its ToUserName is not the user who sent the push".to_owned());
    }
    if message.from_user != msg.to_user {
        return Err("its FromUserName is not the account's original id".to_owned());
    }
    if !PASSIVE_REPLY_TYPES.contains(&message.msg_type.as_str()) {
        return Err(format!(
            "MsgType {:?} is not a passive reply type",
            message.msg_type
        ));
    }
    if message.msg_type == "text"
        && message
            .content
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
    {
        return Err("a text reply without Content".to_owned());
    }
    Ok(Some(xml))
}

/// Spends a `(timestamp, nonce)` signed with the account's own Token at wxhub first.
async fn spend_nonce(
    gw: &Gateway,
    account_id: &str,
    ts: i64,
    nonce: &str,
    dedup_key: &str,
) -> Result<(), String> {
    match gw
        .store
        .remember_push_nonce(
            account_id,
            ts,
            nonce,
            &format!("route:{dedup_key}"),
            gw.now(),
        )
        .await
    {
        Ok(NonceUse::First) => Ok(()),
        Ok(_) => Err("the signature's nonce collided; not sent".to_owned()),
        Err(_) => Err("the signature's nonce could not be recorded; not sent".to_owned()),
    }
}

/// A retry of a push WeChat already delivered: the reply its reply route gave (waiting for an
/// attempt still computing it), or `None` for `success`.
pub(crate) async fn route_retry(
    gw: &Gateway,
    account: &Account,
    dedup_key: &str,
    arrived: Instant,
) -> Option<String> {
    let key = (account.id.clone(), dedup_key.to_owned());
    let flight = gw
        .routing
        .flights
        .lock()
        .expect("flights lock")
        .get(&key)
        .cloned();
    if let Some(mut rx) = flight {
        let deadline = arrived + gw.routing.options.reply_deadline;
        return match tokio::time::timeout_at(deadline.into(), rx.wait_for(Option::is_some)).await {
            Ok(Ok(reply)) => reply.clone().flatten(),
            _ => None,
        };
    }
    wait_stored_reply(gw, account, dedup_key, arrived).await
}

/// A finished reply not yet in `push_replies`.
struct Unwritten {
    account_id: String,
    dedup_key: String,
    /// The sealed reply XML; `None`: `success`.
    sealed: Option<Vec<u8>>,
}

/// Queues a push's reply (`None`: `success`) for the next batched write, which stores it for
/// retries on other replicas and announces it. Until then a retry here is answered from the
/// push's flight, which stays registered until the write.
fn store_reply(gw: &Gateway, account_id: &str, dedup_key: &str, sealed: Option<Vec<u8>>) {
    let first = {
        let mut unwritten = gw.routing.unwritten.lock().expect("unwritten replies lock");
        unwritten.push(Unwritten {
            account_id: account_id.to_owned(),
            dedup_key: dedup_key.to_owned(),
            sealed,
        });
        unwritten.len() == 1
    };
    // The first reply of a batch schedules its write; later ones join it. Written off the
    // push's path: on SQLite a write beside the next push's transaction would make one of
    // them wait for the lock in sleeps of milliseconds, and one write per batch instead of
    // one per push keeps that rare.
    if first && let Some(gw) = gw.me.upgrade() {
        tokio::spawn(async move {
            tokio::time::sleep(gw.routing.options.reply_write_delay).await;
            gw.write_replies().await;
        });
    }
}

impl Gateway {
    /// Writes the finished replies waiting in memory in one transaction, announces them to
    /// the other replicas and forgets their flights. Called by the batch's timer, and at
    /// shutdown so no reply is left unwritten.
    pub async fn write_replies(&self) {
        let batch = std::mem::take(
            &mut *self
                .routing
                .unwritten
                .lock()
                .expect("unwritten replies lock"),
        );
        if batch.is_empty() {
            return;
        }
        let rows: Vec<(&str, &str, Option<&[u8]>)> = batch
            .iter()
            .map(|r| {
                (
                    r.account_id.as_str(),
                    r.dedup_key.as_str(),
                    r.sealed.as_deref(),
                )
            })
            .collect();
        match self.store.finish_push_replies(&rows, self.now()).await {
            Ok(()) => {
                let ids: Vec<String> = batch
                    .iter()
                    .map(|r| crate::events::reply_id(&r.account_id, &r.dedup_key))
                    .collect();
                self.announcements.announce_all(&self.store, &ids).await;
            }
            // A retry on another replica then waits out its deadline and answers `success`,
            // as when this replica dies before the write.
            Err(error) => {
                tracing::warn!(%error, replies = batch.len(), "push replies not stored");
            }
        }
        let mut flights = self.routing.flights.lock().expect("flights lock");
        for reply in batch {
            flights.remove(&(reply.account_id, reply.dedup_key));
        }
    }
}

/// How long a retry on another replica than the one calling the reply route waits for the
/// reply's announcement before it reads the stored reply anyway (a notification may be lost).
const REPLY_RECHECK: Duration = Duration::from_millis(500);

async fn wait_stored_reply(
    gw: &Gateway,
    account: &Account,
    dedup_key: &str,
    arrived: Instant,
) -> Option<String> {
    let deadline = arrived + gw.routing.options.reply_deadline;
    let id = crate::events::reply_id(&account.id, dedup_key);
    // Subscribed before the first read, so an announcement between the two is not missed.
    let mut announced = gw.announcements.subscribe(&gw.store).await;
    loop {
        match gw.store.push_reply(&account.id, dedup_key).await {
            Ok(Some(StoredReply::Done(Some(sealed_reply)))) => {
                let sealed = gw
                    .store
                    .load_account_secrets(&account.id)
                    .await
                    .ok()
                    .flatten()?;
                return gw
                    .open_for(&account.id, &sealed, &reply_field(dedup_key), &sealed_reply)
                    .ok();
            }
            Ok(Some(StoredReply::Done(None))) | Ok(None) | Err(_) => return None,
            Ok(Some(StoredReply::Pending { .. })) => {}
        }
        let recheck = (Instant::now() + REPLY_RECHECK).min(deadline);
        let ours = async {
            loop {
                match announced.recv().await {
                    Ok(other) if *other != *id => {}
                    // The replica's gateway is going away: only the recheck is left.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                    // Ours, or announcements were dropped while this one lagged: read again.
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout_at(recheck.into(), ours).await;
        if Instant::now() >= deadline {
            return None;
        }
    }
}

// ---- the copy worker ----

/// Starts this replica's copy worker (it runs until the runtime ends or the handle is
/// aborted).
pub fn spawn_copy_worker(gw: Arc<Gateway>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let delivered = match deliver_due_copies(&gw).await {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "push copies not claimed");
                    0
                }
            };
            // Copies delivered: others may be due now (a user's next copy among them).
            if delivered == 0 {
                let _ =
                    tokio::time::timeout(gw.routing.options.copy_poll, gw.routing.wake.notified())
                        .await;
            }
        }
    })
}

/// Claims due copies and delivers them (at most `copy_concurrency` at once); returns how
/// many it claimed.
pub async fn deliver_due_copies(gw: &Gateway) -> Result<usize, store::StoreError> {
    let now = gw.now();
    let lease = i64::try_from(gw.routing.options.copy_lease.as_millis()).unwrap_or(i64::MAX);
    let claimed = gw
        .store
        .claim_push_copies(
            now,
            now.saturating_add(lease),
            gw.routing.options.copy_concurrency,
        )
        .await?;
    let n = claimed.len();
    futures_util::future::join_all(claimed.into_iter().map(|copy| deliver_copy(gw, copy))).await;
    Ok(n)
}

/// The wait before attempt `attempts + 1`, with up to 20 % jitter so copies that failed
/// together do not retry together.
fn backoff(options: &RouteOptions, attempts: u32) -> Duration {
    let exp = options
        .copy_backoff
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)));
    let base = exp.min(options.copy_backoff_max);
    let jitter = rand::rng().random_range(0.0..0.2);
    base + base.mul_f64(jitter)
}

async fn deliver_copy(gw: &Gateway, copy: QueuedCopy) {
    let outcome = attempt_copy(gw, &copy).await;
    let account_id = copy.account_id.as_str();
    let result = match outcome {
        Ok(()) => {
            gw.stats
                .push_route(account_id, &copy.route_id, stats::RouteOutcome::Delivered);
            gw.store.finish_push_copy(&copy.id).await
        }
        Err(CopyFailure::Gone) => gw.store.finish_push_copy(&copy.id).await,
        Err(CopyFailure::Failed(cause)) => {
            let attempts = copy.attempts.saturating_add(1);
            let options = &gw.routing.options;
            let last = attempts >= i64::from(options.copy_attempts);
            let next = (!last).then(|| {
                let wait = backoff(options, u32::try_from(attempts).unwrap_or(u32::MAX));
                gw.now()
                    .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
            });
            let (outcome, recorded) = if last {
                (
                    stats::RouteOutcome::DeadLettered,
                    format!("{cause}; dead letter after {attempts} attempts"),
                )
            } else {
                (
                    stats::RouteOutcome::Failed,
                    format!("{cause}; attempt {attempts}, will retry"),
                )
            };
            gw.stats.push_route(account_id, &copy.route_id, outcome);
            gw.record_failure(account_id, &copy.route_id, Some(&copy.id), &recorded);
            gw.store
                .fail_push_copy(&copy.id, attempts, next, &cause)
                .await
        }
    };
    if let Err(error) = result {
        // The lease ends and the copy is attempted again: at-least-once.
        tracing::warn!(%account_id, %error, "push copy outcome not stored");
    }
}

enum CopyFailure {
    /// The route or the account no longer exists: the copy is dropped.
    Gone,
    Failed(String),
}

async fn attempt_copy(gw: &Gateway, copy: &QueuedCopy) -> Result<(), CopyFailure> {
    let store_failed = |_| CopyFailure::Failed("the database failed".to_owned());
    let account = gw
        .store
        .get_account(&copy.account_id)
        .await
        .map_err(store_failed)?
        .ok_or(CopyFailure::Gone)?;
    let route = gw
        .store
        .push_route(&copy.account_id, &copy.route_id)
        .await
        .map_err(store_failed)?
        .ok_or(CopyFailure::Gone)?;
    let sealed = gw
        .store
        .load_account_secrets(&account.id)
        .await
        .map_err(store_failed)?
        .ok_or(CopyFailure::Gone)?;
    let settings = gw
        .store
        .gateway_settings(&account.id)
        .await
        .map_err(store_failed)?;
    let plain = gw
        .open_for(&account.id, &sealed, &copy_field(&copy.id), &copy.body)
        .map_err(|c| CopyFailure::Failed(c.to_owned()))?;
    check_target(&gw.routing.allow, &route.target_url)
        .map_err(|r| CopyFailure::Failed(format!("refused: {r}")))?;
    let keys = open_keys(gw, &account, &sealed, settings.push_mode, &route)
        .map_err(|c| CopyFailure::Failed(c.to_owned()))?;
    let to_user = settings.original_id.clone().unwrap_or_default();
    let (request, ts, nonce) = signed_request(
        &gw.routing.http,
        &route.target_url,
        &keys,
        gw.clock.now_secs(),
        &to_user,
        copy.openid.as_deref(),
        &plain,
    );
    if keys.account_credentials {
        spend_nonce(gw, &account.id, ts, &nonce, &copy.dedup_key)
            .await
            .map_err(CopyFailure::Failed)?;
    }
    let response = request
        .timeout(gw.routing.options.copy_timeout)
        .send()
        .await
        .map_err(|e| CopyFailure::Failed(describe_error(&e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(CopyFailure::Failed(format!(
            "the owner's server answered HTTP {}",
            response.status().as_u16()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(xml: &str) -> PushMessage {
        xml::parse_message(xml.as_bytes()).unwrap()
    }

    #[test]
    fn routes_match_on_type_event_and_key_prefix() {
        let click = msg(
            "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>event</MsgType><Event>CLICK</Event><EventKey>menu_help</EventKey></xml>",
        );
        let text = msg(
            "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId></xml>",
        );
        let route = |t: Option<&str>, e: Option<&str>, k: Option<&str>| PushRoute {
            id: "r".into(),
            account_id: "a".into(),
            position: 0,
            target_url: "https://o.example/".into(),
            match_msg_type: t.map(Into::into),
            match_event: e.map(Into::into),
            match_event_key_prefix: k.map(Into::into),
            delivery: Delivery::Reply,
            push_mode: None,
            token: Some(vec![]),
            encoding_aes_key: None,
            relay: false,
            enabled: true,
            created_at: 0,
            updated_at: 0,
        };
        let everything = route(None, None, None);
        assert!(route_matches(&everything, &click) && route_matches(&everything, &text));
        let texts = route(Some("text"), None, None);
        assert!(route_matches(&texts, &text) && !route_matches(&texts, &click));
        let menu = route(Some("event"), Some("click"), Some("menu_"));
        assert!(route_matches(&menu, &click) && !route_matches(&menu, &text));
        assert!(!route_matches(
            &route(None, Some("CLICK"), Some("other_")),
            &click
        ));
        let mut off = everything.clone();
        off.enabled = false;
        assert!(!route_matches(&off, &text));
        assert!(answerable(&text) && answerable(&click));
        let unsubscribe = msg(
            "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>\
             <MsgType>event</MsgType><Event>unsubscribe</Event></xml>",
        );
        assert!(!answerable(&unsubscribe));
    }
}
