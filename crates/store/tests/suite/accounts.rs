use store::StoreError;
use store::accounts::{AccountFilter, AccountKind, AccountProfile, AccountState, TokenMode};
use store::end_users::Subscription;
use store::oidc::{LoginMode, OidcClient};
use store::pushes::ReceivedPush;
use store::stats::{CounterRow, StatsBatch};
use store::tokens::{RefreshFailure, TokenState};

use crate::harness::{NOW, TestDb, new_account, owner};

pub async fn account_crud_round_trips(db: TestDb) {
    let owner = owner(&db.store).await;
    let new = new_account(&owner, "wx1234567890abcdef");
    let created = db.store.create_account(&new, NOW).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.appid, "wx1234567890abcdef");
    assert_eq!(created.kind, AccountKind::Service);
    assert_eq!(created.token_mode, TokenMode::Token);
    assert_eq!(created.state, AccountState::Active);
    assert!(created.verified);
    assert_eq!((created.created_at, created.updated_at), (NOW, NOW));

    assert_eq!(
        db.store.get_account(&new.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        db.store
            .find_account_by_appid("wx1234567890abcdef")
            .await
            .unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        db.store.list_accounts_of_owner(&owner.id).await.unwrap(),
        vec![created.clone()]
    );
    assert_eq!(
        db.store.load_account_secrets(&new.id).await.unwrap(),
        Some(new.secrets.clone())
    );
    // A new account's token row exists and is due at once.
    let token = db.store.get_core_token(&new.id).await.unwrap().unwrap();
    assert_eq!(
        (token.next_refresh_at, token.generation, token.token),
        (NOW, 0, None)
    );

    let profile = AccountProfile {
        name: "Renamed".to_owned(),
        kind: AccountKind::Subscription,
        verified: false,
        token_mode: TokenMode::StableToken,
    };
    let updated = db
        .store
        .update_account_profile(&new.id, &profile, NOW + 5)
        .await
        .unwrap();
    assert_eq!(updated.name, "Renamed");
    assert_eq!(updated.kind, AccountKind::Subscription);
    assert!(!updated.verified);
    assert_eq!(updated.token_mode, TokenMode::StableToken);
    assert_eq!((updated.created_at, updated.updated_at), (NOW, NOW + 5));

    db.store
        .set_account_state(
            &new.id,
            AccountState::Disabled,
            NOW + 6,
            &store::audit::AuditRecord::new("test", "account.disable"),
        )
        .await
        .unwrap();
    assert_eq!(
        db.store.get_account(&new.id).await.unwrap().unwrap().state,
        AccountState::Disabled
    );

    let present = db.store.secrets_present(&new.id).await.unwrap();
    assert_eq!(present.appsecret_hint.as_deref(), Some("cret"));
    let record = store::audit::AuditRecord::new("test", "account.replace_secret");
    db.store
        .replace_appsecret(&new.id, b"new-appsecret", "cr3t", NOW + 7, &record)
        .await
        .unwrap();
    db.store
        .replace_push_credentials(&new.id, None, Some(b"aes"), NOW + 7, &record)
        .await
        .unwrap();
    let stored = db
        .store
        .load_account_secrets(&new.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.appsecret, b"new-appsecret");
    assert_eq!(stored.push_token, None);
    assert_eq!(stored.encoding_aes_key.as_deref(), Some(&b"aes"[..]));
    assert_eq!(
        db.store.secrets_present(&new.id).await.unwrap(),
        store::accounts::SecretsPresent {
            appsecret_hint: Some("cr3t".to_owned()),
            push_token: false,
            encoding_aes_key: true,
        }
    );
    assert_eq!(
        stored.wrapped_dek, new.secrets.wrapped_dek,
        "field updates keep the DEK"
    );

    assert!(matches!(
        db.store
            .update_account_profile("missing", &profile, NOW)
            .await,
        Err(StoreError::NotFound { what: "account" })
    ));
    assert!(matches!(
        db.store
            .set_account_state(
                "missing",
                AccountState::Active,
                NOW,
                &store::audit::AuditRecord::new("test", "account.disable")
            )
            .await,
        Err(StoreError::NotFound { what: "account" })
    ));
    assert!(db.store.get_account("missing").await.unwrap().is_none());
    // Debug output of secrets shows no bytes.
    assert!(!format!("{stored:?}").contains("appsecret-ciphertext"));
}

