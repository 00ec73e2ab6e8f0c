//! The route × role matrix: every route of `dashboard::ROUTES` × {anonymous, owner A, owner B,
//! operator} answers with the status in [`EXPECTED`]. A route missing from it fails the test.

use reqwest::StatusCode;
use testkit::TestDatabase;

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
