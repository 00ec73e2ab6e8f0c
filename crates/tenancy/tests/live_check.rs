//! The live credential check against the simulator: each refusal WeChat can give maps to its
//! fix and stores nothing (no account, no audit entry); a passing check leaves the token the
//! owner's current backend uses valid, because it never calls `/cgi-bin/token`.

mod common;

use store::accounts::{AccountKind, TokenMode};
use store::audit::AuditFilter;
use tenancy::tenants::{LiveCheck, NewOwner, Registration};
use tenancy::{Principal, Tenancy, TenancyError};
use testkit::TestDatabase;
use vault::SecretString;
use wechat::AppSecret;
use wechat_sim::{AccountSpec, RunningSim, WhitelistMode};

const SECRET: &str = testkit::canary::APP_SECRET;

async fn setup(db: &TestDatabase, api_base: Option<url::Url>) -> (Tenancy, RunningSim) {
    common::tenancy_with_sim(db, api_base).await
}

fn registration(appid: &str, secret: &str) -> Registration {
    Registration {
        appid: appid.to_owned(),
        name: "Checked".to_owned(),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        appsecret: SecretString::new(secret.to_owned()),
        push_token: None,
        encoding_aes_key: None,
        owner: NewOwner::Email("owner@check.example".to_owned()),
        check: LiveCheck::Check,
    }
}

/// Registers and expects the check to fail with `code`; asserts nothing was stored.
async fn refused(tenancy: &Tenancy, appid: &str, secret: &str) -> tenancy::CheckFailure {
    let error = tenancy
        .register_account(&Principal::cli(), registration(appid, secret))
        .await
        .unwrap_err();
    let TenancyError::CredentialCheck(failure) = error else {
        panic!("expected a failed check, got {error:?}");
    };
    assert!(
        tenancy
            .store()
            .find_account_by_appid(appid)
            .await
            .unwrap()
            .is_none()
    );
    let audit = tenancy
        .store()
        .list_audit_page(&AuditFilter::default(), None, 100)
        .await
        .unwrap();
    assert!(
        audit.iter().all(|e| e.action != "account.register"),
        "{audit:?}"
    );
    let shown = format!("{} {}", failure.fix().en, failure.fix().zh);
    assert!(!shown.contains(secret), "{shown}");
    failure
}

async fn each_refusal_maps_to_its_fix_and_stores_nothing(db: TestDatabase) {
    let (tenancy, sim) = setup(&db, None).await;
    let s = &sim.sim;
    s.create_account(AccountSpec::new("wx00000000000000a1", SECRET))
        .unwrap();
    let failure = refused(&tenancy, "wx00000000000000a1", &"f".repeat(32)).await;
    assert_eq!(failure.code, Some(40125));
    assert!(failure.fix().en.contains("Reset the AppSecret"));

    let failure = refused(&tenancy, "wx00000000000000a2", SECRET).await;
    assert_eq!(failure.code, Some(40013));
    assert!(failure.fix().en.contains("AppID"));

    let mut walled = AccountSpec::new("wx00000000000000a3", SECRET);
    walled.whitelist_mode = WhitelistMode::Enforce;
    s.create_account(walled).unwrap();
    let failure = refused(&tenancy, "wx00000000000000a3", SECRET).await;
    assert_eq!(failure.code, Some(40164));
    assert_eq!(failure.ip.as_deref(), Some("127.0.0.1"));
    assert!(
        failure.fix().en.contains("add 127.0.0.1"),
        "{}",
        failure.fix().en
    );
    assert!(failure.fix().zh.contains("127.0.0.1"));

    let mut confirm = AccountSpec::new("wx00000000000000a4", SECRET);
    confirm.whitelist_mode = WhitelistMode::Confirm;
    s.create_account(confirm).unwrap();
    assert_eq!(
        refused(&tenancy, "wx00000000000000a4", SECRET).await.code,
        Some(89503)
    );

    let mut frozen = AccountSpec::new("wx00000000000000a5", SECRET);
    frozen.secret_frozen = true;
    s.create_account(frozen).unwrap();
    let failure = refused(&tenancy, "wx00000000000000a5", SECRET).await;
    assert_eq!(failure.code, Some(40243));
    assert!(failure.fix().en.contains("frozen"));

    // No check ever fetched a core token.
    for appid in [
        "wx00000000000000a1",
        "wx00000000000000a3",
        "wx00000000000000a5",
    ] {
        assert_eq!(s.counter(appid, "/cgi-bin/token").calls, 0, "{appid}");
    }
    db.finish().await;
}

async fn an_unreachable_wechat_stores_nothing(db: TestDatabase) {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = url::Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let (tenancy, _sim) = setup(&db, Some(base)).await;
    let failure = refused(&tenancy, "wx00000000000000b1", SECRET).await;
    assert!(failure.unreachable && failure.code.is_none());
    assert!(failure.fix().en.contains("could not be reached"));
    db.finish().await;
}

async fn a_passing_check_leaves_the_backends_token_valid(db: TestDatabase) {
    let (tenancy, sim) = setup(&db, None).await;
    let appid = "wx00000000000000c1";
    sim.sim
        .create_account(AccountSpec::new(appid, SECRET))
        .unwrap();
    // The owner's current backend holds a core token from before wxhub.
    let client = wechat::Client::new(wechat::ClientConfig::for_base(sim.base_url())).unwrap();
    let theirs = client
        .get_token(appid, &AppSecret::new(SECRET))
        .await
        .unwrap()
        .access_token;
    let cli = Principal::cli();
    tenancy
        .register_account(&cli, registration(appid, SECRET))
        .await
        .unwrap();
    tenancy
        .replace_appsecret(
            &cli,
            appid,
            SecretString::new(SECRET.to_owned()),
            LiveCheck::Check,
        )
        .await
        .unwrap();
    let tokens = sim.sim.tokens(appid).unwrap();
    let still = tokens
        .iter()
        .find(|t| t.access_token == theirs.expose())
        .expect("the backend's token is known");
    assert_eq!(still.status, "valid", "{tokens:?}");
    assert_eq!(sim.sim.counter(appid, "/cgi-bin/token").calls, 1);
    assert_eq!(sim.sim.counter(appid, "/cgi-bin/stable_token").calls, 2);
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

on_both! {
    each_refusal_maps_to_its_fix_and_stores_nothing,
    an_unreachable_wechat_stores_nothing,
    a_passing_check_leaves_the_backends_token_valid,
}
