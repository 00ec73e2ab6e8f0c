//! The dashboard in a real browser (headless Chromium through chromedriver), against the whole
//! hub, the WeChat simulator and the sample tenant site, all on loopback ports: the first
//! operator's setup link, an owner invited and signing up with TOTP, an account added (first
//! refused by WeChat's IP whitelist, with the fix shown beside the field in both languages),
//! an API key and a website, an end user logging in to the sample site through that website,
//! and the operator finding the account, its health and the audit log's CSV export.
//!
//! Every page visited is photographed, zh-CN and en, 375 px and 1280 px wide, under
//! `target/screenshots/` (see [`driver`]).

mod driver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use futures_util::FutureExt;
use testkit::TestDatabase;
use totp_rs::{Algorithm, Builder, Secret};
use wechat::{Clock, ManualClock};
use wechat_sim::{AccountSpec, SimConfig, Simulator, UserSpec, WhitelistMode};
use wxhub::config::{Config, ConfigArgs};
use wxhub::sample_site::{self, SampleSite, SiteClient};
use wxhub::server::{self, AppState};

use driver::{Browser, Chromedriver, TIMEOUT};

const APPID: &str = "wx7b1e0d3cfeed0042";
const APPSECRET: &str = testkit::canary::APP_SECRET;
const ACCOUNT_NAME: &str = "Tea House 茶馆";
const OPERATOR: &str = "operator@hub.example";
const OPERATOR_PASSWORD: &str = "quiet harbour lanterns at dusk";
const OWNER: &str = "owner@teahouse.example";
const OWNER_PASSWORD: &str = "jasmine steam over seven hills";
/// The simulated WeChat user who logs in to the sample site.
const END_USER: (&str, &str) = ("dora", "Dora 朵拉");

/// Where the screenshots go: `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("screenshots")
}

/// Everything the browser talks to.
struct World {
    hub: String,
    sim: Simulator,
    _running_sim: wechat_sim::RunningSim,
    clock: ManualClock,
    /// The sample site's listener, bound first so its callback URL can be registered; it
    /// serves once the website (and so its client secret) exists.
    site_listener: Option<tokio::net::TcpListener>,
    site: String,
    first_operator_link: String,
    /// The hub's database, to give the charts known counts.
    store: store::Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: testkit::TempDir,
    db: TestDatabase,
}

impl World {
    async fn start(db: TestDatabase) -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // One clock for the hub and the simulator; TOTP steps are moved, never waited for.
        let clock = ManualClock::starting_now();
        let sim = Simulator::new(SimConfig::with_manual_clock(clock.clone()));
        let mut spec = AccountSpec::new(APPID, APPSECRET);
        // Nothing is whitelisted yet: WeChat refuses the hub's IP with 40164.
        spec.whitelist_mode = WhitelistMode::Enforce;
        spec.oauth_domain = Some("127.0.0.1".to_owned());
        sim.create_account(spec).unwrap();
        sim.create_user(UserSpec::new(END_USER.0, END_USER.1))
            .unwrap();
        let running_sim = wechat_sim::spawn(sim.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hub = format!("http://{}", listener.local_addr().unwrap());
        let site_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let site = format!("http://{}/", site_listener.local_addr().unwrap());
        let dir = testkit::TempDir::new();
        let config = Config::load(&ConfigArgs {
            data_dir: Some(dir.path().join("data")),
            database_url: Some(db.url().to_owned()),
            dev_keyring: true,
            public_url: Some(url::Url::parse(&hub).unwrap()),
            wechat_api_url: Some(running_sim.base_url()),
            wechat_open_url: Some(running_sim.base_url()),
            // The owner's bot runs on this machine: its loopback address is allowed.
            push_allow_hosts: vec!["127.0.0.1".to_owned()],
            ..ConfigArgs::default()
        })
        .unwrap();
        let state = AppState::open(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        // What `wxhub serve` prints on a hub without an operator.
        let first_operator_link = server::first_operator_link(&state)
            .await
            .unwrap()
            .expect("a new hub offers a setup link");
        let store = state.store.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve_on(listener, state, async {
            let _ = stopped.await;
        }));
        World {
            hub,
            sim,
            _running_sim: running_sim,
            clock,
            site_listener: Some(site_listener),
            site,
            first_operator_link,
            store,
            stop: Some(stop),
            server,
            _dir: dir,
            db,
        }
    }

