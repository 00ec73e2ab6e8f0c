//! Cooperative shutdown: a refresh in flight when shutdown begins completes and is stored;
//! nothing new starts; a refresh slower than the deadline is cut short.

use std::time::Duration;

use scheduler::{EngineEvent, SchedulerConfig, TokenError};
use store::accounts::TokenMode;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::{Hub, TOKEN, on_postgres};

/// Every token call takes `ms` (real time).
fn slow_token_calls(hub: &Hub, ms: u64) {
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some(TOKEN.into()),
            appid: None,
            action: FaultAction::Latency { ms },
            next: None,
            rate: Some(1.0),
        })
        .unwrap();
}

async fn lease_claimed(events: &mut tokio::sync::broadcast::Receiver<EngineEvent>) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(EngineEvent::LeaseClaimed { account_id, .. })) => return account_id,
            Ok(Ok(_)) => continue,
            other => panic!("no lease was claimed: {other:?}"),
        }
    }
}

async fn refresh_in_flight_at_shutdown_completes_and_is_stored_body(hub: Hub) {
    let accounts = hub.accounts(0, 2, TokenMode::Token).await;
    slow_token_calls(&hub, 600);
    // One refresh at a time: the second account waits for the first one's permit.
    let service = hub
        .service(SchedulerConfig {
            concurrency: 1,
            first_token_wait: Duration::from_millis(300),
            ..Hub::config(50)
        })
        .await;
    let mut events = service.subscribe();
    let tasks = service.start().await.unwrap();
    let first = lease_claimed(&mut events).await;
    let second = accounts.iter().find(|a| a.id != first).unwrap();
    let first = accounts.iter().find(|a| a.id == first).unwrap();

    // SIGTERM arrives while the first call is out.
    assert_eq!(tasks.shutdown(Duration::from_secs(10)).await, 0);
    let row = hub.store.get_core_token(&first.id).await.unwrap().unwrap();
    assert!(row.token.is_some(), "the token in flight was not stored");
    assert_eq!(row.lease_holder, None);
    let token = service.cached(&first.id).unwrap();
    assert!(hub.accepted(&first.appid, token.access_token.expose()));
    assert_eq!(hub.fetches(&first.appid), (1, 1));
    // A restarted replica serves it without fetching.
    let restarted = hub.service(Hub::config(51)).await;
    assert_eq!(
        restarted.cached(&first.id).unwrap().access_token,
        token.access_token
    );

    // Nothing new started: not the second account's scheduled refresh, not a first-token
    // request after shutdown.
    match service.current(&second.id).await {
        Err(TokenError::Pending) => {}
        other => panic!("expected Pending after shutdown, got {other:?}"),
    }
    let row = hub.store.get_core_token(&second.id).await.unwrap().unwrap();
    assert_eq!((row.generation, row.lease_holder), (0, None));
    assert_eq!(hub.fetches(&second.appid), (0, 0));
}

async fn refresh_slower_than_the_deadline_is_cut_short_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    slow_token_calls(&hub, 1_000);
    let service = hub.service(Hub::config(52)).await;
    let mut events = service.subscribe();
    let tasks = service.start().await.unwrap();
    lease_claimed(&mut events).await;
    assert_eq!(tasks.shutdown(Duration::from_millis(50)).await, 1);
    // Its lease is left to lapse; no token was stored.
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(row.token, None);
    assert_eq!(row.lease_holder.as_deref(), Some("test-replica-52"));
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_in_flight_at_shutdown_completes_and_is_stored() {
        refresh_in_flight_at_shutdown_completes_and_is_stored_body(Hub::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_slower_than_the_deadline_is_cut_short() {
        refresh_slower_than_the_deadline_is_cut_short_body(Hub::sqlite().await).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_in_flight_at_shutdown_completes_and_is_stored() {
        on_postgres(refresh_in_flight_at_shutdown_completes_and_is_stored_body).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_slower_than_the_deadline_is_cut_short() {
        on_postgres(refresh_slower_than_the_deadline_is_cut_short_body).await;
    }
}
