//! Push XML: parsing what WeChat POSTs to a push URL, and building (and checking) replies
//! (docs/wechat.md §6.3–§6.5, §7.4).
//!
//! The parser reads untrusted bytes from the internet, so it is deliberately narrow:
//! - a hard size cap ([`MAX_PUSH_BYTES`]) checked before any parsing;
//! - UTF-8 only; any `<!DOCTYPE` is refused outright, so no entity can be declared, and only the
//!   five predefined entities and numeric character references are resolved;
//! - a nesting-depth cap ([`MAX_DEPTH`]) and a field-count cap ([`MAX_FIELDS`]);
//! - the root must be `<xml>`; a top-level element appearing twice is an error (WeChat never
//!   repeats one, and "first wins" vs "last wins" ambiguity is a classic smuggling vector);
//! - unknown elements are kept, not rejected, so new WeChat fields never break a push.
//!
//! It never panics on any input (there is a property test and a fuzz target for that).

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::api::QR_SCENE_PREFIX;
use crate::crypto::{CryptoError, MsgCrypt};
use crate::push;

/// Largest push or reply body accepted (64 KiB). Real pushes are well under 4 KiB; compatible
/// mode roughly triples that (§6.5).
pub const MAX_PUSH_BYTES: usize = 64 * 1024;
/// Deepest element nesting accepted, counting `<xml>` as 1. WeChat's deepest known events
/// (e.g. `SendPicsInfo/PicList/item/PicMd5Sum`) need 4.
pub const MAX_DEPTH: usize = 8;
/// Most leaf fields accepted in one document.
pub const MAX_FIELDS: usize = 512;

/// The acknowledgement body that tells WeChat "received, no reply" (§6.4).
pub const SUCCESS: &str = "success";

/// Why a push or reply body was refused. Messages never include secrets; they may quote an
/// element name from the input, truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The body exceeds the size cap.
    #[error("body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Body length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
    /// The body declares a DOCTYPE (refused to rule out entity expansion attacks).
    #[error("DOCTYPE declarations are not accepted")]
    Doctype,
    /// An entity other than the five predefined ones (`&lt;` `&gt;` `&amp;` `&apos;` `&quot;`).
    #[error("undeclared entity reference &{name};")]
    UnknownEntity {
        /// The entity name (truncated).
        name: String,
    },
    /// Elements nest deeper than the cap.
    #[error("elements nest deeper than {max} levels")]
    TooDeep {
        /// The cap.
        max: usize,
    },
    /// More leaf fields than the cap.
    #[error("more than {max} fields")]
    TooManyFields {
        /// The cap.
        max: usize,
    },
    /// The body is not well-formed XML.
    #[error("malformed XML: {detail}")]
    Malformed {
        /// What the parser objected to (truncated).
        detail: String,
    },
    /// The root element is not `<xml>`.
    #[error("root element is <{found}>, expected <xml>")]
    WrongRoot {
        /// The root element's name (truncated).
        found: String,
    },
    /// A required element is absent.
    #[error("required field {field} is missing")]
    MissingField {
        /// The element name.
        field: &'static str,
    },
    /// A top-level element appears more than once.
    #[error("field {field} appears more than once")]
    DuplicateField {
        /// The element name (truncated).
        field: String,
    },
    /// A field's value has the wrong form (e.g. a non-numeric `CreateTime`).
    #[error("field {field} is invalid: {reason}")]
    InvalidField {
        /// The element name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A reply body is none of: `success`, empty, a reply message, an encrypted envelope.
    #[error("not a valid push reply: {reason}")]
    InvalidReply {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An encrypted reply's `MsgSignature` does not match.
    #[error("encrypted reply has a wrong MsgSignature")]
    BadSignature,
    /// An encrypted reply could not be decrypted.
    #[error("encrypted reply could not be decrypted: {0}")]
    Crypto(#[from] CryptoError),
}

fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The leaf elements of a document, in document order, as `(path, text)`. Paths below the root
/// join element names with `/` (`SendPicsInfo/PicList/item/PicMd5Sum`); the root is omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The text of the first field at `path`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, value)| value.as_str())
    }

    /// Every `(path, text)` pair in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn required(&self, field: &'static str) -> Result<&str, XmlError> {
        self.get(field).ok_or(XmlError::MissingField { field })
    }

    fn non_empty(&self, field: &'static str) -> Option<&str> {
        self.get(field).filter(|v| !v.is_empty())
    }
}

