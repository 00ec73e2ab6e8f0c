//! The in-memory token cache every replica serves from: the database is not on the read path.
//!
//! One entry per account, keyed by account id, with an appid index for the API. Entries are
//! replaced whole (`Arc` swap under a short `std` lock that is never held across an `.await`).
//!
//! A caller waiting for an account's token (its first one, or another replica's refresh) waits
//! on that account's [`Watch`] instead of polling. It fires only when something a waiter acts
//! on changes — the token, the token state or errcode, the account's state — or when another
//! replica announced a change of the row ([`TokenCache::signal`]). Putting an entry equal to
//! the cached one (a reload that found nothing new) wakes nobody, so a waiter that reloads the
//! row itself is not woken by its own reload.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use store::accounts::{AccountState, TokenMode};
use store::tokens::TokenState;
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use wechat::AccessToken;
use zeroize::Zeroizing;

/// A token as served: the value, when it stops working, and its generation (the lease fence
/// under which it was written — a newer token always has a higher one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentToken {
    /// The core access_token (redacted in `Debug`).
    pub access_token: AccessToken,
    /// When it was fetched (Unix ms).
    pub issued_at: i64,
    /// When WeChat stops accepting it (Unix ms).
    pub expires_at: i64,
    /// The fence generation it was stored under.
    pub generation: i64,
}

/// An appid as a key. WeChat's appids (`wx` and 16 lowercase hex digits, the only form
/// registration accepts) pack into 8 bytes; anything else is kept as text, so the index never
/// depends on that rule holding for every row.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Appid {
    Wx(u64),
    Other(Box<str>),
}

