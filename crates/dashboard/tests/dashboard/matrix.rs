//! The route × role matrix: every route of `dashboard::ROUTES` × {anonymous, owner A, owner B,
//! operator} answers with the status in [`EXPECTED`]. A route missing from it fails the test.
//! Routes about one account ask for owner A's: owner B is told it does not exist (404), the
//! operator gets what the tenancy layer's table allows (read, revoke, disable; 403 else).

use reqwest::StatusCode;
use testkit::TestDatabase;

use store::api_keys::KeyScopes;
use store::oidc::LoginMode;
use tenancy::Principal;
use tenancy::keys::KeyRequest;
use tenancy::push_routes::{Delivery, NewRoute, RouteCredentials};
use tenancy::websites::NewWebsite;
use vault::SecretString;

use crate::common::{APPID_A, APPID_B, Browser, Env, OPERATOR, OWNER_A, OWNER_B};

const OK: u16 = 200;
const SEE: u16 = 303;
const UNAUTHORIZED: u16 = 401;
const FORBIDDEN: u16 = 403;
const NOT_FOUND: u16 = 404;
const UNPROCESSABLE: u16 = 422;

/// (method, route path, the concrete path asked, the form posted,
///  [anonymous, owner A, owner B, operator]).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    [u16; 4],
);