/// Parses `body` into its leaf fields, enforcing every rule in the module docs.
pub fn parse_fields(body: &[u8]) -> Result<Fields, XmlError> {
    if body.len() > MAX_PUSH_BYTES {
        return Err(XmlError::TooLarge {
            len: body.len(),
            max: MAX_PUSH_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;

    struct Open {
        name: String,
        text: String,
        has_children: bool,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut top_level_seen: Vec<String> = Vec::new();
    let mut root_done = false;

    let malformed = |e: &dyn std::fmt::Display| XmlError::Malformed {
        detail: truncated(&e.to_string()),
    };

    // Records a finished leaf (or a non-empty text of a parent) under its full path.
    fn record(
        stack: &[Open],
        name: &str,
        value: String,
        fields: &mut Vec<(String, String)>,
        top_level_seen: &mut Vec<String>,
    ) -> Result<(), XmlError> {
        if stack.len() == 1 {
            if top_level_seen.iter().any(|n| n == name) {
                return Err(XmlError::DuplicateField {
                    field: truncated(name),
                });
            }
            top_level_seen.push(name.to_owned());
        }
        if fields.len() >= MAX_FIELDS {
            return Err(XmlError::TooManyFields { max: MAX_FIELDS });
        }
        let mut path = String::new();
        for open in stack.iter().skip(1) {
            path.push_str(&open.name);
            path.push('/');
        }
        path.push_str(name);
        fields.push((path, value));
        Ok(())
    }

    loop {
        match reader.read_event().map_err(|e| malformed(&e))? {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Start(start) => {
                let name = start.name().as_ref().to_owned();
                if stack.is_empty() {
                    if root_done {
                        return Err(XmlError::Malformed {
                            detail: "more than one root element".into(),
                        });
                    }
                    if name != "xml" {
                        return Err(XmlError::WrongRoot {
                            found: truncated(&name),
                        });
                    }
                } else if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { max: MAX_DEPTH });
                }
                if let Some(parent) = stack.last_mut() {
                    parent.has_children = true;
                }
                stack.push(Open {
                    name,
                    text: String::new(),
                    has_children: false,
                });
            }
            Event::Empty(start) => {
                let name = start.name().as_ref().to_owned();
                if stack.is_empty() {
                    if root_done {
                        return Err(XmlError::Malformed {
                            detail: "more than one root element".into(),
                        });
                    }
                    if name != "xml" {
                        return Err(XmlError::WrongRoot {
                            found: truncated(&name),
                        });
                    }
                    root_done = true;
                    continue;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { max: MAX_DEPTH });
                }
                if let Some(parent) = stack.last_mut() {
                    parent.has_children = true;
                }
                record(
                    &stack,
                    &name,
                    String::new(),
                    &mut fields,
                    &mut top_level_seen,
                )?;
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches the open one.
                let open = stack.pop().ok_or_else(|| XmlError::Malformed {
                    detail: "unmatched end tag".into(),
                })?;
                if stack.is_empty() {
                    root_done = true;
                } else if !open.has_children || !open.text.trim().is_empty() {
                    record(
                        &stack,
                        &open.name,
                        open.text,
                        &mut fields,
                        &mut top_level_seen,
                    )?;
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(open) => open.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => {
                        return Err(XmlError::Malformed {
                            detail: "text outside the root element".into(),
                        });
                    }
                }
            }
            Event::CData(c) => match stack.last_mut() {
                Some(open) => open.text.push_str(&c.xml10_content()),
                None => {
                    return Err(XmlError::Malformed {
                        detail: "CDATA outside the root element".into(),
                    });
                }
            },
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref().map_err(|e| malformed(&e))? {
                    Some(ch) => ch,
                    None => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => {
                            return Err(XmlError::UnknownEntity {
                                name: truncated(other),
                            });
                        }
                    },
                };
                match stack.last_mut() {
                    Some(open) => open.text.push(ch),
                    None => {
                        return Err(XmlError::Malformed {
                            detail: "reference outside the root element".into(),
                        });
                    }
                }
            }
            // The declaration, comments and processing instructions carry no data for us.
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed {
            detail: "unclosed element".into(),
        });
    }
    if !root_done {
        return Err(XmlError::Malformed {
            detail: "no root element".into(),
        });
    }
    Ok(Fields(fields))
}

/// What a push is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushKind {
    /// The user followed the account (§6.3). When the follow came through a parametric QR
    /// code the `EventKey` is `qrscene_<scene>` (docs/wechat-2.md §3.1) and `event_key` is the
    /// scene with the prefix removed; otherwise (an empty or absent `EventKey`, or one without
    /// the prefix, which no QR follow has) it is `None`. The raw value stays in
    /// [`PushMessage::event_key`]; [`PushMessage::qr_scan`] applies the whole matching rule.
    Subscribe {
        /// Scene of the QR code that led to the follow, without `qrscene_`.
        event_key: Option<String>,
        /// QR code ticket, when followed via a QR code.
        ticket: Option<String>,
    },
    /// An existing follower scanned a parametric QR code; `event_key` is the scene, bare
    /// (docs/wechat-2.md §3.1: no prefix on `SCAN`).
    Scan {
        /// Scene value.
        event_key: String,
        /// QR code ticket.
        ticket: Option<String>,
    },
    /// The user unfollowed the account.
    Unsubscribe,
    /// A text message from the user.
    Text {
        /// The message text.
        content: String,
        /// WeChat's 64-bit message id.
        msg_id: Option<u64>,
    },
    /// Any other event (`CLICK`, `VIEW`, `LOCATION`, ...); details are in [`PushMessage::fields`].
    OtherEvent {
        /// The `Event` value.
        event: String,
    },
    /// Any other message type (`image`, `voice`, ...); details are in [`PushMessage::fields`].
    OtherMessage {
        /// The `MsgType` value.
        msg_type: String,
    },
}