    fn dashboard(&self, path: &str) -> String {
        format!("{}/dashboard{path}", self.hub)
    }

    /// Serves the sample site with the website the owner created.
    fn serve_site(&mut self, client: SiteClient) {
        let listener = self.site_listener.take().expect("the site is served once");
        let site = SampleSite::new(url::Url::parse(&self.site).unwrap(), vec![client]).unwrap();
        tokio::spawn(async move { axum::serve(listener, sample_site::router(site)).await });
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.unwrap().unwrap();
        self.db.finish().await;
    }
}

/// The code an authenticator app shows for `secret_base32` at `now_ms`: RFC 6238 with the
/// parameters every app assumes (SHA-1, 6 digits, 30 s).
fn totp_code(secret_base32: &str, now_ms: i64) -> String {
    let compact: String = secret_base32.split_whitespace().collect();
    let secret = Secret::try_from_base32(compact).expect("the page shows a base32 secret");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .expect("a TOTP")
        .generate(u64::try_from(now_ms / 1000).unwrap())
        .to_string()
}

/// Chromium sessions at once: one (the machine's cores are few, and the pages' waits have
/// time-outs).
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The whole scenario on `db`, photographing every page into `shots` when given.
async fn click_through(db: TestDatabase, shots: Option<PathBuf>) {
    let Some(binary) = driver::chromedriver_or_skip() else {
        return;
    };
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut world = World::start(db).await;
    let chromedriver = Chromedriver::start(&binary);
    let mut browser = Browser::open(&chromedriver, shots.clone()).await;
    // Whatever happens in the scenario, the session ends (Chromium quits) before the driver
    // is killed, and a failure is reported after that.
    let outcome = std::panic::AssertUnwindSafe(scenario(&mut browser, &mut world))
        .catch_unwind()
        .await;
    let taken = browser.files.len();
    let too_wide = std::mem::take(&mut browser.too_wide);
    let closed = browser.close().await;
    drop(chromedriver);
    world.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("end the WebDriver session");
    assert!(
        too_wide.is_empty(),
        "pages wider than the screen:\n{}",
        too_wide.join("\n")
    );
    let place = shots.map(|dir| format!(" in {}", dir.display()));
    eprintln!(
        "browser test: {taken} screenshots{} ({:.1} s)",
        place.unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owner_and_operator_click_through_the_dashboard_in_chromium() {
        let shots = Some(super::screenshot_dir());
        super::click_through(testkit::TestDatabase::sqlite(), shots).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn owner_and_operator_click_through_the_dashboard_in_chromium() {
        // The pages are the same on both databases: photographed once, on SQLite.
        if let Some(db) = testkit::TestDatabase::postgres().await {
            super::click_through(db, None).await;
        }
    }
}

async fn scenario(b: &mut Browser, world: &mut World) {
    first_operator_sets_up_and_invites_the_owner(b, world).await;
    let invitation = b.value("#invitation-link").await;
    sign_out(b).await;
    owner_signs_up_with_totp(b, world, &invitation).await;
    owner_adds_the_account(b, world).await;
    let site_client = owner_creates_a_key_and_a_website(b, world).await;
    world.serve_site(site_client);
    end_user_logs_in_to_the_sample_site(b, world).await;
    b.goto(&world.dashboard(&format!("/accounts/{APPID}/end-users")))
        .await;
    assert!(b.text("main").await.contains(END_USER.1));
    b.shoot_both("owner-end-users").await;
    end_user_logs_in_on_a_computer(b, world).await;
    owner_routes_messages_to_a_bot(b, world).await;
    owner_reads_the_charts(b, world).await;
    sign_out(b).await;
    operator_finds_the_account_and_exports_the_audit_log(b, world).await;
}

async fn sign_out(b: &Browser) {
    b.click_to_next_page("form[action='/dashboard/sign-out'] button")
        .await;
    b.wait_for("form[action='/dashboard/sign-in']").await;
}

async fn first_operator_sets_up_and_invites_the_owner(b: &mut Browser, world: &World) {
    b.goto(&world.first_operator_link).await;
    // Chinese first: the browser asks for zh-CN, as a visitor from the mainland would.
    assert_eq!(b.lang().await, "zh-CN");
    b.wait_for("input#email:not([readonly])").await;
    b.shoot_both("operator-setup").await;
    b.fill("#email", OPERATOR).await;
    b.fill("#password", OPERATOR_PASSWORD).await;
    b.fill("#again", OPERATOR_PASSWORD).await;
    b.click_to_next_page("form.stack button[type=submit]").await;
    expect_path(b, "/dashboard/operator/accounts").await;
    b.wait_for(".flash").await;
    b.shoot("operator-first-page").await;

    b.click_to_next_page("a[href='/dashboard/operator/owners']")
        .await;
    b.shoot_both("operator-owners-empty").await;
    b.fill("#email", OWNER).await;
    b.click_to_next_page("form[action='/dashboard/operator/owners'] button[type=submit]")
        .await;
    let link = b.value("#invitation-link").await;
    assert!(link.starts_with(&world.dashboard("/invitation/")), "{link}");
    b.shoot("operator-invited-owner").await;
}

async fn owner_signs_up_with_totp(b: &mut Browser, world: &World, invitation: &str) {
    b.goto(invitation).await;
    assert_eq!(b.value("#email").await, OWNER);
    b.shoot_both("owner-invitation").await;
    b.fill("#password", OWNER_PASSWORD).await;
    b.fill("#again", OWNER_PASSWORD).await;
    b.click_to_next_page("form.stack button[type=submit]").await;
    expect_path(b, "/dashboard/accounts").await;
    b.shoot_both("owner-accounts-empty").await;

    b.click_to_next_page("a[href='/dashboard/security']").await;
    b.shoot_both("owner-security").await;
    b.click_to_next_page("form[action='/dashboard/security/totp'] button")
        .await;
    b.wait_for(".qr-box svg").await;
    let secret = b.text("code.secret").await;
    b.shoot_both("owner-totp-enrolment").await;
    b.fill("#code", &totp_code(&secret, world.clock.now_ms()))
        .await;
    b.click_to_next_page("form[action='/dashboard/security/totp/confirm'] button")
        .await;
    b.wait_for(".flash").await;
    b.shoot("owner-totp-confirmed").await;
    b.click_to_next_page("a[href='/dashboard/security']").await;
    b.wait_for(".badge.ok").await;
    b.shoot_both("owner-totp-on").await;

    // From now on the owner's sign-in asks for a code: the next step's, as the app shows it
    // half a minute later (the enrolment's code worked once).
    sign_out(b).await;
    b.shoot_both("sign-in").await;
    b.fill("#email", OWNER).await;
    b.fill("#password", OWNER_PASSWORD).await;
    b.click_to_next_page("form[action='/dashboard/sign-in'] button")
        .await;
    expect_path(b, "/dashboard/sign-in/code").await;
    b.shoot_both("owner-sign-in-code").await;
    world.clock.advance(Duration::from_secs(30));
    b.fill("#code", &totp_code(&secret, world.clock.now_ms()))
        .await;
    b.click_to_next_page("form[action='/dashboard/sign-in/code'] button")
        .await;
    expect_path(b, "/dashboard/accounts").await;
}

async fn submit_new_account(b: &Browser, secret: &str) {
    b.fill("#appid", APPID).await;
    b.fill("#name", ACCOUNT_NAME).await;
    b.fill("#appsecret", secret).await;
    b.click_to_next_page("form[action='/dashboard/accounts/new'] button[type=submit]")
        .await;
}

async fn owner_adds_the_account(b: &mut Browser, world: &World) {
    b.click_to_next_page("a[href='/dashboard/accounts/new']")
        .await;
    b.shoot_both("owner-new-account").await;

    // WeChat refuses the hub's IP: the fix, with the IP WeChat named, beside the secret's
    // field, in each language (the error page is the answer to a POST, so each language
    // submits once).
    for (lang, words) in [("zh-CN", "IP白名单"), ("en", "IP Whitelist")] {
        if b.lang().await != lang {
            b.switch_language(lang).await;
        }
        submit_new_account(b, APPSECRET).await;
        let fix = b.text("#appsecret-error").await;
        assert!(
            fix.contains("127.0.0.1") && fix.contains(words) && fix.contains("40164"),
            "{lang}: {fix}"
        );
        let secret_field = b.wait_for("#appsecret").await;
        assert_eq!(
            secret_field.attr("aria-invalid").await.unwrap().as_deref(),
            Some("true")
        );
        assert!(
            secret_field
                .attr("aria-describedby")
                .await
                .unwrap()
                .unwrap_or_default()
                .contains("appsecret-error")
        );
        // What was typed is kept, except the secret.
        assert_eq!(b.value("#appid").await, APPID);
        assert_eq!(b.value("#appsecret").await, "");
        b.shoot("owner-new-account-ip-refused").await;
    }
    b.switch_language("zh-CN").await;

    // The owner adds the IP in WeChat's console; the same form then succeeds.
    world
        .sim
        .modify_account(APPID, |spec| {
            spec.ip_whitelist = vec!["127.0.0.1".to_owned()]
        })
        .unwrap();
    submit_new_account(b, APPSECRET).await;
    let landed = b.url().await;
    assert!(
        landed
            .path()
            .starts_with(&format!("/dashboard/accounts/{APPID}")),
        "{landed}"
    );
    b.shoot("owner-account-added").await;
    b.goto(&world.dashboard(&format!("/accounts/{APPID}")))
        .await;
    // The scheduler fetches the first core token on its own.
    reload_until(b, "#health .badge.ok").await;
    assert!(!b.text("main").await.contains(APPSECRET));
    b.shoot_both("owner-account").await;
}

/// Checks that the browser is at `path`, showing the page it is on instead.
async fn expect_path(b: &Browser, path: &str) {
    let url = b.url().await;
    if url.path() != path {
        let text = b.text("body").await;
        panic!("expected {path}, the browser is at {url}:\n{text}");
    }
}

/// Reloads the page until `css` is on it.
async fn reload_until(b: &Browser, css: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        b.wait_for("body").await;
        if b.client.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} did not appear within {TIMEOUT:?} on {}",
            b.url().await
        );
        b.client.refresh().await.expect("reload");
    }
}

