use store::StoreError;
use store::people::{NewUser, Role};

use crate::harness::{NOW, TestDb, new_account, owner};

pub async fn user_email_is_unique_case_insensitively(db: TestDb) {
    let new = |email: &str| NewUser {
        id: store::new_id(),
        email: email.to_owned(),
        password_hash: "hash".to_owned(),
        role: Role::Operator,
    };
    let alice = db
        .store
        .create_user(&new("Alice@Example.com"), NOW)
        .await
        .unwrap();
    assert_eq!(alice.email, "Alice@Example.com");
    assert_eq!(alice.role, Role::Operator);
    assert!(!alice.disabled);

    let error = db
        .store
        .create_user(&new("alice@EXAMPLE.com"), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Duplicate { what: "user email" }),
        "{error:?}"
    );

    let found = db
        .store
        .find_user_by_email("ALICE@example.COM")
        .await
        .unwrap();
    assert_eq!(found, Some(alice.clone()));
    assert_eq!(db.store.count_users().await.unwrap(), 1);
    assert_eq!(
        db.store.list_users_page(None, 10).await.unwrap(),
        vec![alice]
    );
}

pub async fn session_is_valid_until_expiry_and_ends_when_user_is_disabled(db: TestDb) {
    let user = owner(&db.store).await;
    let session = db
        .store
        .create_session("session-hash-1", &user.id, NOW, NOW + 3_600_000)
        .await
        .unwrap();
    assert_eq!(session.last_seen_at, NOW);

    let (seen, seen_user) = db
        .store
        .touch_session("session-hash-1", NOW + 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.last_seen_at, NOW + 1_000);
    assert_eq!(seen_user.id, user.id);
    // Expired at its expiry instant.
    assert!(
        db.store
            .touch_session("session-hash-1", NOW + 3_600_000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .touch_session("unknown", NOW)
            .await
            .unwrap()
            .is_none()
    );

    db.store
        .create_session("session-hash-2", &user.id, NOW, NOW + 3_600_000)
        .await
        .unwrap();
    db.store
        .set_user_disabled(
            &user.id,
            true,
            NOW,
            &store::audit::AuditRecord::new("test", "person.disable"),
        )
        .await
        .unwrap();
    assert!(
        db.store
            .touch_session("session-hash-2", NOW + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.count_rows("sessions").await,
        0,
        "disabling ends all the user's sessions"
    );

    db.store
        .set_user_disabled(
            &user.id,
            false,
            NOW,
            &store::audit::AuditRecord::new("test", "person.disable"),
        )
        .await
        .unwrap();
    db.store
        .create_session("session-hash-3", &user.id, NOW, NOW + 10)
        .await
        .unwrap();
    db.store
        .create_session("session-hash-4", &user.id, NOW, NOW + 5)
        .await
        .unwrap();
    assert_eq!(db.store.delete_expired_sessions(NOW + 5).await.unwrap(), 1);
    assert_eq!(db.count_rows("sessions").await, 1);
    db.store
        .set_user_password_hash(&user.id, "new-hash")
        .await
        .unwrap();
    assert!(
        db.store
            .touch_session("session-hash-3", NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.store
            .get_user(&user.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
    assert!(!db.store.delete_session("session-hash-3").await.unwrap());

    let error = db
        .store
        .create_session("s", "no-such-user", NOW, NOW + 1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound { what: "user" }),
        "{error:?}"
    );
}

pub async fn user_owning_accounts_cannot_be_deleted(db: TestDb) {
    let owner = owner(&db.store).await;
    let account = db
        .store
        .create_account(&new_account(&owner, "wx-owned"), NOW)
        .await
        .unwrap();
    let error = db.store.delete_user(&owner.id).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::InUse {
                what: "user",
                by: "accounts"
            }
        ),
        "{error:?}"
    );
    db.store
        .delete_account(
            &account.id,
            NOW,
            &store::audit::AuditRecord::new("test", "account.delete"),
        )
        .await
        .unwrap();
    db.store.delete_user(&owner.id).await.unwrap();
    assert!(db.store.get_user(&owner.id).await.unwrap().is_none());
    assert!(matches!(
        db.store.delete_user(&owner.id).await,
        Err(StoreError::NotFound { what: "user" })
    ));
    // Another account of another owner is unaffected by all this.
    let _ = crate::harness::account(&db.store, "wx-other").await;
    assert_eq!(db.store.count_accounts().await.unwrap(), 1);
}
