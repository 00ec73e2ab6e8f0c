//! The operator's pages beyond the audit log: every account filtered and searched, owners
//! disabled and enabled, the platform's health; and an account's own activity for its owner.

use reqwest::StatusCode;
use store::people::Role;
use store::tokens::{RefreshFailure, TokenState};
use tenancy::Principal;
use testkit::TestDatabase;

use crate::common::{APPID_A, APPID_B, Env, OPERATOR, OWNER_A, OWNER_B, PASSWORD, START};

/// Puts `appid`'s token into "needs attention" as a 40164 refusal would.
async fn fail_with_40164(env: &Env, appid: &str) {
    let store = env.tenancy.store();
    let account = store.find_account_by_appid(appid).await.unwrap().unwrap();
    let claimed = store
        .claim_token_refresh(&account.id, "test", START, START + 60_000, 0, i64::MAX)
        .await
        .unwrap()
        .unwrap();
    store
        .record_refresh_failure(
            &account.id,
            claimed.generation,
            &RefreshFailure {
                state: TokenState::NeedsAttention,
                error_code: Some(40164),
                error_message: "invalid ip 203.0.113.7, not in whitelist".to_owned(),
                error_ip: Some("203.0.113.7".to_owned()),
                next_refresh_at: START + 600_000,
            },
            START,
        )
        .await
        .unwrap();
}

pub async fn operators_filter_and_search_every_account(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    env.account("wx00000000000000a2", OWNER_A).await;
    env.tenancy
        .rename_account(&Principal::cli(), "wx00000000000000a2", "Tea 100% House")
        .await
        .unwrap();
    fail_with_40164(&env, APPID_B).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let list = |body: &str| {
        ["wx00000000000000a1", "wx00000000000000a2", APPID_B]
            .into_iter()
            .filter(|appid| body.contains(&format!("<code class=\"appid\">{appid}</code>")))
            .collect::<Vec<_>>()
    };

    let all = operator.get("/dashboard/operator/accounts").await;
    assert_eq!(list(&all.body).len(), 3);
    let by_owner = operator
        .get("/dashboard/operator/accounts?owner=owner-a%40example.com")
        .await;
    assert_eq!(
        list(&by_owner.body),
        ["wx00000000000000a1", "wx00000000000000a2"]
    );
    let searched = operator
        .get("/dashboard/operator/accounts?q=tea+100%25")
        .await;
    assert_eq!(list(&searched.body), ["wx00000000000000a2"]);
    let exact = operator
        .get(&format!("/dashboard/operator/accounts?q={APPID_B}"))
        .await;
    assert_eq!(list(&exact.body), [APPID_B]);
    let failing = operator
        .get("/dashboard/operator/accounts?state=needs_attention")
        .await;
    assert_eq!(list(&failing.body), [APPID_B]);
    // The fix is shown with the account, in the page's language.
    assert!(failing.body.contains("203.0.113.7"), "{}", failing.body);
    assert!(
        failing
            .body
            .contains("<option value=\"needs_attention\" selected>")
    );
    let none = operator
        .get("/dashboard/operator/accounts?state=healthy&kind=subscription")
        .await;
    assert!(list(&none.body).is_empty());
    assert!(none.body.contains("没有符合这些条件的公众号"));

    // Bad filters are said beside their field, with a 422.
    let unknown = operator
        .get("/dashboard/operator/accounts?owner=nobody%40example.com")
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.body.contains("id=\"owner-error\""));
    assert!(unknown.body.contains("nobody@example.com"));
    let bad = operator
        .get("/dashboard/operator/accounts?state=sleepy")
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"state-error\""));

    // An owner filters only their own accounts; another owner's filter is ignored.
    let mut owner = env.signed_in(OWNER_A).await;
    let own = owner
        .get("/dashboard/accounts?q=tea&owner=owner-b%40example.com")
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(list(&own.body), ["wx00000000000000a2"]);
    env.finish().await;
}

