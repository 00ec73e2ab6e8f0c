//! Test setup: a simulator and a hub database on one `ManualClock`, accounts registered on
//! both sides, token services pointed at the simulator.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use accounts::{AccountInput, VaultHandle};
use scheduler::{SchedulerConfig, TokenService};
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use testkit::TestDatabase;
use vault::SecretString;
use wechat::{Clock, ManualClock};
use wechat_sim::{AccountSpec, RunningSim, SimConfig, Simulator};

/// 2026-01-15 12:00 in Shanghai.
pub const START: i64 = 1_768_449_600_000;
pub const TOKEN: &str = "/cgi-bin/token";
/// What wxhub asks WeChat to confirm that a reported token is rejected.
pub const CONFIRM: &str = "/cgi-bin/get_api_domain_ip";

/// One registered account.
#[derive(Debug, Clone)]
pub struct Acct {
    pub id: String,
    pub appid: String,
}

/// The simulator, the hub's database and vault, and the clock they share.
pub struct Hub {
    pub clock: ManualClock,
    pub running: RunningSim,
    pub store: Store,
    pub url: String,
    pub vault: Arc<VaultHandle>,
    /// Timeout of the WeChat client of services created from now on.
    pub client_timeout: Duration,
    owner: String,
    /// The SQLite database, removed when the hub is dropped (`on_postgres` keeps its own).
    _sqlite: Option<TestDatabase>,
}

pub fn appid(i: usize) -> String {
    format!("wx{i:016x}")
}

/// A fresh API key, recorded for the canary check (it is what wxhub issues).
pub fn api_key() -> scheduler::apikey::GeneratedApiKey {
    let key = scheduler::apikey::generate_api_key().unwrap();
    testkit::canary::issued(key.secret.expose());
    key
}

pub fn secret(i: usize) -> String {
    testkit::canary::app_secret(i as u64 + 0xabc0_0000)
}

impl Hub {
    /// A hub on a fresh SQLite file.
    pub async fn sqlite() -> Hub {
        let db = TestDatabase::sqlite();
        let url = db.url().to_owned();
        Hub::on(url, Some(db)).await
    }

    async fn on(url: String, sqlite: Option<TestDatabase>) -> Hub {
        let clock = ManualClock::new(START);
        let mut config = SimConfig::with_manual_clock(clock.clone());
        config.limits.max_accounts = 200_000;
        let running = testkit::fixtures::simulator(config).await;
        let store = Store::connect(&url).await.unwrap();
        let vault = testkit::fixtures::vault();
        let owner = testkit::fixtures::owner(&store, START).await;
        Hub {
            clock,
            running,
            store,
            url,
            vault,
            client_timeout: Duration::from_millis(1500),
            owner: owner.id,
            _sqlite: sqlite,
        }
    }

    pub fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    /// A WeChat client pointed at the simulator with a short timeout.
    pub fn client(&self) -> wechat::Client {
        let mut config = wechat::ClientConfig::for_base(self.running.base_url());
        config.timeout = self.client_timeout;
        wechat::Client::new(config).unwrap()
    }

    /// A config with a pinned RNG seed.
    pub fn config(seed: u64) -> SchedulerConfig {
        SchedulerConfig {
            rng_seed: Some(seed),
            holder: format!("test-replica-{seed}"),
            ..SchedulerConfig::default()
        }
    }

    /// A token service on this hub's database (or another store on the same database).
    pub async fn service_on(&self, store: Store, config: SchedulerConfig) -> TokenService {
        TokenService::open(
            store,
            self.vault.clone(),
            self.client(),
            Arc::new(self.clock.clone()),
            config,
        )
        .await
        .unwrap()
    }

    pub async fn service(&self, config: SchedulerConfig) -> TokenService {
        self.service_on(self.store.clone(), config).await
    }

