//! The push callback `{public_url}/t/{appid}/wechat/push` (docs/wechat.md §6, §7).
//!
//! Order of checks, cheapest and most decisive first, and nothing stored until all pass:
//! body size (64 KiB, before parsing) → URL `signature` (constant time) → timestamp window →
//! hardened XML parse (no DOCTYPE, no entities, bounded depth) → the account's push mode:
//! safe mode accepts only an `Encrypt` envelope, compatible mode requires the `Encrypt`
//! element, and both verify `msg_signature` over the raw query `timestamp` and decrypt
//! (checking the embedded appid), using the decrypted message and never the plain fields →
//! `ToUserName` against the account's original id (required outside safe mode) → `CreateTime`
//! in range. Then one transaction records the `(timestamp, nonce)` together with the push under
//! its dedup key (`MsgId`, or `FromUserName + CreateTime + Event`, §6.4) and its effect on the
//! end user, before answering `success` — so a retry on any replica is recognised and
//! acknowledged without reprocessing, a retry after a failed attempt is processed, and a nonce
//! reused for another message is refused.
//!
//! Why the push mode matters: in plain mode the URL signature covers only token, timestamp and
//! nonce, not the body, so whoever holds an unused (signature, timestamp, nonce) can post any
//! body. An account configured for safe mode therefore never accepts a plain body, and a follow
//! learned from a plain-mode push is re-checked with `user/info` before a login relies on it.
//!
//! WeChat waits 5 s (§6.4); the work here is a few database statements. Then the account's
//! push routes (`crate::routes`) get the push: its reply route synchronously, within the reply
//! deadline, and every other matching route a copy from the durable queue.

use std::time::Instant;

use bytes::Bytes;
use store::end_users::Subscription;
use store::gateway::{IncomingPush, NonceUse, PushMode, PushRecording};
use store::pushes::ReceivedPush;
use wechat::crypto::{EncodingAesKey, MsgCrypt};
use wechat::push as sig;
use wechat::xml::{self, PushBody, PushKind, PushMessage};

use crate::error::PushRejection;
use crate::{Gateway, GatewayError, random_alnum, token_hash};

/// Largest push body accepted (docs/wechat.md §6; `wechat::xml::MAX_PUSH_BYTES`).
pub const MAX_PUSH_BYTES: usize = xml::MAX_PUSH_BYTES;
/// How far a push's `timestamp` may be from our clock.
pub const TIMESTAMP_WINDOW_SECS: i64 = 300;

/// The query WeChat signs (§6.2, §6.3, §7.4).
#[derive(Debug, Default)]
pub struct PushQuery {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
    pub openid: Option<String>,
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
}

impl PushQuery {
    /// Reads the query; a repeated or non-UTF-8 parameter makes the request malformed (WeChat
    /// sends each once).
    pub fn from_params(p: &crate::params::Params) -> Result<PushQuery, GatewayError> {
        let mut malformed = None;
        let mut take = |name: &str| p.take(name, &mut malformed);
        let query = PushQuery {
            signature: take("signature"),
            timestamp: take("timestamp"),
            nonce: take("nonce"),
            echostr: take("echostr"),
            openid: take("openid"),
            encrypt_type: take("encrypt_type"),
            msg_signature: take("msg_signature"),
        };
        match malformed {
            Some(_) => Err(reject(PushRejection::BadXml)),
            None => Ok(query),
        }
    }
}

fn reject(r: PushRejection) -> GatewayError {
    GatewayError::Push(r)
}

struct Verified {
    account: store::accounts::Account,
    /// The account's secrets as stored, for the push routes' keys.
    sealed: store::accounts::AccountSecrets,
    settings: store::gateway::GatewaySettings,
    /// The account's push routes.
    routes: Vec<store::push_routes::PushRoute>,
    token: vault::SecretString,
    aes_key: Option<vault::SecretString>,
    timestamp: i64,
    /// The query's `timestamp` exactly as sent: what the signatures cover.
    timestamp_raw: String,
    nonce: String,
}