async fn owner_creates_a_key_and_a_website(b: &mut Browser, world: &World) -> SiteClient {
    b.fill("#key-label", "tea-shop backend").await;
    b.click_to_next_page(&format!(
        "form[action='/dashboard/accounts/{APPID}/keys'] button[type=submit]"
    ))
    .await;
    let key = b.value("#api-key").await;
    assert!(key.starts_with("wxk_"), "{key}");
    b.shoot("owner-api-key-created").await;
    // The key shown once reads the account's core token.
    let token: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/accounts/{APPID}/access_token",
            world.hub
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let minted = world.sim.tokens(APPID).unwrap();
    assert!(
        minted
            .iter()
            .any(|t| Some(t.access_token.as_str()) == token["access_token"].as_str()),
        "{token}"
    );

    b.goto(&world.dashboard(&format!("/accounts/{APPID}")))
        .await;
    b.fill("#website-name", "Tea shop").await;
    b.fill(
        "#website-uris",
        &SampleSite::callback_url(&url::Url::parse(&world.site).unwrap()),
    )
    .await;
    b.wait_for("#websites input[name=mode][value=userinfo]")
        .await
        .click()
        .await
        .unwrap();
    b.click_to_next_page(&format!(
        "form[action='/dashboard/accounts/{APPID}/websites'] button[type=submit]"
    ))
    .await;
    let client = SiteClient {
        label: "用微信登录 Log in with WeChat".to_owned(),
        issuer: b.value("#website-issuer").await,
        client_id: b.value("#website-client-id").await,
        client_secret: b.value("#website-secret").await,
    };
    assert_eq!(client.issuer, format!("{}/t/{APPID}", world.hub));
    assert!(!client.client_secret.is_empty());
    b.shoot("owner-website-created").await;
    b.goto(&world.dashboard(&format!("/accounts/{APPID}")))
        .await;
    assert!(!b.text("main").await.contains(&client.client_secret));
    b.shoot_both("owner-account-with-key-and-website").await;
    client
}

