//! Applying what the tenancy layer changed, on every replica: the change feed
//! (`store::changes`) tells this process within a second (at once for changes made in it) that
//! an account was disabled, deleted or given new credentials, or that one of its API keys was
//! created or revoked, and this module brings the token cache and the key cache up to date.
//!
//! Every change is applied by reloading what it concerns from the database, never from the
//! feed's payload (which names only the account and the kind), so applying one twice or late
//! does no harm.

use store::changes::{Change, ChangeKind};
use tokio::task::JoinHandle;

use crate::{TokenError, TokenService};

/// Starts the task that applies the change feed to this service's caches.
pub(crate) async fn spawn(service: &TokenService) -> Result<JoinHandle<()>, TokenError> {
    let mut feed = service.inner.store.change_feed().await?;
    let service = service.clone();
    Ok(tokio::spawn(async move {
        loop {
            match feed.next().await {
                Ok(changes) => {
                    for change in changes {
                        service.apply_change(&change).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reading the change feed failed; retrying");
                    tokio::time::sleep(store::changes::FEED_POLL).await;
                }
            }
        }
    }))
}

impl TokenService {
    /// Brings the caches up to date with one change.
    pub(crate) async fn apply_change(&self, change: &Change) {
        let account_id = change.account_id.as_str();
        match change.kind {
            ChangeKind::Account | ChangeKind::Credentials | ChangeKind::Refresh => {
                match self.reload_account(account_id).await {
                    Ok(()) => {}
                    Err(TokenError::UnknownAccount) => {
                        // Deleted: no token of it is served from memory any more, and no
                        // key of it is trusted.
                        self.inner.cache.remove(account_id);
                        self.inner.keys.forget_account(account_id);
                    }
                    Err(error) => {
                        tracing::warn!(%account_id, %error, "cannot reload a changed account");
                    }
                }
                // New credentials or "refresh now" made a refresh due: look at once.
                self.wake();
            }
            ChangeKind::ApiKeys => self.inner.keys.forget_account(account_id),
            // The login gateway reads websites and settings from the database per request.
            ChangeKind::Websites | ChangeKind::Settings => {}
        }
        self.emit(crate::EngineEvent::ChangeApplied {
            account_id: change.account_id.clone(),
            kind: change.kind,
        });
    }
}
