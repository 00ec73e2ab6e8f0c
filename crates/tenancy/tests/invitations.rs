//! One-time password links: single use, expiry, the newest link wins, the first operator's
//! setup link, and who may be invited — on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use accounts::VaultHandle;
use store::Store;
use store::people::Role;
use store::sign_in::{LinkPurpose, NO_PASSWORD};
use tenancy::invitations::{INVITATION_VALIDITY, LINK_USED, SETUP_VALIDITY};
use tenancy::people::AuditQuery;
use tenancy::{Principal, Tenancy, TenancyConfig, TenancyError};
use testkit::TestDatabase;
use vault::Vault;
use wechat::ManualClock;

/// A PHC string of the right kind; the layer stores it as given.
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

async fn layer(db: &TestDatabase) -> (Tenancy, ManualClock) {
    let store = Store::connect(db.url()).await.unwrap();
    let vault = Arc::new(VaultHandle::fixed(Vault::new(testkit::fixtures::keyring(
        "k1",
    ))));
    // Nothing here calls WeChat; the client points nowhere.
    let wechat = wechat::Client::new(wechat::ClientConfig::for_base(
        url::Url::parse("http://127.0.0.1:9/").unwrap(),
    ))
    .unwrap();
    let clock = ManualClock::new(1_767_225_600_000);
    let tenancy = Tenancy::new(
        store,
        vault,
        wechat,
        Arc::new(clock.clone()),
        TenancyConfig::new(url::Url::parse("https://hub.example").unwrap()),
    );
    (tenancy, clock)
}

async fn operator(tenancy: &Tenancy) -> Principal {
    let user = tenancy
        .create_person(&Principal::cli(), "ops@hub.example", Role::Operator)
        .await
        .unwrap();
    tenancy.principal_for_user(&user.id).await.unwrap()
}

async fn an_invitation_sets_the_password_once_and_is_audited(db: TestDatabase) {
    let (tenancy, _clock) = layer(&db).await;
    let ops = operator(&tenancy).await;
    let invitation = tenancy
        .invite_person(&ops, "Owner@Example.com", Role::Owner)
        .await
        .unwrap();
    assert_eq!(invitation.link.purpose, LinkPurpose::Invitation);
    assert_eq!(invitation.person.password_hash, NO_PASSWORD);
    let token = invitation.link.token.expose().to_owned();
    let link = tenancy.password_link(&token).await.unwrap();
    assert_eq!(link.email.as_deref(), Some("Owner@Example.com"));
    assert_eq!(link.role, Role::Owner);

    let person = tenancy.use_password_link(&token, None, HASH).await.unwrap();
    assert_eq!(person.id, invitation.person.id);
    assert_eq!(person.password_hash, HASH);
    for _ in 0..2 {
        let again = tenancy.use_password_link(&token, None, HASH).await;
        assert!(
            matches!(again, Err(TenancyError::NotFound { what: "link" })),
            "{again:?}"
        );
    }
    // Someone with a password is not invited again: the link would reset it.
    let error = tenancy
        .invite_person(&ops, "owner@example.com", Role::Owner)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TenancyError::Invalid { field: "email", .. }),
        "{error:?}"
    );
    let actions: Vec<(String, String)> = tenancy
        .list_audit(&Principal::cli(), &AuditQuery::default(), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    assert!(
        actions.contains(&(person.id.clone(), LINK_USED.to_owned())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&(ops.actor().to_owned(), "person.invite".to_owned())),
        "{actions:?}"
    );
    db.finish().await;
}

async fn links_expire_and_only_the_newest_works(db: TestDatabase) {
    let (tenancy, clock) = layer(&db).await;
    let ops = operator(&tenancy).await;
    let first = tenancy
        .invite_person(&ops, "late@example.com", Role::Owner)
        .await
        .unwrap();
    let second = tenancy
        .invite_person(&ops, "late@example.com", Role::Owner)
        .await
        .unwrap();
    assert_eq!(first.person.id, second.person.id);
    assert!(
        tenancy
            .password_link(first.link.token.expose())
            .await
            .is_err(),
        "a newer invitation retires the older link"
    );
    clock.advance(INVITATION_VALIDITY);
    let expired = tenancy
        .use_password_link(second.link.token.expose(), None, HASH)
        .await;
    assert!(
        matches!(expired, Err(TenancyError::NotFound { what: "link" })),
        "{expired:?}"
    );
    // An operator's setup link lasts an hour.
    let setup = tenancy
        .invite_person(&Principal::cli(), "ops2@hub.example", Role::Operator)
        .await
        .unwrap();
    assert_eq!(setup.link.purpose, LinkPurpose::Setup);
    clock.advance(SETUP_VALIDITY - Duration::from_millis(1));
    assert!(
        tenancy
            .password_link(setup.link.token.expose())
            .await
            .is_ok()
    );
    clock.advance(Duration::from_millis(1));
    assert!(
        tenancy
            .password_link(setup.link.token.expose())
            .await
            .is_err()
    );
    db.finish().await;
}

async fn the_first_operator_link_exists_only_while_there_is_no_operator(db: TestDatabase) {
    let (tenancy, _clock) = layer(&db).await;
    let cli = Principal::cli();
    let old = tenancy
        .first_operator_setup_link(&cli)
        .await
        .unwrap()
        .unwrap();
    let link = tenancy
        .first_operator_setup_link(&cli)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tenancy.password_link(old.token.expose()).await.is_err(),
        "each start retires the previous link"
    );
    let token = link.token.expose().to_owned();
    let missing = tenancy.use_password_link(&token, None, HASH).await;
    assert!(
        matches!(missing, Err(TenancyError::Invalid { field: "email", .. })),
        "{missing:?}"
    );
    let weak = tenancy
        .use_password_link(&token, Some("first@hub.example"), "plain")
        .await;
    assert!(
        matches!(
            weak,
            Err(TenancyError::Invalid {
                field: "password",
                ..
            })
        ),
        "{weak:?}"
    );
    let first = tenancy
        .use_password_link(&token, Some("first@hub.example"), HASH)
        .await
        .unwrap();
    assert_eq!(first.role, Role::Operator);
    assert!(
        tenancy
            .first_operator_setup_link(&cli)
            .await
            .unwrap()
            .is_none()
    );
    let principal = tenancy.principal_for_user(&first.id).await.unwrap();
    // Owners cannot hand out links.
    let owner = tenancy
        .create_person(&principal, "o@example.com", Role::Owner)
        .await
        .unwrap();
    let owner = tenancy.principal_for_user(&owner.id).await.unwrap();
    assert!(
        tenancy
            .invite_person(&owner, "x@example.com", Role::Owner)
            .await
            .unwrap_err()
            .is_refusal()
    );
    db.finish().await;
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(testkit::TestDatabase::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = testkit::TestDatabase::postgres().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

on_both!(
    an_invitation_sets_the_password_once_and_is_audited,
    links_expire_and_only_the_newest_works,
    the_first_operator_link_exists_only_while_there_is_no_operator,
);