async fn end_user_logs_in_to_the_sample_site(b: &mut Browser, world: &World) {
    b.goto(&world.site).await;
    b.shoot("site-home").await;
    b.click_to_next_page("a[href='/login?client=0']").await;
    // The simulator's WeChat authorization page: pick the person and allow.
    b.wait_for(&format!("input[name=sim_user][value={}]", END_USER.0))
        .await
        .click()
        .await
        .unwrap();
    b.shoot("wechat-authorize").await;
    b.click_to_next_page("button[name=sim_answer][value=allow]")
        .await;
    let userinfo = b.text("pre#userinfo").await;
    assert!(b.text("h1").await.contains("Logged in"));
    assert!(userinfo.contains(END_USER.1), "{userinfo}");
    assert!(b.url().await.as_str().starts_with(&world.site));
    b.shoot("site-logged-in").await;
}

/// The owner connects the account's pushes (generated Token and EncodingAESKey, pasted into
/// WeChat's console) and makes the website always show the scan page; the end user's
/// computer then signs in when the phone scans, the page learning it by itself.
async fn end_user_logs_in_on_a_computer(b: &mut Browser, world: &World) {
    b.goto(&world.dashboard(&format!("/accounts/{APPID}/console")))
        .await;
    b.click_to_next_page(&format!(
        "form[action='/dashboard/accounts/{APPID}/console/push-credentials'] button"
    ))
    .await;
    let (token, aes_key) = (b.value("#push-token").await, b.value("#push-aes-key").await);
    assert_eq!(aes_key.len(), 43, "{aes_key}");
    let push_url = format!("{}/t/{APPID}/wechat/push", world.hub);
    world
        .sim
        .modify_account(APPID, |spec| {
            spec.push_token = token.clone();
            spec.encoding_aes_key = Some(aes_key.clone());
            spec.push_mode = wechat_sim::PushMode::Safe;
            spec.push_url = Some(push_url.clone());
        })
        .unwrap();

    // The website's own settings: always the scan page.
    b.goto(&world.dashboard(&format!("/accounts/{APPID}")))
        .await;
    b.wait_for("#websites details summary")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("#websites input[name=surface][value=scan]")
        .await
        .click()
        .await
        .unwrap();
    b.shoot("owner-website-settings").await;
    b.click_to_next_page("#websites form[action$='/edit'] button[type=submit]")
        .await;
    b.wait_for("#websites input[name=surface][value=scan][checked]")
        .await;

    b.goto(&world.site).await;
    b.click_to_next_page("a[href='/login?client=0']").await;
    let qr = b.wait_for("#scan-qr").await;
    let image = qr.attr("src").await.unwrap().expect("the code's image");
    let image = url::Url::parse(&image).expect("an absolute image URL");
    let ticket = image
        .query_pairs()
        .find_map(|(k, v)| (k == "ticket").then(|| v.into_owned()))
        .expect("showqrcode?ticket=…");
    b.shoot("scan-page").await;
    b.shoot_dark("scan-page").await;
    // The image is the simulator's real QR code of the ticket.
    let png = reqwest::get(image.as_str()).await.unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");

    let outcome = world
        .sim
        .scan_qrcode(wechat_sim::QrScan::new(&ticket, END_USER.0))
        .await
        .unwrap();
    let delivery = outcome.delivery.expect("a push reached the hub");
    assert!(delivery.acknowledged, "{delivery:?}");
    // The page goes on by itself (Server-Sent Events), through the website's callback, to
    // the site's logged-in page (the only one with the userinfo).
    b.wait_for("pre#userinfo").await;
    assert!(b.url().await.as_str().starts_with(&world.site));
    assert!(b.text("h1").await.contains("Logged in"));
    assert!(b.text("pre#userinfo").await.contains(&outcome.openid));
    b.shoot("site-logged-in-by-scan").await;
    b.goto(&world.dashboard("/accounts")).await;
}

