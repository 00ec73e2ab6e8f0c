//! Whole flows through the pages: the first operator's setup link, an invited owner who
//! enrols TOTP and signs in with a code, the operator's lists, the language switch.

use std::time::Duration;

use reqwest::StatusCode;
use store::people::Role;
use tenancy::Principal;
use testkit::TestDatabase;
use wechat::Clock as _;

use crate::common::{Browser, Env, OPERATOR, PASSWORD, START};

/// The path of a dashboard link (`http://…/dashboard/…`).
fn path_of(link: &str) -> String {
    let url = url::Url::parse(link).unwrap();
    url.path().to_owned()
}

pub async fn the_first_operator_sets_up_through_the_setup_link_once(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    let link = env
        .tenancy
        .first_operator_setup_link(&Principal::cli())
        .await
        .unwrap()
        .unwrap();
    let url = dashboard::link_url(
        &env.dashboard.config().public_url,
        link.purpose,
        link.token.expose(),
    );
    let path = path_of(&url);
    assert!(path.starts_with("/dashboard/setup/"), "{url}");
    // The link is no invitation.
    let wrong_kind = path.replace("/setup/", "/invitation/");
    assert_eq!(
        env.browser().get(&wrong_kind).await.status,
        StatusCode::NOT_FOUND
    );

    let mut browser = env.browser();
    let page = browser.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("第一个运维账号"), "{}", page.body);
    for (email, password, again, expect) in [
        ("not-an-email", PASSWORD, PASSWORD, "请输入邮箱地址"),
        ("first@hub.example", "short", "short", "太短"),
        (
            "first@hub.example",
            "password1234",
            "password1234",
            "太常见",
        ),
        (
            "first@hub.example",
            PASSWORD,
            "something else entirely",
            "两次输入的密码不一致",
        ),
    ] {
        let page = browser
            .post(
                &path,
                &[("email", email), ("password", password), ("again", again)],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{email}/{password}"
        );
        assert!(page.body.contains(expect), "{expect}: {}", page.body);
        assert!(
            page.body.contains("aria-invalid=\"true\""),
            "the field is marked"
        );
    }
    let page = browser
        .post(
            &path,
            &[
                ("email", "first@hub.example"),
                ("password", PASSWORD),
                ("again", PASSWORD),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        page.location(),
        "/dashboard/operator/accounts?flash=password_set"
    );
    let page = browser
        .get("/dashboard/operator/accounts?flash=password_set")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("密码已设置"), "{}", page.body);
    // Single use: the link is gone, and no new first-operator link is made.
    assert_eq!(env.browser().get(&path).await.status, StatusCode::NOT_FOUND);
    let again = env
        .browser()
        .post(
            &path,
            &[
                ("email", "second@hub.example"),
                ("password", PASSWORD),
                ("again", PASSWORD),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(
        env.tenancy
            .first_operator_setup_link(&Principal::cli())
            .await
            .unwrap()
            .is_none()
    );
    env.finish().await;
}

/// The secret shown on the enrolment page.
fn enrolment_secret(page: &crate::common::Page) -> Vec<u8> {
    let text = page
        .between("<code class=\"secret\">", "</code>")
        .expect("the page shows the secret");
    dashboard::totp::secret_from_base32(&text.replace(' ', "")).expect("base32")
}

pub async fn an_invited_owner_enrols_totp_and_signs_in_with_a_code_once(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.person(OPERATOR, Role::Operator).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let page = operator
        .post(
            "/dashboard/operator/owners",
            &[("email", "new.owner@example.com")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = page
        .between("readonly>", "</textarea>")
        .expect("the invitation link is shown");
    let path = path_of(&link);
    assert!(path.starts_with("/dashboard/invitation/"), "{link}");
    assert!(page.body.contains("7 天内有效"), "{}", page.body);
    let list = operator.get("/dashboard/operator/owners").await;
    assert!(list.body.contains("new.owner@example.com") && list.body.contains("已邀请"));
    assert!(!list.body.contains(&path), "the link is shown once only");

    let mut owner = env.browser();
    let page = owner.get(&path).await;
    assert!(page.body.contains("new.owner@example.com"));
    let page = owner
        .post(&path, &[("password", PASSWORD), ("again", PASSWORD)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dashboard/accounts?flash=password_set");

    // Enrol: start, read the secret from the page, confirm with a code.
    let page = owner.post("/dashboard/security/totp", &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let page = owner.get("/dashboard/security").await;
    assert!(page.body.contains("<svg"), "a QR code is shown");
    let secret = enrolment_secret(&page);
    let page = owner
        .post("/dashboard/security/totp/confirm", &[("code", "000000x")])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let code = dashboard::totp::code_at(&secret, env.clock.now_ms());
    let before = owner.session();
    let page = owner
        .post("/dashboard/security/totp/confirm", &[("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dashboard/accounts?flash=totp_enabled");
    assert_ne!(
        owner.session(),
        before,
        "a stronger sign-in gets a new session id"
    );
    let audit = env
        .tenancy
        .list_audit(&Principal::cli(), &Default::default(), None, 20)
        .await
        .unwrap();
    assert!(
        audit.iter().any(|e| e.action == "person.totp_enrol"),
        "{audit:?}"
    );

    // Sign in again: the password leads to the code.
    env.clock.advance(Duration::from_secs(60));
    let mut browser = env.browser();
    let page = browser.sign_in("new.owner@example.com", PASSWORD).await;
    assert_eq!(page.location(), "/dashboard/sign-in/code");
    assert_eq!(
        browser.get("/dashboard/accounts").await.location(),
        "/dashboard/sign-in/code"
    );
    let page = browser
        .post("/dashboard/sign-in/code", &[("code", "12345")])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let code = dashboard::totp::code_at(&secret, env.clock.now_ms());
    let page = browser
        .post("/dashboard/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dashboard/accounts");
    assert_eq!(
        browser.get("/dashboard/accounts").await.status,
        StatusCode::OK
    );

    // The same code does not sign anyone in twice.
    let mut thief = env.browser();
    thief.sign_in("new.owner@example.com", PASSWORD).await;
    let page = thief
        .post("/dashboard/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // The step after it works, and the pending step expires after 5 minutes.
    env.clock.advance(Duration::from_secs(30));
    let next = dashboard::totp::code_at(&secret, env.clock.now_ms());
    let page = thief
        .post("/dashboard/sign-in/code", &[("code", &next)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let mut slow = env.browser();
    slow.sign_in("new.owner@example.com", PASSWORD).await;
    env.clock.advance(Duration::from_secs(5 * 60));
    let code = dashboard::totp::code_at(&secret, env.clock.now_ms());
    let page = slow
        .post("/dashboard/sign-in/code", &[("code", &code)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        "/dashboard/sign-in",
        "the code step timed out"
    );
    env.finish().await;
}

pub async fn operators_page_through_every_account_and_invite_owners(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    for n in 0..55 {
        env.account(&format!("wx{n:016x}"), crate::common::OWNER_A)
            .await;
    }
    let mut operator = env.signed_in(OPERATOR).await;
    let first = operator.get("/dashboard/operator/accounts").await;
    let cards = first.body.matches("class=\"account\"").count();
    assert_eq!(cards, 50);
    let next = first
        .between("<a href=\"?after=", "\"")
        .expect("a next page link");
    let second = operator
        .get(&format!("/dashboard/operator/accounts?after={next}"))
        .await;
    assert_eq!(second.body.matches("class=\"account\"").count(), 7);
    assert!(
        !second.body.contains("?after="),
        "the last page has no next link"
    );
    // Inviting someone who can sign in already is refused next to the field.
    let page = operator
        .post(
            "/dashboard/operator/owners",
            &[("email", crate::common::OWNER_A)],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("已设置密码"), "{}", page.body);
    let page = operator
        .post("/dashboard/operator/owners", &[("email", "nope")])
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"email-error\""), "{}", page.body);
    env.finish().await;
}

pub async fn the_language_follows_the_switch_then_accept_language(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    let mut browser = Browser::new(&env.base);
    let page = browser.get("/dashboard/sign-in").await;
    assert!(page.body.contains("<html lang=\"zh-CN\">") && page.body.contains("登录"));
    browser.extra = vec![("accept-language".into(), "en-GB,en;q=0.9,zh;q=0.5".into())];
    let page = browser.get("/dashboard/sign-in").await;
    assert!(page.body.contains("<html lang=\"en\">") && page.body.contains("Sign in"));
    let page = browser
        .get("/dashboard/language/zh-CN?back=%2Fdashboard%2Fsign-in")
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/dashboard/sign-in");
    let page = browser.get("/dashboard/sign-in").await;
    assert!(
        page.body.contains("<html lang=\"zh-CN\">"),
        "the switch beats Accept-Language"
    );
    // The switch returns only to dashboard pages.
    let page = browser
        .get("/dashboard/language/en?back=https%3A%2F%2Fevil.example%2F")
        .await;
    assert_eq!(page.location(), "/dashboard/");
    let page = browser
        .get("/dashboard/language/en?back=%2F%2Fevil.example")
        .await;
    assert_eq!(page.location(), "/dashboard/");
    let _ = START;
    env.finish().await;
}

pub async fn open_sign_up_makes_owners_when_configured(db: TestDatabase) {
    let env = Env::start_full(
        db,
        url::Url::parse("http://127.0.0.1:9/").unwrap(),
        |_| {},
        |t| t.open_sign_up = true,
    )
    .await;
    let mut browser = env.browser();
    let sign_in = browser.get("/dashboard/sign-in").await;
    assert!(sign_in.body.contains("href=\"/dashboard/sign-up\""));
    let form = browser.get("/dashboard/sign-up").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("注册所有者账号"));
    // The password policy applies as everywhere, beside its field; the email is kept.
    let weak = browser
        .post(
            "/dashboard/sign-up",
            &[
                ("email", "new@owners.example"),
                ("password", "password123"),
                ("again", "password123"),
            ],
        )
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(weak.body.contains("id=\"password-error\""));
    assert!(weak.body.contains("value=\"new@owners.example\""));
    let made = browser
        .post(
            "/dashboard/sign-up",
            &[
                ("email", "new@owners.example"),
                ("password", PASSWORD),
                ("again", PASSWORD),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    assert_eq!(made.location(), "/dashboard/accounts?flash=password_set");
    let accounts = browser.get("/dashboard/accounts").await;
    assert_eq!(accounts.status, StatusCode::OK);
    assert!(accounts.body.contains("new@owners.example"));
    // Taken now.
    let mut other = env.browser();
    let again = other
        .post(
            "/dashboard/sign-up",
            &[
                ("email", "new@owners.example"),
                ("password", PASSWORD),
                ("again", PASSWORD),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // The new owner is in the audit log as the actor of their own sign-up.
    let log = env
        .tenancy
        .list_audit(
            &tenancy::Principal::cli(),
            &tenancy::people::AuditQuery {
                action: Some("person.sign_up".to_owned()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].actor_email.as_deref(), Some("new@owners.example"));
    env.finish().await;
}