pub async fn duplicate_appid_is_rejected(db: TestDb) {
    let owner = owner(&db.store).await;
    db.store
        .create_account(&new_account(&owner, "wx-dup"), NOW)
        .await
        .unwrap();
    let error = db
        .store
        .create_account(&new_account(&owner, "wx-dup"), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Duplicate {
                what: "account appid"
            }
        ),
        "{error:?}"
    );
    // The failed transaction left nothing behind.
    assert_eq!(db.count_rows("accounts").await, 1);
    assert_eq!(db.count_rows("account_secrets").await, 1);
    assert_eq!(db.count_rows("core_tokens").await, 1);

    let mut orphan = new_account(&owner, "wx-orphan");
    orphan.owner_user_id = "no-such-user".to_owned();
    let error = db.store.create_account(&orphan, NOW).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { what: "owner user" }),
        "{error:?}"
    );
}

pub async fn deleting_an_account_shreds_its_secrets_and_cascades(db: TestDb) {
    let owner = owner(&db.store).await;
    let doomed = db
        .store
        .create_account(&new_account(&owner, "wx-doomed"), NOW)
        .await
        .unwrap();
    let kept = db
        .store
        .create_account(&new_account(&owner, "wx-kept"), NOW)
        .await
        .unwrap();
    for account in [&doomed, &kept] {
        let id = &account.id;
        db.store
            .record_subscription(
                id,
                &Subscription {
                    openid: "o-user".to_owned(),
                    subscribed: true,
                    subscribe_time: Some(NOW),
                    subscribe_scene: None,
                    qr_scene: None,
                    event_time: NOW,
                },
                NOW,
            )
            .await
            .unwrap();
        db.store
            .create_api_key(
                &store::api_keys::NewApiKey {
                    id: store::new_id(),
                    ..store::api_keys::NewApiKey::with_all_scopes(
                        id,
                        &format!("hash-{id}"),
                        "backend",
                    )
                },
                NOW,
                &store::audit::AuditRecord::new("test", "api_key.create"),
            )
            .await
            .unwrap();
        db.store
            .record_push_once(&ReceivedPush {
                account_id: id.clone(),
                dedup_key: "o-user:1".to_owned(),
                msg_type: "event".to_owned(),
                event: Some("subscribe".to_owned()),
                openid: Some("o-user".to_owned()),
                received_at: NOW,
                summary: "subscribe".to_owned(),
            })
            .await
            .unwrap();
        db.store
            .add_stats(&StatsBatch {
                hourly: vec![CounterRow {
                    account_id: id.clone(),
                    start: NOW,
                    metric: "login.completed".to_owned(),
                    label: String::new(),
                    value: 1,
                }],
                daily: vec![CounterRow {
                    account_id: id.clone(),
                    start: NOW,
                    metric: "login.completed".to_owned(),
                    label: String::new(),
                    value: 1,
                }],
                ..StatsBatch::default()
            })
            .await
            .unwrap();
        db.store
            .create_oidc_client(
                &OidcClient {
                    id: store::new_id(),
                    account_id: id.clone(),
                    client_id: format!("client-{id}"),
                    client_secret_hash: None,
                    redirect_uris: vec!["https://app.example/cb".to_owned()],
                    login_mode: LoginMode::Userinfo,
                    name: "site".to_owned(),
                    created_at: NOW,
                    id_token_signed_response_alg: Default::default(),
                    login_surface: store::oidc::LoginSurface::Auto,
                    scan_confirmation: None,
                },
                NOW,
                &store::audit::AuditRecord::new("test", "website.create"),
            )
            .await
            .unwrap();
    }

    db.store
        .delete_account(
            &doomed.id,
            NOW,
            &store::audit::AuditRecord::new("test", "account.delete"),
        )
        .await
        .unwrap();

    assert!(db.store.get_account(&doomed.id).await.unwrap().is_none());
    assert!(
        db.store
            .load_account_secrets(&doomed.id)
            .await
            .unwrap()
            .is_none()
    );
    for table in [
        "accounts",
        "account_secrets",
        "core_tokens",
        "end_users",
        "api_keys",
        "received_pushes",
        "stats_hourly",
        "stats_daily",
        "oidc_clients",
    ] {
        assert_eq!(
            db.count_rows(table).await,
            1,
            "{table} keeps only the other account's row"
        );
    }
    assert!(
        db.store
            .load_account_secrets(&kept.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        db.store
            .delete_account(
                &doomed.id,
                NOW,
                &store::audit::AuditRecord::new("test", "account.delete")
            )
            .await,
        Err(StoreError::NotFound { what: "account" })
    ));
}