pub async fn operators_disable_and_enable_owners(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let owner_b = env
        .tenancy
        .store()
        .find_user_by_email(OWNER_B)
        .await
        .unwrap()
        .unwrap();
    let mut operator = env.signed_in(OPERATOR).await;
    let mut b = env.signed_in(OWNER_B).await;
    let owners = operator.get("/dashboard/operator/owners").await;
    assert!(owners.body.contains(&format!(
        "/dashboard/operator/owners/{}/disable",
        owner_b.id
    )));
    assert!(
        owners
            .body
            .contains("/dashboard/operator/accounts?owner=owner-b%40example.com")
    );
    let disabled = operator
        .post(
            &format!("/dashboard/operator/owners/{}/disable", owner_b.id),
            &[],
        )
        .await;
    assert_eq!(
        disabled.location(),
        "/dashboard/operator/owners?flash=owner_disabled"
    );
    // B's session ended, and B cannot sign in again.
    let after = b.get("/dashboard/accounts").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    let mut again = env.browser();
    let refused = again.sign_in(OWNER_B, PASSWORD).await;
    assert_ne!(refused.status, StatusCode::SEE_OTHER);
    // B's account keeps being served and listed.
    let all = operator.get("/dashboard/operator/accounts").await;
    assert!(all.body.contains(APPID_B));
    let enabled = operator
        .post(
            &format!("/dashboard/operator/owners/{}/enable", owner_b.id),
            &[],
        )
        .await;
    assert_eq!(
        enabled.location(),
        "/dashboard/operator/owners?flash=owner_enabled"
    );
    env.signed_in(OWNER_B).await;
    // Both are in the audit log, by the operator's email.
    let log = operator
        .get("/dashboard/operator/audit?action=person.disable")
        .await;
    assert!(log.body.contains(OPERATOR), "{}", log.body);
    // An operator cannot disable themselves (the page offers only owners; a crafted request
    // is refused and nothing changes).
    let operator_id = env
        .tenancy
        .store()
        .find_user_by_email(OPERATOR)
        .await
        .unwrap()
        .unwrap()
        .id;
    let own = operator
        .post(
            &format!("/dashboard/operator/owners/{operator_id}/disable"),
            &[],
        )
        .await;
    assert_eq!(own.status, StatusCode::BAD_REQUEST);
    env.signed_in(OPERATOR).await;
    env.finish().await;
}

pub async fn operators_see_platform_health(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    env.person("owner-c@example.com", Role::Owner).await;
    env.account("wx00000000000000c1", "owner-c@example.com")
        .await;
    fail_with_40164(&env, APPID_B).await;
    env.tenancy
        .disable_account(&Principal::cli(), "wx00000000000000c1")
        .await
        .unwrap();
    let mut operator = env.signed_in(OPERATOR).await;
    let page = operator.get("/dashboard/operator/health").await;
    assert_eq!(page.status, StatusCode::OK);
    let count = |state: &str| {
        let link = format!(
            "<a href=\"/dashboard/operator/accounts?state={state}\"><span class=\"count\">"
        );
        page.body
            .split_once(&link)
            .and_then(|(_, rest)| rest.split_once("</span>"))
            .map(|(n, _)| n.to_owned())
            .unwrap_or_else(|| panic!("no count for {state}: {}", page.body))
    };
    assert_eq!(count("pending"), "1");
    assert_eq!(count("needs_attention"), "1");
    assert_eq!(count("healthy"), "0");
    assert_eq!(count("disabled"), "1");
    assert!(page.body.contains("共有 3 个公众号"), "{}", page.body);
    // The account that needs a person, with the fix.
    let attention = page
        .between("需要处理的公众号", "</section>")
        .expect("the attention section");
    assert!(attention.contains(APPID_B) && !attention.contains(APPID_A));
    assert!(attention.contains("203.0.113.7"));
    // The master key wraps the three accounts' data keys; nothing waits for a re-wrap.
    assert!(page.body.contains("<code>k1</code>"));
    assert!(page.body.contains("3 个公众号"));
    assert!(page.body.contains("所有数据密钥都在当前密钥之下"));
    env.finish().await;
}

