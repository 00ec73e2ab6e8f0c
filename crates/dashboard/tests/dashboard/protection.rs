//! CSRF, session fixation, idle and absolute expiry (with the manual clock), sign out
//! everywhere, rate limits without user enumeration, security headers and https cookies.

use std::time::Duration;

use dashboard::limits::{Limit, LimitConfig};
use reqwest::StatusCode;
use testkit::TestDatabase;

use crate::common::{Env, OPERATOR, OWNER_A, PASSWORD};

const MINUTE: Duration = Duration::from_secs(60);

pub async fn every_state_changing_route_refuses_a_form_without_its_token(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut anonymous = env.browser();
    let mut owner = env.signed_in(OWNER_A).await;
    let foreign = owner.token().await;
    let posts: Vec<_> = dashboard::ROUTES
        .iter()
        .filter(|r| r.method != axum::http::Method::GET)
        .collect();
    assert!(posts.len() >= 8, "{posts:?}");
    for route in posts {
        let path = route.path.replace("{token}", "some-token");
        for (who, browser) in [("anonymous", &mut anonymous), ("owner", &mut owner)] {
            for fields in [
                vec![("email", OWNER_A)],
                vec![("csrf", "forged"), ("email", OWNER_A)],
            ] {
                let page = browser.post_raw(&path, &fields).await;
                assert_eq!(
                    page.status,
                    StatusCode::FORBIDDEN,
                    "{route:?} as {who} with {fields:?}"
                );
                assert!(page.body.contains("表单已失效"), "{route:?}: {}", page.body);
            }
        }
        // Another browser's token is not this browser's.
        let page = anonymous.post_raw(&path, &[("csrf", &foreign)]).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{route:?} with a foreign token"
        );
    }
    // The owner is still signed in: none of the refused forms did anything.
    assert_eq!(
        owner.get("/dashboard/accounts").await.status,
        StatusCode::OK
    );
    env.finish().await;
}

