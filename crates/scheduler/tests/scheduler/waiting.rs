//! Waiting for another holder's lease costs a handful of statements, not a spin: a replica that
//! starts while a dead process's lease is still held, and a replica waiting while another one
//! fetches. The store's operation counter is read around each wait; before the fix these
//! waits ran thousands of statements per second.

use std::time::Duration;

use scheduler::{
    EngineEvent, RefreshPolicy, ReportOutcome, SchedulerConfig, TokenError, TokenService,
};
use store::Store;
use store::accounts::TokenMode;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::{Hub, TOKEN, on_postgres};

/// The most database operations a wait for one lease may cost: two claim statements, one
/// read of the row, and on PostgreSQL the listener's reload of an announced row — with room
/// for one more round.
const HANDFUL: u64 = 10;

const DEAD_HOLDER: &str = "replica-that-stopped";

/// Claims `account_id`'s lease as a process that then died: it lapses after 60 s.
async fn hold_lease_as_dead_process(hub: &Hub, account_id: &str) -> i64 {
    let now = hub.now();
    let until = now + 60_000;
    let day = RefreshPolicy::default().quota_day(now);
    hub.store
        .claim_token_refresh(account_id, DEAD_HOLDER, now, until, day, 200)
        .await
        .unwrap()
        .expect("the lease is free");
    until
}

fn config(seed: u64, wait: Duration) -> SchedulerConfig {
    SchedulerConfig {
        first_token_wait: wait,
        ..Hub::config(seed)
    }
}

/// Waits (bounded) for the event `pick` accepts.
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    mut pick: impl FnMut(&EngineEvent) -> Option<T>,
) -> T {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            other => panic!("the expected engine event never came: {other:?}"),
        }
    }
}

async fn first_token_waits_out_a_dead_holders_lease_without_spinning_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let until = hold_lease_as_dead_process(&hub, &acct.id).await;
    let service = hub.service(config(20, Duration::from_millis(600))).await;
    let _tasks = service.listen().await.unwrap();

    // The whole wait, until `first_token_wait` gives up: a handful of operations.
    let before = hub.store.operations();
    match service.current(&acct.id).await {
        Err(TokenError::Pending) => {}
        other => panic!("expected Pending while the lease is held, got {other:?}"),
    }
    let spent = hub.store.operations() - before;
    assert!(
        spent <= HANDFUL,
        "waiting 600 ms on a held lease ran {spent} database operations"
    );
    assert_eq!(hub.fetches(&acct.appid), (0, 0));

    // A request waiting when the lease lapses (by the clock) takes over and gets the token.
    let service = hub.service(config(21, Duration::from_secs(10))).await;
    let mut events = service.subscribe();
    let waiter = tokio::spawn({
        let service = service.clone();
        let id = acct.id.clone();
        async move { service.current(&id).await }
    });
    let waited_until = next_event(&mut events, |e| match e {
        EngineEvent::WaitingForLease { holder, until, .. } if holder == DEAD_HOLDER => Some(*until),
        _ => None,
    })
    .await;
    assert_eq!(waited_until, until);
    let before = hub.store.operations();
    hub.clock.set(until + 1);
    let token = waiter.await.unwrap().unwrap();
    assert!(hub.accepted(&acct.appid, token.access_token.expose()));
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
    let spent = hub.store.operations() - before;
    assert!(spent <= HANDFUL, "the takeover ran {spent} operations");
}

async fn report_during_a_dead_holders_lease_answers_precisely_without_spinning_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(config(22, Duration::from_millis(600))).await;
    let _tasks = service.listen().await.unwrap();
    let token = service.current(&acct.id).await.unwrap();
    hub.advance(60);
    let until = hold_lease_as_dead_process(&hub, &acct.id).await;

    // The token still works: WeChat says so, and the report gets it back at once.
    let reported = service
        .report_rejected(&acct.id, &token.access_token, None)
        .await
        .unwrap();
    assert_eq!(reported.outcome, ReportOutcome::StillAccepted);
    assert_eq!(reported.token.access_token, token.access_token);

    // WeChat rejects it: the refresh it needs waits on the lease, then says why it cannot.
    hub.advance(11);
    hub.confirmations_reject(&acct.appid, None);
    let before = hub.store.operations();
    match service
        .report_rejected(&acct.id, &token.access_token, None)
        .await
    {
        Err(TokenError::Unavailable {
            reason, retry_at, ..
        }) => {
            assert_eq!(retry_at, Some(until + 1));
            assert!(reason.contains(DEAD_HOLDER), "{reason}");
            assert!(reason.contains("lease"), "{reason}");
        }
        other => panic!("expected a precise Unavailable, got {other:?}"),
    }
    let spent = hub.store.operations() - before;
    assert!(
        spent <= HANDFUL,
        "a report waiting 600 ms on a held lease ran {spent} database operations"
    );
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_token_waits_out_a_dead_holders_lease_without_spinning() {
        first_token_waits_out_a_dead_holders_lease_without_spinning_body(Hub::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_during_a_dead_holders_lease_answers_precisely_without_spinning() {
        report_during_a_dead_holders_lease_answers_precisely_without_spinning_body(
            Hub::sqlite().await,
        )
        .await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_token_waits_out_a_dead_holders_lease_without_spinning() {
        on_postgres(first_token_waits_out_a_dead_holders_lease_without_spinning_body).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn report_during_a_dead_holders_lease_answers_precisely_without_spinning() {
        on_postgres(report_during_a_dead_holders_lease_answers_precisely_without_spinning_body)
            .await;
    }

    /// Replica B asks for the first token while replica A fetches it (slowly): B waits on
    /// A's notification instead of re-reading the row, and serves A's token.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replica_waiting_for_anothers_fetch_does_not_spin() {
        on_postgres(|hub| async move {
            let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
            let replica = |seed| {
                let hub = &hub;
                async move {
                    // Its own pool, like a separate process, so its operations count alone.
                    let store = Store::connect(&hub.url).await.unwrap();
                    let service: TokenService = hub
                        .service_on(store, config(seed, Duration::from_secs(10)))
                        .await;
                    let tasks = service.listen().await.unwrap();
                    (service, tasks)
                }
            };
            let (a, _a_tasks) = replica(30).await;
            let (b, _b_tasks) = replica(31).await;
            hub.sim()
                .add_fault(FaultSpec {
                    endpoint: Some(TOKEN.into()),
                    appid: Some(acct.appid.clone()),
                    action: FaultAction::Latency { ms: 1_000 },
                    next: Some(1),
                    rate: None,
                })
                .unwrap();
            let mut a_events = a.subscribe();
            let fetching = tokio::spawn({
                let a = a.clone();
                let id = acct.id.clone();
                async move { a.current(&id).await }
            });
            next_event(&mut a_events, |e| {
                matches!(e, EngineEvent::LeaseClaimed { .. }).then_some(())
            })
            .await;
            let before = b.store().operations();
            let from_b = b.current(&acct.id).await.unwrap();
            let spent = b.store().operations() - before;
            let from_a = fetching.await.unwrap().unwrap();
            assert_eq!(from_b.access_token, from_a.access_token);
            assert_eq!(hub.fetches(&acct.appid), (1, 1));
            assert!(
                spent <= HANDFUL,
                "waiting 1 s for another replica's fetch ran {spent} database operations"
            );
        })
        .await;
    }
}
