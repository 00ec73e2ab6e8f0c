//! A token WeChat issued is never dropped: when its write-back fails (here a trigger makes the
//! database refuse every write of a token — a real database error, no hook in the store), it
//! is served from memory and stored once the database takes writes again, unless a newer
//! generation supersedes it.

use std::sync::Arc;
use std::time::Duration;

use scheduler::{EngineEvent, SchedulerConfig, TokenService};
use store::Store;
use store::accounts::TokenMode;

use crate::common::{Hub, on_postgres};

const BREAK_SQLITE: &[&str] = &["CREATE TRIGGER test_refuse_token_writes \
     BEFORE UPDATE OF token ON core_tokens \
     BEGIN SELECT RAISE(ABORT, 'the test refuses token writes'); END"];
const BREAK_POSTGRES: &[&str] = &[
    "CREATE FUNCTION test_refuse_token_writes() RETURNS trigger LANGUAGE plpgsql AS \
     $$ BEGIN RAISE EXCEPTION 'the test refuses token writes'; END $$",
    "CREATE TRIGGER test_refuse_token_writes BEFORE UPDATE OF token ON core_tokens \
     FOR EACH ROW EXECUTE FUNCTION test_refuse_token_writes()",
];
const REPAIR_SQLITE: &[&str] = &["DROP TRIGGER test_refuse_token_writes"];
const REPAIR_POSTGRES: &[&str] = &["DROP TRIGGER test_refuse_token_writes ON core_tokens"];

fn config(seed: u64) -> SchedulerConfig {
    SchedulerConfig {
        write_retry: Duration::from_millis(20),
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

async fn fetched_token_whose_write_fails_is_served_and_stored_later_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(config(60)).await;
    let mut events = service.subscribe();
    hub.execute_raw(BREAK_SQLITE, BREAK_POSTGRES).await;

    // The fetch succeeds, the write fails: the caller still gets the token.
    let token = service.current(&acct.id).await.unwrap();
    assert!(hub.accepted(&acct.appid, token.access_token.expose()));
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
    let generation = next_event(&mut events, |e| match e {
        EngineEvent::WriteDeferred {
            generation,
            attempt: 1,
            ..
        } => Some(*generation),
        _ => None,
    })
    .await;
    assert_eq!(generation, token.generation);
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(row.token, None);
    assert_eq!(row.lease_holder.as_deref(), Some("test-replica-60"));

    // The row looks due, and free once the lease lapses: this replica fetches nothing more,
    // and keeps serving the token while its retries keep failing.
    hub.advance(61);
    assert_eq!(service.run_due().await.unwrap().refreshed, 0);
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
    next_event(&mut events, |e| {
        matches!(e, EngineEvent::WriteDeferred { attempt: 2.., .. }).then_some(())
    })
    .await;
    assert_eq!(
        service.current(&acct.id).await.unwrap().access_token,
        token.access_token
    );

    // The database takes writes again: the token is stored under its generation.
    hub.execute_raw(REPAIR_SQLITE, REPAIR_POSTGRES).await;
    let stored = next_event(&mut events, |e| match e {
        EngineEvent::Refreshed { generation, .. } => Some(*generation),
        _ => None,
    })
    .await;
    assert_eq!(stored, generation);
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert!(row.token.is_some());
    assert_eq!(row.lease_holder, None);
    let restarted = hub.service(Hub::config(61)).await;
    assert_eq!(
        restarted.cached(&acct.id).unwrap().access_token,
        token.access_token
    );
    assert_eq!(hub.fetches(&acct.appid), (1, 1));
}

async fn deferred_write_superseded_by_a_newer_generation_is_let_go_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let service = hub.service(config(62)).await;
    let mut events = service.subscribe();
    hub.execute_raw(BREAK_SQLITE, BREAK_POSTGRES).await;
    let ours = service.current(&acct.id).await.unwrap();
    next_event(&mut events, |e| {
        matches!(e, EngineEvent::WriteDeferred { .. }).then_some(())
    })
    .await;

    // Our lease lapses; another replica claims the account (generation + 1), and the
    // database recovers right after that claim.
    hub.advance(61);
    let other = hub
        .service_on(Store::connect(&hub.url).await.unwrap(), config(63))
        .await;
    let url = hub.url.clone();
    other.set_after_claim_hook(Some(Arc::new(move |_: &str| {
        let url = url.clone();
        Box::pin(async move { repair(&url).await })
    })));
    assert_eq!(other.run_due().await.unwrap().refreshed, 1);
    other.set_after_claim_hook(None);

    // Our retry now fails its fence: the token is let go, the newer one stays.
    let dropped = next_event(&mut events, |e| match e {
        EngineEvent::StaleWrite { generation, .. } => Some(*generation),
        _ => None,
    })
    .await;
    assert_eq!(dropped, ours.generation);
    let theirs = other.cached(&acct.id).unwrap();
    assert!(theirs.generation > ours.generation);
    service.reload_account(&acct.id).await.unwrap();
    assert_eq!(
        service.cached(&acct.id).unwrap().access_token,
        theirs.access_token
    );
    let restarted: TokenService = hub.service(Hub::config(64)).await;
    assert_eq!(
        restarted.cached(&acct.id).unwrap().access_token,
        theirs.access_token
    );
}

/// [`REPAIR_SQLITE`] / [`REPAIR_POSTGRES`] on the database at `url` (for a `'static` hook).
async fn repair(url: &str) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::raw_sql(REPAIR_SQLITE[0])
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::raw_sql(REPAIR_POSTGRES[0])
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetched_token_whose_write_fails_is_served_and_stored_later() {
        fetched_token_whose_write_fails_is_served_and_stored_later_body(Hub::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_write_superseded_by_a_newer_generation_is_let_go() {
        deferred_write_superseded_by_a_newer_generation_is_let_go_body(Hub::sqlite().await).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetched_token_whose_write_fails_is_served_and_stored_later() {
        on_postgres(fetched_token_whose_write_fails_is_served_and_stored_later_body).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_write_superseded_by_a_newer_generation_is_let_go() {
        on_postgres(deferred_write_superseded_by_a_newer_generation_is_let_go_body).await;
    }
}