pub async fn a_cross_site_post_is_refused_with_a_clear_page(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut owner = env.signed_in(OWNER_A).await;
    let token = owner.token().await;
    owner.extra = vec![
        ("origin".into(), "https://evil.example".into()),
        ("accept-language".into(), "en".into()),
    ];
    let page = owner
        .post_raw("/dashboard/sign-out-everywhere", &[("csrf", &token)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("Request refused"), "{}", page.body);
    assert!(
        page.body.contains("came from another website"),
        "{}",
        page.body
    );
    owner.extra = vec![("sec-fetch-site".into(), "cross-site".into())];
    let page = owner
        .post_raw("/dashboard/sign-out", &[("csrf", &token)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // The same form from the dashboard itself goes through.
    owner.extra = vec![
        ("origin".into(), env.base.clone()),
        ("sec-fetch-site".into(), "same-origin".into()),
    ];
    assert_eq!(
        owner.get("/dashboard/accounts").await.status,
        StatusCode::OK
    );
    let page = owner
        .post_raw("/dashboard/sign-out", &[("csrf", &token)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/sign-in?flash=signed_out");
    env.finish().await;
}

pub async fn signing_in_gives_a_new_session_id_and_a_planted_one_is_worthless(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut browser = env.browser();
    // An attacker planted a session id in the victim's browser before sign-in.
    browser
        .cookies
        .insert("wxhub_session".into(), "planted-by-someone-else".into());
    let page = browser.sign_in(OWNER_A, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let first = browser.session().unwrap();
    assert_ne!(first, "planted-by-someone-else");
    let mut attacker = env.browser();
    attacker
        .cookies
        .insert("wxhub_session".into(), "planted-by-someone-else".into());
    assert_eq!(
        attacker.get("/dashboard/accounts").await.status,
        StatusCode::SEE_OTHER
    );

    // Signing in again from the same browser rotates the id and ends the old session.
    let page = browser.sign_in(OWNER_A, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let second = browser.session().unwrap();
    assert_ne!(first, second);
    let mut stale = env.browser();
    stale.cookies.insert("wxhub_session".into(), first);
    let page = stale.get("/dashboard/accounts").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.set_cookies()
            .iter()
            .any(|c| c.starts_with("wxhub_session=;") && c.contains("Max-Age=0")),
        "a dead session cookie is removed: {:?}",
        page.set_cookies()
    );
    assert_eq!(
        browser.get("/dashboard/accounts").await.status,
        StatusCode::OK
    );
    // Only a hash of the token is stored.
    let raw = env
        .tenancy
        .store()
        .live_session(&second, crate::common::START + 1, 0)
        .await
        .unwrap();
    assert!(raw.is_none(), "the token itself is no session id");
    env.finish().await;
}

pub async fn sessions_end_after_30_idle_minutes_and_12_hours_in_all(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut idle = env.signed_in(OWNER_A).await;
    env.advance(29 * MINUTE);
    assert_eq!(idle.get("/dashboard/accounts").await.status, StatusCode::OK);
    env.advance(30 * MINUTE + Duration::from_millis(1));
    let page = idle.get("/dashboard/accounts").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "idle for 30 minutes");
    assert_eq!(page.location(), "/dashboard/sign-in");

    // Used every 20 minutes, a session still ends 12 hours after sign-in.
    let mut busy_again = env.signed_in(OWNER_A).await;
    let mut used = Duration::ZERO;
    while used + 20 * MINUTE < Duration::from_secs(12 * 3600) {
        env.advance(20 * MINUTE);
        used += 20 * MINUTE;
        assert_eq!(
            busy_again.get("/dashboard/accounts").await.status,
            StatusCode::OK,
            "after {used:?}"
        );
    }
    env.advance(12 * 3600 * Duration::from_secs(1) - used);
    assert_eq!(
        busy_again.get("/dashboard/accounts").await.status,
        StatusCode::SEE_OTHER,
        "12 hours after sign-in"
    );
    env.finish().await;
}

pub async fn sign_out_everywhere_ends_every_session_of_the_person(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut phone = env.signed_in(OWNER_A).await;
    let mut laptop = env.signed_in(OWNER_A).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let page = phone.post("/dashboard/sign-out-everywhere", &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        "/dashboard/sign-in?flash=signed_out_everywhere"
    );
    assert_eq!(
        phone.get("/dashboard/accounts").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        laptop.get("/dashboard/accounts").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        operator.get("/dashboard/operator/accounts").await.status,
        StatusCode::OK,
        "another person's session is untouched"
    );
    let page = phone
        .get("/dashboard/sign-in?flash=signed_out_everywhere")
        .await;
    assert!(
        page.body.contains("您已在所有设备上退出登录"),
        "{}",
        page.body
    );
    env.finish().await;
}

pub async fn sign_in_is_rate_limited_per_account_without_telling_who_exists(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut browser = env.browser();
    let wrong = browser.sign_in(OWNER_A, "not the password at all").await;
    let unknown = browser
        .sign_in("nobody@example.com", "not the password at all")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(
        wrong.body.replace(OWNER_A, "EMAIL"),
        unknown.body.replace("nobody@example.com", "EMAIL"),
        "an unknown email and a wrong password get the same page"
    );
    for _ in 1..10 {
        browser.sign_in(OWNER_A, "not the password at all").await;
        browser
            .sign_in("nobody@example.com", "not the password at all")
            .await;
    }
    for email in [OWNER_A, "nobody@example.com"] {
        let page = browser.sign_in(email, PASSWORD).await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{email}");
        assert!(page.body.contains("登录尝试次数过多"), "{}", page.body);
        assert_eq!(page.header("retry-after"), "60");
    }
    // The right password is refused too while the account is limited, then works again.
    env.advance(MINUTE);
    let page = browser.sign_in(OWNER_A, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    env.finish().await;
}

pub async fn sign_in_is_rate_limited_per_ip(db: TestDatabase) {
    let env = Env::start(db, |config| {
        config.limits = LimitConfig {
            per_ip: Limit {
                burst: 3,
                every: Duration::from_secs(30),
            },
            ..LimitConfig::default()
        };
    })
    .await;
    env.people().await;
    let mut browser = env.browser();
    for n in 0..3 {
        let page = browser
            .sign_in(&format!("guess{n}@example.com"), "whatever it is")
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let page = browser.sign_in(OWNER_A, PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    env.advance(Duration::from_secs(30));
    assert_eq!(
        browser.sign_in(OWNER_A, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    env.finish().await;
}

pub async fn pages_carry_the_security_headers(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut owner = env.signed_in(OWNER_A).await;
    for path in [
        "/dashboard/sign-in",
        "/dashboard/accounts",
        "/dashboard/operator/accounts",
        "/dashboard/nowhere-route",
    ] {
        let page = owner.get(path).await;
        if path == "/dashboard/nowhere-route" {
            // Not a dashboard route: the hub answers it, not the dashboard.
            assert_eq!(page.status, StatusCode::NOT_FOUND);
            continue;
        }
        let csp = page.header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && csp.contains("script-src 'self';"),
            "{path}: {csp}"
        );
        assert_eq!(page.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(page.header("referrer-policy"), "same-origin", "{path}");
        assert_eq!(page.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(page.header("cache-control"), "no-store", "{path}");
        // One script file of the dashboard's own, and no inline script.
        assert_eq!(page.body.matches("<script").count(), 1, "{path}");
        assert!(
            page.body
                .contains("<script src=\"/dashboard/static/copy.js?v="),
            "{path}: only the copy buttons' file"
        );
        assert!(!page.body.contains("style=\""), "{path}: no inline style");
    }
    let css = owner.get("/dashboard/static/dashboard.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.header("cache-control").contains("immutable"));
    assert!(css.body.contains("prefers-color-scheme: dark"));
    env.finish().await;
}

pub async fn https_cookies_are_host_prefixed_and_operators_must_enrol_totp(db: TestDatabase) {
    let env = Env::start(db, |config| {
        // Served on plain loopback here, but configured as it would be behind TLS.
        *config = dashboard::DashboardConfig::new(url::Url::parse("https://hub.example").unwrap());
    })
    .await;
    assert!(
        env.dashboard.config().require_totp_for_operators,
        "on by default for https"
    );
    env.people().await;
    let mut browser = env.browser();
    let page = browser.get("/dashboard/sign-in").await;
    let binding = page.set_cookies();
    assert!(
        binding.iter().any(|c| c.starts_with("__Host-wxhub_form=")
            && c.contains("; Secure")
            && c.contains("HttpOnly")),
        "{binding:?}"
    );
    let page = browser.sign_in(OPERATOR, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/security");
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-wxhub_session="))
        .expect("a session cookie");
    for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    // Until TOTP is enrolled, the operator reaches nothing else.
    let page = browser.get("/dashboard/operator/accounts").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/security");
    let page = browser.get("/dashboard/security").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("运维人员必须使用两步登录"),
        "{}",
        page.body
    );
    // Owners are not held to it.
    let page = env.browser().sign_in(OWNER_A, PASSWORD).await;
    assert_eq!(page.location(), "/dashboard/accounts");
    env.finish().await;
}