const EXPECTED: &[Row] = &[
    ("GET", "/", "/", &[], [SEE, SEE, SEE, SEE]),
    ("GET", "/dashboard", "/dashboard", &[], [SEE, SEE, SEE, SEE]),
    (
        "GET",
        "/dashboard/",
        "/dashboard/",
        &[],
        [SEE, SEE, SEE, SEE],
    ),
    (
        "GET",
        "/dashboard/static/{file}",
        "/dashboard/static/dashboard.css",
        &[],
        [OK, OK, OK, OK],
    ),
    (
        "GET",
        "/dashboard/language/{lang}",
        "/dashboard/language/en",
        &[],
        [SEE, SEE, SEE, SEE],
    ),
    (
        "GET",
        "/dashboard/sign-in",
        "/dashboard/sign-in",
        &[],
        [OK, OK, OK, OK],
    ),
    (
        "POST",
        "/dashboard/sign-in",
        "/dashboard/sign-in",
        &[
            ("email", "nobody@example.com"),
            ("password", "wrong password!"),
        ],
        [UNAUTHORIZED; 4],
    ),
    (
        "GET",
        "/dashboard/sign-in/code",
        "/dashboard/sign-in/code",
        &[],
        [SEE, SEE, SEE, SEE],
    ),
    (
        "POST",
        "/dashboard/sign-in/code",
        "/dashboard/sign-in/code",
        &[("code", "123456")],
        [SEE, SEE, SEE, SEE],
    ),
    (
        "POST",
        "/dashboard/sign-out",
        "/dashboard/sign-out",
        &[],
        [SEE, SEE, SEE, SEE],
    ),
    (
        "POST",
        "/dashboard/sign-out-everywhere",
        "/dashboard/sign-out-everywhere",
        &[],
        [SEE, SEE, SEE, SEE],
    ),
    // Open sign-up is off unless configured: there is no such page.
    (
        "GET",
        "/dashboard/sign-up",
        "/dashboard/sign-up",
        &[],
        [NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND],
    ),
    (
        "POST",
        "/dashboard/sign-up",
        "/dashboard/sign-up",
        &[
            ("email", "new@example.com"),
            ("password", "a long and unusual passphrase"),
            ("again", "a long and unusual passphrase"),
        ],
        [NOT_FOUND, NOT_FOUND, NOT_FOUND, NOT_FOUND],
    ),
    (
        "GET",
        "/dashboard/setup/{token}",
        "/dashboard/setup/no-such-link",
        &[],
        [NOT_FOUND; 4],
    ),
    (
        "POST",
        "/dashboard/setup/{token}",
        "/dashboard/setup/no-such-link",
        &[("password", "x")],
        [NOT_FOUND; 4],
    ),
    (
        "GET",
        "/dashboard/invitation/{token}",
        "/dashboard/invitation/no-such-link",
        &[],
        [NOT_FOUND; 4],
    ),
    (
        "POST",
        "/dashboard/invitation/{token}",
        "/dashboard/invitation/no-such-link",
        &[("password", "x")],
        [NOT_FOUND; 4],
    ),
    (
        "GET",
        "/dashboard/security",
        "/dashboard/security",
        &[],
        [SEE, OK, OK, OK],
    ),
    (
        "POST",
        "/dashboard/security/totp",
        "/dashboard/security/totp",
        &[],
        [SEE, SEE, SEE, SEE],
    ),
    // After the row above each person has a pending enrolment; a code of letters is never right.
    (
        "POST",
        "/dashboard/security/totp/confirm",
        "/dashboard/security/totp/confirm",
        &[("code", "abcdef")],
        [SEE, UNPROCESSABLE, UNPROCESSABLE, UNPROCESSABLE],
    ),
    (
        "GET",
        "/dashboard/accounts",
        "/dashboard/accounts",
        &[],
        [SEE, OK, OK, FORBIDDEN],
    ),
    (
        "GET",
        "/dashboard/accounts/new",
        "/dashboard/accounts/new",
        &[],
        [SEE, OK, OK, FORBIDDEN],
    ),
    // A malformed AppID: refused beside the field before WeChat is asked.
    (
        "POST",
        "/dashboard/accounts/new",
        "/dashboard/accounts/new",
        &[
            ("appid", "wx-not-an-appid"),
            ("name", "New"),
            ("appsecret", "x"),
        ],
        [SEE, UNPROCESSABLE, UNPROCESSABLE, FORBIDDEN],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}",
        "/dashboard/accounts/wx00000000000000a1",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/console",
        "/dashboard/accounts/wx00000000000000a1/console",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/console/push-credentials",
        "/dashboard/accounts/wx00000000000000a1/console/push-credentials",
        &[],
        [SEE, OK, NOT_FOUND, FORBIDDEN],
    ),
    // No token was ever fetched here: the owner is told so beside the button.
    (
        "POST",
        "/dashboard/accounts/{appid}/console/probe",
        "/dashboard/accounts/wx00000000000000a1/console/probe",
        &[],
        [SEE, UNPROCESSABLE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/refresh",
        "/dashboard/accounts/wx00000000000000a1/refresh",
        &[],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    // Without the AppID typed: refused beside the field, and WeChat is not asked.
    (
        "POST",
        "/dashboard/accounts/{appid}/clear-quota",
        "/dashboard/accounts/wx00000000000000a1/clear-quota",
        &[("confirm", "yes")],
        [SEE, UNPROCESSABLE, NOT_FOUND, FORBIDDEN],
    ),
    // A secret of the wrong shape: refused beside the field.
    (
        "POST",
        "/dashboard/accounts/{appid}/appsecret",
        "/dashboard/accounts/wx00000000000000a1/appsecret",
        &[("appsecret", "short")],
        [SEE, UNPROCESSABLE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/push-credentials",
        "/dashboard/accounts/wx00000000000000a1/push-credentials",
        &[],
        [SEE, OK, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/keys",
        "/dashboard/accounts/wx00000000000000a1/keys",
        &[("label", "matrix"), ("token", "on")],
        [SEE, OK, NOT_FOUND, FORBIDDEN],
    ),
    // Owner A revokes the key; the operator, who may revoke keys, then finds it revoked.
    (
        "POST",
        "/dashboard/accounts/{appid}/keys/{key}/revoke",
        "/dashboard/accounts/wx00000000000000a1/keys/{KEY}/revoke",
        &[],
        [SEE, SEE, NOT_FOUND, NOT_FOUND],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/websites",
        "/dashboard/accounts/wx00000000000000a1/websites",
        &[
            ("name", "Shop"),
            ("redirect_uris", "https://shop.example/cb"),
            ("mode", "follow_required"),
        ],
        [SEE, OK, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/websites/{client}/edit",
        "/dashboard/accounts/wx00000000000000a1/websites/{CLIENT}/edit",
        &[
            ("name", "Shop 2"),
            (
                "redirect_uris",
                "https://shop.example/cb\nhttps://shop.example/cb2",
            ),
            ("mode", "userinfo"),
        ],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/websites/{client}/rotate",
        "/dashboard/accounts/wx00000000000000a1/websites/{CLIENT}/rotate",
        &[],
        [SEE, OK, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/websites/{client}/delete",
        "/dashboard/accounts/wx00000000000000a1/websites/{CLIENT}/delete",
        &[],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/settings",
        "/dashboard/accounts/wx00000000000000a1/settings",
        &[("original_id", "gh_0123456789ab"), ("push_mode", "safe")],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/push-routes",
        "/dashboard/accounts/wx00000000000000a1/push-routes",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/push-routes",
        "/dashboard/accounts/wx00000000000000a1/push-routes",
        &[
            ("target_url", "https://bot.example/wx"),
            ("delivery", "copy"),
            ("token", "matrixToken"),
        ],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/push-routes/{route}/edit",
        "/dashboard/accounts/wx00000000000000a1/push-routes/{ROUTE}/edit",
        &[
            ("target_url", "https://bot.example/wx2"),
            ("delivery", "reply"),
            ("msg_type", "text"),
            ("enabled", "on"),
        ],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/push-routes/{route}/delete",
        "/dashboard/accounts/wx00000000000000a1/push-routes/{ROUTE}/delete",
        &[],
        [SEE, SEE, NOT_FOUND, FORBIDDEN],
    ),
    // No dead letter of that id: owner A is told so; the operator may not re-send at all.
    (
        "POST",
        "/dashboard/accounts/{appid}/push-routes/dead/{copy}/resend",
        "/dashboard/accounts/wx00000000000000a1/push-routes/dead/no-such-copy/resend",
        &[],
        [SEE, NOT_FOUND, NOT_FOUND, FORBIDDEN],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/end-users",
        "/dashboard/accounts/wx00000000000000a1/end-users?q=x",
        &[],
        [SEE, OK, NOT_FOUND, FORBIDDEN],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/audit",
        "/dashboard/accounts/wx00000000000000a1/audit?action=api_key.create",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/audit.csv",
        "/dashboard/accounts/wx00000000000000a1/audit.csv",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/stats",
        "/dashboard/accounts/wx00000000000000a1/stats?days=7",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "GET",
        "/dashboard/accounts/{appid}/stats.csv",
        "/dashboard/accounts/wx00000000000000a1/stats.csv?chart=logins",
        &[],
        [SEE, OK, NOT_FOUND, OK],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/disable",
        "/dashboard/accounts/wx00000000000000a1/disable",
        &[],
        [SEE, SEE, NOT_FOUND, SEE],
    ),
    (
        "POST",
        "/dashboard/accounts/{appid}/enable",
        "/dashboard/accounts/wx00000000000000a1/enable",
        &[],
        [SEE, SEE, NOT_FOUND, SEE],
    ),
    // Without the AppID typed: nothing is deleted.
    (
        "POST",
        "/dashboard/accounts/{appid}/delete",
        "/dashboard/accounts/wx00000000000000a1/delete",
        &[("confirm", "wx00000000000000b1")],
        [SEE, UNPROCESSABLE, NOT_FOUND, FORBIDDEN],
    ),
    (
        "GET",
        "/dashboard/operator/audit",
        "/dashboard/operator/audit?appid=wx00000000000000a1",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "GET",
        "/dashboard/operator/audit.csv",
        "/dashboard/operator/audit.csv",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "GET",
        "/dashboard/operator/accounts",
        "/dashboard/operator/accounts",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "GET",
        "/dashboard/operator/owners",
        "/dashboard/operator/owners",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "POST",
        "/dashboard/operator/owners",
        "/dashboard/operator/owners",
        &[("email", "invited@example.com")],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "POST",
        "/dashboard/operator/owners/{id}/disable",
        "/dashboard/operator/owners/{PERSON}/disable",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, SEE],
    ),
    (
        "POST",
        "/dashboard/operator/owners/{id}/reset-totp",
        "/dashboard/operator/owners/{PERSON}/reset-totp",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, SEE],
    ),
    (
        "POST",
        "/dashboard/operator/owners/{id}/enable",
        "/dashboard/operator/owners/{PERSON}/enable",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, SEE],
    ),
    (
        "GET",
        "/dashboard/operator/stats",
        "/dashboard/operator/stats?days=365",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "GET",
        "/dashboard/operator/stats.csv",
        "/dashboard/operator/stats.csv?chart=pushes",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
    (
        "GET",
        "/dashboard/operator/health",
        "/dashboard/operator/health",
        &[],
        [SEE, FORBIDDEN, FORBIDDEN, OK],
    ),
];

pub async fn every_route_answers_each_role_as_the_table_says(db: TestDatabase) {
    let table: Vec<(String, String)> = dashboard::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    let missing: Vec<_> = table
        .iter()
        .filter(|(m, p)| !EXPECTED.iter().any(|row| row.0 == m && row.1 == p))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a row in EXPECTED: {missing:?}"
    );
    let stale: Vec<_> = EXPECTED
        .iter()
        .filter(|row| !table.iter().any(|(m, p)| row.0 == m && row.1 == p))
        .map(|row| (row.0, row.1))
        .collect();
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:?}"
    );

    let env = Env::start(db, |_| {}).await;
    env.people().await;
    // A key and a website of owner A's account for the rows about one of them.
    let key = env
        .tenancy
        .create_api_key(
            &Principal::cli(),
            APPID_A,
            &KeyRequest {
                label: "matrix".into(),
                scopes: KeyScopes::ALL,
                proxy_paths: None,
            },
        )
        .await
        .unwrap()
        .record
        .id;
    let client = env
        .tenancy
        .create_website(
            &Principal::cli(),
            APPID_A,
            &NewWebsite {
                name: "Matrix".into(),
                redirect_uris: vec!["https://rp.example/cb".into()],
                login_mode: LoginMode::FollowRequired,
                public: false,
            },
        )
        .await
        .unwrap()
        .client
        .client_id;
    // A push route of owner A's account for the rows that change and delete it.
    let route = env
        .tenancy
        .create_push_route(
            &Principal::cli(),
            APPID_A,
            NewRoute {
                target_url: "https://bot.example/wx".into(),
                match_msg_type: None,
                match_event: None,
                match_event_key_prefix: None,
                delivery: Delivery::Copy,
                push_mode: None,
                credentials: RouteCredentials {
                    token: SecretString::new("matrixToken".into()),
                    encoding_aes_key: None,
                },
                position: None,
                enabled: true,
            },
        )
        .await
        .unwrap()
        .id;
    // A third owner, for the rows that disable and enable one.
    let person = env
        .tenancy
        .create_person(
            &Principal::cli(),
            "spare@owners.example",
            store::people::Role::Owner,
        )
        .await
        .unwrap()
        .id;
    let roles = [None, Some(OWNER_A), Some(OWNER_B), Some(OPERATOR)];
    let mut browsers = Vec::new();
    for role in roles {
        browsers.push(match role {
            None => env.browser(),
            Some(email) => env.signed_in(email).await,
        });
    }
    let mut mismatches = Vec::new();
    for &(method, _, path, form, expected) in EXPECTED {
        let path = &path
            .replace("{KEY}", &key)
            .replace("{CLIENT}", &client)
            .replace("{PERSON}", &person)
            .replace("{ROUTE}", &route);
        for (index, role) in roles.iter().enumerate() {
            let browser: &mut Browser = &mut browsers[index];
            let page = match method {
                "GET" => browser.get(path).await,
                _ => browser.post(path, form).await,
            };
            if page.status != StatusCode::from_u16(expected[index]).unwrap() {
                mismatches.push(format!(
                    "{method} {path} as {}: expected {}, got {} (location {:?})",
                    role.unwrap_or("anonymous"),
                    expected[index],
                    page.status,
                    page.location()
                ));
            }
            // Signing out ends the session: sign in again for the rows that follow.
            if path.contains("sign-out")
                && let Some(email) = role
            {
                browsers[index] = env.signed_in(email).await;
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    env.finish().await;
}

pub async fn owners_see_only_their_own_accounts(db: TestDatabase) {
    let env = Env::start(db, |_| {}).await;
    env.people().await;
    let mut a = env.signed_in(OWNER_A).await;
    let mut b = env.signed_in(OWNER_B).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let page_a = a.get("/dashboard/accounts").await;
    assert!(page_a.body.contains(APPID_A) && !page_a.body.contains(APPID_B));
    let page_b = b.get("/dashboard/accounts").await;
    assert!(page_b.body.contains(APPID_B) && !page_b.body.contains(APPID_A));
    // A later page after B's own account: still nothing of A's.
    let after = b.get("/dashboard/accounts?after=0").await;
    assert!(!after.body.contains(APPID_A));
    let all = operator.get("/dashboard/operator/accounts").await;
    assert!(all.body.contains(APPID_A) && all.body.contains(APPID_B));
    // The badge of a fresh account: nothing fetched yet, none of the budget used.
    assert!(page_a.body.contains("尚未获取"), "{}", page_a.body);
    assert!(page_a.body.contains("0 / 200"), "{}", page_a.body);
    env.finish().await;
}