pub async fn accounts_page_by_id_without_secrets(db: TestDb) {
    let owner = owner(&db.store).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let account = db
            .store
            .create_account(&new_account(&owner, &format!("wx-page-{i}")), NOW)
            .await
            .unwrap();
        ids.push(account.id);
    }
    ids.sort();
    assert_eq!(db.store.count_accounts().await.unwrap(), 7);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db
            .store
            .list_accounts_page(after.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|a| a.id.clone());
        seen.extend(page.into_iter().map(|a| a.id));
    }
    assert_eq!(seen, ids);
}

pub async fn account_health_lists_by_owner_in_pages_with_token_state(db: TestDb) {
    let alice = owner(&db.store).await;
    let bob = owner(&db.store).await;
    let mut alices = Vec::new();
    for i in 0..3 {
        let account = db
            .store
            .create_account(&new_account(&alice, &format!("wx-health-a{i}")), NOW)
            .await
            .unwrap();
        alices.push(account.id);
    }
    db.store
        .create_account(&new_account(&bob, "wx-health-b"), NOW)
        .await
        .unwrap();
    let all = db
        .store
        .list_account_health_page(&AccountFilter::default(), None, 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    // A new account has its pending token row.
    assert!(all.iter().all(|(_, health)| {
        health.as_ref().is_some_and(|h| {
            h.state == store::tokens::TokenState::Pending && h.expires_at.is_none()
        })
    }));
    let of_alice = AccountFilter {
        owner_user_id: Some(alice.id.clone()),
        ..AccountFilter::default()
    };
    let first = db
        .store
        .list_account_health_page(&of_alice, None, 2)
        .await
        .unwrap();
    let rest = db
        .store
        .list_account_health_page(&of_alice, Some(&first[1].0.id), 2)
        .await
        .unwrap();
    let ids: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|(a, _)| a.id.clone())
        .collect();
    alices.sort();
    assert_eq!(ids, alices);
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|(a, _)| a.owner_user_id == alice.id)
    );
}

pub async fn account_health_filters_by_state_kind_and_search_and_counts(db: TestDb) {
    let alice = owner(&db.store).await;
    let mut made = Vec::new();
    for (appid, name, kind) in [
        ("wxf000000000000001", "Tea House", AccountKind::Service),
        (
            "wxf000000000000002",
            "tea_lovers 100%",
            AccountKind::Subscription,
        ),
        ("wxf000000000000003", "茶馆", AccountKind::Service),
        ("wxf000000000000004", "Coffee", AccountKind::Service),
    ] {
        let mut new = new_account(&alice, appid);
        new.name = name.to_owned();
        new.kind = kind;
        made.push(db.store.create_account(&new, NOW).await.unwrap());
    }
    // The third needs a person (40164), the fourth is disabled.
    let generation = db
        .store
        .claim_token_refresh(&made[2].id, "test", NOW, NOW + 60_000, 0, i64::MAX)
        .await
        .unwrap()
        .unwrap()
        .generation;
    db.store
        .record_refresh_failure(
            &made[2].id,
            generation,
            &RefreshFailure {
                state: TokenState::NeedsAttention,
                error_code: Some(40164),
                error_message: "not whitelisted".to_owned(),
                error_ip: Some("203.0.113.9".to_owned()),
                next_refresh_at: NOW + 60_000,
            },
            NOW,
        )
        .await
        .unwrap();
    db.store
        .set_account_state(
            &made[3].id,
            AccountState::Disabled,
            NOW,
            &store::audit::AuditRecord::new("test", "account.disable").account(made[3].id.clone()),
        )
        .await
        .unwrap();

    let appids = |filter: AccountFilter| {
        let store = db.store.clone();
        async move {
            store
                .list_account_health_page(&filter, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|(a, _)| a.appid)
                .collect::<Vec<_>>()
        }
    };
    let search = |text: &str| AccountFilter {
        search: Some(text.to_owned()),
        ..AccountFilter::default()
    };
    assert_eq!(
        appids(search("TEA")).await,
        [made[0].appid.clone(), made[1].appid.clone()]
    );
    // `%` and `_` are literal: "a_l" matches "tea_lovers", not "Tea House".
    assert_eq!(appids(search("a_l")).await, [made[1].appid.clone()]);
    assert_eq!(appids(search("100%")).await, [made[1].appid.clone()]);
    assert!(appids(search("0%0")).await.is_empty());
    assert_eq!(appids(search("茶")).await, [made[2].appid.clone()]);
    // An AppID matches exactly, not in part.
    assert_eq!(
        appids(search(" wxf000000000000004 ")).await,
        [made[3].appid.clone()]
    );
    assert!(appids(search("wxf00000000000000")).await.is_empty());
    assert_eq!(
        appids(AccountFilter {
            kind: Some(AccountKind::Subscription),
            ..AccountFilter::default()
        })
        .await,
        [made[1].appid.clone()]
    );
    assert_eq!(
        appids(AccountFilter {
            token_state: Some(TokenState::NeedsAttention),
            ..AccountFilter::default()
        })
        .await,
        [made[2].appid.clone()]
    );
    assert_eq!(
        appids(AccountFilter {
            state: Some(AccountState::Disabled),
            ..AccountFilter::default()
        })
        .await,
        [made[3].appid.clone()]
    );
    // Filters combine.
    assert!(
        appids(AccountFilter {
            token_state: Some(TokenState::Pending),
            kind: Some(AccountKind::Subscription),
            search: Some("coffee".to_owned()),
            ..AccountFilter::default()
        })
        .await
        .is_empty()
    );

    let counts = db.store.count_accounts_by_health().await.unwrap();
    assert_eq!(
        counts,
        [
            (AccountState::Active, TokenState::NeedsAttention, 1),
            (AccountState::Active, TokenState::Pending, 2),
            (AccountState::Disabled, TokenState::Pending, 1),
        ]
    );
}