/// A scan of a parametric QR code, recognised by the rule of docs/wechat-2.md §4.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QrScan<'a> {
    /// `true` for `subscribe` (the scanner followed through the code; their `EventKey` was
    /// `qrscene_<scene>`), `false` for `SCAN` (a follower; the bare scene).
    pub new_follower: bool,
    /// The scene: the decimal `scene_id` or the exact `scene_str`, never with `qrscene_`.
    pub scene: &'a str,
    /// The `Ticket`, exactly as `qrcode/create` returned it: match on it first (§4.3).
    pub ticket: &'a str,
}

/// A decoded plain (or compatible-mode) push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The account's original id (`gh_...`).
    pub to_user: String,
    /// The sender's openid.
    pub from_user: String,
    /// Unix seconds.
    pub create_time: i64,
    /// The typed content.
    pub kind: PushKind,
    /// In compatible mode the body also carries the encrypted copy (§6.5).
    pub encrypt: Option<String>,
    /// Every leaf field of the body, so nothing WeChat sends is lost.
    pub fields: Fields,
}

/// A safe-mode push: only the account id and the encrypted message (§6.5, §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedPush {
    /// The account's original id (`gh_...`).
    pub to_user: String,
    /// Base64 ciphertext, exactly as in the XML (it is what `msg_signature` covers).
    pub encrypt: String,
}

/// A push body as received: plain/compatible, or safe-mode encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushBody {
    /// Plain or compatible mode: the message is readable (compatible mode also has `encrypt`).
    Message(PushMessage),
    /// Safe mode: verify `msg_signature`, decrypt `encrypt`, then [`parse_message`] the result.
    Encrypted(EncryptedPush),
}

/// Parses a push body as received on the push URL.
pub fn parse_push(body: &[u8]) -> Result<PushBody, XmlError> {
    let fields = parse_fields(body)?;
    if fields.get("MsgType").is_none()
        && let Some(encrypt) = fields.get("Encrypt")
    {
        return Ok(PushBody::Encrypted(EncryptedPush {
            to_user: fields.required("ToUserName")?.to_owned(),
            encrypt: encrypt.to_owned(),
        }));
    }
    message_from_fields(fields).map(PushBody::Message)
}

/// Parses a complete message: a plain push, or the decrypted content of a safe-mode one.
pub fn parse_message(body: &[u8]) -> Result<PushMessage, XmlError> {
    message_from_fields(parse_fields(body)?)
}

fn parse_create_time(fields: &Fields) -> Result<i64, XmlError> {
    fields
        .required("CreateTime")?
        .trim()
        .parse::<i64>()
        .map_err(|_| XmlError::InvalidField {
            field: "CreateTime",
            reason: "not an integer",
        })
}

fn parse_msg_id(fields: &Fields) -> Result<Option<u64>, XmlError> {
    fields
        .non_empty("MsgId")
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| XmlError::InvalidField {
                field: "MsgId",
                reason: "not a 64-bit integer",
            })
        })
        .transpose()
}

fn message_from_fields(fields: Fields) -> Result<PushMessage, XmlError> {
    let to_user = fields.required("ToUserName")?.to_owned();
    let from_user = fields.required("FromUserName")?.to_owned();
    let create_time = parse_create_time(&fields)?;
    let msg_type = fields.required("MsgType")?;
    let msg_id = parse_msg_id(&fields)?;
    let kind = if msg_type == "event" {
        let event = fields.required("Event")?;
        let event_key = fields.non_empty("EventKey");
        let ticket = fields.non_empty("Ticket").map(str::to_owned);
        if event.eq_ignore_ascii_case("subscribe") {
            PushKind::Subscribe {
                // §6.3, docs/wechat-2.md §3.1: a follow through a parametric QR code carries
                // `qrscene_<scene>`; a key without the prefix is no QR scene.
                event_key: event_key
                    .and_then(|k| k.strip_prefix(QR_SCENE_PREFIX))
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
                ticket,
            }
        } else if event.eq_ignore_ascii_case("unsubscribe") {
            PushKind::Unsubscribe
        } else if event.eq_ignore_ascii_case("SCAN") {
            PushKind::Scan {
                event_key: event_key
                    .ok_or(XmlError::MissingField { field: "EventKey" })?
                    .to_owned(),
                ticket,
            }
        } else {
            PushKind::OtherEvent {
                event: event.to_owned(),
            }
        }
    } else if msg_type == "text" {
        PushKind::Text {
            content: fields.required("Content")?.to_owned(),
            msg_id,
        }
    } else {
        PushKind::OtherMessage {
            msg_type: msg_type.to_owned(),
        }
    };
    Ok(PushMessage {
        to_user,
        from_user,
        create_time,
        kind,
        encrypt: fields.get("Encrypt").map(str::to_owned),
        fields,
    })
}