    /// Registers `n` accounts (numbered from `first`) in the simulator and in the hub.
    pub async fn accounts(&self, first: usize, n: usize, mode: TokenMode) -> Vec<Acct> {
        let specs = (first..first + n).map(|i| AccountSpec::new(appid(i), secret(i)));
        self.sim().create_accounts(specs).unwrap();
        let mut out = Vec::new();
        for i in first..first + n {
            out.push(self.register(i, &secret(i), mode).await);
        }
        out
    }

    /// Registers account `i` in the hub only, with `appsecret`.
    pub async fn register(&self, i: usize, appsecret: &str, mode: TokenMode) -> Acct {
        let input = AccountInput {
            owner_user_id: self.owner.clone(),
            appid: appid(i),
            name: format!("Account {i}"),
            kind: AccountKind::Service,
            verified: true,
            token_mode: mode,
            appsecret: SecretString::new(appsecret.to_owned()),
            push_token: None,
            encoding_aes_key: None,
        };
        let vault = self.vault.current();
        let account = accounts::register_account(&self.store, &vault, &input, self.now())
            .await
            .unwrap();
        Acct {
            id: account.id,
            appid: account.appid,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Successful token fetches the simulator saw for `appid`, and all attempts.
    pub fn fetches(&self, appid: &str) -> (u64, u64) {
        let c = self.sim().counter(appid, TOKEN);
        (c.ok, c.calls)
    }

    /// Runs statements on the hub's database behind the store's back (tests that break it on
    /// purpose), in the dialect of the database the hub uses.
    pub async fn execute_raw(&self, sqlite: &[&'static str], postgres: &[&'static str]) {
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            for sql in sqlite {
                sqlx::raw_sql(*sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            for sql in postgres {
                sqlx::raw_sql(*sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }

    /// Someone outside wxhub fetches `acct`'s token with its AppSecret (the classic mistake
    /// wxhub exists to prevent), and the 300 s during which WeChat still accepts the previous
    /// token pass: from now on WeChat rejects wxhub's token (40001). Moves the clock.
    pub async fn supersede_outside(&self, acct: &Acct) {
        let i = usize::from_str_radix(&acct.appid[2..], 16).unwrap();
        self.client()
            .get_token(&acct.appid, &wechat::AppSecret::new(secret(i)))
            .await
            .unwrap();
        self.advance(self.sim().config().token_grace.as_secs() + 1);
    }

    /// The next `times` confirmations wxhub asks of WeChat for `appid` (`get_api_domain_ip`)
    /// answer 40001, as for a token WeChat rejects (`None`: every one).
    pub fn confirmations_reject(&self, appid: &str, times: Option<u32>) {
        self.sim()
            .add_fault(wechat_sim::FaultSpec {
                endpoint: Some(CONFIRM.into()),
                appid: Some(appid.to_owned()),
                action: wechat_sim::FaultAction::Errcode {
                    code: 40001,
                    errmsg: None,
                },
                next: times,
                rate: times.is_none().then_some(1.0),
            })
            .unwrap();
    }

    /// The confirmations wxhub asked of WeChat for `appid`.
    pub fn confirmations(&self, appid: &str) -> u64 {
        self.sim().counter(appid, CONFIRM).calls
    }

    /// Whether the simulator accepts `token` for `appid` right now.
    pub fn accepted(&self, appid: &str, token: &str) -> bool {
        self.sim()
            .tokens(appid)
            .unwrap()
            .iter()
            .any(|t| t.access_token == token && t.status == "valid")
    }
}

/// Runs `test` against a fresh PostgreSQL database (a `Hub` on it), or reports that it did not
/// run. The database is dropped afterwards, also when the test fails.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Hub) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let hub = Hub::on(db.url().to_owned(), None).await;
    let store = hub.store.clone();
    let outcome = tokio::spawn(test(hub)).await;
    store.close().await;
    db.finish().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Serves the scheduler's router on 127.0.0.1:0; returns its base URL.
pub async fn serve(service: TokenService) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = scheduler::router(service)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}
