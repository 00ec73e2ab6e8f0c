//! The push-routes page: an owner adds, changes and deletes routes (a refused target said
//! beside its field, the Token never shown again), reads each route's counts, failures and
//! dead letters and sends one again; an operator reads it all and changes nothing.

use reqwest::StatusCode;
use store::push_routes::{NewCopy, RouteFailure};
use store::stats::{CounterRow, StatsBatch};
use tenancy::Principal;
use testkit::TestDatabase;
use wechat::Clock;

use crate::common::{APPID_A, Env, OPERATOR, OWNER_A, OWNER_B, Page};

const TOKEN: &str = "botToken2026";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn page_path() -> String {
    format!("/dashboard/accounts/{APPID_A}/push-routes")
}

/// The ids of the routes listed, in order.
fn listed(page: &Page) -> Vec<String> {
    page.body
        .split("data-route=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

pub async fn owners_run_push_routes_from_their_page(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut owner = env.signed_in(OWNER_A).await;
    owner.extra = vec![("accept-language".into(), "en".into())];

    let empty = owner.get(&page_path()).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No routes yet"), "{}", empty.body);
    // The account page leads there.
    let account = owner.get(&format!("/dashboard/accounts/{APPID_A}")).await;
    assert!(account.body.contains(&format!("href=\"{}\"", page_path())));

    // An internal address is refused beside the target, what was typed kept but no secret.
    let refused = owner
        .post(
            &page_path(),
            &[
                ("target_url", "http://bot.internal.example/wx"),
                ("msg_type", "text"),
                ("delivery", "reply"),
                ("token", TOKEN),
                ("encoding_aes_key", AES_KEY),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused
        .between("id=\"route-target-error\" role=\"alert\">", "</p>")
        .expect("the error beside the target");
    assert!(error.contains("https"), "{error}");
    assert!(
        refused
            .body
            .contains("value=\"http://bot.internal.example/wx\"")
    );
    assert!(!refused.body.contains(TOKEN) && !refused.body.contains(AES_KEY));
    // A Token the console would not take: said beside the Token, in Chinese too.
    owner.extra.clear();
    let bad_token = owner
        .post(
            &page_path(),
            &[
                ("target_url", "https://bot.example/wx"),
                ("delivery", "copy"),
                ("token", "no!"),
            ],
        )
        .await;
    assert_eq!(bad_token.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = bad_token
        .between("id=\"route-token-error\" role=\"alert\">", "</p>")
        .expect("the error beside the Token");
    assert!(error.contains("3 到 32 位"), "{error}");
    owner.extra = vec![("accept-language".into(), "en".into())];

    // A reply route for text messages and a copy route of everything.
    for (target, msg_type, delivery) in [
        ("https://bot.example/wx", "text", "reply"),
        ("https://crm.example/hook", "", "copy"),
    ] {
        let made = owner
            .post(
                &page_path(),
                &[
                    ("target_url", target),
                    ("msg_type", msg_type),
                    ("delivery", delivery),
                    ("push_mode", "safe"),
                    ("token", TOKEN),
                    ("encoding_aes_key", AES_KEY),
                ],
            )
            .await;
        assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
        assert!(made.location().ends_with("?flash=route_saved"));
    }
    let page = owner.get(&page_path()).await;
    let ids = listed(&page);
    assert_eq!(ids.len(), 2, "{}", page.body);
    let (reply, copy) = (ids[0].clone(), ids[1].clone());
    assert!(page.body.contains("1. text"), "{}", page.body);
    assert!(page.body.contains("2. everything"), "{}", page.body);
    assert!(!page.body.contains(TOKEN) && !page.body.contains(AES_KEY));
    let routes = env
        .tenancy
        .list_push_routes(&Principal::cli(), APPID_A)
        .await
        .unwrap();
    assert_eq!(routes[0].delivery, store::push_routes::Delivery::Reply);
    assert_eq!(routes[0].match_msg_type.as_deref(), Some("text"));
    assert!(routes[1].has_aes_key && routes[1].match_msg_type.is_none());

    // Changing the copy route: moved first, limited to CLICK menu_*, disabled; a blank
    // Token keeps the stored credentials.
    let edit = owner
        .post(
            &format!("{}/{copy}/edit", page_path()),
            &[
                ("target_url", "https://crm.example/hook2"),
                ("msg_type", "event"),
                ("event", "CLICK"),
                ("key_prefix", "menu_"),
                ("delivery", "copy"),
                ("push_mode", "safe"),
                ("position", "-1"),
            ],
        )
        .await;
    assert_eq!(edit.status, StatusCode::SEE_OTHER, "{}", edit.body);
    let routes = env
        .tenancy
        .list_push_routes(&Principal::cli(), APPID_A)
        .await
        .unwrap();
    assert_eq!(routes[0].id, copy);
    assert_eq!(routes[0].target_url, "https://crm.example/hook2");
    assert_eq!(
        routes[0].describe_match(),
        "event Event=CLICK EventKey=menu_*"
    );
    assert!(!routes[0].enabled && routes[0].has_aes_key);
    let page = owner.get(&page_path()).await;
    assert_eq!(listed(&page), vec![copy.clone(), reply.clone()]);
    assert!(page.body.contains("disabled"));
    // A refused edit opens that route's form with the error.
    let bad_edit = owner
        .post(
            &format!("{}/{reply}/edit", page_path()),
            &[
                ("target_url", "https://bot.example/wx"),
                ("msg_type", "text"),
                ("delivery", "reply"),
                ("position", "first"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(bad_edit.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad_edit.body.contains("first&#34; is not a whole number")
            || bad_edit.body.contains("first&quot; is not a whole number"),
        "{}",
        bad_edit.body
    );
    assert!(bad_edit.body.contains("<details open>"));

    // Counts of the last days, a failure and a dead letter, as the gateway records them.
    let store = env.tenancy.store();
    let account_id = store
        .find_account_by_appid(APPID_A)
        .await
        .unwrap()
        .unwrap()
        .id;
    let today = stats::calendar::day_start(env.clock.now_ms());
    let row = |metric: &str, label: String, value| CounterRow {
        account_id: account_id.clone(),
        start: today,
        metric: metric.to_owned(),
        label,
        value,
    };
    store
        .add_stats(&StatsBatch {
            daily: vec![
                row("push.route", format!("{reply}/delivered"), 41),
                row("push.route", format!("{reply}/late"), 2),
                row("push.route.reply_ms", reply.clone(), 1_290),
                row("push.route.replies", reply.clone(), 43),
                row("push.route", format!("{copy}/dead_lettered"), 1),
            ],
            ..StatsBatch::default()
        })
        .await
        .unwrap();
    let now = env.clock.now_ms();
    store
        .enqueue_push_copy(
            &NewCopy {
                id: "copy-1",
                account_id: &account_id,
                route_id: &copy,
                dedup_key: "push-1",
                openid: Some("o-user"),
                body: b"sealed",
            },
            100,
            now,
        )
        .await
        .unwrap();
    store
        .fail_push_copy("copy-1", 8, None, "HTTP 503 from crm.example")
        .await
        .unwrap();
    store
        .record_push_route_failure(
            &RouteFailure {
                route_id: reply.clone(),
                at: now,
                copy_id: None,
                cause: "answered after the 4000 ms deadline".to_owned(),
            },
            &account_id,
        )
        .await
        .unwrap();
    let page = owner.get(&page_path()).await;
    let reply_item = page
        .between(&format!("data-route=\"{reply}\""), "</dl>")
        .unwrap();
    assert!(
        reply_item.contains("<dd class=\"delivered\">41</dd>"),
        "{reply_item}"
    );
    assert!(
        reply_item.contains("<dd class=\"late\">2</dd>"),
        "{reply_item}"
    );
    assert!(reply_item.contains("30 ms"), "{reply_item}");
    let copy_item = page
        .between(&format!("data-route=\"{copy}\""), "</dl>")
        .unwrap();
    assert!(
        copy_item.contains("<dd class=\"dead\">1</dd>"),
        "{copy_item}"
    );
    assert!(page.body.contains("answered after the 4000 ms deadline"));
    let dead = page
        .between("id=\"dead-letters\"", "</ul>")
        .expect("the dead letters");
    assert!(dead.contains("HTTP 503 from crm.example") && dead.contains("8 attempts"));
    assert!(
        dead.contains("Route 1 (https://crm.example/hook2)"),
        "{dead}"
    );

    // The operator reads it all and is offered no form; posting is refused.
    let mut operator = env.signed_in(OPERATOR).await;
    let seen = operator.get(&page_path()).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("HTTP 503 from crm.example"));
    assert!(!seen.body.contains("/edit\"") && !seen.body.contains("/resend\""));
    let resend_path = format!("{}/dead/copy-1/resend", page_path());
    assert_eq!(
        operator.post(&resend_path, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    // Another owner is told there is no such account.
    let mut stranger = env.signed_in(OWNER_B).await;
    assert_eq!(
        stranger.get(&page_path()).await.status,
        StatusCode::NOT_FOUND
    );

    // The owner sends the dead letter again: queued, due now.
    let resent = owner.post(&resend_path, &[]).await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER);
    assert!(resent.location().ends_with("?flash=copy_resent"));
    let page = owner.get(&page_path()).await;
    assert!(page.body.contains("No dead letters."));
    assert!(page.body.contains("Copies waiting for delivery: 1"));
    // Deleting the copy route deletes its queued copy.
    let deleted = owner
        .post(&format!("{}/{copy}/delete", page_path()), &[])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let page = owner.get(&page_path()).await;
    assert_eq!(listed(&page), vec![reply]);
    assert!(page.body.contains("Copies waiting for delivery: 0"));
    // Every change is in the account's audit log.
    let audit = owner
        .get(&format!("/dashboard/accounts/{APPID_A}/audit"))
        .await;
    for operation in [
        "push_route.create",
        "push_route.edit",
        "push_route.resend",
        "push_route.delete",
    ] {
        assert!(audit.body.contains(operation), "{operation}");
    }
    env.finish().await;
}
