//! What the gateway counts: the login funnel per website and mode, why logins fail, pushes by
//! kind (a retried push once), and end users by how they were created.

use std::time::Duration;

use store::oidc::LoginMode;
use store::stats::Granularity;
use wechat_sim::FollowOptions;

use crate::common::*;

/// Every count of the account, as `(metric, label, value)`, after flushing.
pub(crate) async fn counts(env: &Env) -> Vec<(String, String, i64)> {
    env.hubs[0].stats.flush().await.unwrap();
    let mut rows: Vec<_> = env
        .store()
        .account_series(
            &env.account_id(APPID).await,
            Granularity::Day,
            0,
            i64::MAX,
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.metric, p.label, p.value))
        .collect();
    rows.sort();
    rows
}

pub(crate) fn row(metric: &str, label: &str, value: i64) -> (String, String, i64) {
    (metric.to_owned(), label.to_owned(), value)
}

/// The internal id of the website whose OIDC client_id is `client_id`.
pub(crate) async fn website(env: &Env, client_id: &str) -> String {
    env.store()
        .find_oidc_client(client_id)
        .await
        .unwrap()
        .unwrap()
        .id
}

#[tokio::test]
async fn the_login_funnel_is_counted_per_website_and_mode_with_reasons() {
    let env = Env::sqlite().await;
    let (follow_id, follow_secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let (info_id, info_secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let follow_rp = Rp::discover(&env, APPID, &follow_id, follow_secret).await;
    let info_rp = Rp::discover(&env, APPID, &info_id, info_secret).await;

    // Carol does not follow: follow page, follows (the push pre-registers her), continues.
    let attempt = follow_rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "carol", "allow").await;
    let page_url = location(&back);
    env.sim()
        .follow(APPID, "carol", FollowOptions::default())
        .await
        .unwrap();
    let done = env.post(&format!("{page_url}/continue")).await;
    follow_rp.finish(attempt, &location(&done)).await.unwrap();
    // Bob reaches the follow page and leaves; his wait expires and the sweep counts it.
    let attempt = follow_rp.start();
    browse_to_callback(&env, &attempt.url.clone(), "bob", "allow").await;
    // Alice logs in with userinfo (created at her first login), then refuses once.
    let attempt = info_rp.start();
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    info_rp.finish(attempt, &location(&back)).await.unwrap();
    let attempt = info_rp.start();
    browse_to_callback(&env, &attempt.url.clone(), "alice", "deny").await;

    env.clock.advance(Duration::from_secs(3600));
    let gateway = &env.hubs[0].gateway;
    let retention = gateway::maintenance::Retention::default();
    let abandoned =
        gateway::maintenance::count_abandoned_logins(gateway, env.now(), &retention).await;
    assert_eq!(abandoned.unwrap(), 1);
    assert_eq!(
        gateway::maintenance::count_abandoned_logins(gateway, env.now(), &retention)
            .await
            .unwrap(),
        0,
        "an abandoned login is counted once"
    );

    let follow = format!("follow_required/{}", website(&env, &follow_id).await);
    let info = format!("userinfo/{}", website(&env, &info_id).await);
    let mut expected = vec![
        row("login.started", &follow, 2),
        row("login.returned", &follow, 2),
        row("login.follow_page", &follow, 2),
        row("login.followed", &follow, 1),
        row("login.completed", &follow, 1),
        row("login.failed.not_following", &follow, 1),
        row("login.started", &info, 2),
        row("login.returned", &info, 2),
        row("login.completed", &info, 1),
        row("login.failed.consent_refused", &info, 1),
        row("push.received", "subscribe", 1),
        row("users.created", "push", 1),
        row("users.created", "login_userinfo", 1),
    ];
    expected.sort();
    assert_eq!(counts(&env).await, expected);
}

#[tokio::test]
async fn a_push_retried_by_wechat_is_counted_once_and_its_retries_as_duplicates() {
    let env = Env::sqlite().await;
    let message = crate::push::subscribe_xml(APPID, "o_counted", env.now_secs());
    for attempt in 0..3 {
        let nonce = format!("retry{attempt}");
        let r = crate::push::send(&env, APPID, &message, &nonce, Some(APPID)).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        counts(&env).await,
        [
            row("push.duplicates", "", 2),
            row("push.received", "subscribe_scene", 1),
            row("users.created", "push", 1),
        ]
    );
}
