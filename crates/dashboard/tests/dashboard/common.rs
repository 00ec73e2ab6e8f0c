//! Test setup: the dashboard's real router on 127.0.0.1:0 over a real database (a SQLite file
//! or a fresh PostgreSQL database), a manual clock, people created through the tenancy layer,
//! and a "browser" that keeps its own cookies and does not follow redirects.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accounts::VaultHandle;
use argon2::password_hash::PasswordHasher;
use dashboard::{Dashboard, DashboardConfig};
use reqwest::StatusCode;
use store::Store;
use store::accounts::{AccountKind, TokenMode};
use store::people::Role;
use tenancy::tenants::{LiveCheck, NewOwner, Registration};
use tenancy::{Principal, Tenancy, TenancyConfig};
use testkit::TestDatabase;
use tokio::task::JoinHandle;
use vault::{Keyring, SecretString, Vault};
use wechat::ManualClock;

/// 2026-01-01T00:00:00Z.
pub const START: i64 = 1_767_225_600_000;
pub const PASSWORD: &str = testkit::canary::PASSWORD;
pub const OWNER_A: &str = "owner-a@example.com";
pub const OWNER_B: &str = "owner-b@example.com";
pub const OPERATOR: &str = "operator@hub.example";
pub const APPID_A: &str = "wx00000000000000a1";
pub const APPID_B: &str = "wx00000000000000b1";

pub struct Env {
    pub db: Option<TestDatabase>,
    pub addr: SocketAddr,
    pub base: String,
    pub clock: ManualClock,
    pub tenancy: Tenancy,
    pub dashboard: Dashboard,
    task: JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Env {
    /// The dashboard served at `http://127.0.0.1:PORT`, with `configure` applied to its
    /// settings (the public URL is the listening address unless `configure` changes it).
    pub async fn start(db: TestDatabase, configure: impl FnOnce(&mut DashboardConfig)) -> Env {
        // Accounts are registered without the live check here; WeChat is never called.
        Env::start_with_wechat(
            db,
            url::Url::parse("http://127.0.0.1:9/").unwrap(),
            configure,
        )
        .await
    }

    /// The same, asking WeChat at `wechat_base` (a simulator).
    pub async fn start_with_wechat(
        db: TestDatabase,
        wechat_base: url::Url,
        configure: impl FnOnce(&mut DashboardConfig),
    ) -> Env {
        Env::start_full(db, wechat_base, configure, |_| {}).await
    }

    /// The same, with `tenancy` applied to the tenancy layer's settings.
    pub async fn start_full(
        db: TestDatabase,
        wechat_base: url::Url,
        configure: impl FnOnce(&mut DashboardConfig),
        tenancy: impl FnOnce(&mut TenancyConfig),
    ) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = Store::connect(db.url()).await.unwrap();
        let keyring =
            Keyring::from_toml_str(&testkit::canary::keyring_toml("k1", 1), "canary").unwrap();
        let vault = Arc::new(VaultHandle::fixed(Vault::new(keyring)));
        let mut wechat_config = wechat::ClientConfig::for_base(wechat_base);
        wechat_config.timeout = Duration::from_secs(2);
        let wechat = wechat::Client::new(wechat_config).unwrap();
        let clock = ManualClock::new(START);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let public_url = url::Url::parse(&base).unwrap();
        let mut tenancy_config = TenancyConfig::new(public_url.clone());
        tenancy(&mut tenancy_config);
        let tenancy = Tenancy::new(
            store,
            vault.clone(),
            wechat,
            Arc::new(clock.clone()),
            tenancy_config,
        );
        let mut config = DashboardConfig::new(public_url);
        configure(&mut config);
        let dashboard =
            Dashboard::new(tenancy.clone(), vault, Arc::new(clock.clone()), config).unwrap();
        let app = dashboard::router(dashboard.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Env {
            db: Some(db),
            addr,
            base,
            clock,
            tenancy,
            dashboard,
            task,
        }
    }

    pub async fn finish(mut self) {
        self.task.abort();
        if let Some(db) = self.db.take() {
            db.finish().await;
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// A person with `role` and [`PASSWORD`], made through an invitation link.
    pub async fn person(&self, email: &str, role: Role) -> store::people::User {
        let invitation = self
            .tenancy
            .invite_person(&Principal::cli(), email, role)
            .await
            .unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(PASSWORD.as_bytes())
            .unwrap()
            .to_string();
        self.tenancy
            .use_password_link(invitation.link.token.expose(), None, &hash)
            .await
            .unwrap()
    }

    /// An account of the owner with `email`, registered by the CLI without asking WeChat.
    pub async fn account(&self, appid: &str, email: &str) {
        self.tenancy
            .register_account(
                &Principal::cli(),
                Registration {
                    appid: appid.to_owned(),
                    name: format!("Account {appid}"),
                    kind: AccountKind::Service,
                    verified: true,
                    token_mode: TokenMode::Token,
                    appsecret: SecretString::new(testkit::canary::app_secret_for(appid)),
                    push_token: None,
                    encoding_aes_key: None,
                    owner: NewOwner::Email(email.to_owned()),
                    check: LiveCheck::Skip,
                },
            )
            .await
            .unwrap();
    }

    /// Two owners with an account each and an operator.
    pub async fn people(&self) {
        self.person(OWNER_A, Role::Owner).await;
        self.person(OWNER_B, Role::Owner).await;
        self.person(OPERATOR, Role::Operator).await;
        self.account(APPID_A, OWNER_A).await;
        self.account(APPID_B, OWNER_B).await;
    }

    /// A browser signed in as `email` with [`PASSWORD`].
    pub async fn signed_in(&self, email: &str) -> Browser {
        let mut browser = self.browser();
        let response = browser.sign_in(email, PASSWORD).await;
        assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.body);
        browser
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// A response, read.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }

    /// The value of the first `name="…" value="…"` input.
    pub fn input(&self, name: &str) -> Option<String> {
        let at = self.body.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.body[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_owned())
    }

    /// The text between `start` and the next `end`.
    pub fn between(&self, start: &str, end: &str) -> Option<String> {
        let at = self.body.find(start)? + start.len();
        let rest = &self.body[at..];
        Some(rest[..rest.find(end)?].to_owned())
    }
}

/// A browser: its own cookies, no redirects followed.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
    /// Headers sent with every request.
    pub extra: Vec<(String, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            extra: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request.header("cookie", self.cookie_header());
        for (name, value) in &self.extra {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                if name.ends_with("wxhub_session") {
                    testkit::canary::issued(value);
                }
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let body = response.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts `fields` as a form, exactly as given (no token added).
    pub async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// This browser's form token, as the sign-in page (open to everyone) carries it.
    pub async fn token(&mut self) -> String {
        let page = self.get("/dashboard/sign-in").await;
        page.input("csrf")
            .expect("the sign-in page has a form token")
    }

    /// Posts `fields` with this browser's form token.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let token = self.token().await;
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.post(
            "/dashboard/sign-in",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// The session cookie's value (plain name on http).
    pub fn session(&self) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k.ends_with("wxhub_session"))
            .map(|(_, v)| v.clone())
    }
}