/// Checks the URL signature and the timestamp window.
async fn verify_request(
    gw: &Gateway,
    appid: &str,
    q: &PushQuery,
) -> Result<Verified, GatewayError> {
    let found = gw.store.push_account(appid).await?;
    let Some(store::gateway::PushAccount {
        account,
        secrets: sealed,
        settings,
        routes,
    }) = found.filter(|p| p.account.state == store::accounts::AccountState::Active)
    else {
        return Err(reject(PushRejection::NotConfigured));
    };
    let secrets =
        accounts::open_secrets(&gw.vault.for_kek(&sealed.dek_kek_id), &account.id, &sealed)?;
    let token = secrets
        .push_token
        .ok_or(reject(PushRejection::NotConfigured))?;
    let (Some(signature), Some(ts), Some(nonce)) = (&q.signature, &q.timestamp, &q.nonce) else {
        return Err(reject(PushRejection::BadSignature));
    };
    if !sig::verify_signature(token.expose(), ts, nonce, signature) {
        return Err(reject(PushRejection::BadSignature));
    }
    let timestamp: i64 = ts.parse().map_err(|_| reject(PushRejection::Stale))?;
    // abs_diff: a hostile timestamp near i64::MIN/MAX must not overflow.
    if gw.clock.now_secs().abs_diff(timestamp) > TIMESTAMP_WINDOW_SECS.unsigned_abs() {
        return Err(reject(PushRejection::Stale));
    }
    Ok(Verified {
        account,
        sealed,
        settings,
        routes,
        token,
        aes_key: secrets.encoding_aes_key,
        timestamp,
        timestamp_raw: ts.clone(),
        nonce: nonce.clone(),
    })
}

/// URL verification (§6.2): the raw `echostr` when the signature verifies. Its
/// `(timestamp, nonce)` is recorded like a delivery's, so it cannot be reused for a push.
pub async fn verify_url(gw: &Gateway, appid: &str, q: PushQuery) -> Result<String, GatewayError> {
    let v = verify_request(gw, appid, &q).await?;
    let echostr = q
        .echostr
        .filter(|e| !e.is_empty() && e.len() <= 512)
        .ok_or(reject(PushRejection::BadXml))?;
    let key = format!("url-verification:{}", token_hash(&echostr));
    match gw
        .store
        .remember_push_nonce(&v.account.id, v.timestamp, &v.nonce, &key, gw.now())
        .await?
    {
        NonceUse::First | NonceUse::SameMessage => Ok(echostr),
        NonceUse::OtherMessage => Err(reject(PushRejection::Replay)),
    }
}

/// Decrypts a safe-mode (or compatible-mode) `Encrypt` after checking `msg_signature`;
/// returns the message and its plain XML.
fn open_encrypted(
    v: &Verified,
    appid: &str,
    q: &PushQuery,
    encrypt: &str,
) -> Result<(PushMessage, String), GatewayError> {
    let key = v
        .aes_key
        .as_ref()
        .ok_or(reject(PushRejection::NotConfigured))?;
    let msg_signature = q
        .msg_signature
        .as_deref()
        .ok_or(reject(PushRejection::BadSignature))?;
    if q.encrypt_type.as_deref() != Some("aes") {
        return Err(reject(PushRejection::NotEncrypted));
    }
    // §7.3: verify before decrypting, over the timestamp exactly as sent.
    if !sig::verify_msg_signature(
        v.token.expose(),
        &v.timestamp_raw,
        &v.nonce,
        encrypt,
        msg_signature,
    ) {
        return Err(reject(PushRejection::BadSignature));
    }
    let key = EncodingAesKey::parse(key.expose())
        .map_err(|_| GatewayError::Internal("stored EncodingAESKey is invalid"))?;
    // Decryption checks the trailing appid (§7.2): a message for another account fails.
    let plain = MsgCrypt::new(key, appid)
        .decrypt(encrypt)
        .map_err(|_| reject(PushRejection::WrongAccount))?;
    let msg = xml::parse_message(plain.as_bytes()).map_err(|_| reject(PushRejection::BadXml))?;
    Ok((msg, plain))
}

/// The subscription change a push carries; `event_time` is its `CreateTime` in ms.
fn subscription_of(msg: &PushMessage, event_time: i64) -> Option<Subscription> {
    match &msg.kind {
        PushKind::Subscribe { event_key, .. } => Some(Subscription {
            openid: msg.from_user.clone(),
            subscribed: true,
            subscribe_time: Some(event_time),
            subscribe_scene: event_key.as_ref().map(|_| "ADD_SCENE_QR_CODE".to_owned()),
            qr_scene: event_key.clone(),
            event_time,
        }),
        PushKind::Unsubscribe => Some(Subscription {
            openid: msg.from_user.clone(),
            subscribed: false,
            subscribe_time: None,
            subscribe_scene: None,
            qr_scene: None,
            event_time,
        }),
        _ => None,
    }
}

