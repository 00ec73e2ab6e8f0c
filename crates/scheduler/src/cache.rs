//! The in-memory token cache every replica serves from: the database is not on the read path.
//!
//! One entry per account, keyed by account id, with an appid index for the API. Entries are
//! replaced whole (`Arc` swap under a short `std` lock that is never held across an `.await`).
//! Every change bumps a `watch` counter, so a caller waiting for an account's first token (or
//! for another replica's refresh to arrive) can wait on an event instead of polling.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

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
    changed: watch::Sender<u64>,
}

impl TokenCache {
    pub fn new() -> Self {
        Self {
            maps: RwLock::new(Maps::default()),
            changed: watch::channel(0).0,
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
    /// notification must never move a replica back to an older token).
    pub fn put(&self, account_id: &str, entry: Entry) {
        {
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
            maps.by_appid
                .insert(entry.appid.clone(), account_id.to_owned());
            maps.by_id.insert(account_id.to_owned(), Arc::new(entry));
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Drops an account (it was deleted): its token is never served again.
    pub fn remove(&self, account_id: &str) {
        {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = maps.by_id.remove(account_id) {
                maps.by_appid.remove(&entry.appid);
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes an entry's state (after a failed refresh) and keeps its token.
    pub fn set_state(
        &self,
        account_id: &str,
        state: TokenState,
        error_code: Option<i64>,
        reason: Option<String>,
    ) {
        {
            let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = maps.by_id.get(account_id) {
                let mut entry = (**old).clone();
                entry.state = state;
                entry.error_code = error_code;
                entry.reason = reason;
                maps.by_id.insert(account_id.to_owned(), Arc::new(entry));
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
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
