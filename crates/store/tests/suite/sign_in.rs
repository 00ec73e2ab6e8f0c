use store::audit::AuditRecord;
use store::sealed::{DekCount, DekHolder};
use store::sign_in::{NewSession, SessionStage, StoredTotp};

use crate::harness::{NOW, TestDb, owner};

const MINUTE: i64 = 60_000;

pub async fn sessions_end_when_idle_or_past_expiry_and_rotate_on_step_up(db: TestDb) {
    let user = owner(&db.store).await;
    let new = |id: &str, stage| NewSession {
        id: id.to_owned(),
        user_id: user.id.clone(),
        stage,
        expires_at: NOW + 60 * MINUTE,
    };
    db.store
        .start_session(&new("pending", SessionStage::SecondFactor), NOW, None)
        .await
        .unwrap();
    let live = db
        .store
        .live_session("pending", NOW + MINUTE, NOW - 30 * MINUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.stage, SessionStage::SecondFactor);
    assert_eq!(live.user.id, user.id);

    // Stepping up replaces the session: the old id no longer works.
    db.store
        .start_session(
            &new("full", SessionStage::Full),
            NOW + MINUTE,
            Some("pending"),
        )
        .await
        .unwrap();
    assert!(
        db.store
            .live_session("pending", NOW + MINUTE, NOW)
            .await
            .unwrap()
            .is_none()
    );
    // Used at NOW+1min: live while the idle cut-off is before that, gone once it is not.
    let idle_since = |now: i64| now - 30 * MINUTE;
    assert!(
        db.store
            .live_session(
                "full",
                NOW + 31 * MINUTE - 1,
                idle_since(NOW + 31 * MINUTE - 1)
            )
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        db.store
            .live_session("full", NOW + 62 * MINUTE, idle_since(NOW + 62 * MINUTE))
            .await
            .unwrap()
            .is_none(),
        "past the absolute expiry"
    );
    db.store
        .start_session(&new("other", SessionStage::Full), NOW, None)
        .await
        .unwrap();
    assert!(
        db.store
            .live_session("other", NOW + 31 * MINUTE, idle_since(NOW + 31 * MINUTE))
            .await
            .unwrap()
            .is_none(),
        "idle for more than 30 minutes"
    );
    assert_eq!(db.store.end_sessions_of_user(&user.id).await.unwrap(), 2);
    assert_eq!(db.count_rows("sessions").await, 0);
}

pub async fn totp_enrolment_confirms_once_and_each_step_is_accepted_once(db: TestDb) {
    let user = owner(&db.store).await;
    let totp = |secret: &[u8]| StoredTotp {
        user_id: user.id.clone(),
        wrapped_dek: b"wrapped".to_vec(),
        dek_kek_id: "kek-1".to_owned(),
        secret: secret.to_vec(),
        confirmed_at: None,
        last_used_step: 0,
        created_at: NOW,
    };
    assert!(
        db.store
            .begin_totp_enrolment(&totp(b"one"), NOW)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .begin_totp_enrolment(&totp(b"two"), NOW)
            .await
            .unwrap()
    );
    let stored = db.store.user_totp(&user.id).await.unwrap().unwrap();
    assert_eq!(stored.secret, b"two");
    assert_eq!(stored.confirmed_at, None);
    assert!(
        !db.store.use_totp_step(&user.id, 10).await.unwrap(),
        "an unconfirmed secret signs nobody in"
    );
    let record = AuditRecord::new(user.id.clone(), "person.totp_enrol");
    assert!(
        db.store
            .confirm_totp(&user.id, 10, NOW, &record)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .confirm_totp(&user.id, 11, NOW, &record)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .begin_totp_enrolment(&totp(b"three"), NOW)
            .await
            .unwrap(),
        "a confirmed secret is not replaced"
    );
    assert!(!db.store.use_totp_step(&user.id, 10).await.unwrap());
    assert!(db.store.use_totp_step(&user.id, 11).await.unwrap());
    assert!(!db.store.use_totp_step(&user.id, 11).await.unwrap());
    assert_eq!(
        db.store.count_sealed_deks_by_kek().await.unwrap(),
        vec![DekCount {
            holder: DekHolder::TotpSecret,
            kek_id: "kek-1".to_owned(),
            count: 1
        }]
    );
    assert_eq!(db.count_rows("audit_log").await, 1);
}
