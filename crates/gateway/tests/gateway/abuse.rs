//! Requests anyone can send that write to the database are limited per client IP and per
//! account, answering 429 with `Retry-After`; authenticated clients are not limited.

use std::time::Duration;

use gateway::limits::{GatewayLimits, Rate};
use store::oidc::LoginMode;

use crate::common::*;

fn tight() -> GatewayLimits {
    let rate = Rate {
        burst: 3,
        every: Duration::from_secs(10),
    };
    GatewayLimits {
        authorize_per_ip: rate,
        public_token_per_ip: rate,
        ..GatewayLimits::default()
    }
}

#[tokio::test]
async fn a_flood_of_login_starts_from_one_address_gets_429_until_its_allowance_refills() {
    let env = Env::sqlite_with_limits(tight()).await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let rp = Rp::discover(&env, APPID, &id, secret).await;
    for _ in 0..3 {
        let started = env.get(&rp.start().url).await;
        assert_eq!(started.status(), 302, "to WeChat's authorize page");
    }
    let flooded = env.get(&rp.start().url).await;
    assert_eq!(flooded.status(), 429);
    assert_eq!(flooded.headers()["retry-after"], "10");
    assert!(
        flooded.headers().get("set-cookie").is_none(),
        "no login begun"
    );
    // The address's allowance covers every account of the hub.
    let other = env
        .get(&format!(
            "{}/authorize?client_id=x",
            env.issuer(OTHER_APPID)
        ))
        .await;
    assert_eq!(other.status(), 429);
    env.clock.advance(Duration::from_secs(10));
    assert_eq!(env.get(&rp.start().url).await.status(), 302);
    // And the login itself still completes.
    let attempt = rp.start();
    env.clock.advance(Duration::from_secs(10));
    let back = browse_to_callback(&env, &attempt.url.clone(), "alice", "allow").await;
    assert_eq!(back.status(), 302);
    assert!(rp.finish(attempt, &location(&back)).await.is_ok());
}

#[tokio::test]
async fn secretless_token_requests_are_limited_but_a_confidential_client_is_not() {
    let env = Env::sqlite_with_limits(tight()).await;
    let (public_id, _) = env.client(APPID, LoginMode::Userinfo, true).await;
    let (id, secret) = env.client(APPID, LoginMode::Userinfo, false).await;
    let secret = secret.unwrap();
    let token_url = format!("{}/token", env.issuer(APPID));
    let guess = |client_id: &str, n: usize| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", format!("guessed-code-{n}")),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", "v".repeat(43)),
            ("client_id", client_id.to_owned()),
        ]
    };
    for n in 0..3 {
        let refused = env
            .browser
            .post(&token_url)
            .form(&guess(&public_id, n))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "an unknown code");
    }
    let limited = env
        .browser
        .post(&token_url)
        .form(&guess(&public_id, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "10");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // A confidential client's backend, checked by its secret first, goes on.
    for n in 0..5 {
        let answered = env
            .browser
            .post(&token_url)
            .basic_auth(&id, Some(&secret))
            .form(&guess(&id, 10 + n)[..4])
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), 400, "judged on its code, not limited");
    }
}