/// What kind of push a message is, for statistics.
fn push_kind(msg: &PushMessage) -> stats::PushKind {
    match &msg.kind {
        PushKind::Subscribe {
            event_key: Some(_), ..
        } => stats::PushKind::SubscribeWithScene,
        PushKind::Subscribe { .. } => stats::PushKind::Subscribe,
        PushKind::Unsubscribe => stats::PushKind::Unsubscribe,
        PushKind::Scan { .. } => stats::PushKind::Scan,
        _ => stats::PushKind::Other,
    }
}

/// The account's push mode: as configured, else safe when it has an EncodingAESKey.
pub(crate) fn push_mode(configured: Option<PushMode>, has_aes_key: bool) -> PushMode {
    configured.unwrap_or(if has_aes_key {
        PushMode::Safe
    } else {
        PushMode::Plain
    })
}

/// The message to act on, by the account's push mode, its plain XML (for push routes), and
/// its `Encrypt` value when it was authenticated (`msg_signature` over the encrypted message).
fn open_body(
    v: &Verified,
    appid: &str,
    q: &PushQuery,
    mode: PushMode,
    body: &[u8],
) -> Result<(PushMessage, String, Option<String>), GatewayError> {
    let parsed = xml::parse_push(body).map_err(|_| reject(PushRejection::BadXml))?;
    match (mode, parsed) {
        // An envelope is accepted in any mode: it is authenticated.
        (_, PushBody::Encrypted(env)) => {
            let (msg, plain) = open_encrypted(v, appid, q, &env.encrypt)?;
            if msg.to_user != env.to_user {
                return Err(reject(PushRejection::WrongAccount));
            }
            Ok((msg, plain, Some(env.encrypt)))
        }
        // Safe mode: a readable body is a downgrade (nothing signs it).
        (PushMode::Safe, PushBody::Message(_)) => Err(reject(PushRejection::NotEncrypted)),
        // Compatible mode: the signed, encrypted copy is required and is what counts.
        (PushMode::Compatible, PushBody::Message(plain)) => {
            let encrypt = plain.encrypt.ok_or(reject(PushRejection::NotEncrypted))?;
            let (msg, plain_xml) = open_encrypted(v, appid, q, &encrypt)?;
            if msg.to_user != plain.to_user {
                return Err(reject(PushRejection::WrongAccount));
            }
            Ok((msg, plain_xml, Some(encrypt)))
        }
        (PushMode::Plain, PushBody::Message(plain)) => {
            Ok((plain, String::from_utf8_lossy(body).into_owned(), None))
        }
    }
}

/// Logs (once per account and process) that pushes are refused for want of an original id.
fn warn_missing_original_id(gw: &Gateway, account_id: &str) {
    let first = gw
        .warned_missing_original_id
        .lock()
        .expect("warned set lock")
        .insert(account_id.to_owned());
    if first {
        tracing::error!(
            account_id,
            "plain/compatible-mode push refused: the account's original id (gh_…) is not \
             configured; set it with `wxhub account configure --original-id` or the dashboard"
        );
    }
}

