//! The push driver (docs/wechat.md §6.3–§6.5, §7): builds the XML WeChat would POST for a follow, QR
//! follow, scan, unfollow, text message or menu click, signs it (and encrypts it in compatible/safe mode)
//! with the account's push Token and EncodingAESKey, POSTs it to the account's push URL, and
//! records every attempt with its answer, judged by `wechat::xml::parse_reply` plus the rules
//! it leaves to the caller (see `judge`). Replies are read up to `SimLimits::reply_body_bytes`;
//! a longer one is judged invalid.
//!
//! Deliveries use real wall-clock timeouts (the push is real HTTP). An attempt that times out,
//! fails to connect or gets a non-2xx status is retried, up to `push_attempts` in total
//! (§6.4, §12 item 4). A 2xx answer ends the sequence, valid or not: WeChat got an answer and
//! shows the user an error if it is malformed. No lock is held while sending.

use std::time::{Duration, Instant};

use serde::Serialize;
use wechat::crypto::MsgCrypt;
use wechat::push;
use wechat::xml::{self, Reply};

use crate::config::SimConfig;
use crate::model::PushMode;
use crate::state::random_string;

/// What a push is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushEvent {
    Subscribe {
        /// `qrscene_` + scene, for a QR follow.
        qr: Option<(String, String)>,
    },
    Unsubscribe,
    Scan {
        scene: String,
        ticket: String,
    },
    Text {
        content: String,
        msg_id: u64,
    },
    /// A click on a menu button of type `click` (its `key`).
    Click {
        key: String,
    },
}

/// Appends `<Name><![CDATA[value]]></Name>`, splitting any `]]>` across sections.
fn cdata(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push_str("><![CDATA[");
    out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]></");
    out.push_str(name);
    out.push('>');
}

/// The plain message XML (§6.3).
pub(crate) fn message_xml(
    original_id: &str,
    openid: &str,
    create_time: i64,
    event: &PushEvent,
) -> String {
    let mut x = String::from("<xml>");
    cdata(&mut x, "ToUserName", original_id);
    cdata(&mut x, "FromUserName", openid);
    x.push_str(&format!("<CreateTime>{create_time}</CreateTime>"));
    match event {
        PushEvent::Text { content, msg_id } => {
            cdata(&mut x, "MsgType", "text");
            cdata(&mut x, "Content", content);
            x.push_str(&format!("<MsgId>{msg_id}</MsgId>"));
        }
        PushEvent::Subscribe { qr } => {
            cdata(&mut x, "MsgType", "event");
            cdata(&mut x, "Event", "subscribe");
            match qr {
                Some((scene, ticket)) => {
                    cdata(&mut x, "EventKey", &format!("qrscene_{scene}"));
                    cdata(&mut x, "Ticket", ticket);
                }
                None => cdata(&mut x, "EventKey", ""),
            }
        }
        PushEvent::Scan { scene, ticket } => {
            cdata(&mut x, "MsgType", "event");
            cdata(&mut x, "Event", "SCAN");
            cdata(&mut x, "EventKey", scene);
            cdata(&mut x, "Ticket", ticket);
        }
        PushEvent::Unsubscribe => {
            cdata(&mut x, "MsgType", "event");
            cdata(&mut x, "Event", "unsubscribe");
            cdata(&mut x, "EventKey", "");
        }
        PushEvent::Click { key } => {
            cdata(&mut x, "MsgType", "event");
            cdata(&mut x, "Event", "CLICK");
            cdata(&mut x, "EventKey", key);
        }
    }
    x.push_str("</xml>");
    x
}

impl PushEvent {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            PushEvent::Subscribe { .. } => "subscribe",
            PushEvent::Unsubscribe => "unsubscribe",
            PushEvent::Scan { .. } => "SCAN",
            PushEvent::Text { .. } => "text",
            PushEvent::Click { .. } => "CLICK",
        }
    }
}

