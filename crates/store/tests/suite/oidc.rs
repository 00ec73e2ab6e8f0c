use store::StoreError;
use store::accounts::Account;
use store::end_users::{CreatedVia, EndUserLogin, UserClaims};
use store::oidc::{
    AccessToken, AuthCode, CodeRedemption, LoginMode, NewAccessToken, OidcClient,
    PendingAuthorization, PendingStatus, RedemptionContext, SigningKey, SigningKeyStatus,
    UserinfoGrant,
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
                id_token_signed_response_alg: Default::default(),
                login_surface: store::oidc::LoginSurface::Auto,
                scan_confirmation: None,
            },
            NOW,
            &store::audit::AuditRecord::new("test", "website.create"),
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

fn new_token(hash: &str) -> NewAccessToken {
    NewAccessToken {
        token_hash: hash.to_owned(),
        expires_at: NOW + 3_600_000,
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
        .redeem_auth_code("code-hash-1", &client.id, &new_token("at-1"), NOW + 1)
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

    // The access token was issued with the spend, for the code's user and scope.
    let token = db
        .store
        .find_valid_access_token("at-1", NOW + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            token.code_hash.as_deref(),
            token.openid.as_str(),
            token.scope.as_str()
        ),
        (Some("code-hash-1"), "o-1", "openid profile")
    );

    let second = db
        .store
        .redeem_auth_code("code-hash-1", &client.id, &new_token("at-1b"), NOW + 3)
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
            .redeem_auth_code("code-hash-2", &blog.id, &new_token("x1"), NOW)
            .await
            .unwrap(),
        CodeRedemption::NotFound
    );
    assert_eq!(
        db.store
            .redeem_auth_code("code-hash-2", &shop.id, &new_token("x2"), NOW + 60_000)
            .await
            .unwrap(),
        CodeRedemption::Expired
    );
    assert_eq!(
        db.store
            .redeem_auth_code("no-such-code", &shop.id, &new_token("x3"), NOW)
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
        browser_binding_hash: Some("binding-hash".to_owned()),
        prompt_none: false,
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
            &store::audit::AuditRecord::new("test", "website.create"),
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
            &store::audit::AuditRecord::new("test", "website.create"),
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
            .delete_oidc_client(
                &account.id,
                &created.id,
                NOW,
                &store::audit::AuditRecord::new("test", "website.delete")
            )
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
        wrapped_dek: format!("wrapped-dek-of-{kid}").into_bytes(),
        dek_kek_id: "kek-1".to_owned(),
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

pub async fn concurrent_redemptions_spend_once_and_revoke_the_issued_token(db: TestDb) {
    let account = account(&db.store, "wx-oidc-race").await;
    let client = client(&db, &account, "shop").await;
    db.store
        .create_auth_code(&code(&client, "code-race", NOW + 60_000))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = db.store.clone();
        let client_id = client.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .redeem_auth_code(
                    "code-race",
                    &client_id,
                    &new_token(&format!("race-{i}")),
                    NOW + 1,
                )
                .await
                .unwrap()
        }));
    }
    let mut redeemed = 0;
    for task in tasks {
        match task.await.unwrap() {
            CodeRedemption::Redeemed(_) => redeemed += 1,
            CodeRedemption::AlreadyUsed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(redeemed, 1, "exactly one redemption wins");
    // Every loser ran after the winner's commit and revoked the token it issued.
    for i in 0..8 {
        assert!(
            db.store
                .find_valid_access_token(&format!("race-{i}"), NOW + 2)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(db.count_rows("oidc_access_tokens").await, 1);
}

fn sealed_key(kid: &str, status: SigningKeyStatus, created_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        wrapped_dek: format!("wrapped-dek-of-{kid}").into_bytes(),
        dek_kek_id: "kek-1".to_owned(),
        private_key: format!("encrypted-{kid}").into_bytes(),
        public_jwk: format!(r#"{{"kty":"EC","kid":"{kid}"}}"#),
        status,
        created_at,
        retired_at: None,
    }
}

pub async fn each_algorithm_has_its_own_active_and_next_key(db: TestDb) {
    use store::oidc::SigningAlg;
    let rs = |kid: &str, status, at| SigningKey {
        algorithm: "RS256".to_owned(),
        ..sealed_key(kid, status, at)
    };
    // ES256 from before, RS256 added: both become active, each once.
    assert!(
        db.store
            .create_first_signing_key(&sealed_key("es1", SigningKeyStatus::Active, NOW))
            .await
            .unwrap()
    );
    assert!(
        db.store
            .create_first_signing_key(&rs("rs1", SigningKeyStatus::Active, NOW + 1))
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .create_first_signing_key(&rs("rs1b", SigningKeyStatus::Active, NOW + 2))
            .await
            .unwrap()
    );
    let active = |alg| {
        let store = db.store.clone();
        async move {
            store
                .active_signing_key_for(alg)
                .await
                .unwrap()
                .map(|k| k.kid)
        }
    };
    assert_eq!(active(SigningAlg::Es256).await.as_deref(), Some("es1"));
    assert_eq!(active(SigningAlg::Rs256).await.as_deref(), Some("rs1"));
    // One next key per algorithm.
    db.store
        .publish_next_signing_key(&rs("rs2", SigningKeyStatus::Next, NOW + 3))
        .await
        .unwrap();
    db.store
        .publish_next_signing_key(&sealed_key("es2", SigningKeyStatus::Next, NOW + 3))
        .await
        .unwrap();
    assert!(matches!(
        db.store
            .publish_next_signing_key(&rs("rs3", SigningKeyStatus::Next, NOW + 4))
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(
        db.store
            .next_signing_key_for(SigningAlg::Rs256)
            .await
            .unwrap()
            .unwrap()
            .kid,
        "rs2"
    );
    // Promoting the RS256 key retires the RS256 key only.
    assert!(
        db.store
            .promote_next_signing_key("rs2", NOW + 5)
            .await
            .unwrap()
    );
    assert_eq!(active(SigningAlg::Rs256).await.as_deref(), Some("rs2"));
    assert_eq!(active(SigningAlg::Es256).await.as_deref(), Some("es1"));
    let retired: Vec<String> = db
        .store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.status == SigningKeyStatus::Retired)
        .map(|k| k.kid)
        .collect();
    assert_eq!(retired, vec!["rs1".to_owned()]);
}

pub async fn next_key_is_published_then_promoted_and_one_key_is_active(db: TestDb) {
    let first = sealed_key("k1", SigningKeyStatus::Active, NOW);
    assert!(db.store.create_first_signing_key(&first).await.unwrap());
    // A second "first" key (another replica racing) does not become active.
    assert!(
        !db.store
            .create_first_signing_key(&sealed_key("k1b", SigningKeyStatus::Active, NOW))
            .await
            .unwrap()
    );
    db.store
        .publish_next_signing_key(&sealed_key("k2", SigningKeyStatus::Next, NOW + 1))
        .await
        .unwrap();
    assert!(matches!(
        db.store
            .publish_next_signing_key(&sealed_key("k3", SigningKeyStatus::Next, NOW + 2))
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    // Published (listed) but not signing.
    assert_eq!(db.store.list_signing_keys().await.unwrap().len(), 2);
    assert_eq!(
        db.store.active_signing_key().await.unwrap().unwrap().kid,
        "k1"
    );
    assert_eq!(
        db.store.next_signing_key().await.unwrap().unwrap().kid,
        "k2"
    );

    assert!(
        !db.store
            .promote_next_signing_key("k1", NOW + 5)
            .await
            .unwrap()
    );
    assert_eq!(
        db.store.active_signing_key().await.unwrap().unwrap().kid,
        "k1"
    );
    assert!(
        db.store
            .promote_next_signing_key("k2", NOW + 5)
            .await
            .unwrap()
    );
    assert_eq!(
        db.store.active_signing_key().await.unwrap().unwrap().kid,
        "k2"
    );
    assert!(db.store.next_signing_key().await.unwrap().is_none());
    let all = db.store.list_signing_keys().await.unwrap();
    let active: Vec<_> = all
        .iter()
        .filter(|k| k.status == SigningKeyStatus::Active)
        .collect();
    assert_eq!(active.len(), 1);
    let old = all.iter().find(|k| k.kid == "k1").unwrap();
    assert_eq!(
        (old.status, old.retired_at),
        (SigningKeyStatus::Retired, Some(NOW + 5))
    );

    // The database itself refuses a second active key, whatever the caller does.
    assert!(
        !db.try_execute(
            "UPDATE oidc_signing_keys SET status = 'active' WHERE kid = 'k1'",
            "UPDATE oidc_signing_keys SET status = 'active' WHERE kid = 'k1'",
        )
        .await
    );
}

pub async fn one_query_lookups_agree_with_the_separate_ones(db: TestDb) {
    let other = account(&db.store, "wx-oidc-joined-2").await;
    let account = account(&db.store, "wx-oidc-joined").await;
    let shop = client(&db, &account, "shop-joined").await;

    // Client with its account, only under the account's own appid.
    let (found_account, found_client) = db
        .store
        .find_client_at_issuer(&account.appid, "shop-joined")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found_account, found_client),
        (account.clone(), shop.clone())
    );
    assert!(
        db.store
            .find_client_at_issuer(&other.appid, "shop-joined")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.store
            .find_client_at_issuer(&account.appid, "no-such-client")
            .await
            .unwrap()
            .is_none()
    );

    // The callback's context: pending row, login mode, account and sealed secrets.
    let pending = PendingAuthorization {
        id: store::new_id(),
        oidc_client_id: shop.id.clone(),
        redirect_uri: "https://shop.example/callback".to_owned(),
        state: None,
        nonce: None,
        code_challenge: Some("challenge".to_owned()),
        code_challenge_method: Some("S256".to_owned()),
        scope: "openid profile".to_owned(),
        wechat_state: "ws-joined".to_owned(),
        status: PendingStatus::Pending,
        openid: None,
        created_at: NOW,
        expires_at: NOW + 600_000,
        browser_binding_hash: Some("binding-hash".to_owned()),
        prompt_none: false,
    };
    db.store
        .create_pending_authorization(&pending)
        .await
        .unwrap();
    let context = db
        .store
        .find_callback_context(&account.appid, "ws-joined", NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.pending, pending);
    assert_eq!(context.login_mode, LoginMode::FollowRequired);
    assert_eq!(context.account, account);
    assert_eq!(
        context.secrets,
        db.store.load_account_secrets(&account.id).await.unwrap()
    );
    for (appid, at) in [(&other.appid, NOW + 1), (&account.appid, NOW + 600_000)] {
        assert!(
            db.store
                .find_callback_context(appid, "ws-joined", at)
                .await
                .unwrap()
                .is_none()
        );
    }

    // Completing the login records the user and the code; redeeming the code reads the
    // user's claims and the active kid with the spend.
    let login = EndUserLogin {
        openid: "o-1".to_owned(),
        via: CreatedVia::LoginBase,
        unionid: Some("u-1".to_owned()),
        nickname: Some("Nick".to_owned()),
        avatar_url: None,
        subscribed: Some(true),
        subscribe_time: None,
        subscribe_scene: None,
    };
    let issued = code(&shop, "code-hash-joined", NOW + 60_000);
    assert!(
        db.store
            .complete_pending_authorization(&pending.id, &issued, None, &login, NOW + 2)
            .await
            .unwrap()
    );
    // A replay completes nothing.
    assert!(
        !db.store
            .complete_pending_authorization(
                &pending.id,
                &code(&shop, "code-hash-joined-2", NOW + 60_000),
                None,
                &login,
                NOW + 3
            )
            .await
            .unwrap()
    );
    assert_eq!(db.count_rows("oidc_auth_codes").await, 1);
    // The active key of the client's algorithm (RS256, the default) is the one read; an
    // active key of another algorithm is not.
    db.store
        .activate_new_signing_key(&sealed_key("kj-es", SigningKeyStatus::Active, NOW), NOW)
        .await
        .unwrap();
    db.store
        .activate_new_signing_key(
            &SigningKey {
                algorithm: "RS256".to_owned(),
                ..sealed_key("kj", SigningKeyStatus::Active, NOW)
            },
            NOW,
        )
        .await
        .unwrap();
    let (redemption, context) = db
        .store
        .redeem_auth_code_with_claims("code-hash-joined", &shop.id, &new_token("at-j"), NOW + 4)
        .await
        .unwrap();
    assert!(matches!(redemption, CodeRedemption::Redeemed(_)));
    let claims = UserClaims {
        unionid: Some("u-1".to_owned()),
        nickname: Some("Nick".to_owned()),
        avatar_url: None,
        subscribed: true,
    };
    assert_eq!(context.user.as_ref(), Some(&claims));
    assert_eq!(context.active_signing_kid.as_deref(), Some("kj"));
    let (again, context) = db
        .store
        .redeem_auth_code_with_claims("code-hash-joined", &shop.id, &new_token("at-j2"), NOW + 5)
        .await
        .unwrap();
    assert_eq!(again, CodeRedemption::AlreadyUsed { revoked_tokens: 1 });
    assert_eq!(context, RedemptionContext::default());

    // Userinfo's grant: the live token with its user's claims, only at its own appid.
    db.store
        .create_access_token(&access_token(&shop, "at-live", "code-hash-joined"))
        .await
        .unwrap();
    let grant = db
        .store
        .find_userinfo_grant(&account.appid, "at-live", NOW + 6)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        grant,
        UserinfoGrant {
            openid: "o-1".to_owned(),
            scope: "openid".to_owned(),
            user: Some(claims),
        }
    );
    assert!(
        db.store
            .find_userinfo_grant(&other.appid, "at-live", NOW + 6)
            .await
            .unwrap()
            .is_none()
    );
    // The revoked token (the reuse above) gives nothing.
    assert!(
        db.store
            .find_userinfo_grant(&account.appid, "at-j", NOW + 6)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn scan_login_is_marked_by_ticket_and_scene_once_and_finishes_once(db: TestDb) {
    use store::scan_logins::{NewScanLogin, ScanMark, ScanQr};
    let account = account(&db.store, "wx-oidc-scan").await;
    let client = client(&db, &account, "shop").await;
    let pending = PendingAuthorization {
        id: store::new_id(),
        oidc_client_id: client.id.clone(),
        redirect_uri: "https://shop.example/callback".to_owned(),
        state: None,
        nonce: None,
        code_challenge: Some("challenge".to_owned()),
        code_challenge_method: Some("S256".to_owned()),
        scope: "openid".to_owned(),
        wechat_state: "ws-scan".to_owned(),
        status: PendingStatus::Pending,
        openid: None,
        created_at: NOW,
        expires_at: NOW + 900_000,
        browser_binding_hash: Some("binding-hash".to_owned()),
        prompt_none: false,
    };
    db.store
        .create_pending_authorization(&pending)
        .await
        .unwrap();
    db.store
        .create_scan_login(&NewScanLogin {
            id: "scan-1".to_owned(),
            pending_id: pending.id.clone(),
            account_id: account.id.clone(),
            created_at: NOW,
            expires_at: NOW + 900_000,
            needs_confirmation: true,
        })
        .await
        .unwrap();
    let qr = |n: u32| ScanQr {
        scene: format!("wxhub-login:s{n}"),
        ticket: format!("t{n}"),
        url: format!("http://weixin.qq.com/q/{n}"),
        expires_at: NOW + 300_000,
    };
    assert!(
        db.store
            .set_scan_login_qr("scan-1", &qr(1), NOW)
            .await
            .unwrap()
    );
    // A refresh replaces the code: the old ticket finds nothing.
    assert!(
        db.store
            .set_scan_login_qr("scan-1", &qr(2), NOW + 1)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .find_scan_login_by_ticket(&account.id, "t1")
            .await
            .unwrap()
            .is_none()
    );
    let mark = |ticket: &'static str, scene: &'static str, openid: &'static str, at: i64| {
        let store = db.store.clone();
        async move {
            store
                .mark_scan_login_scanned("scan-1", ticket, scene, openid, true, true, at)
                .await
                .unwrap()
        }
    };
    // The ticket with another scene marks nothing.
    assert_eq!(
        mark("t2", "wxhub-login:s1", "o-carol", NOW + 2).await,
        ScanMark::Expired
    );
    assert_eq!(
        mark("t2", "wxhub-login:s2", "o-carol", NOW + 3).await,
        ScanMark::Marked { first: true }
    );
    assert_eq!(
        mark("t2", "wxhub-login:s2", "o-carol", NOW + 4).await,
        ScanMark::Marked { first: false }
    );
    assert_eq!(
        mark("t2", "wxhub-login:s2", "o-alice", NOW + 5).await,
        ScanMark::TakenByAnother
    );
    // Scanned: no new code any more; not ready before the scanner confirms.
    assert!(
        !db.store
            .set_scan_login_qr("scan-1", &qr(3), NOW + 6)
            .await
            .unwrap()
    );
    let login = db.store.get_scan_login("scan-1").await.unwrap().unwrap();
    assert!(!login.ready(NOW + 6));
    assert!(!db.store.finish_scan_login("scan-1", NOW + 6).await.unwrap());
    assert!(
        db.store
            .set_scan_login_confirm_state("scan-1", "cs-1", NOW + 7)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .confirm_scan_login("scan-1", "o-alice", NOW + 8)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .confirm_scan_login("scan-1", "o-carol", NOW + 8)
            .await
            .unwrap()
    );
    assert!(
        db.store
            .get_scan_login("scan-1")
            .await
            .unwrap()
            .unwrap()
            .ready(NOW + 9)
    );
    // Single use.
    assert!(db.store.finish_scan_login("scan-1", NOW + 9).await.unwrap());
    assert!(
        !db.store
            .finish_scan_login("scan-1", NOW + 10)
            .await
            .unwrap()
    );
    assert_eq!(
        mark("t2", "wxhub-login:s2", "o-carol", NOW + 11).await,
        ScanMark::Used
    );
    // The sweep removes it once finished long enough ago.
    assert_eq!(
        db.store.delete_stale_scan_logins(NOW + 10).await.unwrap(),
        1
    );
}

/// A flood of abandoned logins is swept in bounded batches: one call deletes at most
/// `batch × max_batches` rows a table, and the next call goes on where it stopped.
pub async fn expired_pending_logins_are_swept_in_bounded_batches(db: TestDb) {
    let account = account(&db.store, "wx-oidc-sweep").await;
    let client = client(&db, &account, "shop").await;
    for i in 0..5 {
        let pending = PendingAuthorization {
            id: store::new_id(),
            oidc_client_id: client.id.clone(),
            redirect_uri: "https://shop.example/callback".to_owned(),
            state: None,
            nonce: None,
            code_challenge: None,
            code_challenge_method: None,
            scope: "openid".to_owned(),
            wechat_state: format!("ws-sweep-{i}"),
            status: PendingStatus::Pending,
            openid: None,
            created_at: NOW,
            expires_at: NOW + 1_000 + i,
            browser_binding_hash: None,
            prompt_none: false,
        };
        db.store
            .create_pending_authorization(&pending)
            .await
            .unwrap();
    }
    let cutoff = NOW + 10_000;
    let sweep = async || {
        db.store
            .delete_expired_oidc_rows_in_batches(cutoff, 2, 2)
            .await
            .unwrap()
    };
    assert_eq!(sweep().await, 4, "two batches of two");
    assert_eq!(db.count_rows("oidc_pending_authorizations").await, 1);
    assert_eq!(sweep().await, 1);
    assert_eq!(sweep().await, 0);
    // The default sweep removes nothing that has not expired.
    assert_eq!(db.store.delete_expired_oidc_rows(NOW).await.unwrap(), 0);
}
