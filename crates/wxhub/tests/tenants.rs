//! `wxhub account …` and `wxhub apikey …` in-process, then the whole server serving the
//! registered account's token to the created key, against the simulator.

use std::io::Cursor;
use std::sync::Arc;

use store::accounts::{AccountKind, TokenMode};
use tenancy::websites::WebsiteChanges;
use wechat::SystemClock;
use wechat_sim::{AccountSpec, SimConfig, Simulator};
use wxhub::config::{Config, ConfigArgs};
use wxhub::server::{AppState, serve_on};
use wxhub::tenants::{self, NewAccountArgs};

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = testkit::canary::APP_SECRET;

/// A fresh data directory (removed on drop) with the simulator at `sim` as WeChat.
fn config_in(dir: &testkit::TempDir, sim: Option<&wechat_sim::RunningSim>) -> Config {
    Config::load(&ConfigArgs {
        data_dir: Some(dir.path().join("data")),
        dev_keyring: true,
        wechat_api_url: sim.map(|s| s.base_url()),
        ..ConfigArgs::default()
    })
    .unwrap()
}

fn args() -> NewAccountArgs {
    NewAccountArgs {
        appid: APPID.to_owned(),
        name: "Tenant Test".to_owned(),
        owner_email: "owner@example.com".to_owned(),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        skip_check: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_an_account_and_its_key_reads_the_token_from_the_server() {
    let sim = Simulator::new(SimConfig::default());
    sim.create_account(AccountSpec::new(APPID, SECRET)).unwrap();
    let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = testkit::TempDir::new();
    let config = config_in(&dir, Some(&running));

    // No secret on stdin: refused, nothing registered.
    let empty = tenants::account_add(&config, &args(), &mut Cursor::new(Vec::new())).await;
    assert!(format!("{:#}", empty.unwrap_err()).contains("no AppSecret on stdin"));
    let report = tenants::account_add(&config, &args(), &mut Cursor::new(format!("{SECRET}\n")))
        .await
        .unwrap();
    assert!(report.contains(APPID), "{report}");
    assert!(!report.contains(SECRET));

    let created = tenants::apikey_create(
        &config,
        APPID,
        "backend-1",
        "token,report,proxy",
        Vec::new(),
    )
    .await
    .unwrap();
    let key = created.lines().next().unwrap().to_owned();
    assert!(key.starts_with("wxk_") && key.len() == 47, "{created}");
    let listed = tenants::apikey_list(&config, APPID).await.unwrap();
    assert!(
        listed.contains("backend-1") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&key));

    let state = AppState::open(config.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(listener, state, async {
        let _ = stopped.await;
    }));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let response = http
        .get(format!(
            "http://{addr}/api/v1/accounts/{APPID}/access_token"
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let accepted = running.sim.tokens(APPID).unwrap();
    assert!(
        accepted
            .iter()
            .any(|t| t.access_token == token && t.status == "valid")
    );
    let wrong = http
        .get(format!(
            "http://{addr}/api/v1/accounts/{APPID}/access_token"
        ))
        .bearer_auth(format!("wxk_{}", "B".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    let accounts = tenants::account_list(&config).await.unwrap();
    assert!(
        accounts.contains(APPID) && accounts.contains("token=healthy"),
        "{accounts}"
    );
    assert!(accounts.contains("fetches today=1/"), "{accounts}");
    // The token was fetched moments ago: "refresh now" is refused, and not audited.
    let early = tenants::account_refresh(&config, APPID).await.unwrap_err();
    assert!(format!("{early:#}").contains("too soon"), "{early:#}");
    let audit = tenants::audit_list(
        &config,
        tenancy::people::AuditQuery {
            action: Some("account.refresh_now".to_owned()),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert!(audit.contains("no audit entries"), "{audit}");
    let key_id = listed.split_whitespace().next().unwrap();
    let revoked = tenants::apikey_revoke(&config, APPID, key_id)
        .await
        .unwrap();
    assert!(revoked.contains("revoked"));
    assert!(
        tenants::apikey_revoke(&config, APPID, key_id)
            .await
            .is_err()
    );
    assert!(
        tenants::apikey_list(&config, APPID)
            .await
            .unwrap()
            .contains("revoked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_configure_validates_keeps_and_clears_gateway_settings() {
    let dir = testkit::TempDir::new();
    let config = config_in(&dir, None);
    // No simulator here: registered without the credential check.
    let offline = NewAccountArgs {
        skip_check: true,
        ..args()
    };
    tenants::account_add(&config, &offline, &mut Cursor::new(format!("{SECRET}\n")))
        .await
        .unwrap();
    let change = |f: fn(&mut tenants::SettingsArgs)| {
        let mut c = tenants::SettingsArgs::default();
        f(&mut c);
        c
    };

    let bad = tenants::account_configure(
        &config,
        APPID,
        change(|c| c.original_id = Some("gh_short".into())),
    )
    .await
    .unwrap_err();
    assert!(format!("{bad:#}").contains("原始ID"), "{bad:#}");
    let bad = tenants::account_configure(
        &config,
        APPID,
        change(|c| c.follow_qr_url = Some("http://cdn.example/qr.png".into())),
    )
    .await
    .unwrap_err();
    assert!(format!("{bad:#}").contains("https"), "{bad:#}");

    let shown = tenants::account_configure(
        &config,
        APPID,
        change(|c| {
            c.original_id = Some("gh_0123456789ab".into());
            c.push_mode = Some("compatible".into());
        }),
    )
    .await
    .unwrap();
    assert!(shown.contains("gh_0123456789ab"), "{shown}");
    assert!(shown.contains("compatible"), "{shown}");
    assert!(
        shown.contains(&format!("/t/{APPID}/wechat/push")),
        "{shown}"
    );
    // Options not given keep their value; "" clears one.
    let shown = tenants::account_configure(
        &config,
        APPID,
        change(|c| c.push_mode = Some(String::new())),
    )
    .await
    .unwrap();
    assert!(shown.contains("gh_0123456789ab"), "{shown}");
    assert!(!shown.contains("compatible"), "{shown}");
    let unknown = tenants::account_configure(&config, "wx9999999999999999", change(|_| {}))
        .await
        .unwrap_err();
    assert!(format!("{unknown:#}").contains("no such account"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_checks_secrets_with_wechat_and_manages_websites_and_the_audit_log() {
    let sim = Simulator::new(SimConfig::default());
    sim.create_account(AccountSpec::new(APPID, SECRET)).unwrap();
    let running = wechat_sim::spawn(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = testkit::TempDir::new();
    let config = config_in(&dir, Some(&running));

    // A wrong AppSecret is refused by WeChat with the fix in both languages; nothing stored.
    let wrong = "ffffffffffffffffffffffffffffffff";
    let refused = tenants::account_add(&config, &args(), &mut Cursor::new(format!("{wrong}\n")))
        .await
        .unwrap_err();
    let text = format!("{refused:#}");
    assert!(
        text.contains("40125") && text.contains("AppSecret") && text.contains("重置"),
        "{text}"
    );
    assert!(!text.contains(wrong));
    assert!(
        tenants::account_list(&config)
            .await
            .unwrap()
            .contains("no accounts")
    );
    tenants::account_add(&config, &args(), &mut Cursor::new(format!("{SECRET}\n")))
        .await
        .unwrap();
    // The check used stable_token without force: no /cgi-bin/token call was made.
    assert_eq!(running.sim.counter(APPID, "/cgi-bin/token").calls, 0);
    assert!(running.sim.counter(APPID, "/cgi-bin/stable_token").calls >= 2);
    let replaced = tenants::account_set_secret(
        &config,
        APPID,
        false,
        &mut Cursor::new(format!("{wrong}\n")),
    )
    .await
    .unwrap_err();
    assert!(format!("{replaced:#}").contains("40125"));

    // Push credentials generated for WeChat's console are printed once.
    let creds =
        tenants::account_push_credentials(&config, APPID, true, &mut Cursor::new(Vec::new()))
            .await
            .unwrap();
    assert!(
        creds.contains("Token:") && creds.contains("EncodingAESKey:"),
        "{creds}"
    );

    // Websites: the redirect URI is checked and normalised, then edited, rotated, deleted.
    let bad = tenants::client_create(
        &config,
        APPID,
        "Site",
        vec!["https://*.site.example/cb".to_owned()],
        store::oidc::LoginMode::Userinfo,
        false,
    )
    .await
    .unwrap_err();
    assert!(format!("{bad:#}").contains("wildcard"), "{bad:#}");
    let created = tenants::client_create(
        &config,
        APPID,
        "Site",
        vec!["HTTPS://Site.Example/cb".to_owned()],
        store::oidc::LoginMode::Userinfo,
        false,
    )
    .await
    .unwrap();
    assert!(created.contains("https://site.example/cb"), "{created}");
    let client_id = created
        .lines()
        .find_map(|l| l.strip_prefix("client_id:"))
        .unwrap()
        .trim()
        .to_owned();
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .unwrap()
        .trim()
        .to_owned();
    let listed = tenants::client_list(&config, APPID).await.unwrap();
    assert!(
        listed.contains(&client_id) && !listed.contains(&secret),
        "{listed}"
    );
    let edited = tenants::client_edit(
        &config,
        APPID,
        &client_id,
        &WebsiteChanges {
            name: Some("Renamed".to_owned()),
            login_mode: Some(store::oidc::LoginMode::FollowRequired),
            id_token_signed_response_alg: Some("ES256".parse().unwrap()),
            login_surface: Some("scan".parse().unwrap()),
            scan_confirmation: Some(tenants::scan_confirmation("on").unwrap()),
            ..WebsiteChanges::default()
        },
    )
    .await
    .unwrap();
    for shown in [
        "Renamed",
        "follow_required",
        "ID tokens:     ES256",
        "logins:        scan",
        "scan confirm:  on",
        "https://site.example/cb",
    ] {
        assert!(edited.contains(shown), "{shown} not in {edited}");
    }
    // What an edit leaves out is kept; `default` hands the choice back to the push mode.
    let edited = tenants::client_edit(
        &config,
        APPID,
        &client_id,
        &WebsiteChanges {
            scan_confirmation: Some(tenants::scan_confirmation("default").unwrap()),
            ..WebsiteChanges::default()
        },
    )
    .await
    .unwrap();
    assert!(
        edited.contains("Renamed") && edited.contains("ES256") && edited.contains("default ("),
        "{edited}"
    );
    assert!(tenants::scan_confirmation("maybe").is_err());
    let rotated = tenants::client_rotate_secret(&config, APPID, &client_id)
        .await
        .unwrap();
    assert!(!rotated.contains(&secret));
    tenants::client_delete(&config, APPID, &client_id)
        .await
        .unwrap();
    assert!(
        tenants::client_show(&config, APPID, &client_id)
            .await
            .is_err()
    );

    // Disable and enable; delete needs the appid repeated.
    assert!(
        tenants::account_set_enabled(&config, APPID, false)
            .await
            .unwrap()
            .contains("disabled")
    );
    assert!(
        tenants::account_list(&config)
            .await
            .unwrap()
            .contains("disabled")
    );
    tenants::account_set_enabled(&config, APPID, true)
        .await
        .unwrap();
    assert!(
        tenants::account_delete(&config, APPID, "wx0000000000000000")
            .await
            .is_err()
    );

    // Every change left an audit entry, newest first, with no secret in it.
    let audit = tenants::audit_list(&config, tenancy::people::AuditQuery::default(), 100)
        .await
        .unwrap();
    for action in [
        "account.register",
        "account.set_push_credentials",
        "website.create",
        "website.edit",
        "website.rotate_secret",
        "website.delete",
        "account.disable",
        "account.enable",
    ] {
        assert!(audit.contains(action), "{action} missing from\n{audit}");
    }
    assert!(
        !audit.contains(SECRET) && !audit.contains(&secret),
        "{audit}"
    );
    assert!(audit.find("account.enable") < audit.find("account.register"));
    tenants::account_delete(&config, APPID, APPID)
        .await
        .unwrap();
    assert!(
        tenants::account_list(&config)
            .await
            .unwrap()
            .contains("no accounts")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_import_checks_every_line_first_and_stores_all_or_nothing() {
    let dir = testkit::TempDir::new();
    let config = config_in(&dir, None);
    let bulk = NewAccountArgs {
        skip_check: true,
        ..args()
    };
    let line = |n: u32, secret: &str| format!("wx{n:016x}\tShop {n}\t{secret}\n");
    // Two bad lines among good ones: both named, with what to fix; nothing stored, no secret
    // echoed.
    let mut input = String::from("# appid, name, secret\n\n");
    for n in 1..=5 {
        input.push_str(&line(n, SECRET));
    }
    input.push_str("wx0000000000000001\tAgain\t0123456789abcdef0123456789abcdee\n");
    input.push_str(&line(7, "not-a-secret-value"));
    let refused = tenants::account_import(&config, &bulk, &mut Cursor::new(input))
        .await
        .unwrap_err();
    let text = format!("{refused:#}");
    assert!(
        text.contains("2 line(s) cannot be imported; nothing was stored"),
        "{text}"
    );
    assert!(
        text.contains("line 8:") && text.contains("line 9:"),
        "{text}"
    );
    assert!(
        !text.contains("not-a-secret-value") && !text.contains(SECRET),
        "{text}"
    );
    assert!(
        !tenants::account_list(&config)
            .await
            .unwrap()
            .contains("wx0000000000000001")
    );
    // A line without its three fields is named before anything is read further.
    let short = tenants::account_import(&config, &bulk, &mut Cursor::new("wx01\tonly two\n"))
        .await
        .unwrap_err();
    assert!(format!("{short:#}").contains("line 1: expected APPID<TAB>NAME<TAB>APPSECRET"));

    let mut input = String::new();
    for n in 1..=25 {
        input.push_str(&line(n, SECRET));
    }
    let report = tenants::account_import(&config, &bulk, &mut Cursor::new(input))
        .await
        .unwrap();
    assert!(report.starts_with("registered 25 accounts"), "{report}");
    let listed = tenants::account_list(&config).await.unwrap();
    assert!(
        listed.contains("wx0000000000000001") && listed.contains("wx0000000000000019"),
        "{listed}"
    );
    // Imported again: every line is an appid already registered.
    let again = tenants::account_import(&config, &bulk, &mut Cursor::new(line(1, SECRET)))
        .await
        .unwrap_err();
    assert!(format!("{again:#}").contains("line 1:"), "{again:#}");
}
