//! Two replicas over one database: every step of a login may land on either.

use store::oidc::LoginMode;
use wechat_sim::FollowOptions;

use crate::common::*;

/// Authorize on replica 0, WeChat's callback on replica 1, the follow page's status on 0,
/// the subscribe push on 1 (and its retry on 0), continue on 1, token and userinfo on 0.
async fn replicas_continue_each_others_logins(env: Env) {
    let (id, secret) = env.client(APPID, LoginMode::FollowRequired, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    let attempt = rp.start();
    let wechat = location(&env.get(&attempt.url).await);
    let back = location(&env.get(&as_user(&wechat, "carol", "allow")).await);
    let on_1 = env.get(&env.on_replica(&back, 1)).await;
    assert_eq!(on_1.status(), 303);
    let page = location(&on_1);
    let status: serde_json::Value = env
        .get(&env.on_replica(&format!("{page}/status"), 0))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["followed"], false);

    // The simulator delivers to the public URL (replica 0); the same push retried on
    // replica 1 is recognised as a retry through the database.
    env.sim()
        .patch_account(
            APPID,
            serde_json::json!({"push_url": env.on_replica(&format!("{}/wechat/push", env.issuer(APPID)), 1)}),
        )
        .unwrap();
    let outcome = env
        .sim()
        .follow(APPID, "carol", FollowOptions::default())
        .await
        .unwrap();
    let delivery = outcome.delivery.unwrap();
    assert!(delivery.acknowledged);
    let attempt0 = &delivery.attempts[0];
    let retry = env
        .browser
        .post(format!("http://{}/t/{APPID}/wechat/push", env.hubs[0].addr))
        .query(&[
            (
                "signature",
                wechat::push::signature(PUSH_TOKEN, &attempt0.timestamp.to_string(), "retry-nonce"),
            ),
            ("timestamp", attempt0.timestamp.to_string()),
            ("nonce", "retry-nonce".to_owned()),
            ("encrypt_type", "aes".to_owned()),
            (
                "msg_signature",
                wechat::push::msg_signature(
                    PUSH_TOKEN,
                    &attempt0.timestamp.to_string(),
                    "retry-nonce",
                    delivery
                        .body
                        .split("<Encrypt><![CDATA[")
                        .nth(1)
                        .unwrap()
                        .split("]]>")
                        .next()
                        .unwrap(),
                ),
            ),
        ])
        .body(delivery.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(retry.text().await.unwrap(), "success");
    assert_eq!(env.pushes(APPID).await.len(), 1);

    let status: serde_json::Value = env
        .get(&env.on_replica(&format!("{page}/status"), 0))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["followed"], true);
    let done = env
        .post(&env.on_replica(&format!("{page}/continue"), 1))
        .await;
    assert_eq!(done.status(), 302);
    let login = rp.finish(attempt, &location(&done)).await.unwrap();
    assert_eq!(login.sub, outcome.openid);
    env.assert_gateway_never_fetched_a_token(APPID);
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_continue_each_others_logins() {
        let env = super::Env::start(super::DbKind::Sqlite, 2, None).await;
        super::replicas_continue_each_others_logins(env).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_continue_each_others_logins() {
        let Some(url) = super::postgres_url() else {
            return;
        };
        let env = super::Env::start(super::DbKind::Postgres, 2, Some(url)).await;
        super::replicas_continue_each_others_logins(env).await;
    }
}
