//! Test setup: the simulator as WeChat, the gateway's real HTTP server on 127.0.0.1:0 over a
//! real database (a SQLite file, or a fresh PostgreSQL database), a scheduler stand-in for
//! core tokens, a "browser" that does not follow redirects and keeps the gateway's login
//! cookie (`Env::get`/`Env::post`), and a real OIDC relying party.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use accounts::{AccountInput, VaultHandle};
use gateway::{BoxFuture, CoreTokenError, CoreTokens, Gateway, GatewayConfig};
use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreIdTokenClaims, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::oidc::LoginMode;
use testkit::TestDatabase;
use tokio::task::JoinHandle;
use vault::SecretString;
use wechat::{AccessToken, AppSecret, ManualClock};
use wechat_sim::{AccountSpec, PushMode, RunningSim, SimConfig, Simulator, UserSpec};

pub const APPID: &str = "wx0123456789abcdef";
pub const OTHER_APPID: &str = "wxfedcba9876543210";
pub const PUSH_TOKEN: &str = testkit::canary::PUSH_TOKEN;
pub const AES_KEY: &str = testkit::canary::ENCODING_AES_KEY;
pub const REDIRECT: &str = "http://127.0.0.1:9/cb";
/// The test browser's User-Agent: WeChat's own browser on a phone (docs/wechat.md §4).
pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) \
     AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x18003237) \
     NetType/WIFI Language/zh_CN";
/// A desktop browser's User-Agent (outside WeChat).
pub const PC_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

pub fn secret_of(appid: &str) -> String {
    testkit::canary::app_secret_for(appid)
}

pub fn original_id_of(appid: &str) -> String {
    format!("gh_{}", &appid[2..14])
}

/// The scheduler stand-in: fetches each account's core token from the simulator's real
/// `/cgi-bin/token` once, and again only when a rejection of the current token is reported
/// (single flight under one lock). `fetches` counts every fetch it made.
pub struct SimCoreTokens {
    client: wechat::Client,
    accounts: std::sync::Mutex<HashMap<String, String>>,
    cache: tokio::sync::Mutex<HashMap<String, AccessToken>>,
    pub fetches: AtomicU64,
}

impl SimCoreTokens {
    async fn fetch(&self, account_id: &str) -> Result<AccessToken, CoreTokenError> {
        let appid = self
            .accounts
            .lock()
            .unwrap()
            .get(account_id)
            .cloned()
            .ok_or(CoreTokenError {
                reason: "unknown account".into(),
            })?;
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.client
            .get_token(&appid, &AppSecret::new(secret_of(&appid)))
            .await
            .map(|t| t.access_token)
            .map_err(|e| CoreTokenError {
                reason: e.to_string(),
            })
    }
}

impl CoreTokens for SimCoreTokens {
    fn current<'a>(
        &'a self,
        account_id: &'a str,
    ) -> BoxFuture<'a, Result<AccessToken, CoreTokenError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some(t) = cache.get(account_id) {
                return Ok(t.clone());
            }
            let t = self.fetch(account_id).await?;
            cache.insert(account_id.to_owned(), t.clone());
            Ok(t)
        })
    }

    fn report_rejected<'a>(
        &'a self,
        account_id: &'a str,
        rejected: &'a AccessToken,
    ) -> BoxFuture<'a, Result<AccessToken, CoreTokenError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some(t) = cache.get(account_id)
                && t != rejected
            {
                return Ok(t.clone());
            }
            let t = self.fetch(account_id).await?;
            cache.insert(account_id.to_owned(), t.clone());
            Ok(t)
        })
    }
}