pub async fn owners_see_their_accounts_activity(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut owner = env.signed_in(OWNER_A).await;
    let base = format!("/dashboard/accounts/{APPID_A}");
    let created = owner
        .post(
            &format!("{base}/keys"),
            &[("label", "backend"), ("token", "on")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    // The account page shows the latest entries, by email, with a link to all of them.
    let page = owner.get(&base).await;
    let recent = page.between("id=\"activity\"", "</section>").unwrap();
    assert!(
        recent.contains("api_key.create") && recent.contains(OWNER_A),
        "{recent}"
    );
    assert!(recent.contains(&format!("{base}/audit")));
    let log = owner
        .get(&format!("{base}/audit?action=api_key.create"))
        .await;
    assert_eq!(log.status, StatusCode::OK);
    assert!(
        log.body
            .contains("<code class=\"action\">api_key.create</code>")
    );
    assert!(
        !log.body.contains("id=\"appid\""),
        "no AppID filter in an account's log"
    );
    let csv = owner.get(&format!("{base}/audit.csv")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.header("content-disposition")
            .contains(&format!("wxhub-audit-{APPID_A}.csv"))
    );
    assert!(
        csv.body.contains(&format!(",{OWNER_A},api_key.create,")),
        "{}",
        csv.body
    );
    // Another owner's account's log does not exist for them.
    let other = owner
        .get(&format!("/dashboard/accounts/{APPID_B}/audit"))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    env.finish().await;
}

pub async fn operators_reset_a_lost_second_factor(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let store = env.tenancy.store();
    let owner_b = store.find_user_by_email(OWNER_B).await.unwrap().unwrap();
    let mut operator = env.signed_in(OPERATOR).await;
    // Nothing to reset yet: said, nothing changed.
    let none = operator
        .post(
            &format!("/dashboard/operator/owners/{}/reset-totp", owner_b.id),
            &[],
        )
        .await;
    assert_eq!(
        none.location(),
        "/dashboard/operator/owners?flash=no_totp_to_reset"
    );
    // B has a confirmed second factor (stored as enrolment leaves it) and a session.
    let mut b = env.signed_in(OWNER_B).await;
    store
        .begin_totp_enrolment(
            &store::sign_in::StoredTotp {
                user_id: owner_b.id.clone(),
                wrapped_dek: vec![1; 60],
                dek_kek_id: "k1".to_owned(),
                secret: vec![2; 40],
                confirmed_at: None,
                last_used_step: 0,
                created_at: START,
            },
            START,
        )
        .await
        .unwrap();
    assert!(
        store
            .confirm_totp(
                &owner_b.id,
                1,
                START,
                &store::audit::AuditRecord::new(owner_b.id.clone(), "person.totp_enable"),
            )
            .await
            .unwrap()
    );
    let reset = operator
        .post(
            &format!("/dashboard/operator/owners/{}/reset-totp", owner_b.id),
            &[],
        )
        .await;
    assert_eq!(
        reset.location(),
        "/dashboard/operator/owners?flash=totp_reset"
    );
    assert!(store.user_totp(&owner_b.id).await.unwrap().is_none());
    // B's session ended; B signs in with the password alone and may enrol again.
    assert_eq!(
        b.get("/dashboard/accounts").await.status,
        StatusCode::SEE_OTHER
    );
    env.signed_in(OWNER_B).await;
    let log = operator
        .get("/dashboard/operator/audit?action=person.reset_totp")
        .await;
    assert!(
        log.body.contains(OWNER_B) && log.body.contains(OPERATOR),
        "{}",
        log.body
    );
    env.finish().await;
}
