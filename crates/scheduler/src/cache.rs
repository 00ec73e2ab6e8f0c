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
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use store::accounts::{AccountState, TokenMode};
use store::tokens::TokenState;
use tokio::sync::watch;
use vault::{SecretBytes, SecretString};
use wechat::AccessToken;

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

/// What a replica knows about one account.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub appid: String,
    pub mode: TokenMode,
    pub account_state: AccountState,
    pub token: Option<CurrentToken>,
    pub state: TokenState,
    pub error_code: Option<i64>,
    pub reason: Option<String>,
    /// The token API's answer for `token`, serialized once per token (see [`TokenJson`]).
    pub json: Option<Arc<TokenJson>>,
}

impl Entry {
    /// Whether a waiter would see a difference between the two: the token served, why there
    /// is none, or whether the account may be served at all.
    fn same_for_waiters(&self, other: &Entry) -> bool {
        let same_token = match (&self.token, &other.token) {
            (Some(a), Some(b)) => {
                a.issued_at == b.issued_at
                    && a.expires_at == b.expires_at
                    && a.access_token == b.access_token
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
        appid: String,
        mode: TokenMode,
        account_state: AccountState,
        token: Option<CurrentToken>,
        state: TokenState,
        error_code: Option<i64>,
        reason: Option<String>,
    ) -> Self {
        let json = token.as_ref().map(|t| Arc::new(TokenJson::new(t)));
        Self {
            appid,
            mode,
            account_state,
            token,
            state,
            error_code,
            reason,
            json,
        }
    }
}

/// The token API's JSON body for one token, built when the token enters the cache so a request
/// only appends `expires_in` (the one field that depends on the time): no serializer, no
/// escaping, one allocation per request.
pub(crate) struct TokenJson {
    /// `{"access_token":"…","expires_at":…,"expires_in":` — holds the token, so wiped on drop.
    head: SecretBytes,
    /// `,"generation":…}`
    tail: String,
    expires_at: i64,
}

impl std::fmt::Debug for TokenJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenJson")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl TokenJson {
    fn new(token: &CurrentToken) -> Self {
        let quoted =
            serde_json::to_string(token.access_token.expose()).expect("a string always serializes");
        let mut head = Vec::with_capacity(quoted.len() + 64);
        head.extend_from_slice(b"{\"access_token\":");
        head.extend_from_slice(quoted.as_bytes());
        // The serializer's copy holds the token too: wipe it.
        drop(SecretString::new(quoted));
        head.extend_from_slice(
            format!(",\"expires_at\":{},\"expires_in\":", token.expires_at).as_bytes(),
        );
        Self {
            head: SecretBytes::new(head),
            tail: format!(",\"generation\":{}}}", token.generation),
            expires_at: token.expires_at,
        }
    }

    /// The body at `now`: `expires_in` is the whole seconds left (never negative).
    pub fn body(&self, now: i64) -> Vec<u8> {
        use std::io::Write as _;
        let head = self.head.expose();
        let mut body = Vec::with_capacity(head.len() + self.tail.len() + 20);
        body.extend_from_slice(head);
        let _ = write!(body, "{}", ((self.expires_at - now) / 1000).max(0));
        body.extend_from_slice(self.tail.as_bytes());
        body
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Arc<Entry>>,
    by_appid: HashMap<String, String>,
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
            .get(account_id)
            .cloned()
    }

    pub fn account_id_of(&self, appid: &str) -> Option<String> {
        self.maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_appid
            .get(appid)
            .cloned()
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
        let changed = {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            let keep_token = match (maps.by_id.get(account_id), &entry.token) {
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
            if keep_token && let Some(old) = maps.by_id.get(account_id) {
                entry.token = old.token.clone();
                entry.json = old.json.clone();
            }
            let changed = maps
                .by_id
                .get(account_id)
                .is_none_or(|old| !old.same_for_waiters(&entry));
            maps.by_appid
                .insert(entry.appid.clone(), account_id.to_owned());
            maps.by_id.insert(account_id.to_owned(), Arc::new(entry));
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
            if let Some(entry) = maps.by_id.remove(account_id) {
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
        let changed = {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            match maps.by_id.get(account_id) {
                Some(old) => {
                    let mut entry = (**old).clone();
                    entry.state = state;
                    entry.error_code = error_code;
                    entry.reason = reason;
                    let changed = !old.same_for_waiters(&entry);
                    maps.by_id.insert(account_id.to_owned(), Arc::new(entry));
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

    #[test]
    fn precomputed_body_matches_the_serializer_at_any_time() {
        // A token with characters JSON must escape, to prove the escaping is the serializer's.
        let token = CurrentToken {
            access_token: AccessToken::new("86_a\"b\\c\u{1}é"),
            issued_at: 1_000_000,
            expires_at: 8_200_000,
            generation: 42,
        };
        let json = TokenJson::new(&token);
        for (now, left) in [(1_000_000, 7200), (8_199_001, 0), (9_000_000, 0)] {
            let got: serde_json::Value = serde_json::from_slice(&json.body(now)).unwrap();
            let want = serde_json::json!({
                "access_token": token.access_token.expose(),
                "expires_at": 8_200_000,
                "expires_in": left,
                "generation": 42,
            });
            assert_eq!(got, want);
        }
        assert!(!format!("{json:?}").contains("86_"));
    }
}
