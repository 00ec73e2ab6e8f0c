//! Telling other replicas that an account's core token changed.
//!
//! **PostgreSQL only.** When a refresh lease ends — a token written, a failure recorded, a
//! lease given back — the replica that ended it sends `NOTIFY wxhub_core_token, '<account id>'`
//! (in the same statement); every replica listens on that channel and reloads that one row into
//! its in-memory cache. The payload is the account id and nothing else: never
//! a token, not even ciphertext. Notifications are best effort (one sent while a listener is
//! reconnecting is lost), so the scheduler also reloads its cache periodically.
//!
//! On SQLite there is one process, which updates its cache in place: sending is a no-op and
//! there is nothing to listen to.

use sqlx::postgres::PgListener;

use crate::db::Backend;
use crate::{Store, StoreError};

/// The channel token refreshes are announced on.
pub const TOKEN_CHANNEL: &str = "wxhub_core_token";

impl Store {
    /// Announces that `account_id`'s token row changed. PostgreSQL: `pg_notify`; SQLite: no-op.
    pub async fn notify_token_refreshed(&self, account_id: &str) -> Result<(), StoreError> {
        match &self.backend {
            // PostgreSQL only: NOTIFY reaches every session listening on the channel.
            Backend::Postgres(pool) => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(TOKEN_CHANNEL)
                    .bind(account_id)
                    .execute(pool)
                    .await?;
                Ok(())
            }
            Backend::Sqlite(_) => Ok(()),
        }
    }

    /// Starts listening for token refreshes announced by any replica (its own included).
    /// `None` on SQLite, where there are no other replicas.
    pub async fn listen_token_refreshes(&self) -> Result<Option<TokenListener>, StoreError> {
        match &self.backend {
            // PostgreSQL only: a dedicated connection from the pool's options, LISTENing.
            Backend::Postgres(pool) => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(TOKEN_CHANNEL).await?;
                Ok(Some(TokenListener { listener }))
            }
            Backend::Sqlite(_) => Ok(None),
        }
    }
}

/// A PostgreSQL session listening on [`TOKEN_CHANNEL`].
pub struct TokenListener {
    listener: PgListener,
}

impl std::fmt::Debug for TokenListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenListener")
            .field("channel", &TOKEN_CHANNEL)
            .finish()
    }
}

impl TokenListener {
    /// The next announced account id. Reconnects transparently after a lost connection
    /// (announcements made meanwhile are lost; the periodic reload covers them).
    pub async fn recv(&mut self) -> Result<String, StoreError> {
        let notification = self.listener.recv().await?;
        Ok(notification.payload().to_owned())
    }
}