impl PushMessage {
    /// `MsgType` as sent (`text`, `event`, ...).
    pub fn msg_type(&self) -> &str {
        self.fields.get("MsgType").unwrap_or_default()
    }

    /// `Event` as sent, for event pushes.
    pub fn event(&self) -> Option<&str> {
        self.fields.get("Event")
    }

    /// `EventKey` as sent: `qrscene_<scene>` on a QR follow, the bare scene on `SCAN`
    /// (docs/wechat-2.md §3.1); `None` when absent or empty.
    pub fn event_key(&self) -> Option<&str> {
        self.fields.non_empty("EventKey")
    }

    /// `Ticket` as sent; present only on pushes caused by a QR scan (docs/wechat-2.md §3.2).
    pub fn ticket(&self) -> Option<&str> {
        self.fields.non_empty("Ticket")
    }

    /// The QR scan this push reports, by the rule of docs/wechat-2.md §4.3: a `subscribe`
    /// whose `EventKey` starts with `qrscene_`, or a `SCAN` (any case), each with a `Ticket`
    /// and a non-empty scene. `None` for everything else (plain follows among them).
    pub fn qr_scan(&self) -> Option<QrScan<'_>> {
        let ticket = self.ticket()?;
        let (new_follower, scene) = match &self.kind {
            PushKind::Subscribe {
                event_key: Some(_), ..
            } => (true, self.event_key()?.strip_prefix(QR_SCENE_PREFIX)?),
            PushKind::Scan { event_key, .. } => (false, event_key.as_str()),
            _ => return None,
        };
        Some(QrScan {
            new_follower,
            scene,
            ticket,
        })
    }

    /// WeChat's `MsgId`, present on ordinary messages.
    pub fn msg_id(&self) -> Option<u64> {
        parse_msg_id(&self.fields).ok().flatten()
    }

    /// The key under which retries of this push are deduplicated (§6.4): `msg:<MsgId>` for
    /// messages; for events `evt:<FromUserName>:<CreateTime>:<Event>` — the event name is
    /// included so two different events of one user in the same second do not collide.
    pub fn dedup_key(&self) -> String {
        match self.msg_id() {
            Some(id) => format!("msg:{id}"),
            None => format!(
                "evt:{}:{}:{}",
                self.from_user,
                self.create_time,
                self.event().unwrap_or(self.msg_type())
            ),
        }
    }

    /// A passive text reply to this push: To/From swapped (§6.4).
    pub fn text_reply(&self, content: &str, create_time: i64) -> String {
        text_reply(&self.from_user, &self.to_user, create_time, content)
    }
}

/// Appends `value` as CDATA. `]]>` cannot appear inside a CDATA section, so it is split across
/// two sections; characters XML 1.0 forbids (most C0 controls) are dropped because WeChat
/// rejects a reply that is not well-formed.
fn push_cdata(out: &mut String, value: &str) {
    // Filter first: dropping a character between `]]` and `>` would otherwise create a `]]>`
    // after the split below had already looked for one.
    let mut clean = String::with_capacity(value.len());
    push_xml_chars(&mut clean, value);
    out.push_str("<![CDATA[");
    let mut rest = clean.as_str();
    while let Some(pos) = rest.find("]]>") {
        out.push_str(&rest[..pos + 2]);
        out.push_str("]]><![CDATA[>");
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    out.push_str("]]>");
}

fn push_xml_chars(out: &mut String, s: &str) {
    out.extend(s.chars().filter(|&c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }));
}

/// A passive text reply (§6.4): `to_user` is the user's openid, `from_user` the account's
/// `gh_` id.
pub fn text_reply(to_user: &str, from_user: &str, create_time: i64, content: &str) -> String {
    let mut out = String::with_capacity(160 + content.len());
    out.push_str("<xml><ToUserName>");
    push_cdata(&mut out, to_user);
    out.push_str("</ToUserName><FromUserName>");
    push_cdata(&mut out, from_user);
    let _ = write!(out, "</FromUserName><CreateTime>{create_time}</CreateTime>");
    out.push_str("<MsgType><![CDATA[text]]></MsgType><Content>");
    push_cdata(&mut out, content);
    out.push_str("</Content></xml>");
    out
}