/// One gateway replica serving HTTP.
pub struct Hub {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub store: Store,
    /// This replica's statistics (flushed by the tests that read them).
    pub stats: stats::Stats,
    task: JoinHandle<()>,
    /// This replica's push-copy worker (aborted to stand for a killed replica).
    pub copies: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Hub {
    /// Stops this replica's copy worker, as if the process died.
    pub fn kill_copy_worker(&self) {
        if let Some(worker) = self.copies.lock().unwrap().take() {
            worker.abort();
        }
    }

    /// Starts this replica's copy worker (again).
    pub fn start_copy_worker(&self) {
        let mut slot = self.copies.lock().unwrap();
        if slot.is_none() {
            *slot = Some(gateway::routes::spawn_copy_worker(self.gateway.clone()));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
        self.kill_copy_worker();
    }
}

/// Push-route options for tests: loopback owner servers are allowed.
pub fn test_route_options() -> gateway::routes::RouteOptions {
    gateway::routes::RouteOptions {
        allow_hosts: vec!["127.0.0.1".into(), "localhost".into()],
        ..Default::default()
    }
}

pub struct Env {
    pub clock: ManualClock,
    /// The tenancy layer over the first hub's store, acting as the CLI.
    pub tenancy: tenancy::Tenancy,
    pub running: RunningSim,
    pub hubs: Vec<Hub>,
    pub vault: Arc<VaultHandle>,
    pub tokens: Arc<SimCoreTokens>,
    pub browser: reqwest::Client,
    /// The browser's cookies (name → value), sent by `get`/`post` and updated from their
    /// responses' `Set-Cookie`. Cookies ignore ports, so every replica on 127.0.0.1 gets them.
    pub cookies: std::sync::Mutex<HashMap<String, String>>,
    /// The public URL every replica is configured with (replica 0's address).
    pub public: String,
    /// The database URL (for tests that reach into the database directly).
    pub db_url: String,
    /// The test database, removed or dropped when the `Env` is (taken in `drop`).
    db: Option<TestDatabase>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let Some(db) = self.db.take() else {
            return;
        };
        if !db.is_postgres() {
            // Removes the SQLite file's directory.
            drop(db);
            return;
        }
        // Dropping a database needs a connection; do it on a fresh thread and runtime. A
        // failure to drop it is not the test's failure.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(db.finish());
        })
        .join();
    }
}

/// Which database a test runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

/// The PostgreSQL admin URL, or `None` after printing the store's "did not run" line.
pub fn postgres_url() -> Option<String> {
    testkit::postgres_admin_url_or_skip()
}

impl Env {
    pub async fn sqlite() -> Env {
        Env::start(DbKind::Sqlite, 1, None).await
    }

    /// One gateway on SQLite with these limits.
    pub async fn sqlite_with_limits(limits: gateway::limits::GatewayLimits) -> Env {
        Env::start_with(DbKind::Sqlite, 1, None, limits).await
    }

    /// `replicas` gateways over one database (each with its own pool and key cache).
    pub async fn start(kind: DbKind, replicas: usize, pg_admin: Option<String>) -> Env {
        Env::start_with(kind, replicas, pg_admin, Default::default()).await
    }

    /// [`Env::start`] with these limits on every replica.
    pub async fn start_with(
        kind: DbKind,
        replicas: usize,
        pg_admin: Option<String>,
        limits: gateway::limits::GatewayLimits,
    ) -> Env {
        Env::start_with_routes(kind, replicas, pg_admin, limits, test_route_options()).await
    }

    /// One gateway that counts nothing ([`stats::Stats::disabled`]), to compare against.
    pub async fn without_stats(
        kind: DbKind,
        pg_admin: Option<String>,
        limits: gateway::limits::GatewayLimits,
    ) -> Env {
        Env::start_counting(kind, 1, pg_admin, limits, test_route_options(), false).await
    }

    /// [`Env::start_with`] with these push-route options on every replica.
    pub async fn start_with_routes(
        kind: DbKind,
        replicas: usize,
        pg_admin: Option<String>,
        limits: gateway::limits::GatewayLimits,
        route_options: gateway::routes::RouteOptions,
    ) -> Env {
        Env::start_counting(kind, replicas, pg_admin, limits, route_options, true).await
    }

