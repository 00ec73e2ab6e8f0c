use serde_json::json;
use store::StoreError;
use store::audit::{AuditFilter, AuditRecord};
use store::changes::ChangeKind;
use store::end_users::{CreatedVia, EndUserLogin, Subscription};
use store::pushes::ReceivedPush;

use crate::harness::{NOW, TestDb, account};

fn login(openid: &str, via: CreatedVia) -> EndUserLogin {
    EndUserLogin {
        openid: openid.to_owned(),
        via,
        unionid: None,
        nickname: None,
        avatar_url: None,
        subscribed: None,
        subscribe_time: None,
        subscribe_scene: None,
    }
}

pub async fn end_user_upsert_keeps_first_login_and_fills_profile(db: TestDb) {
    let account = account(&db.store, "wx-users").await;
    let first = db
        .store
        .record_end_user_login(
            &account.id,
            &EndUserLogin {
                subscribed: Some(true),
                ..login("o-1", CreatedVia::LoginBase)
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(first.created_via, CreatedVia::LoginBase);
    assert_eq!(
        (first.first_login_at, first.last_login_at),
        (Some(NOW), Some(NOW))
    );
    assert!(first.subscribed);
    assert_eq!(first.nickname, None);

    let second = db
        .store
        .record_end_user_login(
            &account.id,
            &EndUserLogin {
                unionid: Some("u-1".to_owned()),
                nickname: Some("小明".to_owned()),
                avatar_url: Some("https://thirdwx.qlogo.cn/x".to_owned()),
                ..login("o-1", CreatedVia::LoginUserinfo)
            },
            NOW + 1_000,
        )
        .await
        .unwrap();
    assert_eq!(second.id, first.id, "same row, not a new user");
    assert_eq!(
        second.created_via,
        CreatedVia::LoginBase,
        "created_via never changes"
    );
    assert_eq!(second.first_login_at, Some(NOW));
    assert_eq!(second.last_login_at, Some(NOW + 1_000));
    assert_eq!(second.nickname.as_deref(), Some("小明"));
    assert_eq!(second.unionid.as_deref(), Some("u-1"));
    assert!(
        second.subscribed,
        "unknown subscription keeps the stored one"
    );

    // A later login without profile data keeps the profile.
    let third = db
        .store
        .record_end_user_login(
            &account.id,
            &login("o-1", CreatedVia::LoginBase),
            NOW + 2_000,
        )
        .await
        .unwrap();
    assert_eq!(third.nickname.as_deref(), Some("小明"));
    assert_eq!(
        db.store.get_end_user(&account.id, "o-1").await.unwrap(),
        Some(third)
    );
    assert_eq!(db.store.count_end_users(&account.id).await.unwrap(), (1, 1));
    assert!(matches!(
        db.store
            .record_end_user_login("missing", &login("o-1", CreatedVia::LoginBase), NOW)
            .await,
        Err(StoreError::NotFound { what: "account" })
    ));
}

pub async fn unsubscribe_keeps_the_user_and_login_data(db: TestDb) {
    let account = account(&db.store, "wx-subs").await;
    let subscribe = Subscription {
        openid: "o-2".to_owned(),
        subscribed: true,
        subscribe_time: Some(NOW / 1000),
        subscribe_scene: Some("ADD_SCENE_QR_CODE".to_owned()),
        qr_scene: Some("campaign-7".to_owned()),
        event_time: NOW,
    };
    let user = db
        .store
        .record_subscription(&account.id, &subscribe, NOW)
        .await
        .unwrap();
    assert_eq!(user.created_via, CreatedVia::Push);
    assert!(user.subscribed);
    assert_eq!(user.first_login_at, None);
    db.store
        .record_end_user_login(&account.id, &login("o-2", CreatedVia::LoginBase), NOW + 1)
        .await
        .unwrap();

    let unsubscribe = Subscription {
        openid: "o-2".to_owned(),
        subscribed: false,
        subscribe_time: None,
        subscribe_scene: None,
        qr_scene: None,
        event_time: NOW + 2,
    };
    let user = db
        .store
        .record_subscription(&account.id, &unsubscribe, NOW + 2)
        .await
        .unwrap();
    assert!(!user.subscribed);
    assert_eq!(user.qr_scene.as_deref(), Some("campaign-7"));
    assert_eq!(user.subscribe_time, Some(NOW / 1000));
    assert_eq!(user.first_login_at, Some(NOW + 1));
    assert_eq!(user.created_via, CreatedVia::Push);
    assert_eq!(db.store.count_end_users(&account.id).await.unwrap(), (1, 0));

    db.store
        .record_subscription(
            &account.id,
            &Subscription {
                openid: "o-3".to_owned(),
                ..subscribe
            },
            NOW,
        )
        .await
        .unwrap();
    let page = db
        .store
        .list_end_users_page(&account.id, None, 1)
        .await
        .unwrap();
    assert_eq!(page[0].openid, "o-2");
    let page = db
        .store
        .list_end_users_page(&account.id, Some("o-2"), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].openid, "o-3");
}

pub async fn push_dedup_key_is_recorded_once(db: TestDb) {
    let account = account(&db.store, "wx-push").await;
    let other = crate::harness::account(&db.store, "wx-push-other").await;
    let push = ReceivedPush {
        account_id: account.id.clone(),
        dedup_key: "msgid-1234567890".to_owned(),
        msg_type: "text".to_owned(),
        event: None,
        openid: Some("o-1".to_owned()),
        received_at: NOW,
        summary: "text message".to_owned(),
    };
    assert!(
        db.store.record_push_once(&push).await.unwrap(),
        "first delivery is new"
    );
    assert!(
        !db.store
            .record_push_once(&ReceivedPush {
                received_at: NOW + 5_000,
                ..push.clone()
            })
            .await
            .unwrap(),
        "WeChat's retry is reported as already seen, without an error"
    );
    // The same key at another account is a different push.
    assert!(
        db.store
            .record_push_once(&ReceivedPush {
                account_id: other.id.clone(),
                ..push.clone()
            })
            .await
            .unwrap()
    );
    assert_eq!(
        db.store.list_recent_pushes(&account.id, 10).await.unwrap(),
        vec![push]
    );
    assert_eq!(db.store.delete_pushes_before(NOW + 1).await.unwrap(), 2);
}

pub async fn revoked_api_key_no_longer_authenticates(db: TestDb) {
    let account = account(&db.store, "wx-keys").await;
    let key = db
        .store
        .create_api_key(
            &store::api_keys::NewApiKey {
                id: store::new_id(),
                ..store::api_keys::NewApiKey::with_all_scopes(
                    &account.id,
                    "sha256-of-key",
                    "backend",
                )
            },
            NOW,
            &store::audit::AuditRecord::new("test", "api_key.create"),
        )
        .await
        .unwrap();
    assert_eq!(key.last_used_at, None);
    let used = db
        .store
        .use_api_key("sha256-of-key", NOW + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (used.id.as_str(), used.last_used_at),
        (key.id.as_str(), Some(NOW + 5))
    );
    assert!(
        db.store
            .use_api_key("some-other-hash", NOW)
            .await
            .unwrap()
            .is_none()
    );

    let error = db
        .store
        .create_api_key(
            &store::api_keys::NewApiKey {
                id: store::new_id(),
                ..store::api_keys::NewApiKey::with_all_scopes(&account.id, "sha256-of-key", "copy")
            },
            NOW,
            &store::audit::AuditRecord::new("test", "api_key.create"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Duplicate { what: "api key" }),
        "{error:?}"
    );

    assert!(
        !db.store
            .revoke_api_key(
                "other-account",
                &key.id,
                NOW + 6,
                &store::audit::AuditRecord::new("test", "api_key.revoke")
            )
            .await
            .unwrap()
    );
    assert!(
        db.store
            .revoke_api_key(
                &account.id,
                &key.id,
                NOW + 6,
                &store::audit::AuditRecord::new("test", "api_key.revoke")
            )
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .revoke_api_key(
                &account.id,
                &key.id,
                NOW + 7,
                &store::audit::AuditRecord::new("test", "api_key.revoke")
            )
            .await
            .unwrap()
    );
    assert!(
        db.store
            .use_api_key("sha256-of-key", NOW + 8)
            .await
            .unwrap()
            .is_none()
    );
    let listed = db.store.list_api_keys(&account.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(NOW + 6));
    assert_eq!(listed[0].last_used_at, Some(NOW + 5));
}

pub async fn audit_log_lists_newest_first(db: TestDb) {
    for i in 0..5 {
        let record = AuditRecord::new(if i % 2 == 0 { "user-1" } else { "cli" }, "account.rename")
            .account(format!("account-{}", i % 2))
            .target(format!("target-{i}"))
            .details(json!({ "appid": format!("wx-{i}") }));
        db.store.append_audit(&record, NOW + i).await.unwrap();
    }
    let all = AuditFilter::default();
    let first = db.store.list_audit_page(&all, None, 2).await.unwrap();
    let targets = |entries: &[store::audit::AuditEntry]| {
        entries
            .iter()
            .map(|e| e.target.clone().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(targets(&first), ["target-4", "target-3"]);
    assert_eq!(first[0].details, json!({ "appid": "wx-4" }));
    assert_eq!(first[0].account_id.as_deref(), Some("account-0"));
    assert_eq!(first[0].at, NOW + 4);
    let rest = db
        .store
        .list_audit_page(&all, Some(&first[1].id), 10)
        .await
        .unwrap();
    assert_eq!(targets(&rest), ["target-2", "target-1", "target-0"]);

    // Filters combine, and pages continue within the filter.
    let by = |account: Option<&str>, actor: Option<&str>, from: Option<i64>| AuditFilter {
        account_id: account.map(str::to_owned),
        actor: actor.map(str::to_owned),
        from,
        ..AuditFilter::default()
    };
    let account_0 = db
        .store
        .list_audit_page(&by(Some("account-0"), None, None), None, 10)
        .await
        .unwrap();
    assert_eq!(targets(&account_0), ["target-4", "target-2", "target-0"]);
    let cli = db
        .store
        .list_audit_page(&by(None, Some("cli"), None), None, 1)
        .await
        .unwrap();
    assert_eq!(targets(&cli), ["target-3"]);
    let next = db
        .store
        .list_audit_page(&by(None, Some("cli"), None), Some(&cli[0].id), 1)
        .await
        .unwrap();
    assert_eq!(targets(&next), ["target-1"]);
    let recent = db
        .store
        .list_audit_page(
            &by(Some("account-0"), Some("user-1"), Some(NOW + 2)),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(targets(&recent), ["target-4", "target-2"]);
    let action = AuditFilter {
        action: Some("account.delete".to_owned()),
        until: Some(NOW + 3),
        ..AuditFilter::default()
    };
    assert!(
        db.store
            .list_audit_page(&action, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_failed_change_leaves_no_audit_entry_and_no_announcement(db: TestDb) {
    let account = account(&db.store, "wx-atomic").await;
    let record = |action: &str| {
        AuditRecord::new("cli", action)
            .account(account.id.clone())
            .announce(ChangeKind::ApiKeys)
    };
    let key = store::api_keys::NewApiKey::with_all_scopes(&account.id, "same-hash", "one");
    db.store
        .create_api_key(&key, NOW, &record("api_key.create"))
        .await
        .unwrap();
    // The same hash again: the insert fails, and its audit entry and change row with it.
    let again = store::api_keys::NewApiKey::with_all_scopes(&account.id, "same-hash", "two");
    assert!(matches!(
        db.store
            .create_api_key(&again, NOW + 1, &record("api_key.create.again"))
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    // Nothing to revoke: nothing written.
    assert!(
        !db.store
            .revoke_api_key(
                &account.id,
                "no-such-key",
                NOW + 2,
                &record("api_key.revoke")
            )
            .await
            .unwrap()
    );
    let actions: Vec<String> = db
        .store
        .list_audit_page(&AuditFilter::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["api_key.create"]);
    let changes = db
        .store
        .list_changes_since(i64::MIN, i64::MIN, 100)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
}

pub async fn announced_changes_reach_a_feed_once_and_in_order(db: TestDb) {
    let mut feed = db.store.change_feed().await.unwrap();
    // Written before the feed existed: not replayed. (None here; the feed starts empty.)
    for (i, kind) in [
        ChangeKind::Account,
        ChangeKind::ApiKeys,
        ChangeKind::Refresh,
    ]
    .into_iter()
    .enumerate()
    {
        let record = AuditRecord::new("cli", "test.change")
            .account(format!("account-{i}"))
            .announce(kind);
        db.store
            .append_audit(&record, NOW + i as i64)
            .await
            .unwrap();
    }
    // Not announced: audited only.
    db.store
        .append_audit(
            &AuditRecord::new("cli", "test.quiet").account("account-9"),
            NOW,
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
            .await
            .expect("the feed wakes")
            .unwrap();
        seen.extend(batch);
    }
    assert_eq!(
        seen.iter()
            .map(|c| (c.account_id.as_str(), c.kind))
            .collect::<Vec<_>>(),
        [
            ("account-0", ChangeKind::Account),
            ("account-1", ChangeKind::ApiKeys),
            ("account-2", ChangeKind::Refresh)
        ]
    );
    // A second feed opened now starts after them; a new change reaches both, once each.
    let mut late = db.store.change_feed().await.unwrap();
    let record = AuditRecord::new("cli", "test.change")
        .account("account-3")
        .announce(ChangeKind::Websites);
    db.store.append_audit(&record, NOW + 10).await.unwrap();
    for feed in [&mut feed, &mut late] {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
            .await
            .expect("the feed wakes")
            .unwrap();
        assert_eq!(batch.len(), 1, "{batch:?}");
        assert_eq!(batch[0].account_id, "account-3");
    }
    // Old rows are swept by time.
    assert_eq!(db.store.delete_changes_before(NOW + 5).await.unwrap(), 3);
}

pub async fn delayed_subscribe_does_not_undo_a_later_unsubscribe(db: TestDb) {
    let account = account(&db.store, "wx-order").await;
    let event = |subscribed: bool, at: i64, scene: Option<&str>| Subscription {
        openid: "o-7".to_owned(),
        subscribed,
        subscribe_time: subscribed.then_some(at),
        subscribe_scene: scene.map(|_| "ADD_SCENE_QR_CODE".to_owned()),
        qr_scene: scene.map(str::to_owned),
        event_time: at,
    };
    db.store
        .record_subscription(&account.id, &event(true, NOW, Some("first")), NOW)
        .await
        .unwrap();
    db.store
        .record_subscription(&account.id, &event(false, NOW + 60_000, None), NOW + 60_000)
        .await
        .unwrap();
    // WeChat's retry of the first subscribe, delivered after the unsubscribe.
    let user = db
        .store
        .record_subscription(&account.id, &event(true, NOW, Some("first")), NOW + 61_000)
        .await
        .unwrap();
    assert!(!user.subscribed, "the later unsubscribe stands");
    assert_eq!(user.updated_at, NOW + 60_000);

    // A new follow without a QR code replaces the old follow's scene.
    let user = db
        .store
        .record_subscription(
            &account.id,
            &event(true, NOW + 120_000, None),
            NOW + 120_000,
        )
        .await
        .unwrap();
    assert!(user.subscribed);
    assert_eq!(user.qr_scene, None);
    assert_eq!(user.subscribe_scene, None);
    assert_eq!(user.subscribe_time, Some(NOW + 120_000));
}

/// A well-formed key that matches nothing is answered by a read alone: while another
/// connection holds a lock that lets reads through and blocks every write to `api_keys`, the
/// unknown key is still refused at once (an `UPDATE` would wait for the lock).
pub async fn an_unknown_api_key_is_refused_without_a_write(db: TestDb) {
    use sqlx::{AssertSqlSafe, Executor};
    let account = account(&db.store, "wx-fake-keys").await;
    db.store
        .create_api_key(
            &store::api_keys::NewApiKey::with_all_scopes(&account.id, "real-hash", "backend"),
            NOW,
            &AuditRecord::new("test", "api_key.create"),
        )
        .await
        .unwrap();
    let patience = std::time::Duration::from_secs(3);
    assert!(patience < store::SQLITE_BUSY_TIMEOUT);
    let refused = match &db.raw {
        crate::harness::Raw::Sqlite(pool) => {
            let mut writer = pool.acquire().await.unwrap();
            writer
                .execute(AssertSqlSafe("BEGIN IMMEDIATE".to_owned()))
                .await
                .unwrap();
            let refused =
                tokio::time::timeout(patience, db.store.use_api_key("fake-hash", NOW)).await;
            writer
                .execute(AssertSqlSafe("ROLLBACK".to_owned()))
                .await
                .unwrap();
            refused
        }
        crate::harness::Raw::Postgres(pool) => {
            let mut writer = pool.begin().await.unwrap();
            writer
                .execute(AssertSqlSafe(
                    "LOCK TABLE api_keys IN EXCLUSIVE MODE".to_owned(),
                ))
                .await
                .unwrap();
            let refused =
                tokio::time::timeout(patience, db.store.use_api_key("fake-hash", NOW)).await;
            writer.rollback().await.unwrap();
            refused
        }
    };
    let refused = refused.expect("answered while writes wait: no write was attempted");
    assert!(refused.unwrap().is_none());
    // The real key still records its use once writes go through.
    let used = db.store.use_api_key("real-hash", NOW + 7).await.unwrap();
    assert_eq!(used.unwrap().last_used_at, Some(NOW + 7));
}

fn reply_route(account_id: &str, id: &str) -> store::push_routes::PushRoute {
    store::push_routes::PushRoute {
        id: id.to_owned(),
        account_id: account_id.to_owned(),
        position: 0,
        target_url: "https://bot.example.com/wechat".to_owned(),
        match_msg_type: Some("text".to_owned()),
        match_event: None,
        match_event_key_prefix: None,
        delivery: store::push_routes::Delivery::Reply,
        push_mode: None,
        token: Some(b"sealed token".to_vec()),
        encoding_aes_key: None,
        relay: false,
        enabled: true,
        created_at: NOW,
        updated_at: NOW,
    }
}

pub async fn push_account_reads_account_secrets_settings_and_routes_at_once(db: TestDb) {
    let account = account(&db.store, "wx-push-account").await;
    let read = db.store.push_account("wx-push-account").await.unwrap();
    let read = read.expect("the account is found by its appid");
    assert_eq!(read.account, account);
    assert_eq!(
        Some(read.secrets.clone()),
        db.store.load_account_secrets(&account.id).await.unwrap()
    );
    assert_eq!(
        read.settings,
        store::gateway::GatewaySettings::default(),
        "no settings row reads as the defaults"
    );
    assert!(read.routes.is_empty());

    let settings = store::gateway::GatewaySettings {
        original_id: Some("gh_0123456789ab".to_owned()),
        push_relay_url: Some("https://relay.example.com/push".to_owned()),
        push_mode: Some(store::gateway::PushMode::Safe),
        follow_qr_url: None,
        follow_link: Some("https://mp.weixin.qq.com/x".to_owned()),
    };
    let record = AuditRecord::new("test", "settings.update");
    db.store
        .set_gateway_settings(&account.id, &settings, NOW, &record)
        .await
        .unwrap();
    let record = AuditRecord::new("test", "push_route.create");
    db.store
        .save_push_route(&reply_route(&account.id, "route-1"), false, &record)
        .await
        .unwrap();
    let read = db
        .store
        .push_account("wx-push-account")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read.settings,
        db.store.gateway_settings(&account.id).await.unwrap()
    );
    assert_eq!(read.settings, settings);
    assert_eq!(
        read.routes,
        db.store.push_routes(&account.id).await.unwrap(),
        "the routes in order, as the account's own read gives them"
    );
    assert_eq!(read.routes.len(), 2, "the relay route and the reply route");
    assert!(
        db.store
            .push_account("wx-not-there")
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn push_replies_are_finished_in_one_batch(db: TestDb) {
    use store::push_routes::StoredReply;
    let account = account(&db.store, "wx-replies").await;
    let record = AuditRecord::new("test", "push_route.create");
    db.store
        .save_push_route(&reply_route(&account.id, "route-r"), false, &record)
        .await
        .unwrap();
    for key in ["m-1", "m-2", "m-3"] {
        assert!(
            db.store
                .begin_push_reply(&account.id, key, "route-r", NOW)
                .await
                .unwrap()
        );
    }
    // Every byte value, so the batch's encoding of the sealed reply is checked whole.
    let sealed: Vec<u8> = (0..=255u8).rev().collect();
    db.store
        .finish_push_replies(
            &[
                (&account.id, "m-1", Some(&sealed)),
                (&account.id, "m-2", None),
                (&account.id, "not-begun", Some(b"x")),
            ],
            NOW + 5,
        )
        .await
        .unwrap();
    assert_eq!(
        db.store.push_reply(&account.id, "m-1").await.unwrap(),
        Some(StoredReply::Done(Some(sealed)))
    );
    assert_eq!(
        db.store.push_reply(&account.id, "m-2").await.unwrap(),
        Some(StoredReply::Done(None))
    );
    assert_eq!(
        db.store.push_reply(&account.id, "m-3").await.unwrap(),
        Some(StoredReply::Pending { started_at: NOW }),
        "a reply not in the batch is left as it was"
    );
    assert_eq!(
        db.store.push_reply(&account.id, "not-begun").await.unwrap(),
        None
    );
    db.store.finish_push_replies(&[], NOW + 6).await.unwrap();
}

async fn record_push(
    db: &TestDb,
    push: &ReceivedPush,
    nonce: &str,
    reply_route: Option<&str>,
) -> Result<store::gateway::PushRecording, StoreError> {
    let incoming = store::gateway::IncomingPush {
        push,
        subscription: None,
        push_time: NOW / 1000,
        nonce,
        authenticated: true,
        reply_route,
        copies: &[],
        copy_limit: 100,
    };
    db.store.record_push_with_subscription(&incoming, NOW).await
}

pub async fn a_push_is_recorded_once_per_message_and_nonce(db: TestDb) {
    use store::gateway::PushRecording;
    use store::push_routes::StoredReply;
    let account = account(&db.store, "wx-record-push").await;
    let record = AuditRecord::new("test", "push_route.create");
    db.store
        .save_push_route(&reply_route(&account.id, "route-p"), false, &record)
        .await
        .unwrap();
    let push = |key: &str| ReceivedPush {
        account_id: account.id.clone(),
        dedup_key: key.to_owned(),
        msg_type: "text".to_owned(),
        event: None,
        openid: Some("o-sender".to_owned()),
        received_at: NOW,
        summary: "message text".to_owned(),
    };
    let (first, other) = (push("msg-1"), push("msg-2"));
    let processed = PushRecording::Processed {
        user_created: false,
        copies_dropped: Vec::new(),
    };
    assert_eq!(
        record_push(&db, &first, "n-1", Some("route-p"))
            .await
            .unwrap(),
        processed
    );
    assert_eq!(
        db.store.push_reply(&account.id, "msg-1").await.unwrap(),
        Some(StoredReply::Pending { started_at: NOW }),
        "the reply route's call is announced with the push"
    );
    // WeChat's retry with the same query, and a delivery of the same message with another nonce.
    for nonce in ["n-1", "n-2"] {
        assert_eq!(
            record_push(&db, &first, nonce, Some("route-p"))
                .await
                .unwrap(),
            PushRecording::Retry
        );
    }
    // A nonce already spent, for another message: nothing stored.
    assert_eq!(
        record_push(&db, &other, "n-1", Some("route-p"))
            .await
            .unwrap(),
        PushRecording::NonceReused
    );
    assert_eq!(
        db.store.push_reply(&account.id, "msg-2").await.unwrap(),
        None
    );
    assert_eq!(db.count_rows("received_pushes").await, 1);
    // Without a reply route nothing is announced.
    assert_eq!(
        record_push(&db, &other, "n-3", None).await.unwrap(),
        processed
    );
    assert_eq!(
        db.store.push_reply(&account.id, "msg-2").await.unwrap(),
        None
    );
    assert_eq!(db.count_rows("received_pushes").await, 2);
    let gone = ReceivedPush {
        account_id: "no-such-account".to_owned(),
        ..push("msg-3")
    };
    assert!(matches!(
        record_push(&db, &gone, "n-4", None).await,
        Err(StoreError::NotFound { what: "account" })
    ));
}
