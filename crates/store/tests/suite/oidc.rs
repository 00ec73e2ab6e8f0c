use store::StoreError;
use store::accounts::Account;
use store::oidc::{
    AccessToken, AuthCode, CodeRedemption, LoginMode, OidcClient, PendingAuthorization,
    PendingStatus, SigningKey, SigningKeyStatus,
};

use crate::harness::{NOW, TestDb, account};

async fn client(db: &TestDb, account: &Account, client_id: &str) -> OidcClient {
    db.store
        .create_oidc_client(
            &OidcClient {
                id: store::new_id(),
                account_id: account.id.clone(),
                client_id: client_id.to_owned(),
                client_secret_hash: Some("secret-hash".to_owned()),
                redirect_uris: vec![
                    "https://shop.example/callback".to_owned(),
                    "http://127.0.0.1:8080/cb?x=1".to_owned(),
                ],
                login_mode: LoginMode::FollowRequired,
                name: "Shop".to_owned(),
                created_at: 0,
            },
            NOW,
        )
        .await
        .unwrap()
}

fn code(client: &OidcClient, hash: &str, expires_at: i64) -> AuthCode {
    AuthCode {
        code_hash: hash.to_owned(),
        oidc_client_id: client.id.clone(),
        account_id: client.account_id.clone(),
        redirect_uri: "https://shop.example/callback".to_owned(),
        openid: "o-1".to_owned(),
        nonce: Some("n-0S6_WzA2Mj".to_owned()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
        code_challenge_method: Some("S256".to_owned()),
        scope: "openid profile".to_owned(),
        created_at: NOW,
        expires_at,
        used_at: None,
    }
}

fn access_token(client: &OidcClient, hash: &str, code_hash: &str) -> AccessToken {
    AccessToken {
        token_hash: hash.to_owned(),
        code_hash: Some(code_hash.to_owned()),
        oidc_client_id: client.id.clone(),
        account_id: client.account_id.clone(),
        openid: "o-1".to_owned(),
        scope: "openid".to_owned(),
        created_at: NOW,
        expires_at: NOW + 3_600_000,
        revoked_at: None,
    }
}

pub async fn auth_code_is_single_use_and_reuse_revokes_its_tokens(db: TestDb) {
    let account = account(&db.store, "wx-oidc").await;
    let client = client(&db, &account, "shop").await;
    let issued = code(&client, "code-hash-1", NOW + 60_000);
    db.store.create_auth_code(&issued).await.unwrap();

    let first = db
        .store
        .redeem_auth_code("code-hash-1", &client.id, NOW + 1)
        .await
        .unwrap();
    let CodeRedemption::Redeemed(redeemed) = first else {
        panic!("expected Redeemed, got {first:?}")
    };
    assert_eq!(
        *redeemed,
        AuthCode {
            used_at: Some(NOW + 1),
            ..issued
        }
    );

    db.store
        .create_access_token(&access_token(&client, "at-1", "code-hash-1"))
        .await
        .unwrap();
    assert!(
        db.store
            .find_valid_access_token("at-1", NOW + 2)
            .await
            .unwrap()
            .is_some()
    );

    let second = db
        .store
        .redeem_auth_code("code-hash-1", &client.id, NOW + 3)
        .await
        .unwrap();
    assert_eq!(second, CodeRedemption::AlreadyUsed { revoked_tokens: 1 });
    assert!(
        db.store
            .find_valid_access_token("at-1", NOW + 4)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn expired_or_foreign_auth_code_is_not_redeemed(db: TestDb) {
    let account = account(&db.store, "wx-oidc-exp").await;
    let shop = client(&db, &account, "shop").await;
    let blog = client(&db, &account, "blog").await;
    db.store
        .create_auth_code(&code(&shop, "code-hash-2", NOW + 60_000))
        .await
        .unwrap();

    // Another client cannot redeem (or burn) it.
    assert_eq!(
        db.store
            .redeem_auth_code("code-hash-2", &blog.id, NOW)
            .await
            .unwrap(),
        CodeRedemption::NotFound
    );
    assert_eq!(
        db.store
            .redeem_auth_code("code-hash-2", &shop.id, NOW + 60_000)
            .await
            .unwrap(),
        CodeRedemption::Expired
    );
    assert_eq!(
        db.store
            .redeem_auth_code("no-such-code", &shop.id, NOW)
            .await
            .unwrap(),
        CodeRedemption::NotFound
    );
    // Expired tokens are not valid either, and the purge removes what expired.
    db.store
        .create_access_token(&AccessToken {
            expires_at: NOW + 10,
            ..access_token(&shop, "at-2", "code-hash-2")
        })
        .await
        .unwrap();
    assert!(
        db.store
            .find_valid_access_token("at-2", NOW + 10)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.store
            .delete_expired_oidc_rows(NOW + 60_001)
            .await
            .unwrap(),
        2
    );
    assert_eq!(db.count_rows("oidc_auth_codes").await, 0);
}

pub async fn pending_authorization_finishes_once(db: TestDb) {
    let account = account(&db.store, "wx-oidc-pending").await;
    let client = client(&db, &account, "shop").await;
    let pending = PendingAuthorization {
        id: store::new_id(),
        oidc_client_id: client.id.clone(),
        redirect_uri: "https://shop.example/callback".to_owned(),
        state: Some("af0ifjsldkj".to_owned()),
        nonce: Some("n-0S6_WzA2Mj".to_owned()),
        code_challenge: Some("challenge".to_owned()),
        code_challenge_method: Some("S256".to_owned()),
        scope: "openid".to_owned(),
        wechat_state: "ws-1".to_owned(),
        status: PendingStatus::Pending,
        openid: None,
        created_at: NOW,
        expires_at: NOW + 600_000,
    };
    db.store
        .create_pending_authorization(&pending)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .find_pending_authorization("ws-1", NOW + 1)
            .await
            .unwrap(),
        Some(pending.clone())
    );
    assert!(
        db.store
            .find_pending_authorization("ws-1", NOW + 600_000)
            .await
            .unwrap()
            .is_none()
    );

    assert!(
        db.store
            .finish_pending_authorization(
                &pending.id,
                PendingStatus::Completed,
                Some("o-9"),
                NOW + 2
            )
            .await
            .unwrap()
    );
    // A replayed callback cannot finish it again.
    assert!(
        !db.store
            .finish_pending_authorization(&pending.id, PendingStatus::Denied, None, NOW + 3)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .find_pending_authorization("ws-1", NOW + 4)
            .await
            .unwrap()
            .is_none()
    );

    let error = db
        .store
        .create_pending_authorization(&PendingAuthorization {
            id: store::new_id(),
            ..pending
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Duplicate { .. }),
        "wechat_state is unique: {error:?}"
    );
}

pub async fn client_id_is_unique_and_redirect_uris_round_trip(db: TestDb) {
    let account = account(&db.store, "wx-oidc-clients").await;
    let created = client(&db, &account, "shop").await;
    assert_eq!(created.created_at, NOW);
    assert_eq!(created.redirect_uris[1], "http://127.0.0.1:8080/cb?x=1");
    assert_eq!(
        db.store.find_oidc_client("shop").await.unwrap(),
        Some(created.clone())
    );

    let error = db
        .store
        .create_oidc_client(
            &OidcClient {
                id: store::new_id(),
                ..created.clone()
            },
            NOW,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Duplicate {
                what: "oidc client_id"
            }
        ),
        "{error:?}"
    );

    let public = db
        .store
        .create_oidc_client(
            &OidcClient {
                id: store::new_id(),
                client_id: "spa".to_owned(),
                client_secret_hash: None,
                login_mode: LoginMode::Userinfo,
                redirect_uris: vec![],
                ..created.clone()
            },
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(public.client_secret_hash, None);
    assert_eq!(
        db.store.list_oidc_clients(&account.id).await.unwrap(),
        vec![created.clone(), public]
    );
    assert!(
        db.store
            .delete_oidc_client(&account.id, &created.id)
            .await
            .unwrap()
    );
    assert!(db.store.find_oidc_client("shop").await.unwrap().is_none());
}

pub async fn new_signing_key_retires_the_previous_one(db: TestDb) {
    assert!(db.store.active_signing_key().await.unwrap().is_none());
    let key = |kid: &str| SigningKey {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        private_key: format!("encrypted-{kid}").into_bytes(),
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        status: SigningKeyStatus::Active,
        created_at: 0,
        retired_at: None,
    };
    db.store
        .activate_new_signing_key(&key("k1"), NOW)
        .await
        .unwrap();
    db.store
        .activate_new_signing_key(&key("k2"), NOW + 10)
        .await
        .unwrap();

    let active = db.store.active_signing_key().await.unwrap().unwrap();
    assert_eq!(active.kid, "k2");
    assert_eq!(active.private_key, b"encrypted-k2");
    assert!(!format!("{active:?}").contains("encrypted-k2"));
    let all = db.store.list_signing_keys().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].kid, "k1");
    assert_eq!(
        (all[1].status, all[1].retired_at),
        (SigningKeyStatus::Retired, Some(NOW + 10))
    );

    assert!(matches!(
        db.store
            .activate_new_signing_key(&key("k2"), NOW + 20)
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(
        db.store.active_signing_key().await.unwrap().unwrap().kid,
        "k2",
        "rolled back"
    );
    assert_eq!(
        db.store
            .delete_signing_keys_retired_before(NOW + 11)
            .await
            .unwrap(),
        1
    );
    assert_eq!(db.store.list_signing_keys().await.unwrap().len(), 1);
}