/// The safe-mode reply envelope (§7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedReply {
    /// Base64 ciphertext of the reply XML.
    pub encrypt: String,
    /// `sha1(sort(token, timestamp, nonce, encrypt))`.
    pub msg_signature: String,
    /// Chosen by the replier (Unix seconds, as text).
    pub timestamp: String,
    /// Chosen by the replier.
    pub nonce: String,
}

impl EncryptedReply {
    /// Encrypts `reply_xml` and signs it with the push `token` (§7.4).
    pub fn seal(
        crypt: &MsgCrypt,
        token: &str,
        reply_xml: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Self {
        let encrypt = crypt.encrypt(reply_xml);
        let timestamp = timestamp.to_string();
        let msg_signature = push::msg_signature(token, &timestamp, nonce, &encrypt);
        Self {
            encrypt,
            msg_signature,
            timestamp,
            nonce: nonce.to_owned(),
        }
    }

    /// The XML body.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(200 + self.encrypt.len());
        out.push_str("<xml><Encrypt>");
        push_cdata(&mut out, &self.encrypt);
        out.push_str("</Encrypt><MsgSignature>");
        push_cdata(&mut out, &self.msg_signature);
        out.push_str("</MsgSignature><TimeStamp>");
        push_xml_chars(
            &mut out,
            &quick_xml::escape::escape(self.timestamp.as_str()),
        );
        out.push_str("</TimeStamp><Nonce>");
        push_cdata(&mut out, &self.nonce);
        out.push_str("</Nonce></xml>");
        out
    }

    /// Checks the signature with `token` and decrypts the reply XML.
    pub fn open(&self, crypt: &MsgCrypt, token: &str) -> Result<String, XmlError> {
        if !push::verify_msg_signature(
            token,
            &self.timestamp,
            &self.nonce,
            &self.encrypt,
            &self.msg_signature,
        ) {
            return Err(XmlError::BadSignature);
        }
        Ok(crypt.decrypt(&self.encrypt)?)
    }
}

/// A passive reply message as WeChat would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMessage {
    /// The user's openid.
    pub to_user: String,
    /// The account's `gh_` id.
    pub from_user: String,
    /// Unix seconds.
    pub create_time: i64,
    /// `text`, `image`, `news`, ...
    pub msg_type: String,
    /// `Content` of a text reply.
    pub content: Option<String>,
    /// Every leaf field.
    pub fields: Fields,
}

/// What a push URL answered, classified the way WeChat treats it (§6.4, §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The body `success`: acknowledged, nothing shown to the user.
    Success,
    /// A zero-byte body: acknowledged, nothing shown to the user.
    Empty,
    /// A plain passive reply.
    Message(ReplyMessage),
    /// An encrypted envelope; `message` is its verified, decrypted content when a key was given.
    Encrypted {
        /// The envelope as received.
        envelope: EncryptedReply,
        /// The decrypted reply, when [`parse_reply`] was given the account's crypter and token.
        message: Option<ReplyMessage>,
    },
}

/// Classifies and validates what a push URL answered. With `crypto = Some((crypt, token))`, an
/// encrypted envelope's signature is verified and its content decrypted and parsed.
pub fn parse_reply(body: &[u8], crypto: Option<(&MsgCrypt, &str)>) -> Result<Reply, XmlError> {
    if body.is_empty() {
        return Ok(Reply::Empty);
    }
    if body == SUCCESS.as_bytes() {
        return Ok(Reply::Success);
    }
    let fields = parse_fields(body)?;
    if let Some(encrypt) = fields.get("Encrypt") {
        let envelope = EncryptedReply {
            encrypt: encrypt.to_owned(),
            msg_signature: fields.required("MsgSignature")?.to_owned(),
            timestamp: fields.required("TimeStamp")?.trim().to_owned(),
            nonce: fields.required("Nonce")?.to_owned(),
        };
        let message = match crypto {
            Some((crypt, token)) => {
                let inner = envelope.open(crypt, token)?;
                Some(reply_message(parse_fields(inner.as_bytes())?)?)
            }
            None => None,
        };
        return Ok(Reply::Encrypted { envelope, message });
    }
    Ok(Reply::Message(reply_message(fields)?))
}

