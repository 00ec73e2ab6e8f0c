//! `wxhub push-route …` in-process, as the command line runs it: routes added with their
//! Token from stdin (never echoed), listed, edited, deleted; the relay URL setting shows up as
//! the account's relay route; every change audited.

use std::io::Cursor;

use store::accounts::{AccountKind, TokenMode};
use wxhub::config::{Config, ConfigArgs};
use wxhub::push_routes::{PushRouteCommand, run};
use wxhub::tenants::{self, NewAccountArgs, SettingsArgs};

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = testkit::canary::APP_SECRET;
const TOKEN: &str = "ca9a27ca9a27ownerBot42";

fn config_in(dir: &testkit::TempDir) -> Config {
    Config::load(&ConfigArgs {
        data_dir: Some(dir.path().join("data")),
        dev_keyring: true,
        ..ConfigArgs::default()
    })
    .unwrap()
}

fn add(url: &str, delivery: &str, msg_type: Option<&str>) -> PushRouteCommand {
    add_generated(url, delivery, msg_type, false)
}

fn add_generated(
    url: &str,
    delivery: &str,
    msg_type: Option<&str>,
    generate: bool,
) -> PushRouteCommand {
    PushRouteCommand::Add {
        appid: APPID.to_owned(),
        url: url.to_owned(),
        delivery: delivery.to_owned(),
        msg_type: msg_type.map(str::to_owned),
        event: None,
        event_key_prefix: None,
        push_mode: None,
        position: None,
        generate,
        disabled: false,
    }
}

fn stdin(text: &str) -> Cursor<Vec<u8>> {
    Cursor::new(text.as_bytes().to_vec())
}

#[tokio::test]
async fn push_routes_are_added_listed_edited_and_deleted_from_the_command_line() {
    let dir = testkit::TempDir::new();
    let config = config_in(&dir);
    let account = NewAccountArgs {
        appid: APPID.to_owned(),
        name: "Routes".to_owned(),
        owner_email: "owner@example.com".to_owned(),
        kind: AccountKind::Service,
        verified: true,
        token_mode: TokenMode::Token,
        skip_check: true,
    };
    tenants::account_add(&config, &account, &mut stdin(&format!("{SECRET}\n")))
        .await
        .unwrap();

    // No Token on stdin, a URL that is not https: refused, with what to do.
    let none = run(
        &config,
        add("https://bot.example/wx", "reply", None),
        &mut stdin(""),
    )
    .await;
    assert!(format!("{:#}", none.unwrap_err()).contains("no Token on stdin"));
    let http = run(
        &config,
        add("http://bot.example/wx", "reply", None),
        &mut stdin(&format!("{TOKEN}\n")),
    )
    .await;
    assert!(format!("{:#}", http.unwrap_err()).contains("must be https"));

    let added = run(
        &config,
        add("https://bot.example/wx", "reply", Some("text")),
        &mut stdin(&format!("{TOKEN}\n")),
    )
    .await
    .unwrap();
    assert!(
        added.contains("reply text → https://bot.example/wx"),
        "{added}"
    );
    assert!(!added.contains(TOKEN), "the Token is never printed");
    let route_id = added.split_whitespace().nth(2).unwrap().to_owned();
    let generated = run(
        &config,
        add_generated("https://archive.example/wx", "copy", None, true),
        &mut stdin(""),
    )
    .await
    .unwrap();
    assert!(
        generated.contains("EncodingAESKey: ") && generated.contains("mode safe"),
        "{generated}"
    );

    // The relay URL setting is the account's relay route.
    tenants::account_configure(
        &config,
        APPID,
        SettingsArgs {
            push_relay_url: Some("https://relay.example/wx".to_owned()),
            ..SettingsArgs::default()
        },
    )
    .await
    .unwrap();
    let listed = run(
        &config,
        PushRouteCommand::List {
            appid: APPID.to_owned(),
        },
        &mut stdin(""),
    )
    .await
    .unwrap();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("relay: signed with the account's own Token"),
        "{listed}"
    );

    let edited = run(
        &config,
        PushRouteCommand::Edit {
            appid: APPID.to_owned(),
            route_id: route_id.clone(),
            url: None,
            delivery: None,
            msg_type: Some(String::new()),
            event: Some("CLICK".to_owned()),
            event_key_prefix: Some("menu_".to_owned()),
            push_mode: None,
            position: None,
            enabled: Some(false),
            credentials: false,
            generate: false,
        },
        &mut stdin(""),
    )
    .await
    .unwrap();
    assert!(
        edited.contains("Event=CLICK EventKey=menu_*") && edited.contains("[off]"),
        "{edited}"
    );

    let failures = run(
        &config,
        PushRouteCommand::Failures {
            appid: APPID.to_owned(),
        },
        &mut stdin(""),
    )
    .await
    .unwrap();
    assert!(failures.contains("0 copies waiting") && failures.contains("no failures"));

    run(
        &config,
        PushRouteCommand::Delete {
            appid: APPID.to_owned(),
            route_id: route_id.clone(),
        },
        &mut stdin(""),
    )
    .await
    .unwrap();
    let gone = run(
        &config,
        PushRouteCommand::Delete {
            appid: APPID.to_owned(),
            route_id,
        },
        &mut stdin(""),
    )
    .await;
    assert!(format!("{:#}", gone.unwrap_err()).contains("no such push route"));

    let query = tenancy::people::AuditQuery {
        appid: Some(APPID.to_owned()),
        ..Default::default()
    };
    let audit = tenants::audit_list(&config, query, 50).await.unwrap();
    for action in ["push_route.create", "push_route.edit", "push_route.delete"] {
        assert!(audit.contains(action), "{action} audited:\n{audit}");
    }
    assert!(!audit.contains(TOKEN));
}