pub async fn accounts_are_created_in_batches_all_or_none(db: TestDb) {
    let owner = owner(&db.store).await;
    // More rows than one statement takes, so the batch spans several statements.
    let batch: Vec<_> = (0..1_203)
        .map(|i| new_account(&owner, &format!("wx{i:016x}")))
        .collect();
    let record = store::audit::AuditRecord::new("cli", "account.import")
        .details(serde_json::json!({ "count": batch.len() }));
    let created = db
        .store
        .create_accounts(&batch, NOW, Some(&record))
        .await
        .unwrap();
    assert_eq!(created, 1_203);
    assert_eq!(db.count_rows("accounts").await, 1_203);
    assert_eq!(db.count_rows("account_secrets").await, 1_203);
    assert_eq!(db.count_rows("core_tokens").await, 1_203);
    // Each row as the single registration writes it: active, its secrets, its token due now.
    let last = &batch[1_202];
    let account = db.store.get_account(&last.id).await.unwrap().unwrap();
    assert_eq!(account.appid, last.appid);
    assert_eq!(account.state, AccountState::Active);
    assert_eq!((account.created_at, account.updated_at), (NOW, NOW));
    assert_eq!(
        db.store.load_account_secrets(&last.id).await.unwrap(),
        Some(last.secrets.clone())
    );
    let token = db.store.get_core_token(&last.id).await.unwrap().unwrap();
    assert_eq!(token.state, TokenState::Pending);
    assert_eq!(token.next_refresh_at, NOW);
    let audit = db
        .store
        .list_audit_page(&store::audit::AuditFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "account.import");

    // One appid already registered fails the whole batch: nothing of it is stored.
    let mut again: Vec<_> = (2_000..2_600)
        .map(|i| new_account(&owner, &format!("wx{i:016x}")))
        .collect();
    again.push(new_account(&owner, &batch[7].appid));
    let error = db
        .store
        .create_accounts(&again, NOW, Some(&record))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Duplicate {
                what: "account appid"
            }
        ),
        "{error:?}"
    );
    assert_eq!(db.count_rows("accounts").await, 1_203);
    assert_eq!(db.count_rows("account_secrets").await, 1_203);
    assert_eq!(db.count_rows("core_tokens").await, 1_203);
    assert_eq!(db.count_rows("audit_log").await, 1);
    assert_eq!(db.store.create_accounts(&[], NOW, None).await.unwrap(), 0);
}
