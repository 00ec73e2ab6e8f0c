//! Waking whoever waits for a row another replica may change: the pages that wait for a scan,
//! and WeChat's retries of a push whose reply route another replica is calling.
//!
//! A scan's push may land on one replica while the PC's page waits (Server-Sent Events) on
//! another; a retry of a push may land on another replica than the first attempt. The replica
//! that writes the row announces its id (a scan login's id; a push reply's [`reply_id`]): to
//! its own waiters at once through an in-memory broadcast, and on PostgreSQL to every replica
//! through `NOTIFY` ([`store::scan_logins`]), which each replica's listener task feeds into
//! its own broadcast. On SQLite there is one process, so the broadcast is all there is. A
//! waiter that is woken reads the row from the database — the announcement carries nothing but
//! the id, a hash — and every waiter also re-reads it now and then (a scan page every
//! `scan_page_poll` of [`crate::limits::GatewayLimits`], a retry every half second), so a
//! lost notification delays a waiter, never strands it.

use std::sync::Arc;
use std::time::Duration;

use store::Store;
use tokio::sync::{OnceCell, broadcast};

/// The id a push reply is announced by: a hash of the account and the push's dedup key (which
/// may carry an openid, so it is not sent as it is).
pub(crate) fn reply_id(account_id: &str, dedup_key: &str) -> String {
    crate::token_hash(&format!("reply\n{account_id}\n{dedup_key}"))
}

/// The announcements of one replica.
pub(crate) struct Announcements {
    tx: broadcast::Sender<Arc<str>>,
    /// Set once the PostgreSQL listener runs (never on SQLite).
    listening: OnceCell<()>,
}

impl Default for Announcements {
    fn default() -> Self {
        Announcements {
            tx: broadcast::channel(1024).0,
            listening: OnceCell::new(),
        }
    }
}

impl Announcements {
    /// Subscribes to announcements, starting this replica's PostgreSQL listener on first
    /// use. A listener that cannot start is retried by the next subscriber; meanwhile the
    /// waiters poll.
    pub(crate) async fn subscribe(&self, store: &Store) -> broadcast::Receiver<Arc<str>> {
        let rx = self.tx.subscribe();
        if self.listening.get().is_none() {
            let tx = self.tx.clone();
            let started = self
                .listening
                .get_or_try_init(|| async {
                    match store.listen_scan_logins().await? {
                        Some(mut listener) => {
                            tokio::spawn(async move {
                                loop {
                                    match listener.recv().await {
                                        Ok(id) => {
                                            let _ = tx.send(id.into());
                                        }
                                        Err(error) => {
                                            tracing::warn!(%error, "announcement listener failed; retrying");
                                            tokio::time::sleep(Duration::from_secs(1)).await;
                                        }
                                    }
                                }
                            });
                            Ok(())
                        }
                        None => Ok::<(), store::StoreError>(()),
                    }
                })
                .await;
            if let Err(error) = started {
                tracing::warn!(%error, "announcement listener cannot start; waiters poll");
            }
        }
        rx
    }

    /// Announces several rows at once (one round trip to the database).
    pub(crate) async fn announce_all(&self, store: &Store, ids: &[String]) {
        for id in ids {
            let _ = self.tx.send(id.as_str().into());
        }
        if let Err(error) = store.notify_scan_logins(ids).await {
            tracing::warn!(%error, "announcements not sent; other replicas poll");
        }
    }

    /// Announces that the row `id` changed: to this replica's waiters at once, and to the
    /// other replicas through the database.
    pub(crate) async fn announce(&self, store: &Store, id: &str) {
        let _ = self.tx.send(id.into());
        if let Err(error) = store.notify_scan_login(id).await {
            tracing::warn!(%error, "announcement not sent; other replicas poll");
        }
    }
}
