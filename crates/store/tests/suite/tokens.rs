use std::sync::Arc;

use store::StoreError;
use store::accounts::AccountState;
use store::tokens::{RefreshFailure, RefreshedToken, TokenState};
use tokio::sync::Barrier;

use crate::harness::{NOW, TestDb, account, new_account, owner};

const LEASE_MS: i64 = 30_000;

/// The lease half of `claim_token_refresh` (the one claim the scheduler makes), with a budget
/// that never runs out, for the tests about leases and fences: returns the fence.
trait ClaimLease {
    async fn claim_token_lease(
        &self,
        account_id: &str,
        holder: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>, StoreError>;
}

impl ClaimLease for store::Store {
    async fn claim_token_lease(
        &self,
        account_id: &str,
        holder: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .claim_token_refresh(account_id, holder, now, lease_until, 0, i64::MAX)
            .await?
            .map(|claimed| claimed.generation))
    }
}

fn refreshed(token: &[u8]) -> RefreshedToken {
    RefreshedToken {
        token: token.to_vec(),
        issued_at: NOW,
        expires_at: NOW + 7_200_000,
        next_refresh_at: NOW + 6_000_000,
    }
}

pub async fn lease_claim_has_exactly_one_winner(db: TestDb) {
    let account = account(&db.store, "wx-race").await;
    let claimers = 20;
    let barrier = Arc::new(Barrier::new(claimers));
    let mut tasks = Vec::new();
    for i in 0..claimers {
        let store = db.store.clone();
        let barrier = barrier.clone();
        let id = account.id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let holder = format!("replica-{i}");
            let won = store
                .claim_token_lease(&id, &holder, NOW, NOW + LEASE_MS)
                .await
                .unwrap();
            (holder, won)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (holder, won) = task.await.unwrap();
        if let Some(generation) = won {
            winners.push((holder, generation));
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (holder, generation) = &winners[0];
    assert_eq!(*generation, 1);
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(row.lease_holder.as_deref(), Some(holder.as_str()));
    assert_eq!(row.lease_until, Some(NOW + LEASE_MS));
    assert_eq!(row.generation, 1);
}

pub async fn held_lease_cannot_be_claimed_until_it_expires(db: TestDb) {
    let account = account(&db.store, "wx-expire").await;
    let first = db
        .store
        .claim_token_lease(&account.id, "replica-a", NOW, NOW + LEASE_MS)
        .await
        .unwrap();
    assert_eq!(first, Some(1));
    // Still held (also at the exact expiry instant).
    for at in [NOW + 1, NOW + LEASE_MS] {
        assert_eq!(
            db.store
                .claim_token_lease(&account.id, "replica-b", at, at + LEASE_MS)
                .await
                .unwrap(),
            None
        );
    }
    let later = NOW + LEASE_MS + 1;
    let second = db
        .store
        .claim_token_lease(&account.id, "replica-b", later, later + LEASE_MS)
        .await
        .unwrap();
    assert_eq!(second, Some(2));
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(row.lease_holder.as_deref(), Some("replica-b"));
    assert_eq!(
        db.store
            .claim_token_lease("no-such-account", "replica-a", NOW, NOW + 1)
            .await
            .unwrap(),
        None
    );
}

pub async fn stale_fence_cannot_write_back(db: TestDb) {
    let account = account(&db.store, "wx-fence").await;
    let slow = db
        .store
        .claim_token_lease(&account.id, "slow", NOW, NOW + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    // The slow holder's lease runs out and another replica takes over and finishes.
    let later = NOW + LEASE_MS + 1;
    let fast = db
        .store
        .claim_token_lease(&account.id, "fast", later, later + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    assert!(fast > slow);
    db.store
        .store_refreshed_token(&account.id, fast, &refreshed(b"new-token"), later)
        .await
        .unwrap();

    let error = db
        .store
        .store_refreshed_token(&account.id, slow, &refreshed(b"old-token"), later + 5)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::StaleFence { generation, .. } if generation == slow),
        "{error:?}"
    );
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(row.token.as_deref(), Some(&b"new-token"[..]));
    assert_eq!(row.state, TokenState::Healthy);
    assert_eq!(row.issued_at, Some(NOW));
    assert_eq!(row.expires_at, Some(NOW + 7_200_000));
    assert_eq!(row.next_refresh_at, NOW + 6_000_000);
    assert_eq!((row.lease_holder.as_deref(), row.lease_until), (None, None));
    assert!(!format!("{row:?}").contains("new-token"));
    // Nor may the stale holder record a failure or release the new state.
    assert!(matches!(
        db.store
            .record_refresh_failure(&account.id, slow, &failure(TokenState::Retrying), later)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    assert!(
        !db.store
            .release_token_lease(&account.id, slow)
            .await
            .unwrap()
    );
}

fn failure(state: TokenState) -> RefreshFailure {
    RefreshFailure {
        state,
        error_code: Some(40164),
        error_message: "IP 203.0.113.9 is not in the whitelist".to_owned(),
        error_ip: Some("203.0.113.9".to_owned()),
        next_refresh_at: NOW + 60_000,
    }
}

pub async fn failure_is_fenced_counted_and_releases_the_lease(db: TestDb) {
    let account = account(&db.store, "wx-fail").await;
    for expected in 1..=2 {
        let at = NOW + expected * 100;
        let generation = db
            .store
            .claim_token_lease(&account.id, "a", at, at + LEASE_MS)
            .await
            .unwrap()
            .expect("the lease was released by the failure record");
        let count = db
            .store
            .record_refresh_failure(
                &account.id,
                generation,
                &failure(TokenState::NeedsAttention),
                at,
            )
            .await
            .unwrap();
        assert_eq!(count, expected);
    }
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(row.state, TokenState::NeedsAttention);
    assert_eq!(row.last_error_code, Some(40164));
    assert_eq!(row.last_error_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(row.next_refresh_at, NOW + 60_000);
    assert_eq!(row.failure_count, 2);
    assert_eq!(row.lease_until, None);

    // Success clears the failure state.
    let generation = db
        .store
        .claim_token_lease(&account.id, "a", NOW + 1_000, NOW + 1_000 + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    db.store
        .store_refreshed_token(&account.id, generation, &refreshed(b"t"), NOW + 1_000)
        .await
        .unwrap();
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(
        (
            row.failure_count,
            row.last_error_code,
            row.last_error_message
        ),
        (0, None, None)
    );

    // An operator's "retry now".
    db.store
        .reschedule_token_refresh(&account.id, TokenState::Pending, NOW + 2_000, NOW + 2_000)
        .await
        .unwrap();
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.next_refresh_at),
        (TokenState::Pending, NOW + 2_000)
    );
}

pub async fn released_lease_can_be_claimed_at_once(db: TestDb) {
    let account = account(&db.store, "wx-release").await;
    let generation = db
        .store
        .claim_token_lease(&account.id, "a", NOW, NOW + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    assert!(
        db.store
            .release_token_lease(&account.id, generation)
            .await
            .unwrap()
    );
    let next = db
        .store
        .claim_token_lease(&account.id, "b", NOW + 1, NOW + 1 + LEASE_MS)
        .await
        .unwrap();
    assert_eq!(next, Some(generation + 1));
}

pub async fn due_refreshes_skip_leased_future_and_disabled_accounts(db: TestDb) {
    let owner = owner(&db.store).await;
    let mut accounts = Vec::new();
    for name in ["due-1", "due-2", "leased", "future", "disabled"] {
        accounts.push(
            db.store
                .create_account(&new_account(&owner, &format!("wx-{name}")), NOW)
                .await
                .unwrap(),
        );
    }
    let [due1, due2, leased, future, disabled] = &accounts[..] else {
        unreachable!()
    };
    db.store
        .reschedule_token_refresh(&due1.id, TokenState::Retrying, NOW - 10, NOW)
        .await
        .unwrap();
    db.store
        .claim_token_lease(&leased.id, "busy", NOW, NOW + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    db.store
        .reschedule_token_refresh(&future.id, TokenState::Healthy, NOW + 1, NOW)
        .await
        .unwrap();
    db.store
        .set_account_state(
            &disabled.id,
            AccountState::Disabled,
            NOW,
            &store::audit::AuditRecord::new("test", "account.disable"),
        )
        .await
        .unwrap();

    let due = db.store.list_due_refreshes(NOW, 100).await.unwrap();
    let ids: Vec<_> = due.iter().map(|d| d.account_id.as_str()).collect();
    // Most overdue first.
    assert_eq!(ids, vec![due1.id.as_str(), due2.id.as_str()]);
    assert_eq!(db.store.list_due_refreshes(NOW, 1).await.unwrap().len(), 1);
    // Claiming takes an account out of the next batch.
    db.store
        .claim_token_lease(&due1.id, "me", NOW, NOW + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    let due = db.store.list_due_refreshes(NOW, 100).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].account_id, due2.id);
}

pub async fn stable_force_is_limited_per_day_and_spaced(db: TestDb) {
    let account = account(&db.store, "wx-force").await;
    let day = 20_000;
    let take = |now: i64, day: i64| {
        let store = db.store.clone();
        let id = account.id.clone();
        async move {
            store
                .take_stable_force(&id, day, now, 30_000, 2)
                .await
                .unwrap()
        }
    };
    assert!(take(NOW, day).await);
    // Less than 30 s later: refused.
    assert!(!take(NOW + 29_999, day).await);
    assert!(take(NOW + 30_000, day).await);
    // The third of the day: refused however late.
    assert!(!take(NOW + 600_000, day).await);
    // A new day.
    assert!(take(NOW + 700_000, day + 1).await);
}

pub async fn cache_rows_carry_appid_mode_and_wrapped_dek(db: TestDb) {
    let owner = owner(&db.store).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = db
            .store
            .create_account(&new_account(&owner, &format!("wx-cache-{i}")), NOW)
            .await
            .unwrap();
        ids.push(created.id);
    }
    let rows = db.store.list_token_cache_rows(None, 2).await.unwrap();
    assert_eq!(rows.len(), 2);
    let rest = db
        .store
        .list_token_cache_rows(Some(&rows[1].account_id), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let row = db
        .store
        .get_token_cache_row(&ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.appid, "wx-cache-0");
    assert_eq!(row.state, TokenState::Pending);
    assert!(row.wrapped_dek.starts_with(b"wrapped-dek-under-kek-1"));
    assert!(row.token.is_none());
    assert!(!format!("{row:?}").contains("wrapped-dek"));
}

pub async fn earliest_due_skips_leases_and_disabled_accounts(db: TestDb) {
    assert_eq!(db.store.earliest_refresh_due().await.unwrap(), None);
    let owner = owner(&db.store).await;
    let a = db
        .store
        .create_account(&new_account(&owner, "wx-due-a"), NOW)
        .await
        .unwrap();
    let b = db
        .store
        .create_account(&new_account(&owner, "wx-due-b"), NOW + 5_000)
        .await
        .unwrap();
    assert_eq!(db.store.earliest_refresh_due().await.unwrap(), Some(NOW));
    // A leased account is due when its lease lapses.
    db.store
        .claim_token_lease(&a.id, "r", NOW, NOW + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        db.store.earliest_refresh_due().await.unwrap(),
        Some(NOW + 5_000)
    );
    db.store
        .set_account_state(
            &b.id,
            AccountState::Disabled,
            NOW,
            &store::audit::AuditRecord::new("test", "account.disable"),
        )
        .await
        .unwrap();
    assert_eq!(
        db.store.earliest_refresh_due().await.unwrap(),
        Some(NOW + 60_001)
    );
}

pub async fn token_refresh_is_announced_to_listeners(db: TestDb) {
    let account = account(&db.store, "wx-notify").await;
    let listener = db.store.listen_token_refreshes().await.unwrap();
    match (db.kind(), listener) {
        (store::DatabaseKind::Sqlite, None) => {
            // One process: nothing to announce, and sending is a no-op.
            db.store.notify_token_refreshed(&account.id).await.unwrap();
        }
        (store::DatabaseKind::Postgres, Some(mut listener)) => {
            db.store.notify_token_refreshed(&account.id).await.unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
                .await
                .expect("the notification arrives")
                .unwrap();
            assert_eq!(got, account.id);
        }
        (kind, listener) => panic!("{kind:?} gave listener {}", listener.is_some()),
    }
}

pub async fn refresh_claim_takes_lease_fence_and_budget_in_one_statement(db: TestDb) {
    let account = account(&db.store, "wx-claim-budget").await;
    let day = 20_000;
    let claim = |now: i64, day: i64| {
        let store = db.store.clone();
        let id = account.id.clone();
        async move {
            store
                .claim_token_refresh(&id, "replica-a", now, now + LEASE_MS, day, 2)
                .await
                .unwrap()
        }
    };
    let first = claim(NOW, day).await.expect("a free lease is claimed");
    assert_eq!(first.generation, 1);
    assert!(first.budget_taken);
    assert_eq!(first.upstream_calls_today, 1);
    // The sealed AppSecret and the wrapped DEK come back with the claim: no second read.
    assert!(!first.appsecret.is_empty() && !first.wrapped_dek.is_empty());
    assert!(!format!("{first:?}").contains("appsecret: ["));
    // Held: nobody else gets it, and the budget is untouched.
    assert!(claim(NOW + 1, day).await.is_none());
    // Not called after all: the lease and the budget unit come back.
    assert!(
        db.store
            .release_token_lease_unused(&account.id, first.generation, day)
            .await
            .unwrap()
    );
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!((row.upstream_calls_today, row.lease_holder), (0, None));

    for expected in 1..=2 {
        let claimed = claim(NOW, day).await.unwrap();
        assert!(claimed.budget_taken);
        assert_eq!(claimed.upstream_calls_today, expected);
        db.store
            .release_token_lease(&account.id, claimed.generation)
            .await
            .unwrap();
    }
    // The budget is spent: the lease is still granted (to record that), without a unit.
    let spent = claim(NOW, day).await.unwrap();
    assert!(!spent.budget_taken);
    assert_eq!(spent.upstream_calls_today, 2);
    assert_eq!(spent.generation, 4);
    // A stale generation refunds nothing.
    assert!(
        !db.store
            .release_token_lease_unused(&account.id, first.generation, day)
            .await
            .unwrap()
    );
    db.store
        .release_token_lease(&account.id, spent.generation)
        .await
        .unwrap();
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!(row.upstream_calls_today, 2);
    // A new day restarts the count in the same statement.
    let next_day = claim(NOW, day + 1).await.unwrap();
    assert!(next_day.budget_taken);
    assert_eq!(next_day.upstream_calls_today, 1);
    assert!(
        db.store
            .claim_token_refresh("no-such-account", "replica-a", NOW, NOW + LEASE_MS, day, 2)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn concurrent_refresh_claims_take_one_lease_and_one_unit(db: TestDb) {
    let account = account(&db.store, "wx-claim-race").await;
    let claimers = 16;
    let barrier = Arc::new(Barrier::new(claimers));
    let mut tasks = Vec::new();
    for i in 0..claimers {
        let store = db.store.clone();
        let barrier = barrier.clone();
        let id = account.id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim_token_refresh(&id, &format!("r{i}"), NOW, NOW + LEASE_MS, 20_000, 200)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap().is_some());
    }
    assert_eq!(winners, 1);
    let row = db.store.get_core_token(&account.id).await.unwrap().unwrap();
    assert_eq!((row.generation, row.upstream_calls_today), (1, 1));
}

pub async fn fenced_write_back_announces_the_token_itself(db: TestDb) {
    let account = account(&db.store, "wx-write-notify").await;
    let listener = db.store.listen_token_refreshes().await.unwrap();
    let generation = db
        .store
        .claim_token_lease(&account.id, "replica-a", NOW, NOW + LEASE_MS)
        .await
        .unwrap()
        .unwrap();
    // A stale write announces nothing.
    assert!(matches!(
        db.store
            .store_refreshed_token(&account.id, generation - 1, &refreshed(b"old"), NOW)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    db.store
        .store_refreshed_token(&account.id, generation, &refreshed(b"ct"), NOW)
        .await
        .unwrap();
    if let Some(mut listener) = listener {
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("the write-back's notification arrives")
            .unwrap();
        assert_eq!(got, account.id);
    } else {
        assert_eq!(db.kind(), store::DatabaseKind::Sqlite);
    }
}

pub async fn every_end_of_a_lease_is_announced(db: TestDb) {
    let account = account(&db.store, "wx-lease-notify").await;
    let mut listener = db.store.listen_token_refreshes().await.unwrap();
    let day = 20_000;
    let claim = || async {
        db.store
            .claim_token_refresh(&account.id, "replica-a", NOW, NOW + LEASE_MS, day, 200)
            .await
            .unwrap()
            .unwrap()
            .generation
    };
    let expect_announcement =
        async |listener: &mut Option<store::notify::TokenListener>| match listener {
            Some(listener) => {
                let got = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
                    .await
                    .expect("the end of the lease is announced")
                    .unwrap();
                assert_eq!(got, account.id);
            }
            None => assert_eq!(db.kind(), store::DatabaseKind::Sqlite),
        };
    // A failure recorded (waiters learn why at once), and a stale one announces nothing.
    let generation = claim().await;
    let failure = RefreshFailure {
        state: TokenState::Retrying,
        error_code: Some(-1),
        error_message: "busy".into(),
        error_ip: None,
        next_refresh_at: NOW + 1000,
    };
    assert!(matches!(
        db.store
            .record_refresh_failure(&account.id, generation - 1, &failure, NOW)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    assert_eq!(
        db.store
            .record_refresh_failure(&account.id, generation, &failure, NOW)
            .await
            .unwrap(),
        1
    );
    expect_announcement(&mut listener).await;
    // A lease given back, with or without its budget unit.
    let generation = claim().await;
    assert!(
        db.store
            .release_token_lease(&account.id, generation)
            .await
            .unwrap()
    );
    expect_announcement(&mut listener).await;
    let generation = claim().await;
    assert!(
        db.store
            .release_token_lease_unused(&account.id, generation, day)
            .await
            .unwrap()
    );
    expect_announcement(&mut listener).await;
    assert!(
        !db.store
            .release_token_lease(&account.id, generation - 1)
            .await
            .unwrap()
    );
    // The cache row shows the lease while it is held.
    let generation = claim().await;
    let row = db
        .store
        .get_token_cache_row(&account.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.lease_holder.as_deref(), Some("replica-a"));
    assert_eq!(row.lease_until, Some(NOW + LEASE_MS));
    assert_eq!(row.generation, generation);
}
