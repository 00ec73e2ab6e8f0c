//! The dashboard's account pages with many accounts: the operator's list (first page, a late
//! page, a search by name, a rare token state, one owner's accounts), an owner's list and the
//! account page, each asked over HTTP on loopback as a signed-in person, on an SQLite file
//! and (with `WXHUB_TEST_POSTGRES_URL`) on PostgreSQL.
//!
//! Run with `cargo bench -p dashboard --bench pages` (`WXHUB_BENCH_ACCOUNTS=N` to change the
//! default of 100,000 accounts; `WXHUB_BENCH_REQUESTS=N` the requests per page, default 300).
//! Prints p50 and p99 per page; the goal is p99 ≤ 25 ms.

#[path = "../tests/dashboard/common.rs"]
mod common;
mod fixture;

use common::{Browser, Env, OPERATOR, PASSWORD};
use fixture::{OWNERS, appid, env_usize, fill, measure};
use store::people::Role;
use testkit::TestDatabase;

async fn run(db: TestDatabase, backend: &str, accounts: usize, requests: usize) {
    let env = Env::start(db, |_| {}).await;
    println!("{backend}, {accounts} accounts:");
    let owners = fill(&env, accounts).await;
    env.person(OPERATOR, Role::Operator).await;
    let mut operator = env.signed_in(OPERATOR).await;
    let mut owner = Browser::new(&env.base);
    owner.sign_in(&owners[0], PASSWORD).await;
    // A late page: the `after` of an account four fifths of the way through.
    let page = env
        .tenancy
        .store()
        .find_account_by_appid(&appid(accounts * 4 / 5))
        .await
        .unwrap()
        .unwrap();
    measure(
        &mut operator,
        "all accounts, first page",
        "/dashboard/operator/accounts",
        requests,
    )
    .await;
    measure(
        &mut operator,
        "all accounts, a late page",
        &format!("/dashboard/operator/accounts?after={}", page.id),
        requests,
    )
    .await;
    measure(
        &mut operator,
        "search by part of the name",
        "/dashboard/operator/accounts?q=teahouse",
        requests,
    )
    .await;
    measure(
        &mut operator,
        "search by AppID",
        &format!("/dashboard/operator/accounts?q={}", appid(accounts / 3)),
        requests,
    )
    .await;
    measure(
        &mut operator,
        "needing attention (rare state)",
        "/dashboard/operator/accounts?state=needs_attention",
        requests,
    )
    .await;
    measure(
        &mut operator,
        "one owner's accounts",
        &format!(
            "/dashboard/operator/accounts?owner={}",
            owners[OWNERS / 2].replace('@', "%40")
        ),
        requests,
    )
    .await;
    measure(
        &mut operator,
        "platform health",
        "/dashboard/operator/health",
        requests,
    )
    .await;
    measure(
        &mut owner,
        "an owner's accounts",
        "/dashboard/accounts",
        requests,
    )
    .await;
    measure(
        &mut owner,
        "the account page",
        &format!("/dashboard/accounts/{}", appid(0)),
        requests,
    )
    .await;
    env.finish().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let accounts = env_usize("WXHUB_BENCH_ACCOUNTS", 100_000);
    let requests = env_usize("WXHUB_BENCH_REQUESTS", 300);
    run(TestDatabase::sqlite(), "SQLite", accounts, requests).await;
    match TestDatabase::postgres().await {
        Some(db) => run(db, "PostgreSQL", accounts, requests).await,
        None => println!("PostgreSQL: not run (set WXHUB_TEST_POSTGRES_URL)"),
    }
}