impl Appid {
    pub fn new(appid: &str) -> Self {
        let hex = appid.strip_prefix("wx").filter(|h| {
            h.len() == 16
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        match hex.and_then(|h| u64::from_str_radix(h, 16).ok()) {
            Some(n) => Self::Wx(n),
            None => Self::Other(appid.into()),
        }
    }
}

impl fmt::Display for Appid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wx(n) => write!(f, "wx{n:016x}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for Appid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// An account id as a key: the ids wxhub creates (`store::new_id`, a UUID in its hyphenated
/// lowercase text) pack into 16 bytes; any other text is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AccountKey {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl AccountKey {
    fn new(account_id: &str) -> Self {
        if account_id.len() == uuid::fmt::Hyphenated::LENGTH
            && let Ok(id) = uuid::Uuid::try_parse(account_id)
        {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            // Only the exact text it prints back as: another spelling of the same UUID (upper
            // case) is another account id.
            if id.hyphenated().encode_lower(&mut text).as_bytes() == account_id.as_bytes() {
                return Self::Uuid(*id.as_bytes());
            }
        }
        Self::Other(account_id.into())
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(bytes) => write!(f, "{}", uuid::Uuid::from_bytes(*bytes).hyphenated()),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// A cached token in one allocation: the token API's JSON answer, serialized once when the
/// token enters the cache so a request only inserts `expires_in` (the one field that depends
/// on the time) — no serializer, no escaping, one allocation per request — and the token
/// itself as a slice of that answer (a second copy only when JSON had to escape it, which
/// WeChat's tokens never need). The buffer holds the token, so it is wiped on drop.
#[derive(Clone)]
pub(crate) struct CachedToken {
    issued_at: i64,
    expires_at: i64,
    generation: i64,
    /// `{"access_token":"…","expires_at":…,"expires_in":` ‖ `,"generation":…}` ‖ the raw
    /// token if it differs from its escaped form.
    buf: Zeroizing<Box<[u8]>>,
    /// Where the head ends and the tail begins.
    head: u32,
    /// Where the tail ends.
    tail_end: u32,
    /// Where the raw token is in `buf`, and its length.
    token_at: u32,
    token_len: u32,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// `{"access_token":` — the quoted token starts right after it.
const BODY_START: &[u8] = b"{\"access_token\":";

impl CachedToken {
    fn new(token: &CurrentToken) -> Self {
        use std::io::Write as _;
        let raw = token.access_token.expose();
        // Room for the worst case up front (every byte escaped as `\u00XX`, then the raw copy,
        // the punctuation and two 20-digit numbers): a growing Vec would leave unwiped copies
        // of the token behind in freed memory.
        let mut scratch: Zeroizing<Vec<u8>> =
            Zeroizing::new(Vec::with_capacity(raw.len() * 7 + 160));
        let room = scratch.capacity();
        scratch.extend_from_slice(BODY_START);
        serde_json::to_writer(&mut *scratch, raw).expect("a string always serializes");
        let escaped = scratch.len() != BODY_START.len() + raw.len() + 2;
        let _ = write!(
            scratch,
            ",\"expires_at\":{},\"expires_in\":",
            token.expires_at
        );
        let head = scratch.len();
        let _ = write!(scratch, ",\"generation\":{}}}", token.generation);
        let tail_end = scratch.len();
        let token_at = if escaped {
            scratch.extend_from_slice(raw.as_bytes());
            tail_end
        } else {
            BODY_START.len() + 1
        };
        debug_assert_eq!(scratch.capacity(), room, "never grown");
        // The kept copy is exactly as long as the answer (the scratch's capacity is wiped with it).
        let mut buf = Zeroizing::new(vec![0u8; scratch.len()].into_boxed_slice());
        buf.copy_from_slice(&scratch);
        let narrow = |n: usize| u32::try_from(n).expect("a token is far shorter than 4 GiB");
        Self {
            issued_at: token.issued_at,
            expires_at: token.expires_at,
            generation: token.generation,
            buf,
            head: narrow(head),
            tail_end: narrow(tail_end),
            token_at: narrow(token_at),
            token_len: narrow(raw.len()),
        }
    }

    fn raw(&self) -> &[u8] {
        let at = self.token_at as usize;
        &self.buf[at..at + self.token_len as usize]
    }

    fn current(&self) -> CurrentToken {
        let text = std::str::from_utf8(self.raw()).expect("the token was text when cached");
        CurrentToken {
            access_token: AccessToken::new(text),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            generation: self.generation,
        }
    }

    fn is(&self, token: &AccessToken) -> bool {
        self.raw().ct_eq(token.expose().as_bytes()).into()
    }

    /// The body at `now`: `expires_in` is the whole seconds left (never negative).
    fn body(&self, now: i64) -> Vec<u8> {
        use std::io::Write as _;
        let head = &self.buf[..self.head as usize];
        let tail = &self.buf[self.head as usize..self.tail_end as usize];
        let mut body = Vec::with_capacity(head.len() + tail.len() + 20);
        body.extend_from_slice(head);
        let _ = write!(body, "{}", ((self.expires_at - now) / 1000).max(0));
        body.extend_from_slice(tail);
        body
    }
}

/// What a replica knows about one account.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    appid: Appid,
    pub mode: TokenMode,
    pub account_state: AccountState,
    pub state: TokenState,
    pub error_code: Option<i64>,
    /// Why the last refresh failed (none once one succeeded).
    reason: Option<Box<str>>,
    token: Option<CachedToken>,
}

impl Entry {
    /// Whether a waiter would see a difference between the two: the token served, why there
    /// is none, or whether the account may be served at all.
    fn same_for_waiters(&self, other: &Entry) -> bool {
        let same_token = match (&self.token, &other.token) {
            (Some(a), Some(b)) => {
                a.issued_at == b.issued_at
                    && a.expires_at == b.expires_at
                    && bool::from(a.raw().ct_eq(b.raw()))
            }
            (None, None) => true,
            _ => false,
        };
        self.account_state == other.account_state
            && self.state == other.state
            && self.error_code == other.error_code
            && same_token
    }

    pub fn new(
        appid: &str,
        mode: TokenMode,
        account_state: AccountState,
        token: Option<CurrentToken>,
        state: TokenState,
        error_code: Option<i64>,
        reason: Option<String>,
    ) -> Self {
        Self {
            appid: Appid::new(appid),
            mode,
            account_state,
            state,
            error_code,
            reason: reason.map(String::into_boxed_str),
            token: token.as_ref().map(CachedToken::new),
        }
    }

    pub fn appid(&self) -> String {
        self.appid.to_string()
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The cached token (a copy, wiped when the caller drops it).
    pub fn token(&self) -> Option<CurrentToken> {
        self.token.as_ref().map(CachedToken::current)
    }

    /// Whether a token is cached that still works at `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.token.as_ref().is_some_and(|t| t.expires_at > now)
    }

    /// The cached token's issue and expiry times.
    pub fn token_times(&self) -> Option<(i64, i64)> {
        self.token.as_ref().map(|t| (t.issued_at, t.expires_at))
    }

    pub fn token_generation(&self) -> Option<i64> {
        self.token.as_ref().map(|t| t.generation)
    }

    /// Whether `token` is the cached one (constant time).
    pub fn token_is(&self, token: &AccessToken) -> bool {
        self.token.as_ref().is_some_and(|t| t.is(token))
    }

    /// The token API's answer for the cached token at `now`, whether or not it still works.
    pub fn body(&self, now: i64) -> Option<Vec<u8>> {
        self.token.as_ref().map(|t| t.body(now))
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<AccountKey, Arc<Entry>>,
    by_appid: HashMap<Appid, AccountKey>,
}

/// The cache. Cheap operations only; no I/O.
pub(crate) struct TokenCache {
    maps: RwLock<Maps>,
    /// One channel per account someone waits on; removed when its last waiter leaves.
    waiters: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// A waiter's subscription to one account's changes (see the module doc).
pub(crate) struct Watch<'a> {
    cache: &'a TokenCache,
    account_id: String,
    rx: watch::Receiver<u64>,
}

impl Watch<'_> {
    /// Forgets changes signalled so far: the next [`Watch::changed`] waits for a later one.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Completes at the next change signalled after the last [`Watch::mark_seen`] (at once if
    /// one happened since).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives as long as a receiver does (see `Drop`); never reached, but a
            // closed channel must not turn a wait into a spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut waiters = self
            .cache
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This receiver still counts: it is the last one when the count is 1.
        if waiters
            .get(&self.account_id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            waiters.remove(&self.account_id);
        }
    }
}

impl TokenCache {
    pub fn new() -> Self {
        Self {
            maps: RwLock::new(Maps::default()),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to `account_id`'s changes from now on.
    pub fn watch(&self, account_id: &str) -> Watch<'_> {
        let rx = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(account_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Watch {
            cache: self,
            account_id: account_id.to_owned(),
            rx,
        }
    }

    /// Wakes whoever waits on `account_id`: its entry changed, or another replica announced a
    /// change of its row that the entry does not show (a lease given back).
    pub fn signal(&self, account_id: &str) {
        if let Some(tx) = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account_id)
        {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn get(&self, account_id: &str) -> Option<Arc<Entry>> {
        self.maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .get(&AccountKey::new(account_id))
            .cloned()
    }

    pub fn account_id_of(&self, appid: &str) -> Option<String> {
        self.maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_appid
            .get(&Appid::new(appid))
            .map(AccountKey::to_string)
    }

    pub fn len(&self) -> usize {
        self.maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    /// Puts an entry, unless the cached one carries a newer token (a late reload or
    /// notification must never move a replica back to an older token). Returns whether a
    /// waiter would see a difference (and then wakes the account's waiters).
    pub fn put(&self, account_id: &str, entry: Entry) -> bool {
        let key = AccountKey::new(account_id);
        let changed = {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            let keep_token = match (maps.by_id.get(&key), &entry.token) {
                (Some(old), new) => match (&old.token, new) {
                    (Some(old_token), Some(new_token)) => {
                        old_token.generation > new_token.generation
                            || (old_token.generation == new_token.generation
                                && old_token.issued_at > new_token.issued_at)
                    }
                    (Some(_), None) => true,
                    _ => false,
                },
                (None, _) => false,
            };
            let mut entry = entry;
            let old = maps.by_id.get(&key);
            if keep_token && let Some(old) = old {
                entry.token = old.token.clone();
            }
            let changed = old.is_none_or(|old| !old.same_for_waiters(&entry));
            let old_appid = old.map(|old| old.appid.clone());
            if let Some(old_appid) = old_appid.filter(|a| *a != entry.appid) {
                maps.by_appid.remove(&old_appid);
            }
            maps.by_appid.insert(entry.appid.clone(), key.clone());
            maps.by_id.insert(key, Arc::new(entry));
            changed
        };
        if changed {
            self.signal(account_id);
        }
        changed
    }

    /// Drops an account (it was deleted): its token is never served again.
    pub fn remove(&self, account_id: &str) {
        {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = maps.by_id.remove(&AccountKey::new(account_id)) {
                maps.by_appid.remove(&entry.appid);
            }
        }
        // Waiters for its token give up now rather than at their deadline.
        self.signal(account_id);
    }

    /// Changes an entry's state (after a failed refresh) and keeps its token.
    pub fn set_state(
        &self,
        account_id: &str,
        state: TokenState,
        error_code: Option<i64>,
        reason: Option<String>,
    ) {
        let key = AccountKey::new(account_id);
        let changed = {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            match maps.by_id.get(&key) {
                Some(old) => {
                    let mut entry = (**old).clone();
                    entry.state = state;
                    entry.error_code = error_code;
                    entry.reason = reason.map(String::into_boxed_str);
                    let changed = !old.same_for_waiters(&entry);
                    maps.by_id.insert(key, Arc::new(entry));
                    changed
                }
                None => false,
            }
        };
        if changed {
            self.signal(account_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, generation: i64) -> CurrentToken {
        CurrentToken {
            access_token: AccessToken::new(value),
            issued_at: 1_000_000,
            expires_at: 8_200_000,
            generation,
        }
    }

    fn entry(appid: &str, token: Option<CurrentToken>) -> Entry {
        Entry::new(
            appid,
            TokenMode::Token,
            AccountState::Active,
            token,
            TokenState::Healthy,
            None,
            None,
        )
    }

    #[test]
    fn precomputed_body_matches_the_serializer_at_any_time() {
        // One token JSON must escape (to prove the escaping is the serializer's and the raw
        // token is kept beside it), one it need not (the token is a slice of the answer).
        for value in ["86_a\"b\\c\u{1}é", "86_PLAIN-token_0123456789"] {
            let cached = CachedToken::new(&token(value, 42));
            for (now, left) in [(1_000_000, 7200), (8_199_001, 0), (9_000_000, 0)] {
                let got: serde_json::Value = serde_json::from_slice(&cached.body(now)).unwrap();
                let want = serde_json::json!({
                    "access_token": value,
                    "expires_at": 8_200_000,
                    "expires_in": left,
                    "generation": 42,
                });
                assert_eq!(got, want);
            }
            assert_eq!(cached.current(), token(value, 42));
            assert!(cached.is(&AccessToken::new(value)));
            assert!(!cached.is(&AccessToken::new("86_other")));
            assert!(!format!("{cached:?}").contains("86_"));
        }
        let plain = CachedToken::new(&token("86_PLAIN", 1));
        assert_eq!(plain.tail_end as usize, plain.buf.len(), "no second copy");
    }

    #[test]
    fn keys_print_back_as_the_text_they_came_from() {
        for appid in [
            "wx0123456789abcdef",
            "wx0123456789ABCDEF",
            "wx12",
            "gh_1234",
            "",
        ] {
            assert_eq!(Appid::new(appid).to_string(), appid);
        }
        assert!(matches!(Appid::new("wx0123456789abcdef"), Appid::Wx(_)));
        let uuid = store::new_id();
        for id in [
            uuid.clone(),
            uuid.to_uppercase(),
            "acc-1".to_owned(),
            uuid.replace('-', ""),
        ] {
            assert_eq!(AccountKey::new(&id).to_string(), id);
        }
        assert!(matches!(AccountKey::new(&uuid), AccountKey::Uuid(_)));
        assert_ne!(
            AccountKey::new(&uuid),
            AccountKey::new(&uuid.to_uppercase())
        );
    }

    #[test]
    fn the_index_follows_the_entries() {
        let cache = TokenCache::new();
        let id = store::new_id();
        cache.put(&id, entry("wx0000000000000001", Some(token("86_a", 2))));
        cache.put("other", entry("wx_other", None));
        assert_eq!(cache.account_id_of("wx0000000000000001"), Some(id.clone()));
        assert_eq!(cache.account_id_of("wx_other").as_deref(), Some("other"));
        // An older token never replaces a newer one; the appid moving is followed.
        cache.put(&id, entry("wx0000000000000002", Some(token("86_old", 1))));
        let got = cache.get(&id).unwrap();
        assert!(got.token_is(&AccessToken::new("86_a")));
        assert_eq!(got.appid(), "wx0000000000000002");
        assert_eq!(cache.account_id_of("wx0000000000000001"), None);
        assert_eq!(cache.account_id_of("wx0000000000000002"), Some(id.clone()));
        cache.remove(&id);
        assert!(cache.get(&id).is_none());
        assert_eq!(cache.account_id_of("wx0000000000000002"), None);
        assert_eq!(cache.len(), 1);
    }
}