/// How the answer to one attempt was judged (§6.4, §7.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyCheck {
    /// Whether WeChat would accept the answer.
    pub valid: bool,
    /// `success`, `empty`, `message`, `encrypted`, or `invalid`.
    pub kind: String,
    /// Why it is invalid.
    pub error: Option<String>,
    /// `MsgType` of a passive reply (decrypted when encrypted).
    pub msg_type: Option<String>,
    /// `Content` of a text reply.
    pub content: Option<String>,
}

/// One POST to the push URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    /// 1-based.
    pub attempt: u32,
    /// `timestamp` query parameter (simulator clock, seconds).
    pub timestamp: i64,
    /// `nonce` query parameter.
    pub nonce: String,
    /// `signature` query parameter.
    pub signature: String,
    /// `msg_signature` (compatible and safe modes).
    pub msg_signature: Option<String>,
    /// HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Answer body (lossy UTF-8, capped).
    pub body: Option<String>,
    /// Real elapsed time.
    pub elapsed_ms: u64,
    /// `timeout`, `connect`, or another transport failure.
    pub error: Option<String>,
    /// Judgement of a 2xx answer.
    pub reply: Option<ReplyCheck>,
}

/// A push and all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Id (for `/__sim/deliveries/{id}`).
    pub id: u64,
    /// Account.
    pub appid: String,
    /// Sender's openid.
    pub openid: String,
    /// Simulated person.
    pub user: String,
    /// `subscribe`, `unsubscribe`, `SCAN`, `text` or `CLICK`.
    pub event: String,
    /// Mode used.
    pub mode: PushMode,
    /// Push URL.
    pub url: String,
    /// The plain message XML (before encryption).
    pub message_xml: String,
    /// The body as POSTed.
    pub body: String,
    /// Every attempt, in order.
    pub attempts: Vec<DeliveryAttempt>,
    /// Whether a 2xx answer came.
    pub acknowledged: bool,
    /// Whether that answer was a valid reply (`None` when none came).
    pub reply_valid: Option<bool>,
}

/// Everything a delivery needs, copied out of the state so no lock is held while sending.
pub(crate) struct PushJob {
    pub id: u64,
    pub appid: String,
    pub openid: String,
    pub user: String,
    pub original_id: String,
    pub url: String,
    pub token: String,
    pub mode: PushMode,
    pub crypt: Option<MsgCrypt>,
    pub event: PushEvent,
    pub create_time: i64,
}

/// `MsgType`s of passive replies (§6.4).
pub(crate) const PASSIVE_REPLY_TYPES: &[&str] =
    &["text", "image", "voice", "video", "music", "news"];

fn invalid(e: impl Into<String>) -> ReplyCheck {
    ReplyCheck {
        valid: false,
        kind: "invalid".into(),
        error: Some(e.into()),
        msg_type: None,
        content: None,
    }
}

fn acknowledged(kind: &str) -> ReplyCheck {
    ReplyCheck {
        valid: true,
        kind: kind.into(),
        error: None,
        msg_type: None,
        content: None,
    }
}

