//! Waking the pages that wait for a scan, on whichever replica they are served.
//!
//! A scan's push may land on one replica while the PC's page waits (Server-Sent Events) on
//! another. The replica that records the scan announces the scan login's id: to its own
//! pages at once through an in-memory broadcast, and on PostgreSQL to every replica through
//! `NOTIFY` ([`store::scan_logins`]), which each replica's listener task feeds into its own
//! broadcast. On SQLite there is one process, so the broadcast is all there is. A page that
//! is woken reads the login from the database — the announcement carries nothing but the
//! id — and every page also re-reads it every `scan_page_poll`
//! ([`crate::limits::GatewayLimits`], 2 s), so a lost notification delays a page, never
//! strands it.

use std::sync::Arc;
use std::time::Duration;

use store::Store;
use tokio::sync::{OnceCell, broadcast};

/// The announcements of one replica.
pub(crate) struct ScanEvents {
    tx: broadcast::Sender<Arc<str>>,
    /// Set once the PostgreSQL listener runs (never on SQLite).
    listening: OnceCell<()>,
}

impl Default for ScanEvents {
    fn default() -> Self {
        ScanEvents {
            tx: broadcast::channel(1024).0,
            listening: OnceCell::new(),
        }
    }
}

impl ScanEvents {
    /// Subscribes to announcements, starting this replica's PostgreSQL listener on first
    /// use. A listener that cannot start is retried by the next subscriber; meanwhile the
    /// pages poll.
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
                                            tracing::warn!(%error, "scan login listener failed; retrying");
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
                tracing::warn!(%error, "scan login listener cannot start; pages poll");
            }
        }
        rx
    }

    /// Announces that scan login `id` changed: to this replica's pages at once, and to the
    /// other replicas through the database.
    pub(crate) async fn announce(&self, store: &Store, id: &str) {
        let _ = self.tx.send(id.into());
        if let Err(error) = store.notify_scan_login(id).await {
            tracing::warn!(%error, "scan login announcement not sent; other replicas poll");
        }
    }
}
