//! Two `wxhub serve` replicas on one database: what the tenancy layer changes on one reaches
//! the other within a second — an account disabled there is refused here (403), a key revoked
//! there is refused here at once (not after the key cache's time-to-live). Waits on the
//! replica's own events, never on a timer.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::EngineEvent;
use store::changes::ChangeKind;
use tenancy::Principal;
use testkit::TestDatabase;
use wechat::SystemClock;
use wechat_sim::{AccountSpec, SimConfig, Simulator};
use wxhub::config::{Config, ConfigArgs};
use wxhub::server::{AppState, serve_on};

const APPID: &str = "wx00000000000000aa";
const SECRET: &str = testkit::canary::APP_SECRET;

struct Replica {
    state: AppState,
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn replica(config: &Config) -> Replica {
    let state = AppState::open(config.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_on(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Replica {
        state,
        base,
        stop: Some(stop),
        task,
    }
}

impl Replica {
    async fn token_status(&self, key: &str) -> u16 {
        reqwest::Client::new()
            .get(format!(
                "{}/api/v1/accounts/{APPID}/access_token",
                self.base
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits for `events` to report that `kind` was applied for `account_id`; returns how long.
async fn applied(
    events: &mut tokio::sync::broadcast::Receiver<EngineEvent>,
    account_id: &str,
    kind: ChangeKind,
) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(EngineEvent::ChangeApplied {
                    account_id: id,
                    kind: k,
                }) if id == account_id && k == kind => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(error) => panic!("events ended: {error}"),
            }
        }
    })
    .await
    .expect("the change reaches the other replica");
    start.elapsed()
}

async fn changes_on_one_replica_reach_the_other(db: TestDatabase) {
    let sim = Simulator::new(SimConfig::default());
    sim.create_account(AccountSpec::new(APPID, SECRET)).unwrap();
    let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = testkit::TempDir::new();
    let config = Config::load(&ConfigArgs {
        data_dir: Some(dir.path().to_owned()),
        database_url: Some(db.url().to_owned()),
        dev_keyring: true,
        wechat_api_url: Some(running.base_url()),
        ..ConfigArgs::default()
    })
    .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = replica(&config).await;
    let b = replica(&config).await;

    let cli = Principal::cli();
    let mut events = b.state.tokens.subscribe();
    let args = wxhub::tenants::NewAccountArgs {
        appid: APPID.to_owned(),
        name: "Replicated".to_owned(),
        owner_email: "owner@replicas.example".to_owned(),
        kind: store::accounts::AccountKind::Service,
        verified: true,
        token_mode: store::accounts::TokenMode::Token,
        skip_check: false,
    };
    wxhub::tenants::account_add(&config, &args, &mut Cursor::new(format!("{SECRET}\n")))
        .await
        .unwrap();
    let account_id = a
        .state
        .store
        .find_account_by_appid(APPID)
        .await
        .unwrap()
        .unwrap()
        .id;
    let request = tenancy::keys::KeyRequest {
        label: "backend".to_owned(),
        scopes: store::api_keys::KeyScopes::ALL,
        proxy_paths: None,
    };
    let key = a
        .state
        .tenancy
        .create_api_key(&cli, APPID, &request)
        .await
        .unwrap();
    let key_text = key.key.expose().to_owned();
    // B has applied the registration and the key (the feed delivers in order).
    applied(&mut events, &account_id, ChangeKind::ApiKeys).await;
    assert_eq!(b.token_status(&key_text).await, 200);
    assert_eq!(a.token_status(&key_text).await, 200);

    // Disabled on A: B refuses it as soon as it has applied the change.
    a.state.tenancy.disable_account(&cli, APPID).await.unwrap();
    let took = applied(&mut events, &account_id, ChangeKind::Account).await;
    eprintln!("disable reached the other replica in {took:?}");
    assert_eq!(b.token_status(&key_text).await, 403);
    a.state.tenancy.enable_account(&cli, APPID).await.unwrap();
    applied(&mut events, &account_id, ChangeKind::Account).await;
    assert_eq!(b.token_status(&key_text).await, 200);

    // Revoked on A: B, which has the key cached, refuses it at once.
    a.state
        .tenancy
        .revoke_api_key(&cli, APPID, &key.record.id)
        .await
        .unwrap();
    let took = applied(&mut events, &account_id, ChangeKind::ApiKeys).await;
    eprintln!("revoke reached the other replica in {took:?}");
    assert_eq!(b.token_status(&key_text).await, 401);

    // Deleted on A: B serves nothing of it.
    a.state.tenancy.delete_account(&cli, APPID).await.unwrap();
    applied(&mut events, &account_id, ChangeKind::Account).await;
    assert!(b.state.tokens.cached(&account_id).is_none());

    a.stop().await;
    b.stop().await;
    db.finish().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_on_one_replica_reach_the_other() {
        super::changes_on_one_replica_reach_the_other(testkit::TestDatabase::sqlite()).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_on_one_replica_reach_the_other() {
        if let Some(db) = testkit::TestDatabase::postgres().await {
            super::changes_on_one_replica_reach_the_other(db).await;
        }
    }
}