/// Judges a 2xx answer the way WeChat would (§6.4, §6.5, §7.4). `wechat::xml::parse_reply`
/// classifies and decrypts; the simulator then applies the rules it leaves to the caller:
/// encrypted replies only in compatible/safe mode, a plain passive reply not in safe mode,
/// To/From swapped, `MsgType` a passive-reply type, and a text reply with non-empty `Content`
/// (§6.4: acknowledge with `success` or zero bytes, "not an XML with empty Content").
fn judge(job: &PushJob, body: &[u8]) -> ReplyCheck {
    let crypto = job.crypt.as_ref().map(|c| (c, job.token.as_str()));
    let check_message = |m: &xml::ReplyMessage, kind: &str| {
        // §6.4: a passive reply swaps To/From.
        if m.to_user != job.openid || m.from_user != job.original_id {
            return invalid(format!(
                "{kind} reply must have ToUserName = the user's openid and FromUserName = {}",
                job.original_id
            ));
        }
        if !PASSIVE_REPLY_TYPES.contains(&m.msg_type.as_str()) {
            return invalid(format!(
                "MsgType {:?} is not a passive reply type ({})",
                m.msg_type,
                PASSIVE_REPLY_TYPES.join(", ")
            ));
        }
        if m.msg_type == "text" && m.content.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return invalid(
                "a text reply with empty Content is invalid; acknowledge with success or an \
                 empty body (§6.4)",
            );
        }
        ReplyCheck {
            valid: true,
            kind: kind.into(),
            error: None,
            msg_type: Some(m.msg_type.clone()),
            content: m.content.clone(),
        }
    };
    match xml::parse_reply(body, crypto) {
        Ok(Reply::Success) => acknowledged("success"),
        Ok(Reply::Empty) => acknowledged("empty"),
        Ok(Reply::Message(_)) if job.mode == PushMode::Safe => {
            invalid("safe mode: a reply other than success/empty must be encrypted (§6.5)")
        }
        Ok(Reply::Message(m)) => check_message(&m, "message"),
        Ok(Reply::Encrypted { .. }) if job.mode == PushMode::Plain => {
            invalid("plain mode: encrypted replies belong to compatible and safe modes (§6.5)")
        }
        Ok(Reply::Encrypted {
            message: Some(m), ..
        }) => check_message(&m, "encrypted"),
        Ok(Reply::Encrypted { message: None, .. }) => {
            invalid("encrypted reply but the account has no EncodingAESKey")
        }
        Err(e) => invalid(e.to_string()),
    }
}

