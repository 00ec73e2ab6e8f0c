//! Rejected-token reports across replicas: a report of a token that another replica already
//! replaced gets the new token, even when that replica's notification reaches the cache between
//! the claim and its re-check.

use std::sync::Arc;

use scheduler::TokenService;
use store::Store;
use store::accounts::TokenMode;

use crate::common::{Hub, on_postgres};

/// A replica with its own pool (like a separate process) and no listener: the tests deliver
/// notifications themselves, at the moment they choose.
async fn replica(hub: &Hub, seed: u64) -> TokenService {
    let store = Store::connect(&hub.url).await.unwrap();
    hub.service_on(store, Hub::config(seed)).await
}

async fn report_racing_the_other_replicas_notification_gets_the_new_token_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let a = replica(&hub, 40).await;
    let b = replica(&hub, 41).await;
    let first = a.current(&acct.id).await.unwrap();
    b.reload_account(&acct.id).await.unwrap();
    assert_eq!(b.cached(&acct.id).unwrap().access_token, first.access_token);
    hub.supersede_outside(&acct).await;

    // A's backend reports the token WeChat now rejects: A refreshes.
    let second = a
        .report_rejected(&acct.id, &first.access_token)
        .await
        .unwrap();
    assert_ne!(second.access_token, first.access_token);
    // B's backend reports the same old token. B's cache still shows it, so B claims — and A's
    // notification reaches B's cache right after that claim, before B re-checks.
    let notified = b.clone();
    b.set_after_claim_hook(Some(Arc::new(move |account_id: &str| {
        let b = notified.clone();
        let account_id = account_id.to_owned();
        Box::pin(async move { b.reload_account(&account_id).await.unwrap() })
    })));
    let from_b = b.report_rejected(&acct.id, &first.access_token).await;
    b.set_after_claim_hook(None);
    // The documented contract: a report of a replaced token returns the current one at once.
    let from_b = from_b.unwrap();
    assert_eq!(from_b.access_token, second.access_token);
    // No fetch for it (A's first, the outside one, A's refresh), and the claim gave back its
    // lease and its budget unit.
    assert_eq!(hub.fetches(&acct.appid), (3, 3));
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(row.lease_holder, None);
    assert_eq!(row.upstream_calls_today, 2);
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_racing_the_other_replicas_notification_gets_the_new_token() {
        report_racing_the_other_replicas_notification_gets_the_new_token_body(Hub::sqlite().await)
            .await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_racing_the_other_replicas_notification_gets_the_new_token() {
        on_postgres(report_racing_the_other_replicas_notification_gets_the_new_token_body).await;
    }
}
