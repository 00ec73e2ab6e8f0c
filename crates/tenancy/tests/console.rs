//! The console settings and WeChat's probe of the server URL (docs/wechat.md §3.7), against
//! the simulator: what an owner pastes is listed without a secret, the probe reaches a hub
//! that answers the verification request, reports one that does not, and needs the token
//! the scheduler keeps (it never fetches one).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::gateway::PushMode;
use store::people::Role;
use store::tokens::RefreshedToken;
use tenancy::tenants::{LiveCheck, NewOwner, Registration};
use tenancy::{Principal, Tenancy, TenancyConfig, TenancyError};
use testkit::TestDatabase;
use vault::SecretString;
use wechat::{AppSecret, SystemClock};
use wechat_sim::{AccountSpec, RunningSim, SimConfig};

const APPID: &str = "wx00000000000000c0";
const SECRET: &str = testkit::canary::APP_SECRET;
const PUSH_TOKEN: &str = testkit::canary::PUSH_TOKEN;

/// A hub at 127.0.0.1 whose `/wx` answers the verification GET with its `echostr` when
/// `echo`, with something else otherwise.
async fn hub(echo: bool) -> String {
    let app = Router::new().route(
        "/wx",
        get(move |Query(q): Query<HashMap<String, String>>| async move {
            if echo {
                q.get("echostr").cloned().unwrap_or_default()
            } else {
                "success".to_owned()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/wx")
}

struct World {
    tenancy: Tenancy,
    sim: RunningSim,
    vault: Arc<accounts::VaultHandle>,
    owner: Principal,
}

async fn world(db: &TestDatabase, push_url: String) -> World {
    let sim = testkit::fixtures::simulator(SimConfig::default()).await;
    let mut spec = AccountSpec::new(APPID.to_owned(), SECRET.to_owned());
    spec.push_token = PUSH_TOKEN.to_owned();
    spec.push_url = Some(push_url);
    sim.sim.create_account(spec).unwrap();
    let store = Store::connect(db.url()).await.unwrap();
    let vault = testkit::fixtures::vault();
    let mut config = wechat::ClientConfig::for_base(sim.base_url());
    config.timeout = std::time::Duration::from_secs(5);
    let mut settings = TenancyConfig::new(url::Url::parse("https://hub.example:8443").unwrap());
    settings.egress_ips = vec!["203.0.113.7".parse().unwrap()];
    let tenancy = Tenancy::new(
        store,
        vault.clone(),
        wechat::Client::new(config).unwrap(),
        Arc::new(SystemClock),
        settings,
    );
    let person = tenancy
        .create_person(&Principal::cli(), "owner@console.example", Role::Owner)
        .await
        .unwrap();
    let owner = tenancy.principal_for_user(&person.id).await.unwrap();
    tenancy
        .register_account(
            &owner,
            Registration {
                appid: APPID.to_owned(),
                name: "Console".to_owned(),
                kind: AccountKind::Service,
                verified: true,
                token_mode: TokenMode::Token,
                appsecret: SecretString::new(SECRET.to_owned()),
                push_token: Some(SecretString::new(PUSH_TOKEN.to_owned())),
                encoding_aes_key: None,
                owner: NewOwner::Caller,
                check: LiveCheck::Check,
            },
        )
        .await
        .unwrap();
    World {
        tenancy,
        sim,
        vault,
        owner,
    }
}

/// Stores a token from the simulator as the scheduler would (sealed, with its lease).
async fn keep_token(w: &World) {
    let client = wechat::Client::new(wechat::ClientConfig::for_base(w.sim.base_url())).unwrap();
    let fetched = client
        .get_token(APPID, &AppSecret::new(SECRET))
        .await
        .unwrap();
    let store = w.tenancy.store();
    let account = store.find_account_by_appid(APPID).await.unwrap().unwrap();
    let sealed = store
        .load_account_secrets(&account.id)
        .await
        .unwrap()
        .unwrap();
    let ciphertext = accounts::registry::seal_core_token(
        &w.vault.current(),
        &account.id,
        &sealed.wrapped_dek,
        &fetched.access_token,
    )
    .unwrap();
    let now = wechat::Clock::now_ms(&SystemClock);
    let claimed = store
        .claim_token_refresh(&account.id, "test", now, now + 60_000, 0, i64::MAX)
        .await
        .unwrap()
        .unwrap();
    store
        .store_refreshed_token(
            &account.id,
            claimed.generation,
            &RefreshedToken {
                token: ciphertext,
                issued_at: now,
                expires_at: now + 7_200_000,
                next_refresh_at: now + 6_000_000,
            },
            now,
        )
        .await
        .unwrap();
}

async fn console_lists_what_to_paste_without_secrets(db: TestDatabase) {
    let w = world(&db, hub(true).await).await;
    let console = w.tenancy.console_settings(&w.owner, APPID).await.unwrap();
    assert_eq!(
        console.push_url,
        format!("https://hub.example:8443/t/{APPID}/wechat/push")
    );
    assert_eq!(console.web_auth_domain, "hub.example:8443");
    assert_eq!(console.whitelist, ["203.0.113.7"]);
    assert_eq!(
        console.secrets.appsecret_hint.as_deref(),
        Some(&SECRET[SECRET.len() - 4..])
    );
    assert!(console.secrets.push_token && !console.secrets.encoding_aes_key);
    // No EncodingAESKey and no mode chosen: plain is what wxhub assumes.
    assert_eq!(
        (console.push_mode, console.push_mode_set),
        (PushMode::Plain, false)
    );
    assert!(console.web_login);
    // Operators see the settings but not even the AppSecret's last characters.
    let operator = w
        .tenancy
        .create_person(&Principal::cli(), "ops@console.example", Role::Operator)
        .await
        .unwrap();
    let operator = w.tenancy.principal_for_user(&operator.id).await.unwrap();
    let seen = w.tenancy.console_settings(&operator, APPID).await.unwrap();
    assert_eq!(seen.secrets.appsecret_hint, None);
    assert!(!format!("{seen:?}").contains(SECRET) && !format!("{seen:?}").contains(PUSH_TOKEN));
    db.finish().await;
}

async fn the_probe_needs_the_kept_token_and_reports_what_wechat_saw(db: TestDatabase) {
    let w = world(&db, hub(true).await).await;
    let before = w.tenancy.probe_push_url(&w.owner, APPID).await.unwrap_err();
    assert!(
        matches!(before, TenancyError::Invalid { field: "token", .. }),
        "{before:?}"
    );
    let token_calls = || w.sim.sim.counter(APPID, "/cgi-bin/token").calls;
    assert_eq!(token_calls(), 0);
    keep_token(&w).await;
    let report = w.tenancy.probe_push_url(&w.owner, APPID).await.unwrap();
    assert!(report.reachable(), "{report:?}");
    assert_eq!(report.dns.len(), 1);
    assert_eq!(report.dns[0].0, "127.0.0.1");
    assert_eq!(report.ping[0].package_loss, "0%");
    // The probe used the kept token: the only token fetch is the test's own.
    assert_eq!(token_calls(), 1);
    let log = w
        .tenancy
        .list_audit(
            &w.owner,
            &tenancy::people::AuditQuery {
                appid: Some(APPID.to_owned()),
                action: Some("settings.probe".to_owned()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].details["outcome"], "reachable");
    db.finish().await;
}

async fn a_hub_that_does_not_echo_is_reported_unreachable(db: TestDatabase) {
    let w = world(&db, hub(false).await).await;
    keep_token(&w).await;
    let report = w.tenancy.probe_push_url(&w.owner, APPID).await.unwrap();
    assert!(!report.reachable(), "{report:?}");
    assert_eq!(report.ping[0].package_loss, "100%");
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
    console_lists_what_to_paste_without_secrets,
    the_probe_needs_the_kept_token_and_reports_what_wechat_saw,
    a_hub_that_does_not_echo_is_reported_unreachable,
}