fn reply_message(fields: Fields) -> Result<ReplyMessage, XmlError> {
    let msg_type = fields.required("MsgType")?.to_owned();
    let content = fields.get("Content").map(str::to_owned);
    if msg_type == "text" && content.is_none() {
        return Err(XmlError::MissingField { field: "Content" });
    }
    Ok(ReplyMessage {
        to_user: fields.required("ToUserName")?.to_owned(),
        from_user: fields.required("FromUserName")?.to_owned(),
        create_time: parse_create_time(&fields)?,
        msg_type,
        content,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::EncodingAesKey;
    use proptest::prelude::*;

    const TEXT: &str = "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[oUSER]]></FromUserName>\n<CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[this is a test]]></Content><MsgId>1234567890123456</MsgId>\n<MsgDataId>xxxx</MsgDataId><Idx>xxxx</Idx></xml>";

    fn event(event: &str, extra: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[oUSER]]></FromUserName>\
             <CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{extra}</xml>"
        )
    }

    fn message(body: &str) -> PushMessage {
        match parse_push(body.as_bytes()).unwrap() {
            PushBody::Message(m) => m,
            other => panic!("expected a plain message, got {other:?}"),
        }
    }

    #[test]
    fn text_message_from_spec_6_3_parses() {
        let m = message(TEXT);
        assert_eq!(m.to_user, "gh_123");
        assert_eq!(m.from_user, "oUSER");
        assert_eq!(m.create_time, 1_348_831_860);
        assert_eq!(
            m.kind,
            PushKind::Text {
                content: "this is a test".into(),
                msg_id: Some(1_234_567_890_123_456)
            }
        );
        assert_eq!(m.fields.get("MsgDataId"), Some("xxxx"));
        assert_eq!(m.dedup_key(), "msg:1234567890123456");
    }

    #[test]
    fn plain_subscribe_has_no_scene() {
        let m = message(&event("subscribe", "<EventKey><![CDATA[]]></EventKey>"));
        assert_eq!(
            m.kind,
            PushKind::Subscribe {
                event_key: None,
                ticket: None
            }
        );
        let m = message(&event("subscribe", ""));
        assert!(matches!(
            m.kind,
            PushKind::Subscribe {
                event_key: None,
                ..
            }
        ));
    }

    #[test]
    fn qr_subscribe_strips_the_qrscene_prefix() {
        let m = message(&event(
            "subscribe",
            "<EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>",
        ));
        assert_eq!(
            m.kind,
            PushKind::Subscribe {
                event_key: Some("123123".into()),
                ticket: Some("TICKET".into())
            }
        );
    }

    #[test]
    fn qr_follow_and_follower_scan_are_recognised_by_the_matching_rule() {
        // docs/wechat-2.md §3.2's two examples.
        let sub = message(&event(
            "subscribe",
            "<EventKey><![CDATA[qrscene_l:Zq3vX0aW9r1bLkTt2mQe8w]]></EventKey>\
             <Ticket><![CDATA[gQFY8TwAAAAA...]]></Ticket>",
        ));
        assert_eq!(sub.event_key(), Some("qrscene_l:Zq3vX0aW9r1bLkTt2mQe8w"));
        assert_eq!(sub.ticket(), Some("gQFY8TwAAAAA..."));
        assert_eq!(
            sub.qr_scan(),
            Some(QrScan {
                new_follower: true,
                scene: "l:Zq3vX0aW9r1bLkTt2mQe8w",
                ticket: "gQFY8TwAAAAA..."
            })
        );
        for name in ["SCAN", "scan", "Scan"] {
            let scan = message(&event(
                name,
                "<EventKey><![CDATA[l:Zq3vX0aW9r1bLkTt2mQe8w]]></EventKey>\
                 <Ticket><![CDATA[gQFY8TwAAAAA...]]></Ticket>",
            ));
            assert_eq!(
                scan.qr_scan(),
                Some(QrScan {
                    new_follower: false,
                    scene: "l:Zq3vX0aW9r1bLkTt2mQe8w",
                    ticket: "gQFY8TwAAAAA..."
                })
            );
        }
        // A lenient create's scene 0 (§1.4) is still a scene.
        let zero = message(&event(
            "subscribe",
            "<EventKey><![CDATA[qrscene_0]]></EventKey><Ticket><![CDATA[T]]></Ticket>",
        ));
        assert_eq!(zero.qr_scan().map(|q| q.scene), Some("0"));
    }

    #[test]
    fn pushes_that_are_not_qr_scans_are_not_taken_for_one() {
        for (extra, scene) in [
            // a plain follow: no key, no ticket
            ("", None),
            ("<EventKey><![CDATA[]]></EventKey>", None),
            // a QR-shaped key without its ticket
            ("<EventKey><![CDATA[qrscene_42]]></EventKey>", Some("42")),
            // a key without the prefix is no QR follow, ticket or not
            (
                "<EventKey><![CDATA[42]]></EventKey><Ticket><![CDATA[T]]></Ticket>",
                None,
            ),
            // the prefix and nothing else
            (
                "<EventKey><![CDATA[qrscene_]]></EventKey><Ticket><![CDATA[T]]></Ticket>",
                None,
            ),
        ] {
            let m = message(&event("subscribe", extra));
            assert_eq!(m.qr_scan(), None, "{extra}");
            let PushKind::Subscribe { event_key, .. } = &m.kind else {
                panic!("{extra}: {:?}", m.kind);
            };
            assert_eq!(event_key.as_deref(), scene, "{extra}");
        }
        let scan_without_ticket = message(&event("SCAN", "<EventKey><![CDATA[42]]></EventKey>"));
        assert_eq!(scan_without_ticket.qr_scan(), None);
        let unsubscribe = message(&event(
            "unsubscribe",
            "<EventKey><![CDATA[qrscene_42]]></EventKey><Ticket><![CDATA[T]]></Ticket>",
        ));
        assert_eq!(unsubscribe.qr_scan(), None);
    }

    #[test]
    fn scan_keeps_the_scene_as_sent() {
        let m = message(&event(
            "SCAN",
            "<EventKey><![CDATA[123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket>",
        ));
        assert_eq!(
            m.kind,
            PushKind::Scan {
                event_key: "123123".into(),
                ticket: Some("TICKET".into())
            }
        );
    }

    #[test]
    fn events_dedup_on_sender_time_and_event() {
        let sub = message(&event("subscribe", ""));
        let unsub = message(&event("unsubscribe", ""));
        assert_eq!(unsub.kind, PushKind::Unsubscribe);
        assert_eq!(sub.dedup_key(), "evt:oUSER:123456789:subscribe");
        assert_ne!(sub.dedup_key(), unsub.dedup_key());
    }

    #[test]
    fn unknown_events_and_nested_fields_are_kept() {
        let m = message(&event(
            "pic_sysphoto",
            "<EventKey>6</EventKey><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum>abc</PicMd5Sum></item></PicList></SendPicsInfo>",
        ));
        assert_eq!(
            m.kind,
            PushKind::OtherEvent {
                event: "pic_sysphoto".into()
            }
        );
        assert_eq!(
            m.fields.get("SendPicsInfo/PicList/item/PicMd5Sum"),
            Some("abc")
        );
        assert_eq!(m.fields.get("SendPicsInfo/Count"), Some("1"));
    }

    #[test]
    fn other_message_types_are_kept_generically() {
        let body = TEXT
            .replace("<![CDATA[text]]>", "<![CDATA[image]]>")
            .replace(
                "<Content><![CDATA[this is a test]]></Content>",
                "<PicUrl>http://x/y</PicUrl>",
            );
        let m = message(&body);
        assert_eq!(
            m.kind,
            PushKind::OtherMessage {
                msg_type: "image".into()
            }
        );
        assert_eq!(m.msg_id(), Some(1_234_567_890_123_456));
        assert_eq!(m.fields.get("PicUrl"), Some("http://x/y"));
    }

    #[test]
    fn plain_text_and_predefined_entities_are_decoded() {
        let body = "<?xml version=\"1.0\"?><xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType><Content>a &lt;b&gt; &amp; &#x4e2d;&#25991; &quot;&apos;</Content></xml>";
        let m = message(body);
        assert_eq!(
            m.kind,
            PushKind::Text {
                content: "a <b> & 中文 \"'".into(),
                msg_id: None
            }
        );
    }

    #[test]
    fn safe_mode_envelope_is_recognised() {
        let body = "<xml><ToUserName><![CDATA[gh_123]]></ToUserName><Encrypt><![CDATA[abc+/=]]></Encrypt></xml>";
        assert_eq!(
            parse_push(body.as_bytes()).unwrap(),
            PushBody::Encrypted(EncryptedPush {
                to_user: "gh_123".into(),
                encrypt: "abc+/=".into()
            })
        );
    }

    #[test]
    fn compatible_mode_keeps_both_plain_fields_and_encrypt() {
        let body = TEXT.replace("</xml>", "<Encrypt><![CDATA[abc]]></Encrypt></xml>");
        let m = message(&body);
        assert_eq!(m.encrypt.as_deref(), Some("abc"));
        assert!(matches!(m.kind, PushKind::Text { .. }));
    }

    #[test]
    fn doctype_is_rejected_even_without_entities() {
        let body = format!("<!DOCTYPE xml>{TEXT}");
        assert_eq!(parse_push(body.as_bytes()), Err(XmlError::Doctype));
        let xxe = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Content>&e;</Content></xml>";
        assert_eq!(parse_push(xxe.as_bytes()), Err(XmlError::Doctype));
    }

    #[test]
    fn undeclared_entity_is_rejected() {
        let body = TEXT.replace("<![CDATA[this is a test]]>", "&e;");
        assert_eq!(
            parse_push(body.as_bytes()),
            Err(XmlError::UnknownEntity { name: "e".into() })
        );
    }

    #[test]
    fn oversize_body_is_rejected_before_parsing() {
        let big = format!("<xml>{}</xml>", " ".repeat(MAX_PUSH_BYTES));
        assert_eq!(
            parse_push(big.as_bytes()),
            Err(XmlError::TooLarge {
                len: MAX_PUSH_BYTES + 11,
                max: MAX_PUSH_BYTES
            })
        );
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let body = format!("<xml>{}{}</xml>", "<a>".repeat(20), "</a>".repeat(20));
        assert_eq!(
            parse_push(body.as_bytes()),
            Err(XmlError::TooDeep { max: MAX_DEPTH })
        );
    }

    #[test]
    fn duplicate_top_level_field_is_rejected() {
        let body = TEXT.replace("</xml>", "<FromUserName>oOTHER</FromUserName></xml>");
        assert_eq!(
            parse_push(body.as_bytes()),
            Err(XmlError::DuplicateField {
                field: "FromUserName".into()
            })
        );
    }

    #[test]
    fn missing_required_fields_are_typed_errors() {
        let body = TEXT.replace("<CreateTime>1348831860</CreateTime>", "");
        assert_eq!(
            parse_push(body.as_bytes()),
            Err(XmlError::MissingField {
                field: "CreateTime"
            })
        );
        let body = event("SCAN", "");
        assert_eq!(
            parse_push(body.as_bytes()),
            Err(XmlError::MissingField { field: "EventKey" })
        );
        let body = TEXT.replace(
            "<CreateTime>1348831860</CreateTime>",
            "<CreateTime>soon</CreateTime>",
        );
        assert!(matches!(
            parse_push(body.as_bytes()),
            Err(XmlError::InvalidField {
                field: "CreateTime",
                ..
            })
        ));
    }

    #[test]
    fn wrong_root_and_broken_xml_are_rejected() {
        assert!(matches!(
            parse_push(b"<root><a>1</a></root>"),
            Err(XmlError::WrongRoot { .. })
        ));
        assert!(matches!(
            parse_push(b"<xml><a>1</b></xml>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse_push(b"<xml><a>1</a>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse_push(b"<xml/><xml/>"),
            Err(XmlError::Malformed { .. })
        ));
        assert_eq!(parse_push(b"\xff\xfe<xml/>"), Err(XmlError::NotUtf8));
    }

    #[test]
    fn text_reply_swaps_users_and_survives_cdata_terminators() {
        let m = message(TEXT);
        let content = "a]]>b<c>&\u{0}d";
        let reply = m.text_reply(content, 1_700_000_000);
        match parse_reply(reply.as_bytes(), None).unwrap() {
            Reply::Message(r) => {
                assert_eq!(r.to_user, "oUSER");
                assert_eq!(r.from_user, "gh_123");
                assert_eq!(r.create_time, 1_700_000_000);
                assert_eq!(r.msg_type, "text");
                assert_eq!(r.content.as_deref(), Some("a]]>b<c>&d"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cdata_terminator_formed_by_dropped_control_characters_is_still_escaped() {
        let reply = text_reply("o]\u{1e}]>x&y", "gh", 1, "]\u{0}]\u{1}>");
        match parse_reply(reply.as_bytes(), None).unwrap() {
            Reply::Message(r) => {
                assert_eq!(r.to_user, "o]]>x&y");
                assert_eq!(r.content.as_deref(), Some("]]>"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn encrypted_reply_round_trips_and_checks_its_signature() {
        let crypt = MsgCrypt::new(
            EncodingAesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap(),
            "wxb11529c136998cb6",
        );
        let inner = text_reply("oUSER", "gh_123", 1_409_304_348, "hi");
        let sealed = EncryptedReply::seal(&crypt, "pamtest", &inner, 1_409_304_348, "xxxxxx");
        let body = sealed.to_xml();
        match parse_reply(body.as_bytes(), Some((&crypt, "pamtest"))).unwrap() {
            Reply::Encrypted { envelope, message } => {
                assert_eq!(envelope, sealed);
                assert_eq!(message.unwrap().content.as_deref(), Some("hi"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_reply(body.as_bytes(), None).unwrap(),
            Reply::Encrypted { message: None, .. }
        ));
        assert_eq!(
            parse_reply(body.as_bytes(), Some((&crypt, "wrongtoken"))),
            Err(XmlError::BadSignature)
        );
    }

    #[test]
    fn success_and_empty_replies_are_acknowledgements() {
        assert_eq!(parse_reply(b"success", None), Ok(Reply::Success));
        assert_eq!(parse_reply(b"", None), Ok(Reply::Empty));
        assert!(parse_reply(b"{\"ok\":true}", None).is_err());
        assert!(parse_reply(b"<xml><Content>x</Content></xml>", None).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_push(&body);
            let _ = parse_reply(&body, None);
        }

        #[test]
        fn parser_never_panics_on_xmlish_text(body in "[<>/!\\[\\]CDATxml&;#a-z0-9 ?=\"']{0,300}") {
            let _ = parse_push(body.as_bytes());
        }

        #[test]
        fn text_reply_content_round_trips(content in any::<String>()) {
            let reply = text_reply("o", "gh", 1, &content);
            let expected: String = content.chars().filter(|&c| {
                matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
            }).collect();
            // XML 1.0 normalises CR and CRLF to LF when reading.
            let expected = expected.replace("\r\n", "\n").replace('\r', "\n");
            match parse_reply(reply.as_bytes(), None) {
                Ok(Reply::Message(r)) => prop_assert_eq!(r.content, Some(expected)),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