/// Reads at most `cap + 1` bytes of the answer, chunk by chunk; `Ok((bytes, true))` when the
/// body is longer than `cap` (the rest is never read).
async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap.saturating_add(1).saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > cap {
            out.truncate(cap);
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

fn nonce() -> String {
    random_string(b"0123456789", 10)
}

/// The URL signature of a request WeChat sends now (§6.2, §6.3): the simulator clock's
/// seconds, a fresh nonce, and `sha1(sort(token, timestamp, nonce))`.
pub(crate) struct Signed {
    /// `timestamp` (simulator clock, seconds).
    pub timestamp: i64,
    /// `timestamp` as sent.
    pub ts: String,
    /// `nonce`.
    pub nonce: String,
    /// `signature`.
    pub signature: String,
}

impl Signed {
    pub(crate) fn now(cfg: &SimConfig, token: &str) -> Self {
        let timestamp = cfg.now_secs();
        let ts = timestamp.to_string();
        let nonce = nonce();
        let signature = push::signature(token, &ts, &nonce);
        Self {
            timestamp,
            ts,
            nonce,
            signature,
        }
    }
}

/// What one request to a push URL got back.
pub(crate) struct Exchange {
    /// HTTP status, when an answer came.
    pub status: Option<reqwest::StatusCode>,
    /// The body read (at most `limits.reply_body_bytes`).
    pub body: Option<Vec<u8>>,
    /// Whether the body was longer than that (the rest was not read).
    pub oversized: bool,
    /// `timeout`, `connect`, or another transport failure.
    pub error: Option<String>,
    /// Real time from sending to the end of the body.
    pub elapsed: Duration,
}

/// Sends one request to a push URL with the push timeout (§6.4) and reads the answer, capped.
/// Pushes and URL probes (§3.7) share it, so both see a server the same way.
pub(crate) async fn exchange(cfg: &SimConfig, request: reqwest::RequestBuilder) -> Exchange {
    let started = Instant::now();
    let mut out = Exchange {
        status: None,
        body: None,
        oversized: false,
        error: None,
        elapsed: Duration::ZERO,
    };
    match request.timeout(cfg.push_timeout).send().await {
        Ok(mut resp) => {
            out.status = Some(resp.status());
            match read_capped(&mut resp, cfg.limits.reply_body_bytes).await {
                Ok((bytes, oversized)) => {
                    out.body = Some(bytes);
                    out.oversized = oversized;
                }
                Err(e) => out.error = Some(describe(e)),
            }
        }
        Err(e) => out.error = Some(describe(e)),
    }
    out.elapsed = started.elapsed();
    out
}

/// Sends the push, retrying as §6.4 says, and returns the record.
pub(crate) async fn deliver(http: &reqwest::Client, cfg: &SimConfig, job: PushJob) -> Delivery {
    let plain = message_xml(&job.original_id, &job.openid, job.create_time, &job.event);
    // One ciphertext for all attempts: a retry is the same push (§6.4).
    let encrypt = match (job.mode, &job.crypt) {
        (PushMode::Plain, _) | (_, None) => None,
        (_, Some(c)) => Some(c.encrypt(&plain)),
    };
    let body = match (job.mode, &encrypt) {
        (PushMode::Compatible, Some(e)) => {
            let mut b = plain.trim_end_matches("</xml>").to_owned();
            cdata(&mut b, "Encrypt", e);
            b.push_str("</xml>");
            b
        }
        (PushMode::Safe, Some(e)) => {
            let mut b = String::from("<xml>");
            cdata(&mut b, "ToUserName", &job.original_id);
            cdata(&mut b, "Encrypt", e);
            b.push_str("</xml>");
            b
        }
        _ => plain.clone(),
    };
    let mut attempts = Vec::new();
    let mut acknowledged = false;
    let mut reply_valid = None;
    for attempt in 1..=cfg.push_attempts.max(1) {
        let signed = Signed::now(cfg, &job.token);
        let msg_signature = encrypt
            .as_ref()
            .map(|e| push::msg_signature(&job.token, &signed.ts, &signed.nonce, e));
        let mut query: Vec<(&str, &str)> = vec![
            ("signature", &signed.signature),
            ("timestamp", &signed.ts),
            ("nonce", &signed.nonce),
            ("openid", &job.openid),
        ];
        if let Some(ms) = &msg_signature {
            query.push(("encrypt_type", "aes"));
            query.push(("msg_signature", ms));
        }
        let request = http
            .post(&job.url)
            .query(&query)
            .header("content-type", "text/xml; charset=utf-8")
            .body(body.clone());
        let answer = exchange(cfg, request).await;
        let mut rec = DeliveryAttempt {
            attempt,
            timestamp: signed.timestamp,
            nonce: signed.nonce,
            signature: signed.signature,
            msg_signature,
            status: answer.status.map(|s| s.as_u16()),
            body: answer
                .body
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            elapsed_ms: u64::try_from(answer.elapsed.as_millis()).unwrap_or(u64::MAX),
            error: answer.error,
            reply: None,
        };
        // Timeouts, connection failures, unreadable bodies and non-2xx answers are retried.
        let retry = match (answer.status, &answer.body) {
            (Some(status), Some(bytes)) if rec.error.is_none() && status.is_success() => {
                let cap = cfg.limits.reply_body_bytes;
                let check = if answer.oversized {
                    invalid(format!("reply body exceeds {cap} bytes"))
                } else {
                    judge(&job, bytes)
                };
                acknowledged = true;
                reply_valid = Some(check.valid);
                rec.reply = Some(check);
                false
            }
            _ => true,
        };
        // Never the URL's query or the body: they carry signatures and user content.
        tracing::debug!(
            appid = %job.appid,
            delivery = job.id,
            attempt,
            status = rec.status,
            error = rec.error.as_deref(),
            elapsed_ms = rec.elapsed_ms,
            "push attempt"
        );
        attempts.push(rec);
        if !retry {
            break;
        }
    }
    Delivery {
        id: job.id,
        appid: job.appid,
        openid: job.openid,
        user: job.user,
        event: job.event.name().into(),
        mode: job.mode,
        url: job.url,
        message_xml: plain,
        body,
        attempts,
        acknowledged,
        reply_valid,
    }
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        format!("transport: {}", e.without_url())
    }
}
