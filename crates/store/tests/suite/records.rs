use serde_json::json;
use store::StoreError;
use store::end_users::{CreatedVia, EndUserLogin, Subscription};
use store::pushes::ReceivedPush;
use store::stats::{StatPoint, hour_start};

use crate::harness::{NOW, TestDb, account};

const HOUR: i64 = 3_600_000;

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

pub async fn stats_upsert_is_additive(db: TestDb) {
    let account = account(&db.store, "wx-stats").await;
    let other = crate::harness::account(&db.store, "wx-stats-other").await;
    let hour = hour_start(NOW + 10);
    db.store
        .add_to_stat(&account.id, "logins", NOW + 10, 1)
        .await
        .unwrap();
    db.store
        .add_to_stat(&account.id, "logins", NOW + HOUR - 1, 2)
        .await
        .unwrap();
    db.store
        .add_to_stats(&[
            (account.id.as_str(), "logins", NOW + 20, 4),
            (account.id.as_str(), "pushes", NOW + HOUR, 5),
            (other.id.as_str(), "logins", NOW, 10),
        ])
        .await
        .unwrap();
    // Concurrent increments all count.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = db.store.clone();
        let id = account.id.clone();
        tasks.push(tokio::spawn(async move {
            store.add_to_stat(&id, "logins", NOW, 1).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        db.store
            .account_stats(&account.id, hour, hour + 2 * HOUR)
            .await
            .unwrap(),
        vec![
            StatPoint {
                hour,
                metric: "logins".to_owned(),
                value: 17
            },
            StatPoint {
                hour: hour + HOUR,
                metric: "pushes".to_owned(),
                value: 5
            },
        ]
    );
    assert_eq!(
        db.store.total_stats(hour, hour + HOUR).await.unwrap(),
        vec![("logins".to_owned(), 27)]
    );
    assert!(matches!(
        db.store.add_to_stat("missing", "logins", NOW, 1).await,
        Err(StoreError::NotFound { what: "account" })
    ));
}

pub async fn revoked_api_key_no_longer_authenticates(db: TestDb) {
    let account = account(&db.store, "wx-keys").await;
    let key = db
        .store
        .create_api_key(
            &store::new_id(),
            &account.id,
            "sha256-of-key",
            "backend",
            NOW,
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
        .create_api_key(&store::new_id(), &account.id, "sha256-of-key", "copy", NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Duplicate { what: "api key" }),
        "{error:?}"
    );

    assert!(
        !db.store
            .revoke_api_key("other-account", &key.id, NOW + 6)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .revoke_api_key(&account.id, &key.id, NOW + 6)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .revoke_api_key(&account.id, &key.id, NOW + 7)
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
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            db.store
                .append_audit(
                    "user-1",
                    "account.create",
                    Some(&format!("account-{i}")),
                    &json!({ "appid": format!("wx-{i}") }),
                    NOW + i,
                )
                .await
                .unwrap(),
        );
    }
    let first = db.store.list_audit_page(None, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    assert_eq!(first[0].details, json!({ "appid": "wx-4" }));
    assert_eq!(first[0].target.as_deref(), Some("account-4"));
    assert_eq!(first[0].at, NOW + 4);
    let rest = db
        .store
        .list_audit_page(Some(&first[1].id), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
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