    async fn start_counting(
        kind: DbKind,
        replicas: usize,
        pg_admin: Option<String>,
        limits: gateway::limits::GatewayLimits,
        route_options: gateway::routes::RouteOptions,
        counting: bool,
    ) -> Env {
        // Starts at the wall clock: the relying party checks ID-token expiry against real time.
        let clock = ManualClock::starting_now();
        let mut cfg = SimConfig::with_manual_clock(clock.clone());
        cfg.push_timeout = Duration::from_secs(5);
        cfg.push_attempts = 1;
        let running = testkit::fixtures::simulator(cfg).await;
        let db = match kind {
            DbKind::Sqlite => TestDatabase::sqlite(),
            DbKind::Postgres => {
                TestDatabase::postgres_on(&pg_admin.expect("postgres admin URL")).await
            }
        };
        let url = db.url().to_owned();
        let vault = testkit::fixtures::vault();
        let mut wechat_config = wechat::ClientConfig::for_base(running.base_url());
        wechat_config.timeout = Duration::from_secs(5);
        let wechat = wechat::Client::new(wechat_config).unwrap();
        let tokens = Arc::new(SimCoreTokens {
            client: wechat.clone(),
            accounts: Default::default(),
            cache: Default::default(),
            fetches: AtomicU64::new(0),
        });
        let mut listeners = Vec::new();
        for _ in 0..replicas {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let public = format!("http://{}", listeners[0].local_addr().unwrap());
        let mut hubs = Vec::new();
        for listener in listeners {
            let store = Store::connect(&url).await.unwrap();
            let stats = if counting {
                stats::Stats::new(
                    store.clone(),
                    Arc::new(clock.clone()),
                    stats::StatsConfig::default(),
                )
            } else {
                stats::Stats::disabled()
            };
            let gateway = Gateway::with_options(
                GatewayConfig {
                    store: store.clone(),
                    vault: vault.clone(),
                    clock: Arc::new(clock.clone()),
                    wechat: wechat.clone(),
                    core_tokens: tokens.clone(),
                    public_url: url::Url::parse(&public).unwrap(),
                    stats: stats.clone(),
                },
                limits,
                route_options.clone(),
            )
            .unwrap();
            let addr = listener.local_addr().unwrap();
            // With the peer address, as the hub serves it (the per-IP limits read it).
            let app = gateway::router(gateway.clone())
                .into_make_service_with_connect_info::<SocketAddr>();
            // As the hub serves (TCP_NODELAY: events go out at once, see crates/wxhub).
            let listener =
                axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                    let _ = tcp.set_nodelay(true);
                });
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            let copies =
                std::sync::Mutex::new(Some(gateway::routes::spawn_copy_worker(gateway.clone())));
            hubs.push(Hub {
                addr,
                gateway,
                store,
                stats,
                task,
                copies,
            });
        }
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(WECHAT_UA)
            .build()
            .unwrap();
        let tenancy = tenancy::Tenancy::new(
            hubs[0].store.clone(),
            vault.clone(),
            wechat.clone(),
            Arc::new(clock.clone()),
            tenancy::TenancyConfig {
                // Targets are checked as the hubs deliver: the same hosts are allowed.
                push_allow_hosts: route_options.allow_hosts.clone(),
                ..tenancy::TenancyConfig::new(url::Url::parse(&public).unwrap())
            },
        );
        let env = Env {
            tenancy,
            clock,
            running,
            hubs,
            vault,
            tokens,
            browser,
            cookies: Default::default(),
            public,
            db_url: url.clone(),
            db: Some(db),
        };
        env.account(APPID, PushMode::Safe, |_| {}).await;
        for user in ["alice", "bob", "carol"] {
            let mut spec = UserSpec::new(user, format!("nick-{user}"));
            spec.headimgurl = format!("https://thirdwx.qlogo.cn/mmopen/{user}/132");
            env.sim().create_user(spec).unwrap();
        }
        env
    }

    /// The shared clock's time (Unix ms); it moves only when a test advances it.
    pub fn now(&self) -> i64 {
        wechat::Clock::now_ms(&self.clock)
    }

    pub fn now_secs(&self) -> i64 {
        self.now().div_euclid(1000)
    }

    pub fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    pub fn store(&self) -> &Store {
        &self.hubs[0].store
    }

    pub fn issuer(&self, appid: &str) -> String {
        format!("{}/t/{appid}", self.public)
    }

    /// Registers an account in wxhub and the simulator; `change` adjusts the simulator's
    /// spec (wxhub's kind and verified flag follow it). Returns the wxhub account id.
    pub async fn account(
        &self,
        appid: &str,
        mode: PushMode,
        change: impl FnOnce(&mut AccountSpec),
    ) -> String {
        let mut spec = AccountSpec::new(appid, secret_of(appid));
        spec.push_token = PUSH_TOKEN.into();
        spec.encoding_aes_key = Some(AES_KEY.into());
        spec.push_mode = mode;
        spec.push_url = Some(format!("{}/wechat/push", self.issuer(appid)));
        spec.oauth_domain = Some("127.0.0.1".into());
        spec.original_id = Some(original_id_of(appid));
        change(&mut spec);
        let owner = testkit::fixtures::owner(self.store(), self.now()).await;
        let account = accounts::register_account(
            self.store(),
            &self.vault.current(),
            &AccountInput {
                owner_user_id: owner.id,
                appid: appid.into(),
                name: format!("Account {appid}"),
                kind: match spec.kind {
                    wechat_sim::AccountKind::Service => AccountKind::Service,
                    wechat_sim::AccountKind::Subscription => AccountKind::Subscription,
                },
                verified: spec.verified,
                token_mode: TokenMode::Token,
                appsecret: SecretString::new(secret_of(appid)),
                push_token: Some(SecretString::new(PUSH_TOKEN.into())),
                encoding_aes_key: Some(SecretString::new(AES_KEY.into())),
            },
            self.now(),
        )
        .await
        .unwrap();
        self.update_settings(
            &account.id,
            &store::gateway::GatewaySettings {
                original_id: spec.original_id.clone(),
                push_mode: Some(match spec.push_mode {
                    PushMode::Plain => store::gateway::PushMode::Plain,
                    PushMode::Compatible => store::gateway::PushMode::Compatible,
                    PushMode::Safe => store::gateway::PushMode::Safe,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        self.sim().create_account(spec).unwrap();
        self.tokens
            .accounts
            .lock()
            .unwrap()
            .insert(account.id.clone(), appid.into());
        account.id
    }

    pub async fn account_id(&self, appid: &str) -> String {
        self.store()
            .find_account_by_appid(appid)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    /// Registers an OIDC client; returns (client_id, secret).
    pub async fn client(
        &self,
        appid: &str,
        mode: LoginMode,
        public: bool,
    ) -> (String, Option<String>) {
        let created = self.create_client(appid, mode, public).await.unwrap();
        if let Some(secret) = &created.secret {
            testkit::canary::issued(secret.expose());
        }
        (
            created.client.client_id,
            created.secret.map(|s| s.expose().to_owned()),
        )
    }

    /// Registers an OIDC client through the tenancy layer, as the CLI.
    pub async fn create_client(
        &self,
        appid: &str,
        mode: LoginMode,
        public: bool,
    ) -> Result<tenancy::websites::WebsiteWithSecret, tenancy::TenancyError> {
        self.tenancy
            .create_website(
                &tenancy::Principal::cli(),
                appid,
                &tenancy::websites::NewWebsite {
                    name: "test site".into(),
                    redirect_uris: vec![REDIRECT.into()],
                    login_mode: mode,
                    public,
                },
            )
            .await
    }

    /// Checks and stores an account's gateway settings (as the tenancy layer would).
    pub async fn update_settings(
        &self,
        account_id: &str,
        settings: &store::gateway::GatewaySettings,
    ) -> Result<(), tenancy::TenancyError> {
        tenancy::settings::validate(
            settings,
            &tenancy::targets::AllowList::new(&test_route_options().allow_hosts),
        )?;
        let record = store::audit::AuditRecord::new("test", "settings.update")
            .account(account_id)
            .announce(store::changes::ChangeKind::Settings);
        self.store()
            .set_gateway_settings(account_id, settings, self.now(), &record)
            .await?;
        Ok(())
    }

    /// GET without following redirects, with the browser's cookies.
    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.send_with_cookies(self.browser.get(url)).await
    }

    /// GET from a desktop browser (outside WeChat), with the browser's cookies.
    pub async fn pc_get(&self, url: &str) -> reqwest::Response {
        self.send_with_cookies(self.browser.get(url).header("user-agent", PC_UA))
            .await
    }

    pub async fn post(&self, url: &str) -> reqwest::Response {
        self.send_with_cookies(self.browser.post(url)).await
    }

    /// Sends `request` (built on `self.browser`) with the browser's cookies, keeping the ones
    /// the response sets.
    pub async fn send_with_cookies(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let header = {
            let jar = self.cookies.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let request = if header.is_empty() {
            request
        } else {
            request.header("cookie", header)
        };
        let response = request.send().await.unwrap();
        let mut jar = self.cookies.lock().unwrap();
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            jar.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        response
    }

    /// Forgets the browser's cookies (another browser, from the gateway's point of view).
    pub fn clear_cookies(&self) {
        self.cookies.lock().unwrap().clear();
    }

    /// Replica `i`'s version of a URL under the public address (a load balancer's choice).
    pub fn on_replica(&self, url: &str, i: usize) -> String {
        url.replacen(&self.public, &format!("http://{}", self.hubs[i].addr), 1)
    }

    /// The gateway never fetched a core token: every `/cgi-bin/token` call the simulator saw
    /// was the scheduler stand-in's.
    pub fn assert_gateway_never_fetched_a_token(&self, appid: &str) {
        let calls = self.sim().counter(appid, "/cgi-bin/token").calls;
        assert_eq!(calls, self.tokens.fetches.load(Ordering::SeqCst));
    }

    pub async fn pushes(&self, appid: &str) -> Vec<store::pushes::ReceivedPush> {
        let id = self.account_id(appid).await;
        self.store().list_recent_pushes(&id, 100).await.unwrap()
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on a {} response", r.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Picks the simulated user on WeChat's authorize page (the simulator's test hook).
pub fn as_user(wechat_url: &str, user: &str, answer: &str) -> String {
    let base = wechat_url.trim_end_matches("#wechat_redirect");
    format!("{base}&sim_user={user}&sim_answer={answer}")
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A Server-Sent Events stream, read event by event.
pub struct Events {
    pub response: reqwest::Response,
    pub buf: String,
}

impl Events {
    /// The next event's JSON data, waiting at most 10 s for it.
    pub async fn next(&mut self) -> serde_json::Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return serde_json::from_str(&data.join("\n")).unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream is open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// A safe-mode push of `message` for `appid` to `url`, signed with [`PUSH_TOKEN`] and
/// encrypted with [`AES_KEY`] as WeChat sends it (timestamp: the shared clock's now).
pub fn safe_push(
    env: &Env,
    url: &str,
    appid: &str,
    message: &str,
    nonce: &str,
) -> reqwest::RequestBuilder {
    use wechat::push as sig;
    let ts = env.now_secs().to_string();
    let crypt = wechat::crypto::MsgCrypt::new(
        wechat::crypto::EncodingAesKey::parse(AES_KEY).unwrap(),
        appid,
    );
    let encrypt = crypt.encrypt(message);
    let body = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
        original_id_of(appid)
    );
    env.browser
        .post(url)
        .query(&[
            ("signature", sig::signature(PUSH_TOKEN, &ts, nonce)),
            ("timestamp", ts.clone()),
            ("nonce", nonce.to_owned()),
            ("encrypt_type", "aes".to_owned()),
            (
                "msg_signature",
                sig::msg_signature(PUSH_TOKEN, &ts, nonce, &encrypt),
            ),
        ])
        .body(body)
}

// ---- the relying party ----

/// The relying party's HTTP client: the workspace's reqwest, no redirects (SSRF advice of the
/// openidconnect crate).
pub async fn rp_http(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    });
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    let mut out = openidconnect::http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// wxhub's extra claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WxClaims {
    pub follows_account: bool,
    #[serde(default)]
    pub unionid: Option<String>,
}
impl AdditionalClaims for WxClaims {}

pub type RpClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

pub struct Rp {
    pub client: RpClient,
    /// The ID-token algorithms the RP accepts: the library's default (RS256 only) unless a
    /// test registers an ES256 client.
    pub allowed_algs: Vec<CoreJwsSigningAlgorithm>,
    pub issuer: String,
}

/// One authorization request as the RP made it.
pub struct Attempt {
    pub url: String,
    pub state: CsrfToken,
    pub nonce: Nonce,
    pub verifier: PkceCodeVerifier,
}

/// What a completed login gave the RP.
#[derive(Debug)]
pub struct LoggedIn {
    pub sub: String,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    pub userinfo: UserInfoClaims<WxClaims, CoreGenderClaim>,
    pub access_token: openidconnect::AccessToken,
}

impl Rp {
    pub async fn discover(env: &Env, appid: &str, client_id: &str, secret: Option<String>) -> Rp {
        let metadata = CoreProviderMetadata::discover_async(
            IssuerUrl::new(env.issuer(appid)).unwrap(),
            &rp_http,
        )
        .await
        .unwrap();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(client_id.into()),
            secret.map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        Rp {
            client,
            allowed_algs: vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            issuer: env.issuer(appid),
        }
    }

    pub fn start(&self) -> Attempt {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Attempt {
            url: url.to_string(),
            state,
            nonce,
            verifier,
        }
    }

    /// Redeems `code` like a site's callback handler would, checking state, ID token
    /// (signature, issuer, audience, nonce) and fetching userinfo.
    pub async fn finish(&self, attempt: Attempt, callback: &str) -> Result<LoggedIn, String> {
        if let Some(error) = query_param(callback, "error") {
            return Err(error);
        }
        assert_eq!(
            query_param(callback, "state").as_deref(),
            Some(attempt.state.secret().as_str()),
            "state must come back unchanged"
        );
        let code = query_param(callback, "code").ok_or("no code")?;
        testkit::canary::issued(&code);
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code))
            .unwrap()
            .set_pkce_verifier(attempt.verifier)
            .request_async(&rp_http)
            .await
            .map_err(|e| format!("token: {e:?}"))?;
        testkit::canary::issued(response.access_token().secret());
        if let Some(id_token) = response.id_token() {
            testkit::canary::issued(&id_token.to_string());
        }
        assert_eq!(
            query_param(callback, "iss"),
            Some(self.issuer.clone()),
            "RFC 9207: the authorization response names the issuer"
        );
        let verifier = self
            .client
            .id_token_verifier()
            .set_allowed_algs(self.allowed_algs.clone());
        let claims: &CoreIdTokenClaims = response
            .id_token()
            .ok_or("no id_token")?
            .claims(&verifier, &attempt.nonce)
            .map_err(|e| format!("id token: {e:?}"))?;
        let userinfo = self
            .client
            .user_info(
                response.access_token().clone(),
                Some(claims.subject().clone()),
            )
            .unwrap()
            .request_async::<WxClaims, _, CoreGenderClaim>(&rp_http)
            .await
            .map_err(|e| format!("userinfo: {e:?}"))?;
        Ok(LoggedIn {
            sub: claims.subject().to_string(),
            nickname: claims
                .nickname()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            picture: claims
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.to_string()),
            userinfo,
            access_token: response.access_token().clone(),
        })
    }
}

/// Drives a browser from the RP's authorize URL through wxhub and WeChat (as `user`,
/// answering `answer`) to wherever wxhub sends it next; returns that response.
pub async fn browse_to_callback(
    env: &Env,
    authorize_url: &str,
    user: &str,
    answer: &str,
) -> reqwest::Response {
    let to_wechat = env.get(authorize_url).await;
    assert_eq!(
        to_wechat.status(),
        302,
        "authorize should redirect to WeChat"
    );
    let wechat = location(&to_wechat);
    let back = env.get(&as_user(&wechat, user, answer)).await;
    assert_eq!(back.status(), 302, "WeChat should redirect back");
    let callback = location(&back);
    env.get(&callback).await
}
