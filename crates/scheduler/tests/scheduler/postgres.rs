//! Replicas: three token services (three app instances) on one PostgreSQL database.
//!
//! Named `postgres::<name>` like the store's suite; without `WXHUB_TEST_POSTGRES_URL` each
//! prints `did not run: WXHUB_TEST_POSTGRES_URL is not set` and passes.

use std::collections::HashMap;
use std::time::Duration;

use scheduler::{EngineEvent, TokenService};
use store::Store;
use store::accounts::TokenMode;
use store::tokens::RefreshedToken;
use wechat_sim::{FaultAction, FaultSpec};

use crate::common::{Acct, Hub, TOKEN, on_postgres};

async fn replicas(hub: &Hub, n: u64) -> Vec<(TokenService, scheduler::BackgroundTasks)> {
    let mut out = Vec::new();
    for i in 0..n {
        // Each replica has its own pool, like a separate process.
        let store = Store::connect(&hub.url).await.unwrap();
        let service = hub.service_on(store, Hub::config(100 + i)).await;
        let tasks = service.listen().await.unwrap();
        out.push((service, tasks));
    }
    out
}

/// Waits (on cache events, bounded) until every replica serves the token in the database.
async fn converge(
    hub: &Hub,
    replicas: &[(TokenService, scheduler::BackgroundTasks)],
    accounts: &[Acct],
) {
    let mut events: Vec<_> = replicas.iter().map(|(s, _)| s.subscribe()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut lagging = 0;
        for acct in accounts {
            let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
            for (service, _) in replicas {
                if service.cached(&acct.id).map(|t| t.issued_at) != row.issued_at {
                    lagging += 1;
                }
            }
        }
        if lagging == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{lagging} replica caches never received the refreshed token"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), events[0].recv()).await;
        for rx in &mut events {
            while rx.try_recv().is_ok() {}
        }
    }
}

async fn three_replicas_refresh_each_window_exactly_once_body(hub: Hub) {
    let accounts = hub.accounts(0, 40, TokenMode::Token).await;
    let replicas = replicas(&hub, 3).await;
    let mut stale = Vec::new();
    for (service, _) in &replicas {
        stale.push(service.subscribe());
    }
    let mut issued: HashMap<String, Vec<i64>> = HashMap::new();
    let step = 60;
    for minute in 0..(8 * 60) {
        if minute > 0 {
            hub.advance(step);
        }
        let (a, b, c) = tokio::join!(
            replicas[0].0.run_due(),
            replicas[1].0.run_due(),
            replicas[2].0.run_due()
        );
        let done = a.unwrap().refreshed + b.unwrap().refreshed + c.unwrap().refreshed;
        if done > 0 || minute == 0 {
            converge(&hub, &replicas, &accounts).await;
        }
        for acct in &accounts {
            for (service, _) in &replicas {
                let token = service
                    .cached(&acct.id)
                    .expect("every replica serves a token");
                assert!(hub.accepted(&acct.appid, token.access_token.expose()));
            }
            let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
            let seen = issued.entry(acct.id.clone()).or_default();
            let at = row.issued_at.unwrap();
            if seen.last() != Some(&at) {
                seen.push(at);
            }
        }
    }
    for acct in &accounts {
        let windows = &issued[&acct.id];
        // One fetch per refresh window, whoever made it: no duplicates.
        assert_eq!(
            hub.fetches(&acct.appid),
            (windows.len() as u64, windows.len() as u64)
        );
        for pair in windows.windows(2) {
            assert!(
                pair[1] - pair[0] >= 5_400_000,
                "two refreshes in one window"
            );
        }
        assert!((5..=7).contains(&windows.len()), "{}", windows.len());
    }
    for rx in &mut stale {
        while let Ok(event) = rx.try_recv() {
            assert!(
                !matches!(event, EngineEvent::StaleWrite { .. }),
                "unexpected {event:?}"
            );
        }
    }
}