/// The Token the owner's bot checks wxhub's signatures with.
const BOT_TOKEN: &str = "teahouseBot2026";

/// The owner's own bot: checks the signature of each push with [`BOT_TOKEN`], as it did when
/// WeChat called it, and answers text messages with a passive reply. Returns its URL.
async fn start_bot() -> String {
    use std::collections::HashMap;
    let app = axum::Router::new().route(
        "/bot",
        axum::routing::post(
            |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
             body: String| async move {
                let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
                let expected = wechat::push::signature(BOT_TOKEN, get("timestamp"), get("nonce"));
                if get("signature") != expected {
                    return (axum::http::StatusCode::FORBIDDEN, String::new());
                }
                match wechat::xml::parse_message(body.as_bytes()) {
                    Ok(m) if m.msg_type() == "text" => {
                        let said = m.fields.get("Content").unwrap_or_default().to_owned();
                        let answer = format!("茶馆小助手：收到「{said}」");
                        (
                            axum::http::StatusCode::OK,
                            m.text_reply(&answer, m.create_time),
                        )
                    }
                    _ => (axum::http::StatusCode::OK, "success".to_owned()),
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bot", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The owner keeps their bot answering users: on the push-routes page they add it as the
/// reply route of text messages (a refused target first, said beside the field), and the end
/// user's message on the simulated phone gets the bot's answer through wxhub.
async fn owner_routes_messages_to_a_bot(b: &mut Browser, world: &World) {
    let bot = start_bot().await;
    b.goto(&world.dashboard(&format!("/accounts/{APPID}")))
        .await;
    b.click_to_next_page(&format!(
        "a[href='/dashboard/accounts/{APPID}/push-routes']"
    ))
    .await;
    assert!(b.text("#routes").await.contains("还没有路由"));
    b.shoot_both("owner-push-routes-empty").await;

    // An internal address of the owner's network is refused, beside the target.
    submit_route(b, "http://10.1.2.3/bot").await;
    assert!(b.text("#route-target-error").await.contains("https"));
    assert_eq!(
        b.value("#route-token").await,
        "",
        "the Token is not shown again"
    );
    b.shoot("owner-push-route-refused").await;
    submit_route(b, &bot).await;
    assert!(b.url().await.as_str().contains("flash=route_saved"));
    let listed = b.text("#route-list").await;
    assert!(
        listed.contains("1. text") && listed.contains(&bot),
        "{listed}"
    );
    assert!(!b.text("main").await.contains(BOT_TOKEN));
    b.shoot_both("owner-push-routes").await;

    // Dora, who follows the account since her scan, sends a message from her phone.
    let phone = format!("{}__sim/phone", world._running_sim.base_url());
    b.goto(&phone).await;
    let chat = format!(
        "form[action='phone/text']:has(input[name=user][value={}])",
        END_USER.0
    );
    b.fill(&format!("{chat} input[name=content]"), "今天有什么茶？")
        .await;
    b.click_to_next_page(&format!("{chat} button[type=submit]"))
        .await;
    let answer = b.text(".chat .bot").await;
    assert!(
        answer.contains("茶馆小助手：收到「今天有什么茶？」"),
        "{answer}"
    );
    b.shoot("phone-bot-answer").await;

    // The page counts the delivery once the counters reach the database (every few
    // seconds).
    b.goto(&world.dashboard(&format!("/accounts/{APPID}/push-routes")))
        .await;
    let deadline = Instant::now() + TIMEOUT;
    while b.text("#route-list dd.delivered").await != "1" {
        assert!(Instant::now() < deadline, "the delivery was not counted");
        // Nothing announces a flush: look again shortly.
        tokio::time::sleep(Duration::from_millis(250)).await;
        b.client.refresh().await.expect("reload");
    }
    b.shoot_dark("owner-push-routes-counted").await;
}

/// Submits the new-route form: text messages to `target`, signed with [`BOT_TOKEN`].
async fn submit_route(b: &Browser, target: &str) {
    b.fill("#route-target", target).await;
    b.fill("#route-type", "text").await;
    b.fill("#route-token", BOT_TOKEN).await;
    b.click_to_next_page("#new-route button[type=submit]").await;
}

/// `MM-DD` of the China-time day `n` days before `today`, as the charts label days.
fn day_label(today: i64, n: i64) -> String {
    stats::calendar::date_of(today - n * DAY_MS).to_string()[5..].to_owned()
}

const DAY_MS: i64 = 86_400_000;

/// The titles (what a browser shows on hover) of the bars or points of a chart's drawing.
async fn chart_titles(b: &Browser, chart: &str, drawing: &str) -> Vec<String> {
    let titles = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0]))\
               .map(function (t) { return t.textContent; });",
            vec![serde_json::json!(format!(
                "#chart-{chart} svg.{drawing} :is(rect, circle) > title"
            ))],
        )
        .await
        .expect("read the chart's titles");
    serde_json::from_value(titles).unwrap()
}

/// A week of known counts, drawn in Chromium: each chart's bars carry the numbers in their
/// titles, at a desktop's width the wide drawing shows and the phone's is hidden (and the
/// other way round at 375 px), the table and the CSV agree. Photographed in both languages,
/// light and dark.
async fn owner_reads_the_charts(b: &mut Browser, world: &World) {
    use store::stats::{CounterRow, StatsBatch};
    let account = world
        .store
        .find_account_by_appid(APPID)
        .await
        .unwrap()
        .unwrap();
    let website = world
        .store
        .list_oidc_clients(&account.id)
        .await
        .unwrap()
        .remove(0);
    let today = stats::calendar::day_start(world.clock.now_ms());
    let site = format!("userinfo/{}", website.id);
    let mut daily = Vec::new();
    // Days 2 to 8 before today: nothing the scenario itself counts (that is today).
    for n in 2..=8_i64 {
        let mut row = |metric: &str, label: &str, value: i64| {
            daily.push(CounterRow {
                account_id: account.id.clone(),
                start: today - n * DAY_MS,
                metric: metric.to_owned(),
                label: label.to_owned(),
                value,
            })
        };
        row("token.refresh.ok", "", 10 * n);
        row("token.refresh.failed", "40164", n);
        row("login.started", &site, 30 + n);
        row("login.returned", &site, 25 + n);
        row("login.completed", &site, 20 + n);
        row("push.received", "subscribe_scene", n);
        row("proxy.calls", "/cgi-bin/user/info", 5 * n);
        row("users.created", "push", n);
    }
    world
        .store
        .add_stats(&StatsBatch {
            daily,
            ..StatsBatch::default()
        })
        .await
        .unwrap();

    b.goto(&world.dashboard(&format!("/accounts/{APPID}/stats?days=30")))
        .await;
    if b.lang().await != "en" {
        b.switch_language("en").await;
    }
    let refreshes = chart_titles(b, "refreshes", "wide").await;
    for n in 2..=8 {
        let day = day_label(today, n);
        for title in [
            format!("{day} · Succeeded: {}", 10 * n),
            format!("{day} · Failed: {n}"),
        ] {
            assert!(refreshes.contains(&title), "{title} not in {refreshes:?}");
        }
    }
    let by_site = chart_titles(b, "logins_by_site", "wide").await;
    let title = format!("{} · Tea shop · profile: 28", day_label(today, 8));
    assert!(by_site.contains(&title), "{title} not in {by_site:?}");
    let endpoints = chart_titles(b, "proxy_endpoints", "wide").await;
    let title = format!("{} · /cgi-bin/user/info: 40", day_label(today, 8));
    assert!(endpoints.contains(&title), "{title} not in {endpoints:?}");
    // The funnel's bars: at least the week's known logins (the scenario's own come on top).
    let funnel = chart_titles(b, "funnel", "wide").await;
    let started: i64 = funnel
        .iter()
        .find_map(|t| t.strip_prefix("Started: "))
        .expect("the funnel's first step")
        .parse()
        .unwrap();
    assert!(
        started >= (2..=8).map(|n| 30 + n).sum::<i64>(),
        "{funnel:?}"
    );
    // One drawing per screen: the wide one on a desktop.
    let shown = b
        .client
        .execute(
            "var c = document.querySelector('#chart-refreshes');\
             return [getComputedStyle(c.querySelector('svg.wide')).display,\
                     getComputedStyle(c.querySelector('svg.narrow')).display,\
                     c.querySelector('svg.wide').getBoundingClientRect().width];",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(shown[0], "block", "{shown}");
    assert_eq!(shown[1], "none", "{shown}");
    assert!(shown[2].as_f64().unwrap() > 400.0, "{shown}");
    // The table under the drawing, and the chart's CSV.
    b.wait_for("#chart-refreshes details summary")
        .await
        .click()
        .await
        .unwrap();
    let table = b.text("#chart-refreshes table").await;
    assert!(
        table.contains(&format!("{} 80 8", day_label(today, 8))),
        "{table}"
    );
    b.shoot_both("owner-statistics").await;
    b.shoot_dark("owner-statistics").await;
    let cookies: Vec<String> = b
        .client
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect();
    let csv = reqwest::Client::new()
        .get(format!(
            "{}/dashboard/accounts/{APPID}/stats.csv?days=30&chart=refreshes",
            world.hub
        ))
        .header("cookie", cookies.join("; "))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains(&format!("{},80,8\r\n", day_label(today, 8))),
        "{csv}"
    );
    b.goto(&world.dashboard(&format!("/accounts/{APPID}/stats?days=365&by=month")))
        .await;
    b.shoot("owner-statistics-year-by-month").await;
    b.switch_language("zh-CN").await;
}

async fn operator_finds_the_account_and_exports_the_audit_log(b: &mut Browser, world: &World) {
    b.fill("#email", OPERATOR).await;
    b.fill("#password", OPERATOR_PASSWORD).await;
    b.click_to_next_page("form[action='/dashboard/sign-in'] button")
        .await;
    expect_path(b, "/dashboard/operator/accounts").await;
    b.wait_for(&format!("a[href='/dashboard/accounts/{APPID}']"))
        .await;
    b.shoot_both("operator-accounts").await;
    // The search finds the account by its AppID, and nothing for a name no account has.
    b.fill("#q", "no such account").await;
    b.click_to_next_page("form.filters button[type=submit]")
        .await;
    b.wait_for(".empty").await;
    assert!(b.client.find(Locator::Css("li.account")).await.is_err());
    b.fill("#q", APPID).await;
    b.click_to_next_page("form.filters button[type=submit]")
        .await;
    let row = b
        .wait_for(&format!(
            "li.account:has(a[href='/dashboard/accounts/{APPID}'])"
        ))
        .await;
    let row_text = row.text().await.unwrap();
    assert!(row_text.contains(ACCOUNT_NAME), "{row_text}");
    row.find(Locator::Css(".badge.ok"))
        .await
        .expect("the account's token is healthy");
    b.shoot("operator-accounts-search").await;

    b.click_to_next_page(&format!("a[href='/dashboard/accounts/{APPID}']"))
        .await;
    b.wait_for("#health .badge.ok").await;
    // Operators read; they do not get the owner's forms.
    assert!(b.client.find(Locator::Id("key-label")).await.is_err());
    b.shoot_both("operator-account").await;

    b.click_to_next_page("a[href='/dashboard/operator/owners']")
        .await;
    assert!(b.text("main").await.contains(OWNER));
    b.shoot_both("operator-owners").await;

    b.click_to_next_page("a[href='/dashboard/operator/health']")
        .await;
    let healthy = b.text(".counts a:has(.badge.ok) .count").await;
    assert_eq!(healthy, "1", "accounts with a healthy token");
    b.shoot_both("operator-platform-health").await;

    b.click_to_next_page("a[href='/dashboard/operator/audit']")
        .await;
    b.shoot_both("operator-audit").await;
    let everything = download_csv(b, world).await;
    let entries = csv_records(&everything);
    for action in [
        "person.invite",
        "account.register",
        "api_key.create",
        "website.create",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == action),
            "{action} missing from\n{everything}"
        );
    }
    let invite = entries
        .iter()
        .find(|e| e["action"] == "person.invite" && e["actor_email"] == OPERATOR)
        .unwrap_or_else(|| panic!("the operator's invitation in\n{everything}"));
    assert!(invite["details"].contains(OWNER), "{everything}");
    let key = entries
        .iter()
        .find(|e| e["action"] == "api_key.create")
        .unwrap();
    assert_eq!(
        (key["actor_email"].as_str(), key["appid"].as_str()),
        (OWNER, APPID)
    );
    assert!(!everything.contains(APPSECRET));

    // The export follows the filters on the page.
    b.wait_for("#action")
        .await
        .select_by_value("api_key.create")
        .await
        .unwrap();
    b.click_to_next_page("form.filters button[type=submit]")
        .await;
    b.shoot("operator-audit-filtered").await;
    let filtered = download_csv(b, world).await;
    let actions: Vec<String> = csv_records(&filtered)
        .into_iter()
        .map(|mut e| e.remove("action").unwrap_or_default())
        .collect();
    assert_eq!(actions, ["api_key.create"], "{filtered}");
}

/// The records of a CSV export (RFC 4180: quoted fields, doubled quotes, CRLF), each by its
/// header's column names.
fn csv_records(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "the CSV ends with a line break"
    );
    let mut rows = rows.into_iter();
    let header = rows.next().expect("a header line");
    assert_eq!(header[..2], ["id", "at"], "{header:?}");
    rows.map(|values| {
        assert_eq!(values.len(), header.len(), "{values:?}");
        header.iter().cloned().zip(values).collect()
    })
    .collect()
}

/// Fetches the audit page's export link with the browser's cookies (the operator's session),
/// as the browser's download would.
async fn download_csv(b: &Browser, world: &World) -> String {
    let href = b
        .wait_for("a[download]")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("the export link has an address");
    let url = url::Url::parse(&world.hub).unwrap().join(&href).unwrap();
    assert_eq!(url.path(), "/dashboard/operator/audit.csv");
    let cookies: Vec<String> = b
        .client
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect();
    let response = reqwest::Client::new()
        .get(url)
        .header("cookie", cookies.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    response.text().await.unwrap()
}
