//! Shared test setup: a simulator on a ManualClock, a client pointed at it, fixtures.

use std::time::Duration;

use wechat::{AccessToken, AppSecret, Client, ClientConfig, ManualClock, WechatError};
use wechat_sim::{AccountSpec, RunningSim, SimConfig, Simulator, UserSpec};

/// 2026-01-15 12:00 in Shanghai.
pub const NOON_CHINA: i64 = 1_768_449_600_000;
/// 2026-01-15 23:59 in Shanghai.
pub const BEFORE_MIDNIGHT_CHINA: i64 = 1_768_492_740_000;
/// The OAuth domain of fixture accounts.
pub const DOMAIN: &str = "app.example";

pub struct Env {
    pub clock: ManualClock,
    pub running: RunningSim,
    pub client: Client,
    /// A reqwest client that does not follow redirects (authorize step).
    pub http: reqwest::Client,
}

impl Env {
    pub async fn new() -> Env {
        Env::with(|_| {}).await
    }

    pub async fn with(change: impl FnOnce(&mut SimConfig)) -> Env {
        let clock = ManualClock::new(NOON_CHINA);
        let mut cfg = SimConfig::with_manual_clock(clock.clone());
        cfg.push_timeout = Duration::from_millis(200);
        change(&mut cfg);
        let running = wechat_sim::spawn(Simulator::new(cfg), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut config = ClientConfig::for_base(running.base_url());
        config.timeout = Duration::from_secs(2);
        let client = Client::new(config).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Env {
            clock,
            running,
            client,
            http,
        }
    }

    pub fn sim(&self) -> &Simulator {
        &self.running.sim
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    /// A verified service account `appid` with secret `secret-<appid>` and the OAuth domain.
    pub fn account(&self, appid: &str) -> AppSecret {
        self.account_with(appid, |_| {})
    }

    pub fn account_with(&self, appid: &str, change: impl FnOnce(&mut AccountSpec)) -> AppSecret {
        let mut spec = AccountSpec::new(appid, format!("secret-{appid}"));
        spec.oauth_domain = Some(DOMAIN.into());
        spec.push_token = "pushtoken".into();
        change(&mut spec);
        self.sim().create_account(spec).unwrap();
        secret(appid)
    }

    pub fn user(&self, id: &str) {
        let mut u = UserSpec::new(id, format!("nick-{id}"));
        u.headimgurl = format!("https://thirdwx.qlogo.cn/mmopen/{id}/132");
        self.sim().create_user(u).unwrap();
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    pub async fn token(&self, appid: &str) -> AccessToken {
        self.client
            .get_token(appid, &secret(appid))
            .await
            .unwrap()
            .access_token
    }

    /// The errcode of a `/cgi-bin/token` call that must fail.
    pub async fn token_error(&self, appid: &str) -> i64 {
        code(
            self.client
                .get_token(appid, &secret(appid))
                .await
                .unwrap_err(),
        )
    }

    /// The errcode of a `/cgi-bin/stable_token` call that must fail.
    pub async fn stable_token_error(&self, appid: &str, force: bool) -> i64 {
        code(
            self.client
                .get_stable_token(appid, &secret(appid), force)
                .await
                .unwrap_err(),
        )
    }

    /// GETs a simulator path (raw, no redirects).
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(self.url(path_and_query))
            .send()
            .await
            .unwrap()
    }

    /// GETs a path and returns the JSON body.
    pub async fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        self.get(path_and_query).await.json().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

pub fn secret(appid: &str) -> AppSecret {
    AppSecret::new(format!("secret-{appid}"))
}

/// The errcode of an API error (panics on other errors, with the error shown).
pub fn code(err: WechatError) -> i64 {
    match err.code() {
        Some(c) => c.code(),
        None => panic!("expected an API error, got {err:?}"),
    }
}