async fn killed_replica_is_taken_over_after_its_lease_without_a_stale_write_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let mut replicas = replicas(&hub, 3).await;
    let (victim, victim_tasks) = replicas.remove(0);
    // The victim's call hangs (the simulator holds it), then the process dies.
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some(TOKEN.into()),
            appid: Some(acct.appid.clone()),
            action: FaultAction::Timeout { ms: 1_000 },
            next: None,
            rate: Some(1.0),
        })
        .unwrap();
    let mut events = victim.subscribe();
    let running = tokio::spawn({
        let victim = victim.clone();
        async move { victim.run_due().await }
    });
    let victim_generation = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(EngineEvent::LeaseClaimed { generation, .. })) => break generation,
            Ok(Ok(_)) => continue,
            other => panic!("the victim never claimed the lease: {other:?}"),
        }
    };
    running.abort();
    drop(victim_tasks);
    drop(victim);
    hub.sim().clear_faults();
    let leased = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(leased.lease_holder.as_deref(), Some("test-replica-100"));

    // While the lease holds, the others leave the account alone.
    let (b, _) = &replicas[0];
    let (c, _) = &replicas[1];
    hub.advance(30);
    assert_eq!(b.run_due().await.unwrap().due, 0);
    assert_eq!(c.run_due().await.unwrap().due, 0);
    assert!(b.cached(&acct.id).is_none());

    // Once it lapses (60 s), one of them takes over.
    hub.advance(31);
    let (rb, rc) = tokio::join!(b.run_due(), c.run_due());
    assert_eq!(rb.unwrap().refreshed + rc.unwrap().refreshed, 1);
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert!(row.generation > victim_generation);
    assert_eq!(row.lease_holder, None);
    converge(&hub, &replicas, std::slice::from_ref(&acct)).await;
    let token = b.cached(&acct.id).unwrap();
    assert!(hub.accepted(&acct.appid, token.access_token.expose()));

    // Had the victim come back with a result, its fenced write would not land.
    let late = hub
        .store
        .store_refreshed_token(
            &acct.id,
            victim_generation,
            &RefreshedToken {
                token: b"late".to_vec(),
                issued_at: hub.now(),
                expires_at: hub.now() + 7_200_000,
                next_refresh_at: hub.now() + 5_400_000,
            },
            hub.now(),
        )
        .await;
    assert!(matches!(late, Err(store::StoreError::StaleFence { .. })));
    let after = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(after.token, row.token);
    assert_eq!(b.cached(&acct.id).unwrap().access_token, token.access_token);
}

async fn slow_holder_whose_lease_lapsed_cannot_overwrite_the_newer_token_body(hub: Hub) {
    let acct = hub.accounts(0, 1, TokenMode::Token).await.remove(0);
    let replicas = replicas(&hub, 2).await;
    let (slow, _) = &replicas[0];
    let (fast, _) = &replicas[1];
    hub.sim()
        .add_fault(FaultSpec {
            endpoint: Some(TOKEN.into()),
            appid: Some(acct.appid.clone()),
            action: FaultAction::Latency { ms: 1_000 },
            next: Some(1),
            rate: None,
        })
        .unwrap();
    let mut slow_events = slow.subscribe();
    let mut fast_events = fast.subscribe();
    let slow_run = tokio::spawn({
        let slow = slow.clone();
        async move { slow.run_due().await }
    });
    loop {
        match tokio::time::timeout(Duration::from_secs(10), slow_events.recv()).await {
            Ok(Ok(EngineEvent::LeaseClaimed { .. })) => break,
            Ok(Ok(_)) => continue,
            other => panic!("never claimed: {other:?}"),
        }
    }
    // The slow holder's lease lapses while its call is still out; the other replica refreshes.
    hub.advance(61);
    assert_eq!(fast.run_due().await.unwrap().refreshed, 1);
    let fast_row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    let report = slow_run.await.unwrap().unwrap();
    assert_eq!(report.refreshed, 0);
    let stale = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow_events.recv()).await {
            Ok(Ok(EngineEvent::StaleWrite { generation, .. })) => break generation,
            Ok(Ok(_)) => continue,
            other => panic!("no stale write reported: {other:?}"),
        }
    };
    assert!(stale < fast_row.generation);
    let row = hub.store.get_core_token(&acct.id).await.unwrap().unwrap();
    assert_eq!(row.token, fast_row.token, "the slow result must not land");
    while let Ok(event) = fast_events.try_recv() {
        assert!(!matches!(event, EngineEvent::StaleWrite { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_refresh_each_window_exactly_once() {
    on_postgres(three_replicas_refresh_each_window_exactly_once_body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_is_taken_over_after_its_lease_without_a_stale_write() {
    on_postgres(killed_replica_is_taken_over_after_its_lease_without_a_stale_write_body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_holder_whose_lease_lapsed_cannot_overwrite_the_newer_token() {
    on_postgres(slow_holder_whose_lease_lapsed_cannot_overwrite_the_newer_token_body).await;
}