/// A message delivery (§6.3): verified, deduplicated, stored with its effect; returns the
/// body to answer (`success`).
pub async fn receive(
    gw: &Gateway,
    appid: &str,
    q: PushQuery,
    body: Bytes,
) -> Result<String, GatewayError> {
    let arrived = Instant::now();
    if body.len() > MAX_PUSH_BYTES {
        return Err(reject(PushRejection::TooLarge));
    }
    let mut v = verify_request(gw, appid, &q).await?;
    let settings = std::mem::take(&mut v.settings);
    let mode = push_mode(settings.push_mode, v.aes_key.is_some());
    let (msg, plain_xml, encrypt) = open_body(&v, appid, &q, mode, &body)?;
    let authenticated = encrypt.is_some();
    match settings.original_id.as_deref() {
        Some(id) if id == msg.to_user => {}
        Some(_) => return Err(reject(PushRejection::WrongAccount)),
        // Safe mode: the decrypted appid already proves the account.
        None if mode == PushMode::Safe && authenticated => {}
        None => {
            warn_missing_original_id(gw, &v.account.id);
            return Err(reject(PushRejection::OriginalIdMissing));
        }
    }
    // CreateTime is hostile input: out of range is malformed, never an overflow.
    let event_time = msg
        .create_time
        .checked_mul(1000)
        .filter(|t| *t >= 0)
        .ok_or(reject(PushRejection::BadXml))?;
    let now = gw.now();
    let record = ReceivedPush {
        account_id: v.account.id.clone(),
        dedup_key: msg.dedup_key(),
        msg_type: msg.msg_type().to_owned(),
        event: msg.event().map(str::to_owned),
        openid: Some(msg.from_user.clone()),
        received_at: now,
        summary: match msg.event() {
            Some(e) => format!("event {e}"),
            None => format!("message {}", msg.msg_type()),
        },
    };
    let subscription = subscription_of(&msg, event_time);
    // Read first: a reply route's call is announced with the push, for WeChat's retries.
    let plan = crate::routes::plan(std::mem::take(&mut v.routes), &v.sealed, &msg);
    let staged = plan.stage_copies(gw, &v.account.id, &plain_xml);
    let copies: Vec<store::push_routes::NewCopy<'_>> = staged
        .iter()
        .map(|c| store::push_routes::NewCopy {
            id: &c.id,
            account_id: &v.account.id,
            route_id: &c.route_id,
            dedup_key: &record.dedup_key,
            openid: Some(&msg.from_user),
            body: &c.body,
        })
        .collect();
    let recording = gw
        .store
        .record_push_with_subscription(
            &IncomingPush {
                push: &record,
                subscription: subscription.as_ref(),
                push_time: v.timestamp,
                nonce: &v.nonce,
                authenticated,
                reply_route: plan.reply_route(),
                copies: &copies,
                copy_limit: i64::from(gw.routing.options.copy_queue_limit),
            },
            now,
        )
        .await?;
    let first = match recording {
        PushRecording::Processed {
            user_created,
            copies_dropped,
        } => {
            let account_id = v.account.id.as_str();
            let dropped: Vec<&str> = copies_dropped
                .iter()
                .map(|&i| staged[i].route_id.as_str())
                .collect();
            crate::routes::copies_dropped(gw, account_id, &dropped);
            if dropped.len() < staged.len() {
                gw.wake_copies();
            }
            gw.stats.push(account_id, push_kind(&msg));
            if user_created {
                gw.stats
                    .user_created(account_id, store::end_users::CreatedVia::Push.as_str());
            }
            if matches!(msg.kind, PushKind::Unsubscribe) {
                gw.stats.user_unsubscribed(account_id);
            }
            true
        }
        PushRecording::Retry => {
            // WeChat's retry of a push already processed: counted once, as a duplicate.
            gw.stats.push_duplicate(&v.account.id);
            tracing::debug!(account_id = %v.account.id, "push retry acknowledged without reprocessing");
            false
        }
        PushRecording::NonceReused => return Err(reject(PushRejection::Replay)),
    };
    // A scan of one of the gateway's codes (docs/wechat-2.md §4.3): marks the login and
    // answers the scanner in WeChat. A retry is answered the same way (the mark is
    // idempotent): WeChat shows the reply to the attempt it got an answer to. wxhub's own
    // reply wins over a reply route's (which then gets a copy).
    let own = match msg.qr_scan() {
        Some(scan) => {
            crate::scan::on_qr_scan(gw, &v.account, &msg.from_user, scan, authenticated).await?
        }
        None => None,
    };
    let routed = crate::routes::RoutedPush {
        account: &v.account,
        push_mode: settings.push_mode,
        msg: &msg,
        plain_xml: &plain_xml,
        dedup_key: &record.dedup_key,
        arrived,
    };
    let routed_reply = if first {
        crate::routes::route_first(gw, &routed, plan, own.is_some()).await
    } else if own.is_none() {
        crate::routes::route_retry(gw, &v.account, &record.dedup_key, arrived).await
    } else {
        None
    };
    match (own, routed_reply) {
        (Some(text), _) => {
            let reply = msg.text_reply(&text, gw.clock.now_secs());
            passive_reply(gw, &v, appid, &reply, authenticated)
        }
        (None, Some(reply)) => passive_reply(gw, &v, appid, &reply, authenticated),
        (None, None) => Ok(xml::SUCCESS.to_owned()),
    }
}

/// A passive reply (docs/wechat.md §6.4) as WeChat gets it: encrypted when the push was
/// (safe and compatible mode, §7.4), since a plain reply to an encrypted push is refused in
/// safe mode.
fn passive_reply(
    gw: &Gateway,
    v: &Verified,
    appid: &str,
    reply: &str,
    encrypted: bool,
) -> Result<String, GatewayError> {
    let now = gw.clock.now_secs();
    if !encrypted {
        return Ok(reply.to_owned());
    }
    let key = v.aes_key.as_ref().ok_or(GatewayError::Internal(
        "encrypted push without an EncodingAESKey",
    ))?;
    let key = EncodingAesKey::parse(key.expose())
        .map_err(|_| GatewayError::Internal("stored EncodingAESKey is invalid"))?;
    let crypt = MsgCrypt::new(key, appid);
    Ok(xml::EncryptedReply::seal(&crypt, v.token.expose(), reply, now, &random_alnum(16)).to_xml())
}
